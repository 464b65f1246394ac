// InvertedIndex's file format: to_bytes / from_bytes (and so save / load) of
// text/inverted_index.hpp, which includes this file at its end; include that, not this.
//
// A saved index is a detail/binary_io.hpp file ("LLMDSINV", format version 1) whose payload is
//     k1, b (f64 bits), stem flag (u8), the stop words (a count, then each word),
//     the documents (a count, then per document its id (i64) and length (u32)),
//     the terms (a count, then per term its text, its posting count (u64) and its postings as
//     the PostingList holds them: varint gaps and tfs, text/posting_list.hpp),
// each byte string preceded by its length (u64). Only the live documents are saved; skip data,
// impacts, df and the forward lists are derived from the postings when the file is loaded.
#pragma once

#include <bit>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "llmds/detail/binary_io.hpp"

namespace llmds {

inline std::string InvertedIndex::to_bytes() const {
  if (dead_docs_ > 0) {
    InvertedIndex live(*this);
    live.compact();
    return live.to_bytes();
  }
  detail::BinaryWriter w(kMagic, kFormatVersion);
  w.put(std::bit_cast<std::uint64_t>(config_.k1));
  w.put(std::bit_cast<std::uint64_t>(config_.b));
  w.put(static_cast<std::uint8_t>(config_.analyzer.stem));
  w.put(static_cast<std::uint64_t>(config_.analyzer.stop_words.size()));
  for (const auto& word : config_.analyzer.stop_words) w.put_bytes(word);
  w.put(static_cast<std::uint64_t>(doc_ids_.size()));
  for (std::size_t d = 0; d < doc_ids_.size(); ++d) {
    w.put(doc_ids_[d]);
    w.put(lengths_[d]);
  }
  std::vector<const std::string*> term_of(lists_.size());
  for (const auto& [term, id] : term_ids_) term_of[id] = &term;
  w.put(static_cast<std::uint64_t>(lists_.size()));
  for (std::size_t t = 0; t < lists_.size(); ++t) {
    w.put_bytes(*term_of[t]);
    w.put(static_cast<std::uint64_t>(lists_[t].size()));
    const auto bytes = lists_[t].bytes();
    w.put_bytes(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
  }
  return std::move(w).finish();
}

inline InvertedIndex InvertedIndex::from_bytes(std::string_view bytes) {
  detail::BinaryReader r(bytes, kMagic, kFormatVersion, "inverted index");
  InvertedIndexConfig config;
  config.k1 = std::bit_cast<double>(r.get<std::uint64_t>());
  config.b = std::bit_cast<double>(r.get<std::uint64_t>());
  config.analyzer.stem = r.get_flag();
  const auto stop_count = r.get_count(sizeof(std::uint64_t));  // each one a length and its bytes
  for (std::uint64_t i = 0; i < stop_count; ++i) config.analyzer.stop_words.emplace_back(r.get_bytes());
  try {
    config.validate();
  } catch (const std::invalid_argument&) {
    r.fail("saved {} has invalid parameters");
  }
  InvertedIndex index(std::move(config));

  const auto num_docs = r.get_count(sizeof(DocId) + sizeof(std::uint32_t));
  if (num_docs >= text::kNoMoreDocs) r.fail("saved {} holds more documents than it can number");
  index.doc_ids_.resize(num_docs);
  index.lengths_.resize(num_docs);
  index.dead_.assign(num_docs, 0);
  for (std::size_t d = 0; d < num_docs; ++d) {
    index.doc_ids_[d] = r.get<DocId>();
    index.lengths_[d] = r.get<std::uint32_t>();
    if (!index.doc_of_.emplace(index.doc_ids_[d], static_cast<text::DocNum>(d)).second) {
      r.fail("saved {} repeats a document id");
    }
  }
  // Each term: its text's length, the posting count and the postings' length (24 bytes).
  const auto num_terms = r.get_count(3 * sizeof(std::uint64_t));
  if (num_terms >= kNoTerm) r.fail("saved {} holds more terms than it can number");
  std::vector<std::vector<std::uint32_t>> forward(num_docs);
  std::vector<std::uint64_t> tf_sum(num_docs, 0);
  for (std::uint64_t t = 0; t < num_terms; ++t) {
    const auto term = r.get_bytes();
    const auto count = r.get<std::uint64_t>();
    const auto data = r.get_bytes();
    const auto id = static_cast<std::uint32_t>(t);
    if (!text::is_single_term(term)) r.fail("saved {} holds a term its analyzer cannot produce");
    if (count == 0 || !index.term_ids_.emplace(std::string(term), id).second) {
      r.fail("saved {} has an empty or repeated term");
    }
    try {
      index.lists_.push_back(text::PostingList::decode_checked(
          std::span(reinterpret_cast<const std::uint8_t*>(data.data()), data.size()), count, num_docs,
          [&](text::DocNum d) { return index.lengths_[d]; },
          [&](text::DocNum d, std::uint32_t tf) {
            forward[d].push_back(id);
            tf_sum[d] += tf;
          }));
    } catch (const std::invalid_argument& e) {
      r.fail(fmt::format("saved {{}} has a bad posting list: {}", e.what()));
    }
    index.df_.push_back(static_cast<std::uint32_t>(count));
    index.postings_ += count;
  }
  r.expect_end();
  for (std::size_t d = 0; d < num_docs; ++d) {
    if (tf_sum[d] != index.lengths_[d]) r.fail("saved {} has a document length that its postings contradict");
    std::vector<std::pair<std::uint32_t, std::uint32_t>> terms;
    terms.reserve(forward[d].size());
    for (auto t : forward[d]) terms.emplace_back(t, 0);
    index.reserve_document(terms);
    index.append_forward(terms);
    if (index.lengths_[d] > 0) ++index.scored_docs_;
    index.total_terms_ += index.lengths_[d];
  }
  return index;
}

}  // namespace llmds
