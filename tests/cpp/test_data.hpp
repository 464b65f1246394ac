// Real data sets in tests; data_dir.hpp finds the folder. A test whose data is absent is
// skipped with a message saying what is missing, except when LLMDS_REQUIRE_DATA=1 (set by CI),
// where a missing data set is a failure: CI must never pass by skipping the tests that use real
// data.
#pragma once

#include <filesystem>

#include <gtest/gtest.h>

#include "data_dir.hpp"

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
