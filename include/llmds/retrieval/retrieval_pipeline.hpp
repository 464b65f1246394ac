// RetrievalPipeline: hybrid search for retrieval-augmented generation. A document is text and,
// optionally, an embedding; a query is text and, optionally, an embedding. BM25 over an
// InvertedIndex answers the text, HNSW answers the embedding, and the two ranked lists are fused.
//
// Fusion, over the top `candidates` of each list:
// - weighted (the default): each list's scores are min-max normalised to [0, 1] (a list whose
//   scores are all equal normalises to 1), a document missing from a list gets 0 from it, and
//   score = fusion_weight * dense + (1 - fusion_weight) * sparse. Dense scores are similarities:
//   1 - distance for "cosine" and "ip", -distance for "l2" (normalisation makes the offset moot).
// - rrf: reciprocal rank fusion (Cormack, Clarke and Buettcher, 2009),
//   score = fusion_weight / (rrf_k + dense rank) + (1 - fusion_weight) / (rrf_k + sparse rank),
//   ranks from 1, rrf_k = 60 as in the paper; at the default weight 0.5 this ranks exactly as
//   plain RRF does.
// When only one list takes part (no query embedding, no document with an embedding, or a
// fusion_weight of 0 or 1) nothing is fused: the results are that list's own, with its raw scores
// (BM25 scores, or dense similarities), so a text-only pipeline is plain BM25.
// The top k of the fused scores are kept with a size-k heap; ties go to the smaller doc id.
//
// Hot queries: every search is counted in a CountMinSketch under its key (the text,
// the embedding's bytes and the parameters). Once a key's estimated count reaches
// hot_query_threshold its results are kept in a TokenLRU whose budget is counted in result
// entries, and a repeat is answered from it. Adding or removing a document clears the cache, since
// it changes BM25's statistics and the dense neighbours of any query; the counts stay, so a
// query that was hot is cached again at its next search.
//
// Documents are keyed by doc id in both indexes; HNSW gets an internal label per added embedding,
// so a removed id can come back with a new embedding. Costs: add = InvertedIndex add + HNSW add;
// search = BM25 top-candidates + HNSW search + O(candidates log k) fusion, or one hash lookup
// when cached. Errors (duplicate id, wrong embedding size, NaN, bad parameters) leave the
// pipeline unchanged. Not thread safe: search updates the sketch and the cache; the Python
// binding serialises calls.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "llmds/ann/hnsw.hpp"
#include "llmds/core/errors.hpp"
#include "llmds/core/stats_fields.hpp"
#include "llmds/core/token_lru.hpp"
#include "llmds/core/types.hpp"
#include "llmds/detail/top_k.hpp"
#include "llmds/sketch/count_min_sketch.hpp"
#include "llmds/text/inverted_index.hpp"

namespace llmds {

enum class Fusion : std::uint8_t { weighted = 0, rrf = 1 };

inline const char* fusion_name(Fusion f) noexcept { return f == Fusion::rrf ? "rrf" : "weighted"; }

inline Fusion parse_fusion(std::string_view name) {
  if (name == "weighted") return Fusion::weighted;
  if (name == "rrf") return Fusion::rrf;
  throw std::invalid_argument(fmt::format("unknown fusion '{}': use 'weighted' or 'rrf'", name));
}

struct RetrievalPipelineConfig {
  // hnsw.dim is the embedding dimension. Cosine, as in Python: sentence embeddings are compared
  // by angle, and a bare HNSWConfig's l2 would rank them by length too.
  HNSWConfig hnsw{.metric = Metric::cosine};
  InvertedIndexConfig bm25;
  Fusion fusion = Fusion::weighted;  // the Python API's default: a weighted sum of normalised scores
  double rrf_k = 60;                 // Cormack et al. 2009
  std::size_t candidates = 100;      // taken from each list before fusion (at least top_k)
  std::uint64_t hot_query_threshold = 2;  // a query's results are cached from its 2nd search on
  std::uint64_t cache_budget = 100'000;   // cached result entries (doc, score) in all
  CountMinSketchConfig sketch;       // the hot-query counter; CountMinSketch's default width 2048, depth 4

  void validate() const {
    hnsw.validate();
    bm25.validate();
    sketch.validate();
    if (!std::isfinite(rrf_k) || rrf_k < 0) {
      throw std::invalid_argument(fmt::format("rrf_k must be finite and >= 0, got {}", rrf_k));
    }
    if (candidates < 1) throw std::invalid_argument("candidates must be at least 1");
    if (hot_query_threshold < 1) throw std::invalid_argument("hot_query_threshold must be at least 1");
  }
};

struct RetrievalPipelineStats {
  std::size_t documents = 0;
  std::size_t documents_with_embeddings = 0;
  std::uint64_t searches = 0;
  std::uint64_t cache_hits = 0;     // searches answered from the hot-query cache
  std::uint64_t cache_misses = 0;
  std::size_t cached_queries = 0;
  std::uint64_t cached_entries = 0;  // result entries held, against cache_budget
  std::uint64_t cache_invalidations = 0;
  std::uint64_t dense_searches = 0;
  std::uint64_t sparse_searches = 0;
  std::uint64_t hot_query_threshold = 0;  // the configuration these figures ran under
  const char* fusion = "";
  std::size_t dim = 0;

  /// Share of searches answered from the hot-query cache; 0 before any search.
  [[nodiscard]] double cache_hit_rate() const noexcept {
    return searches == 0 ? 0.0 : static_cast<double>(cache_hits) / static_cast<double>(searches);
  }

  /// Every figure by name (core/stats_fields.hpp).
  template <class Visit>
  void for_each_field(Visit&& visit) const {
    visit("documents", documents);
    visit("documents_with_embeddings", documents_with_embeddings);
    visit("searches", searches);
    visit("cache_hits", cache_hits);
    visit("cache_misses", cache_misses);
    visit("cache_hit_rate", cache_hit_rate());
    visit("cached_queries", cached_queries);
    visit("cached_entries", cached_entries);
    visit("cache_invalidations", cache_invalidations);
    visit("dense_searches", dense_searches);
    visit("sparse_searches", sparse_searches);
    visit("hot_query_threshold", hot_query_threshold);
    visit("fusion", fusion);
    visit("dim", dim);
  }
};

class RetrievalPipeline {
 public:
  using Hit = InvertedIndex::Hit;

  explicit RetrievalPipeline(RetrievalPipelineConfig config)
      : config_((config.validate(), std::move(config))),
        dense_(config_.hnsw),
        sparse_(config_.bm25),
        sketch_(config_.sketch),
        cache_(HitCount{}, config_.cache_budget) {}

  [[nodiscard]] const RetrievalPipelineConfig& config() const noexcept { return config_; }
  [[nodiscard]] std::size_t dim() const noexcept { return config_.hnsw.dim; }
  [[nodiscard]] std::size_t size() const noexcept { return sparse_.size(); }
  [[nodiscard]] bool contains(DocId doc_id) const noexcept { return sparse_.contains(doc_id); }
  [[nodiscard]] const InvertedIndex& sparse_index() const noexcept { return sparse_; }
  [[nodiscard]] const HNSW& dense_index() const noexcept { return dense_; }

  /// Indexes a document; the embedding, if given, must have dim() finite values. Throws
  /// std::invalid_argument (nothing added) for a duplicate id or a bad embedding.
  void add_document(DocId doc_id, std::string_view text,
                    std::optional<std::span<const float>> embedding = std::nullopt) {
    if (sparse_.contains(doc_id)) {
      throw std::invalid_argument(fmt::format("document {} is already indexed", doc_id));
    }
    if (embedding) check_embedding(*embedding, "embedding");
    if (!embedding) {
      sparse_.add_document(doc_id, text);
    } else {
      // Each step is undone if a later one throws, so a failed add changes nothing.
      const HNSW::Label label = next_label_;
      label_of_.emplace(doc_id, label);
      try {
        doc_of_label_.emplace(label, doc_id);
        sparse_.add_document(doc_id, text);
        try {
          dense_.add(*embedding, label, /*replace_deleted=*/true);
        } catch (...) {
          sparse_.remove_document(doc_id);
          throw;
        }
      } catch (...) {
        doc_of_label_.erase(label);
        label_of_.erase(doc_id);
        throw;
      }
      ++next_label_;
    }
    invalidate();
  }

  /// Removes a document from both indexes. Throws llmds::KeyError for an unknown id.
  void remove_document(DocId doc_id) {
    sparse_.remove_document(doc_id);
    if (const auto it = label_of_.find(doc_id); it != label_of_.end()) {
      dense_.mark_deleted(it->second);
      doc_of_label_.erase(it->second);
      label_of_.erase(it);
    }
    invalidate();
  }

  /// The top_k documents for the query, best first; see the header essay for the scores.
  /// fusion_weight in [0, 1] weighs the dense list; `fusion` overrides the configured method.
  /// Throws std::invalid_argument for top_k < 1, a weight outside [0, 1] or a bad embedding.
  std::vector<Hit> search(std::string_view query,
                          std::optional<std::span<const float>> query_embedding = std::nullopt,
                          std::size_t top_k = 10, double fusion_weight = 0.5,
                          std::optional<Fusion> fusion = std::nullopt) {
    if (top_k < 1) throw std::invalid_argument("top_k must be at least 1");
    if (!(fusion_weight >= 0 && fusion_weight <= 1)) {
      throw std::invalid_argument(fmt::format("fusion_weight must be in [0, 1], got {}", fusion_weight));
    }
    if (query_embedding) check_embedding(*query_embedding, "query_embedding");
    const Fusion method = fusion.value_or(config_.fusion);

    const std::string key = cache_key(query, query_embedding, top_k, fusion_weight, method);
    ++searches_;
    sketch_.add(key);
    if (const auto* cached = cache_.get(key)) {
      ++cache_hits_;
      return *cached;
    }
    ++cache_misses_;

    std::vector<Hit> hits = compute(query, query_embedding, top_k, fusion_weight, method);
    if (sketch_.estimate(key) >= config_.hot_query_threshold &&
        HitCount{}(hits) <= config_.cache_budget) {
      cache_.put(key, hits);
    }
    return hits;
  }

  [[nodiscard]] RetrievalPipelineStats stats() const {
    RetrievalPipelineStats s;
    s.documents = sparse_.size();
    s.documents_with_embeddings = dense_.size();
    s.searches = searches_;
    s.cache_hits = cache_hits_;
    s.cache_misses = cache_misses_;
    s.cached_queries = cache_.size();
    s.cached_entries = cache_.total_tokens();
    s.cache_invalidations = invalidations_;
    s.dense_searches = dense_searches_;
    s.sparse_searches = sparse_searches_;
    s.hot_query_threshold = config_.hot_query_threshold;
    s.fusion = fusion_name(config_.fusion);
    s.dim = config_.hnsw.dim;
    return s;
  }

  /// Empties the hot-query cache (the counts stay).
  void clear_cache() noexcept { cache_.clear(); }

 private:
  struct HitCount {
    std::size_t operator()(const std::vector<Hit>& hits) const noexcept { return hits.size(); }
  };

  void check_embedding(std::span<const float> v, const char* name) const {
    if (v.size() != dim()) {
      throw std::invalid_argument(fmt::format("{} has {} values, the pipeline's dim is {}", name, v.size(), dim()));
    }
    if (!std::all_of(v.begin(), v.end(), [](float x) { return std::isfinite(x); })) {
      throw std::invalid_argument(fmt::format("{} holds NaN or inf", name));
    }
  }

  void invalidate() noexcept {
    if (cache_.size() > 0) ++invalidations_;
    cache_.clear();
  }

  static std::string cache_key(std::string_view query, std::optional<std::span<const float>> embedding,
                               std::size_t top_k, double weight, Fusion method) {
    std::string key = fmt::format("{}|{}|{}|", top_k, weight, fusion_name(method));
    if (embedding) {
      key.push_back('e');
      key.append(reinterpret_cast<const char*>(embedding->data()), embedding->size_bytes());
    }
    key.push_back('|');
    key.append(query);
    return key;
  }

  std::vector<Hit> compute(std::string_view query, std::optional<std::span<const float>> query_embedding,
                           std::size_t top_k, double weight, Fusion method) {
    const std::size_t depth = std::max(top_k, config_.candidates);
    const bool use_dense = query_embedding && dense_.size() > 0 && weight > 0;
    const bool use_sparse = weight < 1 || !use_dense;
    std::vector<Hit> sparse;
    std::vector<Hit> dense;
    if (use_sparse) {
      ++sparse_searches_;
      sparse = sparse_.search(query, depth);
    }
    if (use_dense) {
      ++dense_searches_;
      const std::size_t ef = std::max(depth, dense_.ef_search());
      for (const auto& r : dense_.search(*query_embedding, depth, ef)) {
        const double similarity = config_.hnsw.metric == Metric::l2 ? -double{r.distance} : 1.0 - r.distance;
        dense.push_back(Hit{doc_of_label_.at(r.id), similarity});
      }
    }
    if (!use_dense) return truncate(std::move(sparse), top_k);
    if (!use_sparse) return truncate(std::move(dense), top_k);

    std::unordered_map<DocId, double> fused;
    fused.reserve(dense.size() + sparse.size());
    auto add_list = [&](const std::vector<Hit>& list, double w) {
      if (list.empty()) return;
      const double hi = list.front().score;
      const double lo = list.back().score;
      for (std::size_t rank = 0; rank < list.size(); ++rank) {
        const double part = method == Fusion::rrf
                                ? w / (config_.rrf_k + static_cast<double>(rank + 1))
                                : w * (hi > lo ? (list[rank].score - lo) / (hi - lo) : 1.0);
        fused[list[rank].doc_id] += part;
      }
    };
    add_list(dense, weight);
    add_list(sparse, 1 - weight);
    return top_k_of(fused, top_k);
  }

  static std::vector<Hit> truncate(std::vector<Hit> hits, std::size_t k) {
    if (hits.size() > k) hits.resize(k);
    return hits;
  }

  // The k best of the fused scores; ties go to the smaller doc id.
  static std::vector<Hit> top_k_of(const std::unordered_map<DocId, double>& scores, std::size_t k) {
    struct Better {
      bool operator()(const Hit& a, const Hit& b) const noexcept {
        return a.score > b.score || (a.score == b.score && a.doc_id < b.doc_id);
      }
    };
    detail::TopK<Hit, Better> top(std::min(k, scores.size()));
    for (const auto& [doc, score] : scores) top.offer(Hit{doc, score});
    return std::move(top).take_sorted();
  }

  RetrievalPipelineConfig config_;
  HNSW dense_;
  InvertedIndex sparse_;
  CountMinSketch sketch_;
  TokenLRU<std::string, std::vector<Hit>, HitCount> cache_;
  std::unordered_map<DocId, HNSW::Label> label_of_;
  std::unordered_map<HNSW::Label, DocId> doc_of_label_;
  HNSW::Label next_label_ = 0;
  std::uint64_t searches_ = 0;
  std::uint64_t cache_hits_ = 0;
  std::uint64_t cache_misses_ = 0;
  std::uint64_t invalidations_ = 0;
  std::uint64_t dense_searches_ = 0;
  std::uint64_t sparse_searches_ = 0;
};

}  // namespace llmds
