// Editing saved files in tests: set a field, then recompute the trailing checksum, so that a
// test reaches the loader's checks behind it (a crafted file, not a corrupted one).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "llmds/detail/binary_io.hpp"

namespace llmds::test {

/// `bytes` with its last 8 bytes replaced by the checksum of the rest.
inline std::string resealed(std::string bytes) {
  const std::size_t body = bytes.size() - 8;
  const std::uint64_t sum = detail::hash_bytes(std::string_view(bytes).substr(0, body), detail::file_checksum_seed);
  for (std::size_t i = 0; i < 8; ++i) bytes[body + i] = static_cast<char>(sum >> (8 * i));
  return bytes;
}

/// `bytes` with the little-endian u64 at `at` set to `value`, resealed.
inline std::string with_u64(std::string bytes, std::size_t at, std::uint64_t value) {
  for (std::size_t i = 0; i < 8; ++i) bytes[at + i] = static_cast<char>(value >> (8 * i));
  return resealed(std::move(bytes));
}

}  // namespace llmds::test
