#include "llmds/core/float16.hpp"

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>

#include <gtest/gtest.h>

namespace {

using llmds::Float16;

// The compiler's own binary16 (GCC and Clang on x86-64 and AArch64) is the reference.
std::uint16_t reference_bits(float x) { return std::bit_cast<std::uint16_t>(static_cast<_Float16>(x)); }

TEST(Float16, EveryHalfSurvivesARoundTripThroughFloat) {
  for (std::uint32_t bits = 0; bits <= 0xffffu; ++bits) {
    const auto h = Float16::from_bits(static_cast<std::uint16_t>(bits));
    const float f = static_cast<float>(h);
    const float reference = static_cast<float>(std::bit_cast<_Float16>(h.bits));
    if (std::isnan(f)) {
      // The hardware quiets signalling NaNs; Float16 keeps the payload as it is. Both are NaN.
      EXPECT_TRUE(std::isnan(reference)) << bits;
      EXPECT_TRUE(std::isnan(static_cast<float>(Float16(f)))) << bits;
    } else {
      EXPECT_EQ(std::bit_cast<std::uint32_t>(f), std::bit_cast<std::uint32_t>(reference)) << bits;
      EXPECT_EQ(Float16(f).bits, h.bits) << bits;
    }
  }
}

TEST(Float16, RoundsLikeTheCompilerOnRandomFloats) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<std::uint32_t> any;
  for (int i = 0; i < 2'000'000; ++i) {
    const float x = std::bit_cast<float>(any(rng));
    if (std::isnan(x)) continue;
    ASSERT_EQ(Float16(x).bits, reference_bits(x)) << x;
  }
}

TEST(Float16, RoundsTiesToEvenAtTheEdges) {
  // Halfway between 1 and the next half (1 + 2^-10) rounds down to the even 1.
  EXPECT_EQ(Float16(1.0f + 0x1p-11f).bits, 0x3c00u);
  EXPECT_EQ(Float16(1.0f + 3 * 0x1p-11f).bits, 0x3c02u);
  EXPECT_EQ(Float16(65504.0f).bits, 0x7bffu);  // largest finite
  EXPECT_EQ(Float16(65520.0f).bits, 0x7c00u);  // rounds up to infinity
  EXPECT_EQ(Float16(0x1p-24f).bits, 0x0001u);  // least subnormal
  EXPECT_EQ(Float16(0x1p-25f).bits, 0x0000u);  // a tie, to even zero
  EXPECT_EQ(Float16(-0.0f).bits, 0x8000u);
  EXPECT_EQ(Float16(-std::numeric_limits<float>::infinity()).bits, 0xfc00u);
  EXPECT_TRUE(std::isnan(static_cast<float>(Float16(std::numeric_limits<float>::quiet_NaN()))));
}

}  // namespace
