// Scheduler and AdmissionController: submit, get_batch and update_priority with 1e3 to 1e6
// requests queued; should_admit and try_admit in ns per call.
//   build/bench/bench_scheduler --benchmark_counters_tabular=true
#include <algorithm>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "llmds/sched/admission_controller.hpp"
#include "llmds/sched/scheduler.hpp"

namespace {

using llmds::RequestId;
using llmds::Scheduler;

constexpr std::size_t kRefill = 1024;  // timed calls between untimed resets of the queue size

// A scheduler on a still clock (no batch is due unless forced) with n requests queued, a third
// of them with an SLO far in the future.
Scheduler queued_scheduler(std::size_t n, std::mt19937_64& rng, std::vector<RequestId>* ids = nullptr) {
  llmds::ManualClock clock;
  llmds::SchedulerConfig config;
  config.max_wait_ms = 1e12;
  config.max_batch_size = 32;
  Scheduler s(config, clock.function());
  for (std::size_t i = 0; i < n; ++i) {
    const auto tokens = static_cast<std::int64_t>(rng() % 4096);
    const RequestId id = s.submit(tokens, i % 3 == 0 ? std::optional(1e9) : std::nullopt);
    if (ids) ids->push_back(id);
  }
  return s;
}

void BM_Submit(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  std::mt19937_64 rng(1);
  Scheduler s = queued_scheduler(n, rng);
  std::vector<RequestId> added;
  added.reserve(kRefill);
  for (auto _ : state) {
    added.push_back(s.submit(static_cast<std::int64_t>(rng() % 4096), rng() % 3 == 0 ? std::optional(1e9) : std::nullopt));
    if (added.size() == kRefill) {
      state.PauseTiming();
      for (const RequestId id : added) s.cancel(id);
      added.clear();
      state.ResumeTiming();
    }
  }
  state.SetItemsProcessed(state.iterations());
}

// One forced batch of 32 in priority order; the queue is topped up outside the timing.
void BM_GetBatch(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  std::mt19937_64 rng(2);
  Scheduler s = queued_scheduler(n, rng);
  const std::size_t refill = std::min(kRefill, n / 2);  // never let the queue run dry
  std::size_t taken = 0;
  std::vector<RequestId> in_flight;
  for (auto _ : state) {
    auto batch = s.get_batch(true);
    benchmark::DoNotOptimize(batch);
    in_flight.insert(in_flight.end(), batch->begin(), batch->end());
    taken += batch->size();
    if (taken >= refill) {
      state.PauseTiming();
      s.complete_batch(in_flight);
      in_flight.clear();
      for (std::size_t i = 0; i < taken; ++i) s.submit(static_cast<std::int64_t>(rng() % 4096));
      taken = 0;
      state.ResumeTiming();
    }
  }
  state.SetItemsProcessed(state.iterations() * 32);  // requests dispatched
}

void BM_UpdatePriority(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  std::mt19937_64 rng(3);
  std::vector<RequestId> ids;
  Scheduler s = queued_scheduler(n, rng, &ids);
  for (auto _ : state) {
    s.update_priority(ids[rng() % n], static_cast<std::int64_t>(rng() % 4096));
  }
  state.SetItemsProcessed(state.iterations());
}

// should_admit alone (a check against a full window), and try_admit (check + charge) at the
// limit, with the steady clock read on every call. Range: 0 moving window, 1 token bucket.
llmds::AdmissionConfig admission_config(std::int64_t mode) {
  llmds::AdmissionConfig c;
  c.qps_limit = 1e6;
  c.token_rate_limit = 1e9;
  c.mode = mode == 0 ? llmds::RateLimitMode::moving_window : llmds::RateLimitMode::token_bucket;
  return c;
}

void BM_ShouldAdmit(benchmark::State& state) {
  llmds::AdmissionController ac(admission_config(state.range(0)));
  for (int i = 0; i < 1000; ++i) ac.record_request(100);
  for (auto _ : state) benchmark::DoNotOptimize(ac.should_admit(100));
  state.SetItemsProcessed(state.iterations());
}

void BM_TryAdmit(benchmark::State& state) {
  llmds::AdmissionController ac(admission_config(state.range(0)));
  for (auto _ : state) benchmark::DoNotOptimize(ac.try_admit(100));
  state.SetItemsProcessed(state.iterations());
}

void BM_TryAdmitTenants(benchmark::State& state) {
  llmds::AdmissionController ac(admission_config(0));
  const std::vector<std::string> tenants = {"alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"};
  std::size_t i = 0;
  for (auto _ : state) benchmark::DoNotOptimize(ac.try_admit(100, tenants[i++ % tenants.size()]));
  state.SetItemsProcessed(state.iterations());
}

}  // namespace

BENCHMARK(BM_Submit)->RangeMultiplier(10)->Range(1000, 1'000'000);
BENCHMARK(BM_GetBatch)->RangeMultiplier(10)->Range(1000, 1'000'000);
BENCHMARK(BM_UpdatePriority)->RangeMultiplier(10)->Range(1000, 1'000'000);
BENCHMARK(BM_ShouldAdmit)->Arg(0)->Arg(1);
BENCHMARK(BM_TryAdmit)->Arg(0)->Arg(1);
BENCHMARK(BM_TryAdmitTenants);

BENCHMARK_MAIN();
