// llmds.indexed_heap.IndexedHeap and llmds.token_lru.TokenLRU.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>

#include <fmt/format.h>

#include "llmds/core/indexed_heap.hpp"
#include "llmds/core/token_lru.hpp"

#include "arguments.hpp"
#include "object_lock.hpp"
#include "initialised.hpp"
#include "stats_dict.hpp"

namespace py = pybind11;

namespace {
struct PyTokenLRU;
}  // namespace

LLMDS_PY_REQUIRE_INIT(llmds::IndexedHeap<std::int64_t, double>)
LLMDS_PY_REQUIRE_INIT(PyTokenLRU)

namespace {

// --- IndexedHeap: int keys, float scores -------------------------------------------------------

using Heap = llmds::IndexedHeap<std::int64_t, double>;
using HeapTuple = std::tuple<double, std::int64_t>;  // the documented (score, key_id)

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

// token_of: a Python callable that must return an int in [0, 2^64), as the C++ counts are. It
// points at the wrapper's own reference, so the garbage collector can see and clear it.
struct PyTokenOf {
  const py::object* function;

  std::uint64_t operator()(const py::object& value) const {
    const py::object n = (*function)(value);
    if (!PyLong_Check(n.ptr())) {
      throw py::type_error(fmt::format("token_of must return an int, got {}",
                                       std::string(py::str(py::type::of(n).attr("__name__")))));
    }
    int overflow = 0;
    const long long small = PyLong_AsLongLongAndOverflow(n.ptr(), &overflow);
    if (small == -1 && PyErr_Occurred()) throw py::error_already_set();
    if (overflow < 0 || (overflow == 0 && small < 0)) {
      throw std::invalid_argument(fmt::format(
          "TokenLRU: token_of returned {} for a value; a token count cannot be negative", std::string(py::repr(n))));
    }
    if (overflow == 0) return static_cast<std::uint64_t>(small);
    const unsigned long long large = PyLong_AsUnsignedLongLong(n.ptr());
    if (PyErr_Occurred()) {
      PyErr_Clear();
      throw std::overflow_error(
          fmt::format("TokenLRU: token_of returned {}, more than 2^64 - 1 tokens", std::string(py::repr(n))));
    }
    return large;
  }
};

using Lru = llmds::TokenLRU<PyKey, py::object, PyTokenOf, PyKeyHash, PyKeyEqual>;

using llmds::python::non_negative;
using llmds::python::ObjectLock;
using llmds::python::read_lock;
using llmds::python::write_lock;

// The cache as Python holds it. Python code runs inside its calls (a key's __eq__, token_of, a
// dropped value's __del__); the lock turns a call back into the same cache from that code into
// a RuntimeError instead of a change halfway through another, and makes other threads wait.
// A key's __hash__ runs before the lock is taken, while nothing is in progress.
struct PyTokenLRU {
  PyTokenLRU(py::object token_of_function, std::optional<std::uint64_t> max_tokens)
      : token_of(std::move(token_of_function)), lru(PyTokenOf{&token_of}, max_tokens) {}
  PyTokenLRU(const PyTokenLRU&) = delete;
  PyTokenLRU& operator=(const PyTokenLRU&) = delete;

  py::object token_of;
  Lru lru;
  mutable ObjectLock lock{"TokenLRU", "a key's __eq__, token_of or a value's __del__"};
};

py::list as_list(Lru::Evicted&& evicted) {
  py::list out;
  for (auto& [key, value] : evicted) out.append(py::make_tuple(key.object, value));
  return out;
}

// The garbage collector's view of a TokenLRU: it holds token_of and every key and value, so a
// cycle through a cached value (a value that refers to its cache) can be found and broken.
int traverse_token_lru(PyObject* self, visitproc visit, void* arg) {
  Py_VISIT(Py_TYPE(self));
  if (!py::detail::is_holder_constructed(self)) return 0;
  const auto& cache = py::handle(self).cast<const PyTokenLRU&>();
  Py_VISIT(cache.token_of.ptr());
  int result = 0;
  cache.lru.for_each_oldest_first([&](const PyKey& key, const py::object& value, std::uint64_t) {
    if (result == 0) result = visit(key.object.ptr(), arg);
    if (result == 0 && value) result = visit(value.ptr(), arg);
  });
  return result;
}

int clear_token_lru(PyObject* self) {
  if (!py::detail::is_holder_constructed(self)) return 0;
  auto& cache = py::handle(self).cast<PyTokenLRU&>();
  cache.lru.clear();
  cache.token_of = py::none();
  return 0;
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

  py::class_<PyTokenLRU>(m, "TokenLRU", py::custom_type_setup([](PyHeapTypeObject* heap_type) {
                           auto* type = &heap_type->ht_type;
                           type->tp_flags |= Py_TPFLAGS_HAVE_GC;
                           type->tp_traverse = traverse_token_lru;
                           type->tp_clear = clear_token_lru;
                         }),
                         R"doc(
Least-recently-used cache whose budget is counted in tokens.

Each value costs token_of(value) tokens (len by default). With max_tokens set, put evicts the
least recently used entries to stay within it; evict_until_budget evicts on demand. put and get
are O(1). Keys may be any hashable object, values anything. Code that the cache calls while it
changes (a key's __eq__, token_of, a dropped value's __del__) must not use the same cache, and
code it calls while it reads (a key's __eq__ in peek or `in`) must not change it: either raises
RuntimeError and leaves the cache as it was. The garbage collector sees the keys and values, so
cycles through them are collected.
)doc")
      .def(py::init([](py::object token_of, std::optional<std::int64_t> max_tokens) {
             if (!PyCallable_Check(token_of.ptr())) {
               throw py::type_error("token_of must be callable");
             }
             std::optional<std::uint64_t> budget;
             if (max_tokens) budget = non_negative(*max_tokens, "max_tokens");
             return std::make_unique<PyTokenLRU>(std::move(token_of), budget);
           }),
           py::arg("token_of") = py::module_::import("builtins").attr("len"),
           py::arg("max_tokens") = py::none())
      .def("put",
           [](PyTokenLRU& self, const py::handle& key, py::object value) {
             PyKey k(key);
             Lru::Evicted evicted;
             {
               const auto g = write_lock(self.lock);
               evicted = self.lru.put(std::move(k), std::move(value));
             }
             // Evicted entries are dropped here, after the lock: their __del__ may use the cache.
           },
           py::arg("key"), py::arg("value"),
           "Insert or replace key as the most recent entry, evicting to stay within max_tokens. "
           "ValueError if token_of(value) is negative or exceeds max_tokens.")
      .def("get",
           [](PyTokenLRU& self, const py::handle& key) -> py::object {
             const PyKey k(key);
             const auto g = write_lock(self.lock);  // a hit moves the entry to the front
             py::object* value = self.lru.get(k);
             return value ? *value : py::none();
           },
           py::arg("key"), "The value of key, made most recent; None if absent.")
      .def("peek",
           [](const PyTokenLRU& self, const py::handle& key) -> py::object {
             const PyKey k(key);
             const auto g = read_lock(self.lock);
             const py::object* value = self.lru.peek(k);
             return value ? *value : py::none();
           },
           py::arg("key"), "The value of key without touching its recency; None if absent.")
      .def("delete",
           [](PyTokenLRU& self, const py::handle& key) {
             const PyKey k(key);
             py::object value;
             {
               const auto g = write_lock(self.lock);
               value = self.lru.erase(k);
             }
             return value;
           },
           py::arg("key"), "Remove key and return its value. KeyError if absent.")
      .def("evict_until_budget",
           [](PyTokenLRU& self, std::int64_t target_budget) {
             const auto budget = non_negative(target_budget, "target_budget");
             Lru::Evicted evicted;
             {
               const auto g = write_lock(self.lock);
               evicted = self.lru.evict_until_budget(budget);
             }
             return as_list(std::move(evicted));
           },
           py::arg("target_budget"),
           "Evict least recently used entries until total_tokens() <= target_budget; return "
           "them as (key, value) pairs, least recent first.")
      .def("total_tokens", [](const PyTokenLRU& self) { return self.lru.total_tokens(); })
      .def_property_readonly("max_tokens", [](const PyTokenLRU& self) { return self.lru.max_tokens(); })
      .def("keys",
           [](const PyTokenLRU& self) {
             py::list keys;
             const auto g = read_lock(self.lock);
             self.lru.for_each_oldest_first(
                 [&](const PyKey& k, const py::object&, std::uint64_t) { keys.append(k.object); });
             return keys;
           },
           "The keys, least recently used first.")
      .def("stats",
           [](const PyTokenLRU& self) {
             return llmds::python::stats_dict(self.lru.stats());
           },
           "size, total_tokens, max_tokens, hits, misses, hit_rate and evictions.")
      .def("clear",
           [](PyTokenLRU& self) {
             const auto g = write_lock(self.lock);
             self.lru.clear();
           })
      .def("__len__", [](const PyTokenLRU& self) { return self.lru.size(); })
      .def("__contains__",
           [](const PyTokenLRU& self, const py::handle& key) {
             const PyKey k(key);
             const auto g = read_lock(self.lock);
             return self.lru.contains(k);
           })
      .def("__repr__", [](const PyTokenLRU& self) {
        const auto max = self.lru.max_tokens();
        return fmt::format("TokenLRU(size={}, total_tokens={}, max_tokens={})", self.lru.size(),
                           self.lru.total_tokens(), max ? std::to_string(*max) : "None");
      });
}
