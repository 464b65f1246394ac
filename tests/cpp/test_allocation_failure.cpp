// Every mutating call either completes or leaves the structure unchanged, also when memory runs
// out partway. This binary replaces the global operator new with one that can be told to fail
// the k-th allocation from now, then runs each operation with k = 0, 1, 2, ... until it completes
// without meeting the failure. After every std::bad_alloc the structure must look exactly as it
// did before the call (compared through its serialised bytes, or everything its API shows), and
// it must still work.
#include <gtest/gtest.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <numeric>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "llmds/ann/hnsw.hpp"
#include "llmds/core/indexed_heap.hpp"
#include "llmds/core/token_lru.hpp"
#include "llmds/kv/kv_cache.hpp"
#include "llmds/sketch/count_min_sketch.hpp"
#include "llmds/text/inverted_index.hpp"

namespace {

// Allocations left before one fails; negative: none fails. `failed` records that one did.
std::atomic<long> allocations_left{-1};
std::atomic<bool> failed{false};

void count_allocation() {
  if (allocations_left.load(std::memory_order_relaxed) < 0) return;
  if (allocations_left.fetch_sub(1, std::memory_order_relaxed) == 0) {
    allocations_left.store(-1, std::memory_order_relaxed);
    failed.store(true, std::memory_order_relaxed);
    throw std::bad_alloc();
  }
}

}  // namespace

// The replacements pair malloc with free; GCC, seeing free meet the result of an inlined
// operator new, would warn of a mismatch that is not one.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

void* operator new(std::size_t n) {
  count_allocation();
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void* operator new(std::size_t n, std::align_val_t align) {
  count_allocation();
  const auto a = static_cast<std::size_t>(align);
  if (void* p = std::aligned_alloc(a, (n + a - 1) / a * a)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }

namespace {

// Runs `op` on a fresh structure from `make` with the k-th allocation failing, for k = 0, 1, ...
// After a std::bad_alloc, `state` must read as before the call. An operation may absorb a failed
// allocation and still complete (KVCache::attach skips prefix registration); then `done` checks
// the completed call. Stops once `op` completes without any allocation failing, and returns how
// many allocation points were tried.
template <class Make, class Op, class State, class Done>
long every_allocation_fails(Make make, Op op, State state, Done done) {
  for (long k = 0; k < 100000; ++k) {
    auto subject = make();
    const auto before = state(*subject);
    failed = false;
    allocations_left = k;
    bool threw = false;
    try {
      op(*subject);
    } catch (const std::bad_alloc&) {
      threw = true;
    }
    allocations_left = -1;
    if (threw) {
      // Not EXPECT_EQ: the states are long (serialised bytes), and which call broke says enough.
      EXPECT_TRUE(state(*subject) == before) << "changed by a call whose allocation " << k << " failed";
      op(*subject);  // and it still works
      done(*subject);
      continue;
    }
    done(*subject);
    if (!failed) return k;
  }
  ADD_FAILURE() << "the operation never completed";
  return -1;
}

constexpr auto nothing_more = [](const auto&) {};

// --- KVCache ------------------------------------------------------------------------------------

using Cache = llmds::KVCache<float>;
constexpr std::size_t kWidth = 4;

std::vector<float> entries(std::size_t n, float first) {
  std::vector<float> v(n * kWidth);
  std::iota(v.begin(), v.end(), first);
  return v;
}

std::vector<llmds::TokenId> tokens(std::size_t n) {
  std::vector<llmds::TokenId> t(n);
  std::iota(t.begin(), t.end(), 1);
  return t;
}

// A cache with a shared prompt held by sequence 1, the prompt's pages of a detached sequence
// cached, and a fork whose last page is shared.
std::unique_ptr<Cache> busy_cache() {
  auto kv = std::make_unique<Cache>(llmds::KVCacheConfig{.page_size = 4, .max_pages = 32, .entry_width = kWidth});
  kv->attach(1, entries(18, 0), tokens(16));
  kv->attach(2, entries(10, 100), tokens(8));
  kv->detach(2);
  kv->fork(1, 3);
  return kv;
}

std::string cache_state(const Cache& kv) {
  const auto s = kv.stats();
  std::string out = fmt::format("seqs {} tokens {} free {} cached {} used {} shared {} refs {} lookups {} hits {} "
                                "evictions {} cow {} available {}",
                                s.sequences, s.tokens, s.free_pages, s.cached_pages, s.used_pages, s.shared_pages,
                                s.total_refs, s.prefix_lookup_pages, s.prefix_hit_pages, s.evictions, s.cow_copies,
                                kv.available_pages());
  for (const llmds::SeqId seq : {1, 2, 3, 4}) {
    if (!kv.contains(seq)) continue;
    out += fmt::format("\n{}: [{}] {}", seq, fmt::join(kv.block_table(seq), " "), fmt::join(*kv.get(seq), " "));
  }
  return out;
}

TEST(AllocationFailure, KVCacheAttachIsAllOrNothing) {
  // The first 16 tokens are sequence 1's prompt: their pages are shared, with sequence 1's data.
  auto kv4 = entries(16, 0);
  const auto own = entries(6, 500);
  kv4.insert(kv4.end(), own.begin(), own.end());
  const long points = every_allocation_fails(
      busy_cache, [&](Cache& kv) { kv.attach(4, kv4, tokens(20)); }, cache_state,
      [&](const Cache& kv) { EXPECT_EQ(*kv.get(4), kv4); });
  EXPECT_GT(points, 0);
}

TEST(AllocationFailure, KVCacheAppendIsAllOrNothing) {
  const auto more = entries(9, 900);
  every_allocation_fails(
      busy_cache, [&](Cache& kv) { kv.append(3, more); }, cache_state,
      [&](const Cache& kv) { EXPECT_EQ(kv.num_tokens(3) % 9, 0u); });
}

TEST(AllocationFailure, KVCacheForkAndCachedPrefixAreAllOrNothing) {
  every_allocation_fails(busy_cache, [](Cache& kv) { kv.fork(1, 4); }, cache_state, nothing_more);
  every_allocation_fails(
      busy_cache, [](Cache& kv) { (void)kv.attach_cached_prefix(4, tokens(12)); }, cache_state, nothing_more);
}

TEST(AllocationFailure, KVCacheDetachAndDefragmentAreAllOrNothing) {
  every_allocation_fails(busy_cache, [](Cache& kv) { kv.detach(1); }, cache_state, nothing_more);
  every_allocation_fails(busy_cache, [](Cache& kv) { (void)kv.defragment(); }, cache_state, nothing_more);
}

// --- IndexedHeap and TokenLRU -------------------------------------------------------------------

TEST(AllocationFailure, IndexedHeapPushIsAllOrNothing) {
  using Heap = llmds::IndexedHeap<std::int64_t, double>;
  auto state = [](const Heap& h) {
    std::string out;
    for (const auto& e : h.sorted()) out += fmt::format("{}:{} ", e.key, e.score);
    return out;
  };
  // 100 entries leave room in the arrays; after 128 the next push must grow them.
  for (const std::int64_t n : {100, 128}) {
    auto make = [n] {
      auto h = std::make_unique<Heap>();
      for (std::int64_t i = 0; i < n; ++i) h->push(i, static_cast<double>((i * 37) % 101));
      return h;
    };
    every_allocation_fails(make, [](Heap& h) { h.push(1000, -1.0); }, state,
                           [](const Heap& h) { EXPECT_EQ(h.peek()->key, 1000); });
  }
}

TEST(AllocationFailure, TokenLRUPutIsAllOrNothing) {
  using LRU = llmds::TokenLRU<std::string, std::string>;
  auto make = [] {
    auto c = std::make_unique<LRU>(llmds::SizeTokens{}, 400);
    for (int i = 0; i < 40; ++i) c->put(fmt::format("key-{}", i), std::string(9, static_cast<char>('a' + i % 26)));
    return c;
  };
  auto state = [](const LRU& c) {
    std::string out = fmt::format("{} {} |", c.size(), c.total_tokens());
    c.for_each_oldest_first([&](const std::string& k, const std::string& v, auto) { out += k + "=" + v + " "; });
    return out;
  };
  // A put that evicts several older entries to fit.
  every_allocation_fails(make, [](LRU& c) { (void)c.put("big", std::string(50, 'z')); }, state, nothing_more);
  // A put that replaces an existing key.
  every_allocation_fails(make, [](LRU& c) { (void)c.put("key-39", std::string(20, 'y')); }, state, nothing_more);
}

// --- CountMinSketch -----------------------------------------------------------------------------

TEST(AllocationFailure, CountMinSketchAddIsAllOrNothing) {
  using Sketch = llmds::CountMinSketch;
  auto make = [] {
    auto s = std::make_unique<Sketch>(llmds::CountMinSketchConfig{.width = 64, .depth = 3, .top_k = 4});
    for (int i = 0; i < 200; ++i) s->add(fmt::format("item-{}", i % 23), 1 + i % 5);
    return s;
  };
  auto state = [](const Sketch& s) { return s.to_bytes(); };
  every_allocation_fails(make, [](Sketch& s) { s.add("a newcomer that becomes a heavy hitter", 500); }, state,
                         nothing_more);
}

// --- InvertedIndex ------------------------------------------------------------------------------

TEST(AllocationFailure, InvertedIndexAddAndRemoveAreAllOrNothing) {
  auto make = [] {
    auto index = std::make_unique<llmds::InvertedIndex>();
    for (std::int64_t d = 0; d < 60; ++d) {
      index->add_document(d, fmt::format("boundary layer flow {} heat transfer plate {} supersonic", d % 7, d % 11));
    }
    index->remove_document(5);
    return index;
  };
  auto state = [](const llmds::InvertedIndex& index) {
    std::string out = index.to_bytes();
    for (const auto& hit : index.search("heat flow 3 supersonic", 10)) out += fmt::format(" {}:{}", hit.doc_id, hit.score);
    return out;
  };
  every_allocation_fails(
      make, [](llmds::InvertedIndex& index) { index.add_document(100, "a new document about shock waves and heat 3"); },
      state, [](const llmds::InvertedIndex& index) { EXPECT_TRUE(index.contains(100)); });
  every_allocation_fails(make, [](llmds::InvertedIndex& index) { index.remove_document(7); }, state,
                         [](const llmds::InvertedIndex& index) { EXPECT_FALSE(index.contains(7)); });
}

// --- HNSW ---------------------------------------------------------------------------------------

TEST(AllocationFailure, HNSWAddIsAllOrNothing) {
  constexpr std::size_t dim = 8;
  auto vector_of = [](std::int64_t id) {
    std::vector<float> v(dim);
    for (std::size_t j = 0; j < dim; ++j) v[j] = static_cast<float>((id * 31 + static_cast<std::int64_t>(j) * 7) % 17);
    return v;
  };
  // initial_capacity 64 with 64 vectors: the next add must grow every array.
  auto make = [&] {
    auto h = std::make_unique<llmds::HNSW>(llmds::HNSWConfig{.dim = dim, .M = 4, .ef_construction = 16, .seed = 3,
                                                             .initial_capacity = 64});
    for (std::int64_t id = 0; id < 64; ++id) h->add(vector_of(id), id);
    h->mark_deleted(10);
    return h;
  };
  auto state = [&](const llmds::HNSW& h) {
    std::string out = h.to_bytes();
    for (const auto& r : h.search(vector_of(3), 5)) out += fmt::format(" {}:{}", r.id, r.distance);
    return out;
  };
  auto found = [&](std::int64_t id) {
    return [&, id](const llmds::HNSW& h) { EXPECT_TRUE(h.contains(id) && !h.is_deleted(id)); };
  };
  every_allocation_fails(make, [&](llmds::HNSW& h) { h.add(vector_of(100), 100); }, state, found(100));
  every_allocation_fails(make, [&](llmds::HNSW& h) { h.add(vector_of(101), 101, /*replace_deleted=*/true); }, state,
                         found(101));
}

}  // namespace
