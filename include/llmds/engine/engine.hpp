// Engine: a reference inference engine that runs requests on a LlamaModel with
// continuous batching, its KV in a paged KVCache, its order from the Scheduler.
//
// It is the worked example of linking llmds into a server: every structure is used the way a
// serving engine uses it.
//   - Requests enter through generate() (blocking) or generate_async() (a future and a cancel
//     handle) and are queued in the Scheduler (issue order: at-risk SLOs, then fewer tokens).
//   - One background thread runs steps. Each step decodes every running sequence (one token
//     each, build_decode_batch) and fills the rest of max_batch_tokens with prefill chunks of
//     waiting prompts (build_prefill_batch: prompts in progress first, long prompts split). All
//     of it is one LlamaModel::forward call, so the weights are read once per step; with
//     num_threads > 1 the step's sequences are split into that many groups of about equal
//     attention work, one forward call each, run side by side.
//   - K and V live in KVCache pages; attention reads them through each sequence's block table.
//     A new prompt first takes the longest cached run of its full pages (chained SHA-256 block
//     hashes, so equal prefixes share pages; `cache_salt` keeps tenants apart); only the rest is
//     computed (Response::cached_prompt_tokens says how much was saved). Full pages are
//     registered as they fill, generated ones included, so a follow-up turn reuses them.
//     With tiers below the arena (EngineConfig::tiers), pages found in host or disk are copied
//     up by the tiers' onboarding worker while the step runs the other requests; the prompt
//     joins a step once they are in (or at once, if there is nothing else to run).
//   - When a step needs more pages than are free or evictable, the engine preempts: the
//     running request with the lowest priority (latest arrival among equals) gives its pages
//     back and is queued again to recompute its prompt and output so far (often from the cache).
//     A request that cannot fit even alone ends with reason error. Nothing crashes.
//   - Sampling is per request (Sampler), so a request's tokens do not depend on its batch:
//     the same requests give the same tokens alone or together (up to float rounding in ties
//     closer than the logits' last bits).
//   - Cancellation is an atomic flag checked every step; a token callback that throws ends its
//     request with reason error, frees its pages and leaves the others running.
//   - Nothing thrown on the engine thread escapes it (an escaping exception would end the whole
//     process). A request is checked in full when it is queued; what can still fail later (the
//     model's logits are not finite, memory runs out, a callback throws) ends the request it
//     belongs to with reason error and a message, and the engine keeps serving the others.
//
// Stop conditions, in the order checked after each sampled token: the model's end of text (BOS
// or EOS: llama2.c models start a new story with BOS), a stop token id, max_tokens (or the
// model's context length), a stop string (Response::text ends before it; the token callback may
// already have seen its first characters). End and stop tokens are not part of the output.
//
// Thread safety: generate, generate_async, cancel, release and stats may be called from any
// thread. Callbacks run on the engine thread: they may queue (generate_async) and cancel, but a
// call that waits for the engine (generate, GenerationHandle::get) would wait for itself, so from
// that thread it throws std::logic_error instead. An Engine must not be destroyed from its own
// thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "llmds/core/stats_fields.hpp"
#include "llmds/core/types.hpp"
#include "llmds/engine/llama.hpp"
#include "llmds/engine/sampler.hpp"
#include "llmds/engine/tokenizer.hpp"
#include "llmds/kv/kv_cache.hpp"
#include "llmds/sched/scheduler.hpp"

namespace llmds {

/// The KV cache a LlamaModel's entries live in: float32, as the model computes them.
using KVStore = KVCache<float>;

/// A KVCacheConfig shaped for a model: its entries are the model's kv_entry_width() floats.
[[nodiscard]] inline KVCacheConfig kv_cache_config(const LlamaConfig& model, std::size_t page_size,
                                                   std::size_t max_pages, bool enable_prefix_sharing = true,
                                                   const KVCacheTiers& tiers = {}) {
  KVCacheConfig c;
  c.page_size = page_size;
  c.max_pages = max_pages;
  c.entry_width = model.kv_entry_width();
  c.enable_prefix_sharing = enable_prefix_sharing;
  c.tiers = tiers;
  return c;
}

enum class FinishReason { eos, max_tokens, stop_token, stop_string, cancelled, error };

/// "eos", "max_tokens", "stop_token", "stop_string", "cancelled", "error".
std::string_view finish_reason_name(FinishReason reason);

/// Called on the engine thread for every generated token with its text piece.
using TokenCallback = std::function<void(TokenId token, std::string_view piece)>;

struct Request {
  std::string prompt;                 // encoded with BOS, unless prompt_tokens is given
  std::vector<TokenId> prompt_tokens;  // used as is when not empty
  int max_tokens = 256;               // tokens to generate at most (>= 1)
  SamplingParams sampling;
  int priority = 0;                   // preemption takes the lowest first
  std::optional<double> slo_ms;       // latency SLO for the scheduler's ordering
  std::vector<TokenId> stop_token_ids;
  std::vector<std::string> stop_strings;
  bool reuse_cache = true;            // look up and register shared prefix pages
  bool free_cache_on_finish = true;   // false: pages stay held until Engine::release(id)
  std::string cache_salt;             // prefixes are shared only between equal salts
  TokenCallback on_token;             // streaming
  int top_logits = 0;                 // record the n largest logits of every sampled step
  bool ignore_eos = false;            // keep generating past the model's end of text (benchmarks)

  /// Checks every field that does not depend on the model (Engine::generate_async checks the
  /// rest: token ids against the vocabulary, lengths against the context and the cache).
  /// Throws std::invalid_argument naming the field.
  void validate() const;
};

/// One of the largest raw logits (before temperature) at a sampled step.
struct TokenLogit {
  TokenId token;
  float logit;
  friend bool operator==(const TokenLogit&, const TokenLogit&) = default;
};

struct Response {
  RequestId id = 0;
  std::vector<TokenId> tokens;  // generated, without end or stop tokens
  std::string text;
  /// With Request::top_logits = n: per sampled step (end and stop tokens included), the n
  /// largest logits, largest first.
  std::vector<std::vector<TokenLogit>> top_logits;
  FinishReason reason = FinishReason::error;
  std::string error;  // what went wrong, for reason error
  std::size_t prompt_tokens = 0;
  std::size_t output_tokens = 0;
  std::size_t cached_prompt_tokens = 0;  // prompt tokens taken from the cache, not computed
  std::size_t cached_from_host = 0;      // of those, copied back from the host tier
  std::size_t cached_from_disk = 0;      // of those, read back from the disk tier
  std::size_t preemptions = 0;
  double time_to_first_token_s = 0;
  double latency_s = 0;
  double tokens_per_s = 0;  // decode rate: (output tokens - 1) / (latency - time to first token); 0 below 2 tokens
};

struct EngineConfig {
  std::size_t page_size = 16;         // tokens per KV page
  std::size_t max_pages = 2048;       // KV capacity: max_pages * page_size tokens
  std::size_t max_batch_tokens = 256; // tokens per step (decodes + prefill chunks)
  std::size_t max_sequences = 64;     // sequences per step
  bool enable_prefix_caching = true;
  /// Threads a step's sequences are split over (0: every core). One sequence never splits.
  std::size_t num_threads = 0;
  /// Host and disk tiers below the KV arena: prefix pages the arena evicts are kept there and
  /// copied back on a hit instead of recomputed (kv/tiered/kv_block_manager.hpp).
  KVCacheTiers tiers{};

  void validate() const;
};

struct EngineStats {
  std::uint64_t steps = 0;
  std::uint64_t requests_finished = 0;
  std::uint64_t generated_tokens = 0;
  std::uint64_t prefill_tokens = 0;         // prompt (and recomputed) tokens run through the model
  std::uint64_t cached_prompt_tokens = 0;   // prompt tokens served from the cache instead
  std::uint64_t cached_from_host = 0;       // of those, copied back from the host tier
  std::uint64_t cached_from_disk = 0;       // of those, read back from the disk tier
  std::uint64_t preemptions = 0;
  // With tiers below the arena (refreshed with `cache`): arena pages evicted to make room, each
  // copied down, and of those the ones the reclaimer moved ahead of need on its own thread
  // (KVCacheTiers::reclaim_pages); the rest were copied on the engine's thread.
  std::uint64_t evicted_pages = 0;
  std::uint64_t reclaimed_pages = 0;
  std::size_t waiting = 0;
  std::size_t running = 0;
  KVCacheStats cache;  // refreshed every 64 steps and whenever the engine is idle

  /// Every figure by name (core/stats_fields.hpp); the cache's main figures flattened.
  template <class Visit>
  void for_each_field(Visit&& visit) const {
    visit("steps", steps);
    visit("requests_finished", requests_finished);
    visit("generated_tokens", generated_tokens);
    visit("prefill_tokens", prefill_tokens);
    visit("cached_prompt_tokens", cached_prompt_tokens);
    visit("cached_from_host", cached_from_host);
    visit("cached_from_disk", cached_from_disk);
    visit("preemptions", preemptions);
    visit("evicted_pages", evicted_pages);
    visit("reclaimed_pages", reclaimed_pages);
    visit("waiting", waiting);
    visit("running", running);
    visit("cache_used_pages", cache.used_pages);
    visit("cache_cached_pages", cache.cached_pages);
    visit("cache_free_pages", cache.free_pages);
    visit("cache_prefix_hit_rate", cache.prefix_hit_rate());
  }
};

/// A request in flight: its id, its result, and a thread-safe cancel.
class GenerationHandle {
 public:
  /// `engine_thread`: the thread that produces the result, which must never wait for it.
  GenerationHandle(RequestId id, std::shared_future<Response> result, std::shared_ptr<std::atomic<bool>> cancel,
                   std::thread::id engine_thread = {})
      : id_(id), result_(std::move(result)), cancel_(std::move(cancel)), engine_thread_(engine_thread) {}
  [[nodiscard]] RequestId id() const noexcept { return id_; }
  /// Asks the engine to stop the request; it ends with reason cancelled at its next step.
  void cancel() const noexcept { cancel_->store(true, std::memory_order_relaxed); }
  [[nodiscard]] const std::shared_future<Response>& future() const noexcept { return result_; }
  /// Waits for the response. Throws std::logic_error on the engine's own thread (a token
  /// callback), where the wait could never end.
  [[nodiscard]] Response get() const {
    check_may_wait();
    return result_.get();
  }
  /// Throws std::logic_error if the calling thread is the engine thread.
  void check_may_wait() const {
    if (engine_thread_ != std::thread::id{} && std::this_thread::get_id() == engine_thread_) {
      throw std::logic_error(
          "cannot wait for a request on the engine's own thread (a token callback): the engine would wait for itself");
    }
  }

 private:
  RequestId id_;
  std::shared_future<Response> result_;
  std::shared_ptr<std::atomic<bool>> cancel_;
  std::thread::id engine_thread_;
};

class Engine {
 public:
  Engine(std::shared_ptr<const LlamaModel> model, std::shared_ptr<const Tokenizer> tokenizer, EngineConfig config = {});
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  /// Loads a llama2.c checkpoint and its tokenizer.
  static std::unique_ptr<Engine> load(const std::filesystem::path& model, const std::filesystem::path& tokenizer,
                                      EngineConfig config = {});

  /// Queues a request. Bad requests (Request::validate, a token id outside the vocabulary, a
  /// prompt longer than the context or than the whole KV cache) throw std::invalid_argument
  /// here, before anything is queued. May be called from a token callback.
  GenerationHandle generate_async(Request request);

  /// generate_async(request).get(). Throws std::logic_error on the engine thread, before
  /// queueing anything.
  Response generate(Request request) {
    if (on_engine_thread()) {
      throw std::logic_error(
          "Engine::generate cannot be called from the engine's own thread (a token callback): it would wait for "
          "itself; use generate_async");
    }
    return generate_async(std::move(request)).get();
  }

  /// Stops the engine thread: queued and running requests end with reason cancelled, later
  /// generate calls throw std::runtime_error. Returns once the thread has ended; a second call
  /// does nothing. Throws std::logic_error on the engine thread. The destructor calls it.
  void shutdown();

  /// True on the thread that runs steps and callbacks.
  [[nodiscard]] bool on_engine_thread() const noexcept { return std::this_thread::get_id() == engine_thread_id_; }

  /// Cancels a queued or running request; false if no such request is in the engine.
  bool cancel(RequestId id);

  /// Frees the pages a finished request kept (free_cache_on_finish = false). Its full pages stay
  /// cached for prefix reuse. false if it kept none.
  bool release(RequestId id);

  [[nodiscard]] EngineStats stats() const;
  [[nodiscard]] const LlamaModel& model() const noexcept { return *model_; }
  [[nodiscard]] const Tokenizer& tokenizer() const noexcept { return *tokenizer_; }
  [[nodiscard]] const EngineConfig& config() const noexcept { return config_; }

 private:
  struct Active;

  void run();
  void admit(std::unique_ptr<Active> a);
  void step();
  void fail_all(const std::string& error) noexcept;
  void attach(Active& a);
  bool start_fetch(Active& a);
  void run_batch(const std::vector<Active*>& batch, const std::vector<std::size_t>& counts);
  void forward(std::span<const ForwardChunk> chunks);
  bool make_room(std::vector<Active*>& batch, std::vector<std::size_t>& counts);
  void preempt(Active& a);
  void finish(Active& a, FinishReason reason, std::string error = {});
  void accept_token(Active& a, TokenId token);
  void record_top_logits(Active& a, std::span<const float> logits);

  std::shared_ptr<const LlamaModel> model_;
  std::shared_ptr<const Tokenizer> tokenizer_;
  EngineConfig config_;

  // Shared with callers, under mutex_.
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::unique_ptr<Active>> inbox_;
  std::unordered_map<RequestId, std::shared_ptr<std::atomic<bool>>> cancel_flags_;
  std::vector<SeqId> to_release_;  // kept sequences to detach
  EngineStats stats_;
  bool stopping_ = false;
  RequestId next_id_ = 1;
  std::unordered_map<RequestId, SeqId> kept_;  // finished requests that kept pages

  std::mutex shutdown_mutex_;  // serialises the join of concurrent shutdown() calls

  // Engine thread only.
  std::size_t threads_;  // num_threads resolved once (asking the OS for the core count costs a syscall)
  KVStore cache_;
  Scheduler scheduler_;
  std::unordered_map<RequestId, std::unique_ptr<Active>> active_;  // by scheduler id
  std::vector<ForwardScratch> scratch_;  // one per thread
  std::vector<float> kv_out_, logits_;
  std::thread thread_;
  std::thread::id engine_thread_id_;  // thread_'s id, kept apart: a join resets thread_'s own
};

}  // namespace llmds
