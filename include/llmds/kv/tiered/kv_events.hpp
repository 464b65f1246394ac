// KV events: what a tiered KV cache tells the world about its contents.
//
// A cache-aware router sends each request to the server that already holds most of its prefix.
// It can only know that if every server reports every change to what it holds: a block stored
// in a tier, blocks removed from a tier, everything cleared. These are the three events vLLM
// publishes (BlockStored, BlockRemoved, AllBlocksCleared, each with the tier as its "medium")
// and that routers such as Dynamo's KV router, SGLang's router and llm-d consume, so the same
// consumers can read llmds's stream.
//
// Order and loss. Events are appended in the order the changes happen, under the cache's lock,
// so replaying the stream from the start rebuilds exactly what every tier holds. Events are
// grouped into batches, each with a sequence number one above the last; a subscriber that sees
// a gap knows it missed something. The log keeps the last `capacity` batches, so a subscriber
// that joins late, or was disconnected, can ask for every batch from a sequence number on
// (replay_from); older batches are gone and the answer says so, and the subscriber must then
// resynchronise from a snapshot of the cache instead.
//
// Delivery. Subscribers are called from publish(), on the thread that publishes, in sequence
// order, after the log's lock is released: a callback may read the log, and may even cause
// more events (they are delivered after its batch), but must not block for long (the engine
// thread is waiting). A callback that throws is counted and unsubscribed; delivery to the
// others goes on.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <stdexcept>
#include <utility>
#include <variant>
#include <vector>

#include "llmds/core/types.hpp"
#include "llmds/kv/tiered/tier.hpp"

namespace llmds {

/// Blocks stored in a tier, consecutive in one sequence: block_hashes[i]'s parent is
/// block_hashes[i - 1], the first one's is parent_hash (none for a sequence's first block).
/// token_ids holds block_size tokens per block when the cache knows them (empty otherwise).
template <class Key>
struct BlockStored {
  std::vector<Key> block_hashes;
  std::optional<Key> parent_hash;
  std::vector<TokenId> token_ids;
  std::uint32_t block_size = 0;
  Tier tier = Tier::kPrimary;
  friend bool operator==(const BlockStored&, const BlockStored&) = default;
};

/// Blocks no longer held by a tier (evicted, moved up, found corrupt).
template <class Key>
struct BlockRemoved {
  std::vector<Key> block_hashes;
  Tier tier = Tier::kPrimary;
  friend bool operator==(const BlockRemoved&, const BlockRemoved&) = default;
};

/// Every tier is empty.
struct AllBlocksCleared {
  friend bool operator==(const AllBlocksCleared&, const AllBlocksCleared&) = default;
};

template <class Key>
using KVEvent = std::variant<BlockStored<Key>, BlockRemoved<Key>, AllBlocksCleared>;

template <class Key>
struct KVEventBatch {
  std::uint64_t seq = 0;
  std::vector<KVEvent<Key>> events;
  friend bool operator==(const KVEventBatch&, const KVEventBatch&) = default;
};

/// What replay_from found: the batches from the sequence number asked for, or, if some of them
/// have already left the log, none and complete = false (resynchronise from a snapshot).
template <class Key>
struct KVEventReplay {
  bool complete = true;
  std::vector<KVEventBatch<Key>> batches;
};

template <class Key>
class KVEventLog {
 public:
  using Callback = std::function<void(const KVEventBatch<Key>&)>;
  using SubscriptionId = std::uint64_t;

  /// Keeps the last `capacity` batches for replay. Throws std::invalid_argument for 0.
  explicit KVEventLog(std::size_t capacity) : capacity_(capacity) {
    if (capacity == 0) throw std::invalid_argument("KVEventLog: capacity must be at least 1");
  }

  /// Adds an event to the batch being built; nothing is delivered until publish().
  void append(KVEvent<Key> event) {
    const std::lock_guard lock(mu_);
    pending_.push_back(std::move(event));
  }

  /// Closes the batch being built (if it has any event), keeps it for replay and delivers it to
  /// every subscriber. Returns its sequence number, or nullopt if there was nothing to publish.
  /// Called from a subscriber's callback (which changed what it listens to), it only leaves
  /// the new events pending: the publish already running delivers them next, in order.
  std::optional<std::uint64_t> publish() {
    if (delivering_thread_.load(std::memory_order_relaxed) == std::this_thread::get_id()) return std::nullopt;
    const std::lock_guard delivering(deliver_mu_);  // batches reach subscribers in order
    delivering_thread_.store(std::this_thread::get_id(), std::memory_order_relaxed);
    std::optional<std::uint64_t> first;
    while (const auto seq = publish_one()) {
      if (!first) first = seq;
    }
    delivering_thread_.store(std::thread::id{}, std::memory_order_relaxed);
    return first;
  }

  /// Calls `callback` with every batch published from now on. Returns an id for unsubscribe.
  SubscriptionId subscribe(Callback callback) {
    if (!callback) throw std::invalid_argument("KVEventLog::subscribe: empty callback");
    const std::lock_guard lock(mu_);
    const SubscriptionId id = next_subscription_++;
    subscribers_.emplace(id, std::move(callback));
    return id;
  }
  /// False if no such subscription (already removed).
  bool unsubscribe(SubscriptionId id) {
    const std::lock_guard lock(mu_);
    return subscribers_.erase(id) != 0;
  }

  /// Every kept batch with seq >= from, oldest first; complete = false if a batch with
  /// seq >= from has already been dropped from the log.
  [[nodiscard]] KVEventReplay<Key> replay_from(std::uint64_t from) const {
    KVEventReplay<Key> out = read_from(from, std::numeric_limits<std::size_t>::max());
    if (!out.complete) out.batches.clear();
    return out;
  }

  /// At most max_batches kept batches with seq >= from, oldest first, for a reader that
  /// follows the log (a publisher): complete = false if a batch with seq >= from has already
  /// been dropped, and then the batches start at the oldest one kept. O(batches returned).
  [[nodiscard]] KVEventReplay<Key> read_from(std::uint64_t from, std::size_t max_batches) const {
    const std::lock_guard lock(mu_);
    KVEventReplay<Key> out;
    const std::uint64_t oldest = kept_.empty() ? next_seq_ : kept_.front().seq;
    if (from < oldest) {
      out.complete = false;
      from = oldest;
    }
    // Kept batches are numbered consecutively: the one numbered `from` is at from - oldest.
    const std::size_t first = static_cast<std::size_t>(std::min<std::uint64_t>(from - oldest, kept_.size()));
    const std::size_t count = std::min(max_batches, kept_.size() - first);
    out.batches.assign(kept_.begin() + static_cast<std::ptrdiff_t>(first),
                       kept_.begin() + static_cast<std::ptrdiff_t>(first + count));
    return out;
  }

  /// The sequence number the next batch will get (= batches published so far).
  [[nodiscard]] std::uint64_t next_seq() const {
    const std::lock_guard lock(mu_);
    return next_seq_;
  }
  [[nodiscard]] std::size_t pending_events() const {
    const std::lock_guard lock(mu_);
    return pending_.size();
  }
  [[nodiscard]] std::size_t capacity() const noexcept { return capacity_; }
  /// Callbacks that threw (and were unsubscribed for it).
  [[nodiscard]] std::uint64_t callback_failures() const {
    const std::lock_guard lock(mu_);
    return callback_failures_;
  }

 private:
  // One batch: kept, then delivered. Runs under deliver_mu_.
  std::optional<std::uint64_t> publish_one() {
    const KVEventBatch<Key>* batch = nullptr;
    std::vector<std::pair<SubscriptionId, Callback>> subscribers;
    {
      const std::lock_guard lock(mu_);
      if (pending_.empty()) return std::nullopt;
      if (kept_.size() == capacity_) kept_.pop_front();
      kept_.push_back(KVEventBatch<Key>{next_seq_++, std::move(pending_)});
      pending_.clear();
      batch = &kept_.back();
      if (!subscribers_.empty()) subscribers.assign(subscribers_.begin(), subscribers_.end());
    }
    // *batch stays where it is until the next publish_one, which runs after this one: only it
    // removes batches, and a deque keeps its other elements in place.
    for (auto& [id, callback] : subscribers) {
      try {
        callback(*batch);
      } catch (...) {
        const std::lock_guard lock(mu_);
        subscribers_.erase(id);
        ++callback_failures_;
      }
    }
    return batch->seq;
  }

  std::size_t capacity_;
  mutable std::mutex mu_;       // everything below
  std::mutex deliver_mu_;       // held while callbacks run, so that batches arrive in order
  std::atomic<std::thread::id> delivering_thread_{};  // the thread holding deliver_mu_, if any
  std::vector<KVEvent<Key>> pending_;
  std::deque<KVEventBatch<Key>> kept_;
  std::map<SubscriptionId, Callback> subscribers_;
  std::uint64_t next_seq_ = 0;
  SubscriptionId next_subscription_ = 1;
  std::uint64_t callback_failures_ = 0;
};

}  // namespace llmds
