"""llmds.CountMinSketch against Apache DataSketches' count_min_sketch, in one process.

Both sketches get the same Zipf(s) stream of str items at equal width and depth. Reported:
updates per second through each library's Python API (llmds both per item and through its batch
entry point add_many; DataSketches has no batch update), mean and max overestimate over all
distinct items, and false hot items (estimate >= threshold while the true count is below it).

    pip install datasketches
    python -m llmds.benchmarks.cmsketch            # 10^6 updates, 10^5 items, s = 1.1
"""

from __future__ import annotations

__all__ = ["main"]

import argparse
import importlib.metadata
import platform
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

import llmds
from llmds.cmsketch import CountMinSketch



def zipf_stream(n: int, distinct: int, s: float, seed: int) -> list[str]:
    """n draws from a Zipf(s) law over `distinct` ranks; item names are shuffled ranks."""
    rng = np.random.default_rng(seed)
    cdf = np.cumsum(np.arange(1, distinct + 1, dtype=np.float64) ** -s)
    ranks = np.searchsorted(cdf, rng.random(n) * cdf[-1])
    names = rng.permutation(distinct)
    return [f"item-{names[r]}" for r in ranks]


def best_rate(n: int, fill: Callable[[], None], repeats: int) -> float:
    """Updates per second of the fastest of `repeats` runs (each on a fresh sketch)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fill()
        best = min(best, time.perf_counter() - start)
    return n / best


def error_report(estimate: Callable[[str], float], truth: Counter[str], threshold: int) -> dict[str, float]:
    over = np.array([estimate(item) - count for item, count in truth.items()], dtype=np.float64)
    false_hot = sum(1 for item, count in truth.items() if count < threshold and estimate(item) >= threshold)
    return {"mean": float(over.mean()), "max": float(over.max()), "under": int((over < 0).sum()),
            "false_hot": false_hot}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs the comparison, prints it and returns the update rates and error reports."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, default=1_000_000)
    parser.add_argument("--distinct", type=int, default=100_000)
    parser.add_argument("--s", type=float, default=1.1, help="Zipf exponent")
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--threshold", type=int, default=1000, help="hot-item threshold (count)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        import datasketches
    except ImportError as error:
        raise SystemExit("this comparison needs Apache DataSketches: pip install datasketches") from error

    stream = zipf_stream(args.updates, args.distinct, args.s, args.seed)
    truth = Counter(stream)
    hot = sum(1 for c in truth.values() if c >= args.threshold)
    print(f"llmds {llmds.__version__}, datasketches {importlib.metadata.version('datasketches')}, "
          f"Python {platform.python_version()} on {platform.machine()}")
    print(f"stream: {args.updates:,} updates of {len(truth):,} distinct items, Zipf s={args.s}; "
          f"width {args.width}, depth {args.depth}; {hot} items truly >= {args.threshold}")

    def llmds_batch() -> CountMinSketch:
        sketch = CountMinSketch(width=args.width, depth=args.depth)
        sketch.add_many(stream)
        return sketch

    def llmds_loop() -> None:
        sketch = CountMinSketch(width=args.width, depth=args.depth)
        add = sketch.add
        for item in stream:
            add(item)

    def ds_loop() -> Any:
        sketch = datasketches.count_min_sketch(args.depth, args.width)
        update = sketch.update
        for item in stream:
            update(item)
        return sketch

    rates = {
        "llmds add_many": best_rate(args.updates, llmds_batch, args.repeats),
        "llmds add (loop)": best_rate(args.updates, llmds_loop, args.repeats),
        "datasketches update (loop)": best_rate(args.updates, ds_loop, args.repeats),
    }
    ds_rate = rates["datasketches update (loop)"]
    print("\nupdates per second (best of %d)" % args.repeats)
    for name, rate in rates.items():
        print(f"  {name:<28} {rate / 1e6:8.2f} M/s   {rate / ds_rate:6.2f}x datasketches")

    plain = CountMinSketch(width=args.width, depth=args.depth, conservative=False)
    plain.add_many(stream)
    sketches = {
        "llmds conservative": llmds_batch().estimate,
        "llmds plain": plain.estimate,
        "datasketches": ds_loop().get_estimate,
    }
    print(f"\noverestimate over all {len(truth):,} distinct items; false hot at threshold {args.threshold}")
    print(f"  {'sketch':<20} {'mean':>9} {'max':>9} {'under':>6} {'false hot':>10}")
    reports = {name: error_report(est, truth, args.threshold) for name, est in sketches.items()}
    for name, r in reports.items():
        print(f"  {name:<20} {r['mean']:9.2f} {r['max']:9.0f} {r['under']:6d} {r['false_hot']:10d}")
    ratio = reports["llmds conservative"]["mean"] / reports["datasketches"]["mean"]
    print(f"\nllmds add_many: {rates['llmds add_many'] / ds_rate:.2f}x the update rate of datasketches; "
          f"mean overestimate {ratio:.2f}x theirs")
    return {"rates": rates, "errors": reports}


if __name__ == "__main__":
    main()
