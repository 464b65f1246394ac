// The one way a structure's statistics become the dict its Python stats() returns.
//
// Every stats struct of the library lists its figures with for_each_field
// (include/llmds/core/stats_fields.hpp); this walks that list, so a dict's keys are the C++
// struct's field names and nothing is listed twice. Nested structs become nested dicts, an empty
// optional becomes None, everything else goes through pybind11's casters.
#pragma once

#include <optional>
#include <string_view>
#include <type_traits>

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "llmds/core/stats_fields.hpp"

namespace llmds::python {

namespace py = pybind11;

template <class T>
struct is_optional : std::false_type {};
template <class T>
struct is_optional<std::optional<T>> : std::true_type {};

template <class T>
py::object to_python(const T& value) {
  if constexpr (HasFields<T>) {
    py::dict d;
    value.for_each_field([&](std::string_view name, const auto& field) {
      d[py::str(name.data(), name.size())] = to_python(field);
    });
    return d;
  } else if constexpr (is_optional<T>::value) {
    return value ? to_python(*value) : py::none();
  } else {
    return py::cast(value);
  }
}

/// The dict of a stats struct's figures, keys in the struct's order.
template <HasFields Stats>
py::dict stats_dict(const Stats& stats) {
  return to_python(stats).template cast<py::dict>();
}

}  // namespace llmds::python
