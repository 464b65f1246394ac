// llmds.cmsketch.CountMinSketch.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "llmds/sketch/count_min_sketch.hpp"
#include "initialised.hpp"
#include "stats_dict.hpp"

namespace py = pybind11;

LLMDS_PY_REQUIRE_INIT(llmds::CountMinSketch)

namespace {

using llmds::CountMinSketch;
using llmds::CountMinSketchConfig;

// An item's bytes: a str counts as its UTF-8 encoding, so "abc" and b"abc" are one item. The view
// stays valid while the Python object lives (CPython caches a str's UTF-8 form on the object).
std::string_view item_bytes(py::handle item) {
  if (PyUnicode_Check(item.ptr())) {
    Py_ssize_t size = 0;
    const char* data = PyUnicode_AsUTF8AndSize(item.ptr(), &size);
    if (data == nullptr) throw py::error_already_set();
    return {data, static_cast<std::size_t>(size)};
  }
  if (PyBytes_Check(item.ptr())) {
    return {PyBytes_AS_STRING(item.ptr()), static_cast<std::size_t>(PyBytes_GET_SIZE(item.ptr()))};
  }
  throw py::type_error(fmt::format("CountMinSketch items must be str or bytes, got {}",
                                   std::string(py::str(py::type::of(item).attr("__name__")))));
}

// Heavy hitters come back as str when their bytes are valid UTF-8, as bytes otherwise.
py::object item_object(const std::string& bytes) {
  PyObject* text = PyUnicode_DecodeUTF8(bytes.data(), static_cast<Py_ssize_t>(bytes.size()), "strict");
  if (text != nullptr) return py::reinterpret_steal<py::object>(text);
  PyErr_Clear();
  return py::bytes(bytes);
}

std::uint32_t checked_u32(std::int64_t v, const char* name, std::int64_t low) {
  if (v < low || v > std::numeric_limits<std::uint32_t>::max()) {
    throw std::invalid_argument(
        fmt::format("{} must be in [{}, 2^32 - 1], got {}", name, low, v));
  }
  return static_cast<std::uint32_t>(v);
}

std::uint64_t checked_seed(const py::int_& seed) {
  const unsigned long long v = PyLong_AsUnsignedLongLong(seed.ptr());
  if (PyErr_Occurred()) {
    PyErr_Clear();
    throw std::invalid_argument(
        fmt::format("seed must be in [0, 2^64 - 1], got {}", std::string(py::repr(seed))));
  }
  return v;
}

CountMinSketchConfig make_config(std::int64_t width, std::int64_t depth, const py::int_& seed,
                                 bool conservative, std::int64_t top_k) {
  CountMinSketchConfig c;
  c.width = checked_u32(width, "width", 1);
  c.depth = checked_u32(depth, "depth", 1);
  c.seed = checked_seed(seed);
  c.conservative = conservative;
  c.top_k = checked_u32(top_k, "top_k", 0);
  c.validate();
  return c;
}

// Items of a batch call as byte views, all checked before the sketch changes.
std::vector<std::string_view> item_views(const py::tuple& items) {
  std::vector<std::string_view> views;
  views.reserve(items.size());
  for (const py::handle item : items) views.push_back(item_bytes(item));
  return views;
}

// Counts of a batch call: None (1 each), or one integer per item. Floats are refused rather than
// truncated.
std::vector<std::int64_t> batch_counts(const py::object& counts_arg, std::size_t n_items) {
  if (counts_arg.is_none()) return {};
  const py::array array = py::array::ensure(counts_arg);
  if (!array || array.ndim() != 1) {
    throw std::invalid_argument("counts must be a one-dimensional sequence of ints");
  }
  if (static_cast<std::size_t>(array.size()) != n_items) {
    throw std::invalid_argument(
        fmt::format("counts has {} entries for {} items", array.size(), n_items));
  }
  if (array.size() == 0) return {};
  const char kind = array.dtype().kind();
  if (kind != 'i' && kind != 'u') {
    throw std::invalid_argument(fmt::format(
        "counts must be integers, got dtype {}", std::string(py::str(array.dtype()))));
  }
  if (kind == 'u') {
    const auto wide = py::array_t<std::uint64_t, py::array::forcecast>::ensure(array);
    for (py::ssize_t i = 0; i < wide.size(); ++i) {
      if (wide.data()[i] > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
        throw std::invalid_argument(
            fmt::format("count {} is larger than 2^63 - 1", wide.data()[i]));
      }
    }
  }
  const auto exact = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>::ensure(array);
  return {exact.data(), exact.data() + exact.size()};
}

void add_many(CountMinSketch& sketch, const py::object& items_arg, const py::object& counts_arg) {
  // Our own tuple of the items: the byte views below point into these objects, and neither the
  // caller nor code run while converting counts (an __array__ method) can drop them meanwhile.
  const py::tuple items(items_arg);
  const std::vector<std::int64_t> counts = batch_counts(counts_arg, items.size());
  const auto views = item_views(items);
  // Validate the whole batch first, so an error leaves the sketch unchanged.
  std::uint64_t batch_total = counts.empty() ? views.size() : 0;
  for (const std::int64_t c : counts) {
    if (c < 0) throw std::invalid_argument(fmt::format("count must be non-negative, got {}", c));
    if (static_cast<std::uint64_t>(c) > std::numeric_limits<std::uint64_t>::max() - batch_total) {
      throw std::overflow_error("CountMinSketch.add_many: the batch total passes 2^64 - 1");
    }
    batch_total += static_cast<std::uint64_t>(c);
  }
  if (batch_total > std::numeric_limits<std::uint64_t>::max() - sketch.total_count()) {
    throw std::overflow_error("CountMinSketch.add_many: the total count would pass 2^64 - 1");
  }
  for (std::size_t i = 0; i < views.size(); ++i) {
    sketch.add(views[i], counts.empty() ? 1 : counts[i]);
  }
}

}  // namespace

void bind_sketch(py::module_& m) {
  py::class_<CountMinSketch>(m, "CountMinSketch", R"doc(
Count-min sketch: approximate counts of str/bytes items in fixed memory, never underestimated.

With epsilon = e / width and delta = e^-depth, an estimate exceeds the true count by more than
epsilon * N (N the total count) with probability at most delta. conservative=True (the default)
uses conservative update, which keeps that guarantee with much smaller errors. top_k > 0 also
tracks the top_k items by estimate (heavy_hitters()). A str counts as its UTF-8 bytes.
)doc")
      .def(py::init(
               [](std::int64_t width, std::int64_t depth, const py::int_& seed, bool conservative,
                  std::int64_t top_k) {
                 return CountMinSketch(make_config(width, depth, seed, conservative, top_k));
               }),
           py::arg("width") = 2048, py::arg("depth") = 4, py::arg("seed") = 0,
           py::arg("conservative") = true, py::arg("top_k") = 0)
      .def_static(
          "from_error",
          [](double epsilon, double delta, const py::int_& seed, bool conservative,
             std::int64_t top_k) {
            auto c = CountMinSketchConfig::from_error(epsilon, delta);
            c.seed = checked_seed(seed);
            c.conservative = conservative;
            c.top_k = checked_u32(top_k, "top_k", 0);
            return CountMinSketch(c);
          },
          py::arg("epsilon"), py::arg("delta"), py::arg("seed") = 0,
          py::arg("conservative") = true, py::arg("top_k") = 0,
          "The smallest sketch with error epsilon * N at probability 1 - delta: "
          "width = ceil(e / epsilon), depth = ceil(ln(1 / delta)).")
      .def("add",
           [](CountMinSketch& s, const py::handle& item, std::int64_t count) {
             s.add(item_bytes(item), count);
           },
           py::arg("item"), py::arg("count") = 1,
           "Count `count` more occurrences of item. ValueError if count is negative.")
      .def("add_many", &add_many, py::arg("items"), py::arg("counts") = py::none(),
           "Add every item of an iterable (counts: None for 1 each, or one int per item). "
           "The whole batch is checked first: an error adds nothing.")
      .def("estimate",
           [](const CountMinSketch& s, const py::handle& item) {
             return s.estimate(item_bytes(item));
           },
           py::arg("item"), "An upper bound on item's count, never below the true count.")
      .def("estimate_many",
           [](const CountMinSketch& s, const py::object& items) {
             const py::tuple owned(items);
             const auto views = item_views(owned);
             py::array_t<std::uint64_t> out(static_cast<py::ssize_t>(views.size()));
             auto* data = out.mutable_data();
             for (std::size_t i = 0; i < views.size(); ++i) data[i] = s.estimate(views[i]);
             return out;
           },
           py::arg("items"), "estimate() of every item, as a numpy uint64 array.")
      .def("is_hot",
           [](const CountMinSketch& s, const py::handle& item, std::int64_t threshold) {
             return s.is_hot(item_bytes(item), threshold);
           },
           py::arg("item"), py::arg("threshold"), "Whether estimate(item) >= threshold.")
      .def("get_error_bound", &CountMinSketch::get_error_bound,
           "epsilon * N: the error bound that holds with probability 1 - delta.")
      .def("total_count", &CountMinSketch::total_count, "N, the sum of all counts added.")
      .def("merge", &CountMinSketch::merge, py::arg("other"),
           "Add other's counts into this sketch. ValueError unless width, depth and seed match.")
      .def("heavy_hitters",
           [](const CountMinSketch& s) {
             py::list out;
             for (const auto& h : s.heavy_hitters()) {
               out.append(py::make_tuple(item_object(h.item), h.estimate));
             }
             return out;
           },
           "The tracked top_k items as (item, estimate), largest first.")
      .def("clear", &CountMinSketch::clear)
      .def("stats",
           [](const CountMinSketch& s) {
             return llmds::python::stats_dict(s.stats());
           })
      .def_property_readonly("width", [](const CountMinSketch& s) { return s.config().width; })
      .def_property_readonly("depth", [](const CountMinSketch& s) { return s.config().depth; })
      .def_property_readonly("seed", [](const CountMinSketch& s) { return s.config().seed; })
      .def_property_readonly("conservative",
                             [](const CountMinSketch& s) { return s.config().conservative; })
      .def_property_readonly("top_k", [](const CountMinSketch& s) { return s.config().top_k; })
      .def_property_readonly("epsilon", &CountMinSketch::epsilon)
      .def_property_readonly("delta", &CountMinSketch::delta)
      .def("to_bytes", [](const CountMinSketch& s) { return py::bytes(s.to_bytes()); },
           "The sketch as checksummed bytes (magic, format version, parameters, counters).")
      .def_static("from_bytes",
                  [](const py::bytes& data) {
                    return CountMinSketch::from_bytes(std::string_view(data));
                  },
                  py::arg("data"), "Read to_bytes() output. ValueError if it is not valid.")
      .def("save", &CountMinSketch::save, py::arg("path"),
           "Write the sketch to path (replaced whole or not at all).")
      .def_static("load", &CountMinSketch::load, py::arg("path"),
                  "Read a sketch written by save. OSError or ValueError.")
      .def(py::pickle([](const CountMinSketch& s) { return py::bytes(s.to_bytes()); },
                      [](const py::bytes& data) {
                        return CountMinSketch::from_bytes(std::string_view(data));
                      }))
      .def("__repr__", [](const CountMinSketch& s) {
        const auto& c = s.config();
        return fmt::format(
            "CountMinSketch(width={}, depth={}, seed={}, conservative={}, top_k={}, total={})",
            c.width, c.depth, c.seed, c.conservative ? "True" : "False", c.top_k,
            s.total_count());
      });
}
