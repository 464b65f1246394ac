// Checks of integer arguments that arrive from Python as int64, shared by the bind_*.cpp files:
// a negative count or size is a ValueError naming the argument, never a wrapped size_t.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>

#include <fmt/format.h>

namespace llmds::python {

inline std::size_t positive(std::int64_t v, const char* name) {
  if (v < 1) throw std::invalid_argument(fmt::format("{} must be at least 1, got {}", name, v));
  return static_cast<std::size_t>(v);
}

inline std::size_t non_negative(std::int64_t v, const char* name) {
  if (v < 0) throw std::invalid_argument(fmt::format("{} must be non-negative, got {}", name, v));
  return static_cast<std::size_t>(v);
}

}  // namespace llmds::python
