// RemoteBlockStore: what a remote tier, shared by many servers, must offer the block manager.
//
// Below disk, a deployment of several servers can share one store of KV blocks, so that a prefix
// one server computed is found by the others (the Mooncake paper's shared cache). The store is
// an existing engine reached over the network (Redis), so everything about it is slower and less
// certain than the tiers above: every call may fail, time out or find the server restarted, and
// none of that may reach the caller as an exception. This interface is what the manager needs
// from such a store; a Redis-backed implementation comes next.
//
// Contract, for every implementation:
//   - hashes are the blocks' chained hashes as bytes (they already cover the tenant's salt);
//   - lookup answers with one round trip how many leading hashes of a run the store holds,
//     stopping at the first miss (a prefix run is useful only up to its first hole);
//   - put and get move whole blocks in logical order (kv/tiered/block_layout.hpp), batched;
//     each block succeeds or fails on its own, and a failure is a result, counted by the store;
//   - a block read back is checked (checksum and hash) before it is reported as read: a value
//     that fails its check is a miss, and the store deletes it;
//   - the store bounds itself (Redis's maxmemory with an LRU policy): a put may be evicted later
//     without notice, so a lookup is a hint that a get may still miss.
#pragma once

#include <cstddef>
#include <span>
#include <vector>

#include "llmds/kv/tiered/block_layout.hpp"

namespace llmds {

/// One block to store: its hash and its bytes in logical order (geometry().block_bytes()).
struct RemoteBlock {
  std::span<const std::byte> hash;
  std::span<const std::byte> bytes;
};

class RemoteBlockStore {
 public:
  virtual ~RemoteBlockStore() = default;

  /// The block shape every value of this store has (checked against the manager's tiers).
  [[nodiscard]] virtual const BlockGeometry& geometry() const noexcept = 0;

  /// How many leading hashes of `hashes` the store holds, in one round trip; 0 if the store
  /// cannot be reached.
  virtual std::size_t lookup(std::span<const std::span<const std::byte>> hashes) = 0;

  /// Stores the blocks (pipelined); per block, whether it was stored.
  virtual std::vector<bool> put(std::span<const RemoteBlock> blocks) = 0;

  /// Reads the blocks of `hashes` into out[i] (block_bytes each, logical order), checked; per
  /// block, whether it was read intact.
  virtual std::vector<bool> get(std::span<const std::span<const std::byte>> hashes, std::span<std::byte* const> out) = 0;

  /// Deletes the blocks of `hashes`, if present.
  virtual void remove(std::span<const std::span<const std::byte>> hashes) = 0;
};

}  // namespace llmds
