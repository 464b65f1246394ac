// TransferQueue: the bounded queue of block transfers waiting for a background worker.
//
// Offloads wait here for the worker that writes them to disk. The queue is bounded, because
// each waiting offload holds a copy of its block in memory; when it is full, something must
// give, and it must not be the engine thread (it never waits for a down-transfer). The
// lowest-priority transfer gives: a new transfer of higher retention priority than the lowest
// one queued takes the place of the oldest of those (dropped and counted); any other new
// transfer is dropped itself. Workers take the highest priority first, first in first out within a
// priority, in batches.
//
// Two IndexedHeaps over the same transfers (core/indexed_heap.hpp), one ordered for taking and
// one for dropping, keep both ends O(log n). Not thread-safe: its owner's lock guards it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <unordered_map>
#include <utility>
#include <vector>

#include "llmds/core/indexed_heap.hpp"
#include "llmds/kv/eviction_policy.hpp"

namespace llmds {

template <class Transfer>
class TransferQueue {
 public:
  /// Throws std::invalid_argument for a capacity of 0.
  explicit TransferQueue(std::size_t capacity)
      : capacity_(capacity), take_(HeapOrder::max), drop_(HeapOrder::min) {
    if (capacity == 0) throw std::invalid_argument("TransferQueue: capacity must be at least 1");
  }

  struct PushResult {
    bool queued = false;
    std::optional<Transfer> dropped;  // the transfer that gave way: the new one, or a queued one
  };

  /// Queues a transfer; see the essay for what happens when the queue is full.
  PushResult push(Transfer transfer, RetentionPriority priority) {
    PushResult result;
    if (items_.size() == capacity_) {
      const auto lowest = drop_.peek();
      if (priority <= priority_of(lowest->score)) {
        result.dropped = std::move(transfer);
        ++dropped_;
        return result;
      }
      result.dropped = take(lowest->key);
      ++dropped_;
    }
    const std::uint64_t id = next_id_++;
    // Taken: the highest priority first, the oldest (smallest id) first within one. Dropped:
    // the lowest priority first, the oldest first within one (it was released longest ago).
    const double base = static_cast<double>(priority) * kPriorityStep;
    items_.emplace(id, std::move(transfer));
    take_.push(id, base - static_cast<double>(id));
    drop_.push(id, base + static_cast<double>(id));
    result.queued = true;
    high_water_ = std::max(high_water_, items_.size());
    return result;
  }

  /// Up to max transfers, the highest priority first.
  std::vector<Transfer> pop_batch(std::size_t max) {
    std::vector<Transfer> out;
    while (out.size() < max && !take_.is_empty()) out.push_back(take(take_.peek()->key));
    return out;
  }

  /// Removes every queued transfer and returns them.
  std::vector<Transfer> drain() { return pop_batch(items_.size()); }

  [[nodiscard]] std::size_t size() const noexcept { return items_.size(); }
  [[nodiscard]] bool empty() const noexcept { return items_.empty(); }
  [[nodiscard]] std::size_t capacity() const noexcept { return capacity_; }
  [[nodiscard]] std::size_t high_water() const noexcept { return high_water_; }
  /// Transfers dropped because the queue was full, over its life.
  [[nodiscard]] std::uint64_t dropped() const noexcept { return dropped_; }

 private:
  // Ids count up to 2^40 before a priority step is crossed: ample for any server's uptime.
  static constexpr double kPriorityStep = 1099511627776.0;  // 2^40
  static RetentionPriority priority_of(double drop_score) {
    return static_cast<RetentionPriority>(drop_score / kPriorityStep);
  }

  Transfer take(std::uint64_t id) {
    take_.erase(id);
    drop_.erase(id);
    auto node = items_.extract(id);
    return std::move(node.mapped());
  }

  std::size_t capacity_;
  IndexedHeap<std::uint64_t, double> take_;
  IndexedHeap<std::uint64_t, double> drop_;
  std::unordered_map<std::uint64_t, Transfer> items_;
  std::uint64_t next_id_ = 0;
  std::size_t high_water_ = 0;
  std::uint64_t dropped_ = 0;
};

}  // namespace llmds
