// InvertedIndex: lexical search with BM25 scored exactly as Lucene scores it, over compressed
// posting lists, with block-max MaxScore top-k retrieval.
//
// Scoring. For a query q and a document d of length dl (its number of indexed terms),
//     score(q, d) = sum over the terms t of q, repeats included, of
//                   idf(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl))
//     idf(t)      = ln(1 + (N - df + 0.5) / (df + 0.5))
// where tf is t's count in d, df the number of documents containing t, N the number of
// documents with at least one term and avgdl their mean length; these are Lucene's
// BM25Similarity and its collection statistics. Unlike Lucene, which stores a lossy one-byte
// length per document, lengths are exact, and the statistics always describe the live
// documents: a removed document leaves N, avgdl and every df at once. A repeated query term
// counts once per repeat, as repeated clauses of a Lucene BooleanQuery do.
//
// Layout. Each document gets a dense internal number in insertion order, so every posting list
// (text/posting_list.hpp: varint gaps and tfs in blocks of 128 with skip entries and per-block
// impacts) is built by appending. Per document the index keeps its external id, its length and a
// forward list of its term ids (varint gaps of the sorted ids), which is what lets
// remove_document update df exactly without scanning every list.
//
// Retrieval is document-at-a-time block-max MaxScore (Turtle and Flood's MaxScore with the
// block-max bounds of Ding and Suel). The query terms are sorted by the largest score their list
// can give; once the k-th best score so far (the threshold) exceeds the sum of the smallest
// bounds, those terms become "non-essential": a document is only a candidate if an essential
// term contains it, and before its non-essential terms are looked up the block maxima of the
// blocks that could hold it must still be able to beat the threshold. The answer is identical to
// scoring every posting (search_exhaustive, kept as the reference that the tests compare
// against): same documents, same scores, ties to the earlier added document, as in Lucene. A
// long query whose lists cover most of the collection gains nothing from pruning, so search()
// scores such a query term at a time instead (QueryStrategy; same answer either way).
//
// Removal marks the document's number dead; its postings stay until compact() rebuilds the lists
// without them, which happens by itself once dead numbers outnumber live ones.
//
// Costs: add_document O(|text|) plus one posting append per distinct term; remove_document
// O(distinct terms of the document); search O(postings of the essential terms + blocks skipped)
// in the usual case, never more than scoring every posting of the query's terms.
//
// Errors leave the index unchanged: a duplicate document id or bad top_k is
// std::invalid_argument, an unknown document id llmds::KeyError. Concurrent searches are safe;
// a search must not run concurrently with a change (the Python binding holds a reader-writer
// lock).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <memory>
#include <new>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "llmds/core/errors.hpp"
#include "llmds/core/stats_fields.hpp"
#include "llmds/core/types.hpp"
#include "llmds/detail/assert.hpp"
#include "llmds/detail/file_io.hpp"
#include "llmds/detail/hash.hpp"
#include "llmds/detail/parallel.hpp"
#include "llmds/detail/reserve.hpp"
#include "llmds/detail/varint.hpp"
#include "llmds/text/analyzer.hpp"
#include "llmds/text/detail/maxscore.hpp"
#include "llmds/text/posting_list.hpp"

namespace llmds {

struct InvertedIndexConfig {
  double k1 = 1.2;   // Lucene's BM25Similarity default
  double b = 0.75;   // Lucene's BM25Similarity default
  text::AnalyzerConfig analyzer;  // default: lower-cased ASCII alphanumeric runs, nothing else

  void validate() const {
    if (!std::isfinite(k1) || k1 < 0) {
      throw std::invalid_argument(fmt::format("k1 must be finite and >= 0, got {}", k1));
    }
    if (!std::isfinite(b) || b < 0 || b > 1) {
      throw std::invalid_argument(fmt::format("b must be in [0, 1], got {}", b));
    }
    analyzer.validate();
  }
};

/// How search() finds the top k. Every strategy returns the same documents with bit-identical
/// scores; they differ only in speed.
enum class QueryStrategy : std::uint8_t {
  automatic,           // chosen per query from the sizes of its lists (see choose_strategy)
  block_max_maxscore,  // document at a time, skipping what cannot enter the top k
  exhaustive,          // term at a time into an accumulator per document
};

struct InvertedIndexStats {
  std::size_t num_documents = 0;       // live documents, empty ones included
  std::size_t scored_documents = 0;    // N of the BM25 formula: live documents with a term
  std::size_t num_terms = 0;           // distinct terms with a live posting
  std::size_t num_postings = 0;        // live (term, document) pairs
  std::size_t stored_postings = 0;     // postings in the lists, dead ones awaiting compact()
  std::size_t dead_documents = 0;      // removed documents whose postings are still stored
  std::uint64_t total_terms = 0;       // sum of live document lengths
  double avg_doc_length = 0;           // avgdl of the BM25 formula
  std::size_t posting_bytes = 0;       // compressed (gap, tf) pairs
  std::size_t skip_bytes = 0;          // skip entries and block impacts
  double bits_per_posting = 0;         // 8 * posting_bytes / stored_postings
  double bits_per_posting_with_skips = 0;
  std::size_t forward_bytes = 0;       // per-document term lists (for exact removal)
  std::size_t memory_bytes = 0;        // everything the index holds on the heap, approximately
  double k1 = 0;                       // the BM25 parameters in use
  double b = 0;

  /// Every figure by name (core/stats_fields.hpp).
  template <class Visit>
  void for_each_field(Visit&& visit) const {
    visit("num_documents", num_documents);
    visit("scored_documents", scored_documents);
    visit("num_terms", num_terms);
    visit("num_postings", num_postings);
    visit("stored_postings", stored_postings);
    visit("dead_documents", dead_documents);
    visit("total_terms", total_terms);
    visit("avg_doc_length", avg_doc_length);
    visit("posting_bytes", posting_bytes);
    visit("skip_bytes", skip_bytes);
    visit("bits_per_posting", bits_per_posting);
    visit("bits_per_posting_with_skips", bits_per_posting_with_skips);
    visit("forward_bytes", forward_bytes);
    visit("memory_bytes", memory_bytes);
    visit("k1", k1);
    visit("b", b);
  }
};

class InvertedIndex {
 public:
  struct Hit {
    DocId doc_id;
    double score;
    friend bool operator==(const Hit&, const Hit&) = default;
  };

  explicit InvertedIndex(InvertedIndexConfig config = {})
      : config_((config.validate(), std::move(config))), analyzer_(config_.analyzer) {}

  [[nodiscard]] const InvertedIndexConfig& config() const noexcept { return config_; }
  [[nodiscard]] const text::Analyzer& analyzer() const noexcept { return analyzer_; }

  /// Number of live documents.
  [[nodiscard]] std::size_t size() const noexcept { return doc_of_.size(); }
  [[nodiscard]] bool contains(DocId doc_id) const noexcept { return doc_of_.contains(doc_id); }

  /// Analyses `text` and indexes it under `doc_id`. Throws std::invalid_argument if doc_id is
  /// already indexed (the index is unchanged).
  void add_document(DocId doc_id, std::string_view text) {
    if (doc_of_.contains(doc_id)) {
      throw std::invalid_argument(fmt::format("document {} is already indexed", doc_id));
    }
    if (doc_ids_.size() >= std::size_t{text::kNoMoreDocs}) {
      throw std::length_error("the index holds the most documents it can number (2^32 - 1)");
    }
    // Count the document's terms: existing ones by id, new ones by text.
    std::vector<std::pair<std::uint32_t, std::uint32_t>> counts;  // (term id, tf)
    std::unordered_map<std::string, std::uint32_t, detail::TransparentStringHash, std::equal_to<>> new_terms;
    std::uint64_t length = 0;
    analyzer_.for_each_term(text, [&](std::string_view term) {
      ++length;
      if (auto it = term_ids_.find(term); it != term_ids_.end()) {
        counts.emplace_back(it->second, 1);
      } else if (auto n = new_terms.find(term); n != new_terms.end()) {
        ++n->second;
      } else {
        new_terms.emplace(std::string(term), 1);
      }
    });
    if (length > std::numeric_limits<std::uint32_t>::max()) {
      throw std::length_error("a document may hold at most 2^32 - 1 terms");
    }
    std::sort(counts.begin(), counts.end());
    counts = merge_runs(counts);

    // From here on: first everything that may allocate, rolled back on failure; then the
    // appends, which cannot throw.
    const auto doc = static_cast<text::DocNum>(doc_ids_.size());
    const std::size_t old_terms = lists_.size();
    std::size_t added = 0;  // new terms entered in term_ids_, in new_terms' order
    try {
      detail::reserve_room(lists_, new_terms.size());
      detail::reserve_room(df_, new_terms.size());
      for (auto& [term, tf] : new_terms) {
        const auto id = static_cast<std::uint32_t>(lists_.size());
        term_ids_.emplace(term, id);
        ++added;
        lists_.emplace_back();
        df_.push_back(0);
        counts.emplace_back(id, tf);  // ids above every existing one: counts stays sorted
      }
      for (const auto& [id, tf] : counts) lists_[id].reserve_one_more();
      reserve_document(counts);
      doc_of_.emplace(doc_id, doc);  // last: nothing after it in this block can throw
    } catch (...) {
      // By key: a later emplace may have rehashed, which invalidates iterators.
      auto term = new_terms.begin();
      for (std::size_t i = 0; i < added; ++i, ++term) term_ids_.erase(term->first);
      lists_.resize(old_terms);
      df_.resize(old_terms);
      throw;
    }
    const auto dl = static_cast<std::uint32_t>(length);
    for (const auto& [id, tf] : counts) {
      lists_[id].append(doc, tf, dl);
      ++df_[id];
    }
    append_document(doc_id, dl, counts);
    postings_ += counts.size();
    if (dl > 0) ++scored_docs_;
    total_terms_ += dl;
  }

  /// Removes a document: it is never returned again and leaves N, avgdl and df at once.
  /// Throws llmds::KeyError for an unknown id.
  void remove_document(DocId doc_id) {
    const auto it = doc_of_.find(doc_id);
    if (it == doc_of_.end()) throw KeyError(fmt::format("document {} is not indexed", doc_id));
    const text::DocNum doc = it->second;
    for_each_forward_term(doc, [&](std::uint32_t term) { --df_[term]; });
    postings_ -= forward_count_[doc];
    if (lengths_[doc] > 0) --scored_docs_;
    total_terms_ -= lengths_[doc];
    dead_[doc] = 1;
    ++dead_docs_;
    doc_of_.erase(it);
    if (dead_docs_ > doc_of_.size()) {
      // The removal is complete; compacting only reclaims space, so if it runs out of memory
      // the index stays as it is, correct, and tries again at the next removal.
      try {
        compact();
      } catch (const std::bad_alloc&) {
      }
    }
  }

  /// The top_k documents for `query`, best first; ties go to the earlier added document. Only
  /// documents sharing a term with the query are returned, so there may be fewer than top_k.
  /// The strategy changes the speed, never the answer (see QueryStrategy).
  [[nodiscard]] std::vector<Hit> search(std::string_view query, std::size_t top_k = 10,
                                        QueryStrategy strategy = QueryStrategy::automatic) const {
    if (top_k == 0) throw std::invalid_argument("top_k must be at least 1");
    const Query q = prepare(query);
    TopK top(std::min(top_k, std::max<std::size_t>(size(), 1)));
    if (!q.terms.empty()) {
      if (strategy == QueryStrategy::automatic) strategy = choose_strategy(q);
      if (strategy == QueryStrategy::exhaustive) {
        text::detail::score_every_posting(q, documents(), top);
      } else {
        text::detail::block_max_maxscore(q, documents(), top);
      }
    }
    std::vector<Hit> hits;
    for (const auto& [score, doc] : std::move(top).take_sorted()) hits.push_back({doc_ids_[doc], score});
    return hits;
  }

  /// search() by scoring every posting of every query term: the reference the tests check the
  /// pruned search against, and the baseline its benchmarks measure.
  [[nodiscard]] std::vector<Hit> search_exhaustive(std::string_view query,
                                                   std::size_t top_k = 10) const {
    return search(query, top_k, QueryStrategy::exhaustive);
  }

  /// search() for each query, on num_threads threads (0: every core); results in query order.
  [[nodiscard]] std::vector<std::vector<Hit>> search_batch(std::span<const std::string_view> queries,
                                                           std::size_t top_k = 10,
                                                           std::size_t num_threads = 1) const {
    if (top_k == 0) throw std::invalid_argument("top_k must be at least 1");
    std::vector<std::vector<Hit>> results(queries.size());
    detail::parallel_for(queries.size(), num_threads,
                         [&](std::size_t i) { results[i] = search(queries[i], top_k); });
    return results;
  }

  /// The BM25 score of one document for `query` (0 if they share no term). KeyError if unknown.
  [[nodiscard]] double score(std::string_view query, DocId doc_id) const {
    const text::DocNum doc = doc_num(doc_id);
    const Query q = prepare(query);
    double total = 0;
    for (const auto& t : q.terms) {
      if (const auto tf = frequency_in(*t.list, doc)) total += q.contribution(t, tf, lengths_[doc]);
    }
    return total;
  }

  /// How often `term` occurs in the document. `term` is analysed like query text: one term (a
  /// word the analyser drops, such as a stop word, gives 0); more than one is
  /// std::invalid_argument. KeyError for an unknown document.
  [[nodiscard]] std::uint32_t term_frequency(std::string_view term, DocId doc_id) const {
    const text::DocNum doc = doc_num(doc_id);
    const auto id = single_term_id(term);
    return id ? frequency_in(lists_[*id], doc) : 0;
  }

  /// Number of live documents that contain `term` (analysed as in term_frequency).
  [[nodiscard]] std::uint32_t document_frequency(std::string_view term) const {
    const auto id = single_term_id(term);
    return id ? df_[*id] : 0;
  }

  /// Number of indexed terms of a document (its BM25 length). KeyError for an unknown id.
  [[nodiscard]] std::uint32_t document_length(DocId doc_id) const {
    return lengths_[doc_num(doc_id)];
  }

  /// The live document ids, in the order they were added.
  [[nodiscard]] std::vector<DocId> document_ids() const {
    std::vector<DocId> ids;
    ids.reserve(size());
    for (std::size_t d = 0; d < doc_ids_.size(); ++d) {
      if (!dead_[d]) ids.push_back(doc_ids_[d]);
    }
    return ids;
  }

  [[nodiscard]] InvertedIndexStats stats() const noexcept {
    InvertedIndexStats s;
    s.num_documents = size();
    s.scored_documents = scored_docs_;
    s.num_postings = postings_;
    s.dead_documents = dead_docs_;
    s.total_terms = total_terms_;
    s.avg_doc_length = avg_doc_length();
    for (std::size_t t = 0; t < lists_.size(); ++t) {
      if (df_[t] > 0) ++s.num_terms;
      s.stored_postings += lists_[t].size();
      s.posting_bytes += lists_[t].posting_bytes();
      s.skip_bytes += lists_[t].skip_bytes();
      s.memory_bytes += lists_[t].memory_bytes();
    }
    if (s.stored_postings > 0) {
      const auto n = static_cast<double>(s.stored_postings);
      s.bits_per_posting = 8.0 * static_cast<double>(s.posting_bytes) / n;
      s.bits_per_posting_with_skips =
          8.0 * static_cast<double>(s.posting_bytes + s.skip_bytes) / n;
    }
    s.forward_bytes = forward_.size() + forward_end_.size() * sizeof(std::uint64_t) +
                      forward_count_.size() * sizeof(std::uint32_t);
    s.memory_bytes += forward_.capacity() + forward_end_.capacity() * sizeof(std::uint64_t) +
                      forward_count_.capacity() * sizeof(std::uint32_t) +
                      doc_ids_.capacity() * sizeof(DocId) +
                      lengths_.capacity() * sizeof(std::uint32_t) + dead_.capacity() +
                      df_.capacity() * sizeof(std::uint32_t) +
                      lists_.capacity() * sizeof(text::PostingList) +
                      doc_of_.size() * (sizeof(DocId) + sizeof(text::DocNum) + 2 * sizeof(void*)) +
                      doc_of_.bucket_count() * sizeof(void*);
    for (const auto& [term, id] : term_ids_) {
      s.memory_bytes += term.capacity() + sizeof(std::string) + 3 * sizeof(void*);
    }
    s.memory_bytes += term_ids_.bucket_count() * sizeof(void*);
    s.k1 = config_.k1;
    s.b = config_.b;
    return s;
  }

  /// Rebuilds the lists without the postings of removed documents and renumbers the live
  /// documents; search results do not change. Runs by itself when dead numbers outnumber live.
  void compact() {
    InvertedIndex fresh(config_);
    std::vector<text::DocNum> renumber(doc_ids_.size(), text::kNoMoreDocs);
    for (std::size_t d = 0; d < doc_ids_.size(); ++d) {
      if (dead_[d]) continue;
      renumber[d] = static_cast<text::DocNum>(fresh.doc_ids_.size());
      fresh.doc_ids_.push_back(doc_ids_[d]);
      fresh.lengths_.push_back(lengths_[d]);
      fresh.dead_.push_back(0);
    }
    // Terms keep their relative order; terms with no live posting disappear.
    std::vector<std::uint32_t> new_id(lists_.size(), kNoTerm);
    std::vector<const std::string*> term_of(lists_.size());
    for (const auto& [term, id] : term_ids_) term_of[id] = &term;
    for (std::uint32_t t = 0; t < lists_.size(); ++t) {
      if (df_[t] == 0) continue;
      new_id[t] = static_cast<std::uint32_t>(fresh.lists_.size());
      fresh.term_ids_.emplace(*term_of[t], new_id[t]);
      fresh.lists_.emplace_back();
      fresh.df_.push_back(df_[t]);
      auto& list = fresh.lists_.back();
      text::for_each_posting(lists_[t], [&](text::DocNum doc, std::uint32_t tf) {
        if (renumber[doc] == text::kNoMoreDocs) return;
        list.reserve_one_more();
        list.append(renumber[doc], tf, lengths_[doc]);
      });
      list.shrink_to_fit();
    }
    for (std::size_t d = 0; d < doc_ids_.size(); ++d) {
      if (dead_[d]) continue;
      std::vector<std::pair<std::uint32_t, std::uint32_t>> terms;
      for_each_forward_term(static_cast<text::DocNum>(d), [&](std::uint32_t t) {
        terms.emplace_back(new_id[t], 0);
      });
      fresh.reserve_document(terms);
      fresh.append_forward(terms);
      fresh.doc_of_.emplace(doc_ids_[d], renumber[d]);
    }
    fresh.postings_ = postings_;
    fresh.scored_docs_ = scored_docs_;
    fresh.total_terms_ = total_terms_;
    swap(fresh);
  }

  void swap(InvertedIndex& other) noexcept {
    std::swap(config_, other.config_);
    std::swap(analyzer_, other.analyzer_);
    term_ids_.swap(other.term_ids_);
    lists_.swap(other.lists_);
    df_.swap(other.df_);
    doc_ids_.swap(other.doc_ids_);
    lengths_.swap(other.lengths_);
    dead_.swap(other.dead_);
    forward_.swap(other.forward_);
    forward_end_.swap(other.forward_end_);
    forward_count_.swap(other.forward_count_);
    doc_of_.swap(other.doc_of_);
    std::swap(postings_, other.postings_);
    std::swap(scored_docs_, other.scored_docs_);
    std::swap(dead_docs_, other.dead_docs_);
    std::swap(total_terms_, other.total_terms_);
  }

  // ---- Persistence (inverted_index_io.hpp) ------------------------------------------------------

  static constexpr std::string_view kMagic = "LLMDSINV";
  static constexpr std::uint32_t kFormatVersion = 1;

  /// The index as bytes: magic, version, parameters, documents, then each term with its
  /// compressed postings; a checksum at the end. Removed documents are left out.
  [[nodiscard]] std::string to_bytes() const;

  /// Rebuilds an index from to_bytes() output; std::invalid_argument for anything that is not
  /// a well-formed saved index. Skip entries, impacts, df and the forward lists are rebuilt from
  /// the postings (PostingList::decode_checked), and every posting is checked against the
  /// document lengths. Every count is checked against the bytes left before anything is sized
  /// by it, and a saved index has one spelling: what loads saves back as the same bytes.
  static InvertedIndex from_bytes(std::string_view bytes);

  void save(const std::filesystem::path& path) const { detail::write_file(path, to_bytes()); }
  static InvertedIndex load(const std::filesystem::path& path) {
    return from_bytes(detail::read_file(path));
  }

 private:
  static constexpr std::uint32_t kNoTerm = std::numeric_limits<std::uint32_t>::max();

  using Query = text::detail::Query;
  using QueryTerm = text::detail::QueryTerm;
  using TopK = text::detail::TopK;

  [[nodiscard]] double avg_doc_length() const noexcept {
    return scored_docs_ == 0 ? 0.0
                             : static_cast<double>(total_terms_) / static_cast<double>(scored_docs_);
  }

  [[nodiscard]] double idf(std::uint32_t df) const noexcept {
    const auto n = static_cast<double>(scored_docs_);
    const auto d = static_cast<double>(df);
    return std::log(1.0 + (n - d + 0.5) / (d + 0.5));
  }

  [[nodiscard]] text::DocNum doc_num(DocId doc_id) const {
    const auto it = doc_of_.find(doc_id);
    if (it == doc_of_.end()) throw KeyError(fmt::format("document {} is not indexed", doc_id));
    return it->second;
  }

  [[nodiscard]] std::optional<std::uint32_t> single_term_id(std::string_view text) const {
    const auto terms = analyzer_.analyze(text);
    if (terms.size() > 1) {
      throw std::invalid_argument(fmt::format(
          "'{}' is {} terms after analysis; pass a single term", text, terms.size()));
    }
    if (terms.empty()) {
      if (std::none_of(text.begin(), text.end(), text::is_term_byte)) {
        throw std::invalid_argument(fmt::format("'{}' holds no term", text));
      }
      return std::nullopt;  // a word the analyzer drops, such as a stop word
    }
    const auto it = term_ids_.find(terms.front());
    if (it == term_ids_.end()) return std::nullopt;
    return it->second;
  }

  [[nodiscard]] static std::uint32_t frequency_in(const text::PostingList& list,
                                                  text::DocNum doc) noexcept {
    text::PostingCursor cursor(list);
    cursor.next_geq(doc);
    return cursor.doc() == doc ? cursor.tf() : 0;
  }

  // The analysed query as distinct live terms, each weighted by its count.
  [[nodiscard]] Query prepare(std::string_view query) const {
    std::vector<std::uint32_t> ids;
    analyzer_.for_each_term(query, [&](std::string_view term) {
      if (auto it = term_ids_.find(term); it != term_ids_.end() && df_[it->second] > 0) {
        ids.push_back(it->second);
      }
    });
    std::sort(ids.begin(), ids.end());
    Query q;
    const double avgdl = avg_doc_length();
    q.c1 = config_.k1 * (1 - config_.b);
    q.c2 = avgdl > 0 ? config_.k1 * config_.b / avgdl : 0.0;
    for (std::size_t i = 0; i < ids.size();) {
      std::size_t j = i;
      while (j < ids.size() && ids[j] == ids[i]) ++j;
      q.terms.push_back(QueryTerm{&lists_[ids[i]], static_cast<double>(j - i) * idf(df_[ids[i]]) *
                                                       (config_.k1 + 1)});
      i = j;
    }
    return q;
  }

  // The cheaper way to the same answer (text/detail/maxscore.hpp).
  [[nodiscard]] QueryStrategy choose_strategy(const Query& q) const noexcept {
    return text::detail::exhaustive_is_cheaper(q, doc_ids_.size()) ? QueryStrategy::exhaustive
                                                                     : QueryStrategy::block_max_maxscore;
  }

  [[nodiscard]] text::detail::Documents documents() const noexcept { return {lengths_, dead_}; }

  static std::vector<std::pair<std::uint32_t, std::uint32_t>> merge_runs(
      const std::vector<std::pair<std::uint32_t, std::uint32_t>>& sorted) {
    std::vector<std::pair<std::uint32_t, std::uint32_t>> merged;
    for (const auto& [id, n] : sorted) {
      if (!merged.empty() && merged.back().first == id) {
        merged.back().second += n;
      } else {
        merged.emplace_back(id, n);
      }
    }
    return merged;
  }

  // Per-document arrays: room for one more document with these (sorted) terms.
  void reserve_document(const std::vector<std::pair<std::uint32_t, std::uint32_t>>& terms) {
    detail::reserve_room(doc_ids_, 1);
    detail::reserve_room(lengths_, 1);
    detail::reserve_room(dead_, 1);
    detail::reserve_room(forward_end_, 1);
    detail::reserve_room(forward_count_, 1);
    detail::reserve_room(forward_, 5 * terms.size());
  }

  // Appends the forward list; cannot throw after reserve_document(terms).
  void append_forward(const std::vector<std::pair<std::uint32_t, std::uint32_t>>& terms) {
    std::uint32_t previous = 0;
    for (const auto& [id, tf] : terms) {
      detail::encode_varint(id - previous, forward_);
      previous = id;
    }
    forward_end_.push_back(forward_.size());
    forward_count_.push_back(static_cast<std::uint32_t>(terms.size()));
  }

  void append_document(DocId doc_id, std::uint32_t length,
                       const std::vector<std::pair<std::uint32_t, std::uint32_t>>& terms) {
    doc_ids_.push_back(doc_id);
    lengths_.push_back(length);
    dead_.push_back(0);
    append_forward(terms);
  }

  template <class OnTerm>
  void for_each_forward_term(text::DocNum doc, OnTerm&& on_term) const {
    const std::uint8_t* p = forward_.data() + (doc == 0 ? 0 : forward_end_[doc - 1]);
    std::uint32_t id = 0;
    for (std::uint32_t i = 0; i < forward_count_[doc]; ++i) {
      id += static_cast<std::uint32_t>(detail::decode_varint(p));
      on_term(id);
    }
  }

  InvertedIndexConfig config_;
  text::Analyzer analyzer_;
  std::unordered_map<std::string, std::uint32_t, detail::TransparentStringHash, std::equal_to<>> term_ids_;
  std::vector<text::PostingList> lists_;  // by term id
  std::vector<std::uint32_t> df_;         // live documents per term id
  // Per internal document number:
  std::vector<DocId> doc_ids_;
  std::vector<std::uint32_t> lengths_;
  std::vector<std::uint8_t> dead_;
  std::vector<std::uint8_t> forward_;             // sorted term ids as varint gaps
  std::vector<std::uint64_t> forward_end_;        // where each document's list ends in forward_
  std::vector<std::uint32_t> forward_count_;      // distinct terms per document
  std::unordered_map<DocId, text::DocNum> doc_of_;  // live documents only
  std::size_t postings_ = 0;      // live postings
  std::size_t scored_docs_ = 0;   // live documents with at least one term: BM25's N
  std::size_t dead_docs_ = 0;
  std::uint64_t total_terms_ = 0;  // sum of live lengths
};

}  // namespace llmds

// The members above that save and load the index.
#include "llmds/text/inverted_index_io.hpp"
