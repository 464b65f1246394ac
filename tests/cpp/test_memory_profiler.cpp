#include "llmds/core/memory_profiler.hpp"

#include <cstring>
#include <memory>

#include <gtest/gtest.h>

namespace {

constexpr std::size_t mib = 1024 * 1024;

// Touches every page so the memory is resident, not just reserved.
std::unique_ptr<char[]> resident_block(std::size_t bytes) {
  auto block = std::make_unique<char[]>(bytes);
  std::memset(block.get(), 1, bytes);
  return block;
}

TEST(MemoryProfiler, SeesMemoryAllocatedDuringTheInterval) {
  llmds::MemoryProfiler profiler;
  profiler.start();
  auto block = resident_block(64 * mib);
  const std::uint64_t rss = profiler.sample();
  EXPECT_GE(rss, profiler.get_initial_rss_bytes() + 60 * mib);
  EXPECT_GE(profiler.get_memory_delta_mb(), 60.0);
  EXPECT_EQ(profiler.get_peak_rss_bytes(), std::max(rss, profiler.get_peak_rss_bytes()));
}

TEST(MemoryProfiler, CatchesAPeakThatEndedBeforeTheSample) {
  llmds::MemoryProfiler profiler;
  profiler.start();
  // A new lifetime peak of this process, freed again before anyone samples: the high-water
  // mark still reports it.
  { auto block = resident_block(256 * mib); }
  profiler.sample();
  EXPECT_GE(profiler.get_memory_delta_mb(), 200.0);
}

TEST(MemoryProfiler, SampleStartsAnUnstartedProfiler) {
  llmds::MemoryProfiler profiler;
  EXPECT_FALSE(profiler.started());
  EXPECT_GT(profiler.sample(), 0u);
  EXPECT_TRUE(profiler.started());
  EXPECT_GT(profiler.get_current_rss_mb(), 0.0);
  EXPECT_GE(profiler.get_peak_rss_mb(), 0.0);
}

}  // namespace
