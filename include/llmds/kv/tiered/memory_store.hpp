// Memory stores: the bytes behind a memory tier's slots (primary, host).
//
// A KVBlockManager decides which block goes where; a store holds the bytes. A memory store is
// an arena of num_slots blocks under a BlockLayout (kv/tiered/block_layout.hpp): either memory
// it owns (a host tier: one aligned allocation, optionally locked in RAM) or memory it is lent
// (the engine's KV arena, which the engine keeps writing to). Moving a block between two memory
// stores copies its pieces directly (copy_blocks); anything else reads it out into, or writes it
// in from, the block's logical byte order (read_block / write_block).
//
// A GPU backend. The manager only ever calls the virtual members below, so a device tier is a
// MemoryBlockStore whose host_base() is null and whose read_block / write_block copy between
// device memory and a pinned host staging buffer (cudaMemcpyAsync on a stream of the store's
// own, waited on before returning): copy_blocks then goes through a host staging buffer, and
// the manager is unchanged. Not built here: the machines this is developed on have no GPU.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <stdexcept>
#include <vector>

#include <fmt/format.h>

#include "llmds/kv/tiered/block_layout.hpp"

namespace llmds {

class MemoryBlockStore {
 public:
  virtual ~MemoryBlockStore() = default;
  [[nodiscard]] virtual const BlockGeometry& geometry() const noexcept = 0;
  [[nodiscard]] virtual std::size_t num_slots() const noexcept = 0;
  [[nodiscard]] virtual LayoutKind layout_kind() const noexcept = 0;
  /// The storage's first byte if the CPU can address it, else nullptr (device memory).
  [[nodiscard]] virtual std::byte* host_base() const noexcept = 0;
  /// For host-addressable stores: the slot's pieces, in logical order, appended to `out`.
  virtual void list_pieces(std::size_t slot, std::vector<BlockPiece>& out) const = 0;
  /// For host-addressable stores: copies block src_slot of `src` (host-addressable, of the same
  /// geometry) into the slot. Called by copy_blocks, which checks both.
  virtual void copy_from(const MemoryBlockStore& src, std::size_t src_slot, std::size_t slot) = 0;
  /// The slot's block, in logical order, into out (block_bytes).
  virtual void read_block(std::size_t slot, std::byte* out) const = 0;
  /// The slot's block from `in` (logical order, block_bytes).
  virtual void write_block(std::size_t slot, const std::byte* in) = 0;
};

/// An aligned allocation, released on destruction.
class AlignedArena {
 public:
  AlignedArena() = default;
  AlignedArena(std::size_t bytes, std::size_t alignment) : bytes_(bytes) {
    if (bytes == 0) return;
    const std::size_t rounded = (bytes + alignment - 1) / alignment * alignment;
    void* p = std::aligned_alloc(alignment, rounded);
    if (p == nullptr) throw std::bad_alloc();
    data_.reset(static_cast<std::byte*>(p));
  }
  [[nodiscard]] std::byte* data() const noexcept { return data_.get(); }
  [[nodiscard]] std::size_t size() const noexcept { return bytes_; }

 private:
  struct Free {
    void operator()(std::byte* p) const noexcept { std::free(p); }
  };
  std::unique_ptr<std::byte, Free> data_;
  std::size_t bytes_ = 0;
};

template <BlockLayout Layout>
class MemoryStore final : public MemoryBlockStore {
 public:
  /// A store that owns its memory: layout.storage_bytes() bytes aligned to 4096.
  explicit MemoryStore(const Layout& layout) : layout_(layout), arena_(layout.storage_bytes(), 4096) {
    base_ = arena_.data();
  }
  /// A store over memory the caller owns and keeps alive (at least layout.storage_bytes() bytes).
  MemoryStore(const Layout& layout, std::byte* memory) : layout_(layout), base_(memory) {
    if (memory == nullptr && layout.storage_bytes() > 0) {
      throw std::invalid_argument("MemoryStore: null memory for a non-empty layout");
    }
  }

  [[nodiscard]] const Layout& layout() const noexcept { return layout_; }
  [[nodiscard]] const BlockGeometry& geometry() const noexcept override { return layout_.geometry(); }
  [[nodiscard]] std::size_t num_slots() const noexcept override { return layout_.num_slots(); }
  [[nodiscard]] LayoutKind layout_kind() const noexcept override { return layout_.kind(); }
  [[nodiscard]] std::byte* host_base() const noexcept override { return base_; }
  void list_pieces(std::size_t slot, std::vector<BlockPiece>& out) const override {
    layout_.for_each_piece(slot, [&](std::size_t l, std::size_t s, std::size_t n) { out.push_back({l, s, n}); });
  }
  // One virtual call per block, whatever the layouts: from a store of this same type, the typed
  // copy_block (one memcpy between contiguous layouts); from any other, its pieces listed once
  // and this layout's walked inline.
  void copy_from(const MemoryBlockStore& src, std::size_t src_slot, std::size_t slot) override {
    if (const auto* same = dynamic_cast<const MemoryStore*>(&src)) {
      copy_block(same->layout_, same->base_, src_slot, layout_, base_, slot);
      return;
    }
    thread_local std::vector<BlockPiece> pieces;  // reused: a copy allocates nothing in steady state
    pieces.clear();
    src.list_pieces(src_slot, pieces);
    detail::copy_from_pieces(src.host_base(), pieces, base_,
                             [&](auto&& visit) { layout_.for_each_piece(slot, visit); });
  }
  void read_block(std::size_t slot, std::byte* out) const override { gather_block(layout_, base_, slot, out); }
  void write_block(std::size_t slot, const std::byte* in) override { scatter_block(layout_, base_, slot, in); }

 private:
  Layout layout_;
  AlignedArena arena_;
  std::byte* base_ = nullptr;
};

/// Copies a block between two memory stores of one geometry: directly when the CPU can address
/// both (MemoryBlockStore::copy_from), else through `staging` (block_bytes).
inline void copy_blocks(const MemoryBlockStore& src, std::size_t src_slot, MemoryBlockStore& dst, std::size_t dst_slot,
                        std::vector<std::byte>& staging) {
  if (src.host_base() == nullptr || dst.host_base() == nullptr) {
    staging.resize(src.geometry().block_bytes());
    src.read_block(src_slot, staging.data());
    dst.write_block(dst_slot, staging.data());
    return;
  }
  dst.copy_from(src, src_slot, dst_slot);
}

}  // namespace llmds
