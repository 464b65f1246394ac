// BlockRegistry: a BlockPool's map from block hash to block, as a flat open-addressing table.
//
// A pool of n blocks never registers more than n keys (each key names one block), so the table
// is sized once, to a power of two at least twice n, and never grows: at most half full, no
// rehash, no allocation after construction. Entries are (key, block) pairs in one array, a
// block of -1 marking an empty slot; a lookup probes linearly from the key's home slot, which
// on a half-empty table is one or two cache lines. Deletion shifts later entries of the probe
// run back into the hole (backward-shift deletion), so there are no tombstones and lookups stay
// short however many keys come and go, as they do in a cache that evicts all day.
//
// Home slots come from the key's hash multiplied by 2^64 / phi (Fibonacci hashing) and cut to
// the table's width, so even identity hashes of sequential ids (std::hash of an integer) spread.
#pragma once

#include <bit>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "llmds/core/types.hpp"

namespace llmds::detail {

template <class Key, class Hash, class KeyEqual>
  requires std::default_initializable<Key> && std::copyable<Key>
class BlockRegistry {
 public:
  explicit BlockRegistry(std::size_t max_entries) {
    const std::size_t slots = std::bit_ceil(std::max<std::size_t>(8, 2 * max_entries));
    shift_ = 64 - static_cast<unsigned>(std::countr_zero(slots));
    mask_ = slots - 1;
    slots_.assign(slots, Slot{});
  }

  /// The block under key, or -1.
  [[nodiscard]] BlockId find(const Key& key) const noexcept {
    for (std::size_t i = home(key);; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.block < 0) return -1;
      if (KeyEqual{}(s.key, key)) return s.block;
    }
  }

  /// Registers key -> block unless key is there already. Returns the block now under key and
  /// whether it was inserted. Requires size() < max_entries when the key is new.
  std::pair<BlockId, bool> try_emplace(const Key& key, BlockId block) {
    for (std::size_t i = home(key);; i = (i + 1) & mask_) {
      Slot& s = slots_[i];
      if (s.block < 0) {
        s.key = key;
        s.block = block;
        ++size_;
        return {block, true};
      }
      if (KeyEqual{}(s.key, key)) return {s.block, false};
    }
  }

  /// Removes key; false if it was not there.
  bool erase(const Key& key) {
    std::size_t i = home(key);
    for (;; i = (i + 1) & mask_) {
      if (slots_[i].block < 0) return false;
      if (KeyEqual{}(slots_[i].key, key)) break;
    }
    // Backward shift: pull each later entry of the run into the hole if its home allows.
    for (std::size_t j = (i + 1) & mask_;; j = (j + 1) & mask_) {
      Slot& next = slots_[j];
      if (next.block < 0) break;
      const std::size_t h = home(next.key);
      if (((j - h) & mask_) >= ((j - i) & mask_)) {
        slots_[i] = std::move(next);
        i = j;
      }
    }
    slots_[i] = Slot{};
    --size_;
    return true;
  }

  [[nodiscard]] std::size_t size() const noexcept { return size_; }

  /// visit(key, block) for every entry, in no particular order.
  template <class Visit>
  void for_each(Visit&& visit) const {
    for (const Slot& s : slots_) {
      if (s.block >= 0) visit(s.key, s.block);
    }
  }

  /// Replaces every entry's block b with map(b) (the blocks moved; the keys did not).
  template <class Map>
  void remap_blocks(Map&& map) {
    for (Slot& s : slots_) {
      if (s.block >= 0) s.block = map(s.block);
    }
  }

 private:
  struct Slot {
    Key key{};
    BlockId block = -1;
  };

  [[nodiscard]] std::size_t home(const Key& key) const noexcept {
    const auto h = static_cast<std::uint64_t>(Hash{}(key));
    return static_cast<std::size_t>((h * 0x9E3779B97F4A7C15ULL) >> shift_);
  }

  std::vector<Slot> slots_;
  std::size_t mask_ = 0;
  unsigned shift_ = 0;
  std::size_t size_ = 0;
};

}  // namespace llmds::detail
