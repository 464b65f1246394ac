// HNSW's file format: to_bytes / from_bytes (and so save / load) of ann/hnsw.hpp, which includes
// this file at its end; include that, not this.
//
// A saved index is a detail/binary_io.hpp file ("LLMDSHNS", format version 1) whose payload is
//     dim, M, ef_construction, ef_search (u64 each), ml (f64 bits), seed flag (u8), seed (u64),
//     metric (u8), n (u64), top level (i32), entry slot (u32),
//     the vectors (n x dim float32) and the layer-0 link records (n x (2M + 1) u32),
//     then per slot: level (i32), id (i64), deleted flag (u8), its upper link records,
// each array preceded by its length in bytes (u64).
// The two arrays are written as the index holds them, so saving and loading are copies. Loading
// trusts nothing: a file is a complete, uncorrupted index that add() could have built, or it is
// refused, before any allocation sized by a header field the bytes cannot back.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "llmds/detail/binary_io.hpp"
#include "llmds/detail/checked_size.hpp"

namespace llmds {

namespace ann::detail {

// The bytes of an array, as the host holds them.
template <class T>
std::string_view raw_bytes(std::span<const T> s) {
  return {reinterpret_cast<const char*>(s.data()), s.size_bytes()};
}

}  // namespace ann::detail

inline std::string HNSW::to_bytes() const {
  detail::BinaryWriter w(kMagic, kFormatVersion);
  w.put<std::uint64_t>(config_.dim);
  w.put<std::uint64_t>(config_.M);
  w.put<std::uint64_t>(config_.ef_construction);
  w.put<std::uint64_t>(config_.ef_search);
  w.put<std::uint64_t>(std::bit_cast<std::uint64_t>(config_.ml));
  w.put<std::uint8_t>(config_.seed.has_value());
  w.put<std::uint64_t>(config_.seed.value_or(0));
  w.put<std::uint8_t>(static_cast<std::uint8_t>(config_.metric));
  w.put<std::uint64_t>(size_);
  w.put<std::int32_t>(max_level_);
  w.put<std::uint32_t>(entry_);
  w.put_bytes(ann::detail::raw_bytes(std::span(vectors_).first(size_ * config_.dim)));
  w.put_bytes(ann::detail::raw_bytes(std::span(links0_).first(size_ * (m0_ + 1))));
  for (std::uint32_t i = 0; i < size_; ++i) {
    w.put<std::int32_t>(levels_[i]);
    w.put<std::int64_t>(labels_[i]);
    w.put<std::uint8_t>(deleted_[i]);
    w.put_bytes(ann::detail::raw_bytes(std::span(upper_[i])));
  }
  return std::move(w).finish();
}

inline std::unique_ptr<HNSW> HNSW::from_bytes(std::string_view bytes) {
  detail::BinaryReader r(bytes, kMagic, kFormatVersion, "HNSW index");
  HNSWConfig c;
  c.dim = r.get<std::uint64_t>();
  c.M = r.get<std::uint64_t>();
  c.ef_construction = r.get<std::uint64_t>();
  c.ef_search = r.get<std::uint64_t>();
  c.ml = std::bit_cast<double>(r.get<std::uint64_t>());
  const bool has_seed = r.get_flag();
  const auto seed = r.get<std::uint64_t>();
  if (has_seed) c.seed = seed;
  if (!has_seed && seed != 0) r.fail("saved {} has a seed value without its seed flag");
  const auto metric = r.get<std::uint8_t>();
  if (metric > 2) r.fail("saved {} has an unknown metric");
  c.metric = static_cast<Metric>(metric);
  const auto n = r.get<std::uint64_t>();
  try {
    c.validate();
  } catch (const std::invalid_argument&) {
    r.fail("saved {} has invalid parameters");
  }
  // Slots are 32-bit and kNone (2^32 - 1) means "no slot": slots 0 .. 2^32 - 2 at most.
  if (n > kNone) r.fail("saved {} holds too many vectors");
  const auto max_level = r.get<std::int32_t>();
  const auto entry = r.get<std::uint32_t>();

  // The two big sections are sized from the header and compared with the bytes that hold them
  // before the index (which allocates room for n vectors) exists: a header alone cannot make
  // the loader ask for more memory than the file's own size.
  const std::string_view vectors = r.get_bytes();
  const std::string_view links0 = r.get_bytes();
  const std::size_t m0 = 2 * c.M;
  try {
    const std::size_t floats = detail::checked_mul(n, c.dim, "HNSW vectors");
    const std::size_t words = detail::checked_mul(n, m0 + 1, "HNSW links");
    if (vectors.size() != detail::checked_mul(floats, sizeof(float), "HNSW vectors") ||
        links0.size() != detail::checked_mul(words, sizeof(std::uint32_t), "HNSW links")) {
      r.fail("saved {} has a section of the wrong size");
    }
  } catch (const std::invalid_argument&) {
    r.fail("saved {} has a section of the wrong size");
  }
  // Level, id, deletion flag and the length of the upper links: 21 bytes per node at least.
  if (n > r.remaining() / 21) r.fail("saved {} is truncated");
  // An index always has room for one vector, and every search leases a query buffer of dim
  // floats; with no vector stored, nothing in the file vouches for dim, so it is bounded.
  if (n == 0 && c.dim > kMaxLoadedDimWithoutVectors) r.fail("saved {} has no vectors and an implausible dimension");
  if (n == 0 ? (max_level != -1 || entry != kNone) : (max_level < 0 || entry >= n)) {
    r.fail("saved {} has a bad entry point");
  }
  check_loaded_vectors(r, c, vectors);

  c.initial_capacity = std::max<std::size_t>(static_cast<std::size_t>(n), 1);
  auto index = std::make_unique<HNSW>(c);
  HNSW& h = *index;
  h.max_level_ = max_level;
  h.entry_ = entry;
  if (!vectors.empty()) std::memcpy(h.vectors_.data(), vectors.data(), vectors.size());
  if (!links0.empty()) std::memcpy(h.links0_.data(), links0.data(), links0.size());
  h.size_ = static_cast<std::uint32_t>(n);
  for (std::uint32_t i = 0; i < n; ++i) {
    h.levels_[i] = r.get<std::int32_t>();
    h.labels_[i] = r.get<std::int64_t>();
    h.deleted_[i] = r.get_flag() ? 1 : 0;
    if (h.levels_[i] < 0 || h.levels_[i] > h.max_level_) r.fail("saved {} has a node above the top level");
    const auto upper = r.get_bytes();
    const std::size_t want = static_cast<std::size_t>(h.levels_[i]) * (c.M + 1) * sizeof(std::uint32_t);
    if (upper.size() != want) r.fail("saved {} has a malformed link list");
    h.upper_[i].resize(want / sizeof(std::uint32_t));
    if (want > 0) std::memcpy(h.upper_[i].data(), upper.data(), upper.size());
    if (!h.slot_of_.emplace(h.labels_[i], i).second) r.fail("saved {} repeats an id");
    if (h.deleted_[i]) {
      h.deleted_slots_.push_back(i);
      ++h.num_deleted_;
    }
  }
  r.expect_end();
  if (n > 0 && h.levels_[h.entry_] != h.max_level_) r.fail("saved {} has a bad entry point");
  h.check_loaded_links(r);
  return index;
}

// Every stored vector passed add()'s check_row: finite, and under "cosine" normalised to unit
// length. A NaN or infinity would make every distance to it NaN or infinite, and a zero or
// absurdly long "cosine" vector would give distances outside [0, 2] and be refused as a
// query by search. The window on the squared length is wide because normalising a vector
// whose squares are subnormal floats is not exact (each square rounds to a multiple of 2^-149,
// which at worst halves or doubles a sum of a few of them); no vector add() stores falls
// outside it, and a zero or overflowing one always does.
inline void HNSW::check_loaded_vectors(const detail::BinaryReader& r, const HNSWConfig& c, std::string_view vectors) {
  const std::size_t count = vectors.size() / sizeof(float);
  double squares = 0;
  for (std::size_t i = 0; i < count; ++i) {
    float x;
    std::memcpy(&x, vectors.data() + i * sizeof(float), sizeof(float));
    if (!std::isfinite(x)) r.fail("saved {} holds a vector with NaN or infinity");
    squares += double{x} * double{x};
    if (c.metric == Metric::cosine && (i + 1) % c.dim == 0) {
      if (!(squares >= 0.25 && squares <= 4.0)) r.fail("saved {} holds a \"cosine\" vector that is not of unit length");
      squares = 0;
    }
  }
}

// Every link names another node of the index that lives on the link's layer, at most once,
// and no list is longer than its layer allows: otherwise a search would read out of bounds,
// or step in place. Repeats are found with one mark per node, stamped with the list's number.
inline void HNSW::check_loaded_links(const detail::BinaryReader& r) const {
  std::vector<std::uint64_t> mark(size_, 0);
  std::uint64_t list = 0;
  for (Slot i = 0; i < size_; ++i) {
    for (int l = 0; l <= levels_[i]; ++l) {
      ++list;
      const std::uint32_t count = record(i, l)[0];
      if (count > max_links(l)) r.fail("saved {} has an overfull link list");
      for (const Slot j : links(i, l)) {
        if (j >= size_ || levels_[j] < l) r.fail("saved {} has a link to a missing node");
        if (j == i) r.fail("saved {} has a node linked to itself");
        if (mark[j] == list) r.fail("saved {} has a link list that names a node twice");
        mark[j] = list;
      }
    }
  }
}

}  // namespace llmds
