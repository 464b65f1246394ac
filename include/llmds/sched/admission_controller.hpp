// AdmissionController: rate limits that decide, before any work is queued, whether a request
// may enter at all.
//
// A scheduler orders the work it has; it cannot refuse work, and a queue that only grows turns
// every latency SLO into a miss. Admission control caps the request rate (queries per second)
// and the token rate (prompt plus expected output tokens per second) and turns the rest away at
// once, with a reason the client can act on. A request larger than the whole allowance (more
// estimated tokens than token_rate_limit * window_s, or than the bucket holds) is admitted only
// when nothing else is charged: delayed, never refused for ever.
//
// Two ways to measure a rate, chosen by AdmissionConfig::mode:
//   - moving_window (the default): the requests and tokens recorded in the last window_s seconds,
//     divided by window_s. should_admit refuses when admitting one more request would lift that
//     average above qps_limit, or `estimated_tokens` more would lift the token average above
//     token_rate_limit. Exact: each recorded request is one (time, tokens) entry in a FIFO that
//     drops entries as they age out, so a call costs amortised O(1) and memory is one entry per
//     request in the window.
//   - token_bucket (Envoy's local rate limit): a bucket of `burst` request tokens refilled at
//     qps_limit per second, and another of `token_burst` LLM tokens refilled at
//     token_rate_limit per second. Both start full. A request needs one request token and
//     `estimated_tokens` LLM tokens; recording it takes them. Refill is continuous (Envoy's
//     fill_interval -> 0), so the rate is smooth and a burst of `burst` requests passes at once.
//     The token bucket may go into debt when a request used more tokens than were available;
//     later requests wait until it is paid back, so nothing is under-counted. O(1).
//
// Checking and recording are separate, as in the Python API: should_admit(estimated_tokens) answers
// (admitted, reason) and counts the decision; record_request(tokens) charges an admitted
// request and its tokens to the limits. try_admit does both in one call. Limits apply per tenant
// key: each tenant has its own window or buckets (requests without a tenant share the key "").
//
// Reasons are stable strings: "ok", "qps_limit", "token_rate_limit" (the request limit is
// checked first). The clock is injectable (clock.hpp), so tests and replays run on simulated
// time. Bad input (a negative token count, a non-positive limit) is std::invalid_argument and
// changes nothing.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <deque>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

#include <fmt/format.h>

#include "llmds/core/stats_fields.hpp"
#include "llmds/detail/hash.hpp"
#include "llmds/sched/clock.hpp"

namespace llmds {

enum class RateLimitMode { moving_window, token_bucket };

struct AdmissionConfig {
  std::optional<double> qps_limit;         // requests per second; none: unlimited
  std::optional<double> token_rate_limit;  // tokens per second; none: unlimited
  double window_s = 1.0;                   // the averaging window of moving_window (the Python API's default)
  RateLimitMode mode = RateLimitMode::moving_window;
  /// token_bucket: request tokens the bucket holds (the burst that passes at once);
  /// none means qps_limit * window_s, at least 1.
  std::optional<double> burst;
  /// token_bucket: LLM tokens the bucket holds; none means token_rate_limit * window_s.
  std::optional<double> token_burst;

  [[nodiscard]] double request_capacity() const {
    return burst.value_or(std::max(1.0, qps_limit.value_or(0) * window_s));
  }
  [[nodiscard]] double token_capacity() const { return token_burst.value_or(token_rate_limit.value_or(0) * window_s); }

  void validate() const {
    auto positive = [](const std::optional<double>& v, const char* name) {
      if (v && (!std::isfinite(*v) || *v <= 0)) {
        throw std::invalid_argument(fmt::format("AdmissionConfig.{} must be positive and finite, got {}", name, *v));
      }
    };
    positive(qps_limit, "qps_limit");
    positive(token_rate_limit, "token_rate_limit");
    positive(burst, "burst");
    positive(token_burst, "token_burst");
    if (!std::isfinite(window_s) || window_s <= 0) {
      throw std::invalid_argument(fmt::format("AdmissionConfig.window_s must be positive and finite, got {}", window_s));
    }
  }
};

struct AdmissionDecision {
  bool admitted;
  std::string_view reason;  // "ok", "qps_limit" or "token_rate_limit"
};

struct AdmissionStats {
  std::uint64_t admitted = 0;  // should_admit / try_admit answers
  std::uint64_t rejected_qps = 0;
  std::uint64_t rejected_tokens = 0;
  std::uint64_t recorded = 0;  // record_request calls
  double current_qps = 0;         // requests recorded in the last window_s / window_s
  double current_token_rate = 0;  // tokens recorded in the last window_s / window_s (both modes)
  std::size_t tenants = 0;
  std::uint64_t clock_went_back = 0;  // clock readings earlier than the one before (taken as it)

  [[nodiscard]] std::uint64_t rejected() const noexcept { return rejected_qps + rejected_tokens; }

  /// Rejections by the limit that refused them.
  struct ByReason {
    std::uint64_t qps_limit = 0;
    std::uint64_t token_rate_limit = 0;
    /// Every figure by name (core/stats_fields.hpp).
    template <class Visit>
    void for_each_field(Visit&& visit) const {
      visit("qps_limit", qps_limit);
      visit("token_rate_limit", token_rate_limit);
    }
  };

  /// Every figure by name (core/stats_fields.hpp).
  template <class Visit>
  void for_each_field(Visit&& visit) const {
    visit("admitted", admitted);
    visit("rejected", rejected());
    visit("rejected_by_reason", ByReason{rejected_qps, rejected_tokens});
    visit("recorded", recorded);
    visit("current_qps", current_qps);
    visit("current_token_rate", current_token_rate);
    visit("tenants", tenants);
    visit("clock_went_back", clock_went_back);
  }
};

class AdmissionController {
 public:
  static constexpr std::string_view kOk = "ok";
  static constexpr std::string_view kQpsLimit = "qps_limit";
  static constexpr std::string_view kTokenRateLimit = "token_rate_limit";

  explicit AdmissionController(AdmissionConfig config = {}, ClockFunction clock = steady_clock_function())
      : config_(std::move(config)), clock_(std::move(clock), "AdmissionController") {
    config_.validate();
  }

  [[nodiscard]] const AdmissionConfig& config() const noexcept { return config_; }

  /// Whether a request expected to use `estimated_tokens` (>= 0) may enter now. Counts the answer
  /// in stats(); charges nothing (record_request does). Amortised O(1).
  AdmissionDecision should_admit(std::int64_t estimated_tokens = 0, std::string_view tenant = {}) {
    clock_.check_not_inside("should_admit");
    check_tokens(estimated_tokens, "should_admit");
    const double now = clock_.now();
    const AdmissionDecision d = decide(state_of(tenant, now), estimated_tokens, now);
    count(d);
    return d;
  }

  /// Charges one admitted request using `tokens` (>= 0) to the tenant's limits. O(1) amortised.
  void record_request(std::int64_t tokens, std::string_view tenant = {}) {
    clock_.check_not_inside("record_request");
    check_tokens(tokens, "record_request");
    const double now = clock_.now();
    charge(state_of(tenant, now), tokens, now);
    ++stats_.recorded;
  }

  /// should_admit, and record_request(estimated_tokens) if admitted, in one call: what a caller
  /// that knows its token estimate wants, with no gap between the check and the charge.
  AdmissionDecision try_admit(std::int64_t estimated_tokens = 0, std::string_view tenant = {}) {
    clock_.check_not_inside("try_admit");
    check_tokens(estimated_tokens, "try_admit");
    const double now = clock_.now();
    TenantState& s = state_of(tenant, now);
    const AdmissionDecision d = decide(s, estimated_tokens, now);
    count(d);
    if (d.admitted) {
      charge(s, estimated_tokens, now);
      ++stats_.recorded;
    }
    return d;
  }

  /// Counters, and the current request and token rates summed over tenants (O(tenants)).
  [[nodiscard]] AdmissionStats stats() const {
    AdmissionStats s = stats_;
    const double now = clock_.now();
    for (auto& [key, state] : tenants_) {
      const auto [qps, tokens] = rates(state, now);
      s.current_qps += qps;
      s.current_token_rate += tokens;
    }
    s.tenants = tenants_.size();
    s.clock_went_back = clock_.went_back();
    return s;
  }

  /// The current request and token rates of one tenant (zero for a tenant never seen).
  [[nodiscard]] std::pair<double, double> tenant_rates(std::string_view tenant) const {
    const double now = clock_.now();  // first: the clock function may call back into this controller
    auto it = tenants_.find(tenant);
    if (it == tenants_.end()) return {0.0, 0.0};
    return rates(it->second, now);
  }

 private:
  struct Recorded {
    double time;
    std::int64_t tokens;
  };

  struct TenantState {
    // Recorded requests in the last window_s (both modes: it gives current rates in stats()).
    std::deque<Recorded> window;
    std::int64_t window_tokens = 0;
    // token_bucket only.
    double request_tokens = 0;
    double llm_tokens = 0;
    double refilled_at = 0;
  };

  static void check_tokens(std::int64_t tokens, const char* op) {
    if (tokens < 0) throw std::invalid_argument(fmt::format("{}: token count must be non-negative, got {}", op, tokens));
  }

  TenantState& state_of(std::string_view tenant, double now) {
    auto it = tenants_.find(tenant);
    if (it != tenants_.end()) return it->second;
    TenantState s;
    s.request_tokens = config_.request_capacity();  // buckets start full, as Envoy's do
    s.llm_tokens = config_.token_capacity();
    s.refilled_at = now;
    return tenants_.emplace(std::string(tenant), s).first->second;
  }

  // Drops requests older than the window: a request recorded at t counts while now - t < window_s.
  void expire(TenantState& s, double now) const {
    while (!s.window.empty() && now - s.window.front().time >= config_.window_s) {
      s.window_tokens -= s.window.front().tokens;
      s.window.pop_front();
    }
  }

  void refill(TenantState& s, double now) const {
    const double dt = std::max(0.0, now - s.refilled_at);
    if (config_.qps_limit) s.request_tokens = std::min(config_.request_capacity(), s.request_tokens + dt * *config_.qps_limit);
    if (config_.token_rate_limit) {
      s.llm_tokens = std::min(config_.token_capacity(), s.llm_tokens + dt * *config_.token_rate_limit);
    }
    s.refilled_at = now;
  }

  AdmissionDecision decide(TenantState& s, std::int64_t estimated_tokens, double now) const {
    expire(s, now);
    const auto tokens = static_cast<double>(estimated_tokens);
    if (config_.mode == RateLimitMode::moving_window) {
      const auto n = static_cast<double>(s.window.size());
      if (config_.qps_limit && (n + 1) / config_.window_s > *config_.qps_limit) return {false, kQpsLimit};
      // A request larger than the whole allowance passes when nothing else is charged: it is
      // delayed until the window is clear, not refused for ever.
      if (config_.token_rate_limit && s.window_tokens > 0 &&
          (static_cast<double>(s.window_tokens) + tokens) / config_.window_s > *config_.token_rate_limit) {
        return {false, kTokenRateLimit};
      }
      return {true, kOk};
    }
    refill(s, now);
    if (config_.qps_limit && s.request_tokens < 1.0) return {false, kQpsLimit};
    // A request larger than the whole bucket would never pass; it passes when the bucket is full
    // and leaves it in debt instead. A bucket in debt admits nothing until it is paid back.
    if (config_.token_rate_limit &&
        (s.llm_tokens < 0 || s.llm_tokens < std::min(tokens, config_.token_capacity()))) {
      return {false, kTokenRateLimit};
    }
    return {true, kOk};
  }

  void charge(TenantState& s, std::int64_t tokens, double now) const {
    expire(s, now);
    s.window.push_back({now, tokens});
    s.window_tokens += tokens;
    if (config_.mode == RateLimitMode::token_bucket) {
      refill(s, now);
      if (config_.qps_limit) s.request_tokens -= 1.0;
      if (config_.token_rate_limit) s.llm_tokens -= static_cast<double>(tokens);
    }
  }

  void count(const AdmissionDecision& d) {
    if (d.admitted) ++stats_.admitted;
    else if (d.reason == kQpsLimit) ++stats_.rejected_qps;
    else ++stats_.rejected_tokens;
  }

  [[nodiscard]] std::pair<double, double> rates(TenantState& s, double now) const {
    expire(s, now);
    return {static_cast<double>(s.window.size()) / config_.window_s,
            static_cast<double>(s.window_tokens) / config_.window_s};
  }

  AdmissionConfig config_;
  MonotonicClock clock_;
  // Mutable state behind const readers: expiring old entries changes no observable value.
  mutable std::unordered_map<std::string, TenantState, detail::TransparentStringHash, std::equal_to<>> tenants_;
  AdmissionStats stats_;
};

}  // namespace llmds
