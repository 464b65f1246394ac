// Variable-length integers (LEB128): 7 bits per byte, low bits first, the high bit set on every
// byte but the last. Small values, which is what gaps between sorted ids and term frequencies
// mostly are, take one byte. Only unsigned values are encoded here: every value llmds stores this
// way (id gaps of sorted lists, counts) is non-negative, so no zigzag step is needed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace llmds::detail {

/// Appends `value`. Callers that need the strong guarantee reserve first: then it cannot throw.
inline void encode_varint(std::uint64_t value, std::vector<std::uint8_t>& out) {
  while (value >= 0x80) {
    out.push_back(static_cast<std::uint8_t>(value | 0x80));
    value >>= 7;
  }
  out.push_back(static_cast<std::uint8_t>(value));
}

/// The bytes encode_varint(value) writes: the one canonical spelling's length.
inline constexpr std::size_t varint_size(std::uint64_t value) noexcept {
  std::size_t n = 1;
  for (; value >= 0x80; value >>= 7) ++n;
  return n;
}

/// Reads one value at `p` and moves `p` past it. The caller guarantees a well-formed encoding
/// (data it wrote itself, or data checked by decode_varint_checked).
inline std::uint64_t decode_varint(const std::uint8_t*& p) noexcept {
  std::uint64_t value = *p & 0x7F;
  unsigned shift = 7;
  while (*p++ & 0x80) {
    value |= static_cast<std::uint64_t>(*p & 0x7F) << shift;
    shift += 7;
  }
  return value;
}

/// Like decode_varint, for untrusted bytes: false (and `p` unspecified) when the encoding runs
/// past `end` or does not fit 64 bits.
inline bool decode_varint_checked(const std::uint8_t*& p, const std::uint8_t* end,
                                  std::uint64_t& value) noexcept {
  value = 0;
  for (unsigned shift = 0; shift < 70; shift += 7) {
    if (p == end) return false;
    const std::uint8_t byte = *p++;
    if (shift == 63 && (byte & 0x7E) != 0) return false;  // bits past 64
    value |= static_cast<std::uint64_t>(byte & 0x7F) << shift;
    if ((byte & 0x80) == 0) return true;
  }
  return false;
}

}  // namespace llmds::detail
