// Tokenizer (see include/llmds/engine/tokenizer.hpp).
#include "llmds/engine/tokenizer.hpp"

#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <utility>

#include <fmt/format.h>

#include "llmds/core/errors.hpp"
#include "llmds/detail/binary_io.hpp"

namespace llmds {

Tokenizer::Tokenizer(std::vector<std::string> pieces, std::vector<float> scores)
    : pieces_(std::move(pieces)), scores_(std::move(scores)) {
  if (pieces_.size() != scores_.size()) {
    throw std::invalid_argument(
        fmt::format("Tokenizer: {} pieces but {} scores", pieces_.size(), scores_.size()));
  }
  if (pieces_.size() <= static_cast<std::size_t>(kEos)) {
    throw std::invalid_argument("Tokenizer: a vocabulary needs at least <unk>, <s> and </s>");
  }
  byte_pieces_.resize(pieces_.size());
  for (std::size_t id = 0; id < pieces_.size(); ++id) {
    // The first id wins for a duplicated text, as run.c's sorted-vocabulary search finds one.
    ids_.try_emplace(pieces_[id], static_cast<TokenId>(id));
    unsigned byte = 0;
    char tail = 0;
    if (pieces_[id].size() == 6 && std::sscanf(pieces_[id].c_str(), "<0x%02X>%c", &byte, &tail) == 1) {
      // Decoding follows run.c's sscanf, which also takes a sign ("<0x-1>" is byte 0xFF); the
      // encoder's byte tokens are only the pieces spelled with two hex digits.
      byte_pieces_[id] = std::string(1, static_cast<char>(byte));
      const auto hex = [](char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; };
      if (hex(pieces_[id][3]) && hex(pieces_[id][4]) && byte < byte_ids_.size() && byte_ids_[byte] < 0) {
        byte_ids_[byte] = static_cast<TokenId>(id);
      }
    }
  }
}

Tokenizer Tokenizer::load(const std::filesystem::path& path, int vocab_size) {
  if (vocab_size <= 0) throw std::invalid_argument(fmt::format("Tokenizer::load: vocab_size {} must be positive", vocab_size));
  return from_bytes(detail::read_file(path), vocab_size, path.string());
}

Tokenizer Tokenizer::from_bytes(std::string_view bytes, int vocab_size, std::string_view name) {
  if (vocab_size <= 0) {
    throw std::invalid_argument(fmt::format("Tokenizer::from_bytes: vocab_size {} must be positive", vocab_size));
  }
  std::size_t pos = 0;
  auto read = [&](void* out, std::size_t n, const auto& what) {
    if (n > bytes.size() - pos) throw IOError(fmt::format("{}: truncated: {} is missing", name, what));
    std::memcpy(out, bytes.data() + pos, n);
    pos += n;
  };
  std::int32_t max_token_length = 0;
  read(&max_token_length, sizeof max_token_length, "max_token_length");
  if (max_token_length <= 0 || max_token_length > 1024) {
    throw IOError(
        fmt::format("{}: max_token_length {} is not plausible; not a llama2.c tokenizer", name, max_token_length));
  }
  // Every token takes at least 8 bytes (score and length): a vocabulary the data cannot hold is
  // refused before anything is allocated for it.
  if (static_cast<std::size_t>(vocab_size) > (bytes.size() - pos) / 8) {
    throw IOError(fmt::format("{}: {} bytes cannot hold {} tokens; the model's vocabulary does not match this file",
                              name, bytes.size(), vocab_size));
  }
  std::vector<std::string> pieces(static_cast<std::size_t>(vocab_size));
  std::vector<float> scores(static_cast<std::size_t>(vocab_size));
  for (int id = 0; id < vocab_size; ++id) {
    float& score = scores[static_cast<std::size_t>(id)];
    read(&score, sizeof(float), fmt::format("the score of token {}", id));
    if (std::isnan(score)) throw IOError(fmt::format("{}: token {} has a NaN score", name, id));
    std::int32_t length = 0;
    read(&length, sizeof length, fmt::format("the length of token {}", id));
    if (length < 0 || length > max_token_length) {
      throw IOError(fmt::format("{}: token {} has length {}, outside [0, max_token_length {}]", name, id, length,
                                max_token_length));
    }
    pieces[static_cast<std::size_t>(id)].resize(static_cast<std::size_t>(length));
    read(pieces[static_cast<std::size_t>(id)].data(), static_cast<std::size_t>(length),
         fmt::format("the text of token {}", id));
  }
  if (pos != bytes.size()) {
    throw IOError(
        fmt::format("{}: bytes left after {} tokens; the model's vocabulary does not match this file", name, vocab_size));
  }
  return Tokenizer(std::move(pieces), std::move(scores));
}

TokenId Tokenizer::lookup(std::string_view text) const {
  const auto it = ids_.find(text);
  return it == ids_.end() ? -1 : it->second;
}

const std::string& Tokenizer::text_of(TokenId token) const {
  if (token < 0 || token >= vocab_size()) {
    throw std::out_of_range(fmt::format("Tokenizer: token id {} is outside [0, {})", token, vocab_size()));
  }
  return pieces_[static_cast<std::size_t>(token)];
}

std::vector<TokenId> Tokenizer::encode(std::string_view text, bool bos, bool eos) const {
  std::vector<TokenId> tokens;
  tokens.reserve(text.size() + 3);
  if (bos) tokens.push_back(kBos);
  if (!text.empty()) {
    const TokenId space = lookup(" ");
    if (space < 0) throw std::invalid_argument("Tokenizer::encode: the vocabulary has no ' ' token");
    tokens.push_back(space);
  }
  // Code points: a lead byte and up to three continuation bytes (run.c caps a point at 4 bytes).
  std::size_t i = 0;
  while (i < text.size()) {
    std::size_t n = 1;
    while (i + n < text.size() && n < 4 && (static_cast<unsigned char>(text[i + n]) & 0xC0) == 0x80) ++n;
    const std::string_view point = text.substr(i, n);
    if (const TokenId id = lookup(point); id >= 0) {
      tokens.push_back(id);
    } else {
      // Byte fallback: each byte's own token. run.c takes it to be byte + 3, which holds for the
      // SentencePiece exports llama2.c makes, but not for a vocabulary that lacks byte tokens or
      // keeps them elsewhere, where byte + 3 could even be past its end.
      for (const char c : point) {
        const TokenId byte_token = byte_ids_[static_cast<unsigned char>(c)];
        if (byte_token < 0) {
          throw std::invalid_argument(fmt::format("Tokenizer::encode: byte 0x{:02X} is in no token of the vocabulary",
                                                  static_cast<unsigned char>(c)));
        }
        tokens.push_back(byte_token);
      }
    }
    i += n;
  }
  std::string pair;
  while (true) {
    float best_score = -std::numeric_limits<float>::infinity();
    TokenId best_id = -1;
    std::size_t best_at = 0;
    for (std::size_t k = 0; k + 1 < tokens.size(); ++k) {
      pair.assign(pieces_[static_cast<std::size_t>(tokens[k])]);
      pair += pieces_[static_cast<std::size_t>(tokens[k + 1])];
      const TokenId id = lookup(pair);
      if (id >= 0 && scores_[static_cast<std::size_t>(id)] > best_score) {
        best_score = scores_[static_cast<std::size_t>(id)];
        best_id = id;
        best_at = k;
      }
    }
    if (best_id < 0) break;
    tokens[best_at] = best_id;
    tokens.erase(tokens.begin() + static_cast<std::ptrdiff_t>(best_at) + 1);
  }
  if (eos) tokens.push_back(kEos);
  return tokens;
}

std::string_view Tokenizer::piece(TokenId previous, TokenId token) const {
  std::string_view text = text_of(token);
  if (!byte_pieces_[static_cast<std::size_t>(token)].empty()) return byte_pieces_[static_cast<std::size_t>(token)];
  if (previous == kBos && !text.empty() && text.front() == ' ') text.remove_prefix(1);
  return text;
}

std::string Tokenizer::decode(std::span<const TokenId> tokens, TokenId previous) const {
  std::string out;
  for (const TokenId t : tokens) {
    if (t != kBos && t != kEos) out += piece(previous, t);  // control tokens have no text
    previous = t;
  }
  return out;
}

}  // namespace llmds
