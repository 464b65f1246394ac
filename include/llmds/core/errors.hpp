// Exception types that llmds throws at its API boundary.
//
// A broken contract throws a standard exception where one fits: std::invalid_argument for a bad
// value (Python: ValueError), std::out_of_range for an empty container or an index past the end
// (IndexError). The types below cover what the standard library has no name for, so the Python
// bindings can map each one to the exception a Python user expects.
#pragma once

#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace llmds {

/// A key, id or sequence that the caller named is not in the structure. Python: KeyError.
/// It is an std::out_of_range, so generic C++ callers can catch it as one.
class KeyError : public std::out_of_range {
 public:
  using std::out_of_range::out_of_range;
};

/// A structure of fixed capacity has too little room left for a request (pages of a KV arena).
/// Python: MemoryError. Where running out is an expected outcome (the engine's hot path), the
/// structures also offer a try_ call that returns a value instead.
class OutOfPages : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A reservation would take a token budget past its limit (TokenBudget). Python: MemoryError.
/// TokenBudget::try_reserve returns the refusal as a value instead.
class BudgetExceeded : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A file could not be opened, read or written. Python: OSError.
class IOError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {

/// Renders a key for an error message when it can be formatted, and a placeholder otherwise, so
/// templates over arbitrary key types still produce a useful message.
template <class T>
std::string describe(const T& value) {
  if constexpr (fmt::is_formattable<T>::value) {
    return fmt::format("{}", value);
  } else {
    return "<unformattable key>";
  }
}

}  // namespace detail
}  // namespace llmds
