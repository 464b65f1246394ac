// Porter stemmer: strips English suffixes so that inflected and derived forms of a word share
// one index term ("connect", "connected", "connecting", "connection" all become "connect").
//
// The algorithm (M.F. Porter, "An algorithm for suffix stripping", Program 14(3), 1980) is a
// fixed sequence of rewrite steps (1a plurals, 1b -ed/-ing, 1c -y, 2 and 3 double and single
// derivational suffixes, 4 bare suffixes, 5a/5b final -e and -ll). Each rule fires only if the
// stem left after removing the suffix is long enough, where length is the measure m: writing a
// run of consonants as C and a run of vowels as V, every word is [C](VC)^m[V]. Within a step only
// the longest matching suffix is considered; if its condition fails the step does nothing, it
// does not fall back to a shorter suffix. Stems are not words ("happi", "relat"): they only need
// to be equal for related words, so documents and queries must go through the same function.
//
// Variant: the original 1980 algorithm as Martin Porter's reference ANSI C implementation
// (tartarus.org/martin/PorterStemmer) has it: Porter declared that version frozen and calls its
// departures from the paper improvements. Its three marked DEPARTUREs are kept here:
// words of one or two letters are returned unchanged; step 2 maps -bli to -ble where the paper
// has -abli to -able (so "possibly" and "possible" meet); step 2 also maps -logi to -log. This is
// neither Porter2 (Snowball "english") nor NLTK's default mode with its irregular-forms table;
// it agrees with NLTK's PorterStemmer(mode=MARTIN_EXTENSIONS) on every word of the Cranfield and
// CISI collections, and differs from its ORIGINAL_ALGORITHM mode only at the three departures.
//
// Letters: a, e, i, o, u are vowels; y is a vowel after a consonant and a consonant at the start
// of a word or after a vowel (the reference's cons()); every other byte, digits included, is a
// consonant. Input is expected lower-case, since nothing here folds case.
//
// Cost: O(n) per word of n letters. Each rule test looks at a fixed-length suffix and each step
// computes the measure at most a couple of times in one forward pass. The reference decides
// whether a y is a consonant by recursing back over a run of y's, which is quadratic and
// recursion-deep on a token like "yyyy..."; here the same answer comes from one backward loop or
// from the forward pass, so no token can exhaust the stack. No allocation: a stem is never longer
// than its word (the only growth, step 1b putting back an e, follows removing -ed or -ing), so
// every edit is a shrink or an append within the string's existing capacity.
//
// Why here: the BM25 analyzer lower-cases text, splits it into maximal runs of [a-z0-9] and, when
// stemming is on, calls porter_stem_in_place on each token before it is counted or looked up.
#pragma once

#include <array>
#include <cstddef>
#include <string>
#include <string_view>

namespace llmds::text {

namespace detail {

inline bool is_vowel_letter(char c) noexcept {
  return c == 'a' || c == 'e' || c == 'i' || c == 'o' || c == 'u';
}

// The reference's cons(i), with its recursion through a run of y's unrolled: each y flips the
// answer of the letter before it, and a y at position 0 is a consonant.
inline bool is_consonant(std::string_view w, std::size_t i) noexcept {
  bool flip = false;
  while (i > 0 && w[i] == 'y') {
    flip = !flip;
    --i;
  }
  const bool base = w[i] == 'y' || !is_vowel_letter(w[i]);
  return base != flip;
}

// m: the number of VC sequences in w, i.e. the number of vowel-to-consonant transitions, found
// in one forward pass that classifies each y from the letter before it.
inline int measure(std::string_view w) noexcept {
  int m = 0;
  bool prev_consonant = true;
  for (std::size_t i = 0; i < w.size(); ++i) {
    const char c = w[i];
    const bool consonant = c == 'y' ? (i == 0 || !prev_consonant) : !is_vowel_letter(c);
    if (consonant && !prev_consonant) ++m;
    prev_consonant = consonant;
  }
  return m;
}

// *v*: the stem contains a vowel.
inline bool contains_vowel(std::string_view w) noexcept {
  bool prev_consonant = true;
  for (std::size_t i = 0; i < w.size(); ++i) {
    const char c = w[i];
    const bool consonant = c == 'y' ? (i == 0 || !prev_consonant) : !is_vowel_letter(c);
    if (!consonant) return true;
    prev_consonant = consonant;
  }
  return false;
}

// *d: the stem ends with a double consonant ("-tt", "-ss").
inline bool ends_double_consonant(std::string_view w) noexcept {
  const std::size_t n = w.size();
  return n >= 2 && w[n - 1] == w[n - 2] && is_consonant(w, n - 1);
}

// *o: the stem ends consonant-vowel-consonant and the last consonant is not w, x or y
// ("-hop", "-wil"); such short stems get their e back ("hoping" -> "hope").
inline bool ends_cvc(std::string_view w) noexcept {
  const std::size_t n = w.size();
  if (n < 3) return false;
  const char last = w[n - 1];
  if (last == 'w' || last == 'x' || last == 'y') return false;
  return is_consonant(w, n - 1) && !is_consonant(w, n - 2) && is_consonant(w, n - 3);
}

// The stem of `w` once `suffix` is removed; only meaningful when w ends with suffix.
inline std::string_view stem_without(std::string_view w, std::string_view suffix) noexcept {
  return w.substr(0, w.size() - suffix.size());
}

inline void replace_suffix(std::string& w, std::size_t suffix_size, std::string_view by) {
  w.resize(w.size() - suffix_size);
  w.append(by);  // never grows past the original word, so never reallocates
}

struct SuffixRule {
  std::string_view suffix;
  std::string_view replacement;
};

// Applies the first rule whose suffix w ends with, if the stem's measure exceeds min_measure.
// Each table lists a longer suffix before any suffix of it (-ational before -tional), so the
// first match is the longest one, and a failed condition ends the step, as in the paper.
// Most rules fail on the last letter, so that is compared before the whole suffix: the same
// shortcut the reference takes with its switch on a letter, and a third off the vocabulary's
// stemming time.
template <std::size_t N>
inline void apply_first_match(std::string& w, const std::array<SuffixRule, N>& rules,
                              int min_measure) {
  const std::string_view word = w;
  for (const SuffixRule& rule : rules) {
    if (word.empty() || word.back() != rule.suffix.back() || !word.ends_with(rule.suffix)) {
      continue;
    }
    if (measure(stem_without(word, rule.suffix)) > min_measure) {
      replace_suffix(w, rule.suffix.size(), rule.replacement);
    }
    return;
  }
}

// Step 1a, plurals: sses -> ss, ies -> i, ss -> ss, s -> "".
inline void step1a(std::string& w) {
  const std::string_view word = w;
  if (word.ends_with("sses") || word.ends_with("ies")) {
    w.resize(w.size() - 2);
  } else if (word.ends_with("s") && !word.ends_with("ss")) {
    w.pop_back();
  }
}

// Step 1b, -eed/-ed/-ing. A word ending in -eed never reaches the -ed rule: "feed" stays.
// After -ed or -ing goes, the stem is tidied so that step 4 and 5 see a regular ending:
// -at/-bl/-iz get their e back, a double consonant other than l, s, z is undoubled, and a short
// cvc stem gets an e ("filing" -> "file").
inline void step1b(std::string& w) {
  const std::string_view word = w;
  if (word.ends_with("eed")) {
    if (measure(stem_without(word, "eed")) > 0) w.pop_back();
    return;
  }
  std::size_t suffix_size = 0;
  if (word.ends_with("ed")) {
    suffix_size = 2;
  } else if (word.ends_with("ing")) {
    suffix_size = 3;
  } else {
    return;
  }
  if (!contains_vowel(word.substr(0, word.size() - suffix_size))) return;
  w.resize(w.size() - suffix_size);

  const std::string_view stem = w;
  if (stem.ends_with("at") || stem.ends_with("bl") || stem.ends_with("iz")) {
    w.push_back('e');
  } else if (ends_double_consonant(stem)) {
    const char last = stem.back();
    if (last != 'l' && last != 's' && last != 'z') w.pop_back();
  } else if (measure(stem) == 1 && ends_cvc(stem)) {
    w.push_back('e');
  }
}

// Step 1c: y -> i when the stem has a vowel ("happy" -> "happi", "sky" stays).
inline void step1c(std::string& w) {
  const std::string_view word = w;
  if (word.ends_with("y") && contains_vowel(stem_without(word, "y"))) w.back() = 'i';
}

// Step 2, (m > 0): double suffixes to single ones.
inline void step2(std::string& w) {
  static constexpr std::array<SuffixRule, 21> rules{{
      {"ational", "ate"}, {"tional", "tion"}, {"enci", "ence"},  {"anci", "ance"},
      {"izer", "ize"},    {"bli", "ble"},     {"alli", "al"},    {"entli", "ent"},
      {"eli", "e"},       {"ousli", "ous"},   {"ization", "ize"}, {"ation", "ate"},
      {"ator", "ate"},    {"alism", "al"},    {"iveness", "ive"}, {"fulness", "ful"},
      {"ousness", "ous"}, {"aliti", "al"},    {"iviti", "ive"},   {"biliti", "ble"},
      {"logi", "log"},
  }};
  // bli (paper: abli -> able) and logi are the reference's departures, see the top of the file.
  apply_first_match(w, rules, 0);
}

// Step 3, (m > 0): -icate, -ative, -alize, -iciti, -ical, -ful, -ness.
inline void step3(std::string& w) {
  static constexpr std::array<SuffixRule, 7> rules{{
      {"icate", "ic"},
      {"ative", ""},
      {"alize", "al"},
      {"iciti", "ic"},
      {"ical", "ic"},
      {"ful", ""},
      {"ness", ""},
  }};
  apply_first_match(w, rules, 0);
}

// Step 4, (m > 1): bare suffixes go. -ion goes only after s or t ("adoption" -> "adopt");
// otherwise a word ending in -ion matches no rule of this step.
inline void step4(std::string& w) {
  static constexpr std::array<SuffixRule, 18> rules{{
      {"al", ""},   {"ance", ""}, {"ence", ""}, {"er", ""},  {"ic", ""},  {"able", ""},
      {"ible", ""}, {"ant", ""},  {"ement", ""}, {"ment", ""}, {"ent", ""}, {"ou", ""},
      {"ism", ""},  {"ate", ""},  {"iti", ""},  {"ous", ""}, {"ive", ""}, {"ize", ""},
  }};
  const std::string_view word = w;
  if (word.ends_with("ion")) {
    const std::string_view stem = stem_without(word, "ion");
    if (!stem.empty() && (stem.back() == 's' || stem.back() == 't') && measure(stem) > 1) {
      w.resize(stem.size());
    }
    return;
  }
  apply_first_match(w, rules, 1);
}

// Step 5a: drop a final e if m > 1, or if m = 1 and the stem is not *o ("rate" keeps it,
// "cease" loses it).
inline void step5a(std::string& w) {
  const std::string_view word = w;
  if (!word.ends_with("e")) return;
  const std::string_view stem = stem_without(word, "e");
  const int m = measure(stem);
  if (m > 1 || (m == 1 && !ends_cvc(stem))) w.pop_back();
}

// Step 5b: -ll -> -l if m > 1 ("controll" -> "control", "roll" stays).
inline void step5b(std::string& w) {
  const std::string_view word = w;
  if (word.ends_with("ll") && measure(word) > 1) w.pop_back();
}

}  // namespace detail

/// Replaces `word` with its Porter stem (the reference C implementation's behaviour, see the top
/// of the file). Expects lower-case ASCII; bytes other than a, e, i, o, u, y count as consonants.
/// Words of length <= 2 are left unchanged. Never allocates: the result is never longer than the
/// input.
///
///     std::string t = "relational";
///     porter_stem_in_place(t);  // t == "relat"
inline void porter_stem_in_place(std::string& word) {
  if (word.size() <= 2) return;
  detail::step1a(word);
  detail::step1b(word);
  detail::step1c(word);
  detail::step2(word);
  detail::step3(word);
  detail::step4(word);
  detail::step5a(word);
  detail::step5b(word);
}

/// The Porter stem of `word`, as porter_stem_in_place; allocates the result.
inline std::string porter_stem(std::string_view word) {
  std::string stem(word);
  porter_stem_in_place(stem);
  return stem;
}

}  // namespace llmds::text
