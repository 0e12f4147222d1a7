"""The write pass of every ``prepare`` task: read the key-ordered buckets of the read pass group
by group (the split's order), assign each group to test or train, and write ``train.jsonl`` /
``test.jsonl`` (hashed as they are written), the lengths report, the preview and the tallies.
Then ``rejected.jsonl``, in input and line order.

The task says, per group (``GroupWriter``), how many of its rows count for the split and what
rows it writes; rows the task's check left out (``Checked.left_out``) never reach it.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol, Self

import orjson

from mixtral_ft.data.lengths import LengthReport
from mixtral_ft.data.manifest import HashingWriter
from mixtral_ft.prepare.buckets import Keyed, Layout, Place, iter_sorted_bucket_lines
from mixtral_ft.prepare.readpass import ReadPass, Rejected, RowProblem
from mixtral_ft.prepare.split import SplitAssigner, TestSize
from mixtral_ft.prepare.summary import Tally
from mixtral_ft.util.progress import ProgressBar

TRAIN, TEST, REJECTED = "train.jsonl", "test.jsonl", "rejected.jsonl"
SIDE_FILES = {"train": TRAIN, "test": TEST}
_WRITE_BATCH = 2000  # lines gathered before a write
_LENGTH_BATCH = 2000  # estimated lengths gathered before they are folded into the report


@dataclass
class Checked:
    """What a task's check pass decided, before anything is written."""

    n_split: int  # rows the split counts (its fraction is of these)
    left_out: dict[bytes, str | None] = field(default_factory=dict)  # place -> reason (None: not listed)
    problems: list[RowProblem] = field(default_factory=list)  # found by the check
    rejected: list[Rejected] = field(default_factory=list)  # records of rows rejected by the check
    bucket_prefixes: list[str] = field(default_factory=list)  # buckets the check wrote, beside the read pass's
    counts: dict[str, int] = field(default_factory=dict)  # the task's own (RG: duplicates; TC: augmentation rows)


class OutRow(NamedTuple):
    """A row a task writes (on its group's side). ``keys`` are its tally keys (one per table: its
    source...), ``counts`` its own counts (TC: hallucinated, mistakes...). ``prompt`` and
    ``response`` (as trained) are needed only for exact lengths or the preview; else ``chars``,
    their length, is enough."""

    line: bytes  # the JSON line, without its newline
    keys: tuple[Any, ...]
    counts: tuple[int, ...] = ()
    id: str | None = None  # None: read from ``line`` when needed
    prompt: str | None = None
    response: str | None = None
    chars: int = 0


class GroupWriter(Protocol):
    """What a task tells the write pass about one group of rows (in key order)."""

    def split_rows(self, members: list[Keyed]) -> int:
        """How many of the group's rows count for the split (0: the group goes to train)."""
        ...

    def rows(self, members: list[Keyed], side: str) -> list[OutRow]:
        """The rows the group writes to ``side``, now that it is known."""
        ...


def read_groups(
    read: ReadPass,
    layout: Layout,
    extra_prefixes: Iterable[str] = (),
    keep: bool = False,
    on_bucket: Callable[[int], None] | None = None,
) -> Iterator[list[Keyed]]:
    """The read pass's rows (and those of ``extra_prefixes``) as groups of ``Keyed`` rows in key
    order; each bucket's files are deleted once read unless ``keep``; ``on_bucket(1)`` after
    each bucket is read."""
    prefixes = read.bucket_prefixes() + list(extra_prefixes)
    buckets = iter_sorted_bucket_lines(read.work, layout.n_buckets, prefixes, keep=keep)
    if on_bucket is not None:
        buckets = _counted(buckets, on_bucket)
    return iter_groups(buckets)


def _counted(buckets: Iterator[list[bytes]], on_bucket: Callable[[int], None]) -> Iterator[list[bytes]]:
    for lines in buckets:
        on_bucket(1)
        yield lines


def iter_groups(buckets: Iterable[list[bytes]]) -> Iterator[list[Keyed]]:
    """Groups of rows with one key, in key order, from sorted bucket lines (one group never spans
    two buckets since a bucket is a key range)."""
    make = Keyed._make
    for lines in buckets:
        group: list[Keyed] = []
        key = b""  # no key is empty
        for line in lines:
            row = make(line.split(b"\t", 4))  # Keyed.parse, inlined: this runs once per row
            if row.key != key:
                if group:
                    yield group
                key, group = row.key, []
            group.append(row)
        if group:
            yield group


def rejected_record(read: ReadPass, place: bytes, reason: str, row: Any) -> Rejected:
    """The record of a row a check left out with ``reason``."""
    where = read.locate(Place.parse(place))
    return Rejected(where.input, where.line, {"file": where.file, "line": where.line, "problems": [reason], "row": row})


@dataclass
class Written:
    hashes: dict[str, str]  # file name -> SHA-256
    rows: dict[str, int]  # side -> rows
    tally: Tally
    preview: list[dict[str, Any]]
    rejected: list[Rejected]  # rows left out here, with a reason


class WritePass:
    """One run of the write pass (``run``); ``rejected_row(payload)`` is what ``rejected.jsonl``
    shows of a row left out here."""

    def __init__(
        self,
        read: ReadPass,
        checked: Checked,
        lengths: LengthReport,
        tally: Tally,
        rejected_row: Callable[[bytes], Any],
        preview: int = 0,
    ):
        self.read, self.checked, self.lengths, self.tally = read, checked, lengths, tally
        self.rejected_row = rejected_row
        self.n_preview = preview
        self.preview: list[dict[str, Any]] = []
        self.rejected: list[Rejected] = []
        self._chars: dict[str, list[int]] = {"train": [], "test": []}
        self._n_chars = 0

    def run(self, layout: Layout, test_size: TestSize, writer: GroupWriter, stage: Path) -> Written:
        assigner = SplitAssigner(test_size, self.checked.n_split)
        with SplitWriter(stage) as out, ProgressBar(total=layout.n_buckets, desc="writing", unit=" buckets") as bar:
            for group in read_groups(self.read, layout, self.checked.bucket_prefixes, on_bucket=bar.update):
                members = self._kept(group)
                if not members:
                    continue
                n_split = writer.split_rows(members)
                side = assigner.assign(n_split) if n_split else "train"
                rows = writer.rows(members, side)
                if rows:
                    out.write_many(side, [r.line for r in rows])
                    self.tally.add_group(side, [(r.keys, r.counts) for r in rows])
                    self._measure(side, rows)
            self._fold_chars()
            hashes = out.close()
            rows_written = dict(out.rows)
        return Written(hashes, rows_written, self.tally, self.preview, self.rejected)

    def _kept(self, group: list[Keyed]) -> list[Keyed]:
        left_out = self.checked.left_out
        if not left_out:
            return group
        kept = []
        for m in group:
            if m.place not in left_out:
                kept.append(m)
                continue
            reason = left_out[m.place]
            if reason is not None:
                self.rejected.append(rejected_record(self.read, m.place, reason, self.rejected_row(m.payload)))
        return kept

    def _measure(self, side: str, rows: list[OutRow]) -> None:
        """The rows' lengths for the report, and preview examples while fewer than asked."""
        lengths, chars = self.lengths, self._chars[side]
        for r in rows:
            if r.prompt is not None and r.response is not None and lengths.exact:
                lengths.add_text(side, r.id or _row_id(r.line), r.prompt, r.response)
            elif r.chars > lengths.char_limit:  # over sequence_len: named in the report, in order
                lengths.add_chars(side, r.chars, r.id or _row_id(r.line))
            else:
                chars.append(r.chars)
        self._n_chars += len(rows)
        if self._n_chars >= _LENGTH_BATCH:
            self._fold_chars()
        for r in rows[: self.n_preview - len(self.preview)]:
            if r.prompt is not None and r.response is not None:
                self.preview.append(
                    {
                        "split": side,
                        "id": r.id or _row_id(r.line),
                        "source": r.keys[0],
                        "prompt": r.prompt,
                        "response": r.response,
                    }
                )

    def _fold_chars(self) -> None:
        for side, seen in self._chars.items():
            for n_chars, n in Counter(seen).items():
                self.lengths.add_chars(side, n_chars, count=n)
            seen.clear()
        self._n_chars = 0


def _row_id(line: bytes) -> str:
    return orjson.loads(line)["id"]


def write_rejected(path: Path, read: ReadPass, late: list[Rejected], dumps: Callable[[Any], bytes]) -> int:
    """``rejected.jsonl`` in input and line order: the read pass's records merged with ``late``
    ones (the check's and the write pass's), each encoded by ``dumps``. Returns how many."""
    late = sorted(late, key=_order)
    n = 0
    with open(path, "wb") as fh:
        for rejected in heapq.merge(read.iter_rejected(), late, key=_order):
            fh.write(dumps(rejected.record) + b"\n")
            n += 1
    return n


def _order(r: Rejected) -> tuple[int, int]:
    return r.input, r.line


class SplitWriter:
    """``train.jsonl`` and ``test.jsonl`` in ``directory``: JSON lines written in batches and hashed
    while written; ``rows`` counts them per side."""

    def __init__(self, directory: Path):
        self._writers = {side: HashingWriter(Path(directory) / name) for side, name in SIDE_FILES.items()}
        self._pending: dict[str, list[bytes]] = {side: [] for side in SIDE_FILES}
        self.rows = {side: 0 for side in SIDE_FILES}

    def write_many(self, side: str, lines: list[bytes]) -> None:
        """JSON lines (no newline) to ``side``."""
        pending = self._pending[side]
        pending.extend(lines)
        if len(pending) >= _WRITE_BATCH:
            self._flush(side)

    def _flush(self, side: str) -> None:
        pending = self._pending[side]
        if pending:
            self.rows[side] += len(pending)
            pending.append(b"")
            self._writers[side].write(b"\n".join(pending))
            pending.clear()

    def close(self) -> dict[str, str]:
        """Flush and close both files; ``{file name: SHA-256}``."""
        for side in SIDE_FILES:
            self._flush(side)
        return {SIDE_FILES[side]: w.close() for side, w in self._writers.items()}

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        for w in self._writers.values():
            w.__exit__()
