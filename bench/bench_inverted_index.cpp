// InvertedIndex and its parts: the analyzer (with and without stop words + Porter), indexing,
// and top-10 BM25 search by block-max MaxScore against scoring every posting.
//   build/cpp/bench/bench_inverted_index
// The corpus is synthetic, so no data is needed: words drawn from a Zipf(1.1) law over a 50,000
// word vocabulary (the shape of natural-language term frequencies), documents of 50-250 words,
// queries of 2, 8 or 32 words drawn from the same law.
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "llmds/text/analyzer.hpp"
#include "llmds/text/inverted_index.hpp"
#include "llmds/text/porter_stemmer.hpp"

namespace {

// Time per item, printed as a duration (e.g. "20n" is 20 ns per term).
benchmark::Counter per_item(double items) {
  return benchmark::Counter(items, benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

// Pronounceable, stemmable words: a root and a common English suffix.
std::vector<std::string> make_vocabulary(std::size_t n) {
  static const char* suffixes[] = {"", "s", "ing", "ed", "ation", "ness", "ly", "er", "ional", "ize"};
  std::mt19937_64 rng(1);
  std::vector<std::string> words;
  const std::string consonants = "bcdfghklmnprstvw";
  const std::string vowels = "aeiou";
  while (words.size() < n) {
    std::string w;
    const int syllables = 1 + static_cast<int>(rng() % 3);
    for (int s = 0; s < syllables; ++s) {
      w += consonants[rng() % consonants.size()];
      w += vowels[rng() % vowels.size()];
      w += consonants[rng() % consonants.size()];
    }
    w += suffixes[rng() % 10];
    words.push_back(std::move(w));
  }
  return words;
}

class ZipfText {
 public:
  ZipfText(std::size_t vocabulary, std::uint64_t seed) : words_(make_vocabulary(vocabulary)), rng_(seed) {
    std::vector<double> w(vocabulary);
    for (std::size_t r = 0; r < vocabulary; ++r) w[r] = 1.0 / std::pow(double(r + 1), 1.1);
    pick_ = std::discrete_distribution<std::size_t>(w.begin(), w.end());
  }
  std::string text(std::size_t words) {
    std::string t;
    for (std::size_t i = 0; i < words; ++i) {
      t += words_[pick_(rng_)];
      t += ' ';
    }
    return t;
  }
  std::mt19937_64& rng() { return rng_; }

 private:
  std::vector<std::string> words_;
  std::mt19937_64 rng_;
  std::discrete_distribution<std::size_t> pick_;
};

llmds::InvertedIndexConfig config(bool english) {
  llmds::InvertedIndexConfig c;
  if (english) c.analyzer = llmds::text::AnalyzerConfig::english();
  return c;
}

// Analysis of a 10,000-word text; arg: 0 default analyzer, 1 English stop words + Porter.
void BM_Analyze(benchmark::State& state) {
  ZipfText gen(50'000, 2);
  const std::string text = gen.text(10'000);
  const llmds::text::Analyzer analyzer(state.range(0) ? llmds::text::AnalyzerConfig::english()
                                                      : llmds::text::AnalyzerConfig{});
  std::size_t terms = 0;
  for (auto _ : state) {
    analyzer.for_each_term(text, [&](std::string_view t) { terms += t.size() > 0; });
  }
  benchmark::DoNotOptimize(terms);
  state.counters["per_word"] = per_item(double(state.iterations()) * 10'000);
}

void BM_PorterStem(benchmark::State& state) {
  const auto words = make_vocabulary(10'000);
  std::string buffer;
  buffer.reserve(64);
  for (auto _ : state) {
    for (const auto& w : words) {
      buffer.assign(w);
      llmds::text::porter_stem_in_place(buffer);
      benchmark::DoNotOptimize(buffer.data());
    }
  }
  state.counters["per_word"] = per_item(double(state.iterations()) * double(words.size()));
}

// Indexing range(0) documents of 50-250 words (default analyzer).
void BM_AddDocuments(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  ZipfText gen(50'000, 3);
  std::vector<std::string> docs;
  for (std::size_t i = 0; i < n; ++i) docs.push_back(gen.text(50 + gen.rng()() % 201));
  for (auto _ : state) {
    llmds::InvertedIndex index(config(false));
    for (std::size_t i = 0; i < n; ++i) index.add_document(static_cast<std::int64_t>(i), docs[i]);
    benchmark::DoNotOptimize(index.size());
  }
  state.counters["per_doc"] = per_item(double(state.iterations()) * double(n));
}

// Top-10 search over range(0) documents with queries of range(1) words; range(2): the
// QueryStrategy (0 automatic, 1 block-max MaxScore, 2 every posting).
void BM_Search(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const auto words = static_cast<std::size_t>(state.range(1));
  const auto strategy = static_cast<llmds::QueryStrategy>(state.range(2));
  ZipfText gen(50'000, 4);
  llmds::InvertedIndex index(config(false));
  for (std::size_t i = 0; i < n; ++i) index.add_document(static_cast<std::int64_t>(i), gen.text(50 + gen.rng()() % 201));
  std::vector<std::string> queries;
  for (int q = 0; q < 200; ++q) queries.push_back(gen.text(words));
  std::size_t i = 0;
  for (auto _ : state) {
    const auto& q = queries[i++ % queries.size()];
    auto hits = index.search(q, 10, strategy);
    benchmark::DoNotOptimize(hits.data());
  }
  const auto s = index.stats();
  state.counters["bits_per_posting"] = s.bits_per_posting;
  state.counters["postings"] = double(s.stored_postings);
}

}  // namespace

BENCHMARK(BM_Analyze)->Arg(0)->Arg(1);
BENCHMARK(BM_PorterStem);
BENCHMARK(BM_AddDocuments)->Arg(1000)->Arg(20000)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Search)->ArgsProduct({{1000, 100000}, {2, 8, 32}, {0, 1, 2}})->Unit(benchmark::kMicrosecond);

BENCHMARK_MAIN();
