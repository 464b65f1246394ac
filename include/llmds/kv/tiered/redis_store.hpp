// RedisBlockStore: KV blocks in a Redis server that many llmds servers share.
//
// The remote tier of a tiered KV cache (kv/tiered/remote_store.hpp) on an engine deployments
// already run: Redis, reached through hiredis. One key per block,
//
//   <namespace>:<model>:<block hash in hex>
//
// (the chained hash already covers the tenant's salt), whose value is a header followed by the
// block's bytes in logical order:
//
//   magic "LLMDSKVR" | u32 format version | u8 layout (0: logical order) | u8 scalar type |
//   u16 0 | u32 tokens | u32 layers | u32 parts | u32 row bytes | u32 hash length | hash |
//   u64 payload bytes | u64 payload checksum | u64 header checksum | payload
//
// little-endian, the checksums the library's seeded 64-bit hash (its four-lane form, which keeps
// up with the network). A value read back is used only
// if both checksums hold and every field matches this store (geometry, the hash it was asked
// for). A value that fails a checksum, or holds another block than its key names, is a miss,
// counted as corrupt, and deleted so that the next writer replaces it. An intact value of
// another block shape (another configuration writing under the same namespace and model) is a
// miss counted as foreign, and left alone: it is not this store's to delete. Redis bounds the store itself (maxmemory with an LRU policy), so a block
// found by lookup may be gone by the time it is read: the manager treats a lookup as a hint.
//
// Round trips. lookup sends one EXISTS per hash and put / get one SET / GET per block, all
// pipelined: a call costs one round trip however many blocks it carries.
//
// Failure. Every call may find the server down, restarted, slow or refusing (a wrong password,
// out of memory): none of that throws. A call that cannot reach the server finds nothing
// (lookup 0, get all misses) and stores nothing (put all false), counted; a connection that
// failed or timed out mid-pipeline is closed (its replies can no longer be matched to commands)
// and opened again on a later call, no sooner than a backoff that doubles from backoff_min to
// backoff_max while attempts fail, so a dead server costs a caller one timed-out attempt per
// backoff period, not one per call.
//
// Threads: every call takes the store's mutex (one connection, whose pipeline is a sequence).
#pragma once

#include <hiredis/hiredis.h>
#include <limits.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "llmds/detail/binary_io.hpp"
#include "llmds/detail/hash.hpp"
#include "llmds/kv/tiered/block_layout.hpp"
#include "llmds/kv/tiered/remote_store.hpp"

namespace llmds {

struct RedisStoreConfig {
  std::string host = "127.0.0.1";
  int port = 6379;                     // Redis's default
  std::string unix_socket;             // if set, used instead of host and port
  std::string username;                // Redis 6 ACL user; empty: the default user
  std::string password;                // AUTH; empty: none
  int database = 0;                    // SELECT
  std::string key_namespace = "llmds";
  std::string model;                   // keys of different models never meet
  BlockGeometry geometry;
  std::chrono::milliseconds connect_timeout{500};
  std::chrono::milliseconds command_timeout{2000};  // per reply: a slower server counts as down
  std::chrono::milliseconds backoff_min{100};
  std::chrono::milliseconds backoff_max{5000};
  std::optional<std::chrono::seconds> ttl;  // SET ... EX; none: Redis's maxmemory policy bounds the store

  void validate() const {
    geometry.validate();
    if (unix_socket.empty() && (host.empty() || port <= 0 || port > 65535)) {
      throw std::invalid_argument(fmt::format("RedisStoreConfig: host and a port in [1, 65535] needed, got '{}':{}", host, port));
    }
    if (database < 0) throw std::invalid_argument("RedisStoreConfig.database must not be negative");
    if (key_namespace.empty()) throw std::invalid_argument("RedisStoreConfig.key_namespace must not be empty");
    if (connect_timeout.count() <= 0 || command_timeout.count() <= 0) {
      throw std::invalid_argument("RedisStoreConfig: timeouts must be positive");
    }
    if (backoff_min.count() <= 0 || backoff_max < backoff_min) {
      throw std::invalid_argument("RedisStoreConfig: 0 < backoff_min <= backoff_max needed");
    }
    if (ttl && ttl->count() <= 0) throw std::invalid_argument("RedisStoreConfig.ttl must be positive");
  }
};

struct RedisStoreStats {
  std::uint64_t lookups = 0;             // lookup calls
  std::uint64_t lookup_hits = 0;         // leading blocks they found
  std::uint64_t stored_blocks = 0;
  std::uint64_t dropped_stores = 0;      // blocks put could not store (server down, refused)
  std::uint64_t read_blocks = 0;         // blocks get read intact
  std::uint64_t missed_reads = 0;        // blocks get did not find (or could not reach)
  std::uint64_t corrupt_blocks = 0;      // values that failed their checks (deleted)
  std::uint64_t foreign_blocks = 0;      // intact values of another block shape (left alone)
  std::uint64_t connects = 0;            // connections opened
  std::uint64_t connection_failures = 0; // attempts that failed, connections lost or timed out
  std::uint64_t bytes_written = 0;       // values sent (header and payload)
  std::uint64_t bytes_read = 0;
  bool connected = false;

  template <class Visit>
  void for_each_field(Visit&& visit) const {
    visit("lookups", lookups);
    visit("lookup_hits", lookup_hits);
    visit("stored_blocks", stored_blocks);
    visit("dropped_stores", dropped_stores);
    visit("read_blocks", read_blocks);
    visit("missed_reads", missed_reads);
    visit("corrupt_blocks", corrupt_blocks);
    visit("foreign_blocks", foreign_blocks);
    visit("connects", connects);
    visit("connection_failures", connection_failures);
    visit("bytes_written", bytes_written);
    visit("bytes_read", bytes_read);
    visit("connected", connected);
  }
};

class RedisBlockStore final : public RemoteBlockStore {
 public:
  static constexpr std::uint32_t kVersion = 1;
  static constexpr std::string_view kMagic = "LLMDSKVR";

  /// Does not connect: the first call does (and a server that is down is no error here).
  /// Throws std::invalid_argument for a bad config.
  explicit RedisBlockStore(RedisStoreConfig config) : config_((config.validate(), std::move(config))) {}

  RedisBlockStore(const RedisBlockStore&) = delete;
  RedisBlockStore& operator=(const RedisBlockStore&) = delete;

  [[nodiscard]] const BlockGeometry& geometry() const noexcept override { return config_.geometry; }
  [[nodiscard]] const RedisStoreConfig& config() const noexcept { return config_; }

  /// The key a block hash is stored under.
  [[nodiscard]] std::string key_of(std::span<const std::byte> hash) const {
    static constexpr char kHex[] = "0123456789abcdef";
    std::string key = config_.key_namespace + ":" + config_.model + ":";
    for (const std::byte b : hash) {
      key += kHex[std::to_integer<unsigned>(b) >> 4];
      key += kHex[std::to_integer<unsigned>(b) & 15];
    }
    return key;
  }

  std::size_t lookup(std::span<const std::span<const std::byte>> hashes) override {
    const std::lock_guard lock(mu_);
    ++stats_.lookups;
    std::vector<std::string> keys;
    keys.reserve(hashes.size());
    for (const auto& h : hashes) keys.push_back(key_of(h));
    std::size_t found = 0;
    pipeline(
        keys.size(), [&](std::size_t i, Command& c) { c.args = {"EXISTS", keys[i]}; },
        [&](std::size_t i, const redisReply& r) {
          if (found == i && r.type == REDIS_REPLY_INTEGER && r.integer == 1) ++found;
        });
    stats_.lookup_hits += found;
    return found;
  }

  std::vector<bool> put(std::span<const RemoteBlock> blocks) override {
    const std::lock_guard lock(mu_);
    std::vector<bool> stored(blocks.size(), false);
    const std::size_t bytes = config_.geometry.block_bytes();
    std::vector<std::string> keys, headers;
    for (const auto& b : blocks) {
      if (b.bytes.size() != bytes) throw std::invalid_argument(fmt::format("RedisBlockStore::put: a block of {} bytes, expected {}", b.bytes.size(), bytes));
    }
    keys.resize(blocks.size());
    headers.resize(blocks.size());
    const std::string ttl = config_.ttl ? std::to_string(config_.ttl->count()) : std::string();
    pipeline(
        blocks.size(),
        [&](std::size_t i, Command& c) {
          // Built as it is sent, so that checksumming a block overlaps the server taking the
          // last one. The value is the header and the caller's bytes, sent from where they are.
          keys[i] = key_of(blocks[i].hash);
          append_header(headers[i], blocks[i].hash, bytes, checksum(as_chars(blocks[i].bytes)));
          c.args = {"SET", keys[i], Arg{headers[i], as_chars(blocks[i].bytes)}};
          if (config_.ttl) {
            c.args.emplace_back("EX");
            c.args.emplace_back(ttl);
          }
        },
        [&](std::size_t i, const redisReply& r) {
          stored[i] = r.type == REDIS_REPLY_STATUS && std::string_view(r.str, r.len) == "OK";
        });
    for (std::size_t i = 0; i < blocks.size(); ++i) {
      if (stored[i]) {
        ++stats_.stored_blocks;
        stats_.bytes_written += headers[i].size() + bytes;
      } else {
        ++stats_.dropped_stores;
      }
    }
    return stored;
  }

  std::vector<bool> get(std::span<const std::span<const std::byte>> hashes, std::span<std::byte* const> out) override {
    if (out.size() != hashes.size()) throw std::invalid_argument("RedisBlockStore::get: one output per hash needed");
    const std::lock_guard lock(mu_);
    std::vector<bool> read(hashes.size(), false);
    std::vector<std::string> keys, corrupt;
    std::size_t foreign = 0;
    for (const auto& h : hashes) keys.push_back(key_of(h));
    // The values are read straight into out[i] (see read_values): a 512 KiB block is copied
    // once, from the socket, and checked where it lands.
    if (send_commands(keys.size(), [&](std::size_t i, Command& c) { c.args = {"GET", keys[i]}; })) {
      const bool whole = read_values(hashes, out, [&](std::size_t i, Value v) {
        switch (v) {
          case Value::kIntact: read[i] = true; break;
          case Value::kCorrupt: corrupt.push_back(keys[i]); break;
          case Value::kForeign: ++foreign; break;
          case Value::kAbsent: break;
        }
      });
      if (!whole) lose_connection();
    }
    const auto intact = static_cast<std::size_t>(std::ranges::count(read, true));
    stats_.read_blocks += intact;
    stats_.corrupt_blocks += corrupt.size();
    stats_.foreign_blocks += foreign;
    stats_.missed_reads += read.size() - intact - corrupt.size() - foreign;
    if (!corrupt.empty()) {
      pipeline(
          corrupt.size(), [&](std::size_t i, Command& c) { c.args = {"DEL", corrupt[i]}; },
          [](std::size_t, const redisReply&) {});
    }
    return read;
  }

  void remove(std::span<const std::span<const std::byte>> hashes) override {
    const std::lock_guard lock(mu_);
    std::vector<std::string> keys;
    for (const auto& h : hashes) keys.push_back(key_of(h));
    pipeline(
        keys.size(), [&](std::size_t i, Command& c) { c.args = {"DEL", keys[i]}; },
        [](std::size_t, const redisReply&) {});
  }

  [[nodiscard]] RedisStoreStats stats() const {
    const std::lock_guard lock(mu_);
    RedisStoreStats s = stats_;
    s.connected = connection_ != nullptr;
    return s;
  }

  /// Connects now if not connected (ignoring the backoff); whether the store is connected.
  bool connect() {
    const std::lock_guard lock(mu_);
    next_attempt_ = {};
    return ensure_connected();
  }

  /// The value stored for a block (exposed for tests and tools that inspect a store's data).
  [[nodiscard]] std::string encode_value(std::span<const std::byte> hash, std::span<const std::byte> payload) const {
    std::string v;
    v.reserve(header_size(hash.size()) + payload.size());
    const std::string_view bytes(reinterpret_cast<const char*>(payload.data()), payload.size());
    append_header(v, hash, bytes.size(), checksum(bytes));
    v.append(bytes);
    return v;
  }

 private:
  // One argument of a command: one piece, or two sent back to back (a value's header and its
  // payload, which is never copied into a buffer of ours).
  struct Arg {
    Arg(std::string_view one) : first(one) {}  // NOLINT: a piece is an argument
    Arg(const char* one) : first(one) {}       // NOLINT
    Arg(const std::string& one) : first(one) {}  // NOLINT
    Arg(std::string_view a, std::string_view b) : first(a), second(b) {}
    std::string_view first, second;
    [[nodiscard]] std::size_t size() const noexcept { return first.size() + second.size(); }
  };
  struct Command {
    std::vector<Arg> args;  // views of bytes the caller keeps until the replies
  };

  static std::string_view as_chars(std::span<const std::byte> bytes) noexcept {
    return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
  }
  struct ConnectionDeleter {
    void operator()(redisContext* c) const noexcept { redisFree(c); }
  };

  static constexpr std::size_t header_size(std::size_t hash_bytes) {
    return 8 + 4 + 4 + 4 * 4 + 4 + hash_bytes + 8 + 8 + 8;
  }

  template <class T>
  static void put_le(std::string& out, T value) {
    for (std::size_t i = 0; i < sizeof(T); ++i) out.push_back(static_cast<char>(static_cast<std::uint64_t>(value) >> (8 * i)));
  }
  template <class T>
  static T get_le(std::string_view in, std::size_t at) {
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < sizeof(T); ++i) v |= std::uint64_t{static_cast<unsigned char>(in[at + i])} << (8 * i);
    return static_cast<T>(v);
  }

  [[nodiscard]] static std::uint64_t checksum(std::string_view bytes) noexcept {
    return detail::hash_bytes_wide(bytes, detail::file_checksum_seed);
  }

  void append_header(std::string& v, std::span<const std::byte> hash, std::size_t payload_size,
                     std::uint64_t payload_checksum) const {
    const BlockGeometry& g = config_.geometry;
    v.append(kMagic);
    put_le(v, kVersion);
    put_le(v, std::uint8_t{0});  // layout: logical order
    put_le(v, static_cast<std::uint8_t>(g.scalar));
    put_le(v, std::uint16_t{0});
    put_le(v, g.tokens);
    put_le(v, g.layers);
    put_le(v, g.parts);
    put_le(v, g.row_bytes);
    put_le(v, static_cast<std::uint32_t>(hash.size()));
    v.append(reinterpret_cast<const char*>(hash.data()), hash.size());
    put_le(v, static_cast<std::uint64_t>(payload_size));
    put_le(v, payload_checksum);
    put_le(v, checksum(v));
  }

  enum class Value { kIntact, kCorrupt, kForeign, kAbsent };

  // What `value`, read under the key of `hash`, is; if intact, its payload is copied to out.
  Value decode_value(std::string_view value, std::span<const std::byte> hash, std::byte* out) const {
    constexpr std::size_t fixed = 8 + 4 + 4 + 4 * 4 + 4;  // the fields up to the hash length
    if (value.size() < fixed) return Value::kCorrupt;
    const std::size_t head = header_size(get_le<std::uint32_t>(value, fixed - 4));
    if (value.size() < head) return Value::kCorrupt;
    const Value v = check_value(value.substr(0, head), value.substr(head), hash);
    if (v == Value::kIntact) std::memcpy(out, value.data() + head, value.size() - head);
    return v;
  }

  // What a value of this header and payload, read under the key of `hash`, is.
  Value check_value(std::string_view header, std::string_view payload, std::span<const std::byte> hash) const {
    constexpr std::size_t fixed = 8 + 4 + 4 + 4 * 4 + 4;
    if (header.size() < fixed || header.substr(0, 8) != kMagic) return Value::kCorrupt;
    const auto hash_size = get_le<std::uint32_t>(header, fixed - 4);
    const std::size_t head = header.size();
    if (header_size(hash_size) != head) return Value::kCorrupt;
    if (get_le<std::uint64_t>(header, head - 8) != checksum(header.substr(0, head - 8))) return Value::kCorrupt;
    const std::uint64_t payload_checksum = checksum(payload);
    if (get_le<std::uint64_t>(header, head - 24) != payload.size() || get_le<std::uint64_t>(header, head - 16) != payload_checksum) {
      return Value::kCorrupt;
    }
    // Intact. Whose is it?
    if (header.substr(fixed, hash_size) != as_chars(hash)) return Value::kCorrupt;  // another block's, under this key
    std::string expected;
    append_header(expected, hash, payload.size(), payload_checksum);
    return header == expected ? Value::kIntact : Value::kForeign;  // foreign: another version or block shape
  }

  bool ensure_connected() {
    if (connection_) return true;
    const auto now = std::chrono::steady_clock::now();
    if (now < next_attempt_) return false;
    const timeval connect_tv = to_timeval(config_.connect_timeout);
    std::unique_ptr<redisContext, ConnectionDeleter> c(
        config_.unix_socket.empty() ? redisConnectWithTimeout(config_.host.c_str(), config_.port, connect_tv)
                                    : redisConnectUnixWithTimeout(config_.unix_socket.c_str(), connect_tv));
    bool ok = c && c->err == 0 && redisSetTimeout(c.get(), to_timeval(config_.command_timeout)) == REDIS_OK;
    if (ok && !config_.password.empty()) {
      std::vector<std::string_view> auth{"AUTH"};
      if (!config_.username.empty()) auth.push_back(config_.username);
      auth.push_back(config_.password);
      ok = simple_command(c.get(), auth);
    }
    const std::string database = std::to_string(config_.database);
    if (ok && config_.database != 0) ok = simple_command(c.get(), {"SELECT", database});
    // A server that wants a password we did not give answers PING with an error: not connected.
    if (ok) ok = simple_command(c.get(), {"PING"});
    if (!ok) {
      failed_attempt();
      return false;
    }
    connection_ = std::move(c);
    backoff_ = config_.backoff_min;
    ++stats_.connects;
    return true;
  }

  // A command whose reply must not be an error (AUTH, SELECT).
  static bool simple_command(redisContext* c, const std::vector<std::string_view>& args) {
    std::vector<const char*> argv;
    std::vector<std::size_t> lens;
    for (const auto& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    auto* reply = static_cast<redisReply*>(redisCommandArgv(c, static_cast<int>(args.size()), argv.data(), lens.data()));
    const bool ok = reply != nullptr && reply->type != REDIS_REPLY_ERROR;
    if (reply != nullptr) freeReplyObject(reply);
    return ok;
  }

  void failed_attempt() {
    ++stats_.connection_failures;
    next_attempt_ = std::chrono::steady_clock::now() + backoff_;
    backoff_ = std::min(backoff_ * 2, config_.backoff_max);
  }

  static timeval to_timeval(std::chrono::milliseconds ms) {
    return timeval{static_cast<time_t>(ms.count() / 1000), static_cast<suseconds_t>((ms.count() % 1000) * 1000)};
  }

  // Sends n commands in one pipeline and hands each reply to on_reply(i, reply), in order. The
  // commands go out in Redis's protocol (RESP) straight from the callers' bytes, in a few
  // sendmsg calls, rather than through hiredis's output buffer (which copies every argument and
  // moves the unsent rest after each partial write: quadratic for megabytes); hiredis reads the
  // replies. If the connection fails part way, the remaining commands get no reply (their
  // callers count them as not done) and it is closed, to be opened again after the backoff.
  template <class Build, class OnReply>
  void pipeline(std::size_t n, Build&& build, OnReply&& on_reply) {
    if (!send_commands(n, build)) return;
    for (std::size_t i = 0; i < n; ++i) {
      void* raw = nullptr;
      if (redisGetReply(connection_.get(), &raw) != REDIS_OK || raw == nullptr) {
        lose_connection();
        return;
      }
      const std::unique_ptr<redisReply, decltype(&freeReplyObject)> reply(static_cast<redisReply*>(raw), &freeReplyObject);
      on_reply(i, *reply);
    }
  }

  // The sending half of pipeline(): false (the connection closed, if it was open) if not sent.
  template <class Build>
  bool send_commands(std::size_t n, Build&& build) {
    if (n == 0 || !ensure_connected()) return false;
    redisContext* c = connection_.get();
    // Framing text (counts and lengths) in one string, the pieces by reference: offsets first,
    // since the string grows while commands are added. Sent whenever 64 KiB are waiting, so
    // that the server works on the first commands while the next ones are built.
    std::string framing;
    struct Piece {
      bool framed;  // a range of `framing`, else an argument's bytes
      std::size_t offset, size;
      const char* data;
    };
    std::vector<Piece> pieces;
    std::vector<iovec> iov;
    std::size_t waiting = 0;
    Command command;
    const auto frame = [&](auto&&... parts) {
      const std::size_t at = framing.size();
      (framing.append(parts), ...);
      pieces.push_back({true, at, framing.size() - at, nullptr});
      waiting += framing.size() - at;
    };
    const auto send_waiting = [&] {
      iov.clear();
      for (const Piece& p : pieces) {
        iov.push_back({const_cast<char*>(p.framed ? framing.data() + p.offset : p.data), p.size});
      }
      const bool sent = send_all(c->fd, iov);
      pieces.clear();
      framing.clear();
      waiting = 0;
      return sent;
    };
    for (std::size_t i = 0; i < n; ++i) {
      command.args.clear();
      build(i, command);
      frame("*", std::to_string(command.args.size()), "\r\n");
      for (const Arg& a : command.args) {
        frame("$", std::to_string(a.size()), "\r\n");
        if (!a.first.empty()) pieces.push_back({false, 0, a.first.size(), a.first.data()});
        if (!a.second.empty()) pieces.push_back({false, 0, a.second.size(), a.second.data()});
        waiting += a.size();
        frame("\r\n");
      }
      if ((waiting >= 64 * 1024 || i + 1 == n) && !send_waiting()) {
        lose_connection();
        return false;
      }
    }
    return true;
  }

  // Reads the replies to n GETs, a value of the expected size straight into out[i] (its header
  // into a small buffer, its payload where the caller wants it, checked there), any other value
  // into a scratch string to be classified; on_value(i, what it was). A reply that is neither a
  // value nor nil (an error) is a miss. False if the connection failed or the server spoke
  // something other than RESP: then the connection must be dropped.
  template <class OnValue>
  bool read_values(std::span<const std::span<const std::byte>> hashes, std::span<std::byte* const> out,
                   OnValue&& on_value) {
    SocketReader in(connection_.get()->fd);
    const std::size_t bytes = config_.geometry.block_bytes();
    std::string line, header, scratch;
    for (std::size_t i = 0; i < hashes.size(); ++i) {
      if (!in.line(line) || line.empty()) return false;
      if (line[0] == '-') {  // an error reply: nothing read
        on_value(i, Value::kAbsent);
        continue;
      }
      if (line[0] != '$') return false;
      const long long size = std::strtoll(line.c_str() + 1, nullptr, 10);
      if (size < 0) {  // nil: not there (any more)
        on_value(i, Value::kAbsent);
        continue;
      }
      const auto n = static_cast<std::size_t>(size);
      const std::size_t head = header_size(hashes[i].size());
      Value v;
      if (n == head + bytes) {
        header.resize(head);
        if (!in.exact(header.data(), head) || !in.exact(reinterpret_cast<char*>(out[i]), bytes)) return false;
        v = check_value(header, std::string_view(reinterpret_cast<const char*>(out[i]), bytes), hashes[i]);
      } else {
        scratch.resize(n);
        if (!in.exact(scratch.data(), n)) return false;
        v = decode_value(scratch, hashes[i], out[i]);
      }
      char crlf[2];
      if (!in.exact(crlf, 2) || crlf[0] != '\r' || crlf[1] != '\n') return false;
      stats_.bytes_read += n;
      on_value(i, v);
    }
    return true;
  }

  // Buffered reads from the connection's socket, for read_values: lines through a 64 KiB
  // buffer, long runs of bytes straight into their destination. Whatever it buffers belongs to
  // the replies it was asked for (the server sends nothing else, and a failed read drops the
  // connection), so hiredis's own reader, used for every other reply, never misses a byte.
  class SocketReader {
   public:
    explicit SocketReader(int fd) : fd_(fd) {}
    bool line(std::string& out) {
      out.clear();
      for (;;) {
        for (; pos_ < end_; ++pos_) {
          if (buffer_[pos_] == '\n' && !out.empty() && out.back() == '\r') {
            ++pos_;
            out.pop_back();
            return true;
          }
          out.push_back(buffer_[pos_]);
          if (out.size() > 64) return false;  // no RESP header line is this long
        }
        if (!fill()) return false;
      }
    }
    bool exact(char* dst, std::size_t n) {
      const std::size_t buffered = std::min(n, end_ - pos_);
      std::memcpy(dst, buffer_.data() + pos_, buffered);
      pos_ += buffered;
      for (std::size_t got = buffered; got < n;) {
        const ssize_t r = ::recv(fd_, dst + got, n - got, 0);
        if (r > 0) {
          got += static_cast<std::size_t>(r);
        } else if (r < 0 && errno == EINTR) {
          continue;
        } else {
          return false;  // closed, or the receive timeout
        }
      }
      return true;
    }

   private:
    bool fill() {
      for (;;) {
        const ssize_t r = ::recv(fd_, buffer_.data(), buffer_.size(), 0);
        if (r > 0) {
          pos_ = 0;
          end_ = static_cast<std::size_t>(r);
          return true;
        }
        if (r < 0 && errno == EINTR) continue;
        return false;
      }
    }
    int fd_;
    std::vector<char> buffer_ = std::vector<char>(64 * 1024);
    std::size_t pos_ = 0, end_ = 0;
  };

  // Writes every byte of iov, resuming after partial writes; false on an error or the send
  // timeout. MSG_NOSIGNAL: a server that went away is a failed call, not a SIGPIPE.
  static bool send_all(int fd, std::vector<iovec>& iov) {
    std::size_t first = 0;
    while (first < iov.size()) {
      msghdr msg{};
      msg.msg_iov = iov.data() + first;
      msg.msg_iovlen = std::min<std::size_t>(iov.size() - first, IOV_MAX);
      const ssize_t sent = ::sendmsg(fd, &msg, MSG_NOSIGNAL);
      if (sent < 0) {
        if (errno == EINTR) continue;
        return false;
      }
      auto left = static_cast<std::size_t>(sent);
      while (first < iov.size() && left >= iov[first].iov_len) left -= iov[first++].iov_len;
      if (left > 0) {
        iov[first].iov_base = static_cast<char*>(iov[first].iov_base) + left;
        iov[first].iov_len -= left;
      }
    }
    return true;
  }

  void lose_connection() {
    connection_.reset();
    failed_attempt();
  }

  const RedisStoreConfig config_;
  mutable std::mutex mu_;  // below
  std::unique_ptr<redisContext, ConnectionDeleter> connection_;
  std::chrono::steady_clock::time_point next_attempt_{};
  std::chrono::milliseconds backoff_ = config_.backoff_min;
  RedisStoreStats stats_;
};

}  // namespace llmds
