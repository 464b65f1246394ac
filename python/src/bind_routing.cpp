// llmds.routing: KVIndexer over integer block hashes (kv/routing/kv_indexer.hpp), fed the event
// batches KVBlockManager.subscribe delivers; with ZeroMQ, KVEventPublisher (a manager's events in
// vLLM's wire format) and decode_kv_event_batch (that format back into the same batch dicts).
// The routed trace replay is bound in bind_traces.cpp.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <variant>
#include <stdexcept>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "llmds/kv/routing/kv_indexer.hpp"
#ifdef LLMDS_HAS_ZMQ
#include "llmds/kv/routing/kv_event_publisher.hpp"
#include "llmds/kv/routing/kv_event_wire.hpp"
#endif

#include "initialised.hpp"
#include "kv_tiered_types.hpp"
#include "kv_event_dicts.hpp"
#include "stats_dict.hpp"

namespace py = pybind11;

using IntKVIndexer = llmds::KVIndexer<std::int64_t>;

LLMDS_PY_REQUIRE_INIT(IntKVIndexer)
#ifdef LLMDS_HAS_ZMQ
using IntKVEventPublisher = llmds::KVEventPublisher<std::int64_t>;
LLMDS_PY_REQUIRE_INIT(IntKVEventPublisher)
#endif

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

#ifdef LLMDS_HAS_ZMQ
llmds::KVEventEncoding encoding_arg(const std::string& name) {
  if (name == "map") return llmds::KVEventEncoding::kMap;
  if (name == "array") return llmds::KVEventEncoding::kArray;
  throw std::invalid_argument(fmt::format("encoding must be 'map' or 'array', got '{}'", name));
}

void bind_kv_event_publisher(py::module_& m) {
  py::class_<IntKVEventPublisher>(m, "KVEventPublisher", R"doc(
A KVBlockManager's KV events on ZeroMQ in vLLM's wire format, for cache-aware routers (Dynamo's KV
router, llm-d's KV-cache indexer) or any subscriber of vLLM's stream.

Each batch is one message of three frames on a PUB socket: topic, the batch's sequence number (8
bytes big-endian) and the batch in MessagePack. With replay_endpoint, a ROUTER socket answers a
start sequence number (8 bytes big-endian) with the buffered batches from there and an end marker
(seq -1, empty payload). endpoint binds if it holds '*' or '::' or is ipc:// or inproc://, and
connects otherwise, as vLLM's publisher does.

encoding: 'map' (structs as maps, an event's tag under "type": vLLM's current encoding) or 'array'
(structs as arrays, the tag first: vLLM's earlier array_like encoding). data_parallel_rank: the
batch's rank field, None to omit it. medium: the names of the tiers primary, host, disk, remote in
the events (default vLLM's "GPU", "CPU", "DISK", "REMOTE").

The manager must build events (event_log_batches > 0). close() (or leaving a with block) sends
what is pending and closes the sockets.)doc")
      .def(py::init([](IntKVBlockManager& manager, const std::string& endpoint,
                       const std::optional<std::string>& replay_endpoint, const std::string& topic,
                       const std::string& encoding, std::optional<std::int64_t> data_parallel_rank,
                       std::int64_t buffer_steps, std::int64_t hwm, const std::optional<std::vector<std::string>>& medium,
                       double linger) {
             if (manager.config().event_log_batches == 0) {
               throw std::invalid_argument("KVEventPublisher: the manager builds no events (event_log_batches=0)");
             }
             llmds::KVEventPublisherConfig c;
             c.endpoint = endpoint;
             c.replay_endpoint = replay_endpoint.value_or("");
             c.topic = topic;
             c.format.encoding = encoding_arg(encoding);
             c.format.data_parallel_rank = data_parallel_rank;
             if (buffer_steps < 1) throw std::invalid_argument(fmt::format("buffer_steps must be at least 1, got {}", buffer_steps));
             c.buffer_steps = static_cast<std::size_t>(buffer_steps);
             if (hwm < 0 || hwm > INT32_MAX) throw std::invalid_argument(fmt::format("hwm must be in [0, 2^31), got {}", hwm));
             c.hwm = static_cast<int>(hwm);
             if (medium) {
               if (medium->size() != llmds::kNumTiers) {
                 throw std::invalid_argument(fmt::format("medium must name the 4 tiers, got {} names", medium->size()));
               }
               std::copy(medium->begin(), medium->end(), c.format.medium.begin());
             }
             if (!(linger >= 0 && linger < 3600)) throw std::invalid_argument(fmt::format("linger must be in [0, 3600) seconds, got {}", linger));
             c.linger = std::chrono::milliseconds(static_cast<std::int64_t>(linger * 1000));
             return std::make_unique<IntKVEventPublisher>(manager.events(), std::move(c));
           }),
           py::arg("manager"), py::arg("endpoint") = "tcp://*:5557", py::arg("replay_endpoint") = py::none(),
           py::kw_only(), py::arg("topic") = "", py::arg("encoding") = "map", py::arg("data_parallel_rank") = 0,
           py::arg("buffer_steps") = 10000, py::arg("hwm") = 100000, py::arg("medium") = py::none(),
           py::arg("linger") = 1.0, py::keep_alive<1, 2>())
      .def_property_readonly("endpoint", &IntKVEventPublisher::endpoint,
                             "The PUB socket's address, with the port chosen for a wildcard one.")
      .def_property_readonly("replay_endpoint",
                             [](const IntKVEventPublisher& p) -> py::object {
                               if (p.replay_endpoint().empty()) return py::none();
                               return py::str(p.replay_endpoint());
                             },
                             "The ROUTER socket's address, or None.")
      .def("flush", &IntKVEventPublisher::flush, py::call_guard<py::gil_scoped_release>(),
           "Wait until every batch the manager has published so far is sent.")
      .def("close", &IntKVEventPublisher::close, py::call_guard<py::gil_scoped_release>(),
           "Send what is pending, then close the sockets (waiting up to linger seconds for subscribers). Idempotent.")
      .def("stats", [](const IntKVEventPublisher& p) { return llmds::python::to_python(p.stats()); },
           "{'published_batches', 'published_events', 'lost_batches', 'send_failures', 'replay_requests', "
           "'replayed_batches', 'bad_requests'}.")
      .def("__enter__", [](IntKVEventPublisher& p) -> IntKVEventPublisher& { return p; },
           py::return_value_policy::reference)
      .def("__exit__",
           [](IntKVEventPublisher& p, const py::args&) {
             const py::gil_scoped_release release;
             p.close();
           })
      .def("__repr__", [](const IntKVEventPublisher& p) {
        const auto s = p.stats();
        return fmt::format("KVEventPublisher(endpoint='{}', replay_endpoint={}, published_batches={})", p.endpoint(),
                           p.replay_endpoint().empty() ? "None" : "'" + p.replay_endpoint() + "'", s.published_batches);
      });

  m.def(
      "decode_kv_event_batch",
      [](const py::bytes& payload, std::int64_t seq) {
        if (seq < 0) throw std::invalid_argument(fmt::format("seq must be >= 0, got {}", seq));
        const std::string_view view = payload;
        const auto decoded = llmds::decode_kv_event_batch(std::as_bytes(std::span(view.data(), view.size())),
                                                          static_cast<std::uint64_t>(seq));
        // Hashes back to the signed 64-bit keys a Python KVBlockManager uses (the wire carries their bits).
        llmds::KVEventBatch<std::int64_t> batch{decoded.batch.seq, {}};
        const auto keys = [](const std::vector<std::uint64_t>& w) {
          return std::vector<std::int64_t>(w.begin(), w.end());
        };
        for (const auto& e : decoded.batch.events) {
          if (const auto* st = std::get_if<llmds::BlockStored<std::uint64_t>>(&e)) {
            llmds::BlockStored<std::int64_t> out{keys(st->block_hashes), std::nullopt, st->token_ids, st->block_size, st->tier};
            if (st->parent_hash) out.parent_hash = static_cast<std::int64_t>(*st->parent_hash);
            batch.events.emplace_back(std::move(out));
          } else if (const auto* r = std::get_if<llmds::BlockRemoved<std::uint64_t>>(&e)) {
            batch.events.emplace_back(llmds::BlockRemoved<std::int64_t>{keys(r->block_hashes), r->tier});
          } else {
            batch.events.emplace_back(llmds::AllBlocksCleared{});
          }
        }
        py::dict d = llmds::python::batch_dict(batch);
        d["ts"] = decoded.ts;
        d["data_parallel_rank"] = decoded.data_parallel_rank ? py::cast(*decoded.data_parallel_rank) : py::none();
        return d;
      },
      py::arg("payload"), py::arg("seq") = 0,
      "Decode one payload of vLLM's KV event stream (either encoding) into the batch dict KVBlockManager.subscribe "
      "delivers, plus 'ts' and 'data_parallel_rank'; hashes as signed 64-bit integers, media as llmds's tier names. "
      "ValueError for anything else.");
}
#endif

}  // namespace

void bind_routing(py::module_& m) {
#ifdef LLMDS_HAS_ZMQ
  bind_kv_event_publisher(m);
#endif
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
