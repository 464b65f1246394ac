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
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
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

#include "llmds/ann/distance.hpp"
#include "llmds/core/errors.hpp"
#include "llmds/core/stats_fields.hpp"
#include "llmds/detail/assert.hpp"
#include "llmds/detail/binary_io.hpp"
#include "llmds/detail/checked_size.hpp"
#include "llmds/detail/parallel.hpp"

namespace llmds {

namespace detail {

/// An allocator of Align-byte aligned storage, for vectors whose rows SIMD loads read whole.
template <class T, std::size_t Align>
struct AlignedAllocator {
  using value_type = T;
  template <class U>
  struct rebind {
    using other = AlignedAllocator<U, Align>;
  };
  AlignedAllocator() noexcept = default;
  template <class U>
  explicit AlignedAllocator(const AlignedAllocator<U, Align>&) noexcept {}
  T* allocate(std::size_t n) {
    return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t{Align}));
  }
  void deallocate(T* p, std::size_t) noexcept { ::operator delete(p, std::align_val_t{Align}); }
  friend bool operator==(const AlignedAllocator&, const AlignedAllocator&) noexcept { return true; }
};

/// Starts loading the cache line holding p into all cache levels; a hint, never a fault.
inline void prefetch(const void* p) noexcept {
#if defined(__GNUC__) || defined(__clang__)
  __builtin_prefetch(p, 0, 3);
#else
  (void)p;
#endif
}

}  // namespace detail

enum class Metric : std::uint8_t { l2 = 0, ip = 1, cosine = 2 };

inline const char* metric_name(Metric m) noexcept {
  switch (m) {
    case Metric::l2: return "l2";
    case Metric::ip: return "ip";
    case Metric::cosine: return "cosine";
  }
  return "?";
}

inline Metric parse_metric(std::string_view name) {
  if (name == "l2") return Metric::l2;
  if (name == "ip") return Metric::ip;
  if (name == "cosine") return Metric::cosine;
  throw std::invalid_argument(
      fmt::format("metric must be \"l2\", \"ip\" or \"cosine\", got \"{}\"", name));
}

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
        prefetch_lines_(std::min(kMaxPrefetchLines, (config_.dim * sizeof(float) + kCacheLine - 1) / kCacheLine)),
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
    ScratchLease s(*this);
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
      ScratchLease s(*this);
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
      ScratchLease s(*this);
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
    std::lock_guard g(scratch_pool_lock_);
    scratch_pool_.clear();  // visited sets sized for the old capacity
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

  // --- persistence --------------------------------------------------------------------------

  static constexpr std::string_view kMagic = "LLMDSHNS";
  static constexpr std::uint32_t kFormatVersion = 1;

  /// The whole index (parameters, vectors, graph, ids, deletions) as bytes: magic, format
  /// version, little-endian payload, checksum.
  [[nodiscard]] std::string to_bytes() const {
    detail::BinaryWriter w(kMagic, kFormatVersion);
    w.put<std::uint64_t>(config_.dim);
    w.put<std::uint64_t>(config_.M);
    w.put<std::uint64_t>(config_.ef_construction);
    w.put<std::uint64_t>(config_.ef_search);
    w.put<std::uint64_t>(std::bit_cast<std::uint64_t>(config_.ml));
    w.put<std::uint8_t>(config_.seed.has_value());
    w.put<std::uint64_t>(config_.seed.value_or(0));
    w.put<std::uint8_t>(static_cast<std::uint8_t>(config_.metric));
    w.put<std::uint64_t>(size_);
    w.put<std::int32_t>(max_level_);
    w.put<std::uint32_t>(entry_);
    w.put_bytes(raw_bytes(std::span(vectors_).first(size_ * config_.dim)));
    w.put_bytes(raw_bytes(std::span(links0_).first(size_ * (m0_ + 1))));
    for (std::uint32_t i = 0; i < size_; ++i) {
      w.put<std::int32_t>(levels_[i]);
      w.put<std::int64_t>(labels_[i]);
      w.put<std::uint8_t>(deleted_[i]);
      w.put_bytes(raw_bytes(std::span(upper_[i])));
    }
    return std::move(w).finish();
  }

  /// Rebuilds an index from to_bytes() output. Throws std::invalid_argument for anything that is
  /// not a complete, uncorrupted index of this format version that add() could have built:
  /// besides the checksum, every size is checked against the bytes that hold it before anything
  /// is allocated, and every field against its meaning (finite vectors, unit vectors under
  /// "cosine", distinct ids, links to existing nodes on their layers without repeats, a
  /// consistent entry point).
  static std::unique_ptr<HNSW> from_bytes(std::string_view bytes) {
    detail::BinaryReader r(bytes, kMagic, kFormatVersion, "HNSW index");
    HNSWConfig c;
    c.dim = r.get<std::uint64_t>();
    c.M = r.get<std::uint64_t>();
    c.ef_construction = r.get<std::uint64_t>();
    c.ef_search = r.get<std::uint64_t>();
    c.ml = std::bit_cast<double>(r.get<std::uint64_t>());
    const bool has_seed = r.get_flag();
    const auto seed = r.get<std::uint64_t>();
    if (has_seed) c.seed = seed;
    if (!has_seed && seed != 0) r.fail("saved {} has a seed value without its seed flag");
    const auto metric = r.get<std::uint8_t>();
    if (metric > 2) r.fail("saved {} has an unknown metric");
    c.metric = static_cast<Metric>(metric);
    const auto n = r.get<std::uint64_t>();
    try {
      c.validate();
    } catch (const std::invalid_argument&) {
      r.fail("saved {} has invalid parameters");
    }
    // Slots are 32-bit and kNone (2^32 - 1) means "no slot": slots 0 .. 2^32 - 2 at most.
    if (n > kNone) r.fail("saved {} holds too many vectors");
    const auto max_level = r.get<std::int32_t>();
    const auto entry = r.get<std::uint32_t>();

    // The two big sections are sized from the header and compared with the bytes that hold them
    // before the index (which allocates room for n vectors) exists: a header alone cannot make
    // the loader ask for more memory than the file's own size.
    const std::string_view vectors = r.get_bytes();
    const std::string_view links0 = r.get_bytes();
    const std::size_t m0 = 2 * c.M;
    try {
      const std::size_t floats = detail::checked_mul(n, c.dim, "HNSW vectors");
      const std::size_t words = detail::checked_mul(n, m0 + 1, "HNSW links");
      if (vectors.size() != detail::checked_mul(floats, sizeof(float), "HNSW vectors") ||
          links0.size() != detail::checked_mul(words, sizeof(std::uint32_t), "HNSW links")) {
        r.fail("saved {} has a section of the wrong size");
      }
    } catch (const std::invalid_argument&) {
      r.fail("saved {} has a section of the wrong size");
    }
    // Level, id, deletion flag and the length of the upper links: 21 bytes per node at least.
    if (n > r.remaining() / 21) r.fail("saved {} is truncated");
    // An index always has room for one vector, and every search leases a query buffer of dim
    // floats; with no vector stored, nothing in the file vouches for dim, so it is bounded.
    if (n == 0 && c.dim > kMaxLoadedDimWithoutVectors) r.fail("saved {} has no vectors and an implausible dimension");
    if (n == 0 ? (max_level != -1 || entry != kNone) : (max_level < 0 || entry >= n)) {
      r.fail("saved {} has a bad entry point");
    }
    check_loaded_vectors(r, c, vectors);

    c.initial_capacity = std::max<std::size_t>(static_cast<std::size_t>(n), 1);
    auto index = std::make_unique<HNSW>(c);
    HNSW& h = *index;
    h.max_level_ = max_level;
    h.entry_ = entry;
    if (!vectors.empty()) std::memcpy(h.vectors_.data(), vectors.data(), vectors.size());
    if (!links0.empty()) std::memcpy(h.links0_.data(), links0.data(), links0.size());
    h.size_ = static_cast<std::uint32_t>(n);
    for (std::uint32_t i = 0; i < n; ++i) {
      h.levels_[i] = r.get<std::int32_t>();
      h.labels_[i] = r.get<std::int64_t>();
      h.deleted_[i] = r.get_flag() ? 1 : 0;
      if (h.levels_[i] < 0 || h.levels_[i] > h.max_level_) r.fail("saved {} has a node above the top level");
      const auto upper = r.get_bytes();
      const std::size_t want = static_cast<std::size_t>(h.levels_[i]) * (c.M + 1) * sizeof(std::uint32_t);
      if (upper.size() != want) r.fail("saved {} has a malformed link list");
      h.upper_[i].resize(want / sizeof(std::uint32_t));
      if (want > 0) std::memcpy(h.upper_[i].data(), upper.data(), upper.size());
      if (!h.slot_of_.emplace(h.labels_[i], i).second) r.fail("saved {} repeats an id");
      if (h.deleted_[i]) {
        h.deleted_slots_.push_back(i);
        ++h.num_deleted_;
      }
    }
    r.expect_end();
    if (n > 0 && h.levels_[h.entry_] != h.max_level_) r.fail("saved {} has a bad entry point");
    h.check_loaded_links(r);
    return index;
  }

  void save(const std::filesystem::path& path) const { detail::write_file(path, to_bytes()); }
  static std::unique_ptr<HNSW> load(const std::filesystem::path& path) {
    return from_bytes(detail::read_file(path));
  }

 private:
  using Slot = std::uint32_t;
  struct Candidate {
    float distance;
    Slot slot;
    // Ties are broken by slot, so every ordering (and so every build and search) is the same
    // whatever order the candidates arrived in.
    //
    // The comparison runs in one integer compare of (distance, slot) packed into 64 bits: the
    // heaps of a search and the sort of neighbour selection call it millions of times per build,
    // and the float compare-then-tie-break form costs two data-dependent branches that the CPU
    // mispredicts about as often as not. Mapping a float's bits to an unsigned integer that
    // orders the same way (negative numbers flipped whole, others with the sign bit set) keeps
    // the order exactly that of (distance, slot) for every distance the index produces: all are
    // finite and none is -0 (a sum of squares starts at +0, and 1 - x is never -0).
    static std::uint64_t order_key(float d, Slot s) noexcept {
      const auto bits = std::bit_cast<std::uint32_t>(d);
      const std::uint32_t flip = (bits >> 31) != 0 ? 0xFFFFFFFFu : 0x80000000u;
      return (std::uint64_t{bits ^ flip} << 32) | s;
    }
    bool operator<(const Candidate& o) const noexcept {
      return order_key(distance, slot) < order_key(o.distance, o.slot);
    }
    bool operator>(const Candidate& o) const noexcept { return o < *this; }
  };

  static constexpr Slot kNone = std::numeric_limits<Slot>::max();
  static constexpr std::size_t kLockStripes = 4096;
  static constexpr std::size_t kCacheLine = 64;
  // How far ahead (in vectors) a distance loop prefetches whole vectors, and how much of one it
  // prefetches: all of a 784-d vector; longer vectors rely on the hardware prefetcher, which by
  // then has seen a sequential stream. Measured on Fashion-MNIST (60k and 10k): one ahead is
  // 5-10% slower, three ahead no better; 4 or 16 lines instead of the whole vector within noise.
  static constexpr std::size_t kPrefetchAhead = 2;
  static constexpr std::size_t kMaxPrefetchLines = 64;

  using FloatBuffer = std::vector<float, detail::AlignedAllocator<float, kCacheLine>>;

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

  // Everything one search or insert works in besides the index: the visited set, both heaps,
  // neighbour buffers and an aligned copy of the query. Pooled (ScratchLease), so once the pool
  // is warm a search allocates nothing, where a priority_queue per layer, a copied link list
  // per expanded node and a copied query would each cost a trip through malloc.
  struct Scratch {
    // Visited set, epoch-tagged: slot s is visited when tags[s] == epoch, so starting a new set
    // is one increment, not a clear of `capacity` entries. 16-bit tags (as hnswlib) keep the
    // array at 2 bytes a slot, so it stays in L2 for indexes of a few hundred thousand vectors.
    std::vector<std::uint16_t> tags;
    std::uint16_t epoch = 0;
    std::vector<Candidate> top;       // max-heap of the best admitted nodes (after a search:
                                      // the results, nearest first)
    std::vector<Candidate> frontier;  // min-heap of found but not yet expanded nodes
    std::vector<Slot> fresh;          // the unvisited neighbours of the node being expanded
    std::vector<Slot> to_measure;     // those of them an insert has not measured yet
    std::vector<Slot> links;          // a link list copied under its node's lock (concurrent adds)
    std::vector<Candidate> pool;      // neighbour selection for the node being inserted ...
    std::vector<Slot> kept;
    std::vector<Candidate> relink_pool;  // ... and for a neighbour whose full list is re-selected
    std::vector<Slot> relink_kept;
    std::vector<Slot> check_order;    // select_neighbors' order of trying kept neighbours
    std::vector<Slot> plan;           // an insert's chosen neighbours, per layer (plan_links)
    std::vector<Slot> repairs;        // new link lists for a reused slot's neighbours (plan_repairs)
    std::vector<Slot> repair_neighbours;
    std::vector<Slot> repair_from;    // the candidates for them: the slot's one- and two-hop nodes
    std::vector<Candidate> repair_pool;
    std::vector<Slot> repair_kept;
    FloatBuffer query;                // the query, 64-byte aligned (normalised under "cosine")

    // An insert's memo of the distances from its vector to the nodes it has measured, over all
    // the layers it searches: slot s's distance is known[s].distance when known[s].insert equals
    // insert_epoch. Every node of layer l + 1 is also on layer l, so the search on layer l meets
    // again many of the nodes the searches above it measured (with ml = 1/ln 2 half the new nodes
    // have a level >= 1; on Fashion-MNIST a quarter of all insert-time distances are repeats). A
    // lookup replaces a distance computation and, since known nodes are not prefetched, a 3 KB
    // read. The values are the kernel's own, so the graph is the same as without the memo.
    // Sized on a scratch's first insert: searches never pay for it.
    struct Known {
      float distance;
      std::uint32_t insert;
    };
    std::vector<Known> known;
    std::uint32_t insert_epoch = 0;

    void new_insert(std::size_t capacity) {
      if (known.size() < capacity) {
        known.assign(capacity, Known{0.0f, 0});
        insert_epoch = 0;
      }
      if (++insert_epoch == 0) {  // wrapped after 2^32 inserts
        std::fill(known.begin(), known.end(), Known{0.0f, 0});
        insert_epoch = 1;
      }
    }
    bool is_known(Slot s) const noexcept { return known[s].insert == insert_epoch; }
    void remember(Slot s, float d) noexcept { known[s] = {d, insert_epoch}; }

    void new_epoch() noexcept {
      if (++epoch == 0) {  // wrapped: tags from 65535 epochs ago would read as visited
        std::fill(tags.begin(), tags.end(), std::uint16_t{0});
        epoch = 1;
      }
    }
    bool visit(Slot s) noexcept {
      if (tags[s] == epoch) return false;
      tags[s] = epoch;
      return true;
    }
  };

  class ScratchLease {
   public:
    explicit ScratchLease(const HNSW& h) : h_(h) {
      {
        std::lock_guard g(h_.scratch_pool_lock_);
        if (!h_.scratch_pool_.empty()) {
          scratch_ = std::move(h_.scratch_pool_.back());
          h_.scratch_pool_.pop_back();
        }
      }
      if (!scratch_) scratch_ = h_.make_scratch();
      if (scratch_->tags.size() < h_.capacity_) {
        scratch_->tags.assign(h_.capacity_, 0);
        scratch_->epoch = 0;
      }
    }
    ~ScratchLease() {
      std::lock_guard g(h_.scratch_pool_lock_);
      if (scratch_->tags.size() < h_.capacity_) return;
      try {
        h_.scratch_pool_.push_back(std::move(scratch_));
      } catch (const std::bad_alloc&) {  // out of memory: the scratch is freed instead of pooled
      }
    }
    ScratchLease(const ScratchLease&) = delete;
    ScratchLease& operator=(const ScratchLease&) = delete;
    Scratch& operator*() const noexcept { return *scratch_; }
    Scratch* operator->() const noexcept { return scratch_.get(); }

   private:
    const HNSW& h_;
    std::unique_ptr<Scratch> scratch_;
  };

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
    for (std::size_t line = 0; line < prefetch_lines_; ++line) detail::prefetch(p + line * kCacheLine);
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

  int random_level() {
    std::lock_guard g(rng_lock_);
    const double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng_);
    // u is a multiple of 2^-64 at least, so a level is at most ln(2^64) * ml, under 44.4 * ml.
    return static_cast<int>(-std::log(std::max(u, 0x1p-64)) * config_.ml);
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

  // The paper's Algorithm 4 (without extending candidates or keeping pruned ones, as hnswlib):
  // from candidates nearest first, keep one only if it is closer to the base than to every
  // neighbour kept so far. Sorts candidates; the choice goes to kept, in the order chosen.
  //
  // Most candidates are rejected (a handful of the ef_construction are kept), and a rejection
  // costs one distance per kept neighbour tried until one is closer. Which neighbours are tried
  // first does not change the outcome (a candidate goes if any kept one is closer), so they are
  // tried in `order`, where the one that rejected the last candidate moves to the front: a few
  // kept neighbours cover most directions the candidates come from. On Fashion-MNIST this tries
  // 14% fewer pairs than the order of choice, with the same result. `vector` gives a slot's
  // vector (plan_repairs passes one that sees a reused slot's new vector before it is stored).
  //
  // Fewer candidates than m are all kept, as hnswlib keeps them: pruning then only removes links
  // a list has room for. In a small index, where every candidate pool is that small, pruning
  // every list of a neighbourhood at once (a reused slot's repair) could drop the last link into
  // a node and leave it unreachable.
  void select_neighbors(std::vector<Candidate>& candidates, std::size_t m, std::vector<Slot>& kept,
                        std::vector<Slot>& order) const {
    select_neighbors(candidates, m, kept, order, [this](Slot n) { return vector_of(n); });
  }
  template <class VectorOf>
  void select_neighbors(std::vector<Candidate>& candidates, std::size_t m, std::vector<Slot>& kept,
                        std::vector<Slot>& order, VectorOf&& vector) const {
    const Distance dist = distance_fn();
    std::sort(candidates.begin(), candidates.end());
    kept.clear();
    order.clear();
    if (candidates.size() < m) {
      for (const Candidate& c : candidates) kept.push_back(c.slot);
      return;
    }
    for (const Candidate& c : candidates) {
      if (kept.size() >= m) break;
      const float* v = vector(c.slot);
      bool diverse = true;
      for (std::size_t i = 0; i < order.size(); ++i) {
        if (dist(v, vector(order[i])) < c.distance) {
          diverse = false;
          std::rotate(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(i),
                      order.begin() + static_cast<std::ptrdiff_t>(i) + 1);
          break;
        }
      }
      if (diverse) {
        kept.push_back(c.slot);
        order.push_back(c.slot);
      }
    }
  }

  // Inserts one vector in two phases, so that running out of memory changes nothing. The first
  // phase does everything that may allocate and changes nothing another thread or a later call
  // could see: it claims the id (and a deleted slot to reuse), builds the new node's upper link
  // records, and searches every layer, writing down the neighbours chosen on each (s.plan). The
  // second commits: it takes the slot, stores the vector and links it in, none of which
  // allocates. Linking each layer only after every search is the same graph as linking as one
  // goes: the links a layer gains are never read by the searches below it.
  void insert(const float* vec, Label id, bool replace_deleted, bool locked) {
    ScratchLease lease(*this);
    Scratch& s = *lease;
    s.new_insert(capacity_);
    // The query of the searches is an aligned copy, normalised under "cosine"; the commit stores
    // it (add_batch's rows are read in place, and copied once).
    float* const q = s.query.data();
    std::memcpy(q, vec, config_.dim * sizeof(float));
    if (config_.metric == Metric::cosine) normalize(q);

    // Claim the id, and the deleted slot to reuse, if any; both are given back on failure.
    Slot* claimed_slot;  // the id's entry in slot_of_ (element references survive rehashing)
    Slot reused = kNone;
    {
      std::unique_lock g(labels_lock_, std::defer_lock);
      if (locked) g.lock();
      claimed_slot = &slot_of_.try_emplace(id, kNone).first->second;  // the only step that may throw here
      if (replace_deleted && !deleted_slots_.empty()) {
        reused = deleted_slots_.back();
        deleted_slots_.pop_back();
      }
    }
    auto give_back = [&] {
      std::unique_lock g(labels_lock_, std::defer_lock);
      if (locked) g.lock();
      slot_of_.erase(id);
      if (reused != kNone) deleted_slots_.push_back(reused);  // into the room it left: no allocation
    };

    int level;
    std::vector<std::uint32_t> upper;  // a new node's upper link records, moved in on commit
    std::unique_lock top_lock(entry_lock_, std::defer_lock);
    int top_level;
    Slot ep;
    try {
      if (reused != kNone) {
        level = levels_[reused];  // a reused slot keeps its layers, and its link records
      } else {
        level = random_level();
        upper.assign(static_cast<std::size_t>(level) * (config_.M + 1), 0);
      }
      if (locked) top_lock.lock();
      top_level = max_level_;
      ep = entry_;
      if (ep != kNone && level <= top_level && locked) top_lock.unlock();  // kept only to raise the top level
      if (ep != kNone) plan_links(s, q, reused, level, top_level, ep, locked);
      if (reused != kNone) plan_repairs(s, q, reused, level, locked);
    } catch (...) {
      give_back();
      throw;
    }

    // Commit: nothing below allocates or throws.
    Slot slot;
    {
      std::unique_lock g(labels_lock_, std::defer_lock);
      if (locked) g.lock();
      if (reused != kNone) {
        slot = reused;
        slot_of_.erase(labels_[slot]);
        deleted_[slot] = 0;
        --num_deleted_;
      } else {
        LLMDS_ASSERT(size_ < capacity_, "HNSW: insert without room");
        slot = size_++;
        levels_[slot] = level;
        upper_[slot] = std::move(upper);
        links0_[std::size_t{slot} * (m0_ + 1)] = 0;
      }
      *claimed_slot = slot;
      labels_[slot] = id;
    }
    std::memcpy(vector_of(slot), q, config_.dim * sizeof(float));
    if (reused != kNone) {
      // Each repair record: [layer, node, count, links...].
      for (std::size_t at = 0; at < s.repairs.size(); at += 3 + s.repairs[at + 2]) {
        const auto l = static_cast<int>(s.repairs[at]);
        const Slot n = s.repairs[at + 1];
        std::unique_lock g(lock_of(n), std::defer_lock);
        if (locked) g.lock();
        set_links(n, l, std::span<const Slot>(s.repairs.data() + at + 3, s.repairs[at + 2]));
      }
    }
    if (ep == kNone) {  // the first node
      entry_ = slot;
      max_level_ = level;
      return;
    }
    // The new node's own lists, on every layer, before any other node links to it: once a
    // neighbour links back on layer l, a concurrent insert can reach the node there and start its
    // search of the layer below from it, and link back to it on that layer; writing that layer's
    // list afterwards would overwrite the link, and could leave a node no other node links to.
    const Slot* planned = s.plan.data();
    {
      std::unique_lock g(lock_of(slot), std::defer_lock);
      if (locked) g.lock();
      for (int l = std::min(level, top_level); l >= 0; --l) {
        const std::span<const Slot> kept(planned + 1, *planned);
        planned += 1 + *planned;
        if (!kept.empty()) set_links(slot, l, kept);  // empty: a reused slot that is the only node
      }
    }
    planned = s.plan.data();
    for (int l = std::min(level, top_level); l >= 0; --l) {
      const std::span<const Slot> kept(planned + 1, *planned);
      planned += 1 + *planned;
      for (const Slot n : kept) link_back(s, n, slot, l, locked);
    }
    if (level > top_level) {
      entry_ = slot;
      max_level_ = level;
    }
  }

  // The search half of an insert of q at `level` (the paper's Algorithm 1): descends greedily
  // from ep on the layers above level, then on each layer from min(level, top_level) down to 0
  // searches with ef_construction and chooses the new node's neighbours by the heuristic. Leaves
  // them in s.plan, each layer's list as [count, slots...], top layer first. `reused` (or kNone)
  // is a slot being reused, which is not its own neighbour.
  void plan_links(Scratch& s, const float* q, Slot reused, int level, int top_level, Slot ep, bool locked) {
    const Distance dist = distance_fn();
    s.plan.clear();
    float ep_d = dist(q, vector_of(ep));
    s.remember(ep, ep_d);
    s.new_epoch();
    s.visit(ep);
    for (int l = top_level; l > level; --l) greedy_closest<true>(s, q, ep, ep_d, l, locked);
    for (int l = std::min(level, top_level); l >= 0; --l) {
      search_layer<true>(s, q, ep, ep_d, config_.ef_construction, l, locked, [reused](Slot n) { return n != reused; });
      s.kept.clear();
      if (!s.top.empty()) {
        s.pool.assign(s.top.begin(), s.top.end());
        const Candidate nearest = *std::min_element(s.pool.begin(), s.pool.end());
        ep = nearest.slot;
        ep_d = nearest.distance;
        select_neighbors(s.pool, config_.M, s.kept, s.check_order);
      }
      s.plan.push_back(static_cast<Slot>(s.kept.size()));
      s.plan.insert(s.plan.end(), s.kept.begin(), s.kept.end());
    }
  }

  // A reused slot takes a new vector, but the links other nodes had to it stay, and would now
  // lead somewhere else. So, as hnswlib does, each of the slot's neighbours on each of its layers
  // chooses its links again by the heuristic, from the nodes around the slot (its neighbours and
  // theirs, the slot itself with its new vector q among them). On Fashion-MNIST (20k vectors,
  // half of them replaced in four rounds; python -m llmds.benchmarks.hnsw_churn) recall@10 at
  // ef 64 is 0.9962 with this and was 0.9918 without; a fresh build of the same vectors gives
  // 0.9984, hnswlib after the same churn 0.9956. A replacing add took 1.04 ms there, 0.66 ms
  // without the repair. Leaves the new lists in s.repairs as [layer, node, count, links...];
  // the commit writes them.
  void plan_repairs(Scratch& s, const float* q, Slot slot, int level, bool locked) {
    const Distance dist = distance_fn();
    s.repairs.clear();
    for (int l = level; l >= 0; --l) {
      // The candidates: the slot's neighbours and their neighbours, each once.
      s.repair_from.clear();
      s.new_epoch();
      s.visit(slot);
      s.repair_from.push_back(slot);
      const auto one_hop = read_links(slot, l, locked, s.links);
      s.repair_neighbours.assign(one_hop.begin(), one_hop.end());  // s.links is reused below
      for (const Slot n : s.repair_neighbours) {
        if (s.visit(n)) s.repair_from.push_back(n);
        for (const Slot m : read_links(n, l, locked, s.links)) {
          if (s.visit(m)) s.repair_from.push_back(m);
        }
      }
      auto vector = [&](Slot n) { return n == slot ? q : vector_of(n); };
      for (const Slot n : s.repair_neighbours) {
        const float* base = vector_of(n);
        s.repair_pool.clear();
        for (const Slot c : s.repair_from) {
          if (c != n) s.repair_pool.push_back({dist(base, vector(c)), c});
        }
        select_neighbors(s.repair_pool, max_links(l), s.repair_kept, s.check_order, vector);
        s.repairs.push_back(static_cast<Slot>(l));
        s.repairs.push_back(n);
        s.repairs.push_back(static_cast<Slot>(s.repair_kept.size()));
        s.repairs.insert(s.repairs.end(), s.repair_kept.begin(), s.repair_kept.end());
      }
    }
  }

  // Adds slot to n's links on one layer; if full, re-selects n's links by the heuristic.
  void link_back(Scratch& s, Slot n, Slot slot, int level, bool locked) {
    std::unique_lock g(lock_of(n), std::defer_lock);
    if (locked) g.lock();
    const auto current = links(n, level);
    if (std::find(current.begin(), current.end(), slot) != current.end()) return;
    const std::size_t cap = max_links(level);
    if (current.size() < cap) {
      std::uint32_t* r = record(n, level);
      r[1 + r[0]] = slot;
      ++r[0];
      return;
    }
    const Distance dist = distance_fn();
    const float* base = vector_of(n);
    s.relink_pool.clear();
    s.relink_pool.push_back({dist(base, vector_of(slot)), slot});
    for (const Slot c : current) s.relink_pool.push_back({dist(base, vector_of(c)), c});
    select_neighbors(s.relink_pool, cap, s.relink_kept, s.check_order);
    set_links(n, level, s.relink_kept);
  }

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

  // Every stored vector passed add()'s check_row: finite, and under "cosine" normalised to unit
  // length. A NaN or infinity would make every distance to it NaN or infinite, and a zero or
  // absurdly long "cosine" vector would give distances outside [0, 2] and be refused as a
  // query by search. The window on the squared length is wide because normalising a vector
  // whose squares are subnormal floats is not exact (each square rounds to a multiple of 2^-149,
  // which at worst halves or doubles a sum of a few of them); no vector add() stores falls
  // outside it, and a zero or overflowing one always does.
  static void check_loaded_vectors(const detail::BinaryReader& r, const HNSWConfig& c, std::string_view vectors) {
    const std::size_t count = vectors.size() / sizeof(float);
    double squares = 0;
    for (std::size_t i = 0; i < count; ++i) {
      float x;
      std::memcpy(&x, vectors.data() + i * sizeof(float), sizeof(float));
      if (!std::isfinite(x)) r.fail("saved {} holds a vector with NaN or infinity");
      squares += double{x} * double{x};
      if (c.metric == Metric::cosine && (i + 1) % c.dim == 0) {
        if (!(squares >= 0.25 && squares <= 4.0)) r.fail("saved {} holds a \"cosine\" vector that is not of unit length");
        squares = 0;
      }
    }
  }

  // Every link names another node of the index that lives on the link's layer, at most once,
  // and no list is longer than its layer allows: otherwise a search would read out of bounds,
  // or step in place. Repeats are found with one mark per node, stamped with the list's number.
  void check_loaded_links(const detail::BinaryReader& r) const {
    std::vector<std::uint64_t> mark(size_, 0);
    std::uint64_t list = 0;
    for (Slot i = 0; i < size_; ++i) {
      for (int l = 0; l <= levels_[i]; ++l) {
        ++list;
        const std::uint32_t count = record(i, l)[0];
        if (count > max_links(l)) r.fail("saved {} has an overfull link list");
        for (const Slot j : links(i, l)) {
          if (j >= size_ || levels_[j] < l) r.fail("saved {} has a link to a missing node");
          if (j == i) r.fail("saved {} has a node linked to itself");
          if (mark[j] == list) r.fail("saved {} has a link list that names a node twice");
          mark[j] = list;
        }
      }
    }
  }

  template <class T>
  static std::string_view raw_bytes(std::span<const T> s) {
    return {reinterpret_cast<const char*>(s.data()), s.size_bytes()};
  }

  HNSWConfig config_;
  std::size_t m0_;
  ann::DistanceKernels kernels_;

  std::size_t prefetch_lines_;  // cache lines of a vector to prefetch: all, up to kMaxPrefetchLines

  FloatBuffer vectors_;                 // capacity x dim, 64-byte aligned
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
  mutable std::mutex scratch_pool_lock_;
  mutable std::vector<std::unique_ptr<Scratch>> scratch_pool_;
};

}  // namespace llmds
