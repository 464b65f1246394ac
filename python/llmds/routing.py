"""Routing requests to the server that already caches their prefix.

Every llmds server's KVBlockManager publishes the changes to what its tiers hold as event batches
(``KVBlockManager.subscribe``, in the shape vLLM's KV events have). ``KVIndexer`` applies the
batches of many servers ("workers") and scores a request's block hashes per worker by the longest
run of its leading blocks that the worker holds, the semantics of Dynamo's KV indexer and llm-d's
block index. ``replay_routed_prefix_cache`` replays a Mooncake trace over several replicas,
routed round-robin or by such an index. ``KVEventPublisher`` puts a manager's events on ZeroMQ in
vLLM's wire format, where Dynamo's KV router or llm-d's indexer (or ``decode_kv_event_batch``
feeding a ``KVIndexer``) read them. See docs/distributed.md.

    >>> from llmds.kv_block_manager import KVBlockManager
    >>> from llmds.routing import KVIndexer
    >>> index = KVIndexer()
    >>> servers = [KVBlockManager(primary_blocks=4) for _ in range(2)]
    >>> for worker, server in enumerate(servers):
    ...     _ = server.subscribe(lambda batch, w=worker: index.apply(w, batch))
    >>> blocks = servers[1].allocate(2)
    >>> _ = servers[1].register_blocks(blocks, [11, 12])
    >>> [(s["worker"], s["blocks"]) for s in index.score([11, 12, 13])]
    [(1, 2)]
"""

from llmds import _core
from llmds._core import KVIndexer as KVIndexer
from llmds._core import RoutedReplayResult as RoutedReplayResult
from llmds._core import replay_routed_prefix_cache as replay_routed_prefix_cache

HAS_ZMQ: bool = hasattr(_core, "KVEventPublisher")
"""Whether this build of llmds has ZeroMQ (KVEventPublisher, decode_kv_event_batch)."""

if HAS_ZMQ:
    from llmds._core import KVEventPublisher as KVEventPublisher
    from llmds._core import decode_kv_event_batch as decode_kv_event_batch
else:
    _NO_ZMQ = (
        "llmds was built without ZeroMQ: install libzmq3-dev, cppzmq-dev and libmsgpack-cxx-dev "
        "(Debian) and reinstall llmds"
    )

    class KVEventPublisher:  # type: ignore[no-redef]
        """Unavailable: llmds was built without ZeroMQ."""

        def __init__(self, *args: object, **kwargs: object) -> None:
            raise ImportError(_NO_ZMQ)

    def decode_kv_event_batch(payload: bytes, seq: int = 0) -> dict:  # type: ignore[misc]
        """Unavailable: llmds was built without ZeroMQ."""
        raise ImportError(_NO_ZMQ)


__all__ = [
    "HAS_ZMQ",
    "KVEventPublisher",
    "KVIndexer",
    "RoutedReplayResult",
    "decode_kv_event_batch",
    "replay_routed_prefix_cache",
]
