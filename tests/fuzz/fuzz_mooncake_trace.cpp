// Fuzz target: parse_mooncake_trace (include/llmds/kv/trace_replay.hpp, src/kv/trace_replay.cpp).
//
// Input: JSON Lines text. What parses must mean what it says: writing the requests back out as
// trace lines and parsing them again gives the same requests, and replaying them through a small
// prefix cache either works (hits never above lookups) or refuses with the replay's documented
// errors (too few hash ids: std::invalid_argument; more blocks than the capacity: OutOfPages).
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "fuzz_common.hpp"
#include "llmds/core/errors.hpp"
#include "llmds/kv/trace_replay.hpp"

using llmds::MooncakeRequest;

namespace {

bool same(const std::vector<MooncakeRequest>& a, const std::vector<MooncakeRequest>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i].timestamp_ms != b[i].timestamp_ms || a[i].input_length != b[i].input_length ||
        a[i].output_length != b[i].output_length || a[i].hash_ids != b[i].hash_ids) {
      return false;
    }
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  std::vector<MooncakeRequest> requests;
  if (!llmds::fuzz::loads([&] { requests = llmds::parse_mooncake_trace(text); })) return 0;

  std::string written;
  for (const auto& r : requests) {
    LLMDS_FUZZ_CHECK(r.input_length >= 0 && r.output_length >= 0);
    written += fmt::format(R"({{"timestamp": {}, "input_length": {}, "output_length": {}, "hash_ids": [{}]}})",
                           r.timestamp_ms, r.input_length, r.output_length, fmt::join(r.hash_ids, ", "));
    written += '\n';
  }
  llmds::fuzz::must_not_throw([&] { LLMDS_FUZZ_CHECK(same(llmds::parse_mooncake_trace(written), requests)); },
                              "parsing the requests written back");

  for (const std::size_t block_size : {std::size_t{1}, std::size_t{512}}) {
    try {
      const auto result = llmds::replay_prefix_cache(requests, {.capacity_blocks = 64, .block_size = block_size});
      LLMDS_FUZZ_CHECK(result.requests == requests.size());
      LLMDS_FUZZ_CHECK(result.hit_blocks <= result.lookup_blocks);
    } catch (const llmds::OutOfPages&) {
    } catch (const std::invalid_argument&) {
    }
  }
  return 0;
}
