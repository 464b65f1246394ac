// HNSWConfig, what an HNSW index (ann/hnsw.hpp) is built with, each default with where it comes
// from; and HNSWStats, what it reports.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>

#include <fmt/format.h>

#include "llmds/ann/metric.hpp"
#include "llmds/detail/checked_size.hpp"

namespace llmds {

struct HNSWConfig {
  std::size_t dim = 0;
  std::size_t M = 16;                 // links per node on layers >= 1 (2M on layer 0); paper, hnswlib
  std::size_t ef_construction = 200;  // hnswlib's default
  std::size_t ef_search = 50;         // the Python API's default (hnswlib's is 10)
  double ml = 1.0 / std::log(2.0);    // the Python API's default level multiplier
  std::optional<std::uint64_t> seed = std::nullopt;  // none: a random seed per index
  Metric metric = Metric::l2;
  std::size_t initial_capacity = 1024;  // grows by doubling

  void validate() const {
    if (dim == 0) throw std::invalid_argument("HNSWConfig.dim must be at least 1");
    if (M < 2 || M > 2048) throw std::invalid_argument(fmt::format("HNSWConfig.M must be in [2, 2048], got {}", M));
    if (ef_construction < 1) throw std::invalid_argument("HNSWConfig.ef_construction must be at least 1");
    if (ef_search < 1) throw std::invalid_argument("HNSWConfig.ef_search must be at least 1");
    // A level is floor(-ln U * ml) with U in [2^-64, 1) (random_level), so at most 44.4 * ml:
    // the bound keeps an index under 711 layers. The paper's choice 1 / ln M is below 1.45 for
    // every M >= 2; larger multipliers only add layers of one node.
    if (!(ml > 0.0) || !(ml <= 16.0)) {
      throw std::invalid_argument(fmt::format("HNSWConfig.ml must be in (0, 16], got {}", ml));
    }
    if (initial_capacity > kMaxVectors) {
      throw std::invalid_argument(
          fmt::format("HNSWConfig.initial_capacity must be at most 2^32 - 1, got {}", initial_capacity));
    }
    // Every size the index allocates is a multiple of these; none may wrap.
    const std::size_t floats =
        detail::checked_mul(dim, std::max<std::size_t>(initial_capacity, 1), "HNSWConfig: dim x initial_capacity");
    (void)detail::checked_mul(floats, sizeof(float), "HNSWConfig: dim x initial_capacity x 4 bytes");
  }

  /// Slots are 32-bit: an index holds fewer than 2^32 vectors.
  static constexpr std::size_t kMaxVectors = (std::size_t{1} << 32) - 1;
};

struct HNSWStats {
  std::size_t num_vectors = 0;   // searchable (not deleted)
  std::size_t num_deleted = 0;
  std::size_t capacity = 0;
  std::size_t num_layers = 0;    // top level + 1; 0 when empty
  std::optional<std::int64_t> entry_point;  // id of the entry node
  std::uint64_t edges = 0;       // directed links over all layers
  std::size_t memory_bytes = 0;  // vectors, links, ids and the id map
  std::size_t dim = 0;           // the configuration these figures ran under
  std::size_t M = 0;
  std::size_t ef_construction = 0;
  std::size_t ef_search = 0;
  const char* metric = "";
  const char* isa = "";          // distance kernels in use

  /// Every figure by name (core/stats_fields.hpp).
  template <class Visit>
  void for_each_field(Visit&& visit) const {
    visit("num_vectors", num_vectors);
    visit("num_deleted", num_deleted);
    visit("capacity", capacity);
    visit("num_layers", num_layers);
    visit("entry_point", entry_point);
    visit("edges", edges);
    visit("memory_bytes", memory_bytes);
    visit("dim", dim);
    visit("M", M);
    visit("ef_construction", ef_construction);
    visit("ef_search", ef_search);
    visit("metric", metric);
    visit("simd", isa);
  }
};

}  // namespace llmds
