#include "llmds/kv/routing/kv_indexer.hpp"

#include <algorithm>
#include <cstdint>
#include <map>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "llmds/kv/tiered/kv_block_manager.hpp"

namespace {

using llmds::ApplyOutcome;
using llmds::Tier;
using llmds::WorkerId;
using llmds::WorkerScore;
using Key = std::int64_t;
using Keys = std::vector<Key>;
using Batch = llmds::KVEventBatch<Key>;
using Indexer = llmds::KVIndexer<Key>;

Batch stored(std::uint64_t seq, Keys keys, Tier tier = Tier::kPrimary) {
  return Batch{seq, {llmds::BlockStored<Key>{std::move(keys), std::nullopt, {}, 16, tier}}};
}
Batch removed(std::uint64_t seq, Keys keys, Tier tier = Tier::kPrimary) {
  return Batch{seq, {llmds::BlockRemoved<Key>{std::move(keys), tier}}};
}

WorkerScore score_of(WorkerId w, std::size_t primary, std::size_t host = 0) {
  WorkerScore s{w, primary + host, {}};
  s.by_tier[0] = primary;
  s.by_tier[1] = host;
  return s;
}

TEST(KVIndexer, ScoresTheLongestLeadingRunEachWorkerHolds) {
  Indexer index;
  EXPECT_EQ(index.apply(1, stored(0, {10, 11, 12, 13})), ApplyOutcome::kApplied);
  EXPECT_EQ(index.apply(2, stored(5, {10, 11})), ApplyOutcome::kApplied);  // a worker's first seq is its own
  EXPECT_EQ(index.apply(2, stored(6, {13}, Tier::kHost)), ApplyOutcome::kApplied);  // not after 12: no use
  EXPECT_EQ(index.apply(3, stored(0, {11, 12})), ApplyOutcome::kApplied);  // not the first block: no use
  EXPECT_EQ(index.score(Keys{10, 11, 12, 13, 14}), (std::vector<WorkerScore>{score_of(1, 4), score_of(2, 2)}));
  EXPECT_EQ(index.score(Keys{10, 99}), (std::vector<WorkerScore>{score_of(1, 1), score_of(2, 1)}));
  // A request that starts further in (another chain would have other hashes; these are for
  // the index's sake): each worker's run from the request's first block.
  EXPECT_EQ(index.score(Keys{11, 12}), (std::vector<WorkerScore>{score_of(1, 2), score_of(3, 2), score_of(2, 1)}));
  EXPECT_TRUE(index.score(Keys{99}).empty());
  EXPECT_TRUE(index.score(Keys{}).empty());
  EXPECT_EQ(index.num_blocks(), 4u);
  EXPECT_EQ(index.worker(2)->blocks, 3u);
  EXPECT_EQ(index.workers(), (std::vector<WorkerId>{1, 2, 3}));
}

TEST(KVIndexer, TiersAreCountedByTheFastestCopyAndRemovedOneByOne) {
  Indexer index;
  index.apply(1, stored(0, {10, 11, 12}, Tier::kHost));
  index.apply(1, stored(1, {10}));  // primary and host
  EXPECT_EQ(index.score(Keys{10, 11, 12}), (std::vector<WorkerScore>{score_of(1, 1, 2)}));
  EXPECT_EQ(index.tiers_of(1, 10), 0b11);
  index.apply(1, removed(2, {10}, Tier::kHost));
  EXPECT_EQ(index.tiers_of(1, 10), 0b01);
  index.apply(1, removed(3, {11}, Tier::kHost));
  EXPECT_EQ(index.score(Keys{10, 11, 12}), (std::vector<WorkerScore>{score_of(1, 1)}));
  index.apply(1, removed(4, {11, 99}, Tier::kDisk));  // unknown block or tier: nothing happens
  EXPECT_EQ(index.worker(1)->blocks, 2u);
  index.apply(1, Batch{5, {llmds::AllBlocksCleared{}}});
  EXPECT_EQ(index.num_blocks(), 0u);
  EXPECT_EQ(index.worker(1)->blocks, 0u);
}

TEST(KVIndexer, DuplicatesAreSkippedAndGapsReportedUntilResynchronised) {
  Indexer index;
  index.apply(1, stored(0, {10}));
  index.apply(1, stored(1, {11}));
  EXPECT_EQ(index.apply(1, removed(1, {11})), ApplyOutcome::kDuplicate);  // replayed: not applied
  EXPECT_EQ(index.tiers_of(1, 11), 0b01);
  EXPECT_EQ(index.apply(1, stored(4, {12})), ApplyOutcome::kAfterGap);  // 2 and 3 were missed
  auto w = index.worker(1);
  EXPECT_EQ(w->gaps, 1u);
  EXPECT_FALSE(w->in_sync);
  EXPECT_EQ(w->next_seq, 5u);
  EXPECT_EQ(index.tiers_of(1, 12), 0b01);  // applied all the same
  EXPECT_TRUE(index.mark_synced(1));
  EXPECT_TRUE(index.worker(1)->in_sync);
  EXPECT_TRUE(index.remove_worker(1));
  EXPECT_FALSE(index.remove_worker(1));
  EXPECT_FALSE(index.mark_synced(7));
  EXPECT_EQ(index.worker(1), std::nullopt);
  EXPECT_EQ(index.num_blocks(), 0u);
  EXPECT_EQ(index.apply(1, stored(9, {10})), ApplyOutcome::kApplied);  // starts afresh
}

// Three managers' real event streams, fed to one index: after every request, the index's
// scores equal those computed from the managers' own contents.
TEST(KVIndexer, MatchesWhatEveryManagerHoldsUnderRandomTraffic) {
  using Manager = llmds::KVBlockManager<Key>;
  llmds::KVBlockManagerConfig c;
  c.primary_blocks = 6;
  c.host_blocks = 5;
  c.block_size = 4;
  std::vector<std::unique_ptr<Manager>> servers;
  Indexer index;
  for (WorkerId w = 0; w < 3; ++w) {
    servers.push_back(std::make_unique<Manager>(c));
    servers.back()->events().subscribe([&index, w](const Batch& b) {
      EXPECT_NE(index.apply(w, b), ApplyOutcome::kAfterGap);
    });
  }
  std::mt19937 rng(5);
  for (int step = 0; step < 600; ++step) {
    Manager& m = *servers[rng() % 3];
    const Key conv = static_cast<Key>(rng() % 6);
    Keys keys;
    for (Key i = 0; i < 1 + static_cast<Key>(rng() % 4); ++i) keys.push_back(conv * 100 + i);
    auto match = m.match(keys);
    auto blocks = m.onboard(match);
    const auto fresh = m.allocate(keys.size() - blocks.size());
    std::optional<Key> parent;
    if (!blocks.empty()) parent = keys[blocks.size() - 1];
    m.register_blocks(fresh, Keys(keys.begin() + static_cast<std::ptrdiff_t>(blocks.size()), keys.end()), parent);
    blocks.insert(blocks.end(), fresh.begin(), fresh.end());
    std::reverse(blocks.begin(), blocks.end());
    m.release(blocks);

    // What the index must say, from each server's tiers.
    const Keys query{conv * 100, conv * 100 + 1, conv * 100 + 2, conv * 100 + 3};
    std::vector<WorkerScore> want;
    for (WorkerId w = 0; w < 3; ++w) {
      WorkerScore s{w, 0, {}};
      for (const Key k : query) {
        const auto tier = servers[w]->find(k);
        if (!tier) break;
        ++s.blocks;
        ++s.by_tier[static_cast<std::size_t>(*tier)];
      }
      if (s.blocks > 0) want.push_back(s);
    }
    std::stable_sort(want.begin(), want.end(), [](const auto& a, const auto& b) { return a.blocks > b.blocks; });
    ASSERT_EQ(index.score(query), want) << "step " << step;
  }
  for (WorkerId w = 0; w < 3; ++w) {
    std::size_t held = 0;
    for (const Tier t : servers[w]->tiers()) held += servers[w]->contents(t).size();
    EXPECT_EQ(index.worker(w)->blocks, held);  // write-back: no block is in two tiers
  }
}

TEST(KVIndexer, ScoresWhileAnotherThreadAppliesEvents) {
  Indexer index;
  std::thread feeder([&] {
    for (std::uint64_t seq = 0; seq < 2000; ++seq) {
      const Key k = static_cast<Key>(seq % 50);
      index.apply(1, seq % 2 == 0 ? stored(seq, {k, k + 1}) : removed(seq, {k + 1}));
    }
  });
  std::size_t seen = 0;
  for (int i = 0; i < 2000; ++i) seen += index.score(Keys{0, 1, 2}).size();
  feeder.join();
  EXPECT_LE(seen, 2000u);
  EXPECT_EQ(index.worker(1)->next_seq, 2000u);
  EXPECT_TRUE(index.worker(1)->in_sync);
}

}  // namespace
