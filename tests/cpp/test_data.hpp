// Locating the real data sets of ../shared/data from tests.
//
// LLMDS_DATA_DIR wins; otherwise the project's sibling folder (passed by CMake as
// LLMDS_DATA_DIR_DEFAULT). A test whose data is absent is skipped with a message saying what is
// missing, except when LLMDS_REQUIRE_DATA=1 (set by CI), where a missing data set is a failure:
// CI must never pass by skipping the tests that use real data.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>

#include <gtest/gtest.h>

namespace llmds::test {

inline std::filesystem::path data_dir() {
  if (const char* dir = std::getenv("LLMDS_DATA_DIR"); dir != nullptr && *dir != '\0') return dir;
  if (const char* dir = std::getenv("LLMDS_DATA_DIR_DEFAULT"); dir != nullptr) return dir;
  return "../shared/data";
}

inline bool data_required() {
  const char* v = std::getenv("LLMDS_REQUIRE_DATA");
  return v != nullptr && std::string(v) == "1";
}

}  // namespace llmds::test

/// Declares `var` as the path of `relative` under the data folder, or skips (fails under
/// LLMDS_REQUIRE_DATA=1) the current test when the file is absent.
#define LLMDS_REQUIRE_DATA_FILE(var, relative)                                                   \
  const std::filesystem::path var = ::llmds::test::data_dir() / (relative);                      \
  if (!std::filesystem::exists(var)) {                                                           \
    if (::llmds::test::data_required()) {                                                        \
      FAIL() << "data file " << var << " is missing and LLMDS_REQUIRE_DATA=1; set LLMDS_DATA_DIR"; \
    }                                                                                            \
    GTEST_SKIP() << "needs " << var << " (set LLMDS_DATA_DIR to the shared data folder)";       \
  }
