// Fuzz target: HNSW::from_bytes (include/llmds/ann/hnsw.hpp).
//
// Input: a mode byte (see saved_file_from_input), then a saved index. An index that loads must
// be usable as one built by add(): a search returns live ids, nearest first; to_bytes gives back
// exactly the bytes it was read from (the format has one spelling per index); and an add on top
// of the loaded graph leaves an index that saves and loads again.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <memory>
#include <set>
#include <vector>

#include "fuzz_common.hpp"
#include "llmds/ann/hnsw.hpp"

using llmds::HNSW;
using llmds::fuzz::must_not_throw;

namespace {

void check_results(const HNSW& index, const std::vector<HNSW::Result>& results, std::size_t k) {
  LLMDS_FUZZ_CHECK(results.size() <= std::min(k, index.size()));
  std::set<HNSW::Label> seen;
  for (const auto& r : results) {
    LLMDS_FUZZ_CHECK(index.contains(r.id) && !index.is_deleted(r.id));
    LLMDS_FUZZ_CHECK(seen.insert(r.id).second);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string file = llmds::fuzz::saved_file_from_input(data, size);
  std::unique_ptr<HNSW> index;
  if (!llmds::fuzz::loads([&] { index = HNSW::from_bytes(file); })) return 0;

  must_not_throw([&] {
    const auto stats = index->stats();
    LLMDS_FUZZ_CHECK(stats.num_vectors == index->size());
    LLMDS_FUZZ_CHECK(index->to_bytes() == file);

    // A stored vector as the query (its own nearest neighbour, unless deleted), and a constant one.
    const std::vector<float> constant(index->config().dim, 0.5f);
    const std::vector<float> query = stats.entry_point ? index->get_vector(*stats.entry_point) : constant;
    check_results(*index, index->search(query, 3), 3);
    check_results(*index, index->search(constant, 5, 1), 5);
    const llmds::IdFilter even = [](std::int64_t id) { return id % 2 == 0; };
    const auto filtered = index->search(query, 4, 16, &even);
    check_results(*index, filtered, 4);
    for (const auto& r : filtered) LLMDS_FUZZ_CHECK(r.id % 2 == 0);

    // A new vector on top of the loaded graph, into a deleted slot when there is one.
    HNSW::Label id = std::numeric_limits<HNSW::Label>::max();
    while (index->contains(id)) --id;
    index->add(constant, id, /*replace_deleted=*/true);
    LLMDS_FUZZ_CHECK(index->contains(id));
    check_results(*index, index->search(constant, 2), 2);
    const std::string after = index->to_bytes();
    LLMDS_FUZZ_CHECK(HNSW::from_bytes(after)->to_bytes() == after);
  }, "using the loaded HNSW index");
  return 0;
}
