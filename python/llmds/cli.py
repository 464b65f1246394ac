"""The ``llmds`` command line.

    python -m llmds demo [--out DIR]          every family at work on real data, a report with plots
    python -m llmds bench [--quick]           llmds beside its peers: docs/benchmarks.md and its plots
    python -m llmds replay mooncake TRACE --capacity-blocks N [N ...]
                                              a Mooncake trace through the prefix cache
    python -m llmds replay mooncake TRACE --tiers primary=6000 host=16000 disk=200000
                                              the same through a tiered cache (llmds.kv_block_manager);
                                              --block-bytes B --disk-dir DIR moves real blocks
    python -m llmds replay azure TRACE [--loads X ...] [--max-wait-ms MS ...]
                                              an Azure LLM trace through admission and batching
    python -m llmds generate --prompt "Once upon a time"
                                              stream a story from the stories260K model
    python -m llmds version
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import llmds
from llmds import benchmarks
from llmds import demo as demo_module
from llmds import replay as replay_module
from llmds.data import data_dir, locate
from llmds.demo import BLOCK_TOKENS
from llmds.demo import run as run_demo
from llmds.engine import STORIES_MODEL, STORIES_TOKENIZER, Engine, Request, SamplingParams
from llmds.replay import ServiceModel, check_batching_target, compare_policies, format_results, prefix_cache_sweep
from llmds.traces import load_azure_trace, load_mooncake_trace


def _print_replay(path: Path, capacities: Sequence[int], block_size: int = BLOCK_TOKENS) -> None:
    trace = load_mooncake_trace(path)
    print(f"{path.name}: {len(trace):,} requests, {trace.total_input_tokens:,} prompt tokens")
    results = prefix_cache_sweep(trace, capacities, block_size, progress="  replaying")
    print("  capacity (blocks)   hit rate   blocks from cache   blocks written   evictions   us/request")
    for capacity, r in zip(capacities, results):
        print(
            f"  {capacity:>17,}   {r.hit_rate:>7.2%}   {r.hit_blocks:>17,}   {r.allocated_blocks:>14,}"
            f"   {r.evictions:>9,}   {r.microseconds_per_request:>10.2f}"
        )


TIER_NAMES = ("primary", "host", "disk")


def parse_tiers(specs: Sequence[str]) -> dict[str, int]:
    """``["primary=6000", "host=16000"]`` -> ``{"primary": 6000, "host": 16000}``; ValueError otherwise."""
    tiers: dict[str, int] = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        if not sep or name not in TIER_NAMES or not value.isdigit():
            raise ValueError(f"--tiers takes NAME=BLOCKS with NAME one of {', '.join(TIER_NAMES)}, got {spec!r}")
        if name in tiers:
            raise ValueError(f"--tiers names {name} twice")
        tiers[name] = int(value)
    if tiers.get("primary", 0) < 1:
        raise ValueError("--tiers needs primary=BLOCKS with at least one block")
    return tiers


def _print_tiered_replay(path: Path, args: argparse.Namespace) -> None:
    tiers = parse_tiers(args.tiers)
    trace = load_mooncake_trace(path)
    print(f"{path.name}: {len(trace):,} requests, {trace.total_input_tokens:,} prompt tokens")
    r = replay_module.replay_tiered_prefix_cache(
        trace,
        tiers["primary"],
        host_blocks=tiers.get("host", 0),
        disk_blocks=tiers.get("disk", 0),
        block_size=args.block_size,
        offload_policy=args.policy,
        disk_min_uses=args.disk_min_uses,
        block_bytes=args.block_bytes,
        move_bytes=args.disk_dir is not None or args.move_bytes,
        disk_directory=args.disk_dir,
        offload_queue_blocks=args.disk_queue,
    )
    print(f"  tiers {' + '.join(f'{n} {b:,}' for n, b in tiers.items())} blocks, {args.policy}"
          + (f", disk filter: {args.disk_min_uses} uses" if args.disk_min_uses > 1 else ""))
    print("  tier         hit rate   blocks hit   onboarded      stored     evicted   dropped   filtered"
          "          bytes in         bytes out")
    for name, t in r.tiers.items():
        print(
            f"  {name:<10} {r.tier_hit_rate(name):>9.2%}   {t['hit_blocks']:>10,}   {t['onboarded_blocks']:>9,}"
            f"   {t['stored_blocks']:>9,}   {t['evicted_blocks']:>9,}   {t['dropped_offloads']:>7,}"
            f"   {t['filter_rejected']:>8,}   {t['bytes_in']:>15,}   {t['bytes_out']:>15,}"
        )
    print(f"  combined   {r.hit_rate:>9.2%}   {r.hit_blocks:>10,} of {r.lookup_blocks:,} blocks looked up;"
          f" {r.microseconds_per_request:.2f} us/request"
          + (" (moving real blocks)" if args.move_bytes or args.disk_dir is not None else " (metadata only)"))
    if r.disk is not None:
        d = r.disk
        print(f"  disk files: {d['writes']:,} written, {d['reads']:,} read, {d['write_failures']:,} failed writes, "
              f"{d['reused_files']:,} into spare files, direct I/O {'on' if d['direct_io'] else 'off'}")
    total = sum(tiers.values())
    single = replay_module.replay_prefix_cache(trace, min(total, 2**31 - 1), args.block_size)
    print(f"  one LRU tier of {total:,} blocks: {single.hit_rate:.2%}")


def _print_routed_replay(path: Path, args: argparse.Namespace) -> None:
    tiers = parse_tiers(args.tiers)
    if "disk" in tiers:
        raise ValueError("--replicas takes primary and host tiers only")
    trace = load_mooncake_trace(path)
    n = args.replicas
    primary, host = tiers["primary"], tiers.get("host", 0)
    print(f"{path.name}: {len(trace):,} requests over {n} replicas of primary {primary:,}"
          + (f" + host {host:,}" if host else "") + " blocks")
    print("  routing        hit rate   requests per replica (most / fewest)      us/request")
    for routing in ("round-robin", "kv-aware"):
        r = replay_module.replay_routed_prefix_cache(trace, n, primary, host_blocks=host, block_size=args.block_size,
                                                     routing=routing, max_imbalance=args.max_imbalance)
        loads = r.requests_per_replica
        print(f"  {routing:<12} {r.hit_rate:>9.2%}   {max(loads):>9,} / {min(loads):<9,} ({r.imbalance:.3f}x)"
              f"   {r.microseconds_per_request:>14.2f}")
    one = replay_module.replay_tiered_prefix_cache(trace, primary * n, host_blocks=host * n,
                                                   block_size=args.block_size)
    print(f"  one cache of primary {primary * n:,}" + (f" + host {host * n:,}" if host else "")
          + f" blocks: {one.hit_rate:.2%}")


def replay(args: argparse.Namespace) -> int:
    path = Path(args.trace)
    if not path.exists():
        print(f"llmds replay: no such trace file: {path}", file=sys.stderr)
        return 2
    try:
        if args.tiers and args.replicas > 1:
            _print_routed_replay(path, args)
        elif args.tiers:
            _print_tiered_replay(path, args)
        else:
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
        print("batching target (max_wait_ms=50: ~95% of max batching's throughput at p95 < 100 ms):")
        print("\n".join("  " + line for line in check_batching_target(results)))
    return 0


def generate(args: argparse.Namespace) -> int:
    folder = Path(args.data_dir) if args.data_dir else data_dir()
    try:
        model = Path(args.model) if args.model else locate(STORIES_MODEL, folder)
        tokenizer = Path(args.tokenizer) if args.tokenizer else locate(STORIES_TOKENIZER, folder)
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
    try:
        path = run_demo(Path(args.data_dir) if args.data_dir else None, Path(args.out))
    except FileNotFoundError as e:
        print(f"llmds demo: {e}", file=sys.stderr)
        return 2
    print(f"\nreport: {path.resolve()} (with its plots in {path.parent.resolve()})")
    return 0


def bench(args: argparse.Namespace) -> int:
    try:
        path = benchmarks.run(Path(args.out), data=Path(args.data_dir) if args.data_dir else None,
                              gbench=Path(args.gbench), quick=args.quick, sections=args.sections)
    except (ValueError, FileNotFoundError) as e:
        print(f"llmds bench: {e}", file=sys.stderr)
        return 2
    print(f"\nreport: {path.resolve()}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llmds", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser("demo", help="every structure at work on real data; writes a report with plots",
                            description=demo_module.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p_demo.add_argument("--data-dir", help="the data folder (default: $LLMDS_DATA_DIR or ../shared/data; "
                        "what it lacks comes from the package and the machine)")
    p_demo.add_argument("--out", default="llmds-demo", help="output folder of report.md and its plots (default llmds-demo)")
    p_demo.set_defaults(run=demo)
    p_bench = sub.add_parser("bench", help="llmds beside its peers (pip install .[bench]); writes docs/benchmarks.md",
                             description=benchmarks.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p_bench.add_argument("--out", default="docs/benchmarks.md", help="the report (default docs/benchmarks.md; "
                         "plots in docs/benchmarks/)")
    p_bench.add_argument("--data-dir", help="the data folder (default: $LLMDS_DATA_DIR or ../shared/data)")
    p_bench.add_argument("--gbench", default="build/cpp/bench-results",
                         help="Google Benchmark JSON folder (default build/cpp/bench-results)")
    p_bench.add_argument("--quick", action="store_true", help="small sizes, one repeat: a smoke run")
    p_bench.add_argument("--sections", nargs="+", default=list(benchmarks.SECTIONS), choices=benchmarks.SECTIONS,
                         metavar="NAME", help=f"which comparisons (default all: {' '.join(benchmarks.SECTIONS)})")
    p_bench.set_defaults(run=bench)
    p_replay = sub.add_parser("replay", help="replay a request trace (prefix cache or scheduling)")
    replay_sub = p_replay.add_subparsers(dest="format", required=True)
    p_mooncake = replay_sub.add_parser(
        "mooncake", help="a Mooncake FAST'25 trace (JSON Lines with per-block hash ids), LRU eviction"
    )
    p_mooncake.add_argument("trace", help="path of the .jsonl trace")
    sizes = p_mooncake.add_mutually_exclusive_group(required=True)
    sizes.add_argument("--capacity-blocks", type=int, nargs="+", metavar="N", help="cache capacities in blocks")
    sizes.add_argument("--tiers", nargs="+", metavar="TIER=BLOCKS",
                       help="a tiered cache: primary=N [host=N] [disk=N] (llmds.kv_block_manager)")
    p_mooncake.add_argument("--block-size", type=int, default=BLOCK_TOKENS, help="tokens per block (default 512)")
    p_mooncake.add_argument("--policy", choices=("write-back", "write-through"), default="write-back",
                            help="with --tiers: when blocks are copied down (default write-back)")
    p_mooncake.add_argument("--disk-min-uses", type=int, default=0, metavar="N",
                            help="with --tiers: a block goes to disk only once used N times (default 0: always)")
    p_mooncake.add_argument("--block-bytes", type=int, default=0, metavar="B",
                            help="with --tiers: bytes per block, for the bytes-moved counts (default 0)")
    p_mooncake.add_argument("--move-bytes", action="store_true",
                            help="with --tiers and --block-bytes: real blocks in every tier, so the time includes "
                                 "the copies (and, with --disk-dir, the disk I/O)")
    p_mooncake.add_argument("--disk-dir", type=Path, metavar="DIR",
                            help="with --tiers ... disk=N: an empty folder for the disk tier's block files "
                                 "(implies --move-bytes)")
    p_mooncake.add_argument("--disk-queue", type=int, default=64, metavar="N",
                            help="with --disk-dir: disk writes waiting for the disk worker, beyond which the "
                                 "lowest-priority one is dropped (default 64); 0 writes each block on the replay's "
                                 "thread, so that every block reaches the disk and the time includes it")
    p_mooncake.add_argument("--replicas", type=int, default=1, metavar="N",
                            help="with --tiers primary=N [host=N]: N replicas of those tiers each, routed round-robin "
                                 "and by a KV indexer of their events, beside one cache of their summed capacity")
    p_mooncake.add_argument("--max-imbalance", type=float, default=1.2, metavar="X",
                            help="with --replicas: the KV-aware router passes over a replica with more than X times "
                                 "the requests of the least loaded (default 1.2)")
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
    p_gen.add_argument("--model", help="a llama2.c v0 checkpoint (default: stories260K.bin of the data folder, else the package's copy)")
    p_gen.add_argument("--tokenizer", help="its llama2.c tokenizer (default: tok512.bin of the data folder, else the package's copy)")
    p_gen.add_argument("--data-dir", help="the data folder (default: $LLMDS_DATA_DIR or ../shared/data)")
    p_gen.set_defaults(run=generate)
    p_version = sub.add_parser("version", help="print the version")
    p_version.set_defaults(run=lambda _: print(llmds.__version__) or 0)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
