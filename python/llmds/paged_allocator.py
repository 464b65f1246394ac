"""Paged memory allocator: fixed-size KV pages handed out by id from a free list."""

from llmds._core import PagedAllocator as PagedAllocator
from llmds._core import PageStats as PageStats

__all__ = ["PageStats", "PagedAllocator"]
