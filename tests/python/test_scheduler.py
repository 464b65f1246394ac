"""llmds.scheduler.Scheduler: the documented signatures, the order, batching rules and errors on a
ManualClock, and random traffic against a naive model."""

from __future__ import annotations

import random

import pytest

from llmds.scheduler import ManualClock, Scheduler


def test_defaults_are_the_seeds() -> None:
    s = Scheduler()
    assert (s.max_batch_size, s.max_wait_ms, s.max_batch_tokens) == (32, 50.0, None)
    assert s.slo_risk_ms == 50.0
    assert "max_batch_size=32" in repr(s)


def test_batch_released_after_max_wait_on_the_injected_clock() -> None:
    clock = ManualClock()
    s = Scheduler(max_batch_size=4, max_wait_ms=50.0, clock=clock)
    a = s.submit(10)
    b = s.submit(5)
    assert s.get_batch() is None
    assert s.time_until_due() == pytest.approx(0.050)
    clock.advance(0.049)
    assert s.get_batch() is None
    clock.advance(0.001)
    assert s.get_batch() == [b, a]
    assert s.state(a) == "in_flight"
    assert s.time_until_due() is None


def test_a_python_callable_can_be_the_clock() -> None:
    now = [100.0]
    s = Scheduler(max_batch_size=8, max_wait_ms=10.0, clock=lambda: now[0])
    s.submit(1)
    assert s.get_batch() is None
    now[0] += 0.010
    assert s.get_batch() == [0]
    with pytest.raises(TypeError):
        Scheduler(clock=3)


def test_full_batch_forced_batch_and_max_batch_tokens() -> None:
    clock = ManualClock()
    s = Scheduler(max_batch_size=2, max_wait_ms=1000.0, clock=clock)
    for t in (9, 3, 7):
        s.submit(t)
    assert s.get_batch() == [1, 2]
    assert s.get_batch() is None
    assert s.get_batch(force=True) == [0]
    assert s.get_batch(force=True) is None
    capped = Scheduler(max_batch_size=10, max_wait_ms=0.0, max_batch_tokens=100, clock=clock)
    for t in (60, 30, 50):
        capped.submit(t)
    assert capped.get_batch() == [1, 2]
    assert capped.get_batch() == [0]


def test_at_risk_slo_goes_first_earliest_deadline_first() -> None:
    clock = ManualClock()
    s = Scheduler(max_batch_size=8, max_wait_ms=1000.0, slo_risk_ms=100.0, clock=clock)
    short = s.submit(1)
    late = s.submit(500, slo_ms=400.0)
    early = s.submit(900, slo_ms=300.0)
    clock.advance(0.350)  # both at risk: deadlines 0.3 s (missed) and 0.4 s
    assert s.get_batch() == [early, late, short]


def test_update_priority_and_stats() -> None:
    clock = ManualClock()
    s = Scheduler(max_batch_size=1, max_wait_ms=0.0, clock=clock)
    ids = [s.submit(t, slo_ms=100.0) for t in (10, 20, 30)]
    s.update_priority(ids[2], 1)
    assert s.remaining_tokens(ids[2]) == 1
    assert s.queued_tokens() == 31
    clock.advance(0.020)
    batch = s.get_batch()
    assert batch == [ids[2]]
    clock.advance(0.030)
    s.complete_batch(batch)
    st = s.stats()
    assert st["completed"] == 1 and st["queued"] == 2 and st["batches"] == 1
    assert st["queue_wait_ms"]["p50"] == pytest.approx(20.0)
    assert st["latency_ms"]["max"] == pytest.approx(50.0)
    assert st["slo_attainment"] == 1.0 and st["slo_requests"] == 1
    assert st["throughput_rps"] == pytest.approx(20.0)
    assert len(s) == 2 and ids[0] in s and ids[2] not in s
    s.reset_metrics()
    assert s.stats()["completed"] == 0


def test_errors_are_key_and_value_errors_and_change_nothing() -> None:
    s = Scheduler(max_batch_size=4, max_wait_ms=0.0, clock=ManualClock())
    with pytest.raises(ValueError, match="non-negative"):
        s.submit(-1)
    with pytest.raises(ValueError):
        s.submit(5, slo_ms=0.0)
    rid = s.submit(5)
    with pytest.raises(KeyError):
        s.update_priority(99, 1)
    with pytest.raises(ValueError):
        s.update_priority(rid, -1)
    with pytest.raises(ValueError, match="never dispatched"):
        s.complete_batch([rid])
    with pytest.raises(KeyError):
        s.complete_batch([99])
    with pytest.raises(KeyError):
        s.state(99)
    assert s.queued() == 1 and s.remaining_tokens(rid) == 5
    with pytest.raises(ValueError):
        Scheduler(max_batch_size=0)
    with pytest.raises(ValueError):
        Scheduler(max_wait_ms=-1.0)
    with pytest.raises(ValueError):
        Scheduler(max_batch_tokens=0)


def test_prefill_and_decode_batches_for_an_engine() -> None:
    s = Scheduler(clock=ManualClock())
    big = s.submit(700)
    small = s.submit(100)
    assert s.build_prefill_batch(512) == [(small, 0, 100, True), (big, 0, 412, False)]
    assert s.build_decode_batch() == [small]
    assert s.build_prefill_batch(512, max_sequences=1) == [(big, 412, 288, True)]
    s.update_priority(small, 50)
    s.update_priority(big, 10)
    assert s.build_decode_batch() == [big, small]
    assert s.build_decode_batch(max_sequences=1) == [big]
    s.preempt(small, 150)
    assert s.state(small) == "queued"
    s.cancel(big)
    assert s.stats()["cancelled"] == 1 and s.stats()["preempted"] == 1


def test_random_traffic_matches_a_naive_model() -> None:
    rng = random.Random(5)
    clock = ManualClock()
    s = Scheduler(max_batch_size=4, max_wait_ms=20.0, slo_risk_ms=30.0, clock=clock)
    queued: dict[int, tuple[int, float | None]] = {}
    in_flight: list[int] = []

    def model_batch() -> list[int]:
        def key(rid: int) -> tuple[bool, float, int, int]:
            tokens, deadline = queued[rid]
            risk = deadline is not None and clock.now() >= deadline - 0.030
            return (not risk, deadline if risk else 0.0, tokens, rid)  # type: ignore[return-value]

        out = sorted(queued, key=key)[:4]
        for rid in out:
            del queued[rid]
        return out

    for _ in range(5000):
        op = rng.randrange(8)
        if op < 3:
            tokens = rng.randrange(40)
            slo = rng.choice([None, None, rng.uniform(10, 200)])
            rid = s.submit(tokens, slo)
            queued[rid] = (tokens, None if slo is None else clock.now() + slo / 1e3)
        elif op == 3 and queued:
            rid = rng.choice(list(queued))
            tokens = rng.randrange(40)
            s.update_priority(rid, tokens)
            queued[rid] = (tokens, queued[rid][1])
        elif op == 4:
            clock.advance(rng.randrange(15) / 1e3)
        elif op == 5 and in_flight:
            s.complete_batch(in_flight)
            in_flight.clear()
        else:
            got = s.get_batch(force=op == 7)
            if got is not None:
                assert got == model_batch()
                in_flight.extend(got)
        assert s.queued() == len(queued)
