"""llmds.replay: the Azure trace loader, the service-time model, the three policies on hand-made
traces, and `python -m llmds replay azure` on the real code trace."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from llmds import replay, traces
from llmds.replay import ServiceModel, check_batching_target, compare_policies, replay_azure
from llmds.traces import AzureTrace, load_azure_trace


def test_each_name_has_one_home_and_the_earlier_paths_still_work() -> None:
    # Readers live in llmds.traces, replays in llmds.replay; each module keeps the name it once held.
    assert replay.load_azure_trace is traces.load_azure_trace and replay.AzureTrace is traces.AzureTrace
    assert traces.replay_prefix_cache is replay.replay_prefix_cache
    assert traces.PrefixCacheReplayResult is replay.PrefixCacheReplayResult


def trace_of(arrivals: list[float], prompts: list[int], outputs: list[int]) -> AzureTrace:
    return AzureTrace("t", np.asarray(arrivals, dtype=float), np.asarray(prompts), np.asarray(outputs))


CODE_TRACE = "traces/azure_llm_2023_code.csv"


def test_loads_the_real_code_trace(data_file: Callable[[str], Path]) -> None:
    t = load_azure_trace(data_file(CODE_TRACE))
    assert len(t) == 8819
    assert t.duration_s == pytest.approx(3435.948, abs=1e-3)  # traces/README.md: 3,436 s
    assert t.prompt_tokens.mean() == pytest.approx(2048, abs=1)
    assert np.median(t.prompt_tokens) == 1469 and t.prompt_tokens.max() == 7437
    assert t.output_tokens.mean() == pytest.approx(28, abs=0.5) and t.output_tokens.max() == 1899
    assert np.all(np.diff(t.arrival_s) >= 0)


def test_loader_rejects_malformed_files(tmp_path: Path) -> None:
    bad_header = tmp_path / "a.csv"
    bad_header.write_text("time,prompt,output\n1,2,3\n")
    with pytest.raises(ValueError, match="header"):
        load_azure_trace(bad_header)
    bad_row = tmp_path / "b.csv"
    bad_row.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.9799600,12,x\n")
    with pytest.raises(ValueError, match=r"b.csv:2"):
        load_azure_trace(bad_row)
    backwards = tmp_path / "c.csv"
    backwards.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:04.5,1,1\n2023-11-16 18:17:04.25,1,1\n"
    )
    with pytest.raises(ValueError, match="earlier"):
        load_azure_trace(backwards)
    fractions = tmp_path / "d.csv"
    fractions.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.9799600,5,1\n2023-11-16 18:17:05.0319600,7,2\n"
    )
    t = load_azure_trace(fractions)
    assert t.arrival_s[1] == pytest.approx(1.052, abs=1e-6)


def test_service_model_times_a_static_batch() -> None:
    m = ServiceModel(batch_overhead_ms=5, prefill_tokens_per_s=10_000, decode_step_ms=10, decode_ms_per_sequence=0.5)
    seconds, first, done = m.run_batch(np.array([1000, 3000]), np.array([1, 4]))
    prefill_end = 0.005 + 0.4
    assert first == pytest.approx([prefill_end, prefill_end])
    # The 1-token request needs no decode step; the other three, each with one sequence running.
    assert done == pytest.approx([prefill_end, prefill_end + 3 * 0.0105])
    assert seconds == pytest.approx(prefill_end + 3 * 0.0105)
    _, _, done2 = m.run_batch(np.array([0, 0]), np.array([3, 3]))
    assert done2 == pytest.approx([0.005 + 2 * 0.011] * 2)  # two sequences share each step
    with pytest.raises(ValueError):
        ServiceModel(prefill_tokens_per_s=0)


MODEL = ServiceModel(batch_overhead_ms=0, prefill_tokens_per_s=1000, decode_step_ms=0, decode_ms_per_sequence=0)


def test_fcfs_serves_one_at_a_time_in_arrival_order() -> None:
    # Each request takes prompt/1000 s: 0.1 s, 0.05 s, 0.05 s.
    r = replay_azure(trace_of([0.0, 0.01, 0.02], [100, 50, 50], [1, 1, 1]), "fcfs", service=MODEL)
    assert r.batches == 3 and r.completed == 3
    # Done at 0.1, 0.15, 0.2: waits 0, 90, 130 ms.
    assert r.queue_wait_ms["p50"] == pytest.approx(90.0)
    assert r.latency_ms["mean"] == pytest.approx((100 + 140 + 180) / 3)
    assert r.throughput_rps == pytest.approx(3 / 0.2)


def test_max_batch_takes_everything_waiting_without_waiting() -> None:
    r = replay_azure(trace_of([0.0, 0.01, 0.02], [100, 50, 50], [1, 1, 1]), "max_batch", service=MODEL)
    # The first runs alone (0 to 0.1 s); the two that arrived meanwhile go together (0.1 to 0.2 s).
    assert r.batches == 2 and r.mean_batch_size == 1.5
    assert r.queue_wait_ms["p95"] == pytest.approx(90 - 0.05 * 10, abs=1.0)


def test_llmds_waits_max_wait_ms_then_sends_the_shortest_first() -> None:
    trace = trace_of([0.0, 0.01, 0.02], [100, 50, 20], [1, 1, 1])
    r = replay_azure(trace, "llmds", max_wait_ms=50.0, service=MODEL)
    # Nothing is full (max_batch_size 32), so the first batch leaves at 50 ms with all three.
    assert r.batches == 1 and r.mean_batch_size == 3
    assert r.queue_wait_ms["p50"] == pytest.approx(40.0)
    full = replay_azure(trace, "llmds", max_wait_ms=1000.0, max_batch_size=2, service=MODEL)
    # With room for two, the batch is full when the second request arrives and leaves at once.
    assert full.batches == 2


def test_admission_rejects_over_the_limit_and_every_admitted_request_completes() -> None:
    rng = np.random.default_rng(0)
    arrivals = np.sort(rng.uniform(0, 10, 500))
    trace = AzureTrace("r", arrivals, rng.integers(1, 500, 500), rng.integers(1, 50, 500))
    r = replay_azure(trace, "llmds", qps_limit=20.0, replicas=2)
    assert r.rejected > 0 and r.admitted + r.rejected == 500 and r.completed == r.admitted
    for policy in ("fcfs", "max_batch"):
        assert replay_azure(trace, policy).completed == 500
    with pytest.raises(ValueError):
        replay_azure(trace, "lifo")
    with pytest.raises(ValueError):
        replay_azure(trace, load=0)


def test_compare_and_claim_check_on_the_real_trace(data_file: Callable[[str], Path]) -> None:
    t = load_azure_trace(data_file(CODE_TRACE))
    results = compare_policies(t, loads=(1.0,), waits_ms=(50.0,), replicas=8, limit=3000)
    assert [r.label for r in results] == ["fcfs", "max_batch", "llmds wait=50ms"]
    assert all(r.completed == 3000 for r in results)
    (line,) = check_batching_target(results)
    base, ours = results[1], results[2]
    holds = ours.throughput_rps >= 0.95 * base.throughput_rps and ours.queue_wait_ms["p95"] < 100
    assert line.startswith("load x1: throughput")
    assert line.endswith(": holds" if holds else ": does not hold")
    assert f"p95 queue wait {ours.queue_wait_ms['p95']:,.0f} ms" in line


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "llmds", *args], capture_output=True, text=True, timeout=300,
                          check=False)


def test_replay_azure_command(data_file: Callable[[str], Path], tmp_path: Path) -> None:
    trace = data_file(CODE_TRACE)
    result = run_cli("replay", "azure", str(trace), "--limit", "1500", "--loads", "1", "--max-wait-ms", "50")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "8,819 requests over 3,436 s" in out
    assert "llmds wait=50ms" in out and "batching target" in out
    missing = run_cli("replay", "azure", str(tmp_path / "nope.csv"))
    assert missing.returncode == 2 and "no such trace file" in missing.stderr
