// llmds.kv_block_manager: KVBlockManager over integer block hashes (kv/tiered/
// kv_block_manager.hpp), its matches and its events; the tiered trace replay is bound in
// bind_traces.cpp.
#include <pybind11/functional.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <fmt/format.h>

#include "llmds/kv/tiered/kv_block_manager.hpp"

#include "arguments.hpp"
#include "initialised.hpp"
#include "int_kv_block_manager.hpp"
#include "kv_event_dicts.hpp"
#include "stats_dict.hpp"

namespace py = pybind11;

using IntMatch = IntKVBlockManager::Match;

LLMDS_PY_REQUIRE_INIT(IntMatch)

namespace {

using llmds::python::non_negative;
using llmds::python::batch_dict;
using llmds::python::parse_tier;
using llmds::python::positive;

llmds::OffloadPolicy parse_policy(std::string_view name) {
  if (name == "write-back") return llmds::OffloadPolicy::kWriteBack;
  if (name == "write-through") return llmds::OffloadPolicy::kWriteThrough;
  throw std::invalid_argument(fmt::format("offload_policy must be 'write-back' or 'write-through', got '{}'", name));
}

llmds::RetentionPriority priority_arg(std::int64_t p) {
  if (p < 0 || p > llmds::kMaxRetentionPriority) {
    throw std::invalid_argument(fmt::format("priority must be in [0, {}], got {}", llmds::kMaxRetentionPriority, p));
  }
  return static_cast<llmds::RetentionPriority>(p);
}

}  // namespace

void bind_kv_tiered(py::module_& m) {
  py::class_<IntMatch>(m, "PrefixMatch", R"doc(
The result of KVBlockManager.match: the longest run of leading block hashes that some tier
holds, each pinned in its tier (it cannot be evicted) until the match is passed to onboard() or
cancel(). One use.)doc")
      .def("__len__", &IntMatch::size)
      .def_property_readonly("hashes", [](const IntMatch& x) {
        return std::vector<std::int64_t>(x.hashes().begin(), x.hashes().end());
      })
      .def_property_readonly("tiers", [](const IntMatch& x) {
        std::vector<std::string> out;
        for (const auto t : x.tiers()) out.emplace_back(llmds::tier_name(t));
        return out;
      }, "The tier each matched block was found in (the fastest that holds it).")
      .def("count", [](const IntMatch& x, std::string_view tier) { return x.count(parse_tier(tier)); },
           py::arg("tier"), "Matched blocks found in `tier`.")
      .def_property_readonly("to_onboard", &IntMatch::to_onboard,
                             "Blocks onboard() will copy up: those not already in primary.")
      .def_property_readonly("open", &IntMatch::open, "False once onboarded or cancelled.")
      .def("__repr__", [](const IntMatch& x) {
        return fmt::format("PrefixMatch(blocks={}, to_onboard={}, open={})", x.size(), x.to_onboard(),
                           x.open() ? "True" : "False");
      });

  py::class_<IntKVBlockManager>(m, "KVBlockManager", R"doc(
A prefix cache over storage tiers: primary (the KV arena), then optionally host and disk. Blocks
evicted from a tier are offloaded to the next one down; a match finds a prefix in any tier, and
onboard() brings it back into primary instead of recomputing it. Block hashes are integers
(chained: equal hashes mean equal prefixes). See docs/kv-block-manager.md.

offload_policy: "write-back" (copy a block down when it is evicted; host holds what primary does
not) or "write-through" (copy it to every lower tier when it is registered).
offload_min_priority: blocks of a lower retention priority are dropped, not offloaded.
disk_min_uses: a block goes to disk only once it has been used (computed or hit) that often.
block_bytes: bytes of one block, counted in the tiers' bytes moved.
event_log_batches: event batches kept for events_since; 0 builds no events at all.)doc")
      .def(py::init([](std::int64_t primary_blocks, std::int64_t host_blocks, std::int64_t disk_blocks,
                       std::int64_t block_size, std::int64_t block_bytes, std::string_view offload_policy,
                       std::int64_t offload_min_priority, std::int64_t disk_min_uses,
                       std::int64_t event_log_batches) {
             llmds::KVBlockManagerConfig c;
             c.primary_blocks = positive(primary_blocks, "primary_blocks");
             c.host_blocks = non_negative(host_blocks, "host_blocks");
             c.disk_blocks = non_negative(disk_blocks, "disk_blocks");
             const std::size_t bs = positive(block_size, "block_size");
             if (bs > UINT32_MAX) throw std::invalid_argument("block_size must be below 2^32");
             c.block_size = static_cast<std::uint32_t>(bs);
             c.block_bytes = non_negative(block_bytes, "block_bytes");
             c.offload_policy = parse_policy(offload_policy);
             c.offload_min_priority = priority_arg(offload_min_priority);
             const std::size_t uses = non_negative(disk_min_uses, "disk_min_uses");
             if (uses > UINT32_MAX) throw std::invalid_argument("disk_min_uses must be below 2^32");
             c.disk_min_uses = static_cast<std::uint32_t>(uses);
             c.event_log_batches = non_negative(event_log_batches, "event_log_batches");
             return std::make_unique<IntKVBlockManager>(c);
           }),
           py::arg("primary_blocks"), py::arg("host_blocks") = 0, py::arg("disk_blocks") = 0,
           py::arg("block_size") = 16, py::arg("block_bytes") = 0, py::arg("offload_policy") = "write-back",
           py::arg("offload_min_priority") = 0, py::arg("disk_min_uses") = 0,
           py::arg("event_log_batches") = 10000)
      .def_property_readonly("tiers", [](const IntKVBlockManager& x) {
        std::vector<std::string> out;
        for (const auto t : x.tiers()) out.emplace_back(llmds::tier_name(t));
        return out;
      }, "The tiers, fastest first.")
      .def("allocate", [](IntKVBlockManager& x, std::int64_t n) { return x.allocate(non_negative(n, "num_blocks")); },
           py::arg("num_blocks"),
           "num_blocks primary blocks, each with one reference; cached blocks evicted to make room are "
           "offloaded down. MemoryError, changing nothing, if primary has too few free or cached blocks.")
      .def("register_blocks",
           [](IntKVBlockManager& x, const std::vector<llmds::BlockId>& blocks, const std::vector<std::int64_t>& hashes,
              std::optional<std::int64_t> parent, std::optional<std::vector<llmds::TokenId>> token_ids,
              std::int64_t priority) {
             const std::vector<llmds::TokenId> tokens = token_ids.value_or(std::vector<llmds::TokenId>{});
             return x.register_blocks(blocks, hashes, parent, tokens, priority_arg(priority));
           },
           py::arg("blocks"), py::arg("hashes"), py::arg("parent") = py::none(), py::arg("token_ids") = py::none(),
           py::arg("priority") = llmds::kDefaultRetentionPriority,
           "Registers a sequence's full primary blocks under their hashes (hashes[0]'s parent is `parent`). "
           "Returns per block the block registered under its hash: the caller's, or the one already "
           "registered (the caller's then stays unregistered). ValueError / IndexError, changing nothing, "
           "for mismatched lengths, blocks not in use or out of range, a priority outside [0, 100].")
      .def("match", [](IntKVBlockManager& x, const std::vector<std::int64_t>& hashes) { return x.match(hashes); },
           py::arg("hashes"), py::keep_alive<0, 1>(),  // the manager outlives its matches
           "The longest run of leading hashes some tier holds, pinned until onboard() or cancel().")
      .def("onboard", [](IntKVBlockManager& x, IntMatch& match) { return x.onboard(match); }, py::arg("match"),
           "The match's blocks in primary, in order, one reference each (release them with the request). "
           "MemoryError if primary cannot take the copies (the match stays pinned: cancel it); ValueError "
           "for a match already used or from another manager.")
      .def("cancel", [](IntKVBlockManager& x, IntMatch& match) { x.cancel(match); }, py::arg("match"),
           "Unpins a match without onboarding it.")
      .def("release", [](IntKVBlockManager& x, const std::vector<llmds::BlockId>& blocks) { x.release(blocks); },
           py::arg("blocks"),
           "Drops one reference to each primary block, in order (a request's blocks tail first).")
      .def("clear", &IntKVBlockManager::clear,
           "Empties every tier if nothing is in use or pinned (True, one AllBlocksCleared event); else False.")
      .def("find", [](const IntKVBlockManager& x, std::int64_t hash) -> std::optional<std::string> {
        const auto t = x.find(hash);
        if (!t) return std::nullopt;
        return std::string(llmds::tier_name(*t));
      }, py::arg("hash"), "The fastest tier holding `hash`, or None; pins and counts nothing.")
      .def("contents", [](const IntKVBlockManager& x, std::string_view tier) { return x.contents(parse_tier(tier)); },
           py::arg("tier"), "Every hash `tier` holds, in no particular order.")
      .def("stats", [](const IntKVBlockManager& x) {
        py::dict out;
        for (const auto& s : x.stats()) out[py::str(std::string(llmds::tier_name(s.tier)))] = llmds::python::stats_dict(s);
        return out;
      }, "Per tier (by name, fastest first): capacity, cached and in-use blocks, lookups, hits, stores, "
         "evictions, onboarded blocks, dropped offloads, filter rejections, bytes in and out.")
      .def("subscribe",
           [](IntKVBlockManager& x, py::function callback) {
             return x.events().subscribe([callback](const llmds::KVEventBatch<std::int64_t>& batch) {
               const py::gil_scoped_acquire gil;
               try {
                 callback(batch_dict(batch));
               } catch (py::error_already_set& e) {
                 e.discard_as_unraisable("llmds KVBlockManager event subscriber (now unsubscribed)");
                 throw std::runtime_error("subscriber raised");
               }
             });
           },
           py::arg("callback"),
           "Calls callback(batch) with each batch of events from now on, on the thread that changed the "
           "cache; a batch is {'seq': n, 'events': [{'type': 'BlockStored', 'block_hashes', "
           "'parent_block_hash', 'token_ids', 'block_size', 'medium'} | {'type': 'BlockRemoved', "
           "'block_hashes', 'medium'} | {'type': 'AllBlocksCleared'}]}. A callback that raises is reported "
           "as unraisable and unsubscribed. Returns an id for unsubscribe().")
      .def("unsubscribe", [](IntKVBlockManager& x, std::uint64_t id) { return x.events().unsubscribe(id); },
           py::arg("subscription"))
      .def("events_since",
           [](IntKVBlockManager& x, std::int64_t seq) {
             const auto replay = x.events().replay_from(non_negative(seq, "seq"));
             if (!replay.complete) {
               throw llmds::KeyError(fmt::format(
                   "events from {} have left the log (it keeps the last {} batches); resynchronise from contents()",
                   seq, x.events().capacity()));
             }
             py::list out;
             for (const auto& b : replay.batches) out.append(batch_dict(b));
             return out;
           },
           py::arg("seq"),
           "Every kept batch with a sequence number >= seq, oldest first. KeyError if some of them have "
           "already left the log.")
      .def_property_readonly("next_event_seq", [](IntKVBlockManager& x) { return x.events().next_seq(); },
                             "The sequence number of the next batch (= batches published so far).")
      .def("__repr__", [](const IntKVBlockManager& x) {
        std::string tiers;
        for (const auto& s : x.stats()) {
          tiers += fmt::format("{}{}={}/{}", tiers.empty() ? "" : ", ", llmds::tier_name(s.tier),
                               s.cached_blocks + s.in_use_blocks, s.capacity_blocks);
        }
        return fmt::format("KVBlockManager({}, {})", tiers, llmds::offload_policy_name(x.config().offload_policy));
      });
}
