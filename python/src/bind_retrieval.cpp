// llmds.retrieval_pipeline.RetrievalPipeline.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "llmds/retrieval/retrieval_pipeline.hpp"

#include "arguments.hpp"
#include "initialised.hpp"
#include "stats_dict.hpp"

namespace py = pybind11;

namespace {
struct PyRetrievalPipeline;
}  // namespace

LLMDS_PY_REQUIRE_INIT(PyRetrievalPipeline)

namespace {

using llmds::RetrievalPipeline;
using llmds::python::positive;
using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

// search() updates the hot-query sketch and cache, so every call takes the lock alone; the
// work runs with the GIL released.
struct PyRetrievalPipeline {
  std::unique_ptr<RetrievalPipeline> pipeline;
  std::mutex lock;
};

// None, or a 1-D array of dim numbers (its values are checked by the pipeline).
std::optional<std::vector<float>> embedding_of(const py::object& obj, std::size_t dim, const char* name) {
  if (obj.is_none()) return std::nullopt;
  auto a = FloatArray::ensure(obj);
  if (!a) throw std::invalid_argument(fmt::format("{} must be a 1-D array of numbers", name));
  if (a.ndim() != 1 || static_cast<std::size_t>(a.shape(0)) != dim) {
    throw std::invalid_argument(fmt::format("{} must have shape ({},)", name, dim));
  }
  return std::vector<float>(a.data(), a.data() + a.shape(0));
}

std::optional<std::span<const float>> span_of(const std::optional<std::vector<float>>& v) {
  if (!v) return std::nullopt;
  return std::span<const float>(*v);
}

}  // namespace

void bind_retrieval(py::module_& m) {
  py::class_<PyRetrievalPipeline>(m, "RetrievalPipeline", R"doc(
Hybrid retrieval: BM25 over the text and HNSW over embeddings, fused.

fusion="weighted": fusion_weight * dense + (1 - fusion_weight) * sparse over min-max normalised
scores of each list's top `candidates`; fusion="rrf": reciprocal rank fusion with rrf_k = 60,
each list weighted the same way. With only one list taking part (no query embedding, or a
fusion_weight of 0 or 1) the results are that list's own with its raw scores. Queries seen
hot_query_threshold times (counted in a CountMinSketch) have their results cached in a TokenLRU;
adding or removing a document clears the cache.
)doc")
      .def(py::init([](std::int64_t dim, std::int64_t M, std::int64_t ef_construction, std::int64_t ef_search,
                       const std::string& metric, std::optional<std::uint64_t> seed, double k1, double b, bool stem,
                       bool stop_words, const std::string& fusion, double rrf_k, std::int64_t candidates,
                       std::int64_t hot_query_threshold, std::int64_t cache_budget) {
             llmds::RetrievalPipelineConfig c;
             c.hnsw.dim = positive(dim, "dim");
             c.hnsw.M = positive(M, "M");
             c.hnsw.ef_construction = positive(ef_construction, "ef_construction");
             c.hnsw.ef_search = positive(ef_search, "ef_search");
             c.hnsw.metric = llmds::parse_metric(metric);
             c.hnsw.seed = seed;
             c.bm25.k1 = k1;
             c.bm25.b = b;
             c.bm25.analyzer.stem = stem;
             if (stop_words) c.bm25.analyzer.stop_words = llmds::text::english_stop_word_list();
             c.fusion = llmds::parse_fusion(fusion);
             c.rrf_k = rrf_k;
             c.candidates = positive(candidates, "candidates");
             c.hot_query_threshold = positive(hot_query_threshold, "hot_query_threshold");
             c.cache_budget = llmds::python::non_negative(cache_budget, "cache_budget");
             auto p = std::make_unique<PyRetrievalPipeline>();
             p->pipeline = std::make_unique<RetrievalPipeline>(std::move(c));
             return p;
           }),
           py::arg("dim"), py::kw_only(), py::arg("M") = 16, py::arg("ef_construction") = 200,
           py::arg("ef_search") = 50, py::arg("metric") = "cosine", py::arg("seed") = py::none(),
           py::arg("k1") = 1.2, py::arg("b") = 0.75, py::arg("stem") = false, py::arg("stop_words") = false,
           py::arg("fusion") = "weighted", py::arg("rrf_k") = 60.0, py::arg("candidates") = 100,
           py::arg("hot_query_threshold") = 2, py::arg("cache_budget") = 100000)
      .def("add_document",
           [](PyRetrievalPipeline& self, llmds::DocId doc_id, std::string_view text, const py::object& embedding) {
             const auto e = embedding_of(embedding, self.pipeline->dim(), "embedding");
             py::gil_scoped_release release;
             std::lock_guard g(self.lock);
             self.pipeline->add_document(doc_id, text, span_of(e));
           },
           py::arg("doc_id"), py::arg("text"), py::arg("embedding") = py::none(),
           "Indexes a document; ValueError (nothing added) for a duplicate id or a bad embedding.")
      .def("remove_document",
           [](PyRetrievalPipeline& self, llmds::DocId doc_id) {
             std::lock_guard g(self.lock);
             self.pipeline->remove_document(doc_id);
           },
           py::arg("doc_id"), "Removes a document from both indexes; KeyError if unknown.")
      .def("search",
           [](PyRetrievalPipeline& self, std::string_view query, const py::object& query_embedding,
              std::int64_t top_k, double fusion_weight, const std::optional<std::string>& fusion) {
             const auto e = embedding_of(query_embedding, self.pipeline->dim(), "query_embedding");
             const auto k = positive(top_k, "top_k");
             std::optional<llmds::Fusion> method;
             if (fusion) method = llmds::parse_fusion(*fusion);
             std::vector<RetrievalPipeline::Hit> hits;
             {
               py::gil_scoped_release release;
               std::lock_guard g(self.lock);
               hits = self.pipeline->search(query, span_of(e), k, fusion_weight, method);
             }
             py::list out;
             for (const auto& h : hits) out.append(py::make_tuple(h.doc_id, h.score));
             return out;
           },
           py::arg("query"), py::arg("query_embedding") = py::none(), py::arg("top_k") = 10,
           py::arg("fusion_weight") = 0.5, py::arg("fusion") = py::none(),
           "The top_k (doc_id, score) pairs, best first.")
      .def("clear_cache",
           [](PyRetrievalPipeline& self) {
             std::lock_guard g(self.lock);
             self.pipeline->clear_cache();
           },
           "Empties the hot-query cache (the query counts stay).")
      .def("stats",
           [](PyRetrievalPipeline& self) {
             std::lock_guard g(self.lock);
             return llmds::python::stats_dict(self.pipeline->stats());
           })
      .def_property_readonly("dim", [](PyRetrievalPipeline& self) { return self.pipeline->dim(); })
      .def("__len__", [](PyRetrievalPipeline& self) {
        std::lock_guard g(self.lock);
        return self.pipeline->size();
      })
      .def("__contains__", [](PyRetrievalPipeline& self, llmds::DocId doc_id) {
        std::lock_guard g(self.lock);
        return self.pipeline->contains(doc_id);
      })
      .def("__repr__", [](PyRetrievalPipeline& self) {
        std::lock_guard g(self.lock);
        const auto& c = self.pipeline->config();
        return fmt::format("RetrievalPipeline(dim={}, metric='{}', fusion='{}', documents={})", c.hnsw.dim,
                           llmds::metric_name(c.hnsw.metric), llmds::fusion_name(c.fusion), self.pipeline->size());
      });
}
