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
// Contract: a clock never goes backwards. Both clocks here guarantee it (ManualClock rejects a
// negative step); a user-supplied function must too, and the structures do not re-check it on
// every call because a decreasing clock only makes a wait look shorter, never corrupts state.
#pragma once

#include <chrono>
#include <cmath>
#include <functional>
#include <memory>
#include <stdexcept>

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
