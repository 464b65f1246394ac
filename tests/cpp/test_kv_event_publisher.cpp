#include "llmds/kv/routing/kv_event_publisher.hpp"

#include "llmds/kv/routing/kv_event_subscriber.hpp"

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <system_error>
#include <utility>
#include <variant>
#include <vector>

#include <gtest/gtest.h>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "llmds/kv/block_hash.hpp"
#include "llmds/kv/routing/kv_event_wire.hpp"
#include "llmds/kv/tiered/kv_block_manager.hpp"
#include "llmds/kv/tiered/kv_events.hpp"

namespace {

using llmds::AllBlocksCleared;
using llmds::BlockRemoved;
using llmds::BlockStored;
using llmds::KVEventBatch;
using llmds::KVEventEncoding;
using llmds::KVEventWireFormat;
using llmds::Tier;

using Key = std::int64_t;
using Batch = KVEventBatch<Key>;
using WireBatch = KVEventBatch<std::uint64_t>;

std::span<const std::byte> bytes(const std::string& s) { return std::as_bytes(std::span(s.data(), s.size())); }

// The batch as a decoder sees it: keys as their 64-bit wire values.
WireBatch on_the_wire(const Batch& batch) {
  WireBatch out{batch.seq, {}};
  const auto wire = [](const std::vector<Key>& keys) {
    std::vector<std::uint64_t> w;
    for (const Key k : keys) w.push_back(static_cast<std::uint64_t>(k));
    return w;
  };
  for (const auto& event : batch.events) {
    if (const auto* s = std::get_if<BlockStored<Key>>(&event)) {
      BlockStored<std::uint64_t> w{wire(s->block_hashes), std::nullopt, s->token_ids, s->block_size, s->tier};
      if (s->parent_hash) w.parent_hash = static_cast<std::uint64_t>(*s->parent_hash);
      out.events.emplace_back(std::move(w));
    } else if (const auto* r = std::get_if<BlockRemoved<Key>>(&event)) {
      out.events.emplace_back(BlockRemoved<std::uint64_t>{wire(r->block_hashes), r->tier});
    } else {
      out.events.emplace_back(AllBlocksCleared{});
    }
  }
  return out;
}

Batch random_batch(std::mt19937_64& rng, std::uint64_t seq) {
  Batch batch{seq, {}};
  const auto tier = [&] { return static_cast<Tier>(rng() % llmds::kNumTiers); };
  const auto key = [&] { return rng() % 4 == 0 ? static_cast<Key>(rng()) : static_cast<Key>(rng() % 1000) - 10; };
  const std::size_t events = rng() % 5;
  for (std::size_t e = 0; e < events; ++e) {
    const auto kind = rng() % 7;
    if (kind < 4) {
      BlockStored<Key> s;
      const std::size_t n = 1 + rng() % 4;
      for (std::size_t i = 0; i < n; ++i) s.block_hashes.push_back(key());
      if (rng() % 2) s.parent_hash = key();
      s.block_size = static_cast<std::uint32_t>(1 + rng() % 64);
      if (rng() % 2) {
        for (std::size_t i = 0; i < n * s.block_size; ++i) s.token_ids.push_back(static_cast<llmds::TokenId>(rng() % 32000));
      }
      s.tier = tier();
      batch.events.emplace_back(std::move(s));
    } else if (kind < 6) {
      BlockRemoved<Key> r;
      for (std::size_t i = 0, n = 1 + rng() % 4; i < n; ++i) r.block_hashes.push_back(key());
      r.tier = tier();
      batch.events.emplace_back(std::move(r));
    } else {
      batch.events.emplace_back(AllBlocksCleared{});
    }
  }
  return batch;
}

TEST(KVEventWire, RandomBatchesComeBackWholeInBothEncodings) {
  std::mt19937_64 rng(7);
  for (const auto encoding : {KVEventEncoding::kMap, KVEventEncoding::kArray}) {
    for (std::uint64_t seq = 0; seq < 500; ++seq) {
      KVEventWireFormat format;
      format.encoding = encoding;
      if (seq % 3 == 0) format.data_parallel_rank = std::nullopt;
      if (seq % 3 == 1) format.data_parallel_rank = static_cast<std::int64_t>(seq % 8);
      const Batch batch = random_batch(rng, seq);
      const std::string payload = llmds::encode_kv_event_batch(batch, 1700000000.25 + double(seq), format);
      const auto decoded = llmds::decode_kv_event_batch(bytes(payload), seq);
      ASSERT_EQ(decoded.batch, on_the_wire(batch)) << "batch " << seq;
      EXPECT_EQ(decoded.ts, 1700000000.25 + double(seq));
      EXPECT_EQ(decoded.data_parallel_rank, format.data_parallel_rank);
    }
  }
}

TEST(KVEventWire, TheLayoutIsVLLMs) {
  Batch batch{3, {}};
  batch.events.emplace_back(BlockStored<Key>{{5, 6}, Key{4}, {1, 2, 3, 4}, 2, Tier::kHost});
  batch.events.emplace_back(BlockRemoved<Key>{{7}, Tier::kPrimary});
  batch.events.emplace_back(AllBlocksCleared{});
  // The array encoding: msgspec's array_like structs, the tag first.
  KVEventWireFormat format;
  format.encoding = KVEventEncoding::kArray;
  auto handle = msgpack::unpack(llmds::encode_kv_event_batch(batch, 2.5, format).data(),
                                llmds::encode_kv_event_batch(batch, 2.5, format).size());
  std::ostringstream text;
  text << handle.get();
  EXPECT_EQ(text.str(),
            R"([2.5,[["BlockStored",[5,6],4,[1,2,3,4],2,null,"CPU"],["BlockRemoved",[7],"GPU"],["AllBlocksCleared"]],0])");
  // ts is a float64 even when it is a whole number (msgpack-cxx would write an integer).
  const std::string whole = llmds::encode_kv_event_batch(Batch{}, 1764900000.0, format);
  ASSERT_GE(whole.size(), 10u);
  EXPECT_EQ(static_cast<unsigned char>(whole[1]), 0xcbu);
  // The map encoding: the tag under "type", lora_name present (vLLM's schema requires it).
  format.encoding = KVEventEncoding::kMap;
  format.data_parallel_rank = std::nullopt;
  const std::string payload = llmds::encode_kv_event_batch(batch, 2.5, format);
  handle = msgpack::unpack(payload.data(), payload.size());
  text.str("");
  text << handle.get();
  EXPECT_EQ(text.str(),
            R"({"ts":2.5,"events":[{"type":"BlockStored","block_hashes":[5,6],"parent_block_hash":4,)"
            R"("token_ids":[1,2,3,4],"block_size":2,"lora_id":null,"medium":"CPU","lora_name":null},)"
            R"({"type":"BlockRemoved","block_hashes":[7],"medium":"GPU"},{"type":"AllBlocksCleared"}]})");
}

TEST(KVEventWire, ABlockHashIsItsLastEightBytesBigEndianAndNegativeKeysWrap) {
  llmds::BlockHash h;
  for (std::size_t i = 0; i < h.digest.size(); ++i) h.digest[i] = static_cast<std::uint8_t>(i);
  EXPECT_EQ(llmds::wire_block_hash(h), 0x18191a1b1c1d1e1full);
  EXPECT_EQ(llmds::wire_block_hash(Key{-1}), ~0ull);
}

TEST(KVEventWire, DecodingTakesByteHashesOtherMediumNamesAndNewerFields) {
  msgpack::sbuffer buffer;
  msgpack::packer pack(&buffer);
  // [ts, [event], rank] with a byte-string hash, llmds's tier names, and an extra trailing field.
  pack.pack_array(3);
  pack.pack(1.0);
  pack.pack_array(2);
  pack.pack_array(8);
  pack.pack(std::string("BlockStored"));
  pack.pack_array(1);
  const char hash[10] = {9, 9, 0, 0, 0, 0, 0, 0, 1, 2};
  pack.pack_bin(10).pack_bin_body(hash, 10);
  pack.pack_nil();
  pack.pack_array(0);
  pack.pack(16);
  pack.pack_nil();
  pack.pack(std::string("disk"));
  pack.pack(std::string("a newer field"));
  pack.pack_array(2);
  pack.pack(std::string("BlockRemoved"));
  pack.pack_array(1);
  pack.pack(3);
  pack.pack(7);
  const std::string payload(buffer.data(), buffer.size());
  const auto decoded = llmds::decode_kv_event_batch(bytes(payload), 0);
  ASSERT_EQ(decoded.batch.events.size(), 2u);
  const auto& stored = std::get<BlockStored<std::uint64_t>>(decoded.batch.events[0]);
  EXPECT_EQ(stored.block_hashes, std::vector<std::uint64_t>{0x0102});
  EXPECT_EQ(stored.tier, Tier::kDisk);
  const auto& removed = std::get<BlockRemoved<std::uint64_t>>(decoded.batch.events[1]);
  EXPECT_EQ(removed.tier, Tier::kPrimary);  // no medium: vLLM's default, the GPU
  EXPECT_EQ(decoded.data_parallel_rank, 7);
}

TEST(KVEventWire, AnythingElseIsRefusedWithoutReadingPastItOrAllocatingForIt) {
  std::mt19937_64 rng(11);
  const Batch batch = [&] {
    Batch b;
    while (b.events.size() < 3) b = random_batch(rng, 1);
    return b;
  }();
  for (const auto encoding : {KVEventEncoding::kMap, KVEventEncoding::kArray}) {
    KVEventWireFormat format;
    format.encoding = encoding;
    const std::string payload = llmds::encode_kv_event_batch(batch, 1.0, format);
    // Every strict prefix, and the payload with a byte after it.
    for (std::size_t n = 0; n < payload.size(); ++n) {
      EXPECT_THROW((void)llmds::decode_kv_event_batch(bytes(payload.substr(0, n)), 0), std::invalid_argument) << n;
    }
    EXPECT_THROW((void)llmds::decode_kv_event_batch(bytes(payload + '\0'), 0), std::invalid_argument);
    // Random byte flips: decoded or refused, never anything else (ASan watches the reads).
    for (int trial = 0; trial < 2000; ++trial) {
      std::string bad = payload;
      bad[rng() % bad.size()] = static_cast<char>(rng());
      try {
        (void)llmds::decode_kv_event_batch(bytes(bad), 0);
      } catch (const std::invalid_argument&) {
      }
    }
  }
  // An array that claims 2^32 - 1 elements in a 5-byte payload.
  const std::string huge = "\xdd\xff\xff\xff\xff";
  EXPECT_THROW((void)llmds::decode_kv_event_batch(bytes(huge), 0), std::invalid_argument);
  // Well-formed MessagePack that is not a batch.
  const auto refused = [](auto&& write) {
    msgpack::sbuffer buffer;
    msgpack::packer pack(&buffer);
    write(pack);
    const std::string payload(buffer.data(), buffer.size());
    EXPECT_THROW((void)llmds::decode_kv_event_batch(bytes(payload), 0), std::invalid_argument);
  };
  refused([](auto& p) { p.pack(42); });
  refused([](auto& p) { p.pack_array(1).pack(1.0); });  // no events
  refused([](auto& p) { p.pack_array(2).pack(1.0).pack_array(1).pack_array(1).pack(std::string("BlockMoved")); });
  refused([](auto& p) {  // a medium nobody names
    p.pack_array(2).pack(1.0).pack_array(1).pack_array(3).pack(std::string("BlockRemoved")).pack_array(0).pack(
        std::string("TAPE"));
  });
  refused([](auto& p) {  // a token id that is not one
    p.pack_array(2).pack(1.0).pack_array(1).pack_array(5).pack(std::string("BlockStored")).pack_array(0).pack_nil();
    p.pack_array(1).pack(-3).pack(16);
  });
}

// A subscriber as a router runs one: SUB for the live stream, DEALER for replays.
class Subscriber {
 public:
  explicit Subscriber(const std::string& endpoint) : sub_(context_, zmq::socket_type::sub) {
    sub_.set(zmq::sockopt::subscribe, "");
    sub_.set(zmq::sockopt::rcvhwm, 0);
    sub_.connect(local(endpoint));
  }

  // The next live batch, or nullopt after `wait` of silence.
  std::optional<llmds::DecodedKVEventBatch> next(std::chrono::milliseconds wait = std::chrono::seconds(10)) {
    sub_.set(zmq::sockopt::rcvtimeo, static_cast<int>(wait.count()));
    std::vector<zmq::message_t> frames;
    if (!zmq::recv_multipart(sub_, std::back_inserter(frames))) return std::nullopt;
    EXPECT_EQ(frames.size(), 3u);
    return decode(frames[1], frames[2]);
  }

  // vLLM's replay request, as its example subscriber makes it (a REQ-style empty delimiter).
  static std::vector<llmds::DecodedKVEventBatch> replay(const std::string& endpoint, std::uint64_t from,
                                                        bool* ended = nullptr, std::size_t seq_bytes = 8) {
    zmq::context_t context(1);
    zmq::socket_t dealer(context, zmq::socket_type::dealer);
    dealer.set(zmq::sockopt::rcvtimeo, 10'000);
    dealer.connect(local(endpoint));
    const auto seq = llmds::kv_event_seq_frame(static_cast<std::int64_t>(from));
    dealer.send(zmq::const_buffer{}, zmq::send_flags::sndmore);
    dealer.send(zmq::buffer(seq.data(), seq_bytes));
    std::vector<llmds::DecodedKVEventBatch> out;
    for (;;) {
      std::vector<zmq::message_t> frames;
      if (!zmq::recv_multipart(dealer, std::back_inserter(frames))) break;
      EXPECT_EQ(frames.size(), 3u);
      EXPECT_EQ(frames[0].size(), 0u);
      if (frames[1].to_string_view() == std::string(8, '\xff')) {
        EXPECT_EQ(frames[2].size(), 0u);
        if (ended != nullptr) *ended = true;
        break;
      }
      out.push_back(decode(frames[1], frames[2]));
    }
    return out;
  }

 private:
  static std::string local(std::string endpoint) {
    if (const auto at = endpoint.find("0.0.0.0"); at != std::string::npos) endpoint.replace(at, 7, "127.0.0.1");
    return endpoint;
  }
  static llmds::DecodedKVEventBatch decode(const zmq::message_t& seq_frame, const zmq::message_t& payload) {
    EXPECT_EQ(seq_frame.size(), 8u);
    std::uint64_t seq = 0;
    for (std::size_t i = 0; i < 8; ++i) seq = (seq << 8) | seq_frame.data<std::uint8_t>()[i];
    return llmds::decode_kv_event_batch(std::span(payload.data<std::byte>(), payload.size()), seq);
  }

  zmq::context_t context_{1};
  zmq::socket_t sub_;
};

llmds::KVEventPublisherConfig local_config() {
  llmds::KVEventPublisherConfig c;
  c.endpoint = "tcp://127.0.0.1:*";
  c.replay_endpoint = "tcp://127.0.0.1:*";
  return c;
}

void publish(llmds::KVEventLog<Key>& log, const Batch& batch) {
  for (const auto& e : batch.events) log.append(e);
  log.publish();
}

TEST(KVEventPublisher, ALateSubscriberGetsEveryBatchInOrderThroughReplayAndTheLiveStream) {
  llmds::KVEventLog<Key> log(100'000);
  llmds::KVEventPublisher<Key> publisher(log, local_config());
  std::mt19937_64 rng(3);
  std::vector<Batch> sent;
  const auto publish_some = [&](std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) {
      Batch b = random_batch(rng, log.next_seq());
      if (b.events.empty()) b.events.emplace_back(AllBlocksCleared{});
      publish(log, b);
      sent.push_back(b);
    }
  };
  publish_some(300);  // before anyone listens
  publisher.flush();

  Subscriber subscriber(publisher.endpoint());
  // The first live batch a subscriber sees tells it where it joined; it replays what it missed.
  std::optional<llmds::DecodedKVEventBatch> first;
  while (!first) {
    publish_some(1);
    publisher.flush();
    first = subscriber.next(std::chrono::milliseconds(50));  // until the subscription has reached it
  }
  bool ended = false;
  auto received = Subscriber::replay(publisher.replay_endpoint(), 0, &ended);
  ASSERT_TRUE(ended);
  // The replay reaches at least the first live batch; the live stream goes on from there.
  ASSERT_GE(received.size(), first->batch.seq + 1);
  received.resize(first->batch.seq);
  received.push_back(*first);
  publish_some(500);
  while (received.size() < sent.size()) {
    auto next = subscriber.next();
    ASSERT_TRUE(next.has_value()) << "stream stopped at " << received.size();
    received.push_back(std::move(*next));
  }
  for (std::size_t i = 0; i < sent.size(); ++i) {
    ASSERT_EQ(received[i].batch, on_the_wire(sent[i])) << "batch " << i;
    EXPECT_EQ(received[i].data_parallel_rank, 0);
  }
  const auto stats = publisher.stats();
  EXPECT_EQ(stats.published_batches, sent.size());
  EXPECT_EQ(stats.lost_batches, 0u);
  EXPECT_EQ(stats.replay_requests, 1u);
}

TEST(KVEventPublisher, TheReplayBufferKeepsTheLastBufferStepsBatches) {
  llmds::KVEventLog<Key> log(1000);
  auto c = local_config();
  c.buffer_steps = 10;
  llmds::KVEventPublisher<Key> publisher(log, c);
  for (int i = 0; i < 25; ++i) publish(log, Batch{0, {AllBlocksCleared{}}});
  publisher.flush();
  auto replayed = Subscriber::replay(publisher.replay_endpoint(), 0);
  ASSERT_EQ(replayed.size(), 10u);
  EXPECT_EQ(replayed.front().batch.seq, 15u);
  EXPECT_EQ(replayed.back().batch.seq, 24u);
  EXPECT_EQ(Subscriber::replay(publisher.replay_endpoint(), 20).size(), 5u);
  EXPECT_TRUE(Subscriber::replay(publisher.replay_endpoint(), 25).empty());
  EXPECT_EQ(publisher.stats().replayed_batches, 15u);
}

TEST(KVEventPublisher, AMalformedReplayRequestIsCountedAndAnsweredWithTheEndMarker) {
  llmds::KVEventLog<Key> log(10);
  llmds::KVEventPublisher<Key> publisher(log, local_config());
  publish(log, Batch{0, {AllBlocksCleared{}}});
  publisher.flush();
  bool ended = false;
  EXPECT_TRUE(Subscriber::replay(publisher.replay_endpoint(), 0, &ended, 5).empty());
  EXPECT_TRUE(ended);
  EXPECT_EQ(publisher.stats().bad_requests, 1u);
  EXPECT_EQ(Subscriber::replay(publisher.replay_endpoint(), 0).size(), 1u);  // still serving
}

TEST(KVEventPublisher, BadConfigsAndAddressesAreRefused) {
  llmds::KVEventLog<Key> log(10);
  auto c = local_config();
  c.buffer_steps = 0;
  EXPECT_THROW(llmds::KVEventPublisher<Key>(log, c), std::invalid_argument);
  c = local_config();
  c.endpoint = "nonsense://*:1";
  EXPECT_THROW(llmds::KVEventPublisher<Key>(log, c), std::invalid_argument);
  c = local_config();
  c.format.medium[1] = "";
  EXPECT_THROW(llmds::KVEventPublisher<Key>(log, c), std::invalid_argument);
  llmds::KVEventPublisher<Key> first(log, local_config());
  c = local_config();
  c.endpoint = "tcp://127.0.0.1:*";
  c.replay_endpoint = first.replay_endpoint();  // taken
  EXPECT_THROW(llmds::KVEventPublisher<Key>(log, c), std::system_error);
  // The failed publishers left no subscription behind: the first one still hears everything.
  publish(log, Batch{0, {AllBlocksCleared{}}});
  first.flush();
  EXPECT_EQ(first.stats().published_batches, 1u);
}

TEST(KVEventLog, ReadFromGivesBatchesByNumberAndSaysWhenSomeAreGone) {
  llmds::KVEventLog<Key> log(4);
  for (int i = 0; i < 10; ++i) publish(log, Batch{0, {AllBlocksCleared{}}});
  auto r = log.read_from(7, 2);
  EXPECT_TRUE(r.complete);
  ASSERT_EQ(r.batches.size(), 2u);
  EXPECT_EQ(r.batches[0].seq, 7u);
  r = log.read_from(2, 100);  // 2..5 are gone: from the oldest kept, 6
  EXPECT_FALSE(r.complete);
  ASSERT_EQ(r.batches.size(), 4u);
  EXPECT_EQ(r.batches[0].seq, 6u);
  EXPECT_TRUE(log.read_from(10, 5).batches.empty());
  EXPECT_TRUE(log.read_from(10, 5).complete);
}

TEST(KVEventPublisher, AManagersTiersArriveAsVLLMsMedia) {
  using Manager = llmds::KVBlockManager<Key>;
  llmds::KVBlockManagerConfig c;
  c.primary_blocks = 2;
  c.host_blocks = 4;
  c.block_size = 4;
  Manager m(c);
  llmds::KVEventPublisher<Key> publisher(m.events(), local_config());
  const auto serve = [&](std::vector<Key> keys) {
    const auto blocks = m.allocate(keys.size());
    m.register_blocks(blocks, keys, std::nullopt);
    m.release(std::vector<llmds::BlockId>(blocks.rbegin(), blocks.rend()));
  };
  serve({1, 2});
  serve({3, 4});  // 1 and 2 go to host
  publisher.flush();
  const auto batches = Subscriber::replay(publisher.replay_endpoint(), 0);
  std::map<std::uint64_t, std::vector<Tier>> stored;
  for (const auto& b : batches) {
    for (const auto& e : b.batch.events) {
      if (const auto* s = std::get_if<BlockStored<std::uint64_t>>(&e)) {
        for (const auto h : s->block_hashes) stored[h].push_back(s->tier);
      }
    }
  }
  EXPECT_EQ(stored[1], (std::vector<Tier>{Tier::kPrimary, Tier::kHost}));
  EXPECT_EQ(stored[3], (std::vector<Tier>{Tier::kPrimary}));
  publisher.close();
  publisher.close();  // idempotent
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// KVEventSubscriber: an index fed over ZeroMQ.

namespace {

using WireIndex = llmds::KVIndexer<std::uint64_t>;

TEST(KVEventSubscriber, TwoServersFeedOneIndexAsIfItWereFedDirectly) {
  using UManager = llmds::KVBlockManager<std::uint64_t>;
  llmds::KVBlockManagerConfig c;
  c.primary_blocks = 6;
  c.host_blocks = 6;
  c.block_size = 4;
  UManager a(c), b(c);
  WireIndex direct, remote;
  a.events().subscribe([&](const auto& batch) { direct.apply(0, batch); });
  b.events().subscribe([&](const auto& batch) { direct.apply(1, batch); });
  llmds::KVEventPublisher<std::uint64_t> pa(a.events(), local_config()), pb(b.events(), local_config());
  std::mt19937_64 rng(5);
  const auto serve = [&](UManager& m) {
    const std::uint64_t conv = rng() % 8;
    std::vector<std::uint64_t> keys;
    for (std::uint64_t i = 0, n = 1 + rng() % 4; i < n; ++i) keys.push_back(conv * 100 + i);
    auto match = m.match(keys);
    auto blocks = m.onboard(match);
    const auto fresh = m.allocate(keys.size() - blocks.size());
    std::optional<std::uint64_t> parent;
    if (!blocks.empty()) parent = keys[blocks.size() - 1];
    m.register_blocks(fresh, std::span(keys).subspan(blocks.size()), parent);
    blocks.insert(blocks.end(), fresh.begin(), fresh.end());
    m.release(std::vector<llmds::BlockId>(blocks.rbegin(), blocks.rend()));
  };
  for (int i = 0; i < 50; ++i) serve(i % 2 ? a : b);  // before the subscriber: replayed
  pa.flush();
  pb.flush();
  llmds::KVEventSubscriber subscriber(remote, {{0, pa.endpoint(), pa.replay_endpoint(), ""},
                                               {1, pb.endpoint(), pb.replay_endpoint(), ""}});
  for (int i = 0; i < 400; ++i) {
    serve(rng() % 2 ? a : b);
    if (i % 50 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  pa.flush();
  pb.flush();
  ASSERT_TRUE(subscriber.wait_for(0, a.events().next_seq(), std::chrono::seconds(20)));
  ASSERT_TRUE(subscriber.wait_for(1, b.events().next_seq(), std::chrono::seconds(20)));
  for (std::uint64_t conv = 0; conv < 8; ++conv) {
    const std::vector<std::uint64_t> query{conv * 100, conv * 100 + 1, conv * 100 + 2, conv * 100 + 3};
    EXPECT_EQ(remote.score(query), direct.score(query)) << "conversation " << conv;
  }
  EXPECT_EQ(remote.num_blocks(), direct.num_blocks());
  for (const llmds::WorkerId w : {0u, 1u}) {
    EXPECT_TRUE(remote.worker(w)->in_sync);
    EXPECT_EQ(remote.worker(w)->next_seq, direct.worker(w)->next_seq);
  }
  const auto s = subscriber.stats();
  EXPECT_EQ(s.unrecovered_gaps, 0u);
  EXPECT_EQ(s.decode_failures, 0u);
  EXPECT_GE(s.replayed_batches, 1u);  // what came before it joined
}

// A server written by hand, to lose a batch on purpose and answer replays as a test wants.
struct HandServer {
  zmq::context_t context{1};
  zmq::socket_t pub{context, zmq::socket_type::pub};
  zmq::socket_t router{context, zmq::socket_type::router};
  std::string pub_endpoint, replay_endpoint;
  HandServer() {
    pub.bind("tcp://127.0.0.1:*");
    router.bind("tcp://127.0.0.1:*");
    pub_endpoint = pub.get(zmq::sockopt::last_endpoint);
    replay_endpoint = router.get(zmq::sockopt::last_endpoint);
  }
  static std::string payload(std::uint64_t key) {
    Batch b{0, {BlockStored<Key>{{static_cast<Key>(key)}, std::nullopt, {}, 4, Tier::kPrimary}}};
    return llmds::encode_kv_event_batch(b, 1.0, KVEventWireFormat{});
  }
  void send(std::uint64_t seq, const std::string& bytes) {
    const auto frame = llmds::kv_event_seq_frame(static_cast<std::int64_t>(seq));
    pub.send(zmq::const_buffer{}, zmq::send_flags::sndmore);
    pub.send(zmq::buffer(frame), zmq::send_flags::sndmore);
    pub.send(zmq::buffer(bytes));
  }
  // Answers one replay request with the batches `have` (seq -> key) from its start on.
  void answer_replay(const std::map<std::uint64_t, std::uint64_t>& have) {
    std::vector<zmq::message_t> request;
    ASSERT_TRUE(zmq::recv_multipart(router, std::back_inserter(request)));
    ASSERT_EQ(request.size(), 3u);
    std::uint64_t from = 0;
    for (std::size_t i = 0; i < 8; ++i) from = (from << 8) | request[2].data<std::uint8_t>()[i];
    const auto reply = [&](std::int64_t seq, const std::string& bytes) {
      const auto frame = llmds::kv_event_seq_frame(seq);
      router.send(zmq::buffer(request[0].data(), request[0].size()), zmq::send_flags::sndmore);
      router.send(zmq::const_buffer{}, zmq::send_flags::sndmore);
      router.send(zmq::buffer(frame), zmq::send_flags::sndmore);
      router.send(zmq::buffer(bytes));
    };
    for (const auto& [seq, key] : have) {
      if (seq >= from) reply(static_cast<std::int64_t>(seq), payload(key));
    }
    reply(-1, "");
  }
};

TEST(KVEventSubscriber, ALostBatchIsFetchedByReplayAndWhatNoReplayHasIsCounted) {
  HandServer server;
  WireIndex index;
  llmds::KVEventSubscriber subscriber(index, {{3, server.pub_endpoint, server.replay_endpoint, ""}},
                                      std::chrono::milliseconds(500));
  // Until the subscription is up, batches are lost; the first one received asks for a replay.
  std::thread replies([&] {
    server.answer_replay({{0, 100}});          // the first batch: what came before it
    server.answer_replay({{1, 101}, {2, 102}});  // the lost batch 1 (and 2, live already)
    server.answer_replay({});                  // batch 4 is gone for good
  });
  while (!subscriber.wait_for(3, 1, std::chrono::milliseconds(20))) server.send(0, HandServer::payload(100));
  server.send(2, HandServer::payload(102));  // 1 is lost on the way
  ASSERT_TRUE(subscriber.wait_for(3, 3, std::chrono::seconds(10)));
  EXPECT_TRUE(index.worker(3)->in_sync);
  EXPECT_EQ(index.score(std::vector<std::uint64_t>{101}).size(), 1u);  // from the replay
  server.send(3, "not MessagePack");           // a payload that is no batch
  server.send(5, HandServer::payload(105));    // 3 unreadable, 4 gone: the replay has neither
  ASSERT_TRUE(subscriber.wait_for(3, 6, std::chrono::seconds(10)));
  replies.join();
  EXPECT_FALSE(index.worker(3)->in_sync);
  const auto s = subscriber.stats();
  EXPECT_EQ(s.replay_requests, 3u);
  EXPECT_EQ(s.unrecovered_gaps, 1u);
  EXPECT_EQ(s.decode_failures, 1u);
  EXPECT_EQ(s.replayed_batches, 1u);  // batch 1 (the first replay's batch 0 was the live one in hand)
}

TEST(KVEventSubscriber, BadSourcesAreRefused) {
  WireIndex index;
  EXPECT_THROW(llmds::KVEventSubscriber(index, {}), std::invalid_argument);
  EXPECT_THROW(llmds::KVEventSubscriber(index, {{1, "tcp://127.0.0.1:1", "", ""}, {1, "tcp://127.0.0.1:2", "", ""}}),
               std::invalid_argument);
  EXPECT_THROW(llmds::KVEventSubscriber(index, {{1, "nonsense://x", "", ""}}), std::invalid_argument);
}

}  // namespace
