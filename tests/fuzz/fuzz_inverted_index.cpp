// Fuzz target: InvertedIndex::from_bytes (include/llmds/text/inverted_index.hpp).
//
// Input: a mode byte (see saved_file_from_input), then a saved index. An index that loads must
// behave as one built by add_document: to_bytes gives back exactly the bytes it was read from;
// the pruned search and the exhaustive one agree (same documents, bit-identical scores), on
// fixed queries and on one made of the words of the file itself (its terms are stored as text,
// so that query hits them); and a removal and an addition leave an index that saves and loads.
#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_common.hpp"
#include "llmds/text/inverted_index.hpp"

using llmds::InvertedIndex;
using llmds::fuzz::must_not_throw;

namespace {

void check_search(const InvertedIndex& index, std::string_view query) {
  for (const std::size_t k : {1, 3, 10}) {
    const auto pruned = index.search(query, k, llmds::QueryStrategy::block_max_maxscore);
    const auto exhaustive = index.search(query, k, llmds::QueryStrategy::exhaustive);
    LLMDS_FUZZ_CHECK(pruned == exhaustive);
    LLMDS_FUZZ_CHECK(index.search(query, k) == exhaustive);
    LLMDS_FUZZ_CHECK(pruned.size() <= std::min(k, index.size()));
    for (const auto& hit : pruned) {
      LLMDS_FUZZ_CHECK(index.contains(hit.doc_id));
      LLMDS_FUZZ_CHECK(hit.score > 0);
      LLMDS_FUZZ_CHECK(index.score(query, hit.doc_id) == hit.score);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string file = llmds::fuzz::saved_file_from_input(data, size);
  InvertedIndex index;
  if (!llmds::fuzz::loads([&] { index = InvertedIndex::from_bytes(file); })) return 0;

  must_not_throw([&] {
    LLMDS_FUZZ_CHECK(index.to_bytes() == file);
    const auto stats = index.stats();
    LLMDS_FUZZ_CHECK(stats.num_documents == index.size());
    LLMDS_FUZZ_CHECK(stats.num_postings == stats.stored_postings);

    std::string own_words;  // the file's alphanumeric runs: its terms among them
    for (const char c : file) {
      if (own_words.size() >= 512) break;
      own_words.push_back(llmds::text::is_term_byte(c) ? c : ' ');
    }
    check_search(index, own_words);
    check_search(index, "boundary layer flow flows flowing heat 1 2 3 the a");

    const auto ids = index.document_ids();
    LLMDS_FUZZ_CHECK(ids.size() == index.size());
    std::uint64_t total = 0;
    for (const auto id : ids) total += index.document_length(id);
    LLMDS_FUZZ_CHECK(total == stats.total_terms);

    if (!ids.empty()) {
      index.remove_document(ids.front());
      check_search(index, own_words);
    }
    llmds::DocId fresh = 0;
    while (index.contains(fresh)) ++fresh;
    index.add_document(fresh, own_words);
    check_search(index, own_words);
    const std::string after = index.to_bytes();
    LLMDS_FUZZ_CHECK(InvertedIndex::from_bytes(after).to_bytes() == after);
  }, "using the loaded inverted index");
  return 0;
}
