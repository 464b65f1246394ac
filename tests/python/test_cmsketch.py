"""llmds.cmsketch.CountMinSketch: the documented contract, the guarantees, batch calls, persistence."""

from __future__ import annotations

import json
import math
import pickle
import random
from collections import Counter

import numpy as np
import pytest

from llmds.cmsketch import CountMinSketch
from llmds.data import open_text


def zipf_stream(n: int, distinct: int, s: float = 1.1, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    weights = [1.0 / (rank + 1) ** s for rank in range(distinct)]
    return [f"q{r}" for r in rng.choices(range(distinct), weights=weights, k=n)]


def test_defaults_follow_the_seed():
    sketch = CountMinSketch()
    assert (sketch.width, sketch.depth, sketch.seed, sketch.conservative, sketch.top_k) == (
        2048, 4, 0, True, 0)
    assert sketch.epsilon == pytest.approx(math.e / 2048)
    assert sketch.delta == pytest.approx(math.exp(-4))


def test_add_estimate_is_hot_and_error_bound():
    sketch = CountMinSketch(width=1 << 16, depth=4)
    sketch.add("a", 3)
    sketch.add("a")
    sketch.add(item="b", count=2)
    assert sketch.estimate("a") == 4
    assert sketch.estimate("never") == 0
    assert sketch.is_hot("a", 4) and not sketch.is_hot("a", 5)
    assert sketch.total_count() == 6
    assert sketch.get_error_bound() == pytest.approx(math.e / (1 << 16) * 6)


def test_str_counts_as_its_utf8_bytes():
    sketch = CountMinSketch()
    sketch.add("café")
    sketch.add("café".encode())
    assert sketch.estimate("café") == 2


def test_never_underestimates_and_conservative_update_cuts_the_error():
    stream = zipf_stream(50_000, 10_000, seed=1)
    truth = Counter(stream)
    conservative = CountMinSketch(width=256, depth=4)
    plain = CountMinSketch(width=256, depth=4, conservative=False)
    conservative.add_many(stream)
    plain.add_many(stream)
    c_err = [conservative.estimate(k) - v for k, v in truth.items()]
    p_err = [plain.estimate(k) - v for k, v in truth.items()]
    assert min(c_err) >= 0 and min(p_err) >= 0
    assert sum(c_err) < 0.75 * sum(p_err)


def test_from_error_sizes_the_sketch():
    sketch = CountMinSketch.from_error(0.001, 0.01, seed=3, top_k=2)
    assert (sketch.width, sketch.depth, sketch.seed, sketch.top_k) == (2719, 5, 3, 2)
    for epsilon, delta in [(0.0, 0.1), (1.0, 0.1), (0.1, 0.0), (0.1, 1.5), (1e-12, 0.1)]:
        with pytest.raises(ValueError):
            CountMinSketch.from_error(epsilon, delta)


@pytest.mark.parametrize(
    "kwargs", [{"width": 0}, {"width": -3}, {"depth": 0}, {"depth": 65}, {"seed": -1},
               {"seed": 2**64}, {"top_k": -1}, {"width": 2**32}])
def test_bad_parameters_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        CountMinSketch(**kwargs)


def test_negative_count_or_threshold_raises_and_changes_nothing():
    sketch = CountMinSketch()
    sketch.add("a", 2)
    with pytest.raises(ValueError, match="non-negative"):
        sketch.add("a", -1)
    with pytest.raises(ValueError, match="non-negative"):
        sketch.is_hot("a", -1)
    assert sketch.estimate("a") == 2 and sketch.total_count() == 2


def test_items_must_be_str_or_bytes():
    sketch = CountMinSketch()
    for bad in (1, 2.5, None, ["a"]):
        with pytest.raises(TypeError, match="str or bytes"):
            sketch.add(bad)
    assert sketch.total_count() == 0


def test_total_past_64_bits_raises_overflow_error():
    sketch = CountMinSketch()
    sketch.add("a", 2**63 - 1)
    sketch.add("b", 2**63 - 1)
    with pytest.raises(OverflowError):
        sketch.add("c", 2)
    assert sketch.estimate("c") == 0


def test_add_many_equals_adding_one_by_one():
    stream = zipf_stream(5000, 500, seed=2)
    one_by_one, batch, from_generator = CountMinSketch(top_k=3), CountMinSketch(top_k=3), CountMinSketch(top_k=3)
    for item in stream:
        one_by_one.add(item)
    batch.add_many(stream)
    from_generator.add_many(item for item in stream)
    assert batch.to_bytes() == one_by_one.to_bytes() == from_generator.to_bytes()


def test_add_many_with_counts():
    sketch = CountMinSketch(width=1 << 16)
    sketch.add_many(["a", b"b", "a"], counts=[2, 5, 1])
    assert (sketch.estimate("a"), sketch.estimate("b")) == (3, 5)
    sketch.add_many(["a"], counts=np.array([4]))
    assert sketch.estimate("a") == 7


@pytest.mark.parametrize(
    "items, counts, error",
    [(["a", "b"], [1, -1], ValueError), (["a", "b"], [1], ValueError),
     (["a", 3], None, TypeError), (["a", "b"], [[1, 2]], ValueError),
     (["a", "b"], [1.9, 2.7], ValueError), (["a"], np.array([2**64 - 1], dtype=np.uint64), ValueError)])
def test_a_bad_batch_adds_nothing(items, counts, error):
    sketch = CountMinSketch()
    sketch.add("a")
    before = sketch.to_bytes()
    with pytest.raises(error):
        sketch.add_many(items, counts=counts)
    assert sketch.to_bytes() == before


def test_estimate_many_returns_a_uint64_array():
    sketch = CountMinSketch()
    sketch.add_many(["a", "b", "a"])
    estimates = sketch.estimate_many(["a", "b", "c"])
    assert estimates.dtype == np.uint64
    assert estimates.tolist() == [sketch.estimate(x) for x in "abc"]


def test_merge_adds_counts_and_rejects_mismatched_sketches():
    a, b = CountMinSketch(conservative=False), CountMinSketch(conservative=False)
    both = CountMinSketch(conservative=False)
    s1, s2 = zipf_stream(3000, 300, seed=3), zipf_stream(3000, 300, seed=4)
    a.add_many(s1)
    b.add_many(s2)
    both.add_many(s1 + s2)
    a.merge(b)
    assert a.to_bytes() == both.to_bytes()
    before = a.to_bytes()
    for other in (CountMinSketch(width=1024), CountMinSketch(depth=3), CountMinSketch(seed=1)):
        with pytest.raises(ValueError, match="merge"):
            a.merge(other)
    assert a.to_bytes() == before


def test_heavy_hitters_find_the_top_items():
    stream = zipf_stream(50_000, 5000, seed=5)
    sketch = CountMinSketch(width=4096, top_k=5)
    sketch.add_many(stream)
    hitters = sketch.heavy_hitters()
    assert [item for item, _ in hitters] == [item for item, _ in Counter(stream).most_common(5)]
    assert all(estimate >= Counter(stream)[item] for item, estimate in hitters)
    assert CountMinSketch().heavy_hitters() == []


def test_heavy_hitters_return_bytes_when_not_utf8():
    sketch = CountMinSketch(top_k=2)
    sketch.add(b"\xff\xfe", 3)
    sketch.add("text", 2)
    assert sketch.heavy_hitters() == [(b"\xff\xfe", 3), ("text", 2)]


def test_bytes_pickle_and_file_round_trips(tmp_path):
    sketch = CountMinSketch(width=300, depth=5, seed=42, conservative=False, top_k=4)
    sketch.add_many(zipf_stream(2000, 200, seed=6))
    for copy in (CountMinSketch.from_bytes(sketch.to_bytes()), pickle.loads(pickle.dumps(sketch))):
        assert copy.to_bytes() == sketch.to_bytes()
        assert copy.heavy_hitters() == sketch.heavy_hitters()
        assert repr(copy) == repr(sketch)
    path = tmp_path / "sketch.cms"
    sketch.save(path)
    assert CountMinSketch.load(str(path)).to_bytes() == sketch.to_bytes()


def test_corrupted_or_missing_files_are_clear_errors(tmp_path):
    data = bytearray(CountMinSketch(width=8, depth=2).to_bytes())
    data[20] ^= 1
    with pytest.raises(ValueError, match="corrupted"):
        CountMinSketch.from_bytes(bytes(data))
    with pytest.raises(ValueError, match="truncated|magic"):
        CountMinSketch.from_bytes(bytes(data[:10]))
    with pytest.raises(OSError):
        CountMinSketch.load(tmp_path / "missing.cms")


def test_stats_and_repr():
    sketch = CountMinSketch(width=100, depth=3, top_k=2)
    sketch.add("a", 10)
    stats = sketch.stats()
    assert stats["memory_bytes"] == 100 * 3 * 8
    assert stats["total_count"] == 10
    assert stats["error_bound"] == pytest.approx(math.e / 100 * 10)
    assert repr(sketch) == "CountMinSketch(width=100, depth=3, seed=0, conservative=True, top_k=2, total=10)"


def test_real_mooncake_block_ids_are_never_underestimated(data_file):
    blocks = []
    with open_text(data_file("traces/mooncake_fast25_conversation_trace.jsonl")) as f:
        for line in f:
            blocks.extend(str(b) for b in json.loads(line)["hash_ids"])
    truth = Counter(blocks)
    sketch = CountMinSketch(width=16384, depth=4, top_k=5)
    sketch.add_many(blocks)
    estimates = sketch.estimate_many(list(truth))
    assert all(int(e) >= c for e, c in zip(estimates, truth.values()))
    assert sketch.heavy_hitters()[0] == ("0", 12_031)  # the shared first block of every request


def test_add_many_owns_its_items_while_converting_counts():
    items = [f"item-{i}" for i in range(1000)]

    class Counts:
        """Counts whose conversion to an array empties the caller's item list."""

        def __array__(self, dtype=None, copy=None):
            items.clear()
            return np.ones(1000, dtype=np.int64)

    sketch = CountMinSketch(width=1 << 16)
    sketch.add_many(items, counts=Counts())
    assert sketch.total_count() == 1000
    assert all(sketch.estimate(f"item-{i}") >= 1 for i in range(1000))


def test_add_many_accepts_an_empty_batch():
    sketch = CountMinSketch()
    sketch.add_many([], counts=[])
    assert sketch.total_count() == 0


def test_loading_a_directory_is_an_os_error(tmp_path):
    with pytest.raises(OSError):
        CountMinSketch.load(tmp_path)
