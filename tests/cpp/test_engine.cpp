#include "llmds/engine/engine.hpp"

#include <unistd.h>

#include <atomic>
#include <cmath>
#include <limits>
#include <optional>
#include <chrono>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "reference_outputs.hpp"
#include "test_data.hpp"
#include "tiny_model.hpp"

namespace {

using llmds::Engine;
using llmds::EngineConfig;
using llmds::FinishReason;
using llmds::Request;
using llmds::Response;
using llmds::TokenId;
using Ids = std::vector<TokenId>;

// One model and tokenizer for every test (loading takes a few milliseconds, but engines are
// made often).
struct Stories {
  std::shared_ptr<const llmds::LlamaModel> model;
  std::shared_ptr<const llmds::Tokenizer> tokenizer;
};

const Stories* stories() {
  static const Stories* loaded = [] {
    const auto dir = llmds::test::data_dir() / "models";
    if (!std::filesystem::exists(dir / "stories260K.bin")) return static_cast<Stories*>(nullptr);
    auto m = std::make_shared<const llmds::LlamaModel>(llmds::LlamaModel::load(dir / "stories260K.bin"));
    auto t = std::make_shared<const llmds::Tokenizer>(llmds::Tokenizer::load(dir / "tok512.bin", 512));
    return new Stories{m, t};
  }();
  return loaded;
}

#define REQUIRE_STORIES()                                                                             \
  LLMDS_REQUIRE_DATA_FILE(model_file_, "models/stories260K.bin");                                     \
  const Stories& S = *stories()

std::unique_ptr<Engine> make_engine(const Stories& s, EngineConfig config = {}) {
  return std::make_unique<Engine>(s.model, s.tokenizer, config);
}

Request greedy(std::string prompt, int max_tokens) {
  Request r;
  r.prompt = std::move(prompt);
  r.max_tokens = max_tokens;
  r.sampling.temperature = 0.0f;
  return r;
}

Ids reference_generated(const std::string& run, std::size_t prompt_len) {
  return llmds::test::reference_token_ids(run, prompt_len);
}

TEST(Engine, GreedyGenerationReproducesTheReference) {
  REQUIRE_STORIES();
  auto engine = make_engine(S);
  const Response r = engine->generate(greedy("Once upon a time", 60));
  EXPECT_EQ(r.reason, FinishReason::max_tokens);
  EXPECT_EQ(r.tokens, reference_generated("stories260K_greedy_once_n64", 5));
  EXPECT_EQ("Once upon a time" + r.text,
            "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, "
            "she saw a big, red ball. She wanted to play with it, but it was too high.\nLily");
  EXPECT_EQ(r.prompt_tokens, 5u);
  EXPECT_EQ(r.output_tokens, 60u);
  EXPECT_GT(r.tokens_per_s, 0.0);
  EXPECT_LE(r.time_to_first_token_s, r.latency_s);
  const Response empty = engine->generate(greedy("", 64));
  EXPECT_EQ(empty.tokens, reference_generated("stories260K_greedy_empty_n64", 1));
}

TEST(Engine, RequestsDecodedTogetherGiveTheTokensEachGivesAlone) {
  REQUIRE_STORIES();
  const std::vector<std::string> prompts = {"Once upon a time", "Once upon a time, there was a dog",
                                            "Tom had a red ball", "The sun was hot", "Once upon a time, there was",
                                            "Lily and Ben went to the park", "A little bird", "Once"};
  std::vector<Ids> alone;
  {
    auto engine = make_engine(S, {.page_size = 4, .max_pages = 512, .max_batch_tokens = 64, .max_sequences = 16});
    for (const auto& p : prompts) alone.push_back(engine->generate(greedy(p, 80)).tokens);
  }
  // The first request runs alone until its prompt is cached; the others then arrive together,
  // some sharing its pages, and are decoded in the same steps.
  auto engine = make_engine(S, {.page_size = 4, .max_pages = 512, .max_batch_tokens = 64, .max_sequences = 16});
  std::atomic<bool> started = false;
  Request first = greedy(prompts[0], 80);
  first.on_token = [&](TokenId, std::string_view) { started = true; };
  std::vector<llmds::GenerationHandle> handles;
  handles.push_back(engine->generate_async(first));
  while (!started) std::this_thread::sleep_for(std::chrono::microseconds(100));
  for (std::size_t i = 1; i < prompts.size(); ++i) handles.push_back(engine->generate_async(greedy(prompts[i], 80)));
  std::size_t cached = 0;
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    const Response r = handles[i].get();
    EXPECT_EQ(r.tokens, alone[i]) << prompts[i];
    cached += r.cached_prompt_tokens;
  }
  EXPECT_GT(cached, 0u) << "the 'Once upon a time' pages were shared";
  EXPECT_LT(engine->stats().steps, 8u * 80u) << "the requests shared steps";
}

TEST(Engine, APromptSharingCachedPagesSkipsTheirPrefillAndGivesTheSameTokens) {
  REQUIRE_STORIES();
  std::string system = "Once upon a time, there was a little girl named Lily. She loved to play outside.";
  auto engine = make_engine(S, {.page_size = 8});
  const Response first = engine->generate(greedy(system + " One day", 40));
  EXPECT_EQ(first.cached_prompt_tokens, 0u);
  const Response second = engine->generate(greedy(system + " One day", 40));
  EXPECT_GT(second.cached_prompt_tokens, 0u);
  EXPECT_EQ(second.cached_prompt_tokens % 8, 0u);
  EXPECT_LT(second.cached_prompt_tokens, second.prompt_tokens);
  EXPECT_EQ(second.tokens, first.tokens);
  Request no_reuse = greedy(system + " One day", 40);
  no_reuse.reuse_cache = false;
  const Response third = engine->generate(no_reuse);
  EXPECT_EQ(third.cached_prompt_tokens, 0u);
  EXPECT_EQ(third.tokens, first.tokens);
  Request salted = greedy(system + " One day", 40);
  salted.cache_salt = "tenant-b";
  EXPECT_EQ(engine->generate(salted).cached_prompt_tokens, 0u) << "another tenant's salt shares nothing";
}

TEST(Engine, PrefixesOnboardedFromHostAndDiskGiveTheReferenceTokens) {
  REQUIRE_STORIES();
  // Six prompts, three sharing a long prefix, served round after round. The arena holds about
  // one request, so every shared prefix is evicted to host, then to disk, between its uses.
  const std::string lily = "Once upon a time, there was a little girl named Lily. She loved to play outside";
  const std::vector<std::string> prompts = {"Once upon a time",      lily + " in the park.",
                                            "Tom had a red ball",    lily + " with her dog.",
                                            "The sun was hot today", lily + "."};
  std::vector<Ids> expected;
  {
    auto unlimited = make_engine(S, {.page_size = 4, .max_pages = 2048, .max_batch_tokens = 64, .max_sequences = 4});
    for (const auto& p : prompts) expected.push_back(unlimited->generate(greedy(p, 60)).tokens);
  }
  EXPECT_EQ(expected[0], reference_generated("stories260K_greedy_once_n64", 5));
  // Without and with the reclaimer (pages go down to host on its thread, ahead of need).
  for (const std::size_t reclaim : {0, 4}) {
    const auto dir = std::filesystem::temp_directory_path() /
                     ("llmds-engine-tiers-" + std::to_string(::getpid()) + "-" + std::to_string(reclaim));
    std::filesystem::remove_all(dir);
    EngineConfig config{.page_size = 4, .max_pages = 48, .max_batch_tokens = 64, .max_sequences = 4};
    config.tiers.host_pages = 32;
    config.tiers.disk_pages = 4096;
    config.tiers.disk_directory = dir;
    config.tiers.reclaim_pages = reclaim;
    auto engine = make_engine(S, config);
    std::size_t from_host = 0, from_disk = 0;
    for (int round = 0; round < 3; ++round) {
      for (std::size_t i = 0; i < prompts.size(); ++i) {
        const Response r = engine->generate(greedy(prompts[i], 60));
        EXPECT_EQ(r.tokens, expected[i]) << "round " << round << ": " << prompts[i];
        EXPECT_LE(r.cached_from_host + r.cached_from_disk, r.cached_prompt_tokens);
        from_host += r.cached_from_host;
        from_disk += r.cached_from_disk;
      }
    }
    EXPECT_GT(from_host, 0u);
    EXPECT_GT(from_disk, 0u);
    const auto stats = engine->stats();
    EXPECT_EQ(stats.cached_from_host, from_host);
    EXPECT_EQ(stats.cached_from_disk, from_disk);
    // All at once, twice: prompts whose pages come up from host or disk in the background
    // wait for them while the others run, and cancelling one on its way up loses nothing.
    for (int round = 0; round < 2; ++round) {
      std::vector<llmds::GenerationHandle> handles;
      for (const auto& p : prompts) handles.push_back(engine->generate_async(greedy(p, 60)));
      auto cancelled = engine->generate_async(greedy(prompts[1], 60));
      cancelled.cancel();
      for (std::size_t i = 0; i < prompts.size(); ++i) {
        const Response r = handles[i].get();
        EXPECT_EQ(r.tokens, expected[i]) << prompts[i] << ": " << r.error;
      }
      EXPECT_EQ(cancelled.get().reason, FinishReason::cancelled);
    }
    EXPECT_GT(engine->stats().cached_from_host + engine->stats().cached_from_disk, from_host + from_disk);
    EXPECT_EQ(engine->stats().reclaimed_pages > 0, reclaim > 0);
    EXPECT_GE(engine->stats().evicted_pages, engine->stats().reclaimed_pages);
    engine.reset();
    std::filesystem::remove_all(dir);
  }
}

TEST(Engine, SeededSamplingIsReproducibleAndMatchesTheReferenceRng) {
  REQUIRE_STORIES();
  auto engine = make_engine(S);
  Request r;
  r.prompt = "Once upon a time";
  r.max_tokens = 60;
  r.sampling = {.temperature = 0.8f, .top_k = 0, .top_p = 0.9f, .seed = 42};
  const Response a = engine->generate(r);
  const Response b = engine->generate(r);
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_EQ(a.tokens, reference_generated("stories260K_sampled_t0.8_p0.9_s42_once_n64", 5));
  r.sampling.seed = 43;
  EXPECT_NE(engine->generate(r).tokens, a.tokens);
  r.sampling = {.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .seed = 42};
  EXPECT_EQ(engine->generate(r).tokens, reference_generated("stories260K_sampled_t1_p1_s42_once_n64", 5));
  r.sampling = {.temperature = 1.0f, .top_k = 5, .top_p = 1.0f, .seed = 7};
  EXPECT_EQ(engine->generate(r).tokens, engine->generate(r).tokens);
}

TEST(Engine, StopTokensStopStringsAndMaxTokens) {
  REQUIRE_STORIES();
  auto engine = make_engine(S);
  const Ids full = engine->generate(greedy("Once upon a time", 60)).tokens;
  Request stop_token = greedy("Once upon a time", 60);
  stop_token.stop_token_ids = {full[9]};
  const Response st = engine->generate(stop_token);
  EXPECT_EQ(st.reason, FinishReason::stop_token);
  const auto first = static_cast<std::size_t>(std::find(full.begin(), full.end(), full[9]) - full.begin());
  EXPECT_EQ(st.tokens, Ids(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(first)));
  Request stop_string = greedy("Once upon a time", 60);
  stop_string.stop_strings = {"named", "ball"};
  const Response ss = engine->generate(stop_string);
  EXPECT_EQ(ss.reason, FinishReason::stop_string);
  EXPECT_EQ(ss.text, ", there was a little girl ");
  const Response three = engine->generate(greedy("Once upon a time", 3));
  EXPECT_EQ(three.reason, FinishReason::max_tokens);
  EXPECT_EQ(three.tokens, Ids(full.begin(), full.begin() + 3));
}

TEST(Engine, TheModelsEndOfTextEndsARequest) {
  REQUIRE_STORIES();
  auto engine = make_engine(S);
  // Stories end with the model starting a new one (BOS). Find a seed whose story ends within
  // the context; the first seed that does is deterministic for this model.
  bool ended = false;
  for (std::uint64_t seed = 1; seed <= 20 && !ended; ++seed) {
    Request r;
    r.prompt = "Once upon a time";
    r.max_tokens = 500;
    r.sampling = {.temperature = 1.0f, .top_k = 0, .top_p = 0.9f, .seed = seed};
    const Response resp = engine->generate(r);
    if (resp.reason == FinishReason::eos) {
      ended = true;
      EXPECT_LT(resp.output_tokens, 500u);
      EXPECT_EQ(std::count(resp.tokens.begin(), resp.tokens.end(), llmds::Tokenizer::kBos), 0);
    }
  }
  EXPECT_TRUE(ended);
}

TEST(Engine, CancellationEndsARequestFromAnyThread) {
  REQUIRE_STORIES();
  auto engine = make_engine(S);
  std::atomic<int> seen = 0;
  Request slow = greedy("Once upon a time", 400);
  slow.on_token = [&](TokenId, std::string_view) {
    ++seen;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  };
  auto handle = engine->generate_async(slow);
  while (seen < 5) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  std::thread([&] { handle.cancel(); }).join();
  const Response r = handle.get();
  EXPECT_EQ(r.reason, FinishReason::cancelled);
  EXPECT_GE(r.output_tokens, 5u);
  EXPECT_LT(r.output_tokens, 400u);
  EXPECT_FALSE(engine->cancel(handle.id())) << "a finished request is no longer in the engine";
  auto queued = engine->generate_async(greedy("Once upon a time", 400));
  EXPECT_TRUE(engine->cancel(queued.id()));
  EXPECT_EQ(queued.get().reason, FinishReason::cancelled);
}

TEST(Engine, ACallbackThatThrowsEndsOnlyItsRequest) {
  REQUIRE_STORIES();
  auto engine = make_engine(S, {.page_size = 8, .max_pages = 256});
  const Ids expected = engine->generate(greedy("Tom had a red ball", 50)).tokens;
  Request bad = greedy("Once upon a time", 50);
  int calls = 0;
  bad.on_token = [&](TokenId, std::string_view) {
    if (++calls == 3) throw std::runtime_error("disk full");
  };
  auto failing = engine->generate_async(bad);
  auto fine = engine->generate_async(greedy("Tom had a red ball", 50));
  const Response f = failing.get();
  EXPECT_EQ(f.reason, FinishReason::error);
  EXPECT_NE(f.error.find("disk full"), std::string::npos);
  EXPECT_EQ(fine.get().tokens, expected);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(engine->stats().cache.used_pages, 0u) << "the failed request's pages were freed";
}

TEST(Engine, PreemptionWhenPagesRunOutKeepsEveryRequestsTokens) {
  REQUIRE_STORIES();
  const std::vector<std::string> prompts = {"Once upon a time", "Tom had a red ball", "The sun was hot",
                                            "A little bird"};
  std::vector<Ids> alone;
  {
    auto engine = make_engine(S, {.page_size = 4, .max_pages = 512});
    for (const auto& p : prompts) alone.push_back(engine->generate(greedy(p, 120)).tokens);
  }
  // 4 requests x ~125 tokens need ~128 pages of 4; give them 48.
  auto engine = make_engine(S, {.page_size = 4, .max_pages = 48, .max_batch_tokens = 64, .max_sequences = 8});
  std::vector<llmds::GenerationHandle> handles;
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    Request r = greedy(prompts[i], 120);
    r.priority = static_cast<int>(i);
    handles.push_back(engine->generate_async(r));
  }
  std::size_t preemptions = 0;
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    const Response r = handles[i].get();
    EXPECT_EQ(r.reason, FinishReason::max_tokens);
    EXPECT_EQ(r.tokens, alone[i]) << prompts[i];
    preemptions += r.preemptions;
  }
  EXPECT_GT(preemptions, 0u);
  EXPECT_EQ(engine->stats().preemptions, preemptions);
  // A request that cannot fit at all ends with an error instead of looping.
  auto tiny = make_engine(S, {.page_size = 4, .max_pages = 8});
  const Response too_long = tiny->generate(greedy("Once upon a time", 100));
  EXPECT_EQ(too_long.reason, FinishReason::error);
  EXPECT_NE(too_long.error.find("out of KV pages"), std::string::npos);
}

TEST(Engine, KeptPagesStayHeldUntilReleased) {
  REQUIRE_STORIES();
  auto engine = make_engine(S, {.page_size = 8, .max_pages = 64});
  Request r = greedy("Once upon a time", 30);
  r.free_cache_on_finish = false;
  const Response resp = engine->generate(r);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_GT(engine->stats().cache.used_pages, 0u);
  EXPECT_TRUE(engine->release(resp.id));
  EXPECT_FALSE(engine->release(resp.id));
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(engine->stats().cache.used_pages, 0u);
}

TEST(Engine, BadRequestsAreRejectedBeforeQueueing) {
  REQUIRE_STORIES();
  auto engine = make_engine(S, {.page_size = 4, .max_pages = 8});
  Request r = greedy("Once", 0);
  EXPECT_THROW(engine->generate_async(r), std::invalid_argument);
  r = greedy("", 5);
  r.prompt_tokens = {1, 600};
  EXPECT_THROW(engine->generate_async(r), std::invalid_argument);
  r.prompt_tokens = Ids(513, 5);
  EXPECT_THROW(engine->generate_async(r), std::invalid_argument);  // longer than the context
  r.prompt_tokens = Ids(40, 5);
  EXPECT_THROW(engine->generate_async(r), std::invalid_argument);  // more than 8 pages of 4
  r = greedy("Once", 5);
  r.sampling.temperature = -1;
  EXPECT_THROW(engine->generate_async(r), std::invalid_argument);
  r = greedy("Once", 5);
  r.stop_strings = {""};
  EXPECT_THROW(engine->generate_async(r), std::invalid_argument);
  EXPECT_EQ(engine->stats().requests_finished, 0u);
  EXPECT_THROW(Engine::load("/nonexistent/model.bin", "/nonexistent/tok.bin"), llmds::IOError);
}

TEST(Request, ValidateNamesTheFieldThatIsWrong) {
  auto message_of = [](const Request& r) {
    try {
      r.validate();
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("valid");
  };
  EXPECT_EQ(message_of(greedy("Once", 5)), "valid");
  for (const double slo : {-1.0, 0.0, std::nan(""), std::numeric_limits<double>::infinity()}) {
    Request r = greedy("Once", 5);
    r.slo_ms = slo;
    EXPECT_NE(message_of(r).find("Request.slo_ms"), std::string::npos) << slo;
  }
  Request r = greedy("Once", 0);
  EXPECT_NE(message_of(r).find("Request.max_tokens"), std::string::npos);
  r = greedy("Once", 5);
  r.top_logits = -1;
  EXPECT_NE(message_of(r).find("Request.top_logits"), std::string::npos);
  r = greedy("Once", 5);
  r.stop_token_ids = {2, -3};
  EXPECT_NE(message_of(r).find("Request.stop_token_ids"), std::string::npos);
  r = greedy("Once", 5);
  r.prompt_tokens = {1, -1};
  EXPECT_NE(message_of(r).find("Request.prompt_tokens"), std::string::npos);
  r = greedy("Once", 5);
  r.stop_strings = {"end", ""};
  EXPECT_NE(message_of(r).find("Request.stop_strings"), std::string::npos);
  for (const float t : {-1.0f, std::nanf(""), std::numeric_limits<float>::infinity()}) {
    r = greedy("Once", 5);
    r.sampling.temperature = t;
    EXPECT_NE(message_of(r).find("SamplingParams.temperature"), std::string::npos) << t;
  }
  r = greedy("Once", 5);
  r.sampling.top_p = 1.5f;
  EXPECT_NE(message_of(r).find("SamplingParams.top_p"), std::string::npos);
  r = greedy("Once", 5);
  r.sampling.top_k = -2;
  EXPECT_NE(message_of(r).find("SamplingParams.top_k"), std::string::npos);
}

// Only token 5's embedding has a first component, and the attention norm scales that component
// by 1e20: its queries and keys reach 1e20, their dot products overflow, and every logit of a
// sequence holding token 5 is NaN. The weights are finite and the other tokens ordinary.
std::shared_ptr<const llmds::LlamaModel> model_that_overflows_on_token_5() {
  llmds::LlamaWeights w = llmds::test::tiny_weights();
  w.embedding.col(0).setZero();
  w.embedding(5, 0) = 1.0f;
  w.layers[0].attention_norm(0) = 1e20f;
  return std::make_shared<const llmds::LlamaModel>(llmds::test::tiny_config(), std::move(w));
}

TEST(Engine, NonFiniteLogitsEndOnlyTheirRequestAndTheEngineKeepsServing) {
  Engine engine(model_that_overflows_on_token_5(), llmds::test::tiny_tokenizer(), {.page_size = 4, .max_pages = 32});
  Request bad;
  bad.prompt_tokens = {1, 5};
  bad.max_tokens = 4;
  bad.sampling.temperature = 0.8f;
  bad.sampling.seed = 1;
  Request good = bad;
  good.prompt_tokens = {1, 4};
  good.ignore_eos = true;
  good.stop_token_ids = {5};  // sampled, it would be the next step's input
  auto failing = engine.generate_async(bad);
  auto fine = engine.generate_async(good);
  const Response f = failing.get();
  EXPECT_EQ(f.reason, FinishReason::error);
  EXPECT_NE(f.error.find("not finite"), std::string::npos) << f.error;
  const Response g = fine.get();
  EXPECT_NE(g.reason, FinishReason::error) << g.error;
  EXPECT_FALSE(g.tokens.empty() && g.reason == FinishReason::max_tokens);
  // And after it, as before.
  EXPECT_EQ(engine.generate(good).tokens, g.tokens);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(engine.stats().cache.used_pages, 0u) << "the failed request's pages were freed";
}

TEST(Engine, WaitingForTheEngineFromItsOwnThreadThrowsInsteadOfDeadlocking) {
  auto model = std::make_shared<const llmds::LlamaModel>(llmds::test::tiny_config(), llmds::test::tiny_weights());
  Engine engine(model, llmds::test::tiny_tokenizer());
  Request r;
  r.prompt_tokens = {1, 4};
  r.max_tokens = 3;
  r.sampling.temperature = 0.0f;
  r.ignore_eos = true;
  Request inner = r;
  std::optional<llmds::GenerationHandle> queued;  // queueing from a callback is allowed
  std::string refused_generate, refused_get;
  r.on_token = [&](TokenId, std::string_view) {
    if (queued) return;
    EXPECT_TRUE(engine.on_engine_thread());
    try {
      (void)engine.generate(inner);
    } catch (const std::logic_error& e) {
      refused_generate = e.what();
    }
    queued = engine.generate_async(inner);
    try {
      (void)queued->get();
    } catch (const std::logic_error& e) {
      refused_get = e.what();
    }
  };
  const Response outer = engine.generate(r);
  EXPECT_EQ(outer.reason, FinishReason::max_tokens) << outer.error;
  EXPECT_NE(refused_generate.find("own thread"), std::string::npos);
  EXPECT_NE(refused_get.find("own thread"), std::string::npos);
  ASSERT_TRUE(queued);
  EXPECT_EQ(queued->get().reason, FinishReason::max_tokens);
  EXPECT_FALSE(engine.on_engine_thread());
}

TEST(Engine, ShutdownCancelsWhatIsInFlightAndRefusesLaterRequests) {
  auto model = std::make_shared<const llmds::LlamaModel>(llmds::test::tiny_config(), llmds::test::tiny_weights());
  Engine engine(model, llmds::test::tiny_tokenizer());
  Request r;
  r.prompt_tokens = {1, 4};
  r.max_tokens = 25;
  r.ignore_eos = true;
  std::atomic<bool> refused = false;
  r.on_token = [&](TokenId, std::string_view) {
    try {
      engine.shutdown();
    } catch (const std::logic_error&) {
      refused = true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  };
  auto handle = engine.generate_async(r);
  while (!refused) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  engine.shutdown();
  const Response done = handle.get();
  EXPECT_TRUE(done.reason == FinishReason::cancelled || done.reason == FinishReason::max_tokens);
  EXPECT_THROW((void)engine.generate_async(r), std::runtime_error);
  engine.shutdown();  // again: nothing to do
}

}  // namespace
