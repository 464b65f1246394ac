// KVCache: a paged KV cache with prefix sharing, copy-on-write and prefix caching across time.
//
// Each sequence (a request, or one branch of a parallel sample or beam) stores one KV entry per
// token: entry_width scalars, e.g. keys and values of every layer and head. The entries live in
// fixed-size pages of one arena, and each sequence owns a block table, the list of its page
// ids, which is exactly what a paged-attention kernel takes.
//
// Why pages: a sequence grows one token at a time and its final length is unknown, so
// contiguous buffers either waste memory or must be copied as they grow. Pages bound the waste
// to one partial page per sequence, and they make sharing possible: two sequences can list the
// same page.
//
// Sharing. Pages come from a BlockPool, which keeps a refcount per page and a registry of
// chained SHA-256 block hashes (block_hash.hpp). attach() hashes the full pages of the
// sequence's prefix tokens and takes the longest registered run of them instead of storing it
// again (refcount + 1); the rest of the sequence is written to new pages, and its full prefix
// pages are registered for later requests. This assumes what holds for any model: equal
// prefixes produce equal KV entries, so the entries attach() receives for a shared run are
// not stored; the ones already cached are used. fork() shares every page of a sequence.
//
// Copy-on-write. Pages are only ever written past a sequence's last token, so the only page
// that can be written while shared is a partial last page, after fork(). append() copies such
// a page first (one page copy per branch and fork), then writes the copy. Full pages, and so
// every registered page, are never written again.
//
// Prefix caching across time. detach() releases a sequence's pages tail first. A registered
// page whose refcount reaches 0 stays cached, holding its data, until the pool needs room; then
// the least recently released one is evicted first (O(1)). Pages without a hash are freed at
// once and reused before any cached page is evicted.
//
// Tiers below. With KVCacheConfig::tiers, the pages live in the primary tier of a
// KVBlockManager (kv/tiered/kv_block_manager.hpp) whose host and disk tiers hold pages the arena
// evicted: a prefix lookup that misses in the arena continues in host and disk, and the pages
// found there are copied back into the arena instead of being recomputed. The arena's pages are
// one contiguous block each, so the manager moves them with one copy per page. defragment() is
// not available then (it would move pages under the manager).
//
// Failure is all or nothing: attach, append and fork check that the pages they need are free
// or evictable before they change anything, and otherwise throw llmds::OutOfPages
// (Python: MemoryError); bad arguments throw before anything changes too.
//
// Layout and memory: the arena is max_pages * page_size * entry_width scalars, allocated zeroed
// and lazily by the OS (calloc), so untouched pages cost no physical memory. Page p holds
// tokens [0, page_size) as rows of entry_width scalars at arena + p * page_size * entry_width.
//
// Costs: attach O(prefix hashing + n * entry_width copy), append O(m * entry_width), fork
// O(pages), detach O(pages), get O(n * entry_width), defragment O(max_pages + table entries +
// moved pages * page bytes).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <new>
#include <optional>
#include <span>
#include <stdexcept>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "llmds/core/errors.hpp"
#include "llmds/core/float16.hpp"
#include "llmds/core/stats_fields.hpp"
#include "llmds/core/types.hpp"
#include "llmds/detail/assert.hpp"
#include "llmds/kv/block_hash.hpp"
#include "llmds/kv/block_pool.hpp"
#include "llmds/kv/kv_view.hpp"
#include "llmds/kv/tiered/kv_block_manager.hpp"

namespace llmds {

/// Host and disk tiers below a KVCache's arena (all off by default).
struct KVCacheTiers {
  std::size_t host_pages = 0;            // 0: no host tier
  std::size_t disk_pages = 0;            // 0: no disk tier
  std::filesystem::path disk_directory;  // with disk_pages: where the block files live
  OffloadPolicy offload_policy = OffloadPolicy::kWriteBack;
  std::uint32_t disk_min_uses = 0;       // the disk filter (KVBlockManagerConfig)
  std::size_t offload_queue_blocks = 64; // disk writes waiting for the worker; 0: written at once
  bool disk_sync_writes = true;          // fdatasync each block file (DiskStoreConfig::sync_writes)
  // With host_pages: arena pages a background reclaimer keeps free by moving the least recently
  // used cached pages to host ahead of need, so that the caller's thread seldom copies a page
  // down itself (KVBlockManagerConfig::reclaim_free_blocks). 0: no reclaimer.
  std::size_t reclaim_pages = 0;
  // A store shared with other servers (the remote tier, e.g. a RedisBlockStore), lent: its block
  // geometry must be KVCache<Scalar>::page_geometry(config). Pages registered here are written
  // through to it, and an attach_cached_prefix reads back from it the pages of the prefix that
  // no local tier holds.
  RemoteBlockStore* remote = nullptr;

  [[nodiscard]] bool enabled() const noexcept { return host_pages > 0 || disk_pages > 0 || remote != nullptr; }
  void validate() const {
    if (disk_pages > 0 && disk_directory.empty()) {
      throw std::invalid_argument("KVCacheTiers.disk_directory is needed for a disk tier");
    }
    if (reclaim_pages > 0 && host_pages == 0) {
      throw std::invalid_argument("KVCacheTiers.reclaim_pages needs a host tier (host_pages)");
    }
  }
};

/// Where the pages of a cached prefix came from.
struct PrefixSource {
  std::size_t primary_pages = 0;  // shared in the arena
  std::size_t host_pages = 0;     // copied back from host memory
  std::size_t disk_pages = 0;     // read back from disk
  std::size_t remote_pages = 0;   // read from the remote tier (another server computed them)
};

struct KVCacheConfig {
  std::size_t page_size = 512;    // tokens per page; the Python API's default (docs/python-api.md)
  std::size_t max_pages = 10000;  // the Python API's default
  std::size_t entry_width = 1;    // scalars per token, e.g. 2 * layers * kv_heads * head_dim
  bool enable_prefix_sharing = true;  // the Python API's default
  KVCacheTiers tiers{};           // none by default

  void validate() const {
    tiers.validate();
    if (tiers.enabled() && !enable_prefix_sharing) {
      throw std::invalid_argument("KVCacheConfig: tiers below the arena need enable_prefix_sharing");
    }
    if (page_size == 0) throw std::invalid_argument("KVCacheConfig.page_size must be at least 1");
    if (entry_width == 0) {
      throw std::invalid_argument("KVCacheConfig.entry_width must be at least 1");
    }
    if (max_pages == 0 ||
        max_pages > static_cast<std::size_t>(std::numeric_limits<BlockId>::max())) {
      throw std::invalid_argument(fmt::format(
          "KVCacheConfig.max_pages must be in [1, 2^31 - 1], got {}", max_pages));
    }
    const std::size_t limit = std::numeric_limits<std::size_t>::max() / 16;
    if (page_size > limit / entry_width || page_size * entry_width > limit / max_pages) {
      throw std::invalid_argument(fmt::format(
          "KVCacheConfig: an arena of {} x {} x {} scalars cannot be addressed", max_pages,
          page_size, entry_width));
    }
  }
};

struct KVCacheStats {
  std::size_t sequences = 0;
  std::size_t tokens = 0;          // over all sequences, shared tokens counted per sequence
  std::size_t total_pages = 0;
  std::size_t free_pages = 0;
  std::size_t cached_pages = 0;    // refcount 0, hashed, evictable
  std::size_t used_pages = 0;      // held by at least one sequence
  std::size_t shared_pages = 0;    // held by two or more
  std::uint64_t total_refs = 0;    // sum of refcounts = pages listed in all block tables
  std::size_t logical_pages = 0;   // pages the sequences would hold without sharing
  std::size_t pages_saved = 0;     // logical_pages - used_pages
  std::size_t bytes_per_page = 0;
  std::uint64_t prefix_lookup_pages = 0;  // full prefix pages looked up by attach
  std::uint64_t prefix_hit_pages = 0;     // of those, shared instead of stored
  std::uint64_t evictions = 0;
  std::uint64_t cow_copies = 0;

  [[nodiscard]] double prefix_hit_rate() const noexcept {
    return prefix_lookup_pages == 0 ? 0.0
                                    : double(prefix_hit_pages) / double(prefix_lookup_pages);
  }
  [[nodiscard]] std::size_t bytes_saved() const noexcept { return pages_saved * bytes_per_page; }

  /// Every figure by name (core/stats_fields.hpp).
  template <class Visit>
  void for_each_field(Visit&& visit) const {
    visit("sequences", sequences);
    visit("tokens", tokens);
    visit("total_pages", total_pages);
    visit("free_pages", free_pages);
    visit("cached_pages", cached_pages);
    visit("used_pages", used_pages);
    visit("shared_pages", shared_pages);
    visit("total_refs", total_refs);
    visit("logical_pages", logical_pages);
    visit("pages_saved", pages_saved);
    visit("bytes_per_page", bytes_per_page);
    visit("bytes_saved", bytes_saved());
    visit("prefix_lookup_pages", prefix_lookup_pages);
    visit("prefix_hit_pages", prefix_hit_pages);
    visit("prefix_hit_rate", prefix_hit_rate());
    visit("evictions", evictions);
    visit("cow_copies", cow_copies);
  }
};

template <class Scalar = float>
class KVCache {
  static_assert(std::is_trivially_copyable_v<Scalar>,
                "KVCache stores scalars by memcpy; Scalar must be trivially copyable");

 public:
  using scalar_type = Scalar;
  /// The manager of the tiers below the arena (KVCacheConfig::tiers).
  using TierManager = KVBlockManager<BlockHash, BlockHashHasher, LruEviction>;

  /// A prefix being copied into the arena from the tiers below it in the background
  /// (prefetch_cached_prefix). Pass it to attach_cached_prefix once ready(), or to
  /// drop_prefetch. Move-only.
  class PrefixFetch {
   public:
    /// True when nothing is left to wait for (also for an empty fetch).
    [[nodiscard]] bool ready() const noexcept { return !onboarding_.open() || onboarding_.ready(); }
    /// True while the fetch holds pages (until attached or dropped).
    [[nodiscard]] bool pending() const noexcept { return onboarding_.open(); }

   private:
    friend KVCache;
    typename TierManager::Onboarding onboarding_;
    std::vector<Tier> tiers_;  // where each page of the run was found
  };

  explicit KVCache(KVCacheConfig config = {})
      : config_((config.validate(), config)),
        page_elems_(config_.page_size * config_.entry_width),
        arena_(allocate_arena(config_.max_pages * page_elems_)),
        pool_(config_.tiers.enabled() ? 1 : config_.max_pages),
        hasher_(config_.page_size) {
    if (config_.tiers.enabled()) tiered_ = std::make_unique<Tiered>(config_, arena_.get());
  }

  /// Stores a new sequence: `kv` holds n entries of entry_width scalars, row-major. With
  /// prefix sharing on, the longest cached run of full pages of `prefix_tokens` (the token ids
  /// of the sequence's first len(prefix_tokens) <= n tokens) is shared rather than stored, and
  /// the sequence's own full prefix pages are registered for later requests. `cache_salt`
  /// separates tenants: sequences with different salts never share.
  /// Throws std::invalid_argument if seq is already attached, kv is not a whole number of
  /// entries, or the prefix is longer than the sequence; llmds::OutOfPages if the pages are
  /// not there. Either way nothing changes.
  void attach(SeqId seq, std::span<const Scalar> kv, std::span<const TokenId> prefix_tokens = {},
              std::span<const std::byte> cache_salt = {}) {
    if (sequences_.contains(seq)) {
      throw std::invalid_argument(fmt::format("KVCache::attach: sequence {} is already attached", seq));
    }
    const std::size_t n = entries_in(kv, "attach");
    if (prefix_tokens.size() > n) {
      throw std::invalid_argument(fmt::format(
          "KVCache::attach: prefix_tokens has {} tokens but the sequence only {}",
          prefix_tokens.size(), n));
    }
    std::vector<BlockHash> hashes;
    Sequence s;
    s.table.reserve(pages_for(n));  // so that filling it in below cannot throw
    if (config_.enable_prefix_sharing) hashes = hasher_.chain(prefix_tokens, cache_salt);
    if (tiered_) {
      attach_tiered(seq, std::move(s), n, kv, hashes, prefix_tokens);
      return;
    }
    if (config_.enable_prefix_sharing) pool_.match_prefix(hashes, &s.table);
    const std::size_t hits = s.table.size();
    const std::size_t needed = pages_for(n) - hits;
    std::size_t revived = 0;  // cached pages the hits take out of the evictable set
    for (const BlockId b : s.table) revived += pool_.is_cached(b) ? 1 : 0;
    if (needed + revived > pool_.available()) throw out_of_pages("attach", needed);
    auto [it, inserted] = sequences_.try_emplace(seq);  // before any change: it may throw

    // From here on nothing may throw, or the entry and the touched pages would be left behind:
    // the new pages go straight into the table's reserved room (no allocation), and the data
    // copy cannot fail.
    pool_.touch(s.table);
    [[maybe_unused]] const bool allocated = pool_.try_allocate_into(needed, s.table);
    LLMDS_ASSERT(allocated, "KVCache::attach: the pool refused pages it reported available");
    s.num_tokens = n;
    write(s.table, hits * config_.page_size, kv.subspan(hits * page_elems_));
    lookup_pages_ += hashes.size();
    hit_pages_ += hits;
    it->second = std::move(s);
    // Registering adds registry entries, which allocate. It comes last, once the sequence is
    // complete: if memory runs out here, the remaining pages stay private (later requests
    // recompute them) and the attach itself has succeeded.
    const Sequence& stored = it->second;
    try {
      for (std::size_t i = hits; i < hashes.size(); ++i) pool_.register_block(stored.table[i], hashes[i]);
    } catch (const std::bad_alloc&) {
    }
  }

  /// Starts a sequence holding only the longest cached run of full pages of `prefix_tokens`
  /// (shared, refcount + 1), for a caller that computes the rest itself, as an engine's prefill
  /// does: it append()s the entries it computes and calls register_prefix() to make its own
  /// full pages shareable. Returns the tokens the sequence now holds, a multiple of page_size
  /// (0 with prefix sharing off or no hit). Throws std::invalid_argument, changing nothing, if
  /// seq is already attached.
  ///
  /// With tiers below the arena, pages found in host or disk are copied into the arena first
  /// (evicting cached arena pages if needed); `source`, if given, says how many pages came from
  /// each tier.
  ///
  /// `fetch`, from prefetch_cached_prefix for the same tokens and salt, brings in the pages it
  /// copied (waiting for them if they are not ready); it is used up either way.
  std::size_t attach_cached_prefix(SeqId seq, std::span<const TokenId> prefix_tokens,
                                   std::span<const std::byte> cache_salt = {}, PrefixSource* source = nullptr,
                                   PrefixFetch* fetch = nullptr) {
    if (sequences_.contains(seq)) {
      throw std::invalid_argument(
          fmt::format("KVCache::attach_cached_prefix: sequence {} is already attached", seq));
    }
    // The fetched pages, held while the lookup below finds them in the arena.
    std::vector<BlockId> fetched;
    std::vector<Tier> fetched_from;
    if (fetch != nullptr && fetch->pending()) {
      fetched = tiered_->manager.finish(fetch->onboarding_);
      fetched_from = std::move(fetch->tiers_);
    }
    const auto give_back_fetched = [&] {
      std::reverse(fetched.begin(), fetched.end());
      if (!fetched.empty()) tiered_->manager.release(fetched);
    };
    Sequence s;
    std::size_t lookups = 0;
    if (source != nullptr) *source = PrefixSource{};
    std::vector<BlockHash> hashes;
    if (config_.enable_prefix_sharing) {
      hashes = hasher_.chain(prefix_tokens, cache_salt);
      lookups = hashes.size();
      if (!tiered_) pool_.match_prefix(hashes, &s.table);
    }
    auto [it, inserted] = sequences_.try_emplace(seq);  // before any change: it may throw
    if (tiered_) {
      try {
        s.table = take_tiered_prefix(hashes, prefix_tokens, source, std::span(fetched_from).first(fetched.size()));
      } catch (...) {
        sequences_.erase(it);
        give_back_fetched();
        throw;
      }
      give_back_fetched();
    } else {
      pool_.touch(s.table);
      if (source != nullptr) source->primary_pages = s.table.size();
    }
    s.num_tokens = s.table.size() * config_.page_size;
    lookup_pages_ += lookups;
    hit_pages_ += s.table.size();
    it->second = std::move(s);
    return it->second.num_tokens;
  }

  /// With tiers below the arena: starts copying the pages of the longest cached run of
  /// prefix_tokens' full pages that are in host or disk into the arena, on the tiers' onboarding
  /// worker, and returns at once; attach_cached_prefix then takes them without waiting, or
  /// waits for what is left. An empty fetch (ready, nothing held) without tiers, without a hit
  /// below the arena, or without room in the arena for the copies.
  [[nodiscard]] PrefixFetch prefetch_cached_prefix(std::span<const TokenId> prefix_tokens,
                                                   std::span<const std::byte> cache_salt = {}) {
    PrefixFetch fetch;
    if (!tiered_ || !config_.enable_prefix_sharing) return fetch;
    TierManager& m = tiered_->manager;
    const auto hashes = hasher_.chain(prefix_tokens, cache_salt);
    auto match = m.match(hashes);
    if (match.to_onboard() == 0) {
      m.cancel(match);
      return fetch;
    }
    fetch.tiers_.assign(match.tiers().begin(), match.tiers().end());
    try {
      fetch.onboarding_ = m.onboard_async(match);
    } catch (const OutOfPages&) {
      m.cancel(match);
      fetch.tiers_.clear();
    }
    return fetch;
  }

  /// Gives back the pages a fetch holds, without attaching them (waiting for its copies); they
  /// stay cached in the arena. A no-op for an empty or used fetch.
  void drop_prefetch(PrefixFetch& fetch) {
    if (!fetch.pending()) return;
    auto pages = tiered_->manager.finish(fetch.onboarding_);
    std::reverse(pages.begin(), pages.end());
    tiered_->manager.release(pages);
  }

  /// Registers the full pages of seq that hold `tokens` (the ids of its first tokens.size()
  /// tokens, which the caller vouches for) under their chained hashes, so later sequences with
  /// the same prefix and salt share them. Pages already registered are skipped, and a page
  /// whose hash another page holds stays private. Returns the pages newly registered. Throws
  /// llmds::KeyError for an unknown seq, std::invalid_argument if tokens is longer than it.
  std::size_t register_prefix(SeqId seq, std::span<const TokenId> tokens, std::span<const std::byte> cache_salt = {}) {
    Sequence& s = find(seq, "register_prefix");
    if (tokens.size() > s.num_tokens) {
      throw std::invalid_argument(fmt::format("KVCache::register_prefix: {} tokens but sequence {} holds {}",
                                              tokens.size(), seq, s.num_tokens));
    }
    if (!config_.enable_prefix_sharing) return 0;
    const auto hashes = hasher_.chain(tokens, cache_salt);
    if (tiered_) return register_tiered(s.table, hashes, tokens, 0);
    std::size_t added = 0;
    for (std::size_t i = 0; i < hashes.size(); ++i) {
      if (pool_.key_of(s.table[i]) != nullptr) continue;
      added += pool_.register_block(s.table[i], hashes[i]) ? 1 : 0;
    }
    return added;
  }

  /// Pages that attach(), attach_cached_prefix() or append() could take right now: free plus
  /// cached ones (which are evicted least recently used first).
  [[nodiscard]] std::size_t available_pages() const {
    return tiered_ ? tiered_->manager.primary_available() : pool_.available();
  }

  /// Pages append(seq, m entries) would take: new pages, plus one if a shared last page must be
  /// copied first. Throws llmds::KeyError for an unknown seq.
  [[nodiscard]] std::size_t pages_to_append(SeqId seq, std::size_t m) const {
    const Sequence& s = find(seq, "pages_to_append");
    if (m == 0) return 0;
    return pages_for(s.num_tokens + m) - s.table.size() + (last_page_shared(s) ? 1 : 0);
  }

  /// Appends entries to a sequence (decode steps). A shared partial last page is copied
  /// first. Throws llmds::KeyError for an unknown seq, std::invalid_argument for a partial
  /// entry, llmds::OutOfPages if the pages are not there; each changes nothing.
  void append(SeqId seq, std::span<const Scalar> kv) {
    Sequence& s = find(seq, "append");
    const std::size_t m = entries_in(kv, "append");
    if (m == 0) return;
    const std::size_t offset = s.num_tokens % config_.page_size;
    const bool copy_last = last_page_shared(s);
    const std::size_t grow = pages_for(s.num_tokens + m) - s.table.size();
    const std::size_t needed = grow + (copy_last ? 1 : 0);
    if (needed > available_pages()) throw out_of_pages("append", needed);
    s.table.reserve(s.table.size() + grow);  // may throw; nothing has changed yet

    auto fresh = tiered_ ? tiered_->manager.allocate(needed) : pool_.allocate(needed);
    if (copy_last) {
      const BlockId copy = fresh.back();
      fresh.pop_back();
      std::memcpy(page_data(copy), page_data(s.table.back()), offset * config_.entry_width * sizeof(Scalar));
      const BlockId shared[] = {s.table.back()};
      release_pages(shared);
      s.table.back() = copy;
      ++cow_copies_;
    }
    s.table.insert(s.table.end(), fresh.begin(), fresh.end());
    write(s.table, s.num_tokens, kv);
    s.num_tokens += m;
  }

  /// A new sequence dst sharing every page of src (parallel sampling, beam search): no data is
  /// copied until one of them appends into their shared partial last page. Throws
  /// llmds::KeyError for an unknown src, std::invalid_argument if dst is attached.
  void fork(SeqId src, SeqId dst) {
    const Sequence& s = find(src, "fork");
    if (sequences_.contains(dst)) {
      throw std::invalid_argument(fmt::format("KVCache::fork: sequence {} is already attached", dst));
    }
    Sequence copy = s;
    auto [it, inserted] = sequences_.try_emplace(dst);
    if (tiered_) {
      tiered_->manager.share(copy.table);
    } else {
      pool_.touch(copy.table);
    }
    it->second = std::move(copy);
  }

  /// Releases a sequence's pages tail first: hashed pages nobody else holds stay cached, the
  /// others are freed. Throws llmds::KeyError for an unknown seq.
  void detach(SeqId seq) {
    Sequence& s = find(seq, "detach");
    std::reverse(s.table.begin(), s.table.end());
    release_pages(s.table);
    sequences_.erase(seq);
  }

  /// A deep copy of the sequence's entries (num_tokens * entry_width scalars, row-major), or
  /// nullopt for an unknown seq.
  [[nodiscard]] std::optional<std::vector<Scalar>> get(SeqId seq) const {
    const auto it = sequences_.find(seq);
    if (it == sequences_.end()) return std::nullopt;
    const Sequence& s = it->second;
    std::vector<Scalar> out(s.num_tokens * config_.entry_width);
    std::size_t done = 0;
    for (const BlockId b : s.table) {
      const std::size_t count = std::min(page_elems_, out.size() - done);
      std::memcpy(out.data() + done, page_data(b), count * sizeof(Scalar));
      done += count;
    }
    return out;
  }

  [[nodiscard]] bool contains(SeqId seq) const { return sequences_.contains(seq); }
  [[nodiscard]] std::size_t num_sequences() const noexcept { return sequences_.size(); }

  /// Tokens stored for seq. Throws llmds::KeyError.
  [[nodiscard]] std::size_t num_tokens(SeqId seq) const { return find(seq, "num_tokens").num_tokens; }

  /// The page ids holding seq's tokens, in order: token t is row t % page_size of page
  /// table[t / page_size]. Valid until the sequence changes. Throws llmds::KeyError.
  [[nodiscard]] std::span<const BlockId> block_table(SeqId seq) const {
    return find(seq, "block_table").table;
  }

  /// What a reader (a model's attention) needs to find each of seq's entries in place: the
  /// arena, the page size, the entry width and the block table. Valid until the sequence
  /// changes. Throws llmds::KeyError.
  [[nodiscard]] KVView<Scalar> view(SeqId seq) const {
    return {arena_.get(), config_.page_size, config_.entry_width, find(seq, "view").table};
  }

  /// Page p's page_size * entry_width scalars, in place. Throws std::out_of_range.
  [[nodiscard]] std::span<const Scalar> page(BlockId p) const {
    check_page(p);
    return {page_data(p), page_elems_};
  }

  /// The arena, for kernels that take a base pointer and block tables.
  [[nodiscard]] std::span<const Scalar> arena() const noexcept {
    return {arena_.get(), config_.max_pages * page_elems_};
  }

  /// The chained hashes attach() would compute for these prefix tokens and salt.
  [[nodiscard]] std::vector<BlockHash> block_hashes(std::span<const TokenId> prefix_tokens,
                                                    std::span<const std::byte> cache_salt = {}) {
    return hasher_.chain(prefix_tokens, cache_salt);
  }

  /// The block registry, for lookups (match_prefix, find) and inspection: the arena's (with
  /// tiers, the primary tier's; with a reclaimer, only pages the caller holds may be inspected,
  /// since it changes the others on its own thread: see KVBlockManager::pool).
  [[nodiscard]] const BlockPool<BlockHash, BlockHashHasher>& pool() const { return blocks(); }

  /// The tiers below the arena, or nullptr without them: their contents, statistics and events.
  /// The block shape of a cache's pages in its tiers' stores: page_size tokens of entry_width
  /// scalars (a remote store shared by such caches must have it). Throws std::invalid_argument
  /// for pages too large for tiers.
  [[nodiscard]] static BlockGeometry page_geometry(const KVCacheConfig& config) { return Tiered::page_geometry(config); }

  [[nodiscard]] KVBlockManager<BlockHash, BlockHashHasher, LruEviction>* tiers() noexcept {
    return tiered_ ? &tiered_->manager : nullptr;
  }
  [[nodiscard]] const KVBlockManager<BlockHash, BlockHashHasher, LruEviction>* tiers() const noexcept {
    return tiered_ ? &tiered_->manager : nullptr;
  }

  /// Packs every used or cached page at the lowest ids, moving its data and rewriting every
  /// block table. Returns the moves (old id, new id). Views from page() and block_table() are
  /// stale afterwards.
  /// Throws std::logic_error with tiers below the arena, whose manager holds page ids.
  std::vector<std::pair<BlockId, BlockId>> defragment() {
    if (tiered_) throw std::logic_error("KVCache::defragment: not available with tiers below the arena");
    auto moves = pool_.defragment();
    if (moves.empty()) return moves;
    std::vector<BlockId> where(config_.max_pages);
    for (std::size_t i = 0; i < where.size(); ++i) where[i] = static_cast<BlockId>(i);
    for (const auto& [from, to] : moves) {
      // Ascending sources move to lower, already vacated pages: no overlap, no overwrite.
      std::memcpy(page_data(to), page_data(from), page_elems_ * sizeof(Scalar));
      where[static_cast<std::size_t>(from)] = to;
    }
    for (auto& [id, s] : sequences_) {
      for (BlockId& b : s.table) b = where[static_cast<std::size_t>(b)];
    }
    return moves;
  }

  /// O(max_pages + sequences).
  [[nodiscard]] KVCacheStats stats() const {
    const auto p = pool_stats();
    KVCacheStats s;
    s.sequences = sequences_.size();
    for (const auto& [id, seq] : sequences_) {
      s.tokens += seq.num_tokens;
      s.logical_pages += seq.table.size();
    }
    s.total_pages = p.num_blocks;
    s.free_pages = p.free_blocks;
    s.cached_pages = p.cached_blocks;
    s.used_pages = p.in_use_blocks;
    s.shared_pages = p.shared_blocks;
    s.total_refs = p.total_refs;
    s.pages_saved = s.logical_pages - s.used_pages;
    s.bytes_per_page = page_elems_ * sizeof(Scalar);
    s.prefix_lookup_pages = lookup_pages_;
    s.prefix_hit_pages = hit_pages_;
    s.evictions = p.evictions;
    s.cow_copies = cow_copies_;
    return s;
  }

  [[nodiscard]] const KVCacheConfig& config() const noexcept { return config_; }

 private:
  struct Sequence {
    std::vector<BlockId> table;
    std::size_t num_tokens = 0;
  };

  struct FreeDeleter {
    void operator()(Scalar* p) const noexcept { std::free(p); }
  };
  using Arena = std::unique_ptr<Scalar[], FreeDeleter>;

  static Arena allocate_arena(std::size_t elems) {
    // calloc: zeroed, and on Linux backed by untouched zero pages until written.
    auto* p = static_cast<Scalar*>(std::calloc(elems, sizeof(Scalar)));
    if (p == nullptr) throw std::bad_alloc();
    return Arena(p);
  }

  // A partial last page that another sequence also holds: append() must copy it first.
  [[nodiscard]] bool last_page_shared(const Sequence& s) const {
    return s.num_tokens % config_.page_size != 0 && blocks().refcount(s.table.back()) > 1;
  }

  [[nodiscard]] std::size_t pages_for(std::size_t tokens) const noexcept {
    return (tokens + config_.page_size - 1) / config_.page_size;
  }

  std::size_t entries_in(std::span<const Scalar> kv, const char* op) const {
    if (kv.size() % config_.entry_width != 0) {
      throw std::invalid_argument(fmt::format(
          "KVCache::{}: {} scalars are not a whole number of entries of width {}", op, kv.size(),
          config_.entry_width));
    }
    return kv.size() / config_.entry_width;
  }

  Sequence& find(SeqId seq, const char* op) {
    const auto it = sequences_.find(seq);
    if (it == sequences_.end()) {
      throw KeyError(fmt::format("KVCache::{}: no sequence {}", op, seq));
    }
    return it->second;
  }
  const Sequence& find(SeqId seq, const char* op) const {
    return const_cast<KVCache*>(this)->find(seq, op);
  }

  void check_page(BlockId p) const {
    if (p < 0 || static_cast<std::size_t>(p) >= config_.max_pages) {
      throw std::out_of_range(
          fmt::format("KVCache::page: page {} is out of range [0, {})", p, config_.max_pages));
    }
  }

  OutOfPages out_of_pages(const char* op, std::size_t needed) const {
    const auto p = pool_stats();
    return OutOfPages(fmt::format(
        "KVCache::{}: {} pages needed, {} free and {} cached (of {}); nothing was changed", op,
        needed, p.free_blocks, p.cached_blocks, config_.max_pages));
  }

  // The arena's figures; with tiers, read under the manager's lock (its reclaimer changes them).
  [[nodiscard]] BlockPoolStats pool_stats() const {
    return tiered_ ? tiered_->manager.pool_stats(Tier::kPrimary) : pool_.stats();
  }

  Scalar* page_data(BlockId p) noexcept { return detail::page_start(arena_.get(), p, page_elems_); }
  const Scalar* page_data(BlockId p) const noexcept {
    return detail::page_start(static_cast<const Scalar*>(arena_.get()), p, page_elems_);
  }

  // Writes entries for tokens [first_token, first_token + n) through the block table.
  void write(std::span<const BlockId> table, std::size_t first_token, std::span<const Scalar> kv) {
    std::size_t token = first_token;
    std::size_t done = 0;
    while (done < kv.size()) {
      const std::size_t offset = token % config_.page_size;
      const BlockId page = table[token / config_.page_size];
      LLMDS_ASSERT(blocks().refcount(page) == 1 && blocks().key_of(page) == nullptr,
                   "KVCache: writing into a shared or registered page");
      const std::size_t count =
          std::min((config_.page_size - offset) * config_.entry_width, kv.size() - done);
      std::memcpy(page_data(page) + offset * config_.entry_width, kv.data() + done,
                  count * sizeof(Scalar));
      done += count;
      token += count / config_.entry_width;
    }
  }


  // The arena as the primary tier of a KVBlockManager, with host and disk stores below it.
  struct Tiered {
    Tiered(const KVCacheConfig& c, Scalar* arena)
        : geometry(page_geometry(c)),
          primary(ContiguousLayout(geometry, c.max_pages, 1), reinterpret_cast<std::byte*>(arena)),
          host(c.tiers.host_pages > 0
                   ? std::make_unique<MemoryStore<ContiguousLayout>>(ContiguousLayout(geometry, c.tiers.host_pages, 4096))
                   : nullptr),
          disk(c.tiers.disk_pages > 0 ? std::make_unique<DiskStore>(disk_config(c, geometry)) : nullptr),
          manager(manager_config(c), TierStores{&primary, host.get(), disk.get(), c.tiers.remote}) {}

    static BlockGeometry page_geometry(const KVCacheConfig& c) {
      // A page is page_size rows of entry_width scalars, written token by token: as one layer
      // of one part, it is the logical block order.
      BlockGeometry g;
      g.tokens = static_cast<std::uint32_t>(c.page_size);
      g.layers = 1;
      g.parts = 1;
      g.row_bytes = static_cast<std::uint32_t>(c.entry_width * sizeof(Scalar));
      g.scalar = sizeof(Scalar) == 4 ? ScalarType::kFloat32 : ScalarType::kFloat16;
      if (c.page_size > UINT32_MAX || c.entry_width * sizeof(Scalar) > UINT32_MAX) {
        throw std::invalid_argument("KVCache: pages this large cannot have tiers below them");
      }
      return g;
    }
    static DiskStoreConfig disk_config(const KVCacheConfig& c, const BlockGeometry& g) {
      DiskStoreConfig d;
      d.directory = c.tiers.disk_directory;
      d.geometry = g;
      d.hash_bytes = sizeof(BlockHash);
      d.sync_writes = c.tiers.disk_sync_writes;
      return d;
    }
    static KVBlockManagerConfig manager_config(const KVCacheConfig& c) {
      KVBlockManagerConfig m;
      m.primary_blocks = c.max_pages;
      m.host_blocks = c.tiers.host_pages;
      m.disk_blocks = c.tiers.disk_pages;
      m.block_size = static_cast<std::uint32_t>(c.page_size);
      m.offload_policy = c.tiers.offload_policy;
      m.disk_min_uses = c.tiers.disk_min_uses;
      m.offload_queue_blocks = c.tiers.offload_queue_blocks;
      m.reclaim_free_blocks = c.tiers.reclaim_pages;
      return m;
    }

    BlockGeometry geometry;
    MemoryStore<ContiguousLayout> primary;
    std::unique_ptr<MemoryStore<ContiguousLayout>> host;
    std::unique_ptr<DiskStore> disk;
    TierManager manager;
  };

  // The arena's block registry: the KVCache's own pool, or the primary tier's.
  [[nodiscard]] const BlockPool<BlockHash, BlockHashHasher>& blocks() const {
    return tiered_ ? tiered_->manager.pool(Tier::kPrimary) : pool_;
  }

  void release_pages(std::span<const BlockId> pages) {
    if (tiered_) {
      tiered_->manager.release(pages);
    } else {
      pool_.release(pages);
    }
  }

  // The longest run of leading hashes in any tier, in the arena, with a reference each. If the
  // arena has no room for the pages found below it, only the leading arena hits are taken.
  // fetched_from: where the leading pages were found by the prefetch that brought them in.
  std::vector<BlockId> take_tiered_prefix(std::span<const BlockHash> hashes, std::span<const TokenId> tokens,
                                          PrefixSource* source, std::span<const Tier> fetched_from = {}) {
    TierManager& m = tiered_->manager;
    auto match = m.match(hashes);
    std::vector<Tier> tiers(match.tiers().begin(), match.tiers().end());
    std::vector<BlockId> pages;
    try {
      pages = m.onboard(match);
    } catch (const OutOfPages&) {
      m.cancel(match);
      const auto in_arena = static_cast<std::size_t>(
          std::find_if(tiers.begin(), tiers.end(), [](Tier t) { return t != Tier::kPrimary; }) - tiers.begin());
      auto leading = m.match(hashes.first(in_arena));
      pages = m.onboard(leading);
      tiers.assign(pages.size(), Tier::kPrimary);
    }
    for (std::size_t i = 0; i < std::min(fetched_from.size(), tiers.size()); ++i) tiers[i] = fetched_from[i];
    if (source != nullptr) {
      for (std::size_t i = 0; i < pages.size(); ++i) {
        if (tiers[i] == Tier::kPrimary) ++source->primary_pages;
        if (tiers[i] == Tier::kHost) ++source->host_pages;
        if (tiers[i] == Tier::kDisk) ++source->disk_pages;
      }
    }
    // The rest of the run from the remote tier, if it has it (and the arena has room for it).
    const std::size_t have = pages.size();
    if (config_.tiers.remote != nullptr && have < hashes.size() && tiers.size() == have) {
      std::optional<BlockHash> parent;
      if (have > 0) parent = hashes[have - 1];
      const std::size_t page = config_.page_size;
      const auto rest_tokens = tokens.size() >= hashes.size() * page
                                   ? tokens.subspan(have * page, (hashes.size() - have) * page)
                                   : std::span<const TokenId>{};
      std::vector<BlockId> more;
      try {
        more = m.onboard_remote(hashes.subspan(have), parent, rest_tokens);
      } catch (const OutOfPages&) {
        // No room for them: the caller computes them.
      }
      pages.insert(pages.end(), more.begin(), more.end());
      if (source != nullptr) source->remote_pages += more.size();
    }
    return pages;
  }

  // Registers the unregistered pages among table[0, hashes.size()), run by run; returns how
  // many became registered under their own hash.
  std::size_t register_tiered(std::span<const BlockId> table, std::span<const BlockHash> hashes,
                              std::span<const TokenId> tokens, std::size_t first) {
    TierManager& m = tiered_->manager;
    const auto& pool = m.pool(Tier::kPrimary);
    std::size_t added = 0;
    std::size_t i = first;
    while (i < hashes.size()) {
      if (pool.key_of(table[i]) != nullptr) {
        ++i;
        continue;
      }
      std::size_t end = i + 1;
      while (end < hashes.size() && pool.key_of(table[end]) == nullptr) ++end;
      std::optional<BlockHash> parent;
      if (i > 0) parent = hashes[i - 1];
      const auto run = table.subspan(i, end - i);
      const auto got = m.register_blocks(run, hashes.subspan(i, end - i), parent,
                                         tokens.subspan(i * config_.page_size, (end - i) * config_.page_size));
      for (std::size_t j = 0; j < run.size(); ++j) added += got[j] == run[j] ? 1 : 0;
      i = end;
    }
    return added;
  }

  // attach() with tiers: the prefix from any tier, the rest written to new arena pages.
  void attach_tiered(SeqId seq, Sequence s, std::size_t n, std::span<const Scalar> kv,
                     std::span<const BlockHash> hashes, std::span<const TokenId> prefix_tokens) {
    TierManager& m = tiered_->manager;
    auto [it, inserted] = sequences_.try_emplace(seq);  // before any change: it may throw
    try {
      s.table = take_tiered_prefix(hashes, prefix_tokens, nullptr);
      const std::size_t hits = s.table.size();
      const std::size_t needed = pages_for(n) - hits;
      std::vector<BlockId> fresh;
      if (needed <= m.primary_available()) {
        try {
          fresh = m.allocate(needed);
        } catch (const OutOfPages&) {  // a page counted available was matched meanwhile
        }
      }
      if (fresh.size() != needed) {
        std::vector<BlockId> back(s.table.rbegin(), s.table.rend());
        m.release(back);
        throw out_of_pages("attach", needed);
      }
      s.table.insert(s.table.end(), fresh.begin(), fresh.end());
      s.num_tokens = n;
      write(s.table, hits * config_.page_size, kv.subspan(hits * page_elems_));
      lookup_pages_ += hashes.size();
      hit_pages_ += hits;
      it->second = std::move(s);
    } catch (...) {
      sequences_.erase(it);
      throw;
    }
    register_tiered(it->second.table, hashes, prefix_tokens, 0);
  }

  KVCacheConfig config_;
  std::size_t page_elems_;
  Arena arena_;
  BlockPool<BlockHash, BlockHashHasher> pool_;  // without tiers; with them, the manager's is used
  std::unique_ptr<Tiered> tiered_;
  BlockHasher hasher_;
  std::unordered_map<SeqId, Sequence> sequences_;
  std::uint64_t lookup_pages_ = 0;
  std::uint64_t hit_pages_ = 0;
  std::uint64_t cow_copies_ = 0;
};

}  // namespace llmds
