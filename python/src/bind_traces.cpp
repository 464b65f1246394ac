// llmds.traces: Mooncake trace loading and the prefix-cache replay, which runs a trace's
// requests through a BlockPool (kv/trace_replay.hpp).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "llmds/kv/trace_replay.hpp"

#include "arguments.hpp"
#include "initialised.hpp"
#include "kv_tiered_types.hpp"
#include "stats_dict.hpp"

namespace py = pybind11;

namespace {
// A trace stays in C++ (a Python list of 12k dicts would cost more than the replay itself).
struct MooncakeTrace {
  std::vector<llmds::MooncakeRequest> requests;
};
}  // namespace

LLMDS_PY_REQUIRE_INIT(MooncakeTrace)
LLMDS_PY_REQUIRE_INIT(llmds::PrefixCacheReplayResult)
LLMDS_PY_REQUIRE_INIT(llmds::TieredReplayResult)
LLMDS_PY_REQUIRE_INIT(llmds::RoutedReplayResult)

void bind_traces(py::module_& m) {
  using llmds::python::positive;

  py::class_<MooncakeTrace>(m, "MooncakeTrace", "A parsed Mooncake trace (JSON Lines), held in C++.")
      .def("__len__", [](const MooncakeTrace& t) { return t.requests.size(); })
      .def_property_readonly("total_input_tokens",
                             [](const MooncakeTrace& t) {
                               std::int64_t sum = 0;
                               for (const auto& r : t.requests) sum += r.input_length;
                               return sum;
                             })
      .def("__repr__",
           [](const MooncakeTrace& t) { return fmt::format("MooncakeTrace({} requests)", t.requests.size()); });

  m.def("load_mooncake_trace",
        [](const std::filesystem::path& path) {
          py::gil_scoped_release release;
          return MooncakeTrace{llmds::load_mooncake_trace(path)};
        },
        py::arg("path"),
        "Parse a Mooncake trace file. OSError if it cannot be read, ValueError naming the line "
        "if it is malformed.");
  m.def("parse_mooncake_trace",
        [](std::string_view text) {
          py::gil_scoped_release release;
          return MooncakeTrace{llmds::parse_mooncake_trace(text)};
        },
        py::arg("text"), "Parse the text of a Mooncake trace. ValueError naming the line if it is malformed.");

  py::class_<llmds::PrefixCacheReplayResult>(m, "PrefixCacheReplayResult",
                                             "What a prefix-cache replay of a trace measured.")
      .def_readonly("requests", &llmds::PrefixCacheReplayResult::requests)
      .def_readonly("capacity_blocks", &llmds::PrefixCacheReplayResult::capacity_blocks)
      .def_readonly("lookup_blocks", &llmds::PrefixCacheReplayResult::lookup_blocks,
                    "full prompt blocks looked up")
      .def_readonly("hit_blocks", &llmds::PrefixCacheReplayResult::hit_blocks,
                    "of those, served from cache")
      .def_readonly("allocated_blocks", &llmds::PrefixCacheReplayResult::allocated_blocks,
                    "blocks written: missed prompt blocks, partial and decode blocks")
      .def_readonly("evictions", &llmds::PrefixCacheReplayResult::evictions)
      .def_readonly("seconds", &llmds::PrefixCacheReplayResult::seconds,
                    "wall time of the replay loop alone")
      .def_property_readonly("hit_rate", &llmds::PrefixCacheReplayResult::hit_rate)
      .def_property_readonly("microseconds_per_request",
                             &llmds::PrefixCacheReplayResult::microseconds_per_request)
      .def("__repr__", [](const llmds::PrefixCacheReplayResult& r) {
        return fmt::format(
            "PrefixCacheReplayResult(requests={}, capacity_blocks={}, hit_rate={:.4f}, "
            "evictions={}, microseconds_per_request={:.2f})",
            r.requests, r.capacity_blocks, r.hit_rate(), r.evictions, r.microseconds_per_request());
      });

  m.def("replay_prefix_cache",
        [](const MooncakeTrace& trace, std::int64_t capacity_blocks, std::int64_t block_size) {
          const llmds::PrefixCacheReplayConfig config{positive(capacity_blocks, "capacity_blocks"),
                                                      positive(block_size, "block_size")};
          py::gil_scoped_release release;
          return llmds::replay_prefix_cache(trace.requests, config);
        },
        py::arg("trace"), py::arg("capacity_blocks"), py::arg("block_size") = 512,
        "Replay a trace through an LRU prefix cache of capacity_blocks blocks, under the protocol "
        "of docs/kv-cache.md (\"Trace replay\").");

  py::class_<llmds::TieredReplayResult>(m, "TieredReplayResult",
                                        "What a replay of a trace through a tiered prefix cache measured.")
      .def_readonly("requests", &llmds::TieredReplayResult::requests)
      .def_readonly("lookup_blocks", &llmds::TieredReplayResult::lookup_blocks, "full prompt blocks looked up")
      .def_readonly("hit_blocks", &llmds::TieredReplayResult::hit_blocks, "of those, found in some tier")
      .def_readonly("seconds", &llmds::TieredReplayResult::seconds,
                    "wall time of the replay loop alone (with move_bytes, and the disk queue's flush)")
      .def_property_readonly("hit_rate", &llmds::TieredReplayResult::hit_rate, "hits in any tier / lookups")
      .def_property_readonly("disk",
                             [](const llmds::TieredReplayResult& r) -> py::object {
                               if (!r.disk) return py::none();
                               return llmds::python::stats_dict(*r.disk);
                             },
                             "With move_bytes and a disk tier: the disk store's figures (writes, reads, "
                             "failures, direct_io), else None.")
      .def("tier_hit_rate",
           [](const llmds::TieredReplayResult& r, std::string_view tier) {
             for (const auto& t : r.tiers) {
               if (llmds::tier_name(t.tier) == tier) return r.tier_hit_rate(t.tier);
             }
             throw std::invalid_argument(fmt::format("the replay had no tier '{}'", tier));
           },
           py::arg("tier"), "The share of looked-up blocks served from `tier`.")
      .def_property_readonly("tiers",
                             [](const llmds::TieredReplayResult& r) {
                               py::dict out;
                               for (const auto& t : r.tiers) {
                                 out[py::str(std::string(llmds::tier_name(t.tier)))] = llmds::python::stats_dict(t);
                               }
                               return out;
                             },
                             "Per tier (by name, fastest first): the KVBlockManager's figures at the end.")
      .def_property_readonly("microseconds_per_request", &llmds::TieredReplayResult::microseconds_per_request)
      .def("__repr__", [](const llmds::TieredReplayResult& r) {
        std::string tiers;
        for (const auto& t : r.tiers) {
          tiers += fmt::format(", {}={:.4f}", llmds::tier_name(t.tier), r.tier_hit_rate(t.tier));
        }
        return fmt::format("TieredReplayResult(requests={}, hit_rate={:.4f}{}, microseconds_per_request={:.2f})",
                           r.requests, r.hit_rate(), tiers, r.microseconds_per_request());
      });

  m.def("replay_tiered_prefix_cache",
        [](const MooncakeTrace& trace, std::int64_t primary_blocks, std::int64_t host_blocks,
           std::int64_t disk_blocks, std::int64_t block_size, std::string_view offload_policy,
           std::int64_t disk_min_uses, std::int64_t block_bytes, bool move_bytes,
           std::optional<std::filesystem::path> disk_directory, std::int64_t offload_queue_blocks,
           const py::object& remote) {
          llmds::TieredReplayConfig c;
          if (!remote.is_none()) {
#ifdef LLMDS_HAS_REDIS
            c.remote = py::cast<llmds::RedisBlockStore*>(remote);
#else
            throw py::import_error("remote needs llmds built with hiredis");
#endif
          }
          c.primary_blocks = positive(primary_blocks, "primary_blocks");
          c.host_blocks = llmds::python::non_negative(host_blocks, "host_blocks");
          c.disk_blocks = llmds::python::non_negative(disk_blocks, "disk_blocks");
          c.block_size = positive(block_size, "block_size");
          if (offload_policy == "write-back") {
            c.offload_policy = llmds::OffloadPolicy::kWriteBack;
          } else if (offload_policy == "write-through") {
            c.offload_policy = llmds::OffloadPolicy::kWriteThrough;
          } else {
            throw std::invalid_argument(fmt::format(
                "offload_policy must be 'write-back' or 'write-through', got '{}'", offload_policy));
          }
          const std::size_t uses = llmds::python::non_negative(disk_min_uses, "disk_min_uses");
          if (uses > UINT32_MAX) throw std::invalid_argument("disk_min_uses must be below 2^32");
          c.disk_min_uses = static_cast<std::uint32_t>(uses);
          c.block_bytes = llmds::python::non_negative(block_bytes, "block_bytes");
          c.move_bytes = move_bytes;
          if (disk_directory) c.disk_directory = *disk_directory;
          c.offload_queue_blocks = llmds::python::non_negative(offload_queue_blocks, "offload_queue_blocks");
          py::gil_scoped_release release;
          return llmds::replay_tiered_prefix_cache(trace.requests, c);
        },
        py::arg("trace"), py::arg("primary_blocks"), py::arg("host_blocks") = 0, py::arg("disk_blocks") = 0,
        py::arg("block_size") = 512, py::arg("offload_policy") = "write-back", py::arg("disk_min_uses") = 0,
        py::arg("block_bytes") = 0, py::arg("move_bytes") = false, py::arg("disk_directory") = py::none(),
        py::arg("offload_queue_blocks") = 64, py::arg("remote") = py::none(),
        "Replay a trace through a KVBlockManager of primary, host and disk tiers (0: none) under the "
        "protocol of replay_prefix_cache: a prompt block hits if any tier holds it. With move_bytes, every tier "
        "holds real blocks of block_bytes (memory arenas, block files in disk_directory, which must hold no "
        "blocks), and the time includes the copies and the disk I/O. offload_queue_blocks: disk writes waiting "
        "for the disk worker, beyond which the lowest-priority one is dropped (a replay runs faster than any "
        "disk, so a small queue drops most of them); 0 writes each block on the replay's thread. remote: a "
        "RedisBlockStore shared with other replicas (needs move_bytes and block_bytes equal to its block_bytes): "
        "every block computed is put there, and prompt blocks the local tiers miss are read back from it.");

  py::class_<llmds::RoutedReplayResult>(m, "RoutedReplayResult",
                                        "What a replay of a trace over several routed replicas measured.")
      .def_readonly("requests", &llmds::RoutedReplayResult::requests)
      .def_readonly("lookup_blocks", &llmds::RoutedReplayResult::lookup_blocks, "full prompt blocks looked up")
      .def_readonly("hit_blocks", &llmds::RoutedReplayResult::hit_blocks, "of those, found in the chosen replica")
      .def_readonly("routed_to_best", &llmds::RoutedReplayResult::routed_to_best,
                    "kv-aware: requests sent to a replica with the best score")
      .def_readonly("best_scores", &llmds::RoutedReplayResult::best_scores,
                    "kv-aware: blocks the best scores promised, summed")
      .def_readonly("requests_per_replica", &llmds::RoutedReplayResult::requests_per_replica)
      .def_readonly("seconds", &llmds::RoutedReplayResult::seconds, "wall time of the replay loop, routing included")
      .def_property_readonly("hit_rate", &llmds::RoutedReplayResult::hit_rate)
      .def_property_readonly("imbalance", &llmds::RoutedReplayResult::imbalance,
                             "most over fewest requests per replica (1 is even)")
      .def_property_readonly("microseconds_per_request", &llmds::RoutedReplayResult::microseconds_per_request)
      .def("__repr__", [](const llmds::RoutedReplayResult& r) {
        return fmt::format("RoutedReplayResult(requests={}, hit_rate={:.4f}, imbalance={:.3f}, replicas={})",
                           r.requests, r.hit_rate(), r.imbalance(), r.requests_per_replica.size());
      });

  m.def("replay_routed_prefix_cache",
        [](const MooncakeTrace& trace, std::int64_t replicas, std::int64_t primary_blocks, std::int64_t host_blocks,
           std::int64_t block_size, std::string_view routing, double max_imbalance) {
          llmds::RoutedReplayConfig c;
          c.replicas = positive(replicas, "replicas");
          c.primary_blocks = positive(primary_blocks, "primary_blocks");
          c.host_blocks = llmds::python::non_negative(host_blocks, "host_blocks");
          c.block_size = positive(block_size, "block_size");
          if (routing == "kv-aware") {
            c.policy = llmds::RoutingPolicy::kKVAware;
          } else if (routing == "round-robin") {
            c.policy = llmds::RoutingPolicy::kRoundRobin;
          } else {
            throw std::invalid_argument(fmt::format("routing must be 'kv-aware' or 'round-robin', got '{}'", routing));
          }
          c.max_imbalance = max_imbalance;
          py::gil_scoped_release release;
          return llmds::replay_routed_prefix_cache(trace.requests, c);
        },
        py::arg("trace"), py::arg("replicas"), py::arg("primary_blocks"), py::arg("host_blocks") = 0,
        py::arg("block_size") = 512, py::arg("routing") = "kv-aware", py::arg("max_imbalance") = 1.2,
        "Replay a trace over `replicas` KVBlockManagers of primary_blocks (+ host_blocks) each, under the protocol "
        "of replay_prefix_cache, each request sent to one replica: in turn ('round-robin'), or ('kv-aware') to "
        "the replica holding the longest run of its leading blocks by a KVIndexer fed every replica's KV events, "
        "ties and misses to the least loaded, a replica with more than max_imbalance times the requests of the "
        "least loaded (plus one) passed over.");
}
