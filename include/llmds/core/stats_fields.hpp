// How a statistics struct lists its figures: one pattern for every structure of llmds.
//
// A structure's stats() returns a plain struct. Its stored figures are members; its derived
// figures (hit rates, bytes saved) are member functions, so C++ callers and the Python API
// compute them the same way. Each such struct also lists every figure by name, stored and
// derived, in one member template:
//
//   template <class Visit> void for_each_field(Visit&& visit) const {
//     visit("hits", hits);
//     visit("hit_rate", hit_rate());
//   }
//
// calling visit(name, value) once per figure, in the order a report shows them. A value is a
// number, a bool, a string, an optional of one (absent: no value), or another struct with
// fields (its figures nest). One function turns any of them into the dict the Python API
// returns (python/src/stats_dict.hpp); a C++ server can export them to its metrics the same way,
// without keeping a list of names of its own that drifts from the struct's.
#pragma once

#include <string_view>

namespace llmds {

/// A struct that lists its figures with for_each_field(visit).
template <class T>
concept HasFields = requires(const T& t) { t.for_each_field([](std::string_view, const auto&) {}); };

}  // namespace llmds
