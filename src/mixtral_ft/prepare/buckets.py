"""Disk partitions that keep memory flat on inputs of any size, under a directory the caller owns (the
output's staging directory); readers hold at most one bucket or partition in memory.

- ``KeyedBuckets``: an external sort by a 64-bit key: lines go to the bucket of the key's top bits, and
  the buckets read in order, each sorted in memory, yield every line in key order.
- ``Partitions``: lines partitioned by a string key (CRC32), so equal keys share a partition: for
  ``find_duplicates`` and for joins (``read_partition``).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

_BUFFER = 1 << 16
TARGET_BUCKET_BYTES = 16 << 20


def bucket_count(estimated_bytes: int, target_bytes: int = TARGET_BUCKET_BYTES, max_buckets: int = 4096) -> int:
    """A power of two giving buckets of about ``target_bytes``."""
    want = max(1, math.ceil(estimated_bytes / max(1, target_bytes)))
    return min(max_buckets, 1 << (want - 1).bit_length())


def bucket_shift(n_buckets: int) -> int:
    """``key >> bucket_shift(n)`` is the bucket of a 64-bit key among ``n`` (a power of two; for
    one bucket the shift is 64, which gives 0 for every key)."""
    return 64 - (n_buckets.bit_length() - 1)


def partition_of(key: bytes, n_parts: int) -> int:
    """The ``Partitions`` partition of ``key``."""
    return zlib.crc32(key) % n_parts


class Layout(NamedTuple):
    """How many key-ordered buckets and hash partitions one run's work files use."""

    n_buckets: int
    n_parts: int

    @classmethod
    def for_size(cls, estimated_bytes: int, bucket_bytes: int = TARGET_BUCKET_BYTES) -> Layout:
        """Buckets of about ``bucket_bytes`` for ``estimated_bytes`` of rows; a partition per 8 buckets."""
        n_buckets = bucket_count(estimated_bytes, bucket_bytes)
        return cls(n_buckets, max(1, n_buckets // 8))

    def bucket_of(self, key: int) -> int:
        return key >> bucket_shift(self.n_buckets)


class Place(NamedTuple):
    """Where a row came from: its read task, its line within the task's range, and which row of
    that line it is (a RAGTruth line holds several responses)."""

    task: int
    line: int
    n: int = 0

    def encode(self) -> bytes:
        return b"%d %d %d" % self

    @staticmethod
    def at(task: int, line: int, n: int = 0) -> bytes:
        """``Place(task, line, n).encode()`` without building the tuple (once per row read)."""
        return b"%d %d %d" % (task, line, n)

    @classmethod
    def parse(cls, data: bytes) -> Place:
        task, line, n = data.split(b" ")
        return cls(int(task), int(line), int(n))


class Keyed(NamedTuple):
    """One row in the key-ordered buckets, a line ``key TAB tie TAB place TAB meta TAB payload``.

    ``key`` (16 hex digits: its group's split key) orders the line, ``tie`` (fixed width) orders
    the rows of one group, ``place`` (``Place.encode()``) says where the row came from, ``meta``
    is what its task needs to know without decoding it, ``payload`` is its JSON. No field holds
    a tab or a newline (JSON escapes them), so sorting the lines sorts by key, then tie.
    """

    key: bytes
    tie: bytes
    place: bytes
    meta: bytes
    payload: bytes

    @staticmethod
    def line(key: int, tie: bytes, place: bytes, meta: bytes, payload: bytes) -> bytes:
        """The bucket line (with its newline) of a row."""
        return b"%016x\t%s\t%s\t%s\t%s\n" % (key, tie, place, meta, payload)

    @classmethod
    def parse(cls, line: bytes) -> Keyed:
        """A bucket line (without its newline) as its fields."""
        key, tie, place, meta, payload = line.split(b"\t", 4)
        return cls(key, tie, place, meta, payload)


class _Files:
    def __init__(self, directory: Path, n: int, prefix: str, append: bool = False):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix
        self._files = [
            open(self.directory / f"{prefix}-{i:05d}", "ab" if append else "wb", buffering=_BUFFER) for i in range(n)
        ]

    def add_lines(self, index: int, lines: list[bytes]) -> None:
        """Append ``lines`` (each ending in a newline) to bucket or partition ``index``."""
        self._files[index].write(b"".join(lines))

    def close(self) -> None:
        for f in self._files:
            if not f.closed:
                f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class KeyedBuckets(_Files):
    """``Keyed`` lines by the top bits of their key: add each to bucket ``Layout.bucket_of(key)``;
    read them back in order with ``iter_sorted_bucket_lines``. A line starts with its key in 16 hex
    digits, so bucket 0 holds the smallest keys; keys are uniform hashes, so buckets are even."""

    def __init__(self, directory: Path, n_buckets: int, prefix: str = "bucket", append: bool = False):
        if n_buckets & (n_buckets - 1):
            raise ValueError("n_buckets must be a power of two")
        self.n_buckets = n_buckets
        super().__init__(directory, n_buckets, prefix, append)


class Partitions(_Files):
    """Lines ``key + b"\\t" + record + b"\\n"`` by ``partition_of(key, n_parts)``; neither part may
    contain a newline and the key no tab (escape them, e.g. as JSON)."""

    def __init__(self, directory: Path, n_parts: int, prefix: str = "part"):
        self.n_parts = max(1, n_parts)
        super().__init__(directory, self.n_parts, prefix)


def iter_sorted_bucket_lines(
    directory: Path, n_buckets: int, prefixes: list[str], keep: bool = False
) -> Iterator[list[bytes]]:
    """One sorted list of raw lines (no newline) per bucket, in bucket order, merged over the
    ``KeyedBuckets`` written under ``prefixes`` (e.g. one per worker process). Each bucket's
    files are deleted once read, unless ``keep`` (for a caller that reads them twice)."""
    for i in range(n_buckets):
        paths = [Path(directory) / f"{prefix}-{i:05d}" for prefix in prefixes]
        lines = b"".join(p.read_bytes() for p in paths if p.exists()).split(b"\n")
        lines.pop()  # the empty string after the final newline
        lines.sort()
        yield lines
        del lines
        if not keep:
            for p in paths:
                p.unlink(missing_ok=True)


def read_partition(directory: Path, index: int, prefix: str, delete: bool = True) -> Iterator[tuple[bytes, bytes]]:
    """``(key, record)`` of partition ``index`` written under ``prefix``, in writing order."""
    path = Path(directory) / f"{prefix}-{index:05d}"
    if not path.exists():
        return
    with open(path, "rb") as fh:
        for line in fh:
            key, record = line[:-1].split(b"\t", 1)
            yield key, record
    if delete:
        path.unlink()


def find_duplicates(directory: Path, n_parts: int, prefixes: list[str]) -> Iterator[tuple[bytes, list[bytes]]]:
    """Keys seen more than once across the ``Partitions`` written under ``prefixes`` (same
    ``n_parts``), with their records in writing order (prefix by prefix); one partition in
    memory at a time, its files deleted once read."""
    for i in range(max(1, n_parts)):
        groups: dict[bytes, list[bytes]] = {}
        for prefix in prefixes:
            for key, record in read_partition(directory, i, prefix):
                found = groups.get(key)
                if found is None:
                    groups[key] = [record]
                else:
                    found.append(record)
        for key, records in groups.items():
            if len(records) > 1:
                yield key, records
        del groups
