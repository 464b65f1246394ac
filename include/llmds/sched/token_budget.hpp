// TokenBudget: global token budgets for KV-cache, prompt and context-window tokens, with
// reserve / commit / release.
//
// A server has three token resources that run out independently: KV-cache slots (memory), prompt
// tokens being processed at once (compute per step), and context tokens of running requests. A
// request should enter only when all three have room, and the room must be claimed before the
// work starts, not discovered missing half-way through a prefill. So the budget works in two
// phases, like a two-phase commit:
//   reserve(key, amounts)  claims room when the request is admitted; refused, with the name of
//                          the resource, if any limit would be exceeded;
//   commit(key, amounts)   records what the request actually holds once it runs (less than the
//                          reservation gives room back; more must fit, or it is refused);
//                          it may be called again as the request grows (decoding adds KV);
//   release(key)           gives everything back when the request ends.
// Reserved and committed tokens both count against a limit; stats() reports them apart, with
// the peak of their sum and the refusals per resource.
//
// A limit left unset is unlimited (the resource is still counted). context_window is a cap per
// request, not a pool: the model's context length, which no reservation's context may exceed.
//
// Every call is O(1). Errors leave the budget unchanged: a refusal by reserve or commit is
// llmds::BudgetExceeded (try_reserve returns it as a value), a negative amount or a duplicate key
// std::invalid_argument, an unknown key llmds::KeyError.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string_view>
#include <unordered_map>
#include <utility>

#include <fmt/format.h>

#include "llmds/core/errors.hpp"
#include "llmds/core/stats_fields.hpp"

namespace llmds {

enum class BudgetResource : std::size_t { kv_cache = 0, prompt = 1, context = 2 };

inline constexpr std::array<BudgetResource, 3> kBudgetResources = {
    BudgetResource::kv_cache, BudgetResource::prompt, BudgetResource::context};

/// "kv_cache", "prompt", "context": the names used in errors, refusals and the Python API.
constexpr std::string_view resource_name(BudgetResource r) {
  constexpr std::array<std::string_view, 3> names = {"kv_cache", "prompt", "context"};
  return names[static_cast<std::size_t>(r)];
}

/// Tokens of each resource.
struct TokenAmounts {
  std::int64_t kv_cache = 0;
  std::int64_t prompt = 0;
  std::int64_t context = 0;

  /// Each resource's amount under its name (core/stats_fields.hpp).
  template <class Visit>
  void for_each_field(Visit&& visit) const {
    visit("kv_cache", kv_cache);
    visit("prompt", prompt);
    visit("context", context);
  }

  [[nodiscard]] std::int64_t operator[](BudgetResource r) const {
    return r == BudgetResource::kv_cache ? kv_cache : r == BudgetResource::prompt ? prompt : context;
  }
  std::int64_t& operator[](BudgetResource r) {
    return r == BudgetResource::kv_cache ? kv_cache : r == BudgetResource::prompt ? prompt : context;
  }
  friend bool operator==(const TokenAmounts&, const TokenAmounts&) = default;
};

struct TokenBudgetConfig {
  std::optional<std::int64_t> kv_cache_limit;  // e.g. KV pages x page size
  std::optional<std::int64_t> prompt_limit;    // prompt tokens in progress at once
  std::optional<std::int64_t> context_limit;   // context tokens of all requests together
  std::optional<std::int64_t> context_window;  // per request: the model's context length

  [[nodiscard]] std::optional<std::int64_t> limit(BudgetResource r) const {
    return r == BudgetResource::kv_cache ? kv_cache_limit : r == BudgetResource::prompt ? prompt_limit : context_limit;
  }

  void validate() const {
    for (const BudgetResource r : kBudgetResources) {
      if (limit(r) && *limit(r) < 0) {
        throw std::invalid_argument(
            fmt::format("TokenBudgetConfig.{}_limit must be non-negative, got {}", resource_name(r), *limit(r)));
      }
    }
    if (context_window && *context_window < 1) {
      throw std::invalid_argument(fmt::format("TokenBudgetConfig.context_window must be at least 1, got {}", *context_window));
    }
  }
};

/// Why a reservation was refused: the resource, and the numbers that did not fit.
struct BudgetRefusal {
  BudgetResource resource;
  std::int64_t requested;  // the extra tokens asked for
  std::int64_t available;  // what was left (for context_window: the window)
  bool per_request;        // refused by context_window, not by a pool's limit
};

struct ResourceUsage {
  std::optional<std::int64_t> limit;
  std::int64_t reserved = 0;   // claimed, not yet committed
  std::int64_t committed = 0;  // held by running requests
  std::int64_t peak = 0;       // highest reserved + committed so far
  std::uint64_t refusals = 0;

  /// Room left under the limit; none without a limit.
  [[nodiscard]] std::optional<std::int64_t> available() const noexcept {
    if (!limit) return std::nullopt;
    return *limit - reserved - committed;
  }

  /// Every figure by name (core/stats_fields.hpp).
  template <class Visit>
  void for_each_field(Visit&& visit) const {
    visit("limit", limit);
    visit("reserved", reserved);
    visit("committed", committed);
    visit("available", available());
    visit("peak", peak);
    visit("refusals", refusals);
  }
};

struct TokenBudgetStats {
  std::array<ResourceUsage, 3> resources;  // indexed by BudgetResource
  std::size_t reservations = 0;            // keys held, reserved or committed
  std::size_t committed_reservations = 0;

  /// Every figure by name (core/stats_fields.hpp): each resource's usage under its name.
  template <class Visit>
  void for_each_field(Visit&& visit) const {
    for (const BudgetResource r : kBudgetResources) visit(resource_name(r), resources[static_cast<std::size_t>(r)]);
    visit("reservations", reservations);
    visit("committed_reservations", committed_reservations);
  }
};

class TokenBudget {
 public:
  using Key = std::int64_t;

  explicit TokenBudget(TokenBudgetConfig config = {}) : config_(config) { config_.validate(); }

  [[nodiscard]] const TokenBudgetConfig& config() const noexcept { return config_; }

  /// Claims `amounts` for `key`, or returns why not (nothing changes then). A duplicate key or a
  /// negative amount is std::invalid_argument.
  std::optional<BudgetRefusal> try_reserve(Key key, const TokenAmounts& amounts) {
    check_amounts(amounts, "reserve");
    if (holdings_.contains(key)) throw std::invalid_argument(fmt::format("reserve: key {} already holds a reservation", key));
    if (auto refusal = refusal_for(amounts, TokenAmounts{})) return note(*refusal);
    add(amounts, +1, false);
    holdings_.emplace(key, Holding{amounts, false});
    return std::nullopt;
  }

  /// try_reserve that throws llmds::BudgetExceeded on a refusal.
  void reserve(Key key, const TokenAmounts& amounts) {
    if (auto refusal = try_reserve(key, amounts)) throw exceeded("reserve", key, *refusal);
  }

  /// Records what `key` actually holds now. Growth beyond what it held must fit the limits
  /// (else llmds::BudgetExceeded, nothing changes); shrinking gives room back.
  void commit(Key key, const TokenAmounts& amounts) {
    check_amounts(amounts, "commit");
    Holding& h = find(key, "commit");
    if (auto refusal = refusal_for(amounts, h.amounts)) throw exceeded("commit", key, note(*refusal));
    add(h.amounts, -1, h.committed);
    add(amounts, +1, true);
    if (!h.committed) ++committed_count_;
    h = Holding{amounts, true};
  }

  /// commit with the amounts that were reserved.
  void commit(Key key) { commit(key, find(key, "commit").amounts); }

  /// Gives back everything `key` holds and forgets it. Unknown key: llmds::KeyError.
  TokenAmounts release(Key key) {
    const Holding h = find(key, "release");
    add(h.amounts, -1, h.committed);
    if (h.committed) --committed_count_;
    holdings_.erase(key);
    return h.amounts;
  }

  [[nodiscard]] bool contains(Key key) const { return holdings_.contains(key); }
  [[nodiscard]] TokenAmounts holding(Key key) const { return find(key, "holding").amounts; }
  [[nodiscard]] bool is_committed(Key key) const { return find(key, "is_committed").committed; }

  /// Tokens of `r` still free (limit - reserved - committed), or std::nullopt when unlimited.
  [[nodiscard]] std::optional<std::int64_t> available(BudgetResource r) const {
    ResourceUsage u = usage_[index(r)];
    u.limit = config_.limit(r);
    return u.available();
  }

  [[nodiscard]] TokenBudgetStats stats() const {
    TokenBudgetStats s;
    s.resources = usage_;
    for (const BudgetResource r : kBudgetResources) s.resources[index(r)].limit = config_.limit(r);
    s.reservations = holdings_.size();
    s.committed_reservations = committed_count_;
    return s;
  }

 private:
  struct Holding {
    TokenAmounts amounts;
    bool committed;
  };

  static constexpr std::size_t index(BudgetResource r) { return static_cast<std::size_t>(r); }

  static void check_amounts(const TokenAmounts& a, const char* op) {
    for (const BudgetResource r : kBudgetResources) {
      if (a[r] < 0) throw std::invalid_argument(fmt::format("{}: {} tokens must be non-negative, got {}", op, resource_name(r), a[r]));
    }
  }

  Holding& find(Key key, const char* op) { return const_cast<Holding&>(std::as_const(*this).find(key, op)); }
  const Holding& find(Key key, const char* op) const {
    auto it = holdings_.find(key);
    if (it == holdings_.end()) throw KeyError(fmt::format("{}: no reservation for key {}", op, key));
    return it->second;
  }

  // The first limit that moving a holding from `current` to `wanted` would break: the
  // per-request context window first (counted as a "context" refusal), then the pools in the
  // order kv_cache, prompt, context.
  [[nodiscard]] std::optional<BudgetRefusal> refusal_for(const TokenAmounts& wanted, const TokenAmounts& current) const {
    if (config_.context_window && wanted.context > *config_.context_window) {
      return BudgetRefusal{BudgetResource::context, wanted.context, *config_.context_window, true};
    }
    for (const BudgetResource r : kBudgetResources) {
      const std::int64_t extra = wanted[r] - current[r];
      const auto free = available(r);
      if (free && extra > 0 && extra > *free) return BudgetRefusal{r, extra, *free, false};
    }
    return std::nullopt;
  }

  BudgetRefusal note(const BudgetRefusal& refusal) {
    ++usage_[index(refusal.resource)].refusals;
    return refusal;
  }

  static BudgetExceeded exceeded(const char* op, Key key, const BudgetRefusal& r) {
    if (r.per_request) {
      return BudgetExceeded(fmt::format("{}: key {} asks for {} context tokens, more than the context window of {}",
                                        op, key, r.requested, r.available));
    }
    return BudgetExceeded(fmt::format("{}: key {} needs {} more {} tokens but only {} are free", op, key, r.requested,
                                      resource_name(r.resource), r.available));
  }

  void add(const TokenAmounts& a, int sign, bool committed) {
    for (const BudgetResource r : kBudgetResources) {
      auto& u = usage_[index(r)];
      (committed ? u.committed : u.reserved) += sign * a[r];
      u.peak = std::max(u.peak, u.reserved + u.committed);
    }
  }

  TokenBudgetConfig config_;
  std::unordered_map<Key, Holding> holdings_;
  std::array<ResourceUsage, 3> usage_{};
  std::size_t committed_count_ = 0;
};

}  // namespace llmds
