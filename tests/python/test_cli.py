"""The command line: `python -m llmds demo` runs end to end on the real traces."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import llmds


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "llmds", *args], capture_output=True, text=True,
                          timeout=300, check=False)


def test_version():
    result = run("version")
    assert result.returncode == 0
    assert result.stdout.strip() == llmds.__version__


@pytest.fixture(scope="module")
def demo(shared_data, tmp_path_factory) -> tuple[subprocess.CompletedProcess[str], Path]:
    """One run of the demo on the real data, shared by the tests that read its output."""
    out = tmp_path_factory.mktemp("demo")
    return run("demo", "--data-dir", str(shared_data), "--out", str(out)), out


def test_demo_runs_on_the_real_traces(demo):
    result, _ = demo
    assert result.returncode == 0, result.stderr
    assert "12,031 requests, 144,793,823 prompt tokens" in result.stdout
    assert "8,819 requests of the Azure LLM code trace" in result.stdout
    assert "heavy hitters of the wider sketch" in result.stdout
    assert "19,366 requests over 3,502 s at 2x their real rate" in result.stdout
    assert "llmds wait=50ms" in result.stdout and "batching target: load x2" in result.stdout
    assert "turned away ('qps_limit')" in result.stdout
    assert "cranfield    1400       225   0.305 (0.294)" in result.stdout  # judged: MAP beside Xapian's
    assert "model: 260,032 parameters" in result.stdout
    assert "tokens streamed" in result.stdout and "prompt tokens came from the cache" in result.stdout


def test_demo_writes_a_report_with_plots(demo):
    result, out = demo
    report = out / "report.md"
    assert f"report: {report.resolve()}" in result.stdout
    text = report.read_text()
    # Every section is in the report, with what it printed, and names the data it used.
    for title in ("CountMinSketch", "TokenLRU", "KVCache", "Prefix-cache replay", "KVBlockManager", "IndexedHeap",
                  "Scheduler", "HNSW", "InvertedIndex", "RetrievalPipeline", "Engine"):
        assert f"## {title}" in text
    assert "with the disk tier, 6 of the 6 configurations above reach it" in text
    assert "tokens streamed" in text and "- Machine:" in text and "- Data: Fashion-MNIST:" in text
    for plot in ("kv_cache_hit_rate", "kv_tiers_hit_rate", "scheduler_latency", "hnsw_recall_qps"):
        png = out / f"{plot}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({plot}.png)" in text


def test_demo_without_the_data_folder_runs_on_what_the_package_and_machine_have(tmp_path):
    out = tmp_path / "report"
    result = run("demo", "--data-dir", str(tmp_path / "absent"), "--out", str(out))
    assert result.returncode == 0, result.stderr
    bundled = str(Path(llmds.__file__).parent / "datasets")
    assert f"data: Mooncake trace: {bundled}" in result.stdout
    assert f"data: stories260K model: {bundled}" in result.stdout
    assert "data: Fashion-MNIST: /usr/share/datasets/fashion-mnist" in result.stdout
    assert "Debian package descriptions" in result.stdout
    assert "12,031 requests, 144,793,823 prompt tokens" in result.stdout  # the same trace, gzipped
    assert "the package described is in the top 10" in result.stdout
    assert (out / "report.md").exists()


def test_unknown_command_is_a_usage_error():
    assert run("frobnicate").returncode == 2


def test_replay_prints_the_hit_rates(shared_data):
    trace = shared_data / "traces" / "mooncake_fast25_synthetic_trace.jsonl"
    result = run("replay", "mooncake", str(trace), "--capacity-blocks", "4000", "64000")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "3,993 requests" in lines[0]
    assert "25.62%" in lines[2] and "65.94%" in lines[3]


def test_tiered_replay_prints_each_tier_and_the_single_tier_reference(shared_data):
    trace = shared_data / "traces" / "mooncake_fast25_synthetic_trace.jsonl"
    result = run("replay", "mooncake", str(trace), "--tiers", "primary=6000", "host=16000", "disk=400000")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "primary 6,000 + host 16,000 + disk 400,000 blocks, write-back" in out
    combined = next(line for line in out.splitlines() if line.strip().startswith("combined"))
    assert "65.94%" in combined  # the unlimited cache's hit rate
    assert "one LRU tier of 422,000 blocks: 65.94%" in out
    for tier in ("primary", "host", "disk"):
        assert any(line.strip().startswith(tier) for line in out.splitlines())


def test_tiered_replay_moves_real_blocks_through_a_disk_folder(tmp_path):
    lines = [f'{{"timestamp": {i}, "input_length": {512 * (1 + i % 4) + 1}, "output_length": 2, '
             f'"hash_ids": {list(range((i % 5) * 10, (i % 5) * 10 + 1 + i % 4))}}}' for i in range(60)]
    trace = tmp_path / "t.jsonl"
    trace.write_text("\n".join(lines) + "\n")
    result = run("replay", "mooncake", str(trace), "--tiers", "primary=6", "host=4", "disk=50",
                 "--block-bytes", "4096", "--disk-dir", str(tmp_path / "kv"))
    assert result.returncode == 0, result.stderr
    assert "(moving real blocks)" in result.stdout and "disk files:" in result.stdout
    # With the writes on the replay's thread, none is dropped: the disk tier holds what the
    # metadata-only replay says it would.
    synchronous = run("replay", "mooncake", str(trace), "--tiers", "primary=6", "host=4", "disk=50",
                      "--block-bytes", "4096", "--disk-dir", str(tmp_path / "kv2"), "--disk-queue", "0")
    metadata = run("replay", "mooncake", str(trace), "--tiers", "primary=6", "host=4", "disk=50")
    assert synchronous.returncode == 0, synchronous.stderr

    def disk_rows(out: str) -> list[list[str]]:
        return [line.split()[:7] for line in out.splitlines() if line.split()[:1] == ["disk"] and "files:" not in line]

    disk_row = disk_rows(synchronous.stdout)
    assert len(disk_row) == 1 and disk_row == disk_rows(metadata.stdout)
    assert disk_row[0][6] == "0"  # nothing dropped
    again = run("replay", "mooncake", str(trace), "--tiers", "primary=6", "disk=50", "--block-bytes", "4096",
                "--move-bytes")
    assert again.returncode == 2 and "disk_directory" in again.stderr


def test_routed_replay_prints_both_routings_beside_one_global_cache(shared_data):
    trace = shared_data / "traces" / "mooncake_fast25_conversation_trace.jsonl"
    result = run("replay", "mooncake", str(trace), "--tiers", "primary=1500", "host=4000", "--replicas", "4")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "over 4 replicas of primary 1,500 + host 4,000 blocks" in lines[0]
    rr = next(line for line in lines if line.strip().startswith("round-robin"))
    kv = next(line for line in lines if line.strip().startswith("kv-aware"))
    assert "13.35%" in rr and "31.49%" in kv and "(1.000x)" in kv
    assert "one cache of primary 6,000 + host 16,000 blocks: 31.52%" in result.stdout
    bad = run("replay", "mooncake", str(trace), "--tiers", "primary=10", "disk=10", "--replicas", "2")
    assert bad.returncode == 2 and "primary and host" in bad.stderr


def test_tiered_replay_rejects_bad_tier_specs(tmp_path):
    trace = tmp_path / "t.jsonl"
    trace.write_text('{"timestamp": 0, "input_length": 10, "output_length": 1, "hash_ids": [1]}\n')
    for spec in (["host=10"], ["primary=ten"], ["primary=5", "primary=6"], ["gpu=4"]):
        result = run("replay", "mooncake", str(trace), "--tiers", *spec)
        assert result.returncode == 2 and "--tiers" in result.stderr, spec
    both = run("replay", "mooncake", str(trace), "--tiers", "primary=4", "--capacity-blocks", "4")
    assert both.returncode == 2 and "not allowed with" in both.stderr


def test_replay_of_a_missing_trace_is_a_clear_error(tmp_path):
    result = run("replay", "mooncake", str(tmp_path / "nope.jsonl"), "--capacity-blocks", "10")
    assert result.returncode == 2
    assert "no such trace file" in result.stderr


def test_demo_shows_the_kv_cache_and_a_replay(demo):
    result, _ = demo
    assert result.returncode == 0, result.stderr
    assert "copy-on-write" in result.stdout
    assert "mooncake_fast25_conversation_trace.jsonl: 12,031 requests" in result.stdout


def test_demo_shows_vector_search_bm25_and_hybrid_search(demo):
    out = demo[0].stdout
    assert "HNSW: Fashion-MNIST" in out and "filtered to the query's class" in out
    cranfield = next(line for line in out.splitlines() if line.strip().startswith("cranfield"))
    assert "(0.294)" in cranfield and "(0.373)" in cranfield
    assert "reciprocal rank fusion" in out and "answered from the cache" in out


def test_generate_streams_a_story(data_env):
    # The model from the data folder, else the package's own copy, as a user's run finds it.
    result = run("generate", "--prompt", "Once upon a time", "--max-tokens", "60", "--temperature", "0")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Once upon a time, there was a little girl named Lily.")
    assert "60 tokens, max_tokens" in result.stderr
    seeded = [run("generate", "--max-tokens", "40", "--seed", "5").stdout
              for _ in range(2)]
    assert seeded[0] == seeded[1]


def test_generate_with_a_missing_model_is_a_clear_error(tmp_path):
    result = run("generate", "--model", str(tmp_path / "none.bin"), "--tokenizer", str(tmp_path / "t.bin"))
    assert result.returncode == 2
    assert "none.bin" in result.stderr
