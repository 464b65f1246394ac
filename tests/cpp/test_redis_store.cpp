#include "llmds/kv/tiered/redis_store.hpp"

#include "llmds/kv/kv_cache.hpp"
#include "llmds/kv/tiered/kv_block_manager.hpp"
#include "llmds/kv/tiered/memory_store.hpp"
#include "llmds/kv/trace_replay.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <hiredis/hiredis.h>

namespace {

using namespace std::chrono_literals;
using Bytes = std::vector<std::byte>;

constexpr const char* kPassword = "llmds-test-password";

// A private redis-server on a free loopback port, with a password and no persistence, that a
// test can stop, restart and freeze (SIGSTOP) to inject the failures a remote tier must survive.
class RedisServer {
 public:
  explicit RedisServer(std::vector<std::string> extra = {}) : extra_(std::move(extra)) {
    port_ = free_port();
    dir_ = std::filesystem::temp_directory_path() / ("llmds-redis-" + std::to_string(::getpid()) + "-" + std::to_string(port_));
    std::filesystem::create_directories(dir_);
  }
  ~RedisServer() {
    stop();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  static bool available() { return std::system("command -v redis-server > /dev/null 2>&1") == 0; }

  bool start() {
    pid_ = ::fork();
    if (pid_ == 0) {
      std::vector<std::string> args = {"redis-server", "--port", std::to_string(port_), "--bind", "127.0.0.1",
                                       "--requirepass", kPassword, "--save", "", "--appendonly", "no",
                                       "--dir", dir_.string(), "--loglevel", "warning", "--logfile", ""};
      args.insert(args.end(), extra_.begin(), extra_.end());
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execvp("redis-server", argv.data());
      std::_Exit(127);
    }
    // Ready when it answers.
    for (int i = 0; i < 500; ++i) {
      if (answers()) return true;
      std::this_thread::sleep_for(10ms);
    }
    return false;
  }
  void stop() {
    if (pid_ <= 0) return;
    if (frozen_) resume();
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  void freeze() {
    ::kill(pid_, SIGSTOP);
    frozen_ = true;
  }
  void resume() {
    ::kill(pid_, SIGCONT);
    frozen_ = false;
  }
  [[nodiscard]] int port() const noexcept { return port_; }

  // A raw command as a test's own client (AUTH first).
  std::string command(const std::vector<std::string>& args) const {
    redisContext* c = redisConnect("127.0.0.1", port_);
    if (c == nullptr || c->err) {
      if (c) redisFree(c);
      return "<no connection>";
    }
    auto* auth = static_cast<redisReply*>(redisCommand(c, "AUTH %s", kPassword));
    if (auth) freeReplyObject(auth);
    std::vector<const char*> argv;
    std::vector<std::size_t> lens;
    for (const auto& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    auto* r = static_cast<redisReply*>(redisCommandArgv(c, static_cast<int>(args.size()), argv.data(), lens.data()));
    std::string out = "<error>";
    if (r != nullptr) {
      if (r->type == REDIS_REPLY_INTEGER) out = std::to_string(r->integer);
      if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS || r->type == REDIS_REPLY_ERROR) out = std::string(r->str, r->len);
      if (r->type == REDIS_REPLY_NIL) out = "<nil>";
      freeReplyObject(r);
    }
    redisFree(c);
    return out;
  }

 private:
  static int free_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    socklen_t len = sizeof addr;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    ::close(fd);
    return ntohs(addr.sin_port);
  }
  bool answers() const { return command({"PING"}) == "PONG"; }

  std::vector<std::string> extra_;
  int port_ = 0;
  pid_t pid_ = -1;
  bool frozen_ = false;
  std::filesystem::path dir_;
};

llmds::RedisStoreConfig config_for(const RedisServer& server, llmds::BlockGeometry geometry = {4, 2, 2, 16, llmds::ScalarType::kFloat16}) {
  llmds::RedisStoreConfig c;
  c.port = server.port();
  c.password = kPassword;
  c.model = "stories260K";
  c.geometry = geometry;
  c.backoff_min = 20ms;
  c.backoff_max = 80ms;
  c.command_timeout = 300ms;
  return c;
}

struct Blocks {
  std::vector<Bytes> hashes, bytes;
  Blocks(std::size_t n, std::size_t block_bytes, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    for (std::size_t i = 0; i < n; ++i) {
      Bytes h(32), b(block_bytes);
      for (auto& x : h) x = static_cast<std::byte>(rng());
      for (auto& x : b) x = static_cast<std::byte>(rng());
      hashes.push_back(std::move(h));
      bytes.push_back(std::move(b));
    }
  }
  std::vector<llmds::RemoteBlock> blocks() const {
    std::vector<llmds::RemoteBlock> out;
    for (std::size_t i = 0; i < hashes.size(); ++i) out.push_back({hashes[i], bytes[i]});
    return out;
  }
  std::vector<std::span<const std::byte>> keys() const { return {hashes.begin(), hashes.end()}; }
};

#define LLMDS_NEED_REDIS()                                                                        \
  if (!RedisServer::available()) GTEST_SKIP() << "redis-server is not installed (Debian: redis-server)"

// Reads every block back: per block, whether it came back intact with the bytes it was put with.
std::vector<bool> read_back(llmds::RedisBlockStore& store, const Blocks& b) {
  std::vector<Bytes> out(b.hashes.size(), Bytes(store.geometry().block_bytes()));
  std::vector<std::byte*> ptrs;
  for (auto& o : out) ptrs.push_back(o.data());
  auto got = store.get(b.keys(), ptrs);
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (got[i]) {
      EXPECT_EQ(out[i], b.bytes[i]) << "block " << i;
    }
  }
  return got;
}

TEST(RedisBlockStore, BlocksComeBackIntactAndALookupStopsAtTheFirstMiss) {
  LLMDS_NEED_REDIS();
  RedisServer server;
  ASSERT_TRUE(server.start());
  llmds::RedisBlockStore store(config_for(server));
  const Blocks b(6, store.geometry().block_bytes(), 1);
  auto all = b.blocks();
  const std::vector<llmds::RemoteBlock> first_four(all.begin(), all.begin() + 4);
  EXPECT_EQ(store.put(first_four), std::vector<bool>(4, true));
  EXPECT_EQ(store.lookup(b.keys()), 4u);
  auto gap = b.keys();
  std::swap(gap[1], gap[5]);  // 0, 5 (absent), 2, 3
  EXPECT_EQ(store.lookup(gap), 1u);
  EXPECT_EQ(read_back(store, b), (std::vector<bool>{true, true, true, true, false, false}));
  EXPECT_EQ(server.command({"EXISTS", store.key_of(b.hashes[0])}), "1");
  EXPECT_TRUE(store.key_of(b.hashes[0]).starts_with("llmds:stories260K:"));
  EXPECT_EQ(store.key_of(b.hashes[0]).size(), std::string("llmds:stories260K:").size() + 64);
  store.remove(b.keys());
  EXPECT_EQ(store.lookup(b.keys()), 0u);
  const auto s = store.stats();
  EXPECT_EQ(s.stored_blocks, 4u);
  EXPECT_EQ(s.read_blocks, 4u);
  EXPECT_EQ(s.missed_reads, 2u);
  EXPECT_EQ(s.corrupt_blocks, 0u);
  EXPECT_EQ(s.connects, 1u);
  EXPECT_TRUE(s.connected);
}

TEST(RedisBlockStore, LargeBlocksGoInOnePipeline) {
  LLMDS_NEED_REDIS();
  RedisServer server;
  ASSERT_TRUE(server.start());
  llmds::RedisBlockStore store(config_for(server, {16, 16, 2, 1024, llmds::ScalarType::kFloat16}));  // 512 KiB
  ASSERT_EQ(store.geometry().block_bytes(), 512u * 1024);
  const Blocks b(16, store.geometry().block_bytes(), 2);
  EXPECT_EQ(store.put(b.blocks()), std::vector<bool>(16, true));
  EXPECT_EQ(read_back(store, b), std::vector<bool>(16, true));
}

TEST(RedisBlockStore, AValueThatFailsItsChecksIsAMissAndIsDeleted) {
  LLMDS_NEED_REDIS();
  RedisServer server;
  ASSERT_TRUE(server.start());
  llmds::RedisBlockStore store(config_for(server));
  const Blocks b(4, store.geometry().block_bytes(), 3);
  ASSERT_EQ(store.put(b.blocks()), std::vector<bool>(4, true));
  // Block 0: a flipped payload byte. Block 1: block 2's value under block 1's key. Block 2: an
  // intact value of another scalar type. Block 3: truncated.
  std::string v0 = store.encode_value(b.hashes[0], b.bytes[0]);
  v0.back() ^= 1;
  server.command({"SET", store.key_of(b.hashes[0]), v0});
  server.command({"SET", store.key_of(b.hashes[1]), store.encode_value(b.hashes[2], b.bytes[2])});
  auto other = config_for(server, {4, 2, 2, 16, llmds::ScalarType::kBFloat16});
  llmds::RedisBlockStore other_store(other);
  server.command({"SET", store.key_of(b.hashes[2]), other_store.encode_value(b.hashes[2], b.bytes[2])});
  const std::string v3 = store.encode_value(b.hashes[3], b.bytes[3]);
  server.command({"SET", store.key_of(b.hashes[3]), v3.substr(0, v3.size() - 1)});
  EXPECT_EQ(read_back(store, b), std::vector<bool>(4, false));
  EXPECT_EQ(store.stats().corrupt_blocks, 3u);
  EXPECT_EQ(store.stats().foreign_blocks, 1u);  // intact, of another shape: not this store's to delete
  EXPECT_EQ(server.command({"EXISTS", store.key_of(b.hashes[0])}), "0");
  EXPECT_EQ(server.command({"EXISTS", store.key_of(b.hashes[1])}), "0");
  EXPECT_EQ(server.command({"EXISTS", store.key_of(b.hashes[2])}), "1");
  EXPECT_EQ(server.command({"EXISTS", store.key_of(b.hashes[3])}), "0");
}

TEST(RedisBlockStore, AWrongPasswordIsAStoreThatFindsAndKeepsNothing) {
  LLMDS_NEED_REDIS();
  RedisServer server;
  ASSERT_TRUE(server.start());
  auto c = config_for(server);
  c.password = "not-the-password";
  llmds::RedisBlockStore store(c);
  const Blocks b(3, store.geometry().block_bytes(), 4);
  EXPECT_EQ(store.put(b.blocks()), std::vector<bool>(3, false));
  EXPECT_EQ(store.lookup(b.keys()), 0u);
  const auto s = store.stats();
  EXPECT_EQ(s.dropped_stores, 3u);
  EXPECT_GE(s.connection_failures, 1u);
  EXPECT_FALSE(s.connected);
}

TEST(RedisBlockStore, AServerThatIsDownThenStartsIsReachedAfterTheBackoff) {
  LLMDS_NEED_REDIS();
  RedisServer server;  // not started
  auto c = config_for(server);
  c.backoff_min = 300ms;
  c.backoff_max = 300ms;
  llmds::RedisBlockStore store(c);
  const Blocks b(3, store.geometry().block_bytes(), 5);
  EXPECT_EQ(store.put(b.blocks()), std::vector<bool>(3, false));
  EXPECT_EQ(store.lookup(b.keys()), 0u);  // within the backoff: not even attempted
  EXPECT_EQ(store.stats().connection_failures, 1u);
  ASSERT_TRUE(server.start());
  std::this_thread::sleep_for(400ms);  // past the backoff
  EXPECT_EQ(store.put(b.blocks()), std::vector<bool>(3, true));
  EXPECT_EQ(store.lookup(b.keys()), 3u);
  EXPECT_EQ(store.stats().connects, 1u);
}

TEST(RedisBlockStore, ARestartedServerIsReconnectedAndTheStoreKeepsServing) {
  LLMDS_NEED_REDIS();
  RedisServer server;
  ASSERT_TRUE(server.start());
  llmds::RedisBlockStore store(config_for(server));
  const Blocks b(3, store.geometry().block_bytes(), 6);
  ASSERT_EQ(store.put(b.blocks()), std::vector<bool>(3, true));
  server.stop();
  EXPECT_EQ(store.lookup(b.keys()), 0u);  // the connection is found dead
  EXPECT_EQ(read_back(store, b), std::vector<bool>(3, false));
  ASSERT_TRUE(server.start());  // empty: no persistence
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(store.lookup(b.keys()), 0u);
  EXPECT_EQ(store.put(b.blocks()), std::vector<bool>(3, true));
  EXPECT_EQ(read_back(store, b), std::vector<bool>(3, true));
  const auto s = store.stats();
  EXPECT_EQ(s.connects, 2u);
  EXPECT_GE(s.connection_failures, 1u);
}

TEST(RedisBlockStore, AServerThatStopsAnsweringTimesOutAndIsCountedDown) {
  LLMDS_NEED_REDIS();
  RedisServer server;
  ASSERT_TRUE(server.start());
  llmds::RedisBlockStore store(config_for(server));
  const Blocks b(2, store.geometry().block_bytes(), 7);
  ASSERT_EQ(store.put(b.blocks()), std::vector<bool>(2, true));
  server.freeze();
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(read_back(store, b), std::vector<bool>(2, false));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);  // the command timeout, not a hang
  EXPECT_EQ(store.put(b.blocks()), std::vector<bool>(2, false));  // within the backoff
  server.resume();
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(read_back(store, b), std::vector<bool>(2, true));
  EXPECT_GE(store.stats().connection_failures, 1u);
  EXPECT_EQ(store.stats().dropped_stores, 2u);
}

TEST(RedisBlockStore, RedisEvictsUnderMaxmemoryAndRefusalsAreDroppedStores) {
  LLMDS_NEED_REDIS();
  llmds::BlockGeometry big{16, 16, 2, 1024, llmds::ScalarType::kFloat16};  // 512 KiB
  {
    RedisServer server({"--maxmemory", "4mb", "--maxmemory-policy", "allkeys-lru"});
    ASSERT_TRUE(server.start());
    llmds::RedisBlockStore store(config_for(server, big));
    const Blocks b(24, big.block_bytes(), 8);
    for (const auto& block : b.blocks()) EXPECT_EQ(store.put(std::span(&block, 1)), std::vector<bool>{true});
    const auto kept = read_back(store, b);
    const auto n = std::count(kept.begin(), kept.end(), true);
    // Redis bounded itself: some blocks left (its LRU clock ticks once a second, so which ones
    // is its sampling's choice), the rest came back whole; every store was accepted.
    EXPECT_GT(n, 0);
    EXPECT_LT(n, 24);
    EXPECT_EQ(store.stats().dropped_stores, 0u);
    EXPECT_EQ(store.stats().corrupt_blocks, 0u);
  }
  {
    RedisServer server({"--maxmemory", "2mb", "--maxmemory-policy", "noeviction"});
    ASSERT_TRUE(server.start());
    llmds::RedisBlockStore store(config_for(server, big));
    const Blocks b(12, big.block_bytes(), 9);
    std::size_t refused = 0;
    for (const auto& block : b.blocks()) refused += store.put(std::span(&block, 1))[0] ? 0 : 1;
    EXPECT_GT(refused, 0u);
    EXPECT_EQ(store.stats().dropped_stores, refused);
    EXPECT_TRUE(store.stats().connected);  // a refusal is not a lost connection
  }
}

// The remote tier end to end: two block managers, each with its own connection, share blocks
// through one Redis server.
TEST(RedisBlockStore, TwoManagersShareBlocksThroughOneServer) {
  LLMDS_NEED_REDIS();
  RedisServer server;
  ASSERT_TRUE(server.start());
  const llmds::BlockGeometry g{4, 2, 2, 16, llmds::ScalarType::kFloat16};
  struct Replica {
    llmds::RedisBlockStore remote;
    llmds::MemoryStore<llmds::ContiguousLayout> primary;
    llmds::KVBlockManager<std::int64_t> manager;
    Replica(const llmds::RedisStoreConfig& c, const llmds::BlockGeometry& g)
        : remote(c), primary(llmds::ContiguousLayout(g, 8)), manager(config(g), llmds::TierStores{&primary, nullptr, nullptr, &remote}) {}
    static llmds::KVBlockManagerConfig config(const llmds::BlockGeometry& g) {
      llmds::KVBlockManagerConfig c;
      c.primary_blocks = 8;
      c.block_size = g.tokens;
      return c;
    }
  };
  Replica a(config_for(server, g), g), b(config_for(server, g), g);
  const Blocks data(3, g.block_bytes(), 11);
  const std::vector<std::int64_t> keys{101, 102, 103};
  const auto blocks = a.manager.allocate(3);
  for (std::size_t i = 0; i < 3; ++i) a.primary.write_block(static_cast<std::size_t>(blocks[i]), data.bytes[i].data());
  a.manager.register_blocks(blocks, keys);
  a.manager.release(std::vector<llmds::BlockId>(blocks.rbegin(), blocks.rend()));
  a.manager.flush();  // the remote writer has put them
  EXPECT_EQ(a.manager.counters(llmds::Tier::kRemote).stored_blocks, 3u);

  const auto got = b.manager.onboard_remote(keys);
  ASSERT_EQ(got.size(), 3u);
  for (std::size_t i = 0; i < 3; ++i) {
    Bytes out(g.block_bytes());
    b.primary.read_block(static_cast<std::size_t>(got[i]), out.data());
    EXPECT_EQ(out, data.bytes[i]);
  }
  server.stop();  // the shared tier goes away: misses, and the managers keep serving
  EXPECT_TRUE(a.manager.onboard_remote(std::vector<std::int64_t>{104}).empty());
  const auto more = a.manager.allocate(1);
  a.manager.register_blocks(more, std::vector<std::int64_t>{104});
  a.manager.release(more);
  a.manager.flush();
  EXPECT_GE(a.manager.counters(llmds::Tier::kRemote).failed_transfers, 1u);
  b.manager.release(std::vector<llmds::BlockId>(got.rbegin(), got.rend()));
}

// Replicas of a trace replay find the blocks the others computed.
TEST(RedisBlockStore, ATraceReplayFindsWhatAnotherReplicaComputed) {
  LLMDS_NEED_REDIS();
  RedisServer server;
  ASSERT_TRUE(server.start());
  const auto trace = llmds::parse_mooncake_trace(
      R"({"timestamp": 0, "input_length": 2048, "output_length": 10, "hash_ids": [1, 2, 3, 4]})"
      "\n"
      R"({"timestamp": 1, "input_length": 2048, "output_length": 10, "hash_ids": [1, 2, 5, 6]})");
  const llmds::BlockGeometry g{1, 1, 1, 64, llmds::ScalarType::kOther};
  llmds::RedisBlockStore first(config_for(server, g)), second(config_for(server, g));
  llmds::TieredReplayConfig c;
  c.primary_blocks = 8;
  c.block_bytes = 64;
  c.move_bytes = true;
  c.remote = &first;
  const auto alone = llmds::replay_tiered_prefix_cache(trace, c);
  EXPECT_EQ(alone.hit_blocks, 2u);  // 1 and 2, from its own primary
  c.remote = &second;
  const auto other = llmds::replay_tiered_prefix_cache(trace, c);  // a fresh replica
  EXPECT_EQ(other.hit_blocks, 3u + 3u);  // every block but each prompt's last, 1-3 then 1, 2, 5
  EXPECT_GT(other.tier_hit_rate(llmds::Tier::kRemote), 0.0);
  c.move_bytes = false;
  EXPECT_THROW(llmds::replay_tiered_prefix_cache(trace, c), std::invalid_argument);
}

// Two KV caches (two engines' arenas) sharing one Redis server: a prompt one computed comes
// back in the other with its entries.
TEST(RedisBlockStore, TwoKVCachesShareAPromptsPagesWithTheirEntries) {
  LLMDS_NEED_REDIS();
  RedisServer server;
  ASSERT_TRUE(server.start());
  llmds::KVCacheConfig c;
  c.page_size = 4;
  c.max_pages = 8;
  c.entry_width = 3;
  const auto geometry = llmds::KVCache<float>::page_geometry(c);
  llmds::RedisBlockStore store_a(config_for(server, geometry)), store_b(config_for(server, geometry));
  c.tiers.remote = &store_a;
  llmds::KVCache<float> a(c);
  c.tiers.remote = &store_b;
  llmds::KVCache<float> b(c);
  std::vector<llmds::TokenId> tokens(14);
  std::vector<float> kv(14 * 3);
  for (std::size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<llmds::TokenId>(100 + i);
  for (std::size_t i = 0; i < kv.size(); ++i) kv[i] = 0.25f * static_cast<float>(i);
  a.attach(1, kv, tokens);  // its 3 full pages registered, and written through to Redis
  a.tiers()->flush();
  EXPECT_EQ(a.tiers()->counters(llmds::Tier::kRemote).stored_blocks, 3u);

  llmds::PrefixSource source;
  const std::size_t have = b.attach_cached_prefix(7, tokens, {}, &source);
  EXPECT_EQ(have, 12u);
  EXPECT_EQ(source.remote_pages, 3u);
  const auto got = b.get(7);
  ASSERT_TRUE(got.has_value());
  EXPECT_TRUE(std::equal(got->begin(), got->end(), kv.begin()));
  b.append(7, std::span(kv).subspan(have * 3));
  EXPECT_EQ(b.get(7), kv);
  b.detach(7);
  // Without the server: nothing from it, and the cache serves on.
  server.stop();
  llmds::PrefixSource none;
  c.tiers.remote = &store_b;
  EXPECT_EQ(a.attach_cached_prefix(9, std::vector<llmds::TokenId>{1, 2, 3, 4, 5}, {}, &none), 0u);
  EXPECT_EQ(none.remote_pages, 0u);
  a.detach(9);
  a.detach(1);
}

TEST(RedisBlockStore, BadConfigsAndBlocksAreRefused) {
  llmds::RedisStoreConfig c;
  c.geometry = {4, 2, 2, 16, llmds::ScalarType::kFloat16};
  c.port = 0;
  EXPECT_THROW(llmds::RedisBlockStore{c}, std::invalid_argument);
  c.port = 6379;
  c.geometry.tokens = 0;
  EXPECT_THROW(llmds::RedisBlockStore{c}, std::invalid_argument);
  c.geometry.tokens = 4;
  c.backoff_max = 1ms;
  EXPECT_THROW(llmds::RedisBlockStore{c}, std::invalid_argument);
  c.backoff_max = 5000ms;
  c.key_namespace = "";
  EXPECT_THROW(llmds::RedisBlockStore{c}, std::invalid_argument);
  c.key_namespace = "llmds";
  llmds::RedisBlockStore store(c);
  const Blocks b(1, 7, 10);  // the wrong size
  EXPECT_THROW(store.put(b.blocks()), std::invalid_argument);
}

}  // namespace
