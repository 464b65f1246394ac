#include "llmds/engine/llama.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <sstream>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "llmds/core/errors.hpp"
#include "llmds/engine/engine.hpp"
#include "llmds/engine/sampler.hpp"
#include "llmds/engine/tokenizer.hpp"
#include "reference_outputs.hpp"
#include "test_data.hpp"
#include "tiny_model.hpp"

namespace {

using llmds::ForwardChunk;
using llmds::ForwardScratch;
using llmds::KVStore;
using llmds::LlamaModel;
using llmds::TokenId;

// Greedy decoding as run.c: prompt tokens forced one position at a time (or prefilled as one
// chunk), then argmax, `steps` forward calls in all. Returns [first prompt token] + every next.
std::vector<TokenId> greedy(const LlamaModel& model, const std::vector<TokenId>& prompt, std::size_t steps,
                            bool prefill_as_chunk, std::size_t page_size = 16) {
  KVStore cache(llmds::kv_cache_config(model.config(), page_size, 64));
  ForwardScratch scratch;
  const std::size_t width = model.config().kv_entry_width();
  std::vector<float> logits(static_cast<std::size_t>(model.config().vocab_size));
  std::vector<TokenId> out = {prompt.front()};
  cache.attach(1, std::span<const float>{});
  std::size_t pos = 0;
  if (prefill_as_chunk && prompt.size() > 1) {
    ForwardChunk chunk{cache.view(1), 0, prompt, true};
    std::vector<float> kv(prompt.size() * width);
    model.forward(std::span(&chunk, 1), kv, logits, scratch);
    cache.append(1, kv);
    out.insert(out.end(), prompt.begin() + 1, prompt.end());
    pos = prompt.size();
    out.push_back(llmds::Sampler::argmax(logits));
  }
  std::vector<float> kv(width);
  while (out.size() < steps + 1) {
    const TokenId token = out.back();
    ForwardChunk chunk{cache.view(1), pos, std::span(&token, 1), true};
    model.forward(std::span(&chunk, 1), kv, logits, scratch);
    cache.append(1, kv);
    ++pos;
    out.push_back(pos < prompt.size() ? prompt[pos] : llmds::Sampler::argmax(logits));
  }
  return out;
}

TEST(LlamaModel, LoadsStories260K) {
  LLMDS_REQUIRE_DATA_FILE(path, "models/stories260K.bin");
  const LlamaModel model = LlamaModel::load(path);
  const auto& c = model.config();
  EXPECT_EQ(c.dim, 64);
  EXPECT_EQ(c.hidden_dim, 172);
  EXPECT_EQ(c.n_layers, 5);
  EXPECT_EQ(c.n_heads, 8);
  EXPECT_EQ(c.n_kv_heads, 4);
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_EQ(c.seq_len, 512);
  EXPECT_TRUE(c.shared_classifier);
  EXPECT_EQ(c.parameters(), 260'032);
  EXPECT_EQ(c.kv_entry_width(), 5u * 2 * 32);
}

TEST(LlamaModel, GreedyDecodingReproducesTheReferenceTokenForToken) {
  LLMDS_REQUIRE_DATA_FILE(path, "models/stories260K.bin");
  LLMDS_REQUIRE_DATA_FILE(reference, "models/reference_outputs.json");
  const LlamaModel model = LlamaModel::load(path);
  const auto expected = llmds::test::reference_token_ids("stories260K_greedy_once_n64");
  ASSERT_EQ(expected.size(), 65u);
  const std::vector<TokenId> prompt = {1, 403, 407, 261, 378};  // BOS "Once upon a time"
  EXPECT_EQ(greedy(model, prompt, 64, false), expected);
  EXPECT_EQ(greedy(model, prompt, 64, true), expected);  // the prompt prefilled as one matrix
  EXPECT_EQ(greedy(model, prompt, 64, true, 3), expected);  // pages of 3 tokens
  const auto empty = llmds::test::reference_token_ids("stories260K_greedy_empty_n64");
  EXPECT_EQ(greedy(model, {1}, 64, false), empty);
}

TEST(LlamaModel, ChunkedPrefillAndBatchedDecodeGiveTheSameLogits) {
  LLMDS_REQUIRE_DATA_FILE(path, "models/stories260K.bin");
  const LlamaModel model = LlamaModel::load(path);
  const std::size_t width = model.config().kv_entry_width();
  const auto vocab = static_cast<std::size_t>(model.config().vocab_size);
  std::vector<TokenId> prompt;
  for (int i = 0; i < 40; ++i) prompt.push_back(static_cast<TokenId>(3 + (i * 37) % 500));

  // Whole prompt in one chunk.
  KVStore a(llmds::kv_cache_config(model.config(), 8, 64));
  ForwardScratch scratch;
  a.attach(1, std::span<const float>{});
  std::vector<float> kv(prompt.size() * width), whole(vocab);
  ForwardChunk c{a.view(1), 0, prompt, true};
  model.forward(std::span(&c, 1), kv, whole, scratch);

  // In chunks of 7, 13 and the rest, each appended before the next.
  KVStore b(llmds::kv_cache_config(model.config(), 8, 64));
  b.attach(1, std::span<const float>{});
  std::vector<float> last(vocab);
  std::size_t done = 0;
  for (const std::size_t n : {7u, 13u, 20u}) {
    ForwardChunk ch{b.view(1), done, std::span(prompt).subspan(done, n), true};
    std::vector<float> part(n * width);
    model.forward(std::span(&ch, 1), part, last, scratch);
    b.append(1, part);
    done += n;
  }
  for (std::size_t i = 0; i < vocab; ++i) EXPECT_NEAR(last[i], whole[i], 1e-4f) << i;
  const auto cached = *b.get(1);
  ASSERT_EQ(cached.size(), kv.size());
  for (std::size_t i = 0; i < kv.size(); ++i) ASSERT_NEAR(cached[i], kv[i], 1e-4f) << "K/V entry " << i;

  // Two sequences in one step (a decode of one, a prefill chunk of the other) give each the
  // logits it gets alone.
  a.append(1, kv);
  a.attach(2, std::span<const float>{});
  const TokenId next = 300;
  const std::vector<TokenId> other = {1, 20, 30, 40};
  std::vector<ForwardChunk> both = {{a.view(1), prompt.size(), std::span(&next, 1), true},
                                    {a.view(2), 0, other, true}};
  std::vector<float> kv_both((1 + other.size()) * width), logits_both(2 * vocab);
  model.forward(both, kv_both, logits_both, scratch);
  std::vector<float> kv_one(width), logits_one(vocab);
  model.forward(std::span(both).subspan(0, 1), kv_one, logits_one, scratch);
  std::vector<float> kv_two(other.size() * width), logits_two(vocab);
  model.forward(std::span(both).subspan(1, 1), kv_two, logits_two, scratch);
  for (std::size_t i = 0; i < vocab; ++i) {
    EXPECT_NEAR(logits_both[i], logits_one[i], 1e-4f);
    EXPECT_NEAR(logits_both[vocab + i], logits_two[i], 1e-4f);
  }
}

TEST(LlamaModel, RejectsBadInputWithoutTouchingTheCache) {
  LLMDS_REQUIRE_DATA_FILE(path, "models/stories260K.bin");
  const LlamaModel model = LlamaModel::load(path);
  KVStore cache(llmds::kv_cache_config(model.config(), 16, 8));
  ForwardScratch scratch;
  cache.attach(1, std::span<const float>{});
  const std::size_t width = model.config().kv_entry_width();
  std::vector<float> kv(width), logits(512);
  const TokenId bad = 512;
  ForwardChunk chunk{cache.view(1), 0, std::span(&bad, 1), true};
  EXPECT_THROW(model.forward(std::span(&chunk, 1), kv, logits, scratch), std::invalid_argument);
  const TokenId ok = 5;
  ForwardChunk late{cache.view(1), 512, std::span(&ok, 1), true};
  EXPECT_THROW(model.forward(std::span(&late, 1), kv, logits, scratch), std::invalid_argument);
  ForwardChunk missing{cache.view(1), 3, std::span(&ok, 1), true};  // no pages for 0..2
  EXPECT_THROW(model.forward(std::span(&missing, 1), kv, logits, scratch), std::invalid_argument);
  std::vector<float> short_logits(10);
  ForwardChunk good{cache.view(1), 0, std::span(&ok, 1), true};
  EXPECT_THROW(model.forward(std::span(&good, 1), kv, short_logits, scratch), std::invalid_argument);
  EXPECT_EQ(cache.num_tokens(1), 0u);

  // Entries of another width (a cache shaped for another model) are refused, not misread.
  llmds::KVCacheConfig narrow = llmds::kv_cache_config(model.config(), 16, 8);
  narrow.entry_width = width / 2;
  KVStore other(narrow);
  other.attach(1, std::vector<float>(narrow.entry_width));
  ForwardChunk misread{other.view(1), 1, std::span(&ok, 1), true};
  EXPECT_THROW(model.forward(std::span(&misread, 1), kv, logits, scratch), std::invalid_argument);
}

TEST(LlamaModel, CorruptCheckpointsNameTheFileAndTheProblem) {
  LLMDS_REQUIRE_DATA_FILE(path, "models/stories260K.bin");
  const auto dir = std::filesystem::temp_directory_path() / "llmds_test_llama";
  std::filesystem::create_directories(dir);
  std::ifstream in(path, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto write = [&](const std::string& name, const std::string& content) {
    const auto p = dir / name;
    std::ofstream(p, std::ios::binary) << content;
    return p;
  };
  auto message_of = [](const std::filesystem::path& p) {
    try {
      (void)LlamaModel::load(p);
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  const auto truncated = write("truncated.bin", bytes.substr(0, bytes.size() - 100));
  EXPECT_NE(message_of(truncated).find("truncated.bin"), std::string::npos);
  EXPECT_NE(message_of(truncated).find("truncated"), std::string::npos);
  const auto header_only = write("header.bin", bytes.substr(0, 10));
  EXPECT_NE(message_of(header_only).find("header"), std::string::npos);
  std::string bad_heads = bytes;
  bad_heads[12] = 7;  // n_heads = 7: dim 64 is not a multiple
  EXPECT_NE(message_of(write("heads.bin", bad_heads)).find("n_heads"), std::string::npos);
  EXPECT_NE(message_of(write("long.bin", bytes + "xx")).find("trailing bytes"), std::string::npos);
  EXPECT_THROW((void)LlamaModel::load(dir / "absent.bin"), llmds::IOError);
  std::filesystem::remove_all(dir);
}

TEST(LlamaModel, NonFiniteWeightsAreRefusedNamingTheTensorAndTheElement) {
  for (const float bad : {std::nanf(""), std::numeric_limits<float>::infinity()}) {
    llmds::LlamaWeights w = llmds::test::tiny_weights();
    w.layers[0].w2(3, 5) = bad;
    try {
      LlamaModel model(llmds::test::tiny_config(), std::move(w));
      ADD_FAILURE() << "a model with " << bad << " in its weights was accepted";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("layer 0 w2"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("row 3, column 5"), std::string::npos) << e.what();
    }
  }
}

TEST(LlamaModel, ACheckpointWithANaNWeightIsRefusedNamingTheFileAndTensor) {
  LLMDS_REQUIRE_DATA_FILE(path, "models/stories260K.bin");
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const LlamaModel model = LlamaModel::load(path);
  const auto& c = model.config();
  // After the 28-byte header: the embedding (vocab x dim), then rms_att_weight of each layer.
  const std::size_t offset = 28 + sizeof(float) * (static_cast<std::size_t>(c.vocab_size * c.dim) + 7);
  const float nan = std::nanf("");
  std::memcpy(bytes.data() + offset, &nan, sizeof nan);
  std::istringstream stream(bytes);
  try {
    (void)LlamaModel::load(stream, bytes.size(), "poisoned.bin");
    ADD_FAILURE() << "a checkpoint holding NaN was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("poisoned.bin"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("layer 0 attention_norm"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("row 7"), std::string::npos) << e.what();
  }
}

TEST(LlamaConfig, WidthsWhoseParameterCountOverflowsAreRefused) {
  llmds::LlamaConfig c = llmds::test::tiny_config();
  c.dim = 1 << 30;
  c.n_heads = 1 << 10;
  c.n_kv_heads = 1 << 10;
  c.hidden_dim = std::numeric_limits<int>::max();
  c.n_layers = std::numeric_limits<int>::max();
  EXPECT_THROW(c.validate(), std::invalid_argument);
  c = llmds::test::tiny_config();
  c.rope_theta = std::nanf("");
  EXPECT_THROW(c.validate(), std::invalid_argument);
}

TEST(Tokenizer, AVocabularyTheFileCannotHoldIsRefusedBeforeAllocating) {
  std::string bytes(4, '\0');
  bytes[0] = 16;  // max_token_length 16, then nothing
  EXPECT_THROW((void)llmds::Tokenizer::from_bytes(bytes, std::numeric_limits<int>::max()), llmds::IOError);
  // One token "<unk>"-like record, with a NaN score.
  std::string record(8, '\0');
  const float nan = std::nanf("");
  std::memcpy(record.data(), &nan, 4);
  try {
    (void)llmds::Tokenizer::from_bytes(bytes + record + record + record, 3, "nan.bin");
    ADD_FAILURE() << "a NaN score was accepted";
  } catch (const llmds::IOError& e) {
    EXPECT_NE(std::string(e.what()).find("NaN score"), std::string::npos) << e.what();
  }
}

TEST(Tokenizer, AByteWithNoTokenInTheVocabularyIsAnErrorNotAnIdPastItsEnd) {
  // run.c's byte fallback is token byte + 3; in this 8-token vocabulary that is past the end.
  const auto tok = llmds::test::tiny_tokenizer();
  EXPECT_THROW((void)tok->encode("z"), std::invalid_argument);
  const std::vector<TokenId> ids = tok->encode("ab");
  for (const TokenId t : ids) EXPECT_LT(t, tok->vocab_size());
}

TEST(Tokenizer, APieceSpelledWithASignIsNotAByteTokenForTheEncoder) {
  // run.c's sscanf reads "<0x-1>" as byte 0xFF when decoding; it is no encoder byte token, and
  // it once indexed the encoder's byte table with 2^32 - 1 (the fuzz target found it).
  const llmds::Tokenizer tok({"<unk>", "<s>", "</s>", " ", "<0x41>", "<0x-1>"}, std::vector<float>(6, 0.0f));
  EXPECT_EQ(tok.encode("A", false), (std::vector<TokenId>{3, 4}));  // the dummy-prefix space, then A's byte
  EXPECT_THROW((void)tok.encode("\xff", false), std::invalid_argument);
  EXPECT_EQ(tok.decode(std::vector<TokenId>{5}), "\xff");
}

TEST(Tokenizer, EncodesAsTheReferenceDoes) {
  LLMDS_REQUIRE_DATA_FILE(path, "models/tok512.bin");
  const auto tok = llmds::Tokenizer::load(path, 512);
  using Ids = std::vector<TokenId>;
  EXPECT_EQ(tok.encode("Once upon a time"), (Ids{1, 403, 407, 261, 378}));
  EXPECT_EQ(tok.encode(""), (Ids{1}));
  EXPECT_EQ(tok.encode("Hello world"), (Ids{1, 346, 306, 414, 263, 304, 341}));
  // Byte fallback: code points outside the vocabulary become one token per byte (byte + 3).
  EXPECT_EQ(tok.encode("caf\xc3\xa9 \xe2\x98\x83 \xf0\x9f\x98\x80"),
            (Ids{1, 280, 412, 431, 485, 410, 229, 155, 134, 410, 243, 162, 155, 131}));
  EXPECT_EQ(tok.encode("Hi", false, true).back(), llmds::Tokenizer::kEos);
  EXPECT_EQ(tok.decode(tok.encode("Once upon a time")), "Once upon a time");
  EXPECT_EQ(tok.decode(tok.encode("caf\xc3\xa9 \xe2\x98\x83")), "caf\xc3\xa9 \xe2\x98\x83");
  EXPECT_THROW((void)tok.text_of(512), std::out_of_range);
  EXPECT_THROW((void)llmds::Tokenizer::load(path, 600), llmds::IOError);  // file ends early
  EXPECT_THROW((void)llmds::Tokenizer::load(path, 400), llmds::IOError);  // bytes left over
}

}  // namespace
