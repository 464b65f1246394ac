// Block layouts: where the bytes of one KV block lie in a tier's storage.
//
// A KV block holds, for each of its tokens, each layer's key and value rows. Its *logical*
// order is the one llmds's engine writes (KVCache: one row of every layer's K and V per token):
//
//   token 0: layer 0 K, layer 0 V, layer 1 K, ..., token 1: ...
//
// each (token, layer, part) row being row_bytes long. A *layout* says where each piece of that
// logical block lies in storage, for each slot of the tier. Two layouts are built in:
//
//   ContiguousLayout      a block is one region, slots one after another (the engine's arena,
//                         a host arena, a file): a block moves with one memcpy.
//   LayerSeparateLayout   one array per layer, a block's region in it holding the layer's K
//                         rows then its V rows: what paged-attention kernels of GPU engines
//                         read (vLLM's per-layer [2, blocks, block_size, heads, head_dim]).
//
// A layout lists a slot's pieces as (logical offset, storage offset, bytes) in increasing
// logical order (for_each_piece); copy_block walks the pieces of two layouts side by side, so
// a block moves between any two layouts of one geometry, and a custom layout is any type that
// satisfies the BlockLayout concept. Blocks of two contiguous layouts move with one memcpy.
#pragma once

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <limits>
#include <stdexcept>
#include <string_view>
#include <vector>

#include <fmt/format.h>

namespace llmds {

/// The scalar type of a block's rows, recorded in block files so that a reader can refuse a
/// block of the wrong type.
enum class ScalarType : std::uint8_t { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2, kInt8 = 3, kOther = 255 };

/// The shape of one KV block, the same in every tier and layout.
struct BlockGeometry {
  std::uint32_t tokens = 0;     // tokens per block
  std::uint32_t layers = 0;
  std::uint32_t parts = 2;      // rows per token and layer: 2 (K and V), 1 for a joint latent (MLA)
  std::uint32_t row_bytes = 0;  // bytes of one row (kv heads x head dim x scalar size)
  ScalarType scalar = ScalarType::kFloat32;

  [[nodiscard]] std::size_t block_bytes() const noexcept {
    return std::size_t{tokens} * layers * parts * row_bytes;
  }
  /// Bytes of one token: every layer's rows.
  [[nodiscard]] std::size_t token_bytes() const noexcept { return std::size_t{layers} * parts * row_bytes; }

  void validate() const {
    if (tokens == 0 || layers == 0 || parts == 0 || row_bytes == 0) {
      throw std::invalid_argument(fmt::format(
          "BlockGeometry: tokens, layers, parts and row_bytes must be at least 1, got {}, {}, {}, {}", tokens,
          layers, parts, row_bytes));
    }
    // The product must fit, with room for the slot arithmetic of a few billion slots.
    const double bytes = double(tokens) * layers * parts * row_bytes;
    if (bytes > double(std::numeric_limits<std::uint32_t>::max()) * 16) {
      throw std::invalid_argument(fmt::format("BlockGeometry: a block of {} bytes is too large", bytes));
    }
  }
  friend bool operator==(const BlockGeometry&, const BlockGeometry&) = default;
};

/// How a layout is recorded in block files: a custom layout reports kCustom.
enum class LayoutKind : std::uint8_t { kContiguous = 0, kLayerSeparate = 1, kCustom = 255 };

template <class L>
concept BlockLayout = requires(const L& layout, std::size_t slot) {
  { layout.geometry() } -> std::same_as<const BlockGeometry&>;
  { layout.num_slots() } -> std::same_as<std::size_t>;
  { layout.storage_bytes() } -> std::same_as<std::size_t>;
  { layout.kind() } -> std::same_as<LayoutKind>;
  // visit(logical_offset, storage_offset, bytes) for each piece of the slot's block, in
  // increasing logical offset, covering [0, block_bytes) exactly.
  layout.for_each_piece(slot, [](std::size_t, std::size_t, std::size_t) {});
};

namespace detail {
inline std::size_t round_up(std::size_t n, std::size_t alignment) { return (n + alignment - 1) / alignment * alignment; }
inline void check_alignment(std::size_t alignment) {
  if (alignment == 0 || (alignment & (alignment - 1)) != 0) {
    throw std::invalid_argument(fmt::format("layout alignment must be a power of two, got {}", alignment));
  }
}
}  // namespace detail

/// Slot s's block is block_bytes at s x stride, the stride rounded up to `alignment` (4096
/// lets a disk tier read and write blocks of a host arena with direct I/O).
class ContiguousLayout {
 public:
  ContiguousLayout(const BlockGeometry& geometry, std::size_t num_slots, std::size_t alignment = 64)
      : geometry_(geometry), num_slots_(num_slots) {
    geometry_.validate();
    detail::check_alignment(alignment);
    stride_ = detail::round_up(geometry_.block_bytes(), alignment);
  }
  [[nodiscard]] const BlockGeometry& geometry() const noexcept { return geometry_; }
  [[nodiscard]] std::size_t num_slots() const noexcept { return num_slots_; }
  [[nodiscard]] std::size_t storage_bytes() const noexcept { return num_slots_ * stride_; }
  [[nodiscard]] LayoutKind kind() const noexcept { return LayoutKind::kContiguous; }
  [[nodiscard]] std::size_t block_offset(std::size_t slot) const noexcept { return slot * stride_; }
  [[nodiscard]] std::size_t stride() const noexcept { return stride_; }
  template <class Visit>
  void for_each_piece(std::size_t slot, Visit&& visit) const {
    visit(std::size_t{0}, block_offset(slot), geometry_.block_bytes());
  }

 private:
  BlockGeometry geometry_;
  std::size_t num_slots_;
  std::size_t stride_ = 0;
};

/// Layer l's array starts at l x layer_stride; in it, slot s's region is tokens x parts rows,
/// all K rows of the block's tokens, then all V rows.
class LayerSeparateLayout {
 public:
  LayerSeparateLayout(const BlockGeometry& geometry, std::size_t num_slots, std::size_t alignment = 64)
      : geometry_(geometry), num_slots_(num_slots) {
    geometry_.validate();
    detail::check_alignment(alignment);
    region_bytes_ = std::size_t{geometry_.tokens} * geometry_.parts * geometry_.row_bytes;
    layer_stride_ = detail::round_up(region_bytes_ * num_slots_, alignment);
  }
  [[nodiscard]] const BlockGeometry& geometry() const noexcept { return geometry_; }
  [[nodiscard]] std::size_t num_slots() const noexcept { return num_slots_; }
  [[nodiscard]] std::size_t storage_bytes() const noexcept { return layer_stride_ * geometry_.layers; }
  [[nodiscard]] LayoutKind kind() const noexcept { return LayoutKind::kLayerSeparate; }
  template <class Visit>
  void for_each_piece(std::size_t slot, Visit&& visit) const {
    const std::size_t row = geometry_.row_bytes;
    std::size_t logical = 0;
    for (std::size_t t = 0; t < geometry_.tokens; ++t) {
      for (std::size_t l = 0; l < geometry_.layers; ++l) {
        const std::size_t region = l * layer_stride_ + slot * region_bytes_;
        for (std::size_t p = 0; p < geometry_.parts; ++p) {
          visit(logical, region + (p * geometry_.tokens + t) * row, row);
          logical += row;
        }
      }
    }
  }

 private:
  BlockGeometry geometry_;
  std::size_t num_slots_;
  std::size_t region_bytes_ = 0;
  std::size_t layer_stride_ = 0;
};

static_assert(BlockLayout<ContiguousLayout>);
static_assert(BlockLayout<LayerSeparateLayout>);

/// One contiguous run of a block in some storage: `bytes` at logical offset `logical` of the
/// block, found at offset `storage` of the storage.
struct BlockPiece {
  std::size_t logical, storage, bytes;
};

namespace detail {

// Copies a block whose source pieces are listed (in logical order) into a storage whose pieces
// a for_each_piece-style function gives, in one pass over the destination's pieces.
template <class DstPieces>
void copy_from_pieces(const std::byte* from, std::span<const BlockPiece> pieces, std::byte* to,
                      DstPieces&& dst_pieces) {
  std::size_t i = 0;
  dst_pieces([&](std::size_t logical, std::size_t storage, std::size_t bytes) {
    while (bytes > 0) {
      while (pieces[i].logical + pieces[i].bytes <= logical) ++i;
      const std::size_t skip = logical - pieces[i].logical;
      const std::size_t n = std::min(bytes, pieces[i].bytes - skip);
      std::memcpy(to + storage, from + pieces[i].storage + skip, n);
      logical += n;
      storage += n;
      bytes -= n;
    }
  });
}

// The same, given each side's pieces as a for_each_piece-style function taking a visitor.
template <class SrcPieces, class DstPieces>
void copy_pieces(const std::byte* from, SrcPieces&& src_pieces, std::byte* to, DstPieces&& dst_pieces) {
  thread_local std::vector<BlockPiece> pieces;  // reused: a transfer allocates nothing in steady state
  pieces.clear();
  src_pieces([&](std::size_t l, std::size_t s, std::size_t n) { pieces.push_back({l, s, n}); });
  copy_from_pieces(from, pieces, to, dst_pieces);
}

}  // namespace detail

/// Copies slot src_slot's block of `src` (storage at src_base) to slot dst_slot of `dst`
/// (storage at dst_base). The geometries must be equal (checked once, by whoever pairs the two
/// tiers, not here: this is the inner loop of every transfer).
template <BlockLayout Src, BlockLayout Dst>
void copy_block(const Src& src, const std::byte* src_base, std::size_t src_slot, const Dst& dst, std::byte* dst_base,
                std::size_t dst_slot) {
  if constexpr (std::same_as<Src, ContiguousLayout> && std::same_as<Dst, ContiguousLayout>) {
    std::memcpy(dst_base + dst.block_offset(dst_slot), src_base + src.block_offset(src_slot),
                src.geometry().block_bytes());
  } else {
    detail::copy_pieces(
        src_base, [&](auto&& visit) { src.for_each_piece(src_slot, visit); }, dst_base,
        [&](auto&& visit) { dst.for_each_piece(dst_slot, visit); });
  }
}

/// The slot's block gathered into `out` (block_bytes, logical order), e.g. to write it to a file.
template <BlockLayout L>
void gather_block(const L& layout, const std::byte* base, std::size_t slot, std::byte* out) {
  layout.for_each_piece(slot, [&](std::size_t logical, std::size_t storage, std::size_t bytes) {
    std::memcpy(out + logical, base + storage, bytes);
  });
}

/// The inverse: a logical-order block from `in` scattered into the slot.
template <BlockLayout L>
void scatter_block(const L& layout, std::byte* base, std::size_t slot, const std::byte* in) {
  layout.for_each_piece(slot, [&](std::size_t logical, std::size_t storage, std::size_t bytes) {
    std::memcpy(base + storage, in + logical, bytes);
  });
}

}  // namespace llmds
