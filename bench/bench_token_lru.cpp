// TokenLRU: put under a token budget (every put evicts) and get hits, at 1e3 to 1e6 entries.
//   build/bench/bench_token_lru --benchmark_counters_tabular=true
#include <cstdint>
#include <random>
#include <vector>

#include <benchmark/benchmark.h>

#include "llmds/core/token_lru.hpp"

namespace {

// The value is its own token count, so the benchmark measures the cache, not value copies.
struct Identity {
  std::uint32_t operator()(std::uint32_t tokens) const { return tokens; }
};
using Lru = llmds::TokenLRU<std::int64_t, std::uint32_t, Identity>;

constexpr std::size_t batch = 4096;

std::vector<std::uint32_t> token_counts(std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::uint32_t> v(batch);
  for (auto& t : v) t = 1 + static_cast<std::uint32_t>(rng() % 256);
  return v;
}

// A cache that holds about n entries of 128 tokens, fed twice as many distinct keys, so puts
// keep evicting.
void BM_PutWithEviction(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  Lru lru({}, n * 128);
  const auto tokens = token_counts(1);
  std::int64_t key = 0;
  for (auto _ : state) {
    for (std::size_t i = 0; i < batch; ++i) {
      benchmark::DoNotOptimize(lru.put(key, tokens[i]));
      key = (key + 1) % static_cast<std::int64_t>(2 * n);
    }
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * batch));
  state.counters["size"] = static_cast<double>(lru.size());
}

void BM_GetHit(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  Lru lru;
  for (std::size_t i = 0; i < n; ++i) lru.put(static_cast<std::int64_t>(i), 16);
  std::mt19937_64 rng(2);
  std::vector<std::int64_t> keys(batch);
  for (auto& k : keys) k = static_cast<std::int64_t>(rng() % n);
  for (auto _ : state) {
    for (const std::int64_t k : keys) benchmark::DoNotOptimize(lru.get(k));
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * batch));
}

BENCHMARK(BM_PutWithEviction)->RangeMultiplier(10)->Range(1000, 1000000);
BENCHMARK(BM_GetHit)->RangeMultiplier(10)->Range(1000, 1000000);

}  // namespace

BENCHMARK_MAIN();
