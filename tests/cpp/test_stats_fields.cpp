// Every stats struct lists its figures by name (core/stats_fields.hpp): the names and the
// derived figures a C++ caller gets are the ones the Python API's stats() dicts show.
#include "llmds/core/stats_fields.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <gtest/gtest.h>

#include "llmds/ann/hnsw.hpp"
#include "llmds/core/statistics.hpp"
#include "llmds/core/token_lru.hpp"
#include "llmds/kv/block_pool.hpp"
#include "llmds/kv/kv_cache.hpp"
#include "llmds/retrieval/retrieval_pipeline.hpp"
#include "llmds/sched/admission_controller.hpp"
#include "llmds/sched/scheduler.hpp"
#include "llmds/sched/token_budget.hpp"
#include "llmds/sketch/count_min_sketch.hpp"
#include "llmds/text/inverted_index.hpp"

namespace {

template <llmds::HasFields T>
std::vector<std::string> names(const T& stats) {
  std::vector<std::string> out;
  stats.for_each_field([&](std::string_view name, const auto&) { out.emplace_back(name); });
  return out;
}

using Names = std::vector<std::string>;

static_assert(llmds::HasFields<llmds::KVCacheStats>);
static_assert(!llmds::HasFields<llmds::PageStats>);  // bound to Python as a class of its own
static_assert(!llmds::HasFields<int>);

TEST(StatsFields, KVFiguresAndTheirDerivedOnes) {
  llmds::KVCache<float> cache(llmds::KVCacheConfig{2, 8, 1, true, {}});
  const std::vector<llmds::TokenId> tokens = {5, 6, 7};
  cache.attach(1, std::vector<float>{1, 2, 3}, tokens);
  cache.attach(2, std::vector<float>{1, 2, 3}, tokens);  // shares the full page
  const auto s = cache.stats();
  EXPECT_EQ(names(s), (Names{"sequences", "tokens", "total_pages", "free_pages", "cached_pages", "used_pages",
                             "shared_pages", "total_refs", "logical_pages", "pages_saved", "bytes_per_page",
                             "bytes_saved", "prefix_lookup_pages", "prefix_hit_pages", "prefix_hit_rate",
                             "evictions", "cow_copies"}));
  double listed_rate = -1;
  s.for_each_field([&](std::string_view name, const auto& value) {
    if constexpr (std::is_same_v<std::decay_t<decltype(value)>, double>) {
      if (name == "prefix_hit_rate") listed_rate = value;
    }
  });
  EXPECT_EQ(listed_rate, s.prefix_hit_rate());
  EXPECT_EQ(s.prefix_hit_rate(), 0.5);  // the second attach found the one full page the first stored
  EXPECT_EQ(s.bytes_saved(), s.pages_saved * s.bytes_per_page);

  llmds::BlockPool<std::int64_t> pool(4);
  EXPECT_EQ(names(pool.stats()), (Names{"num_blocks", "free_blocks", "cached_blocks", "in_use_blocks",
                                        "shared_blocks", "total_refs", "registered_blocks", "evictions"}));
}

TEST(StatsFields, CoreSketchAndStatistics) {
  llmds::TokenLRU<std::string, std::string> lru;
  lru.put("a", "one");
  (void)lru.get("a");
  (void)lru.get("b");
  EXPECT_EQ(names(lru.stats()), (Names{"size", "total_tokens", "max_tokens", "hits", "misses", "hit_rate",
                                       "evictions"}));
  EXPECT_EQ(lru.stats().hit_rate(), 0.5);

  llmds::CountMinSketch cms(llmds::CountMinSketchConfig{100, 3});
  cms.add("x", 7);
  const auto c = cms.stats();
  EXPECT_EQ(names(c), (Names{"width", "depth", "seed", "conservative", "top_k", "total_count", "epsilon", "delta",
                             "error_bound", "memory_bytes"}));
  EXPECT_EQ(c.total_count, 7u);
  EXPECT_DOUBLE_EQ(c.error_bound(), cms.get_error_bound());
  EXPECT_DOUBLE_EQ(c.epsilon, cms.epsilon());

  const std::vector<double> values = {1, 2, 3};
  EXPECT_EQ(names(llmds::compute_percentiles(values)), (Names{"p50", "p95", "p99"}));
  EXPECT_EQ(names(llmds::calculate_statistics(values)),
            (Names{"mean", "std", "min", "max", "p50", "p95", "p99", "ci_lower", "ci_upper", "cv", "count"}));
}

TEST(StatsFields, SearchStructuresCarryTheConfigurationTheyRanUnder) {
  llmds::HNSWConfig hc;
  hc.dim = 4;
  llmds::HNSW h(hc);
  const auto hs = h.stats();
  EXPECT_EQ(names(hs), (Names{"num_vectors", "num_deleted", "capacity", "num_layers", "entry_point", "edges",
                              "memory_bytes", "dim", "M", "ef_construction", "ef_search", "metric", "simd"}));
  EXPECT_EQ(hs.dim, 4u);
  EXPECT_EQ(hs.M, hc.M);
  EXPECT_STREQ(hs.metric, "l2");

  llmds::InvertedIndexConfig ic;
  ic.k1 = 1.5;
  llmds::InvertedIndex index(ic);
  EXPECT_EQ(index.stats().k1, 1.5);
  EXPECT_EQ(names(index.stats()).back(), "b");

  llmds::RetrievalPipelineConfig rc;
  rc.hnsw.dim = 4;
  llmds::RetrievalPipeline rp(rc);
  const auto rs = rp.stats();
  EXPECT_EQ(rs.dim, 4u);
  EXPECT_EQ(rs.cache_hit_rate(), 0.0);
  EXPECT_EQ(names(rs), (Names{"documents", "documents_with_embeddings", "searches", "cache_hits", "cache_misses",
                              "cache_hit_rate", "cached_queries", "cached_entries", "cache_invalidations",
                              "dense_searches", "sparse_searches", "hot_query_threshold", "fusion", "dim"}));
}

TEST(StatsFields, SchedulingFiguresNestWhereTheDictsDo) {
  llmds::Scheduler sched;
  const auto ss = sched.stats();
  const auto sn = names(ss);
  EXPECT_EQ(sn.front(), "submitted");
  EXPECT_EQ(sn.back(), "clock_went_back");
  EXPECT_EQ(names(ss.latency_ms), (Names{"count", "mean", "p50", "p95", "p99", "max"}));

  llmds::AdmissionStats a;
  a.rejected_qps = 2;
  a.rejected_tokens = 3;
  EXPECT_EQ(a.rejected(), 5u);
  std::uint64_t by_qps = 0;
  a.for_each_field([&](std::string_view name, const auto& value) {
    if constexpr (llmds::HasFields<std::decay_t<decltype(value)>>) {
      EXPECT_EQ(name, "rejected_by_reason");
      by_qps = value.qps_limit;
    }
  });
  EXPECT_EQ(by_qps, 2u);

  llmds::TokenBudgetConfig bc;
  bc.kv_cache_limit = 100;
  llmds::TokenBudget budget(bc);
  ASSERT_FALSE(budget.try_reserve(1, llmds::TokenAmounts{30, 0, 0}).has_value());
  const auto bs = budget.stats();
  EXPECT_EQ(names(bs), (Names{"kv_cache", "prompt", "context", "reservations", "committed_reservations"}));
  EXPECT_EQ(bs.resources[0].available(), std::optional<std::int64_t>(70));
  EXPECT_EQ(bs.resources[1].available(), std::nullopt);
  EXPECT_EQ(budget.available(llmds::BudgetResource::kv_cache), bs.resources[0].available());
  EXPECT_EQ(names(llmds::TokenAmounts{}), (Names{"kv_cache", "prompt", "context"}));
}

}  // namespace
