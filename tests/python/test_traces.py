"""llmds.traces and llmds.replay: the Mooncake trace reader and the prefix-cache replay against the
reference."""

from __future__ import annotations

import json

import pytest

from llmds.replay import prefix_cache_sweep, replay_prefix_cache
from llmds.traces import load_mooncake_trace

# Hit rates (%) of a widely used serving engine's LRU block pool under the same protocol
# (shared data, traces/README.md, section 3): the bar is to match each within 0.2 points.
REFERENCE = {
    "mooncake_fast25_conversation_trace.jsonl": {
        1_000: 4.70, 4_000: 9.40, 6_000: 15.02, 16_000: 27.95, 64_000: 37.53, 100_000: 37.95},
    "mooncake_fast25_synthetic_trace.jsonl": {
        1_000: 8.79, 4_000: 25.62, 6_000: 33.11, 16_000: 55.47, 64_000: 65.94, 100_000: 65.94},
}


def test_a_sweep_is_one_cold_replay_per_capacity(data_file):
    trace = load_mooncake_trace(data_file("traces/mooncake_fast25_conversation_trace.jsonl"))
    capacities = [16_000, 1_000, 4_000]
    swept = prefix_cache_sweep(trace, capacities)
    assert [r.capacity_blocks for r in swept] == capacities
    for capacity, r in zip(capacities, swept):
        alone = replay_prefix_cache(trace, capacity)
        assert (r.hit_blocks, r.lookup_blocks, r.evictions) == (alone.hit_blocks, alone.lookup_blocks, alone.evictions)
    assert prefix_cache_sweep(trace, []) == []


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_replay_matches_the_reference_hit_rates(data_file, name):
    trace = load_mooncake_trace(data_file(f"traces/{name}"))
    for capacity, expected in REFERENCE[name].items():
        result = replay_prefix_cache(trace, capacity)
        assert abs(100 * result.hit_rate - expected) <= 0.2, (name, capacity, result)
        assert result.requests == len(trace)
        assert result.hit_blocks <= result.lookup_blocks


def write_trace(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_replay_counts_hits_under_the_protocol(tmp_path):
    rows = [
        {"timestamp": 0, "input_length": 9, "output_length": 3, "hash_ids": [10, 11, 12]},
        {"timestamp": 1, "input_length": 8, "output_length": 0, "hash_ids": [10, 11]},
        {"timestamp": 2, "input_length": 6, "output_length": 0, "hash_ids": [10, 13]},
    ]
    trace = load_mooncake_trace(write_trace(tmp_path / "t.jsonl", rows))
    assert len(trace) == 3 and trace.total_input_tokens == 23
    r = replay_prefix_cache(trace, capacity_blocks=16, block_size=4)
    assert (r.lookup_blocks, r.hit_blocks, r.evictions) == (5, 2, 0)
    assert r.hit_rate == pytest.approx(0.4)


def test_bad_traces_and_arguments_are_clear_errors(tmp_path):
    with pytest.raises(OSError):
        load_mooncake_trace(tmp_path / "missing.jsonl")
    bad = write_trace(tmp_path / "bad.jsonl", [{"timestamp": 0, "input_length": 5}])
    with pytest.raises(ValueError, match="line 1"):
        load_mooncake_trace(bad)
    ok = load_mooncake_trace(write_trace(
        tmp_path / "ok.jsonl", [{"timestamp": 0, "input_length": 9, "output_length": 0, "hash_ids": [1, 2]}]))
    with pytest.raises(ValueError):
        replay_prefix_cache(ok, 0)
    with pytest.raises(MemoryError):
        replay_prefix_cache(ok, capacity_blocks=2, block_size=4)  # it holds 3 blocks
