"""Disk partitions that keep memory flat on inputs of any size.

- ``KeyedBuckets``: an external sort by a 64-bit key. Records go to the bucket of their key's
  top bits, so bucket 0 holds the smallest keys; reading the buckets in order and sorting each
  one in memory yields every record in key order. Keys are uniform hashes, so buckets are even.
- ``DuplicateFinder``: records partitioned by a string key (CRC32), so equal keys share a
  partition; each partition is grouped in memory to find keys seen more than once.

Both write under a directory the caller owns (the output's staging directory) and hold at
most one bucket or partition in memory.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator
from pathlib import Path

_BUFFER = 1 << 16
TARGET_BUCKET_BYTES = 16 << 20


def bucket_count(estimated_bytes: int, target_bytes: int = TARGET_BUCKET_BYTES, max_buckets: int = 4096) -> int:
    """A power of two giving buckets of about ``target_bytes``."""
    want = max(1, math.ceil(estimated_bytes / max(1, target_bytes)))
    return min(max_buckets, 1 << (want - 1).bit_length())


class KeyedBuckets:
    """Append ``(key, tiebreak, payload)`` records; read them back sorted by (key, tiebreak).

    ``tiebreak`` must have a fixed width (e.g. 16 hex digits) and, like ``payload``, contain no
    newline; ``payload`` must contain no newline either.
    """

    def __init__(self, directory: Path, n_buckets: int, prefix: str = "bucket"):
        if n_buckets & (n_buckets - 1):
            raise ValueError("n_buckets must be a power of two")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.n_buckets = n_buckets
        self.prefix = prefix
        self._shift = 64 - (n_buckets.bit_length() - 1)
        self._paths = [self.directory / f"{prefix}-{i:05d}" for i in range(n_buckets)]
        self._files = [open(p, "wb", buffering=_BUFFER) for p in self._paths]

    def bucket_of(self, key: int) -> int:
        return key >> self._shift if self._shift < 64 else 0

    def add(self, key: int, tiebreak: str, payload: bytes) -> None:
        self._files[self.bucket_of(key)].write(b"%016x%s %s\n" % (key, tiebreak.encode(), payload))

    def add_lines(self, bucket: int, lines: list[bytes]) -> None:
        """Append lines already built as ``b"%016x<tiebreak> <payload>\\n"`` to ``bucket``
        (``bucket_of(key)``), the fast path for producers in other processes."""
        self._files[bucket].write(b"".join(lines))

    def close(self) -> None:
        for f in self._files:
            if not f.closed:
                f.close()

    def iter_sorted(self) -> Iterator[tuple[int, bytes, bytes]]:
        """``(key, tiebreak, payload)`` in increasing order; one bucket in memory at a time."""
        self.close()
        return iter_sorted_buckets(self.directory, self.n_buckets, [self.prefix])


def iter_sorted_buckets(directory: Path, n_buckets: int, prefixes: list[str]) -> Iterator[tuple[int, bytes, bytes]]:
    """Merge the buckets written by several ``KeyedBuckets`` (one per prefix, e.g. one per
    worker process) and yield ``(key, tiebreak, payload)`` in increasing order, deleting each
    bucket's files once read."""
    for lines in iter_sorted_bucket_lines(directory, n_buckets, prefixes):
        for line in lines:
            head, payload = line.split(b" ", 1)
            yield int(head[:16], 16), head[16:], payload


def iter_sorted_bucket_lines(directory: Path, n_buckets: int, prefixes: list[str]) -> Iterator[list[bytes]]:
    """Like ``iter_sorted_buckets`` but one sorted list of raw lines (``b"<key:016x><tiebreak>
    <payload>"``, no newline) per bucket: the fast path for callers that parse lines themselves."""
    for i in range(n_buckets):
        paths = [Path(directory) / f"{prefix}-{i:05d}" for prefix in prefixes]
        lines = b"".join(p.read_bytes() for p in paths).split(b"\n")
        lines.pop()  # the empty string after the final newline
        lines.sort()
        yield lines
        del lines
        for p in paths:
            p.unlink()


def partition_of(key: bytes, n_parts: int) -> int:
    """The ``DuplicateFinder`` partition of ``key``."""
    return zlib.crc32(key) % n_parts


class DuplicateFinder:
    """Find string keys that occur more than once, with flat memory.

    ``add(key, record)`` stores ``record`` under ``key``; neither may contain a newline and the
    key no tab (escape them, e.g. as JSON).
    ``duplicates()`` yields ``(key, [record, ...])`` for keys seen at least twice, in the order
    the records were added.
    """

    def __init__(self, directory: Path, n_parts: int, prefix: str = "dup"):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.n_parts = max(1, n_parts)
        self.prefix = prefix
        self._paths = [self.directory / f"{prefix}-{i:05d}" for i in range(self.n_parts)]
        self._files = [open(p, "wb", buffering=_BUFFER) for p in self._paths]

    def add(self, key: bytes, record: bytes) -> None:
        self._files[zlib.crc32(key) % self.n_parts].write(key + b"\t" + record + b"\n")

    def add_lines(self, part: int, lines: list[bytes]) -> None:
        """Append lines already built as ``key + b"\\t" + record + b"\\n"`` to partition
        ``part`` (``partition_of(key, n_parts)``), the fast path for batches."""
        self._files[part].write(b"".join(lines))

    def close(self) -> None:
        for f in self._files:
            if not f.closed:
                f.close()

    def duplicates(self) -> Iterator[tuple[bytes, list[bytes]]]:
        self.close()
        return find_duplicates(self.directory, self.n_parts, [self.prefix])


def find_duplicates(directory: Path, n_parts: int, prefixes: list[str]) -> Iterator[tuple[bytes, list[bytes]]]:
    """Keys seen more than once across the ``DuplicateFinder``s written under ``prefixes``
    (same ``n_parts``), with their records in writing order (prefix by prefix); one partition
    in memory at a time, its files deleted once read."""
    for i in range(max(1, n_parts)):
        groups: dict[bytes, list[bytes]] = {}
        paths = [Path(directory) / f"{prefix}-{i:05d}" for prefix in prefixes]
        for path in paths:
            with open(path, "rb") as fh:
                for line in fh:
                    key, record = line[:-1].split(b"\t", 1)
                    found = groups.get(key)
                    if found is None:
                        groups[key] = [record]
                    else:
                        found.append(record)
        for key, records in groups.items():
            if len(records) > 1:
                yield key, records
        del groups
        for path in paths:
            path.unlink()
