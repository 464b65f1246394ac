"""Approximate nearest-neighbour search: HNSW with l2, ip and cosine metrics."""

from llmds._core import HNSW as HNSW

__all__ = ["HNSW"]
