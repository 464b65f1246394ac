// Fuzz target: the disk tier's block file header (DiskStore::decode_header,
// include/llmds/kv/tiered/disk_store.hpp), the bytes a restarted server reads back from disk.
//
// Input: a mode byte (see saved_file_from_input), then a header page. Whatever the bytes, the
// decoder answers with a header or with nothing; a header it accepts has the store's hash width
// and a priority in range, and encoding it again gives a page that decodes to the same header.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "fuzz_common.hpp"
#include "llmds/kv/tiered/disk_store.hpp"

using llmds::DiskStore;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string file = llmds::fuzz::saved_file_from_input(data, size);
  llmds::DiskStoreConfig config;
  config.directory = "unused";
  config.geometry = llmds::BlockGeometry{16, 2, 2, 64, llmds::ScalarType::kFloat16};
  config.hash_bytes = 32;
  const auto header = DiskStore::decode_header(std::as_bytes(std::span(file.data(), file.size())), config);
  if (!header) return 0;
  llmds::fuzz::must_not_throw(
      [&] {
        LLMDS_FUZZ_CHECK(file.size() == DiskStore::kHeaderBytes);
        LLMDS_FUZZ_CHECK(header->block.hash.size() == config.hash_bytes);
        LLMDS_FUZZ_CHECK(header->block.priority <= llmds::kMaxRetentionPriority);
        std::vector<std::byte> page(DiskStore::kHeaderBytes);
        LLMDS_FUZZ_CHECK(DiskStore::encode_header(header->block, header->payload_checksum, config, page.data()));
        const auto again = DiskStore::decode_header(page, config);
        LLMDS_FUZZ_CHECK(again.has_value());
        LLMDS_FUZZ_CHECK(again->payload_checksum == header->payload_checksum);
        LLMDS_FUZZ_CHECK(again->block.hash == header->block.hash && again->block.parent == header->block.parent);
        LLMDS_FUZZ_CHECK(again->block.tokens == header->block.tokens);
        LLMDS_FUZZ_CHECK(again->block.priority == header->block.priority &&
                         again->block.created_ns == header->block.created_ns);
      },
      "re-encoding an accepted header");
  return 0;
}
