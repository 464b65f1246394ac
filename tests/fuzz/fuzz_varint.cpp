// Fuzz target: detail::decode_varint_checked (include/llmds/detail/varint.hpp).
//
// Input: any bytes, read as a run of varints until the first one that does not decode. Each
// decode is checked against a reference written here from the definition (LEB128: 7 bits per
// byte, low bits first, high bit set on every byte but the last), in 128-bit arithmetic:
//
//   accepted  exactly the sequences of at most 10 bytes that end (a byte with the high bit clear)
//             before the input does and whose value fits 64 bits. That includes overlong
//             spellings with zero high groups (0x80 0x00 is 0), which encode_varint never
//             writes: decode_varint_checked only promises a value, and callers that need one
//             spelling per value (the posting lists of a saved index) compare the length with
//             varint_size(value) themselves.
//   refused   a sequence the input ends inside, one longer than 10 bytes, or one whose value
//             needs more than 64 bits (10th byte above 1).
//
// and against the encoder: re-encoding the value gives back the consumed bytes exactly when
// they are the canonical spelling, and a shorter spelling of the same value otherwise; the
// unchecked decode_varint reads the same value and length from the same bytes.
#include <cstdint>
#include <optional>
#include <vector>

#include "fuzz_common.hpp"
#include "llmds/detail/varint.hpp"

namespace {

struct Decoded {
  std::uint64_t value;
  std::size_t length;
};

std::optional<Decoded> reference_decode(const std::uint8_t* p, const std::uint8_t* end) {
  unsigned __int128 value = 0;
  for (std::size_t i = 0; p + i < end; ++i) {
    if (i == 10) return std::nullopt;
    value |= static_cast<unsigned __int128>(p[i] & 0x7F) << (7 * i);
    if ((p[i] & 0x80) == 0) {
      if (value >> 64 != 0) return std::nullopt;
      return Decoded{static_cast<std::uint64_t>(value), i + 1};
    }
  }
  return std::nullopt;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::uint8_t* p = data;
  const std::uint8_t* const end = data + size;
  while (true) {
    const auto expected = reference_decode(p, end);
    const std::uint8_t* q = p;
    std::uint64_t value = 12345;
    const bool ok = llmds::detail::decode_varint_checked(q, end, value);
    LLMDS_FUZZ_CHECK(ok == expected.has_value());
    if (!ok) return 0;
    LLMDS_FUZZ_CHECK(value == expected->value);
    LLMDS_FUZZ_CHECK(q == p + expected->length);

    std::vector<std::uint8_t> encoded;
    llmds::detail::encode_varint(value, encoded);
    LLMDS_FUZZ_CHECK(encoded.size() == llmds::detail::varint_size(value));
    const bool canonical = expected->length == 1 || p[expected->length - 1] != 0;
    if (canonical) {
      LLMDS_FUZZ_CHECK(encoded == std::vector<std::uint8_t>(p, q));
    } else {
      LLMDS_FUZZ_CHECK(encoded.size() < expected->length);
    }
    const std::uint8_t* r = p;
    LLMDS_FUZZ_CHECK(llmds::detail::decode_varint(r) == value);
    LLMDS_FUZZ_CHECK(r == q);
    const std::uint8_t* s = encoded.data();
    std::uint64_t again = 0;
    LLMDS_FUZZ_CHECK(llmds::detail::decode_varint_checked(s, encoded.data() + encoded.size(), again));
    LLMDS_FUZZ_CHECK(again == value && s == encoded.data() + encoded.size());
    p = q;
  }
}
