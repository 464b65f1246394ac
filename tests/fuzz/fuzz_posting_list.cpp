// Fuzz target: text::PostingList::decode_checked (include/llmds/text/posting_list.hpp), the
// entry through which InvertedIndex::from_bytes turns a saved list's bytes into a PostingList.
//
// Input: the posting count (u16, little-endian), the number of documents (u16; 0xFFFF stands
// for kNoMoreDocs, the most a loader allows, and 0xFFFE for one more, which must be refused),
// then the list's bytes. Acceptance is checked against a reference decoder written here from
// the layout in posting_list.hpp; a list that decodes must hold exactly what the reference read,
// spell it exactly as the input did, and agree with a list built by append() in its skip
// entries, its impacts (each block's Pareto frontier of (tf, length)) and its cursors.
#include <algorithm>
#include <cstdint>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "fuzz_common.hpp"
#include "llmds/detail/varint.hpp"
#include "llmds/text/posting_list.hpp"

using llmds::text::DocNum;
using llmds::text::Impact;
using llmds::text::PostingList;

namespace {

using Posting = std::pair<DocNum, std::uint32_t>;

std::uint32_t length_of(DocNum doc) { return (doc * 2654435761u) >> 27; }  // any lengths will do

// The layout, read naively: varints of at most 10 bytes, value below 2^64, shortest spelling;
// (gap << 1 | tf == 1), then tf when the flag is clear; documents strictly rising from 0.
std::optional<std::vector<Posting>> reference(std::span<const std::uint8_t> b, std::uint64_t count,
                                              std::uint64_t num_docs) {
  if (num_docs > llmds::text::kNoMoreDocs) return std::nullopt;
  std::size_t pos = 0;
  auto varint = [&]() -> std::optional<std::uint64_t> {
    unsigned __int128 v = 0;
    for (std::size_t i = 0; i < 10 && pos < b.size(); ++i) {
      const std::uint8_t byte = b[pos++];
      v |= static_cast<unsigned __int128>(byte & 0x7F) << (7 * i);
      if ((byte & 0x80) == 0) {
        if (v >> 64 != 0 || (i > 0 && byte == 0)) return std::nullopt;  // too big, or overlong
        return static_cast<std::uint64_t>(v);
      }
    }
    return std::nullopt;
  };
  std::vector<Posting> out;
  unsigned __int128 next = 0;
  for (std::uint64_t i = 0; i < count; ++i) {
    const auto code = varint();
    if (!code) return std::nullopt;
    std::uint64_t tf = 1;
    if ((*code & 1) == 0) {
      const auto t = varint();
      if (!t || *t < 2 || *t > 0xFFFFFFFFu) return std::nullopt;
      tf = *t;
    }
    const unsigned __int128 doc = next + (*code >> 1);
    if (doc >= num_docs) return std::nullopt;
    out.emplace_back(static_cast<DocNum>(doc), static_cast<std::uint32_t>(tf));
    next = doc + 1;
  }
  if (pos != b.size()) return std::nullopt;
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 4) return 0;
  const std::uint64_t count = data[0] | data[1] << 8;
  std::uint64_t num_docs = data[2] | data[3] << 8;
  if (num_docs == 0xFFFF) num_docs = llmds::text::kNoMoreDocs;
  if (num_docs == 0xFFFE) num_docs = std::uint64_t{llmds::text::kNoMoreDocs} + 1;
  const std::span<const std::uint8_t> bytes(data + 4, size - 4);

  const auto expected = reference(bytes, count, num_docs);
  std::vector<Posting> seen;
  std::optional<PostingList> list;
  if (!llmds::fuzz::loads([&] {
        list.emplace(PostingList::decode_checked(bytes, count, num_docs, length_of,
                                                 [&](DocNum d, std::uint32_t tf) { seen.emplace_back(d, tf); }));
      })) {
    LLMDS_FUZZ_CHECK(!expected);
    return 0;
  }
  LLMDS_FUZZ_CHECK(expected && seen == *expected);
  LLMDS_FUZZ_CHECK(list->size() == count);
  LLMDS_FUZZ_CHECK(std::equal(bytes.begin(), bytes.end(), list->bytes().begin(), list->bytes().end()));

  PostingList built;
  for (const auto& [doc, tf] : seen) {
    built.reserve_one_more();
    built.append(doc, tf, length_of(doc));
  }
  LLMDS_FUZZ_CHECK(built.blocks().size() == list->blocks().size());
  for (std::size_t b = 0; b < built.blocks().size(); ++b) {
    const auto x = built.blocks()[b], y = list->blocks()[b];
    LLMDS_FUZZ_CHECK(x.last_doc == y.last_doc && x.byte_end == y.byte_end && x.impact_end == y.impact_end);
    const auto impacts = list->impacts(b);
    LLMDS_FUZZ_CHECK(std::equal(impacts.begin(), impacts.end(), built.impacts(b).begin(), built.impacts(b).end()));
    // The frontier: real pairs of the block, rising in tf and length, dominating every posting.
    const std::size_t first = b * PostingList::kBlockSize;
    const std::size_t n = list->block_postings(b);
    for (std::size_t i = 0; i < impacts.size(); ++i) {
      if (i > 0) LLMDS_FUZZ_CHECK(impacts[i - 1].tf < impacts[i].tf && impacts[i - 1].doc_length < impacts[i].doc_length);
      LLMDS_FUZZ_CHECK(std::any_of(seen.begin() + first, seen.begin() + first + n, [&](const Posting& p) {
        return Impact{p.second, length_of(p.first)} == impacts[i];
      }));
    }
    for (std::size_t j = first; j < first + n; ++j) {
      LLMDS_FUZZ_CHECK(std::any_of(impacts.begin(), impacts.end(), [&](const Impact& m) {
        return m.tf >= seen[j].second && m.doc_length <= length_of(seen[j].first);
      }));
    }
  }

  llmds::text::PostingCursor cursor(*list);
  for (const auto& [doc, tf] : seen) {
    LLMDS_FUZZ_CHECK(cursor.doc() == doc && cursor.tf() == tf);
    cursor.next();
  }
  LLMDS_FUZZ_CHECK(cursor.doc() == llmds::text::kNoMoreDocs);
  for (std::size_t i = 0; i < seen.size(); i += 1 + seen.size() / 8) {
    for (const DocNum target : {seen[i].first, static_cast<DocNum>(seen[i].first + 1)}) {
      llmds::text::PostingCursor c(*list);
      c.next_geq(target);
      const auto it = std::lower_bound(seen.begin(), seen.end(), Posting{target, 0});
      LLMDS_FUZZ_CHECK(c.doc() == (it == seen.end() ? llmds::text::kNoMoreDocs : it->first));
    }
  }
  return 0;
}
