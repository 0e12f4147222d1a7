"""The replay of PyTorch's CUDA caching allocator (plan/allocator.py): its rules one by one, and the
fragmentation a training step's order of allocations leaves (fast tier, pure Python)."""

from __future__ import annotations

import pytest

from mixtral_ft.plan.allocator import (
    CachingAllocator,
    OutOfMemory,
    allocation_size,
    needed_bytes,
    replay,
    round_size,
)

MIB = 2**20


def test_sizes_are_rounded_as_the_cuda_allocator_rounds_them():
    assert round_size(1) == 512 and round_size(512) == 512 and round_size(513) == 1024
    assert allocation_size(100) == 2 * MIB  # small requests share 2 MiB segments
    assert allocation_size(1 * MIB) == 2 * MIB
    assert allocation_size(1 * MIB + 512) == 20 * MIB  # 1-10 MiB: a 20 MiB segment, split
    assert allocation_size(10 * MIB) == 10 * MIB  # from 10 MiB: the request rounded up to 2 MiB
    assert allocation_size(11 * MIB) == 12 * MIB


def test_small_blocks_share_a_segment_and_large_ones_are_split_best_fit():
    a = CachingAllocator()
    small = [a.malloc(1000) for _ in range(4)]
    assert a.reserved == 2 * MIB and a.allocated == 4 * 1024
    big = a.malloc(50 * MIB)
    a.free(big)
    piece = a.malloc(20 * MIB)  # best fit: the cached 50 MiB block, split (the rest is over 1 MiB)
    assert a.reserved == 52 * MIB and piece.size == 20 * MIB
    rest = a.malloc(30 * MIB)  # the split-off rest serves it: no new segment
    assert a.reserved == 52 * MIB
    for block in (*small, piece, rest):
        a.free(block)
    assert a.allocated == 0 and a.reserved == 52 * MIB  # cached, not given back


def test_freed_neighbours_merge_and_whole_segments_are_released_under_pressure():
    a = CachingAllocator(capacity=60 * MIB)
    x, y = a.malloc(20 * MIB), a.malloc(20 * MIB)
    a.free(x)
    a.free(y)  # two cached segments of 20 MiB
    z = a.malloc(40 * MIB)  # fits neither: 40 + 40 > 60, so both cached segments are released first
    assert a.reserved == 40 * MIB and z.size == 40 * MIB
    with pytest.raises(OutOfMemory):
        a.malloc(30 * MIB)


def test_a_split_segment_cannot_be_released_so_the_step_needs_more_than_its_live_peak():
    # A 50 MiB tensor is freed; a 20 MiB one takes part of its cached segment, so the other 30 MiB can
    # serve no 40 MiB request and cannot be given back while the 20 MiB block lives.
    events = [(1, 50 * MIB), (1, 0), (2, 20 * MIB), (3, 40 * MIB), (2, 0), (3, 0)]
    n = needed_bytes(events)
    assert n["allocated_peak"] == 60 * MIB
    assert n["reserved_peak"] == 90 * MIB
    assert 88 * MIB < n["needed"] <= 90 * MIB
    replay(events, capacity=90 * MIB)
    with pytest.raises(OutOfMemory):
        replay(events, capacity=80 * MIB)


def test_a_step_without_fragmentation_needs_its_live_peak():
    events = [(1, 40 * MIB), (2, 40 * MIB), (1, 0), (2, 0), (3, 40 * MIB), (3, 0)]
    n = needed_bytes(events)
    assert n["allocated_peak"] == n["needed"] == n["reserved_peak"] == 80 * MIB
