// The KV block manager's configuration, the stores it is lent and the figures it reports
// (kv/tiered/kv_block_manager.hpp has the manager itself and the essay).
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <stdexcept>
#include <string_view>

#include <fmt/format.h>

#include "llmds/core/statistics.hpp"
#include "llmds/core/types.hpp"
#include "llmds/kv/eviction_policy.hpp"
#include "llmds/kv/tiered/disk_store.hpp"
#include "llmds/kv/tiered/memory_store.hpp"
#include "llmds/kv/tiered/remote_store.hpp"
#include "llmds/kv/tiered/tier.hpp"

namespace llmds {

enum class OffloadPolicy : std::uint8_t { kWriteBack, kWriteThrough };

[[nodiscard]] constexpr std::string_view offload_policy_name(OffloadPolicy p) noexcept {
  return p == OffloadPolicy::kWriteBack ? "write-back" : "write-through";
}

struct KVBlockManagerConfig {
  std::size_t primary_blocks = 0;   // slots of the primary tier (the KV arena)
  std::size_t host_blocks = 0;      // 0: no host tier
  std::size_t disk_blocks = 0;      // 0: no disk tier
  std::uint32_t block_size = 16;    // tokens per block
  std::size_t block_bytes = 0;      // bytes of one block's keys and values, for the byte counters
  OffloadPolicy offload_policy = OffloadPolicy::kWriteBack;
  RetentionPriority offload_min_priority = 0;  // lower-priority blocks are dropped, not offloaded
  std::uint32_t disk_min_uses = 0;             // 0 or 1: every offloaded block may go to disk
  std::uint32_t filter_width = 1u << 20;       // counters per row of the use-count sketch
  std::size_t event_log_batches = 10'000;      // batches kept for replay; 0: no events at all
  // Disk writes wait in a bounded queue for a background worker, so that no caller ever waits
  // for the disk on a down-transfer; 0 writes on the calling thread instead (deterministic).
  std::size_t offload_queue_blocks = 64;
  std::size_t offload_batch_blocks = 8;  // blocks a worker takes from the queue at a time
  // With a host tier: a background reclaimer keeps this many primary blocks free by moving the
  // next ones in primary's eviction order to host ahead of need, so that an allocation seldom
  // evicts (and copies a block down) on the calling thread. It starts when fewer than half are
  // free and stops when all are. 0: no reclaimer; evictions copy on the calling thread
  // (deterministic).
  std::size_t reclaim_free_blocks = 0;
  // With a remote store (TierStores::remote, shared by many servers): every block registered in
  // primary is also put there by a background worker, through a queue of this many blocks (a
  // full queue drops the put, counted); 0 puts on the calling thread instead (deterministic).
  std::size_t remote_queue_blocks = 256;

  void validate() const {
    constexpr auto kMaxBlocks = static_cast<std::size_t>(std::numeric_limits<BlockId>::max());
    auto check_blocks = [&](std::size_t n, std::string_view name, bool may_be_zero) {
      if ((n == 0 && !may_be_zero) || n > kMaxBlocks) {
        throw std::invalid_argument(fmt::format("KVBlockManagerConfig.{} must be in [{}, 2^31 - 1], got {}",
                                                name, may_be_zero ? 0 : 1, n));
      }
    };
    check_blocks(primary_blocks, "primary_blocks", false);
    check_blocks(host_blocks, "host_blocks", true);
    check_blocks(disk_blocks, "disk_blocks", true);
    if (block_size == 0) throw std::invalid_argument("KVBlockManagerConfig.block_size must be at least 1");
    if (offload_min_priority > kMaxRetentionPriority) {
      throw std::invalid_argument(fmt::format("KVBlockManagerConfig.offload_min_priority must be in [0, {}], got {}",
                                              kMaxRetentionPriority, unsigned{offload_min_priority}));
    }
    if (disk_min_uses > 1 && filter_width == 0) {
      throw std::invalid_argument("KVBlockManagerConfig.filter_width must be at least 1 when disk_min_uses > 1");
    }
    if (reclaim_free_blocks > 0 && (host_blocks == 0 || reclaim_free_blocks >= primary_blocks)) {
      throw std::invalid_argument(fmt::format(
          "KVBlockManagerConfig.reclaim_free_blocks needs a host tier and must be below primary_blocks ({}), got {}",
          primary_blocks, reclaim_free_blocks));
    }
    if (offload_batch_blocks == 0) {
      throw std::invalid_argument("KVBlockManagerConfig.offload_batch_blocks must be at least 1");
    }
  }
};

namespace detail {

// The last 1024 copy times of one direction of a tier, for percentiles.
class LatencyWindow {
 public:
  void add(double us) noexcept {
    samples_[next_] = us;
    next_ = (next_ + 1) % kWindow;
    count_ = std::min(count_ + 1, kWindow);
  }
  [[nodiscard]] std::optional<Percentiles> percentiles() const {
    if (count_ == 0) return std::nullopt;
    return compute_percentiles(std::span<const double>(samples_.data(), count_));
  }

 private:
  static constexpr std::size_t kWindow = 1024;
  std::array<double, kWindow> samples_{};
  std::size_t next_ = 0;
  std::size_t count_ = 0;
};

}  // namespace detail

/// The bytes behind the tiers (kv/tiered/memory_store.hpp, disk_store.hpp), lent to the manager
/// (the caller keeps them alive). Either none (the manager keeps metadata only, as a replay
/// does) or one for every tier, all of one geometry.
struct TierStores {
  MemoryBlockStore* primary = nullptr;
  MemoryBlockStore* host = nullptr;
  DiskStore* disk = nullptr;
  /// The remote tier: a store many servers share (kv/tiered/redis_store.hpp). It needs the
  /// other stores (blocks travel with their bytes), of its geometry.
  RemoteBlockStore* remote = nullptr;
};

/// One tier's figures. Counters run over the manager's life.
struct TierStats {
  Tier tier = Tier::kPrimary;
  std::size_t capacity_blocks = 0;
  std::size_t cached_blocks = 0;      // registered, evictable
  std::size_t in_use_blocks = 0;      // held by requests or pinned by matches
  std::uint64_t lookups = 0;          // hashes looked up in this tier (the tiers above missed)
  std::uint64_t hit_blocks = 0;       // of those, found here
  std::uint64_t hit_tokens = 0;       // hit_blocks x block_size
  std::uint64_t stored_blocks = 0;    // blocks that entered the tier (registered or offloaded)
  std::uint64_t evicted_blocks = 0;   // blocks evicted to make room
  std::uint64_t reclaimed_blocks = 0; // of those, evicted ahead of need by the reclaimer
  std::uint64_t onboarded_blocks = 0; // blocks copied from this tier up into primary
  std::uint64_t dropped_offloads = 0; // offloads to this tier not done: no room, priority floor
  std::uint64_t filter_rejected = 0;  // offloads refused by the disk use-count filter
  std::uint64_t failed_transfers = 0; // copies into or out of the tier that failed (disk full,
                                      // I/O error, a corrupt file): the block was not moved
  std::uint64_t bytes_in = 0;         // block_bytes x blocks copied into the tier
  std::uint64_t bytes_out = 0;        // block_bytes x blocks copied out of it
  std::size_t queued_writes = 0;      // writes waiting for the background worker (disk)
  std::size_t queue_high_water = 0;   // the most that ever waited
  // Microseconds per block copied into / out of the tier (with stores), over the last 1024
  // copies each way; none before the first.
  std::optional<Percentiles> copy_in_us;
  std::optional<Percentiles> copy_out_us;

  template <class Visit>
  void for_each_field(Visit&& visit) const {
    visit("tier", tier_name(tier));
    visit("capacity_blocks", capacity_blocks);
    visit("cached_blocks", cached_blocks);
    visit("in_use_blocks", in_use_blocks);
    visit("lookups", lookups);
    visit("hit_blocks", hit_blocks);
    visit("hit_tokens", hit_tokens);
    visit("stored_blocks", stored_blocks);
    visit("evicted_blocks", evicted_blocks);
    visit("reclaimed_blocks", reclaimed_blocks);
    visit("onboarded_blocks", onboarded_blocks);
    visit("dropped_offloads", dropped_offloads);
    visit("filter_rejected", filter_rejected);
    visit("failed_transfers", failed_transfers);
    visit("bytes_in", bytes_in);
    visit("bytes_out", bytes_out);
    visit("queued_writes", queued_writes);
    visit("queue_high_water", queue_high_water);
    visit("copy_in_us", copy_in_us);
    visit("copy_out_us", copy_out_us);
  }
};

}  // namespace llmds
