// Chained block hashes: the identity of a KV page by everything that precedes it.
//
// The keys and values of token i depend on every token before it, so a page of KV entries can
// be reused only by a request whose tokens agree up to the end of that page. Hashing each full
// page together with its parent's hash captures exactly that:
//
//   h_0 = SHA-256(root || tokens of page 0 || extra keys of page 0)
//   h_i = SHA-256(h_{i-1} || tokens of page i || extra keys of page i)
//
// Two prefixes get the same h_i only if they agree on pages 0..i (and on their extra keys), so
// a lookup of h_0, h_1, ... finds the longest shareable run page by page. Extra keys carry what
// else determines the KV entries besides the tokens; here, a per-tenant cache salt folded into
// the first page, so that requests with different salts never share a page (and cannot probe
// each other's cache through timing).
//
// Encoding. Token ids are hashed as int32 little-endian, page_size of them per page (only full
// pages are hashed, so the length is implied). The salt follows as a 64-bit little-endian
// length and its bytes; an empty salt adds nothing, so no salt and "" are the same tenant. The
// root is SHA-256 of a fixed domain string, so hashes are stable across processes and machines
// (a fleet can route on them) and cannot collide with hashes of other llmds data.
//
// Cost: one SHA-256 pass over 4 * page_size + 32 bytes per page, about 2 ns per token with the
// CPU's SHA extensions (docs/benchmarks.md).
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <iterator>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "llmds/core/sha256.hpp"
#include "llmds/core/types.hpp"

namespace llmds {

/// The SHA-256 identity of one full page of tokens and everything before it.
struct BlockHash {
  Sha256Digest digest{};

  friend bool operator==(const BlockHash&, const BlockHash&) = default;

  /// Lower-case hex, 64 characters.
  [[nodiscard]] std::string hex() const {
    std::string out;
    out.reserve(64);
    for (const auto b : digest) fmt::format_to(std::back_inserter(out), "{:02x}", b);
    return out;
  }
};

/// For hash maps: the digest is already uniformly distributed, so its first 8 bytes are a
/// perfect 64-bit hash.
struct BlockHashHasher {
  std::size_t operator()(const BlockHash& h) const noexcept {
    std::uint64_t v;
    std::memcpy(&v, h.digest.data(), sizeof v);
    return static_cast<std::size_t>(v);
  }
};

namespace detail {

static_assert(std::endian::native == std::endian::little,
              "block hashes feed token ids to SHA-256 as little-endian bytes without swapping");

inline const BlockHash& block_hash_root() {
  static const BlockHash root = [] {
    constexpr std::string_view domain = "llmds.kv.block_hash.v1";
    return BlockHash{Sha256::digest(std::as_bytes(std::span(domain.data(), domain.size())))};
  }();
  return root;
}

}  // namespace detail

/// Hashes a sequence's full pages into a chain: one BlockHash per page_size tokens, the
/// trailing partial page left out. Reuses one SHA-256 context, so call it with a whole prefix
/// rather than page by page.
class BlockHasher {
 public:
  explicit BlockHasher(std::size_t page_size) : page_size_(page_size) {
    if (page_size == 0) throw std::invalid_argument("BlockHasher: page_size must be at least 1");
  }

  /// The hash of the page after `parent` (nullptr: the first page) holding `page_tokens`
  /// (exactly page_size ids), with `salt` folded in (pass it for the first page only).
  [[nodiscard]] BlockHash next(const BlockHash* parent, std::span<const TokenId> page_tokens,
                               std::span<const std::byte> salt = {}) {
    if (page_tokens.size() != page_size_) {
      throw std::invalid_argument(fmt::format("BlockHasher::next: a page holds {} tokens, got {}",
                                              page_size_, page_tokens.size()));
    }
    const BlockHash& p = parent != nullptr ? *parent : detail::block_hash_root();
    sha_.update(std::as_bytes(std::span(p.digest)));
    sha_.update(std::as_bytes(page_tokens));
    if (!salt.empty()) {
      const auto length = static_cast<std::uint64_t>(salt.size());
      sha_.update(std::as_bytes(std::span(&length, 1)));
      sha_.update(salt);
    }
    return BlockHash{sha_.finish()};
  }

  /// The chain over every full page of `tokens`: len(tokens) / page_size hashes.
  [[nodiscard]] std::vector<BlockHash> chain(std::span<const TokenId> tokens,
                                             std::span<const std::byte> salt = {}) {
    std::vector<BlockHash> hashes;
    const std::size_t pages = tokens.size() / page_size_;
    hashes.reserve(pages);
    for (std::size_t i = 0; i < pages; ++i) {
      hashes.push_back(next(i == 0 ? nullptr : &hashes.back(),
                            tokens.subspan(i * page_size_, page_size_),
                            i == 0 ? salt : std::span<const std::byte>{}));
    }
    return hashes;
  }

  [[nodiscard]] std::size_t page_size() const noexcept { return page_size_; }

 private:
  std::size_t page_size_;
  Sha256 sha_;
};

}  // namespace llmds

template <>
struct std::hash<llmds::BlockHash> : llmds::BlockHashHasher {};
