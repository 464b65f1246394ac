"""Indexed binary heap with decrease/increase-key, in min-heap or max-heap mode."""

from llmds._core import IndexedHeap as IndexedHeap

__all__ = ["IndexedHeap"]
