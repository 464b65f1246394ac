"""Measuring nearest-neighbour search against the exact answer: the demo, ``python -m llmds bench``
and the HNSW benchmarks all judge recall with these.

Distances are squared L2 computed in float64 by blocks of queries, so memory stays at one block of
``queries x base`` whatever the sizes. On integer data such as 8-bit pixels or SIFT's bytes every
sum is an integer far below 2^53, so the float64 arithmetic is exact and ties are real ties.
That is what makes tie-aware recall possible: a returned neighbour counts as a hit when it is no
farther than the true k-th nearest, so a library is not penalised for picking one of several
vectors at exactly the same distance (Fashion-MNIST has many duplicate distances).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

__all__ = ["exact_top_k", "kth_nearest_distances", "overlap_recall", "squared_distances", "squared_distances_to", "tie_aware_recall"]


def _blocks(base: np.ndarray, queries: np.ndarray, block: int) -> Iterator[tuple[int, np.ndarray]]:
    """(first query, squared distances of `block` queries to every base row), block by block."""
    b = base.astype(np.float64)
    b_norms = (b * b).sum(axis=1)
    for start in range(0, len(queries), block):
        q = queries[start:start + block].astype(np.float64)
        yield start, b_norms[None, :] - 2.0 * (q @ b.T) + (q * q).sum(axis=1)[:, None]


def squared_distances(base: np.ndarray, queries: np.ndarray, block: int = 500) -> np.ndarray:
    """The (queries x base) matrix of squared L2 distances, float64."""
    out = np.empty((len(queries), len(base)), dtype=np.float64)
    for start, d2 in _blocks(base, queries, block):
        out[start:start + len(d2)] = d2
    return out


def kth_nearest_distances(base: np.ndarray, queries: np.ndarray, k: int, block: int = 500) -> np.ndarray:
    """Each query's squared distance to its k-th nearest base row, rounded to int64 (exact on
    integer data)."""
    kth = np.empty(len(queries), dtype=np.int64)
    for start, d2 in _blocks(base, queries, block):
        kth[start:start + len(d2)] = np.rint(np.partition(d2, k - 1, axis=1)[:, k - 1]).astype(np.int64)
    return kth


def exact_top_k(base: np.ndarray, queries: np.ndarray, k: int, block: int = 100) -> np.ndarray:
    """Positions of each query's k nearest base rows, nearest first; ties by position."""
    rows = [np.argsort(d2, axis=1, kind="stable")[:, :k] for _, d2 in _blocks(base, queries, block)]
    return np.vstack(rows) if rows else np.empty((0, k), dtype=np.int64)


def squared_distances_to(base: np.ndarray, queries: np.ndarray, ids: np.ndarray, block: int = 1000) -> np.ndarray:
    """Exact squared L2 distance (int64) from each query to each base row its row of `ids` names;
    -1 where an id is -1 or out of range (a library's "no result"). For integer data."""
    out = np.full(ids.shape, -1, dtype=np.int64)
    valid = (ids >= 0) & (ids < len(base))
    safe = np.where(valid, ids, 0)
    for start in range(0, len(queries), block):
        stop = start + block
        diff = base[safe[start:stop]].astype(np.int64) - queries[start:stop, None, :].astype(np.int64)
        out[start:stop] = np.einsum("qkd,qkd->qk", diff, diff)
    out[~valid] = -1
    return out


def tie_aware_recall(base: np.ndarray, queries: np.ndarray, ids: np.ndarray, kth: np.ndarray) -> float:
    """The share of returned ids (a queries x k array) no farther than their query's true k-th
    nearest (`kth`, from kth_nearest_distances)."""
    dist = squared_distances_to(base, queries, ids)
    hits = (dist >= 0) & (dist <= kth[:, None])
    return float(hits.sum()) / ids.size


def overlap_recall(found: Sequence[Sequence[int]], truth: np.ndarray) -> float:
    """The mean share of each query's true neighbours (a row of `truth`) among those found."""
    k = truth.shape[1]
    return float(np.mean([len(set(map(int, f)) & set(map(int, t))) / k for f, t in zip(found, truth)]))
