"""The write pass both ``prepare`` commands share: read the key-ordered buckets of the read pass
group by group (the split's order), and write ``train.jsonl`` / ``test.jsonl`` hashed as they
are written.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Self

from mixtral_ft.data.manifest import HashingWriter

TRAIN, TEST, REJECTED = "train.jsonl", "test.jsonl", "rejected.jsonl"
SIDE_FILES = {"train": TRAIN, "test": TEST}
_WRITE_BATCH = 2000  # lines gathered before a write


def iter_groups(buckets: Iterable[list[bytes]]) -> Iterator[tuple[bytes, list[bytes]]]:
    """``(key in 16 hex digits, its lines)`` in key order, from sorted bucket lines (lines that
    start with their key; one group never spans two buckets since a bucket is a key range)."""
    for lines in buckets:
        key = b""  # no line starts with an empty key
        members: list[bytes] = []
        for line in lines:
            k = line[:16]
            if k != key:
                if members:
                    yield key, members
                key, members = k, []
            members.append(line)
        if members:
            yield key, members


class SplitWriter:
    """``train.jsonl`` and ``test.jsonl`` in ``directory``: JSON lines written in batches and hashed
    while written; ``rows`` counts them per side."""

    def __init__(self, directory: Path):
        self._writers = {side: HashingWriter(Path(directory) / name) for side, name in SIDE_FILES.items()}
        self._pending: dict[str, list[bytes]] = {side: [] for side in SIDE_FILES}
        self.rows = {side: 0 for side in SIDE_FILES}

    def write(self, side: str, line: bytes) -> None:
        """One JSON line (no newline) to ``side``."""
        pending = self._pending[side]
        pending.append(line)
        if len(pending) >= _WRITE_BATCH:
            self._flush(side)

    def write_many(self, side: str, lines: list[bytes]) -> None:
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
