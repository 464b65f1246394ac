// KV events on the wire: llmds's event batches in vLLM's MessagePack format, both ways.
//
// Cache-aware routers that exist today (Dynamo's KV router, llm-d's KV-cache indexer) read the
// KV events vLLM publishes; llmds writes the same bytes so that they read an llmds server too.
// A batch is a MessagePack value with three fields, in this order: ts (seconds since the epoch,
// a float), events, data_parallel_rank (an integer, omitted when unset). Each event is a tagged
// struct:
//
//   BlockStored       block_hashes, parent_block_hash, token_ids, block_size, lora_id, medium
//                     (and lora_name, in the map encoding)
//   BlockRemoved      block_hashes, medium
//   AllBlocksCleared  (no fields)
//
// vLLM has encoded these two ways over its releases, and consumers differ in which they read,
// so both are offered (KVEventEncoding):
//
//   map    every struct a map of its field names; an event's tag is its "type" field
//          ({"type": "BlockStored", "block_hashes": [...], ...}): vLLM's current encoding
//   array  every struct an array of its fields in declaration order, an event's tag first
//          (["BlockStored", [...], parent, [...], 16, null, "GPU"]): msgspec's array_like
//          structs, vLLM's earlier encoding
//
// Block hashes are integers, as vLLM sends them to routers: an integer key as its 64-bit
// two's-complement value, a 32-byte BlockHash as its last 8 bytes read big-endian (how vLLM turns
// its own byte hashes into integers). The medium is the tier, under the names vLLM uses ("GPU",
// "CPU", "DISK"; "REMOTE" for the remote tier), or under any names the publisher is given.
//
// Decoding accepts either encoding, integer or byte-string hashes, and either vocabulary of tier
// names (vLLM's or llmds's), and checks everything: a payload that is not such a batch, of any
// size, is refused with std::invalid_argument, never read past its end, and never makes the
// decoder allocate more than a small multiple of its own size.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

#include <msgpack.hpp>

#include "llmds/kv/block_hash.hpp"
#include "llmds/kv/tiered/kv_events.hpp"
#include "llmds/kv/tiered/tier.hpp"

namespace llmds {

/// How the structs of a batch are laid out (see above).
enum class KVEventEncoding : std::uint8_t { kMap, kArray };

/// What a publisher writes besides the events themselves.
struct KVEventWireFormat {
  KVEventEncoding encoding = KVEventEncoding::kMap;  // vLLM's current encoding
  /// The batch's data_parallel_rank field; none omits it.
  std::optional<std::int64_t> data_parallel_rank = 0;  // vLLM's publisher always sets its rank
  /// The medium each tier is named by, indexed by Tier: vLLM's names by default.
  std::array<std::string, kNumTiers> medium = {"GPU", "CPU", "DISK", "REMOTE"};
};

/// A block hash as the integer vLLM's events carry.
template <class Key>
[[nodiscard]] std::uint64_t wire_block_hash(const Key& key) noexcept {
  if constexpr (std::is_integral_v<Key>) {
    return static_cast<std::uint64_t>(key);
  } else {
    static_assert(std::is_same_v<Key, BlockHash>, "wire_block_hash: keys are integers or BlockHash");
    std::uint64_t v = 0;
    for (std::size_t i = key.digest.size() - 8; i < key.digest.size(); ++i) v = (v << 8) | key.digest[i];
    return v;
  }
}

/// Encodes a batch as the MessagePack payload of vLLM's KV event stream; ts in seconds since the
/// epoch. The batch's sequence number travels in its own frame, not in the payload.
template <class Key>
[[nodiscard]] std::string encode_kv_event_batch(const KVEventBatch<Key>& batch, double ts, const KVEventWireFormat& format) {
  msgpack::sbuffer buffer;
  msgpack::packer<msgpack::sbuffer> pack(&buffer);
  const bool as_map = format.encoding == KVEventEncoding::kMap;
  const auto field = [&](std::string_view name) {
    if (as_map) pack.pack_str(static_cast<std::uint32_t>(name.size())).pack_str_body(name.data(), static_cast<std::uint32_t>(name.size()));
  };
  const auto str = [&](std::string_view s) {
    pack.pack_str(static_cast<std::uint32_t>(s.size())).pack_str_body(s.data(), static_cast<std::uint32_t>(s.size()));
  };
  const auto begin = [&](std::uint32_t fields) { as_map ? pack.pack_map(fields) : pack.pack_array(fields); };
  const auto hashes = [&](const std::vector<Key>& keys) {
    pack.pack_array(static_cast<std::uint32_t>(keys.size()));
    for (const Key& k : keys) pack.pack_uint64(wire_block_hash(k));
  };
  const auto medium = [&](Tier tier) { str(format.medium[static_cast<std::size_t>(tier)]); };

  begin(format.data_parallel_rank ? 3 : 2);
  field("ts");
  // Always a float64, as vLLM's encoder writes it: msgpack-cxx's pack_double writes a whole
  // number as an integer instead (and cannot convert one of 2^64 or more).
  const auto bits = std::bit_cast<std::uint64_t>(ts);
  std::array<char, 9> raw{static_cast<char>(0xcb)};
  for (std::size_t i = 0; i < 8; ++i) raw[1 + i] = static_cast<char>(bits >> (56 - 8 * i));
  buffer.write(raw.data(), raw.size());
  field("events");
  pack.pack_array(static_cast<std::uint32_t>(batch.events.size()));
  for (const auto& event : batch.events) {
    std::visit(
        [&](const auto& e) {
          using E = std::decay_t<decltype(e)>;
          if constexpr (std::is_same_v<E, BlockStored<Key>>) {
            begin(as_map ? 8 : 7);
            field("type");
            str("BlockStored");
            field("block_hashes");
            hashes(e.block_hashes);
            field("parent_block_hash");
            e.parent_hash ? pack.pack_uint64(wire_block_hash(*e.parent_hash)) : pack.pack_nil();
            field("token_ids");
            pack.pack_array(static_cast<std::uint32_t>(e.token_ids.size()));
            for (const TokenId t : e.token_ids) pack.pack(static_cast<std::int64_t>(t));
            field("block_size");
            pack.pack(e.block_size);
            field("lora_id");
            pack.pack_nil();
            field("medium");
            medium(e.tier);
            if (as_map) {  // a field the map encoding's schema requires (it has no default)
              field("lora_name");
              pack.pack_nil();
            }
          } else if constexpr (std::is_same_v<E, BlockRemoved<Key>>) {
            begin(3);
            field("type");
            str("BlockRemoved");
            field("block_hashes");
            hashes(e.block_hashes);
            field("medium");
            medium(e.tier);
          } else {
            begin(1);
            field("type");
            str("AllBlocksCleared");
          }
        },
        event);
  }
  if (format.data_parallel_rank) {
    field("data_parallel_rank");
    pack.pack(*format.data_parallel_rank);
  }
  return std::string(buffer.data(), buffer.size());
}

/// A batch read off the wire: its events with integer hashes, and the batch's own fields.
struct DecodedKVEventBatch {
  KVEventBatch<std::uint64_t> batch;  // seq: as given to the decoder (it travels in its own frame)
  double ts = 0;
  std::optional<std::int64_t> data_parallel_rank;
};

namespace detail {

// A checked walk over one unpacked MessagePack value: every accessor throws
// std::invalid_argument, naming what it expected, when the value is something else.
class WireValue {
 public:
  explicit WireValue(const msgpack::object& o) : o_(o) {}

  [[nodiscard]] bool is_nil() const noexcept { return o_.type == msgpack::type::NIL; }
  [[nodiscard]] bool is_array() const noexcept { return o_.type == msgpack::type::ARRAY; }
  [[nodiscard]] bool is_map() const noexcept { return o_.type == msgpack::type::MAP; }

  [[nodiscard]] std::span<const msgpack::object> array(std::string_view what) const {
    if (!is_array()) fail(what, "an array");
    return {o_.via.array.ptr, o_.via.array.size};
  }
  [[nodiscard]] std::span<const msgpack::object_kv> map(std::string_view what) const {
    if (!is_map()) fail(what, "a map");
    return {o_.via.map.ptr, o_.via.map.size};
  }
  [[nodiscard]] std::string_view str(std::string_view what) const {
    if (o_.type != msgpack::type::STR) fail(what, "a string");
    return {o_.via.str.ptr, o_.via.str.size};
  }
  [[nodiscard]] std::int64_t integer(std::string_view what) const {
    if (o_.type == msgpack::type::POSITIVE_INTEGER && o_.via.u64 <= std::uint64_t(INT64_MAX)) {
      return static_cast<std::int64_t>(o_.via.u64);
    }
    if (o_.type == msgpack::type::NEGATIVE_INTEGER) return o_.via.i64;
    fail(what, "an integer");
  }
  [[nodiscard]] double number(std::string_view what) const {
    if (o_.type == msgpack::type::FLOAT64 || o_.type == msgpack::type::FLOAT32) return o_.via.f64;
    if (o_.type == msgpack::type::POSITIVE_INTEGER) return static_cast<double>(o_.via.u64);
    if (o_.type == msgpack::type::NEGATIVE_INTEGER) return static_cast<double>(o_.via.i64);
    fail(what, "a number");
  }
  // An integer hash, or a byte-string one read as vLLM reads it into an integer (last 8 bytes).
  [[nodiscard]] std::uint64_t block_hash(std::string_view what) const {
    if (o_.type == msgpack::type::POSITIVE_INTEGER) return o_.via.u64;
    if (o_.type == msgpack::type::NEGATIVE_INTEGER) return static_cast<std::uint64_t>(o_.via.i64);
    if (o_.type == msgpack::type::BIN && o_.via.bin.size > 0) {
      std::uint64_t v = 0;
      const std::size_t n = o_.via.bin.size;
      for (std::size_t i = n > 8 ? n - 8 : 0; i < n; ++i) v = (v << 8) | static_cast<unsigned char>(o_.via.bin.ptr[i]);
      return v;
    }
    fail(what, "an integer or non-empty bytes");
  }

  [[noreturn]] static void fail(std::string_view what, std::string_view expected) {
    throw std::invalid_argument(std::string("KV event batch: ") + std::string(what) + " is not " + std::string(expected));
  }

 private:
  const msgpack::object& o_;
};

// The fields of a struct encoded either way: positional (after an array's tag) or by name.
class WireStruct {
 public:
  WireStruct(const msgpack::object& o, std::span<const std::string_view> names, std::size_t skip,
             std::string_view what)
      : names_(names), what_(what) {
    const WireValue v(o);
    if (v.is_array()) {
      const auto items = v.array(what);
      if (items.size() < skip) WireValue::fail(what, "long enough");
      // Fields beyond the known ones (a newer schema's) are ignored, as msgspec ignores them.
      for (std::size_t i = skip; i < items.size() && i - skip < names.size(); ++i) fields_[i - skip] = &items[i];
    } else {
      for (const auto& kv : v.map(what)) {
        const std::string_view key = WireValue(kv.key).str(what);
        const auto at = std::find(names.begin(), names.end(), key);
        if (at != names.end()) fields_[static_cast<std::size_t>(at - names.begin())] = &kv.val;
      }
    }
  }
  // Field i; required fields throw when absent, optional ones give nullopt.
  [[nodiscard]] WireValue get(std::size_t i) const {
    if (fields_[i] == nullptr) WireValue::fail(std::string(what_) + "." + std::string(names_[i]), "present");
    return WireValue(*fields_[i]);
  }
  [[nodiscard]] std::optional<WireValue> find(std::size_t i) const {
    if (fields_[i] == nullptr) return std::nullopt;
    return WireValue(*fields_[i]);
  }

 private:
  std::span<const std::string_view> names_;
  std::string_view what_;
  std::array<const msgpack::object*, 8> fields_{};
};

inline Tier tier_of_medium(std::optional<WireValue> medium) {
  if (!medium || medium->is_nil()) return Tier::kPrimary;  // vLLM's default medium: the GPU
  std::string name(medium->str("medium"));
  std::ranges::transform(name, name.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (name == "gpu" || name == "primary") return Tier::kPrimary;
  if (name == "cpu" || name == "cpu_pinned" || name == "host") return Tier::kHost;
  if (name == "disk") return Tier::kDisk;
  if (name == "remote") return Tier::kRemote;
  throw std::invalid_argument("KV event batch: unknown medium '" + name + "'");
}

}  // namespace detail

/// Decodes a payload of vLLM's KV event stream, in either encoding. Throws std::invalid_argument
/// for anything else (the message says what was wrong).
[[nodiscard]] inline DecodedKVEventBatch decode_kv_event_batch(std::span<const std::byte> payload, std::uint64_t seq) {
  using detail::WireStruct;
  using detail::WireValue;
  // Every element takes at least one byte of the payload: declared sizes beyond it are refused
  // before anything is allocated for them.
  const std::size_t n = payload.size();
  const msgpack::unpack_limit limit(n, n, n, n, n, 32);
  msgpack::object_handle handle;
  std::size_t used = 0;
  try {
    handle = msgpack::unpack(reinterpret_cast<const char*>(payload.data()), n, used, nullptr, nullptr, limit);
  } catch (const std::exception& e) {
    throw std::invalid_argument(std::string("KV event batch: not MessagePack (") + e.what() + ")");
  }
  if (used != n) throw std::invalid_argument("KV event batch: bytes after the batch");

  static constexpr std::array<std::string_view, 3> kBatch = {"ts", "events", "data_parallel_rank"};
  static constexpr std::array<std::string_view, 7> kStored = {"block_hashes", "parent_block_hash", "token_ids",
                                                              "block_size",   "lora_id",           "medium",
                                                              "lora_name"};
  static constexpr std::array<std::string_view, 2> kRemoved = {"block_hashes", "medium"};

  DecodedKVEventBatch out;
  out.batch.seq = seq;
  const WireStruct batch(handle.get(), kBatch, 0, "batch");
  out.ts = batch.get(0).number("ts");
  if (const auto rank = batch.find(2); rank && !rank->is_nil()) out.data_parallel_rank = rank->integer("data_parallel_rank");
  const auto hashes = [](const WireValue& v, std::string_view what) {
    std::vector<std::uint64_t> keys;
    for (const auto& h : v.array(what)) keys.push_back(WireValue(h).block_hash(what));
    return keys;
  };
  for (const auto& item : batch.get(1).array("events")) {
    const WireValue event(item);
    // The tag: an array's first element, or a map's "type".
    std::string_view tag;
    if (event.is_array()) {
      const auto fields = event.array("event");
      if (fields.empty()) WireValue::fail("event", "tagged");
      tag = WireValue(fields[0]).str("event tag");
    } else {
      static constexpr std::array<std::string_view, 1> kType = {"type"};
      tag = WireStruct(item, kType, 0, "event").get(0).str("event type");
    }
    if (tag == "BlockStored") {
      const WireStruct e(item, kStored, 1, "BlockStored");
      BlockStored<std::uint64_t> stored;
      stored.block_hashes = hashes(e.get(0), "BlockStored.block_hashes");
      if (const auto parent = e.get(1); !parent.is_nil()) stored.parent_hash = parent.block_hash("BlockStored.parent_block_hash");
      for (const auto& t : e.get(2).array("BlockStored.token_ids")) {
        const std::int64_t id = WireValue(t).integer("a token id");
        if (id < 0 || id > std::int64_t(std::numeric_limits<TokenId>::max())) WireValue::fail("a token id", "in range");
        stored.token_ids.push_back(static_cast<TokenId>(id));
      }
      const std::int64_t block_size = e.get(3).integer("BlockStored.block_size");
      if (block_size < 0 || block_size > std::int64_t(UINT32_MAX)) WireValue::fail("BlockStored.block_size", "in range");
      stored.block_size = static_cast<std::uint32_t>(block_size);
      stored.tier = detail::tier_of_medium(e.find(5));
      out.batch.events.emplace_back(std::move(stored));
    } else if (tag == "BlockRemoved") {
      const WireStruct e(item, kRemoved, 1, "BlockRemoved");
      BlockRemoved<std::uint64_t> removed;
      removed.block_hashes = hashes(e.get(0), "BlockRemoved.block_hashes");
      removed.tier = detail::tier_of_medium(e.find(1));
      out.batch.events.emplace_back(std::move(removed));
    } else if (tag == "AllBlocksCleared") {
      out.batch.events.emplace_back(AllBlocksCleared{});
    } else {
      throw std::invalid_argument("KV event batch: unknown event type '" + std::string(tag) + "'");
    }
  }
  return out;
}

}  // namespace llmds
