"""RedisBlockStore against real redis-server processes: blocks round-trip through numpy, lookups
stop at the first miss, and a server that refuses, goes down, restarts or freezes costs misses
and dropped stores, counted, never an exception."""

from __future__ import annotations

import os
import shutil
import time

import numpy as np
import pytest

from llmds.benchmarks.redis_tier import address_from_url, local_redis_server
from llmds.kv_block_manager import HAS_REDIS, RedisBlockStore

if not HAS_REDIS:  # pragma: no cover - CI builds with hiredis and fails on any skip
    pytest.skip("llmds was built without hiredis", allow_module_level=True)
if shutil.which("redis-server") is None:  # pragma: no cover - CI installs it
    pytest.skip("redis-server is not installed (Debian: redis-server)", allow_module_level=True)

BLOCK = 4096


def hashes(n: int, start: int = 0) -> list[bytes]:
    return [i.to_bytes(32, "big") for i in range(start, start + n)]


def blocks(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, BLOCK), dtype=np.uint8)


def store_for(address, **kwargs) -> RedisBlockStore:
    options = dict(password=address.password, database=address.database, model="stories260K",
                   backoff_min=0.02, backoff_max=0.08, command_timeout=0.3)
    options.update(kwargs)
    return RedisBlockStore(BLOCK, address.host, address.port, **options)


def test_blocks_round_trip_and_a_lookup_stops_at_the_first_miss() -> None:
    with local_redis_server() as server:
        store = store_for(server.address)
        data = blocks(5, 1)
        assert store.put(hashes(5), data) == [True] * 5
        assert store.lookup(hashes(8)) == 5
        assert store.lookup([hashes(1)[0], b"absent", *hashes(3, 2)]) == 1
        got, ok = store.get(hashes(6))
        assert ok == [True] * 5 + [False]
        np.testing.assert_array_equal(got[:5], data)
        assert store.key_of(hashes(1)[0]) == "llmds:stories260K:" + "00" * 32
        store.remove(hashes(5))
        assert store.lookup(hashes(5)) == 0
        s = store.stats()
        assert (s["stored_blocks"], s["read_blocks"], s["missed_reads"], s["connects"]) == (5, 5, 1, 1)
        assert s["connected"] and s["dropped_stores"] == 0
        assert repr(store).startswith(f"RedisBlockStore(block_bytes={BLOCK}, 127.0.0.1:{server.port}")


def test_the_shared_server_of_the_test_run_requires_its_password() -> None:
    """The server the test command starts for the whole run (LLMDS_REDIS_URL)."""
    url = os.environ.get("LLMDS_REDIS_URL")
    if not url:
        pytest.skip("LLMDS_REDIS_URL is not set (bash cmake/quickstart.sh test sets it)")
    address = address_from_url(url)
    assert address.password, "the test run's Redis must require a password"
    store = store_for(address, namespace=f"llmds-test-{os.getpid()}")
    assert store.put(hashes(2), blocks(2, 2)) == [True, True]
    assert store.lookup(hashes(2)) == 2
    store.remove(hashes(2))
    without = RedisBlockStore(BLOCK, address.host, address.port, database=address.database)
    assert without.lookup(hashes(2)) == 0 and not without.stats()["connected"]


def test_a_corrupt_value_is_a_miss_and_is_deleted() -> None:
    import redis

    with local_redis_server() as server:
        store = store_for(server.address)
        assert store.put(hashes(2), blocks(2, 3)) == [True, True]
        client = redis.Redis(port=server.port, password=server.address.password)
        key = store.key_of(hashes(1)[0])
        value = bytearray(client.get(key))
        value[-1] ^= 0xFF
        client.set(key, bytes(value))
        _, ok = store.get(hashes(2))
        assert ok == [False, True]
        assert store.stats()["corrupt_blocks"] == 1
        assert client.exists(key) == 0


def test_down_restarted_and_frozen_servers_cost_misses_never_exceptions() -> None:
    with local_redis_server() as server:
        store = store_for(server.address)
        data = blocks(3, 4)
        assert store.put(hashes(3), data) == [True] * 3
        server.stop()
        assert store.lookup(hashes(3)) == 0
        assert store.put(hashes(3), data) == [False] * 3
        server.start()  # empty: no persistence
        time.sleep(0.2)
        assert store.put(hashes(3), data) == [True] * 3
        server.freeze()
        started = time.monotonic()
        _, ok = store.get(hashes(3))
        assert ok == [False] * 3 and time.monotonic() - started < 5
        server.resume()
        time.sleep(0.2)
        got, ok = store.get(hashes(3))
        assert ok == [True] * 3
        np.testing.assert_array_equal(got, data)
        s = store.stats()
        assert s["connects"] >= 3 and s["connection_failures"] >= 2 and s["dropped_stores"] == 3


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="block_bytes"):
        RedisBlockStore(0)
    with pytest.raises(ValueError, match="port"):
        RedisBlockStore(BLOCK, port=70000)
    with pytest.raises(ValueError, match="backoff"):
        RedisBlockStore(BLOCK, backoff_min=2.0, backoff_max=1.0)
    store = RedisBlockStore(BLOCK, port=1, connect_timeout=0.05)  # nothing listens there
    with pytest.raises(ValueError, match="uint8 array"):
        store.put(hashes(2), np.zeros((2, BLOCK - 1), dtype=np.uint8))
    with pytest.raises(ValueError, match="empty"):
        store.lookup([b""])
    assert store.put(hashes(1), np.zeros((1, BLOCK), dtype=np.uint8)) == [False]
    assert store.stats()["dropped_stores"] == 1


def test_replicas_sharing_the_tier_find_each_others_blocks(data_file, tmp_path) -> None:
    from llmds.benchmarks.shared_tier import replay_global, replay_replicas
    from llmds.replay import replay_tiered_prefix_cache
    from llmds.traces import parse_mooncake_trace

    lines = data_file("traces/mooncake_fast25_conversation_trace.jsonl").read_text().splitlines()[:400]
    part = tmp_path / "trace.jsonl"
    part.write_text("\n".join(lines))
    with local_redis_server() as server:
        alone = replay_replicas(part, 2, 300, 0, None)
        shared = replay_replicas(part, 2, 300, 0, server.address)
        assert shared.lookup_blocks == alone.lookup_blocks
        assert shared.remote_hit_blocks > 0
        assert shared.hit_blocks >= alone.hit_blocks + shared.remote_hit_blocks // 2
        one = replay_global(part, 600, 0)
        assert one.lookup_blocks == alone.lookup_blocks
        store = RedisBlockStore(64, server.address.host, server.port, password=server.address.password)
        trace = parse_mooncake_trace("\n".join(lines[:5]))
        with pytest.raises(ValueError, match="move_bytes"):
            replay_tiered_prefix_cache(trace, 300, block_bytes=64, remote=store)
        with pytest.raises(ValueError, match="64 bytes"):
            replay_tiered_prefix_cache(trace, 300, block_bytes=32, move_bytes=True, remote=store)
