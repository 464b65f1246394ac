#include "llmds/kv/eviction_policy.hpp"

#include <algorithm>
#include <cstdint>
#include <list>
#include <random>
#include <stdexcept>
#include <vector>

#include <gtest/gtest.h>

#include "llmds/kv/block_pool.hpp"

namespace {

using llmds::BlockId;
using llmds::RetentionPriority;
using Ids = std::vector<BlockId>;

// The naive model of both policies: a list in insertion order, and the victim is the first
// entry of the lowest priority.
struct NaiveOrder {
  std::list<BlockId> entries;
  std::vector<RetentionPriority> priority;

  explicit NaiveOrder(std::size_t n) : priority(n, llmds::kDefaultRetentionPriority) {}
  bool listed(BlockId b) const { return std::find(entries.begin(), entries.end(), b) != entries.end(); }
  Ids order() const {
    Ids out;
    for (int p = 0; p <= llmds::kMaxRetentionPriority; ++p) {
      for (const BlockId b : entries) {
        if (priority[static_cast<std::size_t>(b)] == p) out.push_back(b);
      }
    }
    return out;
  }
};

template <class Policy>
void run_against_model(std::uint32_t seed, bool use_priorities) {
  constexpr std::size_t kBlocks = 40;
  Policy policy(kBlocks);
  NaiveOrder model(kBlocks);
  std::mt19937 rng(seed);
  for (int step = 0; step < 4000; ++step) {
    const auto b = static_cast<BlockId>(rng() % kBlocks);
    switch (rng() % 4) {
      case 0:
        if (!model.listed(b)) {
          policy.insert(b);
          model.entries.push_back(b);
        }
        break;
      case 1:
        if (model.listed(b)) {
          policy.erase(b);
          model.entries.remove(b);
        }
        break;
      case 2:
        if (!model.entries.empty()) {
          const BlockId expected = model.order().front();
          ASSERT_EQ(policy.pop(), expected) << "step " << step;
          model.entries.remove(expected);
        }
        break;
      case 3:
        if (use_priorities) {
          const auto p = static_cast<RetentionPriority>(rng() % 4 == 0 ? rng() % 101 : 30 + rng() % 10);
          policy.set_priority(b, p);
          model.priority[static_cast<std::size_t>(b)] = p;
          if (model.listed(b)) {  // re-filed at the back of its new priority
            model.entries.remove(b);
            model.entries.push_back(b);
          }
        }
        break;
    }
    ASSERT_EQ(policy.size(), model.entries.size());
    if (step % 50 == 0) {
      ASSERT_EQ(policy.order(), model.order()) << "step " << step;
    }
  }
  ASSERT_EQ(policy.order(), model.order());
  policy.clear();
  EXPECT_EQ(policy.size(), 0u);
  EXPECT_TRUE(policy.order().empty());
}

TEST(EvictionPolicy, LruMatchesANaiveModel) {
  for (std::uint32_t seed = 1; seed <= 5; ++seed) run_against_model<llmds::LruEviction>(seed, false);
}

TEST(EvictionPolicy, RetentionMatchesANaiveModel) {
  for (std::uint32_t seed = 1; seed <= 5; ++seed) run_against_model<llmds::RetentionEviction>(seed, true);
}

TEST(EvictionPolicy, RetentionAtOnePriorityIsLru) {
  for (std::uint32_t seed = 11; seed <= 13; ++seed) run_against_model<llmds::RetentionEviction>(seed, false);
}

TEST(EvictionPolicy, LowestPriorityGoesFirstThenOldestWithinIt) {
  llmds::RetentionEviction policy(6);
  policy.set_priority(0, 80);
  policy.set_priority(1, 10);
  policy.set_priority(4, 100);
  policy.set_priority(5, 0);
  for (BlockId b = 0; b < 6; ++b) policy.insert(b);
  EXPECT_EQ(policy.order(), (Ids{5, 1, 2, 3, 0, 4}));
  EXPECT_EQ(policy.pop(), 5);
  EXPECT_EQ(policy.pop(), 1);
  policy.set_priority(2, 35);  // same priority: moves behind 3, as if just released
  EXPECT_EQ(policy.order(), (Ids{3, 2, 0, 4}));
}

TEST(EvictionPolicy, PriorityAboveTheMaximumIsRefused) {
  llmds::RetentionEviction policy(2);
  policy.insert(0);
  EXPECT_THROW(policy.set_priority(0, 101), std::invalid_argument);
  EXPECT_EQ(policy.priority(0), llmds::kDefaultRetentionPriority);
  EXPECT_EQ(policy.order(), (Ids{0}));
}

using RetentionPool = llmds::BlockPool<std::int64_t, std::hash<std::int64_t>, std::equal_to<>,
                                       llmds::RetentionEviction>;

TEST(BlockPoolRetention, HighPriorityBlocksOutliveAFloodOfDefaultOnes) {
  RetentionPool pool(4);
  const auto system = pool.allocate(1);
  pool.register_block(system[0], 1);
  pool.set_retention_priority(system[0], 90);
  pool.release(system);
  for (std::int64_t key = 100; key < 130; ++key) {  // one-off prompts, three blocks at a time
    const auto b = pool.allocate(3);
    for (std::size_t i = 0; i < 3; ++i) pool.register_block(b[i], key * 10 + static_cast<std::int64_t>(i));
    pool.release(b);
  }
  ASSERT_TRUE(pool.find(1).has_value());
  EXPECT_EQ(pool.retention_priority(*pool.find(1)), 90);
  // Under LRU the same traffic pushes it out.
  llmds::BlockPool<std::int64_t> lru(4);
  const auto s = lru.allocate(1);
  lru.register_block(s[0], 1);
  lru.release(s);
  const auto b = lru.allocate(3);
  lru.release(b);
  const auto c = lru.allocate(4);
  EXPECT_FALSE(lru.find(1).has_value());
  lru.release(c);
}

TEST(BlockPoolRetention, EvictedKeysAreReportedInEvictionOrder) {
  RetentionPool pool(3);
  const auto b = pool.allocate(3);
  for (std::size_t i = 0; i < 3; ++i) pool.register_block(b[i], static_cast<std::int64_t>(i));
  pool.set_retention_priority(b[0], 50);
  pool.release(b);  // released 0, 1, 2; 0 has the higher priority
  std::vector<BlockId> out;
  std::vector<std::int64_t> evicted;
  ASSERT_TRUE(pool.try_allocate_into(2, out, &evicted));
  EXPECT_EQ(evicted, (std::vector<std::int64_t>{1, 2}));
  EXPECT_FALSE(pool.try_allocate_into(2, out, &evicted));  // one left: nothing changes
  EXPECT_EQ(evicted.size(), 2u);
  EXPECT_EQ(out.size(), 2u);
  // A newly allocated block starts at the default priority.
  EXPECT_EQ(pool.retention_priority(out[0]), llmds::kDefaultRetentionPriority);
}

TEST(BlockPoolRetention, RemoveCachedFreesOnlyACachedBlock) {
  RetentionPool pool(2);
  const auto b = pool.allocate(2);
  pool.register_block(b[0], 7);
  pool.register_block(b[1], 8);
  pool.release(Ids{b[0]});
  EXPECT_FALSE(pool.remove_cached(8));  // in use
  EXPECT_FALSE(pool.remove_cached(9));  // unknown
  EXPECT_TRUE(pool.remove_cached(7));
  EXPECT_TRUE(pool.is_free(b[0]));
  EXPECT_FALSE(pool.find(7).has_value());
  EXPECT_EQ(pool.evictions(), 1u);
  EXPECT_EQ(pool.cached_blocks(), 0u);
}

TEST(BlockPoolRetention, BadPriorityCallsChangeNothing) {
  RetentionPool pool(2);
  const auto b = pool.allocate(1);
  EXPECT_THROW(pool.set_retention_priority(1, 50), std::invalid_argument);  // free
  EXPECT_THROW(pool.set_retention_priority(5, 50), std::out_of_range);
  EXPECT_THROW(pool.set_retention_priority(b[0], 200), std::invalid_argument);
  EXPECT_EQ(pool.retention_priority(b[0]), llmds::kDefaultRetentionPriority);
}

TEST(BlockPoolRetention, DefragmentKeepsPrioritiesAndOrder) {
  RetentionPool pool(6);
  const auto b = pool.allocate(6);
  for (std::size_t i = 0; i < 6; ++i) pool.register_block(b[i], static_cast<std::int64_t>(i));
  pool.set_retention_priority(b[5], 70);
  pool.set_retention_priority(b[3], 10);
  const std::vector<std::int64_t> drop = {0, 2};
  pool.release(Ids{b[0], b[2]});
  for (const auto key : drop) ASSERT_TRUE(pool.remove_cached(key));
  pool.release(Ids{b[5], b[4], b[3], b[1]});
  std::vector<std::int64_t> before;
  for (const BlockId x : pool.eviction_order()) before.push_back(*pool.key_of(x));
  pool.defragment();
  std::vector<std::int64_t> after;
  for (const BlockId x : pool.eviction_order()) after.push_back(*pool.key_of(x));
  EXPECT_EQ(before, after);
  EXPECT_EQ(after, (std::vector<std::int64_t>{3, 4, 1, 5}));
  EXPECT_EQ(pool.retention_priority(*pool.find(5)), 70);
  EXPECT_EQ(pool.retention_priority(*pool.find(3)), 10);
}

}  // namespace
