// Metric: how HNSW measures distance, by the names the Python API and hnswlib use. "l2" is the
// squared Euclidean distance (as hnswlib and FAISS report it), "ip" is 1 - dot, "cosine" is
// 1 - cosine similarity (HNSW normalises vectors when added and queries when searched, so it
// runs as "ip"). The kernels themselves are in ann/distance.hpp.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string_view>

#include <fmt/format.h>

namespace llmds {

enum class Metric : std::uint8_t { l2 = 0, ip = 1, cosine = 2 };

inline const char* metric_name(Metric m) noexcept {
  switch (m) {
    case Metric::l2: return "l2";
    case Metric::ip: return "ip";
    case Metric::cosine: return "cosine";
  }
  return "?";
}

/// The metric named "l2", "ip" or "cosine"; std::invalid_argument for any other name.
inline Metric parse_metric(std::string_view name) {
  if (name == "l2") return Metric::l2;
  if (name == "ip") return Metric::ip;
  if (name == "cosine") return Metric::cosine;
  throw std::invalid_argument(
      fmt::format("metric must be \"l2\", \"ip\" or \"cosine\", got \"{}\"", name));
}

}  // namespace llmds
