"""HNSW against a brute-force numpy model: a Hypothesis state machine (docs/python-api.md, docs/hnsw.md).

Only what is exact is compared: membership, len, deletions, stored vectors; that every result is
a live (and allowed) id at its true distance, nearest first; and, for graphs with M >= 12 and
ef_construction >= 100 at these small sizes (a few dozen nodes) with ef at least the number of
nodes, that a search returns the k smallest distances of brute force and that every live vector
is found by its own vector (l2, cosine). Sparser graphs may strand nodes by design (hnswlib's do
too), so there only the per-result facts are checked. Vectors have small integer coordinates, so
l2 and ip distances are exact in float32.

Replacing adds (replace_deleted=True) can strand a live vector even with the default M = 16 and
ef_construction = 200 (hnswlib, under the same churn, does not): the state machine finds this in
about one random run of 100 examples in three, and test_replacing_add_keeps_live_vectors_reachable
pins the smallest case found.
"""

from __future__ import annotations

import collections

import math
import os
import pickle
import shutil
import tempfile

import numpy as np
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from stateful_helpers import (
    fresh_id,
    fresh_ids,
    refused,
    refuses_damaged_file,
    refuses_unreadable_file,
    stateful_settings,
)

from llmds.hnsw import HNSW

IDS = st.integers(min_value=0, max_value=40) | st.sampled_from([-(2**63), 2**63 - 1, -1])


class HNSWMachine(RuleBasedStateMachine):
    @initialize(
        dim=st.sampled_from([3, 3, 2, 1, 4]),
        metric=st.sampled_from(["l2", "l2", "l2", "ip", "cosine"]),
        graph=st.sampled_from([(16, 200)] * 4 + [(12, 100), (4, 8), (2, 1)]),
        capacity=st.sampled_from([1, 2, 8, 1024]),
        seed=st.integers(min_value=0, max_value=3),
    )
    def init(self, dim, metric, graph, capacity, seed):
        M, ef_construction = graph
        # With M >= 12 and ef_construction >= 100 a graph of a few dozen nodes keeps every node
        # reachable (hnswlib's does, at these sizes), so a search with ef >= n is exact. Sparser
        # graphs may strand nodes by design: there only the per-result facts are checked.
        self.exact = M >= 12 and ef_construction >= 100
        self.params = dict(
            dim=dim, M=M, ef_construction=ef_construction, seed=seed, metric=metric, initial_capacity=capacity
        )
        self.index = HNSW(**self.params)
        self.dim, self.metric = dim, metric
        self.vecs: dict[int, np.ndarray] = {}  # every known id (deleted ones included) -> stored vector
        self.deleted: set[int] = set()
        self.ef_search = 50
        self.tmp = tempfile.mkdtemp(prefix="llmds-hnsw-")
        assert (self.index.dim, self.index.metric, self.index.ef_search) == (dim, metric, 50)

    def teardown(self):
        shutil.rmtree(getattr(self, "tmp", ""), ignore_errors=True)

    # --- the model -------------------------------------------------------------------------
    def live(self):
        return sorted(set(self.vecs) - self.deleted)

    def stored(self, v):
        v = np.asarray(v, dtype=np.float32)
        return v / np.linalg.norm(v.astype(np.float64)).astype(np.float32) if self.metric == "cosine" else v

    def dist(self, q, v):
        q64, v64 = np.asarray(q, np.float64), np.asarray(v, np.float64)
        if self.metric == "l2":
            return float(((q64 - v64) ** 2).sum())
        if self.metric == "ip":
            return float(1 - q64 @ v64)
        return float(1 - (q64 / np.linalg.norm(q64)) @ (v64 / np.linalg.norm(v64)))

    def tol(self):
        return 1e-9 if self.metric != "cosine" else 1e-5

    def vector(self, data):
        # One draw per vector, so that long runs fit Hypothesis's buffer of choices: a seed for
        # numpy, so that the coordinates (integers in -3..3) are spread evenly even where
        # Hypothesis favours small draws, and the array type.
        code = data.draw(st.integers(min_value=0, max_value=2**32 - 1))
        v = np.random.default_rng(code).integers(-3, 4, size=self.dim)
        if self.metric == "cosine" and not v.any():
            v[0] = 1
        return v.astype((np.float32, np.float64, np.int64)[code % 3])

    def probe(self):
        return np.ones(self.dim, dtype=np.float32)

    def snapshot(self, layout=True):
        h = self.index
        stats = h.stats()
        if not layout:  # a loaded index may size its arrays differently
            del stats["capacity"], stats["memory_bytes"]
        return (
            len(h),
            stats,
            h.ef_search,
            {i: (h.is_deleted(i), h.get_vector(i)) for i in sorted(self.vecs)},
            [i in h for i in range(-1, 42)],
            h.search(self.probe(), k=5, ef=max(64, 2 * len(self.vecs))),
        )

    def check_search(self, q, got, k, allowed=None):
        live = [i for i in self.live() if allowed is None or i in allowed]
        ids = [i for i, _ in got]
        assert len(set(ids)) == len(ids)
        assert set(ids) <= set(live), (ids, live)
        dists = [d for _, d in got]
        assert dists == sorted(dists)
        for i, d in got:
            assert math.isclose(d, self.dist(q, self.vecs[i]), rel_tol=self.tol(), abs_tol=self.tol()), (i, d)
        assert len(got) <= k
        if not self.exact_now():
            return
        truth = sorted(self.dist(q, self.vecs[i]) for i in live)[:k]
        assert len(got) == len(truth), (got, truth)
        assert all(math.isclose(a, b, rel_tol=self.tol(), abs_tol=self.tol()) for a, b in zip(dists, truth)), (
            dists,
            truth,
        )

    def exact_now(self):
        """Whether searches with ef >= n must be exact now. Not when some vector is held M times or
        more (deleted copies included, which keep their links): every neighbour list near it can
        fill with copies at distance 0, which the heuristic keeps before any other node, and a node
        beside them can lose its last incoming link. hnswlib's graphs do the same."""
        if not self.exact:
            return False
        copies = collections.Counter(tuple(v.tolist()) for v in self.vecs.values())
        return max(copies.values(), default=0) < self.params["M"]

    def threads(self, n):
        """Multi-threaded builds are not deterministic: only where the exact checks are off, so that
        a failing run reproduces in CI."""
        return 1 if self.exact else n

    def big_ef(self, k):
        return max(k, len(self.vecs) + 8)

    # --- valid operations ------------------------------------------------------------------
    def pick_id(self, data, known):
        """A new id, or (known=True) one the index holds already, deleted ones included."""
        if known and self.vecs:
            return data.draw(st.sampled_from(sorted(self.vecs)))
        return fresh_id(data, IDS, self.vecs)

    @rule(known=st.sampled_from([False] * 7 + [True]), data=st.data(), replace=st.sampled_from([True, True, False]))
    def add(self, known, data, replace):
        vec_id = self.pick_id(data, known)
        v = self.vector(data)
        if vec_id in self.vecs:
            refused(self.snapshot, ValueError, self.index.add, v, vec_id, replace)
            return
        deleted_before = set(self.deleted)
        self.index.add(v, vec_id, replace_deleted=replace)
        self.vecs[vec_id] = self.stored(v)
        if replace and deleted_before:
            self.forget_replaced(deleted_before, 1)

    def forget_replaced(self, deleted_before, n):
        """A replacing add takes a deleted id's slot: that id is forgotten (which one is not documented)."""
        gone = []
        for i in sorted(deleted_before):
            try:
                assert self.index.is_deleted(i) is True
            except KeyError:
                gone.append(i)
        assert len(gone) == min(n, len(deleted_before)), (gone, deleted_before)
        for i in gone:
            del self.vecs[i]
            self.deleted.discard(i)

    @rule(known=st.sampled_from([False] * 7 + [True]), data=st.data(), replace=st.sampled_from([True, True, False]))
    def add_again(self, known, data, replace):  # makes add twice as frequent as other rules
        self.add(known, data, replace)

    @precondition(lambda self: set(self.vecs) - self.deleted)
    @rule(data=st.data())
    def churn(self, data):
        """Delete a live vector, then add a new one into a deleted slot (replace_deleted=True)."""
        victim = data.draw(st.sampled_from(self.live()))
        self.index.mark_deleted(victim)
        self.deleted.add(victim)
        self.add(False, data, True)

    @precondition(lambda self: set(self.vecs) - self.deleted)
    @rule(data=st.data())
    def churn_again(self, data):  # makes churn more frequent: replacing adds are where links are repaired
        self.churn(data)

    @rule(known=st.sampled_from([False] * 7 + [True]), data=st.data(), replace=st.sampled_from([True, True, False]))
    def add_more(self, known, data, replace):
        self.add(known, data, replace)

    @precondition(lambda self: set(self.vecs) - self.deleted)
    @rule(data=st.data(), n=st.integers(min_value=1, max_value=3), threads=st.sampled_from([1, 2]))
    def churn_batch(self, data, n, threads):
        """Delete up to n live vectors, then add_batch n new ones with replace_deleted=True."""
        for victim in data.draw(st.lists(st.sampled_from(self.live()), min_size=1, max_size=n, unique=True)):
            self.index.mark_deleted(victim)
            self.deleted.add(victim)
        ids = fresh_ids(data, IDS, self.vecs, n)
        rows = np.array([self.vector(data) for _ in ids], dtype=np.float32)
        deleted_before = set(self.deleted)
        self.index.add_batch(rows, ids, num_threads=self.threads(threads), replace_deleted=True)
        for i, v in zip(ids, rows):
            self.vecs[i] = self.stored(v)
        self.forget_replaced(deleted_before, len(ids))

    @rule(
        data=st.data(),
        n=st.integers(min_value=0, max_value=8),
        replace=st.booleans(),
        threads=st.sampled_from([1, 2, 0]),
    )
    def add_batch(self, data, n, replace, threads):
        ids = fresh_ids(data, IDS, self.vecs, n)
        rows = np.array([self.vector(data) for _ in ids], dtype=np.float32).reshape(len(ids), self.dim)
        deleted_before = set(self.deleted)
        self.index.add_batch(rows, ids, num_threads=self.threads(threads), replace_deleted=replace)
        for i, v in zip(ids, rows):
            self.vecs[i] = self.stored(v)
        if replace and deleted_before and ids:
            self.forget_replaced(deleted_before, len(ids))

    @precondition(lambda self: self.vecs)
    @rule(data=st.data())
    def mark_deleted(self, data):
        i = data.draw(st.sampled_from(sorted(self.vecs)))
        if i in self.deleted:
            refused(self.snapshot, ValueError, self.index.mark_deleted, i)
        else:
            self.index.mark_deleted(i)
            self.deleted.add(i)

    @precondition(lambda self: self.vecs)
    @rule(data=st.data())
    def unmark_deleted(self, data):
        i = data.draw(st.sampled_from(sorted(self.vecs)))
        if i not in self.deleted:
            refused(self.snapshot, ValueError, self.index.unmark_deleted, i)
        else:
            self.index.unmark_deleted(i)
            self.deleted.discard(i)

    @rule(
        data=st.data(),
        k=st.integers(min_value=1, max_value=8),
        filt=st.sampled_from(["none", "set", "callable", "list", "reads_index"]),
    )
    def search(self, data, k, filt):
        q = self.vector(data)
        allowed = None
        kwargs = {}
        if filt != "none":
            allowed = set(data.draw(st.lists(IDS, max_size=10)))
            kwargs["filter"] = {
                "set": allowed,
                "list": sorted(allowed),
                "callable": lambda i: i in allowed,
                # docs/reliability.md: a read inside a read is allowed (a filter may read the index)
                "reads_index": lambda i: (
                    i in allowed and i in self.index and self.index.get_vector(i).shape == (self.dim,)
                ),
            }[filt]
        got = self.index.search(q, k=k, ef=self.big_ef(k), **kwargs)
        self.check_search(q, got, k, allowed)

    @precondition(lambda self: set(self.vecs) - self.deleted)
    @rule(data=st.data())
    def finds_itself(self, data):
        i = data.draw(st.sampled_from(self.live()))
        got = self.index.search(self.vecs[i], k=1, ef=self.big_ef(1))
        assert len(got) == 1
        if self.metric != "ip" and self.exact_now():  # under ip a vector need not be its own nearest
            j, d = got[0]
            assert abs(d) <= self.tol() and abs(self.dist(self.vecs[i], self.vecs[j])) <= self.tol()
        assert (
            np.array_equal(self.index.get_vector(i), self.vecs[i])
            if self.metric != "cosine"
            else np.allclose(self.index.get_vector(i), self.vecs[i], atol=1e-6)
        )

    @rule(
        data=st.data(),
        n=st.integers(min_value=0, max_value=4),
        k=st.integers(min_value=1, max_value=6),
        use_filter=st.booleans(),
    )
    def search_batch(self, data, n, k, use_filter):
        qs = np.array([self.vector(data) for _ in range(n)], dtype=np.float32).reshape(n, self.dim)
        allowed = set(data.draw(st.lists(IDS, max_size=10))) if use_filter else None
        kwargs = {"filter": allowed} if use_filter else {}
        ids, dists = self.index.search_batch(
            qs, k=k, ef=self.big_ef(k), num_threads=data.draw(st.sampled_from([1, 2])), **kwargs
        )
        assert ids.dtype == np.int64 and dists.dtype == np.float32 and ids.shape == dists.shape == (n, k)
        for row in range(n):
            single = self.index.search(qs[row], k=k, ef=self.big_ef(k), **kwargs)
            m = len(single)
            assert ids[row, :m].tolist() == [i for i, _ in single]
            assert np.allclose(dists[row, :m], [d for _, d in single], rtol=1e-6, atol=1e-6)
            assert (ids[row, m:] == -1).all() and np.isinf(dists[row, m:]).all()
            self.check_search(qs[row], single, k, allowed)

    @rule(ef=st.integers(min_value=1, max_value=100))
    def set_ef_search(self, ef):
        self.index.ef_search = ef
        self.ef_search = ef

    @rule(how=st.sampled_from(["file", "pickle"]))
    def round_trip(self, how):
        before = self.snapshot(layout=False)
        if how == "file":
            path = os.path.join(self.tmp, "index.hnsw")
            self.index.save(path)
            copy = HNSW.load(path)
        else:
            copy = pickle.loads(pickle.dumps(self.index))
        old, self.index = self.index, copy
        after = self.snapshot(layout=False)
        assert repr(after) == repr(before)
        q = self.probe()
        assert copy.search(q, k=10, ef=64) == old.search(q, k=10, ef=64)  # the same graph

    # --- invalid operations ----------------------------------------------------------------
    @rule(data=st.data())
    def invalid_operation(self, data):
        name = data.draw(
            st.sampled_from(
                [
                    "add_bad_vector",
                    "add_batch_bad",
                    "unknown_id",
                    "search_bad",
                    "ef_search_bad",
                    "corrupted_file",
                    "unreadable_file",
                    "bad_constructor",
                ]
            ),
            label="invalid operation",
        )
        getattr(self, "bad_" + name)(data)

    # Each tries every variant of its kind of error: rare variants are not left to chance.
    def bad_add_bad_vector(self, data):
        vec_id = fresh_id(data, IDS, self.vecs)
        replace = data.draw(st.booleans())
        nan = np.ones(self.dim, dtype=np.float32)
        nan[data.draw(st.integers(0, self.dim - 1))] = np.nan
        inf = np.ones(self.dim, dtype=np.float32)
        inf[0] = -np.inf
        bad = [
            nan,
            inf,
            np.ones(self.dim - 1),
            np.ones(self.dim + 1),
            np.ones((2, self.dim)),
            np.ones((1, self.dim, 1)),
        ]
        if self.metric == "cosine":
            bad.append(np.zeros(self.dim))  # a zero vector has no cosine distance
        for v in bad:
            refused(self.snapshot, ValueError, self.index.add, v, vec_id, replace)

    def bad_add_batch_bad(self, data):
        n = data.draw(st.integers(1, 4))
        ids = fresh_ids(data, IDS, self.vecs, n)
        rows = np.ones((n, self.dim), dtype=np.float32)
        replace = data.draw(st.booleans())
        at = data.draw(st.integers(0, n - 1))
        cases = [
            (ids + [ids[0]], np.ones((n + 1, self.dim), dtype=np.float32)),  # an id given twice
            (ids, np.ones((n + 1, self.dim), dtype=np.float32)),  # rows and ids of different lengths
            (ids, np.ones((n, self.dim + 1), dtype=np.float32)),
        ]  # wrong dimension
        nan_rows = rows.copy()
        nan_rows[at, 0] = np.nan
        cases.append((ids, nan_rows))
        if self.vecs:  # an id already present (deleted ones included)
            known = list(ids)
            known[at] = data.draw(st.sampled_from(sorted(self.vecs)))
            cases.append((known, rows))
        for batch_ids, batch_rows in cases:
            refused(self.snapshot, ValueError, self.index.add_batch, batch_rows, batch_ids, 1, replace)

    def bad_unknown_id(self, data):
        i = fresh_id(data, IDS, self.vecs)
        for op in ("mark_deleted", "unmark_deleted", "is_deleted", "get_vector"):
            refused(self.snapshot, KeyError, getattr(self.index, op), i)
        assert i not in self.index

    def bad_search_bad(self, data):
        q = np.ones(self.dim, dtype=np.float32)
        nan, inf = q.copy(), q.copy()
        nan[0], inf[-1] = np.nan, np.inf
        refused(self.snapshot, ValueError, self.index.search, q, 0)
        refused(self.snapshot, ValueError, self.index.search, q, 1, 0)
        refused(self.snapshot, ValueError, self.index.search, np.ones(self.dim + 1), 1)
        refused(self.snapshot, ValueError, self.index.search, nan, 1)
        refused(self.snapshot, ValueError, self.index.search, inf, 1)
        refused(
            self.snapshot, ValueError, self.index.search_batch, q[None, :], 1, None, 1, lambda i: True
        )  # callable filter
        refused(self.snapshot, ValueError, self.index.search_batch, q[None, :], 0)
        refused(self.snapshot, ValueError, self.index.search_batch, np.ones((2, self.dim + 1)), 1)
        refused(self.snapshot, ValueError, self.index.search_batch, nan[None, :], 1)
        if self.live():  # an empty index never calls the filter
            # documented: a filter's exception propagates out of search; changing the index from a
            # filter raises RuntimeError
            refused(self.snapshot, ZeroDivisionError, self.index.search, q, 3, 64, lambda i: 1 // 0)
            victim = self.live()[0]
            refused(
                self.snapshot,
                RuntimeError,
                self.index.search,
                q,
                3,
                64,
                lambda i: self.index.mark_deleted(victim) or True,
            )

    def bad_ef_search_bad(self, data):
        for ef in (0, -1):
            refused(self.snapshot, ValueError, setattr, self.index, "ef_search", ef)

    def bad_corrupted_file(self, data):
        refuses_damaged_file(self.snapshot, self.index.save, HNSW.load, self.tmp, ".hnsw", data,
                             b"LLMDSHNS" + b"\x01\x00\x00\x00" + b"\x00" * 40)

    def bad_unreadable_file(self, data):
        refuses_unreadable_file(self.snapshot, self.index.save, HNSW.load, self.tmp, ".hnsw")

    def bad_bad_constructor(self, data):
        for bad in (
            dict(dim=0),
            dict(M=1),
            dict(M=2049),
            dict(ef_construction=0),
            dict(ef_search=0),
            dict(ml=0.0),
            dict(ml=-1.0),
            dict(ml=math.nan),
            dict(ml=math.inf),
            dict(metric="cos"),
        ):
            refused(self.snapshot, ValueError, HNSW, **{"dim": 3, **bad})
        # docs/reliability.md: sizes whose product overflows are ValueError, not a tiny allocation
        refused(self.snapshot, ValueError, HNSW, dim=2**62 + 8, initial_capacity=4)
        refused(
            self.snapshot, TypeError, lambda: HNSW.__new__(HNSW).add(np.ones(3), 1)
        )  # docs/reliability.md: __init__ never ran

    # --- invariants ------------------------------------------------------------------------
    @invariant()
    def agrees_with_model(self):
        h = self.index
        live = self.live()
        assert len(h) == len(live)
        for i in range(-1, 42):
            assert (i in h) == (i in live)
        for i, v in self.vecs.items():
            assert h.is_deleted(i) == (i in self.deleted)
            got = h.get_vector(i)
            assert got.dtype == np.float32 and got.shape == (self.dim,)
            if self.metric == "cosine":
                assert np.allclose(got, v, atol=1e-6)
            else:
                assert np.array_equal(got, v)
        s = h.stats()
        assert (s["num_vectors"], s["num_deleted"]) == (len(live), len(self.deleted))
        assert (s["dim"], s["M"], s["ef_construction"], s["ef_search"], s["metric"]) == (
            self.dim,
            self.params["M"],
            self.params["ef_construction"],
            self.ef_search,
            self.metric,
        )
        assert h.ef_search == self.ef_search
        assert s["capacity"] >= len(self.vecs)
        assert (s["entry_point"] is None) == (not self.vecs)
        if self.vecs:
            q = self.probe()
            self.check_search(q, h.search(q, k=3, ef=self.big_ef(3)), 3)
        if self.exact_now() and self.metric != "ip":
            for i in live:  # every live vector can be found: it is its own nearest neighbour
                got = h.search(self.vecs[i], k=1, ef=self.big_ef(1))
                assert got and got[0][1] <= self.tol(), (
                    f"live id {i} {self.vecs[i].tolist()} not found by its own vector: {got}"
                )


TestHNSWStateful = HNSWMachine.TestCase
TestHNSWStateful.settings = stateful_settings(max_examples=100, steps=100)


def test_replacing_add_keeps_live_vectors_reachable():
    """The smallest run the state machine's invariant ("every live vector is found by its own
    vector") fails on, as a fixed regression case: default M and ef_construction, 4 vectors; a
    replacing add must not strand a live vector (docs/hnsw.md: the slot's old neighbours choose
    their links again). A plain add instead of the replacing one keeps all of them reachable."""
    index = HNSW(dim=3, seed=2)
    for i, v in enumerate([[1, -2, 1], [1, -3, 2], [0, -2, 3], [-1, 1, 3]]):
        index.add(np.array(v, np.float32), i)
    index.mark_deleted(2)
    index.add(np.array([-1, -3, 0], np.float32), 6, replace_deleted=True)  # takes 2's slot
    assert sorted(i for i in range(7) if i in index) == [0, 1, 3, 6]
    got = index.search(np.array([-1, 1, 3], np.float32), k=4, ef=100)
    assert [i for i, _ in got] == [3, 0, 1, 6], got
