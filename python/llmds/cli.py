"""The ``llmds`` command line.

    python -m llmds demo                      each structure at work on the shared data
    python -m llmds replay mooncake TRACE --capacity-blocks N [N ...]
                                              a Mooncake trace through the prefix cache
    python -m llmds replay azure TRACE [--loads X ...] [--max-wait-ms MS ...]
                                              an Azure LLM trace through admission and batching
    python -m llmds generate --prompt "Once upon a time"
                                              stream a story from the stories260K model
    python -m llmds version
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import llmds
from llmds.cmsketch import CountMinSketch
from llmds.data import data_dir, read_idx_images, read_idx_labels, read_ivecs
from llmds.engine import STORIES_MODEL, STORIES_TOKENIZER, Engine, Request, SamplingParams
from llmds.hnsw import HNSW
from llmds.indexed_heap import IndexedHeap
from llmds.inverted_index import InvertedIndex
from llmds.ir import IRCollection, evaluate, load_collection
from llmds.kv_cache import KVCache
from llmds import replay as replay_module
from llmds.progress import Progress, track
from llmds.replay import (
    POLICIES,
    ServiceModel,
    check_seed_claim,
    compare_policies,
    format_results,
    load_azure_trace,
    replay_azure,
)
from llmds.retrieval_pipeline import RetrievalPipeline
from llmds.token_lru import TokenLRU
from llmds.traces import load_mooncake_trace, replay_prefix_cache
from llmds.utils import Timer, calculate_statistics, compute_percentiles, memory_profiler

MOONCAKE = "traces/mooncake_fast25_conversation_trace.jsonl"
MOONCAKE_SYNTHETIC = "traces/mooncake_fast25_synthetic_trace.jsonl"
AZURE_CODE = "traces/azure_llm_2023_code.csv"
AZURE_CONV = "traces/azure_llm_2023_conv.csv"
BLOCK_TOKENS = 512  # the Mooncake traces hash prompts in 512-token blocks
FASHION = "ann/fashion-mnist"
# Xapian BM25 (k1 1.2, b 0.75, stemmed, stop words removed) on the same collections: ir/README.md.
XAPIAN_REFERENCE = {"cranfield": (0.294, 0.373), "cisi": (0.215, 0.373)}


def _mooncake_requests(path: Path) -> Iterator[tuple[int, list[int]]]:
    """(input_length, hash_ids) of each request of a Mooncake trace."""
    with path.open() as f:
        for line in f:
            record = json.loads(line)
            yield record["input_length"], record["hash_ids"]


def _synthetic_requests(n: int = 12_000, seed: int = 0) -> Iterator[tuple[int, list[int]]]:
    """Requests whose prompts share Zipf-popular prefixes: a stand-in when the trace is absent."""
    rng = random.Random(seed)
    next_block = 1000
    for _ in range(n):
        prefix = [0, 1 + min(int(rng.paretovariate(1.1)), 200)]
        unique = list(range(next_block, next_block + rng.randint(1, 20)))
        next_block += len(unique)
        blocks = prefix + unique
        yield len(blocks) * BLOCK_TOKENS, blocks


def _section(title: str) -> None:
    print(f"\n== {title}")


def _demo_sketch(requests: list[tuple[int, list[int]]]) -> None:
    _section("CountMinSketch: which prefix blocks are hot")
    blocks = [str(b) for _, ids in requests for b in ids]
    with memory_profiler() as exact_mem:
        exact = Counter(blocks)
        exact_mem.sample()
    print(
        f"{len(blocks):,} block references, {len(exact):,} distinct "
        f"(an exact Counter of them took ~{max(exact_mem.get_memory_delta_mb(), 0.0):.0f} MB)"
    )
    print("   width   memory   fill ms   mean over   max over   bound e/w*N   top-5 exact")
    true_top = {count for _, count in exact.most_common(5)}
    for width in (2048, 16384):  # the seed's default, and 8x wider
        sketch = CountMinSketch(width=width, depth=4, top_k=5)
        with Timer() as t:
            sketch.add_many(blocks)
        errors = [sketch.estimate(b) - c for b, c in exact.items()]
        assert min(errors) >= 0, "a count-min estimate fell below the true count"
        hitters = sketch.heavy_hitters()
        right = sum(exact[item] in true_top for item, _ in hitters)
        print(
            f"  {width:>6}  {sketch.stats()['memory_bytes'] // 1024:>5} KiB  {t.elapsed * 1e3:>8.0f}"
            f"  {sum(errors) / len(errors):>10.2f}  {max(errors):>9}  {sketch.get_error_bound():>12.0f}"
            f"  {right:>8}/5"
        )
    print("heavy hitters of the wider sketch (item, estimate, exact):")
    print("  " + ", ".join(f"({item}, {est}, {exact[item]})" for item, est in hitters))


def _demo_token_lru(requests: list[tuple[int, list[int]]]) -> None:
    _section("TokenLRU: an LRU prefix-block cache under a token budget")
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
        stats = cache.stats()
        print(f"  {budget_blocks * BLOCK_TOKENS:>15,}   {hits / total_blocks:>21.1%}   {stats['evictions']:>9,}")


def _demo_heap_and_stats(dir_: Path) -> None:
    _section("IndexedHeap: shortest-prompt-first queue; utils: latency statistics")
    path = dir_ / AZURE_CODE
    if path.exists():
        with path.open() as f:
            prompts = [int(row["ContextTokens"]) for row in csv.DictReader(f)]
        source = f"{len(prompts):,} requests of the Azure LLM code trace"
    else:
        rng = random.Random(1)
        prompts = [int(rng.lognormvariate(7.3, 0.9)) for _ in range(8_819)]
        source = f"{len(prompts):,} synthetic requests (Azure trace not found)"
    heap = IndexedHeap()
    with Timer() as t:
        for request_id, tokens in enumerate(prompts):
            heap.push(request_id, float(tokens))
        # A request that streamed part of its prompt already has fewer tokens left.
        heap.decrease_key(len(prompts) - 1, 1.0)
        order = [heap.pop()[1] for _ in range(len(prompts))]
    print(f"{source}: pushed and popped in {t.elapsed * 1e3:.1f} ms; first out: {order[:5]}")
    p = compute_percentiles(prompts)
    s = calculate_statistics(prompts)
    print(
        f"prompt tokens: p50 {p['p50']:.0f}, p95 {p['p95']:.0f}, p99 {p['p99']:.0f}; "
        f"mean {s['mean']:.1f} (95% CI {s['ci_lower']:.1f} to {s['ci_upper']:.1f}), cv {s['cv']:.0f}%"
    )


def _demo_scheduling(dir_: Path) -> None:
    _section("Scheduler + AdmissionController: the Azure conversation trace on simulated time")
    path = dir_ / AZURE_CONV
    if not path.exists():
        print(f"{path} not found (set LLMDS_DATA_DIR); skipping the replay")
        return
    trace = load_azure_trace(path)
    print(
        f"{len(trace):,} requests over {trace.duration_s:,.0f} s at 2x their real rate, 8 model replicas, "
        "static batches of up to 32 (service model: python -m llmds replay azure --help)"
    )
    with Timer() as t:
        results = [
            replay_azure(trace, policy, load=2.0, max_wait_ms=50.0, replicas=8)
            for policy in track(POLICIES, "  replaying")
        ]
    print("\n".join(format_results(results)[1:]))
    print("seed 003 claim: " + check_seed_claim(results)[0])
    limited = replay_azure(trace, "llmds", load=2.0, replicas=8, qps_limit=8.0)
    print(
        f"with admission at 8 req/s: {limited.rejected:,} of {limited.requests:,} turned away "
        f"('qps_limit'), p95 queue wait {limited.queue_wait_ms['p95']:,.0f} ms "
        f"(replayed in {t.elapsed:.1f} s)"
    )


def _demo_engine(dir_: Path) -> None:
    _section("Engine: stories260K, paged attention over the KV cache, continuous batching")
    model, tokenizer = dir_ / STORIES_MODEL, dir_ / STORIES_TOKENIZER
    if not model.exists() or not tokenizer.exists():
        print(f"{model} not found (set LLMDS_DATA_DIR); skipping the engine")
        return
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


def _print_replay(path: Path, capacities: Sequence[int], block_size: int = BLOCK_TOKENS) -> None:
    trace = load_mooncake_trace(path)
    print(f"{path.name}: {len(trace):,} requests, {trace.total_input_tokens:,} prompt tokens")
    print("  capacity (blocks)   hit rate   blocks from cache   blocks written   evictions   us/request")
    for capacity in track(capacities, "  replaying"):
        r = replay_prefix_cache(trace, capacity, block_size)
        print(
            f"  {capacity:>17,}   {r.hit_rate:>7.2%}   {r.hit_blocks:>17,}   {r.allocated_blocks:>14,}"
            f"   {r.evictions:>9,}   {r.microseconds_per_request:>10.2f}"
        )


def _demo_kv_cache(dir_: Path) -> None:
    _section("KVCache: pages shared by a system prompt, forked for sampling, copied on write")
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

    _section("Prefix-cache replay of the Mooncake traces (LRU block pool, 512-token blocks)")
    for name in (MOONCAKE, MOONCAKE_SYNTHETIC):
        path = dir_ / name
        if path.exists():
            _print_replay(path, (1_000, 16_000, 100_000))
        else:
            print(f"{path} not found (set LLMDS_DATA_DIR); replay skipped")


def _demo_hnsw(dir_: Path) -> None:
    _section("HNSW: Fashion-MNIST (first 10,000 train images, 1,000 test queries, exact ground truth)")
    folder = dir_ / FASHION
    if not folder.exists():
        print(f"{folder} not found (set LLMDS_DATA_DIR); HNSW section skipped")
        return
    base = read_idx_images(folder / "train-images-idx3-ubyte.gz", 10_000).astype("float32")
    queries = read_idx_images(folder / "t10k-images-idx3-ubyte.gz", 1_000).astype("float32")
    kth = read_ivecs(folder / "fashion-mnist-10k_groundtruth_l2sq.ivecs")[:, 9:10]
    index = HNSW(784, seed=1)
    with Timer() as t, Progress(len(base), "  building") as bar:
        for start in range(0, len(base), 1_000):  # in chunks, so the bar can move
            chunk = base[start : start + 1_000]
            index.add_batch(chunk, list(range(start, start + len(chunk))), num_threads=2)
            bar.update(len(chunk))
    print(f"built M=16, ef_construction=200 on 2 threads in {t.elapsed:.1f} s ({index.stats()['memory_bytes'] / 2**20:.0f} MiB)")
    print("  ef   recall@10   queries/s (1 thread)")
    for ef in (16, 50, 200):
        with Timer() as t:
            _, dists = index.search_batch(queries, 10, ef=ef, num_threads=1)
        recall = float((dists <= kth).mean())  # tie-aware: a hit if no farther than the 10th true neighbour
        print(f"  {ef:>3}   {recall:>9.3f}   {len(queries) / t.elapsed:>20,.0f}")
    labels = read_idx_labels(folder / "train-labels-idx1-ubyte.gz", 10_000)
    query_labels = read_idx_labels(folder / "t10k-labels-idx1-ubyte.gz", 1_000)
    same_kth = read_ivecs(folder / "fashion-mnist-10k_groundtruth_sameclass_l2sq.ivecs")[:, 9]
    by_class = [set(map(int, (labels == c).nonzero()[0])) for c in range(10)]
    hits = 0
    for q, c, limit in zip(queries[:200], query_labels[:200], same_kth[:200]):
        hits += sum(d <= limit for _, d in index.search(q, 10, ef=200, filter=by_class[int(c)]))
    print(f"filtered to the query's class (10% of the index), ef 200: recall@10 {hits / 2000:.3f}")


def _lsa_embeddings(index: InvertedIndex, texts: Sequence[str], dim: int, seed: int = 0) -> tuple[object, object]:
    """Latent semantic analysis: TF-IDF rows reduced to `dim` dimensions by a randomised SVD. Returns
    the document embeddings and a function that folds a query text into the same space."""
    import numpy as np

    vocabulary: dict[str, int] = {}
    rows = [Counter(index.analyze(text)) for text in texts]
    for row in rows:
        for term in row:
            vocabulary.setdefault(term, len(vocabulary))
    df = np.zeros(len(vocabulary))
    for row in rows:
        for term in row:
            df[vocabulary[term]] += 1
    idf = np.log(len(rows) / df)

    def tfidf(counts: Counter[str]) -> np.ndarray:
        v = np.zeros(len(vocabulary))
        for term, tf in counts.items():
            if term in vocabulary:
                v[vocabulary[term]] = (1 + np.log(tf)) * idf[vocabulary[term]]
        return v

    matrix = np.stack([tfidf(row) for row in rows])
    sketch = matrix @ np.random.default_rng(seed).normal(size=(len(vocabulary), dim + 20))
    q_basis, _ = np.linalg.qr(sketch)
    _, _, vt = np.linalg.svd(q_basis.T @ matrix, full_matrices=False)
    components = vt[:dim].T  # vocabulary -> latent dimensions
    docs = (matrix @ components).astype(np.float32)
    return docs, lambda text: (tfidf(Counter(index.analyze(text))) @ components).astype(np.float32)


def _demo_retrieval(dir_: Path) -> None:
    _section("InvertedIndex: BM25 (Lucene's formula) on Cranfield and CISI, Porter stemmer and stop words")
    try:
        collections = [load_collection(name, dir_ / "ir") for name in ("cranfield", "cisi")]
    except FileNotFoundError as e:
        print(f"{e}; retrieval section skipped (set LLMDS_DATA_DIR)")
        return
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
    _demo_hybrid(collections[0])


def _demo_hybrid(c: IRCollection) -> None:
    _section(f"RetrievalPipeline: hybrid search on {c.name} (BM25 + HNSW over 128-d LSA embeddings)")
    index = InvertedIndex(stem=True, stop_words=True)
    doc_ids, texts = list(c.documents), list(c.documents.values())
    with Timer() as t:
        embeddings, embed_query = _lsa_embeddings(index, texts, dim=128)
    print(f"embedded {len(texts):,} documents by latent semantic analysis in {t.elapsed:.1f} s")
    pipeline = RetrievalPipeline(128, stem=True, stop_words=True, seed=1, candidates=1000)
    for doc_id, text, vector in zip(doc_ids, texts, embeddings):  # type: ignore[call-overload]
        # An empty document has no direction to embed; it is indexed for BM25 only.
        pipeline.add_document(doc_id, text, vector if vector.any() else None)
    query_vectors = {q: embed_query(text) for q, text in c.queries.items()}  # type: ignore[operator]
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
    for _ in range(3):  # a hot query: counted, then answered from the cache
        pipeline.search(c.queries[qid], query_vectors[qid], top_k=3)
    s = pipeline.stats()
    print(f"hot-query cache: {s['searches']:,} searches, {s['cache_hits']} answered from the cache")


def replay(args: argparse.Namespace) -> int:
    path = Path(args.trace)
    if not path.exists():
        print(f"llmds replay: no such trace file: {path}", file=sys.stderr)
        return 2
    try:
        _print_replay(path, args.capacity_blocks, args.block_size)
    except (ValueError, MemoryError, OSError) as e:
        print(f"llmds replay: {e}", file=sys.stderr)
        return 2
    return 0


def replay_azure_command(args: argparse.Namespace) -> int:
    path = Path(args.trace)
    if not path.exists():
        print(f"llmds replay: no such trace file: {path}", file=sys.stderr)
        return 2
    try:
        trace = load_azure_trace(path)
        service = ServiceModel(
            batch_overhead_ms=args.batch_overhead_ms,
            prefill_tokens_per_s=args.prefill_tokens_per_s,
            decode_step_ms=args.decode_step_ms,
            decode_ms_per_sequence=args.decode_ms_per_sequence,
        )
        print(
            f"{path.name}: {len(trace):,} requests over {trace.duration_s:,.0f} s "
            f"({len(trace) / max(trace.duration_s, 1e-9):.2f} req/s); {args.replicas} replica(s), "
            f"max_batch_size {args.max_batch_size}; {service}"
        )
        results = compare_policies(
            trace,
            loads=args.loads,
            waits_ms=args.max_wait_ms,
            max_batch_size=args.max_batch_size,
            replicas=args.replicas,
            service=service,
            slo_ttft_ms=args.slo_ttft_ms,
            slo_tpot_ms=args.slo_tpot_ms,
            qps_limit=args.qps_limit,
            token_rate_limit=args.token_rate_limit,
            limit=args.limit,
        )
    except (ValueError, OSError) as e:
        print(f"llmds replay: {e}", file=sys.stderr)
        return 2
    print("\n".join(format_results(results)))
    if 50.0 in args.max_wait_ms:
        print("seed 003 claim (max_wait_ms=50: ~95% of max batching's throughput at p95 < 100 ms):")
        print("\n".join("  " + line for line in check_seed_claim(results)))
    return 0


def generate(args: argparse.Namespace) -> int:
    folder = Path(args.data_dir) if args.data_dir else data_dir()
    model = Path(args.model) if args.model else folder / STORIES_MODEL
    tokenizer = Path(args.tokenizer) if args.tokenizer else folder / STORIES_TOKENIZER
    try:
        engine = Engine(model, tokenizer)
        sampling = SamplingParams(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed)
        request = Request(args.prompt, max_tokens=args.max_tokens, sampling=sampling)
        print(args.prompt, end="", flush=True)
        stream = engine.stream(request)
        for _, text in stream:
            print(text, end="", flush=True)
        r = stream.response()
    except (ValueError, OSError) as e:
        print(f"llmds generate: {e}", file=sys.stderr)
        return 2
    print()
    print(
        f"[{r.output_tokens} tokens, {r.reason}; first token after {r.time_to_first_token_s * 1e3:.2f} ms, "
        f"{r.tokens_per_s:,.0f} tokens/s]",
        file=sys.stderr,
    )
    return 0


def demo(args: argparse.Namespace) -> int:
    print(f"llmds {llmds.__version__} demo")
    dir_ = Path(args.data_dir) if args.data_dir else data_dir()
    trace = dir_ / MOONCAKE
    if trace.exists():
        requests = list(_mooncake_requests(trace))
        print(f"data: {trace} ({len(requests):,} requests)")
    else:
        requests = list(_synthetic_requests())
        print(f"data: {trace} not found (set LLMDS_DATA_DIR); using a synthetic stream instead")
    _demo_sketch(requests)
    _demo_token_lru(requests)
    _demo_kv_cache(dir_)
    _demo_heap_and_stats(dir_)
    _demo_scheduling(dir_)
    _demo_hnsw(dir_)
    _demo_retrieval(dir_)
    _demo_engine(dir_)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llmds", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser("demo", help="run each structure on real traces (or a synthetic stand-in)")
    p_demo.add_argument("--data-dir", help="the shared data folder (default: $LLMDS_DATA_DIR or ../shared/data)")
    p_demo.set_defaults(run=demo)
    p_replay = sub.add_parser("replay", help="replay a request trace (prefix cache or scheduling)")
    replay_sub = p_replay.add_subparsers(dest="format", required=True)
    p_mooncake = replay_sub.add_parser(
        "mooncake", help="a Mooncake FAST'25 trace (JSON Lines with per-block hash ids), LRU eviction"
    )
    p_mooncake.add_argument("trace", help="path of the .jsonl trace")
    p_mooncake.add_argument(
        "--capacity-blocks", type=int, nargs="+", required=True, metavar="N", help="cache capacities in blocks"
    )
    p_mooncake.add_argument("--block-size", type=int, default=BLOCK_TOKENS, help="tokens per block (default 512)")
    p_mooncake.set_defaults(run=replay)
    p_azure = replay_sub.add_parser(
        "azure",
        help="an Azure LLM inference trace (CSV) through admission and FCFS / max-batching / llmds scheduling",
        description=replay_module.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p_azure.add_argument("trace", help="path of the .csv trace (TIMESTAMP,ContextTokens,GeneratedTokens)")
    p_azure.add_argument("--loads", type=float, nargs="+", default=[0.5, 1.0, 2.0], metavar="X",
                         help="arrival-rate multipliers (default 0.5 1 2)")
    p_azure.add_argument("--max-wait-ms", type=float, nargs="+", default=[10.0, 50.0, 200.0], metavar="MS",
                         help="max_wait_ms values of the llmds scheduler (default 10 50 200)")
    p_azure.add_argument("--max-batch-size", type=int, default=32)
    p_azure.add_argument("--replicas", type=int, default=8, help="model replicas serving batches (default 8)")
    p_azure.add_argument("--slo-ttft-ms", type=float, default=2000.0, help="SLO: time to first token part (ms)")
    p_azure.add_argument("--slo-tpot-ms", type=float, default=50.0, help="SLO: ms per output token")
    p_azure.add_argument("--qps-limit", type=float, help="admission: requests per second (default none)")
    p_azure.add_argument("--token-rate-limit", type=float, help="admission: tokens per second (default none)")
    p_azure.add_argument("--limit", type=int, help="replay only the first N requests")
    model = ServiceModel()
    p_azure.add_argument("--batch-overhead-ms", type=float, default=model.batch_overhead_ms)
    p_azure.add_argument("--prefill-tokens-per-s", type=float, default=model.prefill_tokens_per_s)
    p_azure.add_argument("--decode-step-ms", type=float, default=model.decode_step_ms)
    p_azure.add_argument("--decode-ms-per-sequence", type=float, default=model.decode_ms_per_sequence)
    p_azure.set_defaults(run=replay_azure_command)
    p_gen = sub.add_parser("generate", help="stream text from a llama2.c model (default: stories260K)")
    p_gen.add_argument("--prompt", default="", help="the prompt (default: empty, a story from scratch)")
    p_gen.add_argument("--max-tokens", type=int, default=256)
    p_gen.add_argument("--temperature", type=float, default=1.0, help="0 for greedy (default 1.0)")
    p_gen.add_argument("--top-k", type=int, default=0, help="0 for off")
    p_gen.add_argument("--top-p", type=float, default=0.9, help="nucleus sampling (default 0.9; 1 for off)")
    p_gen.add_argument("--seed", type=int, help="random seed (default: from the system)")
    p_gen.add_argument("--model", help="a llama2.c v0 checkpoint (default: the shared data's stories260K.bin)")
    p_gen.add_argument("--tokenizer", help="its llama2.c tokenizer (default: the shared data's tok512.bin)")
    p_gen.add_argument("--data-dir", help="the shared data folder (default: $LLMDS_DATA_DIR or ../shared/data)")
    p_gen.set_defaults(run=generate)
    p_version = sub.add_parser("version", help="print the version")
    p_version.set_defaults(run=lambda _: print(llmds.__version__) or 0)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
