#include "llmds/engine/sampler.hpp"

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <stdexcept>
#include <vector>

#include <gtest/gtest.h>

namespace {

using llmds::Sampler;
using llmds::SamplingParams;
using llmds::TokenId;

SamplingParams params(float temperature, int top_k = 0, float top_p = 1.0f, std::uint64_t seed = 7) {
  SamplingParams p;
  p.temperature = temperature;
  p.top_k = top_k;
  p.top_p = top_p;
  p.seed = seed;
  return p;
}

TEST(Sampler, ATemperatureTooSmallToDivideBySamplesGreedily) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 5.0f);
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<float> logits(512);
    for (float& l : logits) l = normal(rng);
    const TokenId best = Sampler::argmax(logits);
    for (const float t : {1e-38f, 1e-44f, std::numeric_limits<float>::denorm_min()}) {
      for (const auto& p : {params(t), params(t, 5), params(t, 0, 0.9f), params(t, 40, 0.5f)}) {
        Sampler sampler(p);
        std::vector<float> copy = logits;
        EXPECT_EQ(sampler.sample(copy), best) << "temperature " << t << " top_k " << p.top_k << " top_p " << p.top_p;
      }
    }
  }
}

TEST(Sampler, NonFiniteLogitsAreRefusedNamingTheToken) {
  for (const float bad : {std::nanf(""), std::numeric_limits<float>::infinity(),
                          -std::numeric_limits<float>::infinity()}) {
    for (const auto& p : {params(0.0f), params(1.0f), params(1.0f, 3), params(0.7f, 0, 0.9f)}) {
      Sampler sampler(p);
      std::vector<float> logits = {0.5f, 1.0f, bad, 0.25f};
      try {
        (void)sampler.sample(logits);
        ADD_FAILURE() << "no error for " << bad;
      } catch (const std::domain_error& e) {
        EXPECT_NE(std::string(e.what()).find("token 2"), std::string::npos) << e.what();
      }
    }
  }
  Sampler sampler(params(1.0f));
  std::vector<float> none;
  EXPECT_THROW((void)sampler.sample(none), std::invalid_argument);
}

// With p below 1 / vocabulary size, run.c's cutoff (1 - p) / (n - 1) is above every
// probability of a flat distribution and its nucleus is empty; here the top token stays.
TEST(Sampler, ATinyTopPOverAFlatDistributionStillPicksAToken) {
  for (const std::size_t n : {2u, 3u, 512u, 32000u}) {
    std::vector<float> flat(n, 0.0f);
    Sampler sampler(params(1.0f, 0, 1e-6f));
    const TokenId t = sampler.sample(flat);
    EXPECT_GE(t, 0);
    EXPECT_LT(static_cast<std::size_t>(t), n);
  }
}

// Every token sampled comes from the set the parameters allow: top-k keeps the k largest
// logits, greedy the largest; checked against a plain sort on random logits.
TEST(Sampler, SampledTokensStayInsideTheAllowedSetOnRandomLogits) {
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  for (int trial = 0; trial < 200; ++trial) {
    const std::size_t n = 2 + rng() % 300;
    std::vector<float> logits(n);
    for (float& l : logits) l = normal(rng);
    const int k = 1 + static_cast<int>(rng() % 8);
    std::vector<float> sorted = logits;
    std::sort(sorted.begin(), sorted.end(), std::greater<>());
    const float kth = sorted[std::min<std::size_t>(static_cast<std::size_t>(k), n) - 1];
    Sampler top_k(params(0.5f + static_cast<float>(trial % 5), k, 1.0f, static_cast<std::uint64_t>(trial)));
    std::vector<float> copy = logits;
    const TokenId t = top_k.sample(copy);
    ASSERT_GE(t, 0);
    ASSERT_LT(static_cast<std::size_t>(t), n);
    EXPECT_GE(logits[static_cast<std::size_t>(t)], kth);
    Sampler nucleus(params(1.0f, 0, 0.3f, static_cast<std::uint64_t>(trial)));
    copy = logits;
    const TokenId u = nucleus.sample(copy);
    ASSERT_GE(u, 0);
    ASSERT_LT(static_cast<std::size_t>(u), n);
  }
}

}  // namespace
