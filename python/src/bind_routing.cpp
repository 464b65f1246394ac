// llmds.routing: KVIndexer over integer block hashes (kv/routing/kv_indexer.hpp), fed the event
// batches KVBlockManager.subscribe delivers; the routed trace replay is bound in bind_traces.cpp.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "llmds/kv/routing/kv_indexer.hpp"

#include "initialised.hpp"
#include "kv_event_dicts.hpp"

namespace py = pybind11;

using IntKVIndexer = llmds::KVIndexer<std::int64_t>;

LLMDS_PY_REQUIRE_INIT(IntKVIndexer)

namespace {

llmds::WorkerId worker_arg(std::int64_t w) {
  if (w < 0 || w > static_cast<std::int64_t>(UINT32_MAX)) {
    throw std::invalid_argument(fmt::format("worker must be in [0, 2^32), got {}", w));
  }
  return static_cast<llmds::WorkerId>(w);
}

py::dict score_dict(const llmds::WorkerScore& s) {
  py::dict d;
  d["worker"] = s.worker;
  d["blocks"] = s.blocks;
  py::dict tiers;
  for (const auto t : {llmds::Tier::kPrimary, llmds::Tier::kHost, llmds::Tier::kDisk, llmds::Tier::kRemote}) {
    tiers[py::str(std::string(llmds::tier_name(t)))] = s.by_tier[static_cast<std::size_t>(t)];
  }
  d["by_tier"] = tiers;
  return d;
}

}  // namespace

void bind_routing(py::module_& m) {
  py::class_<IntKVIndexer>(m, "KVIndexer",
                           "Which worker (server) holds which KV block in which tier, from the workers' KV event "
                           "batches; scores a request's block hashes per worker by the longest leading run it holds.")
      .def(py::init<>())
      .def(
          "apply",
          [](IntKVIndexer& x, std::int64_t worker, const py::dict& batch) {
            const auto parsed = llmds::python::batch_from_dict(batch);  // all checked before any change
            switch (x.apply(worker_arg(worker), parsed)) {
              case llmds::ApplyOutcome::kApplied: return "applied";
              case llmds::ApplyOutcome::kDuplicate: return "duplicate";
              case llmds::ApplyOutcome::kAfterGap: return "after_gap";
            }
            return "applied";
          },
          py::arg("worker"), py::arg("batch"),
          "Apply one of a worker's event batches ({'seq': n, 'events': [...]}, as KVBlockManager.subscribe "
          "delivers them). Returns 'applied', 'duplicate' (seq already applied: skipped) or 'after_gap' "
          "(applied, but earlier batches were missed: the worker is out of sync until mark_synced). ValueError "
          "for a malformed batch, which changes nothing.")
      .def(
          "score",
          [](const IntKVIndexer& x, const std::vector<std::int64_t>& hashes) {
            py::list out;
            for (const auto& s : x.score(hashes)) out.append(score_dict(s));
            return out;
          },
          py::arg("hashes"),
          "Workers holding a run of the request's leading blocks, best first (ties by worker): "
          "[{'worker', 'blocks', 'by_tier': {tier: blocks}}]. Workers holding none are left out.")
      .def("remove_worker", [](IntKVIndexer& x, std::int64_t w) { return x.remove_worker(worker_arg(w)); },
           py::arg("worker"), "Forget a worker's blocks and sequence; False if unknown.")
      .def("mark_synced", [](IntKVIndexer& x, std::int64_t w) { return x.mark_synced(worker_arg(w)); },
           py::arg("worker"), "Declare a worker resynchronised after a gap; False if unknown.")
      .def(
          "worker",
          [](const IntKVIndexer& x, std::int64_t w) -> py::object {
            const auto s = x.worker(worker_arg(w));
            if (!s) return py::none();
            py::dict d;
            d["next_seq"] = s->next_seq;
            d["blocks"] = s->blocks;
            d["gaps"] = s->gaps;
            d["in_sync"] = s->in_sync;
            return d;
          },
          py::arg("worker"), "A worker's {'next_seq', 'blocks', 'gaps', 'in_sync'}, or None if unknown.")
      .def_property_readonly("workers", &IntKVIndexer::workers, "Every known worker, ascending.")
      .def("__len__", &IntKVIndexer::num_blocks, "Distinct blocks held by at least one worker.")
      .def("__repr__", [](const IntKVIndexer& x) {
        return fmt::format("KVIndexer(workers={}, blocks={})", x.workers().size(), x.num_blocks());
      });
}
