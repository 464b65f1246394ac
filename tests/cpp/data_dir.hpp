// Where the real data sets of ../shared/data are, for tests and benchmarks alike.
//
// LLMDS_DATA_DIR wins; otherwise the project's sibling folder, which CMake passes to tests and
// benchmark smoke runs as LLMDS_DATA_DIR_DEFAULT; otherwise ../shared/data from the working
// directory.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>

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
