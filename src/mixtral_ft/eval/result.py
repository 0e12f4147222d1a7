"""The result of one ``mixft eval`` command, and writing it: ``results.json`` + ``report.md``."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mixtral_ft.data.manifest import output_entries
from mixtral_ft.eval.items import ItemFile
from mixtral_ft.util.atomic import staged_dir
from mixtral_ft.util.manifest import Manifest, file_entry
from mixtral_ft.util.provenance import command_line, environment, now_iso

RESULTS_SCHEMA = "mixft.eval/1"


@dataclass
class EvalResult:
    """What an evaluation computed. ``body`` holds counts, metrics and tables (JSON-ready);
    ``summary`` the rows printed to stdout; ``markdown`` the body of report.md."""

    kind: str  # rg | tc | pipeline | compare
    label: str
    inputs: dict[str, ItemFile]
    options: dict[str, Any]
    body: dict[str, Any]
    summary: list[tuple[str, str]]
    markdown: str
    extra_judges: list[dict] = field(default_factory=list)

    def to_json(self, command: list[str] | None = None) -> dict[str, Any]:
        """The full ``results.json`` object, provenance included."""
        judges: list[dict] = []
        prompts: set[str] = set()
        for f in self.inputs.values():
            for j in f.judges:
                if j not in judges:
                    judges.append(j)
            prompts.update(f.prompt_sha256)
        return {
            "schema": RESULTS_SCHEMA,
            "kind": self.kind,
            "label": self.label,
            "created": now_iso(),
            "command": command if command is not None else _command(),
            "inputs": {role: f.provenance() for role, f in self.inputs.items()},
            "options": self.options,
            "judges": judges,
            "prompt_sha256": sorted(prompts),
            **self.body,
            "environment": environment(),
        }


def _command() -> list[str]:
    return command_line()


def render_markdown(result: EvalResult, results: dict[str, Any]) -> str:
    lines = [f"# mixft eval {result.kind}: {result.label}", "", result.markdown.rstrip(), "", "## Provenance", ""]
    for role, info in results["inputs"].items():
        lines.append(f"- {role}: `{info['path']}` ({info['items']} items, sha256 `{info['sha256']}`)")
    for j in results["judges"]:
        lines.append("- judge: " + ", ".join(f"{k}={v}" for k, v in sorted(j.items())))
    if results["prompt_sha256"]:
        lines.append("- prompt template sha256: " + ", ".join(f"`{p}`" for p in results["prompt_sha256"]))
    lines.append(f"- command: `{' '.join(results['command'])}`")
    lines.append(
        f"- mixft {results['environment']['packages'].get('mixtral-ft')}, "
        f"git {results['environment'].get('mixft_git_commit')}, created {results['created']}"
    )
    return "\n".join(lines) + "\n"


def write_result(
    result: EvalResult, out: str | os.PathLike, force: bool = False, command: list[str] | None = None
) -> dict[str, Any]:
    """Write ``results.json`` and ``report.md`` into ``out`` as a whole (staged, then renamed)."""
    results = result.to_json(command)
    text = json.dumps(results, indent=2, sort_keys=False, ensure_ascii=False) + "\n"
    md = render_markdown(result, results)
    inputs = [f.path for f in result.inputs.values()]  # --out may not replace what it was computed from
    with staged_dir(Path(out), force=force, inputs=inputs, needed=len(text.encode()) + len(md.encode())) as stage:
        (stage / "results.json").write_text(text, encoding="utf-8")
        (stage / "report.md").write_text(md, encoding="utf-8")
        eval_manifest(result, results, stage).write(stage / "manifest.json")
    return results


def eval_manifest(result: EvalResult, results: dict[str, Any], stage: Path):
    """The common ``Manifest`` (kind ``eval``) of an eval directory: the per-item files it read,
    the files it wrote, and the options that decided them. ``results.json`` keeps its own copy
    of the provenance for readers of that one file."""
    inputs = [file_entry(f.path, rows=len(f.items), sha256=f.sha256, role=role) for role, f in result.inputs.items()]
    return Manifest(
        kind="eval",
        settings={"eval": result.kind, "label": result.label, "options": result.options},
        inputs=inputs,
        outputs=output_entries(stage, {"results.json": None, "report.md": None}),
        summary=dict(result.summary),
        command=results["command"],
        extra={"judges": results["judges"]},
    )
