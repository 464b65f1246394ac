// The Mooncake trace reader and the prefix-cache replay loop (include/llmds/kv/trace_replay.hpp).
#include "llmds/kv/trace_replay.hpp"

#include <algorithm>
#include <chrono>
#include <charconv>
#include <fstream>
#include <limits>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>

#include <fmt/format.h>

#include "llmds/core/errors.hpp"
#include "llmds/kv/block_pool.hpp"
#include "llmds/kv/routing/kv_indexer.hpp"
#include "llmds/kv/tiered/block_layout.hpp"
#include "llmds/kv/tiered/disk_store.hpp"
#include "llmds/kv/tiered/memory_store.hpp"

namespace llmds {

namespace {

// A strict reader for the one shape these traces use: a flat JSON object whose values are
// integers or arrays of integers. Anything else is an error, never a guess.
class LineParser {
 public:
  LineParser(std::string_view line, std::size_t line_number) : s_(line), line_(line_number) {}

  MooncakeRequest parse() {
    MooncakeRequest r;
    bool has_timestamp = false, has_input = false, has_output = false, has_hashes = false;
    expect('{');
    skip_space();
    if (peek() == '}') fail("empty object");
    while (true) {
      const std::string key = parse_key();
      expect(':');
      skip_space();
      // A field given twice has no one meaning: an error, as any other ambiguity here.
      auto once = [&](bool& seen) {
        if (seen) fail(fmt::format("repeated key \"{}\"", key));
        seen = true;
      };
      if (peek() == '[') {
        auto values = parse_array();
        if (key == "hash_ids") {
          once(has_hashes);
          r.hash_ids = std::move(values);
        } else if (key == "timestamp" || key == "input_length" || key == "output_length") {
          fail(fmt::format("\"{}\" must be an integer, not an array", key));
        }
      } else {
        const std::int64_t v = parse_int();
        if (key == "hash_ids") {
          fail("\"hash_ids\" must be an array of integers");
        } else if (key == "timestamp") {
          once(has_timestamp);
          r.timestamp_ms = v;
        } else if (key == "input_length") {
          once(has_input);
          r.input_length = v;
        } else if (key == "output_length") {
          once(has_output);
          r.output_length = v;
        }
      }
      skip_space();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      expect('}');
      break;
    }
    skip_space();
    if (pos_ != s_.size()) fail("text after the object");
    if (!has_timestamp || !has_input || !has_output || !has_hashes) {
      fail("missing one of timestamp, input_length, output_length, hash_ids");
    }
    if (r.input_length < 0 || r.output_length < 0) fail("negative length");
    return r;
  }

 private:
  [[noreturn]] void fail(std::string_view why) const {
    throw std::invalid_argument(
        fmt::format("Mooncake trace line {}: {} (at column {})", line_, why, pos_ + 1));
  }
  void skip_space() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\r')) ++pos_;
  }
  [[nodiscard]] char peek() const { return pos_ < s_.size() ? s_[pos_] : '\0'; }
  void expect(char c) {
    skip_space();
    if (peek() != c) fail(fmt::format("expected '{}'", c));
    ++pos_;
  }
  std::string parse_key() {
    expect('"');
    const auto end = s_.find('"', pos_);
    if (end == std::string_view::npos) fail("unterminated key");
    std::string key(s_.substr(pos_, end - pos_));
    if (key.find('\\') != std::string::npos) fail("escaped characters in a key");
    pos_ = end + 1;
    return key;
  }
  std::int64_t parse_int() {
    skip_space();
    std::int64_t v = 0;
    const char* first = s_.data() + pos_;
    const auto [ptr, ec] = std::from_chars(first, s_.data() + s_.size(), v);
    if (ec != std::errc{} || ptr == first) fail("expected an integer");
    pos_ += static_cast<std::size_t>(ptr - first);
    const char next = peek();
    if (next == '.' || next == 'e' || next == 'E') fail("expected an integer, got a real number");
    return v;
  }
  std::vector<std::int64_t> parse_array() {
    std::vector<std::int64_t> values;
    expect('[');
    skip_space();
    if (peek() == ']') {
      ++pos_;
      return values;
    }
    while (true) {
      values.push_back(parse_int());
      skip_space();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      expect(']');
      return values;
    }
  }

  std::string_view s_;
  std::size_t line_;
  std::size_t pos_ = 0;
};

// Blocks a request holds while it runs: ceil((input + output) / block_size). The lengths are
// non-negative int64 (checked before this is called), but their sum may not fit one, and a + b - 1
// wraps for a block size near 2^64; each length is divided on its own instead. The two
// remainders are each below 2^63, so their sum cannot wrap.
std::size_t held_blocks(const MooncakeRequest& r, std::size_t bs) {
  const auto in = static_cast<std::uint64_t>(r.input_length), out = static_cast<std::uint64_t>(r.output_length);
  const std::uint64_t rest = in % bs + out % bs;
  return in / bs + out / bs + rest / bs + (rest % bs != 0 ? 1 : 0);
}

// Checked up front, so that a bad request fails the replay before any time is spent on it.
void check_requests(std::span<const MooncakeRequest> requests, std::size_t bs, std::size_t capacity) {
  for (std::size_t i = 0; i < requests.size(); ++i) {
    const auto& r = requests[i];
    if (r.input_length < 0 || r.output_length < 0) {  // parse_mooncake_trace refuses them; callers may not
      throw std::invalid_argument(fmt::format("request {} has a negative length", i));
    }
    const std::size_t full = static_cast<std::size_t>(r.input_length) / bs;
    if (r.hash_ids.size() < full) {
      throw std::invalid_argument(fmt::format(
          "request {} has {} hash ids for {} full prompt blocks", i, r.hash_ids.size(), full));
    }
    const std::size_t held = held_blocks(r, bs);
    if (held > capacity) {
      throw OutOfPages(fmt::format("request {} holds {} blocks, more than the capacity of {}", i,
                                   held, capacity));
    }
  }
}

// Prompt blocks a request may take from cache: its full prompt blocks, but never the one
// holding its last prompt token, which is always computed.
std::size_t may_hit_blocks(const MooncakeRequest& r, std::size_t bs) {
  const std::size_t full = static_cast<std::size_t>(r.input_length) / bs;
  return r.input_length > 0 ? std::min(full, static_cast<std::size_t>(r.input_length - 1) / bs) : 0;
}

// One request through a block manager under the replay protocol: its prompt's leading blocks
// matched in every tier and onboarded, the rest allocated and the missed full blocks
// registered, then everything released tail first. Returns the prompt blocks that hit. Cannot
// run out of blocks: the request needs at most primary's capacity (check_requests), and nothing
// else is held.
std::size_t serve_request(KVBlockManager<std::int64_t>& manager, const MooncakeRequest& r, std::size_t bs,
                          std::vector<BlockId>& table) {
  const std::size_t full = static_cast<std::size_t>(r.input_length) / bs;
  const std::span<const std::int64_t> keys(r.hash_ids.data(), full);
  const std::size_t may_hit = may_hit_blocks(r, bs);
  auto match = manager.match(keys.first(may_hit));
  table = manager.onboard(match);
  std::size_t hits = table.size();
  std::optional<std::int64_t> parent;
  if (hits > 0) parent = keys[hits - 1];
  if (hits < may_hit) {  // the rest of the run from the remote tier, if there is one
    const auto more = manager.onboard_remote(keys.subspan(hits, may_hit - hits), parent);
    table.insert(table.end(), more.begin(), more.end());
    hits += more.size();
    if (hits > 0) parent = keys[hits - 1];
  }
  const auto fresh = manager.allocate(held_blocks(r, bs) - hits);
  manager.register_blocks(std::span(fresh).first(full - hits), keys.subspan(hits), parent);
  table.insert(table.end(), fresh.begin(), fresh.end());
  std::reverse(table.begin(), table.end());
  manager.release(table);
  return hits;
}

// The tiered replays' block size becomes KVBlockManagerConfig's 32-bit one.
void check_block_size_fits(std::string_view config_name, std::size_t block_size) {
  if (block_size > std::numeric_limits<std::uint32_t>::max()) {
    throw std::invalid_argument(fmt::format("{}.block_size must be below 2^32, got {}", config_name, block_size));
  }
}

// A metadata-only manager (no stores) for a replay: the tiers' sizes and the block size.
KVBlockManagerConfig replay_manager_config(std::size_t primary_blocks, std::size_t host_blocks, std::size_t block_size) {
  KVBlockManagerConfig mc;
  mc.primary_blocks = primary_blocks;
  mc.host_blocks = host_blocks;
  mc.block_size = static_cast<std::uint32_t>(block_size);
  return mc;
}

}  // namespace

std::vector<MooncakeRequest> parse_mooncake_trace(std::string_view text) {
  std::vector<MooncakeRequest> requests;
  std::size_t line_number = 0;
  while (!text.empty()) {
    const auto end = text.find('\n');
    const std::string_view line = text.substr(0, end);
    text = end == std::string_view::npos ? std::string_view{} : text.substr(end + 1);
    ++line_number;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    requests.push_back(LineParser(line, line_number).parse());
  }
  return requests;
}

std::vector<MooncakeRequest> load_mooncake_trace(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IOError(fmt::format("cannot open Mooncake trace {}", path.string()));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw IOError(fmt::format("cannot read Mooncake trace {}", path.string()));
  return parse_mooncake_trace(text.str());
}

void PrefixCacheReplayConfig::validate() const {
  if (capacity_blocks == 0 ||
      capacity_blocks > static_cast<std::size_t>(std::numeric_limits<BlockId>::max())) {
    throw std::invalid_argument(fmt::format(
        "PrefixCacheReplayConfig.capacity_blocks must be in [1, 2^31 - 1], got {}",
        capacity_blocks));
  }
  if (block_size == 0) {
    throw std::invalid_argument("PrefixCacheReplayConfig.block_size must be at least 1");
  }
}

PrefixCacheReplayResult replay_prefix_cache(std::span<const MooncakeRequest> requests,
                                            const PrefixCacheReplayConfig& config) {
  config.validate();
  const std::size_t bs = config.block_size;
  check_requests(requests, bs, config.capacity_blocks);

  BlockPool<std::int64_t> pool(config.capacity_blocks);
  PrefixCacheReplayResult result;
  result.requests = requests.size();
  result.capacity_blocks = config.capacity_blocks;
  std::vector<BlockId> table;

  const auto start = std::chrono::steady_clock::now();
  for (const auto& r : requests) {
    const std::size_t full = static_cast<std::size_t>(r.input_length) / bs;
    const std::size_t may_hit = may_hit_blocks(r, bs);
    const std::size_t held = held_blocks(r, bs);
    const std::span<const std::int64_t> keys(r.hash_ids.data(), full);

    table.clear();
    const std::size_t hits = pool.match_prefix(keys.first(may_hit), &table);
    pool.touch(table);
    const auto fresh = pool.allocate(held - hits);  // cannot fail: held <= capacity
    table.insert(table.end(), fresh.begin(), fresh.end());
    for (std::size_t i = hits; i < full; ++i) pool.register_block(table[i], keys[i]);
    std::reverse(table.begin(), table.end());
    pool.release(table);

    result.lookup_blocks += full;
    result.hit_blocks += hits;
    result.allocated_blocks += fresh.size();
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  result.evictions = pool.evictions();
  return result;
}

void TieredReplayConfig::validate() const {
  PrefixCacheReplayConfig{primary_blocks, block_size}.validate();
  if (move_bytes && block_bytes == 0) {
    throw std::invalid_argument("TieredReplayConfig: move_bytes needs block_bytes");
  }
  if (move_bytes && disk_blocks > 0 && disk_directory.empty()) {
    throw std::invalid_argument("TieredReplayConfig: move_bytes with a disk tier needs disk_directory");
  }
  if (block_bytes > std::numeric_limits<std::uint32_t>::max()) {
    throw std::invalid_argument(fmt::format("TieredReplayConfig.block_bytes must be below 2^32, got {}", block_bytes));
  }
  check_block_size_fits("TieredReplayConfig", block_size);
  if (remote != nullptr && (!move_bytes || remote->geometry().block_bytes() != block_bytes)) {
    throw std::invalid_argument(fmt::format(
        "TieredReplayConfig: a remote store needs move_bytes and blocks of its size ({} bytes), got block_bytes {}",
        remote->geometry().block_bytes(), block_bytes));
  }
}

TieredReplayResult replay_tiered_prefix_cache(std::span<const MooncakeRequest> requests,
                                              const TieredReplayConfig& config) {
  config.validate();
  const std::size_t bs = config.block_size;
  check_requests(requests, bs, config.primary_blocks);

  KVBlockManagerConfig mc = replay_manager_config(config.primary_blocks, config.host_blocks, bs);
  mc.disk_blocks = config.disk_blocks;
  mc.block_bytes = config.block_bytes;
  mc.offload_policy = config.offload_policy;
  mc.disk_min_uses = config.disk_min_uses;
  mc.event_log_batches = 0;  // nobody listens: no events are built
  mc.offload_queue_blocks = config.offload_queue_blocks;
  mc.remote_queue_blocks = 0;  // puts on the replay's thread: the other replicas see them at once
  // With move_bytes, a block is one row of block_bytes in every tier: its shape does not matter
  // to the copies, only its size.
  const BlockGeometry geometry{1, 1, 1, static_cast<std::uint32_t>(std::max<std::size_t>(config.block_bytes, 1)),
                               ScalarType::kOther};
  std::unique_ptr<MemoryStore<ContiguousLayout>> primary_store, host_store;
  std::unique_ptr<DiskStore> disk_store;
  TierStores stores;
  if (config.move_bytes) {
    primary_store = std::make_unique<MemoryStore<ContiguousLayout>>(ContiguousLayout(geometry, config.primary_blocks, 4096));
    stores.primary = primary_store.get();
    stores.remote = config.remote;
    if (config.host_blocks > 0) {
      host_store = std::make_unique<MemoryStore<ContiguousLayout>>(ContiguousLayout(geometry, config.host_blocks, 4096));
      stores.host = host_store.get();
    }
    if (config.disk_blocks > 0) {
      DiskStoreConfig dc;
      dc.directory = config.disk_directory;
      dc.geometry = geometry;
      dc.hash_bytes = sizeof(std::int64_t);
      disk_store = std::make_unique<DiskStore>(dc);
      if (!disk_store->recovered().empty()) {
        throw std::invalid_argument(fmt::format(
            "TieredReplayConfig.disk_directory {} holds {} blocks already; a replay starts from a cold cache: give it "
            "an empty directory",
            config.disk_directory.string(), disk_store->recovered().size()));
      }
      stores.disk = disk_store.get();
    }
  }
  KVBlockManager<std::int64_t> manager(mc, stores);

  TieredReplayResult result;
  result.requests = requests.size();
  std::vector<BlockId> table;
  const auto start = std::chrono::steady_clock::now();
  for (const auto& r : requests) {
    result.lookup_blocks += static_cast<std::size_t>(r.input_length) / bs;
    result.hit_blocks += serve_request(manager, r, bs, table);
  }
  manager.flush();
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  result.tiers = manager.stats();
  if (disk_store) result.disk = disk_store->stats();
  manager.clear();  // the replay's block files are scratch
  return result;
}

void RoutedReplayConfig::validate() const {
  PrefixCacheReplayConfig{primary_blocks, block_size}.validate();
  if (replicas == 0) throw std::invalid_argument("RoutedReplayConfig.replicas must be at least 1");
  if (!(max_imbalance >= 1.0)) {
    throw std::invalid_argument(fmt::format("RoutedReplayConfig.max_imbalance must be at least 1, got {}", max_imbalance));
  }
  check_block_size_fits("RoutedReplayConfig", block_size);
}

RoutedReplayResult replay_routed_prefix_cache(std::span<const MooncakeRequest> requests,
                                              const RoutedReplayConfig& config) {
  config.validate();
  const std::size_t bs = config.block_size;
  check_requests(requests, bs, config.primary_blocks);

  KVBlockManagerConfig mc = replay_manager_config(config.primary_blocks, config.host_blocks, bs);
  // Events only where the router listens.
  mc.event_log_batches = config.policy == RoutingPolicy::kKVAware ? 1 : 0;
  KVIndexer<std::int64_t> index;
  std::vector<std::unique_ptr<KVBlockManager<std::int64_t>>> replicas;
  for (std::size_t i = 0; i < config.replicas; ++i) {
    replicas.push_back(std::make_unique<KVBlockManager<std::int64_t>>(mc));
    if (mc.event_log_batches > 0) {
      const auto worker = static_cast<WorkerId>(i);
      replicas.back()->events().subscribe(
          [&index, worker](const KVEventBatch<std::int64_t>& batch) { index.apply(worker, batch); });
    }
  }

  RoutedReplayResult result;
  result.requests = requests.size();
  result.requests_per_replica.assign(config.replicas, 0);
  std::vector<std::size_t>& load = result.requests_per_replica;
  std::vector<BlockId> table;
  std::size_t next = 0;  // round-robin
  const auto start = std::chrono::steady_clock::now();
  for (const auto& r : requests) {
    std::size_t chosen = 0;
    if (config.policy == RoutingPolicy::kRoundRobin) {
      chosen = next;
      next = (next + 1) % config.replicas;
    } else {
      // Replicas within the imbalance bound, least loaded first: the fallback and the tie-break.
      const std::size_t fewest = *std::min_element(load.begin(), load.end());
      const auto open = [&](std::size_t i) {
        return double(load[i] + 1) <= config.max_imbalance * double(fewest + 1);
      };
      chosen = static_cast<std::size_t>(std::min_element(load.begin(), load.end()) - load.begin());
      const std::size_t full = static_cast<std::size_t>(r.input_length) / bs;
      const auto scores = index.score(std::span<const std::int64_t>(r.hash_ids.data(), full).first(may_hit_blocks(r, bs)));
      std::size_t best = 0;
      for (const WorkerScore& s : scores) {
        if (!open(s.worker)) continue;
        if (s.blocks > best || (s.blocks == best && best > 0 && load[s.worker] < load[chosen])) {
          best = s.blocks;
          chosen = s.worker;
        }
      }
      if (!scores.empty()) {
        result.best_scores += scores.front().blocks;
        if (best == scores.front().blocks) ++result.routed_to_best;
      }
    }
    ++load[chosen];
    result.lookup_blocks += static_cast<std::size_t>(r.input_length) / bs;
    result.hit_blocks += serve_request(*replicas[chosen], r, bs, table);
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace llmds
