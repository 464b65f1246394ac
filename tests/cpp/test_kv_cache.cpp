#include "llmds/kv/kv_cache.hpp"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <cstdint>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <string_view>
#include <vector>

#include <gtest/gtest.h>

#include "llmds/core/errors.hpp"

namespace {

using llmds::BlockId;
using llmds::KVCache;
using llmds::KVCacheConfig;
using llmds::TokenId;
using Floats = std::vector<float>;
using Tokens = std::vector<TokenId>;

KVCacheConfig small(std::size_t max_pages, std::size_t width = 1, bool sharing = true) {
  return KVCacheConfig{4, max_pages, width, sharing, {}};
}

// KV entries that depend only on the tokens so far, as a model's do: equal prefixes give equal
// entries, so sharing them is correct.
Floats entries_for(const Tokens& tokens, std::size_t width) {
  Floats out;
  std::uint64_t h = 1469598103934665603ull;
  for (const TokenId t : tokens) {
    h = (h ^ static_cast<std::uint64_t>(t)) * 1099511628211ull;
    for (std::size_t j = 0; j < width; ++j) out.push_back(static_cast<float>((h >> (j * 3)) % 100000));
  }
  return out;
}

Floats iota_floats(std::size_t n, float start) {
  Floats v(n);
  std::iota(v.begin(), v.end(), start);
  return v;
}

std::span<const std::byte> salt(std::string_view s) { return std::as_bytes(std::span(s.data(), s.size())); }

TEST(KVCache, DefaultsAreThePythonAPIs) {
  const KVCache<> cache;
  EXPECT_EQ(cache.config().page_size, 512u);
  EXPECT_EQ(cache.config().max_pages, 10000u);
  EXPECT_EQ(cache.config().entry_width, 1u);
  EXPECT_TRUE(cache.config().enable_prefix_sharing);
}

TEST(KVCache, StoresEntriesInPagesAndExportsTheBlockTable) {
  KVCache<> cache(small(8, 2));
  const Floats kv = iota_floats(2 * 6, 0.0f);  // 6 tokens of width 2: a full page and a half
  cache.attach(1, kv);
  EXPECT_EQ(cache.num_tokens(1), 6u);
  const auto table = cache.block_table(1);
  ASSERT_EQ(table.size(), 2u);
  const auto first = cache.page(table[0]);
  EXPECT_EQ(Floats(first.begin(), first.end()), Floats(kv.begin(), kv.begin() + 8));
  const auto second = cache.page(table[1]);
  EXPECT_EQ(Floats(second.begin(), second.begin() + 4), Floats(kv.begin() + 8, kv.end()));
  EXPECT_EQ(cache.get(1), kv);
}

TEST(KVCache, AttachSharesTheLongestCachedRunOfFullPages) {
  KVCache<> cache(small(16));
  const Tokens system = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};  // two full pages and two tokens
  Tokens a = system;
  a.insert(a.end(), {20, 21, 22});
  Tokens b = system;
  b.insert(b.end(), {30});
  cache.attach(1, entries_for(a, 1), a);
  cache.attach(2, entries_for(b, 1), b);
  const auto ta = cache.block_table(1);
  const auto tb = cache.block_table(2);
  EXPECT_EQ(ta[0], tb[0]);
  EXPECT_EQ(ta[1], tb[1]);
  EXPECT_NE(ta[2], tb[2]);  // the third page differs in its tokens
  const auto s = cache.stats();
  EXPECT_EQ(s.prefix_lookup_pages, 3u + 2u);
  EXPECT_EQ(s.prefix_hit_pages, 2u);
  EXPECT_EQ(s.shared_pages, 2u);
  EXPECT_EQ(s.logical_pages, 7u);
  EXPECT_EQ(s.used_pages, 5u);
  EXPECT_EQ(s.pages_saved, 2u);
  EXPECT_EQ(s.bytes_saved(), 2u * 4u * sizeof(float));
  EXPECT_EQ(cache.get(2), entries_for(b, 1));
}

TEST(KVCache, AnEngineTakesTheCachedPrefixComputesTheRestAndRegistersIt) {
  KVCache<> cache(small(16));
  const Tokens prompt = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  // Nothing cached yet: the sequence starts empty, the caller appends all it computes.
  EXPECT_EQ(cache.attach_cached_prefix(1, prompt), 0u);
  EXPECT_EQ(cache.pages_to_append(1, prompt.size()), 3u);
  cache.append(1, entries_for(prompt, 1));
  EXPECT_EQ(cache.register_prefix(1, prompt), 2u);  // two full pages
  EXPECT_EQ(cache.register_prefix(1, prompt), 0u);  // already registered
  // A second sequence with the same start takes those two pages and computes the rest.
  Tokens longer = prompt;
  longer.insert(longer.end(), {11, 12});
  EXPECT_EQ(cache.attach_cached_prefix(2, longer), 8u);
  EXPECT_EQ(cache.num_tokens(2), 8u);
  EXPECT_EQ(cache.block_table(2)[0], cache.block_table(1)[0]);
  const Floats all = entries_for(longer, 1);
  cache.append(2, Floats(all.begin() + 8, all.end()));
  EXPECT_EQ(cache.get(2), all);
  EXPECT_EQ(cache.stats().prefix_hit_pages, 2u);
  // A salt, or sharing turned off, finds nothing.
  EXPECT_EQ(cache.attach_cached_prefix(3, prompt, salt("other")), 0u);
  KVCache<> off(small(16, 1, false));
  off.attach(1, entries_for(prompt, 1), prompt);
  EXPECT_EQ(off.attach_cached_prefix(2, prompt), 0u);
  EXPECT_EQ(off.register_prefix(2, {}), 0u);
  // Errors change nothing.
  EXPECT_THROW(cache.attach_cached_prefix(1, prompt), std::invalid_argument);
  EXPECT_THROW(cache.register_prefix(9, prompt), llmds::KeyError);
  EXPECT_THROW(cache.register_prefix(3, prompt), std::invalid_argument);  // longer than sequence 3
  EXPECT_THROW((void)cache.pages_to_append(9, 1), llmds::KeyError);
  EXPECT_EQ(cache.available_pages(), 16u - 4u);  // 3 pages of sequence 1, 1 of its own for 2
}

TEST(KVCache, PagesToAppendCountsTheCopyOfASharedLastPage) {
  KVCache<> cache(small(16));
  cache.attach(1, iota_floats(6, 0));  // one full page and two tokens
  cache.fork(1, 2);
  EXPECT_EQ(cache.pages_to_append(2, 1), 1u);  // copy of the shared partial page
  EXPECT_EQ(cache.pages_to_append(2, 3), 2u);  // the copy and one new page
  EXPECT_EQ(cache.pages_to_append(2, 0), 0u);
}

TEST(KVCache, OnlyTheDeclaredPrefixIsShared) {
  KVCache<> cache(small(16));
  const Tokens t = {1, 2, 3, 4, 5, 6, 7, 8};
  cache.attach(1, entries_for(t, 1), t);
  // The same tokens, but only the first page declared shareable: one page is shared.
  cache.attach(2, entries_for(t, 1), Tokens(t.begin(), t.begin() + 5));
  EXPECT_EQ(cache.stats().shared_pages, 1u);
  // No prefix at all: nothing shared.
  cache.attach(3, entries_for(t, 1));
  EXPECT_EQ(cache.stats().shared_pages, 1u);
}

TEST(KVCache, DifferentSaltsNeverShare) {
  KVCache<> cache(small(16));
  const Tokens t = {1, 2, 3, 4, 5, 6, 7, 8};
  cache.attach(1, entries_for(t, 1), t, salt("tenant-a"));
  cache.attach(2, entries_for(t, 1), t, salt("tenant-b"));
  cache.attach(3, entries_for(t, 1), t);
  EXPECT_EQ(cache.stats().shared_pages, 0u);
  cache.attach(4, entries_for(t, 1), t, salt("tenant-a"));
  EXPECT_EQ(cache.stats().shared_pages, 2u);
  EXPECT_EQ(cache.block_table(4)[0], cache.block_table(1)[0]);
}

TEST(KVCache, SharingCanBeTurnedOff) {
  KVCache<> cache(small(16, 1, false));
  const Tokens t = {1, 2, 3, 4, 5, 6, 7, 8};
  cache.attach(1, entries_for(t, 1), t);
  cache.attach(2, entries_for(t, 1), t);
  EXPECT_EQ(cache.stats().shared_pages, 0u);
  cache.detach(1);
  EXPECT_EQ(cache.stats().cached_pages, 0u);  // nothing is registered, so nothing is cached
}

TEST(KVCache, GetReturnsADeepCopy) {
  KVCache<> cache(small(8));
  cache.attach(1, Floats{1, 2, 3});
  auto copy = cache.get(1);
  ASSERT_TRUE(copy.has_value());
  (*copy)[0] = 99;
  EXPECT_EQ(cache.get(1), (Floats{1, 2, 3}));
  EXPECT_FALSE(cache.get(2).has_value());
}

TEST(KVCache, AViewReadsEachTokensEntryInPlace) {
  KVCache<> cache(small(8, 2));
  const Floats kv = iota_floats(2 * 6, 0.0f);  // 6 tokens of width 2 over two pages of 4
  cache.attach(1, kv);
  const auto view = cache.view(1);
  EXPECT_EQ(view.page_size(), 4u);
  EXPECT_EQ(view.entry_width(), 2u);
  EXPECT_EQ(view.capacity(), 8u);  // two pages
  ASSERT_EQ(view.table().size(), 2u);
  EXPECT_EQ(view.table()[1], cache.block_table(1)[1]);
  for (std::size_t t = 0; t < 6; ++t) {
    EXPECT_EQ(view.row(t)[0], kv[2 * t]) << t;
    EXPECT_EQ(view.row(t)[1], kv[2 * t + 1]) << t;
  }
  // Rows of a page follow each other entry_width apart; a page starts where page() says.
  EXPECT_EQ(view.row(1), view.row(0) + 2);
  EXPECT_EQ(view.row(4), cache.page(cache.block_table(1)[1]).data());
  // A fork's view reads the same pages.
  cache.fork(1, 2);
  EXPECT_EQ(cache.view(2).row(5), view.row(5));
  EXPECT_THROW((void)cache.view(3), llmds::KeyError);
  EXPECT_EQ(llmds::KVView<float>().capacity(), 0u);
}

TEST(KVCache, ForkSharesPagesUntilFirstWrite) {
  KVCache<> cache(small(8));
  cache.attach(1, Floats{1, 2, 3, 4, 5, 6});  // a full page and a partial one
  cache.fork(1, 2);
  EXPECT_EQ(cache.stats().shared_pages, 2u);
  EXPECT_EQ(cache.stats().used_pages, 2u);
  const BlockId partial = cache.block_table(1)[1];

  cache.append(2, Floats{70});  // writes into the shared partial page: copied first
  EXPECT_EQ(cache.stats().cow_copies, 1u);
  EXPECT_EQ(cache.block_table(1)[1], partial);
  EXPECT_NE(cache.block_table(2)[1], partial);
  EXPECT_EQ(cache.block_table(1)[0], cache.block_table(2)[0]);  // the full page stays shared
  EXPECT_EQ(cache.get(1), (Floats{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(cache.get(2), (Floats{1, 2, 3, 4, 5, 6, 70}));

  cache.append(1, Floats{80, 81, 82});  // no longer shared: written in place, then a new page
  EXPECT_EQ(cache.stats().cow_copies, 1u);
  EXPECT_EQ(cache.block_table(1)[1], partial);
  EXPECT_EQ(cache.get(1), (Floats{1, 2, 3, 4, 5, 6, 80, 81, 82}));
  EXPECT_EQ(cache.get(2), (Floats{1, 2, 3, 4, 5, 6, 70}));
}

TEST(KVCache, AppendAtAPageBoundaryNeedsNoCopy) {
  KVCache<> cache(small(8));
  cache.attach(1, Floats{1, 2, 3, 4});
  cache.fork(1, 2);
  cache.append(1, Floats{5});
  EXPECT_EQ(cache.stats().cow_copies, 0u);
  EXPECT_EQ(cache.get(2), (Floats{1, 2, 3, 4}));
}

TEST(KVCache, DetachedHashedPagesStayCachedAndServeLaterRequests) {
  KVCache<> cache(small(8));
  const Tokens t = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  cache.attach(1, entries_for(t, 1), t);
  const auto pages = std::vector<BlockId>(cache.block_table(1).begin(), cache.block_table(1).end());
  cache.detach(1);
  auto s = cache.stats();
  EXPECT_EQ(s.cached_pages, 2u);  // the two full pages; the partial one was freed
  EXPECT_EQ(s.free_pages, 6u);
  EXPECT_EQ(cache.pool().eviction_order(), (std::vector<BlockId>{pages[1], pages[0]}));

  cache.attach(2, entries_for(t, 1), t);
  EXPECT_EQ(cache.block_table(2)[0], pages[0]);
  EXPECT_EQ(cache.block_table(2)[1], pages[1]);
  EXPECT_EQ(cache.get(2), entries_for(t, 1));
  EXPECT_EQ(cache.stats().cached_pages, 0u);
}

TEST(KVCache, CachedPagesAreEvictedBeforeAnAttachFails) {
  KVCache<> cache(small(3));
  const Tokens t = {1, 2, 3, 4, 5, 6, 7, 8};
  cache.attach(1, entries_for(t, 1), t);
  cache.detach(1);  // two cached pages, one free
  cache.attach(2, iota_floats(12, 0));  // needs all three
  EXPECT_EQ(cache.stats().evictions, 2u);
  EXPECT_FALSE(cache.pool().match_prefix(cache.block_hashes(t)));
}

// Every visible piece of state, to check that a failed call changed nothing.
struct Snapshot {
  std::map<std::int64_t, Floats> data;
  std::map<std::int64_t, std::vector<BlockId>> tables;
  std::vector<BlockId> eviction_order;
  std::size_t free_pages = 0, cached_pages = 0, used_pages = 0;
  std::uint64_t refs = 0, evictions = 0, lookups = 0, hits = 0, cow = 0;
  bool operator==(const Snapshot&) const = default;
};

Snapshot snapshot(const KVCache<>& cache, const std::set<std::int64_t>& ids) {
  Snapshot s;
  for (const auto id : ids) {
    if (!cache.contains(id)) continue;
    s.data[id] = *cache.get(id);
    const auto t = cache.block_table(id);
    s.tables[id] = std::vector<BlockId>(t.begin(), t.end());
  }
  s.eviction_order = cache.pool().eviction_order();
  const auto st = cache.stats();
  s.free_pages = st.free_pages;
  s.cached_pages = st.cached_pages;
  s.used_pages = st.used_pages;
  s.refs = st.total_refs;
  s.evictions = st.evictions;
  s.lookups = st.prefix_lookup_pages;
  s.hits = st.prefix_hit_pages;
  s.cow = st.cow_copies;
  return s;
}

TEST(KVCache, OutOfPagesChangesNothing) {
  KVCache<> cache(small(4));
  const Tokens t = {1, 2, 3, 4, 5, 6, 7, 8};
  cache.attach(1, entries_for(t, 1), t);
  cache.attach(2, Floats{1, 2});
  cache.detach(1);  // 2 cached, 1 in use, 1 free
  cache.fork(2, 3);
  const std::set<std::int64_t> ids = {1, 2, 3, 4};
  const auto before = snapshot(cache, ids);
  // 5 pages of which the first two would be shared hits: 3 new, only 1 free + 0 evictable left
  // once the hits are taken.
  Tokens longer = t;
  for (int i = 0; i < 12; ++i) longer.push_back(100 + i);
  EXPECT_THROW(cache.attach(4, entries_for(longer, 1), longer), llmds::OutOfPages);
  EXPECT_EQ(snapshot(cache, ids), before);
  EXPECT_THROW(cache.append(2, iota_floats(15, 0)), llmds::OutOfPages);  // COW + 4 new pages
  EXPECT_EQ(snapshot(cache, ids), before);
  cache.append(2, iota_floats(2, 0));  // fits: the copy-on-write page
  EXPECT_EQ(cache.stats().cow_copies, 1u);
}

TEST(KVCache, BadArgumentsThrowAndChangeNothing) {
  KVCache<> cache(small(8, 2));
  cache.attach(1, iota_floats(6, 0));
  const std::set<std::int64_t> ids = {1, 2};
  const auto before = snapshot(cache, ids);
  EXPECT_THROW(cache.attach(1, iota_floats(2, 0)), std::invalid_argument);  // duplicate
  EXPECT_THROW(cache.attach(2, iota_floats(3, 0)), std::invalid_argument);  // width 2
  EXPECT_THROW(cache.attach(2, iota_floats(4, 0), Tokens{1, 2, 3}), std::invalid_argument);
  EXPECT_THROW(cache.append(1, iota_floats(3, 0)), std::invalid_argument);
  EXPECT_THROW(cache.append(2, iota_floats(2, 0)), llmds::KeyError);
  EXPECT_THROW(cache.fork(2, 3), llmds::KeyError);
  EXPECT_THROW(cache.fork(1, 1), std::invalid_argument);
  EXPECT_THROW(cache.detach(2), llmds::KeyError);
  EXPECT_THROW((void)cache.num_tokens(2), llmds::KeyError);
  EXPECT_THROW((void)cache.block_table(2), llmds::KeyError);
  EXPECT_THROW((void)cache.page(8), std::out_of_range);
  EXPECT_THROW((void)cache.page(-1), std::out_of_range);
  EXPECT_EQ(snapshot(cache, ids), before);
  EXPECT_FALSE(cache.contains(2));
  EXPECT_THROW(KVCache<>(KVCacheConfig{0, 8, 1, true, {}}), std::invalid_argument);
  EXPECT_THROW(KVCache<>(KVCacheConfig{4, 0, 1, true, {}}), std::invalid_argument);
  EXPECT_THROW(KVCache<>(KVCacheConfig{4, 8, 0, true, {}}), std::invalid_argument);
  EXPECT_THROW(KVCache<>(KVCacheConfig{1u << 30, 1u << 30, 1u << 30, true, {}}), std::invalid_argument);
}

TEST(KVCache, DefragmentMovesDataAndRewritesTables) {
  KVCache<> cache(small(8));
  const Tokens t = {1, 2, 3, 4, 5, 6, 7, 8};
  cache.attach(1, iota_floats(8, 0));
  cache.attach(2, entries_for(t, 1), t);
  cache.attach(3, iota_floats(5, 100));
  cache.detach(1);  // frees pages 0 and 1
  cache.detach(2);  // pages 2 and 3 stay cached
  const auto moves = cache.defragment();
  EXPECT_FALSE(moves.empty());
  EXPECT_EQ(cache.get(3), iota_floats(5, 100));
  for (const BlockId b : cache.block_table(3)) EXPECT_LT(b, 4);
  EXPECT_EQ(cache.stats().cached_pages, 2u);
  cache.attach(4, entries_for(t, 1), t);  // the cached pages moved with their hashes
  EXPECT_EQ(cache.stats().prefix_hit_pages, 2u);
  EXPECT_EQ(cache.get(4), entries_for(t, 1));
  EXPECT_LT(cache.block_table(4)[0], 4);
}

TEST(KVCache, StoresHalfPrecisionEntries) {
  KVCache<llmds::Float16> cache(small(4, 2));
  const std::vector<llmds::Float16> kv = {llmds::Float16(1.5f), llmds::Float16(-2.0f),
                                          llmds::Float16(65504.0f), llmds::Float16(0.1f)};
  cache.attach(1, kv);
  EXPECT_EQ(cache.get(1), kv);
  EXPECT_EQ(cache.stats().bytes_per_page, 4u * 2u * 2u);
}

// Random attach / fork / append / detach sequences checked against a naive model that keeps
// each sequence's entries in a vector. Prefixes come from a few shared "system prompts", so
// sharing, caching, eviction and copy-on-write all happen, and the pool is small enough that
// running out of pages does too.
TEST(KVCache, RandomisedOperationsMatchANaiveModel) {
  constexpr std::size_t kWidth = 3;
  KVCache<> cache(KVCacheConfig{4, 24, kWidth, true, {}});
  std::map<std::int64_t, Floats> model;
  std::set<std::int64_t> ids_seen;
  std::mt19937 rng(2024);
  auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  std::vector<Tokens> prompts;
  for (int p = 0; p < 4; ++p) {
    Tokens t;
    for (int i = 0; i < 4 * (p + 1) + p; ++i) t.push_back(uniform(0, 50));
    prompts.push_back(t);
  }
  std::int64_t next_id = 0;
  std::size_t failures = 0, shared_attaches = 0;
  for (int step = 0; step < 6000; ++step) {
    const int op = uniform(0, 9);
    if (op <= 3) {  // attach, usually with a prompt prefix and a salt
      Tokens tokens = prompts[static_cast<std::size_t>(uniform(0, 3))];
      tokens.resize(static_cast<std::size_t>(uniform(0, static_cast<int>(tokens.size()))));
      const std::size_t prefix_len = tokens.size();
      for (int i = uniform(0, 9); i > 0; --i) tokens.push_back(uniform(0, 50));
      Floats kv = entries_for(tokens, kWidth);
      const std::string_view s = uniform(0, 3) == 0 ? "other-tenant" : "";
      const auto id = next_id++;
      const auto before = snapshot(cache, ids_seen);
      ids_seen.insert(id);
      try {
        const auto hits_before = cache.stats().prefix_hit_pages;
        cache.attach(id, kv, std::span(tokens).first(prefix_len), salt(s));
        model[id] = kv;
        shared_attaches += cache.stats().prefix_hit_pages > hits_before ? 1 : 0;
      } catch (const llmds::OutOfPages&) {
        ++failures;
        ASSERT_EQ(snapshot(cache, ids_seen), before);
      }
    } else if (op <= 5 && !model.empty()) {  // append
      auto it = model.begin();
      std::advance(it, uniform(0, static_cast<int>(model.size()) - 1));
      Floats kv;
      for (int i = uniform(0, 6) * static_cast<int>(kWidth); i > 0; --i) {
        kv.push_back(static_cast<float>(uniform(-1000, 1000)));
      }
      const auto before = snapshot(cache, ids_seen);
      try {
        cache.append(it->first, kv);
        it->second.insert(it->second.end(), kv.begin(), kv.end());
      } catch (const llmds::OutOfPages&) {
        ++failures;
        ASSERT_EQ(snapshot(cache, ids_seen), before);
      }
    } else if (op == 6 && !model.empty()) {  // fork
      auto it = model.begin();
      std::advance(it, uniform(0, static_cast<int>(model.size()) - 1));
      const auto id = next_id++;
      ids_seen.insert(id);
      cache.fork(it->first, id);
      model[id] = it->second;
    } else if (!model.empty()) {  // detach
      auto it = model.begin();
      std::advance(it, uniform(0, static_cast<int>(model.size()) - 1));
      cache.detach(it->first);
      model.erase(it);
    }
    if (step % 500 == 250) cache.defragment();

    ASSERT_EQ(cache.num_sequences(), model.size());
    std::size_t logical = 0;
    for (const auto& [id, kv] : model) {
      ASSERT_EQ(cache.get(id), kv) << "sequence " << id << " at step " << step;
      ASSERT_EQ(cache.num_tokens(id), kv.size() / kWidth);
      const auto view = cache.view(id);  // what a model reads, in place
      for (std::size_t t = 0; t < kv.size() / kWidth; ++t) {
        ASSERT_TRUE(std::equal(view.row(t), view.row(t) + kWidth, kv.begin() + static_cast<std::ptrdiff_t>(t * kWidth)))
            << "sequence " << id << " token " << t << " at step " << step;
      }
      logical += cache.block_table(id).size();
    }
    const auto st = cache.stats();
    ASSERT_EQ(st.total_refs, logical);
    ASSERT_EQ(st.free_pages + st.cached_pages + st.used_pages, st.total_pages);
    ASSERT_LE(st.used_pages, logical);
  }
  // The run must have exercised what it is meant to test.
  const auto st = cache.stats();
  EXPECT_GT(failures, 10u);
  EXPECT_GT(shared_attaches, 100u);
  EXPECT_GT(st.cow_copies, 50u);
  EXPECT_GT(st.evictions, 50u);
}

}  // namespace

// ---- Tiers below the arena ---------------------------------------------------------------

namespace {

// A sequence's tokens and KV entries as functions of its conversation and position, so that
// equal prefixes have equal entries (as a model's would) and any misplaced page shows.
Tokens conversation_tokens(int conv, std::size_t n) {
  Tokens t(n);
  for (std::size_t i = 0; i < n; ++i) t[i] = static_cast<TokenId>(conv * 1000 + static_cast<int>(i));
  return t;
}
Floats conversation_kv(int conv, std::size_t n, std::size_t width) {
  Floats kv(n * width);
  for (std::size_t i = 0; i < kv.size(); ++i) kv[i] = static_cast<float>(conv) * 10000.0f + static_cast<float>(i);
  return kv;
}

struct TieredCache {
  std::filesystem::path dir;
  KVCacheConfig config;
  explicit TieredCache(const std::string& name) {
    dir = std::filesystem::temp_directory_path() / ("llmds-kvcache-tiers-" + std::to_string(::getpid()) + name);
    std::filesystem::remove_all(dir);
    config.page_size = 4;
    config.max_pages = 12;
    config.entry_width = 3;
    config.tiers.host_pages = 6;
    config.tiers.disk_pages = 64;
    config.tiers.disk_directory = dir;
  }
  ~TieredCache() { std::filesystem::remove_all(dir); }
};

}  // namespace

// Random conversations through an arena of 12 pages over host and disk: every page that comes
// back carries its entries. reclaim_pages: the reclaimer's reserve (0: none).
void pages_come_back_with_their_entries(std::size_t reclaim_pages) {
  TieredCache t("-entries" + std::to_string(reclaim_pages));
  t.config.tiers.reclaim_pages = reclaim_pages;
  KVCache<float> cache(t.config);
  std::mt19937 rng(3);
  std::size_t from_host = 0, from_disk = 0, seq = 0;
  for (int step = 0; step < 400; ++step) {
    const int conv = static_cast<int>(rng() % 6);
    const std::size_t n = 4 + rng() % 28;  // up to 8 pages of the arena's 12
    const Tokens tokens = conversation_tokens(conv, n);
    const Floats kv = conversation_kv(conv, n, 3);
    ++seq;
    if (rng() % 2 == 0) {
      cache.attach(static_cast<llmds::SeqId>(seq), kv, tokens);
    } else {  // as the engine does: the cached prefix, then the rest computed and registered
      llmds::PrefixSource source;
      const std::size_t have = cache.attach_cached_prefix(static_cast<llmds::SeqId>(seq), tokens, {}, &source);
      ASSERT_EQ(have, (source.primary_pages + source.host_pages + source.disk_pages) * 4);
      from_host += source.host_pages;
      from_disk += source.disk_pages;
      const auto got = cache.get(static_cast<llmds::SeqId>(seq));
      ASSERT_TRUE(std::equal(got->begin(), got->end(), kv.begin())) << "step " << step;
      cache.append(static_cast<llmds::SeqId>(seq), std::span(kv).subspan(have * 3));
      cache.register_prefix(static_cast<llmds::SeqId>(seq), tokens);
    }
    ASSERT_EQ(cache.get(static_cast<llmds::SeqId>(seq)), kv) << "step " << step;
    cache.detach(static_cast<llmds::SeqId>(seq));
  }
  EXPECT_GT(from_host, 0u);
  EXPECT_GT(from_disk, 0u);
  ASSERT_NE(cache.tiers(), nullptr);
  const auto stats = cache.tiers()->stats();
  EXPECT_GT(stats[1].onboarded_blocks, 0u);
  EXPECT_GT(stats[2].onboarded_blocks, 0u);
  EXPECT_THROW(cache.defragment(), std::logic_error);
  EXPECT_EQ(cache.stats().used_pages, 0u);
  if (reclaim_pages == 0) return;
  // Once idle, the reclaimer has left at least half of reclaim_pages free (nothing is in use, so
  // every other page is cached); a sequence that takes all of them sets it to work again, and
  // it stops with reclaim_pages free.
  cache.tiers()->flush();
  const std::size_t free = cache.stats().free_pages;
  ASSERT_GE(free, (reclaim_pages + 1) / 2);
  const std::uint64_t before = cache.tiers()->stats()[0].reclaimed_blocks;
  cache.attach(999, conversation_kv(99, free * 4, 3), conversation_tokens(99, free * 4));
  cache.tiers()->flush();
  EXPECT_GE(cache.tiers()->stats()[0].reclaimed_blocks, before + 1);
  EXPECT_EQ(cache.stats().free_pages, reclaim_pages);
  cache.detach(999);
}

TEST(KVCacheTiers, PagesComeBackFromHostAndDiskWithTheirEntries) { pages_come_back_with_their_entries(0); }

// The same with the reclaimer moving arena pages to host on its own thread all along (run
// under ThreadSanitizer in CI): the pages it copies are never ones a sequence writes.
TEST(KVCacheTiers, PagesComeBackWithTheirEntriesWithTheReclaimerRunning) { pages_come_back_with_their_entries(2); }

TEST(KVCacheTiers, APrefetchBringsThePagesUpBeforeTheAttach) {
  TieredCache t("-prefetch");
  KVCache<float> cache(t.config);
  // Conversation 0's eight pages, then enough others to push them down to host and disk.
  const Tokens tokens = conversation_tokens(0, 32);
  const Floats kv = conversation_kv(0, 32, 3);
  cache.attach(1, kv, tokens);
  cache.detach(1);
  for (int conv = 1; conv <= 3; ++conv) {
    cache.attach(static_cast<llmds::SeqId>(10 + conv), conversation_kv(conv, 32, 3), conversation_tokens(conv, 32));
    cache.detach(static_cast<llmds::SeqId>(10 + conv));
  }
  auto fetch = cache.prefetch_cached_prefix(tokens);
  ASSERT_TRUE(fetch.pending());
  llmds::PrefixSource source;
  const std::size_t have = cache.attach_cached_prefix(2, tokens, {}, &source, &fetch);
  EXPECT_FALSE(fetch.pending());
  EXPECT_EQ(have, 32u);
  EXPECT_EQ(source.primary_pages, 0u);  // every page came up from below, as the prefetch found it
  EXPECT_EQ(source.host_pages + source.disk_pages, 8u);
  EXPECT_GT(source.disk_pages, 0u);
  EXPECT_EQ(cache.get(2), kv);
  cache.detach(2);
  EXPECT_EQ(cache.stats().used_pages, 0u);  // the fetch's own references were given back

  // Dropped without an attach: nothing held, the pages stay cached in the arena.
  for (int conv = 1; conv <= 3; ++conv) {
    cache.attach(static_cast<llmds::SeqId>(20 + conv), conversation_kv(conv, 32, 3), conversation_tokens(conv, 32));
    cache.detach(static_cast<llmds::SeqId>(20 + conv));
  }
  auto dropped = cache.prefetch_cached_prefix(tokens);
  ASSERT_TRUE(dropped.pending());
  cache.drop_prefetch(dropped);
  EXPECT_FALSE(dropped.pending());
  EXPECT_EQ(cache.stats().used_pages, 0u);
  EXPECT_EQ(cache.attach_cached_prefix(3, tokens, {}, &source), 32u);
  EXPECT_EQ(source.primary_pages, 8u);
  cache.detach(3);

  // Nothing to fetch: an arena hit, another salt, a cache without tiers.
  EXPECT_FALSE(cache.prefetch_cached_prefix(tokens).pending());
  const std::byte salt[] = {std::byte{1}};
  EXPECT_FALSE(cache.prefetch_cached_prefix(tokens, salt).pending());
  KVCache<float> plain;
  auto none = plain.prefetch_cached_prefix(tokens);
  EXPECT_TRUE(none.ready());
  EXPECT_FALSE(none.pending());
  plain.drop_prefetch(none);
}

TEST(KVCacheTiers, ATieredCacheRefusesWhatItCannotDo) {
  KVCacheConfig c;
  c.tiers.disk_pages = 10;  // no directory
  EXPECT_THROW(KVCache<float>{c}, std::invalid_argument);
  c.tiers.disk_pages = 0;
  c.tiers.host_pages = 4;
  c.enable_prefix_sharing = false;
  EXPECT_THROW(KVCache<float>{c}, std::invalid_argument);
  KVCache<float> plain;
  EXPECT_EQ(plain.tiers(), nullptr);
}
