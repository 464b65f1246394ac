// CountMinSketch: approximate counts of a stream's items in fixed memory, never underestimated.
//
// A serving front end sees millions of queries, prompts or prefix blocks and wants to know which
// are hot (worth caching, worth priming) without keeping a counter per distinct item. A count-min
// sketch (Cormode & Muthukrishnan, 2005) keeps `depth` rows of `width` counters; an item adds to
// one counter per row, chosen by a per-row hash, and its estimate is the smallest of its counters.
// Collisions only ever add, so the estimate is never below the true count, and with
// epsilon = e / width and delta = e^-depth it exceeds the true count by more than epsilon * N
// (N the total of all counts) with probability at most delta.
//
// Conservative update (Estan & Varghese, 2002), on by default: an add of c raises each of the
// item's counters only as far as (current estimate + c), instead of adding c to all of them.
// Every counter still stays at or above the true count of every item that maps to it, so the
// never-underestimate guarantee holds, but counters shared with heavy items grow far less and
// estimates of light items are much closer to the truth. The price is that counters no longer
// sum to N per row, which only matters to merge: the sum of two conservative sketches is still a
// valid over-estimate, just not the sketch of the concatenated stream.
//
// Heavy hitters (top_k > 0): the sketch also tracks the top_k items by estimate in an
// IndexedHeap (a min-heap on estimate, so the weakest candidate is replaced in O(log k) when a
// stronger one appears), for hot-query detection without a second pass over the stream.
//
// Layout: depth x width 64-bit counters in one row-major array. Items are byte strings; each is
// hashed once (detail::hash_bytes) and the row hashes are derived from that one hash by
// re-mixing, so an add costs one pass over the item plus `depth` counter touches.
//
// Errors leave the sketch unchanged: a bad configuration or negative count is
// std::invalid_argument, a total past 2^64 - 1 is std::overflow_error, merging sketches of
// different shape or seed is std::invalid_argument, a corrupted file is std::invalid_argument.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <numbers>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <fmt/format.h>

#include "llmds/core/indexed_heap.hpp"
#include "llmds/core/stats_fields.hpp"
#include "llmds/detail/binary_io.hpp"
#include "llmds/detail/hash.hpp"

namespace llmds {

struct CountMinSketchConfig {
  std::uint32_t width = 2048;  // the Python API's default: epsilon = e / 2048, about 0.13% of N
  std::uint32_t depth = 4;     // the Python API's default: delta = e^-4, about 1.8%
  std::uint64_t seed = 0;      // sketches merge only when their seeds (hash functions) agree
  bool conservative = true;    // Estan & Varghese's conservative update; see the header essay
  std::uint32_t top_k = 0;     // heavy hitters to track; 0 tracks none

  static constexpr std::uint32_t max_depth = 64;  // delta = e^-64 is far below any need

  void validate() const {
    if (width == 0) throw std::invalid_argument("CountMinSketchConfig.width must be at least 1");
    if (depth == 0 || depth > max_depth) {
      throw std::invalid_argument(fmt::format(
          "CountMinSketchConfig.depth must be in [1, {}], got {}", max_depth, depth));
    }
  }

  /// The smallest sketch whose estimates exceed the true count by more than epsilon * N with
  /// probability at most delta: width = ceil(e / epsilon), depth = ceil(ln(1 / delta)).
  static CountMinSketchConfig from_error(double epsilon, double delta) {
    if (!(epsilon > 0.0 && epsilon < 1.0)) {
      throw std::invalid_argument(fmt::format("epsilon must be in (0, 1), got {}", epsilon));
    }
    if (!(delta > 0.0 && delta < 1.0)) {
      throw std::invalid_argument(fmt::format("delta must be in (0, 1), got {}", delta));
    }
    const double width = std::ceil(std::numbers::e / epsilon);
    const double depth = std::ceil(std::log(1.0 / delta));
    if (width > std::numeric_limits<std::uint32_t>::max()) {
      throw std::invalid_argument(fmt::format("epsilon {} needs a width past 2^32", epsilon));
    }
    CountMinSketchConfig config;
    config.width = static_cast<std::uint32_t>(width);
    config.depth = static_cast<std::uint32_t>(std::max(1.0, depth));
    config.validate();
    return config;
  }
};

/// The sketch's shape, guarantees and size at one moment.
struct CountMinSketchStats {
  std::uint32_t width = 0;
  std::uint32_t depth = 0;
  std::uint64_t seed = 0;
  bool conservative = true;
  std::uint32_t top_k = 0;
  std::uint64_t total_count = 0;  // N: every count added
  double epsilon = 0;             // e / width
  double delta = 0;               // e^-depth
  std::size_t memory_bytes = 0;

  /// epsilon * N: with probability at least 1 - delta an estimate exceeds the truth by no more.
  [[nodiscard]] double error_bound() const noexcept { return epsilon * static_cast<double>(total_count); }

  /// Every figure by name (core/stats_fields.hpp).
  template <class Visit>
  void for_each_field(Visit&& visit) const {
    visit("width", width);
    visit("depth", depth);
    visit("seed", seed);
    visit("conservative", conservative);
    visit("top_k", top_k);
    visit("total_count", total_count);
    visit("epsilon", epsilon);
    visit("delta", delta);
    visit("error_bound", error_bound());
    visit("memory_bytes", memory_bytes);
  }
};

class CountMinSketch {
 public:
  struct HeavyHitter {
    std::string item;
    std::uint64_t estimate;
    friend bool operator==(const HeavyHitter&, const HeavyHitter&) = default;
  };

  explicit CountMinSketch(CountMinSketchConfig config = {}) : config_(config) {
    config_.validate();
    counters_.assign(std::size_t{config_.width} * config_.depth, 0);
  }

  /// Counts `count` more occurrences of `item`. Throws std::invalid_argument for a negative
  /// count and std::overflow_error if the total would pass 2^64 - 1.
  void add(std::string_view item, std::int64_t count = 1) {
    if (count < 0) {
      throw std::invalid_argument(
          fmt::format("CountMinSketch::add: count must be non-negative, got {}", count));
    }
    const auto c = static_cast<std::uint64_t>(count);
    if (c > std::numeric_limits<std::uint64_t>::max() - total_) {
      throw std::overflow_error("CountMinSketch::add: the total count would pass 2^64 - 1");
    }
    const std::uint64_t h = detail::hash_bytes(item, config_.seed);
    std::array<std::size_t, CountMinSketchConfig::max_depth> cell;
    std::uint64_t low = std::numeric_limits<std::uint64_t>::max();
    for (std::uint32_t row = 0; row < config_.depth; ++row) {
      cell[row] = cell_of(h, row);
      low = std::min(low, counters_[cell[row]]);
    }
    // No counter can pass the total, so neither low + c nor counter + c can overflow. Either
    // update leaves the item's estimate (its smallest counter) at low + c.
    const std::uint64_t estimate = low + c;
    // Tracking is the only step that allocates, so it comes first: if memory runs out there,
    // no counter has changed yet.
    if (config_.top_k > 0 && c > 0) track(item, h, estimate);
    for (std::uint32_t row = 0; row < config_.depth; ++row) {
      std::uint64_t& counter = counters_[cell[row]];
      counter = config_.conservative ? std::max(counter, estimate) : counter + c;
    }
    total_ += c;
  }

  /// An upper bound on the number of times `item` was added: never below the true count.
  [[nodiscard]] std::uint64_t estimate(std::string_view item) const {
    return estimate_hashed(detail::hash_bytes(item, config_.seed));
  }

  /// Whether estimate(item) >= threshold. Throws std::invalid_argument for a negative threshold.
  [[nodiscard]] bool is_hot(std::string_view item, std::int64_t threshold) const {
    if (threshold < 0) {
      throw std::invalid_argument(
          fmt::format("CountMinSketch::is_hot: threshold must be non-negative, got {}", threshold));
    }
    return estimate(item) >= static_cast<std::uint64_t>(threshold);
  }

  /// epsilon * N: with probability at least 1 - delta an estimate exceeds the truth by no more.
  [[nodiscard]] double get_error_bound() const noexcept { return stats().error_bound(); }
  [[nodiscard]] double epsilon() const noexcept { return std::numbers::e / config_.width; }
  [[nodiscard]] double delta() const noexcept { return std::exp(-double(config_.depth)); }
  [[nodiscard]] std::uint64_t total_count() const noexcept { return total_; }
  [[nodiscard]] const CountMinSketchConfig& config() const noexcept { return config_; }
  [[nodiscard]] std::size_t memory_bytes() const noexcept {
    return counters_.capacity() * sizeof(std::uint64_t);
  }

  [[nodiscard]] CountMinSketchStats stats() const noexcept {
    return {config_.width, config_.depth,  config_.seed, config_.conservative, config_.top_k,
            total_,        epsilon(),      delta(),      memory_bytes()};
  }

  /// Adds the counts of `other` into this sketch. The two must share width, depth and seed;
  /// heavy hitters are re-ranked over the candidates of both. Throws std::invalid_argument
  /// otherwise, std::overflow_error if the total would pass 2^64 - 1.
  void merge(const CountMinSketch& other) {
    const auto& o = other.config_;
    // Equal conservative settings too: a plain sketch's rows each sum to its total, which a
    // conservative sketch's need not, so the sum of one of each would be neither.
    if (o.width != config_.width || o.depth != config_.depth || o.seed != config_.seed ||
        o.conservative != config_.conservative) {
      throw std::invalid_argument(fmt::format(
          "CountMinSketch::merge: sketches differ (width {} vs {}, depth {} vs {}, seed {} vs {}, conservative {} vs {});"
          " only sketches with equal width, depth, seed and update rule can be merged",
          config_.width, o.width, config_.depth, o.depth, config_.seed, o.seed, config_.conservative,
          o.conservative));
    }
    if (other.total_ > std::numeric_limits<std::uint64_t>::max() - total_) {
      throw std::overflow_error("CountMinSketch::merge: the total count would pass 2^64 - 1");
    }
    // Gather the heavy-hitter candidates before touching the counters (other may be *this).
    std::unordered_map<std::uint64_t, std::string> candidates = hitter_items_;
    candidates.insert(other.hitter_items_.begin(), other.hitter_items_.end());
    for (std::size_t i = 0; i < counters_.size(); ++i) counters_[i] += other.counters_[i];
    total_ += other.total_;
    rebuild_hitters(std::move(candidates));
  }

  /// The tracked heavy hitters with their current estimates, largest first (ties by item).
  /// Empty unless the sketch was configured with top_k > 0.
  [[nodiscard]] std::vector<HeavyHitter> heavy_hitters() const {
    std::vector<HeavyHitter> out;
    out.reserve(hitter_items_.size());
    for (const auto& [h, item] : hitter_items_) out.push_back({item, estimate_hashed(h)});
    std::sort(out.begin(), out.end(), [](const HeavyHitter& a, const HeavyHitter& b) {
      return a.estimate != b.estimate ? a.estimate > b.estimate : a.item < b.item;
    });
    return out;
  }

  void clear() noexcept {
    std::fill(counters_.begin(), counters_.end(), 0);
    total_ = 0;
    hitters_.clear();
    hitter_items_.clear();
  }

  /// The sketch as a self-describing, checksummed byte string (see detail/binary_io.hpp).
  [[nodiscard]] std::string to_bytes() const {
    detail::BinaryWriter w(file_magic, file_version);
    w.put(config_.width);
    w.put(config_.depth);
    w.put(config_.seed);
    w.put(static_cast<std::uint8_t>(config_.conservative));
    w.put(config_.top_k);
    w.put(total_);
    for (const std::uint64_t counter : counters_) w.put(counter);
    w.put(static_cast<std::uint64_t>(hitter_items_.size()));
    for (const HeavyHitter& hitter : heavy_hitters()) w.put_bytes(hitter.item);
    return std::move(w).finish();
  }

  /// Writes to_bytes() to `path` (replacing it whole or not at all). Throws llmds::IOError.
  void save(const std::filesystem::path& path) const { detail::write_file(path, to_bytes()); }

  /// Reads a sketch written by save. Throws llmds::IOError or std::invalid_argument.
  [[nodiscard]] static CountMinSketch load(const std::filesystem::path& path) {
    return from_bytes(detail::read_file(path));
  }

  /// Reads what to_bytes wrote. Throws std::invalid_argument for anything else: besides the
  /// checksum and the sizes, the counters must be ones a stream of adds (and merges) can leave:
  /// none above the total; without conservative update every row summing to the total, with it
  /// no row above the total and all rows together at least the total; and the heavy hitters
  /// must be distinct items the sketch has counted, at most top_k of them, in the order to_bytes
  /// writes them (so that a sketch has one spelling).
  [[nodiscard]] static CountMinSketch from_bytes(std::string_view data) {
    detail::BinaryReader r(data, file_magic, file_version, "CountMinSketch");
    CountMinSketchConfig config;
    config.width = r.get<std::uint32_t>();
    config.depth = r.get<std::uint32_t>();
    config.seed = r.get<std::uint64_t>();
    config.conservative = r.get_flag();
    config.top_k = r.get<std::uint32_t>();
    const auto total = r.get<std::uint64_t>();
    config.validate();
    if (r.remaining() / sizeof(std::uint64_t) < std::uint64_t{config.width} * config.depth) {
      r.fail("saved {} is truncated");
    }
    CountMinSketch sketch(config);
    sketch.total_ = total;
    // An add of c adds c to one counter of every row (plain), or raises each of the item's
    // counters by at most c and its smallest one by exactly c (conservative); merge adds
    // counters and totals alike. So a plain row sums to the total, a conservative row to at
    // most the total, and all the counters of a conservative sketch to at least the total.
    std::uint64_t all_rows = 0;  // saturates: only its comparison with the total matters
    for (std::uint32_t row = 0; row < config.depth; ++row) {
      std::uint64_t row_sum = 0;
      for (std::uint32_t col = 0; col < config.width; ++col) {
        const auto counter = r.get<std::uint64_t>();
        if (counter > total) r.fail("saved {} has a counter above its total count");
        if (counter > total - row_sum) r.fail("saved {} has a row of counters that sums past its total count");
        row_sum += counter;
        sketch.counters_[std::size_t{row} * config.width + col] = counter;
      }
      if (!config.conservative && row_sum != total) {
        r.fail("saved {} has a row of counters that does not sum to its total count");
      }
      all_rows = row_sum > std::numeric_limits<std::uint64_t>::max() - all_rows
                     ? std::numeric_limits<std::uint64_t>::max()
                     : all_rows + row_sum;
    }
    if (all_rows < total) r.fail("saved {} has fewer counts in its counters than its total count");
    const auto hitters = r.get_count(sizeof(std::uint64_t));
    if (hitters > config.top_k) r.fail("saved {} has more heavy hitters than its top_k");
    std::unordered_map<std::uint64_t, std::string> candidates;
    std::string_view previous_item;
    std::uint64_t previous_estimate = 0;
    for (std::uint64_t i = 0; i < hitters; ++i) {
      const std::string_view item = r.get_bytes();
      const std::uint64_t h = detail::hash_bytes(item, config.seed);
      // Items with equal hashes are one item to the sketch: a second one is a repeat.
      if (!candidates.emplace(h, std::string(item)).second) r.fail("saved {} lists a heavy hitter twice");
      const std::uint64_t estimate = sketch.estimate_hashed(h);
      if (estimate == 0) r.fail("saved {} has a heavy hitter it never counted");
      if (i > 0 && !(estimate < previous_estimate || (estimate == previous_estimate && item > previous_item))) {
        r.fail("saved {} lists its heavy hitters out of order");
      }
      previous_item = item;
      previous_estimate = estimate;
    }
    r.expect_end();
    sketch.rebuild_hitters(std::move(candidates));
    return sketch;
  }

 private:
  static constexpr std::string_view file_magic = "LLMDSCMS";
  static constexpr std::uint32_t file_version = 1;

  [[nodiscard]] std::size_t cell_of(std::uint64_t h, std::uint32_t row) const noexcept {
    // Each row re-mixes the item's hash with its own odd constant: one pass over the item, yet
    // rows whose cells collide for one pair of items are unlikely to collide for it again.
    const std::uint64_t row_hash = detail::fmix64(h + (row + 1) * 0x9e3779b97f4a7c15ULL);
    return std::size_t{row} * config_.width + detail::reduce_range(row_hash, config_.width);
  }

  [[nodiscard]] std::uint64_t estimate_hashed(std::uint64_t h) const noexcept {
    std::uint64_t low = std::numeric_limits<std::uint64_t>::max();
    for (std::uint32_t row = 0; row < config_.depth; ++row) {
      low = std::min(low, counters_[cell_of(h, row)]);
    }
    return low;
  }

  // Keeps the top_k items by estimate. Items are keyed by their 64-bit hash: two items with the
  // same hash are indistinguishable to the sketch anyway.
  void track(std::string_view item, std::uint64_t h, std::uint64_t estimate) {
    if (hitters_.contains(h)) {
      hitters_.increase_key(h, estimate);  // counters never fall, so neither do estimates
      return;
    }
    if (hitters_.size() == config_.top_k && estimate <= hitters_.peek()->score) return;
    // The newcomer goes in before the weakest leaves: both insertions allocate and may throw,
    // while erase and pop cannot, so a failure leaves the hitters as they were.
    const auto [it, inserted] = hitter_items_.emplace(h, std::string(item));
    try {
      hitters_.push(h, estimate);
    } catch (...) {
      hitter_items_.erase(it);
      throw;
    }
    if (hitters_.size() > config_.top_k) hitter_items_.erase(hitters_.pop().key);
  }

  void rebuild_hitters(std::unordered_map<std::uint64_t, std::string> candidates) {
    std::vector<std::pair<std::uint64_t, std::uint64_t>> ranked;  // (estimate, hash)
    ranked.reserve(candidates.size());
    for (const auto& [h, item] : candidates) ranked.emplace_back(estimate_hashed(h), h);
    const std::size_t keep = std::min<std::size_t>(ranked.size(), config_.top_k);
    std::partial_sort(ranked.begin(), ranked.begin() + static_cast<std::ptrdiff_t>(keep),
                      ranked.end(), [](const auto& a, const auto& b) {
                        return a.first != b.first ? a.first > b.first : a.second < b.second;
                      });
    hitters_.clear();
    hitter_items_.clear();
    for (std::size_t i = 0; i < keep; ++i) {
      const auto [estimate, h] = ranked[i];
      hitters_.push(h, estimate);
      hitter_items_.emplace(h, std::move(candidates.at(h)));
    }
  }

  CountMinSketchConfig config_;
  std::vector<std::uint64_t> counters_;
  std::uint64_t total_ = 0;
  IndexedHeap<std::uint64_t, std::uint64_t> hitters_{HeapOrder::min};
  std::unordered_map<std::uint64_t, std::string> hitter_items_;
};

}  // namespace llmds
