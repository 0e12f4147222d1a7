"""Loading a job's input rows: every problem reported at once, before any request is sent.

Each job names the fields it needs (``Field``); every row must also have a unique ``id`` that
follows the id rules (``util.ids``; docs/formats.md: the join key across stages). Problems are reported as
``file:line: field: what is wrong``, with true line numbers (blank lines count).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from mixtral_ft.errors import InputError, Problem
from mixtral_ft.util.hashing import sha256_json
from mixtral_ft.util.ids import id_problem
from mixtral_ft.util.jsonl import iter_jsonl


@dataclass(frozen=True)
class Field:
    """A required input field: ``ok(value)`` says whether a value is usable; ``expected`` is
    the message when it is not; ``explain(row)``, when given, may name a more specific cause."""

    name: str
    ok: Callable[[Any], bool]
    expected: str
    explain: Callable[[dict[str, Any]], str | None] | None = None

    def problem(self, row: dict[str, Any]) -> str | None:
        if self.explain is not None:
            specific = self.explain(row)
            if specific:
                return specific
        return None if self.ok(row.get(self.name)) else self.expected


def _is_context(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, list) and all(isinstance(s, str) for s in value))


def _failed_generation(row: dict[str, Any]) -> str | None:
    if row.get("response") is None and row.get("error"):
        return "null because generation failed; re-run mixft generate"
    return None


CONTEXT = Field("context", _is_context, "missing or not a string (or list of strings)")
QUESTION = Field("question", lambda v: isinstance(v, str), "missing or not a string")
RESPONSE = Field("response", lambda v: isinstance(v, str), "missing or not a string", explain=_failed_generation)


def row_input_sha256(row: dict[str, Any], keys: Sequence[str] | None = None) -> str:
    """The SHA-256 of what an output row was made from: the canonical JSON (sorted keys, no
    spaces, UTF-8) of the input row, or of its ``keys`` only (a missing key counts as null).
    Stamped in every output row as ``input_sha256``; resuming redoes a row whose input changed."""
    return sha256_json(row if keys is None else {k: row.get(k) for k in keys})


@dataclass(frozen=True)
class InputRows:
    """The rows a job will work on (after ``limit``) and how many the file holds."""

    path: Path
    rows: list[dict[str, Any]]
    rows_in_file: int


def load_rows(path: Path, fields: Sequence[Field], limit: int | None = None) -> InputRows:
    """Read ``path`` (JSONL) and check ``id`` plus ``fields`` on every row; raise one
    ``InputError`` with every problem, or for an empty file."""
    name = str(path)
    rows: list[dict[str, Any]] = []
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for lineno, row in iter_jsonl(path):
        key = row.get("id")
        problem = id_problem(key)
        if problem:
            problems.append(Problem(name, lineno, "id", problem))
        else:
            key = cast(str, key)  # id_problem found nothing: a non-empty string
            if key in seen:
                problems.append(Problem(name, lineno, "id", f"duplicate id {key!r} (first on line {seen[key]})"))
            else:
                seen[key] = lineno
        for f in fields:
            message = f.problem(row)
            if message:
                problems.append(Problem(name, lineno, f.name, message))
        rows.append(row)
    if problems:
        raise InputError(problems)
    if not rows:
        raise InputError([Problem(name, None, None, "no rows")])
    return InputRows(Path(path), rows[:limit] if limit is not None else rows, len(rows))
