// Analyzer: how text becomes the terms that the inverted index stores and a query looks up.
//
// The default is deliberately plain, so that anyone can reproduce it in a line of any language:
// a term is a maximal run of ASCII letters and digits, lower-cased. Every other byte separates
// terms, including every byte of a multi-byte UTF-8 character ("café" gives "caf"). There is no
// stemming and no stop-word list by default.
//
// Two options, both applied after lower-casing and in this order:
// - stop_words: terms dropped before anything else sees them. english_stop_words() is Lucene's
//   EnglishAnalyzer list of 33 words, the list the reference BM25 figures for Cranfield and CISI
//   were made with. A dropped term does not count toward the document length, as in Lucene.
// - stem: the original Porter stemmer (text/porter_stemmer.hpp) on every remaining term.
//
// Cost: one pass over the bytes, one hash lookup per term when stop words are on, and the
// stemmer's linear pass per term when stemming is on. The term buffer is reused across terms,
// so analysing allocates nothing once the buffer has grown to the longest term.
#pragma once

#include <algorithm>
#include <cstddef>
#include <functional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_set>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "llmds/detail/hash.hpp"
#include "llmds/text/porter_stemmer.hpp"

namespace llmds::text {

/// Lucene's English stop words (EnglishAnalyzer.ENGLISH_STOP_WORDS_SET), 33 words.
inline std::span<const std::string_view> english_stop_words() noexcept {
  static constexpr std::string_view words[] = {
      "a",    "an",   "and",  "are",   "as",    "at",    "be",   "but",  "by",
      "for",  "if",   "in",   "into",  "is",    "it",    "no",   "not",  "of",
      "on",   "or",   "such", "that",  "the",   "their", "then", "there", "these",
      "they", "this", "to",   "was",   "will",  "with"};
  return words;
}

/// True for the bytes a term is made of: ASCII letters and digits.
inline constexpr bool is_term_byte(char c) noexcept {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

inline constexpr char ascii_lower(char c) noexcept {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

/// True if `word` is one term as the analyzer makes them: non-empty, lower-case ASCII letters
/// and digits.
inline bool is_single_term(std::string_view word) noexcept {
  return !word.empty() && std::all_of(word.begin(), word.end(), [](char c) {
    return is_term_byte(c) && ascii_lower(c) == c;
  });
}

/// english_stop_words() as the list an AnalyzerConfig holds.
inline std::vector<std::string> english_stop_word_list() {
  const auto words = english_stop_words();
  return {words.begin(), words.end()};
}

struct AnalyzerConfig {
  bool stem = false;                    // Porter stemmer on every term
  std::vector<std::string> stop_words;  // dropped terms; empty = none

  /// Throws std::invalid_argument unless every stop word is itself one lower-case term.
  void validate() const {
    for (const auto& word : stop_words) {
      if (!is_single_term(word)) {
        throw std::invalid_argument(fmt::format(
            "stop word '{}' is not a single lower-case term of ASCII letters and digits", word));
      }
    }
  }

  /// The configuration of the reference BM25 runs: Porter stemming and English stop words.
  static AnalyzerConfig english() {
    AnalyzerConfig config;
    config.stem = true;
    config.stop_words = english_stop_word_list();
    return config;
  }

  friend bool operator==(const AnalyzerConfig&, const AnalyzerConfig&) = default;
};

class Analyzer {
 public:
  explicit Analyzer(AnalyzerConfig config = {}) : config_(std::move(config)) {
    config_.validate();
    stop_.insert(config_.stop_words.begin(), config_.stop_words.end());
  }

  [[nodiscard]] const AnalyzerConfig& config() const noexcept { return config_; }

  /// Calls on_term(std::string_view) for each term of `text`, in order. The view is valid only
  /// during the call.
  template <class OnTerm>
  void for_each_term(std::string_view text, OnTerm&& on_term) const {
    std::string term;
    std::size_t i = 0;
    while (i < text.size()) {
      while (i < text.size() && !is_term_byte(text[i])) ++i;
      term.clear();
      while (i < text.size() && is_term_byte(text[i])) term.push_back(ascii_lower(text[i++]));
      if (term.empty() || (!stop_.empty() && stop_.contains(term))) continue;
      if (config_.stem) porter_stem_in_place(term);
      on_term(std::string_view(term));
    }
  }

  /// The terms of `text`, in order, repeats included.
  [[nodiscard]] std::vector<std::string> analyze(std::string_view text) const {
    std::vector<std::string> terms;
    for_each_term(text, [&](std::string_view term) { terms.emplace_back(term); });
    return terms;
  }

 private:
  AnalyzerConfig config_;
  std::unordered_set<std::string, llmds::detail::TransparentStringHash, std::equal_to<>> stop_;
};

}  // namespace llmds::text
