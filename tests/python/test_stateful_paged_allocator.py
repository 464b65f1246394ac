"""PagedAllocator against a free-list model: a Hypothesis state machine (docs/python-api.md, docs/kv-cache.md).

The model is the documented free list: a LIFO stack, fresh allocators hand out 0, 1, 2, ..., and
free() pushes back in reverse, so the next alloc of as many pages returns the same ids in the same
order. After defragment() the order of the free list is not documented, so from then on only the
set of ids handed out is checked.
"""

from __future__ import annotations

import math

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from stateful_helpers import refused, stateful_settings

from llmds.paged_allocator import PagedAllocator


def page_stats(a):
    s = a.stats()
    return dict(
        total_pages=s.total_pages,
        used_pages=s.used_pages,
        free_pages=s.free_pages,
        utilization=s.utilization,
        fragmentation=s.fragmentation,
        alloc_count=s.alloc_count,
        free_count=s.free_count,
    )


class PagedAllocatorMachine(RuleBasedStateMachine):
    @initialize(page_size=st.sampled_from([1, 16, 512]), max_pages=st.integers(min_value=1, max_value=24))
    def init(self, page_size, max_pages):
        self.alloc = PagedAllocator(page_size=page_size, max_pages=max_pages)
        self.max_pages = max_pages
        assert (self.alloc.page_size, self.alloc.max_pages) == (page_size, max_pages)
        self.used: set[int] = set()
        self.stack: list[int] | None = list(range(max_pages - 1, -1, -1))  # top = end
        self.alloc_count = self.free_count = 0

    def snapshot(self):
        return (page_stats(self.alloc), [self.alloc.is_allocated(p) for p in range(-1, self.max_pages + 1)])

    def free_pages(self):
        return [p for p in range(self.max_pages) if p not in self.used]

    # --- valid operations ------------------------------------------------------------------
    @rule(data=st.data())
    def alloc_pages(self, data):
        n = data.draw(st.integers(min_value=0, max_value=self.max_pages - len(self.used)))
        got = self.alloc.alloc(n)
        assert len(got) == n == len(set(got))
        assert not (set(got) & self.used) and all(0 <= p < self.max_pages for p in got)
        if self.stack is not None:
            expected = [self.stack.pop() for _ in range(n)]
            assert got == expected, f"LIFO free list: expected {expected}, got {got}"
        self.used |= set(got)
        self.alloc_count += n

    @precondition(lambda self: self.used)
    @rule(data=st.data())
    def free_pages_rule(self, data):
        ids = data.draw(st.lists(st.sampled_from(sorted(self.used)), min_size=1, unique=True))
        self.alloc.free(ids)
        self.used -= set(ids)
        if self.stack is not None:
            self.stack.extend(reversed(ids))
        self.free_count += len(ids)
        if self.stack is not None:  # the documented consequence: the same ids come back in the same order
            assert self.alloc.alloc(len(ids)) == ids
            self.alloc.free(ids)
            self.alloc_count += len(ids)
            self.free_count += len(ids)

    @rule()
    def defragment(self):
        before = sorted(self.used)
        moves = self.alloc.defragment()
        expected = {old: new for new, old in enumerate(before) if old != new}
        assert moves == expected
        assert list(moves) == sorted(moves)  # ascending old id
        self.used = set(range(len(before)))
        self.stack = None  # the free list's order after defragment is not documented

    @rule(page=st.integers(min_value=-2, max_value=30))
    def is_allocated(self, page):
        assert self.alloc.is_allocated(page) == (page in self.used)

    # --- invalid operations ----------------------------------------------------------------
    @rule(extra=st.integers(min_value=1, max_value=5))
    def alloc_too_many(self, extra):
        refused(self.snapshot, MemoryError, self.alloc.alloc, self.max_pages - len(self.used) + extra)

    @rule(n=st.integers(min_value=-3, max_value=-1))
    def alloc_negative(self, n):
        refused(self.snapshot, ValueError, self.alloc.alloc, n)

    @rule(data=st.data(), bad=st.sampled_from(["double", "out_of_range", "negative", "repeated"]))
    def bad_free(self, data, bad):
        good = data.draw(st.lists(st.sampled_from(sorted(self.used)), unique=True)) if self.used else []
        if bad == "double":
            if not self.free_pages():
                return
            wrong = [data.draw(st.sampled_from(self.free_pages()))]
        elif bad == "out_of_range":
            wrong = [self.max_pages + data.draw(st.integers(0, 3))]
        elif bad == "negative":
            wrong = [-data.draw(st.integers(1, 3))]
        else:
            if not self.used:
                return
            wrong = [data.draw(st.sampled_from(sorted(self.used)))] * 2
        at = data.draw(st.integers(0, len(good)))
        refused(self.snapshot, ValueError, self.alloc.free, good[:at] + wrong + good[at:])  # nothing freed

    @rule()
    def bad_constructor(self):
        for bad in (
            dict(page_size=0),
            dict(max_pages=0),
            dict(max_pages=2**31),
            dict(page_size=-1),
            dict(max_pages=-1),
        ):
            refused(self.snapshot, ValueError, PagedAllocator, **{"page_size": 16, "max_pages": 8, **bad})
        refused(
            self.snapshot, TypeError, lambda: PagedAllocator.__new__(PagedAllocator).alloc(1)
        )  # docs/reliability.md: __init__ never ran

    # --- invariants ------------------------------------------------------------------------
    @invariant()
    def stats_agree(self):
        used = len(self.used)
        top = max(self.used) if self.used else -1
        s = page_stats(self.alloc)
        assert s["total_pages"] == self.max_pages
        assert s["used_pages"] == used and s["free_pages"] == self.max_pages - used
        assert s["alloc_count"] == self.alloc_count and s["free_count"] == self.free_count
        assert math.isclose(s["utilization"], used / self.max_pages, abs_tol=1e-12)
        expected_frag = 0.0 if top < 0 else (top + 1 - used) / (top + 1)
        assert math.isclose(s["fragmentation"], expected_frag, abs_tol=1e-12)
        assert [self.alloc.is_allocated(p) for p in range(self.max_pages)] == [
            p in self.used for p in range(self.max_pages)
        ]


TestPagedAllocatorStateful = PagedAllocatorMachine.TestCase
TestPagedAllocatorStateful.settings = stateful_settings(max_examples=150, steps=50)
