#include "llmds/kv/tiered/block_layout.hpp"

#include <cstddef>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "llmds/kv/tiered/memory_store.hpp"

namespace {

using llmds::BlockGeometry;
using llmds::ContiguousLayout;
using llmds::LayerSeparateLayout;
using Bytes = std::vector<std::byte>;

// The logical block of slot s: byte i is a function of (s, i), so any misplaced byte shows.
std::byte expected_byte(std::size_t slot, std::size_t i) {
  return static_cast<std::byte>((slot * 131 + i * 7 + i / 251) & 0xFF);
}

Bytes logical_block(const BlockGeometry& g, std::size_t slot) {
  Bytes b(g.block_bytes());
  for (std::size_t i = 0; i < b.size(); ++i) b[i] = expected_byte(slot, i);
  return b;
}

// A layout of its own: slots in reverse order, each block cut into pieces of 5 bytes (the last
// one shorter), stored back to front within the block.
class ReversedPiecesLayout {
 public:
  ReversedPiecesLayout(const BlockGeometry& g, std::size_t slots) : g_(g), slots_(slots) {}
  const BlockGeometry& geometry() const noexcept { return g_; }
  std::size_t num_slots() const noexcept { return slots_; }
  std::size_t storage_bytes() const noexcept { return slots_ * g_.block_bytes(); }
  llmds::LayoutKind kind() const noexcept { return llmds::LayoutKind::kCustom; }
  template <class Visit>
  void for_each_piece(std::size_t slot, Visit&& visit) const {
    const std::size_t n = g_.block_bytes(), base = (slots_ - 1 - slot) * n;
    for (std::size_t at = 0; at < n; at += 5) {
      const std::size_t len = std::min<std::size_t>(5, n - at);
      visit(at, base + (n - at - len), len);
    }
  }

 private:
  BlockGeometry g_;
  std::size_t slots_;
};
static_assert(llmds::BlockLayout<ReversedPiecesLayout>);

template <class Layout>
void round_trip(const BlockGeometry& g, std::size_t slots) {
  const ContiguousLayout flat(g, slots, 4096);
  const Layout other(g, slots);
  Bytes a(flat.storage_bytes()), b(other.storage_bytes()), c(flat.storage_bytes());
  for (std::size_t s = 0; s < slots; ++s) llmds::scatter_block(flat, a.data(), s, logical_block(g, s).data());
  // Every block to a different slot of the other layout, and back to its own slot.
  for (std::size_t s = 0; s < slots; ++s) llmds::copy_block(flat, a.data(), s, other, b.data(), slots - 1 - s);
  for (std::size_t s = 0; s < slots; ++s) llmds::copy_block(other, b.data(), slots - 1 - s, flat, c.data(), s);
  for (std::size_t s = 0; s < slots; ++s) {
    Bytes out(g.block_bytes());
    llmds::gather_block(flat, c.data(), s, out.data());
    ASSERT_EQ(out, logical_block(g, s)) << "slot " << s;
    llmds::gather_block(other, b.data(), slots - 1 - s, out.data());
    ASSERT_EQ(out, logical_block(g, s)) << "slot " << s << " of the other layout";
  }
}

TEST(BlockLayout, BlocksSurviveARoundTripThroughEveryLayout) {
  std::mt19937 rng(5);
  for (int trial = 0; trial < 30; ++trial) {
    BlockGeometry g;
    g.tokens = 1 + rng() % 9;
    g.layers = 1 + rng() % 5;
    g.parts = 1 + rng() % 2;
    g.row_bytes = 1 + rng() % 40;
    const std::size_t slots = 1 + rng() % 6;
    round_trip<LayerSeparateLayout>(g, slots);
    round_trip<ReversedPiecesLayout>(g, slots);
    round_trip<ContiguousLayout>(g, slots);
  }
}

TEST(BlockLayout, LayerSeparateKeepsEachLayersKAndVRowsTogether) {
  const BlockGeometry g{2, 3, 2, 4, llmds::ScalarType::kFloat32};  // 2 tokens, 3 layers, K and V
  const LayerSeparateLayout layout(g, 5, 1);
  std::vector<std::size_t> storage;
  layout.for_each_piece(1, [&](std::size_t, std::size_t s, std::size_t n) {
    EXPECT_EQ(n, 4u);
    storage.push_back(s);
  });
  // Logical order: token 0 (L0 K, L0 V, L1 K, ...), token 1 (...). Layer l's array starts at
  // l x 5 slots x 16 bytes; slot 1's region at 16 in it: K rows of tokens 0, 1, then V rows.
  const std::vector<std::size_t> expected = {16, 24, 96, 104, 176, 184, 20, 28, 100, 108, 180, 188};
  EXPECT_EQ(storage, expected);
  EXPECT_EQ(layout.storage_bytes(), 3u * 80);
}

TEST(BlockLayout, ContiguousSlotsAreAlignedWhenAsked) {
  const BlockGeometry g{3, 1, 2, 10, llmds::ScalarType::kFloat16};  // 60 bytes
  const ContiguousLayout layout(g, 4, 4096);
  EXPECT_EQ(layout.stride(), 4096u);
  EXPECT_EQ(layout.block_offset(3), 3u * 4096);
  EXPECT_THROW(ContiguousLayout(g, 4, 100), std::invalid_argument);
  EXPECT_THROW(ContiguousLayout(BlockGeometry{0, 1, 2, 10}, 4), std::invalid_argument);
  EXPECT_THROW(LayerSeparateLayout(BlockGeometry{1, 1, 2, 0}, 4), std::invalid_argument);
}

// A store the CPU cannot address, as a device tier would be: only read_block / write_block.
class OpaqueStore final : public llmds::MemoryBlockStore {
 public:
  OpaqueStore(const BlockGeometry& g, std::size_t slots) : g_(g), slots_(slots), data_(slots * g.block_bytes()) {}
  const BlockGeometry& geometry() const noexcept override { return g_; }
  std::size_t num_slots() const noexcept override { return slots_; }
  llmds::LayoutKind layout_kind() const noexcept override { return llmds::LayoutKind::kCustom; }
  std::byte* host_base() const noexcept override { return nullptr; }
  void list_pieces(std::size_t, std::vector<llmds::BlockPiece>&) const override {
    ADD_FAILURE() << "pieces of an opaque store were asked for";
  }
  void copy_from(const llmds::MemoryBlockStore&, std::size_t, std::size_t) override {
    ADD_FAILURE() << "a direct copy into an opaque store was asked for";
  }
  void read_block(std::size_t slot, std::byte* out) const override {
    std::memcpy(out, data_.data() + slot * g_.block_bytes(), g_.block_bytes());
  }
  void write_block(std::size_t slot, const std::byte* in) override {
    std::memcpy(data_.data() + slot * g_.block_bytes(), in, g_.block_bytes());
  }

 private:
  BlockGeometry g_;
  std::size_t slots_;
  Bytes data_;
};

TEST(MemoryStore, CopiesBetweenStoresOfAnyLayoutAndThroughStaging) {
  const BlockGeometry g{4, 2, 2, 12, llmds::ScalarType::kFloat32};
  Bytes engine_arena(ContiguousLayout(g, 3).storage_bytes());
  llmds::MemoryStore<ContiguousLayout> primary(ContiguousLayout(g, 3), engine_arena.data());
  llmds::MemoryStore<LayerSeparateLayout> host(LayerSeparateLayout(g, 4));
  llmds::MemoryStore<ContiguousLayout> other(ContiguousLayout(g, 2, 4096));
  OpaqueStore device(g, 2);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(host.host_base()) % 4096, 0u);
  primary.write_block(2, logical_block(g, 9).data());
  std::vector<std::byte> staging;
  llmds::copy_blocks(primary, 2, host, 3, staging);
  llmds::copy_blocks(host, 3, device, 1, staging);
  llmds::copy_blocks(device, 1, other, 0, staging);
  llmds::copy_blocks(other, 0, primary, 0, staging);
  Bytes out(g.block_bytes());
  for (const llmds::MemoryBlockStore* s : std::initializer_list<const llmds::MemoryBlockStore*>{&host, &device, &other, &primary}) {
    s->read_block(s == &host ? 3 : s == &device ? 1 : 0, out.data());
    EXPECT_EQ(out, logical_block(g, 9));
  }
  // Every pairing of layouts, both ways: many pieces into one, one into many, same type into
  // same type, and a custom layout of 5-byte pieces (which straddle the others' rows).
  llmds::MemoryStore<ReversedPiecesLayout> custom(ReversedPiecesLayout(g, 3));
  llmds::MemoryStore<LayerSeparateLayout> host2(LayerSeparateLayout(g, 2));
  host.write_block(0, logical_block(g, 4).data());
  llmds::copy_blocks(host, 0, custom, 2, staging);
  llmds::copy_blocks(custom, 2, host2, 1, staging);
  llmds::copy_blocks(host2, 1, other, 1, staging);
  llmds::copy_blocks(other, 1, custom, 0, staging);
  llmds::copy_blocks(custom, 0, host, 1, staging);
  llmds::copy_blocks(host, 1, host2, 0, staging);
  const std::pair<const llmds::MemoryBlockStore*, std::size_t> copies[] = {
      {&custom, 2}, {&host2, 1}, {&other, 1}, {&custom, 0}, {&host, 1}, {&host2, 0}};
  for (const auto& [store, slot] : copies) {
    store->read_block(slot, out.data());
    EXPECT_EQ(out, logical_block(g, 4));
  }
  host.read_block(3, out.data());
  EXPECT_EQ(out, logical_block(g, 9));  // nothing else written
  EXPECT_THROW(llmds::MemoryStore<ContiguousLayout>(ContiguousLayout(g, 1), nullptr), std::invalid_argument);
}

}  // namespace
