// KVBlockManager's remote tier (TierStores::remote): blocks registered by one manager are put
// into a shared store, and another manager reads them back with onboard_remote. The store here
// is an in-memory model with switches for every failure a network store has; the same paths
// against a real Redis server are in test_redis_store.cpp.
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include <gtest/gtest.h>

#include "llmds/core/errors.hpp"
#include "llmds/kv/tiered/kv_block_manager.hpp"
#include "llmds/kv/tiered/memory_store.hpp"

namespace {

using Key = std::int64_t;
using Keys = std::vector<Key>;
using Ids = std::vector<llmds::BlockId>;
using Manager = llmds::KVBlockManager<Key>;
using llmds::Tier;

constexpr llmds::BlockGeometry kGeometry{2, 3, 2, 8, llmds::ScalarType::kFloat32};

// A shared store in memory: what a Redis server holds, with the failures one has.
class FakeRemote final : public llmds::RemoteBlockStore {
 public:
  const llmds::BlockGeometry& geometry() const noexcept override { return geometry_; }
  std::size_t lookup(std::span<const std::span<const std::byte>> hashes) override {
    const std::lock_guard lock(mu_);
    if (throw_) throw std::runtime_error("device error");
    if (down_) return 0;
    std::size_t n = 0;
    while (n < hashes.size() && blocks_.contains(name(hashes[n]))) ++n;
    return n;
  }
  std::vector<bool> put(std::span<const llmds::RemoteBlock> blocks) override {
    std::unique_lock lock(mu_);
    ++puts_;
    cv_.notify_all();
    cv_.wait(lock, [&] { return open_; });
    if (throw_) throw std::runtime_error("device error");
    std::vector<bool> out;
    for (const auto& b : blocks) {
      if (!down_) blocks_[name(b.hash)] = std::vector<std::byte>(b.bytes.begin(), b.bytes.end());
      out.push_back(!down_);
    }
    return out;
  }
  std::vector<bool> get(std::span<const std::span<const std::byte>> hashes, std::span<std::byte* const> out) override {
    const std::lock_guard lock(mu_);
    if (throw_) throw std::runtime_error("device error");
    std::vector<bool> read;
    for (std::size_t i = 0; i < hashes.size(); ++i) {
      const auto it = blocks_.find(name(hashes[i]));
      const bool ok = !down_ && it != blocks_.end() && !(evict_on_get_ && *evict_on_get_ == i);
      if (ok) std::copy(it->second.begin(), it->second.end(), out[i]);
      read.push_back(ok);
    }
    return read;
  }
  void remove(std::span<const std::span<const std::byte>> hashes) override {
    const std::lock_guard lock(mu_);
    for (const auto& h : hashes) blocks_.erase(name(h));
  }

  void set_down(bool down) { const std::lock_guard lock(mu_); down_ = down; }
  void set_throwing(bool t) { const std::lock_guard lock(mu_); throw_ = t; }
  void evict_on_get(std::optional<std::size_t> i) { const std::lock_guard lock(mu_); evict_on_get_ = i; }
  void close_gate() { const std::lock_guard lock(mu_); open_ = false; }
  void open_gate() { const std::lock_guard lock(mu_); open_ = true; cv_.notify_all(); }
  void wait_for_put() { std::unique_lock lock(mu_); cv_.wait(lock, [&] { return puts_ > 0; }); }
  std::size_t size() { const std::lock_guard lock(mu_); return blocks_.size(); }

 private:
  static std::string name(std::span<const std::byte> h) { return {reinterpret_cast<const char*>(h.data()), h.size()}; }
  llmds::BlockGeometry geometry_ = kGeometry;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::vector<std::byte>> blocks_;
  bool down_ = false, throw_ = false, open_ = true;
  std::optional<std::size_t> evict_on_get_;
  int puts_ = 0;
};

// One server: its manager over memory stores and the shared remote store.
struct Server {
  llmds::MemoryStore<llmds::ContiguousLayout> primary;
  llmds::MemoryStore<llmds::ContiguousLayout> host;
  Manager manager;
  Server(FakeRemote& remote, std::size_t queue = 0, std::size_t primary_blocks = 8)
      : primary(llmds::ContiguousLayout(kGeometry, primary_blocks)),
        host(llmds::ContiguousLayout(kGeometry, 8)),
        manager(config(queue, primary_blocks), llmds::TierStores{&primary, &host, nullptr, &remote}) {}
  static llmds::KVBlockManagerConfig config(std::size_t queue, std::size_t primary_blocks) {
    llmds::KVBlockManagerConfig c;
    c.primary_blocks = primary_blocks;
    c.host_blocks = 8;
    c.block_size = kGeometry.tokens;
    c.remote_queue_blocks = queue;
    return c;
  }
  static std::vector<std::byte> payload_of(Key k) {
    std::vector<std::byte> b(kGeometry.block_bytes());
    for (std::size_t i = 0; i < b.size(); ++i) b[i] = static_cast<std::byte>((k * 37 + static_cast<Key>(i) * 11) & 0xFF);
    return b;
  }
  // Computes keys as a request would: writes each block's bytes, registers, releases.
  void compute(const Keys& keys) {
    const Ids blocks = manager.allocate(keys.size());
    for (std::size_t i = 0; i < keys.size(); ++i) primary.write_block(static_cast<std::size_t>(blocks[i]), payload_of(keys[i]).data());
    manager.register_blocks(blocks, keys);
    manager.release(Ids(blocks.rbegin(), blocks.rend()));
  }
  std::vector<std::byte> read(llmds::BlockId b) const {
    std::vector<std::byte> out(kGeometry.block_bytes());
    primary.read_block(static_cast<std::size_t>(b), out.data());
    return out;
  }
  llmds::TierStats remote_stats() const { return manager.counters(Tier::kRemote); }
};

TEST(KVBlockManagerRemote, ABlockOneServerComputedIsReadByAnother) {
  FakeRemote remote;
  Server a(remote, 16), b(remote, 16);
  std::vector<llmds::KVEventBatch<Key>> b_events;
  b.manager.events().subscribe([&](const auto& batch) { b_events.push_back(batch); });
  a.compute({1, 2, 3});
  a.manager.flush();  // the writer has put them
  EXPECT_EQ(remote.size(), 3u);
  EXPECT_EQ(a.remote_stats().stored_blocks, 3u);

  auto match = b.manager.match(Keys{1, 2, 3, 4});
  EXPECT_EQ(match.size(), 0u);  // nothing local
  b.manager.cancel(match);
  const Ids got = b.manager.onboard_remote(Keys{1, 2, 3, 4});
  ASSERT_EQ(got.size(), 3u);
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(b.read(got[i]), Server::payload_of(static_cast<Key>(i + 1)));
    EXPECT_EQ(b.manager.find(static_cast<Key>(i + 1)), Tier::kPrimary);
  }
  // Registered as if computed: a BlockStored in primary with the chain's parents.
  ASSERT_FALSE(b_events.empty());
  const auto& stored = std::get<llmds::BlockStored<Key>>(b_events.back().events.back());
  EXPECT_EQ(stored.block_hashes, (Keys{1, 2, 3}));
  EXPECT_EQ(stored.tier, Tier::kPrimary);
  EXPECT_FALSE(stored.parent_hash.has_value());
  const auto s = b.remote_stats();
  EXPECT_EQ(s.lookups, 4u);
  EXPECT_EQ(s.hit_blocks, 3u);
  EXPECT_EQ(s.onboarded_blocks, 3u);
  EXPECT_EQ(s.failed_transfers, 0u);
  // The blocks are the caller's: one reference each; a local match finds them now.
  for (const auto blk : got) EXPECT_EQ(b.manager.pool(Tier::kPrimary).refcount(blk), 1u);
  b.manager.release(Ids(got.rbegin(), got.rend()));
  auto again = b.manager.match(Keys{1, 2, 3});
  EXPECT_EQ(again.count(Tier::kPrimary), 3u);
  b.manager.cancel(again);
  // B never puts what it read (it is in the store already).
  b.manager.flush();
  EXPECT_EQ(b.remote_stats().stored_blocks, 0u);
  // stats() lists the remote tier last.
  EXPECT_EQ(b.manager.stats().back().tier, Tier::kRemote);
}

TEST(KVBlockManagerRemote, TheRunEndsAtTheFirstBlockThatDoesNotArrive) {
  FakeRemote remote;
  Server a(remote), b(remote);
  a.compute({1, 2, 3, 4});  // queue 0: put on this thread
  EXPECT_EQ(remote.size(), 4u);
  const std::size_t before = b.manager.primary_available();
  remote.evict_on_get(2);  // evicted between the lookup and the read
  const Ids got = b.manager.onboard_remote(Keys{1, 2, 3, 4}, Key{0});
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(b.manager.find(3), std::nullopt);
  EXPECT_EQ(b.manager.primary_available(), before - 2);  // the rest went back
  EXPECT_EQ(b.remote_stats().failed_transfers, 1u);
  EXPECT_EQ(b.remote_stats().onboarded_blocks, 2u);
  b.manager.release(Ids(got.rbegin(), got.rend()));
}

TEST(KVBlockManagerRemote, AStoreThatIsDownOrThrowsCostsTheHitsOnly) {
  FakeRemote remote;
  Server a(remote), b(remote);
  remote.set_down(true);
  a.compute({1, 2});  // dropped by the store: counted, the request unharmed
  EXPECT_EQ(a.remote_stats().failed_transfers, 2u);
  EXPECT_EQ(a.manager.find(1), Tier::kPrimary);
  remote.set_down(false);
  a.compute({3, 4});
  remote.set_throwing(true);
  EXPECT_TRUE(b.manager.onboard_remote(Keys{3, 4}).empty());
  a.compute({5});
  EXPECT_EQ(a.remote_stats().failed_transfers, 3u);
  remote.set_throwing(false);
  const Ids got = b.manager.onboard_remote(Keys{3, 4});
  EXPECT_EQ(got.size(), 2u);
  EXPECT_EQ(b.remote_stats().failed_transfers, 1u);  // the throwing lookup
  b.manager.release(Ids(got.rbegin(), got.rend()));
}

TEST(KVBlockManagerRemote, AFullQueueDropsPutsAndNobodyWaits) {
  FakeRemote remote;
  remote.close_gate();
  Server a(remote, /*queue=*/2);
  a.compute({1});        // the writer takes it and waits at the gate
  remote.wait_for_put();
  a.compute({2, 3, 4, 5});  // two wait in the queue, two are dropped
  const auto s = a.remote_stats();
  EXPECT_EQ(s.dropped_offloads, 2u);
  EXPECT_EQ(s.queue_high_water, 2u);
  remote.open_gate();
  a.manager.flush();
  EXPECT_EQ(a.remote_stats().stored_blocks, 3u);
  EXPECT_EQ(a.remote_stats().queued_writes, 0u);
}

TEST(KVBlockManagerRemote, AHashRegisteredMeanwhileIsSharedNotReadTwice) {
  FakeRemote remote;
  Server a(remote), b(remote);
  a.compute({1, 2});
  b.compute({1});  // b has 1 locally now
  const Ids got = b.manager.onboard_remote(Keys{1, 2});
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(*b.manager.pool(Tier::kPrimary).key_of(got[0]), 1);
  EXPECT_EQ(b.manager.pool(Tier::kPrimary).refcount(got[0]), 1u);  // the cached block, taken once
  EXPECT_EQ(b.remote_stats().onboarded_blocks, 1u);
  b.manager.release(Ids(got.rbegin(), got.rend()));
  EXPECT_EQ(b.manager.pool(Tier::kPrimary).in_use_blocks(), 0u);
}

TEST(KVBlockManagerRemote, TooFewPrimaryBlocksThrowAndChangeNothing) {
  FakeRemote remote;
  Server a(remote), b(remote, 0, /*primary_blocks=*/2);
  a.compute({1, 2, 3});
  const Ids held = b.manager.allocate(1);
  EXPECT_THROW((void)b.manager.onboard_remote(Keys{1, 2, 3}), llmds::OutOfPages);
  EXPECT_EQ(b.manager.primary_available(), 1u);
  EXPECT_THROW((void)b.manager.onboard_remote(Keys{1}, std::nullopt, std::vector<llmds::TokenId>{1}), std::invalid_argument);
  b.manager.release(held);
}

TEST(KVBlockManagerRemote, ARemoteStoreNeedsTheOtherStoresOfItsGeometry) {
  FakeRemote remote;
  llmds::KVBlockManagerConfig c = Server::config(0, 4);
  EXPECT_THROW(Manager(c, llmds::TierStores{nullptr, nullptr, nullptr, &remote}), std::invalid_argument);
  llmds::MemoryStore<llmds::ContiguousLayout> primary(llmds::ContiguousLayout({2, 3, 2, 4, llmds::ScalarType::kFloat32}, 4));
  llmds::MemoryStore<llmds::ContiguousLayout> host(llmds::ContiguousLayout({2, 3, 2, 4, llmds::ScalarType::kFloat32}, 8));
  EXPECT_THROW(Manager(c, llmds::TierStores{&primary, &host, nullptr, &remote}), std::invalid_argument);
  Manager no_remote(Server::config(0, 4));
  EXPECT_TRUE(no_remote.onboard_remote(Keys{1, 2}).empty());
}

}  // namespace
