"""``python -m llmds demo``: every family at work on real data, with a Markdown report and plots.

The data comes from the data folder ($LLMDS_DATA_DIR, else ../shared/data) when it is there, else
from what the package and the machine have (``llmds.data.locate``): the Mooncake and Azure traces
and the stories260K model ship inside the package, Fashion-MNIST comes from Debian's
``dataset-fashion-mnist``, and the text search runs on Cranfield and CISI (with their relevance
judgments) or, without them, on the descriptions of the machine's Debian packages.

Each section prints what it measured and keeps it for ``report.md``, which goes with its PNG
plots into the output folder named at the end.
"""

from __future__ import annotations

import csv
import json
import random
import time
import tracemalloc
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

import llmds
from llmds.cmsketch import CountMinSketch
from llmds.data import data_dir, locate, open_text, read_idx_images, read_idx_labels
from llmds.engine import STORIES_MODEL, STORIES_TOKENIZER, Engine, Request, SamplingParams
from llmds.evaluation import kth_nearest_distances, squared_distances, tie_aware_recall
from llmds.hnsw import HNSW
from llmds.indexed_heap import IndexedHeap
from llmds.inverted_index import InvertedIndex
from llmds.ir import IRCollection, evaluate, load_collection, load_debian_packages
from llmds.kv_cache import KVCache
from llmds.progress import Progress, track
from llmds.replay import (
    POLICIES,
    check_batching_target,
    format_results,
    prefix_cache_sweep,
    replay_azure,
    replay_prefix_cache,
    replay_tiered_prefix_cache,
)
from llmds.report import Report, machine_summary
from llmds.retrieval_pipeline import RetrievalPipeline
from llmds.token_lru import TokenLRU
from llmds.traces import load_azure_trace, load_mooncake_trace
from llmds.utils import Timer, calculate_statistics, compute_percentiles

MOONCAKE = "traces/mooncake_fast25_conversation_trace.jsonl"
AZURE_CODE = "traces/azure_llm_2023_code.csv"
AZURE_CONV = "traces/azure_llm_2023_conv.csv"
FASHION = "ann/fashion-mnist"
BLOCK_TOKENS = 512  # the Mooncake traces hash prompts in 512-token blocks
# KV bytes per token of a Llama-2-7B-sized model (32 layers x 4096 wide, K and V, fp16): 0.5 MiB.
# It turns cached blocks into the memory a serving engine does not write twice.
KV_BYTES_PER_TOKEN_7B = 2 * 32 * 4096 * 2
# Xapian BM25 (k1 1.2, b 0.75, stemmed, stop words removed) on the same collections: ir/README.md.
XAPIAN_REFERENCE = {"cranfield": (0.294, 0.373), "cisi": (0.215, 0.373)}
# Questions a user might ask of a package archive, for the collection without judgments.
PACKAGE_QUERIES = ("lightweight web server with reverse proxy", "pdf viewer", "python testing framework")


def _mooncake_requests(path: Path) -> list[tuple[int, list[int]]]:
    """(input_length, hash_ids) of each request of a Mooncake trace."""
    with open_text(path) as f:
        return [(r["input_length"], r["hash_ids"]) for r in map(json.loads, f)]


def _sketch(requests: list[tuple[int, list[int]]]) -> None:
    blocks = [str(b) for _, ids in requests for b in ids]
    # tracemalloc, not the process RSS: Python reuses memory the trace's parsing freed, so the RSS
    # hardly moves while the Counter is built.
    tracemalloc.start()
    exact = Counter(blocks)
    exact_bytes = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    print(
        f"{len(blocks):,} block references, {len(exact):,} distinct "
        f"(an exact Counter of them takes {exact_bytes / 2**20:.1f} MiB besides the keys)"
    )
    print("   width   memory   fill ms   mean over   max over   bound e/w*N   top-5 exact")
    true_top = {count for _, count in exact.most_common(5)}
    for width in (2048, 16384):  # the default width, and 8x wider
        sketch = CountMinSketch(width=width, depth=4, top_k=5)
        with Timer() as t:
            sketch.add_many(blocks)
        errors = [sketch.estimate(b) - c for b, c in exact.items()]
        if min(errors) < 0:
            raise AssertionError("a count-min estimate fell below the true count")
        hitters = sketch.heavy_hitters()
        right = sum(exact[item] in true_top for item, _ in hitters)
        print(
            f"  {width:>6}  {sketch.stats()['memory_bytes'] // 1024:>5} KiB  {t.elapsed * 1e3:>8.0f}"
            f"  {sum(errors) / len(errors):>10.2f}  {max(errors):>9}  {sketch.get_error_bound():>12.0f}"
            f"  {right:>8}/5"
        )
    print("heavy hitters of the wider sketch (item, estimate, exact):")
    print("  " + ", ".join(f"({item}, {est}, {exact[item]})" for item, est in hitters))


def _token_lru(requests: list[tuple[int, list[int]]]) -> None:
    total_blocks = sum(len(ids) for _, ids in requests)
    print("  budget (tokens)   prefix-block hit rate   evictions")
    for budget_blocks in (1_000, 10_000, 100_000):
        cache = TokenLRU(token_of=lambda tokens: tokens, max_tokens=budget_blocks * BLOCK_TOKENS)
        hits = 0
        for input_length, ids in requests:
            # A block is reusable only if every block before it is too (prefix caching).
            for b in ids:
                if cache.get(b) is None:
                    break
                hits += 1
            for i, b in enumerate(ids):
                last = i == len(ids) - 1
                cache.put(b, input_length - BLOCK_TOKENS * i if last else BLOCK_TOKENS)
        print(f"  {budget_blocks * BLOCK_TOKENS:>15,}   {hits / total_blocks:>21.1%}   {cache.stats()['evictions']:>9,}")


def _kv_cache_sharing() -> None:
    page, width = 16, 8  # 16 tokens per page; 8 scalars per token's KV entry
    cache = KVCache(page_size=page, max_pages=64, entry_width=width)
    rng = random.Random(3)
    system = [rng.randrange(32_000) for _ in range(3 * page + 5)]  # three full pages and a bit
    for seq in range(4):
        tokens = system + [rng.randrange(32_000) for _ in range(rng.randint(4, 20))]
        # Stand-in KV entries; a model's are a function of the tokens so far, as here.
        kv = [[float(hash((seq if i >= len(system) else 0, i, j)) % 1000) for j in range(width)] for i in range(len(tokens))]
        cache.attach(seq, kv, prefix_tokens=system)
    cache.fork(0, 100)  # a second sample of request 0: shares all its pages
    cache.append(100, [[0.5] * width])  # its first token of its own: the partial page is copied
    s = cache.stats()
    print(
        f"4 requests + 1 fork: {s['logical_pages']} pages in block tables, {s['used_pages']} stored "
        f"({s['pages_saved']} saved, {s['bytes_saved']:,} bytes); {s['shared_pages']} shared pages, "
        f"{s['cow_copies']} copy-on-write"
    )
    print(f"block table of request 0: {cache.block_table(0).tolist()}, of its fork: {cache.block_table(100).tolist()}")
    for seq in (0, 1, 2, 3, 100):
        cache.detach(seq)
    print(f"after detaching all: {cache.stats()['cached_pages']} system-prompt pages stay cached for the next request")


def _prefix_cache_replay(report: Report, path: Path) -> None:
    trace = load_mooncake_trace(path)
    print(f"{path.name}: {len(trace):,} requests, {trace.total_input_tokens:,} prompt tokens")
    print("  capacity (blocks)   hit rate   blocks from cache   KV not rewritten (7B)   evictions   us/request")
    capacities = (250, 500, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 100_000)
    results = prefix_cache_sweep(trace, capacities, BLOCK_TOKENS, progress="  replaying")
    for capacity, r in zip(capacities, results):
        saved = r.hit_blocks * BLOCK_TOKENS * KV_BYTES_PER_TOKEN_7B
        print(
            f"  {capacity:>17,}   {r.hit_rate:>7.2%}   {r.hit_blocks:>17,}   {saved / 2**40:>17,.1f} TiB"
            f"   {r.evictions:>9,}   {r.microseconds_per_request:>10.2f}"
        )
    print(
        "(KV not rewritten: the blocks served from the cache, at a Llama-2-7B-sized model's 0.5 MiB of "
        "KV per token, which a serving engine neither recomputes nor stores twice)"
    )

    def draw(ax) -> None:
        ax.plot([r.capacity_blocks for r in results], [100 * r.hit_rate for r in results], marker="o")
        ax.set_xscale("log")
        ax.set_xlabel("cache capacity (512-token blocks)")
        ax.set_ylabel("prefix hit rate (%)")

    report.plot("kv_cache_hit_rate", "Mooncake conversation trace: prefix-cache hit rate vs capacity", draw)


def _tiered_replay(report: Report, path: Path) -> None:
    trace = load_mooncake_trace(path)
    host, disk = 16_000, 400_000
    print(f"Primary tiers of several sizes, a host tier of {host:,} blocks and a disk tier of {disk:,} (write-back:")
    print("a block the tier above evicts moves down; a hit below primary is copied back up):")
    print("  primary (blocks)   from primary   from host   from disk   combined   one tier of the summed size")
    rows = []
    for primary in track((1_000, 2_000, 4_000, 6_000, 8_000, 16_000), "  replaying"):
        r = replay_tiered_prefix_cache(trace, primary, host_blocks=host, disk_blocks=disk)
        single = replay_prefix_cache(trace, primary + host, BLOCK_TOKENS)
        rows.append((primary, r))
        print(f"  {primary:>16,}   {r.tier_hit_rate('primary'):>12.2%}   {r.tier_hit_rate('host'):>9.2%}"
              f"   {r.tier_hit_rate('disk'):>9.2%}   {r.hit_rate:>8.2%}   {single.hit_rate:>8.2%} (without disk)")
    unlimited = replay_prefix_cache(trace, 1_000_000, BLOCK_TOKENS).hit_rate
    reached = sum(abs(r.hit_rate - unlimited) < 5e-4 for _, r in rows)
    print(f"An unlimited cache hits {unlimited:.2%}: with the disk tier, {reached} of the {len(rows)} configurations "
          "above reach it within 0.05 points.")

    def draw(ax) -> None:
        xs = range(len(rows))
        bottom = [0.0] * len(rows)
        for tier in ("primary", "host", "disk"):
            heights = [100 * r.tier_hit_rate(tier) for _, r in rows]
            ax.bar(xs, heights, bottom=bottom, label=tier)
            bottom = [b + h for b, h in zip(bottom, heights)]
        ax.axhline(100 * unlimited, color="black", linestyle="--", linewidth=1, label="unlimited cache")
        ax.set_xticks(list(xs), [f"{p // 1000}k" for p, _ in rows])
        ax.set_xlabel(f"primary tier (512-token blocks); host {host // 1000}k, disk {disk // 1000}k")
        ax.set_ylabel("prefix hit rate (%)")
        ax.legend(fontsize=8)

    report.plot("kv_tiers_hit_rate", "Mooncake conversation trace: hit rate by tier", draw)


def _heap_and_stats(path: Path) -> None:
    with open_text(path) as f:
        prompts = [int(row["ContextTokens"]) for row in csv.DictReader(f)]
    heap = IndexedHeap()
    with Timer() as t:
        for request_id, tokens in enumerate(prompts):
            heap.push(request_id, float(tokens))
        # A request that streamed part of its prompt already has fewer tokens left.
        heap.decrease_key(len(prompts) - 1, 1.0)
        order = [heap.pop()[1] for _ in range(len(prompts))]
    print(f"{len(prompts):,} requests of the Azure LLM code trace: pushed and popped in {t.elapsed * 1e3:.1f} ms; first out: {order[:5]}")
    p = compute_percentiles(prompts)
    s = calculate_statistics(prompts)
    print(
        f"prompt tokens: p50 {p['p50']:.0f}, p95 {p['p95']:.0f}, p99 {p['p99']:.0f}; "
        f"mean {s['mean']:.1f} (95% CI {s['ci_lower']:.1f} to {s['ci_upper']:.1f}), cv {s['cv']:.0f}%"
    )


def _scheduling(report: Report, path: Path) -> None:
    trace = load_azure_trace(path)
    print(
        f"{len(trace):,} requests over {trace.duration_s:,.0f} s at 2x their real rate, 8 model replicas, "
        "static batches of up to 32 (service model: python -m llmds replay azure --help)"
    )
    with Timer() as t:
        results = [replay_azure(trace, policy, load=2.0, max_wait_ms=50.0, replicas=8) for policy in track(POLICIES, "  replaying")]
    print("\n".join(format_results(results)[1:]))
    print("batching target: " + check_batching_target(results)[0])
    limited = replay_azure(trace, "llmds", load=2.0, replicas=8, qps_limit=8.0)
    print(
        f"with admission at 8 req/s: {limited.rejected:,} of {limited.requests:,} turned away "
        f"('qps_limit'), p95 queue wait {limited.queue_wait_ms['p95']:,.0f} ms "
        f"(replayed in {t.elapsed:.1f} s)"
    )

    def draw(ax) -> None:
        marks = ("p50", "p95", "p99")
        width = 0.8 / len(results)
        for i, r in enumerate(results):
            ax.bar([m + i * width for m in range(len(marks))], [r.latency_ms[k] / 1e3 for k in marks], width, label=r.label)
        ax.set_xticks([m + width * (len(results) - 1) / 2 for m in range(len(marks))], [f"latency {k}" for k in marks])
        ax.set_ylabel("seconds (log scale)")
        ax.set_yscale("log")
        ax.legend()

    report.plot("scheduler_latency", "Azure conversation trace at 2x: end-to-end latency by policy", draw)


def _hnsw(report: Report, folder: Path) -> None:
    n, n_queries, k = 10_000, 1_000, 10
    base_u8 = read_idx_images(folder / "train-images-idx3-ubyte.gz", n)
    queries_u8 = read_idx_images(folder / "t10k-images-idx3-ubyte.gz", n_queries)
    base, queries = base_u8.astype("float32"), queries_u8.astype("float32")
    exact = squared_distances(base_u8, queries_u8)  # exact on 8-bit pixels
    kth = kth_nearest_distances(base_u8, queries_u8, k)  # the 10th true distance of each query
    index = HNSW(784, seed=1)
    with Timer() as t, Progress(len(base), "  building") as bar:
        for start in range(0, len(base), 1_000):  # in chunks, so the bar can move
            chunk = base[start : start + 1_000]
            index.add_batch(chunk, list(range(start, start + len(chunk))), num_threads=2)
            bar.update(len(chunk))
    print(f"built M=16, ef_construction=200 on 2 threads in {t.elapsed:.1f} s ({index.stats()['memory_bytes'] / 2**20:.0f} MiB)")
    print("  ef   recall@10   queries/s (1 thread)")
    curve = []
    for ef in (10, 16, 32, 64, 128, 256):
        with Timer() as t:
            ids, _ = index.search_batch(queries, k, ef=ef, num_threads=1)
        # Tie-aware: a hit if no farther than the 10th true neighbour, in exact arithmetic.
        recall = tie_aware_recall(base_u8, queries_u8, ids.astype(np.int64), kth)
        curve.append((ef, recall, len(queries) / t.elapsed))
        print(f"  {ef:>3}   {recall:>9.3f}   {curve[-1][2]:>20,.0f}")
    labels = read_idx_labels(folder / "train-labels-idx1-ubyte.gz", n)
    query_labels = read_idx_labels(folder / "t10k-labels-idx1-ubyte.gz", n_queries)
    by_class = [set(map(int, (labels == c).nonzero()[0])) for c in range(10)]
    hits = 0
    for qi in range(200):
        same = np.where(labels == query_labels[qi], exact[qi], np.inf)
        limit = np.partition(same, k - 1)[k - 1]
        found = index.search(queries[qi], k, ef=200, filter=by_class[int(query_labels[qi])])
        hits += sum(exact[qi, i] <= limit for i, _ in found)
    print(f"filtered to the query's class (10% of the index), ef 200: recall@10 {hits / (200 * k):.3f}")

    def draw(ax) -> None:
        ax.plot([r for _, r, _ in curve], [q for _, _, q in curve], marker="o")
        for ef, r, q in curve:
            ax.annotate(f"ef {ef}", (r, q), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlabel("recall@10")
        ax.set_ylabel("queries per second (1 thread)")
        ax.set_yscale("log")

    report.plot("hnsw_recall_qps", "HNSW on Fashion-MNIST (10k): recall@10 vs queries per second", draw)


def _judged_collections(data: Path) -> list[IRCollection] | None:
    try:
        return [load_collection(name, data / "ir") for name in ("cranfield", "cisi")]
    except FileNotFoundError:
        return None


def _bm25_judged(collections: list[IRCollection]) -> None:
    print("  collection   docs   queries   MAP (Xapian)    nDCG@10 (Xapian)   bits/posting   queries/s")
    for c in collections:
        index = InvertedIndex(stem=True, stop_words=True)
        index.add_documents(list(c.documents), list(c.documents.values()))
        texts = list(c.queries.values())
        with Timer() as t:
            results = index.search_batch(texts, top_k=1000)
        runs = {q: [d for d, _ in hits] for q, hits in zip(c.queries, results)}
        m = evaluate(runs, c.qrels)
        ref_map, ref_ndcg = XAPIAN_REFERENCE[c.name]
        print(
            f"  {c.name:<10} {len(c.documents):>6} {len(c.queries):>9}   {m['MAP']:.3f} ({ref_map:.3f})  "
            f"{m['nDCG@10']:>8.3f} ({ref_ndcg:.3f})   {index.stats()['bits_per_posting']:>12.1f}   "
            f"{len(texts) / t.elapsed:>9,.0f}"
        )


def _bm25_packages(c: IRCollection, names: list[str]) -> None:
    index = InvertedIndex(stem=True, stop_words=True)
    with Timer() as t:
        index.add_documents(list(c.documents), list(c.documents.values()))
    s = index.stats()
    print(f"indexed {len(c.documents):,} package descriptions in {t.elapsed:.1f} s ({s['bits_per_posting']:.1f} bits per posting)")
    # Every 64th package's summary as a query: a known-item search, so success@10 can be counted.
    probes = list(c.documents)[::64]
    queries = [c.documents[d].split(": ", 1)[1] for d in probes]
    with Timer() as t:
        results = index.search_batch(queries, top_k=10)
    found = sum(d in {hit for hit, _ in hits} for d, hits in zip(probes, results))
    print(
        f"{len(queries):,} summary lines as queries: {len(queries) / t.elapsed:,.0f} queries/s (1 thread); "
        f"the package described is in the top 10 for {found / len(queries):.1%}"
    )
    for query in PACKAGE_QUERIES:
        top = index.search(query, top_k=3)
        print(f"'{query}': " + "; ".join(f"{names[d]} ({score:.1f})" for d, score in top))


def _lsa_embeddings(index: InvertedIndex, texts: Sequence[str], dim: int, seed: int = 0, max_terms: int = 4096):
    """Latent semantic analysis: TF-IDF rows over the `max_terms` most frequent terms, reduced to
    `dim` dimensions by a randomised SVD. Returns the document embeddings and a function that
    folds a query text into the same space."""
    with Progress(2 * len(texts), "  embedding") as bar:  # one bar for both passes over the texts
        rows = []
        for text in texts:
            rows.append(Counter(index.analyze(text)))
            bar.update()
        df = Counter(term for row in rows for term in row)
        vocabulary = {term: i for i, (term, _) in enumerate(df.most_common(max_terms))}
        idf = np.log(len(rows) / np.array([df[term] for term in vocabulary], dtype=np.float64))

        def tfidf(counts: Counter[str]) -> np.ndarray:
            v = np.zeros(len(vocabulary), dtype=np.float32)
            for term, tf in counts.items():
                if term in vocabulary:
                    v[vocabulary[term]] = (1 + np.log(tf)) * idf[vocabulary[term]]
            return v

        matrix = np.zeros((len(rows), len(vocabulary)), dtype=np.float32)
        for i, row in enumerate(rows):
            matrix[i] = tfidf(row)
            bar.update()
    sketch = matrix @ np.random.default_rng(seed).normal(size=(len(vocabulary), dim + 20)).astype(np.float32)
    q_basis, _ = np.linalg.qr(sketch)
    _, _, vt = np.linalg.svd(q_basis.T @ matrix, full_matrices=False)
    components = vt[:dim].T  # vocabulary -> latent dimensions
    docs = (matrix @ components).astype(np.float32)
    return docs, lambda text: (tfidf(Counter(index.analyze(text))) @ components).astype(np.float32)


def _hybrid_pipeline(c: IRCollection, limit: int | None = None):
    doc_ids = list(c.documents)[:limit]
    texts = [c.documents[d] for d in doc_ids]
    index = InvertedIndex(stem=True, stop_words=True)
    with Timer() as t:
        embeddings, embed_query = _lsa_embeddings(index, texts, dim=128)
    print(f"embedded {len(texts):,} documents by latent semantic analysis (128 dimensions) in {t.elapsed:.1f} s")
    pipeline = RetrievalPipeline(128, stem=True, stop_words=True, seed=1, candidates=1000)
    for doc_id, text, vector in track(zip(doc_ids, texts, embeddings), "  indexing", total=len(doc_ids)):
        # An empty document has no direction to embed; it is indexed for BM25 only.
        pipeline.add_document(doc_id, text, vector if vector.any() else None)
    return pipeline, embed_query


def _hybrid_judged(c: IRCollection) -> None:
    pipeline, embed_query = _hybrid_pipeline(c)
    query_vectors = {q: embed_query(text) for q, text in c.queries.items()}
    print("  ranking                     MAP    nDCG@10")
    for label, weight, fusion in (
        ("BM25 alone", 0.0, "weighted"),
        ("dense alone", 1.0, "weighted"),
        ("weighted fusion (w = 0.5)", 0.5, "weighted"),
        ("reciprocal rank fusion", 0.5, "rrf"),
    ):
        runs = {
            q: [d for d, _ in pipeline.search(text, query_vectors[q], top_k=1000, fusion_weight=weight, fusion=fusion)]
            for q, text in c.queries.items()
        }
        m = evaluate(runs, c.qrels)
        print(f"  {label:<26} {m['MAP']:.3f}   {m['nDCG@10']:.3f}")
    qid = c.judged_query_ids[0]
    print(f"query {qid}: {' '.join(c.queries[qid].split())[:100]}")
    for rank, (doc, score) in enumerate(pipeline.search(c.queries[qid], query_vectors[qid], top_k=3), 1):
        mark = "relevant" if doc in c.qrels.get(qid, {}) else "not judged relevant"
        print(f"  {rank}. doc {doc} ({score:.3f}, {mark}): {' '.join(c.documents[doc].split())[:70]}")
    _hot_query(pipeline, c.queries[qid], query_vectors[qid])


def _hybrid_packages(c: IRCollection, names: list[str]) -> None:
    pipeline, embed_query = _hybrid_pipeline(c, limit=20_000)
    print("(the first 20,000 packages by name; no judgments, so sample results)")
    for query in PACKAGE_QUERIES:
        vector = embed_query(query)
        for label, weight in (("BM25", 0.0), ("hybrid", 0.5)):
            top = pipeline.search(query, vector, top_k=3, fusion_weight=weight, fusion="rrf" if weight else "weighted")
            print(f"  {label:<6} '{query}': " + "; ".join(names[d] for d, _ in top))
    _hot_query(pipeline, PACKAGE_QUERIES[0], embed_query(PACKAGE_QUERIES[0]))


def _hot_query(pipeline: RetrievalPipeline, text: str, vector: np.ndarray) -> None:
    for _ in range(4):  # a hot query: counted, then answered from the cache
        pipeline.search(text, vector, top_k=3)
    s = pipeline.stats()
    print(f"hot-query cache: {s['searches']:,} searches, {s['cache_hits']} answered from the cache")


def _engine(model: Path, tokenizer: Path) -> None:
    engine = Engine(model, tokenizer)
    c = engine.config
    print(
        f"model: {c['parameters']:,} parameters, {c['n_layers']} layers, dim {c['dim']}, {c['n_heads']} heads "
        f"({c['n_kv_heads']} KV heads), context {c['seq_len']}; KV pages of {c['page_size']} tokens"
    )
    request = Request("Once upon a time", max_tokens=120, sampling=SamplingParams(temperature=0.8, top_p=0.9, seed=7))
    print("Once upon a time", end="", flush=True)
    stream = engine.stream(request)
    for _, text in stream:
        print(text, end="", flush=True)
    r = stream.response()
    print(f"\n[{r.output_tokens} tokens streamed, {r.reason}, {r.tokens_per_s:,.0f} tokens/s]")
    # Sixteen requests sharing a long system prompt, decoded together.
    system = (
        "Once upon a time, there was a little girl named Lily. She loved to play outside in the park "
        "with her friends. One day, she saw a big red ball."
    )
    with Timer() as t:
        handles = [
            engine.generate_async(Request(system, max_tokens=60, sampling=SamplingParams(temperature=1.0, seed=i)))
            for i in range(16)
        ]
        results = [h.result() for h in handles]
    tokens = sum(x.output_tokens for x in results)
    saved = sum(x.cached_prompt_tokens for x in results)
    prompt = sum(x.prompt_tokens for x in results)
    print(
        f"16 requests with a {results[0].prompt_tokens}-token shared prompt: {tokens:,} tokens in {t.elapsed:.3f} s "
        f"({tokens / t.elapsed:,.0f} tokens/s together); {saved:,} of {prompt:,} prompt tokens came from the cache"
    )


def run(data: Path | None = None, out: Path = Path("llmds-demo")) -> Path:
    """Runs every section and writes ``<out>/report.md`` with its plots; returns the report's path.
    FileNotFoundError (naming every place looked) when a data set is found nowhere."""
    data = data if data is not None else data_dir()
    started = time.perf_counter()
    report = Report(f"llmds {llmds.__version__} demo", out / "report.md")
    print(f"llmds {llmds.__version__} demo")
    sources = {
        "Mooncake trace": locate(MOONCAKE, data),
        "Azure code trace": locate(AZURE_CODE, data),
        "Azure conversation trace": locate(AZURE_CONV, data),
        "Fashion-MNIST": locate(FASHION, data),
        "stories260K model": locate(STORIES_MODEL, data),
        "its tokenizer": locate(STORIES_TOKENIZER, data),
    }
    judged = _judged_collections(data)
    packages = None if judged else load_debian_packages()
    text_source = (
        f"Cranfield and CISI from {data / 'ir'}"
        if judged
        else f"{len(packages[0].documents):,} Debian package descriptions (no Cranfield/CISI in {data / 'ir'})"
    )
    for what, path in sources.items():
        print(f"data: {what}: {path}")
    print(f"data: text collection: {text_source}")
    report.preamble += machine_summary()
    report.preamble += [f"- Data: {what}: `{path}`" for what, path in sources.items()]
    report.preamble.append(f"- Data: text collection: {text_source}")

    requests = _mooncake_requests(sources["Mooncake trace"])
    with report.section("CountMinSketch: which prefix blocks of the Mooncake trace are hot"):
        _sketch(requests)
    with report.section("TokenLRU: an LRU prefix-block cache under a token budget (Mooncake trace)"):
        _token_lru(requests)
    with report.section("KVCache: pages shared by a system prompt, forked for sampling, copied on write"):
        _kv_cache_sharing()
    with report.section("Prefix-cache replay of the Mooncake conversation trace (LRU block pool, 512-token blocks)"):
        _prefix_cache_replay(report, sources["Mooncake trace"])
    with report.section("KVBlockManager: the same trace through primary, host and disk tiers"):
        _tiered_replay(report, sources["Mooncake trace"])
    with report.section("IndexedHeap: shortest-prompt-first queue; utils: latency statistics"):
        _heap_and_stats(sources["Azure code trace"])
    with report.section("Scheduler + AdmissionController: the Azure conversation trace on simulated time"):
        _scheduling(report, sources["Azure conversation trace"])
    with report.section("HNSW: Fashion-MNIST (first 10,000 train images, 1,000 test queries, exact ground truth)"):
        _hnsw(report, sources["Fashion-MNIST"])
    if judged:
        with report.section("InvertedIndex: BM25 (Lucene's formula) on Cranfield and CISI, Porter stemmer and stop words"):
            _bm25_judged(judged)
        with report.section(f"RetrievalPipeline: hybrid search on {judged[0].name} (BM25 + HNSW over LSA embeddings)"):
            _hybrid_judged(judged[0])
    else:
        with report.section("InvertedIndex: BM25 (Lucene's formula) on the Debian package descriptions"):
            _bm25_packages(*packages)
        with report.section("RetrievalPipeline: hybrid search on the Debian package descriptions (BM25 + HNSW over LSA embeddings)"):
            _hybrid_packages(*packages)
    with report.section("Engine: stories260K, paged attention over the KV cache, continuous batching"):
        _engine(sources["stories260K model"], sources["its tokenizer"])
    report.preamble.append(f"- Run time: {time.perf_counter() - started:.0f} s")
    if report.plots_skipped:
        print(f"\nnote: {report.plots_skipped}")
    return report.write()

