// What the fuzz targets share: how a target tells an expected refusal from a finding, and the
// checksum repair that lets mutations reach the parsers of the saved-file formats.
//
// A loader given bad bytes must throw a std::exception (its documented refusal) and nothing
// else. Anything else is a finding: a sanitizer report, a crash, a leak, an uncaught exception,
// a timeout, an allocation past libFuzzer's -malloc_limit_mb / -rss_limit_mb, and also two
// exceptions that only an unchecked size produces (std::length_error, std::bad_alloc): a loader
// that checks its counts against the bytes it holds never asks for more than a few times the
// input's size.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <new>
#include <stdexcept>
#include <string>
#include <string_view>

#include "llmds/detail/binary_io.hpp"
#include "llmds/detail/hash.hpp"

namespace llmds::fuzz {

/// Reports a broken property and aborts, which libFuzzer records as a crash with its input.
[[noreturn]] inline void finding(const char* what) {
  std::fprintf(stderr, "FUZZ FINDING: %s\n", what);
  std::fflush(stderr);
  std::abort();
}

#define LLMDS_FUZZ_CHECK(cond)                                                          \
  do {                                                                                  \
    if (!(cond)) ::llmds::fuzz::finding(__FILE__ ":" LLMDS_FUZZ_STR(__LINE__) ": " #cond); \
  } while (0)
#define LLMDS_FUZZ_STR(x) LLMDS_FUZZ_STR2(x)
#define LLMDS_FUZZ_STR2(x) #x

/// Runs load(); true if it succeeded, false if it refused the input with a std::exception.
/// std::length_error and std::bad_alloc are findings (see above).
template <class Load>
bool loads(Load&& load) {
  try {
    load();
    return true;
  } catch (const std::length_error& e) {
    std::fprintf(stderr, "length_error: %s\n", e.what());
    finding("a loader asked for an absurd size instead of refusing the input");
  } catch (const std::bad_alloc&) {
    finding("a loader ran out of memory instead of refusing the input");
  } catch (const std::exception&) {
    return false;
  }
}

/// Runs f(), which must not throw at all (a property of an input that loaded).
template <class F>
void must_not_throw(F&& f, const char* what) {
  try {
    f();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s threw: %s\n", what, e.what());
    finding("an operation on a loaded structure threw");
  }
}

/// The saved-file formats end in a 64-bit checksum of everything before it, and a reader checks
/// it before anything else, so nearly every random mutation of a saved file is refused at the
/// door and the fuzzer never gets to the parser behind it. The first input byte therefore picks
/// a mode: odd, the target rewrites the trailing checksum to match the mutated body (the parser
/// sees "a well-formed file with wrong contents", what a buggy writer or a crafted file gives);
/// even, the bytes go in unchanged (the checksum check itself is fuzzed). Both modes come from
/// the seeds and from mutations of the first byte.
inline std::string saved_file_from_input(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return {};
  std::string file(reinterpret_cast<const char*>(data) + 1, size - 1);
  if ((data[0] & 1) != 0 && file.size() >= sizeof(std::uint64_t)) {
    const std::size_t body = file.size() - sizeof(std::uint64_t);
    const std::uint64_t sum = detail::hash_bytes(std::string_view(file).substr(0, body), detail::file_checksum_seed);
    for (std::size_t i = 0; i < sizeof(std::uint64_t); ++i) {
      file[body + i] = static_cast<char>(static_cast<unsigned char>(sum >> (8 * i)));
    }
  }
  return file;
}

}  // namespace llmds::fuzz
