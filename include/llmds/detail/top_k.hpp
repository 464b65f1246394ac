// TopK: the k best of a stream of items, kept in a size-k heap whose top is the worst kept item,
// so a newcomer is compared with one item and an admission costs O(log k). `Better(a, b)` is a
// strict order (true if a ranks before b) that also decides ties, so the result does not depend
// on the order items arrive in. Used for BM25 top-k and for the retrieval pipeline's fusion.
#pragma once

#include <algorithm>
#include <cstddef>
#include <utility>
#include <vector>

namespace llmds::detail {

template <class T, class Better>
class TopK {
 public:
  explicit TopK(std::size_t k, Better better = {}) : k_(k), better_(std::move(better)) {
    heap_.reserve(k);
  }

  [[nodiscard]] bool full() const noexcept { return heap_.size() == k_; }
  /// The worst item kept; only when something is kept.
  [[nodiscard]] const T& worst() const noexcept { return heap_.front(); }

  /// Keeps `item` if fewer than k are kept or it beats the worst; true if it was kept and the
  /// heap is full afterwards (the bar to beat may have risen).
  bool offer(const T& item) {
    if (!full()) {
      heap_.push_back(item);
      std::push_heap(heap_.begin(), heap_.end(), better_);
      return full();
    }
    if (!better_(item, heap_.front())) return false;
    std::pop_heap(heap_.begin(), heap_.end(), better_);
    heap_.back() = item;
    std::push_heap(heap_.begin(), heap_.end(), better_);
    return true;
  }

  /// The kept items, best first.
  std::vector<T> take_sorted() && {
    std::sort(heap_.begin(), heap_.end(), better_);
    return std::move(heap_);
  }

 private:
  std::size_t k_;
  Better better_;
  std::vector<T> heap_;
};

}  // namespace llmds::detail
