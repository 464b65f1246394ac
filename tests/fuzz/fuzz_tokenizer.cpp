// Fuzz target: Tokenizer::from_bytes (include/llmds/engine/tokenizer.hpp, src/engine/tokenizer.cpp).
//
// Input: the vocabulary size as 2 little-endian bytes (the file does not record it; the model
// does), then a llama2.c tokenizer file (no checksum). A tokenizer that loads must encode any
// text into ids of its vocabulary and decode them again without a sanitizer report.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "fuzz_common.hpp"
#include "llmds/engine/tokenizer.hpp"

using llmds::Tokenizer;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const int vocab_size = data[0] | data[1] << 8;
  const std::string_view bytes(reinterpret_cast<const char*>(data) + 2, size - 2);
  std::optional<Tokenizer> tokenizer;
  if (!llmds::fuzz::loads([&] { tokenizer.emplace(Tokenizer::from_bytes(bytes, vocab_size, "fuzz input")); })) return 0;

  LLMDS_FUZZ_CHECK(tokenizer->vocab_size() == vocab_size);
  // A vocabulary without a ' ' piece cannot encode text (std::invalid_argument by contract);
  // every other failure is a finding.
  for (const std::string_view text : {std::string_view("Once upon a time"), std::string_view("\xc3\xa9t\xe9\xff\x01 x"),
                                      bytes.substr(0, 64)}) {
    std::vector<llmds::TokenId> ids;
    try {
      ids = tokenizer->encode(text, /*bos=*/true, /*eos=*/true);
    } catch (const std::invalid_argument&) {
      continue;
    }
    for (const auto id : ids) LLMDS_FUZZ_CHECK(id >= 0 && id < vocab_size);
    llmds::fuzz::must_not_throw([&] { (void)tokenizer->decode(ids); }, "decoding what the tokenizer encoded");
  }
  return 0;
}
