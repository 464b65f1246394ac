"""llmds.hnsw.HNSW: signatures, errors, persistence, and recall on real data."""

from __future__ import annotations

import pickle
import resource
import signal
import threading

import numpy as np
import pytest

from llmds.data import read_idx_images, read_idx_labels, read_ivecs
from llmds.hnsw import HNSW
from thread_helpers import readers_and_writer


def random_data(n=1000, dim=16, seed=0):
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def brute_force(data, queries, k):
    d = ((queries[:, None, :] - data[None, :, :]) ** 2).sum(-1)
    return np.argsort(d, axis=1)[:, :k]


def test_defaults_follow_the_seed():
    h = HNSW(8)
    s = h.stats()
    assert (s["M"], s["ef_construction"], s["ef_search"], s["metric"]) == (16, 200, 50, "l2")
    assert h.dim == 8 and len(h) == 0 and h.search(np.zeros(8), 3) == []
    assert "HNSW(dim=8" in repr(h)


def test_search_finds_neighbours_nearest_first():
    data, queries = random_data(), random_data(20, seed=1)
    h = HNSW(16, seed=3)
    for i, v in enumerate(data):
        h.add(v, i)
    truth = brute_force(data, queries, 10)
    found = [[i for i, _ in h.search(q, 10, ef=100)] for q in queries]
    assert np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)]) >= 0.95
    res = h.search(queries[0], 10)
    assert [d for _, d in res] == sorted(d for _, d in res)
    i0, d0 = res[0]
    assert d0 == pytest.approx(float(((data[i0] - queries[0]) ** 2).sum()), rel=1e-5)


def test_batch_add_and_search_agree_with_single_calls():
    data, queries = random_data(2000), random_data(30, seed=2)
    h = HNSW(16, seed=1)
    h.add_batch(data, list(range(2000)), num_threads=2)
    ids, dists = h.search_batch(queries, 5, ef=80, num_threads=2)
    assert ids.shape == (30, 5) and ids.dtype == np.int64 and dists.dtype == np.float32
    for q, row in zip(queries, ids):
        assert [i for i, _ in h.search(q, 5, ef=80)] == row.tolist()
    small = HNSW(16)
    small.add(data[0], 7)
    ids, dists = small.search_batch(queries[:2], 3)
    assert ids[0].tolist() == [7, -1, -1] and np.isinf(dists[0, 1])


def test_a_seed_makes_single_threaded_builds_identical():
    data = random_data(500)
    a, b = HNSW(16, seed=9), HNSW(16, seed=9)
    a.add_batch(data, list(range(500)))
    b.add_batch(data, list(range(500)))
    assert pickle.dumps(a) == pickle.dumps(b)


def test_metrics():
    data = random_data(300, 8)
    q = random_data(1, 8, seed=5)[0]
    for metric, expected in [
        ("ip", lambda v: 1 - v @ q),
        ("cosine", lambda v: 1 - v @ q / np.linalg.norm(v) / np.linalg.norm(q)),
    ]:
        h = HNSW(8, metric=metric, seed=1)
        h.add_batch(data, list(range(300)))
        i, d = h.search(q, 1, ef=300)[0]
        assert d == pytest.approx(min(expected(v) for v in data), abs=1e-5)
        assert d == pytest.approx(expected(data[i]), abs=1e-5)
    with pytest.raises(ValueError, match="metric"):
        HNSW(8, metric="hamming")


def test_filters_deletion_and_slot_reuse():
    data = random_data(1000)
    h = HNSW(16, seed=2, initial_capacity=1000)
    h.add_batch(data, list(range(1000)))
    allowed = set(range(0, 1000, 10))
    assert all(i in allowed for i, _ in h.search(data[5], 10, ef=200, filter=allowed))
    assert all(i > 900 for i, _ in h.search(data[5], 10, ef=200, filter=lambda i: i > 900))
    h.mark_deleted(5)
    assert 5 not in h and h.is_deleted(5) and len(h) == 999
    assert all(i != 5 for i, _ in h.search(data[5], 20))
    h.add(np.full(16, 7.0), 5000, replace_deleted=True)
    assert h.stats()["capacity"] == 1000 and h.search(np.full(16, 7.0), 1)[0][0] == 5000
    with pytest.raises(KeyError):
        h.mark_deleted(123456)


def test_errors_leave_the_index_unchanged():
    h = HNSW(4, metric="cosine", seed=1)
    h.add([1, 2, 3, 4], 1)
    before = pickle.dumps(h)
    for bad in ([1, 2, 3], [1, np.nan, 3, 4], [1, np.inf, 3, 4], [0, 0, 0, 0]):
        with pytest.raises(ValueError):
            h.add(bad, 2)
    with pytest.raises(ValueError, match="already"):
        h.add([1, 1, 1, 1], 1)
    with pytest.raises(ValueError):
        h.add_batch(np.ones((2, 4)), [7, 7])
    with pytest.raises(ValueError):
        h.add_batch(np.ones((2, 4)), [7])
    with pytest.raises(ValueError):
        h.search([1, 2, 3, 4], 0)
    with pytest.raises(ValueError):
        h.search([1, 2, 3], 1)
    with pytest.raises(ValueError):
        h.search([1, 2, 3, 4], 1, ef=0)
    with pytest.raises(ValueError):
        h.search_batch(np.ones((2, 4)), 1, filter=lambda i: True)
    assert pickle.dumps(h) == before
    with pytest.raises(ValueError):
        HNSW(0)


def test_save_load_and_damage(tmp_path):
    data = random_data(200)
    h = HNSW(16, seed=4)
    h.add_batch(data, list(range(200)))
    path = tmp_path / "index.hnsw"
    h.save(path)
    g = HNSW.load(path)
    assert g.search(data[3], 5) == h.search(data[3], 5)
    raw = bytearray(path.read_bytes())
    raw[200] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="corrupted"):
        HNSW.load(path)
    with pytest.raises(OSError):
        HNSW.load(tmp_path / "missing")


def test_concurrent_saves_to_one_path_leave_one_whole_index(tmp_path):
    indexes = []
    for seed in range(4):
        h = HNSW(8, seed=seed)
        h.add_batch(random_data(300 + seed, dim=8), list(range(300 + seed)))
        indexes.append(h)
    path = tmp_path / "shared.hnsw"
    errors: list[BaseException] = []

    def save(h: HNSW) -> None:
        try:
            for _ in range(10):
                h.save(path)
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=save, args=(h,)) for h in indexes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(HNSW.load(path)) in {len(h) for h in indexes}
    assert [p.name for p in tmp_path.iterdir()] == ["shared.hnsw"]


def test_a_save_that_runs_out_of_space_keeps_the_old_file(tmp_path):
    # The process's file-size limit makes the write fail part way, as a full disk does.
    h = HNSW(8, seed=1)
    path = tmp_path / "index.hnsw"
    h.save(path)
    old = path.read_bytes()
    h.add_batch(random_data(2000, dim=8), list(range(2000)))
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (len(old) + 4096, hard))
    try:
        with pytest.raises(OSError, match="index.hnsw"):
            h.save(path)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert path.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["index.hnsw"]
    assert len(HNSW.load(path)) == 0


def test_writers_and_filtered_searches_in_other_threads_do_not_deadlock():
    # A search with a Python filter holds the index's read lock and needs the GIL. A writer must
    # not wait for the write lock while holding the GIL, or the two wait for each other forever;
    # and two searchers in a loop, each holding the read lock while it waits for the GIL, must not
    # keep the writer out for ever (a lock that lets readers pass a waiting writer does).
    rng = np.random.default_rng(5)
    h = HNSW(8, seed=1)
    h.add_batch(rng.random((200, 8), dtype=np.float32), list(range(200)))
    def search() -> None:
        h.search(rng.random(8, dtype=np.float32), 5, filter=lambda i: i % 2 == 0)

    def write() -> None:
        for i in range(200, 1200):
            h.add(np.full(8, i / 1200, dtype=np.float32), i)
            if i % 100 == 0:
                h.mark_deleted(i)
                h.ef_search = 40 + i % 7

    readers_and_writer(search, write)
    assert len(h) == 1200 - 10  # ten were marked deleted


def test_a_filter_may_read_the_index_but_not_change_it():
    rng = np.random.default_rng(6)
    h = HNSW(4, seed=1)
    h.add_batch(rng.random((50, 4), dtype=np.float32), list(range(50)))
    h.mark_deleted(2)
    query = rng.random(4, dtype=np.float32)

    def even_and_live(i: int) -> bool:  # reads the index from inside its own search
        assert h.get_vector(i).shape == (4,) and len(h) == 49
        return i in h and not h.is_deleted(i) and i % 2 == 0

    found = h.search(query, 5, filter=even_and_live)
    assert len(found) == 5 and all(i % 2 == 0 and i != 2 for i, _ in found)

    def adds(i: int) -> bool:
        h.add(np.zeros(4, dtype=np.float32), 1000 + i)
        return True

    with pytest.raises(RuntimeError, match="inside one of its own calls into Python"):
        h.search(query, 5, filter=adds)
    assert len(h) == 49 and h.stats()["num_deleted"] == 1 and 1000 not in h  # nothing was added
    h.add(np.zeros(4, dtype=np.float32), 1000)  # and the lock was let go
    assert 1000 in h


def test_searches_run_from_several_threads():
    data = random_data(2000)
    h = HNSW(16, seed=1)
    h.add_batch(data, list(range(2000)))
    expected = [h.search(v, 5) for v in data[:50]]
    results = [None] * 4

    def work(t):
        results[t] = [h.search(v, 5) for v in data[:50]]

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r == expected for r in results)


# --- Fashion-MNIST (the 10k-base quick subset, exact ground truth) ------------------------------


@pytest.fixture(scope="module")
def fashion(shared_data):
    d = shared_data / "ann" / "fashion-mnist"
    base = read_idx_images(d / "train-images-idx3-ubyte.gz", 10_000).astype(np.float32)
    queries = read_idx_images(d / "t10k-images-idx3-ubyte.gz", 1_000).astype(np.float32)
    h = HNSW(784, seed=1)
    h.add_batch(base, list(range(10_000)), num_threads=2)
    return {
        "index": h,
        "queries": queries,
        "labels": read_idx_labels(d / "train-labels-idx1-ubyte.gz", 10_000),
        "query_labels": read_idx_labels(d / "t10k-labels-idx1-ubyte.gz", 1_000),
        "dist": read_ivecs(d / "fashion-mnist-10k_groundtruth_l2sq.ivecs"),
        "same_dist": read_ivecs(d / "fashion-mnist-10k_groundtruth_sameclass_l2sq.ivecs"),
    }


def test_fashion_mnist_recall_at_the_defaults(fashion):
    ids, dists = fashion["index"].search_batch(fashion["queries"], 10, num_threads=2)
    recall = (dists <= fashion["dist"][:, 9:10]).mean()  # tie-aware
    assert recall >= 0.95


def test_fashion_mnist_filtered_recall_at_ten_percent_selectivity(fashion):
    labels = fashion["labels"]
    by_class = {c: set(np.flatnonzero(labels == c).tolist()) for c in range(10)}
    hits = 0
    for q, c, kth in zip(fashion["queries"][:300], fashion["query_labels"][:300], fashion["same_dist"][:300, 9]):
        res = fashion["index"].search(q, 10, ef=200, filter=by_class[int(c)])
        assert all(labels[i] == c for i, _ in res)
        hits += sum(d <= kth for _, d in res)
    assert hits / 3000 >= 0.95


@pytest.mark.parametrize(
    "kwargs",
    [
        {"dim": 2**62 + 8, "initial_capacity": 4},  # dim x capacity x 4 bytes wraps
        {"dim": 2**61, "initial_capacity": 1},
        {"dim": 4, "ml": 1e300},
        {"dim": 4, "ml": float("nan")},
        {"dim": 4, "ml": 0.0},
        {"dim": 4, "initial_capacity": 2**33},
    ],
)
def test_parameters_whose_sizes_wrap_or_make_no_sense_are_refused(kwargs):
    with pytest.raises(ValueError):
        HNSW(**kwargs)


def test_a_huge_ef_construction_is_a_bound_not_an_allocation():
    h = HNSW(4, ef_construction=2**62, seed=1)
    h.add_batch(random_data(50, dim=4), list(range(50)))
    assert len(h) == 50
