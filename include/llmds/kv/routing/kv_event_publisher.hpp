// KVEventPublisher: a server's KV events on ZeroMQ, where existing cache-aware routers listen.
//
// vLLM publishes its KV cache events on a ZeroMQ PUB socket, and Dynamo's KV router and llm-d's
// KV-cache indexer subscribe to that stream; this publisher puts an llmds event log (kv/tiered/
// kv_events.hpp) on the same kind of socket in the same format (kv/routing/kv_event_wire.hpp),
// so those routers can route to llmds servers unchanged. Every batch is one ZeroMQ message of
// three frames:
//
//   topic     the configured topic ("" by default, as vLLM's)
//   seq       the batch's sequence number in the log, 8 bytes big-endian
//   payload   the batch, MessagePack
//
// Sequence numbers are the log's own, so a subscriber that sees one skipped knows it missed a
// batch, whichever side lost it. A second socket, ROUTER (replay_endpoint), answers a request
// holding a start sequence number (8 bytes big-endian) with every batch still buffered from
// that number on, each as (seq, payload) frames, then an end marker whose seq is -1 and whose
// payload is empty: vLLM's replay protocol. The buffer keeps the last buffer_steps payloads as
// sent, so a replay costs no encoding.
//
// Threads. The log calls the publisher back on the thread that changed the cache, which must
// not wait, so the callback only wakes the publisher's own thread (an eventfd); that thread
// reads the new batches from the log by sequence number, encodes and sends them, and serves
// replay requests; ZeroMQ sockets are used by that thread alone. If the thread falls so far
// behind that the log has dropped batches it had not sent yet, it counts them lost and goes on
// from the oldest batch kept: the gap shows on the wire, and a subscriber resynchronises.
//
// Failure. A send that fails (ZeroMQ error) is counted and the thread goes on; a PUB socket never
// blocks (a subscriber too slow for its high-water mark loses messages, and sees the gap).
// A malformed replay request is counted and answered with the end marker alone.
#pragma once

#include <sys/eventfd.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <iterator>
#include <mutex>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "llmds/kv/routing/kv_event_wire.hpp"
#include "llmds/kv/tiered/kv_events.hpp"

namespace llmds {

struct KVEventPublisherConfig {
  /// Where the PUB socket listens (an address with '*' or '::', ipc:// or inproc://) or connects
  /// (any other address), vLLM's convention. vLLM's default port.
  std::string endpoint = "tcp://*:5557";
  /// The ROUTER socket for replay requests, bound; empty for none (vLLM's default).
  std::string replay_endpoint;
  std::string topic;  // vLLM's default: every subscriber receives every batch
  KVEventWireFormat format;
  std::size_t buffer_steps = 10'000;  // batches kept for replay: vLLM's default
  int hwm = 100'000;                  // the PUB socket's high-water mark (messages): vLLM's default
  std::chrono::milliseconds linger{1000};  // how long closing waits for unsent messages

  void validate() const {
    if (endpoint.empty()) throw std::invalid_argument("KVEventPublisherConfig.endpoint must not be empty");
    if (buffer_steps == 0) throw std::invalid_argument("KVEventPublisherConfig.buffer_steps must be at least 1");
    if (hwm < 0) throw std::invalid_argument("KVEventPublisherConfig.hwm must not be negative");
    if (linger.count() < 0) throw std::invalid_argument("KVEventPublisherConfig.linger must not be negative");
    for (const auto& m : format.medium) {
      if (m.empty()) throw std::invalid_argument("KVEventPublisherConfig.format.medium: every tier needs a name");
    }
  }
};

struct KVEventPublisherStats {
  std::uint64_t published_batches = 0;  // sent on the PUB socket
  std::uint64_t published_events = 0;
  std::uint64_t lost_batches = 0;       // dropped by the log before they could be sent
  std::uint64_t send_failures = 0;      // batches whose send failed (ZeroMQ error)
  std::uint64_t replay_requests = 0;
  std::uint64_t replayed_batches = 0;
  std::uint64_t bad_requests = 0;       // malformed replay requests

  template <class Visit>
  void for_each_field(Visit&& visit) const {
    visit("published_batches", published_batches);
    visit("published_events", published_events);
    visit("lost_batches", lost_batches);
    visit("send_failures", send_failures);
    visit("replay_requests", replay_requests);
    visit("replayed_batches", replayed_batches);
    visit("bad_requests", bad_requests);
  }
};

/// The 8-byte big-endian frame vLLM's stream numbers its batches with.
[[nodiscard]] inline std::array<std::byte, 8> kv_event_seq_frame(std::int64_t seq) noexcept {
  std::array<std::byte, 8> out{};
  const auto v = static_cast<std::uint64_t>(seq);
  for (std::size_t i = 0; i < 8; ++i) out[i] = static_cast<std::byte>(v >> (56 - 8 * i));
  return out;
}

template <class Key>
class KVEventPublisher {
 public:
  /// Binds (or connects) the sockets and starts publishing every batch `log` publishes from
  /// now on. The log must outlive the publisher. Throws std::invalid_argument for a bad config
  /// or address, std::system_error if a socket cannot be set up (an address in use).
  KVEventPublisher(KVEventLog<Key>& log, KVEventPublisherConfig config)
      : log_(log), config_((config.validate(), std::move(config))), context_(1), pub_(context_, zmq::socket_type::pub) {
    wake_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wake_ < 0) throw std::system_error(errno, std::generic_category(), "KVEventPublisher: eventfd");
    try {
      pub_.set(zmq::sockopt::sndhwm, config_.hwm);
      pub_.set(zmq::sockopt::linger, static_cast<int>(config_.linger.count()));
      attach(pub_, config_.endpoint, binds(config_.endpoint));
      endpoint_ = pub_.get(zmq::sockopt::last_endpoint);
      if (!config_.replay_endpoint.empty()) {
        replay_ = zmq::socket_t(context_, zmq::socket_type::router);
        replay_.set(zmq::sockopt::sndhwm, 0);  // a replay is sent whole: at most buffer_steps batches
        replay_.set(zmq::sockopt::linger, 0);
        attach(replay_, config_.replay_endpoint, true);
        replay_endpoint_ = replay_.get(zmq::sockopt::last_endpoint);
      }
      next_ = log_.next_seq();
      subscription_ = log_.subscribe([this](const KVEventBatch<Key>&) { wake(); });
      thread_ = std::thread([this] { run(); });
    } catch (...) {
      if (subscription_ != 0) log_.unsubscribe(subscription_);
      ::close(wake_);
      throw;
    }
  }

  KVEventPublisher(const KVEventPublisher&) = delete;
  KVEventPublisher& operator=(const KVEventPublisher&) = delete;

  ~KVEventPublisher() { close(); }

  /// Sends what the log has published so far, then stops and closes the sockets, waiting up to
  /// `linger` for subscribers to take what was sent. Idempotent; the destructor calls it.
  void close() {
    if (!thread_.joinable()) return;
    log_.unsubscribe(subscription_);
    stopping_.store(true);
    wake();
    thread_.join();
    ::close(wake_);
    context_.close();  // waits up to `linger` for subscribers to take what was sent
  }

  /// Waits until every batch the log had published when called has been sent (or counted lost).
  void flush() {
    const std::uint64_t target = log_.next_seq();
    wake();
    std::unique_lock lock(mu_);
    sent_.wait(lock, [&] { return next_ >= target || !running_; });
  }

  /// The addresses the sockets are bound or connected to, with the port ZeroMQ chose for a
  /// wildcard one ("tcp://0.0.0.0:41234").
  [[nodiscard]] const std::string& endpoint() const noexcept { return endpoint_; }
  [[nodiscard]] const std::string& replay_endpoint() const noexcept { return replay_endpoint_; }
  [[nodiscard]] const KVEventPublisherConfig& config() const noexcept { return config_; }

  [[nodiscard]] KVEventPublisherStats stats() const {
    const std::lock_guard lock(mu_);
    return stats_;
  }

 private:
  static bool binds(const std::string& endpoint) {
    return endpoint.find('*') != std::string::npos || endpoint.find("::") != std::string::npos ||
           endpoint.starts_with("ipc://") || endpoint.starts_with("inproc://");
  }

  static void attach(zmq::socket_t& socket, const std::string& endpoint, bool bind) {
    try {
      bind ? socket.bind(endpoint) : socket.connect(endpoint);
    } catch (const zmq::error_t& e) {
      const int code = e.num();
      if (code == EINVAL || code == EPROTONOSUPPORT || code == ENOCOMPATPROTO) {
        throw std::invalid_argument("KVEventPublisher: bad address '" + endpoint + "': " + e.what());
      }
      throw std::system_error(code, std::generic_category(), "KVEventPublisher: cannot use '" + endpoint + "'");
    }
  }

  void wake() noexcept {
    const std::uint64_t one = 1;
    [[maybe_unused]] const auto n = ::write(wake_, &one, sizeof one);  // full only after 2^64 wakes
  }

  void run() {
    std::vector<zmq::pollitem_t> items{{nullptr, wake_, ZMQ_POLLIN, 0}};
    if (replay_) items.push_back({replay_.handle(), 0, ZMQ_POLLIN, 0});
    for (;;) {
      const bool stopping = stopping_.load();
      send_new_batches();
      if (stopping) break;
      try {
        zmq::poll(items, std::chrono::milliseconds(-1));
      } catch (const zmq::error_t&) {
        continue;  // EINTR
      }
      if (items[0].revents & ZMQ_POLLIN) {
        std::uint64_t count = 0;
        [[maybe_unused]] const auto n = ::read(wake_, &count, sizeof count);
      }
      if (replay_ && (items[1].revents & ZMQ_POLLIN)) serve_replays();
    }
    pub_.close();
    replay_.close();
    const std::lock_guard lock(mu_);
    running_ = false;
    sent_.notify_all();
  }

  // Sends every batch the log has published that this thread has not sent yet.
  void send_new_batches() {
    for (;;) {
      const KVEventReplay<Key> read = log_.read_from(next_, 256);
      if (read.batches.empty()) return;
      std::uint64_t lost = 0, sent = 0, failed = 0, events = 0;
      if (!read.complete) lost = read.batches.front().seq - next_;
      const double ts = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
      for (const auto& batch : read.batches) {
        std::string payload = encode_kv_event_batch(batch, ts, config_.format);
        const auto seq = kv_event_seq_frame(static_cast<std::int64_t>(batch.seq));
        try {
          pub_.send(zmq::buffer(config_.topic), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
          pub_.send(zmq::buffer(seq), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
          pub_.send(zmq::buffer(payload), zmq::send_flags::dontwait);
          ++sent;
          events += batch.events.size();
        } catch (const zmq::error_t&) {
          ++failed;
        }
        // Kept for replay even if this send failed: a subscriber that missed it can ask.
        if (buffer_.size() == config_.buffer_steps) buffer_.pop_front();
        buffer_.emplace_back(batch.seq, std::move(payload));
      }
      const std::lock_guard lock(mu_);
      stats_.lost_batches += lost;
      stats_.published_batches += sent;
      stats_.published_events += events;
      stats_.send_failures += failed;
      next_ = read.batches.back().seq + 1;
      sent_.notify_all();
    }
  }

  // Answers every waiting replay request: [identity, (empty delimiter,) start seq].
  void serve_replays() {
    std::vector<zmq::message_t> frames;
    for (;;) {
      frames.clear();
      try {
        if (!zmq::recv_multipart(replay_, std::back_inserter(frames), zmq::recv_flags::dontwait)) return;
      } catch (const zmq::error_t&) {
        return;
      }
      const bool delimited = frames.size() == 3 && frames[1].size() == 0;
      const bool valid = (frames.size() == 2 || delimited) && frames.back().size() == 8;
      std::uint64_t replayed = 0;
      try {
        if (valid) {
          std::uint64_t start = 0;
          for (const std::byte b : std::span(frames.back().data<std::byte>(), 8)) start = (start << 8) | std::to_integer<std::uint64_t>(b);
          for (const auto& [seq, payload] : buffer_) {
            if (seq < start) continue;
            reply(frames[0], delimited, kv_event_seq_frame(static_cast<std::int64_t>(seq)), payload);
            ++replayed;
          }
        }
        if (frames.size() >= 2) reply(frames[0], delimited, kv_event_seq_frame(-1), {});
      } catch (const zmq::error_t&) {
        // The requester went away mid-reply: nothing to do for it.
      }
      const std::lock_guard lock(mu_);
      ++stats_.replay_requests;
      stats_.replayed_batches += replayed;
      if (!valid) ++stats_.bad_requests;
    }
  }

  void reply(const zmq::message_t& identity, bool delimited, const std::array<std::byte, 8>& seq, std::string_view payload) {
    replay_.send(zmq::buffer(identity.data(), identity.size()), zmq::send_flags::sndmore);
    if (delimited) replay_.send(zmq::const_buffer{}, zmq::send_flags::sndmore);
    replay_.send(zmq::buffer(seq), zmq::send_flags::sndmore);
    replay_.send(zmq::buffer(payload.data(), payload.size()), zmq::send_flags::none);
  }

  KVEventLog<Key>& log_;
  const KVEventPublisherConfig config_;
  zmq::context_t context_;
  zmq::socket_t pub_;
  zmq::socket_t replay_;  // none unless replay_endpoint is set
  std::string endpoint_, replay_endpoint_;
  int wake_ = -1;
  typename KVEventLog<Key>::SubscriptionId subscription_ = 0;
  std::atomic<bool> stopping_{false};
  std::deque<std::pair<std::uint64_t, std::string>> buffer_;  // the publisher thread's alone

  mutable std::mutex mu_;  // below
  std::condition_variable sent_;
  std::uint64_t next_ = 0;  // the next batch to send (written by the publisher thread only)
  bool running_ = true;
  KVEventPublisherStats stats_;

  std::thread thread_;
};

}  // namespace llmds
