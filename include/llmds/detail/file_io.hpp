// Whole-file reads and crash-safe whole-file writes, for saved indexes and sketches.
//
// write_file never leaves a half-written file at `path`: it writes a temporary file beside it,
// flushes it to the disk (fsync), renames it over `path` (atomic on POSIX file systems) and
// flushes the directory, so after a crash or a full disk `path` holds either the old bytes or
// the new ones. Each call writes its own temporary file (a random name, created exclusively),
// so saves to one path from several threads or processes never write into each other's file;
// the last rename wins. Every failure (no space, no permission, a missing folder, a file too
// large for the process's limit) is an llmds::IOError naming the file and the reason, and
// removes the temporary file.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <string_view>

#include <fmt/format.h>

#include "llmds/core/errors.hpp"

namespace llmds::detail {

namespace file_io {

// A name beside `path` that no other writer picks: a per-process random prefix and a counter.
inline std::filesystem::path temporary_sibling(const std::filesystem::path& path) {
  static const std::uint64_t process_tag = [] {
    std::random_device device;
    return (static_cast<std::uint64_t>(device()) << 32) ^ device();
  }();
  static std::atomic<std::uint64_t> counter{0};
  std::filesystem::path tmp = path;
  tmp += fmt::format(".tmp-{:016x}-{}", process_tag, counter.fetch_add(1, std::memory_order_relaxed));
  return tmp;
}

// Closes a descriptor once, whatever path leaves the scope.
class Descriptor {
 public:
  explicit Descriptor(int fd) : fd_(fd) {}
  ~Descriptor() {
    if (fd_ >= 0) ::close(fd_);
  }
  Descriptor(const Descriptor&) = delete;
  Descriptor& operator=(const Descriptor&) = delete;
  [[nodiscard]] int get() const noexcept { return fd_; }
  /// Closes now; close can report a write error the earlier calls did not (NFS, quotas).
  int close() noexcept {
    const int result = ::close(fd_);
    fd_ = -1;
    return result;
  }

 private:
  int fd_;
};

}  // namespace file_io

/// Writes `bytes` to `path`, replacing any file there whole or not at all. Throws llmds::IOError.
inline void write_file(const std::filesystem::path& path, std::string_view bytes) {
  const std::filesystem::path tmp = file_io::temporary_sibling(path);
  auto fail = [&](const char* step, int error) {
    ::unlink(tmp.c_str());
    throw IOError(fmt::format("cannot {} {}: {}", step, path.string(), std::strerror(error)));
  };
  {
    file_io::Descriptor fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
    if (fd.get() < 0) {
      throw IOError(fmt::format("cannot write {}: {}", path.string(), std::strerror(errno)));
    }
    std::size_t written = 0;
    while (written < bytes.size()) {
      const ::ssize_t n = ::write(fd.get(), bytes.data() + written, bytes.size() - written);
      if (n < 0) {
        if (errno == EINTR) continue;
        fail("write", errno);
      }
      written += static_cast<std::size_t>(n);
    }
    if (::fsync(fd.get()) != 0) fail("flush", errno);
    if (fd.close() != 0) fail("write", errno);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) fail("replace", errno);
  // The rename itself reaches the disk with the directory's flush. A file system that cannot
  // flush a directory (some network ones) has still replaced the file: nothing to report.
  std::filesystem::path dir = path.parent_path();
  if (dir.empty()) dir = ".";
  if (const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
}

/// The whole content of `path`. Throws llmds::IOError.
inline std::string read_file(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    throw IOError(fmt::format("cannot read {}: {}", path.string(), ec ? ec.message() : "not a regular file"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IOError(fmt::format("cannot open {}: {}", path.string(), std::strerror(errno)));
  std::string data;
  try {
    data.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  } catch (const std::ios_base::failure& e) {
    throw IOError(fmt::format("cannot read {}: {}", path.string(), e.what()));
  }
  if (in.bad()) throw IOError(fmt::format("cannot read {}", path.string()));
  return data;
}

}  // namespace llmds::detail
