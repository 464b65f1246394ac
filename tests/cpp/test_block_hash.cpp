#include "llmds/kv/block_hash.hpp"

#include <cstddef>
#include <numeric>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include <gtest/gtest.h>

namespace {

using llmds::BlockHash;
using llmds::BlockHasher;
using llmds::Sha256;
using llmds::TokenId;

std::span<const std::byte> bytes_of(std::string_view s) {
  return std::as_bytes(std::span(s.data(), s.size()));
}

std::string hex(const llmds::Sha256Digest& d) { return BlockHash{d}.hex(); }

TEST(Sha256, MatchesTheFipsTestVectors) {
  EXPECT_EQ(hex(Sha256::digest(bytes_of("abc"))),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(hex(Sha256::digest({})),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  Sha256 h;  // incremental, and reusable after finish()
  h.update(bytes_of("ab")).update(bytes_of("c"));
  EXPECT_EQ(hex(h.finish()), hex(Sha256::digest(bytes_of("abc"))));
  h.update(bytes_of("abc"));
  EXPECT_EQ(hex(h.finish()), hex(Sha256::digest(bytes_of("abc"))));
}

TEST(BlockHasher, FollowsTheDocumentedEncoding) {
  const std::vector<TokenId> tokens = {1, 2, 3, 4, 5, 6, 7, 8};
  BlockHasher hasher(4);
  const auto chain = hasher.chain(tokens);
  ASSERT_EQ(chain.size(), 2u);

  const auto root = Sha256::digest(bytes_of("llmds.kv.block_hash.v1"));
  Sha256 h;
  h.update(std::as_bytes(std::span(root)));
  h.update(std::as_bytes(std::span(tokens).first(4)));
  const auto h0 = h.finish();
  EXPECT_EQ(chain[0].digest, h0);
  h.update(std::as_bytes(std::span(h0)));
  h.update(std::as_bytes(std::span(tokens).subspan(4)));
  EXPECT_EQ(chain[1].digest, h.finish());

  // The salt: a 64-bit little-endian length and its bytes, after the first page's tokens.
  const std::string_view salt = "tenant-a";
  const std::uint64_t length = salt.size();
  h.update(std::as_bytes(std::span(root)));
  h.update(std::as_bytes(std::span(tokens).first(4)));
  h.update(std::as_bytes(std::span(&length, 1)));
  h.update(bytes_of(salt));
  EXPECT_EQ(hasher.chain(tokens, bytes_of(salt))[0].digest, h.finish());
}

TEST(BlockHasher, OnlyFullPagesAreHashed) {
  BlockHasher hasher(4);
  std::vector<TokenId> tokens(11);
  std::iota(tokens.begin(), tokens.end(), 0);
  EXPECT_EQ(hasher.chain(tokens).size(), 2u);
  EXPECT_EQ(hasher.chain(std::span(tokens).first(3)).size(), 0u);
  // The partial tail does not affect the full pages' hashes.
  EXPECT_EQ(hasher.chain(tokens), hasher.chain(std::span(tokens).first(8)));
}

TEST(BlockHasher, AChangeReachesItsPageAndEveryLaterOne) {
  BlockHasher hasher(4);
  std::vector<TokenId> a(16);
  std::iota(a.begin(), a.end(), 100);
  auto b = a;
  b[9] = -1;  // in page 2
  const auto ha = hasher.chain(a);
  const auto hb = hasher.chain(b);
  EXPECT_EQ(ha[0], hb[0]);
  EXPECT_EQ(ha[1], hb[1]);
  EXPECT_NE(ha[2], hb[2]);
  EXPECT_NE(ha[3], hb[3]);
}

TEST(BlockHasher, SaltsSeparateEveryPage) {
  BlockHasher hasher(4);
  const std::vector<TokenId> tokens = {1, 2, 3, 4, 5, 6, 7, 8};
  const auto none = hasher.chain(tokens);
  const auto a = hasher.chain(tokens, bytes_of("a"));
  const auto b = hasher.chain(tokens, bytes_of("b"));
  for (std::size_t i = 0; i < none.size(); ++i) {
    EXPECT_NE(none[i], a[i]);
    EXPECT_NE(a[i], b[i]);
  }
  EXPECT_EQ(hasher.chain(tokens, bytes_of("")), none);  // an empty salt is no salt
}

TEST(BlockHasher, PageContentsAndPositionBothMatter) {
  // The same page at a different position (after a different parent) hashes differently, and
  // distinct pages never collide over many draws.
  BlockHasher hasher(2);
  std::unordered_set<BlockHash> seen;
  std::vector<TokenId> tokens;
  for (TokenId t = 0; t < 2000; ++t) tokens.push_back(t % 7);
  for (const auto& h : hasher.chain(tokens)) EXPECT_TRUE(seen.insert(h).second);
}

TEST(BlockHasher, RejectsAPageOfTheWrongSize) {
  BlockHasher hasher(4);
  const std::vector<TokenId> three = {1, 2, 3};
  EXPECT_THROW((void)hasher.next(nullptr, three), std::invalid_argument);
  EXPECT_THROW(BlockHasher(0), std::invalid_argument);
}

}  // namespace
