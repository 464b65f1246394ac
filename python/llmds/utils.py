"""Timing, memory and statistics helpers for benchmarks and replays."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from llmds._core import MemoryProfiler as MemoryProfiler
from llmds._core import Timer as Timer
from llmds._core import calculate_statistics as calculate_statistics
from llmds._core import compute_percentiles as compute_percentiles

__all__ = [
    "MemoryProfiler",
    "Timer",
    "calculate_statistics",
    "compute_percentiles",
    "memory_profiler",
]


@contextmanager
def memory_profiler() -> Iterator[MemoryProfiler]:
    """Profile the memory of a block: started on entry, sampled once more on exit.

    ::

        with memory_profiler() as profiler:
            build_index()
            profiler.sample()  # optional extra samples
        peak_rss_mb = profiler.get_peak_rss_mb()
    """
    profiler = MemoryProfiler()
    profiler.start()
    try:
        yield profiler
    finally:
        profiler.sample()
