"""llmds.kv_block_manager: tiers, matches, onboarding, events and the tiered trace replay."""

from __future__ import annotations

import gc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from llmds import replay
from llmds.kv_block_manager import KVBlockManager, replay_tiered_prefix_cache
from llmds.traces import load_mooncake_trace, parse_mooncake_trace


def serve(m: KVBlockManager, hashes: list[int]) -> None:
    """One request's prompt: match, onboard, compute and register the rest, release tail first."""
    match = m.match(hashes)
    blocks = m.onboard(match)
    fresh = m.allocate(len(hashes) - len(blocks))
    parent = hashes[len(blocks) - 1] if blocks else None
    m.register_blocks(fresh, hashes[len(blocks) :], parent=parent)
    m.release((blocks + fresh)[::-1])


def test_an_evicted_prefix_comes_back_from_host_and_disk() -> None:
    m = KVBlockManager(primary_blocks=2, host_blocks=2, disk_blocks=8)
    assert m.tiers == ["primary", "host", "disk"]
    serve(m, [1, 2])
    serve(m, [3, 4])
    serve(m, [5, 6])
    assert m.find(1) == "disk" and m.find(3) == "host" and m.find(5) == "primary" and m.find(9) is None
    match = m.match([3, 4, 7])
    assert len(match) == 2 and match.tiers == ["host", "host"] and match.hashes == [3, 4]
    assert match.count("host") == 2 and match.to_onboard == 2 and match.open
    blocks = m.onboard(match)
    assert len(blocks) == 2 and not match.open
    # 3 and 4 left host for primary; the primary blocks they displaced (5, 6) found host full of
    # the pinned 3 and 4, so their offloads were dropped.
    assert sorted(m.contents("primary")) == [3, 4] and m.contents("host") == []
    assert sorted(m.contents("disk")) == [1, 2]
    stats = m.stats()
    assert list(stats) == ["primary", "host", "disk"]
    assert stats["host"]["hit_blocks"] == 2 and stats["host"]["onboarded_blocks"] == 2
    assert stats["host"]["dropped_offloads"] == 2 and stats["primary"]["in_use_blocks"] == 2
    m.release(blocks[::-1])
    assert "KVBlockManager(primary=" in repr(m)


def test_write_through_keeps_copies_in_every_tier() -> None:
    m = KVBlockManager(primary_blocks=4, host_blocks=4, disk_blocks=4, offload_policy="write-through", block_bytes=64)
    serve(m, [1, 2])
    for tier in m.tiers:
        assert sorted(m.contents(tier)) == [1, 2]
    assert m.stats()["host"]["bytes_in"] == 128


def test_events_follow_every_change_in_order() -> None:
    m = KVBlockManager(primary_blocks=2, host_blocks=2, block_size=2)
    seen: list[dict[str, Any]] = []
    sub = m.subscribe(seen.append)
    blocks = m.allocate(2)
    m.register_blocks(blocks, [10, 11], parent=9, token_ids=[1, 2, 3, 4], priority=60)
    m.release(blocks[::-1])
    m.release(m.allocate(2))
    assert [b["seq"] for b in seen] == [0, 1]
    stored = seen[0]["events"][0]
    assert stored == {
        "type": "BlockStored",
        "block_hashes": [10, 11],
        "parent_block_hash": 9,
        "token_ids": [1, 2, 3, 4],
        "block_size": 2,
        "medium": "primary",
    }
    assert seen[1]["events"][0] == {"type": "BlockRemoved", "block_hashes": [11, 10], "medium": "primary"}
    assert seen[1]["events"][1]["medium"] == "host"
    assert m.events_since(1) == seen[1:]
    assert m.next_event_seq == 2
    assert m.unsubscribe(sub) and not m.unsubscribe(sub)
    assert m.clear()
    assert m.events_since(2)[0]["events"] == [{"type": "AllBlocksCleared"}]


def test_a_late_subscriber_learns_that_it_missed_events() -> None:
    m = KVBlockManager(primary_blocks=4, event_log_batches=2)
    for i in range(4):
        serve(m, [100 + i])
    assert len(m.events_since(2)) == 2
    with pytest.raises(KeyError, match="left the log"):
        m.events_since(0)


def test_a_subscriber_that_raises_is_reported_and_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    m = KVBlockManager(primary_blocks=4)
    reports: list[Any] = []
    monkeypatch.setattr("sys.unraisablehook", reports.append)
    good: list[int] = []

    def bad(batch: dict[str, Any]) -> None:
        raise RuntimeError("router down")

    m.subscribe(bad)
    m.subscribe(lambda b: good.append(b["seq"]))
    serve(m, [1])
    serve(m, [2])
    assert good == [0, 1]
    assert len(reports) == 1 and isinstance(reports[0].exc_value, RuntimeError)


def test_a_subscriber_may_call_back_into_the_manager() -> None:
    m = KVBlockManager(primary_blocks=4)
    seen: list[int] = []

    def follow(batch: dict[str, Any]) -> None:
        seen.append(batch["seq"])
        if batch["seq"] == 0:
            serve(m, [50])  # changes the cache from inside a callback: delivered next, in order
        assert m.find(1) in ("primary", None)

    m.subscribe(follow)
    serve(m, [1])
    assert seen == [0, 1]


def test_bad_calls_raise_and_change_nothing() -> None:
    with pytest.raises(ValueError):
        KVBlockManager(primary_blocks=0)
    with pytest.raises(ValueError, match="offload_policy"):
        KVBlockManager(primary_blocks=2, offload_policy="sometimes")
    with pytest.raises(ValueError):
        KVBlockManager(primary_blocks=2, offload_min_priority=101)
    m = KVBlockManager(primary_blocks=2, host_blocks=2)
    with pytest.raises(MemoryError):
        m.allocate(3)
    blocks = m.allocate(2)
    with pytest.raises(ValueError):
        m.register_blocks(blocks, [1])
    with pytest.raises(ValueError):
        m.register_blocks(blocks, [1, 2], priority=101)
    with pytest.raises(ValueError):
        m.register_blocks(blocks, [1, 2], token_ids=[1, 2, 3])
    with pytest.raises(IndexError):
        m.register_blocks([7], [1])
    with pytest.raises(ValueError, match="tier"):
        m.contents("tape")
    with pytest.raises(ValueError, match="no disk tier"):
        m.contents("disk")
    assert m.contents("primary") == []
    m.register_blocks(blocks, [1, 2])
    m.release(blocks)
    with pytest.raises(ValueError):
        m.release(blocks)
    held = m.allocate(2)  # 1 and 2 go to host
    match = m.match([1, 2])
    with pytest.raises(MemoryError):
        m.onboard(match)
    assert match.open and m.stats()["host"]["in_use_blocks"] == 2
    m.cancel(match)
    with pytest.raises(ValueError, match="already used"):
        m.onboard(match)
    other = KVBlockManager(primary_blocks=2)
    foreign = other.match([])
    with pytest.raises(ValueError):
        m.cancel(foreign)
    m.release(held)
    del other, foreign
    gc.collect()


def test_a_match_keeps_its_manager_and_no_other_takes_it() -> None:
    m = KVBlockManager(primary_blocks=2)
    serve(m, [1])
    match = m.match([1])
    del m
    gc.collect()
    for _ in range(20):  # none of these can sit where the first manager was: it is still alive
        other = KVBlockManager(primary_blocks=2)
        with pytest.raises(ValueError, match="not from this manager"):
            other.cancel(match)
    assert match.open


# ---- the tiered replay ------------------------------------------------------------------

TRACE = "\n".join(
    f'{{"timestamp": {i}, "input_length": {512 * n + 7}, "output_length": 3, "hash_ids": {list(range(c * 100, c * 100 + n))}}}'
    for i, (c, n) in enumerate([(0, 3), (1, 2), (0, 4), (2, 5), (1, 3), (0, 4), (3, 2), (2, 5)])
)


def test_the_tiered_replay_with_one_tier_is_the_single_tier_replay() -> None:
    trace = parse_mooncake_trace(TRACE)
    for capacity in (6, 8, 12, 40):
        one = replay_tiered_prefix_cache(trace, capacity)
        single = replay.replay_prefix_cache(trace, capacity)
        assert one.hit_blocks == single.hit_blocks and one.lookup_blocks == single.lookup_blocks
        assert list(one.tiers) == ["primary"]
    tiered = replay_tiered_prefix_cache(trace, 6, host_blocks=40)
    assert tiered.hit_rate == replay.replay_prefix_cache(trace, 46).hit_rate
    assert tiered.tier_hit_rate("host") > 0 and tiered.tiers["host"]["onboarded_blocks"] > 0
    assert "TieredReplayResult(requests=8" in repr(tiered)
    with pytest.raises(ValueError, match="no tier 'disk'"):
        tiered.tier_hit_rate("disk")
    with pytest.raises(ValueError):
        replay_tiered_prefix_cache(trace, 6, offload_policy="never")
    with pytest.raises(MemoryError):
        replay_tiered_prefix_cache(trace, 2, host_blocks=10)
    assert replay.replay_tiered_prefix_cache is replay_tiered_prefix_cache


def test_the_real_conversation_trace_reaches_the_unlimited_hit_rate_with_a_disk_tier(
    data_file: Callable[[str], Path],
) -> None:
    trace = load_mooncake_trace(data_file("traces/mooncake_fast25_conversation_trace.jsonl"))
    r = replay_tiered_prefix_cache(trace, 6000, host_blocks=16000, disk_blocks=400000)
    assert r.hit_rate == pytest.approx(0.3819, abs=0.001)
    assert r.tiers["disk"]["evicted_blocks"] == 0
    by_tier = sum(r.tier_hit_rate(t) for t in ("primary", "host", "disk"))
    assert by_tier == pytest.approx(r.hit_rate)
    filtered = replay_tiered_prefix_cache(trace, 6000, host_blocks=16000, disk_blocks=400000, disk_min_uses=2)
    assert filtered.tiers["disk"]["stored_blocks"] < r.tiers["disk"]["stored_blocks"]
    assert filtered.hit_rate <= r.hit_rate


def test_the_tiered_replay_can_move_real_blocks(tmp_path: Path) -> None:
    trace = parse_mooncake_trace(TRACE)
    metadata = replay_tiered_prefix_cache(trace, 6, host_blocks=4, disk_blocks=40)
    assert metadata.disk is None
    real = replay_tiered_prefix_cache(trace, 6, host_blocks=4, disk_blocks=40, block_bytes=4096, move_bytes=True,
                                      disk_directory=tmp_path / "kv")
    assert real.disk is not None and real.disk["writes"] == real.tiers["disk"]["stored_blocks"]
    assert real.tiers["host"]["bytes_in"] == 4096 * real.tiers["host"]["stored_blocks"]
    assert real.hit_blocks <= metadata.hit_blocks  # a full write queue may drop, never invent
    with pytest.raises(ValueError, match="block_bytes"):
        replay_tiered_prefix_cache(trace, 6, move_bytes=True)
    with pytest.raises(ValueError, match="disk_directory"):
        replay_tiered_prefix_cache(trace, 6, disk_blocks=10, block_bytes=4096, move_bytes=True)
