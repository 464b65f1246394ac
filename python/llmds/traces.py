"""Real request traces, and replaying them through a prefix cache.

``load_mooncake_trace`` parses a Mooncake FAST'25 trace (JSON Lines with per-block hash ids);
``replay_prefix_cache`` runs it through an LRU block pool in C++ under the protocol of the shared
data's ``traces/README.md`` (section 3), so its hit rates compare like for like with the block
pools of serving engines.
"""

from llmds._core import MooncakeTrace as MooncakeTrace
from llmds._core import PrefixCacheReplayResult as PrefixCacheReplayResult
from llmds._core import load_mooncake_trace as load_mooncake_trace
from llmds._core import replay_prefix_cache as replay_prefix_cache

__all__ = ["MooncakeTrace", "PrefixCacheReplayResult", "load_mooncake_trace", "replay_prefix_cache"]
