// SHA-256 through OpenSSL, for identities that must never collide: KV block hashes above all.
//
// Prefix caching shares a page between two requests when their block hashes are equal, so a
// collision would hand one request another's keys and values. A 64-bit hash makes that a matter
// of luck at fleet scale; SHA-256 makes it a non-event. OpenSSL's implementation uses the CPU's
// SHA extensions where present (about 1-2 cycles per byte), which is what makes a cryptographic
// hash affordable per KV page.
//
// Sha256 wraps one reusable OpenSSL digest context, so hashing many blocks pays for the context
// once. The OpenSSL headers stay in src/core/sha256.cpp; this header needs none.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

namespace llmds {

using Sha256Digest = std::array<std::uint8_t, 32>;

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(Sha256&&) noexcept;
  Sha256& operator=(Sha256&&) noexcept;
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  /// Feeds bytes into the digest being computed.
  Sha256& update(std::span<const std::byte> bytes);

  /// The digest of everything fed since construction or the last finish(); starts a new one.
  Sha256Digest finish();

  /// One-shot digest of bytes.
  static Sha256Digest digest(std::span<const std::byte> bytes);

 private:
  struct Context;
  std::unique_ptr<Context> context_;
};

}  // namespace llmds
