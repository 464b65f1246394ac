// Replaying real request traces through a prefix cache (BlockPool), so that its hit rates can
// be compared like for like with the block pools of serving engines.
//
// The Mooncake FAST'25 traces give, per request, its prompt length, output length and one hash
// id per 512-token block of the prompt. The ids are prefix-chained (equal ids at position i mean
// equal prefixes through block i), which is exactly what a BlockPool registers, so the replay
// feeds them to the pool as keys directly.
//
// The protocol (docs/kv-cache.md, "Trace replay"): requests are served one after
// another in trace order; a request looks up its full prompt blocks (input_length / 512), of
// which at most (input_length - 1) / 512 may hit, since at least one prompt token is always
// computed; it holds ceil((input + output) / 512) blocks while it runs, the missed full prompt
// blocks registered under their ids and the rest (partial prompt block, decode blocks) without
// a key; at completion it releases its blocks tail first. Hit rate = blocks served from cache /
// full prompt blocks looked up.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "llmds/kv/tiered/kv_block_manager.hpp"

namespace llmds {

/// One line of a Mooncake trace.
struct MooncakeRequest {
  std::int64_t timestamp_ms = 0;
  std::int64_t input_length = 0;   // prompt tokens
  std::int64_t output_length = 0;  // generated tokens
  std::vector<std::int64_t> hash_ids;  // one per 512-token prompt block, prefix-chained
};

/// Parses JSON Lines text in the Mooncake trace format: one object per line with integer fields
/// timestamp, input_length, output_length and an integer array hash_ids (other fields with
/// integer or integer-array values are ignored; blank lines are skipped). Throws
/// std::invalid_argument naming the line on anything else: a key given twice, a known key of the
/// wrong type, a negative length.
std::vector<MooncakeRequest> parse_mooncake_trace(std::string_view text);

/// Reads and parses a trace file. Throws llmds::IOError if it cannot be read.
std::vector<MooncakeRequest> load_mooncake_trace(const std::filesystem::path& path);

struct PrefixCacheReplayConfig {
  std::size_t capacity_blocks = 0;  // every block counts, cached or in use
  std::size_t block_size = 512;     // tokens per block; the Mooncake traces hash 512-token blocks

  void validate() const;
};

struct PrefixCacheReplayResult {
  std::size_t requests = 0;
  std::size_t capacity_blocks = 0;
  std::uint64_t lookup_blocks = 0;     // full prompt blocks looked up
  std::uint64_t hit_blocks = 0;        // of those, served from cache
  std::uint64_t allocated_blocks = 0;  // blocks written: missed prompt blocks, partial and decode
  std::uint64_t evictions = 0;         // cached blocks evicted to make room
  double seconds = 0.0;                // wall time of the replay loop alone

  [[nodiscard]] double hit_rate() const noexcept {
    return lookup_blocks == 0 ? 0.0 : double(hit_blocks) / double(lookup_blocks);
  }
  [[nodiscard]] double microseconds_per_request() const noexcept {
    return requests == 0 ? 0.0 : seconds * 1e6 / double(requests);
  }
};

/// Replays requests through a fresh BlockPool of config.capacity_blocks blocks under the
/// protocol above. Throws std::invalid_argument for a request with fewer hash ids than full
/// prompt blocks, and llmds::OutOfPages for one that needs more blocks than the capacity.
PrefixCacheReplayResult replay_prefix_cache(std::span<const MooncakeRequest> requests,
                                            const PrefixCacheReplayConfig& config);

/// The same protocol over a KVBlockManager: a primary tier of primary_blocks, and host and disk
/// tiers below it (0: none). A prompt block is a hit if any tier holds it; blocks found below
/// primary are onboarded into it, and blocks primary evicts are offloaded down.
struct TieredReplayConfig {
  std::size_t primary_blocks = 0;
  std::size_t host_blocks = 0;
  std::size_t disk_blocks = 0;
  std::size_t block_size = 512;  // tokens per block
  OffloadPolicy offload_policy = OffloadPolicy::kWriteBack;
  std::uint32_t disk_min_uses = 0;  // the disk filter (KVBlockManagerConfig)
  std::size_t block_bytes = 0;      // bytes of a block: counted in the tiers' bytes moved
  // Real blocks of block_bytes in every tier (memory arenas, block files in disk_directory), so
  // that the time includes the copies and the disk I/O (the flush of the disk queue at the end
  // too). The memory is allocated: primary + host blocks x block_bytes; the disk tier writes a
  // file per block it takes.
  bool move_bytes = false;
  std::filesystem::path disk_directory;
  std::size_t offload_queue_blocks = 64;  // disk writes waiting for the worker; 0: written at once
  // A store shared with other replicas (the remote tier; kv/tiered/redis_store.hpp), lent for the
  // replay: with move_bytes, of block_bytes blocks. Every block the replay computes is put there
  // (on the replay's thread), and the prompt blocks the local tiers miss are looked up and read
  // back from it (KVBlockManager::onboard_remote).
  RemoteBlockStore* remote = nullptr;

  void validate() const;
};

struct TieredReplayResult {
  std::size_t requests = 0;
  std::uint64_t lookup_blocks = 0;    // full prompt blocks looked up
  std::uint64_t hit_blocks = 0;       // of those, found in some tier
  std::vector<TierStats> tiers;       // per tier, fastest first: hits, stores, evictions, bytes
  double seconds = 0.0;               // wall time of the replay loop alone (and the disk flush)
  std::optional<DiskStoreStats> disk; // with move_bytes and a disk tier

  [[nodiscard]] double hit_rate() const noexcept {
    return lookup_blocks == 0 ? 0.0 : double(hit_blocks) / double(lookup_blocks);
  }
  /// The share of looked-up blocks served from one tier (0 for a tier the replay did not have).
  [[nodiscard]] double tier_hit_rate(Tier tier) const noexcept {
    for (const auto& t : tiers) {
      if (t.tier == tier && lookup_blocks > 0) return double(t.hit_blocks) / double(lookup_blocks);
    }
    return 0.0;
  }
  [[nodiscard]] double microseconds_per_request() const noexcept {
    return requests == 0 ? 0.0 : seconds * 1e6 / double(requests);
  }
};

/// Replays requests through a fresh KVBlockManager under the protocol above. Throws as
/// replay_prefix_cache (with primary_blocks as the capacity).
TieredReplayResult replay_tiered_prefix_cache(std::span<const MooncakeRequest> requests,
                                              const TieredReplayConfig& config);

/// How a routed replay picks the replica of each request.
///   round-robin  in turn, whatever they hold
///   kv-aware     the replica whose cache holds the longest run of the request's leading blocks,
///                by a KVIndexer (kv/routing/kv_indexer.hpp) fed every replica's KV events;
///                ties, and requests no replica holds any of, to the least loaded. A replica is
///                passed over while it has served more than max_imbalance times the requests of
///                the least loaded one (plus one), so that no replica is swamped by a popular
///                prefix.
enum class RoutingPolicy : std::uint8_t { kRoundRobin, kKVAware };

[[nodiscard]] constexpr std::string_view routing_policy_name(RoutingPolicy p) noexcept {
  return p == RoutingPolicy::kRoundRobin ? "round-robin" : "kv-aware";
}

/// The protocol above over several replicas, each a KVBlockManager of its own (primary and
/// optionally host, metadata only), with a router in front.
struct RoutedReplayConfig {
  std::size_t replicas = 4;
  std::size_t primary_blocks = 0;  // per replica
  std::size_t host_blocks = 0;     // per replica; 0: none
  std::size_t block_size = 512;
  RoutingPolicy policy = RoutingPolicy::kKVAware;
  double max_imbalance = 1.2;      // kv-aware: most over fewest requests per replica, at most

  void validate() const;
};

struct RoutedReplayResult {
  std::size_t requests = 0;
  std::uint64_t lookup_blocks = 0;  // full prompt blocks looked up
  std::uint64_t hit_blocks = 0;     // of those, found in the chosen replica (any tier)
  std::uint64_t routed_to_best = 0; // kv-aware: requests sent to a replica with the best score
  std::uint64_t best_scores = 0;    // kv-aware: blocks the router's best score promised, summed
  std::vector<std::size_t> requests_per_replica;
  double seconds = 0.0;             // wall time of the replay loop, routing included

  [[nodiscard]] double hit_rate() const noexcept {
    return lookup_blocks == 0 ? 0.0 : double(hit_blocks) / double(lookup_blocks);
  }
  /// Most over fewest requests per replica (1 is perfectly even).
  [[nodiscard]] double imbalance() const noexcept {
    if (requests_per_replica.empty()) return 1.0;
    const auto [lo, hi] = std::minmax_element(requests_per_replica.begin(), requests_per_replica.end());
    return *lo == 0 ? (*hi == 0 ? 1.0 : std::numeric_limits<double>::infinity()) : double(*hi) / double(*lo);
  }
  [[nodiscard]] double microseconds_per_request() const noexcept {
    return requests == 0 ? 0.0 : seconds * 1e6 / double(requests);
  }
};

/// Replays requests over config.replicas fresh replicas, routed by config.policy. Throws as
/// replay_prefix_cache (with primary_blocks as the capacity), and std::invalid_argument for a
/// bad config.
RoutedReplayResult replay_routed_prefix_cache(std::span<const MooncakeRequest> requests,
                                              const RoutedReplayConfig& config);

}  // namespace llmds
