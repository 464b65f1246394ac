// KVCache and its parts: block hashing, BlockPool alloc/release, attach/detach with and without
// prefix sharing, fork + copy-on-write append, defragment, and the Mooncake prefix-cache replay.
//   build/cpp/bench/bench_kv_cache
// The replay benchmarks read the Mooncake traces from $LLMDS_DATA_DIR (default ../shared/data).
#include <cstdint>
#include <filesystem>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "llmds/kv/block_hash.hpp"
#include "llmds/kv/block_pool.hpp"
#include "llmds/kv/kv_cache.hpp"
#include "llmds/kv/trace_replay.hpp"

#include "data_dir.hpp"

namespace {

using llmds::BlockId;
using llmds::KVCache;
using llmds::KVCacheConfig;
using llmds::TokenId;

// Time per item, printed as a duration (e.g. "2.1n" is 2.1 ns per token).
benchmark::Counter per_item(double items) {
  return benchmark::Counter(items, benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

std::vector<TokenId> random_tokens(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<TokenId> t(n);
  for (auto& x : t) x = static_cast<TokenId>(rng() % 128000);
  return t;
}

// Chained SHA-256 over a prompt of range(0) tokens in 512-token pages. Goal: <= 5 ns per token.
void BM_BlockHashChain(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const auto tokens = random_tokens(n, 1);
  llmds::BlockHasher hasher(512);
  for (auto _ : state) benchmark::DoNotOptimize(hasher.chain(tokens));
  const double hashed = double(n / 512 * 512);  // the partial last page is not hashed
  state.counters["per_token"] = per_item(double(state.iterations()) * hashed);
}

// allocate + release of range(0)-block requests in a 10k-block pool, no hashing: the free-list
// path every request takes.
void BM_BlockPoolAllocateRelease(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  llmds::BlockPool<std::int64_t> pool(10000);
  for (auto _ : state) {
    auto blocks = pool.allocate(n);
    pool.release(blocks);
    benchmark::DoNotOptimize(blocks.data());
  }
  state.counters["per_block"] = per_item(double(state.iterations()) * double(n));
}

// attach + detach of a range(0)-token sequence (entry width 64 floats: one layer's K and V of a
// small model) whose prompt is a shared system prompt of half its length. range(1) = 1: prefix
// sharing on (the system prompt's pages are found cached after the first round); 0: off.
void BM_AttachDetach(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const bool sharing = state.range(1) != 0;
  constexpr std::size_t kWidth = 64;
  KVCache<float> cache(KVCacheConfig{16, 4096, kWidth, sharing, {}});
  const auto tokens = random_tokens(n, 2);
  const std::vector<float> kv(n * kWidth, 1.0f);
  const std::span<const TokenId> prefix(tokens.data(), n / 2);
  for (auto _ : state) {
    cache.attach(1, kv, prefix);
    cache.detach(1);
  }
  state.counters["per_token"] = per_item(double(state.iterations()) * double(n));
  state.counters["hit_rate"] = cache.stats().prefix_hit_rate();
}

// fork of a range(0)-token sequence, one appended token (which copies the shared partial last
// page), and detach of the fork: the cost of one more beam or sample.
void BM_ForkAppendCopyOnWrite(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  constexpr std::size_t kWidth = 64;
  KVCache<float> cache(KVCacheConfig{16, 4096, kWidth, true, {}});
  cache.attach(1, std::vector<float>((n | 1) * kWidth, 1.0f));  // odd length: a partial page
  const std::vector<float> token(kWidth, 2.0f);
  for (auto _ : state) {
    cache.fork(1, 2);
    cache.append(2, token);
    cache.detach(2);
  }
  state.counters["copies"] = double(cache.stats().cow_copies) / double(state.iterations());
}

// defragment of a cache of range(0) pages (16 tokens x 64 floats = 4 KiB each) in which every
// other sequence was detached: half the pages move, data and all.
void BM_KVCacheDefragment(benchmark::State& state) {
  const auto pages = static_cast<std::size_t>(state.range(0));
  constexpr std::size_t kWidth = 64;
  const std::vector<float> kv(16 * kWidth, 1.0f);
  for (auto _ : state) {
    state.PauseTiming();
    KVCache<float> cache(KVCacheConfig{16, pages, kWidth, false, {}});
    for (std::size_t s = 0; s < pages; ++s) cache.attach(static_cast<std::int64_t>(s), kv);
    for (std::size_t s = 0; s < pages; s += 2) cache.detach(static_cast<std::int64_t>(s));
    state.ResumeTiming();
    benchmark::DoNotOptimize(cache.defragment());
  }
  state.counters["per_page"] = per_item(double(state.iterations()) * double(pages));
}

// The whole Mooncake trace through an LRU BlockPool of range(1) blocks, under the protocol of
// traces/README.md section 3. Goal: <= 2 us per request.
void BM_MooncakeReplay(benchmark::State& state, const std::string& file) {
  const auto path = llmds::test::data_dir() / "traces" / file;
  if (!std::filesystem::exists(path)) {
    state.SkipWithError(("needs " + path.string() + " (set LLMDS_DATA_DIR)").c_str());
    return;
  }
  const auto requests = llmds::load_mooncake_trace(path);
  const llmds::PrefixCacheReplayConfig config{static_cast<std::size_t>(state.range(0)), 512};
  double hit_rate = 0;
  for (auto _ : state) hit_rate = llmds::replay_prefix_cache(requests, config).hit_rate();
  state.counters["per_request"] = per_item(double(state.iterations()) * double(requests.size()));
  state.counters["hit_rate"] = hit_rate;
}

BENCHMARK(BM_BlockHashChain)->Arg(1000)->Arg(8192)->Arg(131072);
BENCHMARK(BM_BlockPoolAllocateRelease)->Arg(1)->Arg(32)->Arg(1000);
BENCHMARK(BM_AttachDetach)->ArgsProduct({{256, 1000, 4096}, {0, 1}});
BENCHMARK(BM_ForkAppendCopyOnWrite)->Arg(1000)->Arg(16000);
BENCHMARK(BM_KVCacheDefragment)->Arg(1000)->Arg(4000)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_MooncakeReplay, conversation, "mooncake_fast25_conversation_trace.jsonl")
    ->Arg(1000)->Arg(16000)->Arg(100000)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_MooncakeReplay, synthetic, "mooncake_fast25_synthetic_trace.jsonl")
    ->Arg(1000)->Arg(16000)->Arg(100000)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
