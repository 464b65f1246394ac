// MemoryProfiler: the resident set size (RSS) of this process over an interval, and its peak.
//
//   llmds::MemoryProfiler profiler;
//   profiler.start();
//   build_index();
//   profiler.sample();
//   double peak_mb = profiler.get_peak_rss_mb();
//
// Sampling alone misses a peak that rises and falls between two samples. So besides the samples
// the profiler reads the kernel's high-water mark of the process (VmHWM on Linux, ru_maxrss
// elsewhere) at start and at each sample: if the mark rose during the interval, the process
// reached a new lifetime peak inside it, and that exact value is the interval's peak. Only a peak
// below an earlier lifetime peak can go unseen between samples.
//
// All figures are bytes; the *_mb accessors divide by 2^20.
#pragma once

#include <cstdint>

namespace llmds {

/// Resident set size of this process now, in bytes.
[[nodiscard]] std::uint64_t current_rss_bytes();
/// The highest resident set size this process has had so far, in bytes.
[[nodiscard]] std::uint64_t lifetime_peak_rss_bytes();

class MemoryProfiler {
 public:
  /// Starts (or restarts) the interval at the current RSS.
  void start();

  /// Reads the current RSS, raises the peak if needed, and returns the RSS in bytes.
  /// Starts the interval first if start() was never called.
  std::uint64_t sample();

  [[nodiscard]] bool started() const noexcept { return started_; }
  [[nodiscard]] std::uint64_t get_initial_rss_bytes() const noexcept { return initial_; }
  [[nodiscard]] std::uint64_t get_peak_rss_bytes() const noexcept { return peak_; }
  [[nodiscard]] double get_peak_rss_mb() const noexcept { return to_mb(peak_); }
  [[nodiscard]] double get_current_rss_mb() const { return to_mb(current_rss_bytes()); }
  /// Peak minus initial RSS, in megabytes (what the interval added at its worst).
  [[nodiscard]] double get_memory_delta_mb() const noexcept {
    return to_mb(peak_) - to_mb(initial_);
  }

 private:
  static double to_mb(std::uint64_t bytes) noexcept {
    return static_cast<double>(bytes) / (1024.0 * 1024.0);
  }

  bool started_ = false;
  std::uint64_t initial_ = 0;
  std::uint64_t peak_ = 0;
  std::uint64_t lifetime_peak_at_start_ = 0;
};

}  // namespace llmds
