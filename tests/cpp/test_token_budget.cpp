#include "llmds/sched/token_budget.hpp"

#include <cstdint>
#include <map>
#include <random>
#include <stdexcept>

#include <gtest/gtest.h>

namespace {

using llmds::BudgetExceeded;
using llmds::BudgetResource;
using llmds::TokenAmounts;
using llmds::TokenBudget;
using llmds::TokenBudgetConfig;

TokenBudgetConfig limits(std::int64_t kv, std::int64_t prompt, std::int64_t context) {
  TokenBudgetConfig c;
  c.kv_cache_limit = kv;
  c.prompt_limit = prompt;
  c.context_limit = context;
  return c;
}

TEST(TokenBudget, ReservationsCountAgainstEveryLimitUntilReleased) {
  TokenBudget b(limits(1000, 500, 2000));
  b.reserve(1, {600, 300, 700});
  EXPECT_EQ(*b.available(BudgetResource::kv_cache), 400);
  EXPECT_EQ(*b.available(BudgetResource::prompt), 200);
  EXPECT_EQ(*b.available(BudgetResource::context), 1300);
  auto refusal = b.try_reserve(2, {500, 100, 100});
  ASSERT_TRUE(refusal.has_value());
  EXPECT_EQ(refusal->resource, BudgetResource::kv_cache);
  EXPECT_EQ(refusal->requested, 500);
  EXPECT_EQ(refusal->available, 400);
  EXPECT_FALSE(b.contains(2));
  EXPECT_EQ(b.release(1), (TokenAmounts{600, 300, 700}));
  EXPECT_FALSE(b.try_reserve(2, {500, 100, 100}).has_value());
}

TEST(TokenBudget, ReserveThrowsWithTheResourceAndTheNumbers) {
  TokenBudget b(limits(100, 100, 100));
  b.reserve(1, {0, 90, 0});
  try {
    b.reserve(2, {0, 20, 0});
    FAIL() << "no exception";
  } catch (const BudgetExceeded& e) {
    EXPECT_STREQ(e.what(), "reserve: key 2 needs 20 more prompt tokens but only 10 are free");
  }
  EXPECT_EQ(b.stats().resources[1].refusals, 1u);
  EXPECT_FALSE(b.contains(2));
}

TEST(TokenBudget, CommitShrinksOrGrowsWhatAKeyHolds) {
  TokenBudget b(limits(1000, 1000, 1000));
  b.reserve(1, {500, 400, 500});
  b.commit(1, {300, 400, 300});  // gives 200 back
  EXPECT_TRUE(b.is_committed(1));
  EXPECT_EQ(*b.available(BudgetResource::kv_cache), 700);
  b.reserve(2, {600, 0, 0});
  EXPECT_THROW(b.commit(1, {401, 400, 300}), BudgetExceeded);  // 101 more KV, 100 free
  EXPECT_EQ(b.holding(1), (TokenAmounts{300, 400, 300}));
  b.commit(1, {400, 0, 400});  // growth that fits (decoding adds KV)
  const auto s = b.stats();
  EXPECT_EQ(s.resources[0].committed, 400);
  EXPECT_EQ(s.resources[0].reserved, 600);
  EXPECT_EQ(s.resources[0].peak, 1000);
  EXPECT_EQ(s.reservations, 2u);
  EXPECT_EQ(s.committed_reservations, 1u);
  b.commit(2);  // as reserved
  EXPECT_EQ(b.stats().resources[0].reserved, 0);
  EXPECT_EQ(b.stats().resources[0].committed, 1000);
  b.release(1);
  b.release(2);
  EXPECT_EQ(b.stats().committed_reservations, 0u);
  EXPECT_EQ(*b.available(BudgetResource::kv_cache), 1000);
}

TEST(TokenBudget, ContextWindowCapsEachRequest) {
  TokenBudgetConfig c;
  c.context_window = 2048;
  TokenBudget b(c);
  auto refusal = b.try_reserve(1, {0, 0, 4096});
  ASSERT_TRUE(refusal.has_value());
  EXPECT_TRUE(refusal->per_request);
  EXPECT_EQ(refusal->resource, BudgetResource::context);
  b.reserve(1, {0, 0, 2048});
  EXPECT_THROW(b.commit(1, {0, 0, 2049}), BudgetExceeded);
  EXPECT_EQ(b.available(BudgetResource::context), std::nullopt);  // no pool limit
}

TEST(TokenBudget, BadInputChangesNothing) {
  TokenBudget b(limits(10, 10, 10));
  b.reserve(1, {1, 1, 1});
  EXPECT_THROW(b.reserve(1, {1, 1, 1}), std::invalid_argument);
  EXPECT_THROW(b.reserve(2, {-1, 0, 0}), std::invalid_argument);
  EXPECT_THROW(b.commit(1, {0, -1, 0}), std::invalid_argument);
  EXPECT_THROW(b.commit(9, {0, 0, 0}), llmds::KeyError);
  EXPECT_THROW(b.release(9), llmds::KeyError);
  EXPECT_EQ(b.holding(1), (TokenAmounts{1, 1, 1}));
  EXPECT_EQ(*b.available(BudgetResource::prompt), 9);
  EXPECT_THROW(TokenBudget(limits(-1, 0, 0)), std::invalid_argument);
}

TEST(TokenBudget, RandomOperationsNeverExceedALimitAndMatchAModel) {
  std::mt19937_64 rng(11);
  const TokenAmounts lim{5000, 3000, 8000};
  TokenBudget b(limits(lim.kv_cache, lim.prompt, lim.context));
  std::map<std::int64_t, TokenAmounts> held;
  auto total = [&](BudgetResource r) {
    std::int64_t t = 0;
    for (const auto& [k, a] : held) t += a[r];
    return t;
  };
  auto random_amounts = [&] {
    return TokenAmounts{static_cast<std::int64_t>(rng() % 1500), static_cast<std::int64_t>(rng() % 900),
                        static_cast<std::int64_t>(rng() % 2500)};
  };
  for (int i = 0; i < 20'000; ++i) {
    const std::int64_t key = static_cast<std::int64_t>(rng() % 64);
    const TokenAmounts a = random_amounts();
    bool fits = true;
    for (const auto r : llmds::kBudgetResources) {
      const std::int64_t current = held.contains(key) ? held[key][r] : 0;
      if (a[r] - current > 0 && total(r) - current + a[r] > lim[r]) fits = false;
    }
    switch (rng() % 3) {
      case 0:
        if (held.contains(key)) break;
        ASSERT_EQ(!b.try_reserve(key, a).has_value(), fits);
        if (fits) held[key] = a;
        break;
      case 1:
        if (!held.contains(key)) break;
        if (fits) {
          b.commit(key, a);
          held[key] = a;
        } else {
          ASSERT_THROW(b.commit(key, a), BudgetExceeded);
        }
        break;
      default:
        if (!held.contains(key)) break;
        ASSERT_EQ(b.release(key), held[key]);
        held.erase(key);
    }
    for (const auto r : llmds::kBudgetResources) ASSERT_EQ(*b.available(r), lim[r] - total(r));
  }
}

}  // namespace
