// KVBlockManager: a prefix cache over several storage tiers, so that a prefix block evicted from
// the arena attention reads is kept lower down (host memory, disk) and brought back on a hit
// instead of being recomputed.
//
// One BlockPool per tier (kv/block_pool.hpp) keeps that tier's slots: in use (held by a request,
// or pinned while a copy of it is being made), cached (registered under its chained block hash,
// evictable in the pool's retention order) or free. The tiers, fastest first, are primary (the
// KV arena), then optionally host and disk (kv/tiered/tier.hpp). This class decides what moves
// where; what a block's bytes are and how they move belongs to the storage behind each tier.
//
// The life of a block:
//
//   allocate   n free primary slots for a request to write, evicting cached primary blocks if
//              needed (each evicted block is offloaded down, below)
//   register   the request's full blocks, under their hashes: now they are found by match and
//              stay cached after release. A hash already registered in primary is not stored
//              twice: the existing block is returned, and the caller's own block stays
//              unregistered (it is freed when released; a caller that would rather share the
//              existing block takes it with match and onboard)
//   match      the longest run of leading hashes held by some tier, with the tier of each; the
//              matched blocks are pinned (they cannot be evicted) until the match is onboarded
//              or cancelled
//   onboard    the run in primary: primary hits as they are, lower-tier hits copied up into
//              new primary blocks; the caller holds a reference to each. onboard_async does
//              the copies on a worker thread instead, and finish() waits for them; a block
//              being copied up already is not copied twice
//   release    drop the request's references, tail first; registered blocks stay cached
//
// Offloading. A block leaves a tier when that tier evicts it to make room; it is then stored in
// the next tier down, which may evict in turn, down to the last tier, whose evictions leave the
// cache. Two policies (OffloadPolicy):
//
//   write-back     a block is copied down only when it is evicted; host holds what primary
//                  does not (exclusive), so primary + host together cache as many distinct
//                  blocks as one tier of their summed size. A block onboarded from host leaves
//                  host; a block onboarded from disk keeps its file (rewriting it later would
//                  cost more than keeping it).
//   write-through  a block is copied to every lower tier as soon as it is registered; lower
//                  tiers hold copies of what is above (inclusive), so an eviction costs no copy,
//                  at the price of capacity.
//
// The remote tier. Below the local tiers, a store that many servers share (TierStores::remote,
// on Redis) holds blocks any of them computed. Every block registered in primary is put there
// (write-through, by a background worker: another server can use it at once); a block is never
// offloaded there on eviction, since it is there already. match() and onboard() cover the local
// tiers only, pinned and exact; a caller then asks onboard_remote() for the rest of its
// hashes: one round trip finds how many leading ones the store holds, a second reads them into
// new primary blocks, registered as if computed. The store is shared and bounds itself (Redis
// evicts), so nothing about it is pinned or announced in events, and everything about it may
// fail: a failure ends the run, counted, and the caller computes the rest.
//
// Two filters keep blocks out of lower tiers: a block whose retention priority is below
// offload_min_priority is dropped rather than offloaded (TensorRT-LLM's secondary offload
// floor), and disk admits a block only once it has been used disk_min_uses times (computed or
// hit; counted by a CountMinSketch), to spare disk writes for blocks seen once.
//
// Events. Every change of a tier's contents is appended to an event log (kv/tiered/
// kv_events.hpp) under the manager's lock, one batch per call, published when the call returns:
// a consumer replaying the log knows exactly what every tier holds.
//
// Threads. Every public call takes one mutex, held for bookkeeping and memory copies only.
// Disk writes go to a background worker through a bounded TransferQueue (kv/tiered/
// transfer_queue.hpp): the block is copied into the queue, and the worker writes it and then
// enters it in the disk tier. While it waits, the block can still be matched (as a disk hit,
// onboarded from the queue's copy without reading the disk). When the queue is full the lowest-priority
// write is dropped and counted; nobody waits. Onboardings started by onboard_async are copied by
// a second worker, outside the lock, one block at a time. A block primary evicts is copied to
// host on the evicting caller's thread, unless a third worker, the reclaimer
// (reclaim_free_blocks), keeps that many primary blocks free by moving primary's next victims
// to host ahead of need: it takes a batch of them into use (still matchable, so a hit on one
// meanwhile is an ordinary primary hit, and that block stays), copies them outside the lock,
// and evicts the rest; an allocation that needs the blocks it holds waits for that batch
// rather than fail. flush() waits for the queue to empty and the reclaimer to be done. Event
// subscribers are called after the mutex is released, on the thread that made the change (the
// worker's, for blocks it stored).
//
// Every mutating call is all-or-nothing: it either does everything or throws, changing
// nothing. An offload that cannot be done (lower tier full of pinned blocks, filtered) is not an
// error: the block leaves the cache and the tier's counters say why.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <stdexcept>
#include <string_view>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "llmds/core/errors.hpp"
#include "llmds/core/statistics.hpp"
#include "llmds/core/types.hpp"
#include "llmds/kv/block_pool.hpp"
#include "llmds/kv/eviction_policy.hpp"
#include "llmds/kv/tiered/kv_block_manager_config.hpp"
#include "llmds/kv/tiered/disk_store.hpp"
#include "llmds/kv/tiered/kv_events.hpp"
#include "llmds/kv/tiered/memory_store.hpp"
#include "llmds/kv/tiered/transfer_queue.hpp"
#include "llmds/kv/tiered/tier.hpp"
#include "llmds/sketch/count_min_sketch.hpp"

namespace llmds {

template <class Key, class Hash = std::hash<Key>, class Policy = RetentionEviction>
  requires std::is_trivially_copyable_v<Key> && std::equality_comparable<Key> && EvictionPolicy<Policy>
class KVBlockManager {
  struct QueuedWrite;  // a block waiting for the disk worker (below)
  struct UpTransfer;   // a lower-tier block being copied into primary in the background

 public:
  using EventLog = KVEventLog<Key>;

  /// The result of match(): a run of leading hashes, each held by some tier, pinned there
  /// until the match is passed to onboard() or cancel(). Move-only; one use.
  class Match {
   public:
    Match() = default;
    Match(Match&& other) noexcept { *this = std::move(other); }
    Match& operator=(Match&& other) noexcept {
      owner_ = other.owner_;  // the manager's instance number: unique for the process's life
      id_ = std::exchange(other.id_, 0);
      hashes_ = std::move(other.hashes_);
      tiers_ = std::move(other.tiers_);
      slots_ = std::move(other.slots_);
      queued_ = std::move(other.queued_);
      return *this;
    }
    Match(const Match&) = delete;
    Match& operator=(const Match&) = delete;

    /// Matched blocks.
    [[nodiscard]] std::size_t size() const noexcept { return hashes_.size(); }
    [[nodiscard]] std::span<const Key> hashes() const noexcept { return hashes_; }
    /// The tier each matched block was found in (the fastest that holds it).
    [[nodiscard]] std::span<const Tier> tiers() const noexcept { return tiers_; }
    /// Matched blocks found in `tier`.
    [[nodiscard]] std::size_t count(Tier tier) const noexcept {
      return static_cast<std::size_t>(std::count(tiers_.begin(), tiers_.end(), tier));
    }
    /// Blocks that onboard() will copy up: those not already in primary.
    [[nodiscard]] std::size_t to_onboard() const noexcept { return size() - count(Tier::kPrimary); }
    /// False once onboarded or cancelled.
    [[nodiscard]] bool open() const noexcept { return id_ != 0; }

   private:
    friend KVBlockManager;
    std::uint64_t owner_ = 0;
    std::uint64_t id_ = 0;  // 0: empty or used
    std::vector<Key> hashes_;
    std::vector<Tier> tiers_;
    std::vector<BlockId> slots_;  // the block's slot in its tier; -1: waiting to be written
    std::vector<std::shared_ptr<const QueuedWrite>> queued_;  // for slot -1
  };

  /// The result of onboard_async(): a match whose lower-tier blocks are being copied into
  /// primary by the manager's onboarding worker. Pass it to finish() for the run. Move-only;
  /// one use.
  class Onboarding {
   public:
    Onboarding() = default;
    Onboarding(Onboarding&& other) noexcept { *this = std::move(other); }
    Onboarding& operator=(Onboarding&& other) noexcept {
      owner_ = other.owner_;
      id_ = std::exchange(other.id_, 0);
      blocks_ = std::move(other.blocks_);
      copies_ = std::move(other.copies_);
      return *this;
    }
    Onboarding(const Onboarding&) = delete;
    Onboarding& operator=(const Onboarding&) = delete;

    /// Matched blocks (the run finish() returns may be shorter, if a copy fails).
    [[nodiscard]] std::size_t size() const noexcept { return blocks_.size(); }
    /// True once every copy is done: finish() will not wait.
    [[nodiscard]] bool ready() const noexcept {
      return std::ranges::all_of(copies_, [](const auto& c) { return !c || c->done.load(std::memory_order_acquire); });
    }
    /// False once finished.
    [[nodiscard]] bool open() const noexcept { return id_ != 0; }

   private:
    friend KVBlockManager;
    std::uint64_t owner_ = 0;
    std::uint64_t id_ = 0;
    std::vector<BlockId> blocks_;  // per matched block: its primary block, or -1 while copied
    std::vector<std::shared_ptr<UpTransfer>> copies_;  // per matched block: its copy, or null
  };

  /// A manager of the configured tiers, with their bytes in `stores` (none: metadata only).
  /// With a disk store, the blocks it found at open are the disk tier's first contents (the
  /// oldest dropped if there are more than disk_blocks), announced after an AllBlocksCleared
  /// event. Throws std::invalid_argument for a bad config, or stores that do not match it.
  explicit KVBlockManager(const KVBlockManagerConfig& config, TierStores stores = {})
      : config_((config.validate(), config)), events_(std::max<std::size_t>(config.event_log_batches, 1)) {
    add_tier(Tier::kPrimary, config.primary_blocks, stores.primary, nullptr);
    if (config.host_blocks > 0) add_tier(Tier::kHost, config.host_blocks, stores.host, nullptr);
    if (config.disk_blocks > 0) add_tier(Tier::kDisk, config.disk_blocks, nullptr, stores.disk);
    check_stores(stores);
    block_bytes_ = stores.primary != nullptr ? stores.primary->geometry().block_bytes() : config.block_bytes;
    if (config.disk_min_uses > 1) {
      uses_ = std::make_unique<CountMinSketch>(CountMinSketchConfig{config.filter_width, 4, 0, true, 0});
    }
    if (stores.disk != nullptr) {
      adopt_recovered_blocks(*stores.disk);
      if (config.offload_queue_blocks > 0) {
        writes_.emplace(config.offload_queue_blocks);
        worker_ = std::thread([this] { write_to_disk(); });
      }
    }
    if (config.reclaim_free_blocks > 0) reclaimer_ = std::thread([this] { reclaim(); });
    remote_ = stores.remote;
    remote_stats_.tier = Tier::kRemote;
    if (remote_ != nullptr && config.remote_queue_blocks > 0) remote_writer_ = std::thread([this] { write_to_remote(); });
    events_.publish();
  }

  KVBlockManager(const KVBlockManager&) = delete;
  KVBlockManager& operator=(const KVBlockManager&) = delete;

  /// Stops the workers after what they are doing now: disk writes and remote puts still queued
  /// are dropped,
  /// onboardings not finished are abandoned (finish() must not be called after this).
  ~KVBlockManager() {
    {
      const std::lock_guard lock(mu_);
      stopping_ = true;
    }
    work_.notify_all();
    up_work_.notify_all();
    reclaim_work_.notify_all();
    remote_work_.notify_all();
    if (remote_writer_.joinable()) remote_writer_.join();
    if (worker_.joinable()) worker_.join();
    if (onboarder_.joinable()) onboarder_.join();
    if (reclaimer_.joinable()) reclaimer_.join();
  }

  /// Waits until every queued disk write and remote put is done (or failed) and the reclaimer
  /// has nothing left to do. A no-op without them.
  void flush() {
    {
      std::unique_lock lock(mu_);
      wake_reclaimer();
      idle_.wait(lock, [&] {
        return (!writes_ || (writes_->empty() && removals_.empty() && busy_ == 0)) && reclaiming_.empty() &&
               !needs_reclaim() && remote_puts_.empty() && remote_busy_ == 0;
      });
    }
    events_.publish();
  }

  [[nodiscard]] const KVBlockManagerConfig& config() const noexcept { return config_; }
  /// The tiers this manager has, fastest first.
  [[nodiscard]] std::vector<Tier> tiers() const {
    std::vector<Tier> out;
    for (const auto& t : tiers_) out.push_back(t->tier);
    return out;
  }

  /// n primary blocks for a request to write, each with one reference. Cached primary blocks
  /// evicted to make room are offloaded down. Throws llmds::OutOfPages, changing nothing, if
  /// fewer than n primary blocks are free or cached.
  [[nodiscard]] std::vector<BlockId> allocate(std::size_t n) {
    std::vector<BlockId> blocks;
    {
      std::unique_lock lock(mu_);
      if (!allocate_primary(lock, n, blocks)) {
        throw OutOfPages(fmt::format("KVBlockManager::allocate: {} blocks requested, {} available in primary",
                                     n, tiers_[0]->pool.available()));
      }
    }
    events_.publish();
    return blocks;
  }

  /// Registers primary blocks (in use, from allocate) under their hashes: the blocks of one
  /// sequence, in order, so that hashes[i]'s parent is hashes[i - 1] and hashes[0]'s is
  /// `parent`. token_ids is empty or block_size tokens per block (they go into the events).
  /// Returns, per block, the block now registered under its hash: the caller's own, or, if the
  /// hash was already registered in primary, that block (no reference is taken on it; the
  /// caller's block stays unregistered and is freed when released).
  /// Throws std::invalid_argument, changing nothing, for mismatched lengths, a block that is
  /// not in use or is registered under another hash, or a priority above 100;
  /// std::out_of_range for a block out of range.
  std::vector<BlockId> register_blocks(std::span<const BlockId> blocks, std::span<const Key> hashes,
                                       std::optional<Key> parent = std::nullopt,
                                       std::span<const TokenId> token_ids = {},
                                       RetentionPriority priority = kDefaultRetentionPriority) {
    if (blocks.size() != hashes.size()) {
      throw std::invalid_argument(fmt::format(
          "KVBlockManager::register_blocks: {} blocks but {} hashes", blocks.size(), hashes.size()));
    }
    if (!token_ids.empty() && token_ids.size() != hashes.size() * config_.block_size) {
      throw std::invalid_argument(fmt::format(
          "KVBlockManager::register_blocks: {} token ids for {} blocks of {} tokens", token_ids.size(),
          hashes.size(), config_.block_size));
    }
    if (priority > kMaxRetentionPriority) {
      throw std::invalid_argument(fmt::format("KVBlockManager::register_blocks: retention priority {} is above {}",
                                              unsigned{priority}, kMaxRetentionPriority));
    }
    std::vector<BlockId> canonical(blocks.begin(), blocks.end());
    std::vector<RemotePut> now_puts;  // remote puts this thread makes (remote_queue_blocks = 0)
    {
      const std::lock_guard lock(mu_);
      TierState& primary = *tiers_[0];
      for (std::size_t i = 0; i < blocks.size(); ++i) {
        const BlockId b = blocks[i];
        if (b < 0 || static_cast<std::size_t>(b) >= primary.pool.num_blocks()) {
          throw std::out_of_range(fmt::format("KVBlockManager::register_blocks: block {} is out of range", b));
        }
        const Key* key = primary.pool.key_of(b);
        if (primary.pool.refcount(b) == 0 || (key != nullptr && !(*key == hashes[i]))) {
          throw std::invalid_argument(fmt::format(
              "KVBlockManager::register_blocks: block {} is not in use or is registered under another hash", b));
        }
      }
      // Validated: from here on nothing throws but allocation, and the reservations come first.
      std::vector<std::size_t> fresh;  // indexes of newly registered blocks
      std::vector<BlockId> fresh_blocks;
      fresh.reserve(blocks.size());
      fresh_blocks.reserve(blocks.size());
      for (std::size_t i = 0; i < blocks.size(); ++i) {
        const auto existing = primary.pool.find(hashes[i]);
        if (existing && *existing != blocks[i]) {
          canonical[i] = *existing;
        } else if (!existing) {
          primary.pool.register_block(blocks[i], hashes[i]);
          primary.pool.set_retention_priority(blocks[i], priority);
          BlockMeta& meta = primary.meta[static_cast<std::size_t>(blocks[i])];
          meta.parent = i == 0 ? parent : std::optional<Key>(hashes[i - 1]);
          meta.priority = priority;
          meta.tokens.clear();
          if (!token_ids.empty()) {
            const auto from = token_ids.begin() + static_cast<std::ptrdiff_t>(i * config_.block_size);
            meta.tokens.assign(from, from + config_.block_size);
          }
          ++primary.stats.stored_blocks;
          fresh.push_back(i);
          fresh_blocks.push_back(blocks[i]);
        }
        record_use(hashes[i]);
      }
      emit_stored_runs(primary, fresh_blocks, hashes, fresh);
      if (remote_ != nullptr) {
        for (const std::size_t i : fresh) queue_remote_put(hashes[i], blocks[i], now_puts);
      }
      for (const std::size_t i : fresh) {
        const BlockMeta& meta = primary.meta[static_cast<std::size_t>(blocks[i])];
        if (config_.offload_policy == OffloadPolicy::kWriteThrough) {
          for (std::size_t t = 1; t < tiers_.size(); ++t) store_in(t, hashes[i], meta, 0, blocks[i]);
        } else if (tiers_.size() > 1 && tiers_[1]->tier == Tier::kHost) {
          // Write-back keeps host exclusive of primary: a copy there is now redundant.
          remove_cached_from(*tiers_[1], hashes[i]);
        }
      }
    }
    if (!now_puts.empty()) put_remote(now_puts);
    events_.publish();
    return canonical;
  }

  /// The longest run of leading hashes that some tier holds, each from the fastest tier that
  /// has it; the matched blocks are pinned until onboard() or cancel(). Counts each hit as a
  /// use of the block (the disk filter's count).
  [[nodiscard]] Match match(std::span<const Key> hashes) {
    Match m;
    const std::lock_guard lock(mu_);
    m.hashes_.reserve(hashes.size());
    m.tiers_.reserve(hashes.size());
    m.slots_.reserve(hashes.size());
    m.queued_.reserve(hashes.size());
    for (const Key& key : hashes) {
      std::optional<BlockId> slot;
      std::size_t t = 0;
      for (; t < tiers_.size(); ++t) {
        ++tiers_[t]->stats.lookups;
        if ((slot = tiers_[t]->pool.find(key))) break;
      }
      std::shared_ptr<const QueuedWrite> queued;
      if (!slot) {
        const auto it = queued_writes_.find(key);
        if (it == queued_writes_.end()) break;
        queued = it->second;  // still in memory, on its way to disk
        slot = -1;
      }
      m.hashes_.push_back(key);
      m.tiers_.push_back(queued ? Tier::kDisk : tiers_[t]->tier);
      m.slots_.push_back(*slot);
      m.queued_.push_back(std::move(queued));
    }
    // Reserved above: nothing below allocates except the sketch, which does not either.
    for (std::size_t i = 0; i < m.size(); ++i) {
      TierState& tier = m.queued_[i] ? *tiers_[index_of_queue_tier()] : state_of(m.tiers_[i]);
      const BlockId one[] = {m.slots_[i]};
      if (!m.queued_[i]) tier.pool.touch(one);
      ++tier.stats.hit_blocks;
      tier.stats.hit_tokens += config_.block_size;
      record_use(m.hashes_[i]);
    }
    m.owner_ = instance_;
    m.id_ = next_match_id_++;
    return m;
  }

  /// Brings a match into primary and returns its blocks in order, each with one reference for
  /// the caller (release them with the request's other blocks). Blocks found in a lower tier
  /// are copied into new primary blocks (evicting, and so offloading, cached primary blocks if
  /// needed); under write-back their host copies leave host. If a lower copy cannot be read
  /// (a disk file gone, corrupt or unreadable: it is removed and counted), the run ends before
  /// it: fewer blocks come back than were matched, and the caller computes the rest. The
  /// match is used up. Throws
  /// std::invalid_argument for a match that is empty-handed (already used, or not from this
  /// manager) and llmds::OutOfPages if primary has too few free or cached blocks for the copies;
  /// either way nothing changes (the match stays pinned: cancel it).
  std::vector<BlockId> onboard(Match& match) {
    std::vector<BlockId> out;
    {
      std::unique_lock lock(mu_);
      check_open(match, "onboard");
      TierState& primary = *tiers_[0];
      const std::size_t need = match.to_onboard();
      out.reserve(match.size());
      std::vector<BlockId> fresh;
      if (!allocate_primary(lock, need, fresh)) {
        throw OutOfPages(fmt::format("KVBlockManager::onboard: {} blocks to copy up, {} available in primary",
                                     need, primary.pool.available()));
      }
      std::vector<std::size_t> stored;  // match indexes newly registered in primary
      std::vector<BlockId> stored_blocks;
      std::size_t next_fresh = 0;
      std::size_t i = 0;
      for (; i < match.size(); ++i) {
        if (match.tiers_[i] == Tier::kPrimary) {
          out.push_back(match.slots_[i]);
          continue;
        }
        const BlockId target = fresh[next_fresh++];
        const Key& key = match.hashes_[i];
        const auto& queued = match.queued_[i];  // set: from the disk queue's copy
        const std::size_t from_index = queued ? index_of_queue_tier() : index_of(match.tiers_[i]);
        TierState& from = *tiers_[from_index];
        const BlockId source = match.slots_[i];
        const BlockId mine[] = {target};
        if (const auto existing = primary.pool.find(key)) {
          // Another match onboarded it meanwhile: share that block, give ours back.
          const BlockId one[] = {*existing};
          primary.pool.touch(one);
          primary.pool.release(mine);
          out.push_back(*existing);
        } else {
          const BlockMeta& meta = queued ? queued->meta : from.meta[static_cast<std::size_t>(source)];
          bool copied = true;
          if (!queued) {
            copied = transfer(from_index, source, 0, target, key, meta);
          } else if (primary.memory != nullptr) {
            try {  // a store that throws fails the copy, as transfer() does
              primary.memory->write_block(static_cast<std::size_t>(target), queued->bytes.data());
            } catch (...) {
              copied = false;
            }
          }
          if (!copied) {
            // The lower copy is gone or failed its checks: the run ends here, and the caller
            // computes the rest.
            ++from.stats.failed_transfers;
            primary.pool.release(mine);
            const BlockId pin[] = {source};
            from.pool.release(pin);
            drop_lower_copy(from_index, key);
            break;
          }
          register_copy(primary, target, key, meta);
          count_move(from, primary);
          ++from.stats.onboarded_blocks;
          stored.push_back(i);
          stored_blocks.push_back(target);
          out.push_back(target);
        }
        if (queued) continue;  // nothing pinned, nothing to drop
        const BlockId pin[] = {source};
        from.pool.release(pin);
        if (exclusive(from)) remove_cached_from(from, key);
      }
      if (i < match.size()) {  // a failed copy: give back the rest of the match and of `fresh`
        for (std::size_t j = i + 1; j < match.size(); ++j) {
          if (match.queued_[j]) continue;
          const BlockId one[] = {match.slots_[j]};
          state_of(match.tiers_[j]).pool.release(one);
        }
        primary.pool.release(std::span<const BlockId>(fresh).subspan(next_fresh));
      }
      emit_stored_runs(primary, stored_blocks, match.hashes_, stored);
      close(match);
    }
    events_.publish();
    return out;
  }

  /// onboard() in the background: returns at once, with the match's primary blocks and new
  /// primary blocks for its lower-tier ones, which the manager's onboarding worker (started on
  /// first use) fills, outside the lock. A block that another onboarding is copying up already
  /// is not copied twice: both wait for the one copy. Until finish(), the new blocks are held
  /// but not registered, and the lower copies stay pinned; the worker moves bytes only, and
  /// finish() enters the blocks in primary on the caller's thread. The match is used up. Throws
  /// as onboard() does, changing nothing (the match stays pinned: cancel it).
  [[nodiscard]] Onboarding onboard_async(Match& match);

  /// Waits for an onboarding's copies and returns its run in primary, as onboard() does: each
  /// block with one reference for the caller, the run ending before the first block whose
  /// lower copy could not be read. Throws std::invalid_argument for an onboarding already
  /// finished or not from this manager.
  std::vector<BlockId> finish(Onboarding& o);

  /// Unpins a match without onboarding it. Throws std::invalid_argument for a used match.
  void cancel(Match& match) {
    const std::lock_guard lock(mu_);
    check_open(match, "cancel");
    for (std::size_t i = 0; i < match.size(); ++i) {
      if (match.queued_[i]) continue;
      const BlockId one[] = {match.slots_[i]};
      state_of(match.tiers_[i]).pool.release(one);
    }
    close(match);
    wake_reclaimer();
  }

  /// The longest leading run of `hashes` that the remote store holds, read into new primary
  /// blocks and registered there as if computed (hashes[0]'s parent is `parent`; token_ids is
  /// empty or block_size tokens per hash, for the events); each block comes back with one
  /// reference for the caller, in order. For the hashes a match() and onboard() of the local
  /// tiers did not cover. Two round trips to the store, neither under the manager's lock. The
  /// run ends before the first block that does not arrive intact (evicted since the lookup, a
  /// failed read, a store that is down: counted in the remote tier's stats); empty without a
  /// remote store. A hash registered in primary meanwhile is shared, not read twice. Throws
  /// llmds::OutOfPages, changing nothing, if primary has too few free or cached blocks for the
  /// run, std::invalid_argument for token ids of the wrong length.
  std::vector<BlockId> onboard_remote(std::span<const Key> hashes, std::optional<Key> parent = std::nullopt,
                                      std::span<const TokenId> token_ids = {});

  /// Takes one more reference to each primary block (a sequence forked from another shares its
  /// blocks). As BlockPool::touch: throws, changing nothing, for a free or out-of-range block.
  void share(std::span<const BlockId> blocks) {
    const std::lock_guard lock(mu_);
    tiers_[0]->pool.touch(blocks);
  }

  /// Primary blocks an allocation can take: free plus cached, plus those the reclaimer is
  /// moving to host (an allocation waits for them).
  [[nodiscard]] std::size_t primary_available() const {
    const std::lock_guard lock(mu_);
    return tiers_[0]->pool.available() + reclaimer_only_holds();
  }

  /// A tier's block pool, for inspection (refcounts, keys, eviction order) by the thread that
  /// drives the manager; it changes under the manager's lock only, on calls of that thread, and
  /// (primary's) on the reclaimer's, if there is one: then only blocks the caller holds may be
  /// inspected (pool_stats() reads the rest under the lock). Throws std::invalid_argument for
  /// a tier this manager does not have.
  [[nodiscard]] const BlockPool<Key, Hash, std::equal_to<Key>, Policy>& pool(Tier tier) const {
    return state_of(tier).pool;
  }

  /// A tier's block pool's figures, read under the lock; primary blocks the reclaimer is moving
  /// to host (and nobody else holds) count as cached. Throws std::invalid_argument for a tier
  /// this manager does not have.
  [[nodiscard]] BlockPoolStats pool_stats(Tier tier) const {
    const std::lock_guard lock(mu_);
    const Pool& pool = state_of(tier).pool;
    BlockPoolStats s = pool.stats();
    if (tier != Tier::kPrimary) return s;
    const std::size_t moving = reclaimer_only_holds();
    s.in_use_blocks -= moving;
    s.cached_blocks += moving;
    s.total_refs -= moving;
    return s;
  }

  /// Drops one reference to each primary block, in the order given (a request's blocks tail
  /// first). As BlockPool::release: throws std::invalid_argument, changing nothing, for a block
  /// that is not held.
  void release(std::span<const BlockId> blocks) {
    const std::lock_guard lock(mu_);
    tiers_[0]->pool.release(blocks);
    wake_reclaimer();
  }

  /// Empties every tier, if no block of any tier is in use or pinned: true, with one
  /// AllBlocksCleared event. Otherwise false, changing nothing.
  bool clear() {
    {
      std::unique_lock lock(mu_);
      idle_.wait(lock, [&] { return reclaiming_.empty(); });  // the reclaimer's holds are not in use
      for (const auto& t : tiers_) {
        if (t->pool.in_use_blocks() > 0) return false;
      }
      if (writes_) writes_->drain();
      queued_writes_.clear();
      ++clear_epoch_;  // a write the worker is doing now is discarded when it finishes
      for (const auto& t : tiers_) {
        for (const Key& key : t->pool.registered_keys()) {
          t->pool.remove_cached(key);
          if (t->disk != nullptr) t->disk->remove(key_bytes(key));
        }
      }
      emit(AllBlocksCleared{});
    }
    events_.publish();
    return true;
  }

  /// The tier holding `key`, fastest first, without pinning or counting anything.
  [[nodiscard]] std::optional<Tier> find(const Key& key) const {
    const std::lock_guard lock(mu_);
    for (const auto& t : tiers_) {
      if (t->pool.find(key)) return t->tier;
    }
    return std::nullopt;
  }

  /// Every hash a tier holds, in no particular order. Throws std::invalid_argument for a tier
  /// this manager does not have.
  [[nodiscard]] std::vector<Key> contents(Tier tier) const {
    const std::lock_guard lock(mu_);
    return state_of(tier).pool.registered_keys();
  }

  /// Per tier, fastest first; the remote tier last, if there is one (its capacity, cached and
  /// in-use counts are the shared store's business: 0 here).
  [[nodiscard]] std::vector<TierStats> stats() const {
    const std::lock_guard lock(mu_);
    std::vector<TierStats> out;
    for (const auto& t : tiers_) {
      TierStats s = counters_of(*t);
      s.copy_in_us = t->copy_in.percentiles();
      s.copy_out_us = t->copy_out.percentiles();
      out.push_back(s);
    }
    if (remote_ != nullptr) out.push_back(remote_counters());
    return out;
  }

  /// One tier's figures as stats() gives them, but without the copy-time percentiles (which
  /// sort the tier's latency windows): cheap enough for a serving loop to read often. Throws
  /// std::invalid_argument for a tier this manager does not have.
  [[nodiscard]] TierStats counters(Tier tier) const {
    const std::lock_guard lock(mu_);
    if (tier == Tier::kRemote && remote_ != nullptr) return remote_counters();
    return counters_of(state_of(tier));
  }

  /// The event log: subscribe, or replay from a sequence number.
  [[nodiscard]] EventLog& events() noexcept { return events_; }

 private:
  using Pool = BlockPool<Key, Hash, std::equal_to<Key>, Policy>;

  struct BlockMeta {
    std::optional<Key> parent;
    std::vector<TokenId> tokens;
    RetentionPriority priority = kDefaultRetentionPriority;
  };

  struct TierState {
    TierState(Tier t, std::size_t n, MemoryBlockStore* m, DiskStore* d) : tier(t), pool(n), meta(n), memory(m), disk(d) {
      stats.tier = t;
      stats.capacity_blocks = n;
    }
    Tier tier;
    Pool pool;
    std::vector<BlockMeta> meta;  // per slot, for its registered block
    MemoryBlockStore* memory;     // the tier's bytes: in memory,
    DiskStore* disk;              // or on disk (both null: metadata only)
    TierStats stats;
    detail::LatencyWindow copy_in, copy_out;
    // Reused by allocate_in and store_in on this tier, which recurse only into the tier below.
    std::vector<Key> evicted;
    std::vector<BlockId> slot;
  };

  void add_tier(Tier tier, std::size_t blocks, MemoryBlockStore* memory, DiskStore* disk) {
    tier_index_[static_cast<std::size_t>(tier)] = static_cast<int>(tiers_.size());
    tiers_.push_back(std::make_unique<TierState>(tier, blocks, memory, disk));
  }

  [[nodiscard]] int index_or_none(Tier tier) const noexcept { return tier_index_[static_cast<std::size_t>(tier)]; }
  [[nodiscard]] std::size_t index_of(Tier tier) const {
    const int i = index_or_none(tier);
    if (i < 0) throw std::invalid_argument(fmt::format("KVBlockManager: no {} tier", tier_name(tier)));
    return static_cast<std::size_t>(i);
  }
  TierState& state_of(Tier tier) const { return *tiers_[index_of(tier)]; }

  // Under write-back, host is exclusive of primary; disk keeps its copy (see the essay).
  [[nodiscard]] bool exclusive(const TierState& t) const noexcept {
    return config_.offload_policy == OffloadPolicy::kWriteBack && t.tier == Tier::kHost;
  }

  void check_open(const Match& m, const char* op) const {
    if (m.id_ == 0 || m.owner_ != instance_) {
      throw std::invalid_argument(fmt::format(
          "KVBlockManager::{}: the match was already used, or is not from this manager", op));
    }
  }
  static void close(Match& m) noexcept { m.id_ = 0; }

  void record_use(const Key& key) {
    if (uses_) uses_->add(std::string_view(reinterpret_cast<const char*>(&key), sizeof(Key)));
  }
  [[nodiscard]] std::uint64_t uses(const Key& key) const {
    return uses_->estimate(std::string_view(reinterpret_cast<const char*>(&key), sizeof(Key)));
  }

  // Takes n blocks in tier t (refcount 1), offloading what it evicts to the tiers below. False,
  // changing nothing, if the tier has fewer than n free or cached blocks.
  bool allocate_in(std::size_t t, std::size_t n, std::vector<BlockId>& out) {
    TierState& tier = *tiers_[t];
    std::vector<Key>& evicted = tier.evicted;
    evicted.clear();
    const std::size_t first = out.size();
    if (!tier.pool.try_allocate_into(n, out, &evicted)) return false;
    if (t == 0) wake_reclaimer();
    if (evicted.empty()) return true;
    tier.stats.evicted_blocks += evicted.size();
    if (events_on()) emit(BlockRemoved<Key>{evicted, tier.tier});
    // try_allocate_into hands out the free blocks first, then the evicted ones in order.
    const std::size_t base = first + n - evicted.size();
    for (std::size_t j = 0; j < evicted.size(); ++j) {
      const BlockId slot = out[base + j];
      BlockMeta meta = std::move(tier.meta[static_cast<std::size_t>(slot)]);
      tier.meta[static_cast<std::size_t>(slot)] = BlockMeta{};
      // The slot's bytes are intact until the caller writes to it: copy them down first.
      if (t + 1 < tiers_.size()) store_in(t + 1, evicted[j], meta, t, slot);
      if (tier.disk != nullptr) remove_file(tier, evicted[j]);
    }
    return true;
  }

  // allocate_in for primary on a caller's thread: if what is missing are the blocks the
  // reclaimer is moving out (held while it copies them), waits for it rather than fail.
  bool allocate_primary(std::unique_lock<std::mutex>& lock, std::size_t n, std::vector<BlockId>& out);

  // Primary blocks the reclaimer holds that nobody else does: cached blocks on their way out,
  // which an allocation may wait for.
  [[nodiscard]] std::size_t reclaimer_only_holds() const;

  // Whether the reclaimer has work: cached primary blocks to move out, and fewer free than half
  // its reserve, or, once it has started, than its whole reserve (two watermarks, so that it
  // wakes for a few blocks at a time rather than for each one).
  [[nodiscard]] bool needs_reclaim() const noexcept;

  // Called wherever primary's free or cached blocks may have changed.
  void wake_reclaimer() {
    if (needs_reclaim()) reclaim_work_.notify_one();
  }

  // A tier's counters and pool figures (the reclaimer's blocks counted as primary's cached).
  [[nodiscard]] TierStats counters_of(const TierState& t) const {
    TierStats s = t.stats;
    const std::size_t moving = t.tier == Tier::kPrimary ? reclaimer_only_holds() : 0;
    s.cached_blocks = t.pool.cached_blocks() + moving;
    s.in_use_blocks = t.pool.in_use_blocks() - moving;
    if (t.disk != nullptr && writes_) {
      s.queued_writes = writes_->size() + writing_;
      s.queue_high_water = writes_->high_water();
    }
    return s;
  }

  // A block on its way to the remote store: its hash and a copy of its bytes (logical order).
  struct RemotePut {
    Key key;
    std::vector<std::byte> bytes;
  };
  // Copies a primary block for the remote store: into the worker's queue (full: dropped,
  // counted), or into `now` for the calling thread (remote_queue_blocks = 0). Under the lock.
  void queue_remote_put(const Key& key, BlockId slot, std::vector<RemotePut>& now);
  // Puts blocks into the remote store, outside the lock, and counts what came of it.
  void put_remote(std::vector<RemotePut>& puts);
  // The remote writer: takes batches from the queue and puts them.
  void write_to_remote();
  [[nodiscard]] TierStats remote_counters() const {
    TierStats s = remote_stats_;
    s.queued_writes = remote_puts_.size() + remote_busy_;
    s.queue_high_water = remote_high_water_;
    return s;
  }

  // The reclaimer: takes the next blocks in primary's eviction order (held, still matchable),
  // copies them to host outside the lock, and evicts those nobody took meanwhile.
  void reclaim();

  // Stores a copy of a block from slot source_slot of tier `source` in tier t (an offload),
  // unless it is filtered out, the tier has no room or the copy fails; a block the tier already
  // holds becomes its most recent.
  void store_in(std::size_t t, const Key& key, const BlockMeta& meta, std::size_t source, BlockId source_slot) {
    TierState& tier = *tiers_[t];
    if (!admits(tier, key, meta)) return;
    if (tier.disk != nullptr && writes_) {
      queue_disk_write(t, key, meta, source, source_slot);
      return;
    }
    const BlockId slot = offload_slot(t);
    if (slot < 0) return;
    if (!transfer(source, source_slot, t, slot, key, meta)) {
      ++tier.stats.failed_transfers;
      const BlockId one[] = {slot};
      tier.pool.release(one);  // unregistered: back to free
      return;
    }
    enter_cached(tier, slot, key, meta);
    count_move(*tiers_[source], tier);
  }

  // Whether an offload of a block into `tier` is to be done: not if the block is below the
  // priority floor or refused by the disk filter (counted), nor if the tier holds it already
  // (it becomes the tier's most recent).
  bool admits(TierState& tier, const Key& key, const BlockMeta& meta) {
    if (meta.priority < config_.offload_min_priority) {
      ++tier.stats.dropped_offloads;
      return false;
    }
    if (const auto slot = tier.pool.find(key)) {
      refresh(tier, *slot);
      return false;
    }
    if (tier.tier == Tier::kDisk && uses_ && uses(key) < config_.disk_min_uses) {
      ++tier.stats.filter_rejected;
      return false;
    }
    return true;
  }

  // A held, unregistered slot of tier t for an offload, evicting (and offloading) as needed;
  // -1, counted as a dropped offload, if every block of the tier is in use.
  BlockId offload_slot(std::size_t t) {
    TierState& tier = *tiers_[t];
    std::vector<BlockId>& slot = tier.slot;
    slot.clear();
    if (!allocate_in(t, 1, slot)) {
      ++tier.stats.dropped_offloads;
      return -1;
    }
    return slot[0];
  }

  // Enters a block just copied into `slot` of `tier`, whose reference the caller holds:
  // registered under its hash with its retention priority and what its file records.
  void register_copy(TierState& tier, BlockId slot, const Key& key, BlockMeta meta) {
    tier.pool.register_block(slot, key);
    tier.pool.set_retention_priority(slot, meta.priority);
    tier.meta[static_cast<std::size_t>(slot)] = std::move(meta);
  }

  // register_copy for a block nobody uses yet (an offload, a recovered file): announced, and
  // left cached.
  void enter_cached(TierState& tier, BlockId slot, const Key& key, BlockMeta meta) {
    if (events_on()) emit(BlockStored<Key>{{key}, meta.parent, meta.tokens, config_.block_size, tier.tier});
    register_copy(tier, slot, key, std::move(meta));
    const BlockId one[] = {slot};
    tier.pool.release(one);
  }

  // The counters of one block copied from one tier into another.
  void count_move(TierState& from, TierState& to) const noexcept {
    ++to.stats.stored_blocks;
    to.stats.bytes_in += block_bytes_;
    from.stats.bytes_out += block_bytes_;
  }

  // A block a tier already holds, offered again: its most recent, if nobody is using it.
  static void refresh(TierState& tier, BlockId slot) {
    if (!tier.pool.is_cached(slot)) return;
    const BlockId one[] = {slot};
    tier.pool.touch(one);
    tier.pool.release(one);
  }

  // A block on its way to disk: a copy of its bytes (logical order) and what its file records.
  struct QueuedWrite {
    Key key;
    BlockMeta meta;
    std::vector<std::byte> bytes;
    std::uint64_t epoch = 0;  // clear() discards writes of earlier epochs
  };

  // A lower-tier block on its way into primary (onboard_async), shared by every onboarding
  // that needs it. The worker only moves its bytes; the first finish() that needs it enters it
  // in primary (complete_copy_up), so that the tiers' pools change on callers' threads only.
  // The fields up to `target` are set before the worker sees it; the rest change under the lock,
  // `done` last (it is also read without the lock, by Onboarding::ready).
  struct UpTransfer {
    Key key;
    std::size_t from = 0;      // the tier it is copied from
    BlockId source = -1;       // its slot there, pinned until the copy is entered (-1: queued)
    std::shared_ptr<const QueuedWrite> queued;  // or the disk queue's copy of it
    BlockId target = -1;       // the primary block it is copied into, held by the copy
    std::size_t holders = 1;   // onboardings waiting for it, each to get one reference
    bool copied = false;       // the worker's outcome,
    double us = 0;             // and how long the copy took
    bool completed = false;    // entered in primary (or given up) by complete_copy_up
    BlockId result = -1;       // once completed: the primary block holding it; -1 if the copy failed
    std::atomic<bool> done{false};  // the worker is done with it
  };

  // The onboarding worker: copies lower-tier blocks into primary, one at a time, outside the lock.
  void copy_up();

  // Enters a copy the worker is done with: the block registered in primary (or the block
  // registered there meanwhile shared instead), a reference for each holder, the lower copy
  // unpinned; or, if the copy failed, the lower copy dropped.
  void complete_copy_up(UpTransfer& copy);

  // Drops a match's pin on a lower-tier block it will not copy (`used`: the block did reach
  // primary, so an exclusive host lets its copy go).
  void unpin_lower(std::size_t from, BlockId slot, bool used) {
    TierState& tier = *tiers_[from];
    const BlockId one[] = {slot};
    tier.pool.release(one);
    if (used && exclusive(tier)) {
      if (const Key* key = tier.pool.key_of(slot)) remove_cached_from(tier, Key(*key));
    }
  }

  // A queued write is the disk tier's block already (in its queue): hits on it count there.
  [[nodiscard]] std::size_t index_of_queue_tier() const { return index_of(Tier::kDisk); }

  // store_in for an asynchronous disk tier: the block is copied into the queue; the worker
  // writes it and enters it in the tier (commit_disk_write).
  void queue_disk_write(std::size_t t, const Key& key, const BlockMeta& meta, std::size_t source, BlockId source_slot);

  // The disk worker: takes batches from the queue, writes them without the lock, enters them.
  void write_to_disk();

  void commit_disk_write(std::size_t t, const QueuedWrite& w, bool written);

  // Copies a block between two tiers' stores, and times it; true without stores (metadata
  // only). False if a disk write or read failed, or a store threw.
  bool transfer(std::size_t from, BlockId from_slot, std::size_t to, BlockId to_slot, const Key& key,
                const BlockMeta& meta);

  bool copy_between(TierState& src, BlockId from_slot, TierState& dst, BlockId to_slot, const Key& key,
                    const BlockMeta& meta, std::vector<std::byte>& staging);

  // What a block file records of a block besides its bytes.
  static StoredBlock stored_block_of(const Key& key, const BlockMeta& meta) {
    StoredBlock info;
    const auto bytes = key_bytes(key);
    info.hash.assign(bytes.begin(), bytes.end());
    if (meta.parent) {
      const auto parent = key_bytes(*meta.parent);
      info.parent.emplace(parent.begin(), parent.end());
    }
    info.tokens = meta.tokens;
    info.priority = meta.priority;
    return info;
  }

  // A lower tier's copy that could not be read: out of the tier (its file is already gone).
  void drop_lower_copy(std::size_t t, const Key& key) {
    TierState& tier = *tiers_[t];
    if (tier.pool.remove_cached(key)) emit(BlockRemoved<Key>{{key}, tier.tier});
  }

  [[nodiscard]] bool events_on() const noexcept { return config_.event_log_batches > 0; }
  void emit(KVEvent<Key> event) {
    if (events_on()) events_.append(std::move(event));
  }

  static std::span<const std::byte> key_bytes(const Key& key) noexcept { return std::as_bytes(std::span(&key, 1)); }

  void check_stores(const TierStores& stores);

  // The disk store's blocks found at open become the disk tier's contents, oldest first (the
  // oldest left out, and deleted, when they do not fit).
  void adopt_recovered_blocks(DiskStore& disk);

  void remove_cached_from(TierState& tier, const Key& key) {
    if (tier.pool.remove_cached(key)) emit(BlockRemoved<Key>{{key}, tier.tier});
  }

  // One BlockStored per run of consecutive positions among `which` (indexes into hashes); the
  // k-th of them is held by blocks[k].
  void emit_stored_runs(const TierState& tier, std::span<const BlockId> blocks, std::span<const Key> hashes,
                        std::span<const std::size_t> which) {
    if (!events_on()) return;
    std::size_t k = 0;
    while (k < which.size()) {
      std::size_t end = k + 1;
      while (end < which.size() && which[end] == which[end - 1] + 1) ++end;
      BlockStored<Key> event;
      event.tier = tier.tier;
      event.block_size = config_.block_size;
      event.parent_hash = tier.meta[static_cast<std::size_t>(blocks[k])].parent;
      for (std::size_t j = k; j < end; ++j) {
        event.block_hashes.push_back(hashes[which[j]]);
        const auto& tokens = tier.meta[static_cast<std::size_t>(blocks[j])].tokens;
        event.token_ids.insert(event.token_ids.end(), tokens.begin(), tokens.end());
      }
      emit(std::move(event));
      k = end;
    }
  }

  // Which manager a match came from, by a number no other manager of this process has (an
  // address could be reused by a manager made after this one is gone).
  static std::uint64_t next_instance() noexcept {
    static std::atomic<std::uint64_t> count{0};
    return ++count;
  }
  const std::uint64_t instance_ = next_instance();
  KVBlockManagerConfig config_;
  std::size_t block_bytes_ = 0;  // what one block transfer moves, for the byte counters
  std::vector<std::byte> staging_;  // for copies between stores the CPU cannot both address
  mutable std::mutex mu_;
  std::vector<std::unique_ptr<TierState>> tiers_;  // fastest first; tiers_[0] is primary
  // A block file to delete: by the disk worker, outside the lock, if there is one (a file
  // system call under the lock would stall every caller behind the disk's journal), before
  // any write it takes later, so that a block written again after its removal survives it.
  void remove_file(TierState& tier, const Key& key) {
    if (!writes_) {
      tier.disk->remove(key_bytes(key));
      return;
    }
    removals_.push_back(key);
    work_.notify_one();
  }

  // The disk worker's queue and what it holds by key; writing_: blocks it is writing now.
  std::optional<TransferQueue<std::shared_ptr<QueuedWrite>>> writes_;
  std::unordered_map<Key, std::shared_ptr<const QueuedWrite>, Hash> queued_writes_;
  std::size_t writing_ = 0;
  std::vector<Key> removals_;  // block files for the worker to delete
  std::size_t busy_ = 0;       // writes and removals the worker is doing now
  std::uint64_t clear_epoch_ = 0;
  bool stopping_ = false;
  std::condition_variable work_;  // the worker waits for writes
  std::condition_variable idle_;  // flush() waits for the worker
  std::thread worker_;
  // Onboardings in the background: copies under way by key, those waiting for the worker.
  std::unordered_map<Key, std::shared_ptr<UpTransfer>, Hash> in_flight_;
  std::deque<std::shared_ptr<UpTransfer>> up_queue_;
  std::condition_variable up_work_;  // the onboarding worker waits for copies
  std::condition_variable up_done_;  // finish() waits for them to be done
  std::thread onboarder_;
  // The reclaimer's primary blocks while it copies them to host (each held by it).
  std::vector<BlockId> reclaiming_;
  bool reclaim_started_ = false;  // below half its reserve, and not yet back to all of it
  std::condition_variable reclaim_work_;
  std::thread reclaimer_;
  // The remote tier: its store, counters, and the writer's queue.
  RemoteBlockStore* remote_ = nullptr;
  TierStats remote_stats_;
  std::deque<RemotePut> remote_puts_;
  std::size_t remote_busy_ = 0;  // puts the writer is making now
  std::size_t remote_high_water_ = 0;
  std::condition_variable remote_work_;
  std::thread remote_writer_;
  std::array<int, kNumTiers> tier_index_{-1, -1, -1, -1};
  std::unique_ptr<CountMinSketch> uses_;  // with disk_min_uses > 1
  std::uint64_t next_match_id_ = 1;
  EventLog events_;
};

}  // namespace llmds

// The members above that move bytes between stores, adopt a restarted disk store's blocks and
// run the disk worker.
#include "llmds/kv/tiered/kv_block_manager_storage.hpp"
