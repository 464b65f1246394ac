#include "llmds/sched/admission_controller.hpp"

#include <cstdint>
#include <deque>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>

#include <cmath>

#include <gtest/gtest.h>

namespace {

using llmds::AdmissionConfig;
using llmds::AdmissionController;
using llmds::ManualClock;
using llmds::RateLimitMode;

AdmissionConfig window(std::optional<double> qps, std::optional<double> tokens, double window_s = 1.0) {
  AdmissionConfig c;
  c.qps_limit = qps;
  c.token_rate_limit = tokens;
  c.window_s = window_s;
  return c;
}

AdmissionConfig bucket(std::optional<double> qps, std::optional<double> tokens) {
  AdmissionConfig c = window(qps, tokens);
  c.mode = RateLimitMode::token_bucket;
  return c;
}

TEST(AdmissionController, WithoutLimitsEverythingIsAdmitted) {
  ManualClock clock;
  AdmissionController ac({}, clock.function());
  for (int i = 0; i < 1000; ++i) {
    auto d = ac.try_admit(1'000'000);
    ASSERT_TRUE(d.admitted);
    ASSERT_EQ(d.reason, "ok");
  }
  EXPECT_EQ(ac.stats().admitted, 1000u);
  EXPECT_DOUBLE_EQ(ac.stats().current_qps, 1000.0);
}

TEST(AdmissionController, MovingWindowCapsRequestsPerWindow) {
  ManualClock clock;
  AdmissionController ac(window(4, std::nullopt, 0.5), clock.function());  // 2 requests per 0.5 s
  EXPECT_TRUE(ac.should_admit().admitted);
  ac.record_request(0);
  clock.advance(0.1);
  ac.record_request(0);
  auto d = ac.should_admit();
  EXPECT_FALSE(d.admitted);
  EXPECT_EQ(d.reason, "qps_limit");
  clock.advance(0.399);  // the first request is 0.499 s old: still inside the window
  EXPECT_FALSE(ac.should_admit().admitted);
  clock.advance(0.001);  // now it is 0.5 s old and leaves
  EXPECT_TRUE(ac.should_admit().admitted);
  const auto s = ac.stats();
  EXPECT_EQ(s.admitted, 2u);
  EXPECT_EQ(s.rejected_qps, 2u);
  EXPECT_EQ(s.recorded, 2u);
  EXPECT_DOUBLE_EQ(s.current_qps, 2.0);  // one request in a 0.5 s window
}

TEST(AdmissionController, ShouldAdmitChargesNothing) {
  ManualClock clock;
  AdmissionController ac(window(1, std::nullopt), clock.function());
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(ac.should_admit().admitted);
  ac.record_request(0);
  EXPECT_FALSE(ac.should_admit().admitted);
}

TEST(AdmissionController, MovingWindowCapsTokensAndCountsTheEstimate) {
  ManualClock clock;
  AdmissionController ac(window(std::nullopt, 1000), clock.function());
  EXPECT_TRUE(ac.try_admit(600).admitted);
  EXPECT_TRUE(ac.try_admit(400).admitted);  // exactly at the limit
  auto d = ac.should_admit(1);
  EXPECT_FALSE(d.admitted);
  EXPECT_EQ(d.reason, "token_rate_limit");
  EXPECT_TRUE(ac.should_admit(0).admitted);
  EXPECT_DOUBLE_EQ(ac.stats().current_token_rate, 1000.0);
  EXPECT_EQ(ac.stats().rejected_tokens, 1u);
}

TEST(AdmissionController, ARequestLargerThanTheWholeAllowanceWaitsForAnEmptyWindow) {
  ManualClock clock;
  AdmissionController ac(window(std::nullopt, 100), clock.function());
  ac.record_request(10);
  EXPECT_FALSE(ac.should_admit(500).admitted);
  clock.advance(1.0);
  EXPECT_TRUE(ac.should_admit(500).admitted);
}

TEST(AdmissionController, TheRequestLimitIsCheckedBeforeTheTokenLimit) {
  ManualClock clock;
  AdmissionController ac(window(1, 10), clock.function());
  ac.record_request(10);
  EXPECT_EQ(ac.should_admit(5).reason, "qps_limit");
}

TEST(AdmissionController, TokenBucketLetsABurstThroughThenTheRefillRate) {
  ManualClock clock;
  AdmissionConfig c = bucket(10, std::nullopt);
  c.burst = 3;
  AdmissionController ac(c, clock.function());
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(ac.try_admit().admitted);
  auto d = ac.try_admit();
  EXPECT_FALSE(d.admitted);
  EXPECT_EQ(d.reason, "qps_limit");
  clock.advance(0.099);  // 0.99 of a token refilled
  EXPECT_FALSE(ac.try_admit().admitted);
  clock.advance(0.001);
  EXPECT_TRUE(ac.try_admit().admitted);
  EXPECT_FALSE(ac.try_admit().admitted);
  clock.advance(10);  // refill stops at the burst size
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(ac.try_admit().admitted);
  EXPECT_FALSE(ac.try_admit().admitted);
}

TEST(AdmissionController, TokenBucketDefaultBurstIsOneWindowOfTheRate) {
  ManualClock clock;
  AdmissionController ac(bucket(5, std::nullopt), clock.function());
  int admitted = 0;
  while (ac.try_admit().admitted) ++admitted;
  EXPECT_EQ(admitted, 5);
}

TEST(AdmissionController, TokenBucketGoesIntoDebtAndAdmitsNothingUntilPaidBack) {
  ManualClock clock;
  AdmissionController ac(bucket(std::nullopt, 100), clock.function());  // 100 tokens/s, holds 100
  EXPECT_TRUE(ac.should_admit(80).admitted);
  ac.record_request(300);  // used far more than estimated: the bucket is at -200
  EXPECT_FALSE(ac.should_admit(0).admitted);
  clock.advance(2.0);  // back to 0
  EXPECT_TRUE(ac.should_admit(0).admitted);
  EXPECT_FALSE(ac.should_admit(1).admitted);
  clock.advance(1.0);
  EXPECT_TRUE(ac.should_admit(100).admitted);
  EXPECT_TRUE(ac.should_admit(5000).admitted);  // larger than the bucket: passes when full
  ac.record_request(5000);
  EXPECT_FALSE(ac.should_admit(1).admitted);
}

TEST(AdmissionController, TenantsHaveTheirOwnLimits) {
  ManualClock clock;
  AdmissionController ac(window(2, std::nullopt), clock.function());
  EXPECT_TRUE(ac.try_admit(0, "a").admitted);
  EXPECT_TRUE(ac.try_admit(0, "a").admitted);
  EXPECT_FALSE(ac.try_admit(0, "a").admitted);
  EXPECT_TRUE(ac.try_admit(0, "b").admitted);
  EXPECT_TRUE(ac.try_admit(0).admitted);
  EXPECT_EQ(ac.tenant_rates("a").first, 2.0);
  EXPECT_EQ(ac.tenant_rates("nobody").first, 0.0);
  const auto s = ac.stats();
  EXPECT_EQ(s.tenants, 3u);
  EXPECT_DOUBLE_EQ(s.current_qps, 4.0);
}

TEST(AdmissionController, BadInputIsRejectedAndChangesNothing) {
  ManualClock clock;
  AdmissionController ac(window(10, 10), clock.function());
  EXPECT_THROW(ac.should_admit(-1), std::invalid_argument);
  EXPECT_THROW(ac.record_request(-1), std::invalid_argument);
  EXPECT_THROW(ac.try_admit(-1), std::invalid_argument);
  EXPECT_EQ(ac.stats().admitted + ac.stats().rejected_qps + ac.stats().recorded, 0u);
  EXPECT_THROW(AdmissionController(window(0, std::nullopt)), std::invalid_argument);
  EXPECT_THROW(AdmissionController(window(std::nullopt, -5)), std::invalid_argument);
  EXPECT_THROW(AdmissionController(window(1, 1, 0)), std::invalid_argument);
  AdmissionConfig c = bucket(1, 1);
  c.burst = 0;
  EXPECT_THROW(AdmissionController{c}, std::invalid_argument);
}

// The moving window against a naive model that keeps every recorded request and counts those
// younger than the window on each call.
TEST(AdmissionController, MovingWindowMatchesANaiveModelOnRandomTraffic) {
  std::mt19937_64 rng(3);
  ManualClock clock;
  const double qps = 20, tokens_per_s = 2000, window_s = 0.5;
  AdmissionController ac(window(qps, tokens_per_s, window_s), clock.function());
  std::deque<std::pair<double, std::int64_t>> all;
  for (int i = 0; i < 50'000; ++i) {
    clock.advance(static_cast<double>(rng() % 40) / 1e3);
    const auto est = static_cast<std::int64_t>(rng() % 200);
    double n = 0, t = 0;
    for (const auto& [time, tokens] : all) {
      if (clock.now() - time < window_s) {
        n += 1;
        t += static_cast<double>(tokens);
      }
    }
    bool want = true;
    if ((n + 1) / window_s > qps) want = false;
    else if (t > 0 && (t + static_cast<double>(est)) / window_s > tokens_per_s) want = false;
    const auto got = ac.try_admit(est);
    ASSERT_EQ(got.admitted, want) << "call " << i;
    if (want) all.emplace_back(clock.now(), est);
    while (all.size() > 200) all.pop_front();  // older than any window at these rates
  }
}

TEST(AdmissionController, AClockThatGoesBackOrIsNotFiniteOrReentersIsHandled) {
  double t = 10.0;
  llmds::AdmissionController* self = nullptr;
  bool reenter = false;
  llmds::AdmissionConfig config;
  config.qps_limit = 100.0;
  llmds::AdmissionController a(config, [&] {
    if (reenter) {
      reenter = false;
      self->record_request(1);
    }
    return t;
  });
  self = &a;
  a.record_request(5);
  t = 5.0;  // back in time: taken as 10.0, and counted
  a.record_request(5);
  EXPECT_GE(a.stats().clock_went_back, 1u);
  EXPECT_GE(a.stats().current_qps, 0.0);
  t = std::nan("");
  EXPECT_THROW(a.record_request(1), std::invalid_argument);
  t = 11.0;
  reenter = true;
  EXPECT_THROW(a.record_request(1), std::logic_error);
  EXPECT_EQ(a.stats().recorded, 2u);
}

}  // namespace
