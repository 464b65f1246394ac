#include "llmds/kv/tiered/disk_store.hpp"

#include <sys/stat.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "llmds/core/errors.hpp"
#include "llmds/kv/tiered/memory_store.hpp"

namespace {

namespace fs = std::filesystem;
using llmds::BlockGeometry;
using llmds::ContiguousLayout;
using llmds::DiskOp;
using llmds::DiskReadResult;
using llmds::DiskStore;
using llmds::DiskStoreConfig;
using llmds::MemoryStore;
using llmds::StoredBlock;
using Bytes = std::vector<std::byte>;

const BlockGeometry kGeometry{4, 2, 2, 24, llmds::ScalarType::kFloat16};  // 384 bytes

class DiskStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("llmds-disk-store-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  DiskStoreConfig config() const {
    DiskStoreConfig c;
    c.directory = dir_;
    c.geometry = kGeometry;
    c.hash_bytes = 8;
    return c;
  }
  static Bytes hash(std::uint64_t h) {
    Bytes b(8);
    for (int i = 0; i < 8; ++i) b[i] = static_cast<std::byte>(h >> (8 * i));
    return b;
  }
  static StoredBlock block(std::uint64_t h, std::optional<std::uint64_t> parent = std::nullopt) {
    StoredBlock b;
    b.hash = hash(h);
    if (parent) b.parent = hash(*parent);
    b.tokens = {1, 2, 3, static_cast<llmds::TokenId>(h)};
    b.priority = 60;
    return b;
  }
  // Slot s of the memory store holds bytes that depend on `seed`.
  static void fill(MemoryStore<ContiguousLayout>& m, std::size_t slot, unsigned seed) {
    Bytes b(kGeometry.block_bytes());
    std::mt19937 rng(seed);
    for (auto& x : b) x = static_cast<std::byte>(rng());
    m.write_block(slot, b.data());
  }
  static Bytes read(const MemoryStore<ContiguousLayout>& m, std::size_t slot) {
    Bytes b(kGeometry.block_bytes());
    m.read_block(slot, b.data());
    return b;
  }

  fs::path dir_;
  MemoryStore<ContiguousLayout> host_{ContiguousLayout(kGeometry, 4, 4096)};
};

TEST_F(DiskStoreTest, BlocksComeBackIntactAndSurviveARestart) {
  fill(host_, 0, 1);
  fill(host_, 1, 2);
  {
    DiskStore disk(config());
    ASSERT_TRUE(disk.write(block(10), host_, 0));
    ASSERT_TRUE(disk.write(block(11, 10), host_, 1));
    EXPECT_EQ(disk.read(hash(11), host_, 2), DiskReadResult::kOk);
    EXPECT_EQ(read(host_, 2), read(host_, 1));
    EXPECT_EQ(disk.read(hash(99), host_, 3), DiskReadResult::kMissing);
    const auto s = disk.stats();
    EXPECT_EQ(s.writes, 2u);
    EXPECT_EQ(s.reads, 1u);
    EXPECT_EQ(s.bytes_written, 2 * disk.file_bytes());
    EXPECT_EQ(disk.file_bytes(), 8192u);
  }
  DiskStore again(config());
  ASSERT_EQ(again.recovered().size(), 2u);
  const StoredBlock& second = again.recovered()[1];  // oldest first
  EXPECT_EQ(second.hash, hash(11));
  EXPECT_EQ(second.parent, hash(10));
  EXPECT_EQ(second.tokens, (std::vector<llmds::TokenId>{1, 2, 3, 11}));
  EXPECT_EQ(second.priority, 60);
  EXPECT_FALSE(again.recovered()[0].parent.has_value());
  EXPECT_EQ(again.read(hash(10), host_, 3), DiskReadResult::kOk);
  EXPECT_EQ(read(host_, 3), read(host_, 0));
}

TEST_F(DiskStoreTest, ASecondOpenOfTheDirectoryIsRefused) {
  DiskStore disk(config());
  EXPECT_THROW(DiskStore{config()}, llmds::IOError);
}

TEST_F(DiskStoreTest, FilesAreTheOwnersAlone) {
  DiskStore disk(config());
  ASSERT_TRUE(disk.write(block(5), host_, 0));
  struct stat st {};
  ASSERT_EQ(::stat(disk.path_of_hash(hash(5)).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(::stat(dir_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  ASSERT_EQ(::stat(disk.path_of_hash(hash(5)).parent_path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
}

TEST_F(DiskStoreTest, AnotherGeometryIsRefusedUnlessWiped) {
  { DiskStore disk(config()); ASSERT_TRUE(disk.write(block(1), host_, 0)); }
  auto other = config();
  other.geometry.tokens = 8;
  EXPECT_THROW(DiskStore{other}, llmds::IOError);
  other.wipe_on_mismatch = true;
  DiskStore wiped(other);
  EXPECT_TRUE(wiped.recovered().empty());
}

TEST_F(DiskStoreTest, TornAndDamagedFilesAreDiscardedAtOpen) {
  fs::path good, renamed, truncated, damaged;
  {
    DiskStore disk(config());
    for (std::uint64_t h = 1; h <= 4; ++h) ASSERT_TRUE(disk.write(block(h), host_, 0));
    good = disk.path_of_hash(hash(1));
    renamed = disk.path_of_hash(hash(2));
    truncated = disk.path_of_hash(hash(3));
    damaged = disk.path_of_hash(hash(4));
  }
  // A torn write of a crashed process, a file under another hash's name, a short file and a
  // header with a flipped byte.
  std::ofstream(dir_ / "tmp" / "0000.1.tmp") << "half a block";
  fs::rename(renamed, renamed.parent_path() / "00000000000000ff.kvb");
  fs::resize_file(truncated, 5000);
  {
    std::fstream f(damaged, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f.put('\x5a');
  }
  DiskStore disk(config());
  ASSERT_EQ(disk.recovered().size(), 1u);
  EXPECT_EQ(disk.recovered()[0].hash, hash(1));
  EXPECT_EQ(disk.stats().discarded_at_open, 4u);
  EXPECT_TRUE(fs::exists(good));
  EXPECT_FALSE(fs::exists(truncated));
  EXPECT_TRUE(fs::is_empty(dir_ / "tmp"));
}

TEST_F(DiskStoreTest, ACorruptPayloadIsAMissAndTheFileIsDeleted) {
  DiskStore disk(config());
  fill(host_, 0, 7);
  ASSERT_TRUE(disk.write(block(8), host_, 0));
  {
    std::fstream f(disk.path_of_hash(hash(8)), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(4096 + 17);
    f.put('\x01');
  }
  fill(host_, 1, 3);
  const Bytes before = read(host_, 1);
  EXPECT_EQ(disk.read(hash(8), host_, 1), DiskReadResult::kCorrupt);
  EXPECT_EQ(read(host_, 1), before);  // nothing reached the slot
  EXPECT_FALSE(fs::exists(disk.path_of_hash(hash(8))));
  EXPECT_EQ(disk.stats().corrupt, 1u);
}

TEST_F(DiskStoreTest, AFullOrFailingDiskFailsTheWriteAndLeavesNoFile) {
  DiskStore disk(config());
  for (const DiskOp op : {DiskOp::kWrite, DiskOp::kSync, DiskOp::kRename}) {
    disk.inject_fault(op, op == DiskOp::kWrite ? ENOSPC : EIO, 1);
    EXPECT_FALSE(disk.write(block(20), host_, 0));
    EXPECT_FALSE(fs::exists(disk.path_of_hash(hash(20))));
    EXPECT_TRUE(fs::is_empty(dir_ / "tmp"));
  }
  auto s = disk.stats();
  EXPECT_EQ(s.write_failures, 3u);
  EXPECT_EQ(s.no_space, 1u);
  EXPECT_EQ(s.io_errors, 2u);
  EXPECT_TRUE(disk.write(block(20), host_, 0));  // the disk is back
  disk.inject_fault(DiskOp::kRead, EIO, 1);
  EXPECT_EQ(disk.read(hash(20), host_, 1), DiskReadResult::kIoError);
  EXPECT_EQ(disk.stats().io_errors, 3u);
}

TEST_F(DiskStoreTest, WithoutSyncWritesNoFlushIsIssued) {
  auto c = config();
  c.sync_writes = false;
  DiskStore disk(c);
  disk.inject_fault(DiskOp::kSync, EIO, 1);  // would fail a flush: none is made
  fill(host_, 0, 9);
  ASSERT_TRUE(disk.write(block(40), host_, 0));
  EXPECT_EQ(disk.read(hash(40), host_, 1), DiskReadResult::kOk);
  EXPECT_EQ(read(host_, 1), read(host_, 0));
  EXPECT_EQ(disk.stats().write_failures, 0u);
}

TEST_F(DiskStoreTest, RemoveDeletesTheFile) {
  auto c = config();
  c.spare_files = 0;
  DiskStore disk(c);
  ASSERT_TRUE(disk.write(block(30), host_, 0));
  disk.remove(hash(30));
  disk.remove(hash(31));  // absent: nothing to do
  EXPECT_FALSE(fs::exists(disk.path_of_hash(hash(30))));
  EXPECT_EQ(disk.stats().removed, 1u);
}

std::size_t files_in(const fs::path& dir) {
  return static_cast<std::size_t>(std::distance(fs::directory_iterator(dir), fs::directory_iterator{}));
}

TEST_F(DiskStoreTest, ARemovedBlocksFileIsOverwrittenByTheNextWrite) {
  {
    DiskStore disk(config());
    fill(host_, 0, 1);
    fill(host_, 1, 2);
    ASSERT_TRUE(disk.write(block(30), host_, 0));
    disk.remove(hash(30));
    EXPECT_FALSE(fs::exists(disk.path_of_hash(hash(30))));
    EXPECT_EQ(files_in(dir_ / "spare"), 1u);
    EXPECT_EQ(disk.read(hash(30), host_, 2), DiskReadResult::kMissing);
    ASSERT_TRUE(disk.write(block(31), host_, 1));  // into the spare
    EXPECT_EQ(files_in(dir_ / "spare"), 0u);
    ASSERT_TRUE(disk.write(block(32), host_, 0));  // no spare left: a new file
    const auto s = disk.stats();
    EXPECT_EQ(s.writes, 3u);
    EXPECT_EQ(s.reused_files, 1u);
    EXPECT_EQ(s.removed, 1u);
    EXPECT_EQ(disk.read(hash(31), host_, 2), DiskReadResult::kOk);
    EXPECT_EQ(read(host_, 2), read(host_, 1));
    disk.remove(hash(32));  // left as a spare across the restart
  }
  DiskStore again(config());
  ASSERT_EQ(again.recovered().size(), 1u);
  EXPECT_EQ(again.recovered()[0].hash, hash(31));
  EXPECT_EQ(again.recovered()[0].tokens, (std::vector<llmds::TokenId>{1, 2, 3, 31}));
  EXPECT_EQ(files_in(dir_ / "spare"), 0u);  // spares are emptied at open
  EXPECT_EQ(again.stats().discarded_at_open, 0u);
  EXPECT_EQ(again.read(hash(31), host_, 3), DiskReadResult::kOk);
  EXPECT_EQ(read(host_, 3), read(host_, 1));
}

TEST_F(DiskStoreTest, SparesAreKeptUpToTheirLimitAndTheRestDeleted) {
  auto c = config();
  c.spare_files = 2;
  DiskStore disk(c);
  for (std::uint64_t h = 1; h <= 5; ++h) ASSERT_TRUE(disk.write(block(h), host_, 0));
  for (std::uint64_t h = 1; h <= 5; ++h) disk.remove(hash(h));
  EXPECT_EQ(files_in(dir_ / "spare"), 2u);
  EXPECT_EQ(disk.stats().removed, 5u);
  for (std::uint64_t h = 1; h <= 5; ++h) EXPECT_FALSE(fs::exists(disk.path_of_hash(hash(h))));

  c.spare_files = 0;
  fs::remove_all(dir_ / "x");
  c.directory = dir_ / "x";
  DiskStore none(c);
  ASSERT_TRUE(none.write(block(9), host_, 0));
  none.remove(hash(9));
  EXPECT_EQ(files_in(c.directory / "spare"), 0u);
  EXPECT_EQ(none.stats().removed, 1u);
}

TEST_F(DiskStoreTest, AFailedOverwriteOfASpareLosesOnlyTheSpare) {
  DiskStore disk(config());
  fill(host_, 0, 5);
  ASSERT_TRUE(disk.write(block(1), host_, 0));
  ASSERT_TRUE(disk.write(block(2), host_, 0));
  disk.remove(hash(2));
  for (const DiskOp op : {DiskOp::kWrite, DiskOp::kSync, DiskOp::kRename}) {
    ASSERT_TRUE(disk.write(block(3), host_, 0));
    disk.remove(hash(3));
    ASSERT_EQ(files_in(dir_ / "spare"), 1u);
    disk.inject_fault(op, op == DiskOp::kWrite ? ENOSPC : EIO, 1);
    EXPECT_FALSE(disk.write(block(4), host_, 1));
    EXPECT_FALSE(fs::exists(disk.path_of_hash(hash(4))));
    EXPECT_EQ(files_in(dir_ / "spare"), 0u);  // deleted: it may hold half a block
    EXPECT_TRUE(fs::is_empty(dir_ / "tmp"));
  }
  EXPECT_EQ(disk.stats().write_failures, 3u);
  EXPECT_EQ(disk.read(hash(1), host_, 2), DiskReadResult::kOk);  // the other blocks are intact
  EXPECT_EQ(read(host_, 2), read(host_, 0));
}

// write_batch: one flush for several blocks, each block as write() would store it, a block that
// fails alone failing alone, and a failed flush failing the batch and leaving no file of it.
TEST_F(DiskStoreTest, ABatchIsFlushedOnceAndFailsOnlyWhereItFailed) {
  DiskStore disk(config());
  std::vector<Bytes> payloads;
  for (unsigned i = 0; i < 4; ++i) {
    fill(host_, 0, 100 + i);
    payloads.push_back(read(host_, 0));
  }
  std::vector<StoredBlock> infos;
  for (std::uint64_t h = 50; h < 54; ++h) infos.push_back(block(h, h - 1));
  std::vector<DiskStore::BlockWrite> writes;
  for (std::size_t i = 0; i < 4; ++i) writes.push_back({&infos[i], payloads[i].data()});
  ASSERT_TRUE(disk.write(block(9), host_, 0));
  disk.remove(hash(9));  // a spare for the batch's first file
  std::vector<char> ok;
  disk.write_batch(writes, ok);
  EXPECT_EQ(ok, (std::vector<char>{1, 1, 1, 1}));
  EXPECT_EQ(disk.stats().reused_files, 1u);
  for (std::size_t i = 0; i < 4; ++i) {
    ASSERT_EQ(disk.read(hash(50 + i), host_, 1), DiskReadResult::kOk);
    EXPECT_EQ(read(host_, 1), payloads[i]);
  }
  for (std::uint64_t h = 50; h < 54; ++h) disk.remove(hash(h));

  disk.inject_fault(DiskOp::kWrite, ENOSPC, 1);  // the first block's write fails, alone
  disk.write_batch(writes, ok);
  EXPECT_EQ(ok, (std::vector<char>{0, 1, 1, 1}));
  EXPECT_FALSE(fs::exists(disk.path_of_hash(hash(50))));
  for (std::uint64_t h = 51; h < 54; ++h) disk.remove(hash(h));

  disk.inject_fault(DiskOp::kSync, EIO, 1);  // the flush fails: none of the batch is stored
  disk.write_batch(writes, ok);
  EXPECT_EQ(ok, (std::vector<char>{0, 0, 0, 0}));
  for (std::uint64_t h = 50; h < 54; ++h) EXPECT_FALSE(fs::exists(disk.path_of_hash(hash(h))));
  EXPECT_TRUE(fs::is_empty(dir_ / "tmp"));
  EXPECT_EQ(disk.stats().write_failures, 5u);  // one write, four in the failed flush
  disk.write_batch(writes, ok);  // the disk is back
  EXPECT_EQ(ok, (std::vector<char>{1, 1, 1, 1}));
  DiskStore::BlockWrite none[1] = {{&infos[0], payloads[0].data()}};
  disk.write_batch(std::span(none, 0), ok);
  EXPECT_TRUE(ok.empty());
}

TEST_F(DiskStoreTest, BadConfigsAreRefused) {
  auto c = config();
  c.hash_bytes = 0;
  EXPECT_THROW(DiskStore{c}, std::invalid_argument);
  c = config();
  c.directory.clear();
  EXPECT_THROW(DiskStore{c}, std::invalid_argument);
}

}  // namespace
