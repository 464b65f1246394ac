// DiskStore: the disk tier's bytes, one file per block, that a restarted server finds again.
//
// Directory:
//
//   <dir>/LOCK                  held (flock) for the store's life: a second process is refused
//   <dir>/FORMAT                the geometry and hash width every block file here must have
//   <dir>/tmp/                  files being written; whatever is left here at open is a torn
//                               write of a crashed process, and is deleted
//   <dir>/spare/                files of removed blocks, kept for reuse (spare_files); emptied at open
//   <dir>/blocks/<ab>/<hex>.kvb one file per block, named by its hash in hex (ab: its first byte)
//
// Everything is created readable by the owner only (directories 0700, files 0600): KV blocks
// are a model's view of users' prompts.
//
// A block file is a 4096-byte header, then the block in logical order (kv/tiered/
// block_layout.hpp), zero-padded to a multiple of 4096 so that it can be read and written with
// direct I/O (O_DIRECT: the page cache would only hold a second copy of what the host tier
// already caches). The header, little-endian, in the binary_io.hpp framing:
//
//   "LLMDSKVB" | u32 version | u8 layout (0: logical order) | u8 scalar type | u32 tokens |
//   u32 layers | u32 parts | u32 row bytes | u64 payload bytes | u64 payload checksum |
//   bytes hash | flag has parent | [bytes parent hash] | u8 retention priority |
//   u64 created (ns since the epoch) | u64 n | n x i32 token ids | bytes padding | u64 checksum
//
// A block is written to tmp/, flushed (fdatasync; sync_writes) and renamed into place, so a
// block file is either complete or absent (without the flush, complete or discarded at open).
// write_batch flushes a batch of them at once (syncfs) before renaming any: one flush instead
// of one per block.
// The header's tokens and parent let a restarted manager announce what it found with full
// BlockStored events.
//
// A removed block's file is not deleted but renamed into spare/, and the next write overwrites
// a spare in place instead of creating a file. A full disk tier removes one block for each it
// writes, and creating and deleting a file per block costs the file system more than writing
// the block does (on ext4, allocating an inode scans past every recently freed one); every
// file here has the same size, so a spare fits any block. A spare is never read: a crash
// while one is being overwritten leaves it in spare/ (emptied at open), and once renamed into
// place it is a complete block file like any other.
//
// Reading checks everything before any byte reaches the caller: the header checksum, magic,
// version, geometry, that the hash in the header is the one asked for, and the payload
// checksum. A file that fails any check is deleted and reported as corrupt; the caller
// recomputes the block. Nothing here throws after open: every failure of a write or a read is
// a return value and a counter (no space, I/O error, corrupt), and the store keeps serving.
//
// Failures can be injected (inject_fault) for tests: the next n operations of one kind fail
// with a given errno, as a full or failing disk would.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <fmt/format.h>

#include "llmds/core/errors.hpp"
#include "llmds/core/types.hpp"
#include "llmds/detail/assert.hpp"
#include "llmds/detail/binary_io.hpp"
#include "llmds/detail/file_io.hpp"
#include "llmds/detail/hash.hpp"
#include "llmds/kv/eviction_policy.hpp"
#include "llmds/kv/tiered/block_layout.hpp"
#include "llmds/kv/tiered/memory_store.hpp"

namespace llmds {

struct DiskStoreConfig {
  std::filesystem::path directory;
  BlockGeometry geometry;
  std::size_t hash_bytes = 32;  // bytes of a block hash (32 for SHA-256 chained hashes)
  bool direct_io = true;        // use O_DIRECT where the file system supports it
  bool wipe_on_mismatch = false;  // a directory of another geometry: wipe it (true) or refuse (false)
  // fdatasync each block file before it is renamed into place, so that a block that survives a
  // crash is there in full. Off, a crash can leave files whose bytes never reached the disk;
  // they fail their checksums and are discarded at open (nothing wrong is ever read back), and
  // a write costs no flush.
  bool sync_writes = true;
  // Removed block files kept in spare/ for later writes to overwrite; 0: delete them at once.
  std::size_t spare_files = 256;

  void validate() const {
    geometry.validate();
    if (directory.empty()) throw std::invalid_argument("DiskStoreConfig.directory must not be empty");
    if (hash_bytes == 0 || hash_bytes > 64) {
      throw std::invalid_argument(fmt::format("DiskStoreConfig.hash_bytes must be in [1, 64], got {}", hash_bytes));
    }
  }
};

/// What a block file records beside the block's bytes.
struct StoredBlock {
  std::vector<std::byte> hash;
  std::optional<std::vector<std::byte>> parent;
  std::vector<TokenId> tokens;
  RetentionPriority priority = kDefaultRetentionPriority;
  std::uint64_t created_ns = 0;
};

enum class DiskOp : std::uint8_t { kWrite, kRead, kSync, kRename };
enum class DiskReadResult : std::uint8_t { kOk, kMissing, kCorrupt, kIoError };

struct DiskStoreStats {
  std::uint64_t writes = 0;           // blocks written
  std::uint64_t reads = 0;            // blocks read back intact
  std::uint64_t bytes_written = 0;    // file bytes, header and padding included
  std::uint64_t bytes_read = 0;
  std::uint64_t removed = 0;          // blocks removed on request (evictions)
  std::uint64_t reused_files = 0;     // writes that overwrote a spare file instead of creating one
  std::uint64_t write_failures = 0;   // writes that failed (every cause)
  std::uint64_t no_space = 0;         // of those, ENOSPC / EDQUOT / EFBIG
  std::uint64_t io_errors = 0;        // EIO on a write or read
  std::uint64_t corrupt = 0;          // files that failed a check on read (deleted)
  std::uint64_t recovered_at_open = 0;
  std::uint64_t discarded_at_open = 0;  // torn writes and bad files deleted at open
  bool direct_io = false;             // whether O_DIRECT is in use

  template <class Visit>
  void for_each_field(Visit&& visit) const {
    visit("writes", writes);
    visit("reads", reads);
    visit("bytes_written", bytes_written);
    visit("bytes_read", bytes_read);
    visit("removed", removed);
    visit("reused_files", reused_files);
    visit("write_failures", write_failures);
    visit("no_space", no_space);
    visit("io_errors", io_errors);
    visit("corrupt", corrupt);
    visit("recovered_at_open", recovered_at_open);
    visit("discarded_at_open", discarded_at_open);
    visit("direct_io", direct_io);
  }
};

class DiskStore {
 public:
  static constexpr std::size_t kHeaderBytes = 4096;
  static constexpr std::size_t kAlign = 4096;
  static constexpr std::string_view kMagic = "LLMDSKVB";
  static constexpr std::uint32_t kVersion = 1;

  /// Opens (creating if needed) the directory: takes its lock, checks its format, deletes torn
  /// writes and scans the block files (recovered()). Throws llmds::IOError if the directory is
  /// locked by another process, of another format (unless wipe_on_mismatch), or unusable;
  /// std::invalid_argument for a bad config.
  explicit DiskStore(const DiskStoreConfig& config) : config_((config.validate(), config)) {
    namespace fs = std::filesystem;
    const fs::path& dir = config_.directory;
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) throw IOError(fmt::format("DiskStore: cannot create {}: {}", dir.string(), ec.message()));
    fs::permissions(dir, fs::perms::owner_all, ec);
    lock_fd_ = ::open((dir / "LOCK").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lock_fd_ < 0) throw IOError(fmt::format("DiskStore: cannot open {}/LOCK: {}", dir.string(), std::strerror(errno)));
    if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      ::close(lock_fd_);
      throw IOError(fmt::format("DiskStore: {} is in use by another process ({}/LOCK is held: {})", dir.string(),
                                dir.string(), std::strerror(err)));
    }
    try {
      check_format();
      make_dir(dir / "tmp");
      make_dir(dir / "spare");
      make_dir(dir / "blocks");
      for (const auto& entry : fs::directory_iterator(dir / "tmp")) {
        fs::remove(entry.path(), ec);
        ++stats_.discarded_at_open;
      }
      for (const auto& entry : fs::directory_iterator(dir / "spare")) fs::remove(entry.path(), ec);
      stats_.direct_io = config_.direct_io && probe_direct_io();
      scan();
    } catch (...) {
      ::close(lock_fd_);
      throw;
    }
  }

  DiskStore(const DiskStore&) = delete;
  DiskStore& operator=(const DiskStore&) = delete;
  ~DiskStore() {
    if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the lock
  }

  [[nodiscard]] const DiskStoreConfig& config() const noexcept { return config_; }
  [[nodiscard]] const BlockGeometry& geometry() const noexcept { return config_.geometry; }
  /// The blocks found at open, oldest first.
  [[nodiscard]] const std::vector<StoredBlock>& recovered() const noexcept { return recovered_; }
  /// Bytes one block file takes on disk.
  [[nodiscard]] std::size_t file_bytes() const noexcept {
    return kHeaderBytes + detail::round_up(config_.geometry.block_bytes(), kAlign);
  }

  /// Writes the slot's block of `src` under info.hash. False (the file absent, counters
  /// bumped) on any failure.
  bool write(const StoredBlock& info, const MemoryBlockStore& src, std::size_t slot) {
    Staging& buf = staging(file_bytes());
    src.read_block(slot, buf.data() + kHeaderBytes);
    return write_staged(info);
  }

  /// The same from a block in logical order (block_bytes at `block`).
  bool write(const StoredBlock& info, const std::byte* block) {
    Staging& buf = staging(file_bytes());
    std::memcpy(buf.data() + kHeaderBytes, block, config_.geometry.block_bytes());
    return write_staged(info);
  }

  /// A block for write_batch: what its file records, and its bytes in logical order
  /// (block_bytes).
  struct BlockWrite {
    const StoredBlock* info;
    const std::byte* block;
  };

  /// Writes several blocks, as write() does each, but with one flush for all of them instead of
  /// one per block (with sync_writes): every file is written, then the file system they are on
  /// is flushed once (syncfs, which also flushes anything else written to it meanwhile: give
  /// the store a file system of its own), then each is renamed into place. Flushes are what a
  /// small block's write costs most. ok[i] (resized to blocks.size()): whether block i was
  /// stored; a failed flush fails every block of the batch.
  void write_batch(std::span<const BlockWrite> blocks, std::vector<char>& ok) {
    ok.assign(blocks.size(), 0);
    std::vector<std::pair<std::size_t, StagedFile>> staged;
    staged.reserve(blocks.size());
    for (std::size_t i = 0; i < blocks.size(); ++i) {
      Staging& buf = staging(file_bytes());
      std::memcpy(buf.data() + kHeaderBytes, blocks[i].block, config_.geometry.block_bytes());
      if (auto f = stage_file(*blocks[i].info)) staged.emplace_back(i, std::move(*f));
    }
    if (staged.empty()) return;
    if (config_.sync_writes) {
      int err = injected(DiskOp::kSync);
      if (err == 0 && ::syncfs(staged.front().second.fd) != 0) err = errno;
      if (err != 0) {
        for (auto& [i, f] : staged) fail_write(err, f.tmp, f.fd);
        return;
      }
    }
    for (auto& [i, f] : staged) ok[i] = place_file(f) ? 1 : 0;
  }

  /// Reads the block stored under `hash` into the slot of `dst`, after checking it. A file that
  /// fails a check, or cannot be read, is deleted.
  DiskReadResult read(std::span<const std::byte> hash, MemoryBlockStore& dst, std::size_t slot) {
    std::byte* block = nullptr;
    const DiskReadResult r = read_checked(hash, block);
    if (r == DiskReadResult::kOk) dst.write_block(slot, block);
    return r;
  }

  /// Removes the block of `hash`, if stored: its file becomes a spare, or is deleted when
  /// spare_files are kept already.
  void remove(std::span<const std::byte> hash) {
    const auto path = path_of(hex(hash));
    std::optional<std::uint64_t> spare;
    {
      const std::lock_guard lock(mu_);
      if (spares_.size() + spares_pending_ < config_.spare_files) {
        spare = next_spare_++;
        ++spares_pending_;
      }
    }
    const bool kept = spare && ::rename(path.c_str(), spare_path(*spare).c_str()) == 0;
    const bool removed = kept || ::unlink(path.c_str()) == 0;
    const std::lock_guard lock(mu_);
    if (spare) --spares_pending_;
    if (kept) spares_.push_back(*spare);
    if (removed) ++stats_.removed;
  }

  /// The next `times` operations of kind `op` fail with `error` (an errno value), for tests.
  void inject_fault(DiskOp op, int error, std::size_t times) {
    const std::lock_guard lock(mu_);
    faults_[static_cast<std::size_t>(op)] = {error, times};
  }

  [[nodiscard]] DiskStoreStats stats() const {
    const std::lock_guard lock(mu_);
    return stats_;
  }

  /// Writes the header page of block `b` (payload checksum `checksum`) for a store of `config`
  /// into out (kHeaderBytes). False if it does not fit in one page (too many tokens).
  static bool encode_header(const StoredBlock& b, std::uint64_t checksum, const DiskStoreConfig& config,
                            std::byte* out) {
    const BlockGeometry& g = config.geometry;
    detail::BinaryWriter w(kMagic, kVersion);
    w.put(std::uint8_t{0});
    w.put(static_cast<std::uint8_t>(g.scalar));
    w.put(g.tokens);
    w.put(g.layers);
    w.put(g.parts);
    w.put(g.row_bytes);
    w.put(static_cast<std::uint64_t>(g.block_bytes()));
    w.put(checksum);
    w.put_bytes(as_chars(b.hash));
    w.put(static_cast<std::uint8_t>(b.parent ? 1 : 0));
    if (b.parent) w.put_bytes(as_chars(*b.parent));
    w.put(static_cast<std::uint8_t>(b.priority));
    w.put(b.created_ns);
    w.put(static_cast<std::uint64_t>(b.tokens.size()));
    for (const TokenId t : b.tokens) w.put(t);
    // Padding brings the header to kHeaderBytes: what is written so far, the padding's length
    // field and bytes, and the checksum.
    if (w.size() + 8 + 8 > kHeaderBytes) return false;
    w.put_bytes(std::string(kHeaderBytes - w.size() - 16, '\0'));
    const std::string header = std::move(w).finish();
    LLMDS_ASSERT(header.size() == kHeaderBytes, "DiskStore: the header is not one page");
    std::memcpy(out, header.data(), std::min(header.size(), kHeaderBytes));
    return true;
  }

  struct Header {
    StoredBlock block;
    std::uint64_t payload_checksum = 0;
  };

  /// The header in `page`, if it is one whole intact header page of a block of `config`'s
  /// geometry and hash width; nullopt for anything else, whatever the bytes.
  [[nodiscard]] static std::optional<Header> decode_header(std::span<const std::byte> page,
                                                           const DiskStoreConfig& config) {
    if (page.size() != kHeaderBytes) return std::nullopt;
    try {
      detail::BinaryReader r(std::string_view(reinterpret_cast<const char*>(page.data()), page.size()), kMagic,
                             kVersion, "KV block file");
      const BlockGeometry& g = config.geometry;
      if (r.get<std::uint8_t>() != 0 || r.get<std::uint8_t>() != static_cast<std::uint8_t>(g.scalar) ||
          r.get<std::uint32_t>() != g.tokens || r.get<std::uint32_t>() != g.layers ||
          r.get<std::uint32_t>() != g.parts || r.get<std::uint32_t>() != g.row_bytes ||
          r.get<std::uint64_t>() != g.block_bytes()) {
        return std::nullopt;
      }
      const auto checksum = r.get<std::uint64_t>();
      StoredBlock b;
      const auto to_bytes = [](std::string_view s) {
        const auto* p = reinterpret_cast<const std::byte*>(s.data());
        return std::vector<std::byte>(p, p + s.size());
      };
      b.hash = to_bytes(r.get_bytes());
      if (b.hash.size() != config.hash_bytes) return std::nullopt;
      if (r.get_flag()) b.parent = to_bytes(r.get_bytes());
      b.priority = r.get<std::uint8_t>();
      if (b.priority > kMaxRetentionPriority) return std::nullopt;
      b.created_ns = r.get<std::uint64_t>();
      const std::uint64_t n = r.get_count(4);
      b.tokens.reserve(n);
      for (std::uint64_t i = 0; i < n; ++i) b.tokens.push_back(r.get<TokenId>());
      (void)r.get_bytes();  // padding
      r.expect_end();
      return Header{std::move(b), checksum};
    } catch (const std::invalid_argument&) {
      return std::nullopt;
    }
  }

  /// Where the block file of a hash lives (whether or not it exists).
  [[nodiscard]] std::filesystem::path path_of_hash(std::span<const std::byte> hash) const { return path_of(hex(hash)); }

 private:
  static std::string_view as_chars(const std::vector<std::byte>& v) {
    return {reinterpret_cast<const char*>(v.data()), v.size()};
  }

  // A block file written but not yet flushed nor in place: open as fd, at tmp (in tmp/, or a
  // spare overwritten in place), to be renamed to blocks/.../<name>.kvb.
  struct StagedFile {
    std::filesystem::path tmp;
    std::string name;
    int fd = -1;
    bool reused = false;
  };

  // Writes the block already in this thread's staging buffer (after the header page): staged,
  // flushed on its own, put in place.
  bool write_staged(const StoredBlock& info) {
    std::optional<StagedFile> f = stage_file(info);
    if (!f) return false;
    if (config_.sync_writes) {
      if (const int err = injected(DiskOp::kSync); err != 0) return fail_write(err, f->tmp, f->fd);
      if (::fdatasync(f->fd) != 0) return fail_write(errno, f->tmp, f->fd);
    }
    return place_file(*f);
  }

  // The block in this thread's staging buffer, with its header, written to a file of its own
  // (not flushed); nullopt, counted, on any failure.
  std::optional<StagedFile> stage_file(const StoredBlock& info) {
    const std::size_t payload = config_.geometry.block_bytes();
    std::byte* data = staging(file_bytes()).data();
    std::memset(data + kHeaderBytes + payload, 0, file_bytes() - kHeaderBytes - payload);
    const std::uint64_t checksum = payload_checksum(data + kHeaderBytes);
    StoredBlock stamped = info;
    if (stamped.created_ns == 0) {
      stamped.created_ns = static_cast<std::uint64_t>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
              .count());
    }
    if (!encode_header(stamped, checksum, config_, data)) {
      count_write_failure(EINVAL);
      return std::nullopt;
    }
    StagedFile f;
    f.name = hex(info.hash);
    const int direct = stats_.direct_io ? O_DIRECT : 0;
    if (const auto spare = take_spare()) {  // overwritten in place, all of it
      f.tmp = spare_path(*spare);
      f.fd = ::open(f.tmp.c_str(), O_WRONLY | O_CLOEXEC | direct);
      f.reused = f.fd >= 0;
      if (!f.reused) ::unlink(f.tmp.c_str());
    }
    const auto fail = [&](int err) -> std::optional<StagedFile> {
      fail_write(err, f.tmp, f.fd);
      return std::nullopt;
    };
    if (!f.reused) {
      f.tmp = config_.directory / "tmp" / fmt::format("{}.{}.tmp", f.name, temp_counter_++);
      f.fd = ::open(f.tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | direct, 0600);
      if (f.fd < 0) return fail(errno);
      if (const int err = ::posix_fallocate(f.fd, 0, static_cast<off_t>(file_bytes())); err != 0 && err != EOPNOTSUPP) {
        return fail(err);
      }
    }
    if (const int err = injected(DiskOp::kWrite); err != 0) return fail(err);
    if (const int err = write_all(f.fd, data, file_bytes()); err != 0) return fail(err);
    return f;
  }

  // Renames a staged (and, if asked, flushed) file into place; false, counted, if that fails.
  bool place_file(StagedFile& f) {
    ::close(f.fd);
    f.fd = -1;
    const auto final_path = path_of(f.name);
    std::error_code ec;
    // Owner only; set once, when created (a chmod per block would change the directory's inode,
    // a journal write, every time).
    if (std::filesystem::create_directory(final_path.parent_path(), ec)) ::chmod(final_path.parent_path().c_str(), 0700);
    if (const int err = injected(DiskOp::kRename); err != 0) return fail_write(err, f.tmp, -1);
    if (::rename(f.tmp.c_str(), final_path.c_str()) != 0) return fail_write(errno, f.tmp, -1);
    const std::lock_guard lock(mu_);
    ++stats_.writes;
    if (f.reused) ++stats_.reused_files;
    stats_.bytes_written += file_bytes();
    return true;
  }

  // Reads and checks the block file of `hash` into this thread's staging buffer; `block`
  // points at its payload there.
  DiskReadResult read_checked(std::span<const std::byte> hash, std::byte*& block) {
    const auto path = path_of(hex(hash));
    if (const int err = injected(DiskOp::kRead); err != 0) return fail_read(err, path);
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | (stats_.direct_io ? O_DIRECT : 0));
    if (fd < 0) {
      if (errno == ENOENT) return DiskReadResult::kMissing;
      return fail_read(errno, path);
    }
    Staging& buf = staging(file_bytes());
    std::size_t got = 0;
    const int err = read_all(fd, buf.data(), file_bytes(), got);
    ::close(fd);
    if (err != 0) return fail_read(err, path);
    std::optional<Header> header;
    if (got == file_bytes()) header = decode_header(std::span<const std::byte>(buf.data(), kHeaderBytes), config_);
    if (!header || !std::ranges::equal(header->block.hash, hash) ||
        header->payload_checksum != payload_checksum(buf.data() + kHeaderBytes)) {
      return fail_read(0, path);
    }
    block = buf.data() + kHeaderBytes;
    const std::lock_guard lock(mu_);
    ++stats_.reads;
    stats_.bytes_read += file_bytes();
    return DiskReadResult::kOk;
  }

  using Staging = AlignedArena;

  static void make_dir(const std::filesystem::path& p) {
    std::error_code ec;
    std::filesystem::create_directory(p, ec);
    if (ec) throw IOError(fmt::format("DiskStore: cannot create {}: {}", p.string(), ec.message()));
    ::chmod(p.c_str(), 0700);
  }

  // One aligned buffer per thread, grown as needed: direct I/O wants aligned memory.
  static Staging& staging(std::size_t bytes) {
    thread_local Staging buffer;
    if (buffer.size() < bytes) buffer = Staging(bytes, kAlign);
    return buffer;
  }

  static std::string hex(std::span<const std::byte> bytes) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string out;
    out.reserve(bytes.size() * 2);
    for (const std::byte b : bytes) {
      out.push_back(digits[std::to_integer<unsigned>(b) >> 4]);
      out.push_back(digits[std::to_integer<unsigned>(b) & 15]);
    }
    return out;
  }
  [[nodiscard]] std::filesystem::path spare_path(std::uint64_t n) const {
    return config_.directory / "spare" / fmt::format("{}.kvb", n);
  }
  std::optional<std::uint64_t> take_spare() {
    const std::lock_guard lock(mu_);
    if (spares_.empty()) return std::nullopt;
    const std::uint64_t n = spares_.back();
    spares_.pop_back();
    return n;
  }

  [[nodiscard]] std::filesystem::path path_of(const std::string& name) const {
    return config_.directory / "blocks" / name.substr(0, 2) / (name + ".kvb");
  }

  [[nodiscard]] std::uint64_t payload_checksum(const std::byte* payload) const {
    return detail::hash_bytes(std::string_view(reinterpret_cast<const char*>(payload), config_.geometry.block_bytes()),
                              detail::file_checksum_seed);
  }

  [[nodiscard]] std::string format_bytes() const {
    detail::BinaryWriter w("LLMDSKVF", kVersion);
    const BlockGeometry& g = config_.geometry;
    w.put(g.tokens);
    w.put(g.layers);
    w.put(g.parts);
    w.put(g.row_bytes);
    w.put(static_cast<std::uint8_t>(g.scalar));
    w.put(static_cast<std::uint32_t>(config_.hash_bytes));
    return std::move(w).finish();
  }

  void check_format() {
    namespace fs = std::filesystem;
    const fs::path format = config_.directory / "FORMAT";
    const std::string expected = format_bytes();
    std::error_code ec;
    if (fs::exists(format, ec)) {
      if (detail::read_file(format) == expected) return;
      if (!config_.wipe_on_mismatch) {
        throw IOError(fmt::format(
            "DiskStore: {} holds blocks of another geometry or hash width (its FORMAT differs); open it with "
            "wipe_on_mismatch to discard them",
            config_.directory.string()));
      }
      fs::remove_all(config_.directory / "blocks", ec);
      fs::remove_all(config_.directory / "tmp", ec);
      fs::remove_all(config_.directory / "spare", ec);
    }
    detail::write_file(format, expected);
    ::chmod(format.c_str(), 0600);
  }

  bool probe_direct_io() {
    const auto probe = config_.directory / "tmp" / "direct-io-probe";
    const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_DIRECT | O_CLOEXEC, 0600);
    if (fd < 0) return false;
    Staging page(kAlign, kAlign);
    std::memset(page.data(), 0, kAlign);
    const bool ok = ::pwrite(fd, page.data(), kAlign, 0) == static_cast<ssize_t>(kAlign);
    ::close(fd);
    ::unlink(probe.c_str());
    return ok;
  }

  // Every block file: kept if its size and header are right and its name is its hash.
  void scan() {
    namespace fs = std::filesystem;
    std::error_code ec;
    Staging page(kHeaderBytes, kAlign);
    for (const auto& sub : fs::directory_iterator(config_.directory / "blocks", ec)) {
      for (const auto& entry : fs::directory_iterator(sub.path(), ec)) {
        const fs::path& p = entry.path();
        std::optional<Header> header;
        if (p.extension() == ".kvb" && fs::file_size(p, ec) == file_bytes()) {
          const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
          std::size_t got = 0;
          if (fd >= 0 && read_all(fd, page.data(), kHeaderBytes, got) == 0 && got == kHeaderBytes) {
            header = decode_header(std::span<const std::byte>(page.data(), kHeaderBytes), config_);
          }
          if (fd >= 0) ::close(fd);
        }
        if (!header || hex(header->block.hash) != p.stem().string() ||
            sub.path().filename() != p.stem().string().substr(0, 2)) {
          fs::remove(p, ec);
          ++stats_.discarded_at_open;
          continue;
        }
        recovered_.push_back(std::move(header->block));
      }
    }
    // Oldest first. Sorted through an index (a sort that swaps the blocks themselves trips
    // GCC 12's -Wmaybe-uninitialized on the optional parent).
    std::vector<std::size_t> order(recovered_.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::ranges::stable_sort(order, {}, [&](std::size_t i) { return recovered_[i].created_ns; });
    std::vector<StoredBlock> sorted;
    sorted.reserve(order.size());
    for (const std::size_t i : order) sorted.push_back(std::move(recovered_[i]));
    recovered_ = std::move(sorted);
    stats_.recovered_at_open = recovered_.size();
  }

  static int write_all(int fd, const std::byte* data, std::size_t n) {
    std::size_t done = 0;
    while (done < n) {
      const ssize_t w = ::pwrite(fd, data + done, n - done, static_cast<off_t>(done));
      if (w < 0) {
        if (errno == EINTR) continue;
        return errno;
      }
      if (w == 0) return EIO;
      done += static_cast<std::size_t>(w);
    }
    return 0;
  }
  static int read_all(int fd, std::byte* data, std::size_t n, std::size_t& got) {
    got = 0;
    while (got < n) {
      const ssize_t r = ::pread(fd, data + got, n - got, static_cast<off_t>(got));
      if (r < 0) {
        if (errno == EINTR) continue;
        return errno;
      }
      if (r == 0) return 0;  // end of file: the caller sees got < n
      got += static_cast<std::size_t>(r);
    }
    return 0;
  }

  int injected(DiskOp op) {
    const std::lock_guard lock(mu_);
    auto& [error, times] = faults_[static_cast<std::size_t>(op)];
    if (times == 0) return 0;
    --times;
    return error;
  }

  void count_write_failure(int err) {
    const std::lock_guard lock(mu_);
    ++stats_.write_failures;
    if (err == ENOSPC || err == EDQUOT || err == EFBIG) ++stats_.no_space;
    if (err == EIO) ++stats_.io_errors;
  }
  bool fail_write(int err, const std::filesystem::path& tmp, int fd) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    count_write_failure(err);
    return false;
  }
  DiskReadResult fail_read(int err, const std::filesystem::path& path) {
    ::unlink(path.c_str());
    const std::lock_guard lock(mu_);
    if (err == 0) {
      ++stats_.corrupt;
      return DiskReadResult::kCorrupt;
    }
    ++stats_.io_errors;
    return DiskReadResult::kIoError;
  }

  DiskStoreConfig config_;
  int lock_fd_ = -1;
  mutable std::mutex mu_;  // stats_, faults_ and the spares
  DiskStoreStats stats_;
  std::vector<std::uint64_t> spares_;  // spare/<n>.kvb, most recent last
  std::size_t spares_pending_ = 0;     // being renamed into spare/ now
  std::uint64_t next_spare_ = 0;
  std::array<std::pair<int, std::size_t>, 4> faults_{};
  std::vector<StoredBlock> recovered_;
  std::atomic<std::uint64_t> temp_counter_{0};
};

}  // namespace llmds
