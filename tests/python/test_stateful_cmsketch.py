"""CountMinSketch against exact counts: a Hypothesis state machine (docs/python-api.md, docs/sketch.md).

Exact facts only: an estimate is never below the true count, and equals it when the sketch is
wide (8192 x 3) and the items few; total_count is the sum of the counts; heavy hitters carry their
current estimates, largest first, and in the exact setting are the items seen (when top_k allows).
"""

from __future__ import annotations

import math
import os
import pickle
import shutil
import tempfile
from collections import Counter

import numpy as np
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from stateful_helpers import damaged, refused, stateful_settings

from llmds.cmsketch import CountMinSketch

WORDS = ["q1", "q2", "prompt", "caf\u00e9", "", "zz", "\U0001f600", "x" * 40]
ITEMS = st.sampled_from(WORDS) | st.sampled_from([w.encode() for w in WORDS]) | st.sampled_from([b"\xff\xfe", b"\x00"])
COUNTS = st.integers(min_value=0, max_value=50)
MAX_TOTAL = 2**64 - 1


def key(item) -> bytes:
    """A str counts as its UTF-8 bytes: "abc" and b"abc" are one item."""
    return item.encode() if isinstance(item, str) else bytes(item)


UNIVERSE = sorted({key(w) for w in WORDS} | {b"\xff\xfe", b"\x00", b"never-seen"})


class CountMinSketchMachine(RuleBasedStateMachine):
    @initialize(
        shape=st.sampled_from([(8192, 3), (8192, 4), (8, 1), (16, 2), (4, 3)]),
        seed=st.sampled_from([0, 7, 2**64 - 1]),
        conservative=st.booleans(),
        top_k=st.integers(min_value=0, max_value=12),
    )
    def init(self, shape, seed, conservative, top_k):
        self.width, self.depth = shape
        self.params = dict(width=self.width, depth=self.depth, seed=seed, conservative=conservative, top_k=top_k)
        self.sketch = CountMinSketch(**self.params)
        self.exact = self.width >= 8192  # 11 items into 8192 columns x >= 3 rows: no collision
        self.counts: Counter = Counter()
        self.merged = False  # merge re-ranks only the candidates of both sketches (docs/sketch.md)
        self.tmp = tempfile.mkdtemp(prefix="llmds-cms-")

    def teardown(self):
        shutil.rmtree(getattr(self, "tmp", ""), ignore_errors=True)

    def total(self):
        return sum(self.counts.values())

    def snapshot(self, sketch=None):
        s = sketch or self.sketch
        return (s.stats(), s.total_count(), s.estimate_many(UNIVERSE), s.heavy_hitters(), s.to_bytes())

    def check_same_as_model(self, sketch):
        assert sketch.total_count() == self.total()
        for name in ("width", "depth", "seed", "conservative", "top_k"):
            assert getattr(sketch, name) == self.params[name]

    # --- valid operations ------------------------------------------------------------------
    def overflows(self, extra):
        return self.total() + extra > MAX_TOTAL

    @rule(item=ITEMS, count=COUNTS)
    def add(self, item, count):
        if self.overflows(count):
            refused(self.snapshot, OverflowError, self.sketch.add, item, count)
            return
        self.sketch.add(item, count)
        self.counts[key(item)] += count

    @rule(item=ITEMS)
    def add_one(self, item):
        if self.overflows(1):
            refused(self.snapshot, OverflowError, self.sketch.add, item)
            return
        self.sketch.add(item)
        self.counts[key(item)] += 1

    @rule(items=st.lists(ITEMS, max_size=8), with_counts=st.sampled_from(["none", "list", "numpy"]), data=st.data())
    def add_many(self, items, with_counts, data):
        if with_counts == "none":
            counts, args = [1] * len(items), (iter(items),)  # any iterable
        else:
            counts = data.draw(st.lists(COUNTS, min_size=len(items), max_size=len(items)))
            arg = (
                counts
                if with_counts == "list"
                else np.array(counts, dtype=data.draw(st.sampled_from([np.int64, np.uint32, np.int8])))
            )
            args = (items, arg)
        if self.overflows(sum(counts)):
            refused(self.snapshot, OverflowError, self.sketch.add_many, *args)  # nothing of the batch added
            return
        self.sketch.add_many(*args)
        for item, c in zip(items, counts):
            self.counts[key(item)] += c

    @rule(item=ITEMS | st.just(b"never-seen"))
    def estimate(self, item):
        est = self.sketch.estimate(item)
        true = self.counts[key(item)]
        assert est >= true
        if self.exact:
            assert est == true
        assert self.sketch.estimate(key(item)) == est  # str and its UTF-8 bytes are one item

    @rule(item=ITEMS, threshold=st.integers(min_value=0, max_value=60))
    def is_hot(self, item, threshold):
        assert self.sketch.is_hot(item, threshold) == (self.sketch.estimate(item) >= threshold)

    @rule(items=st.lists(ITEMS, max_size=6))
    def estimate_many(self, items):
        got = self.sketch.estimate_many(items)
        assert got.dtype == np.uint64 and got.shape == (len(items),)
        assert got.tolist() == [self.sketch.estimate(i) for i in items]

    @rule(items=st.lists(st.tuples(ITEMS, COUNTS), max_size=6))
    def merge(self, items):
        other = CountMinSketch(**self.params)
        for item, c in items:
            other.add(item, c)
        if self.overflows(other.total_count()):
            refused(self.snapshot, OverflowError, self.sketch.merge, other)
            return
        self.sketch.merge(other)
        self.merged = True
        for item, c in items:
            self.counts[key(item)] += c

    @rule(epsilon=st.sampled_from([0.5, 0.1, 0.01, 0.001, 1e-4]), delta=st.sampled_from([0.5, 0.1, 0.01, 1e-6]))
    def from_error(self, epsilon, delta):
        s = CountMinSketch.from_error(epsilon, delta, seed=3, conservative=False, top_k=2)
        assert (s.width, s.depth) == (math.ceil(math.e / epsilon), math.ceil(math.log(1 / delta)))
        assert (s.seed, s.conservative, s.top_k, s.total_count()) == (3, False, 2, 0)

    @rule()
    def clear(self):
        self.sketch.clear()
        self.counts.clear()
        self.merged = False
        assert self.sketch.heavy_hitters() == []

    @rule(how=st.sampled_from(["bytes", "pickle", "file"]))
    def round_trip(self, how):
        before = self.snapshot()
        if how == "bytes":
            copy = CountMinSketch.from_bytes(self.sketch.to_bytes())
        elif how == "pickle":
            copy = pickle.loads(pickle.dumps(self.sketch))
        else:
            path = os.path.join(self.tmp, "sketch.cms")
            self.sketch.save(path)
            copy = CountMinSketch.load(path)
        self.check_same_as_model(copy)
        assert repr(self.snapshot(copy)) == repr(before)
        self.sketch = copy  # go on with the copy: it must behave as the original

    # --- invalid operations ----------------------------------------------------------------
    @rule(item=ITEMS, count=st.integers(min_value=-(2**63), max_value=-1))
    def add_negative(self, item, count):
        refused(self.snapshot, ValueError, self.sketch.add, item, count)

    @rule(items=st.lists(ITEMS, min_size=1, max_size=5), where=st.integers(min_value=0, max_value=4))
    def add_many_bad_counts(self, items, where):
        where = min(where, len(items) - 1)
        negative = [1] * len(items)
        negative[where] = -1
        for counts in (
            negative,
            [1] * (len(items) - 1),
            [1] * (len(items) + 1),
            np.ones(len(items), dtype=np.float64),
            np.ones((len(items), 1), dtype=np.int64),
        ):
            refused(self.snapshot, ValueError, self.sketch.add_many, items, counts)  # nothing of the batch added

    @rule(items=st.lists(ITEMS, max_size=4), where=st.integers(min_value=0, max_value=4))
    def wrong_item_type(self, items, where):
        for bad in (3, None, 2.5, ["q1"], bytearray(b"q1")):
            batch = items[:where] + [bad] + items[where:]
            refused(self.snapshot, TypeError, self.sketch.add_many, batch)  # nothing of the batch added
            refused(self.snapshot, TypeError, self.sketch.add, bad)
            refused(self.snapshot, TypeError, self.sketch.estimate, bad)

    @rule(item=ITEMS, threshold=st.integers(min_value=-5, max_value=-1))
    def is_hot_negative(self, item, threshold):
        refused(self.snapshot, ValueError, self.sketch.is_hot, item, threshold)

    @rule()
    def merge_mismatch(self):
        for change in ("width", "depth", "seed"):
            params = dict(self.params)
            params[change] = params[change] + 1 if params[change] < 2**64 - 1 else 0
            other = CountMinSketch(**params)
            other.add("q1", 3)
            refused(self.snapshot, ValueError, self.sketch.merge, other)

    @rule(item=ITEMS, count=st.sampled_from([2**63 - 1, 2**62]))
    def add_huge(self, item, count):
        if self.total() + count > MAX_TOTAL:
            refused(self.snapshot, OverflowError, self.sketch.add, item, count)
        else:
            self.sketch.add(item, count)
            self.counts[key(item)] += count

    @precondition(lambda self: self.total() > 0)
    @rule(count=st.sampled_from([2**63 - 1]))
    def merge_overflow(self, count):
        other = CountMinSketch(**self.params)
        other.add("q1", count)
        other.add("q2", count)
        if self.total() + 2 * count > MAX_TOTAL:
            refused(self.snapshot, OverflowError, self.sketch.merge, other)

    @rule(
        data=st.data(),
        how=st.sampled_from(["flip", "truncate", "empty", "garbage"]),
        where=st.sampled_from(["bytes", "file"]),
    )
    def corrupted(self, data, how, where):
        blob = damaged(self.sketch.to_bytes(), data, how, b"not a sketch at all" * 3)
        if where == "bytes":
            refused(self.snapshot, ValueError, CountMinSketch.from_bytes, bytes(blob))
        else:
            path = os.path.join(self.tmp, "bad.cms")
            with open(path, "wb") as f:
                f.write(blob)
            refused(self.snapshot, ValueError, CountMinSketch.load, path)

    @rule()
    def unreadable_files(self):
        refused(self.snapshot, OSError, CountMinSketch.load, os.path.join(self.tmp, "missing.cms"))
        refused(self.snapshot, OSError, self.sketch.save, os.path.join(self.tmp, "no-such-dir", "x.cms"))

    @rule()
    def bad_constructor(self):
        for bad in (dict(width=0), dict(depth=0), dict(depth=65), dict(width=2**32), dict(top_k=-1), dict(seed=-1)):
            refused(self.snapshot, ValueError, CountMinSketch, **{**self.params, **bad})
        for eps, delta in ((0.0, 0.1), (1.0, 0.1), (0.1, 0.0), (0.1, 1.0), (math.nan, 0.1), (-0.5, 0.5)):
            refused(self.snapshot, ValueError, CountMinSketch.from_error, eps, delta)
        refused(
            self.snapshot, TypeError, lambda: CountMinSketch.__new__(CountMinSketch).add("q1")
        )  # docs/reliability.md: __init__ never ran

    # --- invariants ------------------------------------------------------------------------
    @invariant()
    def never_below_the_truth(self):
        s = self.sketch
        self.check_same_as_model(s)
        ests = s.estimate_many(UNIVERSE).tolist()
        for item, est in zip(UNIVERSE, ests):
            assert est >= self.counts[item]
            assert est <= self.total()  # no counter exceeds the total
            if self.exact:
                assert est == self.counts[item], (item, est, self.counts[item])

    @invariant()
    def stats_consistent(self):
        st_ = self.sketch.stats()
        n = self.total()
        assert {k: st_[k] for k in ("width", "depth", "seed", "conservative", "top_k", "total_count")} == {
            **self.params,
            "total_count": n,
        }
        assert math.isclose(st_["epsilon"], math.e / self.width, rel_tol=1e-12)
        assert math.isclose(st_["delta"], math.exp(-self.depth), rel_tol=1e-12)
        assert math.isclose(st_["error_bound"], math.e / self.width * n, rel_tol=1e-9)
        assert math.isclose(self.sketch.get_error_bound(), st_["error_bound"], rel_tol=1e-12)
        assert st_["memory_bytes"] >= 8 * self.width * self.depth

    @invariant()
    def heavy_hitters_consistent(self):
        hh = self.sketch.heavy_hitters()
        top_k = self.params["top_k"]
        assert len(hh) <= top_k
        items = [key(i) for i, _ in hh]
        assert len(set(items)) == len(items)
        for item, est in hh:
            assert isinstance(item, (str, bytes))
            assert est == self.sketch.estimate(item)
            assert est >= self.counts[key(item)]
        # largest first, ties by item
        assert [(-e, key(i)) for i, e in hh] == sorted((-e, key(i)) for i, e in hh)
        if self.exact:
            seen = {i for i, c in self.counts.items() if c > 0}
            assert set(items) <= set(self.counts)
            if len(seen) <= top_k:
                assert seen <= set(items), (seen, items)
            elif top_k > 0 and not self.merged:
                # the tracked candidates are items with the largest counts seen when they were added;
                # at least the single heaviest item must be among them
                heaviest = max(self.counts.values())
                assert any(self.counts[i] == heaviest for i in items)


TestCountMinSketchStateful = CountMinSketchMachine.TestCase
TestCountMinSketchStateful.settings = stateful_settings(max_examples=80, steps=40)
