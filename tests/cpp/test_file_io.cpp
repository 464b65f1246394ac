#include "llmds/detail/file_io.hpp"

#include <sys/resource.h>

#include <csignal>
#include <filesystem>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "llmds/core/errors.hpp"

namespace {

namespace fs = std::filesystem;
using llmds::detail::read_file;
using llmds::detail::write_file;

fs::path fresh_dir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("llmds_test_file_io_" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

std::size_t files_in(const fs::path& dir) {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& entry : fs::directory_iterator(dir)) ++n;
  return n;
}

TEST(WriteFile, ConcurrentWritersToOnePathLeaveOneWholeFile) {
  const fs::path dir = fresh_dir("concurrent");
  const fs::path path = dir / "index.bin";
  std::vector<std::string> contents;
  for (int t = 0; t < 8; ++t) contents.push_back(std::string(100'000 + 977 * t, static_cast<char>('a' + t)));
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 20; ++round) write_file(path, contents[static_cast<std::size_t>(t)]);
    });
  }
  for (auto& t : threads) t.join();
  const std::string final_bytes = read_file(path);
  EXPECT_TRUE(std::find(contents.begin(), contents.end(), final_bytes) != contents.end())
      << "the file is not one writer's bytes: " << final_bytes.size() << " bytes";
  EXPECT_EQ(files_in(dir), 1u) << "a temporary file was left behind";
  fs::remove_all(dir);
}

// The process's file-size limit makes write() fail part way, as a full disk does; SIGXFSZ is
// ignored so that the failure is an error code, not a signal.
TEST(WriteFile, AWriteThatFailsPartWayKeepsTheOldFileAndLeavesNoTemporary) {
  const fs::path dir = fresh_dir("limit");
  const fs::path path = dir / "sketch.bin";
  write_file(path, "old bytes");
  rlimit before{};
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &before), 0);
  rlimit small = before;
  small.rlim_cur = 4096;
  auto* previous = std::signal(SIGXFSZ, SIG_IGN);
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &small), 0);
  std::string message;
  try {
    write_file(path, std::string(1 << 20, 'x'));
  } catch (const llmds::IOError& e) {
    message = e.what();
  }
  setrlimit(RLIMIT_FSIZE, &before);
  std::signal(SIGXFSZ, previous);
  EXPECT_NE(message.find(path.string()), std::string::npos) << message;
  EXPECT_EQ(read_file(path), "old bytes");
  EXPECT_EQ(files_in(dir), 1u);
  fs::remove_all(dir);
}

TEST(WriteFile, AMissingFolderOrAnUnreadableFileIsAnIOError) {
  EXPECT_THROW(write_file("/nonexistent-llmds-folder/x.bin", "x"), llmds::IOError);
  EXPECT_THROW((void)read_file("/nonexistent-llmds-folder/x.bin"), llmds::IOError);
  EXPECT_THROW((void)read_file(fs::temp_directory_path()), llmds::IOError);  // a folder
}

}  // namespace
