// IndexedHeap: a binary heap whose entries can be found, re-scored and removed by key.
//
// Schedulers and top-k trackers need more than std::priority_queue: a request's priority changes
// while it waits, a cancelled request leaves the queue from the middle, and a caller asks for the
// score of a key without popping it. IndexedHeap keeps, beside the heap array, where each key
// sits, so every one of those is O(log n) (get_score and contains are O(1)).
//
// Layout. The obvious index maps key -> heap position, but then every step of a sift rewrites a
// hash-map entry. Here the map points to a stable *slot* instead, and a dense array maps
// slot -> heap position; a sift step is two array writes and the map is touched once per call.
// Slots of removed entries are recycled through a free list.
//
//   slot_of_   : unordered_map<Key, slot>          key lookup, once per public call
//   position_  : vector<size_t>, slot -> index     updated on every move inside the heap
//   heap_      : vector<Node{score, key, slot}>    the implicit binary tree
//
// Order. HeapOrder::min puts the smallest score on top, HeapOrder::max the largest. Equal scores
// are broken by the smaller key in both orders, so pop order is fully determined by the contents
// (a scheduler that numbers requests by arrival gets first-come-first-served among equals).
//
// Re-scoring follows the Python API's contract: decrease_key lowers a score and increase_key raises it,
// whatever the order (in a max-heap decrease_key sifts down and increase_key sifts up, in a
// min-heap the reverse); a call that would move the score the other way is an error. update_key
// accepts either direction.
//
// Errors leave the heap unchanged: a duplicate push or a NaN score is std::invalid_argument, an
// unknown key is llmds::KeyError, pop on an empty heap is std::out_of_range.
#pragma once

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "llmds/core/errors.hpp"
#include "llmds/detail/assert.hpp"

namespace llmds {

enum class HeapOrder { min, max };

/// Keys are compared for tie-breaking and hashed for lookup.
template <class K>
concept HeapKey = std::totally_ordered<K> && std::copy_constructible<K> &&
                  std::is_nothrow_move_constructible_v<K> && std::is_nothrow_move_assignable_v<K>;

template <class S>
concept HeapScore = std::totally_ordered<S> && std::copyable<S>;

/// What pop, peek and erase hand back: the Python API's (score, key_id) pair.
template <class Score, class Key>
struct HeapEntry {
  Score score;
  Key key;
  friend bool operator==(const HeapEntry&, const HeapEntry&) = default;
};

template <HeapKey Key = std::int64_t, HeapScore Score = double, class Hash = std::hash<Key>>
class IndexedHeap {
 public:
  using key_type = Key;
  using score_type = Score;
  using entry_type = HeapEntry<Score, Key>;

  explicit IndexedHeap(HeapOrder order = HeapOrder::min) : order_(order) {}

  /// Adds `key` with `score`. Throws std::invalid_argument if the key is present or the score
  /// is NaN.
  void push(const Key& key, Score score) {
    check_score(score, "push");
    if (slot_of_.contains(key)) {
      throw std::invalid_argument(
          fmt::format("IndexedHeap::push: key {} is already in the heap", detail::describe(key)));
    }
    // Everything that can throw happens before the first change.
    reserve_for_one_more();
    Node node{std::move(score), key, next_slot()};
    slot_of_.emplace(key, node.slot);
    if (free_slots_.empty()) {
      position_.push_back(heap_.size());
    } else {
      free_slots_.pop_back();
    }
    heap_.push_back(std::move(node));
    sift_up(heap_.size() - 1);
  }

  /// Removes and returns the top entry. Throws std::out_of_range if the heap is empty.
  entry_type pop() {
    if (heap_.empty()) {
      throw std::out_of_range("IndexedHeap::pop: the heap is empty");
    }
    return remove_at(0);
  }

  /// The top entry, or nullopt if the heap is empty.
  [[nodiscard]] std::optional<entry_type> peek() const {
    if (heap_.empty()) return std::nullopt;
    return entry_type{heap_.front().score, heap_.front().key};
  }

  /// Lowers the score of `key`. Throws llmds::KeyError for an unknown key and
  /// std::invalid_argument if `new_score` is greater than the current score or NaN.
  void decrease_key(const Key& key, Score new_score) {
    rescore(key, std::move(new_score), /*raising=*/false, "decrease_key");
  }

  /// Raises the score of `key`. Throws llmds::KeyError for an unknown key and
  /// std::invalid_argument if `new_score` is smaller than the current score or NaN.
  void increase_key(const Key& key, Score new_score) {
    rescore(key, std::move(new_score), /*raising=*/true, "increase_key");
  }

  /// Sets the score of `key` in either direction. Throws llmds::KeyError for an unknown key and
  /// std::invalid_argument for a NaN score.
  void update_key(const Key& key, Score new_score) {
    check_score(new_score, "update_key");
    const std::size_t i = index_of(key, "update_key");
    heap_[i].score = std::move(new_score);
    restore(i);
  }

  /// Removes `key` wherever it is and returns its entry (Python: delete). Throws llmds::KeyError
  /// for an unknown key.
  entry_type erase(const Key& key) { return remove_at(index_of(key, "delete")); }

  /// The score of `key`, or nullopt if it is not in the heap.
  [[nodiscard]] std::optional<Score> get_score(const Key& key) const {
    const auto it = slot_of_.find(key);
    if (it == slot_of_.end()) return std::nullopt;
    return heap_[position_[it->second]].score;
  }

  [[nodiscard]] bool contains(const Key& key) const { return slot_of_.contains(key); }
  [[nodiscard]] std::size_t size() const noexcept { return heap_.size(); }
  [[nodiscard]] bool is_empty() const noexcept { return heap_.empty(); }
  [[nodiscard]] HeapOrder order() const noexcept { return order_; }

  /// All entries from top to bottom, as pop would return them. O(n log n); the heap is unchanged.
  [[nodiscard]] std::vector<entry_type> sorted() const {
    std::vector<entry_type> out;
    out.reserve(heap_.size());
    for (const Node& node : heap_) out.push_back({node.score, node.key});
    std::sort(out.begin(), out.end(), [this](const entry_type& a, const entry_type& b) {
      return before(a.score, a.key, b.score, b.key);
    });
    return out;
  }

  void reserve(std::size_t n) {
    heap_.reserve(n);
    position_.reserve(n);
    free_slots_.reserve(n);
    slot_of_.reserve(n);
  }

  void clear() noexcept {
    heap_.clear();
    position_.clear();
    free_slots_.clear();
    slot_of_.clear();
  }

 private:
  using Slot = std::size_t;

  struct Node {
    Score score;
    Key key;
    Slot slot;
  };

  static void check_score(const Score& score, const char* op) {
    if constexpr (std::is_floating_point_v<Score>) {
      if (std::isnan(score)) {
        throw std::invalid_argument(fmt::format("IndexedHeap::{}: the score is NaN", op));
      }
    }
  }

  [[nodiscard]] std::size_t index_of(const Key& key, const char* op) const {
    const auto it = slot_of_.find(key);
    if (it == slot_of_.end()) {
      throw KeyError(
          fmt::format("IndexedHeap::{}: key {} is not in the heap", op, detail::describe(key)));
    }
    return position_[it->second];
  }

  [[nodiscard]] Slot next_slot() const noexcept {
    return free_slots_.empty() ? position_.size() : free_slots_.back();
  }

  // Grows the arrays geometrically before a push, so that the push itself cannot fail half-way.
  // free_slots_ never holds more than position_ does, so giving it the same capacity means
  // remove_at never allocates.
  void reserve_for_one_more() {
    auto grow = [](auto& v) {
      if (v.size() == v.capacity()) v.reserve(std::max<std::size_t>(8, 2 * v.capacity()));
    };
    grow(heap_);
    if (free_slots_.empty()) {
      grow(position_);
      free_slots_.reserve(position_.capacity());
    }
  }

  void rescore(const Key& key, Score new_score, bool raising, const char* op) {
    check_score(new_score, op);
    const std::size_t i = index_of(key, op);
    Score& score = heap_[i].score;
    if (raising ? new_score < score : score < new_score) {
      throw std::invalid_argument(fmt::format(
          "IndexedHeap::{}: the new score {} is {} than the current score {} of key {}", op,
          new_score, raising ? "smaller" : "greater", score, detail::describe(key)));
    }
    score = std::move(new_score);
    restore(i);
  }

  entry_type remove_at(std::size_t i) {
    // A copied heap has no spare free-slot capacity; make room before the first change.
    if (free_slots_.capacity() < position_.size()) free_slots_.reserve(position_.capacity());
    Node removed = std::move(heap_[i]);
    slot_of_.erase(removed.key);
    free_slots_.push_back(removed.slot);  // capacity reserved above or in push: cannot throw
    Node last = std::move(heap_.back());
    heap_.pop_back();
    if (i < heap_.size()) {
      heap_[i] = std::move(last);
      restore(i);
    }
    return {std::move(removed.score), std::move(removed.key)};
  }

  [[nodiscard]] bool before(const Score& sa, const Key& ka, const Score& sb, const Key& kb) const {
    if (sa < sb || sb < sa) return (order_ == HeapOrder::min) == (sa < sb);
    return ka < kb;
  }
  [[nodiscard]] bool before(const Node& a, const Node& b) const {
    return before(a.score, a.key, b.score, b.key);
  }

  // Moves the entry at i up or down until the heap property holds again.
  void restore(std::size_t i) {
    if (i > 0 && before(heap_[i], heap_[(i - 1) / 2])) {
      sift_up(i);
    } else {
      sift_down(i);
    }
  }

  // Both sifts move a hole rather than swapping, so each level costs one move and one
  // position write.
  void sift_up(std::size_t i) {
    Node moving = std::move(heap_[i]);
    while (i > 0) {
      const std::size_t parent = (i - 1) / 2;
      if (!before(moving, heap_[parent])) break;
      place(i, std::move(heap_[parent]));
      i = parent;
    }
    place(i, std::move(moving));
  }

  void sift_down(std::size_t i) {
    Node moving = std::move(heap_[i]);
    const std::size_t n = heap_.size();
    for (;;) {
      std::size_t child = 2 * i + 1;
      if (child >= n) break;
      if (child + 1 < n && before(heap_[child + 1], heap_[child])) ++child;
      if (!before(heap_[child], moving)) break;
      place(i, std::move(heap_[child]));
      i = child;
    }
    place(i, std::move(moving));
  }

  void place(std::size_t i, Node&& node) {
    LLMDS_ASSERT(node.slot < position_.size(), "a heap entry points past the slot table");
    heap_[i] = std::move(node);
    position_[heap_[i].slot] = i;
  }

  std::vector<Node> heap_;
  std::vector<std::size_t> position_;
  std::vector<Slot> free_slots_;
  std::unordered_map<Key, Slot, Hash> slot_of_;
  HeapOrder order_;
};

}  // namespace llmds
