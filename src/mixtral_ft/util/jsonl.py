"""JSONL: one reader for every JSON-lines file mixft reads whole (user inputs to ``prepare`` stream
through ``mixtral_ft.prepare.readers`` instead), and the writers of mixft's own files.

``scan_jsonl`` yields every non-blank line with its true line number and its problem, never raising;
``iter_jsonl`` and ``read_jsonl`` raise ``InputError`` at the first bad line. ``torn_tail_ok=True`` skips
the final line without a newline that a killed writer of a resumable file leaves.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mixtral_ft.errors import InputError, Problem
from mixtral_ft.util.atomic import atomic_file


@dataclass(frozen=True)
class JsonlLine:
    """One non-blank line: its object, or the problem that kept it from being one."""

    line: int
    obj: dict[str, Any] | None
    problem: Problem | None = None
    text: str | None = None  # the line (without its newline) when it did not decode to an object


def scan_jsonl(path: str | os.PathLike, *, torn_tail_ok: bool = False) -> Iterator[JsonlLine]:
    """Every non-blank line of ``path`` as a ``JsonlLine``; a missing file is an ``InputError``."""
    path = Path(path)
    name = str(path)
    if not path.exists():
        raise InputError([Problem(name, None, None, "file not found")])
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if torn_tail_ok and not raw.endswith(b"\n"):
                return
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                bad = raw[e.start : e.start + 1].hex()
                yield JsonlLine(
                    lineno,
                    None,
                    Problem(name, lineno, None, f"not valid UTF-8: byte 0x{bad}"),
                    raw.decode("utf-8", "replace").rstrip("\r\n"),
                )
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                problem = Problem(name, lineno, None, f"invalid JSON: {e.msg}")
                yield JsonlLine(lineno, None, problem, text.rstrip("\r\n"))
                continue
            if not isinstance(obj, dict):
                problem = Problem(name, lineno, None, "expected a JSON object")
                yield JsonlLine(lineno, None, problem, text.rstrip("\r\n"))
                continue
            yield JsonlLine(lineno, obj)


def iter_jsonl(path: str | os.PathLike, *, torn_tail_ok: bool = False) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` per non-blank line; the first bad line raises ``InputError``."""
    for item in scan_jsonl(path, torn_tail_ok=torn_tail_ok):
        if item.problem is not None:
            raise InputError([item.problem])
        assert item.obj is not None
        yield item.line, item.obj


def read_jsonl(path: str | os.PathLike, *, torn_tail_ok: bool = False) -> Iterator[dict[str, Any]]:
    """The objects of ``path``; the first bad line raises ``InputError`` naming file and line."""
    for _, obj in iter_jsonl(path, torn_tail_ok=torn_tail_ok):
        yield obj


# ---------------------------------------------------------------------------- writing


def dumps_line(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n"


def append_jsonl(fh, obj: Any) -> int:
    """Append one record and make it durable before returning (resumable outputs); return its length."""
    line = dumps_line(obj)
    fh.write(line)
    fh.flush()
    os.fsync(fh.fileno())
    return len(line)


def truncate_torn_tail(path: str | os.PathLike) -> None:
    """Drop a final partial line left by a killed writer so appends start on a fresh line."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as fh:
        data = fh.read()
        if data.endswith(b"\n"):
            return
        cut = data.rfind(b"\n") + 1
        fh.seek(cut)
        fh.truncate()


def write_jsonl_atomic(path: str | os.PathLike, rows: Iterable[Any]) -> int:
    n = 0
    with atomic_file(path) as fh:
        for row in rows:
            fh.write(dumps_line(row))
            n += 1
    return n
