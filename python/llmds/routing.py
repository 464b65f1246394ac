"""Routing requests to the server that already caches their prefix.

Every llmds server's KVBlockManager publishes the changes to what its tiers hold as event batches
(``KVBlockManager.subscribe``, in the shape vLLM's KV events have). ``KVIndexer`` applies the
batches of many servers ("workers") and scores a request's block hashes per worker by the longest
run of its leading blocks that the worker holds, the semantics of Dynamo's KV indexer and llm-d's
block index. ``replay_routed_prefix_cache`` replays a Mooncake trace over several replicas,
routed round-robin or by such an index. See docs/distributed.md.

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

from llmds._core import KVIndexer as KVIndexer
from llmds._core import RoutedReplayResult as RoutedReplayResult
from llmds._core import replay_routed_prefix_cache as replay_routed_prefix_cache

__all__ = ["KVIndexer", "RoutedReplayResult", "replay_routed_prefix_cache"]
