// Fuzz target: CountMinSketch::from_bytes (include/llmds/sketch/count_min_sketch.hpp).
//
// Input: a mode byte (see saved_file_from_input), then a saved sketch. A sketch that loads must
// keep the sketch's invariants (no estimate above the total; at most top_k heavy hitters, each
// seen at least once), give back exactly the bytes it was read from, and keep counting.
#include <cstdint>
#include <limits>
#include <string>

#include "fuzz_common.hpp"
#include "llmds/sketch/count_min_sketch.hpp"

using llmds::CountMinSketch;
using llmds::fuzz::must_not_throw;

namespace {

void check_invariants(const CountMinSketch& sketch) {
  const std::uint64_t total = sketch.total_count();
  for (const char* item : {"", "a", "the", "block-17", "\xff\x00"}) LLMDS_FUZZ_CHECK(sketch.estimate(item) <= total);
  const auto hitters = sketch.heavy_hitters();
  LLMDS_FUZZ_CHECK(hitters.size() <= sketch.config().top_k);
  for (std::size_t i = 0; i < hitters.size(); ++i) {
    LLMDS_FUZZ_CHECK(hitters[i].estimate >= 1 && hitters[i].estimate <= total);
    LLMDS_FUZZ_CHECK(hitters[i].estimate == sketch.estimate(hitters[i].item));
    if (i > 0) LLMDS_FUZZ_CHECK(hitters[i - 1].estimate >= hitters[i].estimate);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string file = llmds::fuzz::saved_file_from_input(data, size);
  CountMinSketch sketch;
  if (!llmds::fuzz::loads([&] { sketch = CountMinSketch::from_bytes(file); })) return 0;

  must_not_throw([&] {
    LLMDS_FUZZ_CHECK(sketch.to_bytes() == file);
    check_invariants(sketch);
    if (sketch.total_count() <= std::numeric_limits<std::uint64_t>::max() - 3) {
      const std::uint64_t before = sketch.estimate("fuzz");
      sketch.add("fuzz", 3);
      LLMDS_FUZZ_CHECK(sketch.estimate("fuzz") >= before + 3);
      check_invariants(sketch);
      const std::string after = sketch.to_bytes();
      LLMDS_FUZZ_CHECK(CountMinSketch::from_bytes(after).to_bytes() == after);
    }
  }, "using the loaded count-min sketch");
  return 0;
}
