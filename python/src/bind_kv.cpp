// llmds.paged_allocator: PagedAllocator and PageStats.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <stdexcept>
#include <vector>

#include <fmt/format.h>

#include "llmds/kv/paged_allocator.hpp"

namespace py = pybind11;

namespace {

using llmds::PageId;
using llmds::PagedAllocator;
using llmds::PageStats;

std::size_t positive(std::int64_t v, const char* name) {
  if (v < 1) throw std::invalid_argument(fmt::format("{} must be at least 1, got {}", name, v));
  return static_cast<std::size_t>(v);
}

}  // namespace

void bind_kv(py::module_& m) {
  py::class_<PageStats>(m, "PageStats", "Allocation statistics of a PagedAllocator.")
      .def_readonly("total_pages", &PageStats::total_pages)
      .def_readonly("used_pages", &PageStats::used_pages)
      .def_readonly("free_pages", &PageStats::free_pages)
      .def_readonly("utilization", &PageStats::utilization, "used / total")
      .def_readonly("fragmentation", &PageStats::fragmentation,
                    "holes below the highest used page id, as a share of that range")
      .def_readonly("alloc_count", &PageStats::alloc_count)
      .def_readonly("free_count", &PageStats::free_count)
      .def("__repr__", [](const PageStats& s) {
        return fmt::format(
            "PageStats(total_pages={}, used_pages={}, free_pages={}, utilization={:.4f}, "
            "fragmentation={:.4f}, alloc_count={}, free_count={})",
            s.total_pages, s.used_pages, s.free_pages, s.utilization, s.fragmentation,
            s.alloc_count, s.free_count);
      });

  py::class_<PagedAllocator>(m, "PagedAllocator", R"doc(
Fixed-size pages of a KV arena, handed out by id from a free list: O(1) per page.

alloc is all or nothing (MemoryError if too few pages are free); free rejects a double free or an
id never handed out (ValueError) and then frees nothing of that call.
)doc")
      .def(py::init([](std::int64_t page_size, std::int64_t max_pages) {
             return PagedAllocator(llmds::PagedAllocatorConfig{positive(page_size, "page_size"),
                                                               positive(max_pages, "max_pages")});
           }),
           py::arg("page_size") = 512, py::arg("max_pages") = 10000)
      .def("alloc",
           [](PagedAllocator& a, std::int64_t num_pages) {
             if (num_pages < 0) {
               throw std::invalid_argument(
                   fmt::format("num_pages must be non-negative, got {}", num_pages));
             }
             return a.alloc(static_cast<std::size_t>(num_pages));
           },
           py::arg("num_pages"), "Allocate num_pages pages; MemoryError (nothing allocated) if too few are free.")
      .def("free", [](PagedAllocator& a, const std::vector<PageId>& page_ids) { a.free(page_ids); },
           py::arg("page_ids"), "Return pages; ValueError (nothing freed) on a double free or unknown id.")
      .def("stats", &PagedAllocator::stats)
      .def("defragment",
           [](PagedAllocator& a) {
             py::dict moves;
             for (const auto& [from, to] : a.defragment()) moves[py::int_(from)] = to;
             return moves;
           },
           "Pack used pages at the lowest ids; return {old_id: new_id} for every page that moved.")
      .def("is_allocated", &PagedAllocator::is_allocated, py::arg("page_id"))
      .def_property_readonly("page_size", &PagedAllocator::page_size)
      .def_property_readonly("max_pages", &PagedAllocator::max_pages)
      .def("__repr__", [](const PagedAllocator& a) {
        return fmt::format("PagedAllocator(page_size={}, max_pages={}, used_pages={})",
                           a.page_size(), a.max_pages(), a.used_pages());
      });
}
