"""Read per-item files (docs/formats.md §3, §4, §6) into one labelled-item type.

A row's label follows the rules of ``_labelled``. A missing or duplicate ``id``, a malformed field
or a row with no label is an ``InputError`` listing every problem as ``file:line: field: message``.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mixtral_ft.errors import InputError, Problem, UsageError
from mixtral_ft.tc.verdict import VerdictError, is_hallucinated, verdict_from_dict
from mixtral_ft.util.hashing import canonical_json, sha256_file
from mixtral_ft.util.ids import id_problem


@dataclass(frozen=True)
class Item:
    id: str
    line: int
    hallucinated: bool | None  # None: unparsed
    groundedness_mistake: bool | None
    relevance_mistake: bool | None  # None: unparsed or unknown (no verdict)
    mistake_types: tuple[str, ...] = ()
    score: float | None = None
    source: str | None = None
    model: str | None = None
    label_from: str = "verdict"  # verdict | hallucinated | labels | unparsed

    @property
    def parsed(self) -> bool:
        return self.hallucinated is not None


@dataclass
class ItemFile:
    path: Path
    sha256: str
    items: list[Item]
    judges: list[dict] = field(default_factory=list)
    prompt_sha256: list[str] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return [it.id for it in self.items]

    def by_id(self) -> dict[str, Item]:
        return {it.id: it for it in self.items}

    def provenance(self) -> dict:
        return {"path": str(self.path), "sha256": self.sha256, "items": len(self.items)}


def _model_name(value: Any) -> str | None:
    """``model`` is a name in §3/§6 rows and an object ``{name, adapter, ...}`` in §2 rows."""
    if value is None:
        return None
    if isinstance(value, dict):
        name = str(value.get("name") or "?")
        adapter = value.get("adapter")
        return f"{name}+{Path(str(adapter)).name}" if adapter else name
    return str(value)


def _label_from_verdict(obj: Any, count_relevance: bool) -> tuple[bool, bool, bool, tuple[str, ...]]:
    verdict = verdict_from_dict(obj)
    types = tuple(m.type for m in verdict.groundedness.mistakes)
    return (is_hallucinated(verdict, count_relevance), verdict.groundedness.mistake, verdict.relevance.mistake, types)


def load_items(path: str | os.PathLike, count_relevance: bool = False, role: str = "items") -> ItemFile:
    """Read and validate a per-item file; ``role`` ('gold', 'checker', ...) only words messages.

    A gold file must label every item: an unparsed row there is an error.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: {role} file not found")
    name = str(path)
    problems: list[Problem] = []
    items: list[Item] = []
    seen: dict[str, int] = {}
    judges: dict[str, dict] = {}
    prompts: set[str] = set()
    for line, row in _rows(path):
        item = _read_row(row, name, line, seen, count_relevance)
        if isinstance(item, Problem):
            problems.append(item)
            continue
        if role == "gold" and not item.parsed:
            problems.append(
                Problem(name, line, "verdict", "gold label missing (unparsed or null); gold must label every item")
            )
            continue
        items.append(item)
        judge = row.get("judge")
        if isinstance(judge, dict):
            judges.setdefault(canonical_json(judge), judge)
            if judge.get("prompt_sha256"):
                prompts.add(str(judge["prompt_sha256"]))
    if problems:
        raise InputError(problems)
    if not items:
        raise InputError([Problem(name, None, None, f"no items: the {role} file is empty")])
    return ItemFile(path, sha256_file(path), items, list(judges.values()), sorted(prompts))


def _read_row(row: dict, name: str, line: int, seen: dict[str, int], count_relevance: bool) -> Item | Problem:
    """One row as an ``Item``, or its first problem; ``seen`` (id -> line) gains the row's id."""
    rid = _row_id(row, name, line, seen)
    if isinstance(rid, Problem):
        return rid
    seen[rid] = line
    problem = _field_problem(row, name, line)
    if problem:
        return problem
    common = {
        "id": rid,
        "line": line,
        "score": None if row.get("score") is None else float(row["score"]),
        "source": None if row.get("source") is None else str(row["source"]),
        "model": _model_name(row.get("model")),
    }
    return _labelled(row, common, count_relevance, name, line)


def _row_id(row: dict, name: str, line: int, seen: dict[str, int]) -> str | Problem:
    """The row's ``id`` as a string, or why it cannot be joined on (missing, malformed, duplicate)."""
    rid = row.get("id")
    if rid is None or rid == "":
        return Problem(name, line, "id", "missing; every row needs an 'id' to join on")
    if not isinstance(rid, str | int) or isinstance(rid, bool):
        return Problem(name, line, "id", f"expected a string, got {type(rid).__name__}")
    rid = str(rid)
    bad_id = id_problem(rid)  # the id rules of every stage (util.ids)
    if bad_id:
        return Problem(name, line, "id", bad_id)
    if rid in seen:
        return Problem(name, line, "id", f"duplicate id {rid!r} (first on line {seen[rid]})")
    return rid


def _field_problem(row: dict, name: str, line: int) -> Problem | None:
    """The first malformed field beside the label: a failed request, ``score``, ``hallucinated``, ``parse_ok``."""
    if row.get("error") is not None:  # a request that failed is not a verdict of any kind
        return Problem(
            name,
            line,
            "error",
            f"the request for this item failed ({str(row['error'])[:80]}); "
            "re-run the same `mixft judge` command to retry the failed items",
        )
    score = row.get("score")
    if score is not None and (
        isinstance(score, bool)
        or not isinstance(score, int | float)
        or not math.isfinite(score)
        or not 0.0 <= score <= 1.0
    ):
        return Problem(name, line, "score", f"expected a probability in [0, 1] or null, got {score!r:.40}")
    halluc = row.get("hallucinated")
    if "hallucinated" in row and halluc is not None and not isinstance(halluc, bool):
        return Problem(name, line, "hallucinated", f"expected true, false or null, got {halluc!r:.40}")
    parse_ok = row.get("parse_ok", True)
    if not isinstance(parse_ok, bool):
        return Problem(name, line, "parse_ok", f"expected a boolean, got {parse_ok!r:.40}")
    return None


def _unparsed(common: dict[str, Any]) -> Item:
    return Item(hallucinated=None, groundedness_mistake=None, relevance_mistake=None, label_from="unparsed", **common)


def _labelled(row: dict, common: dict[str, Any], count_relevance: bool, name: str, line: int) -> Item | Problem:
    """The row's label, by the first rule that applies:

    1. ``parse_ok: false`` → unparsed (the checker's text did not parse; never counted as clean).
    2. a ``verdict`` object (§5), validated strictly; hallucinated ⇔ ``groundedness.mistake``
       (``count_relevance``: or ``relevance.mistake``). A stored ``hallucinated`` beside it is
       ignored, so one rule applies to every file.
    3. a boolean ``hallucinated`` (relevance unknown).
    4. RAGTruth-style ``labels``: hallucinated ⇔ the list is non-empty.
    5. ``verdict`` or ``hallucinated`` present and null → unparsed.
    """
    verdict, halluc, labels = row.get("verdict"), row.get("hallucinated"), row.get("labels")
    if not row.get("parse_ok", True):
        return _unparsed(common)
    if isinstance(verdict, dict):
        try:
            h, g, r, types = _label_from_verdict(verdict, count_relevance)
        except VerdictError as e:
            return Problem(name, line, "verdict", str(e))
        return Item(
            hallucinated=h,
            groundedness_mistake=g,
            relevance_mistake=r,
            mistake_types=types,
            label_from="verdict",
            **common,
        )
    if verdict is not None:
        return Problem(name, line, "verdict", f"expected an object or null, got {type(verdict).__name__}")
    if isinstance(halluc, bool):
        return Item(
            hallucinated=halluc,
            groundedness_mistake=halluc,
            relevance_mistake=None,
            label_from="hallucinated",
            **common,
        )
    if isinstance(labels, list):
        span_types = tuple(str(s["label_type"]) for s in labels if isinstance(s, dict) and s.get("label_type"))
        return Item(
            hallucinated=bool(labels),
            groundedness_mistake=bool(labels),
            relevance_mistake=None,
            mistake_types=span_types,
            label_from="labels",
            **common,
        )
    if "verdict" in row or "hallucinated" in row:
        return _unparsed(common)
    return Problem(
        name, line, "verdict", "no label: expected a 'verdict' object, a boolean 'hallucinated' or a 'labels' list"
    )


def _rows(path: Path):
    """(line number, object) for each non-blank line; bad JSON is an ``InputError`` naming the line."""
    line = 0
    with open(path, encoding="utf-8") as fh:
        try:
            for line, text in enumerate(fh, 1):
                if not text.strip():
                    continue
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError as e:
                    raise InputError([Problem(str(path), line, None, f"invalid JSON: {e.msg}")]) from None
                if not isinstance(obj, dict):
                    raise InputError([Problem(str(path), line, None, "expected a JSON object")])
                yield line, obj
        except UnicodeDecodeError:
            raise InputError([Problem(str(path), line + 1, None, "not valid UTF-8")]) from None


def match_ids(a: ItemFile, b: ItemFile, what_a: str, what_b: str, shown: int = 5) -> list[str]:
    """The shared ids in ``a``'s order; different id sets are a ``UsageError`` naming a few missing ids."""
    ids_a, ids_b = set(a.ids), set(b.ids)
    if ids_a == ids_b:
        return a.ids
    only_a = [i for i in a.ids if i not in ids_b]
    only_b = [i for i in b.ids if i not in ids_a]
    parts = []
    if only_a:
        parts.append(
            f"{len(only_a)} id(s) in {what_a} {a.path} are missing from {what_b} {b.path} "
            f"(e.g. {', '.join(repr(i) for i in only_a[:shown])})"
        )
    if only_b:
        parts.append(
            f"{len(only_b)} id(s) in {what_b} {b.path} are missing from {what_a} {a.path} "
            f"(e.g. {', '.join(repr(i) for i in only_b[:shown])})"
        )
    raise UsageError("; ".join(parts) + ". Evaluate the same items in both files (no silent inner join).")


def mistake_type_counts(items: list[Item]) -> Counter:
    """How many items have at least one mistake of each type."""
    counts: Counter = Counter()
    for it in items:
        for t in set(it.mistake_types):
            counts[t] += 1
    return counts
