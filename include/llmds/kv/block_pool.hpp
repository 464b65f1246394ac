// BlockPool: the block registry under a prefix-cached KV cache. It decides which physical
// block (page) a request gets, which blocks are shared, and which cached block is evicted.
//
// Every block is in one of three states:
//
//   free    on the PagedAllocator's free list; holds nothing worth keeping
//   in use  held by refcount >= 1 requests; never evicted
//   cached  refcount 0 but registered under a key (a chained block hash): its contents can
//           still serve a later request with the same prefix, until it is evicted
//
//   allocate:  free -> in use, and when no free block is left, cached -> in use (eviction)
//   touch:     cached -> in use, or refcount + 1 on a block in use (sharing)
//   release:   refcount - 1; at 0 a registered block becomes cached, any other block free
//
// Why a separate cached state rather than freeing at refcount 0: prefix caching across time. A
// system prompt or an earlier turn of a conversation keeps its KV after its request ends, and
// the next request that starts the same way reuses it; the pool gives up such blocks only when
// it needs the room, least recently released first.
//
// Layout. Block ids come from a PagedAllocator (O(1) per block); refcounts, states and keys are
// arrays indexed by block id; the cached blocks are kept in eviction order by the Policy
// (kv/eviction_policy.hpp), intrusive lists threaded through arrays, so that unlinking a block
// that a request touches, appending a released one and evicting the next are all O(1) without
// any allocation. The registry is a flat hash table from key to block, sized once for every
// block (kv/detail/block_registry.hpp): it never grows and never allocates.
//
// Eviction order. LruEviction (the default): a block that is released goes to the back, eviction
// takes from the front. RetentionEviction: the same within each of 101 retention priorities
// (set_retention_priority), lowest priority first. Callers release a request's blocks tail
// first, so that the tail of a prompt (shared by fewest later requests) is evicted before its
// head. Free blocks are always used before any cached block is evicted; a caller that keeps
// what is evicted (a lower tier of a tiered cache) asks try_allocate_into for the evicted keys.
//
// Invariants: a cached block has refcount 0 and a key, and is in the registry and the list; a
// free block has refcount 0, no key, and is on the allocator's free list; each key maps to at
// most one block. Capacity counts every block, cached or in use.
//
// Costs: allocate O(n) for n blocks, touch/release O(1) per block, match_prefix O(hits + 1)
// hash lookups, register O(1), defragment O(num_blocks + registered).
#pragma once

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <stdexcept>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "llmds/core/errors.hpp"
#include "llmds/core/stats_fields.hpp"
#include "llmds/core/types.hpp"
#include "llmds/detail/assert.hpp"
#include "llmds/kv/detail/block_registry.hpp"
#include "llmds/kv/eviction_policy.hpp"
#include "llmds/kv/paged_allocator.hpp"

namespace llmds {

struct BlockPoolStats {
  std::size_t num_blocks = 0;
  std::size_t free_blocks = 0;    // on the free list
  std::size_t cached_blocks = 0;  // refcount 0, registered, evictable
  std::size_t in_use_blocks = 0;  // refcount >= 1
  std::size_t shared_blocks = 0;  // refcount >= 2
  std::uint64_t total_refs = 0;   // sum of refcounts
  std::size_t registered_blocks = 0;  // keys in the registry (cached or in use)
  std::uint64_t evictions = 0;    // cached blocks taken for new contents, over the pool's life

  /// Every figure by name (core/stats_fields.hpp).
  template <class Visit>
  void for_each_field(Visit&& visit) const {
    visit("num_blocks", num_blocks);
    visit("free_blocks", free_blocks);
    visit("cached_blocks", cached_blocks);
    visit("in_use_blocks", in_use_blocks);
    visit("shared_blocks", shared_blocks);
    visit("total_refs", total_refs);
    visit("registered_blocks", registered_blocks);
    visit("evictions", evictions);
  }
};

template <class Key, class Hash = std::hash<Key>, class KeyEqual = std::equal_to<Key>,
          class Policy = LruEviction>
  requires std::copyable<Key> && std::default_initializable<Key> && std::equality_comparable<Key> &&
           EvictionPolicy<Policy>
class BlockPool {
 public:
  explicit BlockPool(std::size_t num_blocks)
      : allocator_(PagedAllocatorConfig{1, num_blocks}),
        state_(num_blocks, State::kFree),
        refcount_(num_blocks, 0),
        key_(num_blocks),
        policy_(num_blocks),
        registry_(num_blocks) {}

  /// The longest run of leading keys that are registered, as a count; with `blocks`, their
  /// block ids are appended to it. Changes nothing: touch() the blocks to take them.
  std::size_t match_prefix(std::span<const Key> keys, std::vector<BlockId>* blocks = nullptr) const {
    std::size_t hits = 0;
    for (const Key& key : keys) {
      const BlockId b = registry_.find(key);
      if (b < 0) break;
      if (blocks != nullptr) blocks->push_back(b);
      ++hits;
    }
    return hits;
  }

  /// The block registered under key, if any.
  [[nodiscard]] std::optional<BlockId> find(const Key& key) const {
    const BlockId b = registry_.find(key);
    if (b < 0) return std::nullopt;
    return b;
  }

  /// n blocks with refcount 1: free blocks first, then cached blocks evicted least recently
  /// released first (their keys leave the registry). nullopt, changing nothing, if fewer than n
  /// blocks are free or cached.
  [[nodiscard]] std::optional<std::vector<BlockId>> try_allocate(std::size_t n) {
    std::vector<BlockId> blocks;
    if (!try_allocate_into(n, blocks)) return std::nullopt;
    return blocks;
  }

  /// As try_allocate, appending the blocks to `out`; false, changing nothing, if fewer than n
  /// are free or cached. With `evicted`, the keys of the cached blocks evicted to make room are
  /// appended to it, in eviction order. Growing the vectors is the only allocation, and it
  /// comes first: with room reserved in them, this cannot throw. The blocks start at the
  /// default retention priority.
  bool try_allocate_into(std::size_t n, std::vector<BlockId>& out,
                         std::vector<Key>* evicted = nullptr) {
    if (n > available()) return false;
    const std::size_t from_free = std::min(n, allocator_.free_pages());
    out.reserve(out.size() + n);
    if (evicted != nullptr) evicted->reserve(evicted->size() + (n - from_free));
    const std::size_t first = out.size();
    [[maybe_unused]] const bool taken = allocator_.try_alloc_into(from_free, out);
    LLMDS_ASSERT(taken, "BlockPool: the allocator refused pages it reported free");
    for (std::size_t i = from_free; i < n; ++i) out.push_back(evict_next(evicted));
    for (std::size_t i = first; i < out.size(); ++i) {
      state_[idx(out[i])] = State::kInUse;
      refcount_[idx(out[i])] = 1;
      policy_.set_priority(out[i], kDefaultRetentionPriority);
    }
    in_use_ += n;
    return true;
  }

  /// As try_allocate, but throws llmds::OutOfPages when the blocks are not there.
  [[nodiscard]] std::vector<BlockId> allocate(std::size_t n) {
    if (auto blocks = try_allocate(n)) return std::move(*blocks);
    throw OutOfPages(fmt::format("BlockPool::allocate: {} blocks requested, {} free and {} cached",
                                 n, free_blocks(), cached_blocks()));
  }

  /// Takes one more reference to each block (a block may be listed more than once): a cached
  /// block comes back into use and can no longer be evicted. Throws, changing nothing,
  /// std::out_of_range if a block id is out of range and std::invalid_argument if a block is free.
  void touch(std::span<const BlockId> blocks) {
    for (const BlockId b : blocks) {
      check_range(b, "touch");
      if (state_[idx(b)] == State::kFree) {
        throw std::invalid_argument(
            fmt::format("BlockPool::touch: block {} is free; only cached or in-use blocks can be "
                        "touched", b));
      }
    }
    for (const BlockId b : blocks) {
      if (state_[idx(b)] == State::kCached) {
        policy_.erase(b);
        state_[idx(b)] = State::kInUse;
        ++in_use_;
      }
      ++refcount_[idx(b)];
    }
  }

  /// Takes up to n cached blocks, next to be evicted first, back into use (refcount 1, still
  /// registered, so a match still finds them) and appends them to `out`; returns how many. For
  /// a caller that copies blocks elsewhere before evicting them, ahead of need (a tiered
  /// cache's reclaimer): once copied, release() and remove_cached() evict each.
  std::size_t take_next_evictions(std::size_t n, std::vector<BlockId>& out) {
    n = std::min(n, policy_.size());
    out.reserve(out.size() + n);
    for (std::size_t i = 0; i < n; ++i) {
      const BlockId b = policy_.pop();
      state_[idx(b)] = State::kInUse;
      refcount_[idx(b)] = 1;
      out.push_back(b);
    }
    in_use_ += n;
    return n;
  }

  /// Registers an in-use block under key, so that a later match_prefix finds it and, once it
  /// is released, it stays cached. Returns false, registering nothing, if another block already
  /// holds the key (the first one stays the canonical copy; this block will be freed, not
  /// cached, when released). Throws std::invalid_argument if the block is not in use or is
  /// already registered under a different key.
  bool register_block(BlockId block, const Key& key) {
    check_range(block, "register_block");
    if (state_[idx(block)] != State::kInUse) {
      throw std::invalid_argument(
          fmt::format("BlockPool::register_block: block {} is not in use", block));
    }
    if (key_[idx(block)].has_value()) {
      if (KeyEqual{}(*key_[idx(block)], key)) return true;
      throw std::invalid_argument(fmt::format(
          "BlockPool::register_block: block {} is already registered under another key", block));
    }
    const auto [holder, inserted] = registry_.try_emplace(key, block);
    if (!inserted) return holder == block;
    key_[idx(block)] = key;
    return true;
  }

  /// Drops one reference to each block, in the order given (pass a request's blocks tail
  /// first). A block whose refcount reaches 0 becomes cached if registered, free otherwise.
  /// Throws std::invalid_argument, changing nothing, if a block is not in use or is listed more
  /// often than it is referenced.
  void release(std::span<const BlockId> blocks) {
    std::size_t checked = 0;
    auto undo = [&] {
      for (std::size_t i = 0; i < checked; ++i) ++refcount_[idx(blocks[i])];
    };
    for (const BlockId b : blocks) {
      if (b < 0 || idx(b) >= num_blocks() || state_[idx(b)] != State::kInUse ||
          refcount_[idx(b)] == 0) {
        undo();
        throw std::invalid_argument(fmt::format(
            "BlockPool::release: block {} is not in use (or released more often than held)", b));
      }
      --refcount_[idx(b)];
      ++checked;
    }
    for (const BlockId b : blocks) {
      if (refcount_[idx(b)] != 0 || state_[idx(b)] != State::kInUse) continue;
      --in_use_;
      if (key_[idx(b)].has_value()) {
        state_[idx(b)] = State::kCached;
        policy_.insert(b);
      } else {
        state_[idx(b)] = State::kFree;
        const BlockId one[] = {b};
        allocator_.free(one);
      }
    }
  }

  /// Moves every non-free block to the lowest ids, keeping their order, and returns the moves
  /// (old id, new id) in ascending old id so that owners can move block contents and rewrite
  /// their tables. Refcounts, keys, the registry and the eviction order move with the blocks.
  std::vector<std::pair<BlockId, BlockId>> defragment() {
    auto moves = allocator_.defragment();
    if (moves.empty()) return moves;
    std::vector<BlockId> where(num_blocks());
    for (std::size_t i = 0; i < where.size(); ++i) where[i] = static_cast<BlockId>(i);
    for (const auto& [from, to] : moves) where[idx(from)] = to;

    std::vector<BlockId> order = policy_.order();
    for (BlockId& b : order) b = where[idx(b)];
    policy_.clear();
    // Ascending old ids move to strictly lower, already vacated ids, so moving in that order
    // never overwrites a block that has yet to move.
    for (const auto& [from, to] : moves) {
      state_[idx(to)] = state_[idx(from)];
      refcount_[idx(to)] = refcount_[idx(from)];
      key_[idx(to)] = std::move(key_[idx(from)]);
      policy_.set_priority(to, policy_.priority(from));
      state_[idx(from)] = State::kFree;
      refcount_[idx(from)] = 0;
      key_[idx(from)].reset();
    }
    registry_.remap_blocks([&](BlockId b) { return where[idx(b)]; });
    for (const BlockId b : order) policy_.insert(b);
    return moves;
  }

  [[nodiscard]] std::size_t num_blocks() const noexcept { return state_.size(); }
  [[nodiscard]] std::size_t free_blocks() const noexcept { return allocator_.free_pages(); }
  [[nodiscard]] std::size_t cached_blocks() const noexcept { return policy_.size(); }
  [[nodiscard]] std::size_t in_use_blocks() const noexcept { return in_use_; }
  /// Blocks an allocation can take right now: free plus cached.
  [[nodiscard]] std::size_t available() const noexcept { return free_blocks() + cached_blocks(); }
  [[nodiscard]] std::uint64_t evictions() const noexcept { return evictions_; }

  /// References held on a block: 0 for a free or cached block. Throws std::out_of_range.
  [[nodiscard]] std::uint32_t refcount(BlockId block) const {
    check_range(block, "refcount");
    return refcount_[idx(block)];
  }
  [[nodiscard]] bool is_free(BlockId block) const {
    check_range(block, "is_free");
    return state_[idx(block)] == State::kFree;
  }
  [[nodiscard]] bool is_cached(BlockId block) const {
    check_range(block, "is_cached");
    return state_[idx(block)] == State::kCached;
  }
  /// The key a block is registered under, or nullptr.
  [[nodiscard]] const Key* key_of(BlockId block) const {
    check_range(block, "key_of");
    return key_[idx(block)] ? &*key_[idx(block)] : nullptr;
  }

  /// Every registered key, in no particular order. O(registered).
  [[nodiscard]] std::vector<Key> registered_keys() const {
    std::vector<Key> keys;
    keys.reserve(registry_.size());
    registry_.for_each([&](const Key& key, BlockId) { keys.push_back(key); });
    return keys;
  }

  /// Cached blocks from the next to be evicted to the last. O(cached).
  [[nodiscard]] std::vector<BlockId> eviction_order() const { return policy_.order(); }

  /// Sets how long a block is kept relative to others once cached (kv/eviction_policy.hpp); a
  /// cached block moves to the back of its new priority. Allocation resets it to
  /// kDefaultRetentionPriority. No effect under LruEviction. Throws, changing nothing,
  /// std::out_of_range for a block out of range, std::invalid_argument for a free block or a
  /// priority above kMaxRetentionPriority.
  void set_retention_priority(BlockId block, RetentionPriority priority) {
    check_range(block, "set_retention_priority");
    if (state_[idx(block)] == State::kFree) {
      throw std::invalid_argument(
          fmt::format("BlockPool::set_retention_priority: block {} is free", block));
    }
    policy_.set_priority(block, priority);
  }
  [[nodiscard]] RetentionPriority retention_priority(BlockId block) const {
    check_range(block, "retention_priority");
    return policy_.priority(block);
  }

  /// Frees the cached block registered under key, as if it had been evicted (counted in
  /// evictions()): for a tiered cache moving the block to another tier, or dropping a copy
  /// found corrupt. False, changing nothing, if no block holds the key or it is in use.
  bool remove_cached(const Key& key) {
    const BlockId b = registry_.find(key);
    if (b < 0 || state_[idx(b)] != State::kCached) return false;
    policy_.erase(b);
    registry_.erase(key);
    key_[idx(b)].reset();
    state_[idx(b)] = State::kFree;
    ++evictions_;
    const BlockId one[] = {b};
    allocator_.free(one);
    return true;
  }

  /// O(num_blocks): the shared-block count and reference total are computed by a scan.
  [[nodiscard]] BlockPoolStats stats() const {
    BlockPoolStats s;
    s.num_blocks = num_blocks();
    s.free_blocks = free_blocks();
    s.cached_blocks = cached_blocks();
    s.in_use_blocks = in_use_;
    s.registered_blocks = registry_.size();
    s.evictions = evictions_;
    for (const std::uint32_t r : refcount_) {
      s.total_refs += r;
      if (r >= 2) ++s.shared_blocks;
    }
    return s;
  }

 private:
  enum class State : std::uint8_t { kFree, kInUse, kCached };

  static std::size_t idx(BlockId b) noexcept { return static_cast<std::size_t>(b); }

  void check_range(BlockId b, const char* op) const {
    if (b < 0 || idx(b) >= num_blocks()) {
      throw std::out_of_range(
          fmt::format("BlockPool::{}: block {} is out of range [0, {})", op, b, num_blocks()));
    }
  }

  BlockId evict_next(std::vector<Key>* evicted) {
    LLMDS_ASSERT(policy_.size() > 0, "BlockPool: eviction from an empty cached set");
    const BlockId b = policy_.pop();
    if (evicted != nullptr) evicted->push_back(*key_[idx(b)]);
    registry_.erase(*key_[idx(b)]);
    key_[idx(b)].reset();
    ++evictions_;
    return b;
  }

  PagedAllocator allocator_;  // the free list; page size 1 since the pool holds no data
  std::vector<State> state_;
  std::vector<std::uint32_t> refcount_;
  std::vector<std::optional<Key>> key_;
  Policy policy_;  // the cached blocks, in eviction order
  detail::BlockRegistry<Key, Hash, KeyEqual> registry_;
  std::size_t in_use_ = 0;
  std::uint64_t evictions_ = 0;
};

}  // namespace llmds
