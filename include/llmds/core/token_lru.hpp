// TokenLRU: a least-recently-used cache whose budget is counted in tokens, not entries.
//
// In LLM serving what fills memory is tokens: a cached response of 2,000 tokens costs a hundred
// times one of 20. TokenLRU charges each value token_of(value) tokens, keeps the running total,
// and evicts least recently used entries until the total is within a budget: on demand with
// evict_until_budget, and on every put when max_tokens is set.
//
// Layout. One unordered_map owns the entries; each map node also carries the links of an
// intrusive doubly linked recency list (newest_ ... oldest_). Node-based maps never move their
// nodes, so the links stay valid across rehashing and every key is stored once. get and put are
// O(1) on average; an eviction pass is O(entries evicted).
//
// Invariants: total_tokens() is the sum of token_of over the entries; with max_tokens set,
// total_tokens() <= max_tokens after every call; the recency list holds exactly the map's
// entries, most recently put or got first.
//
// Errors leave the cache unchanged, including an exception from the key's own equality (user
// code): every lookup happens before the first change. A negative token count or a value larger than max_tokens by
// itself is std::invalid_argument (a value that can never fit is refused rather than admitted
// and evicted at once), a token total past 2^64 - 1 is std::overflow_error, erase of an unknown
// key is llmds::KeyError.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <ranges>
#include <stdexcept>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "llmds/core/errors.hpp"
#include "llmds/core/stats_fields.hpp"
#include "llmds/detail/assert.hpp"

namespace llmds {

/// token_of(value) must return an integer: the number of tokens the value costs.
template <class F, class Value>
concept TokenCounter = std::invocable<const F&, const Value&> &&
                       std::integral<std::remove_cvref_t<std::invoke_result_t<const F&, const Value&>>>;

/// The default token count: the value's size, as Python's len (a token-id vector costs its length).
struct SizeTokens {
  template <std::ranges::sized_range R>
  auto operator()(const R& value) const {
    return std::ranges::size(value);
  }
};

template <class Key, class Value, class TokenOf = SizeTokens, class Hash = std::hash<Key>,
          class KeyEqual = std::equal_to<Key>>
class TokenLRU {
  static_assert(TokenCounter<TokenOf, Value>,
                "TokenOf must be callable on a const Value& and return an integer token count");

 public:
  using key_type = Key;
  using value_type = Value;
  using Evicted = std::vector<std::pair<Key, Value>>;

  struct Stats {
    std::size_t size = 0;
    std::uint64_t total_tokens = 0;
    std::optional<std::uint64_t> max_tokens;
    std::uint64_t hits = 0;       // get found the key
    std::uint64_t misses = 0;     // get did not
    std::uint64_t evictions = 0;  // entries evicted by put or evict_until_budget

    /// Share of gets that found their key; 0 before any get.
    [[nodiscard]] double hit_rate() const noexcept {
      return hits + misses == 0 ? 0.0 : static_cast<double>(hits) / static_cast<double>(hits + misses);
    }

    /// Every figure by name (core/stats_fields.hpp).
    template <class Visit>
    void for_each_field(Visit&& visit) const {
      visit("size", size);
      visit("total_tokens", total_tokens);
      visit("max_tokens", max_tokens);
      visit("hits", hits);
      visit("misses", misses);
      visit("hit_rate", hit_rate());
      visit("evictions", evictions);
    }
  };

  /// `max_tokens` unset: the cache never evicts by itself.
  explicit TokenLRU(TokenOf token_of = {}, std::optional<std::uint64_t> max_tokens = std::nullopt,
                    Hash hash = {}, KeyEqual equal = {})
      : entries_(0, std::move(hash), std::move(equal)),
        token_of_(std::move(token_of)),
        max_tokens_(max_tokens) {}

  TokenLRU(const TokenLRU& other)
      : entries_(0, other.entries_.hash_function(), other.entries_.key_eq()),
        token_of_(other.token_of_),
        max_tokens_(other.max_tokens_),
        hits_(other.hits_),
        misses_(other.misses_),
        evictions_(other.evictions_) {
    entries_.reserve(other.size());
    for (const Item* item = other.oldest_; item != nullptr; item = item->second.newer) {
      auto [it, inserted] = entries_.try_emplace(item->first, item->second.value,
                                                 item->second.tokens);
      link_newest(*it);
      total_ += item->second.tokens;
    }
  }
  TokenLRU(TokenLRU&& other) noexcept
      : entries_(std::move(other.entries_)),
        token_of_(std::move(other.token_of_)),
        max_tokens_(other.max_tokens_),
        newest_(std::exchange(other.newest_, nullptr)),
        oldest_(std::exchange(other.oldest_, nullptr)),
        total_(std::exchange(other.total_, 0)),
        hits_(other.hits_),
        misses_(other.misses_),
        evictions_(other.evictions_) {
    other.entries_.clear();
  }
  TokenLRU& operator=(TokenLRU other) noexcept {
    swap(other);
    return *this;
  }
  ~TokenLRU() = default;

  void swap(TokenLRU& other) noexcept {
    using std::swap;
    swap(entries_, other.entries_);
    swap(token_of_, other.token_of_);
    swap(max_tokens_, other.max_tokens_);
    swap(newest_, other.newest_);
    swap(oldest_, other.oldest_);
    swap(total_, other.total_);
    swap(hits_, other.hits_);
    swap(misses_, other.misses_);
    swap(evictions_, other.evictions_);
  }

  /// Inserts or replaces `key` as the most recent entry. With max_tokens set, evicts least
  /// recently used entries until the total fits, and returns them oldest first.
  /// Throws std::invalid_argument if token_of(value) is negative or exceeds max_tokens,
  /// std::overflow_error if the total would pass 2^64 - 1.
  Evicted put(Key key, Value value) {
    const std::uint64_t tokens = count_tokens(value);
    if (max_tokens_ && tokens > *max_tokens_) {
      throw std::invalid_argument(
          fmt::format("TokenLRU::put: the value costs {} tokens, more than max_tokens = {}",
                      tokens, *max_tokens_));
    }
    const auto found = entries_.find(key);
    Item* existing = found == entries_.end() ? nullptr : &*found;
    const std::uint64_t others = total_ - (existing ? existing->second.tokens : 0);
    if (tokens > UINT64_MAX - others) {
      throw std::overflow_error("TokenLRU::put: the token total would pass 2^64 - 1");
    }
    const std::uint64_t new_total = others + tokens;

    // With room for one more entry reserved, inserting cannot rehash, so the victims' iterators
    // found before the insertion stay valid. Finding them is the last step that can throw.
    if (!existing) entries_.reserve(entries_.size() + 1);
    const Victims victims =
        max_tokens_ ? find_victims(new_total, *max_tokens_, existing) : Victims{};
    Evicted evicted;
    evicted.reserve(victims.size());

    if (existing) {
      existing->second.value = std::move(value);
      existing->second.tokens = tokens;
      unlink(*existing);
      link_newest(*existing);
    } else {
      auto [it, inserted] = entries_.try_emplace(std::move(key), std::move(value), tokens);
      link_newest(*it);
    }
    total_ = new_total;
    evict(victims, evicted);
    return evicted;
  }

  /// The value of `key`, made the most recent entry; nullptr if absent. The pointer is valid
  /// until the next call that changes the cache.
  Value* get(const Key& key) {
    const auto it = entries_.find(key);
    if (it == entries_.end()) {
      ++misses_;
      return nullptr;
    }
    ++hits_;
    unlink(*it);
    link_newest(*it);
    return &it->second.value;
  }

  /// The value of `key` without touching its recency or the hit counters; nullptr if absent.
  [[nodiscard]] const Value* peek(const Key& key) const {
    const auto it = entries_.find(key);
    return it == entries_.end() ? nullptr : &it->second.value;
  }

  /// Removes `key` and returns its value. Not counted as an eviction. Throws llmds::KeyError
  /// if the key is absent.
  Value erase(const Key& key) {
    const auto it = entries_.find(key);
    if (it == entries_.end()) {
      throw KeyError(fmt::format("TokenLRU::erase: key {} is not in the cache",
                                 detail::describe(key)));
    }
    return std::move(extract(it).second.value);
  }

  /// Evicts least recently used entries until total_tokens() <= target_budget and returns them,
  /// oldest first.
  Evicted evict_until_budget(std::uint64_t target_budget) {
    const Victims victims = find_victims(total_, target_budget, nullptr);
    Evicted evicted;
    evicted.reserve(victims.size());
    evict(victims, evicted);
    return evicted;
  }

  /// Calls f(key, value, tokens) for every entry, least recently used first.
  template <class F>
  void for_each_oldest_first(F&& f) const {
    for (const Item* item = oldest_; item != nullptr; item = item->second.newer) {
      f(item->first, item->second.value, item->second.tokens);
    }
  }

  [[nodiscard]] bool contains(const Key& key) const { return entries_.contains(key); }
  [[nodiscard]] std::size_t size() const noexcept { return entries_.size(); }
  [[nodiscard]] bool is_empty() const noexcept { return entries_.empty(); }
  [[nodiscard]] std::uint64_t total_tokens() const noexcept { return total_; }
  [[nodiscard]] std::optional<std::uint64_t> max_tokens() const noexcept { return max_tokens_; }

  [[nodiscard]] Stats stats() const {
    return {entries_.size(), total_, max_tokens_, hits_, misses_, evictions_};
  }

  /// Removes every entry. The cache is empty and consistent before the first entry is
  /// destroyed, so a value's destructor that reads the cache (or a traversal by a garbage
  /// collector it triggers) finds an empty cache, not half-freed links.
  void clear() noexcept {
    Map dropped = std::move(entries_);
    entries_.clear();
    newest_ = oldest_ = nullptr;
    total_ = 0;
  }

 private:
  struct Node;
  using Item = std::pair<const Key, Node>;
  struct Node {
    Node(Value v, std::uint64_t t) : value(std::move(v)), tokens(t) {}
    Value value;
    std::uint64_t tokens;
    Item* newer = nullptr;
    Item* older = nullptr;
  };
  using Map = std::unordered_map<Key, Node, Hash, KeyEqual>;
  using Victims = std::vector<typename Map::iterator>;

  std::uint64_t count_tokens(const Value& value) const {
    const auto n = std::invoke(token_of_, value);
    if constexpr (std::is_signed_v<decltype(n)>) {
      if (n < 0) {
        throw std::invalid_argument(fmt::format(
            "TokenLRU: token_of returned {} for a value; a token count cannot be negative", n));
      }
    }
    return static_cast<std::uint64_t>(n);
  }

  // The map positions of the oldest entries (skipping `keep`) that must go to bring `total`
  // within `budget`. A lookup may throw (a key's equality is user code, Python's == in the
  // bindings), so callers find every victim before they change anything; evicting by iterator
  // afterwards cannot fail. The entry just put is newest and never reached: once only it is
  // left, the total is its own token count, which is within the budget.
  Victims find_victims(std::uint64_t total, std::uint64_t budget, const Item* keep) {
    Victims victims;
    for (const Item* item = oldest_; item != nullptr && total > budget;
         item = item->second.newer) {
      if (item == keep) continue;
      total -= item->second.tokens;
      victims.push_back(entries_.find(item->first));
    }
    return victims;
  }

  // Moves the victims into `out`, whose capacity the caller reserved.
  void evict(const Victims& victims, Evicted& out) {
    for (const auto it : victims) {
      auto [key, node] = extract(it);
      out.emplace_back(std::move(key), std::move(node.value));
      ++evictions_;
    }
  }

  std::pair<Key, Node> extract(typename Map::iterator it) {
    unlink(*it);
    total_ -= it->second.tokens;
    auto handle = entries_.extract(it);
    return {std::move(handle.key()), std::move(handle.mapped())};
  }

  void link_newest(Item& item) noexcept {
    item.second.older = newest_;
    item.second.newer = nullptr;
    if (newest_ != nullptr) newest_->second.newer = &item;
    newest_ = &item;
    if (oldest_ == nullptr) oldest_ = &item;
  }

  void unlink(Item& item) noexcept {
    Node& node = item.second;
    (node.newer ? node.newer->second.older : newest_) = node.older;
    (node.older ? node.older->second.newer : oldest_) = node.newer;
    node.newer = node.older = nullptr;
  }

  Map entries_;
  TokenOf token_of_;
  std::optional<std::uint64_t> max_tokens_;
  Item* newest_ = nullptr;
  Item* oldest_ = nullptr;
  std::uint64_t total_ = 0;
  std::uint64_t hits_ = 0;
  std::uint64_t misses_ = 0;
  std::uint64_t evictions_ = 0;
};

}  // namespace llmds
