// The working memory of one HNSW search or insert (ann/hnsw.hpp): the candidate type its heaps
// order, the Scratch space it works in besides the index, and the pool that lends Scratch spaces
// out, so that once the pool is warm a search allocates nothing.
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <new>
#include <utility>
#include <vector>

#include "llmds/detail/cache_line.hpp"

namespace llmds::ann::detail {

using llmds::detail::CacheAlignedVector;

/// A node's position in the index's arrays; 32 bits, so an index holds at most 2^32 - 1 nodes.
using Slot = std::uint32_t;

/// A node found by a search, with its distance to the query.
struct Candidate {
  float distance;
  Slot slot;
  // Ties are broken by slot, so every ordering (and so every build and search) is the same
  // whatever order the candidates arrived in.
  //
  // The comparison runs in one integer compare of (distance, slot) packed into 64 bits: the
  // heaps of a search and the sort of neighbour selection call it millions of times per build,
  // and the float compare-then-tie-break form costs two data-dependent branches that the CPU
  // mispredicts about as often as not. Mapping a float's bits to an unsigned integer that
  // orders the same way (negative numbers flipped whole, others with the sign bit set) keeps
  // the order exactly that of (distance, slot) for every distance the index produces: all are
  // finite and none is -0 (a sum of squares starts at +0, and 1 - x is never -0).
  static std::uint64_t order_key(float d, Slot s) noexcept {
    const auto bits = std::bit_cast<std::uint32_t>(d);
    const std::uint32_t flip = (bits >> 31) != 0 ? 0xFFFFFFFFu : 0x80000000u;
    return (std::uint64_t{bits ^ flip} << 32) | s;
  }
  bool operator<(const Candidate& o) const noexcept {
    return order_key(distance, slot) < order_key(o.distance, o.slot);
  }
  bool operator>(const Candidate& o) const noexcept { return o < *this; }
};

// Everything one search or insert works in besides the index: the visited set, both heaps,
// neighbour buffers and an aligned copy of the query. Pooled (ScratchPool), so once the pool
// is warm a search allocates nothing, where a priority_queue per layer, a copied link list
// per expanded node and a copied query would each cost a trip through malloc.
struct Scratch {
  // Visited set, epoch-tagged: slot s is visited when tags[s] == epoch, so starting a new set
  // is one increment, not a clear of `capacity` entries. 16-bit tags (as hnswlib) keep the
  // array at 2 bytes a slot, so it stays in L2 for indexes of a few hundred thousand vectors.
  std::vector<std::uint16_t> tags;
  std::uint16_t epoch = 0;
  std::vector<Candidate> top;       // max-heap of the best admitted nodes (after a search:
                                    // the results, nearest first)
  std::vector<Candidate> frontier;  // min-heap of found but not yet expanded nodes
  std::vector<Slot> fresh;          // the unvisited neighbours of the node being expanded
  std::vector<Slot> to_measure;     // those of them an insert has not measured yet
  std::vector<Slot> links;          // a link list copied under its node's lock (concurrent adds)
  std::vector<Candidate> pool;      // neighbour selection for the node being inserted ...
  std::vector<Slot> kept;
  std::vector<Candidate> relink_pool;  // ... and for a neighbour whose full list is re-selected
  std::vector<Slot> relink_kept;
  std::vector<Slot> check_order;    // select_neighbors' order of trying kept neighbours
  std::vector<Slot> plan;           // an insert's chosen neighbours, per layer (plan_links)
  std::vector<Slot> repairs;        // new link lists for a reused slot's neighbours (plan_repairs)
  std::vector<Slot> repair_neighbours;
  std::vector<Slot> repair_from;    // the candidates for them: the slot's one- and two-hop nodes
  std::vector<Candidate> repair_pool;
  std::vector<Slot> repair_kept;
  CacheAlignedVector<float> query;  // the query, 64-byte aligned (normalised under "cosine")

  // An insert's memo of the distances from its vector to the nodes it has measured, over all
  // the layers it searches: slot s's distance is known[s].distance when known[s].insert equals
  // insert_epoch. Every node of layer l + 1 is also on layer l, so the search on layer l meets
  // again many of the nodes the searches above it measured (with ml = 1/ln 2 half the new nodes
  // have a level >= 1; on Fashion-MNIST a quarter of all insert-time distances are repeats). A
  // lookup replaces a distance computation and, since known nodes are not prefetched, a 3 KB
  // read. The values are the kernel's own, so the graph is the same as without the memo.
  // Sized on a scratch's first insert: searches never pay for it.
  struct Known {
    float distance;
    std::uint32_t insert;
  };
  std::vector<Known> known;
  std::uint32_t insert_epoch = 0;

  void new_insert(std::size_t capacity) {
    if (known.size() < capacity) {
      known.assign(capacity, Known{0.0f, 0});
      insert_epoch = 0;
    }
    if (++insert_epoch == 0) {  // wrapped after 2^32 inserts
      std::fill(known.begin(), known.end(), Known{0.0f, 0});
      insert_epoch = 1;
    }
  }
  bool is_known(Slot s) const noexcept { return known[s].insert == insert_epoch; }
  void remember(Slot s, float d) noexcept { known[s] = {d, insert_epoch}; }

  void new_epoch() noexcept {
    if (++epoch == 0) {  // wrapped: tags from 65535 epochs ago would read as visited
      std::fill(tags.begin(), tags.end(), std::uint16_t{0});
      epoch = 1;
    }
  }
  bool visit(Slot s) noexcept {
    if (tags[s] == epoch) return false;
    tags[s] = epoch;
    return true;
  }
};

/// Lends out Scratch spaces. A lease takes a pooled Scratch (or makes one) and gives it back
/// when it ends; every Scratch it lends has a visited set covering the index's slots. Safe to
/// lease from several threads at once.
class ScratchPool {
 public:
  class Lease {
   public:
    Lease(ScratchPool& pool, std::unique_ptr<Scratch> scratch) noexcept
        : pool_(pool), scratch_(std::move(scratch)) {}
    ~Lease() { pool_.give_back(std::move(scratch_)); }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    Scratch& operator*() const noexcept { return *scratch_; }
    Scratch* operator->() const noexcept { return scratch_.get(); }

   private:
    ScratchPool& pool_;
    std::unique_ptr<Scratch> scratch_;
  };

  /// A Scratch whose visited set covers every slot: a pooled one if there is any, else make().
  template <class Make>
  [[nodiscard]] Lease lease(Make&& make) {
    std::unique_ptr<Scratch> scratch;
    std::size_t slots;
    {
      std::lock_guard g(lock_);
      slots = slots_;
      if (!pool_.empty()) {
        scratch = std::move(pool_.back());
        pool_.pop_back();
      }
    }
    if (!scratch) scratch = make();
    if (scratch->tags.size() < slots) {
      scratch->tags.assign(slots, 0);
      scratch->epoch = 0;
    }
    return Lease(*this, std::move(scratch));
  }

  /// The index now has `slots` slots: pooled Scratch spaces, whose visited sets are sized for
  /// fewer, are dropped. Not concurrent with a lease (the index grows only between calls).
  void set_slots(std::size_t slots) {
    std::lock_guard g(lock_);
    slots_ = slots;
    pool_.clear();
  }

 private:
  void give_back(std::unique_ptr<Scratch> scratch) noexcept {
    std::lock_guard g(lock_);
    if (scratch->tags.size() < slots_) return;
    try {
      pool_.push_back(std::move(scratch));
    } catch (const std::bad_alloc&) {  // out of memory: the scratch is freed instead of pooled
    }
  }

  std::mutex lock_;
  std::size_t slots_ = 0;
  std::vector<std::unique_ptr<Scratch>> pool_;
};

}  // namespace llmds::ann::detail
