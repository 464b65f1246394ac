// Fast seeded 64-bit hashing of byte strings, for sketches and hash-partitioned structures.
//
// Not cryptographic: where identity must be collision-proof (KV block hashes) llmds uses SHA-256.
// Here the need is speed and well-mixed output bits. The body folds 8-byte words into the state
// with a multiply-rotate step; the finish is the 64-bit finaliser of MurmurHash3 (fmix64), whose
// avalanche behaviour is well studied. Input is read as little-endian words, so a hash (and any
// file that depends on it) is the same on every platform.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string_view>

namespace llmds::detail {

inline constexpr std::uint64_t fmix64(std::uint64_t k) noexcept {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdULL;
  k ^= k >> 33;
  k *= 0xc4ceb9fe1a85ec53ULL;
  k ^= k >> 33;
  return k;
}

inline std::uint64_t load_le64(const char* p) noexcept {
  std::uint64_t v;
  std::memcpy(&v, p, sizeof v);
  if constexpr (std::endian::native == std::endian::big) v = __builtin_bswap64(v);
  return v;
}

inline std::uint64_t hash_bytes(std::string_view bytes, std::uint64_t seed) noexcept {
  constexpr std::uint64_t k1 = 0x87c37b91114253d5ULL;
  constexpr std::uint64_t k2 = 0x4cf5ad432745937fULL;
  std::uint64_t h = seed ^ (bytes.size() * k1);
  const char* p = bytes.data();
  std::size_t n = bytes.size();
  for (; n >= 8; p += 8, n -= 8) {
    h ^= std::rotl(load_le64(p) * k1, 31) * k2;
    h = std::rotl(h, 27) * 5 + 0x52dce729;
  }
  if (n > 0) {
    std::uint64_t tail = 0;
    for (std::size_t i = 0; i < n; ++i) {
      tail |= std::uint64_t{static_cast<unsigned char>(p[i])} << (8 * i);
    }
    h ^= std::rotl(tail * k1, 31) * k2;
  }
  return fmix64(h);
}

/// hash_bytes's round over four independent lanes (words 0, 4, 8, ... in the first, 1, 5, 9, ...
/// in the second, and so on), folded together at the end: the four multiplies of a 32-byte
/// stride do not wait for each other, so long inputs (a KV block's payload checksum) hash
/// several times faster. Its values differ from hash_bytes's; short inputs gain nothing.
inline std::uint64_t hash_bytes_wide(std::string_view bytes, std::uint64_t seed) noexcept {
  constexpr std::uint64_t k1 = 0x87c37b91114253d5ULL;
  constexpr std::uint64_t k2 = 0x4cf5ad432745937fULL;
  std::uint64_t lane[4] = {seed ^ (bytes.size() * k1), seed + k2, seed ^ k1, seed - k2};
  const char* p = bytes.data();
  std::size_t n = bytes.size();
  for (; n >= 32; p += 32, n -= 32) {
    for (int i = 0; i < 4; ++i) {
      lane[i] ^= std::rotl(load_le64(p + 8 * i) * k1, 31) * k2;
      lane[i] = std::rotl(lane[i], 27) * 5 + 0x52dce729;
    }
  }
  std::uint64_t h = fmix64(lane[0]) ^ std::rotl(fmix64(lane[1]), 16) ^ std::rotl(fmix64(lane[2]), 32) ^
                    std::rotl(fmix64(lane[3]), 48);
  return hash_bytes(std::string_view(p, n), h);  // the last 0..31 bytes, seeded with the lanes
}

/// Maps a well-mixed 64-bit hash to [0, n), n <= 2^32, with a multiply-shift instead of a
/// division (Lemire's "fastrange") on the hash's high 32 bits, which fmix64 mixes best.
inline std::uint32_t reduce_range(std::uint64_t hash, std::uint32_t n) noexcept {
  return static_cast<std::uint32_t>(((hash >> 32) * n) >> 32);
}

/// std::hash over string views, marked transparent: an unordered container of std::string keys
/// declared with it (and std::equal_to<>) is searched with a string_view, without building a
/// string per lookup.
struct TransparentStringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};

}  // namespace llmds::detail
