// llmds.inverted_index: InvertedIndex (BM25), the analyzer's pieces (porter_stem, the English
// stop words).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_set>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "llmds/text/analyzer.hpp"
#include "llmds/text/inverted_index.hpp"
#include "llmds/text/porter_stemmer.hpp"

#include "arguments.hpp"
#include "object_lock.hpp"
#include "initialised.hpp"
#include "stats_dict.hpp"

namespace py = pybind11;

namespace {
struct PyInvertedIndex;
}  // namespace

LLMDS_PY_REQUIRE_INIT(PyInvertedIndex)

namespace {

using llmds::InvertedIndex;
using llmds::python::ObjectLock;
using llmds::python::non_negative;
using llmds::python::positive;
using llmds::python::read_lock;
using llmds::python::write_lock;

// The index plus its lock (object_lock.hpp): searches share it and run with the GIL released;
// changes take it alone.
struct PyInvertedIndex {
  explicit PyInvertedIndex(InvertedIndex i) : index(std::move(i)) {}
  InvertedIndex index;
  mutable ObjectLock lock{"InvertedIndex", "code it calls back"};
};

// stop_words: False/None (none), True (English), or an iterable of words. A bare str is refused:
// iterating it would make a stop word of every letter.
std::vector<std::string> stop_word_list(const py::object& stop_words) {
  if (stop_words.is_none()) return {};
  if (py::isinstance<py::bool_>(stop_words)) {
    if (!stop_words.cast<bool>()) return {};
    return llmds::text::english_stop_word_list();
  }
  if (py::isinstance<py::str>(stop_words)) {
    throw std::invalid_argument("stop_words must be True, False or an iterable of words, not a str");
  }
  std::vector<std::string> words;
  for (const auto& w : stop_words) {
    if (!py::isinstance<py::str>(w)) throw std::invalid_argument("stop_words must hold str");
    words.push_back(w.cast<std::string>());
  }
  return words;
}

py::list as_pairs(const std::vector<InvertedIndex::Hit>& hits) {
  py::list out;
  for (const auto& h : hits) out.append(py::make_tuple(h.doc_id, h.score));
  return out;
}

std::unique_ptr<PyInvertedIndex> from_bytes(std::string_view bytes) {
  return std::make_unique<PyInvertedIndex>(InvertedIndex::from_bytes(bytes));
}

}  // namespace

void bind_text(py::module_& m) {
  m.def("porter_stem", [](std::string_view word) { return llmds::text::porter_stem(word); },
        py::arg("word"),
        "The original Porter (1980) stem of a lower-case ASCII word, as Porter's reference C code "
        "gives it (words of one or two letters are returned unchanged).");
  {
    py::tuple words(llmds::text::english_stop_words().size());
    std::size_t i = 0;
    for (auto w : llmds::text::english_stop_words()) words[i++] = py::str(w.data(), w.size());
    m.attr("ENGLISH_STOP_WORDS") = words;
  }

  py::class_<PyInvertedIndex>(m, "InvertedIndex", R"doc(
Compressed inverted index with BM25 scored as Lucene scores it.

score(q, d) = sum over query terms t (repeats included) of
    idf(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl)),
    idf(t) = ln(1 + (N - df + 0.5) / (df + 0.5)),
with exact document lengths; N and avgdl count the documents that have at least one term.

Analyzer: terms are maximal runs of ASCII letters and digits, lower-cased. stop_words=True drops
Lucene's 33 English stop words (or pass your own words); stem=True applies the Porter stemmer.
Top-k retrieval is block-max MaxScore; results equal scoring every posting, ties going to the
earlier added document.
)doc")
      .def(py::init([](double k1, double b, bool stem, const py::object& stop_words) {
             llmds::InvertedIndexConfig config;
             config.k1 = k1;
             config.b = b;
             config.analyzer.stem = stem;
             config.analyzer.stop_words = stop_word_list(stop_words);
             return std::make_unique<PyInvertedIndex>(InvertedIndex(std::move(config)));
           }),
           py::arg("k1") = 1.2, py::arg("b") = 0.75, py::kw_only(), py::arg("stem") = false,
           py::arg("stop_words") = false)
      .def("add_document",
           [](PyInvertedIndex& self, llmds::DocId doc_id, std::string_view text) {
             py::gil_scoped_release release;
             std::unique_lock g(self.lock);
             self.index.add_document(doc_id, text);
           },
           py::arg("doc_id"), py::arg("text"),
           "Indexes text under doc_id; ValueError if doc_id is already indexed.")
      .def("add_documents",
           [](PyInvertedIndex& self, const std::vector<std::int64_t>& doc_ids,
              const std::vector<std::string>& texts) {
             if (doc_ids.size() != texts.size()) {
               throw std::invalid_argument(fmt::format("{} doc_ids but {} texts", doc_ids.size(), texts.size()));
             }
             py::gil_scoped_release release;
             std::unique_lock g(self.lock);
             std::unordered_set<std::int64_t> seen;
             for (auto id : doc_ids) {
               if (self.index.contains(id) || !seen.insert(id).second) {
                 throw std::invalid_argument(fmt::format("document {} is indexed twice; nothing was added", id));
               }
             }
             for (std::size_t i = 0; i < doc_ids.size(); ++i) self.index.add_document(doc_ids[i], texts[i]);
           },
           py::arg("doc_ids"), py::arg("texts"),
           "Indexes many documents in one call; all or nothing for repeated ids.")
      .def("remove_document",
           [](PyInvertedIndex& self, llmds::DocId doc_id) {
             const auto g = write_lock(self.lock);
             self.index.remove_document(doc_id);
           },
           py::arg("doc_id"), "Removes a document; KeyError if it is not indexed.")
      .def("search",
           [](const PyInvertedIndex& self, std::string_view query, std::int64_t top_k) {
             const auto k = positive(top_k, "top_k");
             std::vector<InvertedIndex::Hit> hits;
             {
               py::gil_scoped_release release;
               std::shared_lock g(self.lock);
               hits = self.index.search(query, k);
             }
             return as_pairs(hits);
           },
           py::arg("query"), py::arg("top_k") = 10,
           "The top_k (doc_id, score) pairs, best first; only documents sharing a term with the query.")
      .def("search_exhaustive",
           [](const PyInvertedIndex& self, std::string_view query, std::int64_t top_k) {
             const auto k = positive(top_k, "top_k");
             std::vector<InvertedIndex::Hit> hits;
             {
               py::gil_scoped_release release;
               std::shared_lock g(self.lock);
               hits = self.index.search_exhaustive(query, k);
             }
             return as_pairs(hits);
           },
           py::arg("query"), py::arg("top_k") = 10,
           "search() by scoring every posting: the same answer, slower; a reference and a baseline.")
      .def("search_batch",
           [](const PyInvertedIndex& self, const std::vector<std::string>& queries,
              std::int64_t top_k, std::int64_t num_threads) {
             const auto k = positive(top_k, "top_k");
             const auto threads = non_negative(num_threads, "num_threads");
             std::vector<std::vector<InvertedIndex::Hit>> results;
             {
               py::gil_scoped_release release;
               std::vector<std::string_view> views(queries.begin(), queries.end());
               std::shared_lock g(self.lock);
               results = self.index.search_batch(views, k, threads);
             }
             py::list out;
             for (const auto& hits : results) out.append(as_pairs(hits));
             return out;
           },
           py::arg("queries"), py::arg("top_k") = 10, py::arg("num_threads") = 1,
           "search() for each query on num_threads threads (0: every core).")
      .def("score",
           [](const PyInvertedIndex& self, std::string_view query, llmds::DocId doc_id) {
             const auto g = read_lock(self.lock);
             return self.index.score(query, doc_id);
           },
           py::arg("query"), py::arg("doc_id"),
           "The BM25 score of one document (0.0 if it shares no term); KeyError if unknown.")
      .def("get_term_frequency",
           [](const PyInvertedIndex& self, std::string_view term, llmds::DocId doc_id) {
             const auto g = read_lock(self.lock);
             return self.index.term_frequency(term, doc_id);
           },
           py::arg("term"), py::arg("doc_id"),
           "Occurrences of term (analysed like a query: one term) in the document.")
      .def("get_document_frequency",
           [](const PyInvertedIndex& self, std::string_view term) {
             const auto g = read_lock(self.lock);
             return self.index.document_frequency(term);
           },
           py::arg("term"), "Number of documents that contain term (analysed like a query).")
      .def("document_length",
           [](const PyInvertedIndex& self, llmds::DocId doc_id) {
             const auto g = read_lock(self.lock);
             return self.index.document_length(doc_id);
           },
           py::arg("doc_id"), "Number of indexed terms of the document (BM25's dl).")
      .def("document_ids",
           [](const PyInvertedIndex& self) {
             const auto g = read_lock(self.lock);
             return self.index.document_ids();
           },
           "The indexed document ids in the order they were added.")
      .def("analyze",
           [](const PyInvertedIndex& self, std::string_view text) { return self.index.analyzer().analyze(text); },
           py::arg("text"), "The terms this index makes of text, in order, repeats included.")
      .def("compact",
           [](PyInvertedIndex& self) {
             py::gil_scoped_release release;
             std::unique_lock g(self.lock);
             self.index.compact();
           },
           "Drops the postings of removed documents now (it also happens by itself).")
      .def("stats",
           [](const PyInvertedIndex& self) {
             const auto g = read_lock(self.lock);
             return llmds::python::stats_dict(self.index.stats());
           })
      .def("save",
           [](const PyInvertedIndex& self, const std::filesystem::path& path) {
             const auto g = read_lock(self.lock);
             self.index.save(path);
           },
           py::arg("path"))
      .def_static("load",
                  [](const std::filesystem::path& path) {
                    return std::make_unique<PyInvertedIndex>(InvertedIndex::load(path));
                  },
                  py::arg("path"), "An index saved by save(); ValueError if the file is damaged.")
      .def(py::pickle(
          [](const PyInvertedIndex& self) {
            const auto g = read_lock(self.lock);
            return py::bytes(self.index.to_bytes());
          },
          [](const py::bytes& b) { return from_bytes(std::string_view(b)); }))
      .def_property_readonly("k1", [](const PyInvertedIndex& self) { return self.index.config().k1; })
      .def_property_readonly("b", [](const PyInvertedIndex& self) { return self.index.config().b; })
      .def_property_readonly("stem", [](const PyInvertedIndex& self) { return self.index.config().analyzer.stem; })
      .def_property_readonly("stop_words", [](const PyInvertedIndex& self) {
        return self.index.config().analyzer.stop_words;
      })
      .def("__len__", [](const PyInvertedIndex& self) { return self.index.size(); })
      .def("__contains__", [](const PyInvertedIndex& self, llmds::DocId doc_id) {
        return self.index.contains(doc_id);
      })
      .def("__repr__", [](const PyInvertedIndex& self) {
        const auto& c = self.index.config();
        return fmt::format("InvertedIndex(k1={}, b={}, stem={}, stop_words={}, documents={})", c.k1, c.b,
                           c.analyzer.stem ? "True" : "False", c.analyzer.stop_words.size(), self.index.size());
      });
}
