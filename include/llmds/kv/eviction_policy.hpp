// Eviction policies: the order in which a BlockPool gives up its cached blocks.
//
// A policy keeps the set of evictable blocks (cached: refcount 0, registered) of a pool whose
// blocks are numbered 0..num_blocks-1, and answers one question: which goes next. The pool
// tells it when a block becomes evictable (insert, on release), stops being evictable (erase,
// when a request touches it again) and takes the victim (pop). Two policies:
//
//   LruEviction        least recently released first: one intrusive list, O(1) everything.
//   RetentionEviction  a retention priority per block, 0..100 (default 35): the lowest priority
//                      goes first, least recently released first within a priority. A request
//                      that knows its prefix will be wanted again (a system prompt, an agent's
//                      tool descriptions) asks for a higher priority so that a burst of one-off
//                      prompts cannot push it out; a block it will never reuse can be given 0.
//                      This is the retention model of TensorRT-LLM's KvCacheRetentionConfig.
//
// With every block at one priority, RetentionEviction evicts in exactly LruEviction's order
// (tested), so LRU is the special case; LruEviction exists because it is a third smaller.
//
// Layout. Both thread their lists through prev/next arrays indexed by block id, with one
// sentinel per list after the blocks: RetentionEviction has 101 lists (one per priority), a
// priority byte per block and a 128-bit mask of non-empty lists, so pop finds the lowest
// non-empty list with one count-trailing-zeros. Nothing allocates after construction.
//
// A custom policy is any type that satisfies the EvictionPolicy concept below.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include <fmt/format.h>

#include "llmds/core/types.hpp"
#include "llmds/detail/assert.hpp"

namespace llmds {

/// How long a block should be kept relative to others: 0 (first to go) .. 100 (last).
using RetentionPriority = std::uint8_t;
inline constexpr RetentionPriority kMinRetentionPriority = 0;
inline constexpr RetentionPriority kMaxRetentionPriority = 100;
inline constexpr RetentionPriority kDefaultRetentionPriority = 35;

/// What a BlockPool needs from an eviction order over blocks 0..num_blocks-1. A block is in the
/// evictable set between insert and erase/pop; insert is only called for a block not in it,
/// erase only for one in it, pop only when size() > 0. order() lists the set from the next
/// victim on. clear() empties the set; set_priority records a block's retention priority,
/// whether or not it is in the set (a policy without priorities ignores it).
template <class P>
concept EvictionPolicy = requires(P p, const P& cp, BlockId b, RetentionPriority prio) {
  requires std::constructible_from<P, std::size_t>;
  p.insert(b);
  p.erase(b);
  { p.pop() } -> std::same_as<BlockId>;
  p.clear();
  p.set_priority(b, prio);
  { cp.priority(b) } -> std::same_as<RetentionPriority>;
  { cp.size() } -> std::same_as<std::size_t>;
  { cp.order() } -> std::same_as<std::vector<BlockId>>;
};

namespace detail {

// Doubly linked lists threaded through two arrays: entries 0..num_blocks-1 are blocks, entry
// num_blocks + l is the sentinel of list l.
class IntrusiveLists {
 public:
  IntrusiveLists(std::size_t num_blocks, std::size_t num_lists)
      : num_blocks_(num_blocks), prev_(num_blocks + num_lists), next_(num_blocks + num_lists) {
    clear();
  }

  void clear() {
    for (std::size_t i = 0; i < prev_.size(); ++i) prev_[i] = next_[i] = static_cast<BlockId>(i);
  }
  [[nodiscard]] BlockId sentinel(std::size_t list) const noexcept {
    return static_cast<BlockId>(num_blocks_ + list);
  }
  [[nodiscard]] bool empty(std::size_t list) const noexcept {
    return next_[at(sentinel(list))] == sentinel(list);
  }
  [[nodiscard]] BlockId front(std::size_t list) const noexcept { return next_[at(sentinel(list))]; }
  [[nodiscard]] BlockId next(BlockId b) const noexcept { return next_[at(b)]; }

  void push_back(std::size_t list, BlockId b) noexcept {
    const BlockId s = sentinel(list), last = prev_[at(s)];
    prev_[at(b)] = last;
    next_[at(b)] = s;
    next_[at(last)] = b;
    prev_[at(s)] = b;
  }
  void unlink(BlockId b) noexcept {
    next_[at(prev_[at(b)])] = next_[at(b)];
    prev_[at(next_[at(b)])] = prev_[at(b)];
    prev_[at(b)] = next_[at(b)] = b;
  }
  void append_list(std::size_t list, std::vector<BlockId>& out) const {
    for (BlockId b = front(list); b != sentinel(list); b = next(b)) out.push_back(b);
  }

 private:
  static std::size_t at(BlockId b) noexcept { return static_cast<std::size_t>(b); }
  std::size_t num_blocks_;
  std::vector<BlockId> prev_, next_;
};

}  // namespace detail

/// Least recently released first.
class LruEviction {
 public:
  explicit LruEviction(std::size_t num_blocks) : lists_(num_blocks, 1) {}

  void insert(BlockId b) noexcept {
    lists_.push_back(0, b);
    ++size_;
  }
  void erase(BlockId b) noexcept {
    lists_.unlink(b);
    --size_;
  }
  BlockId pop() noexcept {
    LLMDS_ASSERT(size_ > 0, "LruEviction::pop on an empty set");
    const BlockId b = lists_.front(0);
    erase(b);
    return b;
  }
  void clear() noexcept {
    lists_.clear();
    size_ = 0;
  }
  void set_priority(BlockId, RetentionPriority) noexcept {}
  [[nodiscard]] RetentionPriority priority(BlockId) const noexcept { return kDefaultRetentionPriority; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] std::vector<BlockId> order() const {
    std::vector<BlockId> out;
    out.reserve(size_);
    lists_.append_list(0, out);
    return out;
  }

 private:
  detail::IntrusiveLists lists_;
  std::size_t size_ = 0;
};

/// Lowest retention priority first, least recently released first within a priority.
class RetentionEviction {
 public:
  static constexpr std::size_t kLevels = std::size_t{kMaxRetentionPriority} + 1;

  explicit RetentionEviction(std::size_t num_blocks)
      : lists_(num_blocks, kLevels),
        priority_(num_blocks, kDefaultRetentionPriority),
        listed_(num_blocks, 0) {}

  void insert(BlockId b) noexcept {
    const std::size_t level = priority_[at(b)];
    lists_.push_back(level, b);
    listed_[at(b)] = 1;
    mark(level);
    ++size_;
  }
  void erase(BlockId b) noexcept {
    const std::size_t level = priority_[at(b)];
    lists_.unlink(b);
    listed_[at(b)] = 0;
    if (lists_.empty(level)) unmark(level);
    --size_;
  }
  BlockId pop() noexcept {
    LLMDS_ASSERT(size_ > 0, "RetentionEviction::pop on an empty set");
    const BlockId b = lists_.front(lowest_level());
    erase(b);
    return b;
  }
  void clear() noexcept {
    lists_.clear();
    std::fill(listed_.begin(), listed_.end(), std::uint8_t{0});
    mask_ = {};
    size_ = 0;
  }
  /// A block in the set moves to the back of its new priority's list (it counts as just
  /// released there). Throws std::invalid_argument above kMaxRetentionPriority.
  void set_priority(BlockId b, RetentionPriority p) {
    if (p > kMaxRetentionPriority) {
      throw std::invalid_argument(fmt::format(
          "retention priority must be in [0, {}], got {}", kMaxRetentionPriority, unsigned{p}));
    }
    const bool listed = listed_[at(b)] != 0;
    if (listed) erase(b);
    priority_[at(b)] = p;
    if (listed) insert(b);
  }
  [[nodiscard]] RetentionPriority priority(BlockId b) const noexcept { return priority_[at(b)]; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] std::vector<BlockId> order() const {
    std::vector<BlockId> out;
    out.reserve(size_);
    for (std::size_t level = 0; level < kLevels; ++level) lists_.append_list(level, out);
    return out;
  }

 private:
  static std::size_t at(BlockId b) noexcept { return static_cast<std::size_t>(b); }
  void mark(std::size_t level) noexcept { mask_[level / 64] |= std::uint64_t{1} << (level % 64); }
  void unmark(std::size_t level) noexcept { mask_[level / 64] &= ~(std::uint64_t{1} << (level % 64)); }
  [[nodiscard]] std::size_t lowest_level() const noexcept {
    if (mask_[0] != 0) return static_cast<std::size_t>(std::countr_zero(mask_[0]));
    return 64 + static_cast<std::size_t>(std::countr_zero(mask_[1]));
  }

  detail::IntrusiveLists lists_;
  std::vector<RetentionPriority> priority_;
  std::vector<std::uint8_t> listed_;
  std::array<std::uint64_t, 2> mask_{};  // bit l: list l is non-empty
  std::size_t size_ = 0;
};

static_assert(EvictionPolicy<LruEviction>);
static_assert(EvictionPolicy<RetentionEviction>);

}  // namespace llmds
