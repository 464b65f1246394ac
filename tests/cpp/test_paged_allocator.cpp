#include "llmds/kv/paged_allocator.hpp"

#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <vector>

#include <gtest/gtest.h>

namespace {

using llmds::PageId;
using llmds::PagedAllocator;
using llmds::PagedAllocatorConfig;

PagedAllocator make(std::size_t max_pages, std::size_t page_size = 16) {
  return PagedAllocator(PagedAllocatorConfig{page_size, max_pages});
}

TEST(PagedAllocator, DefaultsAreThePythonAPIs) {
  const PagedAllocator a;
  EXPECT_EQ(a.page_size(), 512u);
  EXPECT_EQ(a.max_pages(), 10000u);
  EXPECT_EQ(a.free_pages(), 10000u);
}

TEST(PagedAllocator, FreshAllocatorHandsOutAscendingIds) {
  auto a = make(8);
  EXPECT_EQ(a.alloc(3), (std::vector<PageId>{0, 1, 2}));
  EXPECT_EQ(a.alloc(2), (std::vector<PageId>{3, 4}));
  EXPECT_EQ(a.used_pages(), 5u);
  EXPECT_TRUE(a.alloc(0).empty());
}

TEST(PagedAllocator, FreedPagesAreReusedInTheSameOrder) {
  auto a = make(8);
  const auto pages = a.alloc(4);
  a.free(std::vector<PageId>{pages[1], pages[3]});
  EXPECT_EQ(a.alloc(2), (std::vector<PageId>{1, 3}));
}

TEST(PagedAllocator, AllocIsAllOrNothing) {
  auto a = make(4);
  (void)a.alloc(3);
  EXPECT_THROW((void)a.alloc(2), llmds::OutOfPages);
  EXPECT_EQ(a.try_alloc(2), std::nullopt);
  EXPECT_EQ(a.free_pages(), 1u);
  EXPECT_EQ(a.stats().alloc_count, 3u);
  EXPECT_EQ(a.alloc(1), (std::vector<PageId>{3}));
}

TEST(PagedAllocator, DoubleFreeFreesNothingOfThatCall) {
  auto a = make(4);
  (void)a.alloc(3);
  a.free(std::vector<PageId>{1});
  EXPECT_THROW(a.free(std::vector<PageId>{0, 1}), std::invalid_argument);
  EXPECT_TRUE(a.is_allocated(0));
  EXPECT_THROW(a.free(std::vector<PageId>{2, 2}), std::invalid_argument);
  EXPECT_TRUE(a.is_allocated(2));
  EXPECT_EQ(a.used_pages(), 2u);
}

TEST(PagedAllocator, UnknownIdsAreRejected) {
  auto a = make(4);
  (void)a.alloc(1);
  EXPECT_THROW(a.free(std::vector<PageId>{0, 3}), std::invalid_argument);  // never handed out
  EXPECT_THROW(a.free(std::vector<PageId>{0, 4}), std::invalid_argument);  // past the end
  EXPECT_THROW(a.free(std::vector<PageId>{-1}), std::invalid_argument);
  EXPECT_TRUE(a.is_allocated(0));
  EXPECT_EQ(a.stats().free_count, 0u);
}

TEST(PagedAllocator, BadConfigurationIsRejected) {
  EXPECT_THROW(make(0), std::invalid_argument);
  EXPECT_THROW(make(4, 0), std::invalid_argument);
  EXPECT_THROW(make(std::size_t{1} << 31), std::invalid_argument);
}

TEST(PagedAllocator, StatsReportUseAndFragmentation) {
  auto a = make(10);
  auto s = a.stats();
  EXPECT_EQ(s.fragmentation, 0.0);
  const auto pages = a.alloc(10);
  a.free(std::vector<PageId>{pages.begin(), pages.begin() + 8});  // only ids 8 and 9 remain
  s = a.stats();
  EXPECT_EQ(s.total_pages, 10u);
  EXPECT_EQ(s.used_pages, 2u);
  EXPECT_EQ(s.free_pages, 8u);
  EXPECT_DOUBLE_EQ(s.utilization, 0.2);
  EXPECT_DOUBLE_EQ(s.fragmentation, 0.8);  // 8 holes below the highest used id 9
  EXPECT_EQ(s.alloc_count, 10u);
  EXPECT_EQ(s.free_count, 8u);
}

TEST(PagedAllocator, DefragmentPacksUsedPagesAndReportsMoves) {
  auto a = make(8);
  (void)a.alloc(8);
  a.free(std::vector<PageId>{0, 2, 3, 6});
  const auto moves = a.defragment();
  using Move = std::pair<PageId, PageId>;
  EXPECT_EQ(moves, (std::vector<Move>{{1, 0}, {4, 1}, {5, 2}, {7, 3}}));
  for (PageId p = 0; p < 4; ++p) EXPECT_TRUE(a.is_allocated(p));
  for (PageId p = 4; p < 8; ++p) EXPECT_FALSE(a.is_allocated(p));
  EXPECT_EQ(a.stats().fragmentation, 0.0);
  EXPECT_EQ(a.alloc(2), (std::vector<PageId>{4, 5}));
  EXPECT_TRUE(a.defragment().empty());
}

// Random alloc/free/defragment against a set of used ids.
TEST(PagedAllocator, RandomOperationsAgreeWithReferenceModel) {
  std::mt19937_64 rng(99);
  auto a = make(64);
  std::set<PageId> used;
  std::vector<std::vector<PageId>> owners;  // what callers hold, as block tables
  for (int step = 0; step < 20000; ++step) {
    const int op = static_cast<int>(rng() % 10);
    if (op < 5) {
      const std::size_t n = rng() % 9;
      const auto got = a.try_alloc(n);
      ASSERT_EQ(got.has_value(), n <= 64 - used.size());
      if (got) {
        for (const PageId p : *got) ASSERT_TRUE(used.insert(p).second) << "page handed out twice";
        owners.push_back(*got);
      }
    } else if (op < 9 && !owners.empty()) {
      const std::size_t i = rng() % owners.size();
      a.free(owners[i]);
      for (const PageId p : owners[i]) used.erase(p);
      owners.erase(owners.begin() + static_cast<std::ptrdiff_t>(i));
      if (!owners.empty() && !owners.front().empty() && rng() % 4 == 0) {
        EXPECT_THROW(a.free(std::vector<PageId>{owners.front().front(), owners.front().front()}),
                     std::invalid_argument);
      }
    } else if (op == 9) {
      const auto moves = a.defragment();
      std::map<PageId, PageId> remap(moves.begin(), moves.end());
      for (auto& table : owners) {
        for (PageId& p : table) {
          if (auto it = remap.find(p); it != remap.end()) p = it->second;
        }
      }
      used.clear();
      for (const auto& table : owners) used.insert(table.begin(), table.end());
      ASSERT_TRUE(used.empty() || *used.rbegin() == static_cast<PageId>(used.size()) - 1);
    }
    ASSERT_EQ(a.used_pages(), used.size());
    for (PageId p = 0; p < 64; ++p) ASSERT_EQ(a.is_allocated(p), used.contains(p));
  }
}

}  // namespace
