// LlamaModel: a Llama-2-architecture transformer whose attention reads K and V from KV pages in place.
//
// The engine needs a real model so that the KV cache, the scheduler and prefix sharing are
// exercised the way a server exercises them. This is the Llama 2 forward pass as llama2.c's
// run.c computes it (RMSNorm, rotary embeddings on adjacent pairs, grouped-query attention,
// SwiGLU feed-forward, optionally tied classifier), loading llama2.c "v0" float32 checkpoints
// (docs/engine.md, "The file formats", describes the format).
//
// One call, many sequences. forward() takes a list of chunks, each a run of consecutive tokens
// of one sequence: a prompt chunk being prefilled, or the single newest token of a sequence being
// decoded. All their tokens are stacked into one matrix, so every weight multiplication is one
// matrix product over the whole step (this is what makes continuous batching pay: the weights are
// read once per step, not once per sequence). Only attention is per sequence: token i of a chunk
// starting at position s attends to positions [0, s), read in place through the chunk's KVView
// (kv_view.hpp: the arena, page size, entry width and block table of its sequence, whichever
// cache or tier filled them), and to positions [s, s + i] of its own chunk, held in the step's
// scratch. The chunk's new K and V come back as KV entries for the caller to append to the cache
// (the model never writes the cache, so a failed step leaves it unchanged).
//
// KV entry layout, one per token: for each layer l, K (kv_dim floats) then V (kv_dim floats), so
// entry_width = n_layers * 2 * kv_dim; inside K and V, head h occupies [h*head_size,
// (h+1)*head_size). The page size is the cache's choice.
//
// The constructor checks every weight's shape and that every weight is finite (a single NaN
// would turn every logit it reaches into NaN), so a LlamaModel that exists computes numbers.
//
// Numerics: float32 throughout, as run.c. Sums are ordered differently (Eigen vectorises them),
// so logits differ from run.c's in the last bits; greedy decoding reproduces run.c's tokens
// wherever the two best logits are further apart than that (see tests/cpp/test_llama.cpp).
//
// Cost per step: 2 * params FLOPs per token for the weights, plus attention
// O(tokens * context * dim) per layer; the classifier runs only for rows the caller asks logits
// for (the last token of each chunk).
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <iosfwd>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <Eigen/Core>
#include <fmt/format.h>

#include "llmds/core/types.hpp"
#include "llmds/kv/kv_view.hpp"

namespace llmds {

struct LlamaConfig {
  int dim = 0;         // residual stream width
  int hidden_dim = 0;  // feed-forward inner width
  int n_layers = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int vocab_size = 0;
  int seq_len = 0;  // the longest context the model was trained for
  bool shared_classifier = true;
  float rope_theta = 10000.0f;  // llama2.c's RoPE base
  float rms_eps = 1e-5f;        // llama2.c's RMSNorm epsilon

  [[nodiscard]] int head_size() const { return dim / n_heads; }
  [[nodiscard]] int kv_dim() const { return head_size() * n_kv_heads; }
  /// Floats per token in the KV cache: K and V of every layer.
  [[nodiscard]] std::size_t kv_entry_width() const {
    return static_cast<std::size_t>(n_layers) * 2 * static_cast<std::size_t>(kv_dim());
  }
  /// Parameters, excluding llama2.c's obsolete RoPE tables.
  [[nodiscard]] std::int64_t parameters() const;
  /// Throws std::invalid_argument naming the first inconsistent field.
  void validate() const;
};

using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Vector = Eigen::VectorXf;

struct LlamaLayer {
  Vector attention_norm;  // dim
  RowMatrix wq;           // dim x dim            (out x in, as stored)
  RowMatrix wk;           // kv_dim x dim
  RowMatrix wv;           // kv_dim x dim
  RowMatrix wo;           // dim x dim
  Vector ffn_norm;        // dim
  RowMatrix w1;           // hidden x dim (gate)
  RowMatrix w2;           // dim x hidden (down)
  RowMatrix w3;           // hidden x dim (up)
};

struct LlamaWeights {
  RowMatrix embedding;  // vocab x dim
  std::vector<LlamaLayer> layers;
  Vector final_norm;     // dim
  RowMatrix classifier;  // vocab x dim; empty when shared with the embedding
};

/// A run of consecutive tokens of one sequence for forward(): positions [start, start + size).
/// `kv` shows the sequence's entries, which must hold its positions [0, start).
struct ForwardChunk {
  KVView<float> kv;
  std::size_t start = 0;
  std::span<const TokenId> tokens;
  bool want_logits = true;  // logits of the chunk's last token
};

/// Consecutive positions whose K and V rows sit `stride` floats apart: the rows of one KV page,
/// or the rows the current step computed (attention walks a list of these).
struct KVRun {
  const float* k;
  const float* v;
  std::size_t stride;
  std::size_t count;
};

/// Working memory of forward(), kept between steps so that a step allocates nothing once warm.
struct ForwardScratch {
  RowMatrix x, xb, q, k, v, attn, h1, h3, logits_rows;
  std::vector<float> scores, group_tmp;
  std::vector<KVRun> runs;
};

class LlamaModel {
 public:
  LlamaModel(LlamaConfig config, LlamaWeights weights);

  /// Reads a llama2.c v0 checkpoint. A missing, truncated, oversized or inconsistent file, or
  /// one whose weights hold NaN or infinity, is llmds::IOError / std::invalid_argument naming the
  /// file and what is wrong (for a weight: the tensor, its layer and the element).
  static LlamaModel load(const std::filesystem::path& path);
  /// The same from `size` bytes of `in`; `name` stands for the source in error messages.
  static LlamaModel load(std::istream& in, std::uint64_t size, std::string_view name);

  [[nodiscard]] const LlamaConfig& config() const noexcept { return config_; }
  [[nodiscard]] const LlamaWeights& weights() const noexcept { return weights_; }

  /// Runs one step over `chunks`. Writes each chunk's KV entries, in chunk order, to `kv_out`
  /// (total tokens x kv_entry_width floats) and the logits of each chunk with want_logits, in
  /// chunk order, to `logits_out` (rows of vocab_size floats). Throws std::invalid_argument
  /// for a token id out of range, a position at or past seq_len, a view too short for its
  /// start or with entries of another width, or output spans of the wrong size.
  void forward(std::span<const ForwardChunk> chunks, std::span<float> kv_out, std::span<float> logits_out,
               ForwardScratch& scratch) const;

 private:
  void attention(const ForwardChunk& chunk, std::size_t row0, int layer, ForwardScratch& s) const;

  LlamaConfig config_;
  LlamaWeights weights_;
  // RoPE rotation of each (position, pair within a head), computed once: cos, sin interleaved.
  std::vector<float> rope_;
};

}  // namespace llmds
