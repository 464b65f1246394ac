// A tiny Llama model and tokenizer made in code, for tests that need an engine without the
// real checkpoint: 8 tokens, dim 8, one layer, two query heads sharing one KV head.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "llmds/engine/llama.hpp"
#include "llmds/engine/tokenizer.hpp"

namespace llmds::test {

inline LlamaConfig tiny_config() {
  LlamaConfig c;
  c.dim = 8;
  c.hidden_dim = 16;
  c.n_layers = 1;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.vocab_size = 8;
  c.seq_len = 32;
  return c;
}

/// Weights of tiny_config(): uniform in [-1, 1] from Eigen's generator, norms of one.
inline LlamaWeights tiny_weights() {
  LlamaWeights w;
  w.embedding = RowMatrix::Random(8, 8);
  w.layers.resize(1);
  LlamaLayer& layer = w.layers[0];
  layer.attention_norm = Vector::Ones(8);
  layer.ffn_norm = Vector::Ones(8);
  layer.wq = RowMatrix::Random(8, 8);
  layer.wk = RowMatrix::Random(4, 8);
  layer.wv = RowMatrix::Random(4, 8);
  layer.wo = RowMatrix::Random(8, 8);
  layer.w1 = RowMatrix::Random(16, 8);
  layer.w2 = RowMatrix::Random(8, 16);
  layer.w3 = RowMatrix::Random(16, 8);
  w.final_norm = Vector::Ones(8);
  return w;
}

inline std::shared_ptr<const Tokenizer> tiny_tokenizer() {
  return std::make_shared<const Tokenizer>(
      std::vector<std::string>{"<unk>", "\n<s>\n", "\n</s>\n", " ", "a", "b", "c", "d"}, std::vector<float>(8, 0.0f));
}

}  // namespace llmds::test
