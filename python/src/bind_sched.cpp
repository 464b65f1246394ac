// llmds.scheduler (Scheduler, ManualClock), llmds.admissions.AdmissionController and
// llmds.token_budget.TokenBudget. These calls are short and run with the GIL held, which also
// serialises them; a Python clock function is called under the same GIL.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "llmds/sched/admission_controller.hpp"
#include "llmds/sched/clock.hpp"
#include "llmds/sched/scheduler.hpp"
#include "llmds/sched/token_budget.hpp"

#include "arguments.hpp"
#include "initialised.hpp"
#include "stats_dict.hpp"

namespace py = pybind11;

LLMDS_PY_REQUIRE_INIT(llmds::ManualClock)
LLMDS_PY_REQUIRE_INIT(llmds::Scheduler)
LLMDS_PY_REQUIRE_INIT(llmds::AdmissionController)
LLMDS_PY_REQUIRE_INIT(llmds::TokenBudget)

namespace {

using llmds::AdmissionConfig;
using llmds::AdmissionController;
using llmds::BudgetResource;
using llmds::ManualClock;
using llmds::RequestId;
using llmds::Scheduler;
using llmds::SchedulerConfig;
using llmds::TokenAmounts;
using llmds::TokenBudget;
using llmds::python::positive;

// None: the steady clock. A ManualClock: read directly. Any other callable: called for the time
// in seconds (time.monotonic is one).
llmds::ClockFunction clock_of(const py::object& clock) {
  if (clock.is_none()) return llmds::steady_clock_function();
  if (py::isinstance<ManualClock>(clock)) return clock.cast<const ManualClock&>().function();
  if (!PyCallable_Check(clock.ptr())) {
    throw py::type_error("clock must be None, a ManualClock or a callable returning seconds as a float");
  }
  return [fn = clock]() {
    const py::object t = fn();
    const double seconds = PyFloat_AsDouble(t.ptr());  // any float or int (or __float__)
    if (seconds == -1.0 && PyErr_Occurred()) throw py::error_already_set();
    return seconds;
  };
}

const char* state_name(llmds::RequestState s) { return s == llmds::RequestState::queued ? "queued" : "in_flight"; }

BudgetResource resource_of(const std::string& name) {
  for (const BudgetResource r : llmds::kBudgetResources) {
    if (llmds::resource_name(r) == name) return r;
  }
  throw std::invalid_argument(fmt::format("unknown resource '{}': expected 'kv_cache', 'prompt' or 'context'", name));
}

llmds::RateLimitMode mode_of(const std::string& name) {
  if (name == "moving_window") return llmds::RateLimitMode::moving_window;
  if (name == "token_bucket") return llmds::RateLimitMode::token_bucket;
  throw std::invalid_argument(fmt::format("mode must be 'moving_window' or 'token_bucket', got '{}'", name));
}

void bind_clock(py::module_& m) {
  py::class_<ManualClock>(m, "ManualClock",
                          "A clock that stands still until advanced: time in seconds for deterministic tests "
                          "and simulated replays. Pass it as clock= to Scheduler or AdmissionController.")
      .def(py::init<double>(), py::arg("start") = 0.0)
      .def("now", &ManualClock::now, "The current time in seconds.")
      .def("__call__", &ManualClock::now)
      .def("advance", &ManualClock::advance, py::arg("seconds"), "Moves the time forward (ValueError if negative).")
      .def("set", &ManualClock::set, py::arg("seconds"), "Sets the time (ValueError if earlier than now).")
      .def("__repr__", [](const ManualClock& c) { return fmt::format("ManualClock(now={})", c.now()); });
}

void bind_scheduler(py::module_& m) {
  py::class_<Scheduler>(m, "Scheduler",
                        "Dynamic micro-batching on an IndexedHeap: at-risk SLOs first (earliest deadline), then "
                        "fewer remaining tokens, then arrival. Also builds an engine's prefill and decode batches.")
      .def(py::init([](std::int64_t max_batch_size, double max_wait_ms, std::optional<std::int64_t> max_batch_tokens,
                       std::optional<double> slo_risk_ms, const py::object& clock) {
             SchedulerConfig c;
             c.max_batch_size = positive(max_batch_size, "max_batch_size");
             c.max_wait_ms = max_wait_ms;
             c.max_batch_tokens = max_batch_tokens;
             c.slo_risk_ms = slo_risk_ms;
             return Scheduler(c, clock_of(clock));
           }),
           py::arg("max_batch_size") = 32, py::arg("max_wait_ms") = 50.0, py::kw_only(),
           py::arg("max_batch_tokens") = py::none(), py::arg("slo_risk_ms") = py::none(), py::arg("clock") = py::none())
      .def("submit", &Scheduler::submit, py::arg("tokens"), py::arg("slo_ms") = py::none(),
           "Queues a request of `tokens` remaining tokens with an optional latency SLO; returns its id.")
      .def("get_batch", &Scheduler::get_batch, py::arg("force") = false,
           "The next batch of request ids if one is due (or forced), else None.")
      .def(
          "complete_batch",
          [](Scheduler& s, const std::vector<RequestId>& ids) { s.complete_batch(ids); }, py::arg("request_ids"),
          "Marks dispatched requests as done (KeyError for an unknown id, ValueError for one never dispatched).")
      .def("complete", &Scheduler::complete, py::arg("request_id"))
      .def("update_priority", &Scheduler::update_priority, py::arg("request_id"), py::arg("new_tokens"),
           "Sets a request's remaining tokens; a queued request moves in the order. O(log n).")
      .def("cancel", &Scheduler::cancel, py::arg("request_id"), "Removes a queued or in-flight request.")
      .def("preempt", &Scheduler::preempt, py::arg("request_id"), py::arg("recompute_tokens"),
           "Sends an in-flight request back to the queue with `recompute_tokens` to compute again.")
      .def(
          "build_prefill_batch",
          [](Scheduler& s, std::int64_t token_budget, std::optional<std::int64_t> max_sequences) {
            const std::size_t limit = max_sequences ? llmds::python::non_negative(*max_sequences, "max_sequences")
                                                    : s.config().max_batch_size;
            py::list out;
            for (const auto& c : s.build_prefill_batch(token_budget, limit)) {
              out.append(py::make_tuple(c.id, c.start, c.tokens, c.last));
            }
            return out;
          },
          py::arg("token_budget"), py::arg("max_sequences") = py::none(),
          "Prefill work for one engine step: [(request_id, start, tokens, last)], prompts in progress first, "
          "long prompts split under the budget (chunked prefill). max_sequences defaults to max_batch_size.")
      .def(
          "build_decode_batch",
          [](const Scheduler& s, std::optional<std::int64_t> max_sequences) {
            const std::size_t limit = max_sequences ? llmds::python::non_negative(*max_sequences, "max_sequences")
                                                    : s.config().max_batch_size;
            return s.build_decode_batch(limit);
          },
          py::arg("max_sequences") = py::none(), "In-flight requests with their prompt prefilled, in priority order.")
      .def("time_until_due", &Scheduler::time_until_due,
           "Seconds until a batch is due without new submissions (0 if due now, None if nothing is queued).")
      .def("state", [](const Scheduler& s, RequestId id) { return state_name(s.state(id)); }, py::arg("request_id"))
      .def("remaining_tokens", &Scheduler::remaining_tokens, py::arg("request_id"))
      .def("__contains__", &Scheduler::contains)
      .def("queued", &Scheduler::queued, "Requests waiting in the queue.")
      .def("in_flight", &Scheduler::in_flight, "Requests dispatched and not yet completed.")
      .def("queued_tokens", &Scheduler::queued_tokens)
      .def("__len__", [](const Scheduler& s) { return s.queued() + s.in_flight(); })
      .def("reset_metrics", &Scheduler::reset_metrics)
      .def("stats",
           [](const Scheduler& s) {
             return llmds::python::stats_dict(s.stats());
           })
      .def_property_readonly("max_batch_size", [](const Scheduler& s) { return s.config().max_batch_size; })
      .def_property_readonly("max_wait_ms", [](const Scheduler& s) { return s.config().max_wait_ms; })
      .def_property_readonly("max_batch_tokens", [](const Scheduler& s) { return s.config().max_batch_tokens; })
      .def_property_readonly("slo_risk_ms", [](const Scheduler& s) { return s.config().risk_ms(); })
      .def("__repr__", [](const Scheduler& s) {
        return fmt::format("Scheduler(max_batch_size={}, max_wait_ms={}, queued={}, in_flight={})",
                           s.config().max_batch_size, s.config().max_wait_ms, s.queued(), s.in_flight());
      });
}

py::tuple decision(const llmds::AdmissionDecision& d) { return py::make_tuple(d.admitted, std::string(d.reason)); }

std::string tenant_of(const std::optional<std::string>& tenant) { return tenant.value_or(std::string()); }

void bind_admissions(py::module_& m) {
  py::class_<AdmissionController>(m, "AdmissionController",
                                  "Rate limits on requests per second and tokens per second, over a moving window "
                                  "(the default) or token buckets with a burst (Envoy's semantics), per tenant.")
      .def(py::init([](std::optional<double> qps_limit, std::optional<double> token_rate_limit, double window_s,
                       const std::string& mode, std::optional<double> burst, std::optional<double> token_burst,
                       const py::object& clock) {
             AdmissionConfig c;
             c.qps_limit = qps_limit;
             c.token_rate_limit = token_rate_limit;
             c.window_s = window_s;
             c.mode = mode_of(mode);
             c.burst = burst;
             c.token_burst = token_burst;
             return AdmissionController(c, clock_of(clock));
           }),
           py::arg("qps_limit") = py::none(), py::arg("token_rate_limit") = py::none(), py::arg("window_s") = 1.0,
           py::kw_only(), py::arg("mode") = "moving_window", py::arg("burst") = py::none(),
           py::arg("token_burst") = py::none(), py::arg("clock") = py::none())
      .def(
          "should_admit",
          [](AdmissionController& a, std::int64_t estimated_tokens, const std::optional<std::string>& tenant) {
            return decision(a.should_admit(estimated_tokens, tenant_of(tenant)));
          },
          py::arg("estimated_tokens") = 0, py::arg("tenant") = py::none(),
          "(admitted, reason) with reason 'ok', 'qps_limit' or 'token_rate_limit'. Charges nothing.")
      .def(
          "record_request",
          [](AdmissionController& a, std::int64_t tokens, const std::optional<std::string>& tenant) {
            a.record_request(tokens, tenant_of(tenant));
          },
          py::arg("tokens"), py::arg("tenant") = py::none(), "Charges one admitted request and its tokens.")
      .def(
          "try_admit",
          [](AdmissionController& a, std::int64_t estimated_tokens, const std::optional<std::string>& tenant) {
            return decision(a.try_admit(estimated_tokens, tenant_of(tenant)));
          },
          py::arg("estimated_tokens") = 0, py::arg("tenant") = py::none(),
          "should_admit, then record_request(estimated_tokens) if admitted, in one call.")
      .def(
          "tenant_rates",
          [](const AdmissionController& a, const std::string& tenant) { return a.tenant_rates(tenant); },
          py::arg("tenant"), "(requests per second, tokens per second) of one tenant over the window.")
      .def("stats",
           [](const AdmissionController& a) {
             return llmds::python::stats_dict(a.stats());
           })
      .def_property_readonly("qps_limit", [](const AdmissionController& a) { return a.config().qps_limit; })
      .def_property_readonly("token_rate_limit", [](const AdmissionController& a) { return a.config().token_rate_limit; })
      .def_property_readonly("window_s", [](const AdmissionController& a) { return a.config().window_s; })
      .def_property_readonly("mode", [](const AdmissionController& a) {
        return a.config().mode == llmds::RateLimitMode::moving_window ? "moving_window" : "token_bucket";
      })
      .def("__repr__", [](const AdmissionController& a) {
        const auto& c = a.config();
        auto opt = [](const std::optional<double>& v) { return v ? fmt::format("{}", *v) : std::string("None"); };
        return fmt::format("AdmissionController(qps_limit={}, token_rate_limit={}, window_s={}, mode='{}')",
                           opt(c.qps_limit), opt(c.token_rate_limit), c.window_s,
                           c.mode == llmds::RateLimitMode::moving_window ? "moving_window" : "token_bucket");
      });
}

void bind_token_budget(py::module_& m) {
  py::class_<TokenBudget>(m, "TokenBudget",
                          "Global budgets of KV-cache, prompt and context tokens: reserve, commit, release. "
                          "A refusal names the resource; nothing changes.")
      .def(py::init([](std::optional<std::int64_t> kv, std::optional<std::int64_t> prompt,
                       std::optional<std::int64_t> context, std::optional<std::int64_t> window) {
             llmds::TokenBudgetConfig c;
             c.kv_cache_limit = kv;
             c.prompt_limit = prompt;
             c.context_limit = context;
             c.context_window = window;
             return TokenBudget(c);
           }),
           py::arg("kv_cache_limit") = py::none(), py::arg("prompt_limit") = py::none(),
           py::arg("context_limit") = py::none(), py::arg("context_window") = py::none())
      .def(
          "reserve",
          [](TokenBudget& b, std::int64_t key, std::int64_t kv, std::int64_t prompt, std::int64_t context) {
            b.reserve(key, {kv, prompt, context});
          },
          py::arg("key"), py::arg("kv_cache") = 0, py::arg("prompt") = 0, py::arg("context") = 0,
          "Claims tokens for `key`; MemoryError naming the resource if a limit would be exceeded.")
      .def(
          "try_reserve",
          [](TokenBudget& b, std::int64_t key, std::int64_t kv, std::int64_t prompt, std::int64_t context) {
            const auto refusal = b.try_reserve(key, {kv, prompt, context});
            if (!refusal) return py::make_tuple(true, std::string("ok"));
            return py::make_tuple(false, refusal->per_request ? std::string("context_window")
                                                               : std::string(llmds::resource_name(refusal->resource)));
          },
          py::arg("key"), py::arg("kv_cache") = 0, py::arg("prompt") = 0, py::arg("context") = 0,
          "(True, 'ok'), or (False, the refusing resource: 'kv_cache', 'prompt', 'context' or 'context_window').")
      .def(
          "commit",
          [](TokenBudget& b, std::int64_t key, std::optional<std::int64_t> kv, std::optional<std::int64_t> prompt,
             std::optional<std::int64_t> context) {
            const TokenAmounts held = b.holding(key);
            b.commit(key, {kv.value_or(held.kv_cache), prompt.value_or(held.prompt), context.value_or(held.context)});
          },
          py::arg("key"), py::arg("kv_cache") = py::none(), py::arg("prompt") = py::none(),
          py::arg("context") = py::none(),
          "Records what `key` holds now (an omitted resource keeps its amount); growth must fit (MemoryError).")
      .def("release", [](TokenBudget& b, std::int64_t key) { return llmds::python::stats_dict(b.release(key)); }, py::arg("key"),
           "Gives back everything `key` holds; returns the amounts.")
      .def("holding", [](const TokenBudget& b, std::int64_t key) { return llmds::python::stats_dict(b.holding(key)); }, py::arg("key"))
      .def("is_committed", &TokenBudget::is_committed, py::arg("key"))
      .def(
          "available", [](const TokenBudget& b, const std::string& resource) { return b.available(resource_of(resource)); },
          py::arg("resource"), "Free tokens of 'kv_cache', 'prompt' or 'context' (None when unlimited).")
      .def("__contains__", &TokenBudget::contains)
      .def("__len__", [](const TokenBudget& b) { return b.stats().reservations; })
      .def("stats",
           [](const TokenBudget& b) {
             return llmds::python::stats_dict(b.stats());
           })
      .def("__repr__", [](const TokenBudget& b) {
        const auto& c = b.config();
        auto opt = [](const std::optional<std::int64_t>& v) { return v ? fmt::format("{}", *v) : std::string("None"); };
        return fmt::format("TokenBudget(kv_cache_limit={}, prompt_limit={}, context_limit={}, context_window={})",
                           opt(c.kv_cache_limit), opt(c.prompt_limit), opt(c.context_limit), opt(c.context_window));
      });
}

}  // namespace

void bind_sched(py::module_& m) {
  bind_clock(m);
  bind_scheduler(m);
  bind_admissions(m);
  bind_token_budget(m);
}
