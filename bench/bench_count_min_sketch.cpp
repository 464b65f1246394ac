// CountMinSketch: add and estimate on Zipf(1.1) streams over 1e3 to 1e6 distinct items, at the
// seed's default shape (width 2048, depth 4).
//   build/bench/bench_count_min_sketch --benchmark_counters_tabular=true
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "llmds/sketch/count_min_sketch.hpp"

namespace {

constexpr std::size_t stream_length = 1 << 16;

std::vector<std::string> zipf_items(std::size_t distinct) {
  std::vector<double> cdf(distinct);
  double sum = 0.0;
  for (std::size_t r = 0; r < distinct; ++r) cdf[r] = sum += std::pow(double(r + 1), -1.1);
  std::mt19937_64 rng(11);
  std::uniform_real_distribution<double> u(0.0, sum);
  std::vector<std::string> items(stream_length);
  for (auto& item : items) {
    item = "query-" + std::to_string(std::lower_bound(cdf.begin(), cdf.end(), u(rng)) - cdf.begin());
  }
  return items;
}

void run_adds(benchmark::State& state, llmds::CountMinSketchConfig config) {
  const auto items = zipf_items(static_cast<std::size_t>(state.range(0)));
  llmds::CountMinSketch sketch(config);
  for (auto _ : state) {
    for (const auto& item : items) sketch.add(item);
  }
  benchmark::DoNotOptimize(sketch.total_count());
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * items.size()));
}

void BM_AddConservative(benchmark::State& state) { run_adds(state, {}); }

void BM_AddPlain(benchmark::State& state) {
  llmds::CountMinSketchConfig config;
  config.conservative = false;
  run_adds(state, config);
}

void BM_AddTrackingTop100(benchmark::State& state) {
  llmds::CountMinSketchConfig config;
  config.top_k = 100;
  run_adds(state, config);
}

void BM_Estimate(benchmark::State& state) {
  const auto items = zipf_items(static_cast<std::size_t>(state.range(0)));
  llmds::CountMinSketch sketch;
  for (const auto& item : items) sketch.add(item);
  for (auto _ : state) {
    std::uint64_t sum = 0;
    for (const auto& item : items) sum += sketch.estimate(item);
    benchmark::DoNotOptimize(sum);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * items.size()));
}

BENCHMARK(BM_AddConservative)->RangeMultiplier(10)->Range(1000, 1000000);
BENCHMARK(BM_AddPlain)->RangeMultiplier(10)->Range(1000, 1000000);
BENCHMARK(BM_AddTrackingTop100)->RangeMultiplier(10)->Range(1000, 1000000);
BENCHMARK(BM_Estimate)->RangeMultiplier(10)->Range(1000, 1000000);

}  // namespace

BENCHMARK_MAIN();
