"""A prefix cache over storage tiers: primary (the KV arena), host memory and disk.

``KVBlockManager`` keeps one block pool per tier. A block that primary evicts is offloaded to host,
and one that host evicts to disk; ``match`` finds a prompt's prefix in any tier and ``onboard``
brings it back into primary instead of recomputing it. Every change of what a tier holds is an
event (``subscribe``, ``events_since``), in the shape vLLM's KV events have, so a cache-aware
router can follow it. ``RedisBlockStore`` keeps blocks in a Redis server that many servers share
(the remote tier's store). See docs/kv-block-manager.md.

    >>> from llmds.kv_block_manager import KVBlockManager
    >>> m = KVBlockManager(primary_blocks=2, host_blocks=4)
    >>> blocks = m.allocate(2)
    >>> m.register_blocks(blocks, [11, 12])
    [0, 1]
    >>> m.release(blocks[::-1])
    >>> m.release(m.allocate(2))   # primary evicts 12 and 11: they go to host
    >>> match = m.match([11, 12, 13])
    >>> match.tiers
    ['host', 'host']
    >>> len(m.onboard(match))
    2
"""

from llmds import _core
from llmds._core import KVBlockManager as KVBlockManager
from llmds._core import PrefixMatch as PrefixMatch
from llmds._core import TieredReplayResult as TieredReplayResult
from llmds._core import replay_tiered_prefix_cache as replay_tiered_prefix_cache

HAS_REDIS: bool = hasattr(_core, "RedisBlockStore")
"""Whether this build of llmds has the Redis KV tier (RedisBlockStore; it needs hiredis)."""

if HAS_REDIS:
    from llmds._core import RedisBlockStore as RedisBlockStore
else:

    class RedisBlockStore:  # type: ignore[no-redef]
        """Unavailable: llmds was built without hiredis."""

        def __init__(self, *args: object, **kwargs: object) -> None:
            raise ImportError(
                "llmds was built without hiredis: install libhiredis-dev (Debian) and reinstall llmds")


__all__ = ["HAS_REDIS", "KVBlockManager", "PrefixMatch", "RedisBlockStore", "TieredReplayResult",
           "replay_tiered_prefix_cache"]
