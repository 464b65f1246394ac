#include "llmds/kv/tiered/kv_block_manager.hpp"

#include <unistd.h>

#include <algorithm>
#include <thread>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <list>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "llmds/core/errors.hpp"
#include "llmds/kv/block_hash.hpp"
#include "llmds/kv/tiered/block_layout.hpp"
#include "llmds/kv/tiered/disk_store.hpp"
#include "llmds/kv/tiered/memory_store.hpp"
#include "llmds/kv/tiered/transfer_queue.hpp"

namespace {

using llmds::BlockId;
using llmds::Tier;
using Key = std::int64_t;
using Manager = llmds::KVBlockManager<Key>;
using Keys = std::vector<Key>;
using Ids = std::vector<BlockId>;

llmds::KVBlockManagerConfig config(std::size_t primary, std::size_t host, std::size_t disk = 0) {
  llmds::KVBlockManagerConfig c;
  c.primary_blocks = primary;
  c.host_blocks = host;
  c.disk_blocks = disk;
  c.block_size = 4;
  return c;
}

std::set<Key> contents(const Manager& m, Tier t) {
  const auto keys = m.contents(t);
  return {keys.begin(), keys.end()};
}

// Runs one request's prompt through the manager as an engine would: match, onboard, compute
// and register the rest, then release everything tail first.
void serve(Manager& m, const Keys& keys) {
  auto match = m.match(keys);
  Ids blocks = m.onboard(match);
  const auto fresh = m.allocate(keys.size() - blocks.size());
  const Keys rest(keys.begin() + static_cast<std::ptrdiff_t>(blocks.size()), keys.end());
  std::optional<Key> parent;
  if (!blocks.empty()) parent = keys[blocks.size() - 1];
  m.register_blocks(fresh, rest, parent);
  blocks.insert(blocks.end(), fresh.begin(), fresh.end());
  std::reverse(blocks.begin(), blocks.end());
  m.release(blocks);
}

TEST(KVBlockManager, EvictedBlocksGoToHostAndComeBackOnAHit) {
  Manager m(config(4, 8));
  serve(m, {1, 2, 3, 4});
  serve(m, {10, 11, 12, 13});  // evicts 1..4 from primary into host
  EXPECT_EQ(contents(m, Tier::kPrimary), (std::set<Key>{10, 11, 12, 13}));
  EXPECT_EQ(contents(m, Tier::kHost), (std::set<Key>{1, 2, 3, 4}));

  auto match = m.match(Keys{1, 2, 3, 99});
  ASSERT_EQ(match.size(), 3u);
  EXPECT_EQ(match.count(Tier::kHost), 3u);
  EXPECT_EQ(match.to_onboard(), 3u);
  const Ids blocks = m.onboard(match);
  EXPECT_FALSE(match.open());
  EXPECT_EQ(blocks.size(), 3u);
  // Write-back keeps host exclusive: the onboarded blocks left it, the primary blocks they
  // displaced went down.
  // (A request's blocks are released tail first, so 13 was the first to go.)
  EXPECT_EQ(contents(m, Tier::kPrimary), (std::set<Key>{1, 2, 3, 10}));
  EXPECT_EQ(contents(m, Tier::kHost), (std::set<Key>{4, 11, 12, 13}));
  const auto stats = m.stats();
  EXPECT_EQ(stats[1].hit_blocks, 3u);
  EXPECT_EQ(stats[1].onboarded_blocks, 3u);
  EXPECT_FALSE(stats[1].copy_in_us.has_value());  // metadata only: nothing is copied or timed
  EXPECT_EQ(stats[0].evicted_blocks, 7u);
  m.release(Ids(blocks.rbegin(), blocks.rend()));
}

TEST(KVBlockManager, WriteThroughCopiesOnRegistration) {
  auto c = config(4, 8);
  c.offload_policy = llmds::OffloadPolicy::kWriteThrough;
  c.block_bytes = 1000;
  Manager m(c);
  serve(m, {1, 2});
  EXPECT_EQ(contents(m, Tier::kHost), (std::set<Key>{1, 2}));
  EXPECT_EQ(contents(m, Tier::kPrimary), (std::set<Key>{1, 2}));
  const auto stats = m.stats();
  EXPECT_EQ(stats[1].bytes_in, 2000u);
  EXPECT_EQ(stats[0].bytes_out, 2000u);
  // A hit in primary and host is served from primary; host keeps its copy on onboard.
  auto match = m.match(Keys{1, 2});
  EXPECT_EQ(match.count(Tier::kPrimary), 2u);
  m.cancel(match);
}

TEST(KVBlockManager, DiskTakesWhatHostEvictsAndKeepsItsCopyOnOnboard) {
  Manager m(config(2, 2, 10));
  serve(m, {1, 2});
  serve(m, {3, 4});
  serve(m, {5, 6});  // 1, 2: primary -> host -> disk
  EXPECT_EQ(contents(m, Tier::kDisk), (std::set<Key>{1, 2}));
  auto match = m.match(Keys{1, 2});
  EXPECT_EQ(match.count(Tier::kDisk), 2u);
  const Ids blocks = m.onboard(match);
  EXPECT_EQ(contents(m, Tier::kPrimary), (std::set<Key>{1, 2}));
  EXPECT_TRUE(contents(m, Tier::kDisk).contains(1));  // the file stays
  m.release(blocks);
}

TEST(KVBlockManager, TheDiskFilterAdmitsOnlyBlocksUsedOftenEnough) {
  auto c = config(1, 1, 10);
  c.disk_min_uses = 2;
  Manager m(c);
  serve(m, {1});
  serve(m, {1});  // a hit: two uses of block 1
  serve(m, {2});  // one use
  serve(m, {3});  // 1 goes to disk; 2 reaches host
  serve(m, {4});  // 2 leaves host: refused by the filter
  EXPECT_EQ(contents(m, Tier::kDisk), (std::set<Key>{1}));
  EXPECT_EQ(m.stats()[2].filter_rejected, 1u);
}

TEST(KVBlockManager, BlocksBelowTheOffloadFloorAreDropped) {
  auto c = config(1, 4);
  c.offload_min_priority = 30;
  Manager m(c);
  auto b = m.allocate(1);
  m.register_blocks(b, Keys{1}, std::nullopt, {}, 10);
  m.release(b);
  serve(m, {2});
  EXPECT_TRUE(contents(m, Tier::kHost).empty());
  EXPECT_EQ(m.stats()[1].dropped_offloads, 1u);
  serve(m, {3});  // 2 had the default priority, 35: offloaded
  EXPECT_EQ(contents(m, Tier::kHost), (std::set<Key>{2}));
}

TEST(KVBlockManager, AMatchedLowerTierBlockIsPinnedUntilOnboardedOrCancelled) {
  Manager m(config(1, 2));
  serve(m, {1});
  serve(m, {2});  // 1 in host
  auto match = m.match(Keys{1});
  ASSERT_EQ(match.count(Tier::kHost), 1u);
  for (Key k = 10; k < 15; ++k) serve(m, {k});  // host churns; 1 is pinned
  EXPECT_TRUE(contents(m, Tier::kHost).contains(1));
  EXPECT_GT(m.stats()[1].evicted_blocks, 0u);
  m.cancel(match);
  EXPECT_THROW(m.cancel(match), std::invalid_argument);
  EXPECT_THROW(m.onboard(match), std::invalid_argument);
  serve(m, {20});
  serve(m, {21});
  EXPECT_FALSE(contents(m, Tier::kHost).contains(1));
}

TEST(KVBlockManager, TwoMatchesOfOneHostBlockShareOnePrimaryCopy) {
  Manager m(config(3, 2));
  serve(m, {1});
  serve(m, {2, 3, 4});  // 1 in host
  auto a = m.match(Keys{1});
  auto b = m.match(Keys{1});
  const Ids first = m.onboard(a);
  const Ids second = m.onboard(b);
  EXPECT_EQ(first, second);
  m.release(first);
  m.release(second);
  EXPECT_EQ(contents(m, Tier::kPrimary).count(1), 1u);
  EXPECT_EQ(m.stats()[0].in_use_blocks, 0u);
}

TEST(KVBlockManager, RegisteringAKnownHashReturnsTheExistingBlock) {
  Manager m(config(4, 0));
  const auto a = m.allocate(1);
  const auto b = m.allocate(1);
  EXPECT_EQ(m.register_blocks(a, Keys{7}), a);
  EXPECT_EQ(m.register_blocks(b, Keys{7}), a);  // no reference is taken on a
  EXPECT_EQ(m.stats()[0].in_use_blocks, 2u);
  m.release(a);
  m.release(b);  // b was never registered: it is free again
  const auto s = m.stats()[0];
  EXPECT_EQ(s.cached_blocks, 1u);
  EXPECT_EQ(s.in_use_blocks, 0u);
}

TEST(KVBlockManager, BadCallsThrowAndChangeNothing) {
  Manager m(config(2, 2));
  EXPECT_THROW(Manager(config(0, 2)), std::invalid_argument);
  EXPECT_THROW(m.allocate(3), llmds::OutOfPages);
  const auto b = m.allocate(2);
  EXPECT_THROW(m.register_blocks(b, Keys{1}), std::invalid_argument);
  EXPECT_THROW(m.register_blocks(Ids{5}, Keys{1}), std::out_of_range);
  EXPECT_THROW(m.register_blocks(b, Keys{1, 2}, std::nullopt, std::vector<llmds::TokenId>(3)),
               std::invalid_argument);
  EXPECT_THROW(m.register_blocks(b, Keys{1, 2}, std::nullopt, {}, 101), std::invalid_argument);
  EXPECT_TRUE(contents(m, Tier::kPrimary).empty());
  m.register_blocks(b, Keys{1, 2});
  EXPECT_THROW(m.register_blocks(Ids{b[0]}, Keys{3}), std::invalid_argument);  // already 1
  m.release(b);
  EXPECT_THROW(m.release(b), std::invalid_argument);
  EXPECT_THROW(m.contents(Tier::kDisk), std::invalid_argument);
  // Onboarding more than primary can hold fails and leaves the match pinned.
  const auto held = m.allocate(2);  // evicts 1, 2 to host
  auto match = m.match(Keys{1, 2});
  ASSERT_EQ(match.count(Tier::kHost), 2u);
  EXPECT_THROW(m.onboard(match), llmds::OutOfPages);
  EXPECT_TRUE(match.open());
  EXPECT_EQ(m.stats()[1].in_use_blocks, 2u);
  m.cancel(match);
  m.release(held);
}

TEST(KVBlockManager, AMatchIsRefusedByEveryOtherManagerEvenAtTheSameAddress) {
  Manager::Match match;
  {
    Manager first(config(2, 0));
    serve(first, {1});
    match = first.match(Keys{1});
  }
  for (int i = 0; i < 20; ++i) {  // later managers, some perhaps where the first one was
    Manager other(config(2, 0));
    EXPECT_THROW(other.cancel(match), std::invalid_argument);
    EXPECT_THROW((void)other.onboard(match), std::invalid_argument);
  }
}

TEST(KVBlockManager, ClearEmptiesEveryTierOnlyWhenNothingIsHeld) {
  Manager m(config(2, 2, 2));
  serve(m, {1, 2});
  serve(m, {3, 4});
  const auto held = m.allocate(1);
  EXPECT_FALSE(m.clear());
  EXPECT_FALSE(contents(m, Tier::kHost).empty());
  m.release(held);
  const auto before = m.events().next_seq();
  EXPECT_TRUE(m.clear());
  for (const Tier t : m.tiers()) EXPECT_TRUE(contents(m, t).empty());
  const auto replay = m.events().replay_from(before);
  ASSERT_EQ(replay.batches.size(), 1u);
  EXPECT_TRUE(std::holds_alternative<llmds::AllBlocksCleared>(replay.batches[0].events.at(0)));
}

TEST(KVBlockManager, EventsCarryParentsTokensAndTiers) {
  Manager m(config(2, 2));
  std::vector<llmds::KVEventBatch<Key>> seen;
  m.events().subscribe([&](const llmds::KVEventBatch<Key>& b) { seen.push_back(b); });
  const auto b = m.allocate(2);
  const std::vector<llmds::TokenId> tokens = {1, 2, 3, 4, 5, 6, 7, 8};
  m.register_blocks(b, Keys{10, 11}, Key{9}, tokens, 50);
  m.release(Ids{b[1], b[0]});
  const auto c = m.allocate(2);  // 11 then 10 go to host
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0].seq + 1, seen[1].seq);
  const auto& stored = std::get<llmds::BlockStored<Key>>(seen[0].events.at(0));
  EXPECT_EQ(stored.block_hashes, (Keys{10, 11}));
  EXPECT_EQ(stored.parent_hash, Key{9});
  EXPECT_EQ(stored.token_ids, tokens);
  EXPECT_EQ(stored.tier, Tier::kPrimary);
  EXPECT_EQ(stored.block_size, 4u);
  const auto& removed = std::get<llmds::BlockRemoved<Key>>(seen[1].events.at(0));
  EXPECT_EQ(removed.block_hashes, (Keys{11, 10}));
  const auto& down = std::get<llmds::BlockStored<Key>>(seen[1].events.at(1));
  EXPECT_EQ(down.block_hashes, (Keys{11}));
  EXPECT_EQ(down.parent_hash, Key{10});
  EXPECT_EQ(down.token_ids, (std::vector<llmds::TokenId>{5, 6, 7, 8}));
  EXPECT_EQ(down.tier, Tier::kHost);
  m.release(c);
}

TEST(KVBlockManager, BlocksOfDifferentTenantSaltsNeverMatchInAnyTier) {
  using HashManager = llmds::KVBlockManager<llmds::BlockHash, llmds::BlockHashHasher>;
  llmds::KVBlockManagerConfig c = config(2, 2, 4);
  HashManager m(c);
  const std::vector<llmds::TokenId> tokens = {1, 2, 3, 4, 5, 6, 7, 8};
  llmds::BlockHasher hasher(4);
  const std::string a = "alice", b = "bob";
  const auto alice = hasher.chain(tokens, std::as_bytes(std::span(a)));
  const auto bob = hasher.chain(tokens, std::as_bytes(std::span(b)));
  for (int round = 0; round < 3; ++round) {  // alice's blocks end up in host, then disk
    auto match = m.match(alice);
    Ids blocks = m.onboard(match);
    EXPECT_EQ(blocks.size(), round == 0 ? 0u : 2u);
    const auto fresh = m.allocate(alice.size() - blocks.size());
    m.register_blocks(fresh, std::span(alice).subspan(blocks.size()));
    blocks.insert(blocks.end(), fresh.begin(), fresh.end());
    m.release(blocks);
    const auto other = m.allocate(2);
    m.release(other);
    for (const Tier t : m.tiers()) {
      auto bobs = m.match(std::span(bob).first(1));
      EXPECT_EQ(bobs.size(), 0u) << llmds::tier_name(t);
      m.cancel(bobs);
    }
  }
  EXPECT_TRUE(m.find(alice[0]).has_value());
}

TEST(KVEventLog, KeepsTheLastBatchesForReplayAndSaysWhenSomeAreGone) {
  llmds::KVEventLog<Key> log(3);
  EXPECT_FALSE(log.publish().has_value());  // nothing pending: no batch, no number used
  for (Key k = 0; k < 5; ++k) {
    log.append(llmds::BlockRemoved<Key>{{k}, Tier::kHost});
    EXPECT_EQ(log.publish(), static_cast<std::uint64_t>(k));
  }
  const auto tail = log.replay_from(3);
  ASSERT_TRUE(tail.complete);
  ASSERT_EQ(tail.batches.size(), 2u);
  EXPECT_EQ(tail.batches[0].seq, 3u);
  EXPECT_EQ(std::get<llmds::BlockRemoved<Key>>(tail.batches[1].events[0]).block_hashes, (Keys{4}));
  EXPECT_FALSE(log.replay_from(1).complete);  // batch 1 has left the log
  EXPECT_TRUE(log.replay_from(5).complete);   // nothing yet, nothing missed
  EXPECT_TRUE(log.replay_from(5).batches.empty());
  EXPECT_THROW(llmds::KVEventLog<Key>(0), std::invalid_argument);
}

TEST(KVEventLog, AThrowingSubscriberIsDroppedAndTheOthersStillHearEverything) {
  llmds::KVEventLog<Key> log(4);
  int good = 0;
  log.subscribe([](const llmds::KVEventBatch<Key>&) { throw std::runtime_error("consumer down"); });
  const auto id = log.subscribe([&](const llmds::KVEventBatch<Key>&) { ++good; });
  for (int i = 0; i < 3; ++i) {
    log.append(llmds::AllBlocksCleared{});
    log.publish();
  }
  EXPECT_EQ(good, 3);
  EXPECT_EQ(log.callback_failures(), 1u);
  EXPECT_TRUE(log.unsubscribe(id));
  EXPECT_FALSE(log.unsubscribe(id));
}

TEST(KVEventLog, ASubscriberThatChangesTheCacheGetsItsEventsNextInOrder) {
  Manager m(config(4, 0));
  std::vector<std::uint64_t> seen;
  m.events().subscribe([&](const llmds::KVEventBatch<Key>& b) {
    seen.push_back(b.seq);
    if (b.seq == 0) serve(m, {77});  // would deadlock if publish were not re-entrant
  });
  serve(m, {1});
  EXPECT_EQ(seen, (std::vector<std::uint64_t>{0, 1}));
  EXPECT_EQ(m.find(77), Tier::kPrimary);
}

// ---- A randomised run against a naive model of every tier ---------------------------------

// Each tier as a list of cached keys in release order (the victim is the first of the lowest
// priority), a map of the registered keys in use with their references, and a count of
// unregistered blocks in use.
struct ModelTier {
  Tier tier;
  std::size_t capacity;
  std::list<std::pair<Key, int>> cached;  // (key, priority)
  std::map<Key, std::pair<int, int>> in_use;  // key -> (refs, priority)
  std::size_t anonymous = 0;

  [[nodiscard]] std::size_t used() const { return cached.size() + in_use.size() + anonymous; }
  [[nodiscard]] bool has(Key k) const {
    return in_use.contains(k) || std::any_of(cached.begin(), cached.end(), [&](auto& e) { return e.first == k; });
  }
  [[nodiscard]] std::set<Key> keys() const {
    std::set<Key> out;
    for (const auto& e : cached) out.insert(e.first);
    for (const auto& e : in_use) out.insert(e.first);
    return out;
  }
  std::optional<int> take_cached(Key k) {  // removes k from cached: its priority
    for (auto it = cached.begin(); it != cached.end(); ++it) {
      if (it->first == k) {
        const int p = it->second;
        cached.erase(it);
        return p;
      }
    }
    return std::nullopt;
  }
  void touch(Key k) {
    if (auto p = take_cached(k)) {
      in_use[k] = {1, *p};
    } else {
      ++in_use.at(k).first;
    }
  }
  void release(Key k) {
    auto& [refs, p] = in_use.at(k);
    if (--refs == 0) {
      cached.emplace_back(k, p);
      in_use.erase(k);
    }
  }
};

struct Model {
  llmds::KVBlockManagerConfig config;
  std::vector<ModelTier> tiers;
  std::map<Key, int> uses;

  explicit Model(const llmds::KVBlockManagerConfig& c) : config(c) {
    tiers.push_back({Tier::kPrimary, c.primary_blocks, {}, {}, 0});
    if (c.host_blocks > 0) tiers.push_back({Tier::kHost, c.host_blocks, {}, {}, 0});
    if (c.disk_blocks > 0) tiers.push_back({Tier::kDisk, c.disk_blocks, {}, {}, 0});
  }
  bool write_back() const { return config.offload_policy == llmds::OffloadPolicy::kWriteBack; }

  bool allocate_in(std::size_t t, std::size_t n) {
    ModelTier& tier = tiers[t];
    if (tier.capacity - tier.in_use.size() - tier.anonymous < n) return false;
    const std::size_t free = tier.capacity - tier.used();
    for (std::size_t i = free; i < n; ++i) evict_one(t);
    tier.anonymous += n;
    return true;
  }
  // The next victim (lowest priority, least recently released) out of tier t.
  std::pair<Key, int> take_victim(std::size_t t) {
    ModelTier& tier = tiers[t];
    auto victim = tier.cached.begin();
    for (auto it = tier.cached.begin(); it != tier.cached.end(); ++it) {
      if (it->second < victim->second) victim = it;
    }
    const auto taken = *victim;
    tier.cached.erase(victim);
    return taken;
  }
  void evict_one(std::size_t t) {
    const auto [key, priority] = take_victim(t);
    if (t + 1 < tiers.size()) store_in(t + 1, key, priority);
  }
  // What the reclaimer has done once it is idle: once fewer than half of reclaim_free_blocks
  // are free, primary's next victims moved to host, in batches of up to offload_batch_blocks,
  // until all of them are (or nothing is cached). A batch's host slots are all taken before any
  // of its blocks is cached there, so that none of them is evicted by the next.
  bool reclaim_started = false;
  void reclaim() {
    ModelTier& primary = tiers[0];
    const std::size_t keep = config.reclaim_free_blocks;
    while (primary.capacity - primary.used() < (reclaim_started ? keep : (keep + 1) / 2) && !primary.cached.empty()) {
      reclaim_started = true;
      const std::size_t n = std::min({keep - (primary.capacity - primary.used()),
                                      config.offload_batch_blocks, primary.cached.size()});
      std::vector<std::pair<Key, int>> copied;
      for (std::size_t i = 0; i < n; ++i) {
        const auto [key, priority] = take_victim(0);
        if (!admits(1, key, priority) || !allocate_in(1, 1)) continue;
        copied.emplace_back(key, priority);
      }
      for (const auto& [key, priority] : copied) {
        --tiers[1].anonymous;
        tiers[1].cached.emplace_back(key, priority);
      }
      if (primary.capacity - primary.used() >= keep) reclaim_started = false;
    }
  }
  // Whether an offload into tier t is to be done (else the block is dropped, or was there).
  bool admits(std::size_t t, Key key, int priority) {
    ModelTier& tier = tiers[t];
    if (priority < config.offload_min_priority) return false;
    if (tier.has(key)) {
      if (auto p = tier.take_cached(key)) tier.cached.emplace_back(key, *p);
      return false;
    }
    return !(tier.tier == Tier::kDisk && config.disk_min_uses > 1 && uses[key] < int(config.disk_min_uses));
  }
  void store_in(std::size_t t, Key key, int priority) {
    ModelTier& tier = tiers[t];
    if (!admits(t, key, priority) || !allocate_in(t, 1)) return;
    --tier.anonymous;
    tier.cached.emplace_back(key, priority);
  }
};

void expect_same(const Manager& m, const Model& model, int step) {
  for (std::size_t t = 0; t < model.tiers.size(); ++t) {
    const ModelTier& mt = model.tiers[t];
    ASSERT_EQ(contents(m, mt.tier), mt.keys()) << llmds::tier_name(mt.tier) << " at step " << step;
    const auto s = m.stats()[t];
    ASSERT_EQ(s.cached_blocks, mt.cached.size()) << llmds::tier_name(mt.tier) << " at step " << step;
    ASSERT_EQ(s.in_use_blocks, mt.in_use.size() + mt.anonymous) << llmds::tier_name(mt.tier) << " at step " << step;
  }
}

// What a router knows from the events alone.
struct RouterModel {
  std::map<Tier, std::set<Key>> held;
  std::uint64_t next_seq = 0;
  void apply(const llmds::KVEventBatch<Key>& batch) {
    EXPECT_EQ(batch.seq, next_seq);
    next_seq = batch.seq + 1;
    for (const auto& e : batch.events) {
      if (const auto* s = std::get_if<llmds::BlockStored<Key>>(&e)) {
        for (const Key k : s->block_hashes) EXPECT_TRUE(held[s->tier].insert(k).second);
      } else if (const auto* r = std::get_if<llmds::BlockRemoved<Key>>(&e)) {
        for (const Key k : r->block_hashes) EXPECT_EQ(held[r->tier].erase(k), 1u);
      } else {
        held.clear();
      }
    }
  }
};

// Real bytes for the randomised run: a contiguous primary arena, a layer-separate host tier and
// a disk directory. Every block's bytes are a function of its hash (payload_of), written when
// the block is computed and checked whenever it is onboarded.
struct Storage {
  static constexpr llmds::BlockGeometry kGeometry{2, 3, 2, 8, llmds::ScalarType::kFloat32};
  std::filesystem::path dir;
  std::unique_ptr<llmds::MemoryStore<llmds::ContiguousLayout>> primary;
  std::unique_ptr<llmds::MemoryStore<llmds::LayerSeparateLayout>> host;
  std::unique_ptr<llmds::DiskStore> disk;

  Storage(const llmds::KVBlockManagerConfig& c, const std::string& name) {
    dir = std::filesystem::temp_directory_path() / ("llmds-kvbm-" + std::to_string(::getpid()) + "-" + name);
    std::filesystem::remove_all(dir);
    primary = std::make_unique<llmds::MemoryStore<llmds::ContiguousLayout>>(
        llmds::ContiguousLayout(kGeometry, c.primary_blocks));
    if (c.host_blocks > 0) {
      host = std::make_unique<llmds::MemoryStore<llmds::LayerSeparateLayout>>(
          llmds::LayerSeparateLayout(kGeometry, c.host_blocks));
    }
    if (c.disk_blocks > 0) open_disk();
  }
  ~Storage() {
    disk.reset();
    std::filesystem::remove_all(dir);
  }
  void open_disk() {
    llmds::DiskStoreConfig d;
    d.directory = dir;
    d.geometry = kGeometry;
    d.hash_bytes = sizeof(Key);
    disk = std::make_unique<llmds::DiskStore>(d);
  }
  llmds::TierStores stores() const { return {primary.get(), host.get(), disk.get()}; }

  static std::vector<std::byte> payload_of(Key k) {
    std::vector<std::byte> b(kGeometry.block_bytes());
    for (std::size_t i = 0; i < b.size(); ++i) b[i] = static_cast<std::byte>((k * 37 + static_cast<Key>(i) * 11) & 0xFF);
    return b;
  }
  void write(BlockId block, Key k) { primary->write_block(static_cast<std::size_t>(block), payload_of(k).data()); }
  std::vector<std::byte> read(BlockId block) const {
    std::vector<std::byte> b(kGeometry.block_bytes());
    primary->read_block(static_cast<std::size_t>(block), b.data());
    return b;
  }
};

// How randomised_run drives the manager: onboard() or onboard_async() + finish(); and, with the
// disk worker running (offload_queue_blocks > 0), flush() before every comparison. With the
// reclaimer running (reclaim_free_blocks > 0), flush() after every call that changes primary's
// free or cached blocks, and the model's reclaim() beside it: what the reclaimer does between
// two calls depends on the threads' timing, what it has done once idle does not.
struct RunMode {
  bool async_onboard = false;
};

void randomised_run(llmds::KVBlockManagerConfig c, std::uint32_t seed, Storage* storage = nullptr, RunMode mode = {}) {
  Manager m(c, storage != nullptr ? storage->stores() : llmds::TierStores{});
  Model model(c);
  const bool worker = storage != nullptr && c.disk_blocks > 0 && c.offload_queue_blocks > 0;
  const bool reclaimer = c.reclaim_free_blocks > 0;
  const auto settle = [&] {
    if (!reclaimer) return;
    m.flush();
    model.reclaim();
  };
  const auto expect_same_now = [&](int step) {
    if (worker) m.flush();
    expect_same(m, model, step);
  };
  const auto onboard = [&](Manager::Match& match) {
    if (!mode.async_onboard) return m.onboard(match);
    auto o = m.onboard_async(match);
    return m.finish(o);
  };
  RouterModel router;
  router.next_seq = m.events().next_seq();  // a disk tier announces itself at construction
  m.events().subscribe([&](const llmds::KVEventBatch<Key>& b) { router.apply(b); });
  std::mt19937 rng(seed);
  struct Running {
    Ids blocks;  // held references, in order
    Keys keys;   // the key of each, or -1 for an unregistered block
  };
  std::vector<Running> running;
  std::map<Tier, int> hits;  // so that the run is known to exercise every tier
  int shared = 0, cancelled = 0, refused = 0;
  auto release_one = [&](std::size_t i) {
    Running r = std::move(running[i]);
    running.erase(running.begin() + static_cast<std::ptrdiff_t>(i));
    std::reverse(r.blocks.begin(), r.blocks.end());
    std::reverse(r.keys.begin(), r.keys.end());
    m.release(r.blocks);
    for (const Key k : r.keys) {
      if (k < 0) {
        --model.tiers[0].anonymous;
      } else {
        model.tiers[0].release(k);
      }
    }
    settle();
  };

  for (int step = 0; step < 1500; ++step) {
    if (!running.empty() && (running.size() >= 3 || rng() % 2 == 0)) {
      release_one(rng() % running.size());
      expect_same_now(step);
      continue;
    }
    // A prompt: conversation c's first len blocks (keys c * 100 + i are prefix-chained).
    const Key conv = static_cast<Key>(rng() % 8);
    const std::size_t len = 1 + rng() % 4;
    Keys keys;
    for (std::size_t i = 0; i < len; ++i) keys.push_back(conv * 100 + static_cast<Key>(i));
    const int priority = std::array{0, 35, 35, 60}[rng() % 4];

    // Sometimes only a prefix is looked up (as when the last prompt block must be computed), so
    // that registration meets hashes that are already there.
    const std::size_t may = rng() % 4 == 0 ? rng() % (len + 1) : len;
    auto match = m.match(std::span(keys).first(may));
    // The model's match: each key from the fastest tier that holds it, until a miss.
    std::vector<std::size_t> where;
    for (const Key k : std::span(keys).first(may)) {
      std::size_t t = 0;
      while (t < model.tiers.size() && !model.tiers[t].has(k)) ++t;
      if (t == model.tiers.size()) break;
      where.push_back(t);
    }
    ASSERT_EQ(match.size(), where.size()) << "step " << step;
    for (std::size_t i = 0; i < where.size(); ++i) {
      ASSERT_EQ(match.tiers()[i], model.tiers[where[i]].tier) << "step " << step;
      model.tiers[where[i]].touch(keys[i]);
      ++hits[model.tiers[where[i]].tier];
      if (c.disk_min_uses > 1) ++model.uses[keys[i]];
    }
    if (rng() % 10 == 0) {
      ++cancelled;
      m.cancel(match);
      for (std::size_t i = 0; i < where.size(); ++i) model.tiers[where[i]].release(keys[i]);
      settle();
      expect_same_now(step);
      continue;
    }
    const std::size_t need = match.to_onboard();
    ModelTier& primary = model.tiers[0];
    const bool room = primary.capacity - primary.in_use.size() - primary.anonymous >= need;
    Running r;
    if (!room) {
      ++refused;
      EXPECT_THROW((void)onboard(match), llmds::OutOfPages);
      m.cancel(match);
      for (std::size_t i = 0; i < where.size(); ++i) model.tiers[where[i]].release(keys[i]);
      settle();
      expect_same_now(step);
      continue;
    }
    r.blocks = onboard(match);
    if (storage != nullptr) {
      for (std::size_t i = 0; i < r.blocks.size(); ++i) {
        ASSERT_EQ(storage->read(r.blocks[i]), Storage::payload_of(keys[i])) << "step " << step << ", block " << i;
      }
    }
    ASSERT_TRUE(model.allocate_in(0, need));
    for (std::size_t i = 0; i < where.size(); ++i) {
      if (where[i] == 0) continue;
      ModelTier& from = model.tiers[where[i]];
      const int p = from.in_use.at(keys[i]).second;
      if (primary.in_use.contains(keys[i]) || primary.has(keys[i])) {
        primary.touch(keys[i]);
        --primary.anonymous;
      } else {
        --primary.anonymous;
        primary.in_use[keys[i]] = {1, p};
      }
      from.release(keys[i]);
      if (model.write_back() && from.tier == Tier::kHost) from.take_cached(keys[i]);
    }
    r.keys.assign(keys.begin(), keys.begin() + static_cast<std::ptrdiff_t>(where.size()));
    settle();
    expect_same_now(step);

    const std::size_t rest = len - where.size();
    if (primary.capacity - primary.in_use.size() - primary.anonymous < rest) {
      EXPECT_THROW((void)m.allocate(rest), llmds::OutOfPages);
      running.push_back(std::move(r));
      continue;
    }
    const Ids fresh = m.allocate(rest);
    if (storage != nullptr) {
      for (std::size_t i = 0; i < fresh.size(); ++i) storage->write(fresh[i], keys[where.size() + i]);
    }
    ASSERT_TRUE(model.allocate_in(0, rest));
    settle();
    const Keys new_keys(keys.begin() + static_cast<std::ptrdiff_t>(where.size()), keys.end());
    std::optional<Key> parent;
    if (!where.empty()) parent = keys[where.size() - 1];
    const Ids canonical = m.register_blocks(fresh, new_keys, parent, {}, static_cast<llmds::RetentionPriority>(priority));
    for (std::size_t i = 0; i < fresh.size(); ++i) {
      const Key k = new_keys[i];
      if (c.disk_min_uses > 1) ++model.uses[k];
      r.blocks.push_back(fresh[i]);
      if (primary.has(k)) {  // registered already: the existing block is shared
        ++shared;
        r.keys.push_back(-1);
        ASSERT_NE(canonical[i], fresh[i]);
        continue;
      }
      ASSERT_EQ(canonical[i], fresh[i]);
      --primary.anonymous;
      primary.in_use[k] = {1, priority};
      r.keys.push_back(k);
      if (!model.write_back()) {
        for (std::size_t t = 1; t < model.tiers.size(); ++t) model.store_in(t, k, priority);
      } else if (model.tiers.size() > 1 && model.tiers[1].tier == Tier::kHost) {
        model.tiers[1].take_cached(k);
      }
    }
    running.push_back(std::move(r));
    expect_same_now(step);
  }
  while (!running.empty()) release_one(0);
  expect_same_now(-1);
  // The router, fed only the events, knows what every tier holds.
  for (const Tier t : m.tiers()) EXPECT_EQ(router.held[t], contents(m, t)) << llmds::tier_name(t);
  for (const Tier t : m.tiers()) EXPECT_GT(hits[t], 20) << llmds::tier_name(t);
  if (reclaimer) {
    EXPECT_GT(m.stats()[0].reclaimed_blocks, 0u);
  }
  EXPECT_GT(shared, 0);
  EXPECT_GT(cancelled, 0);
  EXPECT_GT(refused, 0);
}

TEST(KVBlockManager, RandomisedWriteBackMatchesANaiveModel) {
  auto c = config(6, 5, 8);
  for (std::uint32_t seed = 1; seed <= 4; ++seed) randomised_run(c, seed);
}

TEST(KVBlockManager, RandomisedWriteThroughMatchesANaiveModel) {
  auto c = config(6, 8, 10);
  c.offload_policy = llmds::OffloadPolicy::kWriteThrough;
  for (std::uint32_t seed = 1; seed <= 4; ++seed) randomised_run(c, seed);
}

TEST(KVBlockManager, RandomisedWithRealBytesInEveryTierMatchesANaiveModel) {
  for (const auto policy : {llmds::OffloadPolicy::kWriteBack, llmds::OffloadPolicy::kWriteThrough}) {
    auto c = config(6, 5, 8);
    c.block_size = Storage::kGeometry.tokens;
    c.offload_policy = policy;
    c.offload_queue_blocks = 0;  // disk writes on the calling thread: the model sees them at once
    for (std::uint32_t seed = 21; seed <= 22; ++seed) {
      Storage storage(c, "random-" + std::to_string(seed));
      randomised_run(c, seed, &storage);
      EXPECT_GT(storage.disk->stats().reads, 0u);
      EXPECT_EQ(storage.disk->stats().corrupt, 0u);
    }
  }
}

// serve() with bytes: computed blocks get their payload before registration.
void serve_with_bytes(Manager& m, Storage& storage, const Keys& keys) {
  auto match = m.match(keys);
  Ids blocks = m.onboard(match);
  for (std::size_t i = 0; i < blocks.size(); ++i) ASSERT_EQ(storage.read(blocks[i]), Storage::payload_of(keys[i]));
  const auto fresh = m.allocate(keys.size() - blocks.size());
  for (std::size_t i = 0; i < fresh.size(); ++i) storage.write(fresh[i], keys[blocks.size() + i]);
  const Keys rest(keys.begin() + static_cast<std::ptrdiff_t>(blocks.size()), keys.end());
  std::optional<Key> parent;
  if (!blocks.empty()) parent = keys[blocks.size() - 1];
  m.register_blocks(fresh, rest, parent, std::vector<llmds::TokenId>(rest.size() * Storage::kGeometry.tokens, 7));
  blocks.insert(blocks.end(), fresh.begin(), fresh.end());
  std::reverse(blocks.begin(), blocks.end());
  m.release(blocks);
}

llmds::KVBlockManagerConfig disk_config() {
  auto c = config(3, 3, 16);
  c.block_size = Storage::kGeometry.tokens;
  c.offload_queue_blocks = 0;  // synchronous disk writes (the asynchronous ones are tested below)
  return c;
}

TEST(KVBlockManager, ACorruptDiskBlockIsAMissNeverHandedToAttention) {
  const auto c = disk_config();
  Storage storage(c, "corrupt");
  Manager m(c, storage.stores());
  serve_with_bytes(m, storage, {1, 2, 3});
  serve_with_bytes(m, storage, {10, 11, 12});
  serve_with_bytes(m, storage, {20, 21, 22});  // 1, 2, 3 now on disk
  ASSERT_EQ(m.find(2), Tier::kDisk);
  {  // flip a payload byte of block 2's file under the running manager
    const Key two = 2;
    std::fstream f(storage.disk->path_of_hash(std::as_bytes(std::span(&two, 1))),
                   std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(4096 + 5);
    f.put('\x7f');
  }
  std::vector<llmds::KVEventBatch<Key>> seen;
  m.events().subscribe([&](const llmds::KVEventBatch<Key>& b) { seen.push_back(b); });
  auto match = m.match(Keys{1, 2, 3});
  ASSERT_EQ(match.size(), 3u);
  const Ids blocks = m.onboard(match);
  ASSERT_EQ(blocks.size(), 1u);  // block 1 came back; 2 was corrupt, so 3 cannot be used either
  EXPECT_EQ(storage.read(blocks[0]), Storage::payload_of(1));
  EXPECT_EQ(storage.disk->stats().corrupt, 1u);
  EXPECT_EQ(m.stats()[2].failed_transfers, 1u);
  EXPECT_EQ(m.find(2), std::nullopt);
  EXPECT_EQ(m.find(3), Tier::kDisk);  // still there, unpinned
  EXPECT_EQ(m.stats()[2].in_use_blocks, 0u);
  bool removed = false;
  for (const auto& b : seen) {
    for (const auto& e : b.events) {
      if (const auto* r = std::get_if<llmds::BlockRemoved<Key>>(&e)) {
        removed |= r->tier == Tier::kDisk && r->block_hashes == Keys{2};
      }
    }
  }
  EXPECT_TRUE(removed);
  m.release(blocks);
  serve_with_bytes(m, storage, {1, 2, 3});  // recomputed and stored again
}

TEST(KVBlockManager, AFullDiskDropsTheOffloadAndNoEventClaimsIt) {
  const auto c = disk_config();
  Storage storage(c, "full");
  Manager m(c, storage.stores());
  serve_with_bytes(m, storage, {1, 2, 3});
  serve_with_bytes(m, storage, {4, 5, 6});  // 1, 2, 3 in host
  std::vector<llmds::KVEventBatch<Key>> seen;
  m.events().subscribe([&](const llmds::KVEventBatch<Key>& b) { seen.push_back(b); });
  storage.disk->inject_fault(llmds::DiskOp::kWrite, ENOSPC, 1);
  serve_with_bytes(m, storage, {7, 8, 9});  // 1, 2, 3 leave host for disk: the first write fails
  const auto disk_now = contents(m, Tier::kDisk);
  EXPECT_EQ(disk_now.size(), 2u);
  EXPECT_EQ(m.stats()[2].failed_transfers, 1u);
  EXPECT_EQ(storage.disk->stats().no_space, 1u);
  for (const auto& b : seen) {
    for (const auto& e : b.events) {
      if (const auto* st = std::get_if<llmds::BlockStored<Key>>(&e); st != nullptr && st->tier == Tier::kDisk) {
        for (const Key k : st->block_hashes) EXPECT_TRUE(disk_now.contains(k)) << k;
      }
    }
  }
  serve_with_bytes(m, storage, {10, 11, 12});  // and the manager keeps serving
}

TEST(KVBlockManager, ARestartedManagerFindsItsDiskBlocksAgain) {
  const auto c = disk_config();
  Storage storage(c, "restart");
  std::set<Key> on_disk;
  {
    Manager m(c, storage.stores());
    serve_with_bytes(m, storage, {1, 2, 3});
    serve_with_bytes(m, storage, {4, 5, 6});
    serve_with_bytes(m, storage, {7, 8, 9});
    on_disk = contents(m, Tier::kDisk);
    ASSERT_EQ(on_disk, (std::set<Key>{1, 2, 3}));
  }
  storage.disk.reset();
  storage.open_disk();
  Manager again(c, storage.stores());
  EXPECT_EQ(contents(again, Tier::kDisk), on_disk);
  const auto announced = again.events().replay_from(0);
  ASSERT_EQ(announced.batches.size(), 1u);
  const auto& events = announced.batches[0].events;
  ASSERT_EQ(events.size(), 4u);
  EXPECT_TRUE(std::holds_alternative<llmds::AllBlocksCleared>(events[0]));
  std::set<Key> stored;
  for (std::size_t i = 1; i < 4; ++i) {
    const auto& st = std::get<llmds::BlockStored<Key>>(events[i]);
    EXPECT_EQ(st.tier, Tier::kDisk);
    EXPECT_EQ(st.token_ids.size(), Storage::kGeometry.tokens);
    if (st.block_hashes[0] == 2) {
      EXPECT_EQ(st.parent_hash, Key{1});
    }
    stored.insert(st.block_hashes[0]);
  }
  EXPECT_EQ(stored, on_disk);
  serve_with_bytes(again, storage, {1, 2, 3});  // checks the bytes that came back from disk
  EXPECT_EQ(again.stats()[2].onboarded_blocks, 3u);
}

TEST(KVBlockManager, StoresThatDoNotFitTheConfigAreRefused) {
  auto c = disk_config();
  Storage storage(c, "refused");
  EXPECT_THROW(Manager(c, {storage.primary.get(), nullptr, storage.disk.get()}), std::invalid_argument);
  auto bigger = c;
  bigger.primary_blocks = 4;  // the primary store has 3 slots
  EXPECT_THROW(Manager(bigger, storage.stores()), std::invalid_argument);
  llmds::BlockGeometry other = Storage::kGeometry;
  other.row_bytes = 4;
  llmds::MemoryStore<llmds::ContiguousLayout> odd(llmds::ContiguousLayout(other, 3));
  EXPECT_THROW(Manager(c, {storage.primary.get(), &odd, storage.disk.get()}), std::invalid_argument);
  auto no_disk = c;
  no_disk.disk_blocks = 0;
  EXPECT_THROW(Manager(no_disk, storage.stores()), std::invalid_argument);
}

TEST(TransferQueue, TakesTheHighestPriorityFirstAndDropsTheLowestWhenFull) {
  llmds::TransferQueue<int> q(3);
  EXPECT_TRUE(q.push(1, 35).queued);
  EXPECT_TRUE(q.push(2, 80).queued);
  EXPECT_TRUE(q.push(3, 35).queued);
  auto r = q.push(4, 10);  // full, and lower than everything queued: dropped itself
  EXPECT_FALSE(r.queued);
  EXPECT_EQ(r.dropped, 4);
  r = q.push(5, 35);  // equal to the lowest: dropped itself too (the older one stays)
  EXPECT_EQ(r.dropped, 5);
  r = q.push(6, 60);  // higher: the oldest of the lowest gives way
  EXPECT_TRUE(r.queued);
  EXPECT_EQ(r.dropped, 1);
  EXPECT_EQ(q.dropped(), 3u);
  EXPECT_EQ(q.pop_batch(2), (std::vector<int>{2, 6}));
  EXPECT_EQ(q.drain(), (std::vector<int>{3}));
  EXPECT_TRUE(q.empty());
  EXPECT_EQ(q.high_water(), 3u);
  EXPECT_THROW(llmds::TransferQueue<int>(0), std::invalid_argument);
}

TEST(TransferQueue, FirstInFirstOutWithinAPriority) {
  llmds::TransferQueue<int> q(100);
  std::mt19937 rng(4);
  std::vector<std::pair<int, int>> pushed;  // (priority, value)
  for (int v = 0; v < 100; ++v) {
    const int p = static_cast<int>(rng() % 4) * 30;
    q.push(v, static_cast<llmds::RetentionPriority>(p));
    pushed.emplace_back(p, v);
  }
  std::stable_sort(pushed.begin(), pushed.end(), [](auto& a, auto& b) { return a.first > b.first; });
  std::vector<int> expected;
  for (const auto& [p, v] : pushed) expected.push_back(v);
  EXPECT_EQ(q.pop_batch(1000), expected);
}

// The disk worker running beside a serving thread: every onboarded block carries its own bytes
// whether it came from primary, host, the write queue or a file; after flush() the events tell
// exactly what every tier holds. Run under ThreadSanitizer in CI.
TEST(KVBlockManager, AsynchronousDiskWritesKeepEveryBlockIntact) {
  auto c = config(4, 4, 64);
  c.block_size = Storage::kGeometry.tokens;
  c.offload_queue_blocks = 4;
  c.offload_batch_blocks = 2;
  Storage storage(c, "async");
  Manager m(c, storage.stores());
  RouterModel router;
  router.next_seq = m.events().next_seq();
  std::mutex router_mu;
  m.events().subscribe([&](const llmds::KVEventBatch<Key>& b) {
    const std::lock_guard lock(router_mu);
    router.apply(b);
  });
  std::mt19937 rng(12);
  for (int step = 0; step < 400; ++step) {
    const Key conv = static_cast<Key>(rng() % 12);
    Keys keys;
    for (Key i = 0; i < 1 + static_cast<Key>(rng() % 3); ++i) keys.push_back(conv * 100 + i);
    serve_with_bytes(m, storage, keys);
    if (step == 200) {
      m.flush();
      EXPECT_TRUE(m.clear());  // with writes possibly in flight: they are discarded
    }
  }
  m.flush();
  const auto s = m.stats();
  EXPECT_EQ(s[2].queued_writes, 0u);
  EXPECT_GT(s[2].stored_blocks, 0u);
  EXPECT_GT(s[2].hit_blocks, 0u);
  EXPECT_LE(s[2].queue_high_water, 4u);
  // Copy times, per direction: host took copies from primary, disk from the worker's writes.
  ASSERT_TRUE(s[1].copy_in_us.has_value());
  ASSERT_TRUE(s[2].copy_in_us.has_value());
  EXPECT_LE(s[2].copy_in_us->p50, s[2].copy_in_us->p99);
  const std::lock_guard lock(router_mu);
  for (const Tier t : m.tiers()) EXPECT_EQ(router.held[t], contents(m, t)) << llmds::tier_name(t);
  // Every block the disk tier lists has its file.
  for (const Key k : contents(m, Tier::kDisk)) {
    EXPECT_TRUE(std::filesystem::exists(storage.disk->path_of_hash(std::as_bytes(std::span(&k, 1))))) << k;
  }
}

// A disk tier much smaller than the blocks passing through it: its evictions delete files on
// the worker, in order with its writes, so after flush() the files are exactly the tier's
// blocks, each intact, even for blocks written again soon after they were removed.
TEST(KVBlockManager, AFullDiskTierDeletesEvictedFilesOnTheWorkerAndKeepsTheRest) {
  auto c = config(2, 2, 6);
  c.block_size = Storage::kGeometry.tokens;
  c.offload_queue_blocks = 16;
  c.offload_batch_blocks = 3;
  Storage storage(c, "full-disk");
  {
    Manager m(c, storage.stores());
    std::mt19937 rng(5);
    for (int step = 0; step < 600; ++step) {
      const Key conv = static_cast<Key>(rng() % 40);
      serve_with_bytes(m, storage, {conv * 100, conv * 100 + 1});
      if (step % 4 == 3) m.flush();  // now and then, so that few writes are dropped from the queue
    }
    m.flush();
    const auto listed = contents(m, Tier::kDisk);
    EXPECT_EQ(listed.size(), 6u);
    std::set<Key> files;
    for (const auto& sub : std::filesystem::directory_iterator(storage.dir / "blocks")) {
      for (const auto& f : std::filesystem::directory_iterator(sub.path())) {
        // The name is the key's bytes in hex, least significant first; the keys here fit in two.
        const std::string hex = f.path().stem().string();
        files.insert(static_cast<Key>(std::stoul(hex.substr(0, 2), nullptr, 16) +
                                      (std::stoul(hex.substr(2, 2), nullptr, 16) << 8)));
      }
    }
    EXPECT_EQ(files, listed);
    EXPECT_GT(storage.disk->stats().removed, 100u);
    EXPECT_GT(storage.disk->stats().reused_files, 100u);
    EXPECT_EQ(storage.disk->stats().corrupt, 0u);
    EXPECT_EQ(m.stats()[2].failed_transfers, 0u);
  }
}

TEST(KVBlockManager, AFullWriteQueueDropsTheLowestPriorityBlockAndNobodyWaits) {
  auto c = config(1, 1, 64);
  c.block_size = Storage::kGeometry.tokens;
  c.offload_queue_blocks = 1;
  Storage storage(c, "backpressure");
  Manager m(c, storage.stores());
  for (Key k = 0; k < 200; ++k) serve_with_bytes(m, storage, {k});
  m.flush();
  const auto s = m.stats()[2];
  // 198 blocks left host for disk; each either reached it or was dropped from a full queue.
  EXPECT_EQ(s.stored_blocks + s.dropped_offloads, 198u);
  EXPECT_EQ(s.queue_high_water, 1u);
}

// Both workers running: disk writes in the background (compared after flush(); the disk tier is
// larger than the run's distinct blocks, so the order in which the worker commits them cannot
// change what it holds) and every onboarding copied by the onboarding worker. Run under
// ThreadSanitizer in CI.
TEST(KVBlockManager, RandomisedWithBothWorkersRunningMatchesANaiveModel) {
  for (const auto policy : {llmds::OffloadPolicy::kWriteBack, llmds::OffloadPolicy::kWriteThrough}) {
    auto c = config(6, 5, 40);
    c.block_size = Storage::kGeometry.tokens;
    c.offload_policy = policy;
    c.offload_queue_blocks = 64;
    c.offload_batch_blocks = 2;
    for (std::uint32_t seed = 31; seed <= 32; ++seed) {
      Storage storage(c, "workers-" + std::to_string(seed));
      randomised_run(c, seed, &storage, RunMode{.async_onboard = true});
      EXPECT_GT(storage.disk->stats().reads, 0u);
      EXPECT_EQ(storage.disk->stats().corrupt, 0u);
    }
  }
}

TEST(KVBlockManager, AsyncOnboardingCopiesEachBlockOnceForEveryRequestThatNeedsIt) {
  auto c = disk_config();
  Storage storage(c, "async-onboard");
  Manager m(c, storage.stores());
  serve_with_bytes(m, storage, {1, 2, 3});
  serve_with_bytes(m, storage, {10, 11, 12});  // 1, 2, 3 to host
  serve_with_bytes(m, storage, {20, 21, 22});  // and on to disk
  ASSERT_EQ(m.find(1), Tier::kDisk);
  auto a = m.match(Keys{1, 2, 3});
  auto b = m.match(Keys{1, 2});
  auto first = m.onboard_async(a);
  auto second = m.onboard_async(b);  // shares the copies of 1 and 2
  EXPECT_FALSE(a.open());
  EXPECT_THROW((void)m.onboard_async(a), std::invalid_argument);
  const Ids x = m.finish(first);
  const Ids y = m.finish(second);
  EXPECT_TRUE(first.ready());
  EXPECT_FALSE(first.open());
  EXPECT_THROW((void)m.finish(first), std::invalid_argument);
  ASSERT_EQ(x.size(), 3u);
  ASSERT_EQ(y, Ids(x.begin(), x.begin() + 2));
  for (std::size_t i = 0; i < x.size(); ++i) EXPECT_EQ(storage.read(x[i]), Storage::payload_of(Key(i) + 1));
  const auto& pool = m.pool(Tier::kPrimary);
  EXPECT_EQ(pool.refcount(x[0]), 2u);
  EXPECT_EQ(pool.refcount(x[2]), 1u);
  const auto s = m.stats();
  EXPECT_EQ(s[2].onboarded_blocks, 3u);  // not 5
  EXPECT_EQ(storage.disk->stats().reads, 3u);
  EXPECT_EQ(s[2].in_use_blocks, 0u);     // every pin given back
  EXPECT_TRUE(s[0].copy_in_us.has_value());
  m.release(Ids(y.rbegin(), y.rend()));
  m.release(Ids(x.rbegin(), x.rend()));
  EXPECT_EQ(m.stats()[0].in_use_blocks, 0u);
  // A block registered in primary while its copy was under way is shared, not stored twice.
  serve_with_bytes(m, storage, {30, 31, 32});
  serve_with_bytes(m, storage, {40, 41, 42});
  serve_with_bytes(m, storage, {50, 51, 52});  // 30.. on disk
  ASSERT_EQ(m.find(30), Tier::kDisk);
  auto c1 = m.match(Keys{30});
  auto c2 = m.match(Keys{30});
  auto o1 = m.onboard_async(c1);
  const Ids sync = m.onboard(c2);  // copies 30 itself, under the lock
  const Ids async = m.finish(o1);
  EXPECT_EQ(async, sync);
  EXPECT_EQ(m.pool(Tier::kPrimary).refcount(sync[0]), 2u);
  m.release(sync);
  m.release(async);
  EXPECT_EQ(m.stats()[0].in_use_blocks, 0u);
  EXPECT_TRUE(m.clear());
}

TEST(KVBlockManager, AHashMatchedTwiceIsCopiedUpOnce) {
  auto c = disk_config();
  Storage storage(c, "async-twice");
  Manager m(c, storage.stores());
  serve_with_bytes(m, storage, {1, 2, 3});
  serve_with_bytes(m, storage, {10, 11, 12});
  serve_with_bytes(m, storage, {20, 21, 22});
  ASSERT_EQ(m.find(1), Tier::kDisk);
  auto match = m.match(Keys{1, 1});
  ASSERT_EQ(match.size(), 2u);
  auto o = m.onboard_async(match);
  const Ids blocks = m.finish(o);
  ASSERT_EQ(blocks.size(), 2u);
  EXPECT_EQ(blocks[0], blocks[1]);
  EXPECT_EQ(storage.read(blocks[0]), Storage::payload_of(1));
  EXPECT_EQ(m.stats()[0].in_use_blocks, 1u);  // one block, two references: nothing else held
  m.release(blocks);
  EXPECT_EQ(m.stats()[0].in_use_blocks, 0u);
  EXPECT_EQ(m.stats()[2].in_use_blocks, 0u);
}

TEST(KVBlockManager, AFailedCopyUpEndsTheRunForEveryRequestSharingIt) {
  auto c = disk_config();
  Storage storage(c, "async-corrupt");
  Manager m(c, storage.stores());
  serve_with_bytes(m, storage, {1, 2, 3});
  serve_with_bytes(m, storage, {10, 11, 12});
  serve_with_bytes(m, storage, {20, 21, 22});
  {
    const Key two = 2;
    std::fstream f(storage.disk->path_of_hash(std::as_bytes(std::span(&two, 1))),
                   std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(4096 + 9);
    f.put('\x11');
  }
  auto a = m.match(Keys{1, 2, 3});
  auto b = m.match(Keys{1, 2, 3});
  auto first = m.onboard_async(a);
  auto second = m.onboard_async(b);
  const Ids x = m.finish(first);
  const Ids y = m.finish(second);
  ASSERT_EQ(x.size(), 1u);  // 2 was corrupt: neither run goes past it
  EXPECT_EQ(y, x);
  EXPECT_EQ(storage.read(x[0]), Storage::payload_of(1));
  EXPECT_EQ(m.find(2), std::nullopt);
  // 3 was copied beside 2 and came through: it stays cached in primary, unused by either run.
  EXPECT_EQ(m.find(3), Tier::kPrimary);
  EXPECT_EQ(m.pool(Tier::kPrimary).refcount(*m.pool(Tier::kPrimary).find(3)), 0u);
  EXPECT_TRUE(contents(m, Tier::kDisk).contains(3));
  EXPECT_EQ(m.stats()[2].failed_transfers, 1u);
  EXPECT_EQ(m.stats()[2].in_use_blocks, 0u);
  EXPECT_EQ(m.pool(Tier::kPrimary).refcount(x[0]), 2u);
  m.release(x);
  m.release(y);
  EXPECT_EQ(m.stats()[0].in_use_blocks, 0u);  // 3's copy was given back too
}

// Several serving threads onboarding the same prefixes at once, both workers running: every
// run carries its own bytes, and nothing is left pinned or held. Run under ThreadSanitizer in CI.
void serve_from_three_threads(const llmds::KVBlockManagerConfig& c, const std::string& name) {
  Storage storage(c, name);
  Manager m(c, storage.stores());
  std::mutex storage_mu;  // the test's own writes and reads of primary slots
  std::vector<std::thread> threads;
  std::atomic<int> served{0};
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(40 + t);
      for (int step = 0; step < 150; ++step) {
        const Key conv = static_cast<Key>(rng() % 10);
        Keys keys;
        for (Key i = 0; i < 1 + static_cast<Key>(rng() % 3); ++i) keys.push_back(conv * 100 + i);
        auto match = m.match(keys);
        Manager::Onboarding o;
        try {
          o = m.onboard_async(match);
        } catch (const llmds::OutOfPages&) {
          m.cancel(match);
          continue;
        }
        Ids blocks = m.finish(o);
        Ids fresh;
        try {
          fresh = m.allocate(keys.size() - blocks.size());
        } catch (const llmds::OutOfPages&) {
        }
        {
          const std::lock_guard lock(storage_mu);
          for (std::size_t i = 0; i < blocks.size(); ++i) EXPECT_EQ(storage.read(blocks[i]), Storage::payload_of(keys[i]));
          for (std::size_t i = 0; i < fresh.size(); ++i) storage.write(fresh[i], keys[blocks.size() + i]);
        }
        if (!fresh.empty()) {
          const Keys rest(keys.begin() + static_cast<std::ptrdiff_t>(blocks.size()), keys.end());
          std::optional<Key> parent;
          if (!blocks.empty()) parent = keys[blocks.size() - 1];
          (void)m.register_blocks(fresh, rest, parent);
        }
        blocks.insert(blocks.end(), fresh.begin(), fresh.end());
        std::reverse(blocks.begin(), blocks.end());
        m.release(blocks);
        ++served;
      }
    });
  }
  for (auto& th : threads) th.join();
  m.flush();
  EXPECT_GT(served.load(), 300);
  const auto s = m.stats();
  for (const auto& t : s) EXPECT_EQ(t.in_use_blocks, 0u) << llmds::tier_name(t.tier);
  EXPECT_GT(s[1].onboarded_blocks + s[2].onboarded_blocks, 0u);
  EXPECT_EQ(storage.disk->stats().corrupt, 0u);
  if (c.reclaim_free_blocks == 0) return;
  // However the threads' timing went, once idle the reclaimer has left at least half its
  // reserve free, and an allocation of all of those sets it to work again.
  const std::size_t free = m.pool_stats(Tier::kPrimary).free_blocks;
  ASSERT_GE(free, (c.reclaim_free_blocks + 1) / 2);
  const Ids held = m.allocate(free);
  m.flush();
  EXPECT_GT(m.stats()[0].reclaimed_blocks, s[0].reclaimed_blocks);
  m.release(held);
}

TEST(KVBlockManager, ConcurrentAsyncOnboardingsKeepEveryBlockIntact) {
  auto c = config(16, 8, 64);
  c.block_size = Storage::kGeometry.tokens;
  c.offload_queue_blocks = 8;
  serve_from_three_threads(c, "async-threads");
}

// The same with the reclaimer moving primary blocks to host all along: a block it copies is
// never one a request is reading or writing. Run under ThreadSanitizer in CI.
TEST(KVBlockManager, ConcurrentRequestsWithTheReclaimerRunningKeepEveryBlockIntact) {
  auto c = config(16, 8, 64);
  c.block_size = Storage::kGeometry.tokens;
  c.offload_queue_blocks = 8;
  c.reclaim_free_blocks = 4;
  c.offload_batch_blocks = 2;
  serve_from_three_threads(c, "reclaim-threads");
}

TEST(KVBlockManager, RandomisedFiltersAndHostOnlyMatchANaiveModel) {
  auto c = config(5, 4, 6);
  c.disk_min_uses = 2;
  c.offload_min_priority = 30;
  for (std::uint32_t seed = 1; seed <= 3; ++seed) randomised_run(c, seed);
  auto host_only = config(5, 6, 0);
  for (std::uint32_t seed = 7; seed <= 9; ++seed) randomised_run(host_only, seed);
}

// The reclaimer (reclaim_free_blocks > 0) moves primary's next victims to host between calls;
// flushed after every call, the tiers hold what the model says, and every block onboarded
// from host carries its own bytes (host is layer-separate, so each copy scatters).
TEST(KVBlockManager, RandomisedWithTheReclaimerRunningMatchesANaiveModel) {
  for (const auto policy : {llmds::OffloadPolicy::kWriteBack, llmds::OffloadPolicy::kWriteThrough}) {
    auto c = config(6, 5, 8);
    c.offload_policy = policy;
    c.reclaim_free_blocks = 2;
    for (std::uint32_t seed = 41; seed <= 42; ++seed) randomised_run(c, seed);
    c.block_size = Storage::kGeometry.tokens;
    c.offload_queue_blocks = 0;
    Storage storage(c, "reclaim-" + std::string(llmds::offload_policy_name(policy)));
    randomised_run(c, 43, &storage);
    EXPECT_EQ(storage.disk->stats().corrupt, 0u);
  }
  auto floor = config(6, 5, 0);
  floor.reclaim_free_blocks = 1;
  floor.offload_min_priority = 30;
  for (std::uint32_t seed = 44; seed <= 45; ++seed) randomised_run(floor, seed);
}

// counters(tier) is stats()'s entry for the tier without the copy-time percentiles.
void expect_counters_are_stats(const Manager& m) {
  for (const llmds::TierStats& all : m.stats()) {
    const llmds::TierStats counters = m.counters(all.tier);
    EXPECT_FALSE(counters.copy_in_us.has_value());
    EXPECT_FALSE(counters.copy_out_us.has_value());
    std::vector<std::string> expected, got;
    const auto collect = [](std::vector<std::string>& out) {
      return [&out](std::string_view name, const auto& value) {
        if constexpr (std::is_arithmetic_v<std::decay_t<decltype(value)>> ||
                      std::is_same_v<std::decay_t<decltype(value)>, std::string_view>) {
          out.push_back(fmt::format("{}={}", name, value));
        }
      };
    };
    all.for_each_field(collect(expected));
    counters.for_each_field(collect(got));
    EXPECT_EQ(got, expected) << llmds::tier_name(all.tier);
    EXPECT_GE(expected.size(), 18u);  // every counter took part
  }
}

TEST(KVBlockManager, TheReclaimerKeepsPrimaryBlocksFreeSoCallersNeverCopyDown) {
  auto c = config(10, 32);
  c.block_size = Storage::kGeometry.tokens;
  c.reclaim_free_blocks = 6;  // it starts below 3 free, and stops at 6
  Storage storage(c, "reclaim-free");
  Manager m(c, storage.stores());
  for (Key conv = 0; conv < 12; ++conv) {
    serve_with_bytes(m, storage, Keys{conv * 100, conv * 100 + 1, conv * 100 + 2});
    m.flush();
    EXPECT_GE(m.pool_stats(Tier::kPrimary).free_blocks, 3u) << "after conversation " << conv;
  }
  const auto s = m.stats();
  EXPECT_GT(s[0].reclaimed_blocks, 0u);
  EXPECT_EQ(s[0].evicted_blocks, s[0].reclaimed_blocks);  // every eviction was the reclaimer's
  EXPECT_EQ(s[1].stored_blocks, s[0].reclaimed_blocks);
  ASSERT_TRUE(s[1].copy_in_us.has_value());
  expect_counters_are_stats(m);
  for (Key conv = 0; conv < 12; ++conv) serve_with_bytes(m, storage, Keys{conv * 100, conv * 100 + 1, conv * 100 + 2});
  EXPECT_GT(m.stats()[1].onboarded_blocks, 0u);
}

// A host store whose copies wait at a gate, so that a test can act while the reclaimer is in
// the middle of one.
class GatedStore final : public llmds::MemoryBlockStore {
 public:
  explicit GatedStore(std::size_t slots) : inner_(llmds::ContiguousLayout(Storage::kGeometry, slots)) {}
  const llmds::BlockGeometry& geometry() const noexcept override { return inner_.geometry(); }
  std::size_t num_slots() const noexcept override { return inner_.num_slots(); }
  llmds::LayoutKind layout_kind() const noexcept override { return inner_.layout_kind(); }
  std::byte* host_base() const noexcept override { return inner_.host_base(); }
  void list_pieces(std::size_t slot, std::vector<llmds::BlockPiece>& out) const override { inner_.list_pieces(slot, out); }
  void copy_from(const llmds::MemoryBlockStore& src, std::size_t src_slot, std::size_t slot) override {
    std::unique_lock lock(mu_);
    ++copying_;
    cv_.notify_all();
    cv_.wait(lock, [&] { return open_; });
    inner_.copy_from(src, src_slot, slot);
  }
  void read_block(std::size_t slot, std::byte* out) const override { inner_.read_block(slot, out); }
  void write_block(std::size_t slot, const std::byte* in) override { inner_.write_block(slot, in); }

  void wait_for_copy() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return copying_ > 0; });
  }
  void open() {
    const std::lock_guard lock(mu_);
    open_ = true;
    cv_.notify_all();
  }

 private:
  llmds::MemoryStore<llmds::ContiguousLayout> inner_;
  std::mutex mu_;
  std::condition_variable cv_;
  int copying_ = 0;
  bool open_ = false;
};

TEST(KVBlockManager, ABlockMatchedWhileTheReclaimerCopiesItStaysInPrimary) {
  auto c = config(4, 8);
  c.block_size = Storage::kGeometry.tokens;
  c.reclaim_free_blocks = 1;
  Storage storage(c, "reclaim-gate");
  GatedStore host(c.host_blocks);
  Manager m(c, llmds::TierStores{storage.primary.get(), &host, nullptr});
  serve_with_bytes(m, storage, Keys{1, 2, 3});  // released tail first: 3 is the next victim
  const Ids other = m.allocate(1);              // no block free: the reclaimer takes 3
  host.wait_for_copy();
  EXPECT_EQ(m.primary_available(), 3u);  // 1 and 2, and 3 on its way out
  EXPECT_EQ(m.counters(Tier::kPrimary).cached_blocks, 3u);
  expect_counters_are_stats(m);
  auto match = m.match(Keys{1, 2, 3});
  ASSERT_EQ(match.count(Tier::kPrimary), 3u);  // still in primary while it is copied
  host.open();
  m.flush();
  EXPECT_EQ(m.find(3), Tier::kPrimary);  // taken meanwhile: it stays, its host copy goes back
  EXPECT_TRUE(contents(m, Tier::kHost).empty());
  EXPECT_EQ(m.stats()[0].reclaimed_blocks, 0u);
  EXPECT_EQ(m.stats()[1].in_use_blocks, 0u);
  const Ids blocks = m.onboard(match);
  for (std::size_t i = 0; i < blocks.size(); ++i) EXPECT_EQ(storage.read(blocks[i]), Storage::payload_of(Key(i) + 1));
  const Ids back(blocks.rbegin(), blocks.rend());
  m.release(back);  // 3 first: the next victim again, and this time nobody takes it
  m.flush();
  EXPECT_EQ(contents(m, Tier::kHost), std::set<Key>{3});
  EXPECT_EQ(m.stats()[0].reclaimed_blocks, 1u);
  m.release(other);
  auto again = m.match(Keys{1, 2, 3});
  ASSERT_EQ(again.count(Tier::kHost), 1u);
  const Ids onboarded = m.onboard(again);
  ASSERT_EQ(onboarded.size(), 3u);
  EXPECT_EQ(storage.read(onboarded[2]), Storage::payload_of(3));
  m.release(onboarded);
}

// A host store whose copies and writes throw while `failing` is set, as a device store's would
// on a device error.
class ThrowingStore final : public llmds::MemoryBlockStore {
 public:
  explicit ThrowingStore(std::size_t slots) : inner_(llmds::ContiguousLayout(Storage::kGeometry, slots)) {}
  const llmds::BlockGeometry& geometry() const noexcept override { return inner_.geometry(); }
  std::size_t num_slots() const noexcept override { return inner_.num_slots(); }
  llmds::LayoutKind layout_kind() const noexcept override { return inner_.layout_kind(); }
  std::byte* host_base() const noexcept override { return inner_.host_base(); }
  void list_pieces(std::size_t slot, std::vector<llmds::BlockPiece>& out) const override {
    if (failing) throw std::runtime_error("device error");
    inner_.list_pieces(slot, out);
  }
  void copy_from(const llmds::MemoryBlockStore& src, std::size_t src_slot, std::size_t slot) override {
    if (failing) throw std::runtime_error("device error");
    inner_.copy_from(src, src_slot, slot);
  }
  void read_block(std::size_t slot, std::byte* out) const override {
    if (failing) throw std::runtime_error("device error");
    inner_.read_block(slot, out);
  }
  void write_block(std::size_t slot, const std::byte* in) override {
    if (failing) throw std::runtime_error("device error");
    inner_.write_block(slot, in);
  }
  std::atomic<bool> failing{false};

 private:
  llmds::MemoryStore<llmds::ContiguousLayout> inner_;
};

// A store that throws on the workers' threads fails those copies, counted; the workers live on,
// nothing is left held, and the manager keeps serving once the store is back.
TEST(KVBlockManager, AStoreThatThrowsFailsTheWorkersCopiesAndNothingElse) {
  auto c = config(4, 8);
  c.block_size = Storage::kGeometry.tokens;
  c.reclaim_free_blocks = 1;
  Storage storage(c, "reclaim-throw");
  ThrowingStore host(c.host_blocks);
  Manager m(c, llmds::TierStores{storage.primary.get(), &host, nullptr});
  host.failing = true;
  serve_with_bytes(m, storage, Keys{1, 2, 3});
  const Ids other = m.allocate(1);  // the reclaimer takes 3, and its copy throws
  m.flush();
  EXPECT_EQ(m.find(3), std::nullopt);  // evicted all the same, without a host copy
  EXPECT_GE(m.stats()[1].failed_transfers, 1u);
  EXPECT_EQ(m.stats()[1].in_use_blocks, 0u);
  host.failing = false;
  m.release(other);
  serve_with_bytes(m, storage, Keys{10, 11, 12});  // pushes 1 and 2 to host through the reclaimer
  m.flush();
  ASSERT_EQ(m.find(1), Tier::kHost);
  host.failing = true;  // the onboarding worker's copy up throws now
  auto match = m.match(Keys{1, 2});
  auto o = m.onboard_async(match);
  const Ids run = m.finish(o);
  EXPECT_TRUE(run.empty());  // the run ends at the first failed copy
  m.release(run);
  host.failing = false;
  m.flush();  // the reclaimer, woken by the onboarding's allocation, may still hold a host slot
  EXPECT_GE(m.stats()[1].failed_transfers, 2u);
  for (const auto& t : m.stats()) EXPECT_EQ(t.in_use_blocks, 0u) << llmds::tier_name(t.tier);
  serve_with_bytes(m, storage, Keys{2, 3});
}

TEST(KVBlockManager, AnAllocationWaitsForTheBlocksTheReclaimerIsMovingOut) {
  auto c = config(4, 8);
  c.block_size = Storage::kGeometry.tokens;
  c.reclaim_free_blocks = 3;
  c.offload_batch_blocks = 4;
  Storage storage(c, "reclaim-wait");
  GatedStore host(c.host_blocks);
  Manager m(c, llmds::TierStores{storage.primary.get(), &host, nullptr});
  serve_with_bytes(m, storage, Keys{1, 2, 3, 4});  // every block cached, none free
  host.wait_for_copy();                             // the reclaimer holds three of them
  EXPECT_EQ(m.primary_available(), 4u);
  EXPECT_EQ(m.pool_stats(Tier::kPrimary).cached_blocks, 4u);  // its holds count as cached
  std::thread opener([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    host.open();
  });
  const Ids all = m.allocate(4);  // needs the reclaimer's three: waits for them, then evicts
  opener.join();
  EXPECT_EQ(all.size(), 4u);
  m.release(all);
  m.flush();
  EXPECT_EQ(contents(m, Tier::kHost), (std::set<Key>{1, 2, 3, 4}));
}

}  // namespace
