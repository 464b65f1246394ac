// Fuzz target: a KV event batch off the wire (decode_kv_event_batch, include/llmds/kv/routing/
// kv_event_wire.hpp), the bytes a router reads from another server's ZeroMQ stream.
//
// Input: a MessagePack payload. Whatever the bytes, the decoder answers with a batch or with
// std::invalid_argument, without reading past the input; a batch it accepts, encoded again in
// either encoding, decodes to the same batch.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>

#include "fuzz_common.hpp"
#include "llmds/kv/routing/kv_event_wire.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  llmds::DecodedKVEventBatch decoded;
  try {
    decoded = llmds::decode_kv_event_batch(std::as_bytes(std::span(data, size)), 7);
  } catch (const std::invalid_argument&) {
    return 0;
  }
  llmds::fuzz::must_not_throw(
      [&] {
        LLMDS_FUZZ_CHECK(decoded.batch.seq == 7);
        for (const auto encoding : {llmds::KVEventEncoding::kMap, llmds::KVEventEncoding::kArray}) {
          llmds::KVEventWireFormat format;
          format.encoding = encoding;
          format.data_parallel_rank = decoded.data_parallel_rank;
          const std::string again = llmds::encode_kv_event_batch(decoded.batch, decoded.ts, format);
          const auto twice = llmds::decode_kv_event_batch(std::as_bytes(std::span(again.data(), again.size())), 7);
          LLMDS_FUZZ_CHECK(twice.batch == decoded.batch);
          LLMDS_FUZZ_CHECK(twice.data_parallel_rank == decoded.data_parallel_rank);
          LLMDS_FUZZ_CHECK(twice.ts == decoded.ts || (std::isnan(twice.ts) && std::isnan(decoded.ts)));
        }
      },
      "re-encoding an accepted batch");
  return 0;
}
