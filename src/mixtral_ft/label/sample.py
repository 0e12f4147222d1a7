"""``mixft label sample``: a seeded simple random sample of responses to label (:func:`draw_sample`), and
the sample as ``label export`` and ``label import`` read it back (:func:`load_sample`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mixtral_ft.errors import UsageError
from mixtral_ft.infer.rows import CONTEXT, QUESTION, RESPONSE, load_rows
from mixtral_ft.prepare.split import split_key
from mixtral_ft.util.atomic import staged_dir
from mixtral_ft.util.hashing import sha256_file, sha256_json
from mixtral_ft.util.jsonl import write_jsonl_atomic
from mixtral_ft.util.manifest import Manifest, file_entry, read_manifest

SAMPLE_FILE = "sample.jsonl"
MANIFEST_FILE = "manifest.json"
METHOD = "simple random sample without replacement: the n ids with the smallest split_key(id, seed)"


@dataclass(frozen=True)
class SampleConfig:
    responses: Path
    out: Path
    n: int | None = None
    seed: int = 42
    force: bool = False
    target: dict[str, Any] | None = None  # how n was chosen from a target width (label.size.GoldSize)


@dataclass
class SampleResult:
    out: Path
    population: int
    n: int
    seed: int
    population_sha256: str
    ids: list[str] = field(default_factory=list)


def read_population(path: Path) -> list[dict[str, Any]]:
    """The responses rows, checked as ``mixft judge`` checks them (one ``InputError`` listing every problem)."""
    if not Path(path).is_file():
        raise UsageError(f"{path}: responses file not found")
    return load_rows(Path(path), [CONTEXT, QUESTION, RESPONSE]).rows


def sample_order(ids: list[str], seed: int) -> list[str]:
    """``ids`` in the seeded order; the first ``n`` are the sample of size ``n``."""
    return sorted(ids, key=lambda i: (split_key(i, seed), i))


def ids_sha256(ids: list[str]) -> str:
    """SHA-256 of the canonical JSON list of the sorted ids (the population's identity apart from its bytes)."""
    return sha256_json(sorted(ids))


def draw_sample(cfg: SampleConfig) -> SampleResult:
    """Draw the sample and write ``DIR/sample.jsonl`` and ``DIR/manifest.json`` atomically.

    Every response gets the key ``split_key(id, seed)`` (``prepare.split``: 64 bits of
    ``sha256(seed, id)``), and the sample is the ``n`` responses with the smallest keys: a simple
    random sample without replacement that depends on neither the order of the file nor on which
    other responses exist. So the same population in any order gives the same sample, and a larger
    ``n`` with the same seed keeps every item of the smaller sample (label 200 now, 100 more later).

    The population is the responses file as ``mixft judge`` reads it (docs/formats.md §3: ``id``,
    ``context``, ``question``, ``response``, same id rules), so whatever is sampled can be judged.
    ``DIR/sample.jsonl`` holds the sampled rows whole, in sample order; ``DIR/manifest.json`` (kind
    ``label-sample``) records the seed, the population's SHA-256 and the SHA-256 of its sorted ids,
    so that an estimate built on the labels can be traced to the population it describes.
    """
    rows = read_population(cfg.responses)
    n = cfg.n
    if n is None or n < 1:
        raise UsageError("--n must be at least 1 (or give --target-width)")
    if n > len(rows):
        raise UsageError(
            f"--n {n} is larger than the population: {cfg.responses} holds {len(rows)} responses; "
            f"a sample without replacement can have at most {len(rows)}"
        )
    by_id = {row["id"]: row for row in rows}
    chosen = sample_order(list(by_id), cfg.seed)[:n]
    population_sha = sha256_file(cfg.responses)
    manifest = Manifest(
        kind="label-sample",
        settings={"n": n, "seed": cfg.seed, "method": METHOD},
        inputs=[file_entry(cfg.responses, rows=len(rows), sha256=population_sha, role="population")],
        extra={"population_ids_sha256": ids_sha256(list(by_id)), "target": cfg.target},
        summary={"population": len(rows), "n": n, "fraction": n / len(rows)},
    )
    with staged_dir(cfg.out, force=cfg.force, inputs=[cfg.responses]) as stage:
        write_jsonl_atomic(stage / SAMPLE_FILE, (by_id[i] for i in chosen))
        manifest.outputs = {
            SAMPLE_FILE: {**file_entry(stage / SAMPLE_FILE, rows=n), "path": str(cfg.out / SAMPLE_FILE)}
        }
        manifest.write(stage / MANIFEST_FILE)
    return SampleResult(cfg.out, len(rows), n, cfg.seed, population_sha, chosen)


@dataclass(frozen=True)
class Sample:
    """A sample as ``label export`` and ``label import`` read it: its rows by id, and where it came from."""

    path: Path  # the sample.jsonl
    sha256: str
    rows: dict[str, dict[str, Any]]
    manifest: dict[str, Any] | None  # the label-sample manifest beside it, when there is one

    @property
    def provenance(self) -> dict[str, Any]:
        """What a task or a gold row records about the sample."""
        settings = (self.manifest or {}).get("settings") or {}
        inputs = (self.manifest or {}).get("inputs") or [{}]
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "seed": settings.get("seed"),
            "population_sha256": inputs[0].get("sha256"),
        }


def load_sample(path: str | os.PathLike) -> Sample:
    """``label sample``'s output folder (or its ``sample.jsonl``, or any responses file: then it is
    taken as it is, with no recorded draw)."""
    path = Path(path)
    file = path / SAMPLE_FILE if path.is_dir() else path
    if not file.is_file():
        raise UsageError(f"{path}: no sample here (expected a `mixft label sample --out` folder or a responses file)")
    manifest = read_manifest(file.parent / MANIFEST_FILE)
    if manifest is not None and manifest.get("kind") != "label-sample":
        manifest = None
    rows = read_population(file)
    return Sample(file, sha256_file(file), {row["id"]: row for row in rows}, manifest)


def context_text(context: str | list[str]) -> str:
    """The context as the interface shows it: snippets separated by a blank line."""
    return context if isinstance(context, str) else "\n\n".join(context)


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, indent=2) + "\n"
