// llmds.indexed_heap.IndexedHeap and llmds.token_lru.TokenLRU.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>

#include <fmt/format.h>

#include "llmds/core/indexed_heap.hpp"
#include "llmds/core/token_lru.hpp"

#include "arguments.hpp"

namespace py = pybind11;

namespace {

// --- IndexedHeap: int keys, float scores -------------------------------------------------------

using Heap = llmds::IndexedHeap<std::int64_t, double>;
using HeapTuple = std::tuple<double, std::int64_t>;  // the seed's (score, key_id)

HeapTuple as_tuple(const Heap::entry_type& e) { return {e.score, e.key}; }

// --- TokenLRU: any hashable key, any value ----------------------------------------------------

// A Python object as a C++ map key: its hash is computed once (so an unhashable key fails before
// anything changes) and equality is Python's ==.
struct PyKey {
  py::object object;
  Py_hash_t hash;

  explicit PyKey(py::handle h) : object(py::reinterpret_borrow<py::object>(h)) {
    hash = PyObject_Hash(h.ptr());
    if (hash == -1 && PyErr_Occurred()) throw py::error_already_set();
  }
};

struct PyKeyHash {
  std::size_t operator()(const PyKey& k) const noexcept { return static_cast<std::size_t>(k.hash); }
};

struct PyKeyEqual {
  bool operator()(const PyKey& a, const PyKey& b) const {
    if (a.object.ptr() == b.object.ptr()) return true;
    if (a.hash != b.hash) return false;
    const int equal = PyObject_RichCompareBool(a.object.ptr(), b.object.ptr(), Py_EQ);
    if (equal < 0) throw py::error_already_set();
    return equal == 1;
  }
};

// token_of: a Python callable that must return a (non-negative, checked by TokenLRU) int.
struct PyTokenOf {
  py::object function;

  std::int64_t operator()(const py::object& value) const {
    const py::object n = function(value);
    if (!PyLong_Check(n.ptr())) {
      throw py::type_error(fmt::format("token_of must return an int, got {}",
                                       std::string(py::str(py::type::of(n).attr("__name__")))));
    }
    const long long tokens = PyLong_AsLongLong(n.ptr());
    if (tokens == -1 && PyErr_Occurred()) throw py::error_already_set();
    return tokens;
  }
};

using Lru = llmds::TokenLRU<PyKey, py::object, PyTokenOf, PyKeyHash, PyKeyEqual>;

using llmds::python::non_negative;

py::list as_list(Lru::Evicted&& evicted) {
  py::list out;
  for (auto& [key, value] : evicted) out.append(py::make_tuple(key.object, value));
  return out;
}

}  // namespace

// Error messages name Python keys by their repr.
template <>
struct fmt::formatter<PyKey> : fmt::formatter<std::string> {
  template <class FormatContext>
  auto format(const PyKey& key, FormatContext& ctx) const {
    return fmt::formatter<std::string>::format(std::string(py::repr(key.object)), ctx);
  }
};

void bind_core(py::module_& m) {
  py::class_<Heap>(m, "IndexedHeap", R"doc(
Binary heap of (score, key_id) entries, addressable by key_id.

max_heap=False pops the smallest score first, max_heap=True the largest; equal scores pop the
smaller key_id first. push, pop, decrease_key, increase_key and delete are O(log n); get_score
and `in` are O(1).
)doc")
      .def(py::init([](bool max_heap) {
             return Heap(max_heap ? llmds::HeapOrder::max : llmds::HeapOrder::min);
           }),
           py::arg("max_heap") = false)
      .def("push", &Heap::push, py::arg("key_id"), py::arg("score"),
           "Add key_id with score. ValueError if key_id is present or score is NaN.")
      .def("pop", [](Heap& h) { return as_tuple(h.pop()); },
           "Remove and return the top (score, key_id). IndexError if empty.")
      .def("peek",
           [](const Heap& h) -> std::optional<HeapTuple> {
             if (auto e = h.peek()) return as_tuple(*e);
             return std::nullopt;
           },
           "The top (score, key_id) without removing it, or None if empty.")
      .def("decrease_key", &Heap::decrease_key, py::arg("key_id"), py::arg("new_score"),
           "Lower the score (sifts down in a max-heap, up in a min-heap). KeyError if absent, "
           "ValueError if new_score is greater than the current score.")
      .def("increase_key", &Heap::increase_key, py::arg("key_id"), py::arg("new_score"),
           "Raise the score (sifts up in a max-heap, down in a min-heap). KeyError if absent, "
           "ValueError if new_score is smaller than the current score.")
      .def("update_key", &Heap::update_key, py::arg("key_id"), py::arg("new_score"),
           "Set the score in either direction. KeyError if absent.")
      .def("delete", [](Heap& h, std::int64_t key) { return as_tuple(h.erase(key)); },
           py::arg("key_id"), "Remove key_id and return its (score, key_id). KeyError if absent.")
      .def("get_score", &Heap::get_score, py::arg("key_id"),
           "The score of key_id, or None if absent.")
      .def("size", &Heap::size)
      .def("is_empty", &Heap::is_empty)
      .def_property_readonly("max_heap",
                             [](const Heap& h) { return h.order() == llmds::HeapOrder::max; })
      .def("__len__", &Heap::size)
      .def("__contains__",
           [](const Heap& h, const py::handle& key) {
             // Anything usable as an int key (numpy integers too); other values are simply absent.
             if (!PyIndex_Check(key.ptr())) return false;
             const auto index = py::reinterpret_steal<py::object>(PyNumber_Index(key.ptr()));
             if (!index) throw py::error_already_set();
             int overflow = 0;
             const long long k = PyLong_AsLongLongAndOverflow(index.ptr(), &overflow);
             if (overflow != 0) return false;
             if (k == -1 && PyErr_Occurred()) throw py::error_already_set();
             return h.contains(k);
           })
      .def("__repr__", [](const Heap& h) {
        const auto top = h.peek();
        return fmt::format("IndexedHeap(max_heap={}, size={}, top={})",
                           h.order() == llmds::HeapOrder::max ? "True" : "False", h.size(),
                           top ? fmt::format("({}, {})", top->score, top->key) : "None");
      });

  py::class_<Lru>(m, "TokenLRU", R"doc(
Least-recently-used cache whose budget is counted in tokens.

Each value costs token_of(value) tokens (len by default). With max_tokens set, put evicts the
least recently used entries to stay within it; evict_until_budget evicts on demand. put and get
are O(1). Keys may be any hashable object, values anything.
)doc")
      .def(py::init([](py::object token_of, std::optional<std::int64_t> max_tokens) {
             if (!PyCallable_Check(token_of.ptr())) {
               throw py::type_error("token_of must be callable");
             }
             std::optional<std::uint64_t> budget;
             if (max_tokens) budget = non_negative(*max_tokens, "max_tokens");
             return Lru(PyTokenOf{std::move(token_of)}, budget);
           }),
           py::arg("token_of") = py::module_::import("builtins").attr("len"),
           py::arg("max_tokens") = py::none())
      .def("put",
           [](Lru& lru, const py::handle& key, py::object value) {
             lru.put(PyKey(key), std::move(value));
           },
           py::arg("key"), py::arg("value"),
           "Insert or replace key as the most recent entry, evicting to stay within max_tokens. "
           "ValueError if token_of(value) is negative or exceeds max_tokens.")
      .def("get",
           [](Lru& lru, const py::handle& key) -> py::object {
             py::object* value = lru.get(PyKey(key));
             return value ? *value : py::none();
           },
           py::arg("key"), "The value of key, made most recent; None if absent.")
      .def("peek",
           [](const Lru& lru, const py::handle& key) -> py::object {
             const py::object* value = lru.peek(PyKey(key));
             return value ? *value : py::none();
           },
           py::arg("key"), "The value of key without touching its recency; None if absent.")
      .def("delete", [](Lru& lru, const py::handle& key) { return lru.erase(PyKey(key)); },
           py::arg("key"), "Remove key and return its value. KeyError if absent.")
      .def("evict_until_budget",
           [](Lru& lru, std::int64_t target_budget) {
             return as_list(lru.evict_until_budget(non_negative(target_budget, "target_budget")));
           },
           py::arg("target_budget"),
           "Evict least recently used entries until total_tokens() <= target_budget; return "
           "them as (key, value) pairs, least recent first.")
      .def("total_tokens", &Lru::total_tokens)
      .def_property_readonly("max_tokens", &Lru::max_tokens)
      .def("keys",
           [](const Lru& lru) {
             py::list keys;
             lru.for_each_oldest_first(
                 [&](const PyKey& k, const py::object&, std::uint64_t) { keys.append(k.object); });
             return keys;
           },
           "The keys, least recently used first.")
      .def("stats",
           [](const Lru& lru) {
             const auto s = lru.stats();
             py::dict d;
             d["size"] = s.size;
             d["total_tokens"] = s.total_tokens;
             d["max_tokens"] = s.max_tokens;
             d["hits"] = s.hits;
             d["misses"] = s.misses;
             d["hit_rate"] = s.hits + s.misses == 0
                                 ? 0.0
                                 : static_cast<double>(s.hits) / double(s.hits + s.misses);
             d["evictions"] = s.evictions;
             return d;
           },
           "size, total_tokens, max_tokens, hits, misses, hit_rate and evictions.")
      .def("clear", &Lru::clear)
      .def("__len__", &Lru::size)
      .def("__contains__", [](const Lru& lru, const py::handle& key) {
        return lru.contains(PyKey(key));
      })
      .def("__repr__", [](const Lru& lru) {
        const auto max = lru.max_tokens();
        return fmt::format("TokenLRU(size={}, total_tokens={}, max_tokens={})", lru.size(),
                           lru.total_tokens(), max ? std::to_string(*max) : "None");
      });
}
