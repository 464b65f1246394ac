"""The runner of ``python -m llmds bench`` (the package docstring of llmds.benchmarks lists what
it compares): each section runs one comparison module, or replays the traces, and writes its part
of the report.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import llmds
from llmds.data import data_dir, locate
from llmds.report import Report, machine_summary
from llmds.utils import Timer

PEER_PACKAGES = ("hnswlib", "usearch", "faiss-cpu", "bm25s", "numba", "rank-bm25", "tantivy", "datasketches", "matplotlib")
MOONCAKE_TRACES = ("traces/mooncake_fast25_conversation_trace.jsonl", "traces/mooncake_fast25_synthetic_trace.jsonl")
AZURE_TRACES = ("traces/azure_llm_2023_conv.csv", "traces/azure_llm_2023_code.csv")
# Hit rates of a widely used serving engine's LRU block pool (its own code, run unchanged) under the
# same replay protocol, from the shared data's traces/README.md, section 3; it spent about 38 us per
# request.
REFERENCE_HIT_RATES = {
    "conversation": {1_000: 0.0470, 4_000: 0.0940, 6_000: 0.1502, 16_000: 0.2795, 64_000: 0.3753, 100_000: 0.3795},
    "synthetic": {1_000: 0.0879, 4_000: 0.2562, 6_000: 0.3311, 16_000: 0.5547, 64_000: 0.6594, 100_000: 0.6594},
}
REFERENCE_US_PER_REQUEST = 38.0
# run.c (llama2.c) on stories260K, as quoted when the engine was specified; not re-run here.
RUN_C_TOKENS_PER_S = 7_100


def _demote_headings(markdown: str, levels: int = 2) -> str:
    """A comparison's own '# ...' headings, nested under the report's section heading."""
    return "\n".join("#" * levels + line if line.startswith("#") else line for line in markdown.splitlines())


def _comparison(report: Report, title: str, run: Callable[[], dict[str, Any]], fenced: bool = False) -> dict[str, Any] | None:
    """Runs one peer comparison inside a report section; a comparison that cannot run (data or
    peer missing) leaves its reason in the report instead of stopping the others."""
    with report.section(title, fenced=fenced):
        try:
            result = run()
        except (SystemExit, FileNotFoundError) as stop:
            print(f"not run: {stop}")
            result = None
    section = report.sections[-1]
    if not fenced:
        section.text = _demote_headings(section.text)
    return result


def _hnsw(report: Report, data: Path, quick: bool) -> None:
    from llmds.benchmarks import hnsw

    try:
        argv = ["--data", str(locate("ann/fashion-mnist", data))]
    except FileNotFoundError:
        argv = []  # the comparison says where it looked
    if quick:
        argv += ["--subset", "5000", "--queries", "500", "--repeats", "1", "--efs", "10,32,128", "--threads-build", "2"]
    result = _comparison(report, "HNSW against hnswlib, USearch and FAISS (Fashion-MNIST)", lambda: hnsw.main(argv))
    if not result:
        return

    def draw(ax: Any) -> None:
        for name, curve in result["curves"].items():
            ax.plot([r for _, r, _ in curve], [q for _, _, q in curve], marker="o", markersize=3, label=name)
        ax.set_xlabel("recall@10")
        ax.set_ylabel("queries per second (1 thread, log scale)")
        ax.set_yscale("log")
        ax.legend()

    report.plot("hnsw_recall_qps", "Fashion-MNIST: recall@10 vs queries per second", draw)


def _hnsw_churn(report: Report, data: Path, quick: bool) -> None:
    from llmds.benchmarks import hnsw_churn

    try:
        argv = ["--data", str(locate("ann/fashion-mnist", data))]
    except FileNotFoundError:
        argv = []  # the comparison says where it looked
    if quick:
        argv += ["--n", "3000", "--queries", "100", "--rounds", "2"]
    _comparison(report, "HNSW under churn against hnswlib (Fashion-MNIST)", lambda: hnsw_churn.main(argv))


def _bm25(report: Report, data: Path, quick: bool) -> None:
    from llmds.benchmarks import bm25

    argv = ["--ir-root", str(data / "ir")] + (["--collections", "cranfield", "--repeats", "1"] if quick else [])
    result = _comparison(report, "BM25 against bm25s, rank_bm25 and tantivy (Cranfield, CISI)", lambda: bm25.main(argv))
    if not result or not result["single_qps"]:
        return
    groups = list(result["single_qps"])
    libraries = [name for name in next(iter(result["single_qps"].values())) if name != "llmds exhaustive"]

    def draw(ax: Any) -> None:
        width = 0.8 / len(libraries)
        for i, name in enumerate(libraries):
            ax.bar([g + i * width for g in range(len(groups))],
                   [result["single_qps"][group].get(name, 0.0) for group in groups], width, label=name)
        ax.set_xticks([g + width * (len(libraries) - 1) / 2 for g in range(len(groups))],
                      [f"{c}\n{a}" for c, a in groups], fontsize=8)
        ax.set_ylabel("queries per second, one per call (log scale)")
        ax.set_yscale("log")
        ax.legend(fontsize=8)

    report.plot("bm25_qps", "BM25 queries per second by library", draw)


def _cmsketch(report: Report, quick: bool) -> None:
    from llmds.benchmarks import cmsketch

    argv = ["--updates", "100000", "--distinct", "10000", "--repeats", "1"] if quick else []
    _comparison(report, "Count-min sketch against Apache DataSketches", lambda: cmsketch.main(argv), fenced=True)


def _kv_cache(report: Report, data: Path, quick: bool) -> None:
    from llmds.traces import load_mooncake_trace, replay_prefix_cache

    capacities = (1_000, 4_000, 16_000) if quick else (1_000, 2_000, 4_000, 6_000, 8_000, 16_000, 32_000, 64_000, 100_000)
    curves: dict[str, list[tuple[int, float]]] = {}
    with report.section("KV cache: prefix hit rate against capacity (Mooncake traces)", fenced=False):
        print("Replay protocol of the shared data's traces/README.md (section 3): 512-token blocks, LRU, requests in "
              "trace order. Reference: a widely used serving engine's block pool under the same protocol "
              f"(its figures from that README; it spent about {REFERENCE_US_PER_REQUEST:.0f} us per request).\n")
        print("| trace | capacity (blocks) | llmds hit rate | reference | llmds us/request | reference / llmds time |")
        print("|---|---:|---:|---:|---:|---:|")
        for relative in MOONCAKE_TRACES:
            kind = "conversation" if "conversation" in relative else "synthetic"
            try:
                trace = load_mooncake_trace(locate(relative, data))
            except FileNotFoundError as e:
                print(f"| {kind} | not run: {e} | | | | |")
                continue
            for capacity in capacities:
                r = replay_prefix_cache(trace, capacity, 512)
                curves.setdefault(kind, []).append((capacity, r.hit_rate))
                reference = REFERENCE_HIT_RATES[kind].get(capacity)
                print(f"| {kind} | {capacity:,} | {r.hit_rate:.2%} | {'-' if reference is None else f'{reference:.2%}'} "
                      f"| {r.microseconds_per_request:.2f} | {REFERENCE_US_PER_REQUEST / r.microseconds_per_request:.0f}x |")

    def draw(ax: Any) -> None:
        for kind, curve in curves.items():
            line, = ax.plot([c for c, _ in curve], [100 * h for _, h in curve], marker="o", label=f"llmds, {kind}")
            ref = sorted(REFERENCE_HIT_RATES[kind].items())
            ax.plot([c for c, _ in ref], [100 * h for _, h in ref], linestyle="none", marker="x", markersize=9,
                    color=line.get_color(), label=f"reference, {kind}")
        ax.set_xscale("log")
        ax.set_xlabel("capacity (512-token blocks)")
        ax.set_ylabel("prefix hit rate (%)")
        ax.legend(fontsize=8)

    if curves:
        report.plot("kv_cache_hit_rate", "Mooncake traces: hit rate vs capacity", draw)


def _tiers(report: Report, data: Path, gbench: Path | None, quick: bool) -> None:
    from llmds.benchmarks import kv_tiers
    from llmds.traces import load_mooncake_trace

    curves: dict[str, list[kv_tiers.Row]] = {}
    with report.section("Tiered KV cache: hit rate by tier (Mooncake traces)", fenced=False):
        print("The replay protocol of the section above, through a KVBlockManager (metadata only; "
              "llmds.replay.replay_tiered_prefix_cache): a prompt block hits if any tier holds it. Tier sizes in "
              "512-token blocks; the single-tier rows are the LRU replay above.\n")
        for relative in MOONCAKE_TRACES:
            kind = "conversation" if "conversation" in relative else "synthetic"
            print("| trace | configuration | primary | host | disk | combined | disk blocks written | us/request |")
            print("|---|---|---:|---:|---:|---:|---:|---:|")
            try:
                trace = load_mooncake_trace(locate(relative, data))
            except FileNotFoundError as e:
                print(f"| {kind} | not run: {e} | | | | | | |\n")
                continue
            rows = kv_tiers.hit_rates(trace)
            for r in rows:
                cells = " | ".join(f"{100 * r.tiers[t]:.2f}%" if t in r.tiers else "-" for t in ("primary", "host", "disk"))
                print(f"| {kind} | {r.label} | {cells} | {100 * r.combined:.2f}% | {r.disk_writes:,} | {r.us_per_request:.2f} |")
            print()
            for line in kv_tiers.goals(rows):
                print(f"- {kind}: {line}")
            print()
            if kind == "conversation":
                primaries = (1_000, 4_000, 16_000) if quick else (1_000, 2_000, 4_000, 6_000, 8_000, 16_000, 32_000)
                curves[kind] = kv_tiers.by_primary(trace, primaries)

    def draw(ax: Any) -> None:
        for kind, rows in curves.items():
            xs = [int(r.label.replace(",", "")) for r in rows]
            bottom = [0.0] * len(rows)
            for tier in ("primary", "host", "disk"):
                heights = [100 * r.tiers.get(tier, 0.0) for r in rows]
                ax.bar(range(len(xs)), heights, bottom=bottom, label=f"{tier}")
                bottom = [b + h for b, h in zip(bottom, heights)]
            ax.set_xticks(range(len(xs)), [f"{x // 1000}k" for x in xs])
        ax.set_xlabel("primary tier (512-token blocks); host 16k, disk 400k")
        ax.set_ylabel("prefix hit rate (%)")
        ax.legend(fontsize=8)

    if curves:
        report.plot("kv_tiers_hit_rate", "Conversation trace: hit rate by tier against primary capacity", draw)

    with report.section("Tiered KV cache: data paths against their limits (C++)", fenced=False):
        rows = kv_tiers.path_ratios(gbench)
        if not rows:
            print(f"No bench_kv_tiers / bench_engine JSON in {gbench}: run `cmake --build build/cpp --target "
                  "run_bench_kv_tiers run_bench_engine` first.")
            return
        print("Each ratio is of two benchmarks of one suite run (bench_kv_tiers, bench_engine).\n")
        print("| path | llmds | limit | ratio | goal | |")
        print("|---|---:|---:|---:|---:|---|")
        for row in rows:
            print(row)


def _scheduler(report: Report, data: Path, quick: bool) -> None:
    from llmds.replay import compare_policies, format_results, load_azure_trace

    loads = (1.0, 2.0) if quick else (0.5, 1.0, 2.0, 4.0)
    results = {}
    with report.section("Scheduler: latency distributions on the Azure 2023 traces (8 replicas, simulated time)"):
        for relative in AZURE_TRACES:
            path = locate(relative, data)
            trace = load_azure_trace(path)
            limit = 3_000 if quick else None
            print(f"{path.name}: {len(trace):,} requests{f' (first {limit:,} replayed)' if limit else ''}; "
                  "service model and policies: python -m llmds replay azure --help")
            results[path.name.split(".")[0]] = rs = compare_policies(trace, loads=loads, waits_ms=[50.0], replicas=8, limit=limit)
            print("\n".join(format_results(rs)) + "\n")

    def draw(ax: Any) -> None:
        name, rs = next(iter(results.items()))
        for label in dict.fromkeys(r.label for r in rs):
            points = sorted((r.load, r.latency_ms["p95"] / 1e3) for r in rs if r.label == label)
            ax.plot([x for x, _ in points], [y for _, y in points], marker="o", label=f"{label} p95")
        ax.set_xlabel("arrival rate (x the trace's)")
        ax.set_ylabel("end-to-end latency p95 (s, log scale)")
        ax.set_yscale("log")
        ax.legend(fontsize=8)
        ax.set_title(name)

    report.plot("scheduler_latency_p95", "p95 latency against load by policy", draw)


def _engine(report: Report, data: Path, quick: bool) -> None:
    from llmds.engine import STORIES_MODEL, STORIES_TOKENIZER, Engine, Request, SamplingParams

    tokens = 128 if quick else 511
    engine = Engine(locate(STORIES_MODEL, data), locate(STORIES_TOKENIZER, data))
    greedy = SamplingParams(temperature=0.0)
    with report.section("Engine: tokens per second (stories260K)", fenced=False):
        engine.generate(Request("Once upon a time", max_tokens=16, sampling=greedy))  # warm-up
        repeats = 1 if quick else 5  # best of several: a shared machine slows single runs at random
        single = max(
            engine.generate(Request("", max_tokens=tokens, sampling=greedy, ignore_eos=True)).tokens_per_s
            for _ in range(repeats)
        )
        rates = {}
        for n in (4, 16):
            for _ in range(repeats):
                with Timer() as t:
                    handles = [engine.generate_async(Request("", max_tokens=tokens, sampling=SamplingParams(seed=i),
                                                             ignore_eos=True)) for i in range(n)]
                    produced = sum(h.result().output_tokens for h in handles)
                rates[n] = max(rates.get(n, 0.0), produced / t.elapsed)
        print(f"Decode of {tokens} tokens from an empty prompt, end of text ignored; the engine's default threads; "
              f"best of {repeats}.\n")
        print("| requests at once | tokens/s (all requests) | vs one sequence | vs run.c (7,100 tok/s, quoted) |")
        print("|---:|---:|---:|---:|")
        print(f"| 1 | {single:,.0f} | 1.00x | {single / RUN_C_TOKENS_PER_S:.2f}x |")
        for n, rate in rates.items():
            print(f"| {n} | {rate:,.0f} | {rate / single:.2f}x | {rate / RUN_C_TOKENS_PER_S:.2f}x |")
        print("\nrun.c's figure is the one quoted for 2 cores of an AMD EPYC (`gcc -O3 -march=native`); it is not "
              "re-run here, so on another machine the last column compares machines as well as programs.")


def _figure(x: float) -> str:
    """A measured figure to about four significant digits, without exponent notation."""
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


# Fields of a Google Benchmark JSON entry that are not user counters.
_GBENCH_FIELDS = {
    "name", "family_index", "per_family_instance_index", "run_name", "run_type", "repetitions",
    "repetition_index", "threads", "iterations", "real_time", "cpu_time", "time_unit", "label",
    "error_occurred", "error_message", "aggregate_name", "aggregate_unit",
}


def _rate(b: dict[str, Any]) -> str:
    """The suite's rates: items or bytes per second, and any user counters (tokens_per_s, ...)."""
    parts = []
    for key, unit in (("items_per_second", "items/s"), ("bytes_per_second", "B/s")):
        if key in b:
            parts.append(f"{b[key] / 1e6:,.2f} M{unit}")
    parts += [f"{key} {_figure(value)}" for key, value in b.items()
              if key not in _GBENCH_FIELDS and key not in ("items_per_second", "bytes_per_second")
              and isinstance(value, (int, float))]
    return "; ".join(parts) or "-"


def _gbench(report: Report, folder: Path | None) -> None:
    files = sorted(folder.glob("*.json")) if folder and folder.is_dir() else []
    with report.section("Google Benchmark suites (C++)", fenced=False):
        if not files:
            print(f"No JSON in {folder}: run `cmake --build build/cpp --target run_benchmarks` first "
                  "(it writes build/cpp/bench-results/<suite>.json).")
            return
        suites = {}
        for path in files:
            try:
                suites[path.stem] = json.loads(path.read_text())
            except (OSError, ValueError) as e:
                print(f"- {path.name}: not read ({e}; an interrupted run?)")
        if not suites:
            return
        context = next(iter(suites.values()))["context"]
        print(f"From `cmake --build build/cpp --target run_benchmarks` ({folder}); run on {context.get('date', '?')}, "
              f"{context.get('num_cpus', '?')} CPUs at {context.get('mhz_per_cpu', '?')} MHz; llmds in a Release "
              f"build (the Google Benchmark library reports its own build as {context.get('library_build_type', '?')}). "
              "Times are per iteration; rates as the suite counts them.\n")
        for name, suite in suites.items():
            print(f"### {name}\n")
            print("| benchmark | real time | CPU time | rates and counters |")
            print("|---|---:|---:|---:|")
            for b in suite.get("benchmarks", []):
                if b.get("run_type") == "aggregate" or "real_time" not in b:
                    continue
                unit = b.get("time_unit", "ns")
                print(f"| {b['name']} | {_figure(b['real_time'])} {unit} | {_figure(b['cpu_time'])} {unit} | {_rate(b)} |")
            print()


def _routing(report: Report, data: Path) -> None:
    from llmds.replay import replay_tiered_prefix_cache
    from llmds.routing import replay_routed_prefix_cache
    from llmds.traces import load_mooncake_trace

    replicas, primary, host = 4, 1_500, 4_000
    with report.section(f"Routing by cached prefix: Mooncake traces over {replicas} replicas", fenced=False):
        print(f"Each trace replayed (the protocol of the sections above) over {replicas} replicas, each a KVBlockManager of "
              f"primary {primary:,} + host {host:,} blocks (metadata only), routed round-robin or by a `KVIndexer` fed "
              "the replicas' KV events (the replica holding the longest run of the request's leading blocks, among those "
              "within 1.2x of the least loaded replica's requests, plus one; ties and misses to the least loaded), beside "
              f"one cache of the summed capacity (primary {primary * replicas:,} + host {host * replicas:,}); "
              "llmds.routing.replay_routed_prefix_cache, or `python -m llmds replay mooncake TRACE --tiers "
              f"primary={primary} host={host} --replicas {replicas}`. Goals: the indexer's hit rate within 2 points of "
              "the one cache, with at most 1.2x as many requests on the busiest replica as on the idlest. The time per "
              "request includes the index (every replica's block events applied, one score per request).\n")
        print("| trace | routing | hit rate | one cache of the summed capacity | requests per replica, most / fewest "
              "| us/request | goal |")
        print("|---|---|---:|---:|---:|---:|---|")
        for relative in MOONCAKE_TRACES:
            kind = "conversation" if "conversation" in relative else "synthetic"
            try:
                trace = load_mooncake_trace(locate(relative, data))
            except FileNotFoundError as e:
                print(f"| {kind} | not run: {e} | | | | | |")
                continue
            one = replay_tiered_prefix_cache(trace, primary * replicas, host_blocks=host * replicas)
            for routing in ("round-robin", "kv-aware"):
                r = replay_routed_prefix_cache(trace, replicas, primary, host_blocks=host, routing=routing)
                loads = r.requests_per_replica
                goal = "-"
                if routing == "kv-aware":
                    points = 100 * (one.hit_rate - r.hit_rate)
                    met = points <= 2.0 and r.imbalance <= 1.2
                    goal = f"{'met' if met else 'MISSED'} ({points:.2f} points, {r.imbalance:.3f}x)"
                label = f"{kind} ({len(trace):,} requests)" if routing == "round-robin" else kind
                print(f"| {label} | {'KV indexer' if routing == 'kv-aware' else routing} | {100 * r.hit_rate:.2f}% | "
                      f"{100 * one.hit_rate:.2f}% | {max(loads):,} / {min(loads):,} ({r.imbalance:.3f}x) | "
                      f"{r.microseconds_per_request:.2f} | {goal} |")
        print()


def _remote(report: Report, data: Path, quick: bool) -> None:
    from llmds.benchmarks.redis_tier import compare
    from llmds.kv_block_manager import HAS_REDIS

    block_bytes, blocks, batch = 512 * 1024, 64 if quick else 256, 16
    with report.section("Remote KV tier on Redis: pipelined block stores and loads over loopback", fenced=False):
        print(f"{blocks} blocks of {block_bytes // 1024} KiB, {batch} per pipelined call, on one connection to one "
              "redis-server on this machine (LLMDS_REDIS_URL's, or a private one: no persistence, maxmemory 2 GB, "
              "allkeys-lru), best of 3 passes; GB/s of block payload (llmds's values also carry a ~100-byte checked "
              "header, and llmds checksums every payload both ways). For reference, `redis-benchmark`, the server's own "
              "C client, with the same block size, pipeline depth and one connection. redis-py sends a large value "
              "from the caller's buffer without copying it, as llmds does, so its stores run at what the server takes "
              "in; its loads build a Python bytes object per value. Goals: llmds at least 1 GB/s each way and at "
              "least 3x redis-py. (llmds.benchmarks.redis_tier.compare)\n")
        if not HAS_REDIS:
            print("Not run: this llmds was built without hiredis.")
            return
        try:
            rows = compare(block_bytes, blocks, batch)
        except (FileNotFoundError, ImportError) as e:
            print(f"Not run: {e}")
            return
        print("| client | store GB/s | load GB/s |")
        print("|---|---:|---:|")
        for r in rows:
            print(f"| {r.who} | {r.store_gbps:.2f} | {r.load_gbps:.2f} |")
        mine, py = rows[0], rows[1]
        for way, a, b in (("store", mine.store_gbps, py.store_gbps), ("load", mine.load_gbps, py.load_gbps)):
            met = a >= 1.0 and a >= 3 * b
            print(f"\n- {way}: llmds {a:.2f} GB/s, {a / b:.2f}x redis-py: goal {'met' if met else 'MISSED'}", end="")
            if len(rows) > 2:
                limit = rows[2].store_gbps if way == "store" else rows[2].load_gbps
                print(f"; {a / limit:.2f}x redis-benchmark", end="")
        print("\n")
        _shared_tier(report, data, quick)


def _shared_tier(report: Report, data: Path, quick: bool) -> None:
    from llmds.benchmarks.redis_tier import redis_for_bench
    from llmds.benchmarks.shared_tier import replay_global, replay_replicas

    replicas, primary, host = 4, 1_500, 4_000
    print(f"### Mooncake traces over {replicas} replica processes sharing the Redis tier\n")
    print(f"Each replica a process replaying its round-robin share of the trace (all at once) through a KVBlockManager of "
          f"primary {primary:,} + host {host:,} blocks of 64 bytes; with the shared tier, each computed block is put into "
          "the one Redis server and the prompt blocks the local tiers miss are read back from it. Beside it: the replicas "
          f"alone, and one global cache of the summed capacity (primary {primary * replicas:,} + host {host * replicas:,}) "
          "replaying the whole trace in order. Goal: with the shared tier, at least 95% of the global cache's hit rate. "
          "(llmds.benchmarks.shared_tier)\n")
    print("| trace | replicas alone | with the shared Redis tier (of it, from Redis) | one global cache | shared / global "
          "| goal |")
    print("|---|---:|---:|---:|---:|---|")
    with redis_for_bench() as address:
        for relative in MOONCAKE_TRACES:
            kind = "conversation" if "conversation" in relative else "synthetic"
            try:
                path = locate(relative, data)
            except FileNotFoundError as e:
                print(f"| {kind} | not run: {e} | | | | |")
                continue
            alone = replay_replicas(path, replicas, primary, host, None)
            shared = replay_replicas(path, replicas, primary, host, address)
            one = replay_global(path, primary * replicas, host * replicas)
            ratio = shared.hit_rate / one.hit_rate if one.hit_rate else 0.0
            print(f"| {kind} | {100 * alone.hit_rate:.2f}% | {100 * shared.hit_rate:.2f}% "
                  f"({100 * shared.remote_hit_blocks / shared.lookup_blocks:.2f}%) | {100 * one.hit_rate:.2f}% | "
                  f"{ratio:.3f} | {'met' if ratio >= 0.95 else 'MISSED'} |")
    print()


SECTIONS = ("hnsw", "churn", "bm25", "cmsketch", "kv", "tiers", "routing", "remote", "scheduler", "engine", "gbench")
"""The report's sections, in order; ``run(sections=...)`` and ``--sections`` choose among them."""


def run(out: Path = Path("docs/benchmarks.md"), images: Path | None = None, data: Path | None = None,
        gbench: Path | None = Path("build/cpp/bench-results"), quick: bool = False,
        sections: Sequence[str] = SECTIONS) -> Path:
    """Runs the chosen comparisons and writes the report (its plots in `images`, default
    ``<out without .md>/``); returns the report's path."""
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise ValueError(f"unknown sections {unknown}; choose from {', '.join(SECTIONS)}")
    data = data if data is not None else data_dir()
    images = images if images is not None else out.with_suffix("")
    started = time.perf_counter()
    report = Report("Benchmarks", out, images)
    report.preamble += [
        "Written by `python -m llmds bench` (after `pip install .[bench]`, and "
        "`cmake --build build/cpp --target run_benchmarks` for the C++ suites); regenerate it rather than "
        "editing it. Each comparison runs llmds and its peers in one process on the same data, and gives "
        "ratios beside the absolute figures (llmds/peer above 1: llmds is faster).",
        "",
        *machine_summary(PEER_PACKAGES),
    ]
    if quick:
        report.preamble.append("- QUICK MODE: small sizes, one repeat; these figures check that the run works, "
                               "they are not measurements to quote.")
    print(f"llmds {llmds.__version__} bench -> {out}")
    steps: dict[str, Callable[[], None]] = {
        "hnsw": lambda: _hnsw(report, data, quick),
        "churn": lambda: _hnsw_churn(report, data, quick),
        "bm25": lambda: _bm25(report, data, quick),
        "cmsketch": lambda: _cmsketch(report, quick),
        "kv": lambda: _kv_cache(report, data, quick),
        "tiers": lambda: _tiers(report, data, gbench, quick),
        "routing": lambda: _routing(report, data),
        "remote": lambda: _remote(report, data, quick),
        "scheduler": lambda: _scheduler(report, data, quick),
        "engine": lambda: _engine(report, data, quick),
        "gbench": lambda: _gbench(report, gbench),
    }
    for name in SECTIONS:
        if name in sections:
            steps[name]()
    report.preamble.append(f"- Run time: {time.perf_counter() - started:.0f} s")
    if report.plots_skipped:
        print(f"note: {report.plots_skipped}")
    return report.write()


__all__ = ["SECTIONS", "run"]
