"""The tiered KV cache in numbers: hit rates by tier on the Mooncake traces (replays of
llmds.replay.replay_tiered_prefix_cache beside the single-tier replay), and the ratios of its data
paths to their limits, read from the Google Benchmark suites bench_kv_tiers and bench_engine.

Run by ``python -m llmds bench --sections tiers``; ``hit_rates``, ``goals`` and ``path_ratios`` are
the pieces the report is made of.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmds.replay import replay_prefix_cache, replay_tiered_prefix_cache
from llmds.traces import MooncakeTrace

UNLIMITED = 1_000_000  # blocks: more than either trace's distinct blocks and any request beside them
DISK = 400_000


@dataclass(frozen=True)
class Row:
    """One replay: its label, hit rate per tier and combined, disk blocks written, cost."""

    label: str
    tiers: dict[str, float]
    combined: float
    disk_writes: int
    us_per_request: float


def _tiered(trace: MooncakeTrace, label: str, primary: int, host: int, disk: int, policy: str = "write-back",
            disk_min_uses: int = 0) -> Row:
    r = replay_tiered_prefix_cache(trace, primary, host_blocks=host, disk_blocks=disk, offload_policy=policy,
                                   disk_min_uses=disk_min_uses)
    tiers = {name: r.tier_hit_rate(name) for name in r.tiers}
    disk_writes = r.tiers["disk"]["stored_blocks"] if "disk" in r.tiers else 0
    return Row(label, tiers, r.hit_rate, disk_writes, r.microseconds_per_request)


def _single(trace: MooncakeTrace, label: str, capacity: int) -> Row:
    r = replay_prefix_cache(trace, capacity, 512)
    return Row(label, {"primary": r.hit_rate}, r.hit_rate, 0, r.microseconds_per_request)


def hit_rates(trace: MooncakeTrace) -> list[Row]:
    """The configurations of the report, in its order."""
    return [
        _single(trace, "one tier, 6,000", 6_000),
        _single(trace, "one tier, 22,000", 22_000),
        _single(trace, "one tier, unlimited", UNLIMITED),
        _tiered(trace, "6,000 + host 16,000, write-back", 6_000, 16_000, 0),
        _tiered(trace, "6,000 + host 16,000, write-through", 6_000, 16_000, 0, "write-through"),
        _tiered(trace, "6,000 + 16,000 + disk 400,000, write-back", 6_000, 16_000, DISK),
        _tiered(trace, "6,000 + 16,000 + disk 400,000, write-through", 6_000, 16_000, DISK, "write-through"),
        _tiered(trace, "6,000 + 16,000 + disk 400,000, disk filter 2 uses", 6_000, 16_000, DISK, disk_min_uses=2),
        _tiered(trace, "6,000 + 16,000 + disk 400,000, disk filter 3 uses", 6_000, 16_000, DISK, disk_min_uses=3),
    ]


def goals(rows: list[Row]) -> list[str]:
    """The hit-rate goals, each met or missed and by how much (rows as hit_rates returns them)."""
    by = {r.label: r for r in rows}
    unlimited = by["one tier, unlimited"].combined
    with_disk = by["6,000 + 16,000 + disk 400,000, write-back"].combined
    two = by["6,000 + host 16,000, write-back"].combined
    single = by["one tier, 22,000"].combined
    gap = 100 * (unlimited - with_disk)
    lines = [f"with disk: {100 * with_disk:.2f}% vs unlimited {100 * unlimited:.2f}%, goal within 0.1 points: "
             + ("met" if abs(gap) <= 0.1 else f"MISSED by {abs(gap) - 0.1:.2f} points"),
             f"6,000 + 16,000: {100 * two:.2f}% vs one tier of 22,000 {100 * single:.2f}%, goal at least the single "
             "tier less 0.5 points: " + ("met" if 100 * (single - two) <= 0.5 else
                                         f"MISSED by {100 * (single - two) - 0.5:.2f} points")]
    base = by["6,000 + 16,000 + disk 400,000, write-back"]
    for uses in (2, 3):
        f = by[f"6,000 + 16,000 + disk 400,000, disk filter {uses} uses"]
        saved = 1 - f.disk_writes / base.disk_writes if base.disk_writes else 0.0
        lines.append(f"disk filter {uses} uses: {saved:.0%} fewer disk writes ({f.disk_writes:,} vs {base.disk_writes:,}) "
                     f"for {100 * (base.combined - f.combined):.2f} points of hit rate")
    return lines


def by_primary(trace: MooncakeTrace, primaries: tuple[int, ...], host: int = 16_000, disk: int = DISK) -> list[Row]:
    """Hit rate by tier as the primary tier grows, host and disk fixed."""
    return [_tiered(trace, f"{p:,}", p, host, disk) for p in primaries]


def _suite(folder: Path | None, name: str) -> dict[str, dict[str, Any]]:
    path = folder / f"{name}.json" if folder else None
    if path is None or not path.exists():
        return {}
    runs = json.loads(path.read_text()).get("benchmarks", [])
    # With --benchmark_repetitions, the median of the repetitions stands for the benchmark.
    out = {b["name"]: b for b in runs if b.get("run_type") != "aggregate"}
    out.update({b["run_name"]: b for b in runs if b.get("aggregate_name") == "median" and "run_name" in b})
    return out


def path_ratios(folder: Path | None) -> list[str]:
    """Markdown table rows: each data path against its limit, from the suites' JSON in `folder`."""
    tiers, engine = _suite(folder, "bench_kv_tiers"), _suite(folder, "bench_engine")
    rows: list[str] = []

    def bw(b: dict[str, Any]) -> float:
        return float(b.get("bytes_per_second", 0.0)) / 1e9

    for size in (64 << 10, 256 << 10, 1 << 20, 4 << 20):
        base = tiers.get(f"BM_Memcpy/{size}")
        for name, what in (("BM_CopyContiguous", "primary -> host, contiguous"),
                           ("BM_CopyToLayerSeparate", "primary -> host, into a layer-separate layout")):
            b = tiers.get(f"{name}/{size}")
            if base and b and bw(base) > 0:
                ratio = bw(b) / bw(base)
                rows.append(f"| {what}, {size >> 10} KiB blocks | {bw(b):.2f} GB/s | memcpy {bw(base):.2f} GB/s | "
                            f"{ratio:.0%} | 80% | {'met' if ratio >= 0.8 else 'MISSED'} |")
    for size in (64 << 10, 2 << 20):
        for store, raw, what in (("BM_DiskStoreWrite/{size}/1/1/1", "BM_DiskRawWrite/{size}",
                                  "host -> disk (block files), full tier"),
                                 ("BM_DiskStoreWrite/{size}/1/1/8", "BM_DiskRawWrite/{size}",
                                  "host -> disk (block files, 8 per flush: the disk worker's batches), full tier"),
                                 ("BM_DiskStoreWrite/{size}/0/1/1", "BM_DiskRawWrite/{size}",
                                  "host -> disk (block files, sync_writes off), full tier"),
                                 ("BM_DiskStoreWrite/{size}/1/0/1", "BM_DiskRawWrite/{size}",
                                  "host -> disk (block files), empty tier filling up"),
                                 ("BM_DiskStoreWrite/{size}/1/0/8", "BM_DiskRawWrite/{size}",
                                  "host -> disk (block files, 8 per flush), empty tier filling up"),
                                 ("BM_DiskStoreWrite/{size}/0/0/1", "BM_DiskRawWrite/{size}",
                                  "host -> disk (block files, sync_writes off), empty tier filling up"),
                                 ("BM_DiskStoreRead/{size}", "BM_DiskRawRead/{size}", "disk -> host (block files)")):
            b = tiers.get(store.format(size=size) + "/real_time")
            r = tiers.get(raw.format(size=size) + "/real_time")
            if b and r and bw(r) > 0:
                ratio = bw(b) / bw(r)
                rows.append(f"| {what}, {size >> 10} KiB blocks | {bw(b):.2f} GB/s | raw direct I/O {bw(r):.2f} GB/s | "
                            f"{ratio:.0%} | 70% | {'met' if ratio >= 0.7 else 'MISSED'} |")
    off = engine.get("BM_EngineDecodeTiers/0/real_time")
    for arg, what in ((1, "tiers on"), (2, "tiers on, reclaimer keeping 8 pages free")):
        on = engine.get(f"BM_EngineDecodeTiers/{arg}/real_time")
        if not (off and on):
            continue
        ratio = on["tokens_per_s"] / off["tokens_per_s"]
        rows.append(f"| engine decode with {what} | {on['tokens_per_s']:,.0f} tokens/s | tiers off "
                    f"{off['tokens_per_s']:,.0f} tokens/s | {ratio:.1%} | 97% | "
                    f"{'met' if ratio >= 0.97 else f'MISSED by {100 * (0.97 - ratio):.1f} points'} |")
    ttft = {k: engine.get(f"BM_TieredTTFT/{k}/real_time") for k in (0, 1, 2)}
    if all(ttft.values()):
        recompute = ttft[0]["ttft_us"]
        for k, what in ((1, "host"), (2, "disk")):
            t = ttft[k]
            rows.append(f"| time to first token, ~400-token prompt from {what} | {t['ttft_us'] / 1e3:.2f} ms "
                        f"({t['cached_tokens']:.0f} tokens cached) | recomputed {recompute / 1e3:.2f} ms | "
                        f"{recompute / t['ttft_us']:.1f}x faster | - | - |")
    for arg, trace in ((0, "conversation"), (1, "synthetic")):
        b = tiers.get(f"BM_TieredReplay/{arg}/1")
        if b:
            us = b["us_per_request"]
            rows.append(f"| tiered replay metadata, {trace} (6,000 + 16,000 + 400,000) | {us:.2f} us/request | - | - | "
                        f"3 us | {'met' if us <= 3 else f'MISSED by {us - 3:.2f} us'} |")
    return rows
