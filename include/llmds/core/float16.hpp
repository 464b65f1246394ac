// Float16: IEEE 754 binary16 storage for KV pages at half the memory of float32.
//
// KV caches are usually stored in 16-bit floats; C++20 has no such type (std::float16_t is
// C++23 and not yet everywhere), so this is the storage format only: 16 bits with the exact
// layout of IEEE binary16 (numpy's float16), converted to and from float for arithmetic.
// Conversion from float rounds to nearest, ties to even, overflows to infinity, keeps NaNs
// NaN and produces subnormals; conversion to float is exact. Both are branchy bit manipulation,
// a few ns each, which is cheap next to the memory traffic they halve.
#pragma once

#include <bit>
#include <cstdint>

namespace llmds {

struct Float16 {
  std::uint16_t bits = 0;

  constexpr Float16() = default;
  /// Rounds to the nearest binary16, ties to even.
  explicit constexpr Float16(float value) noexcept : bits(from_float(value)) {}
  explicit constexpr operator float() const noexcept { return to_float(bits); }

  static constexpr Float16 from_bits(std::uint16_t b) noexcept {
    Float16 h;
    h.bits = b;
    return h;
  }

  /// Bitwise equality (so +0 != -0 and a NaN equals itself): what storage round trips need.
  friend constexpr bool operator==(Float16, Float16) = default;

 private:
  static constexpr std::uint16_t from_float(float value) noexcept {
    const auto f = std::bit_cast<std::uint32_t>(value);
    const auto sign = static_cast<std::uint32_t>((f >> 16) & 0x8000u);
    const std::uint32_t exponent = (f >> 23) & 0xffu;
    std::uint32_t mantissa = f & 0x7fffffu;
    if (exponent == 0xffu) {  // infinity, or NaN with its top payload bits and quiet bit set
      return static_cast<std::uint16_t>(sign | 0x7c00u | (mantissa != 0 ? 0x200u | (mantissa >> 13) : 0u));
    }
    const int e = static_cast<int>(exponent) - 127 + 15;
    if (e >= 31) return static_cast<std::uint16_t>(sign | 0x7c00u);  // too large: infinity
    if (e <= 0) {
      // Subnormal (or zero) in binary16: shift the 24-bit significand into the 10-bit field.
      if (e < -10) return static_cast<std::uint16_t>(sign);  // below half the least subnormal
      mantissa |= 0x800000u;
      const auto shift = static_cast<std::uint32_t>(14 - e);
      std::uint32_t half = mantissa >> shift;
      const std::uint32_t rest = mantissa & ((1u << shift) - 1u);
      const std::uint32_t halfway = 1u << (shift - 1u);
      if (rest > halfway || (rest == halfway && (half & 1u) != 0)) ++half;  // may carry to normal
      return static_cast<std::uint16_t>(sign | half);
    }
    std::uint32_t half = sign | (static_cast<std::uint32_t>(e) << 10) | (mantissa >> 13);
    const std::uint32_t rest = mantissa & 0x1fffu;
    // A carry out of the mantissa bumps the exponent, and from the largest finite to infinity,
    // which is the correctly rounded result in both cases.
    if (rest > 0x1000u || (rest == 0x1000u && (half & 1u) != 0)) ++half;
    return static_cast<std::uint16_t>(half);
  }

  static constexpr float to_float(std::uint16_t h) noexcept {
    const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
    const std::uint32_t exponent = (h >> 10) & 0x1fu;
    const std::uint32_t mantissa = h & 0x3ffu;
    if (exponent == 0) {
      const float magnitude = static_cast<float>(mantissa) * 0x1p-24f;  // exact: 11 bits
      return sign != 0 ? -magnitude : magnitude;
    }
    if (exponent == 0x1fu) return std::bit_cast<float>(sign | 0x7f800000u | (mantissa << 13));
    return std::bit_cast<float>(sign | ((exponent - 15 + 127) << 23) | (mantissa << 13));
  }
};

static_assert(sizeof(Float16) == 2);

}  // namespace llmds
