// Tokenizer: the byte-fallback BPE of llama2.c's tokenizer files (SentencePiece exports).
//
// A model is only reproducible token for token if its prompts are encoded exactly as the
// reference encodes them, so this follows run.c's rules (the file format: docs/engine.md):
//   encode: BOS if asked; a dummy-prefix space token if the text is not empty; each UTF-8 code
//   point becomes its vocabulary entry, or one byte-fallback token per byte (the token spelled
//   "<0xAB>" for byte 0xAB: byte + 3 in llama2.c's files; std::invalid_argument if the
//   vocabulary has none); then
//   the adjacent pair whose concatenation is the entry with the highest score (leftmost on ties)
//   is merged, again and again, until no pair merges; EOS if asked.
//   decode: a token's text, with the leading space dropped right after BOS; a byte-fallback
//   token (spelled "<0x41>" for byte 0x41, and so on) stands for its one byte.
// Merging rescans the sequence after each merge, O(n^2) for n code points: prompts are short and
// this is the reference's order, which a cleverer merge queue would have to reproduce exactly.
//
// The file holds max_token_length (int32) and then, per token, a float32 score, an int32 byte
// length and the bytes. It does not record the vocabulary size; the model does, so load() takes
// it. A truncated or inconsistent file (a length past max_token_length, a NaN score, bytes left
// over) is llmds::IOError naming the file and the token.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "llmds/detail/hash.hpp"
#include "llmds/core/types.hpp"

namespace llmds {

class Tokenizer {
 public:
  static constexpr TokenId kBos = 1;  // llama2.c / SentencePiece: 0 <unk>, 1 <s>, 2 </s>
  static constexpr TokenId kEos = 2;

  Tokenizer(std::vector<std::string> pieces, std::vector<float> scores);

  /// Reads a llama2.c tokenizer file holding `vocab_size` tokens.
  static Tokenizer load(const std::filesystem::path& path, int vocab_size);
  /// The same from the file's bytes; `name` stands for the source in error messages.
  static Tokenizer from_bytes(std::string_view bytes, int vocab_size, std::string_view name = "tokenizer");

  [[nodiscard]] std::vector<TokenId> encode(std::string_view text, bool bos = true, bool eos = false) const;

  /// The bytes `token` stands for when it follows `previous` (run.c's decode).
  [[nodiscard]] std::string_view piece(TokenId previous, TokenId token) const;

  /// The text of a run of tokens, each decoded after the one before it (the first after
  /// `previous`); BOS and EOS add no text.
  [[nodiscard]] std::string decode(std::span<const TokenId> tokens, TokenId previous = kBos) const;

  [[nodiscard]] int vocab_size() const noexcept { return static_cast<int>(pieces_.size()); }
  [[nodiscard]] const std::string& text_of(TokenId token) const;

 private:
  [[nodiscard]] TokenId lookup(std::string_view text) const;

  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  std::vector<std::string> byte_pieces_;  // per token: its byte if it is a byte-fallback token, else empty
  std::array<TokenId, 256> byte_ids_ = no_byte_ids();  // per byte: its byte-fallback token, or -1
  static constexpr std::array<TokenId, 256> no_byte_ids() {
    std::array<TokenId, 256> ids{};
    ids.fill(-1);
    return ids;
  }
  std::unordered_map<std::string, TokenId, detail::TransparentStringHash, std::equal_to<>> ids_;
};

}  // namespace llmds
