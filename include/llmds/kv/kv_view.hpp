// KVView: one sequence's keys and values as a reader sees them, wherever its pages lie.
//
// A paged KV cache keeps a sequence's entries in fixed-size pages scattered through one arena;
// the sequence's block table lists its pages in order. A reader such as a model's attention needs
// exactly four things to find the entry of token t: the arena's base, the page size, the width of
// an entry and the block table. Token t is row t % page_size of page table[t / page_size], and
// page p starts p * page_size * entry_width scalars into the arena. This header is the one place
// that arithmetic is written; KVCache uses it for its own pages and hands out views of its
// sequences, so a model depends on this small type rather than on the cache that fills it.
//
// A view borrows: it is valid while the cache's sequence is unchanged (no append, detach or
// defragment in between), as the block table it holds is the cache's own.
#pragma once

#include <cstddef>
#include <span>

#include "llmds/core/types.hpp"

namespace llmds {

namespace detail {

/// Where page `page` starts in an arena of pages of `page_elems` scalars each.
template <class Scalar>
[[nodiscard]] constexpr Scalar* page_start(Scalar* arena, PageId page, std::size_t page_elems) noexcept {
  return arena + static_cast<std::size_t>(page) * page_elems;
}

}  // namespace detail

template <class Scalar>
class KVView {
 public:
  /// An empty view: no pages, so no earlier positions to read.
  KVView() = default;

  KVView(const Scalar* arena, std::size_t page_size, std::size_t entry_width,
         std::span<const PageId> table) noexcept
      : arena_(arena), page_size_(page_size), entry_width_(entry_width), table_(table) {}

  /// The entry_width scalars of the token at `position`; rows of one page follow each other,
  /// entry_width apart. Requires position < capacity().
  [[nodiscard]] const Scalar* row(std::size_t position) const noexcept {
    return detail::page_start(arena_, table_[position / page_size_], page_size_ * entry_width_) +
           (position % page_size_) * entry_width_;
  }

  /// Positions the block table has room for: table size x page size.
  [[nodiscard]] std::size_t capacity() const noexcept { return table_.size() * page_size_; }
  [[nodiscard]] std::size_t page_size() const noexcept { return page_size_; }
  [[nodiscard]] std::size_t entry_width() const noexcept { return entry_width_; }
  [[nodiscard]] std::span<const PageId> table() const noexcept { return table_; }

 private:
  const Scalar* arena_ = nullptr;
  std::size_t page_size_ = 1;  // 1, not 0, so that an empty view's arithmetic never divides by 0
  std::size_t entry_width_ = 0;
  std::span<const PageId> table_;
};

}  // namespace llmds
