"""llmds.hnsw.HNSW against hnswlib, USearch and FAISS (IndexHNSWFlat), in one process, on Fashion-MNIST.

Data: Fashion-MNIST as in ann-benchmarks' fashion-mnist-784-euclidean: 60,000 x 784 base vectors
(train images), 10,000 queries (test images), uint8 pixels cast to float32 without scaling, metric
squared L2. The folder is found by llmds.data.locate ($LLMDS_DATA_DIR, else ../shared/data from the
working directory, else Debian's dataset-fashion-mnist) unless --data is given.

Every library gets M = 16 and ef_construction = 200 (USearch: connectivity=16, expansion_add=200;
FAISS: IndexHNSWFlat(d, 16), hnsw.efConstruction=200). In all four, layer 0 keeps up to 2M = 32 links
and the upper layers M = 16. Reported:

1. Build time on each --threads-build count (llmds add_batch num_threads, hnswlib add_items
   num_threads, usearch add threads, faiss.omp_set_num_threads); the size of the built index (the
   library's own in-RAM figure where it reports one: llmds stats()["memory_bytes"], usearch
   memory_usage; and the serialized size for all four: llmds save() file, hnswlib index_file_size(),
   faiss.serialize_index, usearch serialized_length); the RSS growth from before the build to after it
   (both after gc + malloc_trim, so freed temporaries do not count) and to its peak (sampled from
   /proc/self/statm every 5 ms).
2. Single-thread batch search over an ef sweep (llmds search_batch num_threads=1, hnswlib knn_query
   num_threads=1, usearch search threads=1 with expansion_search=ef, faiss search under
   omp_set_num_threads(1) with hnsw.efSearch=ef): QPS = queries / wall time of one batch call (best
   of --repeats; repeats, ef values and libraries are interleaved so machine noise hits all alike),
   and tie-aware recall@k. The exact squared distance of every returned id is recomputed in integer
   arithmetic from the uint8 data; a result is a hit when it is <= the k-th true distance
   (ann-benchmarks style). Then the QPS of each library at recall 0.90 / 0.95 / 0.99, read two ways:
   at the smallest swept ef reaching the target, and interpolated linearly in the (recall, QPS)
   curve between the two swept ef values around the target; with ratios llmds / peer.

Without --subset the ground truth is the shipped exact top-100 (fashion-mnist_groundtruth_l2sq.ivecs);
with --subset N (the first N base vectors) it is recomputed by numpy brute force.

    pip install hnswlib usearch faiss-cpu
    python -m llmds.benchmarks.hnsw                                   # full 60k x 10k run
    nice -n 19 python -m llmds.benchmarks.hnsw --subset 5000 --queries 500 --repeats 2   # quick check
    python -m llmds.benchmarks.hnsw --libraries llmds,hnswlib --efs 10,16,32,64,128
"""

from __future__ import annotations

__all__ = ["main"]

import argparse
import ctypes
import gc
import importlib.metadata
import os
import platform
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import llmds
from llmds.data import locate, read_idx_images, read_ivecs
from llmds.evaluation import kth_nearest_distances, tie_aware_recall
from llmds.hnsw import HNSW
from llmds.progress import log
from llmds.report import cpu_model

M = 16
EF_CONSTRUCTION = 200
DEFAULT_EFS = "10,16,20,24,32,40,48,64,80,96,128,160,192,256,320,384,512"
TARGETS = (0.90, 0.95, 0.99)
MIB = 1 << 20


# ------------------------------------------------------------------------------------- memory

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:
        return None


def process_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def release_free_memory() -> None:
    """gc, then hand freed heap back to the OS (glibc) so the next RSS baseline is honest."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class RssSampler:
    """Peak RSS while the block runs, sampled on a side thread (needs the library to drop the GIL)."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            now = rss_bytes()
            if now is not None and self.peak is not None:
                self.peak = max(self.peak, now)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        now = rss_bytes()
        if now is not None and self.peak is not None:
            self.peak = max(self.peak, now)


# ---------------------------------------------------------------------------------- libraries


@dataclass
class Library:
    name: str
    version: str
    simd: str
    build: Callable[[np.ndarray, int], Any]            # (float32 data, threads) -> index
    search: Callable[[Any, np.ndarray, int, int], Any]  # (index, queries, k, ef) -> raw result
    ids_of: Callable[[Any], np.ndarray]                 # raw result -> (Q, k) int64 ids
    ram_size: Callable[[Any], int | None]
    ram_measure: str
    serialized_size: Callable[[Any], int]
    serialized_measure: str
    notes: list[str] = field(default_factory=list)


def make_llmds(seed: int) -> Library:
    def build(data: np.ndarray, threads: int) -> HNSW:
        index = HNSW(data.shape[1], M=M, ef_construction=EF_CONSTRUCTION, seed=seed, metric="l2",
                     initial_capacity=len(data))
        index.add_batch(data, range(len(data)), num_threads=threads)
        return index

    def search(index: HNSW, queries: np.ndarray, k: int, ef: int) -> Any:
        return index.search_batch(queries, k, ef=ef, num_threads=1)

    def serialized(index: HNSW) -> int:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "index.llmds"
            index.save(path)
            return path.stat().st_size

    simd = HNSW(4).stats()["simd"]
    return Library("llmds", llmds.__version__, simd, build, search, lambda r: np.asarray(r[0], np.int64),
                   lambda index: int(index.stats()["memory_bytes"]), 'stats()["memory_bytes"]',
                   serialized, "save() file size")


def make_hnswlib(seed: int) -> Library:
    import hnswlib

    def build(data: np.ndarray, threads: int) -> Any:
        index = hnswlib.Index(space="l2", dim=data.shape[1])
        index.init_index(max_elements=len(data), ef_construction=EF_CONSTRUCTION, M=M, random_seed=seed)
        index.add_items(data, np.arange(len(data)), num_threads=threads)
        return index

    def search(index: Any, queries: np.ndarray, k: int, ef: int) -> Any:
        index.set_ef(ef)
        return index.knn_query(queries, k=k, num_threads=1)

    return Library("hnswlib", importlib.metadata.version("hnswlib"), "compile-time", build, search,
                   lambda r: r[0].astype(np.int64), lambda index: None, "-",
                   lambda index: int(index.index_file_size()), "index_file_size()")


def make_usearch(seed: int) -> Library:
    from usearch.index import Index

    def build(data: np.ndarray, threads: int) -> Any:
        index = Index(ndim=data.shape[1], metric="l2sq", dtype="f32", connectivity=M,
                      expansion_add=EF_CONSTRUCTION, expansion_search=64)
        index.add(np.arange(len(data), dtype=np.uint64), data, threads=threads)
        return index

    def search(index: Any, queries: np.ndarray, k: int, ef: int) -> Any:
        index.expansion_search = ef
        return index.search(queries, k, threads=1)

    def ids_of(matches: Any) -> np.ndarray:
        ids = np.asarray(matches.keys).astype(np.int64)
        counts = np.asarray(matches.counts)
        ids[np.arange(ids.shape[1])[None, :] >= counts[:, None]] = -1
        return ids

    probe = Index(ndim=4, metric="l2sq", dtype="f32")
    return Library("usearch", importlib.metadata.version("usearch"), str(probe.hardware_acceleration), build,
                   search, ids_of, lambda index: int(index.memory_usage), "memory_usage",
                   lambda index: int(index.serialized_length), "serialized_length",
                   notes=["usearch has no seed argument; its level draws use a fixed internal seed"])


def make_faiss(seed: int) -> Library:
    import faiss

    def build(data: np.ndarray, threads: int) -> Any:
        faiss.omp_set_num_threads(threads)
        index = faiss.IndexHNSWFlat(data.shape[1], M)
        index.hnsw.efConstruction = EF_CONSTRUCTION
        index.add(data)
        return index

    def search(index: Any, queries: np.ndarray, k: int, ef: int) -> Any:
        faiss.omp_set_num_threads(1)
        index.hnsw.efSearch = ef
        return index.search(queries, k)

    return Library("faiss", faiss.__version__, faiss.get_compile_options().strip(), build, search,
                   lambda r: r[1].astype(np.int64), lambda index: None, "-",
                   lambda index: int(faiss.serialize_index(index).size), "serialize_index() bytes",
                   notes=["faiss has no seed argument in Python; IndexHNSW levels use its fixed internal rng"])


FACTORIES: dict[str, Callable[[int], Library]] = {
    "llmds": make_llmds, "hnswlib": make_hnswlib, "usearch": make_usearch, "faiss": make_faiss,
}
PIP_NAMES = {"hnswlib": "hnswlib", "usearch": "usearch", "faiss": "faiss-cpu"}


# ------------------------------------------------------------------------------------- tables


def at_target(curve: list[tuple[int, float, float]], target: float) -> tuple[tuple[float, int] | None, float | None, str]:
    """((QPS, ef) at the smallest ef reaching target, interpolated QPS, flag) from (ef, recall, qps) points."""
    for i, (ef, recall, qps) in enumerate(curve):
        if recall >= target:
            if i == 0:
                return (qps, ef), qps, "lowest ef"
            _, r0, q0 = curve[i - 1]
            return (qps, ef), q0 + (target - r0) * (qps - q0) / (recall - r0), ""
    return None, None, f"max recall {max(r for _, r, _ in curve):.4f}"


def fmt_qps(qps: float | None) -> str:
    return "-" if qps is None else f"{qps:,.0f}"


def fmt_ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None or b == 0 else f"{a / b:.2f}"


def fmt_mib(n: int | None) -> str:
    return "-" if n is None else f"{n / MIB:,.1f}"


def table(header: list[str], rows: list[list[str]], text_columns: tuple[int, ...] = (0,)) -> None:
    """A Markdown table; columns not in text_columns are right-aligned."""
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" if i in text_columns else "---:" for i in range(len(header))) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs the comparison, prints its Markdown and returns the build times and the recall/QPS
    curves of each library."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None,
                        help="Fashion-MNIST folder (default: llmds.data.locate('ann/fashion-mnist'))")
    parser.add_argument("--subset", type=int, default=None, help="use the first N base vectors (exact "
                        "ground truth recomputed by numpy); default all 60,000")
    parser.add_argument("--queries", type=int, default=None, help="use the first Q queries; default all 10,000")
    parser.add_argument("--libraries", default="llmds,hnswlib,usearch,faiss")
    parser.add_argument("--efs", default=DEFAULT_EFS, help="ef_search values to sweep")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="timed search repeats per (library, ef); best kept")
    parser.add_argument("--threads-build", default="1,2", help="thread counts to build with; searches run "
                        "on the index built with the first")
    parser.add_argument("--build-repeats", type=int, default=1, help="builds per (library, thread count); "
                        "best time kept")
    parser.add_argument("--seed", type=int, default=100, help="level seed for llmds and hnswlib")
    args = parser.parse_args(argv)
    t_start = time.perf_counter()

    try:
        folder = args.data or locate("ann/fashion-mnist")
    except FileNotFoundError as error:
        raise SystemExit(f"{error} (or pass --data)") from None
    efs = sorted(set(int_list(args.efs)))
    build_threads = int_list(args.threads_build)
    if not efs or not build_threads:
        raise SystemExit("--efs and --threads-build need at least one value")
    if efs[0] < args.k:
        log(f"note: ef values below k={args.k} are searched as given; libraries raise them to k differently")

    libraries: list[Library] = []
    skipped: list[str] = []
    for name in [x.strip() for x in args.libraries.split(",") if x.strip()]:
        if name not in FACTORIES:
            raise SystemExit(f"unknown library {name!r}; choose from {', '.join(FACTORIES)}")
        try:
            libraries.append(FACTORIES[name](args.seed))
        except ImportError as error:
            skipped.append(f"{name} skipped (not importable: {error}); pip install {PIP_NAMES.get(name, name)}")
    if not libraries:
        raise SystemExit("no library to benchmark")

    # -------------------------------------------------------------------------------- data
    base_u8 = read_idx_images(folder / "train-images-idx3-ubyte.gz")
    query_u8 = read_idx_images(folder / "t10k-images-idx3-ubyte.gz")
    n_full = len(base_u8)
    n = min(args.subset or n_full, n_full)
    q = min(args.queries or len(query_u8), len(query_u8))
    base_u8 = np.ascontiguousarray(base_u8[:n])
    query_u8 = np.ascontiguousarray(query_u8[:q])
    base = base_u8.astype(np.float32)
    queries = query_u8.astype(np.float32)
    shipped_truth = folder / "fashion-mnist_groundtruth_l2sq.ivecs"
    if n == n_full and args.k <= 100 and shipped_truth.exists():
        kth = read_ivecs(shipped_truth)[:q, args.k - 1].astype(np.int64)
        check = np.random.default_rng(args.seed).choice(q, size=min(q, 20), replace=False)
        if not np.array_equal(kth_nearest_distances(base_u8, query_u8[check], args.k), kth[check]):
            raise SystemExit("shipped ground truth disagrees with brute force: wrong data files?")
        truth_source = "shipped exact top-100 (_l2sq.ivecs; 20 queries re-checked by brute force)"
    else:
        kth = kth_nearest_distances(base_u8, query_u8, args.k)
        truth_source = "numpy brute force"

    # ------------------------------------------------------------------------------ header
    cpu = cpu_model()
    print(f"# HNSW on Fashion-MNIST: {', '.join(lib.name for lib in libraries)}\n")
    print(", ".join(f"{lib.name} {lib.version} ({lib.simd})" for lib in libraries)
          + f"; numpy {np.__version__}; Python {platform.python_version()} on {platform.machine()}, "
          f"{cpu}, {os.cpu_count()} logical CPUs")
    print(f"data: base {n:,} x {base.shape[1]} (first {n:,} of {n_full:,}), {q:,} queries, metric squared L2; "
          f"recall@{args.k} tie-aware, ground truth: {truth_source}")
    print(f"graph: M={M}, ef_construction={EF_CONSTRUCTION} everywhere; seed {args.seed} (llmds, hnswlib)")
    for lib in libraries:
        for note in lib.notes:
            print(f"note: {note}")
    for line in skipped:
        print(f"note: {line}")
    if hasattr(os, "getloadavg"):
        print("load average at start: " + " / ".join(f"{x:.2f}" for x in os.getloadavg()) + " (1 / 5 / 15 min)")

    # ------------------------------------------------------------------------------ builds
    build_time: dict[tuple[str, int], float] = {}
    build_cpu: dict[tuple[str, int], float] = {}
    memory: dict[str, dict[str, int | None]] = {}
    indexes: dict[str, Any] = {}
    for lib in libraries:
        for threads in build_threads:
            for rep in range(args.build_repeats):
                release_free_memory()
                before = rss_bytes()
                log(f"building {lib.name} on {threads} thread(s) ...")
                with RssSampler() as sampler:
                    cpu_start = process_cpu_seconds()
                    start = time.perf_counter()
                    index = lib.build(base, threads)
                    elapsed = time.perf_counter() - start
                    cpu_used = process_cpu_seconds() - cpu_start
                if elapsed < build_time.get((lib.name, threads), float("inf")):
                    build_time[lib.name, threads] = elapsed
                    build_cpu[lib.name, threads] = cpu_used / elapsed
                log(f"  {elapsed:.2f} s")
                if threads == build_threads[0] and rep == 0:
                    release_free_memory()  # what the index keeps, not the allocator's cached temporaries
                    after = rss_bytes()
                    indexes[lib.name] = index
                    grow = None if before is None or after is None else after - before
                    peak = None if before is None or sampler.peak is None else sampler.peak - before
                    memory[lib.name] = {"ram": lib.ram_size(index), "serialized": lib.serialized_size(index),
                                        "rss": grow, "peak": peak}
                del index, sampler
    release_free_memory()

    print(f"\n## Build ({n:,} vectors; wall time, best of {args.build_repeats} per thread count)\n")
    header = ["library"] + [f"{t} thr (s)" for t in build_threads]
    if len(build_threads) > 1:
        header.append(f"speed-up {build_threads[0]}->{build_threads[-1]}")
    header.append(f"CPU/wall at {build_threads[-1]} thr")
    header += ["in-RAM size (MiB)", "serialized (MiB)", "RSS growth (MiB)", "peak RSS growth (MiB)",
               "size measures"]
    rows = []
    for lib in libraries:
        row = [lib.name] + [f"{build_time[lib.name, t]:.2f}" for t in build_threads]
        if len(build_threads) > 1:
            row.append(f"{build_time[lib.name, build_threads[0]] / build_time[lib.name, build_threads[-1]]:.2f}x")
        row.append(f"{build_cpu[lib.name, build_threads[-1]]:.2f}")
        mem = memory[lib.name]
        row += [fmt_mib(mem["ram"]), fmt_mib(mem["serialized"]), fmt_mib(mem["rss"]), fmt_mib(mem["peak"]),
                f"{lib.ram_measure}; {lib.serialized_measure}"]
        rows.append(row)
    table(header, rows, text_columns=(0, len(header) - 1))
    print("\nCPU/wall: process CPU seconds over wall seconds of that build; well below the thread count means "
          "the cores were busy with something else (or the library does not spread the work).")
    print(f"Raw float32 vectors alone: {fmt_mib(base.nbytes)} MiB. RSS growth = resident set after the first "
          f"{build_threads[0]}-thread build minus before it (both after gc + malloc_trim); peak: highest RSS "
          f"sampled every 5 ms during that build, minus before.")

    peers = [lib for lib in libraries if lib.name != "llmds"]
    if "llmds" in indexes and peers:
        print("\nllmds / peer (time and size: below 1 means llmds is faster or smaller)\n")
        header = ["peer"] + [f"build time {t} thr" for t in build_threads] + ["serialized size", "RSS growth"]
        rows = []
        for peer in peers:
            row = [peer.name] + [fmt_ratio(build_time["llmds", t], build_time[peer.name, t]) for t in build_threads]
            row += [fmt_ratio(memory["llmds"]["serialized"], memory[peer.name]["serialized"]),
                    fmt_ratio(memory["llmds"]["rss"], memory[peer.name]["rss"])]
            rows.append(row)
        table(header, rows)

    # ------------------------------------------------------------------------------ search
    for lib in libraries:  # warm-up: page in the index and the query block
        lib.search(indexes[lib.name], queries, args.k, efs[0])
    best: dict[tuple[str, int], float] = {}
    results: dict[tuple[str, int], np.ndarray] = {}
    for rep in range(args.repeats):
        log(f"search sweep {rep + 1}/{args.repeats} over {len(efs)} ef values ...")
        for ef in efs:
            for lib in libraries:
                start = time.perf_counter()
                raw = lib.search(indexes[lib.name], queries, args.k, ef)
                elapsed = time.perf_counter() - start
                best[lib.name, ef] = min(best.get((lib.name, ef), float("inf")), elapsed)
                if rep == 0:
                    results[lib.name, ef] = lib.ids_of(raw)
                del raw
    curves: dict[str, list[tuple[int, float, float]]] = {}
    for lib in libraries:
        curves[lib.name] = [(ef, tie_aware_recall(base_u8, query_u8, results[lib.name, ef], kth),
                             q / best[lib.name, ef]) for ef in efs]

    print(f"\n## Recall@{args.k} vs ef_search, 1 search thread ({n:,} base, {q:,} queries; "
          f"QPS best of {args.repeats} batch calls)\n")
    header = ["ef"]
    for lib in libraries:
        header += [f"{lib.name} recall", f"{lib.name} QPS"]
    if "llmds" in curves:
        header += [f"QPS llmds/{peer.name}" for peer in peers]
    rows = []
    for i, ef in enumerate(efs):
        row = [str(ef)]
        for lib in libraries:
            _, recall, qps = curves[lib.name][i]
            row += [f"{recall:.4f}", fmt_qps(qps)]
        if "llmds" in curves:
            row += [fmt_ratio(curves["llmds"][i][2], curves[peer.name][i][2]) for peer in peers]
        rows.append(row)
    table(header, rows)

    for mode in ("smallest", "interpolated"):
        if mode == "smallest":
            print(f"\n## QPS at target recall@{args.k}: smallest swept ef reaching it (QPS @ ef)\n")
        else:
            print(f"\n## QPS at target recall@{args.k}: linear interpolation in (recall, QPS) between the "
                  f"swept ef values around it\n")
        header = ["target"] + [lib.name for lib in libraries]
        if "llmds" in curves:
            header += [f"llmds/{peer.name}" for peer in peers]
        rows = []
        footnotes: set[str] = set()
        for target in TARGETS:
            row = [f"{target:.2f}"]
            value: dict[str, float | None] = {}
            for lib in libraries:
                point, interpolated, flag = at_target(curves[lib.name], target)
                if mode == "smallest":
                    value[lib.name] = None if point is None else point[0]
                    cell = "not reached" if point is None else f"{fmt_qps(point[0])} @ {point[1]}"
                else:
                    value[lib.name] = interpolated
                    cell = "not reached" if interpolated is None else fmt_qps(interpolated)
                    if flag == "lowest ef":
                        cell += " *"
                        footnotes.add("* the lowest swept ef already exceeds the target: measured QPS at that "
                                      "ef, a lower bound (sweep lower ef values to interpolate)")
                if point is None:
                    footnotes.add(f"not reached: {lib.name} {flag}")
                row.append(cell)
            if "llmds" in curves:
                row += [fmt_ratio(value["llmds"], value[peer.name]) for peer in peers]
            rows.append(row)
        table(header, rows)
        for note in sorted(footnotes):
            print(f"\n{note}")
    if "llmds" in curves and peers:
        print("\nllmds/peer above 1 means llmds answers more queries per second at that recall.")
    if hasattr(os, "getloadavg"):
        print("\nload average at end: " + " / ".join(f"{x:.2f}" for x in os.getloadavg())
              + f" (1 / 5 / 15 min); total run {time.perf_counter() - t_start:.0f} s")
    return {"curves": curves, "build_time": build_time, "libraries": [lib.name for lib in libraries]}


if __name__ == "__main__":
    main()
