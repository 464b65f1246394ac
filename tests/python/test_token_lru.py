"""llmds.token_lru.TokenLRU: the documented contract, its error cases, and a randomised check."""

from __future__ import annotations

import random
from collections import OrderedDict

import pytest

from llmds.token_lru import TokenLRU


def test_counts_tokens_with_len_by_default():
    cache = TokenLRU()
    cache.put("a", [1, 2, 3])
    cache.put("b", "xy")
    assert cache.total_tokens() == 5
    assert len(cache) == 2
    assert cache.max_tokens is None


def test_get_returns_value_or_none_and_refreshes_recency():
    cache = TokenLRU()
    cache.put("a", [1])
    cache.put("b", [2])
    assert cache.get("a") == [1]
    assert cache.keys() == ["b", "a"]
    assert cache.get("zzz") is None


def test_peek_leaves_recency_alone():
    cache = TokenLRU()
    cache.put("a", [1])
    cache.put("b", [2])
    assert cache.peek("a") == [1]
    assert cache.keys() == ["a", "b"]


def test_evict_until_budget_returns_least_recent_first():
    cache = TokenLRU()
    cache.put(1, "aaa")
    cache.put(2, "bbb")
    cache.put(3, "ccc")
    cache.get(1)
    assert cache.evict_until_budget(4) == [(2, "bbb"), (3, "ccc")]
    assert cache.total_tokens() == 3
    assert cache.evict_until_budget(10) == []


def test_max_tokens_makes_put_evict():
    cache = TokenLRU(max_tokens=5)
    cache.put("a", "aa")
    cache.put("b", "bb")
    cache.put("c", "cccc")
    assert cache.keys() == ["c"]
    assert cache.total_tokens() == 4
    assert cache.stats()["evictions"] == 2


def test_custom_token_of_and_any_hashable_key():
    cache = TokenLRU(token_of=lambda response: response["tokens"], max_tokens=100)
    cache.put(("tenant", 7), {"tokens": 60})
    cache.put(frozenset({1, 2}), {"tokens": 30})
    assert cache.total_tokens() == 90
    assert cache.get(("tenant", 7)) == {"tokens": 60}
    assert ("tenant", 7) in cache


def test_put_replaces_an_existing_value():
    cache = TokenLRU()
    cache.put("a", "aaaa")
    cache.put("a", "b")
    assert cache.get("a") == "b"
    assert cache.total_tokens() == 1
    assert len(cache) == 1


def test_equal_keys_of_different_types_are_one_entry():
    cache = TokenLRU()
    cache.put(1, "x")
    cache.put(1.0, "yy")  # 1 == 1.0 and hash(1) == hash(1.0), as in a dict
    assert len(cache) == 1
    assert cache.get(1) == "yy"


def test_value_larger_than_max_tokens_is_rejected():
    cache = TokenLRU(max_tokens=3)
    cache.put("a", "ab")
    with pytest.raises(ValueError, match="max_tokens"):
        cache.put("b", "abcd")
    assert cache.keys() == ["a"] and cache.total_tokens() == 2


def test_negative_token_count_is_rejected_and_changes_nothing():
    cache = TokenLRU(token_of=lambda v: v)
    cache.put("a", 3)
    with pytest.raises(ValueError, match="negative"):
        cache.put("b", -1)
    with pytest.raises(ValueError, match="negative"):
        cache.put("a", -1)
    assert cache.get("a") == 3 and len(cache) == 1


def test_token_of_must_return_an_int():
    cache = TokenLRU(token_of=lambda v: 1.5)
    with pytest.raises(TypeError, match="int"):
        cache.put("a", "x")
    assert len(cache) == 0


def test_errors_raised_by_token_of_propagate_and_change_nothing():
    def token_of(value):
        raise RuntimeError("tokenizer down")

    cache = TokenLRU(token_of=token_of)
    with pytest.raises(RuntimeError, match="tokenizer down"):
        cache.put("a", "x")
    assert len(cache) == 0


def test_unhashable_keys_are_type_errors():
    cache = TokenLRU()
    with pytest.raises(TypeError):
        cache.put(["list"], "x")
    with pytest.raises(TypeError):
        cache.get({})
    assert len(cache) == 0


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError):
        TokenLRU(max_tokens=-1)
    with pytest.raises(TypeError):
        TokenLRU(token_of=3)
    with pytest.raises(ValueError):
        TokenLRU().evict_until_budget(-5)


def test_delete_returns_the_value_and_unknown_key_raises_key_error():
    cache = TokenLRU()
    cache.put("a", "abc")
    assert cache.delete("a") == "abc"
    assert cache.total_tokens() == 0
    with pytest.raises(KeyError):
        cache.delete("a")


def test_stats_report_hits_misses_and_evictions():
    cache = TokenLRU(max_tokens=2)
    cache.put("a", "a")
    cache.get("a")
    cache.get("b")
    cache.put("b", "bb")
    assert cache.stats() == {
        "size": 1,
        "total_tokens": 2,
        "max_tokens": 2,
        "hits": 1,
        "misses": 1,
        "hit_rate": 0.5,
        "evictions": 1,
    }
    assert repr(cache) == "TokenLRU(size=1, total_tokens=2, max_tokens=2)"


def test_clear_empties_the_cache():
    cache = TokenLRU()
    cache.put("a", "abc")
    cache.clear()
    assert len(cache) == 0 and cache.total_tokens() == 0 and cache.get("a") is None


@pytest.mark.parametrize("max_tokens", [None, 30])
def test_random_operations_agree_with_an_ordered_dict_model(max_tokens):
    rng = random.Random(11)
    cache = TokenLRU(max_tokens=max_tokens)
    model: OrderedDict[str, str] = OrderedDict()  # oldest first

    def evict_to(budget: int) -> list[tuple[str, str]]:
        evicted = []
        while sum(map(len, model.values())) > budget:
            evicted.append(model.popitem(last=False))
        return evicted

    for _ in range(4000):
        key = f"k{rng.randrange(25)}"
        op = rng.randrange(10)
        if op < 5:
            value = "v" * rng.randrange(11)
            model.pop(key, None)
            if max_tokens is not None:
                evict_to(max_tokens - len(value))
            model[key] = value
            cache.put(key, value)
        elif op < 8:
            expected = model.get(key)
            if expected is not None:
                model.move_to_end(key)
            assert cache.get(key) == expected
        else:
            budget = rng.randrange(40)
            assert cache.evict_until_budget(budget) == evict_to(budget)
        assert cache.keys() == list(model)
        assert cache.total_tokens() == sum(map(len, model.values()))


class CollidingKey:
    """Keys that all hash alike and whose == can be made to raise, as user keys may."""

    raising = False

    def __init__(self, name):
        self.name = name

    def __hash__(self):
        return 7

    def __eq__(self, other):
        if CollidingKey.raising:
            raise RuntimeError("== failed")
        return isinstance(other, CollidingKey) and self.name == other.name


def assert_consistent(cache):
    """The map, the recency list and the token total agree."""
    keys = cache.keys()
    assert len(keys) == len(cache)
    assert cache.total_tokens() == sum(len(cache.peek(k)) for k in keys)


def test_an_exception_from_key_equality_leaves_the_cache_unchanged():
    k1, k2 = CollidingKey("a"), CollidingKey("b")
    cache = TokenLRU(max_tokens=10)
    cache.put(k1, "xxxx")
    cache.put(k2, "yyyy")
    CollidingKey.raising = True
    try:
        # A distinct colliding key must be compared with == and so raises.
        with pytest.raises(RuntimeError):
            cache.delete(CollidingKey("c"))
        with pytest.raises(RuntimeError):
            cache.put(CollidingKey("c"), "z")
        assert cache.keys() == [k1, k2] and cache.total_tokens() == 8
        # Evicting stored keys looks them up again; whether or not == is reached, the cache
        # either evicts completely or stays as it was.
        for call in (lambda: cache.put("new", "zzzzzz"), lambda: cache.evict_until_budget(0)):
            try:
                call()
            except RuntimeError:
                pass
            assert_consistent(cache)
    finally:
        CollidingKey.raising = False
    assert_consistent(cache)
    assert cache.total_tokens() <= 10
