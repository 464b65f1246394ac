// Size arithmetic that cannot wrap.
//
// Sizes in llmds come from callers (a dimension, a capacity) and from files (a vector count, a
// model's widths). Their product sizes an allocation; if it wraps, a request for 2^62 floats
// becomes a request for a few bytes, and the first write runs past it. Every product or sum of
// such sizes goes through checked_mul / checked_add, which refuse to wrap.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string_view>

#include <fmt/format.h>

namespace llmds::detail {

/// a * b; std::invalid_argument naming `what` if the product does not fit in a size_t.
inline std::size_t checked_mul(std::size_t a, std::size_t b, std::string_view what) {
  std::size_t product = 0;
  if (__builtin_mul_overflow(a, b, &product)) {
    throw std::invalid_argument(fmt::format("{}: {} x {} does not fit in {} bits", what, a, b, 8 * sizeof(std::size_t)));
  }
  return product;
}

/// a + b; std::invalid_argument naming `what` if the sum does not fit in a size_t.
inline std::size_t checked_add(std::size_t a, std::size_t b, std::string_view what) {
  std::size_t sum = 0;
  if (__builtin_add_overflow(a, b, &sum)) {
    throw std::invalid_argument(fmt::format("{}: {} + {} does not fit in {} bits", what, a, b, 8 * sizeof(std::size_t)));
  }
  return sum;
}

}  // namespace llmds::detail
