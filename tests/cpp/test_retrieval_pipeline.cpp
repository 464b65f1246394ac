#include "llmds/retrieval/retrieval_pipeline.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace {

using llmds::Fusion;
using llmds::RetrievalPipeline;
using llmds::RetrievalPipelineConfig;
using Hits = std::vector<RetrievalPipeline::Hit>;

RetrievalPipelineConfig config_for(std::size_t dim, std::size_t candidates = 100) {
  RetrievalPipelineConfig c;
  c.hnsw.dim = dim;
  c.hnsw.metric = llmds::Metric::l2;
  c.hnsw.seed = 7;
  c.hnsw.ef_search = 400;  // small collections: the graph search is exact
  c.candidates = candidates;
  return c;
}

// The fusion of two ranked lists, written out from the definitions.
Hits fuse(const Hits& dense, const Hits& sparse, double w, Fusion method, std::size_t k, double rrf_k = 60) {
  std::map<std::int64_t, double> score;
  auto add = [&](const Hits& list, double weight) {
    if (list.empty()) return;
    const double hi = list.front().score;
    const double lo = list.back().score;
    for (std::size_t i = 0; i < list.size(); ++i) {
      score[list[i].doc_id] += method == Fusion::rrf ? weight / (rrf_k + static_cast<double>(i) + 1)
                                                     : weight * (hi > lo ? (list[i].score - lo) / (hi - lo) : 1.0);
    }
  };
  add(dense, w);
  add(sparse, 1 - w);
  Hits out;
  for (const auto& [doc, s] : score) out.push_back({doc, s});
  std::stable_sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.score > b.score; });
  if (out.size() > k) out.resize(k);
  return out;
}

Hits brute_force_dense(const std::map<std::int64_t, std::vector<float>>& vectors, const std::vector<float>& q,
                       std::size_t k) {
  Hits all;
  for (const auto& [id, v] : vectors) {
    double d = 0;
    for (std::size_t i = 0; i < q.size(); ++i) d += (double{v[i]} - q[i]) * (double{v[i]} - q[i]);
    all.push_back({id, -d});
  }
  std::stable_sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a.score > b.score; });
  if (all.size() > k) all.resize(k);
  return all;
}

TEST(RetrievalPipeline, WithoutEmbeddingsItIsPlainBm25) {
  RetrievalPipeline p(config_for(4));
  llmds::InvertedIndex bm25;
  const std::vector<std::string> texts = {"boundary layer flow", "heat transfer", "flow of heat in a layer"};
  for (std::size_t i = 0; i < texts.size(); ++i) {
    p.add_document(static_cast<std::int64_t>(i), texts[i]);
    bm25.add_document(static_cast<std::int64_t>(i), texts[i]);
  }
  EXPECT_EQ(p.search("heat layer"), bm25.search("heat layer"));
  const std::vector<float> q = {0, 0, 0, 1};
  // A query embedding with no document embeddings: still BM25 alone.
  EXPECT_EQ(p.search("heat layer", q), bm25.search("heat layer"));
}

// Random collections: every fused ranking equals the fusion, from its definition, of the exact
// BM25 and exact nearest-neighbour lists.
TEST(RetrievalPipeline, FusionFollowsItsDefinitionOnRandomCollections) {
  std::mt19937_64 rng(11);
  std::normal_distribution<float> gauss;
  const std::size_t dim = 8;
  RetrievalPipeline p(config_for(dim, 40));
  llmds::InvertedIndex bm25;
  std::map<std::int64_t, std::vector<float>> vectors;
  auto random_text = [&] {
    std::string text;
    const int n = 1 + static_cast<int>(rng() % 12);
    for (int i = 0; i < n; ++i) {
      text += 'w';
      text += std::to_string(rng() % 30);
      text += ' ';
    }
    return text;
  };
  for (std::int64_t id = 0; id < 150; ++id) {
    const std::string text = random_text();
    bm25.add_document(id, text);
    if (id % 5 == 0) {  // some documents have no embedding
      p.add_document(id, text);
      continue;
    }
    std::vector<float> v(dim);
    for (auto& x : v) x = gauss(rng);
    p.add_document(id, text, v);
    vectors[id] = v;
  }
  for (int trial = 0; trial < 60; ++trial) {
    const std::string query = random_text();
    std::vector<float> q(dim);
    for (auto& x : q) x = gauss(rng);
    const double w = trial % 3 == 0 ? 0.5 : std::uniform_real_distribution<double>(0.05, 0.95)(rng);
    const Fusion method = trial % 2 == 0 ? Fusion::weighted : Fusion::rrf;
    const std::size_t k = 1 + rng() % 15;
    const Hits got = p.search(query, q, k, w, method);
    const Hits want = fuse(brute_force_dense(vectors, q, 40), bm25.search(query, 40), w, method, k);
    ASSERT_EQ(got.size(), want.size()) << trial;
    for (std::size_t i = 0; i < got.size(); ++i) {
      EXPECT_NEAR(got[i].score, want[i].score, 1e-5) << "trial " << trial << " rank " << i;
    }
    // Weight 1 is the dense list alone with its similarities; weight 0 is BM25 alone.
    const Hits dense_only = p.search(query, q, k, 1.0);
    const Hits want_dense = brute_force_dense(vectors, q, k);
    ASSERT_EQ(dense_only.size(), want_dense.size());
    for (std::size_t i = 0; i < dense_only.size(); ++i) {
      EXPECT_EQ(dense_only[i].doc_id, want_dense[i].doc_id);
      EXPECT_NEAR(dense_only[i].score, want_dense[i].score, 1e-3);
    }
    EXPECT_EQ(p.search(query, q, k, 0.0), bm25.search(query, k));
  }
}

TEST(RetrievalPipeline, HotQueriesAreCachedAndAddingADocumentInvalidates) {
  RetrievalPipelineConfig c = config_for(2);
  c.hot_query_threshold = 2;
  RetrievalPipeline p(c);
  p.add_document(1, "alpha beta", std::vector<float>{1, 0});
  p.add_document(2, "beta gamma", std::vector<float>{0, 1});
  const std::vector<float> q = {1, 0.1f};
  const Hits first = p.search("beta", q);
  EXPECT_EQ(p.stats().cache_hits, 0U);
  EXPECT_EQ(p.stats().cached_queries, 0U);  // seen once: not hot yet
  EXPECT_EQ(p.search("beta", q), first);     // seen twice: computed, then cached
  EXPECT_EQ(p.stats().cached_queries, 1U);
  EXPECT_EQ(p.search("beta", q), first);     // answered from the cache
  EXPECT_EQ(p.stats().cache_hits, 1U);
  EXPECT_EQ(p.search("beta", q, 5), first);  // other parameters: another key
  EXPECT_EQ(p.stats().cache_hits, 1U);

  p.add_document(3, "beta beta beta", std::vector<float>{1, 0.1f});
  EXPECT_EQ(p.stats().cached_queries, 0U);
  EXPECT_EQ(p.stats().cache_invalidations, 1U);
  const Hits after = p.search("beta", q);  // recomputed: the new document is found
  EXPECT_EQ(after.front().doc_id, 3);
  EXPECT_EQ(p.search("beta", q), after);
  EXPECT_EQ(p.stats().cache_hits, 2U);
  EXPECT_EQ(p.stats().searches, 6U);
  p.remove_document(3);
  EXPECT_EQ(p.search("beta", q).front().doc_id, 1);
}

TEST(RetrievalPipeline, ErrorsLeaveThePipelineUnchanged) {
  RetrievalPipeline p(config_for(3));
  p.add_document(1, "alpha", std::vector<float>{1, 2, 3});
  const std::vector<float> nan = {1, std::numeric_limits<float>::quiet_NaN(), 0};
  EXPECT_THROW(p.add_document(1, "again"), std::invalid_argument);
  EXPECT_THROW(p.add_document(2, "beta", std::vector<float>{1, 2}), std::invalid_argument);
  EXPECT_THROW(p.add_document(2, "beta", nan), std::invalid_argument);
  EXPECT_FALSE(p.contains(2));
  EXPECT_EQ(p.stats().documents_with_embeddings, 1U);
  EXPECT_THROW((void)p.search("alpha", std::nullopt, 0), std::invalid_argument);
  EXPECT_THROW((void)p.search("alpha", std::nullopt, 10, 1.5), std::invalid_argument);
  EXPECT_THROW((void)p.search("alpha", std::nullopt, 10, std::nan("")), std::invalid_argument);
  EXPECT_THROW((void)p.search("alpha", std::vector<float>{1, 2}), std::invalid_argument);
  EXPECT_THROW(p.remove_document(9), llmds::KeyError);
  EXPECT_EQ(p.stats().searches, 0U);
  EXPECT_THROW(llmds::parse_fusion("sum"), std::invalid_argument);
  RetrievalPipelineConfig bad = config_for(3);
  bad.candidates = 0;
  EXPECT_THROW(RetrievalPipeline{bad}, std::invalid_argument);
}

TEST(RetrievalPipeline, ARemovedIdMayReturnWithANewEmbedding) {
  RetrievalPipeline p(config_for(2));
  p.add_document(1, "x", std::vector<float>{0, 0});
  p.add_document(2, "y", std::vector<float>{5, 5});
  p.remove_document(1);
  p.add_document(1, "x", std::vector<float>{10, 10});
  const Hits hits = p.search("", std::vector<float>{10, 10}, 2, 1.0);
  ASSERT_EQ(hits.size(), 2U);
  EXPECT_EQ(hits[0].doc_id, 1);
  EXPECT_EQ(p.stats().documents_with_embeddings, 2U);
}

TEST(RetrievalPipeline, EmbeddingsAreComparedByAngleByDefaultAsInPython) {
  RetrievalPipelineConfig c;
  c.hnsw.dim = 2;
  c.hnsw.seed = 7;
  RetrievalPipeline p(c);
  p.add_document(1, "a", std::vector<float>{1, 0});
  p.add_document(2, "b", std::vector<float>{5, 5});
  // The query is nearer document 1 in Euclidean distance, but points the way document 2 does.
  const Hits hits = p.search("", std::vector<float>{0.5f, 0.45f}, 1, 1.0);
  ASSERT_EQ(hits.size(), 1U);
  EXPECT_EQ(hits[0].doc_id, 2);
}

}  // namespace
