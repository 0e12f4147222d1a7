"""JSONL for mixft's own files (outputs it wrote itself; user inputs go through ``mixtral_ft.data.readers``)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from mixtral_ft.errors import InputError, Problem


def dumps_line(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n"


def read_jsonl(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Yield objects from a JSONL file; a bad line raises ``InputError`` naming file and line."""
    path = Path(path)
    if not path.exists():
        raise InputError([Problem(str(path), None, None, "file not found")])
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError([Problem(str(path), lineno, None, f"invalid JSON: {e.msg}")]) from None
            if not isinstance(obj, dict):
                raise InputError([Problem(str(path), lineno, None, "expected a JSON object")])
            yield obj


def read_jsonl_tolerant(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Like ``read_jsonl`` for an append-only file of our own that may end in a torn line
    (a run killed mid-write): a final line without a newline is ignored."""
    path = Path(path)
    if not path.exists():
        return
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.endswith("\n"):
                return
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError([Problem(str(path), lineno, None, f"invalid JSON: {e.msg}")]) from None


def append_jsonl(fh, obj: Any) -> None:
    """Append one record and make it durable before returning (resumable outputs)."""
    fh.write(dumps_line(obj))
    fh.flush()
    os.fsync(fh.fileno())


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
    from mixtral_ft.util.atomic import atomic_file

    n = 0
    with atomic_file(path) as fh:
        for row in rows:
            fh.write(dumps_line(row))
            n += 1
    return n
