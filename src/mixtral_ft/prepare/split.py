"""Deterministic, order-independent train/test split by group.

Every group gets a 64-bit key from ``sha256(seed, group)`` (:func:`split_key`); rows are ordered by it,
and the test set is the prefix of whole groups whose row count is closest to the target
(:class:`TestSize`). :class:`SplitAssigner` applies the rule while groups stream by in key order, so the
caller never holds the whole data set; its docstring lists the properties the tests check.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import ClassVar

from mixtral_ft.errors import UsageError


@dataclass(frozen=True)
class TestSize:
    """Either ``count`` rows or a ``fraction`` of rows go to test."""

    __test__: ClassVar[bool] = False  # not a pytest test class
    count: int | None = None
    fraction: float | None = None

    def target(self, total_rows: int) -> int:
        """Test rows wanted out of ``total_rows``."""
        if self.count is not None:
            return self.count
        # round() first: 0.1 * 300 is 30.000000000000004 in binary floating point
        return math.ceil(round((self.fraction or 0.0) * total_rows, 9))

    def to_json(self) -> dict:
        return {"count": self.count, "fraction": self.fraction}

    @property
    def text(self) -> str:
        """As ``--test-size`` takes it: ``300`` or ``0.125``."""
        return f"{self.count}" if self.count is not None else f"{self.fraction}"


def parse_test_size(text: str | float) -> TestSize:
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
        raise UsageError(
            f"--test-size {s}: a fraction must be between 0 and 1 (exclusive); a count has no decimal point"
        )
    return TestSize(fraction=value)


def split_key(group: str, seed: int) -> int:
    """The group's position in the seeded order: a 64-bit integer from SHA-256."""
    digest = hashlib.sha256(f"{seed}\x1f{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


class SplitAssigner:
    """Assigns groups, fed in increasing key order, to ``"test"`` or ``"train"``.

    ``total_rows`` (all rows that will be fed) is needed for a fraction, whose target depends on it.

    Every group (a ``--group-by`` value, or the row's own content when there is no grouping) gets
    a 64-bit key from ``sha256(seed, group)``: a uniform number that depends on neither the order
    of the rows nor on which other rows exist. Rows are ordered by that key (effectively a seeded
    shuffle), and the test set is a prefix of that order: the shortest prefix of whole groups whose
    row count is closest to the target (ties: the smaller). The target is

    - ``count`` n: n rows (exactly n when every group has one row);
    - ``fraction`` f: ``ceil(f x rows)`` rows, as scikit-learn's ``train_test_split`` counts it, so
      0.125 of 2,400 rows is exactly 300.

    Properties (tested): the same rows in any order give the same split; no group is on both
    sides; adding rows never reorders existing rows, so the test set only changes at its end. With
    a count, adding rows can only move existing rows test -> train (a new group with a smaller key
    takes their place), never train -> test; with a fraction the target grows with the data, so
    rows near the end of the prefix can move either way.
    """

    def __init__(self, test_size: TestSize, total_rows: int | None = None):
        if test_size.count is None and total_rows is None:
            raise ValueError("a fractional test size needs total_rows")
        self.test_size = test_size
        self.target = test_size.target(total_rows or 0)
        self.n_test = 0
        self.n_train = 0
        self._closed = False  # the test prefix is complete

    def assign(self, size: int) -> str:
        """Side for the next group (in increasing key order), of ``size`` rows."""
        # |n - target| is unimodal along the prefix: take the group while it gets closer.
        if not self._closed and abs(self.n_test + size - self.target) < abs(self.n_test - self.target):
            self.n_test += size
            return "test"
        self._closed = True
        self.n_train += size
        return "train"
