"""Readers for user inputs: JSONL, JSON (an array of objects), CSV and Parquet.

Every reader streams its file in chunks and reports problems instead of raising, so a command can list
every problem at once: a file-level problem is fatal (``--skip-invalid`` cannot skip it), a row-level
one is attached to its row. ``iter_rows`` yields decoded rows; ``iter_chunks`` undecoded chunks that
worker processes decode (``decode_item``).
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from mixtral_ft.choices import InputFormat, values
from mixtral_ft.errors import MissingDependencyError, Problem, UsageError

FORMATS = values(InputFormat)
EXTENSIONS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
BOM = b"\xef\xbb\xbf"
DEFAULT_CHUNK_ROWS = 2000
_TAG_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class InputSpec:
    """One input file, its format and its optional ``source`` tag."""

    path: Path
    format: str
    tag: str | None = None

    @property
    def display(self) -> str:
        """How problems name the file (the path as the user gave it)."""
        return str(self.path)

    @property
    def arg(self) -> str:
        """The input as a command line names it: ``PATH`` or ``TAG=PATH``."""
        return f"{self.tag}={self.path}" if self.tag else str(self.path)

    @property
    def default_source(self) -> str:
        """The ``source`` of rows that carry none: the tag, else the file name without suffix."""
        return self.tag if self.tag else self.path.stem


def detect_format(path: str | os.PathLike, format: str | None = None) -> str:
    """The format named by ``format`` or by the file extension (``.gz`` is not supported)."""
    if format:
        if format not in FORMATS:
            raise UsageError(f"unknown input format '{format}'; use one of: {', '.join(FORMATS)}")
        return format
    suffix = Path(path).suffix.lower()
    if suffix not in EXTENSIONS:
        raise UsageError(
            f"{path}: cannot tell the format from the extension '{suffix}'; "
            f"use one of {', '.join(sorted(EXTENSIONS))} or pass --format ({'/'.join(FORMATS)})"
        )
    return EXTENSIONS[suffix]


def parse_input(arg: str, format: str | None = None) -> InputSpec:
    """Parse ``PATH`` or ``TAG=PATH`` (e.g. ``live=chats.jsonl``) into an ``InputSpec``.

    An argument that names an existing file is always a plain path, so a file whose name
    contains ``=`` still works.
    """
    tag = None
    path = arg
    if "=" in arg and not Path(arg).exists():
        maybe_tag, rest = arg.split("=", 1)
        if _TAG_RE.match(maybe_tag) and rest:
            tag, path = maybe_tag, rest
        else:
            raise UsageError(f"{arg}: expected PATH or TAG=PATH with TAG made of letters, digits, '_', '.', '-'")
    return InputSpec(Path(path), detect_format(path, format), tag)


@dataclass(slots=True)
class RawRow:
    """One input row: ``obj`` when it decoded to a JSON object, else ``problem``."""

    line: int
    obj: dict[str, Any] | None
    problem: Problem | None = None
    raw: str | None = None  # the undecodable/invalid text, kept for rejected.jsonl


@dataclass(frozen=True)
class _ProblemItem:
    """An item that is already known to be bad (a CSV row with the wrong field count...)."""

    problem: Problem


@dataclass
class RawChunk:
    """Undecoded items of one file: ``kind`` is ``"bytes"`` (a JSONL line) or ``"obj"``
    (already decoded); ``problems`` are fatal file-level problems found while reading."""

    kind: str
    items: list[tuple[int, Any]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    lines: int = 0  # JSONL byte ranges: physical lines read (set on the last chunk)
    crlf: tuple[int, int] | None = None  # JSONL byte ranges: (first line, count) of CRLF lines


def type_name(value: Any) -> str:
    """A JSON-ish name for a value's type, for messages ("got number")."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _utf8_problem(display: str, line: int, data: bytes, err: UnicodeDecodeError) -> Problem:
    bad = data[err.start : err.start + 1].hex()
    return Problem(display, line, None, f"not valid UTF-8: byte 0x{bad} at byte {err.start + 1} of the line")


def decode_item(display: str, kind: str, line: int, item: Any) -> RawRow:
    """Decode one item from ``RawChunk.items`` into a ``RawRow`` (runs in workers too)."""
    if kind == "obj":
        if isinstance(item, _ProblemItem):
            return RawRow(line, None, item.problem)
        if isinstance(item, dict):
            return RawRow(line, item)
        return RawRow(
            line,
            None,
            Problem(display, line, None, f"expected a JSON object, got {type_name(item)}"),
            raw=orjson.dumps(item, default=str).decode(),
        )
    try:
        obj = orjson.loads(item)
    except orjson.JSONDecodeError as e:
        try:
            text = item.decode("utf-8")
        except UnicodeDecodeError as ue:
            return RawRow(
                line, None, _utf8_problem(display, line, item, ue), raw=item.decode("utf-8", "replace").rstrip("\r\n")
            )
        return RawRow(
            line,
            None,
            Problem(display, line, None, f"invalid JSON: {e.msg} (column {e.pos + 1})"),
            raw=text.rstrip("\r\n"),
        )
    if not isinstance(obj, dict):
        return RawRow(
            line,
            None,
            Problem(display, line, None, f"expected a JSON object, got {type_name(obj)}"),
            raw=item.decode("utf-8", "replace").rstrip("\r\n"),
        )
    return RawRow(line, obj)


def iter_rows(spec: InputSpec, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[RawRow]:
    """Every row of ``spec`` in file order, decoded. Fatal file-level problems come first in
    their chunk as rows with ``obj=None`` (``line`` 0 when the problem has none); use
    ``iter_chunks`` to tell fatal from row-level problems."""
    for chunk in iter_chunks(spec, chunk_rows):
        for p in chunk.problems:
            yield RawRow(p.line or 0, None, p)
        for line, item in chunk.items:
            yield decode_item(spec.display, chunk.kind, line, item)


def iter_chunks(spec: InputSpec, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[RawChunk]:
    """Stream ``spec`` as chunks of at most ``chunk_rows`` items plus fatal problems.

    - a *file-level* problem (file not found, a UTF-8 byte-order mark, CRLF line ends in JSON
      files, an unreadable Parquet file, a bad CSV header) is ``fatal``: ``--skip-invalid`` cannot
      skip it, the file must be fixed;
    - a *row-level* problem (invalid JSON, undecodable bytes, not an object, wrong CSV field count)
      is attached to that row, which ``--skip-invalid`` can reject.

    Row numbers ("lines") are 1-based: the physical line for JSONL, the line where a record
    starts for CSV, the element position for a JSON array and the row position for Parquet.

    The items are undecoded (``decode_item`` turns one into a ``RawRow``), so that worker processes
    can do the JSON decoding; ``iter_rows`` is the simple, sequential way to read.
    """
    if not spec.path.exists():
        yield RawChunk("obj", problems=[Problem(spec.display, None, None, "file not found")])
        return
    if spec.path.is_dir():
        yield RawChunk("obj", problems=[Problem(spec.display, None, None, "is a directory, expected a file")])
        return
    reader = {"jsonl": _jsonl_chunks, "json": _json_chunks, "csv": _csv_chunks, "parquet": _parquet_chunks}[spec.format]
    yield from reader(spec, chunk_rows)


def _bom_problem(display: str) -> Problem:
    return Problem(
        display,
        1,
        None,
        "file starts with a UTF-8 byte-order mark (BOM); save it as UTF-8 without BOM "
        "(e.g. sed -i '1s/^\\xEF\\xBB\\xBF//' FILE)",
    )


def crlf_problem(display: str, first_line: int, count: int) -> Problem:
    """The file-level problem for CRLF line ends (exported for readers of byte ranges)."""
    return Problem(
        display,
        first_line,
        None,
        f"Windows line ending (CRLF) on {count} line(s), first here; convert to LF (e.g. dos2unix FILE)",
    )


def _jsonl_chunks(spec: InputSpec, chunk_rows: int) -> Iterator[RawChunk]:
    last: RawChunk | None = None
    for chunk in iter_jsonl_range(spec, 0, None, chunk_rows):
        if last is not None:
            yield last
        last = chunk
    assert last is not None  # iter_jsonl_range always yields a last chunk
    if last.crlf:  # a whole file: report CRLF here, once
        last.problems.append(crlf_problem(spec.display, *last.crlf))
        last.crlf = None
    yield last


def iter_jsonl_range(
    spec: InputSpec, start: int, end: int | None, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> Iterator[RawChunk]:
    """Chunks of the JSONL lines in bytes ``[start, end)`` (both at line starts, see
    ``split_jsonl``); line numbers count from 1 at ``start``. The last chunk carries ``lines``
    (physical lines read) and ``crlf`` (first line, count) instead of a CRLF problem, so a
    caller reading a file in ranges can add offsets and report CRLF once."""
    display = spec.display
    crlf_first, crlf_count = 0, 0
    chunk = RawChunk("bytes")
    lineno = 0
    pos = start
    with open(spec.path, "rb") as fh:
        fh.seek(start)
        for lineno, line in enumerate(fh, 1):
            if end is not None and pos >= end:
                lineno -= 1
                break
            pos += len(line)
            if start == 0 and lineno == 1 and line.startswith(BOM):
                chunk.problems.append(_bom_problem(display))
                line = line[len(BOM) :]
            if line.endswith(b"\r\n"):
                crlf_count += 1
                crlf_first = crlf_first or lineno
            if not line.strip():
                continue
            chunk.items.append((lineno, line))
            if len(chunk.items) >= chunk_rows:
                yield chunk
                chunk = RawChunk("bytes")
    chunk.lines = lineno
    chunk.crlf = (crlf_first, crlf_count) if crlf_count else None
    yield chunk


def split_jsonl(path: Path, parts: int) -> list[tuple[int, int]]:
    """Cut a JSONL file into about ``parts`` byte ranges ``[start, end)`` at line starts."""
    size = Path(path).stat().st_size
    cuts = [0]
    with open(path, "rb") as fh:
        for i in range(1, parts):
            target = max(cuts[-1], size * i // parts)
            fh.seek(target)
            if target > 0:
                fh.seek(target - 1)
                fh.readline()  # to the start of the next line (stays put when already there)
            pos = fh.tell()
            if cuts[-1] < pos < size:
                cuts.append(pos)
    cuts.append(size)
    return [(a, b) for a, b in zip(cuts, cuts[1:]) if b > a] or [(0, size)]


def _json_chunks(spec: InputSpec, chunk_rows: int) -> Iterator[RawChunk]:
    """A JSON array is decoded whole (memory grows with the file; use JSONL for big inputs)."""
    display = spec.display
    data = spec.path.read_bytes()
    problems: list[Problem] = []
    if data.startswith(BOM):
        problems.append(_bom_problem(display))
        data = data[len(BOM) :]
    if b"\r\n" in data:
        first = data.count(b"\n", 0, data.index(b"\r\n")) + 1
        problems.append(crlf_problem(display, first, data.count(b"\r\n")))
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as ue:
            line = data.count(b"\n", 0, ue.start) + 1
            problems.append(
                Problem(display, line, None, f"not valid UTF-8: byte 0x{data[ue.start : ue.start + 1].hex()}")
            )
            yield RawChunk("obj", problems=problems)
            return
        hint = (
            " (one object per line? name the file .jsonl or pass --format jsonl)"
            if "after document" in str(e).lower() or "trailing" in str(e).lower()
            else ""
        )
        problems.append(Problem(display, e.lineno, None, f"invalid JSON: {e.msg} (column {e.colno}){hint}"))
        yield RawChunk("obj", problems=problems)
        return
    if not isinstance(doc, list):
        problems.append(
            Problem(
                display,
                None,
                None,
                f"expected a JSON array of objects, got {type_name(doc)} (for one object per line use .jsonl)",
            )
        )
        yield RawChunk("obj", problems=problems)
        return
    chunk = RawChunk("obj", problems=problems)
    for i, item in enumerate(doc, 1):
        chunk.items.append((i, item))
        if len(chunk.items) >= chunk_rows:
            yield chunk
            chunk = RawChunk("obj")
    yield chunk


def _decoded_lines(fh, display: str, bad: dict[int, Problem], first_line_bom: list[bool]) -> Iterator[str]:
    """Decode a binary file line by line, recording undecodable lines instead of failing."""
    for lineno, raw in enumerate(fh, 1):
        if lineno == 1 and raw.startswith(BOM):
            first_line_bom.append(True)
            raw = raw[len(BOM) :]
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as e:
            bad[lineno] = _utf8_problem(display, lineno, raw, e)
            yield raw.decode("utf-8", "replace")


def _csv_chunks(spec: InputSpec, chunk_rows: int) -> Iterator[RawChunk]:
    display = spec.display
    bad: dict[int, Problem] = {}
    bom: list[bool] = []
    with open(spec.path, "rb") as fh:
        reader = csv.reader(_decoded_lines(fh, display, bad, bom), strict=False)
        chunk = RawChunk("obj")
        try:
            header = next(reader)
        except StopIteration:
            chunk.problems.append(Problem(display, None, None, "empty CSV file (no header row)"))
            yield chunk
            return
        except csv.Error as e:
            chunk.problems.append(Problem(display, reader.line_num, None, f"invalid CSV header: {e}"))
            yield chunk
            return
        if bom:
            chunk.problems.append(_bom_problem(display))
        header = [h.strip() for h in header]
        seen: set[str] = set()
        for name in header:
            if not name:
                chunk.problems.append(Problem(display, 1, None, "CSV header has an empty column name"))
            elif name in seen:
                chunk.problems.append(Problem(display, 1, name, "CSV header names this column twice"))
            seen.add(name)
        if chunk.problems:
            yield chunk
            return
        prev_end = reader.line_num
        while True:
            try:
                values = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                start = prev_end + 1
                prev_end = reader.line_num
                chunk.items.append((start, _ProblemItem(Problem(display, start, None, f"invalid CSV: {e}"))))
                continue
            start, prev_end = prev_end + 1, reader.line_num
            if not values or (len(values) == 1 and not values[0].strip()):
                continue
            bad_line = next((bad[n] for n in range(start, prev_end + 1) if n in bad), None)
            if bad_line is not None:
                chunk.items.append((start, _ProblemItem(bad_line)))
            elif len(values) != len(header):
                chunk.items.append(
                    (
                        start,
                        _ProblemItem(
                            Problem(display, start, None, f"has {len(values)} field(s), the header has {len(header)}")
                        ),
                    )
                )
            else:
                chunk.items.append((start, dict(zip(header, values))))
            if len(chunk.items) >= chunk_rows:
                yield chunk
                chunk = RawChunk("obj")
        yield chunk


def _parquet_chunks(spec: InputSpec, chunk_rows: int) -> Iterator[RawChunk]:
    try:
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow is a core dependency
        raise MissingDependencyError("reading Parquet needs pyarrow: pip install pyarrow") from None
    display = spec.display
    try:
        pf = pq.ParquetFile(spec.path)
    except Exception as e:  # pyarrow raises ArrowInvalid/OSError subclasses for bad files
        yield RawChunk("obj", problems=[Problem(display, None, None, f"not a readable Parquet file: {e}")])
        return
    n = 0
    try:
        for batch in pf.iter_batches(batch_size=chunk_rows):
            rows = batch.to_pylist()
            yield RawChunk("obj", [(n + i, row) for i, row in enumerate(rows, 1)])
            n += len(rows)
    except Exception as e:
        yield RawChunk("obj", problems=[Problem(display, n + 1, None, f"cannot read Parquet data: {e}")])


def estimate_size(specs: list[InputSpec]) -> int:
    """Rough decoded size in bytes of all inputs (Parquet counted x4 for compression)."""
    total = 0
    for s in specs:
        try:
            size = s.path.stat().st_size
        except OSError:
            continue
        total += size * 4 if s.format == "parquet" else size
    return total
