// HNSW: approximate nearest-neighbour search on a Hierarchical Navigable Small World graph
// (Malkov and Yashunin, 2016).
//
// Every vector is a node of a proximity graph on layer 0; a random, geometrically shrinking
// subset (level ~ floor(-ln U * ml)) also lives on layers 1, 2, ..., each a sparser graph over
// longer distances. A search descends greedily from the single entry point on the top layer to
// layer 1, then runs a best-first search with a dynamic list of ef candidates on layer 0. Costs:
// search about O(log n * M * dim), insert about O(log n * ef_construction * M * dim).
//
// Design choices, and why:
// - Neighbour selection is the paper's heuristic (Algorithm 4): a candidate joins only if it is
//   closer to the new node than to every neighbour already chosen. It keeps edges that point in
//   different directions, which is what makes clustered data (and filtered search) navigable.
// - Layout: vectors in one contiguous, 64-byte aligned array by slot (so with a dimension that
//   is a multiple of 16, as most are, no SIMD load straddles two cache lines); layer-0 links in
//   another, a fixed-size [count, 2M ids] record per slot, so a search step reads one record and
//   then the vectors it names. Upper layers, held by few nodes, use a per-node array.
// - The search loop is bound by memory, not arithmetic: a 784-d vector is 49 cache lines, and
//   a distance takes ~30 ns from L1 against ~200 ns from DRAM (bench_hnsw's BM_DistanceL2 and
//   BM_DistanceL2RandomRow on a Zen 4 core). So each
//   expansion first collects the unvisited neighbours (asking for the first line of each),
//   then computes distances with whole vectors prefetched two ahead, and prefetches the link
//   record of the next node to expand. Each search or insert leases a Scratch (visited tags,
//   both heaps, buffers, an aligned copy of the query) from a pool, so it allocates nothing;
//   batch calls read the caller's rows in place and search_batch_into writes results straight
//   into the caller's arrays. The greedy descent through the upper layers skips nodes it has
//   already measured, which cannot change its path (see greedy_closest).
// - Levels: ml defaults to 1/ln 2 (the Python API's default), which gives about log2(n) layers, where the
//   paper's and hnswlib's 1/ln M gives log_M(n). Recall is the same either way; the extra layers
//   cost build time (each node on layer l >= 1 is inserted with a full ef_construction search
//   there): on Fashion-MNIST 10k a build with ml = 1/ln 16 takes about 0.57x the time.
// - Construction, where that cost lands, is bound by memory too: its searches (ef_construction
//   on every layer of the new node) and the heuristic's candidate-to-neighbour distances. An
//   insert remembers every distance it computes (Scratch::known), since the search on layer l
//   meets again the nodes measured on the layers above; the heuristic tries first the kept
//   neighbour that rejected the last candidate (select_neighbors); candidates compare as one
//   64-bit integer (Candidate); the next node's link record is requested one expansion early.
//   None of these changes a result: the graph is the one the plain algorithm builds.
// - Deletion marks a slot: it stays in the graph (removing it would cut paths through it) but is
//   never returned. add(..., replace_deleted = true) reuses a deleted slot for a new vector,
//   links it, and has the slot's old neighbours choose their links again (plan_repairs), so an
//   index under churn neither grows without bound nor keeps links that lead astray.
// - Filtered search follows the graph through every node but only admits allowed ones into the
//   result list, and keeps expanding until it holds ef allowed nodes; with a selective filter,
//   raise ef (the test at 10% selectivity uses ef = 200).
// - Concurrency: any number of searches may run at once (each takes its own Scratch from the
//   pool). add_batch inserts from several threads, locking one node's links at a time (lock
//   stripes) and the entry point while a new top level is set. A single-threaded build with a
//   seed is deterministic: the same graph and results on every run. Searches must not run
//   concurrently with adds; the Python binding enforces this with a reader-writer lock.
// - Metrics: "l2" is the squared Euclidean distance (as hnswlib and FAISS report it), "ip" is
//   1 - dot, "cosine" is 1 - cosine similarity (vectors are normalised when added, queries when
//   searched, so it runs as "ip").
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "llmds/ann/detail/hnsw_scratch.hpp"
#include "llmds/ann/distance.hpp"
#include "llmds/ann/hnsw_config.hpp"
#include "llmds/ann/metric.hpp"
#include "llmds/core/errors.hpp"
#include "llmds/core/stats_fields.hpp"
#include "llmds/detail/binary_io.hpp"
#include "llmds/detail/cache_line.hpp"
#include "llmds/detail/checked_size.hpp"
#include "llmds/detail/file_io.hpp"
#include "llmds/detail/parallel.hpp"

namespace llmds {

/// Which ids a filtered search may return.
using IdFilter = std::function<bool(std::int64_t)>;

class HNSW {
 public:
  using Label = std::int64_t;
  struct Result {
    Label id;
    float distance;
    friend bool operator==(const Result&, const Result&) = default;
  };

  explicit HNSW(HNSWConfig config)
      : config_((config.validate(), config)),
        m0_(2 * config_.M),
        kernels_(ann::best_kernels()),
        prefetch_lines_(std::min(kMaxPrefetchLines, (config_.dim * sizeof(float) + detail::kCacheLine - 1) / detail::kCacheLine)),
        rng_(config_.seed ? *config_.seed : std::random_device{}()) {
    reserve(config_.initial_capacity);
  }

  HNSW(const HNSW&) = delete;
  HNSW& operator=(const HNSW&) = delete;
  HNSW(HNSW&&) = delete;
  HNSW& operator=(HNSW&&) = delete;

  /// Adds one vector under id. Throws std::invalid_argument, adding nothing, for a wrong
  /// dimension, a NaN or infinity, a zero vector under "cosine", or an id already present
  /// (a deleted id included; unmark_deleted it, or add under a new id). With replace_deleted,
  /// the vector takes the slot of a deleted one if there is any. If memory runs out
  /// (std::bad_alloc), the index is as it was.
  void add(std::span<const float> vec, Label id, bool replace_deleted = false) {
    check_row(vec, "add");
    if (slot_of_.contains(id)) {
      throw std::invalid_argument(fmt::format("HNSW::add: id {} is already in the index", id));
    }
    if (size_ == capacity_ && !(replace_deleted && !deleted_slots_.empty())) reserve(capacity_ * 2);
    insert(vec.data(), id, replace_deleted, /*locked=*/false);
  }

  /// Adds n vectors (row-major, n x dim) under ids, on num_threads threads (0: all cores).
  /// Everything is checked before anything is added: the call adds all or nothing (but if memory
  /// runs out partway, the vectors added before stay: each add is whole). The rows are
  /// read in place (each is copied once, into the index), so the call needs no memory beyond
  /// the index's own. With replace_deleted, the rows that reuse deleted slots (the first ones, as
  /// many as there are deleted slots) are added one at a time before the others are spread over
  /// the threads. Multi-threaded builds are not deterministic; with a seed and one thread
  /// they are.
  void add_batch(std::span<const float> data, std::span<const Label> ids, std::size_t num_threads = 1,
                 bool replace_deleted = false) {
    const std::size_t n = ids.size();
    if (data.size() != n * config_.dim) {
      throw std::invalid_argument(fmt::format(
          "HNSW::add_batch: {} floats for {} vectors of dimension {}", data.size(), n, config_.dim));
    }
    for (std::size_t i = 0; i < n; ++i) check_row(data.subspan(i * config_.dim, config_.dim), "add_batch");
    {
      std::unordered_map<Label, std::size_t> seen;
      seen.reserve(n);
      for (std::size_t i = 0; i < n; ++i) {
        if (slot_of_.contains(ids[i]) || !seen.emplace(ids[i], i).second) {
          throw std::invalid_argument(fmt::format("HNSW::add_batch: id {} is {}", ids[i],
                                                  slot_of_.contains(ids[i]) ? "already in the index"
                                                                            : "given twice"));
        }
      }
    }
    const std::size_t reusable = replace_deleted ? std::min(n, deleted_slots_.size()) : 0;
    std::size_t need = size_ + (n - reusable);
    if (need > HNSWConfig::kMaxVectors) {
      throw std::length_error(fmt::format("HNSW::add_batch: {} vectors would pass the index's limit of 2^32 - 1", need));
    }
    if (need > capacity_) reserve(std::max(need, capacity_ * 2));
    slot_of_.reserve(slot_of_.size() + n);  // no rehash while threads insert
    // The rows that reuse deleted slots go first, one at a time. A reuse rewrites whole link
    // lists of the slot's old neighbours (plan_repairs), planned before they are written; a
    // concurrent insert's link into one of those lists in between would be overwritten, and the
    // node it linked could become unreachable.
    for (std::size_t i = 0; i < reusable; ++i) insert(data.data() + i * config_.dim, ids[i], true, /*locked=*/false);
    const std::size_t rest = n - reusable;
    const bool locked = detail::thread_count(num_threads, rest) > 1;
    detail::parallel_for(rest, num_threads, [&](std::size_t i) {
      insert(data.data() + (reusable + i) * config_.dim, ids[reusable + i], false, locked);
    });
  }

  /// The k nearest searchable vectors to query, nearest first (fewer if the index holds fewer).
  /// ef: the candidate list size (default ef_search; at least k is used). filter: only ids it
  /// accepts are returned. Throws std::invalid_argument for a wrong dimension, NaN/inf or k < 1.
  [[nodiscard]] std::vector<Result> search(std::span<const float> query, std::size_t k,
                                           std::optional<std::size_t> ef = std::nullopt,
                                           const IdFilter* filter = nullptr) const {
    if (k < 1) throw std::invalid_argument("HNSW::search: k must be at least 1");
    if (ef && *ef < 1) throw std::invalid_argument("HNSW::search: ef must be at least 1");
    check_row(query, "search");
    auto s = lease_scratch();
    search_prepared(*s, query.data(), k, std::max(k, ef.value_or(config_.ef_search)), filter);
    std::vector<Result> out(s->top.size());
    for (std::size_t i = 0; i < out.size(); ++i) out[i] = {labels_[s->top[i].slot], s->top[i].distance};
    return out;
  }

  /// Searches n queries (row-major) on num_threads threads (0: all cores); row i of the result
  /// answers query i. The filter, if any, must be safe to call from several threads.
  [[nodiscard]] std::vector<std::vector<Result>> search_batch(
      std::span<const float> queries, std::size_t k, std::optional<std::size_t> ef = std::nullopt,
      std::size_t num_threads = 1, const IdFilter* filter = nullptr) const {
    const std::size_t n = check_batch(queries, k, ef, "search_batch");
    const std::size_t width = std::max(k, ef.value_or(config_.ef_search));
    std::vector<std::vector<Result>> out(n);
    detail::parallel_for(n, num_threads, [&](std::size_t i) {
      auto s = lease_scratch();
      search_prepared(*s, queries.data() + i * config_.dim, k, width, filter);
      out[i].resize(s->top.size());
      for (std::size_t j = 0; j < out[i].size(); ++j) out[i][j] = {labels_[s->top[j].slot], s->top[j].distance};
    });
    return out;
  }

  /// search_batch that writes into caller-owned row-major n x k arrays instead of allocating:
  /// ids[i * k + j] and distances[i * k + j] are the j-th nearest to query i; rows with fewer
  /// than k results are padded with id -1 and distance +infinity. The Python binding writes
  /// straight into its numpy results this way. As in search_batch, the filter, if any, must be
  /// safe to call from several threads. Throws std::invalid_argument as search_batch does, and
  /// when ids or distances do not hold n x k values; nothing is written then.
  void search_batch_into(std::span<const float> queries, std::size_t k, std::span<Label> ids,
                         std::span<float> distances, std::optional<std::size_t> ef = std::nullopt,
                         std::size_t num_threads = 1, const IdFilter* filter = nullptr) const {
    const std::size_t n = check_batch(queries, k, ef, "search_batch_into");
    if (ids.size() != n * k || distances.size() != n * k) {
      throw std::invalid_argument(fmt::format("HNSW::search_batch_into: {} queries and k = {} need {} ids "
                                              "and distances, got {} and {}", n, k, n * k, ids.size(),
                                              distances.size()));
    }
    const std::size_t width = std::max(k, ef.value_or(config_.ef_search));
    detail::parallel_for(n, num_threads, [&](std::size_t i) {
      auto s = lease_scratch();
      search_prepared(*s, queries.data() + i * config_.dim, k, width, filter);
      for (std::size_t j = 0; j < k; ++j) {
        const bool have = j < s->top.size();
        ids[i * k + j] = have ? labels_[s->top[j].slot] : Label{-1};
        distances[i * k + j] = have ? s->top[j].distance : std::numeric_limits<float>::infinity();
      }
    });
  }

  /// Excludes id from results; it stays in the graph as a waypoint. Throws llmds::KeyError for
  /// an unknown id, std::invalid_argument if already deleted.
  void mark_deleted(Label id) {
    const auto slot = slot_for(id, "mark_deleted");
    if (deleted_[slot]) throw std::invalid_argument(fmt::format("HNSW::mark_deleted: id {} is already deleted", id));
    deleted_[slot] = 1;
    deleted_slots_.push_back(slot);
    ++num_deleted_;
  }

  /// Makes a deleted id searchable again. Throws llmds::KeyError / std::invalid_argument.
  void unmark_deleted(Label id) {
    const auto slot = slot_for(id, "unmark_deleted");
    if (!deleted_[slot]) throw std::invalid_argument(fmt::format("HNSW::unmark_deleted: id {} is not deleted", id));
    deleted_[slot] = 0;
    deleted_slots_.erase(std::find(deleted_slots_.begin(), deleted_slots_.end(), slot));
    --num_deleted_;
  }

  [[nodiscard]] bool contains(Label id) const { return slot_of_.contains(id); }
  [[nodiscard]] bool is_deleted(Label id) const { return deleted_[slot_for(id, "is_deleted")] != 0; }
  /// Searchable vectors.
  [[nodiscard]] std::size_t size() const noexcept { return size_ - num_deleted_; }
  [[nodiscard]] std::size_t capacity() const noexcept { return capacity_; }
  [[nodiscard]] const HNSWConfig& config() const noexcept { return config_; }
  [[nodiscard]] std::size_t ef_search() const noexcept { return config_.ef_search; }
  void set_ef_search(std::size_t ef) {
    if (ef < 1) throw std::invalid_argument("HNSW: ef_search must be at least 1");
    config_.ef_search = ef;
  }

  /// The stored vector of id (normalised, under "cosine"). Throws llmds::KeyError.
  [[nodiscard]] std::vector<float> get_vector(Label id) const {
    const float* v = vector_of(slot_for(id, "get_vector"));
    return {v, v + config_.dim};
  }

  /// Grows the slot arrays to hold at least capacity vectors. Not concurrent with anything.
  void reserve(std::size_t capacity) {
    if (capacity <= capacity_) return;
    if (capacity > HNSWConfig::kMaxVectors) {
      if (capacity_ == HNSWConfig::kMaxVectors) throw std::length_error("HNSW: the index holds 2^32 - 1 vectors already");
      capacity = HNSWConfig::kMaxVectors;
    }
    vectors_.resize(detail::checked_mul(capacity, config_.dim, "HNSW::reserve: capacity x dim"));
    links0_.resize(detail::checked_mul(capacity, m0_ + 1, "HNSW::reserve: capacity x links"), 0);
    upper_.resize(capacity);
    levels_.resize(capacity, 0);
    labels_.resize(capacity, 0);
    deleted_.resize(capacity, 0);
    capacity_ = capacity;
    scratch_pool_.set_slots(capacity);  // pooled visited sets are sized for the old capacity
  }

  [[nodiscard]] HNSWStats stats() const {
    HNSWStats s;
    s.num_vectors = size();
    s.num_deleted = num_deleted_;
    s.capacity = capacity_;
    s.num_layers = size_ == 0 ? 0 : static_cast<std::size_t>(max_level_) + 1;
    if (size_ > 0) s.entry_point = labels_[entry_];
    std::size_t upper_bytes = 0;
    for (Slot i = 0; i < size_; ++i) {
      for (int l = 0; l <= levels_[i]; ++l) s.edges += links(i, l).size();
      upper_bytes += upper_[i].capacity() * sizeof(std::uint32_t);
    }
    s.memory_bytes = vectors_.capacity() * sizeof(float) + links0_.capacity() * sizeof(std::uint32_t) +
                     upper_.capacity() * sizeof(upper_[0]) + upper_bytes +
                     levels_.capacity() * sizeof(int) + labels_.capacity() * sizeof(Label) +
                     deleted_.capacity() + slot_of_.size() * (sizeof(Label) + sizeof(std::uint32_t) + 16) +
                     slot_of_.bucket_count() * sizeof(void*);
    s.dim = config_.dim;
    s.M = config_.M;
    s.ef_construction = config_.ef_construction;
    s.ef_search = config_.ef_search;
    s.metric = metric_name(config_.metric);
    s.isa = kernels_.isa;
    return s;
  }

  // --- persistence (hnsw_io.hpp) ------------------------------------------------------------

  static constexpr std::string_view kMagic = "LLMDSHNS";
  static constexpr std::uint32_t kFormatVersion = 1;

  /// The whole index (parameters, vectors, graph, ids, deletions) as bytes: magic, format
  /// version, little-endian payload, checksum.
  [[nodiscard]] std::string to_bytes() const;

  /// Rebuilds an index from to_bytes() output. Throws std::invalid_argument for anything that is
  /// not a complete, uncorrupted index of this format version that add() could have built:
  /// besides the checksum, every size is checked against the bytes that hold it before anything
  /// is allocated, and every field against its meaning (finite vectors, unit vectors under
  /// "cosine", distinct ids, links to existing nodes on their layers without repeats, a
  /// consistent entry point).
  static std::unique_ptr<HNSW> from_bytes(std::string_view bytes);

  void save(const std::filesystem::path& path) const { detail::write_file(path, to_bytes()); }
  static std::unique_ptr<HNSW> load(const std::filesystem::path& path) {
    return from_bytes(detail::read_file(path));
  }

 private:
  using Slot = ann::detail::Slot;
  using Candidate = ann::detail::Candidate;
  using Scratch = ann::detail::Scratch;

  static constexpr Slot kNone = std::numeric_limits<Slot>::max();
  static constexpr std::size_t kLockStripes = 4096;
  // How far ahead (in vectors) a distance loop prefetches whole vectors, and how much of one it
  // prefetches: all of a 784-d vector; longer vectors rely on the hardware prefetcher, which by
  // then has seen a sequential stream. Measured on Fashion-MNIST (60k and 10k): one ahead is
  // 5-10% slower, three ahead no better; 4 or 16 lines instead of the whole vector within noise.
  static constexpr std::size_t kPrefetchAhead = 2;
  static constexpr std::size_t kMaxPrefetchLines = 64;

  // The distance of config_.metric, captured once. Hot loops copy it into a local so the kernel
  // pointer, dimension and metric stay in registers: through `this` the compiler would reload
  // them after every (opaque) kernel call.
  struct Distance {
    ann::DistanceKernel kernel;
    std::size_t dim;
    bool from_dot;  // "ip" and "cosine": 1 - dot
    float operator()(const float* a, const float* b) const noexcept {
      const float d = kernel(a, b, dim);
      return from_dot ? 1.0f - d : d;
    }
  };

  // One search's or insert's working memory, from the pool (so a warm search allocates nothing).
  ann::detail::ScratchPool::Lease lease_scratch() const {
    return scratch_pool_.lease([this] { return make_scratch(); });
  }

  // Buffers sized for the largest use up front, so they never grow inside a search.
  std::unique_ptr<Scratch> make_scratch() const {
    auto s = std::make_unique<Scratch>();
    s->fresh.reserve(m0_);
    s->to_measure.reserve(m0_);
    s->links.reserve(m0_);
    // ef_construction is a bound, and may be far above what the index can ever hold.
    s->pool.reserve(std::max(std::min(config_.ef_construction, capacity_), m0_ + 1));
    s->kept.reserve(m0_);
    s->relink_pool.reserve(m0_ + 1);
    s->relink_kept.reserve(m0_);
    s->check_order.reserve(m0_);
    s->query.resize(config_.dim);
    return s;
  }

  // Throws (as add and search document) unless v is a finite vector of the index's dimension,
  // and, under "cosine", not zero. Reads v in place: nothing is copied.
  void check_row(std::span<const float> v, const char* op) const {
    if (v.size() != config_.dim) {
      throw std::invalid_argument(
          fmt::format("HNSW::{}: expected dimension {}, got {}", op, config_.dim, v.size()));
    }
    for (const float x : v) {
      if (!std::isfinite(x)) throw std::invalid_argument(fmt::format("HNSW::{}: the vector holds NaN or infinity", op));
    }
    if (config_.metric == Metric::cosine) {
      const float norm = std::sqrt(kernels_.dot(v.data(), v.data(), v.size()));
      if (!(norm > 0.0f) || !std::isfinite(norm)) {
        throw std::invalid_argument(fmt::format("HNSW::{}: a zero vector has no cosine distance", op));
      }
    }
  }

  // The arguments of a batch search, checked: every query before any is searched. Returns n.
  std::size_t check_batch(std::span<const float> queries, std::size_t k, const std::optional<std::size_t>& ef,
                          const char* op) const {
    if (k < 1) throw std::invalid_argument(fmt::format("HNSW::{}: k must be at least 1", op));
    if (ef && *ef < 1) throw std::invalid_argument(fmt::format("HNSW::{}: ef must be at least 1", op));
    if (queries.size() % config_.dim != 0) {
      throw std::invalid_argument(fmt::format(
          "HNSW::{}: {} floats are not rows of dimension {}", op, queries.size(), config_.dim));
    }
    const std::size_t n = queries.size() / config_.dim;
    for (std::size_t i = 0; i < n; ++i) check_row(queries.subspan(i * config_.dim, config_.dim), op);
    return n;
  }

  // Scales v (dim floats, in place) to unit length: the stored form of a "cosine" vector.
  void normalize(float* v) const noexcept {
    const float norm = std::sqrt(kernels_.dot(v, v, config_.dim));
    for (std::size_t i = 0; i < config_.dim; ++i) v[i] /= norm;
  }

  Slot slot_for(Label id, const char* op) const {
    const auto it = slot_of_.find(id);
    if (it == slot_of_.end()) throw KeyError(fmt::format("HNSW::{}: no vector with id {}", op, id));
    return it->second;
  }

  [[nodiscard]] Distance distance_fn() const noexcept {
    if (config_.metric == Metric::l2) return {kernels_.l2sq, config_.dim, false};
    return {kernels_.dot, config_.dim, true};
  }
  [[nodiscard]] const float* vector_of(Slot s) const noexcept { return vectors_.data() + std::size_t{s} * config_.dim; }
  [[nodiscard]] float* vector_of(Slot s) noexcept { return vectors_.data() + std::size_t{s} * config_.dim; }
  [[nodiscard]] std::size_t max_links(int level) const noexcept { return level == 0 ? m0_ : config_.M; }

  // Asks the memory system for s's vector before it is needed. A graph search jumps to a new
  // vector for every distance, so without this each one starts with a full cache miss; the
  // hardware prefetcher only joins once it has seen a few sequential lines of it.
  void prefetch_vector(Slot s) const noexcept {
    const char* p = reinterpret_cast<const char*>(vector_of(s));
    for (std::size_t line = 0; line < prefetch_lines_; ++line) detail::prefetch(p + line * detail::kCacheLine);
  }

  // A link record: [count, id_1, ..., id_max]. Layer 0 lives in links0_, higher layers in upper_.
  [[nodiscard]] std::uint32_t* record(Slot s, int level) noexcept {
    if (level == 0) return links0_.data() + std::size_t{s} * (m0_ + 1);
    return upper_[s].data() + static_cast<std::size_t>(level - 1) * (config_.M + 1);
  }
  [[nodiscard]] const std::uint32_t* record(Slot s, int level) const noexcept {
    return const_cast<HNSW*>(this)->record(s, level);
  }
  [[nodiscard]] std::span<const Slot> links(Slot s, int level) const noexcept {
    const std::uint32_t* r = record(s, level);
    return {r + 1, r[0]};
  }
  void set_links(Slot s, int level, std::span<const Slot> ids) noexcept {
    std::uint32_t* r = record(s, level);
    r[0] = static_cast<std::uint32_t>(ids.size());
    std::copy(ids.begin(), ids.end(), r + 1);
  }
  std::mutex& lock_of(Slot s) const noexcept { return link_locks_[s % kLockStripes]; }

  // A node's links on one layer. Single-threaded, a view of the record itself; while other
  // threads may be writing links (concurrent adds), a copy taken under the node's lock.
  std::span<const Slot> read_links(Slot s, int level, bool locked, std::vector<Slot>& copy) const {
    if (!locked) return links(s, level);
    std::lock_guard g(lock_of(s));
    const auto l = links(s, level);
    copy.assign(l.begin(), l.end());  // within the reserved capacity: no allocation
    return copy;
  }

  // Marks the not yet visited ids of nbrs visited and lists them in s.fresh. Separating this
  // from the distance loop means the loop knows which vectors come next: the first cache line
  // of each is requested here (the requests overlap one another), and the distance loops below
  // keep whole vectors kPrefetchAhead ahead of the one being read. On 784-d Fashion-MNIST this
  // gives 5-17% more queries per second than prefetching only the next vector.
  // kInsert (q is the vector being inserted): nodes whose distance the insert already knows
  // (Scratch::known) are listed but not prefetched; the others also go to s.to_measure, the
  // prefetch order.
  template <bool kInsert>
  void collect_unvisited(Scratch& s, std::span<const Slot> nbrs) const noexcept {
    s.fresh.clear();
    if constexpr (kInsert) s.to_measure.clear();
    for (const Slot n : nbrs) {
      if (!s.visit(n)) continue;
      s.fresh.push_back(n);
      if constexpr (kInsert) {
        if (s.is_known(n)) continue;
        s.to_measure.push_back(n);
      }
      detail::prefetch(vector_of(n));
    }
    const std::vector<Slot>& order = kInsert ? s.to_measure : s.fresh;
    for (std::size_t i = 0; i < std::min(kPrefetchAhead, order.size()); ++i) prefetch_vector(order[i]);
  }

  // Calls visit(n, distance from q to n) for each n of s.fresh, in order (the order decides
  // ties, so it must not change). Whole vectors are prefetched kPrefetchAhead measurements ahead.
  // kInsert (q is the vector being inserted): known distances are looked up, new ones remembered.
  template <bool kInsert, class Visit>
  void measure_fresh(Scratch& s, const float* q, Visit&& visit) const {
    const Distance dist = distance_fn();
    if constexpr (kInsert) {
      std::size_t measured = 0;  // position in s.to_measure
      for (const Slot n : s.fresh) {
        if (s.is_known(n)) {
          visit(n, s.known[n].distance);
          continue;
        }
        if (measured + kPrefetchAhead < s.to_measure.size()) prefetch_vector(s.to_measure[measured + kPrefetchAhead]);
        ++measured;
        const float d = dist(q, vector_of(n));
        s.remember(n, d);
        visit(n, d);
      }
    } else {
      for (std::size_t i = 0; i < s.fresh.size(); ++i) {
        if (i + kPrefetchAhead < s.fresh.size()) prefetch_vector(s.fresh[i + kPrefetchAhead]);
        const Slot n = s.fresh[i];
        visit(n, dist(q, vector_of(n)));
      }
    }
  }

  // Greedy walk on one layer: moves from `best` to its closest neighbour while that is closer,
  // leaving the closest node reached in best / best_d. Nodes already visited in this descent
  // (marked in s, on this layer or one above) are skipped without computing their distance: a
  // visited node was at least as far as the best at the time, and the best only gets closer, so
  // it could never be chosen again. The walk and its result are exactly those of the plain
  // algorithm, with far fewer distance computations when many layers are descended (with the
  // default ml = 1/ln 2 a 60k index has about 16 layers above layer 0).
  // kInsert: q is the vector being inserted (see Scratch::known).
  template <bool kInsert>
  void greedy_closest(Scratch& s, const float* q, Slot& best, float& best_d, int level, bool locked) const {
    for (bool moved = true; moved;) {
      moved = false;
      collect_unvisited<kInsert>(s, read_links(best, level, locked, s.links));
      Slot next = best;
      float next_d = best_d;
      measure_fresh<kInsert>(s, q, [&](Slot n, float d) {
        if (d < next_d) {
          next_d = d;
          next = n;
          moved = true;
        }
      });
      best = next;
      best_d = next_d;
    }
  }

  // Best-first search on one layer with a list of ef candidates (the paper's Algorithm 2), from
  // entry, whose distance to q is entry_d. `admit` decides which nodes may enter the result
  // list; all nodes are traversed. Leaves the results in s.top as a max-heap. kInsert: q is the
  // vector being inserted (see Scratch::known).
  template <bool kInsert, class Admit>
  void search_layer(Scratch& s, const float* q, Slot entry, float entry_d, std::size_t ef, int level,
                    bool locked, Admit&& admit) const {
    std::vector<Candidate>& top = s.top;
    std::vector<Candidate>& frontier = s.frontier;
    top.clear();
    frontier.clear();
    s.new_epoch();
    s.visit(entry);
    frontier.push_back({entry_d, entry});
    if (admit(entry)) top.push_back({entry_d, entry});
    float bound = top.empty() ? std::numeric_limits<float>::infinity() : entry_d;
    while (!frontier.empty()) {
      const Candidate c = frontier.front();
      if (c.distance > bound && top.size() >= ef) break;
      std::pop_heap(frontier.begin(), frontier.end(), std::greater<>{});
      frontier.pop_back();
      // The new front is usually the next node to expand (unless this expansion finds a closer
      // one): start reading its link record now, so the read overlaps this expansion's
      // distances. The prefetch below, once the next node is certain, comes too late to hide
      // a miss on its own (a 60k-vector index keeps its link records in DRAM).
      if (!frontier.empty()) detail::prefetch(record(frontier.front().slot, level));
      collect_unvisited<kInsert>(s, read_links(c.slot, level, locked, s.links));
      measure_fresh<kInsert>(s, q, [&](Slot n, float d) {
        if (top.size() < ef || d < bound) {
          frontier.push_back({d, n});
          std::push_heap(frontier.begin(), frontier.end(), std::greater<>{});
          // On an upper layer the link record is reached through upper_[n], a second miss on
          // top of the record's own: ask for it now, while n waits in the frontier.
          if (level > 0) detail::prefetch(&upper_[n]);
          if (admit(n)) {
            top.push_back({d, n});
            std::push_heap(top.begin(), top.end());
            if (top.size() > ef) {
              std::pop_heap(top.begin(), top.end());
              top.pop_back();
            }
            bound = top.front().distance;
          }
        }
      });
      // The next node to expand is known now: start reading its link record.
      if (!frontier.empty()) detail::prefetch(record(frontier.front().slot, level));
    }
  }

  // --- construction (hnsw_build.hpp) ---------------------------------------------------------

  int random_level();
  void insert(const float* vec, Label id, bool replace_deleted, bool locked);
  void plan_links(Scratch& s, const float* q, Slot reused, int level, int top_level, Slot ep, bool locked);
  void plan_repairs(Scratch& s, const float* q, Slot slot, int level, bool locked);
  void link_back(Scratch& s, Slot n, Slot slot, int level, bool locked);
  void select_neighbors(std::vector<Candidate>& candidates, std::size_t m, std::vector<Slot>& kept,
                        std::vector<Slot>& order) const;
  template <class VectorOf>
  void select_neighbors(std::vector<Candidate>& candidates, std::size_t m, std::vector<Slot>& kept,
                        std::vector<Slot>& order, VectorOf&& vector) const;

  // The search proper, for a query already checked: copies it into s.query (normalised under
  // "cosine"), descends greedily to layer 1, searches layer 0 with ef, and leaves the k
  // nearest admitted nodes in s.top, nearest first.
  void search_prepared(Scratch& s, const float* query, std::size_t k, std::size_t ef,
                       const IdFilter* filter) const {
    s.top.clear();
    if (entry_ == kNone) return;
    // An aligned private copy: the kernels read the query once per distance, and a query that
    // straddles cache lines would split every one of those loads.
    std::memcpy(s.query.data(), query, config_.dim * sizeof(float));
    if (config_.metric == Metric::cosine) normalize(s.query.data());
    const float* q = s.query.data();
    Slot ep = entry_;
    float ep_d = distance_fn()(q, vector_of(ep));
    s.new_epoch();
    s.visit(ep);
    for (int l = max_level_; l > 0; --l) greedy_closest<false>(s, q, ep, ep_d, l, false);
    // The admission test runs for every node that enters the candidate list, so the common
    // cases get their own instantiation: no filter and no deletions tests nothing at all.
    if (filter != nullptr) {
      search_layer<false>(s, q, ep, ep_d, ef, 0, false,
                   [&](Slot n) { return deleted_[n] == 0 && (*filter)(labels_[n]); });
    } else if (num_deleted_ > 0) {
      search_layer<false>(s, q, ep, ep_d, ef, 0, false, [&](Slot n) { return deleted_[n] == 0; });
    } else {
      search_layer<false>(s, q, ep, ep_d, ef, 0, false, [](Slot) { return true; });
    }
    std::vector<Candidate>& top = s.top;
    while (top.size() > k) {
      std::pop_heap(top.begin(), top.end());
      top.pop_back();
    }
    std::sort_heap(top.begin(), top.end());
  }

  // A dimension a saved index with no vectors may claim (a 4 MiB vector): see from_bytes.
  static constexpr std::size_t kMaxLoadedDimWithoutVectors = std::size_t{1} << 20;

  // What from_bytes checks beyond the format: the vectors are ones add() could have stored, the
  // links ones it could have made.
  static void check_loaded_vectors(const detail::BinaryReader& r, const HNSWConfig& c, std::string_view vectors);
  void check_loaded_links(const detail::BinaryReader& r) const;

  HNSWConfig config_;
  std::size_t m0_;
  ann::DistanceKernels kernels_;

  std::size_t prefetch_lines_;  // cache lines of a vector to prefetch: all, up to kMaxPrefetchLines

  detail::CacheAlignedVector<float> vectors_;  // capacity x dim, 64-byte aligned
  std::vector<std::uint32_t> links0_;   // capacity x (2M + 1): [count, ids...]
  std::vector<std::vector<std::uint32_t>> upper_;  // per slot: level x (M + 1)
  std::vector<int> levels_;
  std::vector<Label> labels_;
  std::vector<std::uint8_t> deleted_;
  std::vector<Slot> deleted_slots_;
  std::unordered_map<Label, Slot> slot_of_;
  std::size_t capacity_ = 0;
  std::uint32_t size_ = 0;  // slots in use, deleted ones included
  std::size_t num_deleted_ = 0;
  Slot entry_ = kNone;
  int max_level_ = -1;

  std::mt19937_64 rng_;
  std::mutex rng_lock_;
  std::mutex labels_lock_;
  std::mutex entry_lock_;
  mutable std::unique_ptr<std::mutex[]> link_locks_ = std::make_unique<std::mutex[]>(kLockStripes);
  mutable ann::detail::ScratchPool scratch_pool_;
};

}  // namespace llmds

// The members above that build the graph, and those that save and load it.
#include "llmds/ann/hnsw_build.hpp"
#include "llmds/ann/hnsw_io.hpp"
