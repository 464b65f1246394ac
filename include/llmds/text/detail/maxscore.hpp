// The query machinery of InvertedIndex (text/inverted_index.hpp): a query prepared for BM25
// scoring, and the two ways of finding its top k, which always agree: scoring every posting, and
// block-max MaxScore (Turtle and Flood's MaxScore with the block-max bounds of Ding and Suel;
// the index's header essay explains it), with the cost model that picks between them.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "llmds/detail/top_k.hpp"
#include "llmds/text/posting_list.hpp"

namespace llmds::text::detail {

// One distinct query term: its list and the factor qtf * idf * (k1 + 1).
struct QueryTerm {
  const PostingList* list;
  double weight;
};

// A query ready to score: its terms and the length normalisation k1 * (1 - b + b * dl / avgdl)
// as c1 + c2 * dl.
struct Query {
  std::vector<QueryTerm> terms;
  double c1 = 0;
  double c2 = 0;

  [[nodiscard]] double contribution(const QueryTerm& t, std::uint32_t tf,
                                    std::uint32_t dl) const noexcept {
    const auto f = static_cast<double>(tf);
    return t.weight * f / (f + c1 + c2 * static_cast<double>(dl));
  }
};

// A scored document; the better of two has the higher score, ties going to the earlier
// document. Documents are offered in increasing order, so a newcomer tied with the worst kept
// one loses, as in Lucene.
using Scored = std::pair<double, DocNum>;
struct ScoredBetter {
  bool operator()(const Scored& a, const Scored& b) const noexcept {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  }
};
using TopK = llmds::detail::TopK<Scored, ScoredBetter>;

// The score a candidate must beat: the k-th best so far, or 0 until k are kept (every
// match scores above 0).
inline double threshold(const TopK& top) noexcept { return top.full() ? top.worst().first : 0.0; }

// What the scorers read of each document, by internal number: its BM25 length and whether
// it has been removed.
struct Documents {
  std::span<const std::uint32_t> lengths;
  std::span<const std::uint8_t> dead;
};

// Block-max MaxScore does O(query terms) work per candidate document and wins by skipping;
// scoring every posting does O(1) work per posting plus one pass over an accumulator of every
// document. So a long query whose lists cover much of the collection (an abstract used as a
// query) is cheaper to score exhaustively, and a short query over long lists is cheaper to
// prune. The factor 2 is where the two cost the same in bench_inverted_index (BM_Search).
// Whether scoring every posting beats block-max MaxScore for q over num_docs documents.
[[nodiscard]] inline bool exhaustive_is_cheaper(const Query& q, std::size_t num_docs) noexcept {
  std::size_t postings = 0;
  for (const auto& t : q.terms) postings += t.list->size();
  const std::size_t candidate_work = q.terms.size() * std::min(num_docs, postings);
  return candidate_work > 2 * (postings + num_docs);
}

// Offers top every live document that shares a term with q, scored from every posting: the
// reference the pruned search is tested against.
inline void score_every_posting(const Query& q, const Documents& docs, TopK& top) {
  std::vector<double> acc(docs.lengths.size(), 0.0);
  for (const auto& t : q.terms) {
    for_each_posting(*t.list, [&](DocNum doc, std::uint32_t tf) {
      acc[doc] += q.contribution(t, tf, docs.lengths[doc]);
    });
  }
  for (std::size_t d = 0; d < acc.size(); ++d) {
    if (acc[d] > 0 && !docs.dead[d]) top.offer({acc[d], static_cast<DocNum>(d)});
  }
}

// Block-max MaxScore; see the header essay. Bounds are compared with a relative slack far
// above rounding error, so that a document is only skipped when it certainly cannot enter.
// A document's final score is summed in the query's term order, as score_every_posting sums
// it, so that both give bit-identical scores.
inline void block_max_maxscore(const Query& q, const Documents& docs, TopK& top) {
  const std::size_t n = q.terms.size();
  struct Term {
    std::size_t position;  // in q.terms
    PostingCursor cursor;
    std::vector<double> block_max;
    double list_max;
  };
  std::vector<Term> terms;
  terms.reserve(n);
  for (std::size_t position = 0; position < n; ++position) {
    const QueryTerm& t = q.terms[position];
    const auto blocks = t.list->blocks();
    std::vector<double> block_max(blocks.size(), 0.0);
    double list_max = 0;
    for (std::size_t b = 0; b < blocks.size(); ++b) {
      for (const auto& impact : t.list->impacts(b)) {
        block_max[b] = std::max(block_max[b], q.contribution(t, impact.tf, impact.doc_length));
      }
      list_max = std::max(list_max, block_max[b]);
    }
    terms.push_back(Term{position, PostingCursor(*t.list), std::move(block_max), list_max});
  }
  std::sort(terms.begin(), terms.end(),
            [](const Term& a, const Term& b) { return a.list_max < b.list_max; });
  std::vector<double> prefix(n);  // prefix[i]: sum of list_max over terms 0..i
  double sum = 0;
  for (std::size_t i = 0; i < n; ++i) prefix[i] = sum += terms[i].list_max;

  constexpr double slack = 1e-9;
  auto cannot_enter = [&](double bound) {
    return top.full() && bound * (1 + slack) < threshold(top);
  };
  std::size_t essential = 0;  // terms[essential..n) are essential
  std::vector<double> block_bound(n);
  std::vector<double> parts(n);  // this document's contribution of each term, by position
  while (essential < n) {
    DocNum doc = kNoMoreDocs;
    for (std::size_t i = essential; i < n; ++i) doc = std::min(doc, terms[i].cursor.doc());
    if (doc == kNoMoreDocs) break;
    const bool live = docs.dead[doc] == 0;
    const std::uint32_t dl = docs.lengths[doc];
    std::fill(parts.begin(), parts.end(), 0.0);
    double score = 0;
    for (std::size_t i = essential; i < n; ++i) {
      auto& c = terms[i].cursor;
      if (c.doc() != doc) continue;
      if (live) {
        const double part = q.contribution(q.terms[terms[i].position], c.tf(), dl);
        parts[terms[i].position] = part;
        score += part;
      }
      c.next();
    }
    if (!live) continue;
    double rest = 0;  // what the non-essential terms could still add, by block maxima
    for (std::size_t i = 0; i < essential; ++i) {
      const std::size_t b = terms[i].cursor.block_of(doc);
      block_bound[i] = b < terms[i].block_max.size() ? terms[i].block_max[b] : 0.0;
      rest += block_bound[i];
    }
    bool pruned = cannot_enter(score + rest);
    for (std::size_t i = essential; i-- > 0 && !pruned;) {
      auto& c = terms[i].cursor;
      c.next_geq(doc);
      if (c.doc() == doc) {
        const double part = q.contribution(q.terms[terms[i].position], c.tf(), dl);
        parts[terms[i].position] = part;
        score += part;
      }
      rest -= block_bound[i];
      pruned = cannot_enter(score + rest);
    }
    if (pruned) continue;
    double final_score = 0;
    for (const double part : parts) final_score += part;
    if (top.offer({final_score, doc})) {
      while (essential < n && cannot_enter(prefix[essential])) ++essential;
    }
  }
}

}  // namespace llmds::text::detail
