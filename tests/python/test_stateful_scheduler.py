"""Scheduler on a ManualClock against a plain-Python model: a Hypothesis state machine
(docs/python-api.md, docs/scheduling.md). Time is a rule: the clock advances in steps of 1/64 s,
and every duration and deadline is a multiple of 1/64 s, so all time arithmetic is exact.

The clock is a ManualClock or a plain callable that may go back, be NaN or call the scheduler
(docs/reliability.md).

Documented order: a request whose SLO is at risk (now >= arrival + slo_ms - slo_risk_ms) first,
earliest deadline first; otherwise fewer remaining tokens first; ties by arrival (id). A batch is
due when max_batch_size requests are queued, the queued tokens reach max_batch_tokens, an SLO is
at risk, or the oldest queued request has waited max_wait_ms (since it last entered the queue).
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from stateful_helpers import refused, stateful_settings

import llmds.scheduler as scheduler
Scheduler, ManualClock = scheduler.Scheduler, scheduler.ManualClock

TICK = 1 / 64  # seconds
SLO_MS = st.sampled_from([None, None, 15.625, 62.5, 125.0, 250.0])
TOKENS = st.integers(min_value=0, max_value=40)


def summary(values):
    if not values:
        return {"count": 0, "mean": 0.0, "p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}
    v = np.array(values, dtype=np.float64)
    return {
        "count": len(values),
        "mean": float(v.mean()),
        "p50": float(np.percentile(v, 50)),
        "p95": float(np.percentile(v, 95)),
        "p99": float(np.percentile(v, 99)),
        "max": float(v.max()),
    }


def close_summary(got, expected):
    assert got["count"] == expected["count"], (got, expected)
    for k in ("mean", "p50", "p95", "p99", "max"):
        assert math.isclose(got[k], expected[k], rel_tol=1e-9, abs_tol=1e-9), (k, got, expected)


class FakeClock:
    """A plain callable clock (the other kind Scheduler takes) that the test sets freely: also
    backwards, or to NaN; `hook`, when set, runs inside each reading."""

    def __init__(self, t):
        self.t = t
        self.hook = None

    def __call__(self):
        if self.hook is not None:
            self.hook()
        return self.t


class SchedulerMachine(RuleBasedStateMachine):
    @initialize(
        max_batch_size=st.integers(min_value=1, max_value=4),
        max_wait_ms=st.sampled_from([62.5, 0.0, 125.0]),
        max_batch_tokens=st.sampled_from([None, None, 20, 50]),
        slo_risk_ms=st.sampled_from([None, None, 0.0, 31.25, 187.5]),
        start=st.sampled_from([0.0, 1000.0]),
        manual=st.sampled_from([True, True, False]),
    )
    def init(self, max_batch_size, max_wait_ms, max_batch_tokens, slo_risk_ms, start, manual):
        # A ManualClock, or a plain callable that may go backwards: docs/reliability.md, a reading
        # earlier than the last counts as the last (stats clock_went_back counts them).
        self.manual = manual
        self.clock = ManualClock(start) if manual else None
        self.fake = None if manual else FakeClock(start)
        self.peak = start  # the latest time the scheduler has read
        self.back_seen = False
        self.sched = Scheduler(
            max_batch_size=max_batch_size,
            max_wait_ms=max_wait_ms,
            max_batch_tokens=max_batch_tokens,
            slo_risk_ms=slo_risk_ms,
            clock=self.clock if manual else self.fake,
        )
        self.sched.build_decode_batch()  # a first reading: from now on, earlier ones count as went back
        self.mbs, self.wait_ms, self.mbt = max_batch_size, max_wait_ms, max_batch_tokens
        self.risk_ms = max_wait_ms if slo_risk_ms is None else slo_risk_ms
        assert (
            self.sched.max_batch_size,
            self.sched.max_wait_ms,
            self.sched.max_batch_tokens,
            self.sched.slo_risk_ms,
        ) == (max_batch_size, max_wait_ms, max_batch_tokens, self.risk_ms)
        self.reqs: dict[int, dict] = {}
        self.last_id = None
        self.gone: set[int] = set()
        self.reset_counters()
        self.first_submit = 0.0
        self.last_completion = 0.0

    def reset_counters(self):
        self.c = dict(
            submitted=0, dispatched=0, completed=0, cancelled=0, preempted=0, batches=0, slo_requests=0, slo_met=0
        )
        self.waits, self.latencies, self.batch_sizes = [], [], []
        self.completed_tokens = 0

    # --- the model -------------------------------------------------------------------------
    def now(self):
        if self.manual:
            return self.clock.now()
        self.peak = max(self.peak, self.fake.t)  # readings never go back
        return self.peak

    def queued(self):
        return [i for i, r in self.reqs.items() if r["state"] == "queued"]

    def in_flight(self):
        return [i for i, r in self.reqs.items() if r["state"] == "in_flight"]

    def at_risk(self, r, now):
        return r["deadline"] is not None and now >= r["deadline"] - self.risk_ms / 1e3

    def peek(self, now):
        q = self.queued()
        with_slo = [i for i in q if self.reqs[i]["deadline"] is not None]
        if with_slo:
            top = min(with_slo, key=lambda i: (self.reqs[i]["deadline"], i))
            if self.at_risk(self.reqs[top], now):
                return top
        return min(q, key=lambda i: (self.reqs[i]["tokens"], i))

    def priority(self, ids, now):
        def key(i):
            r = self.reqs[i]
            risk = self.at_risk(r, now)
            return (not risk, r["deadline"] if risk else 0.0, r["tokens"], i)

        return sorted(ids, key=key)

    def queued_tokens(self):
        return sum(self.reqs[i]["tokens"] for i in self.queued())

    def due(self, now):
        q = self.queued()
        if not q:
            return False
        if len(q) >= self.mbs or (self.mbt is not None and self.queued_tokens() >= self.mbt):
            return True
        with_slo = [self.reqs[i] for i in q if self.reqs[i]["deadline"] is not None]
        if with_slo and self.at_risk(min(with_slo, key=lambda r: r["deadline"]), now):
            return True
        return (now - min(self.reqs[i]["queued_since"] for i in q)) * 1e3 >= self.wait_ms

    def dispatch(self, i, now):
        r = self.reqs[i]
        r["state"] = "in_flight"
        self.waits.append((now - r["queued_since"]) * 1e3)
        self.c["dispatched"] += 1

    def known_ids(self):
        return sorted(set(self.reqs) | self.gone | {-1, 10**6})

    def stats_without_clock(self):
        """stats() minus clock_went_back, which counts clock readings (a refused call reads the
        clock too), not the scheduler's state."""
        st_ = self.sched.stats()
        st_.pop("clock_went_back")
        return st_

    def snapshot(self):
        """Everything observable: the state, and what the scheduler answers from the clock."""
        s = self.sched
        return (
            self.snapshot_without_clock(),
            s.time_until_due(),
            self.clock.now() if self.manual else self.fake.t,
            s.build_decode_batch(),
        )

    def snapshot_without_clock(self):
        """The state without the calls that read the clock (for the rules that break the clock)."""
        s = self.sched
        return (
            len(s),
            s.queued(),
            s.in_flight(),
            s.queued_tokens(),
            self.stats_without_clock(),
            {i: (s.state(i), s.remaining_tokens(i)) for i in sorted(self.reqs)},
            [i in s for i in self.known_ids()],
        )

    def set_fake(self, t):
        """Sets the callable clock and has the scheduler read it (build_decode_batch always does),
        so that the model's latest time is the scheduler's."""
        self.fake.t = t
        self.sched.build_decode_batch()
        if t < self.peak:
            self.back_seen = True
        self.now()

    # --- valid operations ------------------------------------------------------------------
    @rule(ticks=st.integers(min_value=0, max_value=6))
    def advance(self, ticks):
        if self.manual:
            self.clock.advance(ticks * TICK)
        else:
            self.set_fake(self.fake.t + ticks * TICK)

    @rule(ticks=st.integers(min_value=0, max_value=3))
    def set_clock(self, ticks):
        if self.manual:
            self.clock.set(self.now() + ticks * TICK)
        else:
            self.set_fake(self.now() + ticks * TICK)

    @precondition(lambda self: not self.manual)
    @rule(ticks=st.integers(min_value=1, max_value=4))
    def clock_goes_back(self, ticks):
        """A callable clock that goes back: the scheduler keeps the latest time it read."""
        self.set_fake(self.now() - ticks * TICK)

    @rule(tokens=TOKENS, slo_ms=SLO_MS)
    def submit(self, tokens, slo_ms):
        now = self.now()
        i = self.sched.submit(tokens, slo_ms)
        assert self.last_id is None or i > self.last_id  # ids increase in submission order
        assert i not in self.reqs and i not in self.gone
        self.last_id = i
        self.reqs[i] = dict(
            tokens=tokens,
            submitted=tokens,
            prompt=tokens,
            done=0,
            arrival=now,
            queued_since=now,
            deadline=None if slo_ms is None else now + slo_ms / 1e3,
            state="queued",
        )
        if self.c["submitted"] == 0:
            self.first_submit = now
        self.c["submitted"] += 1

    @rule(tokens=TOKENS, slo_ms=SLO_MS)
    def submit_again(self, tokens, slo_ms):  # makes submit twice as frequent
        self.submit(tokens, slo_ms)

    @rule(force=st.booleans())
    def get_batch(self, force):
        now = self.now()
        got = self.sched.get_batch(force)
        if not self.queued() or not (force or self.due(now)):
            assert got is None
            return
        batch, batch_tokens = [], 0
        while len(batch) < self.mbs and self.queued():
            i = self.peek(now)
            r = self.reqs[i]
            if self.mbt is not None and batch and batch_tokens + r["tokens"] > self.mbt:
                break
            batch_tokens += r["tokens"]
            self.dispatch(i, now)
            r["done"] = r["prompt"]  # a micro-batch runs the whole request
            batch.append(i)
        assert got == batch
        self.c["batches"] += 1
        self.batch_sizes.append(len(batch))

    @precondition(lambda self: self.in_flight())
    @rule(data=st.data())
    def complete_batch(self, data):
        ids = data.draw(st.lists(st.sampled_from(self.in_flight()), min_size=1, unique=True))
        if len(ids) == 1 and data.draw(st.booleans()):
            self.sched.complete(ids[0])
        else:
            self.sched.complete_batch(ids)
        now = self.now()
        for i in ids:
            r = self.reqs.pop(i)
            self.gone.add(i)
            self.latencies.append((now - r["arrival"]) * 1e3)
            if r["deadline"] is not None:
                self.c["slo_requests"] += 1
                self.c["slo_met"] += now <= r["deadline"]
            self.completed_tokens += r["submitted"]
            self.last_completion = now
            self.c["completed"] += 1

    @precondition(lambda self: self.reqs)
    @rule(data=st.data())
    def cancel(self, data):
        i = data.draw(st.sampled_from(sorted(self.reqs)))
        self.sched.cancel(i)
        del self.reqs[i]
        self.gone.add(i)
        self.c["cancelled"] += 1

    @precondition(lambda self: self.reqs)
    @rule(data=st.data(), tokens=TOKENS)
    def update_priority(self, data, tokens):
        i = data.draw(st.sampled_from(sorted(self.reqs)))
        self.sched.update_priority(i, tokens)
        self.reqs[i]["tokens"] = tokens

    @precondition(lambda self: self.in_flight())
    @rule(data=st.data(), tokens=TOKENS)
    def preempt(self, data, tokens):
        i = data.draw(st.sampled_from(self.in_flight()))
        self.sched.preempt(i, tokens)
        r = self.reqs[i]
        r.update(tokens=tokens, prompt=tokens, done=0, state="queued", queued_since=self.now())
        self.c["preempted"] += 1

    @rule(
        budget=st.integers(min_value=0, max_value=60), max_sequences=st.none() | st.integers(min_value=0, max_value=4)
    )
    def build_prefill_batch(self, budget, max_sequences):
        now = self.now()
        got = (
            self.sched.build_prefill_batch(budget)
            if max_sequences is None
            else self.sched.build_prefill_batch(budget, max_sequences)
        )
        limit = self.mbs if max_sequences is None else max_sequences
        chunks, left = [], budget

        def take(i):
            nonlocal left
            r = self.reqs[i]
            n = min(left, r["prompt"] - r["done"])
            chunks.append((i, r["done"], n, r["done"] + n == r["prompt"]))
            r["done"] += n
            r["tokens"] = max(0, r["tokens"] - n)
            left -= n

        partial = self.priority([i for i in self.in_flight() if self.reqs[i]["done"] < self.reqs[i]["prompt"]], now)
        for i in partial:  # prompts in progress first
            if left == 0 or len(chunks) == limit:
                break
            take(i)
        while self.queued() and len(chunks) < limit:
            i = self.peek(now)
            if left == 0 and self.reqs[i]["prompt"] > 0:
                break
            self.dispatch(i, now)
            take(i)
        assert got == chunks

    @rule(max_sequences=st.none() | st.integers(min_value=0, max_value=4))
    def build_decode_batch(self, max_sequences):
        got = self.sched.build_decode_batch() if max_sequences is None else self.sched.build_decode_batch(max_sequences)
        ready = self.priority(
            [i for i in self.in_flight() if self.reqs[i]["done"] == self.reqs[i]["prompt"]], self.now()
        )
        assert got == ready[: self.mbs if max_sequences is None else max_sequences]

    @rule()
    def reset_metrics(self):
        self.sched.reset_metrics()
        self.reset_counters()

    # --- invalid operations ----------------------------------------------------------------
    @rule(data=st.data())
    def invalid_operation(self, data):
        name = data.draw(
            st.sampled_from(
                [
                    "submit",
                    "unknown_id",
                    "not_in_flight",
                    "listed_twice",
                    "negative_tokens",
                    "prefill",
                    "clock",
                    "constructor",
                ]
            ),
            label="invalid operation",
        )
        getattr(self, "bad_" + name)(data)

    # Each tries every variant of its kind of error: rare variants are not left to chance.
    def bad_submit(self, data):
        for tokens, slo in ((-1, None), (5, 0.0), (5, -15.625), (5, math.nan), (5, math.inf), (-3, 62.5)):
            refused(self.snapshot, ValueError, self.sched.submit, tokens, slo)

    def bad_unknown_id(self, data):
        i = data.draw(st.sampled_from(sorted(self.gone | {-1, 10**6})))
        for op in ("complete", "complete_batch", "update_priority", "cancel", "preempt", "state", "remaining_tokens"):
            args = {"complete_batch": ([*self.in_flight()[:1], i],), "update_priority": (i, 3), "preempt": (i, 3)}.get(
                op, (i,)
            )
            refused(self.snapshot, KeyError, getattr(self.sched, op), *args)  # nothing completes

    def bad_not_in_flight(self, data):
        q = self.queued()
        if not q:
            return
        i = data.draw(st.sampled_from(q))
        refused(self.snapshot, ValueError, self.sched.complete, i)
        refused(self.snapshot, ValueError, self.sched.complete_batch, self.in_flight()[:2] + [i])  # nothing completes
        refused(self.snapshot, ValueError, self.sched.preempt, i, 5)

    def bad_listed_twice(self, data):
        f = self.in_flight()
        if not f:
            return
        i = data.draw(st.sampled_from(f))
        refused(self.snapshot, ValueError, self.sched.complete_batch, [i] + [j for j in f if j != i][:1] + [i])

    def bad_negative_tokens(self, data):
        if not self.reqs:
            return
        i = data.draw(st.sampled_from(sorted(self.reqs)))
        tokens = data.draw(st.integers(-5, -1))
        refused(self.snapshot, ValueError, self.sched.update_priority, i, tokens)
        if self.reqs[i]["state"] == "in_flight":
            refused(self.snapshot, ValueError, self.sched.preempt, i, tokens)

    def bad_prefill(self, data):
        for args in ((-1,), (-10, 2), (5, -1)):
            refused(self.snapshot, ValueError, self.sched.build_prefill_batch, *args)
        refused(self.snapshot, ValueError, self.sched.build_decode_batch, -1)

    def bad_clock(self, data):
        if self.manual:
            for seconds in (-TICK, math.nan, math.inf, -math.inf):
                refused(self.snapshot, ValueError, self.clock.advance, seconds)
            for seconds in (self.now() - TICK, math.nan, math.inf):
                refused(self.snapshot, ValueError, self.clock.set, seconds)
            return
        # docs/reliability.md: a reading that is NaN or infinite is ValueError; a clock function
        # that changes the structure it times gets RuntimeError. Either way nothing changes.
        in_flight = self.in_flight()[:1]
        calls = [
            lambda: self.sched.submit(3),
            lambda: self.sched.build_prefill_batch(10),
            self.sched.build_decode_batch,
        ]
        if self.queued():  # with an empty queue these answer None without needing the time
            calls += [lambda: self.sched.get_batch(True), self.sched.time_until_due]
        if in_flight:
            calls += [lambda: self.sched.complete_batch(in_flight), lambda: self.sched.preempt(in_flight[0], 1)]
        good = self.fake.t
        for reading in (math.nan, math.inf, -math.inf):
            self.fake.t = reading
            try:
                for call in calls:
                    refused(self.snapshot_without_clock, ValueError, call)
            finally:
                self.fake.t = good

        def with_hook(call):
            def run():
                self.fake.hook = lambda: self.sched.submit(1)
                try:
                    return call()
                finally:
                    self.fake.hook = None

            return run

        for call in calls:
            refused(self.snapshot_without_clock, RuntimeError, with_hook(call))

    def bad_constructor(self, data):
        for bad in (
            dict(max_batch_size=0),
            dict(max_wait_ms=-1.0),
            dict(max_wait_ms=math.nan),
            dict(max_wait_ms=math.inf),
            dict(slo_risk_ms=-1.0),
            dict(slo_risk_ms=math.inf),
            dict(slo_risk_ms=math.nan),
            dict(max_batch_tokens=0),
        ):
            refused(self.snapshot, ValueError, Scheduler, **{"clock": self.clock, **bad})
        refused(self.snapshot, TypeError, Scheduler, clock="not a clock")
        # docs/reliability.md: an object whose __init__ never ran is TypeError when used
        refused(self.snapshot, TypeError, lambda: Scheduler.__new__(Scheduler).submit(1))
        refused(self.snapshot, TypeError, lambda: ManualClock.__new__(ManualClock).now())

    # --- invariants ------------------------------------------------------------------------
    @invariant()
    def agrees_with_model(self):
        s, now = self.sched, self.now()
        q, f = self.queued(), self.in_flight()
        assert len(s) == len(self.reqs)
        assert (s.queued(), s.in_flight(), s.queued_tokens()) == (len(q), len(f), self.queued_tokens())
        for i, r in self.reqs.items():
            assert i in s and s.state(i) == r["state"] and s.remaining_tokens(i) == r["tokens"]
        for i in self.gone:
            assert i not in s
        due = s.time_until_due()
        if not q:
            assert due is None
        elif self.due(now):
            assert due == 0.0
        else:
            at = min(self.reqs[i]["queued_since"] for i in q) + self.wait_ms / 1e3
            deadlines = [self.reqs[i]["deadline"] for i in q if self.reqs[i]["deadline"] is not None]
            if deadlines:
                at = min(at, min(deadlines) - self.risk_ms / 1e3)
            assert math.isclose(due, max(0.0, at - now), abs_tol=1e-9), (due, at - now)

    @invariant()
    def stats_agree(self):
        st_ = self.sched.stats()
        for k, v in self.c.items():
            assert st_[k] == v, (k, st_[k], v)
        assert (st_["queued"], st_["in_flight"], st_["queued_tokens"]) == (
            len(self.queued()),
            len(self.in_flight()),
            self.queued_tokens(),
        )
        close_summary(st_["queue_wait_ms"], summary(self.waits))
        close_summary(st_["latency_ms"], summary(self.latencies))
        close_summary(st_["batch_size"], summary(self.batch_sizes))
        assert (st_["clock_went_back"] >= 1) if self.back_seen else (st_["clock_went_back"] == 0)
        slo = self.c["slo_requests"]
        assert st_["slo_attainment"] == (1.0 if slo == 0 else self.c["slo_met"] / slo)
        elapsed = self.last_completion - self.first_submit if self.c["completed"] else 0.0
        assert math.isclose(st_["elapsed_s"], elapsed, abs_tol=1e-9)
        if self.c["completed"] and elapsed > 0:
            assert math.isclose(st_["throughput_rps"], self.c["completed"] / elapsed, rel_tol=1e-9)
            assert math.isclose(st_["throughput_tokens_per_s"], self.completed_tokens / elapsed, rel_tol=1e-9)
        else:
            assert st_["throughput_rps"] == 0.0 and st_["throughput_tokens_per_s"] == 0.0


TestSchedulerStateful = SchedulerMachine.TestCase
TestSchedulerStateful.settings = stateful_settings(max_examples=150, steps=50)
