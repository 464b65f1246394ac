// llmds.kv_block_manager: KVBlockManager over integer block hashes (kv/tiered/
// kv_block_manager.hpp), its matches and its events; the tiered trace replay is bound in
// bind_traces.cpp.
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <fmt/format.h>

#include "llmds/kv/tiered/kv_block_manager.hpp"
#ifdef LLMDS_HAS_REDIS
#include "llmds/kv/tiered/redis_store.hpp"
#endif

#include "arguments.hpp"
#include "initialised.hpp"
#include "kv_tiered_types.hpp"
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

#ifdef LLMDS_HAS_REDIS
std::chrono::milliseconds seconds_arg(double seconds, const char* name) {
  if (!(seconds > 0 && seconds < 86400)) throw std::invalid_argument(fmt::format("{} must be in (0, 86400) seconds, got {}", name, seconds));
  return std::chrono::milliseconds(std::max<std::int64_t>(1, static_cast<std::int64_t>(seconds * 1000)));
}

std::vector<std::span<const std::byte>> hash_views(const std::vector<std::string>& hashes) {
  std::vector<std::span<const std::byte>> out;
  out.reserve(hashes.size());
  for (const auto& h : hashes) {
    if (h.empty()) throw std::invalid_argument("a block hash must not be empty");
    out.push_back(std::as_bytes(std::span(h.data(), h.size())));
  }
  return out;
}

void bind_redis_store(py::module_& m) {
  py::class_<llmds::RedisBlockStore>(m, "RedisBlockStore", R"doc(
KV blocks in a Redis server that many servers share: one key per block,
<namespace>:<model>:<block hash in hex>, whose value is a checked header (magic, version, layout,
scalar type, block shape, hash, checksums) followed by the block's bytes. put, get and lookup
pipeline their commands (one round trip per call); lookup says how many leading hashes the
server holds. Nothing here raises for a server that is down, restarts, times out or refuses: a
call that cannot reach it finds nothing and stores nothing, counted in stats(), and the store
reconnects with a backoff that doubles from backoff_min to backoff_max seconds. A value that fails
its checks is a miss, counted as corrupt, and deleted.

Blocks are block_bytes bytes; hashes are bytes objects (a chained block hash, 32 bytes for
SHA-256). password (and username, for a Redis 6 ACL user) is sent with AUTH.)doc")
      .def(py::init([](std::int64_t block_bytes, const std::string& host, std::int64_t port,
                       const std::optional<std::string>& password, const std::optional<std::string>& username,
                       const std::optional<std::string>& unix_socket, std::int64_t database,
                       const std::string& key_namespace, const std::string& model, double connect_timeout,
                       double command_timeout, double backoff_min, double backoff_max,
                       const std::optional<std::int64_t>& ttl) {
             llmds::RedisStoreConfig c;
             const std::size_t bytes = positive(block_bytes, "block_bytes");
             if (bytes > std::numeric_limits<std::uint32_t>::max()) throw std::invalid_argument("block_bytes must be below 2^32");
             c.geometry = llmds::BlockGeometry{1, 1, 1, static_cast<std::uint32_t>(bytes), llmds::ScalarType::kOther};
             c.host = host;
             if (port < 1 || port > 65535) throw std::invalid_argument(fmt::format("port must be in [1, 65535], got {}", port));
             c.port = static_cast<int>(port);
             c.password = password.value_or("");
             c.username = username.value_or("");
             c.unix_socket = unix_socket.value_or("");
             c.database = static_cast<int>(non_negative(database, "database"));
             c.key_namespace = key_namespace;
             c.model = model;
             c.connect_timeout = seconds_arg(connect_timeout, "connect_timeout");
             c.command_timeout = seconds_arg(command_timeout, "command_timeout");
             c.backoff_min = seconds_arg(backoff_min, "backoff_min");
             c.backoff_max = seconds_arg(backoff_max, "backoff_max");
             if (ttl) c.ttl = std::chrono::seconds(positive(*ttl, "ttl"));
             return std::make_unique<llmds::RedisBlockStore>(std::move(c));
           }),
           py::arg("block_bytes"), py::arg("host") = "127.0.0.1", py::arg("port") = 6379, py::kw_only(),
           py::arg("password") = py::none(), py::arg("username") = py::none(), py::arg("unix_socket") = py::none(),
           py::arg("database") = 0, py::arg("namespace") = "llmds", py::arg("model") = "",
           py::arg("connect_timeout") = 0.5, py::arg("command_timeout") = 2.0, py::arg("backoff_min") = 0.1,
           py::arg("backoff_max") = 5.0, py::arg("ttl") = py::none())
      .def_property_readonly("block_bytes", [](const llmds::RedisBlockStore& s) { return s.geometry().block_bytes(); })
      .def("key_of", [](const llmds::RedisBlockStore& s, const py::bytes& hash) {
             const std::string h = hash;
             return s.key_of(hash_views({h})[0]);
           }, py::arg("hash"), "The key a block hash is stored under.")
      .def(
          "lookup",
          [](llmds::RedisBlockStore& s, const std::vector<std::string>& hashes) {
            const auto views = hash_views(hashes);
            const py::gil_scoped_release release;
            return s.lookup(views);
          },
          py::arg("hashes"), "How many leading hashes the server holds (one round trip); 0 if it cannot be reached.")
      .def(
          "put",
          [](llmds::RedisBlockStore& s, const std::vector<std::string>& hashes,
             const py::array_t<std::uint8_t, py::array::c_style | py::array::forcecast>& blocks) {
            const std::size_t bytes = s.geometry().block_bytes();
            if (blocks.ndim() != 2 || static_cast<std::size_t>(blocks.shape(0)) != hashes.size() ||
                static_cast<std::size_t>(blocks.shape(1)) != bytes) {
              throw std::invalid_argument(fmt::format("blocks must be a ({}, {}) uint8 array", hashes.size(), bytes));
            }
            const auto views = hash_views(hashes);
            std::vector<llmds::RemoteBlock> batch;
            const auto* data = reinterpret_cast<const std::byte*>(blocks.data());
            for (std::size_t i = 0; i < hashes.size(); ++i) batch.push_back({views[i], std::span(data + i * bytes, bytes)});
            std::vector<bool> stored;
            {
              const py::gil_scoped_release release;
              stored = s.put(batch);
            }
            return stored;
          },
          py::arg("hashes"), py::arg("blocks"),
          "Store blocks[i] (a (n, block_bytes) uint8 array) under hashes[i], pipelined; per block, whether it was stored.")
      .def(
          "get",
          [](llmds::RedisBlockStore& s, const std::vector<std::string>& hashes) {
            const std::size_t bytes = s.geometry().block_bytes();
            const auto views = hash_views(hashes);
            py::array_t<std::uint8_t> out({static_cast<py::ssize_t>(hashes.size()), static_cast<py::ssize_t>(bytes)});
            std::vector<std::byte*> rows;
            auto* data = reinterpret_cast<std::byte*>(out.mutable_data());
            for (std::size_t i = 0; i < hashes.size(); ++i) rows.push_back(data + i * bytes);
            std::vector<bool> read;
            {
              const py::gil_scoped_release release;
              read = s.get(views, rows);
            }
            return py::make_tuple(out, read);
          },
          py::arg("hashes"),
          "Read the blocks of hashes, pipelined: (a (n, block_bytes) uint8 array, per block whether it was read intact; "
          "rows not read are unspecified).")
      .def(
          "remove",
          [](llmds::RedisBlockStore& s, const std::vector<std::string>& hashes) {
            const auto views = hash_views(hashes);
            const py::gil_scoped_release release;
            s.remove(views);
          },
          py::arg("hashes"), "Delete the blocks of hashes, if present.")
      .def("connect", &llmds::RedisBlockStore::connect, py::call_guard<py::gil_scoped_release>(),
           "Connect now if not connected, ignoring the backoff; whether the store is connected.")
      .def("stats", [](const llmds::RedisBlockStore& s) { return llmds::python::to_python(s.stats()); },
           "{'lookups', 'lookup_hits', 'stored_blocks', 'dropped_stores', 'read_blocks', 'missed_reads', "
           "'corrupt_blocks', 'foreign_blocks', 'connects', 'connection_failures', 'bytes_written', 'bytes_read', "
           "'connected'}.")
      .def("__repr__", [](const llmds::RedisBlockStore& s) {
        const auto& c = s.config();
        return fmt::format("RedisBlockStore(block_bytes={}, {}, namespace='{}', model='{}', connected={})",
                           c.geometry.block_bytes(), c.unix_socket.empty() ? fmt::format("{}:{}", c.host, c.port) : c.unix_socket,
                           c.key_namespace, c.model, s.stats().connected ? "True" : "False");
      });
}
#endif

}  // namespace

void bind_kv_tiered(py::module_& m) {
#ifdef LLMDS_HAS_REDIS
  bind_redis_store(m);
#endif
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
