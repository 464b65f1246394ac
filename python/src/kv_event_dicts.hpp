// KV events as Python dicts, both ways: a KVBlockManager's batches go out as dicts with vLLM's
// field names ("medium" is the tier), and a KVIndexer takes the same dicts back, so that
// `manager.subscribe(lambda b: index.apply(worker, b))` works and Python consumers of vLLM or
// llmds read the same keys.
#pragma once

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

#include "llmds/kv/tiered/kv_events.hpp"

namespace llmds::python {

namespace py = pybind11;

inline Tier parse_tier(std::string_view name) {
  for (const auto t : {Tier::kPrimary, Tier::kHost, Tier::kDisk, Tier::kRemote}) {
    if (tier_name(t) == name) return t;
  }
  throw std::invalid_argument(fmt::format("unknown tier '{}': expected primary, host, disk or remote", name));
}

inline py::dict event_dict(const KVEvent<std::int64_t>& event) {
  py::dict d;
  if (const auto* s = std::get_if<BlockStored<std::int64_t>>(&event)) {
    d["type"] = "BlockStored";
    d["block_hashes"] = s->block_hashes;
    d["parent_block_hash"] = s->parent_hash ? py::cast(*s->parent_hash) : py::none();
    d["token_ids"] = s->token_ids;
    d["block_size"] = s->block_size;
    d["medium"] = std::string(tier_name(s->tier));
  } else if (const auto* r = std::get_if<BlockRemoved<std::int64_t>>(&event)) {
    d["type"] = "BlockRemoved";
    d["block_hashes"] = r->block_hashes;
    d["medium"] = std::string(tier_name(r->tier));
  } else {
    d["type"] = "AllBlocksCleared";
  }
  return d;
}

inline py::dict batch_dict(const KVEventBatch<std::int64_t>& batch) {
  py::list events;
  for (const auto& e : batch.events) events.append(event_dict(e));
  py::dict d;
  d["seq"] = batch.seq;
  d["events"] = events;
  return d;
}

// The inverse of batch_dict. ValueError (std::invalid_argument) naming what is wrong for a
// dict of another shape: a missing key, an unknown event type or tier, a negative seq.
inline KVEventBatch<std::int64_t> batch_from_dict(const py::dict& d) {
  const auto need = [](const py::dict& from, const char* key, const char* what) -> py::handle {
    if (!from.contains(key)) throw std::invalid_argument(fmt::format("{} has no '{}'", what, key));
    return from[key];
  };
  KVEventBatch<std::int64_t> batch;
  const auto seq = py::cast<std::int64_t>(need(d, "seq", "an event batch"));
  if (seq < 0) throw std::invalid_argument(fmt::format("an event batch's seq must be >= 0, got {}", seq));
  batch.seq = static_cast<std::uint64_t>(seq);
  for (const py::handle h : py::cast<py::list>(need(d, "events", "an event batch"))) {
    const auto e = py::cast<py::dict>(h);
    const auto type = py::cast<std::string>(need(e, "type", "an event"));
    if (type == "BlockStored") {
      BlockStored<std::int64_t> s;
      s.block_hashes = py::cast<std::vector<std::int64_t>>(need(e, "block_hashes", "a BlockStored event"));
      if (e.contains("parent_block_hash") && !e["parent_block_hash"].is_none()) {
        s.parent_hash = py::cast<std::int64_t>(e["parent_block_hash"]);
      }
      if (e.contains("token_ids")) s.token_ids = py::cast<std::vector<TokenId>>(e["token_ids"]);
      if (e.contains("block_size")) s.block_size = py::cast<std::uint32_t>(e["block_size"]);
      s.tier = parse_tier(py::cast<std::string>(need(e, "medium", "a BlockStored event")));
      batch.events.emplace_back(std::move(s));
    } else if (type == "BlockRemoved") {
      BlockRemoved<std::int64_t> r;
      r.block_hashes = py::cast<std::vector<std::int64_t>>(need(e, "block_hashes", "a BlockRemoved event"));
      r.tier = parse_tier(py::cast<std::string>(need(e, "medium", "a BlockRemoved event")));
      batch.events.emplace_back(std::move(r));
    } else if (type == "AllBlocksCleared") {
      batch.events.emplace_back(AllBlocksCleared{});
    } else {
      throw std::invalid_argument(fmt::format(
          "unknown event type '{}': expected BlockStored, BlockRemoved or AllBlocksCleared", type));
    }
  }
  return batch;
}

}  // namespace llmds::python
