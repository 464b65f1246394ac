// LlamaModel: checkpoint loading and the forward pass (see include/llmds/engine/llama.hpp).
#include "llmds/engine/llama.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <istream>
#include <limits>
#include <utility>

#include "llmds/core/errors.hpp"
#include "llmds/detail/checked_size.hpp"

namespace llmds {

namespace {

// The parameter count in size_t arithmetic that refuses to wrap (the widths of a config read
// from a file can be anything up to 2^31 - 1).
std::size_t checked_parameters(const LlamaConfig& c) {
  using detail::checked_add;
  using detail::checked_mul;
  const auto d = static_cast<std::size_t>(c.dim), h = static_cast<std::size_t>(c.hidden_dim),
             l = static_cast<std::size_t>(c.n_layers), kv = static_cast<std::size_t>(c.kv_dim()),
             v = static_cast<std::size_t>(c.vocab_size);
  constexpr std::string_view what = "LlamaConfig: the parameter count";
  const std::size_t dd = checked_mul(d, d, what), kvd = checked_mul(kv, d, what), hd = checked_mul(h, d, what);
  std::size_t per_layer = checked_add(checked_mul(2, d, what), checked_mul(2, dd, what), what);
  per_layer = checked_add(per_layer, checked_mul(2, kvd, what), what);
  per_layer = checked_add(per_layer, checked_mul(3, hd, what), what);
  const std::size_t vd = checked_mul(v, d, what);
  std::size_t total = checked_add(vd, checked_mul(l, per_layer, what), what);
  total = checked_add(total, d, what);
  return c.shared_classifier ? total : checked_add(total, vd, what);
}

}  // namespace

std::int64_t LlamaConfig::parameters() const { return static_cast<std::int64_t>(checked_parameters(*this)); }

void LlamaConfig::validate() const {
  auto positive = [](int v, const char* name) {
    if (v <= 0) throw std::invalid_argument(fmt::format("LlamaConfig.{} must be positive, got {}", name, v));
  };
  positive(dim, "dim");
  positive(hidden_dim, "hidden_dim");
  positive(n_layers, "n_layers");
  positive(n_heads, "n_heads");
  positive(n_kv_heads, "n_kv_heads");
  positive(vocab_size, "vocab_size");
  positive(seq_len, "seq_len");
  if (dim % n_heads != 0) {
    throw std::invalid_argument(fmt::format("LlamaConfig: dim {} is not a multiple of n_heads {}", dim, n_heads));
  }
  if (n_heads % n_kv_heads != 0) {
    throw std::invalid_argument(
        fmt::format("LlamaConfig: n_heads {} is not a multiple of n_kv_heads {}", n_heads, n_kv_heads));
  }
  if (head_size() % 2 != 0) {
    throw std::invalid_argument(fmt::format("LlamaConfig: head size {} must be even for RoPE", head_size()));
  }
  if (checked_parameters(*this) > (std::size_t{1} << 62)) {
    throw std::invalid_argument("LlamaConfig: more than 2^62 parameters");
  }
  if (!std::isfinite(rope_theta) || rope_theta <= 0) {
    throw std::invalid_argument(fmt::format("LlamaConfig.rope_theta must be positive and finite, got {}", rope_theta));
  }
  if (!std::isfinite(rms_eps) || rms_eps < 0) {
    throw std::invalid_argument(fmt::format("LlamaConfig.rms_eps must be non-negative and finite, got {}", rms_eps));
  }
}

LlamaModel::LlamaModel(LlamaConfig config, LlamaWeights weights) : config_(config), weights_(std::move(weights)) {
  config_.validate();
  const auto d = config_.dim, kv = config_.kv_dim(), h = config_.hidden_dim, v = config_.vocab_size;
  // Shape first, then values: one NaN or infinity in a weight turns every logit it reaches into
  // NaN, and the sampler could only refuse them token after token; refuse the model instead.
  auto check = [](const auto& m, Eigen::Index rows, Eigen::Index cols, const std::string& name) {
    if (m.rows() != rows || m.cols() != cols) {
      throw std::invalid_argument(
          fmt::format("LlamaModel: {} is {}x{}, expected {}x{}", name, m.rows(), m.cols(), rows, cols));
    }
    if (m.allFinite()) return;
    for (Eigen::Index i = 0; i < m.size(); ++i) {
      const float value = m.data()[i];
      if (!std::isfinite(value)) {
        throw std::invalid_argument(fmt::format("LlamaModel: {} holds {} at row {}, column {} (weights must be finite)",
                                                name, value, i / cols, i % cols));
      }
    }
  };
  check(weights_.embedding, v, d, "embedding");
  if (static_cast<int>(weights_.layers.size()) != config_.n_layers) {
    throw std::invalid_argument(
        fmt::format("LlamaModel: {} layers of weights for n_layers {}", weights_.layers.size(), config_.n_layers));
  }
  for (std::size_t i = 0; i < weights_.layers.size(); ++i) {
    const LlamaLayer& L = weights_.layers[i];
    const std::string p = fmt::format("layer {} ", i);
    check(L.attention_norm, d, 1, p + "attention_norm");
    check(L.wq, d, d, p + "wq");
    check(L.wk, kv, d, p + "wk");
    check(L.wv, kv, d, p + "wv");
    check(L.wo, d, d, p + "wo");
    check(L.ffn_norm, d, 1, p + "ffn_norm");
    check(L.w1, h, d, p + "w1");
    check(L.w2, d, h, p + "w2");
    check(L.w3, h, d, p + "w3");
  }
  check(weights_.final_norm, d, 1, "final_norm");
  if (!config_.shared_classifier) check(weights_.classifier, v, d, "classifier");

  // run.c: freq = 1 / theta^(j / head_size) for the pair starting at j, angle = pos * freq, in
  // float, with cosf / sinf. The same float operations give the same table.
  const int hs = config_.head_size();
  rope_.resize(static_cast<std::size_t>(config_.seq_len) * static_cast<std::size_t>(hs));
  for (int pos = 0; pos < config_.seq_len; ++pos) {
    for (int j = 0; j < hs; j += 2) {
      const float freq = 1.0f / std::pow(config_.rope_theta, static_cast<float>(j) / static_cast<float>(hs));
      const float angle = static_cast<float>(pos) * freq;
      rope_[static_cast<std::size_t>(pos * hs + j)] = std::cos(angle);
      rope_[static_cast<std::size_t>(pos * hs + j + 1)] = std::sin(angle);
    }
  }
}

namespace {

// Reads little-endian float32 arrays from a checkpoint with bounds checked against its size.
class CheckpointReader {
 public:
  CheckpointReader(std::string_view name, std::istream& in, std::uint64_t size) : name_(name), in_(in), left_(size) {}

  void read(void* out, std::uint64_t bytes, const char* what) {
    if (bytes > left_) {
      throw IOError(fmt::format("{}: truncated: {} needs {} more bytes but only {} remain", name_, what, bytes, left_));
    }
    in_.read(static_cast<char*>(out), static_cast<std::streamsize>(bytes));
    if (!in_) throw IOError(fmt::format("{}: read error in {}", name_, what));
    left_ -= bytes;
  }

  void skip(std::uint64_t bytes, const char* what) {
    if (bytes > left_) throw IOError(fmt::format("{}: truncated inside {}", name_, what));
    in_.seekg(static_cast<std::streamoff>(bytes), std::ios::cur);
    if (!in_) throw IOError(fmt::format("{}: read error in {}", name_, what));
    left_ -= bytes;
  }

  RowMatrix matrix(Eigen::Index rows, Eigen::Index cols, const char* what) {
    RowMatrix m(rows, cols);
    read(m.data(), static_cast<std::uint64_t>(rows * cols) * sizeof(float), what);
    return m;
  }

 private:
  std::string_view name_;
  std::istream& in_;
  std::uint64_t left_;
};

}  // namespace

LlamaModel LlamaModel::load(const std::filesystem::path& path) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) throw IOError(fmt::format("{}: cannot read the checkpoint: {}", path.string(), ec.message()));
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IOError(fmt::format("{}: cannot open the checkpoint", path.string()));
  return load(in, size, path.string());
}

LlamaModel LlamaModel::load(std::istream& in, std::uint64_t size, std::string_view name) {
  CheckpointReader r(name, in, size);
  std::int32_t header[7];
  r.read(header, sizeof header, "the 28-byte header");
  LlamaConfig c;
  c.dim = header[0];
  c.hidden_dim = header[1];
  c.n_layers = header[2];
  c.n_heads = header[3];
  c.n_kv_heads = header[4];
  c.shared_classifier = header[5] > 0;
  c.vocab_size = header[5] == std::numeric_limits<std::int32_t>::min() ? 0 : std::abs(header[5]);
  c.seq_len = header[6];
  try {
    c.validate();
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(fmt::format("{}: not a llama2.c v0 checkpoint: {}", name, e.what()));
  }
  // Check the size before allocating anything, so a corrupt header cannot ask for terabytes.
  // validate() bounded the parameters by 2^62 and seq_len and head_size are below 2^31, so
  // none of these sums and products wraps.
  const auto floats = static_cast<std::uint64_t>(c.parameters()) +
                      static_cast<std::uint64_t>(c.seq_len) * static_cast<std::uint64_t>(c.head_size());
  const std::uint64_t expected = sizeof header + floats * sizeof(float);
  if (size != expected) {
    throw std::invalid_argument(fmt::format(
        "{}: {} bytes, but a llama2.c v0 checkpoint with dim={} hidden_dim={} n_layers={} n_heads={} n_kv_heads={} "
        "vocab_size={} seq_len={} has {} ({})",
        name, size, c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, header[5], c.seq_len, expected,
        size < expected ? "truncated" : "trailing bytes"));
  }

  const int d = c.dim, kv = c.kv_dim(), h = c.hidden_dim, L = c.n_layers;
  LlamaWeights w;
  w.embedding = r.matrix(c.vocab_size, d, "the token embedding");
  w.layers.resize(static_cast<std::size_t>(L));
  // Each tensor is stored for all layers at once: all of wq, then all of wk, and so on.
  for (auto& layer : w.layers) layer.attention_norm = r.matrix(d, 1, "rms_att_weight");
  for (auto& layer : w.layers) layer.wq = r.matrix(d, d, "wq");
  for (auto& layer : w.layers) layer.wk = r.matrix(kv, d, "wk");
  for (auto& layer : w.layers) layer.wv = r.matrix(kv, d, "wv");
  for (auto& layer : w.layers) layer.wo = r.matrix(d, d, "wo");
  for (auto& layer : w.layers) layer.ffn_norm = r.matrix(d, 1, "rms_ffn_weight");
  for (auto& layer : w.layers) layer.w1 = r.matrix(h, d, "w1");
  for (auto& layer : w.layers) layer.w2 = r.matrix(d, h, "w2");
  for (auto& layer : w.layers) layer.w3 = r.matrix(h, d, "w3");
  w.final_norm = r.matrix(d, 1, "rms_final_weight");
  r.skip(static_cast<std::uint64_t>(c.seq_len) * static_cast<std::uint64_t>(c.head_size()) * sizeof(float),
         "the obsolete RoPE tables");
  if (!c.shared_classifier) w.classifier = r.matrix(c.vocab_size, d, "the classifier");
  try {
    return LlamaModel(c, std::move(w));  // checks that every weight is finite
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(fmt::format("{}: {}", name, e.what()));
  }
}

namespace {

// y = rmsnorm(x) * weight, row by row, as run.c: sum of squares in float, 1 / sqrt(mean + eps).
void rmsnorm_rows(const RowMatrix& x, const Vector& weight, float eps, RowMatrix& out) {
  out.resize(x.rows(), x.cols());
  const auto n = static_cast<float>(x.cols());
  for (Eigen::Index i = 0; i < x.rows(); ++i) {
    const float ss = x.row(i).squaredNorm() / n + eps;
    const float scale = 1.0f / std::sqrt(ss);
    out.row(i) = (x.row(i).array() * scale) * weight.transpose().array();
  }
}

void rotate(float* v, int width, int head_size, const float* rope_row) {
  for (int i = 0; i < width; i += 2) {
    const int j = i % head_size;
    const float c = rope_row[j], s = rope_row[j + 1];
    const float a = v[i], b = v[i + 1];
    v[i] = a * c - b * s;
    v[i + 1] = a * s + b * c;
  }
}

}  // namespace

namespace {

template <int HS>
inline float dot(const float* a, const float* b, int hs) {
  const int n = HS > 0 ? HS : hs;  // a compile-time size when the head size is a common one
  float acc = 0.0f;
  for (int e = 0; e < n; ++e) acc += a[e] * b[e];
  return acc;
}

// out = sum over positions p of weights[p] * scale * V[p]. A fixed head size accumulates in
// registers (no stores through `out` that the compiler must assume alias V).
template <int HS>
inline void weighted_sum(const float* weights, float scale, std::span<const KVRun> runs, float* out, int hs) {
  if constexpr (HS > 0) {
    float acc[HS] = {};
    std::size_t p = 0;
    for (const KVRun& run : runs) {
      for (std::size_t r = 0; r < run.count; ++r, ++p) {
        const float* v = run.v + r * run.stride;
        const float w = weights[p] * scale;
        for (int e = 0; e < HS; ++e) acc[e] += w * v[e];
      }
    }
    std::copy(acc, acc + HS, out);
  } else {
    std::fill(out, out + hs, 0.0f);
    std::size_t p = 0;
    for (const KVRun& run : runs) {
      for (std::size_t r = 0; r < run.count; ++r, ++p) {
        const float* v = run.v + r * run.stride;
        const float w = weights[p] * scale;
        for (int e = 0; e < hs; ++e) out[e] += w * v[e];
      }
    }
  }
}

// Attention of the `group` query heads that share one KV head, for one query position, over the
// positions listed by `runs` (n in all): scores, softmax, weighted sum of V into `out`.
template <int HS>
void attend(const float* q, float* out, int group, int hs, std::span<const KVRun> runs, std::size_t n, float scale,
            float* scores, float* group_tmp) {
  float* max_score = group_tmp;
  float* inv_sum = group_tmp + group;
  for (int g = 0; g < group; ++g) max_score[g] = -std::numeric_limits<float>::infinity();
  std::size_t p = 0;
  for (const KVRun& run : runs) {
    for (std::size_t r = 0; r < run.count; ++r, ++p) {
      const float* k = run.k + r * run.stride;
      for (int g = 0; g < group; ++g) {
        const float sc = dot<HS>(q + g * hs, k, hs) * scale;
        scores[static_cast<std::size_t>(g) * n + p] = sc;
        max_score[g] = std::max(max_score[g], sc);
      }
    }
  }
  for (int g = 0; g < group; ++g) {
    Eigen::Map<Eigen::ArrayXf> row(scores + static_cast<std::size_t>(g) * n, static_cast<Eigen::Index>(n));
    row = (row - max_score[g]).exp();  // vectorised exp
    inv_sum[g] = 1.0f / row.sum();
  }
  for (int g = 0; g < group; ++g) {
    weighted_sum<HS>(scores + static_cast<std::size_t>(g) * n, inv_sum[g], runs, out + g * hs, hs);
  }
}

using AttendFn = void (*)(const float*, float*, int, int, std::span<const KVRun>, std::size_t, float, float*, float*);

AttendFn attend_for(int hs) {
  switch (hs) {
    case 8: return &attend<8>;
    case 16: return &attend<16>;
    case 32: return &attend<32>;
    case 64: return &attend<64>;
    case 128: return &attend<128>;
    default: return &attend<0>;
  }
}

}  // namespace

void LlamaModel::attention(const ForwardChunk& chunk, std::size_t row0, int layer, ForwardScratch& s) const {
  const int hs = config_.head_size(), kv_dim = config_.kv_dim(), group = config_.n_heads / config_.n_kv_heads;
  const std::size_t width = config_.kv_entry_width();
  const std::size_t k_off = static_cast<std::size_t>(layer) * 2 * static_cast<std::size_t>(kv_dim);
  const std::size_t page_size = chunk.kv.page_size();
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  const std::size_t m = chunk.tokens.size();
  const std::size_t context = chunk.start + m;
  if (s.scores.size() < static_cast<std::size_t>(group) * context) s.scores.resize(static_cast<std::size_t>(group) * context);
  s.group_tmp.resize(2 * static_cast<std::size_t>(group));
  const AttendFn fn = attend_for(hs);

  for (int kvh = 0; kvh < config_.n_kv_heads; ++kvh) {
    // Earlier positions, a page at a time (its rows are entry_width apart); then this step's rows.
    s.runs.clear();
    for (std::size_t p = 0; p < chunk.start; p += page_size) {
      const float* base = chunk.kv.row(p) + k_off + static_cast<std::size_t>(kvh * hs);
      s.runs.push_back({base, base + kv_dim, width, std::min(page_size, chunk.start - p)});
    }
    const std::size_t earlier = s.runs.size();
    for (std::size_t i = 0; i < m; ++i) {
      const auto row = static_cast<Eigen::Index>(row0 + i);
      // Row i of the chunk sees the chunk's rows 0..i.
      s.runs.resize(earlier);
      s.runs.push_back({s.k.row(static_cast<Eigen::Index>(row0)).data() + kvh * hs,
                        s.v.row(static_cast<Eigen::Index>(row0)).data() + kvh * hs, static_cast<std::size_t>(kv_dim),
                        i + 1});
      fn(s.q.row(row).data() + kvh * group * hs, s.attn.row(row).data() + kvh * group * hs, group, hs, s.runs,
         chunk.start + i + 1, scale, s.scores.data(), s.group_tmp.data());
    }
  }
}

void LlamaModel::forward(std::span<const ForwardChunk> chunks, std::span<float> kv_out, std::span<float> logits_out,
                         ForwardScratch& s) const {
  const LlamaConfig& c = config_;
  const std::size_t width = c.kv_entry_width();
  std::size_t total = 0, with_logits = 0;
  for (const ForwardChunk& ch : chunks) {
    if (ch.tokens.empty()) throw std::invalid_argument("LlamaModel::forward: an empty chunk");
    if (ch.start + ch.tokens.size() > static_cast<std::size_t>(c.seq_len)) {
      throw std::invalid_argument(fmt::format("LlamaModel::forward: positions up to {} exceed the model's seq_len {}",
                                              ch.start + ch.tokens.size(), c.seq_len));
    }
    if (ch.kv.capacity() < ch.start) {
      throw std::invalid_argument(fmt::format(
          "LlamaModel::forward: a block table of {} pages cannot hold {} earlier positions", ch.kv.table().size(),
          ch.start));
    }
    // An empty view (no earlier positions) has no entries to disagree with.
    if (!ch.kv.table().empty() && ch.kv.entry_width() != width) {
      throw std::invalid_argument(fmt::format("LlamaModel::forward: the cache's entries are {} floats, the model's {}",
                                              ch.kv.entry_width(), width));
    }
    for (const TokenId t : ch.tokens) {
      if (t < 0 || t >= static_cast<TokenId>(c.vocab_size)) {
        throw std::invalid_argument(fmt::format("LlamaModel::forward: token id {} is outside [0, {})", t, c.vocab_size));
      }
    }
    total += ch.tokens.size();
    with_logits += ch.want_logits ? 1 : 0;
  }
  if (kv_out.size() != total * width) {
    throw std::invalid_argument(
        fmt::format("LlamaModel::forward: kv_out holds {} floats, the step needs {}", kv_out.size(), total * width));
  }
  if (logits_out.size() != with_logits * static_cast<std::size_t>(c.vocab_size)) {
    throw std::invalid_argument(fmt::format("LlamaModel::forward: logits_out holds {} floats, the step needs {}",
                                            logits_out.size(), with_logits * static_cast<std::size_t>(c.vocab_size)));
  }

  const auto rows = static_cast<Eigen::Index>(total);
  s.x.resize(rows, c.dim);
  s.attn.resize(rows, c.dim);
  {
    Eigen::Index r = 0;
    for (const ForwardChunk& ch : chunks) {
      for (const TokenId t : ch.tokens) s.x.row(r++) = weights_.embedding.row(t);
    }
  }
  const int hs = c.head_size(), kv_dim = c.kv_dim();
  for (int l = 0; l < c.n_layers; ++l) {
    const LlamaLayer& L = weights_.layers[static_cast<std::size_t>(l)];
    rmsnorm_rows(s.x, L.attention_norm, c.rms_eps, s.xb);
    s.q.noalias() = s.xb * L.wq.transpose();
    s.k.noalias() = s.xb * L.wk.transpose();
    s.v.noalias() = s.xb * L.wv.transpose();
    std::size_t row0 = 0;
    for (const ForwardChunk& ch : chunks) {
      for (std::size_t i = 0; i < ch.tokens.size(); ++i) {
        const float* rope_row = rope_.data() + (ch.start + i) * static_cast<std::size_t>(hs);
        const auto r = static_cast<Eigen::Index>(row0 + i);
        rotate(s.q.row(r).data(), c.dim, hs, rope_row);
        rotate(s.k.row(r).data(), kv_dim, hs, rope_row);
        // This layer's K and V of the token, into its KV entry.
        float* entry = kv_out.data() + (row0 + i) * width + static_cast<std::size_t>(l) * 2 * kv_dim;
        std::memcpy(entry, s.k.row(r).data(), sizeof(float) * static_cast<std::size_t>(kv_dim));
        std::memcpy(entry + kv_dim, s.v.row(r).data(), sizeof(float) * static_cast<std::size_t>(kv_dim));
      }
      attention(ch, row0, l, s);
      row0 += ch.tokens.size();
    }
    s.x.noalias() += s.attn * L.wo.transpose();
    rmsnorm_rows(s.x, L.ffn_norm, c.rms_eps, s.xb);
    s.h1.noalias() = s.xb * L.w1.transpose();
    s.h3.noalias() = s.xb * L.w3.transpose();
    // SwiGLU: silu(w1 x) * (w3 x), silu(a) = a / (1 + e^-a).
    s.h1 = (s.h1.array() * (1.0f / (1.0f + (-s.h1.array()).exp()))) * s.h3.array();
    s.x.noalias() += s.h1 * L.w2.transpose();
  }

  // Logits only for the rows asked for.
  s.logits_rows.resize(static_cast<Eigen::Index>(with_logits), c.dim);
  {
    Eigen::Index out = 0;
    std::size_t row0 = 0;
    for (const ForwardChunk& ch : chunks) {
      row0 += ch.tokens.size();
      if (ch.want_logits) s.logits_rows.row(out++) = s.x.row(static_cast<Eigen::Index>(row0 - 1));
    }
  }
  if (with_logits == 0) return;
  rmsnorm_rows(s.logits_rows, weights_.final_norm, c.rms_eps, s.xb);
  const RowMatrix& classifier = c.shared_classifier ? weights_.embedding : weights_.classifier;
  Eigen::Map<RowMatrix> logits(logits_out.data(), static_cast<Eigen::Index>(with_logits), c.vocab_size);
  logits.noalias() = s.xb * classifier.transpose();
}

}  // namespace llmds
