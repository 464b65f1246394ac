// PagedAllocator: alloc + free of page runs, and defragment, at 1e3 to 1e6 pages.
//   build/cpp/bench/bench_paged_allocator
#include <cstdint>
#include <random>
#include <vector>

#include <benchmark/benchmark.h>

#include "llmds/kv/paged_allocator.hpp"

namespace {

using llmds::PageId;

// Sequences of 1-32 pages come and go, keeping the arena about half full.
void BM_AllocFree(benchmark::State& state) {
  const auto max_pages = static_cast<std::size_t>(state.range(0));
  llmds::PagedAllocator allocator({16, max_pages});
  std::mt19937_64 rng(1);
  std::vector<std::vector<PageId>> live;
  std::uint64_t pages = 0;
  for (auto _ : state) {
    if (allocator.free_pages() > max_pages / 2) {
      live.push_back(allocator.alloc(1 + rng() % 32));
      pages += live.back().size();
    } else {
      const std::size_t i = rng() % live.size();
      allocator.free(live[i]);
      pages += live[i].size();
      live[i].swap(live.back());
      live.pop_back();
    }
  }
  state.counters["pages/s"] = benchmark::Counter(double(pages), benchmark::Counter::kIsRate);
}

void BM_Defragment(benchmark::State& state) {
  const auto max_pages = static_cast<std::size_t>(state.range(0));
  std::mt19937_64 rng(2);
  for (auto _ : state) {
    state.PauseTiming();
    llmds::PagedAllocator allocator({16, max_pages});
    const auto pages = allocator.alloc(max_pages);
    std::vector<PageId> half;
    for (const PageId p : pages) {
      if (rng() % 2 == 0) half.push_back(p);
    }
    allocator.free(half);
    state.ResumeTiming();
    benchmark::DoNotOptimize(allocator.defragment());
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * max_pages));
}

BENCHMARK(BM_AllocFree)->RangeMultiplier(10)->Range(1000, 1000000);
BENCHMARK(BM_Defragment)->RangeMultiplier(10)->Range(1000, 1000000)->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
