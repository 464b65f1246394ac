"""InvertedIndex against a brute-force BM25: a Hypothesis state machine (docs/python-api.md,
docs/text-search.md).

The model analyses texts as documented (maximal runs of ASCII letters and digits, lower-cased;
stop words dropped; then the Porter stemmer, llmds.inverted_index.porter_stem) and scores every
live document with the documented formula (Lucene's BM25 idf, exact lengths, N and avgdl over
documents that have at least one term).
"""

from __future__ import annotations

import math
import os
import pickle
import re
import shutil
import tempfile
from collections import Counter

import numpy as np
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from stateful_helpers import (
    fresh_id,
    fresh_ids,
    refused,
    refuses_damaged_file,
    refuses_unreadable_file,
    stateful_settings,
)

import llmds.inverted_index as inverted_index
InvertedIndex, porter_stem, ENGLISH_STOP_WORDS = (
    inverted_index.InvertedIndex,
    inverted_index.porter_stem,
    inverted_index.ENGLISH_STOP_WORDS,
)

WORDS = [
    "connect",
    "connected",
    "Connecting",
    "connections",
    "graph",
    "graphs",
    "the",
    "of",
    "and",
    "sea",
    "SEA",
    "flow",
    "flows",
    "flowing",
    "heat",
    "a",
    "x1",
    "42",
    "caf\u00e9",
    "boundary",
    "layer",
    "layers",
    "relational",
    "possibly",
    "possible",
    "is",
    "was",
    "it",
]
SEPARATORS = [" ", " ", ", ", "-", ".", "\n", "\u00e9", "  "]
TEXTS = st.lists(st.tuples(st.sampled_from(WORDS), st.sampled_from(SEPARATORS)), max_size=10).map(
    lambda parts: "".join(w + s for w, s in parts)
)
QUERIES = st.lists(st.sampled_from(WORDS), min_size=1, max_size=4).map(" ".join) | st.sampled_from(
    ["", "!!", "zzz", "the of"]
)
DOC_IDS = st.integers(min_value=0, max_value=12) | st.sampled_from([-(2**63), 2**63 - 1])
TERM_RE = re.compile(r"[A-Za-z0-9]+")


class InvertedIndexMachine(RuleBasedStateMachine):
    @initialize(
        k1=st.sampled_from([1.2, 0.0, 0.5, 2.0]),
        b=st.sampled_from([0.75, 0.0, 1.0]),
        stem=st.booleans(),
        stop_words=st.sampled_from([False, True, ("sea", "x1", "flow")]),
    )
    def init(self, k1, b, stem, stop_words):
        sw = list(stop_words) if isinstance(stop_words, tuple) else stop_words
        self.index = InvertedIndex(k1=k1, b=b, stem=stem, stop_words=sw)
        self.k1, self.b, self.stem = k1, b, stem
        self.stops = set(ENGLISH_STOP_WORDS) if stop_words is True else set(stop_words) if stop_words else set()
        assert (self.index.k1, self.index.b, self.index.stem) == (k1, b, stem)
        assert sorted(self.index.stop_words) == sorted(self.stops)
        self.docs: dict[int, list[str]] = {}  # live documents in the order they were added
        self.dead: list[int] = []  # postings of each removed document not yet compacted
        self.tmp = tempfile.mkdtemp(prefix="llmds-inv-")

    def teardown(self):
        shutil.rmtree(getattr(self, "tmp", ""), ignore_errors=True)

    # --- the model -------------------------------------------------------------------------
    def terms_of(self, text):
        terms = [t.lower() for t in TERM_RE.findall(text)]
        terms = [t for t in terms if t not in self.stops]
        return [porter_stem(t) for t in terms] if self.stem else terms

    def bm25(self, query):
        """{doc_id: score} of every live document sharing a term with the query."""
        scored = [d for d, terms in self.docs.items() if terms]
        n = len(scored)
        if n == 0:
            return {}
        avgdl = sum(len(self.docs[d]) for d in scored) / n
        q = self.terms_of(query)
        df = Counter(t for terms in self.docs.values() for t in set(terms))
        out = {}
        for d, terms in self.docs.items():
            tf = Counter(terms)
            if not any(tf[t] for t in q):
                continue
            score = 0.0
            for t in q:
                if tf[t]:
                    idf = math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5))
                    score += (
                        idf * tf[t] * (self.k1 + 1) / (tf[t] + self.k1 * (1 - self.b + self.b * len(terms) / avgdl))
                    )
            out[d] = score
        return out

    def check_hits(self, query, top_k, got):
        model = self.bm25(query)
        order = list(self.docs)
        ids = [d for d, _ in got]
        assert len(set(ids)) == len(ids) and len(got) == min(top_k, len(model)), (got, model)
        close = lambda a, b: math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)  # noqa: E731
        for d, s in got:
            assert d in model and close(s, model[d]), (d, s, model.get(d))
        for (d1, s1), (d2, s2) in zip(got, got[1:]):
            assert s1 >= s2  # best first
            if s1 == s2:
                assert order.index(d1) < order.index(d2)  # ties: the earlier added document
        if got:
            last = got[-1][1]
            for d, s in model.items():  # nothing left out scores higher than the last returned
                if d not in ids:
                    assert s <= last or close(s, last), (d, s, got)

    def snapshot(self):
        ix = self.index
        queries = ["connect graph sea", "the flows", "heat 42 x1"]
        return (
            len(ix),
            ix.document_ids(),
            {d: ix.document_length(d) for d in ix.document_ids()},
            [ix.search(q, 20) for q in queries],
            ix.stats(),
            {d: [ix.get_term_frequency(t, d) for t in ("graph", "sea", "connect")] for d in ix.document_ids()},
        )

    def new_id(self, data):
        return fresh_id(data, DOC_IDS, self.docs)

    # --- valid operations ------------------------------------------------------------------
    @rule(data=st.data(), text=TEXTS)
    def add_document(self, data, text):
        doc_id = data.draw(DOC_IDS)
        if doc_id in self.docs:
            refused(self.snapshot, ValueError, self.index.add_document, doc_id, text)
            return
        self.index.add_document(doc_id, text)
        self.docs[doc_id] = self.terms_of(text)

    @rule(data=st.data(), text=TEXTS)
    def add_document_again(self, data, text):  # makes add_document twice as frequent
        self.add_document(data, text)

    @rule(data=st.data(), texts=st.lists(TEXTS, max_size=4))
    def add_documents(self, data, texts):
        ids = fresh_ids(data, DOC_IDS, self.docs, len(texts))
        self.index.add_documents(ids, texts)
        for d, t in zip(ids, texts):
            self.docs[d] = self.terms_of(t)

    @precondition(lambda self: len(self.docs) < 300)
    @rule(n=st.integers(min_value=100, max_value=300), seed=st.integers(min_value=0, max_value=2**32 - 1))
    def add_corpus(self, n, seed):
        """Many documents at once (texts from a seeded generator), so that the posting lists of
        common terms span several blocks of 128 and block-max pruning has blocks to skip."""
        rng = np.random.default_rng(seed)
        start = max([d for d in self.docs if d < 2**62] + [10**4]) + 1
        ids = list(range(start, start + n))
        weights = rng.dirichlet(np.ones(len(WORDS)) * 0.3)  # a skewed vocabulary: long and short lists
        texts = [" ".join(rng.choice(WORDS, size=int(rng.integers(0, 12)), p=weights)) for _ in ids]
        self.index.add_documents(ids, texts)
        for d, t in zip(ids, texts):
            self.docs[d] = self.terms_of(t)

    @precondition(lambda self: len(self.docs) > 20)
    @rule(fraction=st.sampled_from([0.1, 0.3, 0.6]), seed=st.integers(min_value=0, max_value=2**32 - 1))
    def remove_many(self, fraction, seed):
        """Remove a share of the documents (which may trigger compaction by itself)."""
        rng = np.random.default_rng(seed)
        for d in rng.permutation(sorted(self.docs))[: int(len(self.docs) * fraction)].tolist():
            self.index.remove_document(d)
            self.dead.append(len(set(self.docs.pop(d))))
            if len(self.dead) > len(self.docs):
                self.dead = []

    @precondition(lambda self: self.docs)
    @rule(data=st.data())
    def remove_document(self, data):
        d = data.draw(st.sampled_from(sorted(self.docs)))
        self.index.remove_document(d)
        self.dead.append(len(set(self.docs.pop(d))))
        if len(self.dead) > len(self.docs):  # compacts by itself once removed ones outnumber live ones
            self.dead = []

    @rule()
    def compact(self):
        self.index.compact()
        self.dead = []

    @rule(query=QUERIES, top_k=st.integers(min_value=1, max_value=8))
    def search(self, query, top_k):
        got = self.index.search(query, top_k)
        self.check_hits(query, top_k, got)
        assert self.index.search_exhaustive(query, top_k) == got  # the same answer, bit for bit

    @rule(
        queries=st.lists(QUERIES, max_size=4),
        top_k=st.integers(min_value=1, max_value=5),
        threads=st.sampled_from([1, 2, 0]),
    )
    def search_batch(self, queries, top_k, threads):
        got = self.index.search_batch(queries, top_k, num_threads=threads)
        assert got == [self.index.search(q, top_k) for q in queries]

    @precondition(lambda self: self.docs)
    @rule(data=st.data(), query=QUERIES)
    def score(self, data, query):
        d = data.draw(st.sampled_from(sorted(self.docs)))
        assert math.isclose(self.index.score(query, d), self.bm25(query).get(d, 0.0), rel_tol=1e-9, abs_tol=1e-12)

    @precondition(lambda self: self.docs)
    @rule(data=st.data(), word=st.sampled_from(WORDS))
    def term_statistics(self, data, word):
        d = data.draw(st.sampled_from(sorted(self.docs)))
        terms = self.terms_of(word)
        if not terms:  # a stop word: 0
            assert self.index.get_term_frequency(word, d) == 0 and self.index.get_document_frequency(word) == 0
            return
        (t,) = terms
        assert self.index.get_term_frequency(word, d) == self.docs[d].count(t)
        assert self.index.get_document_frequency(word) == sum(t in terms_ for terms_ in self.docs.values())
        assert self.index.document_length(d) == len(self.docs[d])

    @rule(text=TEXTS)
    def analyze(self, text):
        assert self.index.analyze(text) == self.terms_of(text)

    @rule(how=st.sampled_from(["file", "pickle"]))
    def round_trip(self, how):
        before = self.snapshot()
        if how == "file":
            path = os.path.join(self.tmp, "index.inv")
            self.index.save(path)
            copy = InvertedIndex.load(path)
        else:
            copy = pickle.loads(pickle.dumps(self.index))
        self.index = copy  # removed documents are left out: the copy starts compacted
        self.dead = []
        after = self.snapshot()
        for drop in (
            "stored_postings",
            "dead_documents",
            "memory_bytes",
            "posting_bytes",
            "skip_bytes",
            "bits_per_posting",
            "bits_per_posting_with_skips",
            "forward_bytes",
        ):
            before[4].pop(drop)
            after[4].pop(drop)
        assert repr(after) == repr(before)
        assert (copy.k1, copy.b, copy.stem, sorted(copy.stop_words)) == (self.k1, self.b, self.stem, sorted(self.stops))

    # --- invalid operations ----------------------------------------------------------------
    @rule(data=st.data())
    def invalid_operation(self, data):
        name = data.draw(
            st.sampled_from(
                [
                    "add_documents",
                    "unknown_doc",
                    "top_k",
                    "term",
                    "corrupted_file",
                    "unreadable_file",
                    "bad_constructor",
                ]
            ),
            label="invalid operation",
        )
        getattr(self, "bad_" + name)(data)

    # Each tries every variant of its kind of error: rare variants are not left to chance.
    def bad_add_documents(self, data):
        n = data.draw(st.integers(1, 3))
        ids = fresh_ids(data, DOC_IDS, self.docs, n)
        texts = data.draw(st.lists(TEXTS, min_size=n, max_size=n))
        at = data.draw(st.integers(0, n - 1))
        cases = [
            (ids + [ids[0]], texts + ["sea"]),  # an id repeated in the call
            (ids, texts + ["extra"]),
            (ids + [10**6], texts),
        ]  # lengths differ
        if self.docs:  # an id already indexed
            indexed = list(ids)
            indexed[at] = data.draw(st.sampled_from(sorted(self.docs)))
            cases.append((indexed, texts))
        for batch_ids, batch_texts in cases:
            refused(self.snapshot, ValueError, self.index.add_documents, batch_ids, batch_texts)  # nothing added
        if self.docs:
            refused(
                self.snapshot, ValueError, self.index.add_document, data.draw(st.sampled_from(sorted(self.docs))), "sea"
            )

    def bad_unknown_doc(self, data):
        d = self.new_id(data)
        refused(self.snapshot, KeyError, self.index.remove_document, d)
        refused(self.snapshot, KeyError, self.index.score, "sea", d)
        refused(self.snapshot, KeyError, self.index.get_term_frequency, "sea", d)
        refused(self.snapshot, KeyError, self.index.document_length, d)
        assert d not in self.index

    def bad_top_k(self, data):
        for top_k in (0, -1):
            refused(self.snapshot, ValueError, self.index.search, "sea", top_k)
            refused(self.snapshot, ValueError, self.index.search_exhaustive, "sea", top_k)
            refused(self.snapshot, ValueError, self.index.search_batch, ["sea"], top_k)

    def bad_term(self, data):
        for term in ("two words", "graph-sea", "", "!!", "\u00e9", "heat flow"):
            if TERM_RE.findall(term) and len(self.terms_of(term)) <= 1:
                continue  # e.g. "graph-sea" when "sea" is a stop word: one term, valid
            refused(self.snapshot, ValueError, self.index.get_document_frequency, term)
            if self.docs:
                refused(
                    self.snapshot,
                    ValueError,
                    self.index.get_term_frequency,
                    term,
                    data.draw(st.sampled_from(sorted(self.docs))),
                )

    def bad_corrupted_file(self, data):
        refuses_damaged_file(self.snapshot, self.index.save, InvertedIndex.load, self.tmp, ".inv", data,
                             b"LLMDSINV" + b"\x01\x00\x00\x00" + b"\xff" * 40)

    def bad_unreadable_file(self, data):
        refuses_unreadable_file(self.snapshot, self.index.save, InvertedIndex.load, self.tmp, ".inv")

    def bad_bad_constructor(self, data):
        for bad in (
            dict(k1=-0.1),
            dict(k1=math.nan),
            dict(k1=math.inf),
            dict(b=-0.1),
            dict(b=1.5),
            dict(b=math.nan),
            dict(stop_words="the"),
            dict(stop_words=["Sea"]),
            dict(stop_words=["two words"]),
            dict(stop_words=[3]),
        ):
            refused(self.snapshot, ValueError, InvertedIndex, **bad)
        refused(
            self.snapshot, TypeError, lambda: InvertedIndex.__new__(InvertedIndex).add_document(1, "sea")
        )  # docs/reliability.md: __init__ never ran

    # --- invariants ------------------------------------------------------------------------
    @invariant()
    def agrees_with_model(self):
        ix = self.index
        assert len(ix) == len(self.docs)
        assert ix.document_ids() == list(self.docs)
        for d in range(-1, 14):
            assert (d in ix) == (d in self.docs)
        for d, terms in self.docs.items():
            assert ix.document_length(d) == len(terms)
        s = ix.stats()
        scored = [t for t in self.docs.values() if t]
        total = sum(len(t) for t in scored)
        postings = sum(len(set(t)) for t in self.docs.values())
        assert s["num_documents"] == len(self.docs)
        assert s["scored_documents"] == len(scored)
        assert s["num_terms"] == len({t for terms in self.docs.values() for t in terms})
        assert s["num_postings"] == postings
        assert s["stored_postings"] == postings + sum(self.dead)
        assert s["dead_documents"] == len(self.dead)
        assert s["total_terms"] == total
        assert math.isclose(s["avg_doc_length"], total / len(scored) if scored else 0.0, rel_tol=1e-12)
        assert (s["k1"], s["b"]) == (self.k1, self.b)
        self.check_hits("connect graph sea flow heat 42", 5, ix.search("connect graph sea flow heat 42", 5))


TestInvertedIndexStateful = InvertedIndexMachine.TestCase
TestInvertedIndexStateful.settings = stateful_settings(max_examples=100, steps=40)
