#include "llmds/core/token_lru.hpp"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

namespace {

using Lru = llmds::TokenLRU<int, std::string>;
using Evicted = Lru::Evicted;

std::vector<int> keys_oldest_first(const Lru& lru) {
  std::vector<int> keys;
  lru.for_each_oldest_first([&](int k, const std::string&, std::uint64_t) { keys.push_back(k); });
  return keys;
}

TEST(TokenLRU, CountsTokensWithTheValueSizeByDefault) {
  Lru lru;
  lru.put(1, "abcd");
  lru.put(2, "ef");
  EXPECT_EQ(lru.total_tokens(), 6u);
  EXPECT_EQ(lru.size(), 2u);
}

TEST(TokenLRU, GetReturnsTheValueAndRefreshesRecency) {
  Lru lru;
  lru.put(1, "a");
  lru.put(2, "b");
  ASSERT_NE(lru.get(1), nullptr);
  EXPECT_EQ(*lru.get(1), "a");
  EXPECT_EQ(keys_oldest_first(lru), (std::vector<int>{2, 1}));
  EXPECT_EQ(lru.get(3), nullptr);
}

TEST(TokenLRU, PeekDoesNotRefreshRecency) {
  Lru lru;
  lru.put(1, "a");
  lru.put(2, "b");
  EXPECT_EQ(*lru.peek(1), "a");
  EXPECT_EQ(keys_oldest_first(lru), (std::vector<int>{1, 2}));
}

TEST(TokenLRU, PutOfAnExistingKeyReplacesValueAndTokens) {
  Lru lru;
  lru.put(1, "aaaa");
  lru.put(2, "b");
  lru.put(1, "cc");
  EXPECT_EQ(lru.total_tokens(), 3u);
  EXPECT_EQ(*lru.peek(1), "cc");
  EXPECT_EQ(keys_oldest_first(lru), (std::vector<int>{2, 1}));
}

TEST(TokenLRU, EvictUntilBudgetEvictsLeastRecentFirst) {
  Lru lru;
  lru.put(1, "aaa");
  lru.put(2, "bbb");
  lru.put(3, "ccc");
  lru.get(1);
  const Evicted evicted = lru.evict_until_budget(4);
  EXPECT_EQ(evicted, (Evicted{{2, "bbb"}, {3, "ccc"}}));
  EXPECT_EQ(lru.total_tokens(), 3u);
  EXPECT_TRUE(lru.contains(1));
  EXPECT_EQ(lru.evict_until_budget(100), Evicted{});
  EXPECT_EQ(lru.evict_until_budget(0), (Evicted{{1, "aaa"}}));
  EXPECT_TRUE(lru.is_empty());
}

TEST(TokenLRU, MaxTokensMakesPutEvictToStayWithinBudget) {
  Lru lru({}, 5);
  lru.put(1, "aa");
  lru.put(2, "bb");
  // 2 + 2 + 4 = 8 tokens: both older entries must go to get within 5.
  const Evicted evicted = lru.put(3, "cccc");
  EXPECT_EQ(evicted, (Evicted{{1, "aa"}, {2, "bb"}}));
  EXPECT_EQ(lru.total_tokens(), 4u);
  EXPECT_EQ(lru.stats().evictions, 2u);
}

TEST(TokenLRU, ReplacingTheOldestEntryDoesNotEvictIt) {
  Lru lru({}, 4);
  lru.put(1, "a");
  lru.put(2, "bb");
  // Key 1 is the oldest; growing it must evict key 2, never key 1 itself.
  const Evicted evicted = lru.put(1, "ccc");
  EXPECT_EQ(evicted, (Evicted{{2, "bb"}}));
  EXPECT_EQ(*lru.peek(1), "ccc");
}

TEST(TokenLRU, ValueLargerThanMaxTokensIsRejectedAndChangesNothing) {
  Lru lru({}, 3);
  lru.put(1, "ab");
  EXPECT_THROW(lru.put(2, "abcd"), std::invalid_argument);
  EXPECT_THROW(lru.put(1, "abcd"), std::invalid_argument);
  EXPECT_EQ(*lru.peek(1), "ab");
  EXPECT_EQ(lru.size(), 1u);
  EXPECT_EQ(lru.total_tokens(), 2u);
}

TEST(TokenLRU, NegativeTokenCountIsRejectedAndChangesNothing) {
  auto signed_len = [](const std::string& s) -> std::int64_t {
    return s == "neg" ? -1 : static_cast<std::int64_t>(s.size());
  };
  llmds::TokenLRU<int, std::string, decltype(signed_len)> lru(signed_len);
  lru.put(1, "ok");
  EXPECT_THROW(lru.put(2, "neg"), std::invalid_argument);
  EXPECT_THROW(lru.put(1, "neg"), std::invalid_argument);
  EXPECT_EQ(*lru.peek(1), "ok");
  EXPECT_EQ(lru.size(), 1u);
}

TEST(TokenLRU, TokenTotalOverflowIsRejected) {
  auto huge = [](const std::string&) { return std::numeric_limits<std::uint64_t>::max() - 1; };
  llmds::TokenLRU<int, std::string, decltype(huge)> lru(huge);
  lru.put(1, "x");
  EXPECT_THROW(lru.put(2, "y"), std::overflow_error);
  EXPECT_EQ(lru.size(), 1u);
  lru.put(1, "z");  // replacing keeps the total in range
  EXPECT_EQ(lru.total_tokens(), std::numeric_limits<std::uint64_t>::max() - 1);
}

TEST(TokenLRU, EraseReturnsTheValueAndUnknownKeyThrows) {
  Lru lru;
  lru.put(1, "abc");
  EXPECT_EQ(lru.erase(1), "abc");
  EXPECT_EQ(lru.total_tokens(), 0u);
  EXPECT_THROW(lru.erase(1), llmds::KeyError);
}

TEST(TokenLRU, StatsCountHitsMissesAndEvictions) {
  Lru lru({}, 2);
  lru.put(1, "a");
  lru.get(1);
  lru.get(2);
  lru.put(2, "bb");
  const auto stats = lru.stats();
  EXPECT_EQ(stats.hits, 1u);
  EXPECT_EQ(stats.misses, 1u);
  EXPECT_EQ(stats.evictions, 1u);
  EXPECT_EQ(stats.size, 1u);
  EXPECT_EQ(stats.total_tokens, 2u);
  EXPECT_EQ(stats.max_tokens, 2u);
}

TEST(TokenLRU, CopyKeepsRecencyOrderAndIsIndependent) {
  Lru lru;
  lru.put(1, "a");
  lru.put(2, "b");
  lru.put(3, "c");
  lru.get(1);
  Lru copy = lru;
  EXPECT_EQ(keys_oldest_first(copy), (std::vector<int>{2, 3, 1}));
  copy.put(4, "d");
  EXPECT_FALSE(lru.contains(4));
  Lru moved = std::move(copy);
  EXPECT_EQ(keys_oldest_first(moved), (std::vector<int>{2, 3, 1, 4}));
  EXPECT_EQ(moved.total_tokens(), 4u);
}

// Every key collides, and equality throws while `throwing` is set: a put that must evict, an
// eviction and an erase then all fail in a lookup, and must leave the cache as it was.
bool throwing = false;
struct OneBucket {
  std::size_t operator()(int) const { return 0; }
};
struct FragileEqual {
  bool operator()(int a, int b) const {
    if (throwing) throw std::runtime_error("equality failed");
    return a == b;
  }
};

TEST(TokenLRU, AThrowingKeyLookupLeavesTheCacheUnchanged) {
  llmds::TokenLRU<int, std::string, llmds::SizeTokens, OneBucket, FragileEqual> lru({}, 10);
  lru.put(1, "xxxx");
  lru.put(2, "yyyy");
  throwing = true;
  EXPECT_THROW(lru.put(3, "zzzzzz"), std::runtime_error);
  EXPECT_THROW(lru.evict_until_budget(0), std::runtime_error);
  EXPECT_THROW(lru.erase(1), std::runtime_error);
  throwing = false;
  EXPECT_EQ(lru.size(), 2u);
  EXPECT_EQ(lru.total_tokens(), 8u);
  EXPECT_FALSE(lru.contains(3));
  std::vector<int> keys;
  lru.for_each_oldest_first([&](int k, const std::string&, std::uint64_t) { keys.push_back(k); });
  EXPECT_EQ(keys, (std::vector<int>{1, 2}));
  EXPECT_EQ(lru.put(3, "zzzzzz"), (Lru::Evicted{{1, "xxxx"}}));
}

// The naive model: a vector of (key, value) in recency order, oldest first, with the total
// recomputed from scratch.
struct ReferenceLru {
  std::optional<std::uint64_t> max_tokens;
  std::vector<std::pair<int, std::string>> entries;

  std::uint64_t total() const {
    std::uint64_t t = 0;
    for (const auto& e : entries) t += e.second.size();
    return t;
  }
  Evicted evict_to(std::uint64_t budget) {
    Evicted out;
    while (total() > budget) {
      out.push_back(entries.front());
      entries.erase(entries.begin());
    }
    return out;
  }
  auto find(int key) {
    return std::find_if(entries.begin(), entries.end(), [&](const auto& e) { return e.first == key; });
  }
};

TEST(TokenLRU, RandomOperationsAgreeWithReferenceModel) {
  std::mt19937_64 rng(7);
  for (const std::optional<std::uint64_t> max_tokens :
       {std::optional<std::uint64_t>{}, std::optional<std::uint64_t>{40}}) {
    Lru lru({}, max_tokens);
    ReferenceLru model{max_tokens, {}};
    std::uniform_int_distribution<int> key_dist(0, 30);
    std::uniform_int_distribution<int> len_dist(0, 12);
    std::uniform_int_distribution<int> op_dist(0, 9);
    for (int step = 0; step < 30000; ++step) {
      const int key = key_dist(rng);
      const int op = op_dist(rng);
      if (op < 5) {
        const std::string value(static_cast<std::size_t>(len_dist(rng)), char('a' + key % 26));
        const Evicted got = lru.put(key, value);
        if (auto it = model.find(key); it != model.entries.end()) model.entries.erase(it);
        // The model evicts among the others, then appends the new entry as the newest.
        Evicted expected;
        if (max_tokens) expected = model.evict_to(*max_tokens - value.size());
        model.entries.emplace_back(key, value);
        ASSERT_EQ(got, expected) << "step " << step;
      } else if (op < 8) {
        std::string* got = lru.get(key);
        auto it = model.find(key);
        if (it == model.entries.end()) {
          ASSERT_EQ(got, nullptr);
        } else {
          ASSERT_NE(got, nullptr);
          ASSERT_EQ(*got, it->second);
          auto entry = *it;
          model.entries.erase(it);
          model.entries.push_back(entry);
        }
      } else {
        const std::uint64_t budget = static_cast<std::uint64_t>(len_dist(rng)) * 3;
        ASSERT_EQ(lru.evict_until_budget(budget), model.evict_to(budget)) << "step " << step;
      }
      ASSERT_EQ(lru.total_tokens(), model.total());
      ASSERT_EQ(lru.size(), model.entries.size());
      if (max_tokens) {
        ASSERT_LE(lru.total_tokens(), *max_tokens);
      }
    }
    std::vector<int> model_keys;
    for (const auto& e : model.entries) model_keys.push_back(e.first);
    EXPECT_EQ(keys_oldest_first(lru), model_keys);
  }
}

}  // namespace
