#include "llmds/detail/hash.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <unordered_set>

#include <gtest/gtest.h>

namespace {

using llmds::detail::hash_bytes;
using llmds::detail::hash_bytes_wide;

std::string random_bytes(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

// A checksum must notice any single flipped bit, wherever it is: in a lane's words, in the
// 0..31-byte tail, at every length around the 32-byte stride.
TEST(HashBytesWide, EveryFlippedBitChangesTheHash) {
  for (std::size_t n : {1u, 7u, 8u, 31u, 32u, 33u, 63u, 64u, 65u, 100u, 4096u + 5u}) {
    const std::string s = random_bytes(n, n);
    const std::uint64_t h = hash_bytes_wide(s, 42);
    for (std::size_t i = 0; i < n; ++i) {
      for (int bit = 0; bit < 8; ++bit) {
        std::string t = s;
        t[i] = static_cast<char>(t[i] ^ (1 << bit));
        ASSERT_NE(hash_bytes_wide(t, 42), h) << "length " << n << ", byte " << i << ", bit " << bit;
      }
    }
  }
}

TEST(HashBytesWide, DependsOnLengthSeedAndContentsOnly) {
  const std::string s = random_bytes(1000, 1);
  EXPECT_EQ(hash_bytes_wide(s, 7), hash_bytes_wide(std::string(s), 7));
  EXPECT_NE(hash_bytes_wide(s, 7), hash_bytes_wide(s, 8));
  EXPECT_NE(hash_bytes_wide(s, 7), hash_bytes_wide(s.substr(0, 999), 7));
  EXPECT_NE(hash_bytes_wide(std::string(64, '\0'), 7), hash_bytes_wide(std::string(65, '\0'), 7));
  // Swapping two lanes' words changes it (the lanes are not summed symmetrically).
  std::string swapped = s;
  std::swap_ranges(swapped.begin(), swapped.begin() + 8, swapped.begin() + 8);
  EXPECT_NE(hash_bytes_wide(swapped, 7), hash_bytes_wide(s, 7));
  EXPECT_NE(hash_bytes_wide(s, 7), hash_bytes(s, 7));
}

TEST(HashBytesWide, DistinctInputsGetDistinctHashes) {
  std::unordered_set<std::uint64_t> seen;
  for (std::uint64_t i = 0; i < 100'000; ++i) {
    std::string s(40, '\0');
    for (int b = 0; b < 8; ++b) s[static_cast<std::size_t>(b) * 5] = static_cast<char>(i >> (8 * b));
    seen.insert(hash_bytes_wide(s, 0));
  }
  EXPECT_EQ(seen.size(), 100'000u);
}

}  // namespace
