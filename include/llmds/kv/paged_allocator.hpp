// PagedAllocator: hands out fixed-size pages of a KV arena by id, in O(1) per page.
//
// A paged KV cache (PagedAttention) stores each sequence's keys and values in fixed-size pages
// scattered through one arena, addressed through a per-sequence block table of page ids. The
// allocator owns only the ids: which pages are free, which are in use. Whoever owns the arena
// (KVCache) owns the data.
//
// Layout. A LIFO free list of page ids (a vector used as a stack) gives O(1) alloc and free per
// page, and reuses the most recently freed (cache-warm) pages first. A byte per page records
// whether it is allocated, so a double free, or an id never handed out, is caught in O(1).
// Initially the stack pops ids in ascending order, so a fresh allocator hands out 0, 1, 2, ...
//
// alloc is all or nothing: if fewer than num_pages are free, nothing is allocated. For the
// engine's hot path, where running out of pages is an expected outcome, try_alloc returns
// nullopt instead of throwing.
//
// defragment() moves the used pages to the lowest ids (keeping their relative order) and reports
// each move, old id -> new id, so owners can rewrite their block tables and move page data. Ids
// are int32 because that is what paged-attention kernels take for block tables.
//
// Fragmentation is measured as the share of holes below the highest used id:
// (highest used id + 1 - used) / (highest used id + 1); 0 when the used pages are packed at the
// bottom (as after defragment), near 1 when a few pages are scattered over a large range.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <stdexcept>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "llmds/core/errors.hpp"
#include "llmds/core/types.hpp"

namespace llmds {

struct PagedAllocatorConfig {
  std::size_t page_size = 512;  // tokens per page; the Python API's default (docs/python-api.md)
  std::size_t max_pages = 10000;  // the Python API's default

  void validate() const {
    if (page_size == 0) throw std::invalid_argument("PagedAllocatorConfig.page_size must be at least 1");
    if (max_pages == 0 ||
        max_pages > static_cast<std::size_t>(std::numeric_limits<PageId>::max())) {
      throw std::invalid_argument(fmt::format(
          "PagedAllocatorConfig.max_pages must be in [1, 2^31 - 1], got {}", max_pages));
    }
  }
};

struct PageStats {
  std::size_t total_pages = 0;
  std::size_t used_pages = 0;
  std::size_t free_pages = 0;
  double utilization = 0.0;    // used / total
  double fragmentation = 0.0;  // holes below the highest used id, as a share of that range
  std::uint64_t alloc_count = 0;  // pages handed out over the allocator's life
  std::uint64_t free_count = 0;   // pages returned over the allocator's life
};

class PagedAllocator {
 public:
  explicit PagedAllocator(PagedAllocatorConfig config = {}) : config_(config) {
    config_.validate();
    allocated_.assign(config_.max_pages, 0);
    free_list_.resize(config_.max_pages);
    for (std::size_t i = 0; i < config_.max_pages; ++i) {
      free_list_[i] = static_cast<PageId>(config_.max_pages - 1 - i);
    }
  }

  /// num_pages pages, or nullopt (nothing allocated) if fewer are free.
  [[nodiscard]] std::optional<std::vector<PageId>> try_alloc(std::size_t num_pages) {
    std::vector<PageId> pages;
    if (!try_alloc_into(num_pages, pages)) return std::nullopt;
    return pages;
  }

  /// As try_alloc, appending the pages to `out`; false, changing nothing, if fewer are free.
  /// Growing `out` is the only allocation, and it comes before any page is taken: with room
  /// reserved in `out`, this cannot throw (KVCache relies on that midway through an attach).
  bool try_alloc_into(std::size_t num_pages, std::vector<PageId>& out) {
    if (num_pages > free_list_.size()) return false;
    out.reserve(out.size() + num_pages);
    out.insert(out.end(), free_list_.rbegin(),  // in the order the stack pops them
               free_list_.rbegin() + static_cast<std::ptrdiff_t>(num_pages));
    free_list_.resize(free_list_.size() - num_pages);
    for (auto it = out.end() - static_cast<std::ptrdiff_t>(num_pages); it != out.end(); ++it) {
      allocated_[static_cast<std::size_t>(*it)] = 1;
    }
    alloc_count_ += num_pages;
    return true;
  }

  /// num_pages pages. Throws llmds::OutOfPages, allocating nothing, if fewer are free.
  [[nodiscard]] std::vector<PageId> alloc(std::size_t num_pages) {
    if (auto pages = try_alloc(num_pages)) return std::move(*pages);
    throw OutOfPages(fmt::format("PagedAllocator::alloc: {} pages requested, {} of {} free",
                                 num_pages, free_list_.size(), config_.max_pages));
  }

  /// Returns pages to the free list. Throws std::invalid_argument, freeing nothing, if any id is
  /// out of range, not allocated, or listed twice.
  void free(std::span<const PageId> pages) {
    std::size_t checked = 0;
    auto undo_marks = [&] {
      for (std::size_t i = 0; i < checked; ++i) allocated_[static_cast<std::size_t>(pages[i])] = 1;
    };
    // Validate by clearing each page's mark as it is checked: a second occurrence of an id then
    // looks unallocated, which catches duplicates without a second structure.
    for (const PageId p : pages) {
      if (p < 0 || static_cast<std::size_t>(p) >= config_.max_pages) {
        undo_marks();
        throw std::invalid_argument(fmt::format(
            "PagedAllocator::free: page {} is out of range [0, {})", p, config_.max_pages));
      }
      if (allocated_[static_cast<std::size_t>(p)] == 0) {
        undo_marks();
        throw std::invalid_argument(fmt::format(
            "PagedAllocator::free: page {} is not allocated (double free or never handed out)", p));
      }
      allocated_[static_cast<std::size_t>(p)] = 0;
      ++checked;
    }
    // Freed in reverse, so that the next alloc of as many pages hands back the same ids in the
    // same order.
    for (auto it = pages.rbegin(); it != pages.rend(); ++it) free_list_.push_back(*it);
    free_count_ += pages.size();
  }

  [[nodiscard]] bool is_allocated(PageId page) const noexcept {
    return page >= 0 && static_cast<std::size_t>(page) < config_.max_pages &&
           allocated_[static_cast<std::size_t>(page)] != 0;
  }

  /// Moves every used page to the lowest ids, keeping their order, and returns the moves
  /// (old id, new id) in ascending old id; pages already in place are not listed. O(max_pages).
  std::vector<std::pair<PageId, PageId>> defragment() {
    std::vector<std::pair<PageId, PageId>> moves;
    PageId next = 0;
    for (std::size_t p = 0; p < config_.max_pages; ++p) {
      if (allocated_[p] == 0) continue;
      if (static_cast<PageId>(p) != next) moves.emplace_back(static_cast<PageId>(p), next);
      ++next;
    }
    const auto used = static_cast<std::size_t>(next);
    std::fill(allocated_.begin(), allocated_.begin() + next, 1);
    std::fill(allocated_.begin() + next, allocated_.end(), 0);
    free_list_.clear();
    for (std::size_t i = config_.max_pages; i > used; --i) {
      free_list_.push_back(static_cast<PageId>(i - 1));
    }
    return moves;
  }

  /// O(max_pages): counts are kept, the fragmentation measure scans the page map.
  [[nodiscard]] PageStats stats() const {
    PageStats s;
    s.total_pages = config_.max_pages;
    s.free_pages = free_list_.size();
    s.used_pages = s.total_pages - s.free_pages;
    s.utilization = double(s.used_pages) / double(s.total_pages);
    s.alloc_count = alloc_count_;
    s.free_count = free_count_;
    const auto top = std::find(allocated_.rbegin(), allocated_.rend(), 1);
    if (top != allocated_.rend()) {
      const auto span = static_cast<double>(allocated_.rend() - top);  // highest used id + 1
      s.fragmentation = (span - double(s.used_pages)) / span;
    }
    return s;
  }

  [[nodiscard]] std::size_t page_size() const noexcept { return config_.page_size; }
  [[nodiscard]] std::size_t max_pages() const noexcept { return config_.max_pages; }
  [[nodiscard]] std::size_t free_pages() const noexcept { return free_list_.size(); }
  [[nodiscard]] std::size_t used_pages() const noexcept {
    return config_.max_pages - free_list_.size();
  }

 private:
  PagedAllocatorConfig config_;
  std::vector<PageId> free_list_;      // a stack: the next page to hand out is at the back
  std::vector<std::uint8_t> allocated_;  // 1 if the page is handed out
  std::uint64_t alloc_count_ = 0;
  std::uint64_t free_count_ = 0;
};

}  // namespace llmds
