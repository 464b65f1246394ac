// Fuzz target: LlamaModel::load(std::istream&, size, name) (src/engine/llama.cpp).
//
// Input: a llama2.c v0 checkpoint (no mode byte: the format has no checksum). A model that
// loads must compute: one forward step of one token (as the engine's first decode would) runs
// without a sanitizer report, for models small enough to keep the target fast.
#include <cstdint>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "fuzz_common.hpp"
#include "llmds/engine/llama.hpp"

using llmds::LlamaModel;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::istringstream in(std::string(reinterpret_cast<const char*>(data), size));
  std::optional<LlamaModel> model;
  if (!llmds::fuzz::loads([&] { model.emplace(LlamaModel::load(in, size, "fuzz input")); })) return 0;

  llmds::fuzz::must_not_throw([&] {
    const auto& c = model->config();
    c.validate();
    if (c.parameters() > 2'000'000) return;
    const llmds::TokenId token = c.vocab_size > 1 ? 1 : 0;
    const llmds::ForwardChunk chunk{{}, 0,  // an empty view: no earlier positions
                                     std::span<const llmds::TokenId>(&token, 1), true};
    std::vector<float> kv(c.kv_entry_width());
    std::vector<float> logits(static_cast<std::size_t>(c.vocab_size));
    llmds::ForwardScratch scratch;
    model->forward(std::span(&chunk, 1), kv, logits, scratch);
  }, "one forward step of the loaded model");
  return 0;
}
