#include "llmds/core/timer.hpp"

#include <chrono>
#include <thread>

#include <gtest/gtest.h>

namespace {

TEST(Timer, MeasuresElapsedSecondsWhileRunning) {
  llmds::Timer timer;
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_TRUE(timer.running());
  EXPECT_GE(timer.elapsed(), 0.02);
}

TEST(Timer, StopFreezesTheInterval) {
  llmds::Timer timer;
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  timer.stop();
  const double frozen = timer.elapsed();
  std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(timer.elapsed(), frozen);
  EXPECT_GE(frozen, 0.005);
  timer.stop();  // a second stop keeps the first end
  EXPECT_EQ(timer.elapsed(), frozen);
}

TEST(Timer, StartRestartsTheInterval) {
  llmds::Timer timer;
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  timer.start();
  EXPECT_LT(timer.elapsed(), 0.02);
}

}  // namespace
