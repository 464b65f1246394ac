// llmds.hnsw.HNSW.
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "llmds/ann/hnsw.hpp"

#include "arguments.hpp"
#include "object_lock.hpp"
#include "initialised.hpp"
#include "stats_dict.hpp"

namespace py = pybind11;

namespace {
struct PyHNSW;
}  // namespace

LLMDS_PY_REQUIRE_INIT(PyHNSW)

namespace {

using llmds::HNSW;
using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

using llmds::python::ObjectLock;
using llmds::python::non_negative;
using llmds::python::positive;
using llmds::python::read_lock;
using llmds::python::write_lock;

std::optional<std::size_t> optional_ef(const std::optional<std::int64_t>& ef) {
  if (!ef) return std::nullopt;
  return positive(*ef, "ef");
}

// The index plus its lock (object_lock.hpp): searches share it (and run with the GIL released, so
// Python threads search in parallel); adds and deletions take it alone. Every read of the index
// takes it, even a small one: an add may move the vectors and links a read would look at.
struct PyHNSW {
  std::unique_ptr<HNSW> index;
  mutable ObjectLock lock{"HNSW", "a search filter"};
};

// filter: None, a collection of allowed ids, or a callable id -> bool (called with the GIL held).
struct Filter {
  std::unordered_set<std::int64_t> allowed;
  py::object predicate;
  std::optional<llmds::IdFilter> function;
};

void make_filter(const py::object& filter, Filter& f) {
  if (filter.is_none()) return;
  if (PyCallable_Check(filter.ptr())) {
    f.predicate = filter;
    f.function = [&f](std::int64_t id) { return f.predicate(id).cast<bool>(); };
    return;
  }
  for (const auto& id : filter) f.allowed.insert(id.cast<std::int64_t>());
  f.function = [&f](std::int64_t id) { return f.allowed.contains(id); };
}

py::list as_pairs(const std::vector<HNSW::Result>& results) {
  py::list out;
  for (const auto& r : results) out.append(py::make_tuple(r.id, r.distance));
  return out;
}

FloatArray rows(const py::object& obj, std::size_t dim, const char* name) {
  auto a = FloatArray::ensure(obj);
  if (!a) throw std::invalid_argument(fmt::format("{} must be a 2-D array of numbers", name));
  if (a.ndim() != 2 || static_cast<std::size_t>(a.shape(1)) != dim) {
    throw std::invalid_argument(fmt::format("{} must have shape (n, {})", name, dim));
  }
  return a;
}

FloatArray vector(const py::object& obj, std::size_t dim, const char* name) {
  auto a = FloatArray::ensure(obj);
  if (!a) throw std::invalid_argument(fmt::format("{} must be a 1-D array of numbers", name));
  if (a.ndim() != 1 || static_cast<std::size_t>(a.shape(0)) != dim) {
    throw std::invalid_argument(fmt::format("{} must have shape ({},)", name, dim));
  }
  return a;
}

}  // namespace

void bind_ann(py::module_& m) {
  py::class_<PyHNSW>(m, "HNSW", R"doc(
Approximate nearest-neighbour search on a Hierarchical Navigable Small World graph.

Metrics: "l2" (squared Euclidean), "ip" (1 - dot), "cosine" (1 - cosine similarity). With a seed,
single-threaded builds are identical run after run. Deleted ids are never returned; add(...,
replace_deleted=True) reuses their slots. Searches may run from several Python threads at once.
)doc")
      .def(py::init([](std::int64_t dim, std::int64_t M, std::int64_t ef_construction,
                       std::int64_t ef_search, double ml, std::optional<std::uint64_t> seed,
                       const std::string& metric, std::int64_t initial_capacity) {
             llmds::HNSWConfig c;
             c.dim = positive(dim, "dim");
             c.M = positive(M, "M");
             c.ef_construction = positive(ef_construction, "ef_construction");
             c.ef_search = positive(ef_search, "ef_search");
             c.ml = ml;
             c.seed = seed;
             c.metric = llmds::parse_metric(metric);
             c.initial_capacity = positive(initial_capacity, "initial_capacity");
             auto p = std::make_unique<PyHNSW>();
             p->index = std::make_unique<HNSW>(c);
             return p;
           }),
           py::arg("dim"), py::arg("M") = 16, py::arg("ef_construction") = 200,
           py::arg("ef_search") = 50, py::arg("ml") = 1.0 / std::log(2.0),
           py::arg("seed") = py::none(), py::arg("metric") = "l2",
           py::arg("initial_capacity") = 1024)
      .def("add",
           [](PyHNSW& self, const py::object& vec, std::int64_t vec_id, bool replace_deleted) {
             const auto v = vector(vec, self.index->config().dim, "vec");
             const auto g = write_lock(self.lock);
             self.index->add({v.data(), static_cast<std::size_t>(v.size())}, vec_id, replace_deleted);
           },
           py::arg("vec"), py::arg("vec_id"), py::arg("replace_deleted") = false,
           "Add one vector; ValueError (nothing added) for a wrong shape, NaN/inf or a duplicate id. "
           "With replace_deleted it takes a deleted vector's slot, and that slot's old neighbours "
           "choose their links again. MemoryError leaves the index as it was.")
      .def("add_batch",
           [](PyHNSW& self, const py::object& vectors, const std::vector<std::int64_t>& ids,
              std::int64_t num_threads, bool replace_deleted) {
             const auto a = rows(vectors, self.index->config().dim, "vectors");
             if (static_cast<std::size_t>(a.shape(0)) != ids.size()) {
               throw std::invalid_argument(fmt::format("{} vectors but {} ids", a.shape(0), ids.size()));
             }
             const std::size_t threads = non_negative(num_threads, "num_threads");
             py::gil_scoped_release release;
             std::unique_lock g(self.lock);
             self.index->add_batch({a.data(), static_cast<std::size_t>(a.size())}, ids, threads,
                                   replace_deleted);
           },
           py::arg("vectors"), py::arg("ids"), py::arg("num_threads") = 1,
           py::arg("replace_deleted") = false,
           "Add rows of a 2-D array under ids on num_threads threads (0: all cores); all or nothing "
           "(checked before any is added; if memory runs out partway, the rows added so far stay).")
      .def("search",
           [](const PyHNSW& self, const py::object& query, std::int64_t k,
              const std::optional<std::int64_t>& ef, const py::object& filter) {
             const auto q = vector(query, self.index->config().dim, "query");
             const std::size_t kk = positive(k, "k");
             const auto e = optional_ef(ef);
             Filter f;
             make_filter(filter, f);
             const auto g = read_lock(self.lock);
             std::vector<HNSW::Result> results;
             if (f.predicate) {  // a Python predicate needs the GIL
               results = self.index->search({q.data(), static_cast<std::size_t>(q.size())}, kk, e, &*f.function);
             } else {
               py::gil_scoped_release release;
               results = self.index->search({q.data(), static_cast<std::size_t>(q.size())}, kk, e,
                                            f.function ? &*f.function : nullptr);
             }
             return as_pairs(results);
           },
           py::arg("query"), py::arg("k"), py::arg("ef") = py::none(), py::arg("filter") = py::none(),
           "The k nearest (vec_id, distance) pairs, nearest first. filter: allowed ids, or a "
           "callable id -> bool.")
      .def("search_batch",
           [](const PyHNSW& self, const py::object& queries, std::int64_t k,
              const std::optional<std::int64_t>& ef, std::int64_t num_threads, const py::object& filter) {
             const auto a = rows(queries, self.index->config().dim, "queries");
             const std::size_t kk = positive(k, "k");
             const auto e = optional_ef(ef);
             const std::size_t threads = non_negative(num_threads, "num_threads");
             Filter f;
             if (!filter.is_none() && PyCallable_Check(filter.ptr())) {
               throw std::invalid_argument("search_batch takes a collection of allowed ids as filter, not a callable");
             }
             make_filter(filter, f);
             const auto n = static_cast<py::ssize_t>(a.shape(0));
             py::array_t<std::int64_t> ids({n, static_cast<py::ssize_t>(kk)});
             py::array_t<float> dists({n, static_cast<py::ssize_t>(kk)});
             // The index writes the results straight into the new arrays (no per-query vectors,
             // no second copy), with the GIL released: the arrays are not shared yet.
             const std::span<std::int64_t> id_out(ids.mutable_data(), static_cast<std::size_t>(ids.size()));
             const std::span<float> dist_out(dists.mutable_data(), static_cast<std::size_t>(dists.size()));
             {
               py::gil_scoped_release release;
               std::shared_lock g(self.lock);
               self.index->search_batch_into({a.data(), static_cast<std::size_t>(a.size())}, kk, id_out, dist_out,
                                             e, threads, f.function ? &*f.function : nullptr);
             }
             return py::make_tuple(ids, dists);
           },
           py::arg("queries"), py::arg("k"), py::arg("ef") = py::none(), py::arg("num_threads") = 1,
           py::arg("filter") = py::none(),
           "Search each row; returns (ids int64 (n, k), distances float32 (n, k)), padded with -1 "
           "and inf where fewer than k are found.")
      .def("mark_deleted",
           [](PyHNSW& self, std::int64_t id) {
             const auto g = write_lock(self.lock);
             self.index->mark_deleted(id);
           },
           py::arg("vec_id"), "Exclude an id from results (KeyError if unknown).")
      .def("unmark_deleted",
           [](PyHNSW& self, std::int64_t id) {
             const auto g = write_lock(self.lock);
             self.index->unmark_deleted(id);
           },
           py::arg("vec_id"))
      .def("is_deleted",
           [](const PyHNSW& self, std::int64_t id) {
             const auto g = read_lock(self.lock);
             return self.index->is_deleted(id);
           },
           py::arg("vec_id"))
      .def("get_vector",
           [](const PyHNSW& self, std::int64_t id) {
             const auto g = read_lock(self.lock);
             const auto v = self.index->get_vector(id);
             return py::array_t<float>(static_cast<py::ssize_t>(v.size()), v.data());
           },
           py::arg("vec_id"), "The stored vector (normalised under cosine).")
      .def("stats",
           [](const PyHNSW& self) {
             const auto g = read_lock(self.lock);
             return llmds::python::stats_dict(self.index->stats());
           })
      .def("save",
           [](const PyHNSW& self, const std::filesystem::path& path) {
             const auto g = read_lock(self.lock);
             self.index->save(path);
           },
           py::arg("path"))
      .def_static("load",
                  [](const std::filesystem::path& path) {
                    auto p = std::make_unique<PyHNSW>();
                    p->index = HNSW::load(path);
                    return p;
                  },
                  py::arg("path"), "An index saved by save(); ValueError if the file is damaged.")
      .def(py::pickle(
          [](const PyHNSW& self) {
            const auto g = read_lock(self.lock);
            return py::bytes(self.index->to_bytes());
          },
          [](const py::bytes& b) {
            auto p = std::make_unique<PyHNSW>();
            p->index = HNSW::from_bytes(std::string_view(b));
            return p;
          }))
      .def_property("ef_search",
                    [](const PyHNSW& self) {
                      const auto g = read_lock(self.lock);
                      return self.index->ef_search();
                    },
                    [](PyHNSW& self, std::int64_t ef) {
                      const auto g = write_lock(self.lock);
                      self.index->set_ef_search(positive(ef, "ef_search"));
                    })
      .def_property_readonly("dim", [](const PyHNSW& self) { return self.index->config().dim; })
      .def_property_readonly("metric", [](const PyHNSW& self) { return llmds::metric_name(self.index->config().metric); })
      .def("__len__",
           [](const PyHNSW& self) {
             const auto g = read_lock(self.lock);
             return self.index->size();
           })
      .def("__contains__",
           [](const PyHNSW& self, std::int64_t id) {
             const auto g = read_lock(self.lock);
             return self.index->contains(id) && !self.index->is_deleted(id);
           })
      .def("__repr__", [](const PyHNSW& self) {
        const auto g = read_lock(self.lock);
        const auto& c = self.index->config();
        return fmt::format("HNSW(dim={}, M={}, ef_construction={}, ef_search={}, metric='{}', size={})",
                           c.dim, c.M, c.ef_construction, c.ef_search, llmds::metric_name(c.metric),
                           self.index->size());
      });
}
