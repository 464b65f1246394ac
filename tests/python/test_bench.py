"""`python -m llmds bench`: a quick pass of every comparison writes a report with its tables,
whichever peers are installed (a missing one is named, not fatal)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llmds import benchmarks


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "llmds", "bench", *args], capture_output=True, text=True,
                          timeout=900, check=False)


@pytest.fixture(scope="module")
def quick_report(shared_data, tmp_path_factory) -> tuple[subprocess.CompletedProcess[str], Path]:
    folder = tmp_path_factory.mktemp("bench")
    gbench = folder / "gbench"
    gbench.mkdir()
    (gbench / "bench_toy.json").write_text(json.dumps({
        "context": {"date": "today", "num_cpus": 2, "mhz_per_cpu": 3000, "library_build_type": "release"},
        "benchmarks": [
            {"name": "BM_Push/1000", "run_type": "iteration", "real_time": 17.5, "cpu_time": 17.4,
             "time_unit": "us", "items_per_second": 5.7e7, "tokens_per_s": 1234.0},
            {"name": "BM_Push/1000_mean", "run_type": "aggregate", "real_time": 1, "cpu_time": 1, "time_unit": "us"},
        ],
    }))
    (gbench / "bench_cut.json").write_text('{"context": {')  # an interrupted run
    out = folder / "benchmarks.md"
    result = run("--quick", "--out", str(out), "--data-dir", str(shared_data), "--gbench", str(gbench))
    return result, out


def test_quick_bench_writes_every_section(quick_report):
    result, out = quick_report
    assert result.returncode == 0, result.stderr
    assert f"report: {out.resolve()}" in result.stdout
    text = out.read_text()
    assert text.startswith("# Benchmarks\n") and "QUICK MODE" in text and "- Versions: llmds" in text
    for title in ("## HNSW against hnswlib", "## HNSW under churn", "## BM25 against bm25s", "## Count-min sketch", "## KV cache",
                  "## Tiered KV cache: hit rate by tier", "## Tiered KV cache: data paths", "## Scheduler", "## Engine",
                  "## Google Benchmark suites"):
        assert title in text
    # The comparisons' own headings sit under the report's sections.
    assert "\n### HNSW on Fashion-MNIST" in text and "\n#### Recall@10 vs ef_search" in text
    assert "| conversation | 1,000 | 4.70% | 4.70% |" in text  # llmds matches the reference hit rate
    # A disk tier brings the tiered cache to the unlimited cache's hit rate.
    assert "| conversation | 6,000 + 16,000 + disk 400,000, write-back | 15.02% |" in text
    assert "conversation: with disk: 38.19% vs unlimited 38.19%, goal within 0.1 points: met" in text
    assert "| 16 |" in text and "vs run.c" in text


def test_quick_bench_reads_the_google_benchmark_json(quick_report):
    text = quick_report[1].read_text()
    assert "| BM_Push/1000 | 17.5 us | 17.4 us | 57.00 Mitems/s; tokens_per_s 1,234 |" in text
    assert "BM_Push/1000_mean" not in text  # aggregates are left out
    assert "bench_cut.json: not read" in text


def test_quick_bench_plots(quick_report):
    pytest.importorskip("matplotlib")
    out = quick_report[1]
    for name in ("hnsw_recall_qps", "bm25_qps", "kv_cache_hit_rate", "kv_tiers_hit_rate", "scheduler_latency_p95"):
        assert (out.with_suffix("") / f"{name}.png").exists()
        assert f"](benchmarks/{name}.png)" in out.read_text()


def test_tier_ratios_come_from_one_suite_run(tmp_path):
    from llmds.benchmarks import kv_tiers

    def b(name: str, **figures: float) -> dict[str, object]:
        return {"name": name, "run_type": "iteration", **figures}

    (tmp_path / "bench_kv_tiers.json").write_text(json.dumps({"benchmarks": [
        b("BM_Memcpy/65536", bytes_per_second=10e9), b("BM_CopyContiguous/65536", bytes_per_second=9e9),
        b("BM_CopyToLayerSeparate/65536", bytes_per_second=5e9),
        b("BM_DiskRawWrite/2097152/real_time", bytes_per_second=1e9),
        b("BM_DiskStoreWrite/2097152/1/1/1/real_time", bytes_per_second=0.8e9),
        b("BM_DiskStoreWrite/2097152/1/0/1/real_time", bytes_per_second=0.5e9),
        b("BM_DiskStoreWrite/2097152/1/1/8/real_time", bytes_per_second=1.2e9),
        b("BM_TieredReplay/0/1", us_per_request=4.5),
    ]}))
    rows = kv_tiers.path_ratios(tmp_path)
    assert "| primary -> host, contiguous, 64 KiB blocks | 9.00 GB/s | memcpy 10.00 GB/s | 90% | 80% | met |" in rows
    assert any("layer-separate" in r and "50% | 80% | MISSED" in r for r in rows)
    assert ("| host -> disk (block files), full tier, 2048 KiB blocks | 0.80 GB/s | raw direct I/O 1.00 GB/s | 80% | 70% "
            "| met |") in rows
    assert ("| host -> disk (block files), empty tier filling up, 2048 KiB blocks | 0.50 GB/s | raw direct I/O 1.00 GB/s "
            "| 50% | 70% | MISSED |") in rows
    assert any("8 per flush" in r and "120% | 70% | met" in r for r in rows)
    assert any("conversation" in r and "MISSED by 1.50 us" in r for r in rows)
    assert kv_tiers.path_ratios(None) == []


def test_unknown_sections_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown sections"):
        benchmarks.run(tmp_path / "b.md", sections=["nope"])
    assert run("--sections", "nope").returncode == 2
