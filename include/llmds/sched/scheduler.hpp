// Scheduler: dynamic micro-batching with SLO-aware priorities, and the prefill / decode batch
// building of a continuous-batching engine.
//
// A serving process receives requests one at a time but runs them best in batches: one forward
// pass over 32 sequences costs little more than over one. Waiting to fill a batch buys throughput
// and costs latency. The Scheduler makes that trade explicit with two knobs:
// a batch is released as soon as max_batch_size requests wait, or the oldest has waited
// max_wait_ms, or a request's SLO deadline is at risk, or the caller forces it.
//
// Order, exactly. Among queued requests the next one out is
//   1. an at-risk request, earliest deadline first. A request submitted with slo_ms has the
//      deadline arrival + slo_ms; it is at risk once now >= deadline - slo_risk_ms (slo_risk_ms
//      defaults to max_wait_ms: waiting one more batching interval could miss the deadline);
//   2. otherwise the request with the fewest remaining tokens (shortest job first, which
//      minimises mean waiting time), tokens being what submit or update_priority last said;
//   3. ties by arrival (request ids are handed out in arrival order).
// A request with an SLO that is not yet at risk is ordered by rule 2 like any other.
//
// Layout. Two IndexedHeaps over request ids: by_tokens_ holds every queued request scored by its
// remaining tokens; by_deadline_ holds the queued requests that have an SLO, scored by deadline.
// The next request is the top of by_deadline_ if that one is at risk, else the top of by_tokens_;
// taking it erases it from the other heap too. A FIFO of (id, generation) answers "how long has
// the oldest waited" in amortised O(1): entries of requests that left the queue are skipped
// lazily, and the generation tells a stale entry from a request that was preempted and queued
// again. Requests live in a hash map id -> Request until they complete or are cancelled.
//
// Lifecycle. queued --get_batch / build_prefill_batch--> in flight --complete / cancel--> gone.
// In flight requests can also go back to the queue (preempt). The micro-batching calls
// (get_batch, complete_batch) and the engine's calls (build_prefill_batch, build_decode_batch)
// share this lifecycle; an engine uses the second pair each step:
//   - build_prefill_batch(token_budget, max_sequences): first the chunks that continue prompts
//     already partly prefilled, then new requests in priority order; a prompt longer than the
//     budget left is split (chunked prefill) and continues in the next step's batch.
//   - build_decode_batch(max_sequences): the in-flight requests whose prompt is fully prefilled,
//     in the same priority order (at-risk EDF, fewer remaining tokens, arrival).
//
// Cost: submit, update_priority, cancel O(log n); get_batch O(k log n) for a batch of k;
// complete O(1) each; build_prefill_batch O(k log n + p log p) with p prompts in progress;
// build_decode_batch O(r log r) for r running requests. n is the number of queued requests.
//
// Errors leave the scheduler unchanged: an unknown id is llmds::KeyError; a negative token count,
// completing a request that was never dispatched, or a bad config is std::invalid_argument.
//
// Time comes from a MonotonicClock (clock.hpp): every operation reads it before it looks at
// its state, a reading earlier than the last counts as the last (stats().clock_went_back says
// how often), so no wait or latency is negative; a clock function that changes this scheduler
// gets std::logic_error.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <span>
#include <stdexcept>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "llmds/core/errors.hpp"
#include "llmds/core/indexed_heap.hpp"
#include "llmds/core/statistics.hpp"
#include "llmds/core/stats_fields.hpp"
#include "llmds/core/types.hpp"
#include "llmds/detail/assert.hpp"
#include "llmds/sched/clock.hpp"

namespace llmds {

struct SchedulerConfig {
  std::size_t max_batch_size = 32;  // the Python API's default (docs/python-api.md)
  double max_wait_ms = 50.0;        // the Python API's default; docs/scheduling.md measures it
  /// Caps the tokens of one get_batch batch (none: only max_batch_size counts). The first request
  /// of a batch is always taken, so a request larger than the cap still runs, alone.
  std::optional<std::int64_t> max_batch_tokens;
  /// How close to its deadline a request counts as at risk; none means max_wait_ms.
  std::optional<double> slo_risk_ms;

  [[nodiscard]] double risk_ms() const { return slo_risk_ms.value_or(max_wait_ms); }

  void validate() const {
    if (max_batch_size < 1) throw std::invalid_argument("SchedulerConfig.max_batch_size must be at least 1");
    if (!std::isfinite(max_wait_ms) || max_wait_ms < 0) {
      throw std::invalid_argument(
          fmt::format("SchedulerConfig.max_wait_ms must be finite and non-negative, got {}", max_wait_ms));
    }
    if (max_batch_tokens && *max_batch_tokens < 1) {
      throw std::invalid_argument(
          fmt::format("SchedulerConfig.max_batch_tokens must be at least 1, got {}", *max_batch_tokens));
    }
    if (slo_risk_ms && (!std::isfinite(*slo_risk_ms) || *slo_risk_ms < 0)) {
      throw std::invalid_argument(
          fmt::format("SchedulerConfig.slo_risk_ms must be finite and non-negative, got {}", *slo_risk_ms));
    }
  }
};

enum class RequestState { queued, in_flight };

/// One piece of a prompt to prefill in this step: tokens [start, start + tokens) of request id.
struct PrefillChunk {
  RequestId id;
  std::int64_t start;
  std::int64_t tokens;
  bool last;  // this chunk completes the prompt; the request decodes from the next step on
  friend bool operator==(const PrefillChunk&, const PrefillChunk&) = default;
};

/// Count, mean and percentiles of one metric (all zero when count is 0).
struct MetricSummary {
  std::size_t count = 0;
  double mean = 0;
  double p50 = 0;
  double p95 = 0;
  double p99 = 0;
  double max = 0;

  /// Every figure by name (core/stats_fields.hpp).
  template <class Visit>
  void for_each_field(Visit&& visit) const {
    visit("count", count);
    visit("mean", mean);
    visit("p50", p50);
    visit("p95", p95);
    visit("p99", p99);
    visit("max", max);
  }
};

struct SchedulerStats {
  std::uint64_t submitted = 0;
  std::uint64_t dispatched = 0;  // requests that left the queue (counted again after a preempt)
  std::uint64_t completed = 0;
  std::uint64_t cancelled = 0;
  std::uint64_t preempted = 0;
  std::uint64_t batches = 0;  // get_batch batches released
  std::size_t queued = 0;
  std::size_t in_flight = 0;
  std::int64_t queued_tokens = 0;
  MetricSummary queue_wait_ms;  // from submit (or re-queue) to dispatch
  MetricSummary latency_ms;     // from submit to complete
  MetricSummary batch_size;     // requests per get_batch batch
  std::uint64_t slo_requests = 0;  // completed requests that had an SLO
  std::uint64_t slo_met = 0;       // ... completed by their deadline
  /// slo_met / slo_requests; 1.0 when no completed request had an SLO.
  double slo_attainment = 1.0;
  double elapsed_s = 0;                 // first submit to last completion
  double throughput_rps = 0;            // completed / elapsed_s
  double throughput_tokens_per_s = 0;   // tokens submitted by completed requests / elapsed_s
  std::uint64_t clock_went_back = 0;    // clock readings earlier than the one before (taken as it)

  /// Every figure by name (core/stats_fields.hpp).
  template <class Visit>
  void for_each_field(Visit&& visit) const {
    visit("submitted", submitted);
    visit("dispatched", dispatched);
    visit("completed", completed);
    visit("cancelled", cancelled);
    visit("preempted", preempted);
    visit("batches", batches);
    visit("queued", queued);
    visit("in_flight", in_flight);
    visit("queued_tokens", queued_tokens);
    visit("queue_wait_ms", queue_wait_ms);
    visit("latency_ms", latency_ms);
    visit("batch_size", batch_size);
    visit("slo_requests", slo_requests);
    visit("slo_met", slo_met);
    visit("slo_attainment", slo_attainment);
    visit("elapsed_s", elapsed_s);
    visit("throughput_rps", throughput_rps);
    visit("throughput_tokens_per_s", throughput_tokens_per_s);
    visit("clock_went_back", clock_went_back);
  }
};

class Scheduler {
 public:
  explicit Scheduler(SchedulerConfig config = {}, ClockFunction clock = steady_clock_function())
      : config_(std::move(config)), clock_(std::move(clock), "Scheduler") {
    config_.validate();
  }

  [[nodiscard]] const SchedulerConfig& config() const noexcept { return config_; }

  /// Queues a request of `tokens` remaining tokens (>= 0), with an optional latency SLO in ms
  /// (> 0). Returns its id; ids increase in submission order. O(log n).
  RequestId submit(std::int64_t tokens, std::optional<double> slo_ms = std::nullopt) {
    clock_.check_not_inside("submit");
    check_tokens(tokens, "submit");
    if (slo_ms && (!std::isfinite(*slo_ms) || *slo_ms <= 0)) {
      throw std::invalid_argument(fmt::format("submit: slo_ms must be positive and finite, got {}", *slo_ms));
    }
    const double now = clock_.now();
    const RequestId id = next_id_;
    Request r;
    r.tokens = tokens;
    r.submitted_tokens = tokens;
    r.prompt_tokens = tokens;
    r.arrival = now;
    if (slo_ms) r.deadline = now + *slo_ms / 1e3;
    requests_.emplace(id, r);
    try {
      enqueue(id, requests_.at(id), now);
    } catch (...) {
      requests_.erase(id);
      throw;
    }
    ++next_id_;
    if (stats_.submitted++ == 0) first_submit_ = now;
    return id;
  }

  /// Releases the next batch if one is due (max_batch_size queued, or queued tokens reaching
  /// max_batch_tokens, or the oldest waited max_wait_ms, or an SLO at risk) or `force` is set
  /// and something is queued; otherwise std::nullopt. The batch is in priority order and its
  /// requests are in flight until completed. O(k log n).
  std::optional<std::vector<RequestId>> get_batch(bool force = false) {
    clock_.check_not_inside("get_batch");
    if (queued_count_ == 0) return std::nullopt;
    const double now = clock_.now();
    if (!force && !batch_due(now)) return std::nullopt;
    std::vector<RequestId> batch;
    std::int64_t batch_tokens = 0;
    while (batch.size() < config_.max_batch_size && queued_count_ > 0) {
      const RequestId id = peek_queued(now);
      Request& r = requests_.at(id);
      if (config_.max_batch_tokens && !batch.empty() && batch_tokens + r.tokens > *config_.max_batch_tokens) break;
      batch_tokens += r.tokens;
      dispatch(id, r, now);
      r.prompt_done = r.prompt_tokens;  // a micro-batch runs the whole request
      batch.push_back(id);
    }
    ++stats_.batches;
    batch_sizes_.push_back(static_cast<double>(batch.size()));
    return batch;
  }

  /// Marks dispatched requests as done. Every id must be in flight (an unknown id is KeyError,
  /// a queued one std::invalid_argument, a repeated one too); then all are completed at once.
  void complete_batch(std::span<const RequestId> ids) {
    clock_.check_not_inside("complete_batch");
    const double now = clock_.now();
    for (std::size_t i = 0; i < ids.size(); ++i) {
      const Request& r = find(ids[i], "complete_batch");
      if (r.state != RequestState::in_flight) {
        throw std::invalid_argument(
            fmt::format("complete_batch: request {} was never dispatched (it is still queued)", ids[i]));
      }
      for (std::size_t j = 0; j < i; ++j) {
        if (ids[j] == ids[i]) throw std::invalid_argument(fmt::format("complete_batch: request {} is listed twice", ids[i]));
      }
    }
    for (const RequestId id : ids) finish(id, now);
  }

  /// complete_batch of one request.
  void complete(RequestId id) { complete_batch(std::span<const RequestId>(&id, 1)); }

  /// Sets a request's remaining tokens (>= 0), which re-orders it if queued. O(log n).
  void update_priority(RequestId id, std::int64_t new_tokens) {
    clock_.check_not_inside("update_priority");
    check_tokens(new_tokens, "update_priority");
    Request& r = find(id, "update_priority");
    if (r.state == RequestState::queued) {
      by_tokens_.update_key(id, static_cast<double>(new_tokens));
      queued_tokens_ += new_tokens - r.tokens;
    }
    r.tokens = new_tokens;
  }

  /// Sets how many prompt tokens of a request are still to prefill, for an engine that found
  /// part of a prompt in its KV cache (fewer than submitted) or lost cached pages it counted on
  /// (more). An in-flight request with none left joins the decode batches. O(1).
  void set_prompt_remaining(RequestId id, std::int64_t tokens) {
    clock_.check_not_inside("set_prompt_remaining");
    check_tokens(tokens, "set_prompt_remaining");
    Request& r = find(id, "set_prompt_remaining");
    r.prompt_tokens = r.prompt_done + tokens;
  }

  /// Removes a queued or in-flight request without completing it. O(log n).
  void cancel(RequestId id) {
    clock_.check_not_inside("cancel");
    Request& r = find(id, "cancel");
    if (r.state == RequestState::queued) {
      unqueue(id, r);
    } else {
      --in_flight_count_;
      running_.erase(id);
    }
    requests_.erase(id);
    ++stats_.cancelled;
  }

  /// Sends an in-flight request back to the queue, as an engine does when it frees a request's
  /// KV pages to make room: its prompt must be computed again, `recompute_tokens` (>= 0) of it
  /// (the prompt plus what it had generated). It keeps its id, arrival and deadline. O(log n).
  void preempt(RequestId id, std::int64_t recompute_tokens) {
    clock_.check_not_inside("preempt");
    check_tokens(recompute_tokens, "preempt");
    const double now = clock_.now();
    Request& r = find(id, "preempt");
    if (r.state != RequestState::in_flight) {
      throw std::invalid_argument(fmt::format("preempt: request {} is not in flight", id));
    }
    const Request before = r;
    r.tokens = recompute_tokens;
    r.prompt_tokens = recompute_tokens;
    r.prompt_done = 0;
    try {
      enqueue(id, r, now);
    } catch (...) {
      r = before;
      throw;
    }
    --in_flight_count_;
    running_.erase(id);
    ++stats_.preempted;
  }

  /// The prefill work of one engine step, at most `token_budget` tokens over at most
  /// `max_sequences` requests: first the prompts already partly prefilled (in priority order),
  /// then queued requests in priority order, each taking min(its prompt left, budget left)
  /// tokens. A request taken from the queue is in flight from then on; the one whose chunk is
  /// `last` joins the decode batches. A request's remaining tokens shrink by each chunk (so an
  /// engine that wants decode ordered by tokens left to generate sets them by update_priority).
  std::vector<PrefillChunk> build_prefill_batch(std::int64_t token_budget, std::size_t max_sequences) {
    clock_.check_not_inside("build_prefill_batch");
    if (token_budget < 0) throw std::invalid_argument(fmt::format("build_prefill_batch: negative token budget {}", token_budget));
    const double now = clock_.now();
    std::vector<PrefillChunk> chunks;
    std::int64_t left = token_budget;
    auto take = [&](RequestId id, Request& r) {
      const std::int64_t n = std::min(left, r.prompt_tokens - r.prompt_done);
      chunks.push_back({id, r.prompt_done, n, r.prompt_done + n == r.prompt_tokens});
      r.prompt_done += n;
      r.tokens = std::max<std::int64_t>(0, r.tokens - n);
      left -= n;
    };
    std::vector<RequestId> partial;  // prompts in progress hold KV pages: finish them first
    for (const RequestId id : running_) {
      if (requests_.at(id).prompt_done < requests_.at(id).prompt_tokens) partial.push_back(id);
    }
    sort_by_priority(partial, now);
    for (const RequestId id : partial) {
      if (left == 0 || chunks.size() == max_sequences) break;
      take(id, requests_.at(id));
    }
    while (queued_count_ > 0 && chunks.size() < max_sequences) {
      const RequestId id = peek_queued(now);
      Request& r = requests_.at(id);
      // A request with nothing to prefill costs no budget; anything else needs a token of it.
      if (left == 0 && r.prompt_tokens > 0) break;
      dispatch(id, r, now);
      take(id, r);
    }
    return chunks;
  }

  /// The in-flight requests whose prompt is fully prefilled, in priority order, at most
  /// `max_sequences` of them. O(r log r).
  [[nodiscard]] std::vector<RequestId> build_decode_batch(std::size_t max_sequences) const {
    const double now = clock_.now();
    std::vector<RequestId> ready;
    for (const RequestId id : running_) {
      const Request& r = requests_.at(id);
      if (r.prompt_done == r.prompt_tokens) ready.push_back(id);
    }
    sort_by_priority(ready, now);
    if (ready.size() > max_sequences) ready.resize(max_sequences);
    return ready;
  }

  [[nodiscard]] bool contains(RequestId id) const { return requests_.contains(id); }
  [[nodiscard]] RequestState state(RequestId id) const { return find(id, "state").state; }
  [[nodiscard]] std::int64_t remaining_tokens(RequestId id) const { return find(id, "remaining_tokens").tokens; }
  [[nodiscard]] std::size_t queued() const noexcept { return queued_count_; }
  [[nodiscard]] std::size_t in_flight() const noexcept { return in_flight_count_; }
  [[nodiscard]] std::int64_t queued_tokens() const noexcept { return queued_tokens_; }

  /// Seconds until get_batch would release a batch without new submissions: 0 if one is due now,
  /// std::nullopt if nothing is queued. A simulation or a server loop sleeps this long.
  [[nodiscard]] std::optional<double> time_until_due() const {
    if (queued_count_ == 0) return std::nullopt;
    const double now = clock_.now();
    if (batch_due(now)) return 0.0;
    double due = oldest_queued_since() + config_.max_wait_ms / 1e3;
    if (const auto d = by_deadline_.peek()) due = std::min(due, d->score - config_.risk_ms() / 1e3);
    return std::max(0.0, due - now);
  }

  [[nodiscard]] SchedulerStats stats() const {
    SchedulerStats s = stats_;
    s.queued = queued_count_;
    s.in_flight = in_flight_count_;
    s.queued_tokens = queued_tokens_;
    s.clock_went_back = clock_.went_back();
    s.queue_wait_ms = summarize(waits_ms_);
    s.latency_ms = summarize(latencies_ms_);
    s.batch_size = summarize(batch_sizes_);
    s.slo_attainment = s.slo_requests == 0 ? 1.0 : static_cast<double>(s.slo_met) / static_cast<double>(s.slo_requests);
    if (s.completed > 0) {
      s.elapsed_s = last_completion_ - first_submit_;
      if (s.elapsed_s > 0) {
        s.throughput_rps = static_cast<double>(s.completed) / s.elapsed_s;
        s.throughput_tokens_per_s = static_cast<double>(completed_tokens_) / s.elapsed_s;
      }
    }
    return s;
  }

  /// Forgets the recorded waits, latencies, batch sizes and counters, e.g. after a warm-up.
  /// Queued and in-flight requests stay; the throughput window restarts at the next submit.
  void reset_metrics() {
    clock_.check_not_inside("reset_metrics");
    stats_ = {};
    waits_ms_.clear();
    latencies_ms_.clear();
    batch_sizes_.clear();
    completed_tokens_ = 0;
  }

 private:
  struct Request {
    std::int64_t tokens = 0;            // remaining tokens: the ordering key
    std::int64_t submitted_tokens = 0;  // for throughput in tokens
    std::int64_t prompt_tokens = 0;     // to prefill (build_prefill_batch)
    std::int64_t prompt_done = 0;
    double arrival = 0;                 // submit time, seconds
    double queued_since = 0;            // last time it entered the queue
    std::optional<double> deadline;     // arrival + slo_ms, seconds
    std::uint64_t generation = 0;       // times queued; tells stale FIFO entries apart
    RequestState state = RequestState::queued;
  };

  struct FifoEntry {
    RequestId id;
    std::uint64_t generation;
  };

  static void check_tokens(std::int64_t tokens, const char* op) {
    if (tokens < 0) throw std::invalid_argument(fmt::format("{}: token count must be non-negative, got {}", op, tokens));
  }

  const Request& find(RequestId id, const char* op) const {
    auto it = requests_.find(id);
    if (it == requests_.end()) throw KeyError(fmt::format("{}: unknown request id {}", op, id));
    return it->second;
  }
  Request& find(RequestId id, const char* op) { return const_cast<Request&>(std::as_const(*this).find(id, op)); }

  // Puts r (already in requests_) in the queue. Strong guarantee: heaps are restored on failure.
  void enqueue(RequestId id, Request& r, double now) {
    fifo_.push_back({id, r.generation + 1});
    try {
      by_tokens_.push(id, static_cast<double>(r.tokens));
      if (r.deadline) {
        try {
          by_deadline_.push(id, *r.deadline);
        } catch (...) {
          by_tokens_.erase(id);
          throw;
        }
      }
    } catch (...) {
      fifo_.pop_back();
      throw;
    }
    ++r.generation;
    r.state = RequestState::queued;
    r.queued_since = now;
    ++queued_count_;
    queued_tokens_ += r.tokens;
  }

  void unqueue(RequestId id, Request& r) {
    by_tokens_.erase(id);
    if (r.deadline) by_deadline_.erase(id);
    --queued_count_;
    queued_tokens_ -= r.tokens;
  }

  [[nodiscard]] bool at_risk(double deadline, double now) const { return now >= deadline - config_.risk_ms() / 1e3; }

  [[nodiscard]] RequestId peek_queued(double now) const {
    if (const auto d = by_deadline_.peek(); d && at_risk(d->score, now)) return d->key;
    return by_tokens_.peek()->key;
  }

  void dispatch(RequestId id, Request& r, double now) {
    if (r.state == RequestState::queued) unqueue(id, r);
    r.state = RequestState::in_flight;
    ++in_flight_count_;
    running_.insert(id);
    waits_ms_.push_back((now - r.queued_since) * 1e3);
    ++stats_.dispatched;
  }

  void finish(RequestId id, double now) {
    const Request& r = requests_.at(id);
    latencies_ms_.push_back((now - r.arrival) * 1e3);
    if (r.deadline) {
      ++stats_.slo_requests;
      if (now <= *r.deadline) ++stats_.slo_met;
    }
    completed_tokens_ += r.submitted_tokens;
    last_completion_ = now;
    ++stats_.completed;
    --in_flight_count_;
    running_.erase(id);
    requests_.erase(id);
  }

  [[nodiscard]] double oldest_queued_since() const {
    // Drop entries of requests that left the queue since they were pushed (amortised O(1)).
    while (!fifo_.empty()) {
      auto it = requests_.find(fifo_.front().id);
      if (it != requests_.end() && it->second.state == RequestState::queued &&
          it->second.generation == fifo_.front().generation) {
        return it->second.queued_since;
      }
      fifo_.pop_front();
    }
    LLMDS_ASSERT(false, "Scheduler: queued_count_ > 0 but the arrival FIFO is empty");
    return 0;
  }

  [[nodiscard]] bool batch_due(double now) const {
    if (queued_count_ >= config_.max_batch_size) return true;
    if (config_.max_batch_tokens && queued_tokens_ >= *config_.max_batch_tokens) return true;
    if (const auto d = by_deadline_.peek(); d && at_risk(d->score, now)) return true;
    return (now - oldest_queued_since()) * 1e3 >= config_.max_wait_ms;
  }

  // The queue's order applied to a list of ids: at-risk by deadline, then tokens, then arrival.
  void sort_by_priority(std::vector<RequestId>& ids, double now) const {
    struct Key {
      bool risk;
      double deadline;
      std::int64_t tokens;
      RequestId id;
    };
    std::vector<std::pair<Key, RequestId>> keyed;
    keyed.reserve(ids.size());
    for (const RequestId id : ids) {
      const Request& r = requests_.at(id);
      const bool risk = r.deadline && at_risk(*r.deadline, now);
      keyed.push_back({{risk, risk ? *r.deadline : 0.0, r.tokens, id}, id});
    }
    std::sort(keyed.begin(), keyed.end(), [](const auto& a, const auto& b) {
      if (a.first.risk != b.first.risk) return a.first.risk;
      if (a.first.risk && a.first.deadline != b.first.deadline) return a.first.deadline < b.first.deadline;
      if (a.first.tokens != b.first.tokens) return a.first.tokens < b.first.tokens;
      return a.first.id < b.first.id;
    });
    for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = keyed[i].second;
  }

  static MetricSummary summarize(const std::vector<double>& values) {
    if (values.empty()) return {};
    const Statistics st = calculate_statistics(values);
    return {st.count, st.mean, st.p50, st.p95, st.p99, st.max};
  }

  SchedulerConfig config_;
  MonotonicClock clock_;
  std::unordered_map<RequestId, Request> requests_;
  IndexedHeap<RequestId, double> by_tokens_{HeapOrder::min};
  IndexedHeap<RequestId, double> by_deadline_{HeapOrder::min};
  mutable std::deque<FifoEntry> fifo_;  // trimmed lazily, also by const readers
  std::unordered_set<RequestId> running_;  // in flight; callers sort what they take from it
  std::size_t queued_count_ = 0;
  std::size_t in_flight_count_ = 0;
  std::int64_t queued_tokens_ = 0;
  RequestId next_id_ = 0;

  SchedulerStats stats_;
  std::vector<double> waits_ms_;
  std::vector<double> latencies_ms_;
  std::vector<double> batch_sizes_;
  std::int64_t completed_tokens_ = 0;
  double first_submit_ = 0;
  double last_completion_ = 0;
};

}  // namespace llmds
