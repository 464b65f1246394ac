// The reference engine on stories260K: single-sequence decode speed with K/V read from KVCache
// pages (the model alone, and through the Engine), aggregate speed with 16 concurrent requests,
// and time to first token with and without prefix reuse.
//   LLMDS_DATA_DIR=../shared/data build/cpp/bench/bench_engine
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "llmds/engine/engine.hpp"

namespace {

std::filesystem::path models_dir() {
  for (const char* var : {"LLMDS_DATA_DIR", "LLMDS_DATA_DIR_DEFAULT"}) {
    if (const char* dir = std::getenv(var); dir != nullptr && *dir != '\0') return std::filesystem::path(dir) / "models";
  }
  return std::filesystem::path("../shared/data/models");
}

struct Stories {
  std::shared_ptr<const llmds::LlamaModel> model;
  std::shared_ptr<const llmds::Tokenizer> tokenizer;
};

const Stories* stories() {
  static const Stories* s = []() -> const Stories* {
    const auto dir = models_dir();
    if (!std::filesystem::exists(dir / "stories260K.bin")) return nullptr;
    auto m = std::make_shared<const llmds::LlamaModel>(llmds::LlamaModel::load(dir / "stories260K.bin"));
    auto t = std::make_shared<const llmds::Tokenizer>(llmds::Tokenizer::load(dir / "tok512.bin", 512));
    return new Stories{m, t};
  }();
  return s;
}

#define NEED_STORIES(state)                                                       \
  const Stories* S = stories();                                                   \
  if (S == nullptr) {                                                             \
    (state).SkipWithError("stories260K.bin not found: set LLMDS_DATA_DIR");       \
    return;                                                                       \
  }

llmds::Request greedy(std::string prompt, int max_tokens) {
  llmds::Request r;
  r.prompt = std::move(prompt);
  r.max_tokens = max_tokens;
  r.sampling.temperature = 0.0f;
  r.ignore_eos = true;  // exactly max_tokens tokens, as run.c's -n
  return r;
}

// Greedy decode of `steps` tokens from BOS by the model alone: one forward call per token, K/V
// appended to a KVCache and read back through the block table, argmax sampling.
void BM_ModelDecode(benchmark::State& state) {
  NEED_STORIES(state);
  const auto steps = static_cast<std::size_t>(state.range(0));
  const auto& model = *S->model;
  const std::size_t width = model.config().kv_entry_width();
  llmds::ForwardScratch scratch;
  std::vector<float> kv(width), logits(512);
  for (auto _ : state) {
    llmds::KVStore cache(llmds::kv_cache_config(model.config(), 16, (steps + 15) / 16 + 1));
    cache.attach(1, std::span<const float>{});
    llmds::TokenId token = llmds::Tokenizer::kBos;
    for (std::size_t pos = 0; pos < steps; ++pos) {
      llmds::ForwardChunk chunk{cache.view(1), pos, std::span(&token, 1), true};
      model.forward(std::span(&chunk, 1), kv, logits, scratch);
      cache.append(1, kv);
      token = llmds::Sampler::argmax(logits);
    }
    benchmark::DoNotOptimize(token);
  }
  state.counters["tokens_per_s"] = benchmark::Counter(static_cast<double>(state.iterations() * steps), benchmark::Counter::kIsRate);
}

// The same through the Engine: one request, BOS prompt, steps - 1 generated tokens.
void BM_EngineDecode(benchmark::State& state) {
  NEED_STORIES(state);
  const auto steps = static_cast<int>(state.range(0));
  llmds::Engine engine(S->model, S->tokenizer);
  std::size_t tokens = 0;
  for (auto _ : state) tokens += engine.generate(greedy("", steps - 1)).output_tokens;
  state.counters["tokens_per_s"] = benchmark::Counter(static_cast<double>(tokens), benchmark::Counter::kIsRate);
}

// n concurrent requests, each generating `steps` tokens from BOS, sampled with its own seed, on
// 1 thread or every core.
void BM_EngineConcurrent(benchmark::State& state) {
  NEED_STORIES(state);
  const auto n = static_cast<int>(state.range(0));
  const auto steps = static_cast<int>(state.range(1));
  llmds::Engine engine(S->model, S->tokenizer,
                       {.page_size = 16, .max_pages = 4096, .max_batch_tokens = 512, .max_sequences = 64,
                        .enable_prefix_caching = true, .num_threads = static_cast<std::size_t>(state.range(2))});
  std::size_t tokens = 0;
  for (auto _ : state) {
    std::vector<llmds::GenerationHandle> handles;
    for (int i = 0; i < n; ++i) {
      llmds::Request r;
      r.prompt_tokens = {llmds::Tokenizer::kBos};
      r.max_tokens = steps;
      r.sampling = {.temperature = 1.0f, .top_k = 0, .top_p = 0.9f, .seed = static_cast<std::uint64_t>(i + 1)};
      r.ignore_eos = true;
      handles.push_back(engine.generate_async(r));
    }
    for (auto& h : handles) tokens += h.get().output_tokens;
  }
  state.counters["tokens_per_s"] = benchmark::Counter(static_cast<double>(tokens), benchmark::Counter::kIsRate);
}

// Time to first token of a request whose long prompt another request has already computed,
// with prefix reuse (arg 1) or without (arg 0).
void BM_PrefixReuseTTFT(benchmark::State& state) {
  NEED_STORIES(state);
  const bool reuse = state.range(0) == 1;
  llmds::Engine engine(S->model, S->tokenizer);
  std::string system = "Once upon a time, there was a little girl named Lily.";
  while (S->tokenizer->encode(system).size() < 400) system += " She loved to play outside in the park with her friends.";
  (void)engine.generate(greedy(system, 1));  // computes and caches the prompt's pages
  double ttft = 0;
  std::size_t saved = 0, prompt = 0;
  for (auto _ : state) {
    llmds::Request r = greedy(system + " One day", 1);
    r.reuse_cache = reuse;
    const auto resp = engine.generate(r);
    ttft += resp.time_to_first_token_s;
    saved += resp.cached_prompt_tokens;
    prompt += resp.prompt_tokens;
  }
  const auto it = static_cast<double>(state.iterations());
  state.counters["ttft_us"] = ttft / it * 1e6;
  state.counters["prompt_tokens"] = static_cast<double>(prompt) / it;
  state.counters["prefill_saved"] = static_cast<double>(saved) / it;
}

// 16 requests that share a ~400-token system prompt (a different question each) arrive at once,
// after one earlier request computed the system prompt: mean time to first token and the prompt
// tokens the model had to run, with prefix reuse (arg 1) or without (arg 0).
void BM_SharedPromptBurst(benchmark::State& state) {
  NEED_STORIES(state);
  const bool reuse = state.range(0) == 1;
  std::string system = "Once upon a time, there was a little girl named Lily.";
  while (S->tokenizer->encode(system).size() < 400) system += " She loved to play outside in the park with her friends.";
  const std::vector<std::string> questions = {"One day", "Then", "Lily saw a dog", "The sun was hot", "Her mom said",
                                              "A bird sang", "They ran home", "It was late", "Tom came", "She smiled",
                                              "The ball was red", "It rained", "Max barked", "A cat sat", "They ate",
                                              "The end"};
  double ttft = 0;
  std::uint64_t computed = 0, requests = 0;
  for (auto _ : state) {
    llmds::Engine engine(S->model, S->tokenizer, {.page_size = 16, .max_pages = 4096, .max_batch_tokens = 512, .max_sequences = 64});
    (void)engine.generate(greedy(system, 1));
    const auto before = engine.stats().prefill_tokens;
    std::vector<llmds::GenerationHandle> handles;
    for (const auto& q : questions) {
      llmds::Request r = greedy(system + " " + q, 16);
      r.reuse_cache = reuse;
      handles.push_back(engine.generate_async(r));
    }
    for (auto& h : handles) ttft += h.get().time_to_first_token_s;
    computed += engine.stats().prefill_tokens - before;
    requests += questions.size();
  }
  state.counters["mean_ttft_ms"] = ttft / static_cast<double>(requests) * 1e3;
  state.counters["prefill_tokens_run"] = static_cast<double>(computed) / static_cast<double>(state.iterations());
}

// Decode speed with tiers below the arena off (arg 0), on (arg 1), or on with the reclaimer
// keeping 8 pages free (arg 2). The arena holds 64 pages of 16 tokens and every request starts
// from a prompt of its own, so each evicts the pages of the ones before it: with tiers on, those
// are copied to host (by the engine's thread, or ahead of need by the reclaimer's), and host's
// evictions written to disk, whose 512 pages are filled by untimed requests first: from then on
// each write removes a block, as on a server that has run for a while.
void BM_EngineDecodeTiers(benchmark::State& state) {
  NEED_STORIES(state);
  const bool tiers = state.range(0) >= 1;
  const auto dir = std::filesystem::temp_directory_path() / ("llmds-bench-engine-tiers-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  llmds::EngineConfig config{.page_size = 16, .max_pages = 64};
  if (tiers) {
    config.tiers.host_pages = 128;
    config.tiers.disk_pages = 512;
    config.tiers.disk_directory = dir;
    config.tiers.reclaim_pages = state.range(0) == 2 ? 8 : 0;
  }
  double tokens = 0;
  {
    llmds::Engine engine(S->model, S->tokenizer, config);
    int round = 0;
    const auto next_request = [&] {
      llmds::Request r = greedy("", 255);
      r.prompt_tokens = {llmds::Tokenizer::kBos, static_cast<llmds::TokenId>(3 + round++ % 500)};
      return r;
    };
    for (int i = 0; i < 48; ++i) (void)engine.generate(next_request());  // 768 pages: every tier full
    for (auto _ : state) tokens += static_cast<double>(engine.generate(next_request()).output_tokens);
  }
  state.counters["tokens_per_s"] = benchmark::Counter(tokens, benchmark::Counter::kIsRate);
  std::filesystem::remove_all(dir);
}

// Time to first token of a ~400-token prompt whose pages were computed earlier and then pushed
// out of the arena by two other requests: recomputed (arg 0), or brought back from host (arg 1)
// or from disk (arg 2). The arena holds 32 pages of 16 tokens, the model's whole context.
void BM_TieredTTFT(benchmark::State& state) {
  NEED_STORIES(state);
  const auto from = state.range(0);
  const auto dir = std::filesystem::temp_directory_path() / ("llmds-bench-ttft-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  llmds::EngineConfig config{.page_size = 16, .max_pages = 32};
  if (from == 1) config.tiers.host_pages = 1024;
  if (from == 2) {
    config.tiers.disk_pages = 4096;
    config.tiers.disk_directory = dir;
    config.tiers.offload_queue_blocks = 0;  // on disk, not in the write queue, when it is asked for
  }
  auto text_of = [&](std::string text, const std::string& more, std::size_t tokens) {
    while (S->tokenizer->encode(text).size() < tokens) text += more;
    return text;
  };
  const std::string system = text_of("Once upon a time, there was a little girl named Lily.",
                                     " She loved to play outside in the park with her friends.", 400);
  const std::string filler_a = text_of("Tom had a big red ball.", " He kicked it high into the sky.", 300);
  const std::string filler_b = text_of("The cat sat on the mat.", " It was warm and the sun was bright.", 300);
  double ttft = 0, from_host = 0, from_disk = 0, cached = 0;
  {
    llmds::Engine engine(S->model, S->tokenizer, config);
    for (auto _ : state) {
      state.PauseTiming();
      (void)engine.generate(greedy(system, 1));    // computes (or brings back) the prompt's pages
      (void)engine.generate(greedy(filler_a, 1));  // and these push them out of the arena
      (void)engine.generate(greedy(filler_b, 1));
      state.ResumeTiming();
      llmds::Request r = greedy(system + " One day", 1);
      r.reuse_cache = from != 0;
      const auto resp = engine.generate(r);
      ttft += resp.time_to_first_token_s;
      cached += static_cast<double>(resp.cached_prompt_tokens);
      from_host += static_cast<double>(resp.cached_from_host);
      from_disk += static_cast<double>(resp.cached_from_disk);
    }
  }
  const auto it = static_cast<double>(state.iterations());
  state.counters["ttft_us"] = ttft / it * 1e6;
  state.counters["cached_tokens"] = cached / it;
  state.counters["from_host"] = from_host / it;
  state.counters["from_disk"] = from_disk / it;
  std::filesystem::remove_all(dir);
}

}  // namespace

BENCHMARK(BM_ModelDecode)->Arg(64)->Arg(512)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_EngineDecode)->Arg(64)->Arg(512)->Unit(benchmark::kMillisecond)->UseRealTime();
// Args: requests, tokens each, threads (0: every core).
BENCHMARK(BM_EngineConcurrent)
    ->ArgsProduct({{1, 16}, {64, 256, 511}, {1, 0}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_PrefixReuseTTFT)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_SharedPromptBurst)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_EngineDecodeTiers)->Arg(0)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_TieredTTFT)->Arg(0)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();

BENCHMARK_MAIN();
