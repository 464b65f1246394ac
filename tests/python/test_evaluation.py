"""llmds.evaluation against a naive model: exact distances, the k-th nearest, top k and recall, on
small integer data with many ties (every helper computes in blocks; the model does not)."""

from __future__ import annotations

import numpy as np
import pytest

from llmds.evaluation import (
    exact_top_k,
    kth_nearest_distances,
    overlap_recall,
    squared_distances,
    squared_distances_to,
    tie_aware_recall,
)


def naive(base: np.ndarray, queries: np.ndarray) -> np.ndarray:
    return np.array([[int(((q.astype(np.int64) - b) ** 2).sum()) for b in base] for q in queries])


@pytest.fixture(params=[0, 1, 2])
def data(request) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(request.param)
    base = rng.integers(0, 4, size=(57, 6), dtype=np.uint8)  # values 0..3: ties everywhere
    queries = rng.integers(0, 4, size=(23, 6), dtype=np.uint8)
    return base, queries


def test_distances_and_kth_nearest_are_exact(data) -> None:
    base, queries = data
    truth = naive(base, queries)
    assert np.array_equal(squared_distances(base, queries, block=4), truth)
    for k in (1, 5, 57):
        assert np.array_equal(kth_nearest_distances(base, queries, k, block=4), np.sort(truth, axis=1)[:, k - 1])


def test_top_k_is_nearest_first_with_ties_by_position(data) -> None:
    base, queries = data
    truth = naive(base, queries)
    expected = np.array([sorted(range(len(base)), key=lambda i: (row[i], i))[:7] for row in truth])
    assert np.array_equal(exact_top_k(base, queries, 7, block=5), expected)
    assert exact_top_k(base, queries[:0], 3).shape == (0, 3)


def test_distances_to_given_ids_mark_missing_ones(data) -> None:
    base, queries = data
    truth = naive(base, queries)
    ids = np.array([[0, 56, -1, 57]] * len(queries))
    got = squared_distances_to(base, queries, ids, block=3)
    assert np.array_equal(got[:, :2], truth[:, [0, 56]])
    assert (got[:, 2:] == -1).all()


def test_tie_aware_recall_counts_any_neighbour_as_near_as_the_kth(data) -> None:
    base, queries = data
    truth = naive(base, queries)
    k = 5
    kth = kth_nearest_distances(base, queries, k)
    # Every row at the k-th distance or nearer is a hit, whichever of the tied rows it is.
    tied = np.array([np.flatnonzero(row <= row_kth)[-k:] for row, row_kth in zip(truth, kth)])
    assert tie_aware_recall(base, queries, tied, kth) == 1.0
    farthest = np.argsort(truth, axis=1, kind="stable")[:, -k:]
    expected = float((np.take_along_axis(truth, farthest, axis=1) <= kth[:, None]).mean())
    assert tie_aware_recall(base, queries, farthest, kth) == pytest.approx(expected)
    assert tie_aware_recall(base, queries, np.full((len(queries), k), -1), kth) == 0.0


def test_overlap_recall_is_the_mean_share_found() -> None:
    truth = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    assert overlap_recall([[4, 3, 2, 1], [5, 0, 0, 9]], truth) == pytest.approx((1.0 + 0.25) / 2)
