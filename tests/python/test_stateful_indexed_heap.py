"""IndexedHeap against a dict model: a Hypothesis state machine (docs/python-api.md, docs/core.md)."""

from __future__ import annotations

import math

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from stateful_helpers import refused, stateful_settings

from llmds.indexed_heap import IndexedHeap

KEYS = st.integers(min_value=-3, max_value=12) | st.sampled_from([-(2**63), 2**63 - 1])
# A few distinct values so that ties (by score) are frequent; -0.0 == 0.0 is a tie too.
SCORES = st.sampled_from([-2.5, -1.0, -0.0, 0.0, 1.0, 3.0, 7.25, math.inf, -math.inf]) | st.floats(
    min_value=-1e6, max_value=1e6, allow_nan=False
)


class IndexedHeapMachine(RuleBasedStateMachine):
    @initialize(max_heap=st.booleans())
    def init(self, max_heap):
        self.heap = IndexedHeap(max_heap=max_heap)
        self.max_heap = max_heap
        self.model: dict[int, float] = {}
        assert self.heap.max_heap is max_heap

    # --- the model -------------------------------------------------------------------------
    def order(self, item):
        key, score = item
        return (-score if self.max_heap else score, key)

    def top(self):
        if not self.model:
            return None
        key, score = min(self.model.items(), key=self.order)
        return (score, key)

    def snapshot(self):
        keys = set(self.model) | set(range(-3, 13))
        return (
            len(self.heap),
            self.heap.size(),
            self.heap.is_empty(),
            self.heap.peek(),
            {k: self.heap.get_score(k) for k in sorted(keys)},
            {k: k in self.heap for k in sorted(keys)},
        )

    def present(self):
        return st.sampled_from(sorted(self.model))

    # --- valid operations ------------------------------------------------------------------
    @rule(key=KEYS, score=SCORES)
    def push(self, key, score):
        if key in self.model:
            refused(self.snapshot, ValueError, self.heap.push, key, score)
        else:
            self.heap.push(key, score)
            self.model[key] = score

    @rule()
    def pop(self):
        if not self.model:
            refused(self.snapshot, IndexError, self.heap.pop)
            return
        expected = self.top()
        got = self.heap.pop()
        assert got == expected and math.copysign(1, got[0]) == math.copysign(1, expected[0])
        del self.model[expected[1]]

    @rule()
    def peek(self):
        assert self.heap.peek() == self.top()

    @precondition(lambda self: self.model)
    @rule(data=st.data(), score=SCORES)
    def decrease_key(self, data, score):
        key = data.draw(self.present())
        if score > self.model[key]:
            refused(self.snapshot, ValueError, self.heap.decrease_key, key, score)
        else:
            self.heap.decrease_key(key, score)
            self.model[key] = score

    @precondition(lambda self: self.model)
    @rule(data=st.data(), score=SCORES)
    def increase_key(self, data, score):
        key = data.draw(self.present())
        if score < self.model[key]:
            refused(self.snapshot, ValueError, self.heap.increase_key, key, score)
        else:
            self.heap.increase_key(key, score)
            self.model[key] = score

    @precondition(lambda self: self.model)
    @rule(data=st.data(), score=SCORES)
    def update_key(self, data, score):
        key = data.draw(self.present())
        self.heap.update_key(key, score)
        self.model[key] = score

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def delete(self, data):
        key = data.draw(self.present())
        assert self.heap.delete(key) == (self.model.pop(key), key)

    @rule(key=KEYS)
    def get_score_and_contains(self, key):
        assert self.heap.get_score(key) == self.model.get(key)
        assert (key in self.heap) == (key in self.model)

    @rule()
    def drain_copy_order(self):
        """Pop everything, compare with sorted(model), then push it all back."""
        expected = [(s, k) for k, s in sorted(self.model.items(), key=self.order)]
        got = [self.heap.pop() for _ in range(len(self.model))]
        assert got == expected
        assert self.heap.is_empty() and self.heap.peek() is None
        for score, key in got:
            self.heap.push(key, score)

    # --- invalid operations ----------------------------------------------------------------
    @rule(key=KEYS)
    def push_nan(self, key):
        refused(self.snapshot, ValueError, self.heap.push, key, math.nan)

    @rule(key=KEYS, op=st.sampled_from(["decrease_key", "increase_key", "update_key"]))
    def rescore_nan(self, key, op):
        # NaN is a ValueError for a present key; for an absent key both documented errors apply.
        expected = ValueError if key in self.model else (KeyError, ValueError)
        refused(self.snapshot, expected, getattr(self.heap, op), key, math.nan)

    @rule(key=KEYS, score=SCORES, op=st.sampled_from(["decrease_key", "increase_key", "update_key", "delete"]))
    def unknown_key(self, key, score, op):
        if key in self.model:
            return
        args = (key,) if op == "delete" else (key, score)
        refused(self.snapshot, KeyError, getattr(self.heap, op), *args)

    @rule()
    def uninitialised(self):
        refused(
            self.snapshot, TypeError, lambda: IndexedHeap.__new__(IndexedHeap).push(1, 1.0)
        )  # docs/reliability.md: __init__ never ran

    # --- invariants ------------------------------------------------------------------------
    @invariant()
    def sizes_agree(self):
        assert len(self.heap) == self.heap.size() == len(self.model)
        assert self.heap.is_empty() == (not self.model)
        assert self.heap.peek() == self.top()


TestIndexedHeapStateful = IndexedHeapMachine.TestCase
TestIndexedHeapStateful.settings = stateful_settings(max_examples=150, steps=50)
