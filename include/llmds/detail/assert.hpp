// LLMDS_ASSERT: internal invariants, checked in debug builds only.
//
// These guard what llmds itself promises (a heap position map that agrees with the heap, a token
// total that agrees with the entries), never what a caller passes in: bad input is an exception
// at the API boundary in every build.
#pragma once

#include <cstdio>
#include <cstdlib>

namespace llmds::detail {

[[noreturn]] inline void assert_failed(const char* condition, const char* message, const char* file,
                                       int line) noexcept {
  std::fprintf(stderr, "%s:%d: llmds invariant broken: %s (%s)\n", file, line, message, condition);
  std::abort();
}

}  // namespace llmds::detail

#ifdef NDEBUG
#define LLMDS_ASSERT(condition, message) static_cast<void>(0)
#else
#define LLMDS_ASSERT(condition, message) \
  ((condition) ? static_cast<void>(0)    \
               : ::llmds::detail::assert_failed(#condition, message, __FILE__, __LINE__))
#endif
