// KVIndexer: which server holds which KV block, learned from the servers' KV events, so that a
// router can send each request to the server that already caches most of its prefix.
//
// Every server of a deployment publishes the changes to what its tiers hold (kv/tiered/
// kv_events.hpp: BlockStored, BlockRemoved, AllBlocksCleared, in numbered batches). The indexer
// applies each server's batches in order and keeps, per block hash, the servers ("workers")
// holding it and in which tiers. A request's score on a worker is the length of the longest run
// of its leading block hashes that the worker holds, in any tier (the semantics of Dynamo's KV
// indexer and llm-d's block index): block hashes are chained, so a worker can only reuse a block
// if it holds every block before it too. Within that run, the score also says how many blocks
// sit in each tier, so that a router can prefer prefixes in fast memory.
//
// Costs. apply: O(1) per block of an event (a hash table lookup and a scan of the block's few
// holders); AllBlocksCleared and remove_worker: O(blocks indexed). score: O(request blocks x
// holders per block), stopping at the first block no worker still in the running holds. Memory:
// one hash table entry per distinct block, with a small vector of (worker, tiers) holders.
//
// Order and loss. A worker's batches must be applied in sequence order. A batch whose number is
// below the next expected one was applied already (a replay overlapping the live stream) and is
// skipped. A batch above it means batches were missed: it is applied, the gap is counted and
// reported, and the worker is marked out of sync until the caller has resynchronised it
// (replayed the missed batches from the server's log, or cleared it with remove_worker and
// replayed from the start), because until then the index may claim blocks the worker no longer
// holds or miss some it does.
//
// Thread safety: apply, remove_worker and mark_synced take an exclusive lock; score and the
// inspection calls a shared one, so that many router threads can score while one thread feeds
// events.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <span>
#include <type_traits>
#include <unordered_map>
#include <variant>
#include <vector>

#include "llmds/kv/tiered/kv_events.hpp"
#include "llmds/kv/tiered/tier.hpp"

namespace llmds {

using WorkerId = std::uint32_t;

/// A worker's score for one request: the longest run of the request's leading blocks it holds,
/// and how many of those it holds in each tier (its fastest copy of each), indexed by Tier.
struct WorkerScore {
  WorkerId worker = 0;
  std::size_t blocks = 0;
  std::array<std::size_t, kNumTiers> by_tier{};
  friend bool operator==(const WorkerScore&, const WorkerScore&) = default;
};

/// What apply() did with a batch.
enum class ApplyOutcome : std::uint8_t {
  kApplied,    // the next batch in sequence
  kDuplicate,  // already applied (seq below the next expected): skipped
  kAfterGap,   // applied, but batches before it were missed: the worker is out of sync
};

/// A worker's bookkeeping, for inspection.
struct WorkerIndexState {
  std::uint64_t next_seq = 0;   // the batch expected next
  std::size_t blocks = 0;       // distinct blocks it holds, in any tier
  std::uint64_t gaps = 0;       // batches applied after missing ones
  bool in_sync = true;          // false from a gap until mark_synced
};

template <class Key, class Hash = std::hash<Key>>
  requires std::equality_comparable<Key>
class KVIndexer {
 public:
  /// Applies one batch of a worker's events (the first batch seen from a worker sets where its
  /// sequence starts). See the essay for the outcomes.
  ApplyOutcome apply(WorkerId worker, const KVEventBatch<Key>& batch) {
    const std::unique_lock lock(mu_);
    auto [it, first] = workers_.try_emplace(worker);
    WorkerIndexState& w = it->second;
    if (!first && batch.seq < w.next_seq) return ApplyOutcome::kDuplicate;
    const bool gap = !first && batch.seq > w.next_seq;
    w.next_seq = batch.seq + 1;
    for (const auto& event : batch.events) {
      if (const auto* stored = std::get_if<BlockStored<Key>>(&event)) {
        for (const Key& key : stored->block_hashes) add(worker, w, key, stored->tier);
      } else if (const auto* removed = std::get_if<BlockRemoved<Key>>(&event)) {
        for (const Key& key : removed->block_hashes) remove(worker, w, key, removed->tier);
      } else {
        drop_all_of(worker, w);
      }
    }
    if (!gap) return ApplyOutcome::kApplied;
    ++w.gaps;
    w.in_sync = false;
    return ApplyOutcome::kAfterGap;
  }

  /// The workers holding a run of the request's leading blocks, best first (most blocks; ties
  /// by worker id), each with its run's length and tiers. Workers holding none are left out.
  [[nodiscard]] std::vector<WorkerScore> score(std::span<const Key> hashes) const {
    const std::shared_lock lock(mu_);
    std::vector<WorkerScore> done;     // workers whose run has ended
    std::vector<WorkerScore> running;  // workers holding every block so far
    for (std::size_t i = 0; i < hashes.size(); ++i) {
      const auto it = blocks_.find(hashes[i]);
      if (it == blocks_.end()) break;
      const std::vector<Holder>& holders = it->second;
      if (i == 0) {
        for (const Holder& h : holders) running.push_back(WorkerScore{h.worker, 0, {}});
      }
      std::size_t kept = 0;
      for (WorkerScore& s : running) {
        const auto h = std::find_if(holders.begin(), holders.end(), [&](const Holder& x) { return x.worker == s.worker; });
        if (h == holders.end()) {
          done.push_back(s);
          continue;
        }
        ++s.blocks;
        ++s.by_tier[fastest(h->tiers)];
        running[kept++] = s;
      }
      running.resize(kept);
      if (running.empty()) break;
    }
    done.insert(done.end(), running.begin(), running.end());
    std::sort(done.begin(), done.end(), [](const WorkerScore& a, const WorkerScore& b) {
      return a.blocks != b.blocks ? a.blocks > b.blocks : a.worker < b.worker;
    });
    return done;
  }

  /// Forgets everything a worker holds and its sequence (a server that left, or one about to be
  /// resynchronised from the start). False if the worker is unknown.
  bool remove_worker(WorkerId worker) {
    const std::unique_lock lock(mu_);
    const auto it = workers_.find(worker);
    if (it == workers_.end()) return false;
    drop_all_of(worker, it->second);
    workers_.erase(it);
    return true;
  }

  /// Declares a worker resynchronised after a gap (its missed batches replayed). False if the
  /// worker is unknown.
  bool mark_synced(WorkerId worker) {
    const std::unique_lock lock(mu_);
    const auto it = workers_.find(worker);
    if (it == workers_.end()) return false;
    it->second.in_sync = true;
    return true;
  }

  /// A worker's bookkeeping, if it is known.
  [[nodiscard]] std::optional<WorkerIndexState> worker(WorkerId worker) const {
    const std::shared_lock lock(mu_);
    const auto it = workers_.find(worker);
    if (it == workers_.end()) return std::nullopt;
    return it->second;
  }
  /// Every known worker, ascending.
  [[nodiscard]] std::vector<WorkerId> workers() const {
    const std::shared_lock lock(mu_);
    std::vector<WorkerId> out;
    for (const auto& [id, state] : workers_) out.push_back(id);
    return out;
  }
  /// Distinct blocks held by at least one worker.
  [[nodiscard]] std::size_t num_blocks() const {
    const std::shared_lock lock(mu_);
    return blocks_.size();
  }
  /// Which tiers of `worker` hold `key` (bit t for Tier t); 0 if none.
  [[nodiscard]] std::uint8_t tiers_of(WorkerId worker, const Key& key) const {
    const std::shared_lock lock(mu_);
    const auto it = blocks_.find(key);
    if (it == blocks_.end()) return 0;
    for (const Holder& h : it->second) {
      if (h.worker == worker) return h.tiers;
    }
    return 0;
  }

 private:
  struct Holder {
    WorkerId worker;
    std::uint8_t tiers;  // bit t: held in Tier t
  };

  static std::uint8_t bit(Tier t) noexcept { return static_cast<std::uint8_t>(1u << static_cast<unsigned>(t)); }
  // The fastest tier among the bits (tiers are numbered fastest first).
  static std::size_t fastest(std::uint8_t tiers) noexcept {
    return static_cast<std::size_t>(std::countr_zero(static_cast<unsigned>(tiers)));
  }

  void add(WorkerId worker, WorkerIndexState& w, const Key& key, Tier tier) {
    std::vector<Holder>& holders = blocks_[key];
    for (Holder& h : holders) {
      if (h.worker == worker) {
        h.tiers |= bit(tier);
        return;
      }
    }
    holders.push_back(Holder{worker, bit(tier)});
    ++w.blocks;
  }

  // A removal of a block the index does not know for that worker (applied after a gap, or a
  // tier it was never stored in) changes nothing.
  void remove(WorkerId worker, WorkerIndexState& w, const Key& key, Tier tier) {
    const auto it = blocks_.find(key);
    if (it == blocks_.end()) return;
    std::vector<Holder>& holders = it->second;
    const auto h = std::find_if(holders.begin(), holders.end(), [&](const Holder& x) { return x.worker == worker; });
    if (h == holders.end()) return;
    h->tiers = static_cast<std::uint8_t>(h->tiers & ~bit(tier));
    if (h->tiers != 0) return;
    *h = holders.back();
    holders.pop_back();
    --w.blocks;
    if (holders.empty()) blocks_.erase(it);
  }

  void drop_all_of(WorkerId worker, WorkerIndexState& w) {
    if (w.blocks == 0) return;
    for (auto it = blocks_.begin(); it != blocks_.end();) {
      std::vector<Holder>& holders = it->second;
      std::erase_if(holders, [&](const Holder& h) { return h.worker == worker; });
      it = holders.empty() ? blocks_.erase(it) : std::next(it);
    }
    w.blocks = 0;
  }

  mutable std::shared_mutex mu_;
  std::unordered_map<Key, std::vector<Holder>, Hash> blocks_;
  std::map<WorkerId, WorkerIndexState> workers_;
};

}  // namespace llmds
