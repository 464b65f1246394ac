"""llmds.utils: Timer, MemoryProfiler, memory_profiler, compute_percentiles, calculate_statistics."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from scipy import stats as scipy_stats

from llmds.utils import (MemoryProfiler, Timer, calculate_statistics, compute_percentiles,
                         memory_profiler)


def test_timer_measures_a_block_and_freezes_on_exit():
    with Timer() as t:
        time.sleep(0.02)
    assert t.elapsed >= 0.02 and not t.running
    frozen = t.elapsed
    time.sleep(0.01)
    assert t.elapsed == frozen


def test_timer_reports_elapsed_while_running():
    t = Timer()
    t.start()
    time.sleep(0.01)
    assert t.running and t.elapsed >= 0.01
    t.stop()
    assert "Timer(elapsed=" in repr(t)


def test_memory_profiler_sees_an_allocation():
    profiler = MemoryProfiler()
    profiler.start()
    block = np.ones(64 * 1024 * 1024 // 8)  # 64 MiB, written so it is resident
    rss = profiler.sample()
    assert isinstance(rss, int) and rss > 0
    assert profiler.get_memory_delta_mb() >= 60
    assert profiler.get_peak_rss_bytes() >= rss
    assert profiler.get_peak_rss_mb() == pytest.approx(profiler.get_peak_rss_bytes() / 2**20)
    assert profiler.get_current_rss_mb() > 0
    del block


def test_memory_profiler_context_manager_samples_on_exit():
    with memory_profiler() as profiler:
        block = np.ones(64 * 1024 * 1024 // 8)  # resident until after the block ends
        rss_with_block = profiler.get_current_rss_mb()  # reads, does not sample
    # Only the sample taken on exit can have seen the block.
    assert profiler.get_peak_rss_mb() >= rss_with_block - 1
    assert profiler.get_memory_delta_mb() >= 60
    del block


SAMPLE = [10.5, 12.3, 11.1, 15.2, 10.8, 9.9, 13.4]


@pytest.mark.parametrize("values", [SAMPLE, list(range(1, 102)), [3.0], np.random.default_rng(0).normal(size=999)])
def test_percentiles_match_numpy(values):
    got = compute_percentiles(values)
    assert set(got) == {"p50", "p95", "p99"}
    for key, q in (("p50", 50), ("p95", 95), ("p99", 99)):
        assert got[key] == pytest.approx(float(np.percentile(values, q)), rel=1e-12)


@pytest.mark.parametrize("confidence_level", [0.9, 0.95, 0.99])
def test_statistics_match_numpy_and_scipy(confidence_level):
    values = np.random.default_rng(1).lognormal(3, 0.5, size=37)
    s = calculate_statistics(values.tolist(), confidence_level=confidence_level)
    mean, std = values.mean(), values.std(ddof=1)
    lo, hi = scipy_stats.t.interval(confidence_level, len(values) - 1, loc=mean,
                                    scale=std / math.sqrt(len(values)))
    assert s["count"] == 37 and isinstance(s["count"], int)
    assert s["mean"] == pytest.approx(mean, rel=1e-12)
    assert s["std"] == pytest.approx(std, rel=1e-12)
    assert (s["min"], s["max"]) == (values.min(), values.max())
    assert s["p99"] == pytest.approx(np.percentile(values, 99), rel=1e-12)
    assert s["ci_lower"] == pytest.approx(lo, rel=1e-10)
    assert s["ci_upper"] == pytest.approx(hi, rel=1e-10)
    assert s["cv"] == pytest.approx(100 * std / mean, rel=1e-12)


def test_statistics_default_confidence_is_95_percent():
    assert calculate_statistics(SAMPLE) == calculate_statistics(SAMPLE, confidence_level=0.95)


def test_one_value_has_nan_spread():
    s = calculate_statistics([4.0])
    assert s["mean"] == 4.0 and s["count"] == 1
    assert all(math.isnan(s[k]) for k in ("std", "ci_lower", "ci_upper", "cv"))


@pytest.mark.parametrize("bad", [[], [1.0, math.nan], [1.0, math.inf], [[1.0, 2.0]]])
def test_bad_values_raise_value_error(bad):
    with pytest.raises(ValueError):
        compute_percentiles(bad)
    with pytest.raises(ValueError):
        calculate_statistics(bad)


@pytest.mark.parametrize("level", [0.0, 1.0, -0.5, 1.5, math.nan])
def test_bad_confidence_level_raises_value_error(level):
    with pytest.raises(ValueError, match="confidence_level"):
        calculate_statistics(SAMPLE, confidence_level=level)
