"""Python code that llmds calls (a key's __hash__ and __eq__, token_of, a dropped value's
__del__, HNSW filters, scheduler and admission clocks, the engine's on_token) may not change the
structure that called it: that is a RuntimeError, and the structure is left as it was. Other
threads wait for a change in progress instead of seeing it halfway."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from typing import Any, Callable

import numpy as np
import pytest

from llmds.admissions import AdmissionController
from llmds.hnsw import HNSW
from llmds.scheduler import ManualClock, Scheduler
from llmds.token_lru import TokenLRU


def snapshot(cache: TokenLRU) -> tuple[list[Any], int]:
    return cache.keys(), cache.total_tokens()


class Key:
    """A key whose __eq__ runs `action` (on the cache that compares it) once armed."""

    def __init__(self, name: str, action: Callable[[], Any] | None = None) -> None:
        self.name = name
        self.action = action

    def __hash__(self) -> int:
        return 7  # every Key collides, so __eq__ runs on every lookup

    def __eq__(self, other: object) -> bool:
        if self.action is not None:
            action, self.action = self.action, None
            action()
        return isinstance(other, Key) and other.name == self.name

    def __repr__(self) -> str:
        return f"Key({self.name!r})"


@pytest.mark.parametrize(
    "change",
    [
        lambda c: c.clear(),
        lambda c: c.delete(next(iter(c.keys()))),
        lambda c: c.put("other", [1]),
        lambda c: c.get("a"),
        lambda c: c.evict_until_budget(0),
        lambda c: c.keys(),
        lambda c: "a" in c,
    ],
    ids=["clear", "delete", "put", "get", "evict", "keys", "contains"],
)
def test_a_key_whose_eq_uses_the_cache_gets_runtime_error_and_changes_nothing(change: Callable[[TokenLRU], Any]) -> None:
    cache = TokenLRU(max_tokens=100)
    cache.put("a", [1, 2])
    cache.put(Key("k1"), [1, 2, 3])
    before = snapshot(cache)
    probe = Key("k2", action=lambda: change(cache))
    with pytest.raises(RuntimeError, match="TokenLRU cannot be"):
        cache.put(probe, [9])
    assert snapshot(cache) == before
    # The lock was let go: the cache works as before.
    cache.put("b", [1])
    assert len(cache) == 3


def test_a_key_whose_hash_changes_the_cache_runs_before_anything_is_in_progress() -> None:
    cache = TokenLRU()
    cache.put("a", [1])

    class ClearingHash:
        def __hash__(self) -> int:
            cache.clear()
            return 1

    cache.put(ClearingHash(), [1, 2])
    assert len(cache) == 1 and cache.total_tokens() == 2


def test_token_of_that_changes_the_cache_gets_runtime_error() -> None:
    cache: TokenLRU

    def token_of(value: Any) -> int:
        cache.delete("a")
        return len(value)

    cache = TokenLRU(token_of=token_of)
    with pytest.raises(RuntimeError):
        cache.put("a", [1])
    assert len(cache) == 0


def test_a_value_whose_del_uses_the_cache_runs_after_an_eviction_completes() -> None:
    cache = TokenLRU(max_tokens=3)
    seen: list[int] = []

    class Value(list):  # type: ignore[type-arg]
        def __del__(self) -> None:
            seen.append(len(cache))
            cache.put("from-del", [])

    cache.put("a", Value([1, 2, 3]))
    cache.put("b", [1, 2])  # evicts "a"; its __del__ runs once the put is complete
    gc.collect()
    assert seen == [1]
    assert "from-del" in cache and "b" in cache


def test_a_cycle_through_a_cached_value_is_collected() -> None:
    class Holder:
        pass

    holder = Holder()
    holder.cache = TokenLRU(token_of=lambda v: 1)  # type: ignore[attr-defined]
    holder.cache.put("self", holder)  # type: ignore[attr-defined]
    alive = weakref.ref(holder)
    del holder
    gc.collect()
    assert alive() is None


def test_threads_that_share_a_cache_wait_for_each_others_changes() -> None:
    cache = TokenLRU(max_tokens=10_000)

    class SlowKey:
        def __init__(self, n: int) -> None:
            self.n = n

        def __hash__(self) -> int:
            return self.n % 64

        def __eq__(self, other: object) -> bool:
            time.sleep(0)  # lets other threads run in the middle of a lookup
            return isinstance(other, SlowKey) and other.n == self.n

    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for i in range(200):
                cache.put(SlowKey(offset + i), [0] * (i % 7))
                cache.get(SlowKey(offset + i // 2))
                if i % 3 == 0:
                    cache.evict_until_budget(5_000)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k * 1000,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    keys = cache.keys()
    assert len(keys) == len(cache) == len({k.n for k in keys})
    assert cache.total_tokens() == sum(cache.peek(k).__len__() for k in keys)


def test_an_hnsw_filter_may_search_the_index_but_not_change_it() -> None:
    rng = np.random.default_rng(0)
    index = HNSW(dim=4, seed=1)
    index.add_batch(rng.normal(size=(30, 4)).astype(np.float32), list(range(30)))
    query = np.zeros(4, dtype=np.float32)
    nested = index.search(query, 3, filter=lambda i: len(index.search(query, 1)) == 1)
    assert len(nested) == 3
    for change in (lambda: index.mark_deleted(3), lambda: index.add(query, 99)):
        with pytest.raises(RuntimeError, match="HNSW cannot be changed"):
            index.search(query, 3, filter=lambda i, change=change: change() or True)
    assert len(index) == 30 and 99 not in index and 3 in index


def test_a_scheduler_clock_that_changes_its_scheduler_gets_runtime_error() -> None:
    sched: Scheduler
    armed = [False]
    t = [0.0]

    def clock() -> float:
        if armed[0]:
            armed[0] = False
            sched.submit(1)
        t[0] += 0.001
        return t[0]

    sched = Scheduler(max_batch_size=4, clock=clock)
    rid = sched.submit(5)
    armed[0] = True
    with pytest.raises(RuntimeError, match="own clock"):
        sched.get_batch(force=True)
    assert sched.queued() == 1 and sched.state(rid) == "queued"
    assert sched.get_batch(force=True) == [rid]


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_clock_that_is_not_finite_is_a_value_error(bad: float) -> None:
    sched = Scheduler(clock=lambda: bad)
    with pytest.raises(ValueError, match="clock returned"):
        sched.submit(1)
    assert len(sched) == 0
    with pytest.raises(TypeError):
        Scheduler(clock=lambda: "noon").submit(1)


def test_a_clock_that_goes_backwards_gives_no_negative_latency() -> None:
    readings = iter([5.0, 4.0, 3.0, 9.0, 1.0, 0.5] * 10)
    sched = Scheduler(max_batch_size=8, max_wait_ms=0.0, clock=lambda: next(readings))
    ids = [sched.submit(3) for _ in range(4)]
    batch = sched.get_batch(force=True)
    assert sorted(batch) == ids
    sched.complete_batch(batch)
    st = sched.stats()
    assert st["latency_ms"]["max"] >= 0 and min(st["latency_ms"]["p50"], st["queue_wait_ms"]["p50"]) >= 0
    assert st["clock_went_back"] > 0


def test_an_admission_clock_that_changes_its_controller_gets_runtime_error() -> None:
    ctl: AdmissionController
    armed = [False]
    clock = ManualClock()

    def reading() -> float:
        if armed[0]:
            armed[0] = False
            ctl.record_request(1)
        return clock.now()

    ctl = AdmissionController(qps_limit=10.0, clock=reading)
    ctl.record_request(1)
    armed[0] = True
    with pytest.raises(RuntimeError, match="own clock"):
        ctl.try_admit(1)
    assert ctl.stats()["recorded"] == 1
