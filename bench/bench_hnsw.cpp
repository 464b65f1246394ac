// HNSW and its distance kernels: kernel cost per call, index build, and single-query search with
// recall@10 reported beside the speed.
//   build/bench/bench_hnsw --benchmark_counters_tabular=true
//   build/bench/bench_hnsw --benchmark_filter=Synthetic      # no data files needed
//
// Fashion-MNIST (784-d, the uint8 pixels as float32, squared L2; ann-benchmarks'
// fashion-mnist-784-euclidean) is read from $LLMDS_DATA_DIR/ann/fashion-mnist (default
// ../shared/data); those benchmarks are skipped with a message when the files or zlib are absent.
// Graph parameters everywhere: M = 16, ef_construction = 200, seed 100, the setting of the
// hnswlib reference numbers in the data folder's README, so the recall counters compare directly.
//
// Recall@10 is tie-aware, as in ann-benchmarks: a result is a hit when its exact distance is at
// most the 10th true distance. It is computed after the timed loop, over a fixed set of queries.
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#ifdef LLMDS_BENCH_HAVE_ZLIB
#include <zlib.h>
#endif

#include "llmds/ann/distance.hpp"
#include "llmds/ann/hnsw.hpp"

#include "data_dir.hpp"
#include "gaussian_rows.hpp"

namespace {

using llmds::HNSW;
using llmds::HNSWConfig;

constexpr std::size_t kK = 10;
constexpr std::uint64_t kSeed = 100;

HNSWConfig bench_config(std::size_t dim, std::size_t capacity) {
  HNSWConfig c;
  c.dim = dim;
  c.M = 16;
  c.ef_construction = 200;
  c.seed = kSeed;
  c.initial_capacity = capacity;
  return c;
}

std::vector<std::int64_t> iota_ids(std::size_t n) {
  std::vector<std::int64_t> ids(n);
  std::iota(ids.begin(), ids.end(), 0);
  return ids;
}

using llmds::testing::gaussian_rows;

// --- data ---------------------------------------------------------------------------------------

// A base set with queries and, per query, the distance a result may have and still be a hit.
struct DataSet {
  std::size_t dim = 0;
  std::vector<float> base;
  std::vector<float> queries;
  std::vector<double> kth;  // the exact k-th nearest distance per query
  std::string error;        // why it could not be loaded; empty when loaded

  [[nodiscard]] std::size_t size() const { return dim == 0 ? 0 : base.size() / dim; }
  [[nodiscard]] std::size_t num_queries() const { return dim == 0 ? 0 : queries.size() / dim; }
  [[nodiscard]] const float* query(std::size_t i) const { return queries.data() + i * dim; }
};

// Squared L2 in double: exact for Fashion-MNIST's small integers, and close enough for the
// synthetic data, whose recall needs only a consistent ordering.
double exact_l2(const float* a, const float* b, std::size_t dim) {
  double s = 0;
  for (std::size_t i = 0; i < dim; ++i) {
    const double d = double(a[i]) - double(b[i]);
    s += d * d;
  }
  return s;
}

double tie_aware_recall(const DataSet& data, std::size_t query, const std::vector<HNSW::Result>& found) {
  std::size_t hits = 0;
  for (const auto& r : found) {
    const float* v = data.base.data() + static_cast<std::size_t>(r.id) * data.dim;
    hits += exact_l2(v, data.query(query), data.dim) <= data.kth[query] ? 1 : 0;
  }
  return double(hits) / double(kK);
}

#ifdef LLMDS_BENCH_HAVE_ZLIB
std::vector<unsigned char> gunzip(const std::filesystem::path& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (f == nullptr) throw std::runtime_error("cannot open " + path.string());
  std::vector<unsigned char> out;
  unsigned char buf[1 << 16];
  for (int got; (got = gzread(f, buf, sizeof buf)) > 0;) out.insert(out.end(), buf, buf + got);
  gzclose(f);
  return out;
}

// An IDX image file (magic 2051, big-endian n, rows, cols) as float32 rows, pixels unscaled.
std::vector<float> read_idx_images(const std::filesystem::path& path, std::size_t limit, std::size_t& dim) {
  const auto raw = gunzip(path);
  auto be32 = [&](std::size_t at) {
    return std::uint32_t{raw[at]} << 24 | std::uint32_t{raw[at + 1]} << 16 | std::uint32_t{raw[at + 2]} << 8 |
           std::uint32_t{raw[at + 3]};
  };
  if (raw.size() < 16 || be32(0) != 2051) throw std::runtime_error(path.string() + " is not an IDX image file");
  const std::size_t n = std::min<std::size_t>(be32(4), limit);
  dim = std::size_t{be32(8)} * be32(12);
  if (raw.size() < 16 + n * dim) throw std::runtime_error(path.string() + " is truncated");
  return {raw.begin() + 16, raw.begin() + static_cast<std::ptrdiff_t>(16 + n * dim)};
}
#endif

// ivecs rows (int32 d, then d int32), first `rows` of them.
std::vector<std::int32_t> read_ivecs(const std::filesystem::path& path, std::size_t rows, std::size_t& d) {
  std::ifstream in(path, std::ios::binary);
  std::vector<std::int32_t> out;
  std::int32_t width = 0;
  for (std::size_t r = 0; r < rows && in.read(reinterpret_cast<char*>(&width), 4); ++r) {
    d = static_cast<std::size_t>(width);
    const std::size_t at = out.size();
    out.resize(at + d);
    in.read(reinterpret_cast<char*>(out.data() + at), static_cast<std::streamsize>(d * sizeof(std::int32_t)));
  }
  if (out.empty()) throw std::runtime_error("cannot read " + path.string());
  return out;
}

// The first base_limit training images and the first query_limit test images. With the full base
// set the shipped exact ground truth gives the k-th distances; for a prefix they are recomputed.
DataSet load_fashion(std::size_t base_limit, std::size_t query_limit) {
  DataSet d;
#ifndef LLMDS_BENCH_HAVE_ZLIB
  (void)base_limit;
  (void)query_limit;
  d.error = "built without zlib: cannot read the gzip-compressed Fashion-MNIST files";
#else
  const auto folder = llmds::test::data_dir() / "ann" / "fashion-mnist";
  const auto train = folder / "train-images-idx3-ubyte.gz";
  const auto test = folder / "t10k-images-idx3-ubyte.gz";
  const auto truth = folder / "fashion-mnist_groundtruth_l2sq.ivecs";
  for (const auto& p : {train, test, truth}) {
    if (!std::filesystem::exists(p)) {
      d.error = "needs " + p.string() + " (set LLMDS_DATA_DIR)";
      return d;
    }
  }
  try {
    std::size_t qdim = 0;
    d.base = read_idx_images(train, base_limit, d.dim);
    d.queries = read_idx_images(test, query_limit, qdim);
    const std::size_t nq = d.num_queries();
    d.kth.resize(nq);
    if (d.size() == 60000) {
      std::size_t width = 0;
      const auto t = read_ivecs(truth, nq, width);
      for (std::size_t q = 0; q < nq; ++q) d.kth[q] = t[q * width + kK - 1];
    } else {
      std::vector<double> all(d.size());
      for (std::size_t q = 0; q < nq; ++q) {
        for (std::size_t i = 0; i < d.size(); ++i) all[i] = exact_l2(d.base.data() + i * d.dim, d.query(q), d.dim);
        std::nth_element(all.begin(), all.begin() + kK - 1, all.end());
        d.kth[q] = all[kK - 1];
      }
    }
  } catch (const std::exception& e) {
    d = DataSet{};
    d.error = e.what();
  }
#endif
  return d;
}

// Rows x = A z + noise with z a 16-d Gaussian and A a fixed random dim x 16 matrix: vectors
// with a low intrinsic dimension, as embeddings have. (Pure dim-d Gaussian data, where every
// distance is nearly the same, would measure HNSW at its worst: recall@10 of 0.3 at ef = 10.)
std::vector<float> embedding_like_rows(std::size_t n, std::size_t dim, std::uint64_t seed) {
  constexpr std::size_t kLatent = 16;
  const auto a = gaussian_rows(dim, kLatent, 99);  // the same A for base and queries
  const auto z = gaussian_rows(n, kLatent, seed);
  auto rows = gaussian_rows(n, dim, seed + 1000);
  for (std::size_t i = 0; i < n; ++i) {
    for (std::size_t j = 0; j < dim; ++j) {
      float x = 0.1f * rows[i * dim + j];
      for (std::size_t l = 0; l < kLatent; ++l) x += a[j * kLatent + l] * z[i * kLatent + l];
      rows[i * dim + j] = x;
    }
  }
  return rows;
}

// Embedding-like vectors, the queries drawn from the same distribution, brute-force ground truth.
DataSet synthetic(std::size_t n, std::size_t dim, std::size_t num_queries) {
  DataSet d;
  d.dim = dim;
  d.base = embedding_like_rows(n, dim, 1);
  d.queries = embedding_like_rows(num_queries, dim, 2);
  d.kth.resize(num_queries);
  std::vector<double> all(n);
  for (std::size_t q = 0; q < num_queries; ++q) {
    for (std::size_t i = 0; i < n; ++i) all[i] = exact_l2(d.base.data() + i * dim, d.query(q), dim);
    std::nth_element(all.begin(), all.begin() + kK - 1, all.end());
    d.kth[q] = all[kK - 1];
  }
  return d;
}

// Loaded once per process: the Fashion search benchmarks share one data set and one index.
const DataSet& fashion_60k() {
  static const DataSet d = load_fashion(60000, 10000);
  return d;
}
const DataSet& fashion_10k_base() {
  static const DataSet d = load_fashion(10000, 0);
  return d;
}

std::unique_ptr<HNSW> build(const DataSet& d, std::size_t threads) {
  auto index = std::make_unique<HNSW>(bench_config(d.dim, d.size()));
  index->add_batch(d.base, iota_ids(d.size()), threads);
  return index;
}

// --- benchmarks -----------------------------------------------------------------------------------

// One kernel call on two vectors of range(0) floats that stay in L1: the arithmetic alone.
void BM_DistanceL2(benchmark::State& state) {
  const auto dim = static_cast<std::size_t>(state.range(0));
  const auto a = gaussian_rows(1, dim, 1), b = gaussian_rows(1, dim, 2);
  const auto& k = llmds::ann::best_kernels();
  for (auto _ : state) {
    benchmark::DoNotOptimize(a.data());
    benchmark::DoNotOptimize(k.l2sq(a.data(), b.data(), dim));
  }
  state.SetLabel(k.isa);
}

void BM_DistanceDot(benchmark::State& state) {
  const auto dim = static_cast<std::size_t>(state.range(0));
  const auto a = gaussian_rows(1, dim, 1), b = gaussian_rows(1, dim, 2);
  const auto& k = llmds::ann::best_kernels();
  for (auto _ : state) {
    benchmark::DoNotOptimize(a.data());
    benchmark::DoNotOptimize(k.dot(a.data(), b.data(), dim));
  }
  state.SetLabel(k.isa);
}

// One kernel call against a random row of a 256 MiB table: what a graph search pays per
// distance when the vector is not in cache and nothing prefetched it.
void BM_DistanceL2RandomRow(benchmark::State& state) {
  const auto dim = static_cast<std::size_t>(state.range(0));
  const std::size_t rows = (std::size_t{256} << 20) / (dim * sizeof(float));
  const auto table = gaussian_rows(rows, dim, 3);
  const auto q = gaussian_rows(1, dim, 4);
  std::vector<std::uint32_t> order(1 << 16);
  std::mt19937 rng(5);
  for (auto& o : order) o = static_cast<std::uint32_t>(rng() % rows);
  const auto& k = llmds::ann::best_kernels();
  std::size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(k.l2sq(q.data(), table.data() + std::size_t{order[i++ & 0xffff]} * dim, dim));
  }
  state.SetLabel(k.isa);
}

// add_batch of the whole set on range(1) threads, into an index with room for it.
void build_benchmark(benchmark::State& state, const DataSet& d) {
  if (!d.error.empty()) {
    state.SkipWithError(d.error.c_str());
    return;
  }
  const auto threads = static_cast<std::size_t>(state.range(1));
  const auto ids = iota_ids(d.size());
  std::size_t bytes = 0;
  for (auto _ : state) {
    auto index = std::make_unique<HNSW>(bench_config(d.dim, d.size()));
    index->add_batch(d.base, ids, threads);
    state.PauseTiming();  // the stats walk and the destructor's frees are not part of the build
    bytes = index->stats().memory_bytes;
    index.reset();
    state.ResumeTiming();
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * d.size()));
  state.counters["MiB"] = double(bytes) / double(1 << 20);
}

// Single-query search at ef = range(last), cycling through the queries; recall@10 over them all
// (or the first 1000) afterwards.
void search_benchmark(benchmark::State& state, const DataSet& d, const HNSW& index, std::size_t ef) {
  const std::size_t nq = d.num_queries();
  std::size_t q = 0;
  for (auto _ : state) {
    auto found = index.search({d.query(q), d.dim}, kK, ef);
    benchmark::DoNotOptimize(found.data());
    if (++q == nq) q = 0;
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));  // items/s = QPS
  double recall = 0;
  const std::size_t checked = std::min<std::size_t>(nq, 1000);
  for (std::size_t i = 0; i < checked; ++i) recall += tie_aware_recall(d, i, index.search({d.query(i), d.dim}, kK, ef));
  state.counters["recall@10"] = recall / double(checked);
}

void BM_BuildFashion(benchmark::State& state) {
  const DataSet& d = fashion_10k_base();
  if (d.error.empty() && d.size() != static_cast<std::size_t>(state.range(0))) {
    state.SkipWithError("unexpected Fashion-MNIST size");
    return;
  }
  build_benchmark(state, d);
}

void BM_SearchFashion(benchmark::State& state) {
  const DataSet& d = fashion_60k();
  if (!d.error.empty()) {
    state.SkipWithError(d.error.c_str());
    return;
  }
  // Built once, on one thread so the graph (and the recall counter) is the same on every run.
  static const std::unique_ptr<HNSW> index = build(d, 1);
  search_benchmark(state, d, *index, static_cast<std::size_t>(state.range(1)));
}

// Synthetic 128-d data: no files needed, so CI's smoke pass runs these at n = 1000.
const DataSet& synthetic_set(std::size_t n) {
  static std::map<std::size_t, DataSet> sets;
  auto it = sets.find(n);
  if (it == sets.end()) it = sets.emplace(n, synthetic(n, 128, 200)).first;
  return it->second;
}

void BM_BuildSynthetic(benchmark::State& state) {
  build_benchmark(state, synthetic_set(static_cast<std::size_t>(state.range(0))));
}

void BM_SearchSynthetic(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const DataSet& d = synthetic_set(n);
  static std::map<std::size_t, std::unique_ptr<HNSW>> indexes;
  auto& index = indexes[n];
  if (!index) index = build(d, 1);
  search_benchmark(state, d, *index, static_cast<std::size_t>(state.range(1)));
}

BENCHMARK(BM_DistanceL2)->Arg(128)->Arg(784);
BENCHMARK(BM_DistanceDot)->Arg(128)->Arg(784);
BENCHMARK(BM_DistanceL2RandomRow)->Arg(128)->Arg(784);
BENCHMARK(BM_BuildSynthetic)->ArgsProduct({{1000, 20000}, {1, 2}})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_SearchSynthetic)->ArgsProduct({{1000, 20000}, {10, 64, 256}})->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_BuildFashion)->ArgsProduct({{10000}, {1, 2}})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_SearchFashion)->ArgsProduct({{60000}, {10, 64, 256}})->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
