"""Every stats() dict of the API: its keys, in order, and the type of each value.

The dicts are made from each C++ stats struct's list of figures (for_each_field), so a field
renamed, dropped or added on the C++ side shows up here as a change to the documented API.
Derived figures are checked against the figures they come from.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from llmds import utils
from llmds.admissions import AdmissionController
from llmds.cmsketch import CountMinSketch
from llmds.engine import Request, SamplingParams, load_stories260k
from llmds.hnsw import HNSW
from llmds.inverted_index import InvertedIndex
from llmds.kv_cache import BlockPool, KVCache
from llmds.retrieval_pipeline import RetrievalPipeline
from llmds.scheduler import ManualClock, Scheduler
from llmds.token_budget import TokenBudget
from llmds.token_lru import TokenLRU

SUMMARY = {"count": int, "mean": float, "p50": float, "p95": float, "p99": float, "max": float}
USAGE = ["limit", "reserved", "committed", "available", "peak", "refusals"]


def shape(d: dict[str, Any], expected: dict[str, Any]) -> None:
    assert list(d) == list(expected)
    for key, kind in expected.items():
        if isinstance(kind, dict):
            shape(d[key], kind)
        elif kind is not None:
            assert isinstance(d[key], kind), (key, d[key])


def test_token_lru() -> None:
    lru = TokenLRU(token_of=lambda v: 1, max_tokens=2)
    lru.put("a", 1)
    lru.get("a")
    lru.get("b")
    s = lru.stats()
    shape(s, {"size": int, "total_tokens": int, "max_tokens": int, "hits": int, "misses": int,
              "hit_rate": float, "evictions": int})
    assert s["hit_rate"] == 0.5
    assert TokenLRU().stats()["max_tokens"] is None


def test_count_min_sketch() -> None:
    cms = CountMinSketch(width=100, depth=3)
    cms.add("x", 7)
    s = cms.stats()
    shape(s, {"width": int, "depth": int, "seed": int, "conservative": bool, "top_k": int,
              "total_count": int, "epsilon": float, "delta": float, "error_bound": float, "memory_bytes": int})
    assert (s["width"], s["depth"], s["total_count"]) == (100, 3, 7)
    assert s["error_bound"] == pytest.approx(s["epsilon"] * 7) == pytest.approx(cms.get_error_bound())


def test_hnsw() -> None:
    h = HNSW(dim=4)
    h.add(np.ones(4, dtype=np.float32), 9)
    s = h.stats()
    shape(s, {"num_vectors": int, "num_deleted": int, "capacity": int, "num_layers": int, "entry_point": int,
              "edges": int, "memory_bytes": int, "dim": int, "M": int, "ef_construction": int, "ef_search": int,
              "metric": str, "simd": str})
    assert (s["entry_point"], s["dim"], s["metric"]) == (9, 4, "l2")
    assert HNSW(dim=4).stats()["entry_point"] is None


def test_inverted_index() -> None:
    index = InvertedIndex(k1=1.5, b=0.5)
    index.add_document(1, "hello world")
    s = index.stats()
    shape(s, {"num_documents": int, "scored_documents": int, "num_terms": int, "num_postings": int,
              "stored_postings": int, "dead_documents": int, "total_terms": int, "avg_doc_length": float,
              "posting_bytes": int, "skip_bytes": int, "bits_per_posting": float,
              "bits_per_posting_with_skips": float, "forward_bytes": int, "memory_bytes": int, "k1": float,
              "b": float})
    assert (s["k1"], s["b"], s["num_documents"]) == (1.5, 0.5, 1)


def test_kv_cache_and_block_pool() -> None:
    cache = KVCache(page_size=2, max_pages=8)
    cache.attach(1, [1.0, 2.0, 3.0], prefix_tokens=[5, 6, 7])
    s = cache.stats()
    shape(s, {"sequences": int, "tokens": int, "total_pages": int, "free_pages": int, "cached_pages": int,
              "used_pages": int, "shared_pages": int, "total_refs": int, "logical_pages": int, "pages_saved": int,
              "bytes_per_page": int, "bytes_saved": int, "prefix_lookup_pages": int, "prefix_hit_pages": int,
              "prefix_hit_rate": float, "evictions": int, "cow_copies": int, "refcounts": dict})
    assert s["refcounts"] == {page: 1 for page in cache.block_table(1)}
    assert s["bytes_saved"] == s["pages_saved"] * s["bytes_per_page"]
    pool = BlockPool(4)
    shape(pool.stats(), {"num_blocks": int, "free_blocks": int, "cached_blocks": int, "in_use_blocks": int,
                         "shared_blocks": int, "total_refs": int, "registered_blocks": int, "evictions": int})


def test_scheduler_admission_and_budget() -> None:
    clock = ManualClock()
    sched = Scheduler(clock=clock)
    sched.submit(10)
    shape(sched.stats(), {"submitted": int, "dispatched": int, "completed": int, "cancelled": int, "preempted": int,
                          "batches": int, "queued": int, "in_flight": int, "queued_tokens": int,
                          "queue_wait_ms": SUMMARY, "latency_ms": SUMMARY, "batch_size": SUMMARY,
                          "slo_requests": int, "slo_met": int, "slo_attainment": float, "elapsed_s": float,
                          "throughput_rps": float, "throughput_tokens_per_s": float, "clock_went_back": int})

    adm = AdmissionController(qps_limit=1.0, clock=clock)
    adm.try_admit()
    adm.try_admit()
    s = adm.stats()
    shape(s, {"admitted": int, "rejected": int, "rejected_by_reason": {"qps_limit": int, "token_rate_limit": int},
              "recorded": int, "current_qps": float, "current_token_rate": float, "tenants": int,
              "clock_went_back": int})
    assert s["rejected"] == sum(s["rejected_by_reason"].values()) == 1

    budget = TokenBudget(kv_cache_limit=100)
    budget.reserve(1, kv_cache=30)
    s = budget.stats()
    shape(s, {"kv_cache": dict.fromkeys(USAGE), "prompt": dict.fromkeys(USAGE), "context": dict.fromkeys(USAGE),
              "reservations": int, "committed_reservations": int})
    assert s["kv_cache"]["available"] == 70 and s["prompt"]["available"] is None and s["prompt"]["limit"] is None
    assert budget.holding(1) == {"kv_cache": 30, "prompt": 0, "context": 0}
    assert list(budget.holding(1)) == ["kv_cache", "prompt", "context"]


def test_retrieval_pipeline() -> None:
    rp = RetrievalPipeline(dim=4)
    s = rp.stats()
    shape(s, {"documents": int, "documents_with_embeddings": int, "searches": int, "cache_hits": int,
              "cache_misses": int, "cache_hit_rate": float, "cached_queries": int, "cached_entries": int,
              "cache_invalidations": int, "dense_searches": int, "sparse_searches": int,
              "hot_query_threshold": int, "fusion": str, "dim": int})
    assert (s["cache_hit_rate"], s["dim"]) == (0.0, 4)


def test_engine() -> None:
    engine = load_stories260k()
    engine.generate(Request("Once", max_tokens=3, sampling=SamplingParams(temperature=0.0)))
    s = engine.stats()
    shape(s, {"steps": int, "requests_finished": int, "generated_tokens": int, "prefill_tokens": int,
              "cached_prompt_tokens": int, "cached_from_host": int, "cached_from_disk": int,
              "preemptions": int, "evicted_pages": int, "reclaimed_pages": int, "waiting": int, "running": int,
              "cache_used_pages": int, "cache_cached_pages": int, "cache_free_pages": int,
              "cache_prefix_hit_rate": float})
    assert s["requests_finished"] == 1


def test_kv_block_manager() -> None:
    from llmds.kv_block_manager import KVBlockManager

    s = KVBlockManager(primary_blocks=4, host_blocks=4).stats()
    assert list(s) == ["primary", "host"]
    shape(s["host"], {"tier": str, "capacity_blocks": int, "cached_blocks": int, "in_use_blocks": int,
                      "lookups": int, "hit_blocks": int, "hit_tokens": int, "stored_blocks": int,
                      "evicted_blocks": int, "reclaimed_blocks": int, "onboarded_blocks": int, "dropped_offloads": int,
                      "filter_rejected": int, "failed_transfers": int, "bytes_in": int, "bytes_out": int,
                      "queued_writes": int, "queue_high_water": int, "copy_in_us": None, "copy_out_us": None})
    assert s["host"]["copy_in_us"] is None  # metadata only: no copies to time


def test_utils() -> None:
    shape(utils.compute_percentiles([1.0, 2.0, 3.0]), {"p50": float, "p95": float, "p99": float})
    shape(utils.calculate_statistics([1.0, 2.0, 3.0]),
          {"mean": float, "std": float, "min": float, "max": float, "p50": float, "p95": float, "p99": float,
           "ci_lower": float, "ci_upper": float, "cv": float, "count": int})
