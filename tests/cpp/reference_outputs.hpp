// Token ids of the llama2.c reference runs in ../shared/data/models/reference_outputs.json.
// A targeted read, not a JSON parser: the file is fixed data whose layout the tests pin.
#pragma once

#include <cstddef>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#include "data_dir.hpp"
#include "llmds/kv/block_hash.hpp"

namespace llmds::test {

/// The run's "token_ids" (first prompt token, then every chosen token), without the first
/// `skip` of them.
inline std::vector<TokenId> reference_token_ids(const std::string& run, std::size_t skip = 0) {
  std::ifstream in(data_dir() / "models" / "reference_outputs.json");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto at_run = text.find("\"" + run + "\"");
  if (at_run == std::string::npos) throw std::runtime_error("reference_outputs.json has no run " + run);
  const auto open = text.find('[', text.find("\"token_ids\"", at_run));
  const auto close = text.find(']', open);
  std::vector<TokenId> ids;
  for (std::size_t i = open + 1; i < close;) {
    while (i < close && (text[i] == ',' || text[i] == ' ' || text[i] == '\n')) ++i;
    if (i == close) break;
    std::size_t used = 0;
    ids.push_back(static_cast<TokenId>(std::stoi(text.substr(i, close - i), &used)));
    i += used;
  }
  if (skip > ids.size()) throw std::runtime_error("reference run " + run + " is shorter than expected");
  return std::vector<TokenId>(ids.begin() + static_cast<std::ptrdiff_t>(skip), ids.end());
}

}  // namespace llmds::test
