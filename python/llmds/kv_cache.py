"""Paged KV cache with prefix sharing, copy-on-write and prefix caching across time.

``KVCache`` stores each sequence's KV entries in pages of one arena; ``BlockPool`` is the block
registry beneath it, usable on its own with integer block hashes (as the trace replay does).
"""

from llmds._core import BlockPool as BlockPool
from llmds._core import KVCache as KVCache

__all__ = ["BlockPool", "KVCache"]
