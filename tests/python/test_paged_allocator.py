"""llmds.paged_allocator.PagedAllocator: the documented contract and its error cases."""

from __future__ import annotations

import random

import pytest

from llmds.paged_allocator import PagedAllocator, PageStats


def test_defaults_follow_the_seed():
    allocator = PagedAllocator()
    assert (allocator.page_size, allocator.max_pages) == (512, 10000)
    assert allocator.stats().free_pages == 10000


def test_alloc_and_free_reuse_pages():
    allocator = PagedAllocator(page_size=16, max_pages=8)
    pages = allocator.alloc(num_pages=3)
    assert pages == [0, 1, 2]
    allocator.free(page_ids=[1])
    assert allocator.alloc(1) == [1]
    assert allocator.alloc(0) == []


def test_alloc_beyond_capacity_raises_memory_error_and_allocates_nothing():
    allocator = PagedAllocator(max_pages=4)
    allocator.alloc(3)
    with pytest.raises(MemoryError, match="2 pages requested, 1 of 4 free"):
        allocator.alloc(2)
    assert allocator.stats().used_pages == 3


@pytest.mark.parametrize("bad", [[0, 0], [0, 3], [0, 99], [-1]])
def test_double_free_or_unknown_id_raises_and_frees_nothing(bad):
    allocator = PagedAllocator(max_pages=4)
    allocator.alloc(2)
    with pytest.raises(ValueError):
        allocator.free(bad)
    assert allocator.is_allocated(0) and allocator.is_allocated(1)
    assert allocator.stats().free_count == 0


@pytest.mark.parametrize("kwargs", [{"page_size": 0}, {"max_pages": 0}, {"max_pages": -5}, {"max_pages": 2**31}])
def test_bad_parameters_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        PagedAllocator(**kwargs)


def test_negative_alloc_raises_value_error():
    with pytest.raises(ValueError):
        PagedAllocator().alloc(-1)


def test_stats_returns_page_stats():
    allocator = PagedAllocator(max_pages=10)
    pages = allocator.alloc(10)
    allocator.free(pages[:8])
    stats = allocator.stats()
    assert isinstance(stats, PageStats)
    assert (stats.total_pages, stats.used_pages, stats.free_pages) == (10, 2, 8)
    assert stats.utilization == pytest.approx(0.2)
    assert stats.fragmentation == pytest.approx(0.8)
    assert (stats.alloc_count, stats.free_count) == (10, 8)
    assert repr(stats).startswith("PageStats(total_pages=10, used_pages=2")


def test_defragment_returns_the_moves_and_packs_the_pages():
    allocator = PagedAllocator(max_pages=8)
    allocator.alloc(8)
    allocator.free([0, 2, 3, 6])
    assert allocator.defragment() == {1: 0, 4: 1, 5: 2, 7: 3}
    assert [allocator.is_allocated(p) for p in range(8)] == [True] * 4 + [False] * 4
    assert allocator.stats().fragmentation == 0.0
    assert allocator.defragment() == {}


def test_random_operations_never_hand_out_a_page_twice():
    rng = random.Random(4)
    allocator = PagedAllocator(max_pages=32)
    held: list[list[int]] = []
    for _ in range(3000):
        if rng.random() < 0.55:
            n = rng.randrange(6)
            free = 32 - sum(map(len, held))
            if n > free:
                with pytest.raises(MemoryError):
                    allocator.alloc(n)
            else:
                held.append(allocator.alloc(n))
        elif held:
            allocator.free(held.pop(rng.randrange(len(held))))
        flat = [p for table in held for p in table]
        assert len(flat) == len(set(flat)) == allocator.stats().used_pages
