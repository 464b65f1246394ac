// Timer: wall-clock time of a scope, on the monotonic clock.
//
//   llmds::Timer t;             // starts running
//   build_index();
//   double s = t.elapsed();     // seconds so far; stop() freezes it
//
// std::chrono::steady_clock never jumps with the system clock, so an interval is always >= 0.
#pragma once

#include <chrono>

namespace llmds {

class Timer {
 public:
  using Clock = std::chrono::steady_clock;

  Timer() noexcept : start_(Clock::now()) {}

  /// Restarts the interval from now.
  void start() noexcept {
    start_ = Clock::now();
    running_ = true;
  }

  /// Freezes the interval; elapsed() returns the same value until the next start().
  void stop() noexcept {
    if (running_) {
      stop_ = Clock::now();
      running_ = false;
    }
  }

  [[nodiscard]] bool running() const noexcept { return running_; }

  /// Seconds from start() to stop(), or to now while running.
  [[nodiscard]] double elapsed() const noexcept {
    const auto end = running_ ? Clock::now() : stop_;
    return std::chrono::duration<double>(end - start_).count();
  }

 private:
  Clock::time_point start_;
  Clock::time_point stop_{};
  bool running_ = true;
};

}  // namespace llmds
