// The KV block manager's storage work (kv/tiered/kv_block_manager.hpp, which includes this at its
// end): moving bytes between tiers' stores, checking the stores against the configuration,
// adopting the disk blocks of a restarted store, the disk worker behind the write queue, and
// onboarding in the background (onboard_async, finish and the onboarding worker).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstring>
#include <memory>
#include <utility>
#include <mutex>
#include <span>
#include <stdexcept>
#include <vector>

#include <fmt/format.h>

#include "llmds/kv/tiered/kv_block_manager.hpp"

namespace llmds {

// store_in for an asynchronous disk tier: the block is copied into the queue; the worker
// writes it and enters it in the tier (commit_disk_write).
template <class Key, class Hash, class Policy>
  requires std::is_trivially_copyable_v<Key> && std::equality_comparable<Key> && EvictionPolicy<Policy>
void KVBlockManager<Key, Hash, Policy>::queue_disk_write(std::size_t t, const Key& key, const BlockMeta& meta,
                                                         std::size_t source, BlockId source_slot) {
  TierState& disk = *tiers_[t];
  if (queued_writes_.contains(key)) return;  // already on its way
  auto job = std::make_shared<QueuedWrite>();
  job->key = key;
  job->meta = meta;
  job->epoch = clear_epoch_;
  try {  // a store that throws fails the offload, counted; the caller's call goes on
    job->bytes.resize(block_bytes_);
    tiers_[source]->memory->read_block(static_cast<std::size_t>(source_slot), job->bytes.data());
  } catch (...) {
    ++disk.stats.failed_transfers;
    return;
  }
  auto pushed = writes_->push(job, meta.priority);
  if (pushed.dropped) {
    ++disk.stats.dropped_offloads;
    if (pushed.dropped->get() != job.get()) queued_writes_.erase(pushed.dropped->get()->key);
  }
  if (pushed.queued) {
    queued_writes_.emplace(key, std::move(job));
    work_.notify_one();
  }
}

// The disk worker: takes batches from the queue and the files to delete, deletes and writes
// without the lock, enters the written blocks.
template <class Key, class Hash, class Policy>
  requires std::is_trivially_copyable_v<Key> && std::equality_comparable<Key> && EvictionPolicy<Policy>
void KVBlockManager<Key, Hash, Policy>::write_to_disk() {
  const std::size_t t = index_of(Tier::kDisk);
  DiskStore& store = *tiers_[t]->disk;
  std::vector<StoredBlock> infos;  // reused from batch to batch
  std::vector<DiskStore::BlockWrite> writes;
  std::vector<char> ok;
  std::unique_lock lock(mu_);
  while (true) {
    work_.wait(lock, [&] { return stopping_ || !writes_->empty() || !removals_.empty(); });
    if (stopping_) break;
    auto batch = writes_->pop_batch(config_.offload_batch_blocks);
    const std::vector<Key> removals = std::exchange(removals_, {});
    writing_ = batch.size();
    busy_ = batch.size() + removals.size();
    lock.unlock();
    for (const Key& key : removals) store.remove(key_bytes(key));  // before the writes: see remove_file
    // One flush for the whole batch (DiskStore::write_batch); each block is charged its share.
    const auto start = std::chrono::steady_clock::now();
    try {
      infos.clear();
      for (const auto& w : batch) infos.push_back(stored_block_of(w->key, w->meta));
      writes.clear();
      for (std::size_t i = 0; i < batch.size(); ++i) writes.push_back({&infos[i], batch[i]->bytes.data()});
      store.write_batch(writes, ok);
    } catch (...) {  // out of memory: the batch fails like a failed write, and the worker lives on
      ok.assign(batch.size(), 0);
    }
    const double share = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count() /
                         static_cast<double>(std::max<std::size_t>(batch.size(), 1));
    lock.lock();
    for (std::size_t i = 0; i < batch.size(); ++i) {
      if (ok[i] != 0) tiers_[t]->copy_in.add(share);
      commit_disk_write(t, *batch[i], ok[i] != 0);
    }
    writing_ = 0;
    busy_ = 0;
    idle_.notify_all();
    lock.unlock();
    events_.publish();
    lock.lock();
  }
}

template <class Key, class Hash, class Policy>
  requires std::is_trivially_copyable_v<Key> && std::equality_comparable<Key> && EvictionPolicy<Policy>
void KVBlockManager<Key, Hash, Policy>::commit_disk_write(std::size_t t, const QueuedWrite& w, bool written) {
  TierState& disk = *tiers_[t];
  if (const auto it = queued_writes_.find(w.key); it != queued_writes_.end() && it->second.get() == &w) {
    queued_writes_.erase(it);
  }
  if (w.epoch != clear_epoch_) {  // cleared while it was being written
    if (written) disk.disk->remove(key_bytes(w.key));
    return;
  }
  if (!written) {
    ++disk.stats.failed_transfers;
    return;
  }
  if (const auto slot = disk.pool.find(w.key)) {  // written again over an older copy
    refresh(disk, *slot);
    return;
  }
  std::vector<BlockId>& slot = disk.slot;
  slot.clear();
  if (!allocate_in(t, 1, slot)) {  // every disk block pinned
    disk.disk->remove(key_bytes(w.key));
    ++disk.stats.dropped_offloads;
    return;
  }
  enter_cached(disk, slot[0], w.key, w.meta);
  count_move(*tiers_[t - 1], disk);
}

// Copies a block between two tiers' stores, and times it; true without stores (metadata
// only). False if a disk write or read failed, or a store threw.
template <class Key, class Hash, class Policy>
  requires std::is_trivially_copyable_v<Key> && std::equality_comparable<Key> && EvictionPolicy<Policy>
bool KVBlockManager<Key, Hash, Policy>::transfer(std::size_t from, BlockId from_slot, std::size_t to,
                                                 BlockId to_slot, const Key& key, const BlockMeta& meta) {
  TierState& src = *tiers_[from];
  TierState& dst = *tiers_[to];
  if (src.memory == nullptr && src.disk == nullptr) return true;  // metadata only
  const auto start = std::chrono::steady_clock::now();
  bool moved = false;
  try {  // a store that throws (a device error) fails the copy, leaving the manager as it was
    moved = copy_between(src, from_slot, dst, to_slot, key, meta, staging_);
  } catch (...) {
    moved = false;
  }
  if (moved) {
    const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count();
    dst.copy_in.add(us);
    src.copy_out.add(us);
  }
  return moved;
}

template <class Key, class Hash, class Policy>
  requires std::is_trivially_copyable_v<Key> && std::equality_comparable<Key> && EvictionPolicy<Policy>
bool KVBlockManager<Key, Hash, Policy>::copy_between(TierState& src, BlockId from_slot, TierState& dst,
                                                     BlockId to_slot, const Key& key, const BlockMeta& meta,
                                                     std::vector<std::byte>& staging) {
  const auto fs = static_cast<std::size_t>(from_slot), ts = static_cast<std::size_t>(to_slot);
  if (src.memory != nullptr && dst.memory != nullptr) {
    copy_blocks(*src.memory, fs, *dst.memory, ts, staging);
    return true;
  }
  if (src.memory != nullptr && dst.disk != nullptr) return dst.disk->write(stored_block_of(key, meta), *src.memory, fs);
  if (src.disk != nullptr && dst.memory != nullptr) {
    return src.disk->read(key_bytes(key), *dst.memory, ts) == DiskReadResult::kOk;
  }
  return true;  // metadata only
}

// onboard_async and finish (declared with their contracts in the class).
template <class Key, class Hash, class Policy>
  requires std::is_trivially_copyable_v<Key> && std::equality_comparable<Key> && EvictionPolicy<Policy>
typename KVBlockManager<Key, Hash, Policy>::Onboarding KVBlockManager<Key, Hash, Policy>::onboard_async(Match& match) {
  Onboarding o;
  {
    std::unique_lock lock(mu_);
    check_open(match, "onboard_async");
    TierState& primary = *tiers_[0];
    // Blocks to copy: neither in primary nor on their way there (which can change while an
    // allocation waits for the reclaimer).
    const auto to_copy = [&] {
      std::size_t n = 0;
      for (std::size_t i = 0; i < match.size(); ++i) {
        const Key& key = match.hashes_[i];
        if (match.tiers_[i] != Tier::kPrimary && !in_flight_.contains(key) && !primary.pool.find(key)) ++n;
      }
      return n;
    };
    std::size_t need = to_copy();
    std::vector<BlockId> fresh;
    while (!allocate_in(0, need, fresh) && !reclaiming_.empty()) {
      idle_.wait(lock, [&] { return reclaiming_.empty(); });
      need = to_copy();
    }
    if (fresh.size() != need) {
      throw OutOfPages(fmt::format("KVBlockManager::onboard_async: {} blocks to copy up, {} available in primary",
                                   need, primary.pool.available()));
    }
    if (need > 0 && !onboarder_.joinable()) onboarder_ = std::thread([this] { copy_up(); });
    o.blocks_.assign(match.size(), -1);
    o.copies_.resize(match.size());
    std::size_t next_fresh = 0;
    for (std::size_t i = 0; i < match.size(); ++i) {
      const Key& key = match.hashes_[i];
      if (match.tiers_[i] == Tier::kPrimary) {
        o.blocks_[i] = match.slots_[i];  // the match's pin is the caller's reference
        continue;
      }
      const auto& queued = match.queued_[i];
      const std::size_t from = queued ? index_of_queue_tier() : index_of(match.tiers_[i]);
      if (const auto existing = primary.pool.find(key)) {  // onboarded meanwhile: share it
        const BlockId one[] = {*existing};
        primary.pool.touch(one);
        o.blocks_[i] = *existing;
        if (!queued) unpin_lower(from, match.slots_[i], true);
      } else if (const auto it = in_flight_.find(key); it != in_flight_.end()) {
        ++it->second->holders;  // the copy under way holds its own pin
        o.copies_[i] = it->second;
        if (!queued) unpin_lower(from, match.slots_[i], false);
      } else {
        auto copy = std::make_shared<UpTransfer>();
        copy->key = key;
        copy->from = from;
        copy->source = match.slots_[i];
        copy->queued = queued;
        copy->target = fresh[next_fresh++];
        in_flight_.emplace(key, copy);
        up_queue_.push_back(copy);
        o.copies_[i] = std::move(copy);
      }
    }
    // A hash matched twice (not a chained run, but accepted) is copied once: its second block
    // goes back.
    primary.pool.release(std::span<const BlockId>(fresh).subspan(next_fresh));
    o.owner_ = instance_;
    o.id_ = next_match_id_++;
    close(match);
  }
  up_work_.notify_one();
  events_.publish();
  return o;
}

template <class Key, class Hash, class Policy>
  requires std::is_trivially_copyable_v<Key> && std::equality_comparable<Key> && EvictionPolicy<Policy>
std::vector<BlockId> KVBlockManager<Key, Hash, Policy>::finish(Onboarding& o) {
  std::vector<BlockId> out;
  std::unique_lock lock(mu_);
  if (o.id_ == 0 || o.owner_ != instance_) {
    throw std::invalid_argument("KVBlockManager::finish: the onboarding was already finished, or is not from this manager");
  }
  up_done_.wait(lock, [&] { return o.ready(); });
  for (const auto& copy : o.copies_) {
    if (copy && !copy->completed) complete_copy_up(*copy);
  }
  TierState& primary = *tiers_[0];
  bool failed = false;
  for (std::size_t i = 0; i < o.size(); ++i) {
    const auto& copy = o.copies_[i];
    const BlockId block = copy ? copy->result : o.blocks_[i];
    failed = failed || block < 0;
    if (!failed) {
      out.push_back(block);
    } else if (block >= 0) {  // after a failed copy: give back what this onboarding holds
      const BlockId one[] = {block};
      primary.pool.release(one);
    }
  }
  o.id_ = 0;
  wake_reclaimer();
  lock.unlock();
  events_.publish();
  return out;
}

// The onboarding worker. A copy's source is pinned and its target held, so neither changes
// while the lock is not held; only the disk store and the memory stores are touched outside it,
// and nothing but the copy's outcome inside it.
template <class Key, class Hash, class Policy>
  requires std::is_trivially_copyable_v<Key> && std::equality_comparable<Key> && EvictionPolicy<Policy>
void KVBlockManager<Key, Hash, Policy>::copy_up() {
  std::vector<std::byte> staging;  // this thread's, for stores the CPU cannot address
  std::unique_lock lock(mu_);
  while (true) {
    up_work_.wait(lock, [&] { return stopping_ || !up_queue_.empty(); });
    if (stopping_) break;
    const std::shared_ptr<UpTransfer> copy = std::move(up_queue_.front());
    up_queue_.pop_front();
    TierState& from = *tiers_[copy->from];
    TierState& primary = *tiers_[0];
    lock.unlock();
    const auto start = std::chrono::steady_clock::now();
    bool copied = true;
    try {  // a store that throws (a device error) fails the copy; the worker lives on
      if (copy->queued) {
        if (primary.memory != nullptr) {
          primary.memory->write_block(static_cast<std::size_t>(copy->target), copy->queued->bytes.data());
        }
      } else if (from.memory != nullptr || from.disk != nullptr) {
        // Into memory: the block's metadata is only written with a block file, so none is passed.
        copied = copy_between(from, copy->source, primary, copy->target, copy->key, BlockMeta{}, staging);
      }
    } catch (...) {
      copied = false;
    }
    const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count();
    lock.lock();
    copy->copied = copied;
    copy->us = us;
    copy->done.store(true, std::memory_order_release);
    up_done_.notify_all();
  }
}

template <class Key, class Hash, class Policy>
  requires std::is_trivially_copyable_v<Key> && std::equality_comparable<Key> && EvictionPolicy<Policy>
void KVBlockManager<Key, Hash, Policy>::complete_copy_up(UpTransfer& copy) {
  TierState& primary = *tiers_[0];
  TierState& from = *tiers_[copy.from];
  copy.completed = true;
  in_flight_.erase(copy.key);
  const BlockId target[] = {copy.target};
  if (!copy.copied) {
    ++from.stats.failed_transfers;
    primary.pool.release(target);
    if (!copy.queued) {
      const BlockId pin[] = {copy.source};
      from.pool.release(pin);
      drop_lower_copy(copy.from, copy.key);
    }
    return;
  }
  const auto existing = primary.pool.find(copy.key);
  const bool stored_meanwhile = existing.has_value();
  if (stored_meanwhile) {  // registered in primary by another path during the copy: share that
    copy.result = *existing;
    primary.pool.release(target);
  } else {
    copy.result = copy.target;
    const BlockMeta& meta = copy.queued ? copy.queued->meta : from.meta[static_cast<std::size_t>(copy.source)];
    register_copy(primary, copy.target, copy.key, meta);
    count_move(from, primary);
    ++from.stats.onboarded_blocks;
    if (primary.memory != nullptr) {
      primary.copy_in.add(copy.us);
      from.copy_out.add(copy.us);
    }
    if (events_on()) {
      emit(BlockStored<Key>{{copy.key}, meta.parent, meta.tokens, config_.block_size, primary.tier});
    }
  }
  // One reference per holder: the copy's own (the target's, or a new one on the shared block)
  // goes to the first.
  const BlockId result[] = {copy.result};
  for (std::size_t h = stored_meanwhile ? 0 : 1; h < copy.holders; ++h) primary.pool.touch(result);
  if (!copy.queued) unpin_lower(copy.from, copy.source, true);
}

template <class Key, class Hash, class Policy>
  requires std::is_trivially_copyable_v<Key> && std::equality_comparable<Key> && EvictionPolicy<Policy>
bool KVBlockManager<Key, Hash, Policy>::allocate_primary(std::unique_lock<std::mutex>& lock, std::size_t n,
                                                         std::vector<BlockId>& out) {
  while (!allocate_in(0, n, out)) {
    if (reclaiming_.empty()) return false;
    idle_.wait(lock, [&] { return reclaiming_.empty(); });
  }
  return true;
}

template <class Key, class Hash, class Policy>
  requires std::is_trivially_copyable_v<Key> && std::equality_comparable<Key> && EvictionPolicy<Policy>
std::size_t KVBlockManager<Key, Hash, Policy>::reclaimer_only_holds() const {
  const Pool& pool = tiers_[0]->pool;
  return static_cast<std::size_t>(std::ranges::count_if(reclaiming_, [&](BlockId b) { return pool.refcount(b) == 1; }));
}

template <class Key, class Hash, class Policy>
  requires std::is_trivially_copyable_v<Key> && std::equality_comparable<Key> && EvictionPolicy<Policy>
bool KVBlockManager<Key, Hash, Policy>::needs_reclaim() const noexcept {
  const Pool& pool = tiers_[0]->pool;
  const std::size_t keep = config_.reclaim_free_blocks;
  const std::size_t start = reclaim_started_ ? keep : (keep + 1) / 2;
  return keep > 0 && pool.free_blocks() < start && pool.cached_blocks() > 0;
}

// The reclaimer. Its blocks are held (in use: neither evicted nor written by anyone) and their
// host slots taken before the lock is let go, so only the memory stores are touched outside
// it. A block somebody took while it was copied (a match) stays in primary, and its host copy
// goes back; the others leave primary as an eviction would, their copies cached in host (a copy
// that failed is counted, and its block leaves all the same, without one).
template <class Key, class Hash, class Policy>
  requires std::is_trivially_copyable_v<Key> && std::equality_comparable<Key> && EvictionPolicy<Policy>
void KVBlockManager<Key, Hash, Policy>::reclaim() {
  struct Victim {
    BlockId slot;
    Key key;
    BlockId host_slot;  // -1: not offloaded (filtered out, already in host, or no room)
    bool copied = true;
    double us = 0;
  };
  std::vector<std::byte> staging;  // this thread's, for stores the CPU cannot address
  std::vector<Victim> victims;
  std::vector<Key> removed;
  TierState& primary = *tiers_[0];
  TierState& host = *tiers_[index_of(Tier::kHost)];
  std::unique_lock lock(mu_);
  while (true) {
    reclaim_work_.wait(lock, [&] { return stopping_ || needs_reclaim(); });
    if (stopping_) break;
    reclaim_started_ = true;
    const std::size_t want =
        std::min(config_.reclaim_free_blocks - primary.pool.free_blocks(), config_.offload_batch_blocks);
    primary.pool.take_next_evictions(want, reclaiming_);
    victims.clear();
    for (const BlockId b : reclaiming_) {
      const Key key = *primary.pool.key_of(b);
      const bool admitted = admits(host, key, primary.meta[static_cast<std::size_t>(b)]);
      victims.push_back(Victim{b, key, admitted ? offload_slot(1) : BlockId{-1}});
    }
    lock.unlock();
    for (Victim& v : victims) {
      if (v.host_slot < 0 || primary.memory == nullptr) continue;
      const auto start = std::chrono::steady_clock::now();
      try {
        v.copied = copy_between(primary, v.slot, host, v.host_slot, v.key, BlockMeta{}, staging);
      } catch (...) {  // a store that throws fails the copy; the reclaimer lives on
        v.copied = false;
      }
      v.us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count();
    }
    lock.lock();
    removed.clear();
    for (const Victim& v : victims) {
      const bool taken = primary.pool.refcount(v.slot) > 1;  // matched during the copy: it stays
      const BlockId mine[] = {v.slot};
      if (v.host_slot >= 0) {
        const BlockId copy[] = {v.host_slot};
        if (!v.copied) ++host.stats.failed_transfers;
        if (!v.copied || taken) {
          host.pool.release(copy);  // unregistered: back to free
        } else {
          enter_cached(host, v.host_slot, v.key, primary.meta[static_cast<std::size_t>(v.slot)]);
          count_move(primary, host);
          if (primary.memory != nullptr) {
            host.copy_in.add(v.us);
            primary.copy_out.add(v.us);
          }
        }
      }
      primary.pool.release(mine);
      // Evicted even if its copy failed, as an eviction on a caller's thread would be (the
      // failure counted above); keeping it would have the reclaimer retry it for ever.
      if (taken) continue;
      primary.pool.remove_cached(v.key);
      primary.meta[static_cast<std::size_t>(v.slot)] = BlockMeta{};
      ++primary.stats.evicted_blocks;
      ++primary.stats.reclaimed_blocks;
      removed.push_back(v.key);
    }
    reclaiming_.clear();
    if (primary.pool.free_blocks() >= config_.reclaim_free_blocks) reclaim_started_ = false;
    if (!removed.empty()) emit(BlockRemoved<Key>{removed, primary.tier});
    idle_.notify_all();
    lock.unlock();
    events_.publish();
    lock.lock();
  }
}

template <class Key, class Hash, class Policy>
  requires std::is_trivially_copyable_v<Key> && std::equality_comparable<Key> && EvictionPolicy<Policy>
void KVBlockManager<Key, Hash, Policy>::check_stores(const TierStores& stores) {
  if (stores.remote != nullptr) {
    if (stores.primary == nullptr) {
      throw std::invalid_argument("KVBlockManager: a remote store needs the other tiers' stores (blocks travel with their bytes)");
    }
    if (!(stores.remote->geometry() == stores.primary->geometry())) {
      throw std::invalid_argument("KVBlockManager: the remote store's block geometry differs from primary's");
    }
  }
  const bool any = stores.primary != nullptr || stores.host != nullptr || stores.disk != nullptr;
  if (!any) return;
  for (const auto& t : tiers_) {
    if (t->memory == nullptr && t->disk == nullptr) {
      throw std::invalid_argument(fmt::format(
          "KVBlockManager: the {} tier has no store; give every tier one, or none", tier_name(t->tier)));
    }
    const BlockGeometry& g = t->memory != nullptr ? t->memory->geometry() : t->disk->geometry();
    const BlockGeometry& primary = stores.primary->geometry();
    if (!(g == primary)) {
      throw std::invalid_argument(fmt::format("KVBlockManager: the {} store's block geometry differs from primary's",
                                              tier_name(t->tier)));
    }
    if (t->memory != nullptr && t->memory->num_slots() < t->pool.num_blocks()) {
      throw std::invalid_argument(fmt::format("KVBlockManager: the {} store has {} slots for {} blocks",
                                              tier_name(t->tier), t->memory->num_slots(), t->pool.num_blocks()));
    }
  }
  if (stores.host != nullptr && index_or_none(Tier::kHost) < 0) {
    throw std::invalid_argument("KVBlockManager: a host store but no host tier (host_blocks is 0)");
  }
  if (stores.disk != nullptr) {
    if (index_or_none(Tier::kDisk) < 0) {
      throw std::invalid_argument("KVBlockManager: a disk store but no disk tier (disk_blocks is 0)");
    }
    if (stores.disk->config().hash_bytes != sizeof(Key)) {
      throw std::invalid_argument(fmt::format("KVBlockManager: the disk store keeps {}-byte hashes, the keys have {}",
                                              stores.disk->config().hash_bytes, sizeof(Key)));
    }
  }
}

// The remote tier. Its store is called outside the lock only; a store that throws fails the
// call it was making (counted), as a failed copy does.
template <class Key, class Hash, class Policy>
  requires std::is_trivially_copyable_v<Key> && std::equality_comparable<Key> && EvictionPolicy<Policy>
void KVBlockManager<Key, Hash, Policy>::queue_remote_put(const Key& key, BlockId slot, std::vector<RemotePut>& now) {
  const bool queued = config_.remote_queue_blocks > 0;
  if (queued && remote_puts_.size() >= config_.remote_queue_blocks) {
    ++remote_stats_.dropped_offloads;  // the writer is behind: nobody waits for it
    return;
  }
  RemotePut put{key, std::vector<std::byte>(block_bytes_)};
  try {
    tiers_[0]->memory->read_block(static_cast<std::size_t>(slot), put.bytes.data());
  } catch (...) {
    ++remote_stats_.failed_transfers;
    return;
  }
  if (!queued) {
    now.push_back(std::move(put));
    return;
  }
  remote_puts_.push_back(std::move(put));
  remote_high_water_ = std::max(remote_high_water_, remote_puts_.size());
  remote_work_.notify_one();
}

template <class Key, class Hash, class Policy>
  requires std::is_trivially_copyable_v<Key> && std::equality_comparable<Key> && EvictionPolicy<Policy>
void KVBlockManager<Key, Hash, Policy>::put_remote(std::vector<RemotePut>& puts) {
  std::vector<RemoteBlock> blocks;
  blocks.reserve(puts.size());
  for (const auto& p : puts) blocks.push_back({key_bytes(p.key), p.bytes});
  std::vector<bool> stored;
  try {
    stored = remote_->put(blocks);
  } catch (...) {
    stored.clear();
  }
  stored.resize(puts.size(), false);
  const auto n = static_cast<std::uint64_t>(std::ranges::count(stored, true));
  const std::lock_guard lock(mu_);
  remote_stats_.stored_blocks += n;
  remote_stats_.bytes_in += n * block_bytes_;
  remote_stats_.failed_transfers += puts.size() - n;
}

template <class Key, class Hash, class Policy>
  requires std::is_trivially_copyable_v<Key> && std::equality_comparable<Key> && EvictionPolicy<Policy>
void KVBlockManager<Key, Hash, Policy>::write_to_remote() {
  std::vector<RemotePut> batch;
  std::unique_lock lock(mu_);
  for (;;) {
    remote_work_.wait(lock, [&] { return stopping_ || !remote_puts_.empty(); });
    if (stopping_) return;
    batch.clear();
    while (!remote_puts_.empty() && batch.size() < config_.offload_batch_blocks) {
      batch.push_back(std::move(remote_puts_.front()));
      remote_puts_.pop_front();
    }
    remote_busy_ = batch.size();
    lock.unlock();
    put_remote(batch);  // takes the lock to count
    lock.lock();
    remote_busy_ = 0;
    idle_.notify_all();
  }
}

template <class Key, class Hash, class Policy>
  requires std::is_trivially_copyable_v<Key> && std::equality_comparable<Key> && EvictionPolicy<Policy>
std::vector<BlockId> KVBlockManager<Key, Hash, Policy>::onboard_remote(std::span<const Key> hashes,
                                                                        std::optional<Key> parent,
                                                                        std::span<const TokenId> token_ids) {
  if (!token_ids.empty() && token_ids.size() != hashes.size() * config_.block_size) {
    throw std::invalid_argument(fmt::format("KVBlockManager::onboard_remote: {} token ids for {} blocks of {} tokens",
                                            token_ids.size(), hashes.size(), config_.block_size));
  }
  if (remote_ == nullptr || hashes.empty()) return {};
  std::vector<std::span<const std::byte>> names;
  names.reserve(hashes.size());
  for (const Key& k : hashes) names.push_back(key_bytes(k));
  std::size_t found = 0;
  bool failed = false;
  try {
    found = std::min(remote_->lookup(names), hashes.size());
  } catch (...) {
    failed = true;
  }
  std::vector<BlockId> fresh;
  {
    std::unique_lock lock(mu_);
    remote_stats_.lookups += hashes.size();
    remote_stats_.hit_blocks += found;
    remote_stats_.hit_tokens += found * config_.block_size;
    remote_stats_.failed_transfers += failed ? 1 : 0;
    if (found == 0) return {};
    if (!allocate_primary(lock, found, fresh)) {
      throw OutOfPages(fmt::format("KVBlockManager::onboard_remote: {} blocks to read, {} available in primary",
                                   found, tiers_[0]->pool.available()));
    }
  }
  // The new blocks are ours (in use, unregistered): read into them outside the lock.
  std::vector<std::byte> staging(found * block_bytes_);
  std::vector<std::byte*> rows;
  for (std::size_t i = 0; i < found; ++i) rows.push_back(staging.data() + i * block_bytes_);
  std::vector<bool> read;
  try {
    read = remote_->get(std::span(names).first(found), rows);
  } catch (...) {
    read.clear();
  }
  read.resize(found, false);
  std::size_t intact = 0;
  for (; intact < found && read[intact]; ++intact) {
    try {
      tiers_[0]->memory->write_block(static_cast<std::size_t>(fresh[intact]), rows[intact]);
    } catch (...) {
      break;
    }
  }
  std::vector<BlockId> out;
  {
    const std::lock_guard lock(mu_);
    TierState& primary = *tiers_[0];
    std::vector<std::size_t> stored;
    std::vector<BlockId> stored_blocks;
    for (std::size_t i = 0; i < intact; ++i) {
      const BlockId mine[] = {fresh[i]};
      if (const auto existing = primary.pool.find(hashes[i])) {
        // Registered meanwhile (computed or read by another request): share it.
        const BlockId one[] = {*existing};
        primary.pool.touch(one);
        primary.pool.release(mine);
        out.push_back(*existing);
        continue;
      }
      BlockMeta meta;
      meta.parent = i == 0 ? parent : std::optional<Key>(hashes[i - 1]);
      if (!token_ids.empty()) {
        const auto from = token_ids.begin() + static_cast<std::ptrdiff_t>(i * config_.block_size);
        meta.tokens.assign(from, from + config_.block_size);
      }
      register_copy(primary, fresh[i], hashes[i], std::move(meta));
      ++primary.stats.stored_blocks;
      ++remote_stats_.onboarded_blocks;
      remote_stats_.bytes_out += block_bytes_;
      record_use(hashes[i]);
      stored.push_back(i);
      stored_blocks.push_back(fresh[i]);
      out.push_back(fresh[i]);
    }
    if (intact < found) {  // the run ends at a block that did not arrive: the rest go back
      ++remote_stats_.failed_transfers;
      primary.pool.release(std::span<const BlockId>(fresh).subspan(intact));
      wake_reclaimer();
    }
    emit_stored_runs(primary, stored_blocks, hashes, stored);
  }
  events_.publish();
  return out;
}

// The disk store's blocks found at open become the disk tier's contents, oldest first (the
// oldest left out, and deleted, when they do not fit).
template <class Key, class Hash, class Policy>
  requires std::is_trivially_copyable_v<Key> && std::equality_comparable<Key> && EvictionPolicy<Policy>
void KVBlockManager<Key, Hash, Policy>::adopt_recovered_blocks(DiskStore& disk) {
  const auto& found = disk.recovered();
  emit(AllBlocksCleared{});
  TierState& tier = *tiers_[index_of(Tier::kDisk)];
  const std::size_t skip = found.size() > tier.pool.num_blocks() ? found.size() - tier.pool.num_blocks() : 0;
  for (std::size_t i = 0; i < found.size(); ++i) {
    const StoredBlock& b = found[i];
    if (i < skip) {
      disk.remove(b.hash);
      continue;
    }
    Key key;
    std::memcpy(&key, b.hash.data(), sizeof(Key));
    if (tier.pool.find(key)) continue;
    BlockMeta meta;
    if (b.parent) {
      Key parent;
      std::memcpy(&parent, b.parent->data(), sizeof(Key));
      meta.parent = parent;
    }
    meta.tokens = b.tokens;
    meta.priority = b.priority;
    std::vector<BlockId>& slot = tier.slot;
    slot.clear();
    [[maybe_unused]] const bool room = tier.pool.try_allocate_into(1, slot);
    LLMDS_ASSERT(room, "KVBlockManager: no free disk slot for a recovered block");
    enter_cached(tier, slot[0], key, std::move(meta));
  }
}

}  // namespace llmds
