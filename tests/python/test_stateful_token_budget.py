"""TokenBudget against a dict model: a Hypothesis state machine (docs/python-api.md, docs/scheduling.md).

A refusal (MemoryError from reserve / commit, (False, resource) from try_reserve) changes nothing
but the refusal count of the refusing resource; a refusal by the context window is counted as a
"context" refusal (the docs name no counter for it; this is the reading the stats allow).
"""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from stateful_helpers import assert_same, fresh_id, refused, stateful_settings

from llmds.token_budget import TokenBudget

RESOURCES = ("kv_cache", "prompt", "context")
KEYS = st.integers(min_value=0, max_value=8) | st.sampled_from([-(2**63), 2**63 - 1])
AMOUNT = st.integers(min_value=0, max_value=30)
LIMIT = st.none() | st.integers(min_value=0, max_value=60)


class TokenBudgetMachine(RuleBasedStateMachine):
    @initialize(kv=LIMIT, prompt=LIMIT, context=LIMIT, window=st.none() | st.integers(min_value=1, max_value=25))
    def init(self, kv, prompt, context, window):
        self.budget = TokenBudget(kv_cache_limit=kv, prompt_limit=prompt, context_limit=context, context_window=window)
        self.limit = {"kv_cache": kv, "prompt": prompt, "context": context}
        self.window = window
        self.hold: dict[int, tuple[dict, bool]] = {}  # key -> (amounts, committed)
        self.peak = dict.fromkeys(RESOURCES, 0)
        self.refusals = dict.fromkeys(RESOURCES, 0)

    # --- the model -------------------------------------------------------------------------
    def used(self, r, committed=None):
        return sum(a[r] for a, c in self.hold.values() if committed is None or c == committed)

    def available(self, r):
        return None if self.limit[r] is None else self.limit[r] - self.used(r)

    def refusal(self, wanted, current):
        """The first limit broken: the context window, then kv_cache, prompt, context."""
        if self.window is not None and wanted["context"] > self.window:
            return "context_window"
        for r in RESOURCES:
            extra, free = wanted[r] - current[r], self.available(r)
            if free is not None and extra > 0 and extra > free:
                return r
        return None

    def note_refusal(self, name):
        self.refusals["context" if name == "context_window" else name] += 1

    def update_peaks(self):
        for r in RESOURCES:
            self.peak[r] = max(self.peak[r], self.used(r))

    def snapshot(self, with_refusals=True):
        b = self.budget
        stats = b.stats()
        if not with_refusals:
            for r in RESOURCES:
                del stats[r]["refusals"]
        keys = sorted(set(self.hold) | set(range(9)))
        return (
            len(b),
            stats,
            [b.available(r) for r in RESOURCES],
            [k in b for k in keys],
            {k: (b.holding(k), b.is_committed(k)) for k in sorted(self.hold)},
        )

    def refused_over_budget(self, name, fn, *args, **kwargs):
        """A refusal: MemoryError, nothing changes but the refusal count."""
        before = self.snapshot(with_refusals=False)
        refused(lambda: self.snapshot(with_refusals=False), MemoryError, fn, *args, **kwargs)
        assert_same(before, self.snapshot(with_refusals=False), "a refused call")
        self.note_refusal(name)

    # --- valid operations ------------------------------------------------------------------
    @rule(key=KEYS, kv=AMOUNT, prompt=AMOUNT, context=AMOUNT, use_try=st.booleans())
    def reserve(self, key, kv, prompt, context, use_try):
        wanted = {"kv_cache": kv, "prompt": prompt, "context": context}
        fn = self.budget.try_reserve if use_try else self.budget.reserve
        if key in self.hold:
            # a key that already holds a reservation: ValueError. If the amounts do not fit either,
            # both documented conditions hold, and the refusal may win instead.
            name = self.refusal(wanted, dict.fromkeys(RESOURCES, 0))
            before = self.snapshot(with_refusals=False)
            try:
                result = fn(key, kv, prompt, context)
            except ValueError:
                pass
            except MemoryError:
                assert name is not None and not use_try
                self.note_refusal(name)
            else:
                assert name is not None and use_try and result == (False, name), result
                self.note_refusal(name)
            assert_same(before, self.snapshot(with_refusals=False), "reserve of a held key")
            return
        name = self.refusal(wanted, dict.fromkeys(RESOURCES, 0))
        if name is not None:
            if use_try:
                before = self.snapshot(with_refusals=False)
                assert self.budget.try_reserve(key, kv, prompt, context) == (False, name)
                assert_same(before, self.snapshot(with_refusals=False), "a refused try_reserve")
                self.note_refusal(name)
            else:
                self.refused_over_budget(name, self.budget.reserve, key, kv, prompt, context)
            return
        result = fn(key, kv_cache=kv, prompt=prompt, context=context)
        assert result == ((True, "ok") if use_try else None)
        self.hold[key] = (wanted, False)
        self.update_peaks()

    @rule(key=KEYS, kv=AMOUNT, prompt=AMOUNT, context=AMOUNT, use_try=st.booleans())
    def reserve_again(self, key, kv, prompt, context, use_try):  # makes reserve twice as frequent
        self.reserve(key, kv, prompt, context, use_try)

    @precondition(lambda self: self.hold)
    @rule(data=st.data(), kv=st.none() | AMOUNT, prompt=st.none() | AMOUNT, context=st.none() | AMOUNT)
    def commit(self, data, kv, prompt, context):
        key = data.draw(st.sampled_from(sorted(self.hold)))
        current, _ = self.hold[key]
        given = {"kv_cache": kv, "prompt": prompt, "context": context}
        wanted = {r: current[r] if given[r] is None else given[r] for r in RESOURCES}  # omitted: keeps its amount
        kwargs = {r: v for r, v in given.items() if v is not None}
        name = self.refusal(wanted, current)
        if name is not None:
            self.refused_over_budget(name, self.budget.commit, key, **kwargs)
            return
        assert self.budget.commit(key, **kwargs) is None
        self.hold[key] = (wanted, True)
        self.update_peaks()

    @precondition(lambda self: self.hold)
    @rule(data=st.data())
    def release(self, data):
        key = data.draw(st.sampled_from(sorted(self.hold)))
        amounts, _ = self.hold.pop(key)
        assert self.budget.release(key) == amounts

    @rule(key=KEYS)
    def read(self, key):
        if key in self.hold:
            amounts, committed = self.hold[key]
            assert self.budget.holding(key) == amounts and self.budget.is_committed(key) is committed
        else:
            for op in (self.budget.holding, self.budget.is_committed, self.budget.release):
                refused(self.snapshot, KeyError, op, key)

    # --- invalid operations ----------------------------------------------------------------
    @rule(data=st.data())
    def invalid_operation(self, data):
        name = data.draw(
            st.sampled_from(["negative", "unknown_commit", "resource_name", "constructor"]), label="invalid operation"
        )
        getattr(self, "bad_" + name)(data)

    def bad_negative(self, data):
        amounts = dict(zip(RESOURCES, data.draw(st.tuples(AMOUNT, AMOUNT, AMOUNT))))
        amounts[data.draw(st.sampled_from(RESOURCES))] = data.draw(st.integers(-5, -1))
        key = fresh_id(data, KEYS, self.hold)
        refused(self.snapshot, ValueError, self.budget.reserve, key, **amounts)
        refused(self.snapshot, ValueError, self.budget.try_reserve, key, **amounts)
        if self.hold:
            refused(
                self.snapshot, ValueError, self.budget.commit, data.draw(st.sampled_from(sorted(self.hold))), **amounts
            )

    def bad_unknown_commit(self, data):
        key = fresh_id(data, KEYS, self.hold)
        refused(self.snapshot, KeyError, self.budget.commit, key, kv_cache=1)

    def bad_resource_name(self, data):
        for name in ("kv", "KV_CACHE", "", "context_window", "prompts"):
            refused(self.snapshot, ValueError, self.budget.available, name)

    def bad_constructor(self, data):
        for bad in (
            dict(kv_cache_limit=-1),
            dict(prompt_limit=-5),
            dict(context_limit=-1),
            dict(context_window=0),
            dict(context_window=-3),
        ):
            refused(self.snapshot, ValueError, TokenBudget, **bad)
        refused(
            self.snapshot, TypeError, lambda: TokenBudget.__new__(TokenBudget).reserve(1, kv_cache=1)
        )  # docs/reliability.md: __init__ never ran

    # --- invariants ------------------------------------------------------------------------
    @invariant()
    def agrees_with_model(self):
        b = self.budget
        assert len(b) == len(self.hold)
        for k in range(9):
            assert (k in b) == (k in self.hold)
        s = b.stats()
        for r in RESOURCES:
            reserved, committed = self.used(r, False), self.used(r, True)
            assert s[r] == {
                "limit": self.limit[r],
                "reserved": reserved,
                "committed": committed,
                "available": self.available(r),
                "peak": self.peak[r],
                "refusals": self.refusals[r],
            }, (r, s[r])
            assert b.available(r) == self.available(r)
            if self.limit[r] is not None:
                assert reserved + committed <= self.limit[r]
        assert s["reservations"] == len(self.hold)
        assert s["committed_reservations"] == sum(c for _, c in self.hold.values())
        if self.window is not None:
            assert all(a["context"] <= self.window for a, _ in self.hold.values())


TestTokenBudgetStateful = TokenBudgetMachine.TestCase
TestTokenBudgetStateful.settings = stateful_settings(max_examples=150, steps=50)
