#include "llmds/kv/block_pool.hpp"

#include <algorithm>
#include <cstdint>
#include <deque>
#include <map>
#include <random>
#include <set>
#include <vector>

#include <gtest/gtest.h>

#include "llmds/core/errors.hpp"
#include "llmds/kv/detail/block_registry.hpp"

namespace {

using llmds::BlockId;
using Pool = llmds::BlockPool<std::int64_t>;
using Ids = std::vector<BlockId>;

TEST(BlockPool, ReleasedRegisteredBlocksStayCachedAndAreFoundAgain) {
  Pool pool(8);
  const auto blocks = pool.allocate(3);
  EXPECT_TRUE(pool.register_block(blocks[0], 100));
  EXPECT_TRUE(pool.register_block(blocks[1], 101));
  pool.release(Ids{blocks[2], blocks[1], blocks[0]});
  EXPECT_EQ(pool.cached_blocks(), 2u);
  EXPECT_EQ(pool.free_blocks(), 6u);  // the unregistered block went back to the free list
  EXPECT_TRUE(pool.is_cached(blocks[0]));
  EXPECT_TRUE(pool.is_free(blocks[2]));

  const std::vector<std::int64_t> keys = {100, 101, 102};
  Ids found;
  EXPECT_EQ(pool.match_prefix(keys, &found), 2u);
  EXPECT_EQ(found, (Ids{blocks[0], blocks[1]}));
  pool.touch(found);
  EXPECT_EQ(pool.cached_blocks(), 0u);
  EXPECT_EQ(pool.refcount(blocks[0]), 1u);
  EXPECT_EQ(*pool.key_of(blocks[1]), 101);
}

TEST(BlockPool, MatchStopsAtTheFirstMiss) {
  Pool pool(4);
  const auto b = pool.allocate(2);
  pool.register_block(b[0], 1);
  pool.register_block(b[1], 3);
  const std::vector<std::int64_t> keys = {1, 2, 3};
  EXPECT_EQ(pool.match_prefix(keys), 1u);
}

TEST(BlockPool, FreeBlocksAreUsedBeforeAnyCachedBlockIsEvicted) {
  Pool pool(4);
  const auto a = pool.allocate(2);
  pool.register_block(a[0], 1);
  pool.register_block(a[1], 2);
  pool.release(Ids{a[1], a[0]});
  const auto b = pool.allocate(2);  // the two free blocks
  EXPECT_EQ(pool.evictions(), 0u);
  EXPECT_EQ(pool.cached_blocks(), 2u);
  EXPECT_TRUE(std::none_of(b.begin(), b.end(), [&](BlockId x) { return x == a[0] || x == a[1]; }));
}

TEST(BlockPool, EvictsTheLeastRecentlyReleasedFirst) {
  Pool pool(3);
  const auto a = pool.allocate(3);
  for (int i = 0; i < 3; ++i) pool.register_block(a[static_cast<std::size_t>(i)], i);
  pool.release(Ids{a[2], a[1], a[0]});  // tail first: a[2] is the oldest
  EXPECT_EQ(pool.eviction_order(), (Ids{a[2], a[1], a[0]}));
  pool.touch(Ids{a[1]});  // back in use, out of the list
  pool.release(Ids{a[1]});  // now the most recent
  EXPECT_EQ(pool.eviction_order(), (Ids{a[2], a[0], a[1]}));
  EXPECT_EQ(pool.allocate(2), (Ids{a[2], a[0]}));
  EXPECT_EQ(pool.evictions(), 2u);
  EXPECT_FALSE(pool.find(2).has_value());  // evicted keys leave the registry
  EXPECT_FALSE(pool.find(0).has_value());
  EXPECT_EQ(pool.find(1), a[1]);
}

TEST(BlockPool, TakingTheNextEvictionsKeepsThemRegisteredUntilRemoved) {
  Pool pool(4);
  const auto a = pool.allocate(4);
  for (int i = 0; i < 3; ++i) pool.register_block(a[static_cast<std::size_t>(i)], i);
  pool.release(Ids{a[2], a[1], a[0]});  // cached, a[2] next to go; a[3] stays in use
  Ids taken;
  EXPECT_EQ(pool.take_next_evictions(2, taken), 2u);
  EXPECT_EQ(taken, (Ids{a[2], a[1]}));
  EXPECT_EQ(pool.eviction_order(), (Ids{a[0]}));
  EXPECT_EQ(pool.refcount(a[2]), 1u);
  EXPECT_EQ(pool.find(2), a[2]);  // still found: a match may take it
  EXPECT_EQ(pool.in_use_blocks(), 3u);
  pool.touch(Ids{a[1]});           // taken by a match meanwhile
  pool.release(taken);
  EXPECT_TRUE(pool.remove_cached(2));
  EXPECT_FALSE(pool.remove_cached(1));  // in use: stays
  EXPECT_EQ(pool.free_blocks(), 1u);
  EXPECT_EQ(pool.take_next_evictions(5, taken), 1u);  // only a[0] is left cached
  EXPECT_EQ(taken.back(), a[0]);
}

TEST(BlockPool, AllocationIsAllOrNothing) {
  Pool pool(3);
  const auto a = pool.allocate(2);
  pool.register_block(a[0], 7);
  pool.release(Ids{a[0]});
  EXPECT_FALSE(pool.try_allocate(3).has_value());  // 1 free + 1 cached
  EXPECT_THROW((void)pool.allocate(3), llmds::OutOfPages);
  EXPECT_EQ(pool.free_blocks(), 1u);
  EXPECT_EQ(pool.cached_blocks(), 1u);
  EXPECT_EQ(pool.find(7), a[0]);
}

TEST(BlockPool, SharedBlocksNeedEveryReferenceReleased) {
  Pool pool(2);
  const auto a = pool.allocate(1);
  pool.register_block(a[0], 5);
  pool.touch(a);
  pool.touch(a);
  EXPECT_EQ(pool.refcount(a[0]), 3u);
  EXPECT_EQ(pool.stats().shared_blocks, 1u);
  pool.release(Ids{a[0], a[0]});
  EXPECT_FALSE(pool.is_cached(a[0]));
  pool.release(a);
  EXPECT_TRUE(pool.is_cached(a[0]));
}

TEST(BlockPool, BadCallsThrowAndChangeNothing) {
  Pool pool(4);
  const auto a = pool.allocate(2);
  // Releasing more often than held: the valid first entry must not stay released.
  EXPECT_THROW(pool.release(Ids{a[0], a[0]}), std::invalid_argument);
  EXPECT_EQ(pool.refcount(a[0]), 1u);
  EXPECT_THROW(pool.release(Ids{a[1], 3}), std::invalid_argument);  // 3 is free
  EXPECT_EQ(pool.refcount(a[1]), 1u);
  EXPECT_THROW(pool.release(Ids{-1}), std::invalid_argument);
  EXPECT_THROW(pool.touch(Ids{a[0], 3}), std::invalid_argument);
  EXPECT_EQ(pool.refcount(a[0]), 1u);
  EXPECT_THROW(pool.touch(Ids{9}), std::out_of_range);
  EXPECT_THROW((void)pool.refcount(4), std::out_of_range);
  EXPECT_THROW(pool.register_block(3, 1), std::invalid_argument);  // not in use
  EXPECT_TRUE(pool.register_block(a[0], 1));
  EXPECT_TRUE(pool.register_block(a[0], 1));  // the same key again is a no-op
  EXPECT_THROW(pool.register_block(a[0], 2), std::invalid_argument);
  EXPECT_FALSE(pool.register_block(a[1], 1));  // the key belongs to a[0]
  EXPECT_EQ(pool.key_of(a[1]), nullptr);
  EXPECT_THROW(Pool(0), std::invalid_argument);
}

TEST(BlockPool, DefragmentMovesStateWithTheBlocks) {
  Pool pool(6);
  const auto a = pool.allocate(6);
  for (int i = 0; i < 6; ++i) pool.register_block(a[static_cast<std::size_t>(i)], 10 + i);
  pool.touch(Ids{a[5]});
  pool.release(Ids{a[1], a[3]});  // cached, in this order
  pool.release(Ids{a[5]});        // refcount 2 -> 1
  const auto moves = pool.defragment();
  EXPECT_TRUE(moves.empty());  // nothing is free, nothing moves
  pool.release(Ids{a[0]});
  pool.release(Ids{a[2]});
  // Evict the two oldest cached blocks (a[1], a[3]) into use, then free them unkeyed.
  const auto b = pool.allocate(2);
  EXPECT_EQ(b, (Ids{a[1], a[3]}));
  pool.release(b);
  EXPECT_EQ(pool.free_blocks(), 2u);
  // Now: 0 cached(key 10), 1 free, 2 cached(key 12), 3 free, 4 in use(key 14), 5 in use x1 (15).
  const auto m = pool.defragment();
  EXPECT_EQ(m, (std::vector<std::pair<BlockId, BlockId>>{{2, 1}, {4, 2}, {5, 3}}));
  EXPECT_EQ(pool.find(10), 0);
  EXPECT_EQ(pool.find(12), 1);
  EXPECT_EQ(pool.find(14), 2);
  EXPECT_EQ(pool.find(15), 3);
  EXPECT_EQ(pool.refcount(2), 1u);
  EXPECT_EQ(pool.eviction_order(), (Ids{0, 1}));
  EXPECT_TRUE(pool.is_free(4));
  EXPECT_TRUE(pool.is_free(5));
  EXPECT_EQ(pool.allocate(2), (Ids{4, 5}));
}

// A naive model: per block a refcount, a key, and a list (not a linked list) for the cached
// order; every state is checked against the pool after each step.
TEST(BlockPool, RandomisedOperationsMatchANaiveModel) {
  constexpr std::size_t kBlocks = 24;
  Pool pool(kBlocks);
  std::map<BlockId, std::uint32_t> refs;  // in use
  std::map<BlockId, std::int64_t> keys;
  std::deque<BlockId> cached;
  std::set<BlockId> free_set;
  for (BlockId b = 0; b < static_cast<BlockId>(kBlocks); ++b) free_set.insert(b);
  std::mt19937 rng(11);
  auto pick = [&](auto& container) {
    auto it = container.begin();
    std::advance(it, std::uniform_int_distribution<std::size_t>(0, container.size() - 1)(rng));
    return it;
  };
  std::int64_t next_key = 0;
  for (int step = 0; step < 20000; ++step) {
    const int op = std::uniform_int_distribution<int>(0, 4)(rng);
    if (op == 0) {
      const std::size_t n = std::uniform_int_distribution<std::size_t>(0, 6)(rng);
      const auto got = pool.try_allocate(n);
      ASSERT_EQ(got.has_value(), n <= free_set.size() + cached.size());
      if (!got) continue;
      std::size_t from_free = std::min(n, free_set.size());
      for (std::size_t i = 0; i < n; ++i) {
        const BlockId b = (*got)[i];
        if (i < from_free) {
          ASSERT_EQ(free_set.erase(b), 1u);
        } else {
          ASSERT_EQ(b, cached.front());
          cached.pop_front();
          keys.erase(b);
        }
        refs[b] = 1;
      }
    } else if (op == 1 && !refs.empty()) {
      const BlockId b = pick(refs)->first;
      const std::int64_t key = next_key++ % 40;  // collisions with live keys happen
      const bool taken = std::any_of(keys.begin(), keys.end(), [&](auto& kv) { return kv.second == key; });
      if (keys.contains(b)) continue;
      ASSERT_EQ(pool.register_block(b, key), !taken);
      if (!taken) keys[b] = key;
    } else if (op == 2 && !refs.empty()) {
      const BlockId b = pick(refs)->first;
      pool.release(Ids{b});
      if (--refs[b] == 0) {
        refs.erase(b);
        if (keys.contains(b)) {
          cached.push_back(b);
        } else {
          free_set.insert(b);
        }
      }
    } else if (op == 3 && !cached.empty()) {
      const auto it = pick(cached);
      const BlockId b = *it;
      pool.touch(Ids{b});
      cached.erase(it);
      refs[b] = 1;
    } else if (op == 4 && !refs.empty()) {
      const BlockId b = pick(refs)->first;
      pool.touch(Ids{b});
      ++refs[b];
    }
    ASSERT_EQ(pool.free_blocks(), free_set.size());
    ASSERT_EQ(pool.cached_blocks(), cached.size());
    ASSERT_EQ(pool.in_use_blocks(), refs.size());
    ASSERT_EQ(pool.eviction_order(), Ids(cached.begin(), cached.end()));
    for (const auto& [b, r] : refs) ASSERT_EQ(pool.refcount(b), r);
    for (const auto& [b, k] : keys) ASSERT_EQ(pool.find(k), b);
  }
}

}  // namespace

// ---- The registry under the pool -----------------------------------------------------------

namespace {

// Against std::unordered_map, with keys that collide on purpose (multiples of a large power of
// two, and runs of sequential ids) and the churn of a cache: insert, erase, insert again.
TEST(BlockRegistry, MatchesAHashMapUnderChurn) {
  for (const std::int64_t stride : {std::int64_t{1}, std::int64_t{1} << 20, std::int64_t{1} << 40}) {
    constexpr std::size_t kMax = 300;
    llmds::detail::BlockRegistry<std::int64_t, std::hash<std::int64_t>, std::equal_to<>> registry(kMax);
    std::map<std::int64_t, BlockId> model;
    std::mt19937_64 rng(static_cast<std::uint64_t>(stride));
    for (int step = 0; step < 20000; ++step) {
      const std::int64_t key = static_cast<std::int64_t>(rng() % 600) * stride;
      if (rng() % 2 == 0 && model.size() < kMax) {
        const auto block = static_cast<BlockId>(rng() % 1000);
        const auto [holder, inserted] = registry.try_emplace(key, block);
        const auto [it, model_inserted] = model.try_emplace(key, block);
        ASSERT_EQ(inserted, model_inserted);
        ASSERT_EQ(holder, it->second);
      } else {
        ASSERT_EQ(registry.erase(key), model.erase(key) == 1);
      }
      ASSERT_EQ(registry.size(), model.size());
      const std::int64_t probe = static_cast<std::int64_t>(rng() % 600) * stride;
      const auto it = model.find(probe);
      ASSERT_EQ(registry.find(probe), it == model.end() ? -1 : it->second) << "step " << step;
    }
    std::map<std::int64_t, BlockId> listed;
    registry.for_each([&](std::int64_t k, BlockId b) { listed.emplace(k, b); });
    EXPECT_EQ(listed, model);
    registry.remap_blocks([](BlockId b) { return b + 1; });
    for (const auto& [k, b] : model) EXPECT_EQ(registry.find(k), b + 1);
  }
}

}  // namespace
