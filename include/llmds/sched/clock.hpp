// Clocks for the scheduling layer: the real one, and one that tests and replays move by hand.
//
// Every scheduling decision depends on time: how long the oldest request has waited, whether an
// SLO deadline is near, how many requests arrived in the last second. If the structures read the
// system clock directly, a test of "the batch is released after 50 ms" would have to sleep, and a
// replay of an hour of traffic would take an hour. So the Scheduler and the AdmissionController
// take their clock as a value: a function returning seconds as a double. The default reads
// std::chrono::steady_clock (monotonic, unaffected by wall-clock changes); ManualClock is a time
// that only moves when told to, for deterministic tests and simulated replays.
//
// A clock should never go backwards; both clocks here guarantee it (ManualClock rejects a
// negative step). A user-supplied function might not (a wall clock stepped back by NTP, a
// simulation that rewinds), so each structure reads its clock through a MonotonicClock: a
// reading earlier than the last counts as the last, and the structure counts how often that
// happened. Waits and latencies are differences of such readings, so they are never negative.
// A reading that is not finite is refused (std::invalid_argument) before anything changes.
//
// A clock function is code of the caller's, run in the middle of a structure's operation. If it
// called back into the same structure and changed it (a Python clock that submits to the
// scheduler it times), the outer operation would go on with a state it no longer knows. The
// structures ask MonotonicClock::check_not_inside first in every operation that changes them,
// which throws std::logic_error on the thread that is inside this clock's function.
#pragma once

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <stdexcept>
#include <utility>
#include <vector>

#include <fmt/format.h>

namespace llmds {

/// A source of time in seconds. Only differences between readings are meaningful.
using ClockFunction = std::function<double()>;

/// Seconds on std::chrono::steady_clock.
inline double steady_seconds() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

/// The default clock of the scheduling structures.
inline ClockFunction steady_clock_function() { return &steady_seconds; }

/// The clock of one structure: the function's readings, never decreasing, never NaN or
/// infinite. Reading it is safe from several threads (const operations of a structure read it);
/// the last reading is kept with an atomic maximum.
class MonotonicClock {
 public:
  /// `owner` names the structure in error messages.
  MonotonicClock(ClockFunction function, const char* owner) : function_(std::move(function)), owner_(owner) {
    if (!function_) throw std::invalid_argument(fmt::format("{}: the clock function is empty", owner_));
  }
  MonotonicClock(const MonotonicClock& other)
      : function_(other.function_),
        owner_(other.owner_),
        last_(other.last_.load(std::memory_order_relaxed)),
        went_back_(other.went_back_.load(std::memory_order_relaxed)) {}
  MonotonicClock& operator=(const MonotonicClock& other) {
    function_ = other.function_;
    owner_ = other.owner_;
    last_.store(other.last_.load(std::memory_order_relaxed), std::memory_order_relaxed);
    went_back_.store(other.went_back_.load(std::memory_order_relaxed), std::memory_order_relaxed);
    return *this;
  }

  /// Seconds, at least the previous reading. Throws std::invalid_argument if the function
  /// returns NaN or an infinity, and whatever the function throws.
  double now() const {
    double t = 0;
    {
      const Inside inside(this);
      t = function_();
    }
    if (!std::isfinite(t)) throw std::invalid_argument(fmt::format("{}: the clock returned {}", owner_, t));
    double last = last_.load(std::memory_order_relaxed);
    while (t > last && !last_.compare_exchange_weak(last, t, std::memory_order_relaxed)) {
    }
    if (t < last) {
      went_back_.fetch_add(1, std::memory_order_relaxed);
      return last;
    }
    return t;
  }

  /// Throws std::logic_error if the calling thread is inside this clock's function, i.e. the
  /// clock is calling back into the structure that reads it. `op` names the operation.
  void check_not_inside(const char* op) const {
    for (const MonotonicClock* c : inside()) {
      if (c == this) {
        throw std::logic_error(fmt::format("{}.{}: called from inside the {}'s own clock function", owner_, op, owner_));
      }
    }
  }

  /// Readings that were earlier than a previous one (and were taken as that one).
  [[nodiscard]] std::uint64_t went_back() const noexcept { return went_back_.load(std::memory_order_relaxed); }

 private:
  // The clocks whose functions are running on this thread, innermost last.
  static std::vector<const MonotonicClock*>& inside() {
    thread_local std::vector<const MonotonicClock*> clocks;
    return clocks;
  }
  struct Inside {
    explicit Inside(const MonotonicClock* c) { inside().push_back(c); }
    ~Inside() { inside().pop_back(); }
    Inside(const Inside&) = delete;
    Inside& operator=(const Inside&) = delete;
  };

  ClockFunction function_;
  const char* owner_;
  mutable std::atomic<double> last_{-std::numeric_limits<double>::infinity()};
  mutable std::atomic<std::uint64_t> went_back_{0};
};

/// A clock that stands still until advanced. Copies share one time, so a test can hand a copy to
/// a Scheduler and move the time from outside:
///
///   llmds::ManualClock clock;
///   llmds::Scheduler scheduler({.max_wait_ms = 50}, clock.function());
///   clock.advance(0.050);  // the oldest request has now waited 50 ms
class ManualClock {
 public:
  explicit ManualClock(double start_seconds = 0.0) : now_(std::make_shared<double>(start_seconds)) {
    check_finite(start_seconds, "start");
  }

  [[nodiscard]] double now() const noexcept { return *now_; }

  /// Moves the time forward by `seconds` (>= 0).
  void advance(double seconds) {
    check_finite(seconds, "advance");
    if (seconds < 0) throw std::invalid_argument(fmt::format("advance: a clock cannot go back ({} s)", seconds));
    *now_ += seconds;
  }

  /// Sets the time to `seconds`, which must not be earlier than now().
  void set(double seconds) {
    check_finite(seconds, "set");
    if (seconds < *now_) {
      throw std::invalid_argument(fmt::format("set: {} s is before the current time {} s", seconds, *now_));
    }
    *now_ = seconds;
  }

  /// A ClockFunction reading this clock (it shares the time, so later advances are seen).
  [[nodiscard]] ClockFunction function() const {
    return [now = now_] { return *now; };
  }

 private:
  static void check_finite(double v, const char* op) {
    if (!std::isfinite(v)) throw std::invalid_argument(fmt::format("{}: time must be finite, got {}", op, v));
  }

  std::shared_ptr<double> now_;
};

}  // namespace llmds
