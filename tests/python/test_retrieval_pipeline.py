"""llmds.retrieval_pipeline: the documented signatures, fusion by its definitions, hot-query caching."""

from __future__ import annotations

import numpy as np
import pytest

from llmds.inverted_index import InvertedIndex
from llmds.retrieval_pipeline import RetrievalPipeline

TEXTS = [
    "boundary layer flow over a flat plate",
    "heat transfer in laminar flow",
    "supersonic flow and shock waves",
    "turbulent boundary layer heat transfer",
    "shock wave boundary layer interaction",
    "laminar boundary layer separation",
]


def build(dim=4, seed=0, **kwargs):
    rng = np.random.default_rng(seed)
    pipeline = RetrievalPipeline(dim, seed=1, ef_search=200, **kwargs)
    vectors = rng.normal(size=(len(TEXTS), dim)).astype(np.float32)
    for i, text in enumerate(TEXTS):
        pipeline.add_document(i, text, vectors[i])
    return pipeline, vectors


def cosine_similarities(vectors, q):
    v = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return v @ (q / np.linalg.norm(q))


def minmax(scores: dict[int, float]) -> dict[int, float]:
    hi, lo = max(scores.values()), min(scores.values())
    return {d: (s - lo) / (hi - lo) if hi > lo else 1.0 for d, s in scores.items()}


def test_signature_follows_the_seed():
    pipeline = RetrievalPipeline(dim=8)
    pipeline.add_document(1, "alpha beta")
    pipeline.add_document(2, "beta gamma", embedding=np.ones(8))
    assert pipeline.search("alpha")[0][0] == 1
    assert pipeline.search(query="gamma", query_embedding=None, top_k=1, fusion_weight=0.5)[0][0] == 2
    assert len(pipeline) == 2 and 1 in pipeline and pipeline.dim == 8
    stats = pipeline.stats()
    assert stats["documents"] == 2 and stats["documents_with_embeddings"] == 1
    assert stats["fusion"] == "weighted" and "documents=2" in repr(pipeline)


def test_text_only_search_is_bm25():
    pipeline, _ = build()
    index = InvertedIndex()
    for i, text in enumerate(TEXTS):
        index.add_document(i, text)
    assert pipeline.search("boundary layer heat") == index.search("boundary layer heat")
    # fusion_weight 0: BM25 alone, even with a query embedding.
    assert pipeline.search("boundary layer heat", np.ones(4), fusion_weight=0.0) == index.search("boundary layer heat")


def test_weighted_fusion_is_min_max_normalised_scores():
    pipeline, vectors = build()
    index = InvertedIndex()
    for i, text in enumerate(TEXTS):
        index.add_document(i, text)
    q = np.array([0.3, -1.0, 0.5, 0.2], dtype=np.float32)
    sims = cosine_similarities(vectors, q)
    dense = minmax({i: float(s) for i, s in enumerate(sims)})
    sparse = minmax(dict(index.search("boundary layer flow", top_k=100)))
    for w in (0.5, 0.8):
        want = {d: w * dense.get(d, 0.0) + (1 - w) * sparse.get(d, 0.0) for d in dense.keys() | sparse.keys()}
        got = pipeline.search("boundary layer flow", q, top_k=6, fusion_weight=w)
        assert [s for _, s in got] == pytest.approx(sorted(want.values(), reverse=True)[:6], abs=1e-5)
        assert all(want[d] == pytest.approx(s, abs=1e-5) for d, s in got)
    # Weight 1: the dense list alone, scored by cosine similarity.
    got = pipeline.search("boundary layer flow", q, top_k=3, fusion_weight=1.0)
    assert [d for d, _ in got] == list(np.argsort(-sims)[:3])
    assert [s for _, s in got] == pytest.approx(sorted(sims, reverse=True)[:3], abs=1e-5)


def test_rrf_fusion_is_reciprocal_ranks_with_k_60():
    pipeline, vectors = build(fusion="rrf")
    index = InvertedIndex()
    for i, text in enumerate(TEXTS):
        index.add_document(i, text)
    q = np.array([1.0, 0.2, -0.4, 0.0], dtype=np.float32)
    dense_rank = [int(d) for d in np.argsort(-cosine_similarities(vectors, q))]
    sparse_rank = [d for d, _ in index.search("shock boundary", top_k=100)]
    want: dict[int, float] = {}
    for ranking in (dense_rank, sparse_rank):
        for r, d in enumerate(ranking, start=1):
            want[d] = want.get(d, 0.0) + 0.5 / (60 + r)
    got = pipeline.search("shock boundary", q, top_k=6)
    assert all(want[d] == pytest.approx(s, rel=1e-9) for d, s in got)
    assert [s for _, s in got] == pytest.approx(sorted(want.values(), reverse=True), rel=1e-9)
    # The method can be chosen per call.
    assert pipeline.search("shock boundary", q, fusion="weighted") != got


def test_hot_queries_are_cached_and_invalidated_by_adds():
    pipeline, _ = build(hot_query_threshold=3)
    q = np.ones(4, dtype=np.float32)
    first = pipeline.search("boundary", q)
    for _ in range(2):
        assert pipeline.search("boundary", q) == first
    assert pipeline.stats()["cache_hits"] == 0 and pipeline.stats()["cached_queries"] == 1
    assert pipeline.search("boundary", q) == first
    assert pipeline.stats()["cache_hits"] == 1
    pipeline.add_document(99, "boundary boundary boundary", np.ones(4))
    stats = pipeline.stats()
    assert stats["cached_queries"] == 0 and stats["cache_invalidations"] == 1
    after = pipeline.search("boundary", q)
    assert after[0][0] == 99 and pipeline.stats()["cache_hits"] == 1
    assert pipeline.search("boundary", q) == after
    assert pipeline.stats()["cache_hits"] == 2
    pipeline.remove_document(99)
    assert 99 not in [d for d, _ in pipeline.search("boundary", q)]


def test_errors_leave_the_pipeline_unchanged():
    pipeline, _ = build()
    with pytest.raises(ValueError, match="already indexed"):
        pipeline.add_document(0, "again")
    with pytest.raises(ValueError, match="shape"):
        pipeline.add_document(50, "x", np.ones(3))
    with pytest.raises(ValueError, match="NaN"):
        pipeline.add_document(50, "x", np.array([1, np.nan, 0, 0]))
    assert 50 not in pipeline and len(pipeline) == len(TEXTS)
    with pytest.raises(ValueError, match="top_k"):
        pipeline.search("flow", top_k=0)
    with pytest.raises(ValueError, match="fusion_weight"):
        pipeline.search("flow", fusion_weight=1.5)
    with pytest.raises(ValueError, match="fusion"):
        pipeline.search("flow", fusion="sum")
    with pytest.raises(ValueError, match="shape"):
        pipeline.search("flow", np.ones(5))
    with pytest.raises(KeyError):
        pipeline.remove_document(1234)
    assert pipeline.stats()["searches"] == 0
    for bad in ({"dim": 0}, {"dim": 4, "metric": "hamming"}, {"dim": 4, "fusion": "max"}, {"dim": 4, "k1": -1.0}):
        with pytest.raises(ValueError):
            RetrievalPipeline(**bad)
