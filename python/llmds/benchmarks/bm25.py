"""llmds.inverted_index.InvertedIndex against bm25s, rank_bm25 and tantivy, in one process, on Cranfield and CISI.

Every library sees the same terms: llmds's analyzer (maximal ASCII [A-Za-z0-9] runs, lower-cased;
optionally Lucene's 33 English stop words and the original Porter stemmer) makes them, for each
collection under two settings, "default" (no stop words, no stemming) and "stem+stop". llmds gets
the raw texts; bm25s and rank_bm25 get the token lists of InvertedIndex.analyze(); tantivy gets the
analysed terms joined by spaces in a text field indexed with its whitespace tokenizer
(Tokenizer.whitespace(), no filters, index_option="freq": no positions), and queries built as a
BooleanQuery of one SHOULD TermQuery per analysed query term. All at k1 = 1.2, b = 0.75 (tantivy's
BM25 has them fixed at those values). Peers:

* bm25s, method="lucene", numpy backend ("bm25s") and numba backend ("bm25s-numba", if numba is
  installed; it is part of bm25s[core]). Scores are precomputed into a CSC matrix at index time.
* rank_bm25.BM25Okapi: a speed reference only; its idf is Robertson's ln((N - df + 0.5)/(df + 0.5)),
  a negative one (df > N/2) replaced by 0.25 x the mean idf, so its rankings are not the same BM25.
* tantivy: Lucene's BM25 over 1-byte-quantised field norms: scores differ by a few per cent and
  many top-10 orders with them.

Reported per collection and setting:

1. Index build time, best of --repeats (llmds from the raw texts, analysis included; the peers from
   the token lists, so the table also gives the time of the analysis alone and the peers' time with
   it), and index size: llmds stats() (memory_bytes, posting bytes, bits per posting) and save() file;
   bm25s CSC arrays' nbytes and its save() folder; tantivy's index folder (a second build on disk:
   the timed builds are in RAM); rank_bm25 its pickle (rough).
2. Queries per second at top_k = 10, best of --repeats, the libraries interleaved:
   (a) one query per call from its text in a Python loop: llmds search(text); bm25s
   get_tokens_ids(analyze(text)) + retrieve([ids], k=10, n_threads=0, corpus=doc id array);
   rank_bm25 get_scores(analyze(text)) + argpartition; tantivy searcher.search(BooleanQuery of
   TermQuery(analyze(text)), 10, count=False);
   (b) one call for all queries on one thread: llmds search_batch(texts, 10, num_threads=1) vs
   bm25s retrieve(token lists, k=10) with n_threads=0 (sequential map) and n_threads=1 (one worker),
   the better of the two. llmds analyses the texts inside the timed call; bm25s gets tokens.
   Ratios are llmds QPS / peer QPS. (a) also times llmds search_exhaustive(text), for reference.
3. Top-10 agreement with bm25s (Lucene variant): lists are identical when at every rank both name
   the same document or two documents whose scores are within 1e-4 relative of each other under
   both libraries' scores (ties, typically at the 10th place); and the largest relative score
   difference over the documents either list holds. llmds scores carry Lucene <= 7's (k1 + 1)
   factor, as tantivy's do; bm25s follows Lucene >= 8 and drops it, so llmds scores are divided by
   k1 + 1 = 2.2 before comparing (a constant factor: rankings are unaffected). bm25s counts every
   indexed document in N and avgdl, llmds only those with at least one term (Lucene's docCount):
   Cranfield 471 and 995 are empty, so the comparison is repeated with empty documents left out of
   both indexes. tantivy's agreement with llmds is shown as well.
4. Retrieval quality of llmds (MAP, nDCG@10, P@10, R@100 via llmds.ir.evaluate over top-1000 runs).

    pip install bm25s rank_bm25 tantivy numba
    python -m llmds.benchmarks.bm25                       # both collections, 5 repeats
    nice -n 10 python -m llmds.benchmarks.bm25 --collections cranfield --repeats 3
    python -m llmds.benchmarks.bm25 --libraries llmds,bm25s,tantivy
"""

from __future__ import annotations

__all__ = ["main"]

import argparse
import logging
import math
import os
import pickle
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

import llmds
from llmds.inverted_index import InvertedIndex
from llmds.ir import IRCollection, evaluate, load_collection
from llmds.progress import log
from llmds.report import package_version

K1, B, TOP_K = 1.2, 0.75, 10
TIE = 1e-4  # relative score difference under which two documents count as tied
ANALYZERS: dict[str, dict[str, bool]] = {
    "default": {"stem": False, "stop_words": False},
    "stem+stop": {"stem": True, "stop_words": True},
}
ALL_LIBRARIES = ("llmds", "bm25s", "bm25s-numba", "rank_bm25", "tantivy")
PEERS = ALL_LIBRARIES[1:]

Hits = list[tuple[int, float]]


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def best_of(repeats: int, runs: dict[str, Callable[[], Any]]) -> dict[str, float]:
    """Fastest wall time of each callable over `repeats` rounds; the callables take turns in each round."""
    best = {name: math.inf for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def close(x: float, y: float) -> bool:
    return abs(x - y) <= TIE * max(abs(x), abs(y))


def same_ranking(a: Sequence[int], b: Sequence[int], sa: dict[int, float], sb: dict[int, float]) -> bool:
    """Whether two top-k lists agree up to ties: at each rank the same document, or two that both
    score functions (doc -> score, matching documents only) find tied."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if x != y and not (close(sa.get(x, 0.0), sa.get(y, 0.0)) and close(sb.get(x, 0.0), sb.get(y, 0.0))):
            return False
    return True


# --------------------------------------------------------------------------- the libraries


class Engine:
    """One library's index over one collection and analyzer setting."""

    name = ""

    def build(self) -> None:  # a fresh index each call (timed)
        raise NotImplementedError

    def search(self, text: str) -> Any:  # one query from its text, top 10 (timed)
        raise NotImplementedError

    def batch(self) -> Any:  # every query in one call, one thread (timed); None: no batch API
        return None

    def sizes(self) -> dict[str, str]:
        return {}


class LlmdsEngine(Engine):
    name = "llmds"

    def __init__(self, doc_ids: list[int], texts: list[str], queries: list[str], options: dict[str, bool]):
        self.doc_ids, self.texts, self.queries, self.options = doc_ids, texts, queries, options
        self.index = InvertedIndex(K1, B, **options)

    def build(self) -> None:
        index = InvertedIndex(K1, B, **self.options)
        index.add_documents(self.doc_ids, self.texts)
        self.index = index

    def search(self, text: str) -> Hits:
        return self.index.search(text, TOP_K)

    def batch(self) -> Any:
        return self.index.search_batch(self.queries, TOP_K, num_threads=1)

    def sizes(self) -> dict[str, str]:
        s = self.index.stats()
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "index.bin"
            self.index.save(path)
            saved = path.stat().st_size
        return {
            "memory_bytes": f"{s['memory_bytes'] / 1e6:.2f} MB",
            "postings": f"{s['posting_bytes'] / 1e3:.0f} kB ({s['bits_per_posting']:.1f} bits/posting); "
            f"+skips/impacts {s['skip_bytes'] / 1e3:.0f} kB ({s['bits_per_posting_with_skips']:.1f} bits/posting)",
            "saved": f"{saved / 1e6:.2f} MB",
        }


class Bm25sEngine(Engine):
    def __init__(self, backend: str, doc_ids: list[int], tokens: list[list[str]], query_tokens: list[list[str]],
                 analyze: Callable[[str], list[str]]):
        import bm25s

        self.bm25s = bm25s
        self.backend = backend
        self.name = "bm25s" if backend == "numpy" else "bm25s-numba"
        self.tokens, self.query_tokens, self.analyze = tokens, query_tokens, analyze
        self.doc_array = np.asarray(doc_ids)
        self.retriever: Any = None
        self.batch_threads = 0

    def build(self) -> None:
        retriever = self.bm25s.BM25(k1=K1, b=B, method="lucene", backend=self.backend)
        retriever.index(self.tokens, show_progress=False)
        self.retriever = retriever

    def search(self, text: str) -> Any:
        r = self.retriever
        ids = r.get_tokens_ids(self.analyze(text))
        if not ids:
            return None
        return r.retrieve([ids], k=TOP_K, n_threads=0, show_progress=False,
                          corpus=self.doc_array)

    def batch_with(self, threads: int) -> Any:
        return self.retriever.retrieve(self.query_tokens, k=TOP_K, n_threads=threads, show_progress=False,
                                       corpus=self.doc_array)

    def sizes(self) -> dict[str, str]:
        scores = self.retriever.scores
        arrays = sum(scores[key].nbytes for key in ("data", "indices", "indptr"))
        with tempfile.TemporaryDirectory() as folder:
            self.retriever.save(folder)
            saved = folder_bytes(Path(folder))
        return {"csc arrays": f"{arrays / 1e6:.2f} MB", "saved": f"{saved / 1e6:.2f} MB"}

    def all_scores(self, terms: list[str]) -> dict[int, float]:
        """Every matching document's score (bm25s scores all documents; zeros dropped)."""
        if not terms:
            return {}
        scores = self.retriever.get_scores(terms)
        return {int(self.doc_array[i]): float(scores[i]) for i in np.flatnonzero(scores > 0)}

    def top(self, terms: list[str]) -> list[int]:
        result = self.retriever.retrieve([terms], k=TOP_K, n_threads=0, show_progress=False, corpus=self.doc_array)
        return [int(d) for d, s in zip(result.documents[0], result.scores[0]) if s > 0]


class RankBm25Engine(Engine):
    name = "rank_bm25"

    def __init__(self, doc_ids: list[int], tokens: list[list[str]], analyze: Callable[[str], list[str]]):
        from rank_bm25 import BM25Okapi

        self.cls = BM25Okapi
        self.doc_array = np.asarray(doc_ids)
        self.tokens, self.analyze = tokens, analyze
        self.model: Any = None

    def build(self) -> None:
        self.model = self.cls(self.tokens, k1=K1, b=B)

    def search(self, text: str) -> Any:
        scores = self.model.get_scores(self.analyze(text))
        top = np.argpartition(-scores, TOP_K - 1)[:TOP_K]
        top = top[np.argsort(-scores[top], kind="stable")]
        return self.doc_array[top], scores[top]

    def sizes(self) -> dict[str, str]:
        return {"pickle (rough)": f"{len(pickle.dumps(self.model)) / 1e6:.2f} MB"}


class TantivyEngine(Engine):
    name = "tantivy"

    def __init__(self, doc_ids: list[int], tokens: list[list[str]], analyze: Callable[[str], list[str]]):
        import tantivy

        self.tantivy = tantivy
        self.doc_ids = doc_ids
        self.joined = [" ".join(t) for t in tokens]
        self.analyze = analyze
        builder = tantivy.SchemaBuilder()
        builder.add_text_field("body", tokenizer_name="ws", index_option="freq")
        self.schema = builder.build()
        self.index: Any = None
        self.searcher: Any = None

    def _build_at(self, path: str | None) -> Any:
        t = self.tantivy
        index = t.Index(self.schema, path=path)
        index.register_tokenizer("ws", t.TextAnalyzerBuilder(t.Tokenizer.whitespace()).build())
        writer = index.writer(heap_size=50_000_000, num_threads=1)  # one thread: one segment, doc = add order
        for body in self.joined:
            writer.add_document(t.Document(body=body))
        writer.commit()
        writer.wait_merging_threads()
        index.reload()
        return index

    def build(self) -> None:
        self.index = self._build_at(None)
        self.searcher = self.index.searcher()
        if self.searcher.num_segments != 1:
            raise RuntimeError("tantivy built more than one segment; doc addresses are not add order")

    def query(self, terms: list[str]) -> Any:
        t = self.tantivy
        return t.Query.boolean_query([(t.Occur.Should, t.Query.term_query(self.schema, "body", w)) for w in terms])

    def search(self, text: str) -> Hits:
        terms = self.analyze(text)
        if not terms:
            return []
        hits = self.searcher.search(self.query(terms), TOP_K, count=False).hits
        return [(self.doc_ids[address.doc], score) for score, address in hits]

    def sizes(self) -> dict[str, str]:
        with tempfile.TemporaryDirectory() as folder:
            index = self._build_at(folder)
            del index
            size = folder_bytes(Path(folder))
        return {"index folder": f"{size / 1e6:.2f} MB"}

    def all_scores(self, terms: list[str]) -> dict[int, float]:
        if not terms:
            return {}
        hits = self.searcher.search(self.query(terms), len(self.doc_ids), count=False).hits
        return {self.doc_ids[address.doc]: score for score, address in hits}

    def top(self, terms: list[str]) -> list[int]:
        if not terms:
            return []
        return [self.doc_ids[a.doc] for _, a in self.searcher.search(self.query(terms), TOP_K, count=False).hits]


# --------------------------------------------------------------------------- agreement


def agreement(collection: IRCollection, options: dict[str, bool], peer_kind: str, drop_empty: bool) -> dict[str, Any]:
    """llmds top-10 vs a peer's on every query, over all documents or without the empty ones."""
    doc_ids = list(collection.documents)
    texts = [collection.documents[d] for d in doc_ids]
    llmds_index = InvertedIndex(K1, B, **options)
    tokens = [llmds_index.analyze(t) for t in texts]
    if drop_empty:
        keep = [i for i, t in enumerate(tokens) if t]
        doc_ids, texts, tokens = [doc_ids[i] for i in keep], [texts[i] for i in keep], [tokens[i] for i in keep]
    llmds_index.add_documents(doc_ids, texts)
    analyze = llmds_index.analyze
    peer: Bm25sEngine | TantivyEngine
    if peer_kind == "bm25s":
        peer = Bm25sEngine("numpy", doc_ids, tokens, [], analyze)
        scale = 1.0 / (K1 + 1)  # llmds keeps Lucene <= 7's (k1 + 1) factor, bm25s does not
    else:
        peer = TantivyEngine(doc_ids, tokens, analyze)
        scale = 1.0  # tantivy keeps it too
    peer.build()
    identical = exact = 0
    max_rel = 0.0
    worst: tuple[float, int, int] = (0.0, -1, -1)
    repeated = 0
    repeated_max_rel = 0.0
    for qid, text in collection.queries.items():
        terms = analyze(text)
        ours = llmds_index.search(text, TOP_K)
        mine = [d for d, _ in ours]
        my_scores = {d: s * scale for d, s in llmds_index.search(text, max(len(doc_ids), 1))}
        theirs = peer.top(terms)
        their_scores = peer.all_scores(terms)
        exact += mine == theirs
        identical += same_ranking(mine, theirs, my_scores, their_scores)
        query_rel = 0.0
        for d in set(mine) | set(theirs):
            x, y = my_scores.get(d, 0.0), their_scores.get(d, 0.0)
            rel = abs(x - y) / max(abs(x), abs(y))
            query_rel = max(query_rel, rel)
            if rel > worst[0]:
                worst = (rel, qid, d)
        max_rel = max(max_rel, query_rel)
        if len(set(terms)) < len(terms):
            repeated += 1
            repeated_max_rel = max(repeated_max_rel, query_rel)
    s = llmds_index.stats()
    result = {
        "queries": len(collection.queries), "identical": identical, "exact": exact, "max_rel": max_rel,
        "worst": worst, "repeated": repeated, "repeated_max_rel": repeated_max_rel,
        "llmds_n": s["scored_documents"], "llmds_avgdl": s["avg_doc_length"],
        "peer_n": len(doc_ids), "peer_avgdl": sum(map(len, tokens)) / len(tokens),
    }
    if peer_kind == "bm25s":
        # What if bm25s (or llmds) counted a repeated query term once? Score the deduplicated terms.
        dedup_rel = 0.0
        for text in collection.queries.values():
            terms = analyze(text)
            if len(set(terms)) == len(terms):
                continue
            top_scores = {d: s * scale for d, s in llmds_index.search(text, TOP_K)}
            once = peer.all_scores(list(dict.fromkeys(terms)))
            for d, x in top_scores.items():
                dedup_rel = max(dedup_rel, abs(x - once.get(d, 0.0)) / x)
        result["dedup_max_rel"] = dedup_rel
    return result


# --------------------------------------------------------------------------- main


def markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def qps(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f}" if math.isfinite(seconds) else "-"


def ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}x" if math.isfinite(ours) and math.isfinite(theirs) and theirs > 0 else "-"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs the comparison, prints its Markdown and returns the single-query QPS per (collection,
    analyzer) and library."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--collections", default="cranfield,cisi", help="comma-separated: cranfield, cisi")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds; the best counts")
    parser.add_argument("--ir-root", type=Path, default=None, help="folder of cranfield/ and cisi/ (default: data_dir() / 'ir')")
    parser.add_argument("--libraries", default=",".join(ALL_LIBRARIES),
                        help=f"comma-separated subset of {','.join(ALL_LIBRARIES)} (llmds is always run)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    wanted = [name.strip() for name in args.libraries.split(",") if name.strip()]
    unknown = sorted(set(wanted) - set(ALL_LIBRARIES))
    if unknown:
        parser.error(f"unknown libraries {unknown}; choose from {', '.join(ALL_LIBRARIES)}")
    logging.getLogger("bm25s").setLevel(logging.WARNING)

    available: list[str] = []
    notes: list[str] = []
    probes = {"bm25s": "bm25s", "bm25s-numba": "numba", "rank_bm25": "rank_bm25", "tantivy": "tantivy"}
    for name in PEERS:
        if name not in wanted:
            continue
        try:
            __import__(probes[name])
            if name == "bm25s-numba":
                __import__("bm25s")
            available.append(name)
        except ImportError:
            install = {"bm25s": "bm25s", "bm25s-numba": "bm25s numba", "rank_bm25": "rank_bm25",
                       "tantivy": "tantivy"}[name]
            notes.append(f"{name} skipped: not installed (pip install {install})")
    for note in notes:
        log(note)

    print(f"llmds {llmds.__version__}, bm25s {package_version('bm25s')}, numba {package_version('numba')}, "
          f"rank_bm25 {package_version('rank-bm25')}, tantivy {package_version('tantivy')}, numpy {np.__version__}; "
          f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs")
    print(f"k1={K1}, b={B}, top_k={TOP_K}; best of {args.repeats}; all libraries on one thread; "
          f"terms from llmds's analyzer for every library")
    for note in notes:
        print(f"note: {note}")

    collections = [load_collection(name, args.ir_root) for name in args.collections.split(",") if name.strip()]
    build_rows, size_rows, single_rows, batch_rows, agree_rows, quality_rows = [], [], [], [], [], []
    single_qps: dict[tuple[str, str], dict[str, float]] = {}
    duplicate_notes: list[str] = []
    agree_notes: list[str] = []
    for collection in collections:
        doc_ids = list(collection.documents)
        texts = [collection.documents[d] for d in doc_ids]
        queries = list(collection.queries.values())
        for setting, options in ANALYZERS.items():
            log(f"{collection.name} / {setting}: building")
            ours = LlmdsEngine(doc_ids, texts, queries, options)
            analyze = ours.index.analyze
            tokens = [analyze(t) for t in texts]
            query_tokens = [analyze(q) for q in queries]
            engines: dict[str, Engine] = {"llmds": ours}
            for name in available:
                if name in ("bm25s", "bm25s-numba"):
                    engines[name] = Bm25sEngine("numpy" if name == "bm25s" else "numba", doc_ids, tokens,
                                                query_tokens, analyze)
                elif name == "rank_bm25":
                    engines[name] = RankBm25Engine(doc_ids, tokens, analyze)
                else:
                    engines[name] = TantivyEngine(doc_ids, tokens, analyze)
            for engine in engines.values():  # warm-up (numba compiles here), untimed
                engine.build()
                engine.search(queries[0])
                if isinstance(engine, Bm25sEngine):
                    engine.batch_with(0)

            # 1. build time and size
            runs: dict[str, Callable[[], Any]] = {"analysis": lambda: [analyze(t) for t in texts]}
            runs.update({name: engine.build for name, engine in engines.items()})
            built = best_of(args.repeats, runs)
            row = [collection.name, setting, f"{built['analysis'] * 1e3:.1f}", f"{built['llmds'] * 1e3:.1f}"]
            for name in PEERS:
                if name in engines:
                    with_analysis = built[name] + built["analysis"]
                    row.append(f"{built[name] * 1e3:.1f} ({with_analysis * 1e3:.1f}; "
                               f"{ratio(with_analysis, built['llmds'])})")
                else:
                    row.append("-")
            build_rows.append(row)
            sizes = {name: engine.sizes() for name, engine in engines.items()}
            s = ours.index.stats()
            size_rows.append([
                collection.name, setting, f"{s['scored_documents']:,}/{s['num_documents']:,}",
                f"{s['num_terms']:,}", f"{s['num_postings']:,}",
                sizes["llmds"]["memory_bytes"], sizes["llmds"]["postings"], sizes["llmds"]["saved"],
                *(" / ".join(f"{k} {v}" for k, v in sizes[name].items()) if name in sizes else "-"
                  for name in PEERS),
            ])

            # 2a. one query per call
            log(f"{collection.name} / {setting}: queries")

            def loop(engine: Engine) -> Callable[[], None]:
                search = engine.search

                def run() -> None:
                    for text in queries:
                        search(text)

                return run

            single_runs: dict[str, Callable[[], Any]] = {name: loop(engine) for name, engine in engines.items()}
            exhaustive = ours.index.search_exhaustive
            single_runs["llmds exhaustive"] = lambda: [exhaustive(text, TOP_K) for text in queries]
            single = best_of(args.repeats, single_runs)
            n = len(queries)
            single_qps[collection.name, setting] = {name: n / seconds for name, seconds in single.items()}
            single_rows.append([
                collection.name, setting, qps(n, single["llmds"]), qps(n, single["llmds exhaustive"]),
                *(qps(n, single[name]) if name in single else "-" for name in PEERS),
                *(ratio(single[name], single["llmds"]) if name in single else "-" for name in PEERS),
            ])

            # 2b. batch
            batch_runs: dict[str, Callable[[], Any]] = {"llmds": ours.batch}
            for name in ("bm25s", "bm25s-numba"):
                if name in engines:
                    engine = engines[name]
                    assert isinstance(engine, Bm25sEngine)
                    for threads in (0, 1):
                        batch_runs[f"{name}/{threads}"] = partial(engine.batch_with, threads)
            batched = best_of(args.repeats, batch_runs)
            row = [collection.name, setting, qps(n, batched["llmds"])]
            ratios = []
            for name in ("bm25s", "bm25s-numba"):
                if f"{name}/0" in batched:
                    t0, t1 = batched[f"{name}/0"], batched[f"{name}/1"]
                    best = min(t0, t1)
                    row.append(f"{qps(n, best)} (n_threads={0 if t0 <= t1 else 1}; other {qps(n, max(t0, t1))})")
                    ratios.append(ratio(best, batched["llmds"]))
                else:
                    row.append("-")
                    ratios.append("-")
            batch_rows.append(row + ratios)

            # 3. agreement
            log(f"{collection.name} / {setting}: agreement")
            empty = [d for d, t in zip(doc_ids, tokens) if not t]
            label = f"{collection.name}/{setting}"
            for peer_kind in ("bm25s", "tantivy"):
                if peer_kind not in engines:
                    continue
                drops = [False, True] if empty else [False]
                found = {drop: agreement(collection, options, peer_kind, drop) for drop in drops}
                for drop, a in found.items():
                    agree_rows.append([
                        collection.name, setting, peer_kind, "empty docs left out" if drop else "all docs",
                        f"{a['llmds_n']} / {a['peer_n']}", f"{a['llmds_avgdl']:.3f} / {a['peer_avgdl']:.3f}",
                        f"{a['identical']}/{a['queries']}", f"{a['exact']}/{a['queries']}", f"{a['max_rel']:.2e}",
                    ])
                full = found[False]
                rel, qid, doc = full["worst"]
                if peer_kind == "bm25s" and empty:
                    clean = found[True]
                    agree_notes.append(
                        f"{label} vs bm25s: documents {', '.join(map(str, empty))} have no terms. bm25s counts them "
                        f"(N = {full['peer_n']}, avgdl = {full['peer_avgdl']:.3f}); llmds does not, as Lucene's "
                        f"docCount does not (N = {full['llmds_n']}, avgdl = {full['llmds_avgdl']:.3f}). So idf and "
                        f"the length norm differ a little: max rel score diff {full['max_rel']:.2e} (query {qid}, "
                        f"document {doc}), {full['queries'] - full['identical']} of {full['queries']} top-10 lists "
                        f"differ beyond ties. With the empty documents left out of both indexes: "
                        f"{clean['identical']}/{clean['queries']} identical ({clean['exact']} in exactly the same "
                        f"order), max rel diff {clean['max_rel']:.2e}, float32 rounding of bm25s's stored scores.")
                elif peer_kind == "bm25s":
                    agree_notes.append(
                        f"{label} vs bm25s: no empty documents, so N and avgdl agree: {full['identical']}/"
                        f"{full['queries']} identical ({full['exact']} in exactly the same order), max rel diff "
                        f"{full['max_rel']:.2e} (float32 rounding).")
                else:
                    agree_notes.append(
                        f"{label} vs tantivy: {full['identical']}/{full['queries']} identical, max rel diff "
                        f"{full['max_rel']:.2e} (query {qid}, document {doc}); tantivy keeps each document length as "
                        f"a 1-byte field norm (Lucene's SmallFloat coding: exact only for short lengths; its explain() "
                        f"shows e.g. a length of 151 as 144), so its length normalisation is approximate. It counts "
                        f"every document in N and avgdl, as bm25s does, but leaving the empty ones out hardly changes "
                        f"the agreement: the field norms dominate.")
                if peer_kind == "bm25s":
                    a = found[bool(empty)]
                    duplicate_notes.append(
                        f"{label}: {a['repeated']} of {a['queries']} queries repeat a term; on them llmds vs bm25s "
                        f"max rel diff {a['repeated_max_rel']:.2e}{' (empty documents left out)' if empty else ''}, "
                        f"so both count each repeat; had a repeat counted once, it would be {a['dedup_max_rel']:.2e}.")

            # 4. quality
            runs_1000 = ours.index.search_batch(queries, 1000, num_threads=1)
            metrics = evaluate({qid: [d for d, _ in hits] for qid, hits in zip(collection.queries, runs_1000)},
                               collection.qrels)
            quality_rows.append([collection.name, setting, f"{len(collection.qrels)}",
                                 *(f"{metrics[m]:.4f}" for m in ("MAP", "nDCG@10", "P@10", "R@100"))])

    print("\n## 1. Index build (ms, best of %d)\n" % args.repeats)
    print("analysis: llmds analyze() of every document in a Python loop; llmds: InvertedIndex + add_documents "
          "from the texts (analysis included); a peer: its build from the token lists (with the analysis added; "
          "llmds speedup = that / llmds). tantivy: in RAM, one writer thread, commit.\n")
    print("peer cells: its build (its build + analysis; that / llmds).\n")
    print(markdown(["collection", "analyzer", "analysis", "llmds", *PEERS], build_rows))
    print("\n## 1b. Index size\n")
    print(markdown(["collection", "analyzer", "docs with terms/all", "terms", "postings", "llmds memory_bytes",
                    "llmds postings", "llmds save()", *PEERS], size_rows))
    print("\n## 2a. Queries per second, one query per call from its text (top 10)\n")
    print("llmds exhaustive: search_exhaustive(text), the same answer by scoring every posting (not in the "
          "ratios).\n")
    print(markdown(["collection", "analyzer", "llmds", "llmds exhaustive", *PEERS, *(f"llmds/{p}" for p in PEERS)],
                   single_rows))
    print("\n## 2b. Queries per second, all queries in one call, one thread (top 10)\n")
    print("llmds search_batch(texts, num_threads=1) analyses inside the call; bm25s retrieve() gets token lists; "
          "the better of n_threads=0 and 1 is shown.\n")
    print(markdown(["collection", "analyzer", "llmds", "bm25s", "bm25s-numba", "llmds/bm25s", "llmds/bm25s-numba"],
                   batch_rows))
    print("\n## 3. Top-10 agreement with llmds\n")
    print("identical: same document at each rank, or two documents tied (1e-4 relative) under both libraries' "
          f"scores; exact: the same lists in the same order. llmds scores divided by k1 + 1 = {K1 + 1:.1f} against "
          "bm25s. N and avgdl: llmds (documents with a term) / the peer.\n")
    print(markdown(["collection", "analyzer", "peer", "corpus", "N", "avgdl", "identical", "exact",
                    "max rel score diff"], agree_rows))
    print(f"\nllmds scores carry Lucene <= 7's (k1 + 1) factor (as tantivy's do); bm25s's lucene method, like "
          f"Lucene >= 8, drops it. That is a constant factor {K1 + 1:.1f}, which changes no ranking.\n")
    for note in agree_notes:
        print(f"- {note}")
    print("\nRepeated query terms: bm25s keeps every query token id (get_tokens_ids does not deduplicate) and adds "
          "each one's column of the score matrix (np.add.at per id in the numpy backend, a loop per id under "
          "numba), so a term repeated n times weighs n times; llmds weighs it count x idf as well.\n")
    for note in duplicate_notes:
        print(f"- {note}")
    print("\n## 4. llmds retrieval quality (top-1000 runs, llmds.ir.evaluate)\n")
    print(markdown(["collection", "analyzer", "judged queries", "MAP", "nDCG@10", "P@10", "R@100"], quality_rows))
    return {"single_qps": single_qps}


if __name__ == "__main__":
    main()
