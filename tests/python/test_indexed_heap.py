"""llmds.indexed_heap.IndexedHeap: the documented contract, its error cases, and a randomised check."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from llmds.indexed_heap import IndexedHeap


def test_defaults_to_a_min_heap():
    heap = IndexedHeap()
    assert heap.max_heap is False
    heap.push(1, 5.0)
    heap.push(2, 1.0)
    assert heap.pop() == (1.0, 2)


def test_max_heap_pops_largest_first():
    heap = IndexedHeap(max_heap=True)
    for key, score in [(1, 5.0), (2, 9.0), (3, 1.0)]:
        heap.push(key, score)
    assert [heap.pop() for _ in range(3)] == [(9.0, 2), (5.0, 1), (1.0, 3)]


def test_pop_returns_score_then_key():
    heap = IndexedHeap()
    heap.push(key_id=42, score=3.5)
    score, key = heap.pop()
    assert (score, key) == (3.5, 42)


def test_decrease_and_increase_key_follow_the_seed_in_both_orders():
    heap = IndexedHeap(max_heap=True)
    heap.push(1, 10.0)
    heap.push(2, 5.0)
    heap.decrease_key(1, 1.0)  # bubbles down in a max-heap
    assert heap.peek() == (5.0, 2)
    heap.increase_key(1, 20.0)  # bubbles up in a max-heap
    assert heap.peek() == (20.0, 1)

    heap = IndexedHeap()
    heap.push(1, 1.0)
    heap.push(2, 5.0)
    heap.decrease_key(2, 0.5)  # bubbles up in a min-heap
    assert heap.peek() == (0.5, 2)
    heap.increase_key(2, 9.0)  # bubbles down in a min-heap
    assert heap.peek() == (1.0, 1)


def test_delete_returns_the_entry_and_removes_it():
    heap = IndexedHeap()
    for k in range(5):
        heap.push(k, float(k))
    assert heap.delete(3) == (3.0, 3)
    assert 3 not in heap
    assert [heap.pop()[1] for _ in range(len(heap))] == [0, 1, 2, 4]


def test_get_score_peek_size_and_membership():
    heap = IndexedHeap()
    assert heap.peek() is None
    assert heap.get_score(1) is None
    assert heap.is_empty() and heap.size() == 0 and len(heap) == 0
    heap.push(1, 2.5)
    assert heap.get_score(1) == 2.5
    assert heap.peek() == (2.5, 1)
    assert heap.size() == 1 and len(heap) == 1 and not heap.is_empty()
    assert 1 in heap and 2 not in heap and "1" not in heap


def test_equal_scores_pop_the_smaller_key_first():
    heap = IndexedHeap()
    for key in (9, 4, 6):
        heap.push(key, 1.0)
    assert [heap.pop()[1] for _ in range(3)] == [4, 6, 9]


def test_pop_on_empty_raises_index_error():
    with pytest.raises(IndexError):
        IndexedHeap().pop()


def test_duplicate_push_raises_value_error_and_changes_nothing():
    heap = IndexedHeap()
    heap.push(1, 2.0)
    with pytest.raises(ValueError, match="already"):
        heap.push(1, 0.0)
    assert heap.get_score(1) == 2.0 and len(heap) == 1


@pytest.mark.parametrize("method", ["decrease_key", "increase_key", "update_key"])
def test_unknown_key_raises_key_error(method):
    heap = IndexedHeap()
    heap.push(1, 2.0)
    with pytest.raises(KeyError):
        getattr(heap, method)(7, 1.0)
    with pytest.raises(KeyError):
        heap.delete(7)
    assert len(heap) == 1


@pytest.mark.parametrize("max_heap", [False, True])
def test_rescoring_the_wrong_way_raises_value_error_and_changes_nothing(max_heap):
    heap = IndexedHeap(max_heap=max_heap)
    heap.push(1, 2.0)
    with pytest.raises(ValueError, match="greater"):
        heap.decrease_key(1, 3.0)
    with pytest.raises(ValueError, match="smaller"):
        heap.increase_key(1, 1.0)
    assert heap.get_score(1) == 2.0


def test_nan_scores_are_rejected():
    heap = IndexedHeap()
    with pytest.raises(ValueError, match="NaN"):
        heap.push(1, math.nan)
    heap.push(1, 1.0)
    with pytest.raises(ValueError):
        heap.update_key(1, math.nan)
    assert heap.get_score(1) == 1.0


def test_non_integer_keys_are_type_errors():
    heap = IndexedHeap()
    with pytest.raises(TypeError):
        heap.push("a", 1.0)
    with pytest.raises(TypeError):
        heap.push(1.5, 1.0)
    assert len(heap) == 0


def test_membership_accepts_numpy_ints_and_huge_ints():
    heap = IndexedHeap()
    heap.push(np.int64(3), 1.0)
    assert np.int64(3) in heap and 3 in heap
    assert (1 << 70) not in heap and 4.0 not in heap


def test_repr_names_the_order_and_top():
    heap = IndexedHeap(max_heap=True)
    heap.push(3, 1.5)
    assert repr(heap) == "IndexedHeap(max_heap=True, size=1, top=(1.5, 3))"


@pytest.mark.parametrize("max_heap", [False, True])
def test_random_operations_agree_with_a_dict_model(max_heap):
    rng = random.Random(5)
    heap = IndexedHeap(max_heap=max_heap)
    model: dict[int, float] = {}

    def top():
        if not model:
            return None
        best = (max if max_heap else min)(model.values())
        return best, min(k for k, s in model.items() if s == best)

    for _ in range(5000):
        key, score = rng.randrange(60), float(rng.randrange(20))
        op = rng.randrange(7)
        if op == 0 and key not in model:
            heap.push(key, score)
            model[key] = score
        elif op == 1 and model:
            expected = top()
            assert heap.pop() == expected
            del model[expected[1]]
        elif op == 2 and key in model:
            heap.update_key(key, score)
            model[key] = score
        elif op == 3 and key in model:
            assert heap.delete(key) == (model.pop(key), key)
        elif op in (4, 5) and key in model:
            lowering = op == 4
            method = heap.decrease_key if lowering else heap.increase_key
            if (score > model[key]) if lowering else (score < model[key]):
                with pytest.raises(ValueError):
                    method(key, score)
            else:
                method(key, score)
                model[key] = score
        assert heap.peek() == top()
        assert len(heap) == len(model)
