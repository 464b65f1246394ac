"""TokenLRU against an OrderedDict model: a Hypothesis state machine (docs/python-api.md, docs/core.md)."""

from __future__ import annotations

from collections import OrderedDict

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from stateful_helpers import refused, stateful_settings

from llmds.token_lru import TokenLRU

# 2.0 and True are equal to the keys 2 and 1 (Python's ==, equal hashes): the same entry.
KEYS = st.integers(min_value=0, max_value=9) | st.sampled_from(["a", "b", ("t", 1), b"k", None, 2.0, True])


class Value:
    """A value whose cost is chosen by the test (token_of reads it); compares by identity."""

    def __init__(self, cost):
        self.cost = cost

    def __repr__(self):
        return f"Value({self.cost!r})"


class Raising:
    """A cost whose computation raises ZeroDivisionError."""


class Reentrant:
    """A cost whose computation calls the cache it is being put into."""

    def __init__(self, lru, op):
        self.lru, self.op = lru, op

    def __call__(self):
        {
            "get": lambda: self.lru.get("a"),
            "peek": lambda: self.lru.peek(0),
            "put": lambda: self.lru.put("z", [1]),
            "keys": self.lru.keys,
            "evict_until_budget": lambda: self.lru.evict_until_budget(0),
        }[self.op]()
        return 1


class CollidingKey:
    """Hashes like the key 0; its __eq__ changes the cache (get moves recency, counts a lookup).
    (A nested read-only call, peek inside peek, is let through by the binding: not tested.)"""

    def __init__(self, lru):
        self.lru = lru

    def __hash__(self):
        return hash(0)

    def __eq__(self, other):
        self.lru.get("a")
        return False


def cost_of(value):
    if isinstance(value, Value) and isinstance(value.cost, Raising):
        return 1 // 0
    if isinstance(value, Value) and isinstance(value.cost, Reentrant):
        return value.cost()
    return value.cost if isinstance(value, Value) else len(value)


class TokenLRUMachine(RuleBasedStateMachine):
    @initialize(max_tokens=st.none() | st.integers(min_value=0, max_value=12), custom=st.booleans())
    def init(self, max_tokens, custom):
        # custom: token_of reads Value.cost (so costs can be negative, 0, or not an int);
        # otherwise the default, len.
        self.custom = custom
        self.lru = TokenLRU(token_of=cost_of, max_tokens=max_tokens) if custom else TokenLRU(max_tokens=max_tokens)
        self.max_tokens = max_tokens
        self.model: OrderedDict = OrderedDict()  # key -> (value, cost), least recent first
        self.hits = self.misses = self.evictions = 0

    def total(self):
        return sum(cost for _, cost in self.model.values())

    def snapshot(self):
        # peek() and keys() do not touch recency; stats() counts nothing.
        return (
            len(self.lru),
            self.lru.keys(),
            {repr(k): self.lru.peek(k) for k in self.lru.keys()},
            self.lru.total_tokens(),
            self.lru.stats(),
        )

    def value(self, cost):
        return Value(cost) if self.custom else list(range(cost))

    # --- valid operations ------------------------------------------------------------------
    @rule(key=KEYS, cost=st.integers(min_value=0, max_value=14))
    def put(self, key, cost):
        value = self.value(cost)
        if self.max_tokens is not None and cost > self.max_tokens:
            refused(self.snapshot, ValueError, self.lru.put, key, value)
            return
        assert self.lru.put(key, value) is None
        self.model.pop(key, None)
        self.model[key] = (value, cost)
        if self.max_tokens is not None:
            while self.total() > self.max_tokens:
                self.model.popitem(last=False)
                self.evictions += 1

    @rule(key=KEYS)
    def get(self, key):
        got = self.lru.get(key)
        if key in self.model:
            assert got is self.model[key][0] or got == self.model[key][0]
            self.model.move_to_end(key)
            self.hits += 1
        else:
            assert got is None
            self.misses += 1

    @rule(key=KEYS)
    def peek(self, key):
        got = self.lru.peek(key)
        expected = self.model[key][0] if key in self.model else None
        assert got is expected or got == expected

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def delete(self, data):
        key = data.draw(st.sampled_from(list(self.model)))
        value, _ = self.model.pop(key)
        got = self.lru.delete(key)
        assert got is value or got == value

    @rule(budget=st.integers(min_value=0, max_value=15))
    def evict_until_budget(self, budget):
        expected = []
        while self.total() > budget:
            key, (value, _) = self.model.popitem(last=False)
            expected.append((key, value))
        self.evictions += len(expected)
        got = self.lru.evict_until_budget(budget)
        assert [k for k, _ in got] == [k for k, _ in expected]
        assert all(g is e or g == e for (_, g), (_, e) in zip(got, expected))

    @rule()
    def clear(self):
        self.lru.clear()
        self.model.clear()  # hits, misses and evictions stay (docs/core.md)

    # --- invalid operations ----------------------------------------------------------------
    @precondition(lambda self: self.custom)
    @rule(key=KEYS, cost=st.integers(min_value=-5, max_value=-1))
    def put_negative_cost(self, key, cost):
        refused(self.snapshot, ValueError, self.lru.put, key, Value(cost))

    @precondition(lambda self: self.custom)
    @rule(key=KEYS)
    def put_cost_not_int(self, key):
        for cost in (1.5, "3", None, 2.0, [1]):
            refused(self.snapshot, TypeError, self.lru.put, key, Value(cost))

    @precondition(lambda self: self.custom and self.max_tokens is None)
    @rule(key=KEYS, cost=st.sampled_from([2**62, 2**63 - 1, 2**63, 2**64 - 1]))
    def put_huge_cost(self, key, cost):
        """docs/core.md: a total past 2^64 - 1 is OverflowError; the only documented limits on one
        value are "negative" and "above max_tokens" (unbounded here), so below that total a put
        of any non-negative int cost is valid."""
        if key in self.model:
            return
        value = Value(cost)
        if self.total() + cost > 2**64 - 1:
            refused(self.snapshot, OverflowError, self.lru.put, key, value)
        else:
            self.lru.put(key, value)
            self.model[key] = (value, cost)

    @precondition(lambda self: self.custom)
    @rule(key=KEYS)
    def token_of_raises(self, key):
        """An exception from token_of propagates, and put has changed nothing (it counts first)."""
        refused(self.snapshot, ZeroDivisionError, self.lru.put, key, Value(Raising()))

    @precondition(lambda self: self.custom)
    @rule(key=KEYS)
    def token_of_uses_the_cache(self, key):
        """Code the cache calls must not use the same cache: RuntimeError, the cache as it was."""
        for op in ("get", "peek", "put", "keys", "evict_until_budget"):
            refused(self.snapshot, RuntimeError, self.lru.put, key, Value(Reentrant(self.lru, op)))

    @precondition(lambda self: 0 in self.model)
    @rule()
    def key_eq_uses_the_cache(self):
        """A key whose __eq__ (called against the key 0, same hash) uses the cache: RuntimeError."""
        key = CollidingKey(self.lru)
        refused(self.snapshot, RuntimeError, self.lru.__contains__, key)
        for op in ("get", "peek", "put", "delete"):
            args = (key, self.value(1)) if op == "put" else (key,)
            refused(self.snapshot, RuntimeError, getattr(self.lru, op), *args)

    @rule(key=st.sampled_from([[1], {"a": 1}, {2}]))
    def unhashable_key(self, key):
        for op in ("put", "get", "peek", "delete"):
            args = (key, self.value(1)) if op == "put" else (key,)
            refused(self.snapshot, TypeError, getattr(self.lru, op), *args)

    @rule(key=KEYS)
    def delete_absent(self, key):
        if key not in self.model:
            refused(self.snapshot, KeyError, self.lru.delete, key)

    @rule(budget=st.integers(min_value=-3, max_value=-1))
    def evict_negative_budget(self, budget):
        refused(self.snapshot, ValueError, self.lru.evict_until_budget, budget)

    @rule()
    def bad_constructor(self):
        refused(self.snapshot, ValueError, TokenLRU, max_tokens=-1)
        refused(self.snapshot, TypeError, TokenLRU, token_of=5)
        refused(self.snapshot, TypeError, TokenLRU, token_of="len")
        refused(
            self.snapshot, TypeError, lambda: TokenLRU.__new__(TokenLRU).put("a", [1])
        )  # docs/reliability.md: __init__ never ran

    # --- invariants ------------------------------------------------------------------------
    @invariant()
    def agrees_with_model(self):
        assert self.lru.keys() == list(self.model)
        assert len(self.lru) == len(self.model)
        assert self.lru.total_tokens() == self.total()
        if self.max_tokens is not None:
            assert self.lru.total_tokens() <= self.max_tokens
        assert self.lru.max_tokens == self.max_tokens
        for key in (0, "a", None):
            assert (key in self.lru) == (key in self.model)
        lookups = self.hits + self.misses
        assert self.lru.stats() == {
            "size": len(self.model),
            "total_tokens": self.total(),
            "max_tokens": self.max_tokens,
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": self.hits / lookups if lookups else 0.0,
            "evictions": self.evictions,
        }


TestTokenLRUStateful = TokenLRUMachine.TestCase
TestTokenLRUStateful.settings = stateful_settings(max_examples=150, steps=50)
