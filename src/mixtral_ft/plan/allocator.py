"""PyTorch's CUDA caching allocator, replayed on the allocations of a simulated training step.

The simulator counts live bytes; a GPU needs more, because the allocator rounds blocks, packs them into
segments, caches freed blocks and splits cached ones. :func:`replay` runs a step's allocations and frees
through that policy and gives the reserved peak; :func:`needed_bytes` the smallest device capacity the
step gets through without running out of memory, which decides whether a run fits. The policy, rule by
rule: docs/design/planner.md.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

MIN_BLOCK = 512  # kMinBlockSize
SMALL_SIZE = 1 << 20  # kSmallSize: largest small request
SMALL_BUFFER = 2 << 20  # kSmallBuffer: small segments
LARGE_BUFFER = 20 << 20  # kLargeBuffer: segments for requests of 1-10 MiB
MIN_LARGE_ALLOC = 10 << 20  # kMinLargeAlloc
ROUND_LARGE = 2 << 20  # kRoundLarge
SEARCH_STEP = 2 << 20  # the needed-memory search stops within this many bytes

# A trace: (key, nbytes) for an allocation of a new storage, (key, 0) for its release.
Event = tuple[int, int]


def round_size(size: int) -> int:
    return MIN_BLOCK if size < MIN_BLOCK else MIN_BLOCK * -(-size // MIN_BLOCK)


def allocation_size(size: int) -> int:
    if size <= SMALL_SIZE:
        return SMALL_BUFFER
    if size < MIN_LARGE_ALLOC:
        return LARGE_BUFFER
    return ROUND_LARGE * -(-size // ROUND_LARGE)


class OutOfMemory(Exception):
    """The replay needed a segment the capacity has no room for."""


@dataclass(eq=False)
class _Block:
    size: int
    segment: int
    offset: int
    small: bool
    free: bool = True
    prev: _Block | None = None
    next: _Block | None = None

    def key(self) -> tuple[int, int, int]:
        return (self.size, self.segment, self.offset)


@dataclass
class CachingAllocator:
    """One device's caching allocator, default configuration (docs/design/planner.md)."""

    capacity: int | None = None  # bytes the allocator may reserve; None: no limit
    reserved: int = 0
    allocated: int = 0
    peak_reserved: int = 0
    peak_allocated: int = 0
    _pools: dict[bool, list[tuple[int, int, int]]] = field(default_factory=lambda: {True: [], False: []})
    _by_key: dict[tuple[int, int, int], _Block] = field(default_factory=dict)
    _segments: itertools.count = field(default_factory=itertools.count)

    def _insert(self, block: _Block) -> None:
        k = block.key()
        bisect.insort(self._pools[block.small], k)
        self._by_key[k] = block

    def _remove(self, block: _Block) -> None:
        k = block.key()
        pool = self._pools[block.small]
        del pool[bisect.bisect_left(pool, k)]
        del self._by_key[k]

    def _best_fit(self, size: int, small: bool) -> _Block | None:
        pool = self._pools[small]
        i = bisect.bisect_left(pool, (size, -1, -1))
        if i == len(pool):
            return None
        block = self._by_key[pool[i]]
        self._remove(block)
        return block

    def _release_cached(self) -> None:
        """``release_cached_blocks``: give back every cached segment that is wholly free."""
        for small in (True, False):
            for k in list(self._pools[small]):
                block = self._by_key[k]
                if block.prev is None and block.next is None:
                    self._remove(block)
                    self.reserved -= block.size

    def _new_segment(self, size: int, small: bool) -> _Block:
        seg = allocation_size(size)
        if self.capacity is not None and self.reserved + seg > self.capacity:
            self._release_cached()
            if self.reserved + seg > self.capacity:
                raise OutOfMemory(size)
        self.reserved += seg
        self.peak_reserved = max(self.peak_reserved, self.reserved)
        return _Block(seg, next(self._segments), 0, small)

    def malloc(self, nbytes: int) -> _Block:
        size = round_size(nbytes)
        small = size <= SMALL_SIZE
        block = self._best_fit(size, small) or self._new_segment(size, small)
        rest = block.size - size
        if (rest >= MIN_BLOCK) if small else (rest > SMALL_SIZE):
            tail = _Block(rest, block.segment, block.offset + size, small, True, block, block.next)
            if block.next is not None:
                block.next.prev = tail
            block.next = tail
            block.size = size
            self._insert(tail)
        block.free = False
        self.allocated += block.size
        self.peak_allocated = max(self.peak_allocated, self.allocated)
        return block

    def free(self, block: _Block) -> None:
        block.free = True
        self.allocated -= block.size
        for neighbour in (block.prev, block.next):
            if neighbour is not None and neighbour.free and neighbour is not block:
                self._remove(neighbour)
                if neighbour is block.prev:
                    block.offset, block.prev = neighbour.offset, neighbour.prev
                    if neighbour.prev is not None:
                        neighbour.prev.next = block
                else:
                    block.next = neighbour.next
                    if neighbour.next is not None:
                        neighbour.next.prev = block
                block.size += neighbour.size
        self._insert(block)


def replay(events: Iterable[Event], capacity: int | None = None, steps: int = 2) -> CachingAllocator:
    """Run ``events`` through a :class:`CachingAllocator` ``steps`` times in a row (a later step starts
    from the cache the earlier one left; what is still live at the end of a step is freed, as the
    optimizer step's ``zero_grad`` frees the gradients). Raises :class:`OutOfMemory` past ``capacity``."""
    trace = list(events)
    alloc = CachingAllocator(capacity)
    for _ in range(steps):
        live: dict[int, _Block] = {}
        for key, nbytes in trace:
            if nbytes:
                if key not in live:
                    live[key] = alloc.malloc(nbytes)
            else:
                block = live.pop(key, None)
                if block is not None:
                    alloc.free(block)
        for block in live.values():
            alloc.free(block)
    return alloc


def needed_bytes(events: Iterable[Event], steps: int = 2) -> dict[str, int]:
    """The smallest capacity (within :data:`SEARCH_STEP`) the replay of ``events`` runs in, with the
    unlimited replay's reserved and allocated peaks."""
    trace = list(events)
    free_run = replay(trace, None, steps)
    lo, hi = free_run.peak_allocated, free_run.peak_reserved  # lo may not do; hi does
    while hi - lo > SEARCH_STEP:
        mid = (lo + hi) // 2
        try:
            replay(trace, mid, steps)
        except OutOfMemory:
            lo = mid
        else:
            hi = mid
    return {"needed": hi, "reserved_peak": free_run.peak_reserved, "allocated_peak": free_run.peak_allocated}
