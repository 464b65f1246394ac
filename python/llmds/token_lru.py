"""Token-aware LRU cache with eviction until a token budget."""

from llmds._core import TokenLRU as TokenLRU

__all__ = ["TokenLRU"]
