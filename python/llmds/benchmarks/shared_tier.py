"""A Mooncake trace over several replica processes that share a Redis KV tier.

Each replica is a process replaying its round-robin share of the trace (requests i, i + N,
i + 2N, ... in trace order, all replicas at once) through its own KVBlockManager of small primary
and host tiers; with the shared tier, every block a replica computes is put into one Redis server
and the prompt blocks its local tiers miss are read back from there
(``replay_tiered_prefix_cache(..., remote=RedisBlockStore)``). Beside it: the same replicas
without the shared tier, and one global cache of the replicas' summed local capacity replaying
the whole trace in order. The replicas run concurrently, so which one computes a shared prefix
first varies from run to run, and so do the figures, a little.

Run by ``python -m llmds bench --sections remote``.
"""

from __future__ import annotations

import multiprocessing
import uuid
from dataclasses import dataclass
from pathlib import Path

from llmds.benchmarks.redis_tier import RedisAddress


@dataclass(frozen=True)
class SharedTierResult:
    """Prompt blocks looked up and hit over all replicas; hits served by the shared tier."""

    lookup_blocks: int
    hit_blocks: int
    remote_hit_blocks: int

    @property
    def hit_rate(self) -> float:
        """hit_blocks / lookup_blocks (0 for no lookups)."""
        return self.hit_blocks / self.lookup_blocks if self.lookup_blocks else 0.0


def _share(path: Path, index: int, replicas: int) -> str:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return "\n".join(lines[index::replicas])


def _replica(job: tuple) -> tuple[int, int, int]:
    from llmds.kv_block_manager import RedisBlockStore
    from llmds.replay import replay_tiered_prefix_cache
    from llmds.traces import parse_mooncake_trace

    path, index, replicas, primary, host, block_bytes, address, namespace = job
    trace = parse_mooncake_trace(_share(Path(path), index, replicas))
    remote = None
    if address is not None:
        remote = RedisBlockStore(block_bytes, address.host, address.port, password=address.password,
                                 database=address.database, namespace=namespace, model="mooncake")
    r = replay_tiered_prefix_cache(trace, primary, host_blocks=host, block_bytes=block_bytes, move_bytes=True,
                                   remote=remote)
    remote_hits = r.tiers["remote"]["onboarded_blocks"] if remote is not None else 0
    return r.lookup_blocks, r.hit_blocks, remote_hits


def replay_replicas(path: Path, replicas: int, primary_blocks: int, host_blocks: int,
                    address: RedisAddress | None, block_bytes: int = 64) -> SharedTierResult:
    """The trace at `path` over `replicas` processes, sharing the Redis server at `address`
    (None: no shared tier). The shared blocks go under a namespace of their own, removed by
    nobody: give the server an LRU maxmemory policy."""
    namespace = f"llmds-shared-{uuid.uuid4().hex}"
    jobs = [(str(path), i, replicas, primary_blocks, host_blocks, block_bytes, address, namespace)
            for i in range(replicas)]
    with multiprocessing.get_context("spawn").Pool(replicas) as pool:
        parts = pool.map(_replica, jobs)
    return SharedTierResult(*(sum(p[k] for p in parts) for k in range(3)))


def replay_global(path: Path, primary_blocks: int, host_blocks: int) -> SharedTierResult:
    """One cache of the given capacity replaying the whole trace in order."""
    from llmds.replay import replay_tiered_prefix_cache
    from llmds.traces import load_mooncake_trace

    r = replay_tiered_prefix_cache(load_mooncake_trace(path), primary_blocks, host_blocks=host_blocks)
    return SharedTierResult(r.lookup_blocks, r.hit_blocks, 0)


__all__ = ["SharedTierResult", "replay_global", "replay_replicas"]
