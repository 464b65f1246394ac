// The tiered KV block manager's data paths, each beside the limit it is judged against:
//   - block copies between memory tiers (contiguous to contiguous, and gathered into a
//     layer-separate layout) against memcpy of the same bytes;
//   - the disk tier's block writes and reads against the same disk's raw sequential direct I/O;
//   - the metadata cost of a tiered replay of the Mooncake traces, per request.
//   build/cpp/bench/bench_kv_tiers
// The disk benchmarks write under $LLMDS_BENCH_DIR (default: the system's temporary folder).
#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "llmds/kv/tiered/block_layout.hpp"
#include "llmds/kv/tiered/disk_store.hpp"
#include "llmds/kv/tiered/memory_store.hpp"
#include "llmds/kv/trace_replay.hpp"

#include "data_dir.hpp"

namespace {

namespace fs = std::filesystem;
using llmds::BlockGeometry;
using llmds::ContiguousLayout;
using llmds::LayerSeparateLayout;
using llmds::MemoryStore;

constexpr std::size_t kArenaBytes = std::size_t{256} << 20;  // per side: well past the caches

// A block of `bytes`: 16 tokens, 8 layers, K and V, rows of bytes / 256.
BlockGeometry geometry_of(std::size_t bytes) {
  return BlockGeometry{16, 8, 2, static_cast<std::uint32_t>(bytes / 256), llmds::ScalarType::kFloat16};
}

std::size_t slots_for(std::size_t bytes) { return std::max<std::size_t>(8, kArenaBytes / bytes); }

void set_bandwidth(benchmark::State& state, std::size_t bytes) {
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(bytes));
}

// memcpy of one block between two arenas, slot after slot: the bound for memory tiers.
void BM_Memcpy(benchmark::State& state) {
  const auto bytes = static_cast<std::size_t>(state.range(0));
  const std::size_t slots = slots_for(bytes);
  llmds::AlignedArena a(slots * bytes, 4096), b(slots * bytes, 4096);
  std::memset(a.data(), 1, a.size());
  std::memset(b.data(), 2, b.size());
  std::size_t i = 0;
  for (auto _ : state) {
    std::memcpy(b.data() + (i % slots) * bytes, a.data() + ((i * 7 + 3) % slots) * bytes, bytes);
    benchmark::ClobberMemory();
    ++i;
  }
  set_bandwidth(state, bytes);
}

// copy_blocks from a contiguous primary store into a host store of layout Dst: one memcpy per
// block into a contiguous one, 16 x 8 x 2 pieces per block into a layer-separate one.
template <class Dst>
void copy_into(benchmark::State& state) {
  const auto bytes = static_cast<std::size_t>(state.range(0));
  const std::size_t slots = slots_for(bytes);
  const ContiguousLayout from(geometry_of(bytes), slots);
  const Dst to(geometry_of(bytes), slots, 4096);
  MemoryStore<ContiguousLayout> primary(from);
  MemoryStore<Dst> host(to);
  std::memset(primary.host_base(), 1, from.storage_bytes());
  std::memset(host.host_base(), 2, to.storage_bytes());
  std::vector<std::byte> staging;
  std::size_t i = 0;
  for (auto _ : state) {
    llmds::copy_blocks(primary, (i * 7 + 3) % slots, host, i % slots, staging);
    benchmark::ClobberMemory();
    ++i;
  }
  set_bandwidth(state, bytes);
}
void BM_CopyContiguous(benchmark::State& state) { copy_into<ContiguousLayout>(state); }
void BM_CopyToLayerSeparate(benchmark::State& state) { copy_into<LayerSeparateLayout>(state); }

fs::path bench_dir(const std::string& name) {
  const char* root = std::getenv("LLMDS_BENCH_DIR");
  const fs::path dir = (root != nullptr && *root != '\0' ? fs::path(root) : fs::temp_directory_path()) /
                       ("llmds-bench-" + std::to_string(::getpid()) + "-" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

// The disk's own limit: one file written (then read) sequentially in block-sized direct I/O
// requests, one fdatasync at the end of the writes.
void BM_DiskRawWrite(benchmark::State& state) {
  const auto bytes = static_cast<std::size_t>(state.range(0));
  const std::size_t blocks = std::max<std::size_t>(16, (std::size_t{128} << 20) / bytes);
  const fs::path dir = bench_dir("raw");
  llmds::AlignedArena buffer(bytes, 4096);
  std::memset(buffer.data(), 3, bytes);
  for (auto _ : state) {
    const int fd = ::open((dir / "raw").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_DIRECT, 0600);
    if (fd < 0) {
      state.SkipWithError("O_DIRECT is not supported here");
      break;
    }
    for (std::size_t i = 0; i < blocks; ++i) {
      if (::pwrite(fd, buffer.data(), bytes, static_cast<off_t>(i * bytes)) != static_cast<ssize_t>(bytes)) {
        state.SkipWithError("write failed");
      }
    }
    ::fdatasync(fd);
    ::close(fd);
  }
  set_bandwidth(state, bytes * blocks);
  fs::remove_all(dir);
}

void BM_DiskRawRead(benchmark::State& state) {
  const auto bytes = static_cast<std::size_t>(state.range(0));
  const std::size_t blocks = std::max<std::size_t>(16, (std::size_t{128} << 20) / bytes);
  const fs::path dir = bench_dir("rawread");
  llmds::AlignedArena buffer(bytes, 4096);
  std::memset(buffer.data(), 3, bytes);
  {
    const int fd = ::open((dir / "raw").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_DIRECT, 0600);
    for (std::size_t i = 0; i < blocks && fd >= 0; ++i) {
      (void)::pwrite(fd, buffer.data(), bytes, static_cast<off_t>(i * bytes));
    }
    if (fd >= 0) ::close(fd);
  }
  for (auto _ : state) {
    const int fd = ::open((dir / "raw").c_str(), O_RDONLY | O_DIRECT);
    if (fd < 0) {
      state.SkipWithError("O_DIRECT is not supported here");
      break;
    }
    for (std::size_t i = 0; i < blocks; ++i) {
      if (::pread(fd, buffer.data(), bytes, static_cast<off_t>(i * bytes)) != static_cast<ssize_t>(bytes)) {
        state.SkipWithError("read failed");
      }
    }
    ::close(fd);
  }
  set_bandwidth(state, bytes * blocks);
  fs::remove_all(dir);
}

// A disk store of 8-byte hashes in a fresh directory (deleted afterwards), and a host store of 8
// blocks of the same geometry to write from and read into.
struct DiskBench {
  DiskBench(const std::string& name, std::size_t bytes, bool sync_writes)
      : dir(bench_dir(name)), disk(config(dir, bytes, sync_writes)), host(ContiguousLayout(geometry_of(bytes), 8, 4096)) {
    std::memset(host.host_base(), 4, ContiguousLayout(geometry_of(bytes), 8, 4096).storage_bytes());
  }
  ~DiskBench() { fs::remove_all(dir); }
  static llmds::DiskStoreConfig config(const fs::path& dir, std::size_t bytes, bool sync_writes) {
    llmds::DiskStoreConfig c;
    c.directory = dir;
    c.geometry = geometry_of(bytes);
    c.hash_bytes = 8;
    c.sync_writes = sync_writes;
    return c;
  }
  fs::path dir;
  llmds::DiskStore disk;
  MemoryStore<ContiguousLayout> host;
};

// The disk tier: a block file each (header page, payload, fdatasync unless range(1) is 0,
// rename), from a host store. range(2) 0: an empty tier filling up (every write a new file);
// 1: a full tier (filled before timing), which removes a block for each it writes (64 blocks
// back), so that writes overwrite the spare files of removed blocks. range(3): blocks per
// flush: 1 writes each with write(), more writes that many with one write_batch() (as the
// disk worker does with its batches).
void BM_DiskStoreWrite(benchmark::State& state) {
  const auto bytes = static_cast<std::size_t>(state.range(0));
  DiskBench b("store", bytes, state.range(1) != 0);
  llmds::DiskStore& disk = b.disk;
  MemoryStore<ContiguousLayout>& host = b.host;
  const bool full = state.range(2) != 0;
  const auto batch = static_cast<std::size_t>(state.range(3));
  constexpr std::uint64_t kResident = 64;
  std::uint64_t key = 0;
  std::vector<std::vector<std::byte>> payloads(8, std::vector<std::byte>(bytes));
  for (std::size_t i = 0; i < payloads.size(); ++i) host.read_block(i, payloads[i].data());
  std::vector<llmds::StoredBlock> infos(batch);
  std::vector<llmds::DiskStore::BlockWrite> writes;
  std::vector<char> ok;
  const auto write_next = [&] {
    writes.clear();
    for (std::size_t i = 0; i < batch; ++i, ++key) {
      infos[i].hash.resize(8);
      std::memcpy(infos[i].hash.data(), &key, 8);
      writes.push_back({&infos[i], payloads[key % 8].data()});
    }
    if (batch == 1) {
      ok.assign(1, disk.write(infos[0], host, (key - 1) % 8) ? 1 : 0);
    } else {
      disk.write_batch(writes, ok);
    }
    if (std::ranges::count(ok, 0) > 0) state.SkipWithError("write failed");
    for (std::uint64_t k = key - batch; full && k < key && k >= kResident; ++k) {
      const std::uint64_t old = k - kResident;
      disk.remove(std::as_bytes(std::span(&old, 1)));
    }
  };
  if (full) {
    while (key < kResident + 8) write_next();  // untimed: the tier is full, with spares
  }
  for (auto _ : state) write_next();
  set_bandwidth(state, bytes * batch);
  state.counters["direct_io"] = disk.stats().direct_io ? 1 : 0;
  state.counters["reused_files"] = static_cast<double>(disk.stats().reused_files);
}

void BM_DiskStoreRead(benchmark::State& state) {
  const auto bytes = static_cast<std::size_t>(state.range(0));
  const std::size_t files = std::max<std::size_t>(16, (std::size_t{128} << 20) / bytes);
  DiskBench b("storeread", bytes, true);
  llmds::DiskStore& disk = b.disk;
  MemoryStore<ContiguousLayout>& host = b.host;
  for (std::uint64_t key = 0; key < files; ++key) {
    llmds::StoredBlock info;
    info.hash.resize(8);
    std::memcpy(info.hash.data(), &key, 8);
    (void)disk.write(info, host, 0);
  }
  std::uint64_t key = 0;
  for (auto _ : state) {
    const auto k = key++ % files;
    if (disk.read(std::as_bytes(std::span(&k, 1)), host, 1) != llmds::DiskReadResult::kOk) {
      state.SkipWithError("read failed");
    }
  }
  set_bandwidth(state, bytes);
}

// The tiered replay's metadata cost: primary 6,000 + host 16,000 + disk 400,000 blocks.
void BM_TieredReplay(benchmark::State& state) {
  const char* file = state.range(0) == 0 ? "mooncake_fast25_conversation_trace.jsonl"
                                         : "mooncake_fast25_synthetic_trace.jsonl";
  const auto path = llmds::test::data_dir() / "traces" / file;
  if (!fs::exists(path)) {
    state.SkipWithError("Mooncake trace not found: set LLMDS_DATA_DIR");
    return;
  }
  const auto requests = llmds::load_mooncake_trace(path);
  llmds::TieredReplayConfig c;
  c.primary_blocks = 6000;
  c.host_blocks = 16000;
  c.disk_blocks = state.range(1) == 0 ? 0 : 400000;
  double us = 0, hit = 0;
  for (auto _ : state) {
    const auto r = llmds::replay_tiered_prefix_cache(requests, c);
    us += r.microseconds_per_request();
    hit = r.hit_rate();
  }
  state.counters["us_per_request"] = us / static_cast<double>(state.iterations());
  state.counters["hit_rate"] = hit;
}

}  // namespace

BENCHMARK(BM_Memcpy)->RangeMultiplier(4)->Range(64 << 10, 4 << 20);
BENCHMARK(BM_CopyContiguous)->RangeMultiplier(4)->Range(64 << 10, 4 << 20);
BENCHMARK(BM_CopyToLayerSeparate)->RangeMultiplier(4)->Range(64 << 10, 4 << 20);
BENCHMARK(BM_DiskRawWrite)->Arg(64 << 10)->Arg(2 << 20)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_DiskRawRead)->Arg(64 << 10)->Arg(2 << 20)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_DiskStoreWrite)
    ->Args({64 << 10, 1, 0, 1})
    ->Args({2 << 20, 1, 0, 1})
    ->Args({64 << 10, 0, 0, 1})
    ->Args({2 << 20, 0, 0, 1})
    ->Args({64 << 10, 1, 1, 1})
    ->Args({2 << 20, 1, 1, 1})
    ->Args({64 << 10, 0, 1, 1})
    ->Args({2 << 20, 0, 1, 1})
    ->Args({64 << 10, 1, 0, 8})
    ->Args({64 << 10, 1, 1, 8})
    ->Args({2 << 20, 1, 1, 8})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();
BENCHMARK(BM_DiskStoreRead)->Arg(64 << 10)->Arg(2 << 20)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_TieredReplay)->Args({0, 1})->Args({1, 1})->Args({0, 0})->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
