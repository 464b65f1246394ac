// IndexedHeap: push, pop and re-score at 1e3 to 1e6 entries.
//   build/bench/bench_indexed_heap --benchmark_counters_tabular=true
#include <cstdint>
#include <random>
#include <vector>

#include <benchmark/benchmark.h>

#include "llmds/core/indexed_heap.hpp"

namespace {

using Heap = llmds::IndexedHeap<>;

std::vector<double> random_scores(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> dist(0.0, 1e6);
  std::vector<double> scores(n);
  for (double& s : scores) s = dist(rng);
  return scores;
}

void fill(Heap& heap, const std::vector<double>& scores) {
  for (std::size_t i = 0; i < scores.size(); ++i) heap.push(static_cast<std::int64_t>(i), scores[i]);
}

void BM_Push(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const auto scores = random_scores(n, 1);
  Heap heap;
  for (auto _ : state) {
    state.PauseTiming();
    heap.clear();
    state.ResumeTiming();
    fill(heap, scores);
    benchmark::DoNotOptimize(heap.peek());
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n));
}

void BM_Pop(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const auto scores = random_scores(n, 2);
  Heap heap;
  for (auto _ : state) {
    state.PauseTiming();
    heap.clear();
    fill(heap, scores);
    state.ResumeTiming();
    while (!heap.is_empty()) benchmark::DoNotOptimize(heap.pop());
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n));
}

// Re-scoring random keys in both directions, as a scheduler updating priorities does.
void BM_Update(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  Heap heap;
  fill(heap, random_scores(n, 3));
  constexpr std::size_t batch = 4096;
  std::mt19937_64 rng(4);
  std::vector<std::int64_t> keys(batch);
  for (auto& k : keys) k = static_cast<std::int64_t>(rng() % n);
  const auto scores = random_scores(batch, 5);
  for (auto _ : state) {
    for (std::size_t i = 0; i < batch; ++i) heap.update_key(keys[i], scores[i]);
    benchmark::DoNotOptimize(heap.peek());
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * batch));
}

BENCHMARK(BM_Push)->RangeMultiplier(10)->Range(1000, 1000000)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Pop)->RangeMultiplier(10)->Range(1000, 1000000)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Update)->RangeMultiplier(10)->Range(1000, 1000000)->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
