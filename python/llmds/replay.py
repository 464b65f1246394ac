"""Replaying real request traces (read by llmds.traces): through a prefix cache, and through
admission control and a batching policy on simulated time.

Prefix cache. ``replay_prefix_cache`` runs a Mooncake trace through an LRU block pool in C++ under
the protocol of the data folder's ``traces/README.md`` (section 3), so its hit rates compare like
for like with the block pools of serving engines; ``prefix_cache_sweep`` runs it at several
capacities. ``replay_tiered_prefix_cache`` runs the same protocol over a KVBlockManager with host
and disk tiers below primary (llmds.kv_block_manager). ``replay_routed_prefix_cache`` runs it over
several replicas with a router in front: round-robin, or by a KV indexer fed the replicas' KV
events (the request goes where the longest run of its leading blocks is cached).

Admission and batching. The Azure LLM inference traces (2023, code and conversation) give each request's arrival time,
prompt tokens and generated tokens. ``replay_azure`` feeds them, at their real arrival times (or
compressed by a load multiplier), through an AdmissionController and one of three batching
policies, in front of one model replica whose batch service time follows ``ServiceModel``:

* ``fcfs``: one request at a time, in arrival order (no batching);
* ``max_batch``: whenever the replica is free, everything waiting up to ``max_batch_size``, in
  arrival order, without waiting (greedy maximum batching);
* ``llmds``: llmds.scheduler.Scheduler with ``max_wait_ms``: a batch leaves when it is full, the
  oldest request has waited ``max_wait_ms`` or an SLO is at risk; fewer tokens first.

The replica runs static batches (the Scheduler's micro-batching): a batch is prefilled together, then
decoded step by step until its longest request ends; each request's response is complete at its
own last token, but the next batch starts only when the whole batch is done. Time never passes in
the real world: a ManualClock is advanced from event to event (arrival, batch end, the
scheduler's next due time), so an hour of traffic replays in about a second.

Service-time model (``ServiceModel``; every figure is an option):

    batch time = overhead + prefill tokens of the batch / prefill rate
                 + sum over decode steps of (step time + per-sequence time x sequences still running)

The first output token comes out of the prefill pass, so a request of o output tokens needs o - 1
decode steps. The defaults describe a 7B-parameter model in 16-bit weights on one
A100-80GB-class accelerator: a decode step is bound by reading the 14 GB of weights at about
2 TB/s (7 ms), which with kernel launches and sampling is taken as 10 ms; each running sequence
adds 0.15 ms (its KV-cache reads and its share of the arithmetic); prefill is bound by arithmetic,
2 x 7e9 FLOP per token at about 150 TFLOP/s achieved, about 10,000 tokens/s; 5 ms of fixed cost
per batch (scheduling, input preparation). These set the scale of the results, not their shape.

SLO per request: its response must be complete within ``slo_ttft_ms + slo_tpot_ms x output
tokens`` of its arrival (a time to first token plus a time per output token, the two numbers
serving systems are judged by); the llmds policy is given this as the request's ``slo_ms``.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from llmds._core import PrefixCacheReplayResult as PrefixCacheReplayResult
from llmds._core import replay_prefix_cache as replay_prefix_cache
from llmds._core import TieredReplayResult as TieredReplayResult
from llmds._core import replay_tiered_prefix_cache as replay_tiered_prefix_cache
from llmds._core import RoutedReplayResult as RoutedReplayResult
from llmds._core import replay_routed_prefix_cache as replay_routed_prefix_cache
from llmds.admissions import AdmissionController
from llmds.progress import track
from llmds.scheduler import ManualClock, Scheduler
from llmds.traces import AzureTrace as AzureTrace
from llmds.traces import MooncakeTrace
from llmds.traces import load_azure_trace as load_azure_trace  # its home is llmds.traces; kept importable here
from llmds.utils import calculate_statistics

POLICIES = ("fcfs", "max_batch", "llmds")


def prefix_cache_sweep(
    trace: MooncakeTrace, capacities: Sequence[int], block_size: int = 512, progress: str | None = None
) -> list[PrefixCacheReplayResult]:
    """``replay_prefix_cache`` at each capacity (in blocks), each from a cold cache, in order.
    With `progress`, a bar of that label (llmds.progress) follows the replays."""
    steps = track(capacities, progress) if progress else capacities
    return [replay_prefix_cache(trace, capacity, block_size) for capacity in steps]


@dataclass(frozen=True)
class ServiceModel:
    """Batch service time of one model replica (see the module docstring for the defaults)."""

    batch_overhead_ms: float = 5.0
    prefill_tokens_per_s: float = 10_000.0
    decode_step_ms: float = 10.0
    decode_ms_per_sequence: float = 0.15

    def __post_init__(self) -> None:
        for name in ("batch_overhead_ms", "decode_step_ms", "decode_ms_per_sequence"):
            if not math.isfinite(getattr(self, name)) or getattr(self, name) < 0:
                raise ValueError(f"ServiceModel.{name} must be finite and non-negative")
        if not math.isfinite(self.prefill_tokens_per_s) or self.prefill_tokens_per_s <= 0:
            raise ValueError("ServiceModel.prefill_tokens_per_s must be positive")

    def run_batch(self, prompts: np.ndarray, outputs: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """(batch seconds, first-token offsets, completion offsets), offsets from the batch start."""
        prefill_end = self.batch_overhead_ms / 1e3 + float(prompts.sum()) / self.prefill_tokens_per_s
        steps = np.maximum(outputs - 1, 0)  # decode steps each request needs
        longest = int(steps.max()) if len(steps) else 0
        # Sequences running in decode step k (1-based): those needing at least k steps.
        running = len(steps) - np.searchsorted(np.sort(steps), np.arange(1, longest + 1), side="left")
        step_s = (self.decode_step_ms + self.decode_ms_per_sequence * running) / 1e3
        elapsed = np.concatenate(([0.0], np.cumsum(step_s)))  # elapsed[k]: after k decode steps
        first = np.full(len(prompts), prefill_end)
        done = prefill_end + elapsed[steps]
        return prefill_end + float(elapsed[-1]), first, done


@dataclass
class ReplayResult:
    """What one replay measured (times in ms, rates per second of simulated time)."""

    policy: str
    max_wait_ms: float | None
    load: float
    requests: int
    admitted: int
    rejected: int
    completed: int
    batches: int
    mean_batch_size: float
    duration_s: float
    throughput_rps: float
    output_tokens_per_s: float
    latency_ms: dict[str, float] = field(default_factory=dict)
    ttft_ms: dict[str, float] = field(default_factory=dict)
    queue_wait_ms: dict[str, float] = field(default_factory=dict)
    slo_attainment: float = 1.0

    @property
    def label(self) -> str:
        """The policy, with its max_wait_ms when it has one: ``"llmds wait=50ms"``."""
        return self.policy if self.max_wait_ms is None else f"{self.policy} wait={self.max_wait_ms:g}ms"


def _percentiles(values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0, "mean": 0.0}
    s = calculate_statistics(values)
    return {"p50": s["p50"], "p95": s["p95"], "p99": s["p99"], "mean": s["mean"]}


def replay_azure(
    trace: AzureTrace,
    policy: str = "llmds",
    *,
    load: float = 1.0,
    max_batch_size: int = 32,
    max_wait_ms: float = 50.0,
    replicas: int = 1,
    service: ServiceModel | None = None,
    slo_ttft_ms: float = 2000.0,
    slo_tpot_ms: float = 50.0,
    qps_limit: float | None = None,
    token_rate_limit: float | None = None,
    limit: int | None = None,
) -> ReplayResult:
    """Replays `trace` through admission and `policy` on simulated time; see the module docstring.

    load: arrival times are divided by it (2.0 = the same requests in half the time).
    replicas: model replicas serving batches side by side (a batch goes to any free one).
    limit: replay only the first `limit` requests.
    """
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    if not (math.isfinite(load) and load > 0):
        raise ValueError(f"load must be positive, got {load}")
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
    if replicas < 1:
        raise ValueError(f"replicas must be at least 1, got {replicas}")
    service = service or ServiceModel()
    n = len(trace) if limit is None else min(limit, len(trace))
    arrival = trace.arrival_s[:n] / load
    prompts, outputs = trace.prompt_tokens[:n], trace.output_tokens[:n]
    slo_ms = slo_ttft_ms + slo_tpot_ms * outputs.astype(np.float64)

    clock = ManualClock()
    admission = AdmissionController(qps_limit, token_rate_limit, clock=clock)
    scheduler = Scheduler(max_batch_size, max_wait_ms, clock=clock) if policy == "llmds" else None
    waiting: deque[int] = deque()  # the baselines' FIFO (trace indexes)
    by_id: dict[int, int] = {}  # scheduler request id -> trace index

    admitted = np.zeros(n, dtype=bool)
    dispatched_at = np.full(n, np.nan)
    first_token_at = np.full(n, np.nan)
    done_at = np.full(n, np.nan)
    batch_sizes: list[int] = []
    # Batches on the replicas: (end time, sequence number, the scheduler's ids of the batch).
    running: list[tuple[float, int, list[int]]] = []
    i = 0
    now = 0.0

    def queued() -> int:
        return scheduler.queued() if scheduler is not None else len(waiting)

    while i < n or queued() > 0 or running:
        events = []
        if i < n:
            events.append(float(arrival[i]))
        if running:
            events.append(running[0][0])
        if len(running) < replicas and queued() > 0:
            if scheduler is not None:
                # At least a nanosecond ahead, so rounding in now + due cannot stall the loop.
                events.append(now + max(scheduler.time_until_due() or 0.0, 1e-9))
            else:
                events.append(now)
        now = max(now, min(events))
        clock.set(now)
        while running and running[0][0] <= now:
            _, _, ids = heapq.heappop(running)
            if scheduler is not None:
                scheduler.complete_batch(ids)
        while i < n and arrival[i] <= now:
            tokens = int(prompts[i] + outputs[i])
            ok, _ = admission.should_admit(tokens)
            if ok:
                admission.record_request(tokens)
                admitted[i] = True
                if scheduler is not None:
                    by_id[scheduler.submit(int(prompts[i]), float(slo_ms[i]))] = i
                else:
                    waiting.append(i)
            i += 1
        while len(running) < replicas:
            ids: list[int] = []
            if scheduler is not None:
                ids = scheduler.get_batch() or []
                batch = [by_id.pop(r) for r in ids]
            else:
                take = 1 if policy == "fcfs" else max_batch_size
                batch = [waiting.popleft() for _ in range(min(take, len(waiting)))]
            if not batch:
                break
            idx = np.asarray(batch)
            seconds, first, done = service.run_batch(prompts[idx], outputs[idx])
            dispatched_at[idx] = now
            first_token_at[idx] = now + first
            done_at[idx] = now + done
            batch_sizes.append(len(batch))
            heapq.heappush(running, (now + seconds, len(batch_sizes), ids))

    served = admitted & ~np.isnan(done_at)
    latency = (done_at[served] - arrival[served]) * 1e3
    ttft = (first_token_at[served] - arrival[served]) * 1e3
    wait = (dispatched_at[served] - arrival[served]) * 1e3
    start = float(arrival[0]) if n else 0.0
    end = float(done_at[served].max()) if served.any() else start
    duration = max(end - start, 1e-12)
    stats = admission.stats()
    return ReplayResult(
        policy=policy,
        max_wait_ms=max_wait_ms if policy == "llmds" else None,
        load=load,
        requests=n,
        admitted=int(admitted.sum()),
        rejected=int(stats["rejected"]),
        completed=int(served.sum()),
        batches=len(batch_sizes),
        mean_batch_size=float(np.mean(batch_sizes)) if batch_sizes else 0.0,
        duration_s=duration,
        throughput_rps=float(served.sum()) / duration,
        output_tokens_per_s=float(outputs[served].sum()) / duration,
        latency_ms=_percentiles(latency),
        ttft_ms=_percentiles(ttft),
        queue_wait_ms=_percentiles(wait),
        slo_attainment=float(np.mean(latency <= slo_ms[served])) if served.any() else 1.0,
    )


def compare_policies(
    trace: AzureTrace,
    *,
    loads: Sequence[float] = (1.0,),
    waits_ms: Sequence[float] = (10.0, 50.0, 200.0),
    **options: object,
) -> list[ReplayResult]:
    """FCFS, max_batch and llmds at each max_wait_ms, at each load multiplier."""
    results = []
    for load in loads:
        results.append(replay_azure(trace, "fcfs", load=load, **options))  # type: ignore[arg-type]
        results.append(replay_azure(trace, "max_batch", load=load, **options))  # type: ignore[arg-type]
        for w in waits_ms:
            results.append(replay_azure(trace, "llmds", load=load, max_wait_ms=w, **options))  # type: ignore[arg-type]
    return results


def format_results(results: Sequence[ReplayResult]) -> list[str]:
    """A table per load multiplier, with each policy's throughput as a ratio of max_batch's."""
    lines: list[str] = []
    for load in sorted({r.load for r in results}):
        group = [r for r in results if r.load == load]
        base = next((r for r in group if r.policy == "max_batch"), None)
        lines.append(f"load x{load:g}: {group[0].requests:,} requests")
        lines.append(
            "  policy                  rejected   req/s  vs max_batch   batch   wait p50   wait p95"
            "   TTFT p95    lat p50    lat p95    lat p99     SLO"
        )
        for r in group:
            ratio = f"{r.throughput_rps / base.throughput_rps:.3f}" if base and base.throughput_rps > 0 else "-"
            lines.append(
                f"  {r.label:<22} {r.rejected:>9,} {r.throughput_rps:>7.2f} {ratio:>13} {r.mean_batch_size:>7.1f}"
                f" {r.queue_wait_ms['p50']:>10.0f} {r.queue_wait_ms['p95']:>10.0f} {r.ttft_ms['p95']:>10.0f}"
                f" {r.latency_ms['p50']:>10.0f} {r.latency_ms['p95']:>10.0f} {r.latency_ms['p99']:>10.0f}"
                f" {r.slo_attainment:>7.1%}"
            )
    return lines


def check_batching_target(results: Sequence[ReplayResult], wait_ms: float = 50.0) -> list[str]:
    """The batching target, "with max_wait_ms=50 about 95% of the throughput of maximum batching
    at p95 below 100 ms", read as throughput >= 0.95 x max_batch's with the p95 queue wait (the delay that
    batching adds) below 100 ms; the p95 end-to-end latency is shown beside it."""
    lines = []
    for load in sorted({r.load for r in results}):
        group = [r for r in results if r.load == load]
        base = next((r for r in group if r.policy == "max_batch"), None)
        ours = next((r for r in group if r.policy == "llmds" and r.max_wait_ms == wait_ms), None)
        if base is None or ours is None or base.throughput_rps == 0:
            continue
        ratio = ours.throughput_rps / base.throughput_rps
        wait = ours.queue_wait_ms["p95"]
        holds = ratio >= 0.95 and wait < 100.0
        lines.append(
            f"load x{load:g}: throughput {ratio:.1%} of max_batch, p95 queue wait {wait:,.0f} ms, "
            f"p95 latency {ours.latency_ms['p95']:,.0f} ms: {'holds' if holds else 'does not hold'}"
        )
    return lines
