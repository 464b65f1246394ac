"""llmds.kv_cache: KVCache and BlockPool, as docs/python-api.md and docs/kv-cache.md describe them."""

from __future__ import annotations

import hashlib
import random
import struct

import numpy as np
import pytest

from llmds.kv_cache import BlockPool, KVCache


def entries(tokens: list[int], width: int = 1) -> np.ndarray:
    """KV entries that depend only on the tokens so far, as a model's do."""
    out = np.empty((len(tokens), width), dtype=np.float32)
    h = 17
    for i, t in enumerate(tokens):
        h = (h * 31 + t) % 1_000_003
        out[i] = [(h >> j) % 1000 for j in range(width)]
    return out


# --- the documented signatures --------------------------------------------------------------------


def test_defaults_follow_the_seed():
    cache = KVCache()
    assert (cache.page_size, cache.max_pages, cache.enable_prefix_sharing) == (512, 10000, True)
    assert (cache.entry_width, cache.dtype) == (1, "float32")
    assert "KVCache(page_size=512" in repr(cache)


def test_attach_get_detach_with_lists():
    cache = KVCache(page_size=4, max_pages=8)
    cache.attach(1, [1.0, 2.0, 3.0, 4.0, 5.0])
    assert cache.get(1) == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert 1 in cache and len(cache) == 1 and cache.num_tokens(1) == 5
    cache.detach(1)
    assert cache.get(1) is None
    assert 1 not in cache
    assert cache.stats()["free_pages"] == 8


def test_get_returns_a_deep_copy():
    cache = KVCache(page_size=4, max_pages=8, entry_width=2)
    cache.attach(1, np.arange(6, dtype=np.float32).reshape(3, 2))
    first = cache.get(1)
    first[0, 0] = 99
    np.testing.assert_array_equal(cache.get(1), np.arange(6).reshape(3, 2))
    lst = KVCache(page_size=4, max_pages=8)
    lst.attach(1, [1.0, 2.0])
    got = lst.get(1)
    got.append(3.0)
    assert lst.get(1) == [1.0, 2.0]


def test_prefix_sharing_stores_a_common_prefix_once():
    cache = KVCache(page_size=4, max_pages=16)
    system = list(range(100, 110))  # two full pages and two tokens
    a, b = system + [1, 2, 3], system + [7]
    cache.attach(1, entries(a), prefix_tokens=a)
    cache.attach(2, entries(b), prefix_tokens=b)
    ta, tb = cache.block_table(1), cache.block_table(2)
    assert ta.dtype == np.int32
    assert list(ta[:2]) == list(tb[:2]) and ta[2] != tb[2]
    s = cache.stats()
    assert (s["shared_pages"], s["pages_saved"], s["prefix_hit_pages"]) == (2, 2, 2)
    assert s["refcounts"][int(ta[0])] == 2 and s["refcounts"][int(ta[2])] == 1
    assert s["bytes_saved"] == 2 * 4 * 4
    np.testing.assert_array_equal(np.array(cache.get(2)), entries(b)[:, 0])


def test_sharing_off_stores_everything():
    cache = KVCache(page_size=4, max_pages=16, enable_prefix_sharing=False)
    t = list(range(8))
    cache.attach(1, entries(t), prefix_tokens=t)
    cache.attach(2, entries(t), prefix_tokens=t)
    assert cache.stats()["shared_pages"] == 0


def test_cache_salts_separate_tenants():
    cache = KVCache(page_size=4, max_pages=16)
    t = list(range(8))
    cache.attach(1, entries(t), prefix_tokens=t, cache_salt="tenant-a")
    cache.attach(2, entries(t), prefix_tokens=t, cache_salt=b"tenant-b")
    assert cache.stats()["shared_pages"] == 0
    cache.attach(3, entries(t), prefix_tokens=t, cache_salt=b"tenant-a")  # str is its UTF-8
    assert cache.stats()["shared_pages"] == 2


def test_fork_then_append_copies_the_shared_partial_page():
    cache = KVCache(page_size=4, max_pages=8)
    cache.attach(1, [1.0, 2, 3, 4, 5, 6])
    cache.fork(1, 2)
    assert cache.stats()["used_pages"] == 2
    cache.append(2, [7.0])
    assert cache.stats()["cow_copies"] == 1
    assert cache.get(1) == [1, 2, 3, 4, 5, 6]
    assert cache.get(2) == [1, 2, 3, 4, 5, 6, 7]
    assert cache.block_table(1)[0] == cache.block_table(2)[0]
    assert cache.block_table(1)[1] != cache.block_table(2)[1]


def test_detached_prefix_pages_stay_cached_and_serve_the_next_request():
    cache = KVCache(page_size=4, max_pages=8)
    t = list(range(9))
    cache.attach(1, entries(t), prefix_tokens=t)
    pages = cache.block_table(1).tolist()
    cache.detach(1)
    assert cache.stats()["cached_pages"] == 2
    assert cache.lookup(cache.block_hashes(t)) == pages[:2]
    assert cache.lookup(tuple(cache.block_hashes(t))[:1]) == pages[:1]
    cache.attach(2, entries(t), prefix_tokens=t)
    assert cache.block_table(2).tolist()[:2] == pages[:2]


def test_pages_are_zero_copy_read_only_views():
    cache = KVCache(page_size=4, max_pages=8, entry_width=3)
    kv = np.arange(15, dtype=np.float32).reshape(5, 3)
    cache.attach(1, kv)
    table = cache.block_table(1)
    page = cache.page(int(table[0]))
    assert page.shape == (4, 3) and page.dtype == np.float32
    np.testing.assert_array_equal(page, kv[:4])
    assert not page.flags.writeable and not page.flags.owndata
    with pytest.raises(ValueError):
        page[0, 0] = 1.0
    # A view sees later writes to its page: it is the arena, not a copy.
    tail = cache.page(int(table[1]))
    cache.append(1, np.full((1, 3), 42.0))
    np.testing.assert_array_equal(tail[1], [42.0, 42.0, 42.0])
    # The view keeps the cache alive.
    del cache
    assert tail[0, 0] == 12.0


def test_float16_pages_round_as_numpy_does():
    cache = KVCache(page_size=4, max_pages=8, entry_width=2, dtype="float16")
    kv = np.random.default_rng(0).normal(size=(7, 2)) * 1000
    cache.attach(1, kv)
    got = cache.get(1)
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, kv.astype(np.float16))
    assert cache.page(int(cache.block_table(1)[0])).dtype == np.float16
    assert cache.stats()["bytes_per_page"] == 4 * 2 * 2


def test_block_hashes_follow_the_documented_encoding():
    cache = KVCache(page_size=4, max_pages=8)
    tokens = [5, 6, 7, 8, 9, 10, 11, 12, 13]
    root = hashlib.sha256(b"llmds.kv.block_hash.v1").digest()
    h0 = hashlib.sha256(root + struct.pack("<4i", 5, 6, 7, 8)).digest()
    h1 = hashlib.sha256(h0 + struct.pack("<4i", 9, 10, 11, 12)).digest()
    assert cache.block_hashes(tokens) == [h0, h1]
    salted = hashlib.sha256(root + struct.pack("<4i", 5, 6, 7, 8) + struct.pack("<Q", 2) + b"ab").digest()
    assert cache.block_hashes(tokens[:4], cache_salt="ab") == [salted]
    assert cache.block_hashes(np.array(tokens, dtype=np.int64)) == [h0, h1]


def test_defragment_moves_data_and_tables():
    cache = KVCache(page_size=4, max_pages=8)
    cache.attach(1, [0.0] * 8)
    cache.attach(2, [float(i) for i in range(6)])
    cache.detach(1)
    moves = cache.defragment()
    assert moves and all(new < old for old, new in moves.items())
    assert cache.get(2) == [float(i) for i in range(6)]
    assert sorted(cache.block_table(2).tolist()) == [0, 1]


# --- errors leave the cache as it was ----------------------------------------------------------


def state(cache: KVCache, ids) -> tuple:
    s = cache.stats()
    return (
        {i: (np.asarray(cache.get(i)).tolist(), cache.block_table(i).tolist()) for i in ids if i in cache},
        s,
    )


def test_errors_are_clear_and_change_nothing():
    cache = KVCache(page_size=4, max_pages=4, entry_width=2)
    cache.attach(1, np.zeros((5, 2)))
    before = state(cache, [1, 2])
    with pytest.raises(ValueError, match="already attached"):
        cache.attach(1, np.zeros((1, 2)))
    with pytest.raises(ValueError, match=r"shape \(n_tokens, 2\)"):
        cache.attach(2, np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"shape"):
        cache.attach(2, [1.0, 2.0])  # 1-D is only for entry_width 1
    with pytest.raises(ValueError, match=r"shape"):
        cache.attach(2, 5.0)  # a scalar is not a sequence of entries
    with pytest.raises(ValueError, match=r"shape"):
        cache.attach(2, None)
    with pytest.raises(ValueError, match="prefix_tokens"):
        cache.attach(2, np.zeros((2, 2)), prefix_tokens=[1, 2, 3])
    with pytest.raises(ValueError, match="integers"):
        cache.attach(2, np.zeros((2, 2)), prefix_tokens=[1.5])
    with pytest.raises(ValueError, match="32-bit"):
        cache.attach(2, np.zeros((2, 2)), prefix_tokens=[2**40])
    with pytest.raises(ValueError, match="cache_salt"):
        cache.attach(2, np.zeros((2, 2)), cache_salt=3)
    with pytest.raises(MemoryError, match="nothing was changed"):
        cache.attach(2, np.zeros((13, 2)))
    with pytest.raises(MemoryError):
        cache.append(1, np.zeros((12, 2)))
    with pytest.raises(KeyError):
        cache.append(9, np.zeros((1, 2)))
    with pytest.raises(KeyError):
        cache.detach(9)
    with pytest.raises(KeyError):
        cache.fork(9, 10)
    with pytest.raises(ValueError):
        cache.fork(1, 1)
    with pytest.raises(KeyError):
        cache.block_table(9)
    with pytest.raises(IndexError):
        cache.page(4)
    with pytest.raises(ValueError):
        cache.lookup([b"short"])
    assert state(cache, [1, 2]) == before
    with pytest.raises(ValueError, match="dtype"):
        KVCache(dtype="float64")
    with pytest.raises(ValueError, match="page_size"):
        KVCache(page_size=0)
    with pytest.raises(ValueError, match="entry_width"):
        KVCache(entry_width=0)


# --- randomised against a naive model ----------------------------------------------------------


def test_random_operations_match_a_naive_model():
    rng = random.Random(5)
    width = 2
    cache = KVCache(page_size=4, max_pages=20, entry_width=width)
    model: dict[int, np.ndarray] = {}
    prompts = [[rng.randrange(50) for _ in range(4 * k + 3)] for k in range(1, 4)]
    next_id = 0
    failures = 0
    for _ in range(1500):
        op = rng.randrange(10)
        if op < 4:
            tokens = rng.choice(prompts)[: rng.randint(0, 15)]
            prefix = len(tokens)
            tokens = tokens + [rng.randrange(50) for _ in range(rng.randint(0, 8))]
            kv = entries(tokens, width)
            before = state(cache, model)
            try:
                cache.attach(next_id, kv, prefix_tokens=tokens[:prefix])
                model[next_id] = kv
            except MemoryError:
                failures += 1
                assert state(cache, model) == before
            next_id += 1
        elif op < 6 and model:
            seq = rng.choice(list(model))
            extra = np.array([[rng.randrange(-99, 99) for _ in range(width)] for _ in range(rng.randint(0, 5))],
                             dtype=np.float32).reshape(-1, width)
            before = state(cache, model)
            try:
                cache.append(seq, extra)
                model[seq] = np.concatenate([model[seq], extra])
            except MemoryError:
                failures += 1
                assert state(cache, model) == before
        elif op < 7 and model:
            seq = rng.choice(list(model))
            cache.fork(seq, next_id)
            model[next_id] = model[seq].copy()
            next_id += 1
        elif model:
            seq = rng.choice(list(model))
            cache.detach(seq)
            del model[seq]
        assert len(cache) == len(model)
        for seq, kv in model.items():
            np.testing.assert_array_equal(cache.get(seq), kv)
        s = cache.stats()
        assert s["total_refs"] == sum(len(cache.block_table(i)) for i in model)
        assert s["free_pages"] + s["cached_pages"] + s["used_pages"] == 20
    s = cache.stats()
    assert failures > 5 and s["cow_copies"] > 5 and s["prefix_hit_pages"] > 20 and s["evictions"] > 5


# --- BlockPool ----------------------------------------------------------------------------------


def test_block_pool_is_an_lru_prefix_registry():
    pool = BlockPool(4)
    blocks = pool.allocate(3)
    assert pool.register(blocks[0], 100) and pool.register(blocks[1], 101)
    assert not pool.register(blocks[2], 100)  # the hash belongs to blocks[0]
    pool.release(list(reversed(blocks)))
    assert pool.eviction_order() == [blocks[1], blocks[0]]
    assert pool.lookup([100, 101, 102]) == blocks[:2]
    assert pool.find(101) == blocks[1] and pool.find(5) is None
    pool.touch([blocks[0]])
    assert pool.refcount(blocks[0]) == 1 and not pool.is_cached(blocks[0])
    assert pool.stats()["cached_blocks"] == 1
    got = pool.allocate(3)  # 2 free + 1 evicted (blocks[1])
    assert blocks[1] in got and pool.find(101) is None
    assert pool.stats()["evictions"] == 1
    assert "BlockPool(num_blocks=4" in repr(pool)


def test_block_pool_errors_change_nothing():
    pool = BlockPool(2)
    a = pool.allocate(1)
    with pytest.raises(MemoryError):
        pool.allocate(2)
    with pytest.raises(ValueError):
        pool.release([a[0], a[0]])
    assert pool.refcount(a[0]) == 1
    with pytest.raises(ValueError):
        pool.touch([1])  # free
    with pytest.raises(IndexError):
        pool.refcount(2)
    with pytest.raises(ValueError):
        pool.allocate(-1)
    with pytest.raises(ValueError):
        BlockPool(0)
    assert pool.stats()["in_use_blocks"] == 1
