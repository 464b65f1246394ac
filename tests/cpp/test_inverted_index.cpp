#include "llmds/text/inverted_index.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "saved_bytes.hpp"

namespace {

using llmds::InvertedIndex;
using llmds::InvertedIndexConfig;
using Hits = std::vector<InvertedIndex::Hit>;

// The reference model: documents as term lists, BM25 computed from its definition on every call.
class NaiveBm25 {
 public:
  NaiveBm25(double k1, double b) : k1_(k1), b_(b) {}

  void add(std::int64_t id, std::vector<std::string> terms) {
    order_.push_back(id);
    docs_[id] = std::move(terms);
  }
  void remove(std::int64_t id) {
    docs_.erase(id);
    order_.erase(std::find(order_.begin(), order_.end(), id));
  }

  /// Every matching document, best first, ties to the earlier added one.
  [[nodiscard]] Hits ranking(const std::vector<std::string>& query) const {
    double n = 0;
    double total = 0;
    for (const auto& [_, terms] : docs_) {
      if (!terms.empty()) ++n;
      total += static_cast<double>(terms.size());
    }
    const double avgdl = total / n;
    std::map<std::string, double> df;
    for (const auto& term : query) {
      df[term] = 0;
      for (const auto& [_, terms] : docs_) {
        if (std::find(terms.begin(), terms.end(), term) != terms.end()) ++df[term];
      }
    }
    Hits hits;
    for (auto id : order_) {
      const auto& doc = docs_.at(id);
      const auto dl = static_cast<double>(doc.size());
      double s = 0;
      for (const auto& term : query) {
        const auto tf = static_cast<double>(std::count(doc.begin(), doc.end(), term));
        if (tf == 0) continue;
        const double idf = std::log(1 + (n - df[term] + 0.5) / (df[term] + 0.5));
        s += idf * tf * (k1_ + 1) / (tf + k1_ * (1 - b_ + b_ * dl / avgdl));
      }
      if (s > 0) hits.push_back({id, s});
    }
    std::stable_sort(hits.begin(), hits.end(),
                     [](const auto& a, const auto& b) { return a.score > b.score; });
    return hits;
  }

  [[nodiscard]] const std::map<std::int64_t, std::vector<std::string>>& docs() const { return docs_; }

 private:
  double k1_;
  double b_;
  std::map<std::int64_t, std::vector<std::string>> docs_;
  std::vector<std::int64_t> order_;
};

InvertedIndexConfig bm25(double k1, double b,
                         llmds::text::AnalyzerConfig analyzer = {}) {
  InvertedIndexConfig config;
  config.k1 = k1;
  config.b = b;
  config.analyzer = std::move(analyzer);
  return config;
}

std::string join(const std::vector<std::string>& terms) {
  std::string text;
  for (const auto& t : terms) text += t + " ";
  return text;
}

// A ranking matches the model if the scores agree and the documents agree wherever the score is
// not tied with a neighbour closer than rounding (the order of exact ties is the model's).
void expect_same_ranking(const Hits& got, const Hits& want, std::size_t k, const std::string& what) {
  ASSERT_EQ(got.size(), std::min(k, want.size())) << what;
  for (std::size_t i = 0; i < got.size(); ++i) {
    EXPECT_NEAR(got[i].score, want[i].score, 1e-9 * want[i].score) << what << " rank " << i;
    const bool near_tie = (i > 0 && std::abs(want[i - 1].score - want[i].score) < 1e-9) ||
                          (i + 1 < want.size() && std::abs(want[i + 1].score - want[i].score) < 1e-9);
    if (!near_tie) {
      EXPECT_EQ(got[i].doc_id, want[i].doc_id) << what << " rank " << i;
    }
  }
}

TEST(Analyzer, DefaultTermsAreLowerCasedAsciiAlphanumericRuns) {
  const llmds::text::Analyzer analyzer;
  EXPECT_EQ(analyzer.analyze("Hello, WORLD! caf\xc3\xa9 x2y -42- the"),
            (std::vector<std::string>{"hello", "world", "caf", "x2y", "42", "the"}));
  EXPECT_TRUE(analyzer.analyze("  ,;: \xc3\xa9 ").empty());
}

TEST(Analyzer, EnglishDropsLuceneStopWordsThenStems) {
  const llmds::text::Analyzer analyzer(llmds::text::AnalyzerConfig::english());
  EXPECT_EQ(llmds::text::english_stop_words().size(), 33U);
  EXPECT_EQ(analyzer.analyze("The running dogs are NOT in their houses"),
            (std::vector<std::string>{"run", "dog", "hous"}));
}

TEST(Analyzer, RefusesStopWordsThatAreNotSingleTerms) {
  llmds::text::AnalyzerConfig config;
  config.stop_words = {"two words"};
  EXPECT_THROW(llmds::text::Analyzer{config}, std::invalid_argument);
  config.stop_words = {"Upper"};
  EXPECT_THROW(llmds::text::Analyzer{config}, std::invalid_argument);
}

TEST(InvertedIndex, ScoresAreLuceneBm25WithExactLengths) {
  InvertedIndex index;
  index.add_document(10, "apple banana apple");
  index.add_document(20, "banana cherry");
  index.add_document(30, "cherry cherry cherry durian");
  index.add_document(40, "");  // no terms: not part of N or avgdl, as in Lucene
  const double n = 3;
  const double avgdl = (3 + 2 + 4) / n;
  const double k1 = 1.2;
  const double b = 0.75;
  auto term = [&](double tf, double df, double dl) {
    return std::log(1 + (n - df + 0.5) / (df + 0.5)) * tf * (k1 + 1) /
           (tf + k1 * (1 - b + b * dl / avgdl));
  };
  const Hits hits = index.search("banana APPLE", 10);
  ASSERT_EQ(hits.size(), 2U);
  EXPECT_EQ(hits[0].doc_id, 10);
  EXPECT_NEAR(hits[0].score, term(2, 1, 3) + term(1, 2, 3), 1e-12);
  EXPECT_EQ(hits[1].doc_id, 20);
  EXPECT_NEAR(hits[1].score, term(1, 2, 2), 1e-12);
  // A repeated query term counts once per repeat.
  EXPECT_NEAR(index.score("banana banana", 20), 2 * term(1, 2, 2), 1e-12);
  EXPECT_EQ(index.score("zebra", 20), 0.0);
  EXPECT_EQ(index.term_frequency("cherry", 30), 3U);
  EXPECT_EQ(index.term_frequency("Cherry!", 10), 0U);
  EXPECT_EQ(index.term_frequency("zebra", 10), 0U);
  EXPECT_EQ(index.document_frequency("banana"), 2U);
  EXPECT_EQ(index.document_frequency("zebra"), 0U);
  EXPECT_EQ(index.document_length(30), 4U);
  EXPECT_EQ(index.document_length(40), 0U);
  EXPECT_TRUE(index.search("zebra").empty());
  EXPECT_TRUE(index.search("").empty());
  const auto s = index.stats();
  EXPECT_EQ(s.num_documents, 4U);
  EXPECT_EQ(s.scored_documents, 3U);
  EXPECT_EQ(s.num_terms, 4U);
  EXPECT_EQ(s.num_postings, 6U);
  EXPECT_DOUBLE_EQ(s.avg_doc_length, avgdl);
}

TEST(InvertedIndex, TiesGoToTheEarlierAddedDocument) {
  InvertedIndex index;
  for (std::int64_t id : {5, 3, 9, 1}) index.add_document(id, "same words here");
  const Hits hits = index.search("words", 3);
  ASSERT_EQ(hits.size(), 3U);
  EXPECT_EQ(hits[0].doc_id, 5);
  EXPECT_EQ(hits[1].doc_id, 3);
  EXPECT_EQ(hits[2].doc_id, 9);
  EXPECT_EQ(index.search_exhaustive("words", 3), hits);
}

TEST(InvertedIndex, ErrorsLeaveTheIndexUnchanged) {
  InvertedIndex index;
  index.add_document(1, "alpha beta");
  const std::string before = index.to_bytes();
  EXPECT_THROW(index.add_document(1, "gamma delta"), std::invalid_argument);
  EXPECT_THROW(index.remove_document(2), llmds::KeyError);
  EXPECT_THROW((void)index.search("alpha", 0), std::invalid_argument);
  EXPECT_THROW((void)index.term_frequency("alpha", 2), llmds::KeyError);
  EXPECT_THROW((void)index.term_frequency("alpha beta", 1), std::invalid_argument);
  EXPECT_THROW((void)index.term_frequency("!!", 1), std::invalid_argument);
  EXPECT_THROW((void)index.document_length(7), llmds::KeyError);
  EXPECT_THROW((void)index.score("alpha", 7), llmds::KeyError);
  EXPECT_EQ(index.to_bytes(), before);
  EXPECT_EQ(index.document_frequency("gamma"), 0U);

  EXPECT_THROW(InvertedIndex(bm25(-1, 0.75)), std::invalid_argument);
  EXPECT_THROW(InvertedIndex(bm25(1.2, 1.5)), std::invalid_argument);
  EXPECT_THROW(InvertedIndex(bm25(NAN, 0.75)), std::invalid_argument);
}

TEST(InvertedIndex, RemovedDocumentsLeaveTheStatisticsAtOnce) {
  InvertedIndex index;
  index.add_document(1, "common rare");
  index.add_document(2, "common");
  index.add_document(3, "common other words");
  index.remove_document(1);
  InvertedIndex fresh;
  fresh.add_document(2, "common");
  fresh.add_document(3, "common other words");
  EXPECT_EQ(index.search("common rare other"), fresh.search("common rare other"));
  EXPECT_EQ(index.document_frequency("rare"), 0U);
  EXPECT_FALSE(index.contains(1));
  EXPECT_THROW(index.remove_document(1), llmds::KeyError);
  index.add_document(1, "back again");  // an id may return after removal
  EXPECT_EQ(index.search("again").front().doc_id, 1);
}

TEST(InvertedIndex, CompactionRunsOnceDeadDocumentsOutnumberLiveOnes) {
  InvertedIndex index;
  for (std::int64_t id = 0; id < 10; ++id) index.add_document(id, "word " + std::to_string(id));
  for (std::int64_t id = 0; id < 5; ++id) index.remove_document(id);
  EXPECT_EQ(index.stats().dead_documents, 5U);
  EXPECT_EQ(index.stats().stored_postings, 20U);
  index.remove_document(5);
  EXPECT_EQ(index.stats().dead_documents, 0U);
  EXPECT_EQ(index.stats().stored_postings, 8U);
  EXPECT_EQ(index.stats().num_terms, 5U);
  EXPECT_EQ(index.document_ids(), (std::vector<std::int64_t>{6, 7, 8, 9}));
  EXPECT_EQ(index.search("word 7", 2).front().doc_id, 7);
}

// Random collections with a skewed vocabulary, so that some lists span many blocks, changed by
// random adds and removals, queried with random terms: search and search_exhaustive must give
// the model's ranking.
TEST(InvertedIndex, RandomisedAgainstTheReferenceModel) {
  std::mt19937_64 rng(20261123);
  for (int round = 0; round < 6; ++round) {
    const double k1 = round == 5 ? 0.0 : std::uniform_real_distribution<double>(0.5, 2.0)(rng);
    const double b = round == 4 ? 1.0 : std::uniform_real_distribution<double>(0.0, 1.0)(rng);
    InvertedIndex index(bm25(k1, b));
    NaiveBm25 model(k1, b);
    const int vocabulary = 40 + 30 * round;
    std::vector<double> weights;
    for (int t = 0; t < vocabulary; ++t) weights.push_back(1.0 / (1 + t));
    std::discrete_distribution<int> pick_term(weights.begin(), weights.end());
    auto random_terms = [&](int max_len) {
      std::vector<std::string> terms(std::uniform_int_distribution<int>(0, max_len)(rng));
      for (auto& t : terms) t = "t" + std::to_string(pick_term(rng));
      return terms;
    };
    std::vector<std::int64_t> live;
    std::int64_t next_id = 1000;
    for (int step = 0; step < 700; ++step) {
      if (!live.empty() && rng() % 6 == 0) {
        const auto at = rng() % live.size();
        index.remove_document(live[at]);
        model.remove(live[at]);
        live.erase(live.begin() + static_cast<std::ptrdiff_t>(at));
      } else {
        const auto terms = random_terms(30);
        const std::int64_t id = next_id++ * (rng() % 2 ? 1 : -1);
        index.add_document(id, join(terms));
        model.add(id, terms);
        live.push_back(id);
      }
      if (step % 50 == 49) {
        for (int q = 0; q < 10; ++q) {
          const auto query = random_terms(8);
          const std::size_t k = 1 + rng() % 20;
          const Hits want = model.ranking(query);
          const std::string what = "round " + std::to_string(round) + " query '" + join(query) + "'";
          const Hits got = index.search(join(query), k, llmds::QueryStrategy::block_max_maxscore);
          expect_same_ranking(got, want, k, what);
          EXPECT_EQ(index.search_exhaustive(join(query), k), got) << what;
          EXPECT_EQ(index.search(join(query), k), got) << what;
        }
        for (const auto& [id, terms] : model.docs()) {
          const std::string t = terms.empty() ? "t0" : terms.front();
          EXPECT_EQ(index.term_frequency(t, id),
                    static_cast<std::uint32_t>(std::count(terms.begin(), terms.end(), t)));
          EXPECT_EQ(index.document_length(id), terms.size());
        }
      }
    }
    EXPECT_EQ(index.size(), live.size());
    const InvertedIndex loaded = InvertedIndex::from_bytes(index.to_bytes());
    for (int q = 0; q < 20; ++q) {
      const auto query = join(random_terms(6));
      EXPECT_EQ(loaded.search(query, 10), index.search(query, 10)) << query;
    }
  }
}

TEST(InvertedIndex, RoundTripsThroughBytesAndRefusesDamage) {
  const InvertedIndexConfig config = bm25(0.9, 0.4, llmds::text::AnalyzerConfig::english());
  InvertedIndex index(config);
  for (std::int64_t id = 0; id < 300; ++id) {
    index.add_document(id, "the flows of " + std::to_string(id % 7) + " boundary layers and flow " +
                               std::to_string(id));
  }
  index.remove_document(17);
  const std::string bytes = index.to_bytes();
  const InvertedIndex loaded = InvertedIndex::from_bytes(bytes);
  EXPECT_EQ(loaded.config().k1, 0.9);
  EXPECT_EQ(loaded.config().analyzer, config.analyzer);
  EXPECT_EQ(loaded.size(), 299U);
  EXPECT_FALSE(loaded.contains(17));
  EXPECT_EQ(loaded.search("boundary flow 3", 20), index.search("boundary flow 3", 20));
  EXPECT_EQ(loaded.stats().num_postings, index.stats().num_postings);

  std::string damaged = bytes;
  damaged[bytes.size() / 2] ^= 0x20;
  EXPECT_THROW((void)InvertedIndex::from_bytes(damaged), std::invalid_argument);
  EXPECT_THROW((void)InvertedIndex::from_bytes(bytes.substr(0, bytes.size() - 9)), std::invalid_argument);
  EXPECT_THROW((void)InvertedIndex::from_bytes("LLMDSHNS and more bytes than a header"), std::invalid_argument);
  EXPECT_EQ(InvertedIndex::from_bytes(InvertedIndex().to_bytes()).size(), 0U);
}

TEST(InvertedIndex, DensePostingsOfFrequencyOneTakeOneByte) {
  InvertedIndex index;
  for (std::int64_t id = 0; id < 5000; ++id) index.add_document(id, "common words w" + std::to_string(id % 50));
  const auto s = index.stats();
  EXPECT_EQ(s.stored_postings, 15000U);
  // Small gaps and tf 1: one byte per posting.
  EXPECT_DOUBLE_EQ(s.bits_per_posting, 8.0);
  EXPECT_LT(s.bits_per_posting_with_skips, 9.5);
  index.add_document(5000, "common common common");  // tf > 1 costs a second byte
  EXPECT_EQ(index.stats().posting_bytes, s.posting_bytes + 2);
}

}  // namespace

TEST(PostingList, DecodeCheckedRebuildsWhatAppendWroteAndRefusesAnythingElse) {
  using llmds::text::PostingList;
  auto length_of = [](llmds::text::DocNum d) { return d % 7 + 1; };
  PostingList list;
  for (llmds::text::DocNum d = 3; d < 1000; d += 3) {
    list.reserve_one_more();
    list.append(d, d % 5 == 0 ? 4 : 1, length_of(d));
  }
  const std::vector<std::uint8_t> bytes(list.bytes().begin(), list.bytes().end());
  std::size_t seen = 0;
  const PostingList copy = PostingList::decode_checked(bytes, list.size(), 1000, length_of,
                                                       [&](llmds::text::DocNum, std::uint32_t) { ++seen; });
  EXPECT_EQ(seen, list.size());
  EXPECT_TRUE(std::ranges::equal(copy.bytes(), list.bytes()));
  ASSERT_EQ(copy.blocks().size(), list.blocks().size());
  for (std::size_t b = 0; b < list.blocks().size(); ++b) EXPECT_TRUE(std::ranges::equal(copy.impacts(b), list.impacts(b)));

  auto decode = [&](std::vector<std::uint8_t> b, std::uint64_t count, std::uint64_t num_docs) {
    return PostingList::decode_checked(b, count, num_docs, length_of, [](llmds::text::DocNum, std::uint32_t) {});
  };
  EXPECT_EQ(decode({0x01, 0x04, 0x03}, 2, 10).size(), 2u);  // doc 0 tf 1, doc 3 tf 3
  EXPECT_THROW((void)decode({0x81, 0x00}, 1, 10), std::invalid_argument);        // overlong varint
  EXPECT_THROW((void)decode({0x13}, 1, 9), std::invalid_argument);               // doc 9 of 9
  EXPECT_THROW((void)decode({0x00, 0x01}, 1, 10), std::invalid_argument);        // tf 1 without the flag
  EXPECT_THROW((void)decode({0x00, 0x00}, 1, 10), std::invalid_argument);        // tf 0
  EXPECT_THROW((void)decode({0x01, 0x01}, 1, 10), std::invalid_argument);        // a byte left over
  EXPECT_THROW((void)decode({0x01}, 2, 10), std::invalid_argument);              // a posting missing
  EXPECT_THROW((void)decode({0x01}, std::uint64_t{1} << 40, 10), std::invalid_argument);
  EXPECT_THROW((void)decode({0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F}, 1, 10),
               std::invalid_argument);  // past 64 bits
}

TEST(InvertedIndex, ASavedIndexSavesBackAsTheSameBytesAndRefusesOtherSpellings) {
  InvertedIndex index;
  index.add_document(5, "alpha beta beta");
  index.add_document(9, "beta gamma");
  const std::string bytes = index.to_bytes();
  EXPECT_EQ(InvertedIndex::from_bytes(bytes).to_bytes(), bytes);
  // The analyzer's stem flag (offset 28) is 0 or 1.
  std::string flag = bytes;
  flag[28] = 2;
  EXPECT_THROW((void)InvertedIndex::from_bytes(llmds::test::resealed(flag)), std::invalid_argument);
  // "gamma" is the last term: its one posting (doc 1, tf 1) is the byte 0x03 before the
  // checksum, preceded by the list's length 1. Spelled 0x83 0x00 it is the same posting, but
  // not the spelling the index writes: refused, so that every saved index has one spelling.
  std::string overlong = bytes.substr(0, bytes.size() - 8 - 9);
  ASSERT_EQ(overlong.substr(overlong.size() - 13), std::string("gamma\x01\0\0\0\0\0\0\0", 13));
  overlong += std::string("\x02\0\0\0\0\0\0\0\x83\x00", 10) + std::string(8, '\0');
  EXPECT_THROW((void)InvertedIndex::from_bytes(llmds::test::resealed(overlong)), std::invalid_argument);
  // A count of stop words, documents or terms beyond the bytes left is refused as truncated.
  std::string stop = bytes;
  stop[29 + 5] = 1;  // 2^40 stop words
  EXPECT_THROW((void)InvertedIndex::from_bytes(llmds::test::resealed(stop)), std::invalid_argument);
}
