"""The ``llmds`` command line.

    python -m llmds demo                      each structure at work on the shared data
    python -m llmds replay mooncake TRACE --capacity-blocks N [N ...]
                                              a Mooncake trace through the prefix cache
    python -m llmds version
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import llmds
from llmds.cmsketch import CountMinSketch
from llmds.data import data_dir
from llmds.indexed_heap import IndexedHeap
from llmds.kv_cache import KVCache
from llmds.token_lru import TokenLRU
from llmds.traces import load_mooncake_trace, replay_prefix_cache
from llmds.utils import Timer, calculate_statistics, compute_percentiles, memory_profiler

MOONCAKE = "traces/mooncake_fast25_conversation_trace.jsonl"
MOONCAKE_SYNTHETIC = "traces/mooncake_fast25_synthetic_trace.jsonl"
AZURE_CODE = "traces/azure_llm_2023_code.csv"
BLOCK_TOKENS = 512  # the Mooncake traces hash prompts in 512-token blocks


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


def _print_replay(path: Path, capacities: Sequence[int], block_size: int = BLOCK_TOKENS) -> None:
    trace = load_mooncake_trace(path)
    print(f"{path.name}: {len(trace):,} requests, {trace.total_input_tokens:,} prompt tokens")
    print("  capacity (blocks)   hit rate   blocks from cache   blocks written   evictions   us/request")
    for capacity in capacities:
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
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llmds", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser("demo", help="run each structure on real traces (or a synthetic stand-in)")
    p_demo.add_argument("--data-dir", help="the shared data folder (default: $LLMDS_DATA_DIR or ../shared/data)")
    p_demo.set_defaults(run=demo)
    p_replay = sub.add_parser("replay", help="replay a request trace through the prefix cache")
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
    p_version = sub.add_parser("version", help="print the version")
    p_version.set_defaults(run=lambda _: print(llmds.__version__) or 0)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
