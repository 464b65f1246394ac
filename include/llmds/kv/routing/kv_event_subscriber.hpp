// KVEventSubscriber: a KVIndexer fed over ZeroMQ by many servers' KV event streams.
//
// The router's side of kv/routing/kv_event_publisher.hpp, and of vLLM's stream, which has the
// same wire format: for each server ("worker"), a SUB socket on its PUB address and, if it has
// one, a DEALER on its replay address. One thread receives every batch, decodes it (either
// encoding, kv/routing/kv_event_wire.hpp) and applies it to the index under the worker's id.
//
// Order and loss. Batches carry their server's sequence numbers. The first batch from a worker
// makes the subscriber ask that worker's replay socket for everything it still buffers, so a
// subscriber that joins late starts from the oldest batch the server kept rather than from the
// middle. A batch whose number is above the next one expected means batches were lost (a slow
// subscriber past its high-water mark, a reconnect): the subscriber asks for the missing ones,
// applies them in order, then the batch in hand. What no replay can give back any more is
// applied around, and the index marks the worker out of sync (KVIndexer's gap handling), counted
// here as an unrecovered gap. A payload that is not a batch is counted and skipped; the gap it
// leaves is then filled by replay like any other.
//
// Threads: the sockets are the subscriber's thread's alone; the index takes its own locks, so
// routers score on other threads while batches arrive. wait_for() lets a caller (a test, a
// router starting up) wait until a worker's batches up to a number are in the index.
#pragma once

#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <mutex>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "llmds/kv/routing/kv_event_publisher.hpp"
#include "llmds/kv/routing/kv_event_wire.hpp"
#include "llmds/kv/routing/kv_indexer.hpp"

namespace llmds {

/// One server's event stream.
struct KVEventSource {
  WorkerId worker = 0;
  std::string endpoint;         // its PUB socket (connected to)
  std::string replay_endpoint;  // its ROUTER replay socket; empty: none (gaps stay gaps)
  std::string topic;            // a topic prefix to receive; empty: every batch
};

struct KVEventSubscriberStats {
  std::uint64_t received_batches = 0;     // live batches decoded
  std::uint64_t applied_batches = 0;      // applied to the index, live or replayed
  std::uint64_t duplicate_batches = 0;    // already applied (a replay overlapping the stream)
  std::uint64_t replay_requests = 0;
  std::uint64_t replayed_batches = 0;     // batches a replay gave back and the index took
  std::uint64_t unrecovered_gaps = 0;     // batches applied after ones no replay could give
  std::uint64_t decode_failures = 0;      // payloads that were not batches
  std::uint64_t replay_failures = 0;      // replays that timed out or answered garbage

  template <class Visit>
  void for_each_field(Visit&& visit) const {
    visit("received_batches", received_batches);
    visit("applied_batches", applied_batches);
    visit("duplicate_batches", duplicate_batches);
    visit("replay_requests", replay_requests);
    visit("replayed_batches", replayed_batches);
    visit("unrecovered_gaps", unrecovered_gaps);
    visit("decode_failures", decode_failures);
    visit("replay_failures", replay_failures);
  }
};

class KVEventSubscriber {
 public:
  using Index = KVIndexer<std::uint64_t>;

  /// Connects to every source and starts feeding `index` (which must outlive the subscriber).
  /// Throws std::invalid_argument for no sources, two with one worker id, or a bad address.
  KVEventSubscriber(Index& index, std::vector<KVEventSource> sources,
                    std::chrono::milliseconds replay_timeout = std::chrono::seconds(2))
      : index_(index), replay_timeout_(replay_timeout), context_(1) {
    if (sources.empty()) throw std::invalid_argument("KVEventSubscriber: no sources");
    for (std::size_t i = 0; i < sources.size(); ++i) {
      for (std::size_t j = 0; j < i; ++j) {
        if (sources[i].worker == sources[j].worker) {
          throw std::invalid_argument("KVEventSubscriber: two sources with worker " + std::to_string(sources[i].worker));
        }
      }
    }
    wake_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wake_ < 0) throw std::system_error(errno, std::generic_category(), "KVEventSubscriber: eventfd");
    try {
      for (auto& s : sources) {
        Stream stream{std::move(s), zmq::socket_t(context_, zmq::socket_type::sub), {}};
        stream.sub.set(zmq::sockopt::subscribe, stream.source.topic);
        stream.sub.set(zmq::sockopt::rcvhwm, 0);
        stream.sub.set(zmq::sockopt::linger, 0);
        connect(stream.sub, stream.source.endpoint);
        if (!stream.source.replay_endpoint.empty()) open_replay(stream);
        streams_.push_back(std::move(stream));
      }
      thread_ = std::thread([this] { run(); });
    } catch (...) {
      streams_.clear();
      ::close(wake_);
      throw;
    }
  }

  KVEventSubscriber(const KVEventSubscriber&) = delete;
  KVEventSubscriber& operator=(const KVEventSubscriber&) = delete;
  ~KVEventSubscriber() { close(); }

  /// Stops receiving and closes the sockets. Idempotent.
  void close() {
    if (!thread_.joinable()) return;
    stopping_.store(true);
    const std::uint64_t one = 1;
    [[maybe_unused]] const auto n = ::write(wake_, &one, sizeof one);
    thread_.join();
    ::close(wake_);
    streams_.clear();
    context_.close();
  }

  /// Waits until the index has applied `worker`'s batches numbered below next_seq; false if it
  /// has not within the timeout.
  bool wait_for(WorkerId worker, std::uint64_t next_seq, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    return applied_.wait_for(lock, timeout, [&] {
      const auto w = index_.worker(worker);
      return w && w->next_seq >= next_seq;
    });
  }

  [[nodiscard]] KVEventSubscriberStats stats() const {
    const std::lock_guard lock(mu_);
    return stats_;
  }

 private:
  struct Stream {
    KVEventSource source;
    zmq::socket_t sub;
    zmq::socket_t replay;  // none without a replay endpoint
  };

  static void connect(zmq::socket_t& socket, const std::string& endpoint) {
    try {
      socket.connect(endpoint);
    } catch (const zmq::error_t& e) {
      throw std::invalid_argument("KVEventSubscriber: bad address '" + endpoint + "': " + e.what());
    }
  }

  void open_replay(Stream& s) {
    s.replay = zmq::socket_t(context_, zmq::socket_type::dealer);
    s.replay.set(zmq::sockopt::linger, 0);
    connect(s.replay, s.source.replay_endpoint);
  }

  void run() {
    std::vector<zmq::pollitem_t> items{{nullptr, wake_, ZMQ_POLLIN, 0}};
    for (auto& s : streams_) items.push_back({s.sub.handle(), 0, ZMQ_POLLIN, 0});
    std::vector<zmq::message_t> frames;
    while (!stopping_.load()) {
      try {
        zmq::poll(items, std::chrono::milliseconds(-1));
      } catch (const zmq::error_t&) {
        continue;  // EINTR
      }
      for (std::size_t i = 0; i < streams_.size() && !stopping_.load(); ++i) {
        if (!(items[i + 1].revents & ZMQ_POLLIN)) continue;
        for (;;) {  // everything waiting on this socket
          frames.clear();
          try {
            if (!zmq::recv_multipart(streams_[i].sub, std::back_inserter(frames), zmq::recv_flags::dontwait)) break;
          } catch (const zmq::error_t&) {
            break;
          }
          if (frames.size() != 3 || frames[1].size() != 8) {
            count([](KVEventSubscriberStats& s) { ++s.decode_failures; });
            continue;
          }
          receive(streams_[i], seq_of(frames[1]), frames[2]);
        }
      }
    }
  }

  static std::uint64_t seq_of(const zmq::message_t& frame) {
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < 8; ++i) v = (v << 8) | frame.data<std::uint8_t>()[i];
    return v;
  }

  static std::optional<KVEventBatch<std::uint64_t>> decode(const zmq::message_t& payload, std::uint64_t seq) {
    try {
      return decode_kv_event_batch(std::span(payload.data<std::byte>(), payload.size()), seq).batch;
    } catch (const std::invalid_argument&) {
      return std::nullopt;
    }
  }

  // One live batch: anything missed before it first, from the replay socket.
  void receive(Stream& s, std::uint64_t seq, const zmq::message_t& payload) {
    auto batch = decode(payload, seq);
    if (!batch) {
      count([](KVEventSubscriberStats& st) { ++st.decode_failures; });
      return;
    }
    count([](KVEventSubscriberStats& st) { ++st.received_batches; });
    const auto known = index_.worker(s.source.worker);
    const std::uint64_t expected = known ? known->next_seq : 0;
    if ((!known || seq > expected) && s.replay) catch_up(s, expected, seq);
    apply(s.source.worker, *batch, false);
  }

  // Asks the worker's replay socket for its batches from `from` on and applies those below
  // `until` (the live batch in hand, applied next).
  void catch_up(Stream& s, std::uint64_t from, std::uint64_t until) {
    count([](KVEventSubscriberStats& st) { ++st.replay_requests; });
    const auto start = kv_event_seq_frame(static_cast<std::int64_t>(from));
    try {
      s.replay.send(zmq::const_buffer{}, zmq::send_flags::sndmore);
      s.replay.send(zmq::buffer(start));
      const auto deadline = std::chrono::steady_clock::now() + replay_timeout_;
      std::vector<zmq::message_t> frames;
      for (;;) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        zmq::pollitem_t item{s.replay.handle(), 0, ZMQ_POLLIN, 0};
        if (left.count() <= 0 || zmq::poll(&item, 1, left) == 0) throw std::runtime_error("replay timed out");
        frames.clear();
        if (!zmq::recv_multipart(s.replay, std::back_inserter(frames))) throw std::runtime_error("replay: nothing");
        if (frames.size() != 3 || frames[1].size() != 8) throw std::runtime_error("replay: not a reply");
        const std::uint64_t seq = seq_of(frames[1]);
        if (seq == ~std::uint64_t{0}) return;  // the end marker (-1)
        if (seq >= until) continue;
        if (auto batch = decode(frames[2], seq)) {
          apply(s.source.worker, *batch, true);
        } else {
          count([](KVEventSubscriberStats& st) { ++st.decode_failures; });
        }
      }
    } catch (const std::exception&) {
      // A replay socket that timed out may still answer later: a fresh one cannot mix the two.
      count([](KVEventSubscriberStats& st) { ++st.replay_failures; });
      s.replay = zmq::socket_t();
      open_replay(s);
    }
  }

  void apply(WorkerId worker, const KVEventBatch<std::uint64_t>& batch, bool replayed) {
    const ApplyOutcome outcome = index_.apply(worker, batch);
    {
      const std::lock_guard lock(mu_);
      switch (outcome) {
        case ApplyOutcome::kApplied: ++stats_.applied_batches; break;
        case ApplyOutcome::kDuplicate: ++stats_.duplicate_batches; break;
        case ApplyOutcome::kAfterGap:
          ++stats_.applied_batches;
          ++stats_.unrecovered_gaps;
          break;
      }
      if (replayed && outcome != ApplyOutcome::kDuplicate) ++stats_.replayed_batches;
    }
    applied_.notify_all();
  }

  template <class F>
  void count(F&& f) {
    const std::lock_guard lock(mu_);
    f(stats_);
  }

  Index& index_;
  const std::chrono::milliseconds replay_timeout_;
  zmq::context_t context_;
  std::vector<Stream> streams_;
  int wake_ = -1;
  std::atomic<bool> stopping_{false};
  mutable std::mutex mu_;  // stats_
  std::condition_variable applied_;
  KVEventSubscriberStats stats_;
  std::thread thread_;
};

}  // namespace llmds
