"""BlockPool and KVCache against plain-Python models: Hypothesis state machines
(docs/python-api.md, docs/kv-cache.md)."""

from __future__ import annotations

import hashlib
import struct

import numpy as np
from hypothesis import event, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from stateful_helpers import refused, stateful_settings

import llmds.kv_cache as kv_cache
BlockPool, KVCache = kv_cache.BlockPool, kv_cache.KVCache

HASHES = st.integers(min_value=0, max_value=6) | st.sampled_from([-(2**63), 2**63 - 1, -1])


def cached_run(hashes, registry):
    """The blocks of the longest leading run of `hashes` that `registry` (hash -> block) holds:
    what a prefix lookup returns."""
    run = []
    for h in hashes:
        if h not in registry:
            break
        run.append(registry[h])
    return run


# ============================================================================================
# BlockPool
# ============================================================================================


class BlockPoolMachine(RuleBasedStateMachine):
    """Model: refcounts, the registry (hash <-> block), the cached list (least recently released
    first) and the eviction count. Each block is free, in use (refcount >= 1) or cached
    (refcount 0 and registered)."""

    @initialize(num_blocks=st.integers(min_value=1, max_value=10))
    def init(self, num_blocks):
        self.pool = BlockPool(num_blocks)
        self.n = num_blocks
        assert self.pool.num_blocks == num_blocks
        self.ref = [0] * num_blocks
        self.key: dict[int, int] = {}  # block -> hash
        self.cached: list[int] = []  # eviction order, next victim first
        self.evictions = 0

    # --- the model -------------------------------------------------------------------------
    def registry(self):
        return {h: b for b, h in self.key.items()}

    def free(self):
        return [b for b in range(self.n) if self.ref[b] == 0 and b not in self.key]

    def in_use(self):
        return [b for b in range(self.n) if self.ref[b] > 0]

    def snapshot(self):
        p = self.pool
        return (
            p.stats(),
            p.eviction_order(),
            [p.refcount(b) for b in range(self.n)],
            [p.is_free(b) for b in range(self.n)],
            [p.is_cached(b) for b in range(self.n)],
            {h: p.find(h) for h in list(range(-1, 7)) + [-(2**63), 2**63 - 1]},
        )

    # --- valid operations ------------------------------------------------------------------
    @rule(data=st.data())
    def allocate(self, data):
        free, cached = self.free(), list(self.cached)
        n = data.draw(st.integers(min_value=0, max_value=len(free) + len(cached)))
        got = self.pool.allocate(n)
        assert len(got) == n == len(set(got))
        from_free = min(n, len(free))
        victims = cached[: n - from_free]  # free blocks first, then the least recently released
        assert set(got) - set(victims) <= set(free) and set(victims) <= set(got)
        for b in victims:
            del self.key[b]
            self.cached.remove(b)
        self.evictions += len(victims)
        for b in got:
            self.ref[b] = 1

    @precondition(lambda self: any(self.ref))
    @rule(data=st.data(), h=HASHES)
    def register(self, data, h):
        b = data.draw(st.sampled_from(self.in_use()))
        holder = self.registry().get(h)
        if b in self.key and self.key[b] != h:
            # already registered under another key: ValueError (or False if the hash is taken too)
            before = self.snapshot()
            try:
                result = self.pool.register(b, h)
            except ValueError:
                result = None
            assert result in (None, False) and self.snapshot() == before
        elif holder is not None and holder != b:
            assert self.pool.register(b, h) is False
        else:
            assert self.pool.register(b, h) is True
            self.key[b] = h

    @rule(data=st.data())
    def touch(self, data):
        candidates = self.in_use() + self.cached
        if not candidates:
            return
        ids = data.draw(st.lists(st.sampled_from(candidates), min_size=1, max_size=4))
        self.pool.touch(ids)
        for b in ids:
            if b in self.cached:
                self.cached.remove(b)
            self.ref[b] += 1

    @precondition(lambda self: any(self.ref))
    @rule(data=st.data())
    def release(self, data):
        held = [b for b in range(self.n) for _ in range(self.ref[b])]  # each reference once
        ids = data.draw(st.lists(st.sampled_from(held), min_size=1, max_size=len(held)))
        counts = {b: ids.count(b) for b in ids}
        if any(c > self.ref[b] for b, c in counts.items()):
            refused(self.snapshot, ValueError, self.pool.release, ids)  # more often than held
            return
        self.pool.release(ids)
        for b in ids:
            self.ref[b] -= 1
            if self.ref[b] == 0 and b in self.key:
                self.cached.append(b)

    @rule(hashes=st.lists(HASHES, max_size=5))
    def lookup(self, hashes):
        expected = cached_run(hashes, self.registry())
        before = self.snapshot()
        assert self.pool.lookup(hashes) == expected
        assert self.snapshot() == before  # changes nothing

    @rule(h=HASHES)
    def find(self, h):
        assert self.pool.find(h) == self.registry().get(h)

    @rule()
    def defragment(self):
        live = [b for b in range(self.n) if self.ref[b] > 0 or b in self.key]
        moves = self.pool.defragment()
        assert set(moves) <= set(live) and all(old != new for old, new in moves.items())
        mapping = {b: moves.get(b, b) for b in range(self.n)}
        assert sorted(mapping[b] for b in live) == list(range(len(live)))  # packed at the lowest ids
        ref = [0] * self.n
        for b in live:
            ref[mapping[b]] = self.ref[b]
        self.ref = ref
        self.key = {mapping[b]: h for b, h in self.key.items()}
        self.cached = [mapping[b] for b in self.cached]

    # --- invalid operations ----------------------------------------------------------------
    @rule(extra=st.integers(min_value=1, max_value=3))
    def allocate_too_many(self, extra):
        refused(self.snapshot, MemoryError, self.pool.allocate, len(self.free()) + len(self.cached) + extra)

    @rule(data=st.data(), bad=st.sampled_from(["free", "out_of_range"]))
    def touch_bad(self, data, bad):
        good = (
            data.draw(st.lists(st.sampled_from(self.in_use() + self.cached), max_size=3))
            if self.in_use() + self.cached
            else []
        )
        if bad == "free":
            if not self.free():
                return
            wrong, expected = data.draw(st.sampled_from(self.free())), ValueError
        else:
            wrong, expected = data.draw(st.sampled_from([-1, self.n, self.n + 5])), IndexError
        at = data.draw(st.integers(0, len(good)))
        refused(self.snapshot, expected, self.pool.touch, good[:at] + [wrong] + good[at:])

    @rule(data=st.data(), bad=st.sampled_from(["free", "cached", "out_of_range"]))
    def release_bad(self, data, bad):
        held = [b for b in range(self.n) for _ in range(self.ref[b])]
        good = data.draw(st.lists(st.sampled_from(held), max_size=len(held), unique=True)) if held else []
        pool = {"free": self.free(), "cached": self.cached, "out_of_range": [-1, self.n, self.n + 3]}[bad]
        if not pool:
            return
        wrong = data.draw(st.sampled_from(pool))
        at = data.draw(st.integers(0, len(good)))
        refused(self.snapshot, ValueError, self.pool.release, good[:at] + [wrong] + good[at:])

    @rule(data=st.data(), h=HASHES)
    def register_not_in_use(self, data, h):
        idle = self.free() + self.cached
        if not idle:
            return
        refused(self.snapshot, ValueError, self.pool.register, data.draw(st.sampled_from(idle)), h)

    @rule(h=HASHES)
    def out_of_range(self, h):
        for b in (-1, -5, self.n, self.n + 1, 100):
            refused(self.snapshot, IndexError, self.pool.register, b, h)
            for op in ("refcount", "is_free", "is_cached"):
                refused(self.snapshot, IndexError, getattr(self.pool, op), b)

    @rule()
    def bad_constructor(self):
        for n in (0, -1, -3):
            refused(self.snapshot, ValueError, BlockPool, n)
        refused(
            self.snapshot, TypeError, lambda: BlockPool.__new__(BlockPool).allocate(1)
        )  # docs/reliability.md: __init__ never ran

    # --- invariants ------------------------------------------------------------------------
    @invariant()
    def agrees_with_model(self):
        p = self.pool
        assert p.eviction_order() == self.cached
        assert [p.refcount(b) for b in range(self.n)] == self.ref
        free = set(self.free())
        assert [p.is_free(b) for b in range(self.n)] == [b in free for b in range(self.n)]
        assert [p.is_cached(b) for b in range(self.n)] == [b in self.cached for b in range(self.n)]
        for b in self.cached:
            assert self.ref[b] == 0 and b in self.key
        for h, b in self.registry().items():
            assert p.find(h) == b
        assert p.stats() == {
            "num_blocks": self.n,
            "free_blocks": len(free),
            "cached_blocks": len(self.cached),
            "in_use_blocks": len(self.in_use()),
            "shared_blocks": sum(r >= 2 for r in self.ref),
            "total_refs": sum(self.ref),
            "registered_blocks": len(self.key),
            "evictions": self.evictions,
        }


TestBlockPoolStateful = BlockPoolMachine.TestCase
TestBlockPoolStateful.settings = stateful_settings(max_examples=150, steps=50)


# ============================================================================================
# KVCache
# ============================================================================================

ROOT = hashlib.sha256(b"llmds.kv.block_hash.v1").digest()
# Prompts that start alike, so that prefixes are shared; tails are drawn at random.
BASES = [list(range(100, 140)), list(range(200, 240)), [7] * 40]
SALTS = st.sampled_from([None] * 8 + ["", "a", b"a", "t\u00e9", b"t\xc3\xa9", b"\x00"])
TOKENS = st.integers(min_value=0, max_value=50) | st.sampled_from([-(2**31), 2**31 - 1])

# The arguments of attach (and of its alias attach_again).
ATTACH_ARGS = dict(
    fresh=st.integers(min_value=0, max_value=7),
    base=st.sampled_from([0, 0, 0, 1, 2]),
    shared=st.sampled_from([0, 1, 2, 2, 3, 3]),
    tail=st.lists(TOKENS, max_size=3),
    data=st.data(),
    salt=SALTS,
    kind=st.sampled_from(["2d", "f32", "list", "1d"]),
    prefix_kind=st.sampled_from(["list", "int32", "int64", "none"]),
)


def salt_bytes(salt) -> bytes:
    return b"" if salt is None else salt.encode() if isinstance(salt, str) else bytes(salt)


def chain(tokens, page_size, salt) -> list[bytes]:
    """docs/kv-cache.md "Block hashes": h_0 = SHA-256(root || page 0 || salt), h_i = SHA-256(h_{i-1} || page i)."""
    out, prev = [], ROOT
    for i in range(len(tokens) // page_size):
        data = prev + struct.pack(f"<{page_size}i", *tokens[i * page_size : (i + 1) * page_size])
        s = salt_bytes(salt)
        if i == 0 and s:
            data += struct.pack("<Q", len(s)) + s
        prev = hashlib.sha256(data).digest()
        out.append(prev)
    return out


def rows(tokens, width) -> np.ndarray:
    """KV entries that depend only on the tokens so far (the caller's contract for sharing);
    multiples of 1/8 below 125, exact in float16 too."""
    out = np.empty((len(tokens), width), dtype=np.float64)
    h = 17
    for i, t in enumerate(tokens):
        h = (h * 31 + t) % 1_000_003
        out[i] = [((h >> j) % 1000) / 8 for j in range(width)]
    return out


class KVCacheMachine(RuleBasedStateMachine):
    """Model: per sequence its tokens and block table; per page its registration (hash) and the
    cached list (least recently released first); counters. New page ids are read from the block
    table after each call and checked against the free pages and the predicted eviction victims."""

    @initialize(
        page_size=st.sampled_from([1, 2, 4]),
        max_pages=st.integers(min_value=4, max_value=12),
        width=st.integers(min_value=1, max_value=3),
        dtype=st.sampled_from(["float32", "float16"]),
        sharing=st.sampled_from([True, True, False]),
    )
    def init(self, page_size, max_pages, width, dtype, sharing):
        self.kv = KVCache(
            page_size=page_size, max_pages=max_pages, enable_prefix_sharing=sharing, entry_width=width, dtype=dtype
        )
        assert (
            self.kv.page_size,
            self.kv.max_pages,
            self.kv.entry_width,
            self.kv.dtype,
            self.kv.enable_prefix_sharing,
        ) == (page_size, max_pages, width, dtype, sharing)
        self.ps, self.maxp, self.w, self.dtype, self.sharing = page_size, max_pages, width, dtype, sharing
        self.tokens: dict[int, list[int]] = {}
        self.table: dict[int, list[int]] = {}
        self.key: dict[int, bytes] = {}  # page -> hash
        self.cached: list[int] = []
        self.known_hashes: set[bytes] = set()
        self.evictions = self.cow = self.lookups = self.hits = 0

    # --- the model -------------------------------------------------------------------------
    def ref(self):
        r = [0] * self.maxp
        for t in self.table.values():
            for p in t:
                r[p] += 1
        return r

    def registry(self):
        return {h: p for p, h in self.key.items()}

    def free_pages(self):
        r = self.ref()
        return [p for p in range(self.maxp) if r[p] == 0 and p not in self.key]

    def pages_for(self, n):
        return -(-n // self.ps)

    def expected_rows(self, seq):
        return rows(self.tokens[seq], self.w).astype(np.float16 if self.dtype == "float16" else np.float32)

    def snapshot(self):
        kv = self.kv
        live = set(p for t in self.table.values() for p in t) | set(self.cached)
        return (
            len(kv),
            kv.stats(),
            {s: (kv.block_table(s), kv.num_tokens(s), kv.get(s), s in kv) for s in sorted(self.table)},
            {h.hex(): kv.lookup([h]) for h in sorted(self.known_hashes)},
            {p: kv.page(p).copy() for p in sorted(live)},
        )

    def allocate(self, need, exclude=()):
        """Pages a call may take: (free pages, the eviction victims it must take)."""
        free = self.free_pages()
        victims = [p for p in self.cached if p not in exclude][: max(0, need - len(free))]
        return free, victims

    def take(self, new_pages, free, victims):
        assert len(set(new_pages)) == len(new_pages)
        assert set(new_pages) <= set(free) | set(victims), (new_pages, free, victims)
        assert set(victims) <= set(new_pages)
        for p in victims:
            self.cached.remove(p)
            del self.key[p]
        self.evictions += len(victims)

    def data(self, seq_tokens, kind):
        d = rows(seq_tokens, self.w)
        if kind == "list" and self.w == 1:
            return d[:, 0].tolist()
        if kind == "1d" and self.w == 1:
            return d[:, 0]
        if kind == "f32":
            return d.astype(np.float32)
        return d

    # --- valid operations ------------------------------------------------------------------
    @rule(**ATTACH_ARGS)
    def attach(self, fresh, base, shared, tail, data, salt, kind, prefix_kind):
        # mostly a new id; now and then one that is attached already (ValueError)
        unused = [s for s in range(8) if s not in self.table]
        seq = unused[fresh % len(unused)] if unused and fresh else data.draw(st.integers(0, 7))
        tokens = BASES[base][: shared * self.ps] + tail  # `shared` whole pages of a common prompt
        n = len(tokens)
        p_len = data.draw(st.just(n) | st.integers(min_value=0, max_value=n))
        prefix = tokens[:p_len] if prefix_kind != "none" else []
        prefix_arg = (
            None if prefix_kind == "none" else prefix if prefix_kind == "list" else np.array(prefix, dtype=prefix_kind)
        )
        kv_arg = self.data(tokens, kind)
        if seq in self.table:
            refused(self.snapshot, ValueError, self.kv.attach, seq, kv_arg, prefix_arg, salt)
            return
        hashes = chain(prefix, self.ps, salt) if self.sharing else []
        self.known_hashes |= set(hashes)
        hit_pages = cached_run(hashes, self.registry())
        need = self.pages_for(n) - len(hit_pages)
        free, victims = self.allocate(need, exclude=hit_pages)
        if need > len(free) + len([p for p in self.cached if p not in hit_pages]):
            refused(self.snapshot, MemoryError, self.kv.attach, seq, kv_arg, prefix_arg, salt)
            event("attach: out of pages")
            return
        self.kv.attach(seq, kv_arg, prefix_arg, salt)
        table = self.kv.block_table(seq).tolist()
        assert table[: len(hit_pages)] == hit_pages, (table, hit_pages)
        assert len(table) == self.pages_for(n)
        for p in hit_pages:
            if p in self.cached:
                self.cached.remove(p)
        self.take(table[len(hit_pages) :], free, victims)
        self.tokens[seq], self.table[seq] = tokens, table
        reg = self.registry()
        for i in range(len(hit_pages), len(hashes)):
            if hashes[i] not in reg:
                self.key[table[i]] = hashes[i]
        if self.sharing:
            self.lookups += len(hashes)
            self.hits += len(hit_pages)
        event(f"attach: {'hit' if hit_pages else 'miss'}")
        event(f"attach: {'evicts' if victims else 'no eviction'}")

    # Hypothesis picks rules uniformly: these aliases make attach, append and detach more frequent.
    @rule(**ATTACH_ARGS)
    def attach_again(self, **kw):
        self.attach(**kw)

    @precondition(lambda self: self.table)
    @rule(
        data=st.data(), new=st.lists(TOKENS, min_size=0, max_size=5), kind=st.sampled_from(["2d", "f32", "list", "1d"])
    )
    def append(self, data, new, kind):
        seq = data.draw(st.sampled_from(sorted(self.table)))
        tokens = self.tokens[seq] + new
        kv_arg = self.data(tokens, kind)[len(self.tokens[seq]) :]
        if kind == "list" and self.w == 1:
            kv_arg = list(kv_arg)
        n, table, ref = len(self.tokens[seq]), self.table[seq], self.ref()
        cow = bool(new) and n % self.ps != 0 and ref[table[-1]] > 1
        need = self.pages_for(n + len(new)) - self.pages_for(n) + cow
        free, victims = self.allocate(need)
        if need > len(free) + len(self.cached):
            refused(self.snapshot, MemoryError, self.kv.append, seq, kv_arg)
            return
        self.kv.append(seq, kv_arg)
        got = self.kv.block_table(seq).tolist()
        keep = len(table) - cow
        assert got[:keep] == table[:keep], (got, table, cow)
        self.take(got[keep:], free, victims)
        self.cow += cow
        event(f"append: {'copy-on-write' if cow else 'no copy'}, {'evicts' if victims else 'no eviction'}")
        self.tokens[seq], self.table[seq] = tokens, got

    @precondition(lambda self: self.table)
    @rule(
        data=st.data(), new=st.lists(TOKENS, min_size=0, max_size=5), kind=st.sampled_from(["2d", "f32", "list", "1d"])
    )
    def append_again(self, **kw):
        self.append(**kw)

    @precondition(lambda self: self.table)
    @rule(data=st.data(), dst=st.integers(min_value=0, max_value=9))
    def fork(self, data, dst):
        src = data.draw(st.sampled_from(sorted(self.table)))
        if dst in self.table:
            refused(self.snapshot, ValueError, self.kv.fork, src, dst)
            return
        self.kv.fork(src, dst)
        self.tokens[dst], self.table[dst] = list(self.tokens[src]), list(self.table[src])

    @precondition(lambda self: self.table)
    @rule(data=st.data())
    def detach(self, data):
        seq = data.draw(st.sampled_from(sorted(self.table)))
        self.kv.detach(seq)
        table = self.table.pop(seq)
        del self.tokens[seq]
        ref = self.ref()
        for p in reversed(table):  # tail first: hashed pages nobody holds are cached, the others freed
            if ref[p] == 0 and p in self.key and p not in self.cached:
                self.cached.append(p)

    @precondition(lambda self: self.table)
    @rule(data=st.data())
    def detach_again(self, data):
        self.detach(data)

    @rule()
    def defragment(self):
        live = sorted(set(p for t in self.table.values() for p in t) | set(self.cached))
        moves = self.kv.defragment()
        assert set(moves) <= set(live) and all(o != n for o, n in moves.items())
        mapping = {p: moves.get(p, p) for p in range(self.maxp)}
        assert sorted(mapping[p] for p in live) == list(range(len(live)))
        self.table = {s: [mapping[p] for p in t] for s, t in self.table.items()}
        self.key = {mapping[p]: h for p, h in self.key.items()}
        self.cached = [mapping[p] for p in self.cached]

    @rule(base=st.sampled_from(range(len(BASES))), length=st.integers(min_value=0, max_value=12), salt=SALTS)
    def block_hashes_and_lookup(self, base, length, salt):
        tokens = BASES[base][:length]
        hashes = self.kv.block_hashes(tokens, salt)
        assert hashes == chain(tokens, self.ps, salt)
        self.known_hashes |= set(hashes)
        expected = cached_run(hashes, self.registry())
        before = self.snapshot()
        assert self.kv.lookup(hashes) == expected
        assert repr(self.snapshot()) == repr(before)  # lookup changes nothing

    # --- invalid operations: one rule, so that they do not crowd out the valid ones ---------
    @rule(data=st.data())
    def invalid_operation(self, data):
        name = data.draw(
            st.sampled_from(
                [
                    "unknown_sequence",
                    "wrong_shape",
                    "prefix_longer_than_sequence",
                    "bad_tokens_or_salt",
                    "attach_out_of_pages",
                    "append_out_of_pages",
                    "page_out_of_range",
                    "lookup_bad_hash",
                    "bad_constructor",
                ]
            ),
            label="invalid operation",
        )
        getattr(self, "bad_" + name)(data)

    # Each tries every variant of its kind of error: rare variants are not left to chance.
    def bad_unknown_sequence(self, data):
        seq = data.draw(st.integers(min_value=20, max_value=22))
        refused(self.snapshot, KeyError, self.kv.append, seq, rows([1], self.w))
        refused(self.snapshot, KeyError, self.kv.fork, seq, seq + 10)
        for op in ("detach", "num_tokens", "block_table"):
            refused(self.snapshot, KeyError, getattr(self.kv, op), seq)
        assert self.kv.get(seq) is None and seq not in self.kv

    def bad_wrong_shape(self, data):
        seq = data.draw(st.integers(min_value=0, max_value=9))
        n = data.draw(st.integers(1, 3))
        # a 0-d array (a scalar) is no (n_tokens, entry_width) nor, for entry_width 1, (n_tokens,)
        for shape in [(n, self.w + 1), (n, self.w - 1) if self.w > 1 else (n, 2), (n, self.w, 1), ()]:
            arr = np.zeros(shape)
            if seq in self.table:
                refused(self.snapshot, ValueError, self.kv.append, seq, arr)
            else:
                refused(self.snapshot, ValueError, self.kv.attach, seq, arr)

    def bad_prefix_longer_than_sequence(self, data):
        seq, n, extra = data.draw(st.integers(10, 12)), data.draw(st.integers(0, 3)), data.draw(st.integers(1, 3))
        refused(self.snapshot, ValueError, self.kv.attach, seq, rows(list(range(n)), self.w), list(range(n + extra)))

    def bad_bad_tokens_or_salt(self, data):
        seq = data.draw(st.integers(10, 12))
        kv = rows([1, 2, 3], self.w)
        refused(self.snapshot, ValueError, self.kv.attach, seq, kv, [1, 2**31, 3])
        refused(self.snapshot, ValueError, self.kv.attach, seq, kv, [-(2**31) - 1])
        refused(self.snapshot, ValueError, self.kv.attach, seq, kv, np.array([1.0, 2.0]))
        refused(self.snapshot, ValueError, self.kv.attach, seq, kv, [1, 2], 5)
        refused(self.snapshot, ValueError, self.kv.block_hashes, [1, 2**31])

    def bad_attach_out_of_pages(self, data):
        seq, extra = data.draw(st.integers(10, 12)), data.draw(st.integers(1, 3))
        n = (self.maxp + extra) * self.ps
        refused(self.snapshot, MemoryError, self.kv.attach, seq, rows(list(range(n)), self.w))

    def bad_append_out_of_pages(self, data):
        if not self.table:
            return
        seq, extra = data.draw(st.sampled_from(sorted(self.table))), data.draw(st.integers(1, 3))
        n = (self.maxp + extra) * self.ps
        refused(self.snapshot, MemoryError, self.kv.append, seq, rows(list(range(n)), self.w))

    def bad_page_out_of_range(self, data):
        for page in [-1, -100, self.maxp, self.maxp + 1, 1000]:
            refused(self.snapshot, IndexError, self.kv.page, page)

    def bad_lookup_bad_hash(self, data):
        for h in [b"", b"x" * 31, b"x" * 33]:
            refused(self.snapshot, ValueError, self.kv.lookup, [h])

    def bad_bad_constructor(self, data):
        for bad in [
            dict(page_size=0),
            dict(max_pages=0),
            dict(entry_width=0),
            dict(max_pages=2**31),
            dict(dtype="float64"),
            dict(dtype="bf16"),
        ]:
            refused(self.snapshot, ValueError, KVCache, **{"page_size": 4, "max_pages": 8, "entry_width": 2, **bad})
        refused(
            self.snapshot, TypeError, lambda: KVCache.__new__(KVCache).attach(1, [1.0])
        )  # docs/reliability.md: __init__ never ran

    # --- invariants ------------------------------------------------------------------------
    @invariant()
    def tables_and_data(self):
        kv = self.kv
        assert len(kv) == len(self.table)
        for seq, table in self.table.items():
            assert seq in kv
            assert kv.block_table(seq).dtype == np.int32
            assert kv.block_table(seq).tolist() == table
            n = len(self.tokens[seq])
            assert kv.num_tokens(seq) == n and len(table) == self.pages_for(n)
            expected = self.expected_rows(seq)
            got = kv.get(seq)
            if self.w == 1:
                assert isinstance(got, list) and got == expected[:, 0].astype(float).tolist()
            else:
                assert got.shape == (n, self.w) and np.array_equal(got, expected)
            for j, p in enumerate(table):  # the pages hold the entries (shared pages included)
                part = expected[j * self.ps : (j + 1) * self.ps]
                page = kv.page(p)
                assert page.shape == (self.ps, self.w) and not page.flags.writeable
                assert np.array_equal(page[: len(part)], part), (seq, j, p)

    @invariant()
    def registrations(self):
        for h, p in self.registry().items():
            assert self.kv.lookup([h]) == [p]
        for h in self.known_hashes - set(self.registry()):
            assert self.kv.lookup([h]) == []

    @invariant()
    def stats_agree(self):
        ref = self.ref()
        used = sum(r > 0 for r in ref)
        logical = sum(ref)
        bpp = self.ps * self.w * (2 if self.dtype == "float16" else 4)
        s = self.kv.stats()
        expected = {
            "sequences": len(self.table),
            "tokens": sum(len(t) for t in self.tokens.values()),
            "total_pages": self.maxp,
            "free_pages": len(self.free_pages()),
            "cached_pages": len(self.cached),
            "used_pages": used,
            "shared_pages": sum(r >= 2 for r in ref),
            "total_refs": logical,
            "logical_pages": logical,
            "pages_saved": logical - used,
            "bytes_per_page": bpp,
            "bytes_saved": (logical - used) * bpp,
            "prefix_lookup_pages": self.lookups,
            "prefix_hit_pages": self.hits,
            "prefix_hit_rate": self.hits / self.lookups if self.lookups else 0.0,
            "evictions": self.evictions,
            "cow_copies": self.cow,
            "refcounts": {p: r for p, r in enumerate(ref) if r > 0},
        }
        assert s == expected, {k: (s.get(k), v) for k, v in expected.items() if s.get(k) != v}


TestKVCacheStateful = KVCacheMachine.TestCase
TestKVCacheStateful.settings = stateful_settings(max_examples=150, steps=50)
