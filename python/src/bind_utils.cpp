// llmds.utils: Timer, MemoryProfiler, compute_percentiles, calculate_statistics.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <span>
#include <stdexcept>

#include <fmt/format.h>

#include "llmds/core/memory_profiler.hpp"
#include "llmds/core/statistics.hpp"
#include "llmds/core/timer.hpp"
#include "initialised.hpp"
#include "stats_dict.hpp"

namespace py = pybind11;

LLMDS_PY_REQUIRE_INIT(llmds::Timer)
LLMDS_PY_REQUIRE_INIT(llmds::MemoryProfiler)

namespace {

using Values = py::array_t<double, py::array::c_style | py::array::forcecast>;

std::span<const double> as_span(const Values& values, const char* op) {
  if (values.ndim() != 1) {
    throw std::invalid_argument(
        fmt::format("{}: values must be one-dimensional, got {} dimensions", op, values.ndim()));
  }
  return {values.data(), static_cast<std::size_t>(values.size())};
}

}  // namespace

void bind_utils(py::module_& m) {
  py::class_<llmds::Timer>(m, "Timer", R"doc(
Wall-clock timer on the monotonic clock, as a context manager.

    with Timer() as t:
        work()
    t.elapsed  # seconds, frozen when the block ends
)doc")
      .def(py::init<>())
      .def("__enter__", [](llmds::Timer& t) -> llmds::Timer& { t.start(); return t; },
           py::return_value_policy::reference_internal)
      .def("__exit__", [](llmds::Timer& t, const py::args&) { t.stop(); })
      .def("start", &llmds::Timer::start, "Restart the interval from now.")
      .def("stop", &llmds::Timer::stop, "Freeze the interval.")
      .def_property_readonly("elapsed", &llmds::Timer::elapsed,
                             "Seconds from start to stop, or to now while running.")
      .def_property_readonly("running", &llmds::Timer::running)
      .def("__repr__", [](const llmds::Timer& t) {
        return fmt::format("Timer(elapsed={:.6f}, running={})", t.elapsed(),
                           t.running() ? "True" : "False");
      });

  py::class_<llmds::MemoryProfiler>(m, "MemoryProfiler", R"doc(
Resident set size of this process over an interval, and its peak.

Besides explicit samples, the kernel's high-water mark is read, so a new peak of the process
inside the interval is seen even if it ended between two samples.
)doc")
      .def(py::init<>())
      .def("start", &llmds::MemoryProfiler::start, "Start (or restart) the interval.")
      .def("sample", &llmds::MemoryProfiler::sample,
           "Sample the current RSS, raise the peak if needed; return the RSS in bytes.")
      .def("get_peak_rss_mb", &llmds::MemoryProfiler::get_peak_rss_mb)
      .def("get_peak_rss_bytes", &llmds::MemoryProfiler::get_peak_rss_bytes)
      .def("get_current_rss_mb", &llmds::MemoryProfiler::get_current_rss_mb)
      .def("get_memory_delta_mb", &llmds::MemoryProfiler::get_memory_delta_mb,
           "Peak minus initial RSS, in megabytes.")
      .def("__repr__", [](const llmds::MemoryProfiler& p) {
        return fmt::format("MemoryProfiler(peak_rss_mb={:.1f}, delta_mb={:.1f})",
                           p.get_peak_rss_mb(), p.get_memory_delta_mb());
      });

  m.def(
      "compute_percentiles",
      [](const Values& values) {
        return llmds::python::stats_dict(llmds::compute_percentiles(as_span(values, "compute_percentiles")));
      },
      py::arg("values"),
      "p50, p95 and p99 of `values`, interpolated linearly as numpy.percentile does.");

  m.def(
      "calculate_statistics",
      [](const Values& values, double confidence_level) {
        const auto s = llmds::calculate_statistics(as_span(values, "calculate_statistics"),
                                                   confidence_level);
        return llmds::python::stats_dict(s);
      },
      py::arg("values"), py::arg("confidence_level") = 0.95,
      "Mean, sample std, min, max, percentiles, Student-t confidence interval of the mean, "
      "coefficient of variation (%) and count.");
}
