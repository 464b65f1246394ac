"""Real request traces, and replaying them through a prefix cache.

``load_mooncake_trace`` parses a Mooncake FAST'25 trace (JSON Lines with per-block hash ids, plain
or gzipped); ``replay_prefix_cache`` runs it through an LRU block pool in C++ under the protocol of
the shared data's ``traces/README.md`` (section 3), so its hit rates compare like for like with the
block pools of serving engines.
"""

from __future__ import annotations

import os
from pathlib import Path

from llmds import _core
from llmds._core import MooncakeTrace as MooncakeTrace
from llmds._core import PrefixCacheReplayResult as PrefixCacheReplayResult
from llmds._core import parse_mooncake_trace as parse_mooncake_trace
from llmds._core import replay_prefix_cache as replay_prefix_cache
from llmds.data import open_text


def load_mooncake_trace(path: str | os.PathLike[str]) -> MooncakeTrace:
    """Parse a Mooncake trace file (``.gz``: gzipped). OSError if it cannot be read, ValueError
    naming the line if it is malformed."""
    path = Path(path)
    if path.suffix == ".gz":
        with open_text(path) as f:
            return parse_mooncake_trace(f.read())
    return _core.load_mooncake_trace(path)


__all__ = ["MooncakeTrace", "PrefixCacheReplayResult", "load_mooncake_trace", "parse_mooncake_trace", "replay_prefix_cache"]
