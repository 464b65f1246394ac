"""Hybrid retrieval: BM25 and HNSW fused (weighted min-max or reciprocal rank), with hot-query caching."""

from llmds._core import RetrievalPipeline as RetrievalPipeline

__all__ = ["RetrievalPipeline"]
