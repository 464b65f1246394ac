// Random vectors for the HNSW tests and benchmarks: n rows of dim independent standard normal
// floats, row-major, the same for the same seed on every platform that has std::mt19937_64
// (std::normal_distribution's algorithm is the library's, so libstdc++ builds agree).
#pragma once

#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

namespace llmds::testing {

inline std::vector<float> gaussian_rows(std::size_t n, std::size_t dim, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> v(n * dim);
  for (auto& x : v) x = normal(rng);
  return v;
}

}  // namespace llmds::testing
