// Versioned binary files: what every llmds index and sketch writes when it is saved.
//
// A file is   magic (8 bytes) | format version (u32) | payload ... | checksum (u64)
// with every integer little-endian whatever the host, and the checksum a seeded 64-bit hash of
// everything before it. A reader checks the magic, the version and the checksum before it trusts
// a single field, and every read is bounds-checked, so a truncated or corrupted file is a clear
// std::invalid_argument instead of garbage.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>

#include <fmt/format.h>

#include "llmds/core/errors.hpp"
#include "llmds/detail/file_io.hpp"
#include "llmds/detail/hash.hpp"

namespace llmds::detail {

inline constexpr std::uint64_t file_checksum_seed = 0x6c6c6d6473636b73ULL;  // "llmdscks"

class BinaryWriter {
 public:
  BinaryWriter(std::string_view magic, std::uint32_t version) {
    out_.append(magic);
    put(version);
  }

  template <class T>
    requires std::is_integral_v<T>
  void put(T value) {
    using U = std::make_unsigned_t<T>;
    auto u = static_cast<U>(value);
    for (std::size_t i = 0; i < sizeof(T); ++i) {
      out_.push_back(static_cast<char>(static_cast<unsigned char>(u >> (8 * i))));
    }
  }

  void put_bytes(std::string_view bytes) {
    put(static_cast<std::uint64_t>(bytes.size()));
    out_.append(bytes);
  }

  /// Bytes written so far.
  [[nodiscard]] std::size_t size() const noexcept { return out_.size(); }

  /// Appends the checksum and hands over the finished file.
  std::string finish() && {
    put(hash_bytes(out_, file_checksum_seed));
    return std::move(out_);
  }

 private:
  std::string out_;
};

class BinaryReader {
 public:
  /// Checks magic, version and checksum; `what` names the structure in error messages.
  BinaryReader(std::string_view data, std::string_view magic, std::uint32_t version,
               std::string_view what)
      : what_(what) {
    if (data.size() < magic.size() + sizeof(std::uint32_t) + sizeof(std::uint64_t) ||
        data.substr(0, magic.size()) != magic) {
      fail("not a saved {} (wrong magic or too short)");
    }
    const std::string_view body = data.substr(0, data.size() - sizeof(std::uint64_t));
    data_ = data;
    pos_ = body.size();
    if (get<std::uint64_t>() != hash_bytes(body, file_checksum_seed)) {
      fail("checksum mismatch: the saved {} is corrupted");
    }
    data_ = body;
    pos_ = magic.size();
    if (const auto v = get<std::uint32_t>(); v != version) {
      throw std::invalid_argument(fmt::format(
          "saved {} has format version {}, this build reads version {}", what_, v, version));
    }
  }

  template <class T>
    requires std::is_integral_v<T>
  T get() {
    need(sizeof(T));
    std::make_unsigned_t<T> u = 0;
    for (std::size_t i = 0; i < sizeof(T); ++i) {
      u |= static_cast<std::make_unsigned_t<T>>(static_cast<unsigned char>(data_[pos_ + i]))
           << (8 * i);
    }
    pos_ += sizeof(T);
    return static_cast<T>(u);
  }

  std::string_view get_bytes() {
    const auto n = get<std::uint64_t>();
    need(n);
    const std::string_view bytes = data_.substr(pos_, n);
    pos_ += n;
    return bytes;
  }

  /// Reads a u64 count of items that each take at least `min_item_bytes` of what is left to
  /// read, refusing the file as truncated when they cannot all be there. A count read this way
  /// can size an allocation: it is bounded by the file's own length, however it was crafted.
  std::uint64_t get_count(std::size_t min_item_bytes) {
    const auto n = get<std::uint64_t>();
    if (n > remaining() / min_item_bytes) fail("saved {} is truncated (a count exceeds the bytes left)");
    return n;
  }

  /// A 0/1 flag; any other byte is refused, so that a value has one spelling.
  bool get_flag() {
    const auto b = get<std::uint8_t>();
    if (b > 1) fail("saved {} has a flag byte that is neither 0 nor 1");
    return b == 1;
  }

  [[nodiscard]] std::size_t remaining() const noexcept { return data_.size() - pos_; }

  /// Throws unless every byte of the payload was read.
  void expect_end() const {
    if (pos_ != data_.size()) fail("saved {} has trailing bytes");
  }

  [[noreturn]] void fail(std::string_view message) const {
    throw std::invalid_argument(fmt::format(fmt::runtime(message), what_));
  }

 private:
  void need(std::uint64_t n) const {
    if (n > data_.size() - pos_) fail("saved {} is truncated");
  }

  std::string_view data_;
  std::size_t pos_ = 0;
  std::string_view what_;
};

}  // namespace llmds::detail
