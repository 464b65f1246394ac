"""llmds.routing: the KV indexer fed by real block managers' events, and the routed replay."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest

from llmds import replay
from llmds.kv_block_manager import KVBlockManager
from llmds.routing import KVIndexer, replay_routed_prefix_cache
from llmds.traces import load_mooncake_trace, parse_mooncake_trace


def serve(m: KVBlockManager, keys: list[int]) -> None:
    """One request as an engine runs it: the cached prefix onboarded, the rest computed and
    registered, everything released tail first."""
    blocks = m.onboard(m.match(keys))
    fresh = m.allocate(len(keys) - len(blocks))
    m.register_blocks(fresh, keys[len(blocks):], keys[len(blocks) - 1] if blocks else None)
    m.release((blocks + fresh)[::-1])


def test_the_index_says_what_every_server_holds_under_random_traffic() -> None:
    index = KVIndexer()
    servers = [KVBlockManager(primary_blocks=6, host_blocks=5, block_size=4) for _ in range(3)]
    outcomes: list[str] = []
    for worker, server in enumerate(servers):
        server.subscribe(lambda batch, w=worker: outcomes.append(index.apply(w, batch)))
    rng = random.Random(9)
    for step in range(400):
        conv = rng.randrange(6)
        serve(servers[rng.randrange(3)], [conv * 100 + i for i in range(1 + rng.randrange(4))])
        query = [conv * 100 + i for i in range(4)]
        want = []
        for worker, server in enumerate(servers):
            tiers = []
            for key in query:
                tier = server.find(key)
                if tier is None:
                    break
                tiers.append(tier)
            if tiers:
                by_tier = {t: tiers.count(t) for t in ("primary", "host", "disk", "remote")}
                want.append({"worker": worker, "blocks": len(tiers), "by_tier": by_tier})
        want.sort(key=lambda s: -s["blocks"])  # stable: ties stay by worker
        assert index.score(query) == want, f"step {step}"
    assert set(outcomes) == {"applied"}
    assert index.workers == [0, 1, 2]
    assert repr(index) == f"KVIndexer(workers=3, blocks={len(index)})"
    assert len(index) > 0
    held = sum(len(servers[1].contents(t)) for t in ("primary", "host"))
    assert index.worker(1) == {"next_seq": index.worker(1)["next_seq"], "blocks": held, "gaps": 0, "in_sync": True}


def test_duplicates_are_skipped_gaps_reported_and_bad_batches_change_nothing() -> None:
    index = KVIndexer()

    def stored(seq: int, keys: list[int], medium: str = "primary") -> dict:
        return {"seq": seq, "events": [{"type": "BlockStored", "block_hashes": keys, "parent_block_hash": None,
                                         "token_ids": [], "block_size": 16, "medium": medium}]}

    assert index.apply(4, stored(0, [1, 2])) == "applied"
    assert index.apply(4, stored(0, [9])) == "duplicate"
    assert index.apply(4, stored(3, [3], "host")) == "after_gap"
    assert index.worker(4) == {"next_seq": 4, "blocks": 3, "gaps": 1, "in_sync": False}
    assert index.mark_synced(4) and index.worker(4)["in_sync"]
    assert index.score([1, 2, 3]) == [{"worker": 4, "blocks": 3,
                                       "by_tier": {"primary": 2, "host": 1, "disk": 0, "remote": 0}}]
    for bad, match in (({"events": []}, "seq"), ({"seq": -1, "events": []}, "seq"),
                       ({"seq": 4, "events": [{"type": "BlockMoved"}]}, "unknown event type"),
                       ({"seq": 4, "events": [{"type": "BlockRemoved", "block_hashes": [1], "medium": "gpu"}]},
                        "unknown tier"),
                       ({"seq": 4, "events": [{"type": "BlockStored", "medium": "primary"}]}, "block_hashes")):
        with pytest.raises(ValueError, match=match):
            index.apply(4, bad)
    assert index.worker(4)["next_seq"] == 4 and len(index) == 3  # nothing changed
    with pytest.raises(ValueError, match="worker"):
        index.apply(-1, stored(0, [1]))
    assert index.apply(4, {"seq": 4, "events": [{"type": "AllBlocksCleared"}]}) == "applied"
    assert len(index) == 0 and index.score([1]) == []
    assert index.remove_worker(4) and not index.remove_worker(4) and index.worker(4) is None


TRACE = "\n".join(
    f'{{"timestamp": {i}, "input_length": {512 * turn + 1}, "output_length": 0, '
    f'"hash_ids": {[conv + b for b in range(turn)]}}}'
    for i, (turn, conv) in enumerate((t, c) for t in (1, 2, 3) for c in (100, 200, 300))
)


def test_routing_by_the_index_follows_the_cached_prefix() -> None:
    trace = parse_mooncake_trace(TRACE)
    rr = replay_routed_prefix_cache(trace, 2, 8, routing="round-robin")
    kv = replay_routed_prefix_cache(trace, 2, 8, max_imbalance=2.0)
    assert (rr.hit_blocks, rr.lookup_blocks, rr.requests_per_replica) == (3, 18, [5, 4])
    assert (kv.hit_blocks, kv.requests_per_replica, kv.routed_to_best) == (9, [6, 3], 6)
    assert kv.imbalance == 2.0 and "RoutedReplayResult(requests=9" in repr(kv)
    assert replay.replay_routed_prefix_cache is replay_routed_prefix_cache
    for kwargs, error in (({"routing": "random"}, ValueError), ({"max_imbalance": 0.9}, ValueError),
                          ({"replicas": 0}, ValueError)):
        args = {"replicas": 2, "primary_blocks": 8, **kwargs}
        with pytest.raises(error):
            replay_routed_prefix_cache(trace, **args)
    with pytest.raises(MemoryError):  # a third turn holds 4 blocks
        replay_routed_prefix_cache(trace, 2, 2)


@pytest.mark.parametrize("name", ["conversation", "synthetic"])
def test_routing_on_the_real_traces_nearly_matches_one_global_cache(
    data_file: Callable[[str], Path], name: str
) -> None:
    trace = load_mooncake_trace(data_file(f"traces/mooncake_fast25_{name}_trace.jsonl"))
    one = replay.replay_tiered_prefix_cache(trace, 6000, host_blocks=16000)
    kv = replay_routed_prefix_cache(trace, 4, 1500, host_blocks=4000)
    rr = replay_routed_prefix_cache(trace, 4, 1500, host_blocks=4000, routing="round-robin")
    assert kv.hit_rate >= one.hit_rate - 0.02 and kv.imbalance <= 1.2
    assert rr.hit_rate < kv.hit_rate - 0.1
