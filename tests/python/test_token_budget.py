"""llmds.token_budget.TokenBudget: reserve / commit / release, refusals and errors."""

from __future__ import annotations

import pytest

from llmds.token_budget import TokenBudget


def test_reserve_commit_release() -> None:
    b = TokenBudget(kv_cache_limit=1000, prompt_limit=500, context_limit=4000, context_window=2048)
    b.reserve(1, kv_cache=600, prompt=400, context=1000)
    assert b.available("kv_cache") == 400 and b.available("prompt") == 100
    assert b.try_reserve(2, kv_cache=500) == (False, "kv_cache")
    assert b.try_reserve(2, context=3000) == (False, "context_window")
    assert 2 not in b
    b.commit(1, prompt=0)  # the prompt is processed; KV and context stay
    assert b.holding(1) == {"kv_cache": 600, "prompt": 0, "context": 1000}
    assert b.is_committed(1)
    st = b.stats()
    assert st["kv_cache"]["committed"] == 600 and st["kv_cache"]["refusals"] == 1
    assert st["context"]["refusals"] == 1 and st["reservations"] == 1
    assert b.release(1) == {"kv_cache": 600, "prompt": 0, "context": 1000}
    assert len(b) == 0 and b.available("kv_cache") == 1000


def test_refusals_and_errors() -> None:
    b = TokenBudget(prompt_limit=10)
    b.reserve(1, prompt=8)
    with pytest.raises(MemoryError, match="prompt tokens"):
        b.reserve(2, prompt=3)
    with pytest.raises(MemoryError):
        b.commit(1, prompt=11)
    with pytest.raises(ValueError):
        b.reserve(1, prompt=1)  # already held
    with pytest.raises(ValueError):
        b.reserve(3, kv_cache=-1)
    with pytest.raises(KeyError):
        b.release(7)
    with pytest.raises(ValueError, match="unknown resource"):
        b.available("gpu")
    assert b.available("kv_cache") is None
    assert b.holding(1)["prompt"] == 8
