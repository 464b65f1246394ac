// Sampler: next-token choice from logits: greedy, temperature, top-k and top-p (nucleus).
//
// Greedy (temperature 0) is the argmax, the first index on ties. Otherwise the logits are divided
// by the temperature and soft-maxed; top_k (when > 0) keeps the k most probable tokens; top_p
// (when in (0, 1)) keeps the shortest most-probable prefix whose mass exceeds p; one uniform
// draw picks a token from what is left, in proportion to its probability.
//
// With top_k off, the steps are llama2.c run.c's, including its random numbers (a xorshift*
// generator: state ^= state >> 12, << 25, >> 27; output (state * 0x2545F4914F6CDD1D) >> 32; a
// float from the top 24 bits) and its top-p cutoff (tokens below (1 - p) / (V - 1) are dropped
// before sorting), so a seeded run draws the same coins as `run -s seed`. The sort is stable
// (std::stable_sort by descending probability), where run.c's qsort leaves ties unspecified.
//
// Each request owns a Sampler; its state is the RNG, so seeded sampling is reproducible run to
// run and independent of what other requests share the batch.
//
// sample() is total: logits that hold NaN or an infinity are refused (std::domain_error naming
// the first one; a model that produces them is broken, and no choice among them means anything),
// and a temperature so small that a logit divided by it is no longer a finite float samples
// greedily, which is what the distribution tends to as the temperature goes to 0. The top-p
// cutoff never removes the most probable token, so the nucleus is never empty.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <optional>
#include <random>
#include <span>
#include <stdexcept>
#include <vector>

#include <fmt/format.h>

#include "llmds/core/types.hpp"

namespace llmds {

struct SamplingParams {
  float temperature = 1.0f;  // 0: greedy
  int top_k = 0;             // 0: off
  float top_p = 1.0f;        // 1 (or 0): off
  std::optional<std::uint64_t> seed;  // none: drawn from std::random_device

  void validate() const {
    if (!std::isfinite(temperature) || temperature < 0) {
      throw std::invalid_argument(fmt::format("SamplingParams.temperature must be >= 0, got {}", temperature));
    }
    if (top_k < 0) throw std::invalid_argument(fmt::format("SamplingParams.top_k must be >= 0, got {}", top_k));
    if (!std::isfinite(top_p) || top_p < 0 || top_p > 1) {
      throw std::invalid_argument(fmt::format("SamplingParams.top_p must be in [0, 1], got {}", top_p));
    }
  }
};

class Sampler {
 public:
  explicit Sampler(SamplingParams params) : params_(params) {
    params_.validate();
    if (params_.seed) {
      state_ = *params_.seed;
    } else if (params_.temperature > 0.0f) {  // greedy never draws, so never pays for the device
      std::random_device device;
      state_ = (static_cast<std::uint64_t>(device()) << 32) ^ device();
    }
    if (state_ == 0) state_ = 0x9E3779B97F4A7C15ull;  // xorshift never leaves 0
  }

  [[nodiscard]] const SamplingParams& params() const noexcept { return params_; }

  /// The next token. `logits` is modified (scaled and soft-maxed in place). Throws
  /// std::invalid_argument for no logits, std::domain_error for a NaN or infinite one.
  TokenId sample(std::span<float> logits) {
    if (logits.empty()) throw std::invalid_argument("Sampler::sample: no logits");
    float largest = 0.0f;  // the largest magnitude
    for (std::size_t i = 0; i < logits.size(); ++i) {
      if (!std::isfinite(logits[i])) {
        throw std::domain_error(fmt::format("the logits are not finite: token {} has {}", i, logits[i]));
      }
      largest = std::max(largest, std::abs(logits[i]));
    }
    if (params_.temperature == 0.0f || logits.size() == 1) return argmax(logits);
    if (!std::isfinite(largest / params_.temperature)) return argmax(logits);
    for (float& l : logits) l /= params_.temperature;
    softmax(logits);
    const float coin = random_f32();
    if (params_.top_k > 0 && static_cast<std::size_t>(params_.top_k) < logits.size()) return sample_top_k(logits, coin);
    if (params_.top_p > 0.0f && params_.top_p < 1.0f) return sample_top_p(logits, params_.top_p, coin);
    return sample_cdf(logits, coin);
  }

  static TokenId argmax(std::span<const float> logits) {
    return static_cast<TokenId>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }

  static void softmax(std::span<float> x) {
    const float max = *std::max_element(x.begin(), x.end());
    float sum = 0.0f;
    for (float& v : x) {
      v = std::exp(v - max);
      sum += v;
    }
    for (float& v : x) v /= sum;
  }

 private:
  std::uint32_t random_u32() {
    state_ ^= state_ >> 12;
    state_ ^= state_ << 25;
    state_ ^= state_ >> 27;
    return static_cast<std::uint32_t>((state_ * 0x2545F4914F6CDD1Dull) >> 32);
  }
  float random_f32() { return static_cast<float>(random_u32() >> 8) / 16777216.0f; }

  static TokenId sample_cdf(std::span<const float> probs, float coin) {
    float cdf = 0.0f;
    for (std::size_t i = 0; i < probs.size(); ++i) {
      cdf += probs[i];
      if (coin < cdf) return static_cast<TokenId>(i);
    }
    return static_cast<TokenId>(probs.size() - 1);  // rounding left the coin above the total
  }

  // Picks within the first `keep` of `order` (sorted by descending probability), in proportion.
  TokenId sample_prefix(std::span<const float> probs, std::size_t keep, float coin) const {
    float mass = 0.0f;
    for (std::size_t i = 0; i < keep; ++i) mass += probs[order_[i]];
    const float r = coin * mass;
    float cdf = 0.0f;
    for (std::size_t i = 0; i < keep; ++i) {
      cdf += probs[order_[i]];
      if (r < cdf) return static_cast<TokenId>(order_[i]);
    }
    return static_cast<TokenId>(order_[keep - 1]);
  }

  void sort_candidates(std::span<const float> probs, float cutoff) {
    order_.clear();
    for (std::size_t i = 0; i < probs.size(); ++i) {
      if (probs[i] >= cutoff) order_.push_back(static_cast<std::uint32_t>(i));
    }
    std::stable_sort(order_.begin(), order_.end(), [&](std::uint32_t a, std::uint32_t b) { return probs[a] > probs[b]; });
  }

  // How many of the first `keep` candidates make the shortest prefix whose mass exceeds
  // `threshold` (all `keep` if none does).
  std::size_t nucleus(std::span<const float> probs, std::size_t keep, float threshold) const {
    float cum = 0.0f;
    for (std::size_t i = 0; i < keep; ++i) {
      cum += probs[order_[i]];
      if (cum > threshold) return i + 1;
    }
    return keep;
  }

  TokenId sample_top_k(std::span<float> probs, float coin) {
    sort_candidates(probs, 0.0f);
    std::size_t keep = static_cast<std::size_t>(params_.top_k);
    if (params_.top_p > 0.0f && params_.top_p < 1.0f) {
      // Nucleus inside the top k: the shortest prefix whose mass exceeds p of the k's mass.
      float total = 0.0f;
      for (std::size_t i = 0; i < keep; ++i) total += probs[order_[i]];
      keep = nucleus(probs, keep, params_.top_p * total);
    }
    return sample_prefix(probs, keep, coin);
  }

  TokenId sample_top_p(std::span<const float> probs, float p, float coin) {
    // run.c: tokens below (1 - p) / (n - 1) cannot be in the nucleus; leave them out of the sort.
    // With p < 1 / n that cutoff can pass every token (run.c then reads before its array); the
    // most probable token always stays.
    const float cutoff = std::min((1.0f - p) / static_cast<float>(probs.size() - 1),
                                  *std::max_element(probs.begin(), probs.end()));
    sort_candidates(probs, cutoff);
    return sample_prefix(probs, nucleus(probs, order_.size(), p), coin);
  }

  SamplingParams params_;
  std::uint64_t state_ = 0;
  std::vector<std::uint32_t> order_;
};

}  // namespace llmds
