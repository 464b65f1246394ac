// Reading the process's resident set size from the operating system.
#include "llmds/core/memory_profiler.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <stdexcept>

#include <sys/resource.h>
#include <unistd.h>

namespace llmds {
namespace {

#ifdef __linux__
// A "Name:   1234 kB" line of /proc/self/status.
std::uint64_t read_status_kb(const char* name) {
  std::FILE* f = std::fopen("/proc/self/status", "r");
  if (f == nullptr) throw std::runtime_error("cannot open /proc/self/status");
  char line[256];
  const std::size_t len = std::strlen(name);
  std::uint64_t kb = 0;
  bool found = false;
  while (std::fgets(line, sizeof line, f) != nullptr) {
    if (std::strncmp(line, name, len) == 0 && line[len] == ':') {
      unsigned long long v = 0;
      found = std::sscanf(line + len + 1, "%llu", &v) == 1;
      kb = v;
      break;
    }
  }
  std::fclose(f);
  if (!found) throw std::runtime_error(std::string("no ") + name + " in /proc/self/status");
  return kb;
}
#endif

}  // namespace

std::uint64_t current_rss_bytes() {
#ifdef __linux__
  return read_status_kb("VmRSS") * 1024;
#else
  // Without /proc there is no portable current RSS; the lifetime peak is the closest bound.
  return lifetime_peak_rss_bytes();
#endif
}

std::uint64_t lifetime_peak_rss_bytes() {
#ifdef __linux__
  return read_status_kb("VmHWM") * 1024;
#else
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
#ifdef __APPLE__
  return static_cast<std::uint64_t>(usage.ru_maxrss);  // bytes on macOS
#else
  return static_cast<std::uint64_t>(usage.ru_maxrss) * 1024;  // kilobytes elsewhere
#endif
#endif
}

void MemoryProfiler::start() {
  initial_ = current_rss_bytes();
  peak_ = initial_;
  lifetime_peak_at_start_ = lifetime_peak_rss_bytes();
  started_ = true;
}

std::uint64_t MemoryProfiler::sample() {
  if (!started_) start();
  const std::uint64_t now = current_rss_bytes();
  peak_ = std::max(peak_, now);
  if (const std::uint64_t lifetime = lifetime_peak_rss_bytes(); lifetime > lifetime_peak_at_start_) {
    peak_ = std::max(peak_, lifetime);  // a new lifetime peak was set inside the interval
  }
  return now;
}

}  // namespace llmds
