"""Deterministic, order-independent train/test split by group.

Every group (a ``--group-by`` value, or the row's own content when there is no grouping)
gets a 64-bit key from ``sha256(seed, group)``, i.e. a uniform number in [0, 1) that does not
depend on the order of the rows or on which other rows exist. Rows are ordered by that key
(effectively a seeded shuffle), and the test set is a prefix of that order:

- ``fraction`` f: a group is test iff its key < f. Adding rows never moves an existing row.
- ``count`` n: the shortest prefix of groups whose row count is closest to n (exactly n when
  every group has one row). Adding rows can only push existing test rows into train (a new
  group with a smaller key takes their place), never train rows into test.

``SplitAssigner`` applies the rule while groups stream by in key order, so the caller never
holds the whole data set in memory.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from mixtral_ft.errors import UsageError

KEY_BITS = 64
KEY_SPACE = 1 << KEY_BITS


@dataclass(frozen=True)
class TestSize:
    """Either ``count`` rows or a ``fraction`` of rows go to test."""

    count: int | None = None
    fraction: float | None = None

    def describe(self) -> str:
        return f"{self.count} rows" if self.count is not None else f"fraction {self.fraction}"

    def to_json(self) -> dict:
        return {"count": self.count, "fraction": self.fraction}


TestSize.__test__ = False  # not a pytest test class


def parse_test_size(text: str | int | float) -> TestSize:
    """``"300"`` -> 300 rows; ``"0.1"`` -> a fraction in (0, 1)."""
    s = str(text).strip()
    try:
        if s.isdigit():
            if int(s) < 1:
                raise UsageError("--test-size must be at least 1 row")
            return TestSize(count=int(s))
        value = float(s)
    except ValueError:
        raise UsageError(f"--test-size '{text}': expected a row count (300) or a fraction (0.125)") from None
    if not 0.0 < value < 1.0:
        raise UsageError(f"--test-size {s}: a fraction must be between 0 and 1 (exclusive); a count has no decimal point")
    return TestSize(fraction=value)


def split_key(group: str, seed: int) -> int:
    """The group's position in the seeded order: a 64-bit integer from SHA-256."""
    digest = hashlib.sha256(f"{seed}\x1f{group}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


def key_unit(key: int) -> float:
    """The key as a number in [0, 1)."""
    return key / KEY_SPACE


class SplitAssigner:
    """Assigns groups, fed in increasing key order, to ``"test"`` or ``"train"``."""

    def __init__(self, test_size: TestSize):
        self.test_size = test_size
        self.n_test = 0
        self.n_train = 0
        self._closed = False  # count mode: the test prefix is complete
        self._threshold = None if test_size.fraction is None else int(test_size.fraction * KEY_SPACE)

    def assign(self, key: int, size: int) -> str:
        """Side for a group of ``size`` rows whose key is ``key`` (keys must not decrease)."""
        if self._threshold is not None:
            side = "test" if key < self._threshold else "train"
        else:
            target = self.test_size.count or 0
            # |n - target| is unimodal along the prefix: take the group while it gets closer.
            if not self._closed and abs(self.n_test + size - target) < abs(self.n_test - target):
                side = "test"
            else:
                self._closed = True
                side = "train"
        if side == "test":
            self.n_test += size
        else:
            self.n_train += size
        return side
