// Engine (see include/llmds/engine/engine.hpp).
#include "llmds/engine/engine.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <span>
#include <stdexcept>
#include <utility>

#include <fmt/format.h>

#include "llmds/core/errors.hpp"
#include "llmds/detail/parallel.hpp"

namespace llmds {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_between(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

std::span<const std::byte> bytes_of(const std::string& s) {
  return std::as_bytes(std::span(s.data(), s.size()));
}

// The engine steps continuously, so the scheduler never holds a batch back.
SchedulerConfig scheduler_config(const EngineConfig& config) {
  SchedulerConfig c;
  c.max_batch_size = config.max_sequences;
  c.max_wait_ms = 0.0;
  return c;
}

}  // namespace

std::string_view finish_reason_name(FinishReason reason) {
  switch (reason) {
    case FinishReason::eos: return "eos";
    case FinishReason::max_tokens: return "max_tokens";
    case FinishReason::stop_token: return "stop_token";
    case FinishReason::stop_string: return "stop_string";
    case FinishReason::cancelled: return "cancelled";
    case FinishReason::error: return "error";
  }
  return "error";
}

void Request::validate() const {
  if (max_tokens < 1) throw std::invalid_argument(fmt::format("Request.max_tokens must be at least 1, got {}", max_tokens));
  sampling.validate();
  if (slo_ms && (!std::isfinite(*slo_ms) || *slo_ms <= 0)) {
    throw std::invalid_argument(fmt::format("Request.slo_ms must be positive and finite, got {}", *slo_ms));
  }
  if (top_logits < 0) throw std::invalid_argument(fmt::format("Request.top_logits must be >= 0, got {}", top_logits));
  for (const TokenId t : prompt_tokens) {
    if (t < 0) throw std::invalid_argument(fmt::format("Request.prompt_tokens: {} is not a token id", t));
  }
  for (const TokenId t : stop_token_ids) {
    if (t < 0) throw std::invalid_argument(fmt::format("Request.stop_token_ids: {} is not a token id", t));
  }
  for (const auto& s : stop_strings) {
    if (s.empty()) throw std::invalid_argument("Request.stop_strings: a stop string is empty");
  }
}

void EngineConfig::validate() const {
  if (page_size < 1) throw std::invalid_argument("EngineConfig.page_size must be at least 1");
  if (max_pages < 1) throw std::invalid_argument("EngineConfig.max_pages must be at least 1");
  if (max_batch_tokens < 1) throw std::invalid_argument("EngineConfig.max_batch_tokens must be at least 1");
  if (max_sequences < 1) throw std::invalid_argument("EngineConfig.max_sequences must be at least 1");
}

// A request inside the engine. Its KV sequence id in the cache is its engine id.
struct Engine::Active {
  RequestId id = 0;
  RequestId sched_id = -1;
  Request request;
  std::vector<TokenId> context;  // prompt, then generated tokens
  std::size_t prompt_len = 0;
  std::size_t computed = 0;   // context tokens whose K/V are in the cache
  bool attached = false;      // holds a KV sequence
  bool sampled_last = false;  // decoding: the last context token was sampled, not prefilled
  Sampler sampler;
  std::promise<Response> promise;
  std::shared_ptr<std::atomic<bool>> cancel;
  Response response;
  Clock::time_point submitted;
  Clock::time_point first_token;
  bool done = false;
  // With tiers below the arena: the prompt's pages on their way up from host or disk, started
  // when the request is first scheduled; it attaches once they are in.
  KVStore::PrefixFetch fetch;
  bool fetch_started = false;

  explicit Active(const SamplingParams& params) : sampler(params) {}
  [[nodiscard]] SeqId seq() const { return id; }
  [[nodiscard]] std::size_t generated() const { return context.size() - prompt_len; }
  [[nodiscard]] std::size_t pending() const { return context.size() - computed; }
};

Engine::Engine(std::shared_ptr<const LlamaModel> model, std::shared_ptr<const Tokenizer> tokenizer, EngineConfig config)
    : model_(std::move(model)),
      tokenizer_(std::move(tokenizer)),
      config_((config.validate(), config)),
      threads_(detail::thread_count(config_.num_threads, std::numeric_limits<std::size_t>::max())),
      cache_(kv_cache_config(model_->config(), config_.page_size, config_.max_pages, config_.enable_prefix_caching,
                             config_.tiers)),
      scheduler_(scheduler_config(config_)) {
  if (!model_ || !tokenizer_) throw std::invalid_argument("Engine: a model and a tokenizer are needed");
  if (tokenizer_->vocab_size() != model_->config().vocab_size) {
    throw std::invalid_argument(fmt::format("Engine: the tokenizer has {} tokens, the model {}",
                                            tokenizer_->vocab_size(), model_->config().vocab_size));
  }
  thread_ = std::thread([this] { run(); });
  engine_thread_id_ = thread_.get_id();
}

Engine::~Engine() {
  if (!on_engine_thread()) shutdown();
}

void Engine::shutdown() {
  if (on_engine_thread()) {
    throw std::logic_error("Engine::shutdown cannot be called from the engine's own thread (a token callback)");
  }
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  std::lock_guard joining(shutdown_mutex_);  // two callers: the second waits for the first's join
  if (thread_.joinable()) thread_.join();
}

std::unique_ptr<Engine> Engine::load(const std::filesystem::path& model, const std::filesystem::path& tokenizer,
                                     EngineConfig config) {
  auto m = std::make_shared<const LlamaModel>(LlamaModel::load(model));
  auto t = std::make_shared<const Tokenizer>(Tokenizer::load(tokenizer, m->config().vocab_size));
  return std::make_unique<Engine>(std::move(m), std::move(t), config);
}

GenerationHandle Engine::generate_async(Request request) {
  request.validate();
  std::vector<TokenId> prompt =
      request.prompt_tokens.empty() ? tokenizer_->encode(request.prompt) : request.prompt_tokens;
  const auto& mc = model_->config();
  for (const TokenId t : prompt) {
    if (t < 0 || t >= mc.vocab_size) {
      throw std::invalid_argument(fmt::format("Request: token id {} is outside the vocabulary [0, {})", t, mc.vocab_size));
    }
  }
  if (prompt.size() > static_cast<std::size_t>(mc.seq_len)) {
    throw std::invalid_argument(
        fmt::format("Request: the prompt has {} tokens, more than the model's context of {}", prompt.size(), mc.seq_len));
  }
  const std::size_t pages = (prompt.size() + config_.page_size) / config_.page_size;  // with the first new token
  if (pages > config_.max_pages) {
    throw std::invalid_argument(fmt::format("Request: the prompt needs {} KV pages, the cache has {}", pages,
                                            config_.max_pages));
  }
  for (const TokenId t : request.stop_token_ids) {
    if (t >= mc.vocab_size) {
      throw std::invalid_argument(
          fmt::format("Request.stop_token_ids: {} is outside the vocabulary [0, {})", t, mc.vocab_size));
    }
  }

  auto a = std::make_unique<Active>(request.sampling);
  a->request = std::move(request);
  a->prompt_len = prompt.size();
  a->context = std::move(prompt);
  a->cancel = std::make_shared<std::atomic<bool>>(false);
  a->submitted = Clock::now();
  std::shared_future<Response> result = a->promise.get_future().share();
  RequestId id = 0;
  {
    std::lock_guard lock(mutex_);
    if (stopping_) throw std::runtime_error("Engine: shut down");
    id = next_id_++;
    a->id = id;
    a->response.id = id;
    cancel_flags_[id] = a->cancel;
    GenerationHandle handle(id, result, a->cancel, engine_thread_id_);
    inbox_.push_back(std::move(a));
    wake_.notify_all();
    return handle;
  }
}

bool Engine::cancel(RequestId id) {
  std::lock_guard lock(mutex_);
  auto it = cancel_flags_.find(id);
  if (it == cancel_flags_.end()) return false;
  it->second->store(true, std::memory_order_relaxed);
  wake_.notify_all();
  return true;
}

bool Engine::release(RequestId id) {
  std::lock_guard lock(mutex_);
  const auto it = kept_.find(id);
  if (it == kept_.end()) return false;
  to_release_.push_back(it->second);  // the engine thread detaches it
  kept_.erase(it);
  wake_.notify_all();
  return true;
}

EngineStats Engine::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

void Engine::run() {
  std::unique_lock lock(mutex_);
  while (true) {
    wake_.wait(lock, [&] { return stopping_ || !inbox_.empty() || !active_.empty() || !to_release_.empty(); });
    if (stopping_) break;
    auto incoming = std::move(inbox_);
    inbox_.clear();
    auto releases = std::move(to_release_);
    to_release_.clear();
    lock.unlock();
    // Nothing may leave this thread as an exception: it would end the process. admit() ends a
    // request the scheduler refuses; what else escapes a step ends every request in it.
    try {
      for (const auto seq : releases) cache_.detach(seq);
      for (auto& a : incoming) admit(std::move(a));
      if (!active_.empty()) step();
    } catch (const std::exception& e) {
      fail_all(fmt::format("engine step failed: {}", e.what()));
    } catch (...) {
      fail_all("engine step failed: a non-standard exception");
    }
    lock.lock();
    stats_.waiting = scheduler_.queued();
    stats_.running = scheduler_.in_flight();
    // KVCache::stats() scans every page: refresh the copy when idle and every 64 steps only.
    if (active_.empty() || stats_.steps % 64 == 0) {
      stats_.cache = cache_.stats();
      if (const auto* tiers = cache_.tiers()) {
        const TierStats arena = tiers->counters(Tier::kPrimary);
        stats_.evicted_pages = arena.evicted_blocks;
        stats_.reclaimed_pages = arena.reclaimed_blocks;
      }
    }
  }
  // Shutting down: whatever is left ends as cancelled.
  lock.unlock();
  for (auto& a : inbox_) {
    a->request.on_token = nullptr;
    a->response.reason = FinishReason::cancelled;
    a->promise.set_value(std::move(a->response));
  }
  for (auto& [sid, a] : active_) {
    if (a->attached) cache_.detach(a->seq());
    a->request.on_token = nullptr;
    a->response.reason = FinishReason::cancelled;
    a->response.tokens.assign(a->context.begin() + static_cast<std::ptrdiff_t>(a->prompt_len), a->context.end());
    a->promise.set_value(std::move(a->response));
  }
}

void Engine::admit(std::unique_ptr<Active> a) {
  try {
    a->sched_id = scheduler_.submit(static_cast<std::int64_t>(a->context.size()), a->request.slo_ms);
    const RequestId sid = a->sched_id;
    active_.emplace(sid, std::move(a));
  } catch (const std::exception& e) {
    if (a) finish(*a, FinishReason::error, fmt::format("the scheduler refused the request: {}", e.what()));
  }
}

// The last resort of the engine thread: a step threw where no single request was to blame.
// Every request in the engine ends with the error; their pages go back; the engine goes on.
void Engine::fail_all(const std::string& error) noexcept {
  for (auto& [sid, a] : active_) {
    try {
      finish(*a, FinishReason::error, error);
    } catch (...) {
      // finish could not complete (out of memory); the promise must still be kept.
      if (!a->done) {
        a->done = true;
        try {
          a->promise.set_exception(std::current_exception());
        } catch (...) {
        }
      }
    }
  }
  active_.clear();
}

void Engine::finish(Active& a, FinishReason reason, std::string error) {
  if (a.done) return;
  a.done = true;
  cache_.drop_prefetch(a.fetch);  // a request that ends while its pages are on their way up
  const auto now = Clock::now();
  Response& r = a.response;
  r.reason = reason;
  r.error = std::move(error);
  r.prompt_tokens = a.prompt_len;
  r.tokens.assign(a.context.begin() + static_cast<std::ptrdiff_t>(a.prompt_len), a.context.end());
  r.output_tokens = r.tokens.size();
  r.latency_s = seconds_between(a.submitted, now);
  if (r.output_tokens > 0) {
    r.time_to_first_token_s = seconds_between(a.submitted, a.first_token);
    const double decode_s = r.latency_s - r.time_to_first_token_s;
    r.tokens_per_s = r.output_tokens > 1 && decode_s > 0 ? static_cast<double>(r.output_tokens - 1) / decode_s : 0.0;
  }
  bool kept = false;
  if (a.attached) {
    if (a.request.free_cache_on_finish || reason == FinishReason::error || reason == FinishReason::cancelled) {
      a.attached = false;
      cache_.detach(a.seq());
    } else {
      kept = true;
    }
  }
  if (a.sched_id >= 0 && scheduler_.contains(a.sched_id)) {
    if (scheduler_.state(a.sched_id) == RequestState::in_flight && reason != FinishReason::cancelled &&
        reason != FinishReason::error) {
      scheduler_.complete(a.sched_id);
    } else {
      scheduler_.cancel(a.sched_id);
    }
  }
  {
    std::lock_guard lock(mutex_);
    cancel_flags_.erase(a.id);
    if (kept) kept_.emplace(a.id, a.seq());
    ++stats_.requests_finished;
  }
  // The callback goes before the response is handed over: it may own objects of the caller's
  // runtime (a Python function), which must not outlive the caller's wait, as they would if the
  // caller woke, returned and began to exit while the engine thread still held them.
  a.request.on_token = nullptr;
  a.promise.set_value(r);
}

void Engine::accept_token(Active& a, TokenId token) {
  const Request& q = a.request;
  if (a.generated() == 0) a.first_token = Clock::now();
  if (!q.ignore_eos && (token == Tokenizer::kBos || token == Tokenizer::kEos)) return finish(a, FinishReason::eos);
  if (std::find(q.stop_token_ids.begin(), q.stop_token_ids.end(), token) != q.stop_token_ids.end()) {
    return finish(a, FinishReason::stop_token);
  }
  const TokenId previous = a.context.back();
  a.context.push_back(token);
  const std::string_view piece = tokenizer_->piece(previous, token);
  const std::size_t before = a.response.text.size();
  a.response.text += piece;
  if (q.on_token) {
    try {
      q.on_token(token, piece);
    } catch (const std::exception& e) {
      return finish(a, FinishReason::error, fmt::format("the token callback threw: {}", e.what()));
    } catch (...) {
      return finish(a, FinishReason::error, "the token callback threw a non-standard exception");
    }
  }
  for (const std::string& stop : q.stop_strings) {
    // Only a match that ends in the new piece is new.
    const std::size_t from = before >= stop.size() ? before - stop.size() + 1 : 0;
    const auto at = a.response.text.find(stop, from);
    if (at != std::string::npos) {
      a.response.text.resize(at);
      return finish(a, FinishReason::stop_string);
    }
  }
  if (a.generated() >= static_cast<std::size_t>(q.max_tokens) ||
      a.context.size() >= static_cast<std::size_t>(model_->config().seq_len)) {
    return finish(a, FinishReason::max_tokens);
  }
}

void Engine::record_top_logits(Active& a, std::span<const float> logits) {
  const std::size_t n = std::min(static_cast<std::size_t>(a.request.top_logits), logits.size());
  std::vector<TokenId> order(logits.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = static_cast<TokenId>(i);
  std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(n), order.end(),
                    [&](TokenId x, TokenId y) { return logits[x] > logits[y] || (logits[x] == logits[y] && x < y); });
  auto& step = a.response.top_logits.emplace_back();
  for (std::size_t i = 0; i < n; ++i) step.push_back({order[i], logits[order[i]]});
}

void Engine::preempt(Active& a) {
  cache_.detach(a.seq());
  a.attached = false;
  a.fetch_started = false;  // its pages may have gone down meanwhile: look again when it resumes
  a.computed = 0;
  a.sampled_last = false;
  // Recompute the whole context (prompt and output so far); the last token's logits give the
  // next one, as after a first prefill.
  scheduler_.preempt(a.sched_id, static_cast<std::int64_t>(a.context.size()));
  ++a.response.preemptions;
  std::lock_guard lock(mutex_);
  ++stats_.preemptions;
}

// Frees pages until the step's appends fit: first the pages of prompts still waiting for their
// fetch from host or disk, then by preempting running requests (lowest priority,
// then latest arrival). Requests preempted are dropped from the batch. Returns false if the
// batch became empty.
bool Engine::make_room(std::vector<Active*>& batch, std::vector<std::size_t>& counts) {
  while (true) {
    std::size_t needed = 0;
    for (std::size_t i = 0; i < batch.size(); ++i) needed += cache_.pages_to_append(batch[i]->seq(), counts[i]);
    if (needed <= cache_.available_pages()) return !batch.empty();
    // Pages held by prompts still waiting for them to come up from host or disk go first:
    // dropped, they stay cached (evictable), and the prompt looks again when next scheduled.
    bool dropped = false;
    for (auto& [sid, a] : active_) {
      if (a->attached || !a->fetch.pending()) continue;
      cache_.drop_prefetch(a->fetch);
      a->fetch_started = false;
      dropped = true;
    }
    if (dropped) continue;
    Active* victim = nullptr;
    for (auto& [sid, a] : active_) {
      if (!a->attached || a->done) continue;
      if (victim == nullptr || a->request.priority < victim->request.priority ||
          (a->request.priority == victim->request.priority && a->id > victim->id)) {
        victim = a.get();
      }
    }
    if (victim == nullptr) return false;
    const bool alone = std::count_if(active_.begin(), active_.end(), [](const auto& kv) {
                         return kv.second->attached && !kv.second->done;
                       }) == 1;
    if (alone) {
      // Nothing else holds pages: this request cannot fit in the cache at all.
      finish(*victim, FinishReason::error,
             fmt::format("out of KV pages: the request needs more than the cache's {} pages", config_.max_pages));
    } else {
      preempt(*victim);
    }
    for (std::size_t i = 0; i < batch.size(); ++i) {
      if (batch[i] == victim) {
        batch.erase(batch.begin() + static_cast<std::ptrdiff_t>(i));
        counts.erase(counts.begin() + static_cast<std::ptrdiff_t>(i));
        break;
      }
    }
  }
}

void Engine::step() {
  // Cancellations first: a cancelled request leaves before it takes any more work.
  for (auto& [sid, a] : active_) {
    if (a->cancel->load(std::memory_order_relaxed)) finish(*a, FinishReason::cancelled);
  }
  std::erase_if(active_, [](const auto& kv) { return kv.second->done; });
  if (active_.empty()) return;

  // Decode every running sequence; fill the rest of the token budget with prefill chunks.
  const auto decode = scheduler_.build_decode_batch(config_.max_sequences);
  const std::size_t budget = config_.max_batch_tokens > decode.size() ? config_.max_batch_tokens - decode.size() : 0;
  const auto prefill =
      scheduler_.build_prefill_batch(static_cast<std::int64_t>(budget), config_.max_sequences - decode.size());
  std::vector<Active*> batch;
  std::vector<std::size_t> counts;  // tokens each runs this step, from its first pending one
  for (const RequestId sid : decode) {
    Active& a = *active_.at(sid);
    batch.push_back(&a);
    counts.push_back(a.pending());
  }
  // A prompt whose cached pages are being copied up from host or disk waits for them, unless
  // the step would otherwise have nothing to run.
  std::vector<std::pair<Active*, std::size_t>> fetching;
  const auto attach_and_add = [&](Active& a, std::size_t tokens) {
    if (!a.attached) {
      try {
        attach(a);
      } catch (const std::exception& e) {
        finish(a, FinishReason::error, fmt::format("attaching the request's KV sequence failed: {}", e.what()));
        return;
      }
    }
    const std::size_t n = std::min(tokens, a.pending());
    if (n == 0) return;
    batch.push_back(&a);
    counts.push_back(n);
  };
  for (const PrefillChunk& chunk : prefill) {
    Active& a = *active_.at(chunk.id);
    if (!a.attached && start_fetch(a) && !a.fetch.ready()) {
      fetching.emplace_back(&a, static_cast<std::size_t>(chunk.tokens));
      continue;
    }
    attach_and_add(a, static_cast<std::size_t>(chunk.tokens));
  }
  for (const auto& [a, tokens] : fetching) {
    if (batch.empty() || a->fetch.ready()) attach_and_add(*a, tokens);
  }
  if (!batch.empty() && make_room(batch, counts)) run_batch(batch, counts);
  // Tell the scheduler how much prefill is really left: a cache hit makes it less than it
  // counted, a sample makes it none (the request decodes from now on), and a prompt still
  // waiting for its pages to come up has run nothing.
  for (auto& [sid, a] : active_) {
    if (!a->done && scheduler_.state(sid) == RequestState::in_flight) {
      scheduler_.set_prompt_remaining(sid, a->attached && a->pending() <= 1 && a->sampled_last
                                               ? 0
                                               : static_cast<std::int64_t>(a->pending()));
    }
  }
  std::erase_if(active_, [](const auto& kv) { return kv.second->done; });
}

// The context's tokens whose pages a new attach looks up: all but the last, which must run (its
// logits give the next token).
static std::span<const TokenId> prefix_lookup(const std::vector<TokenId>& context) {
  return std::span(context).first(context.size() - 1);
}

bool Engine::start_fetch(Active& a) {
  if (!a.fetch_started && a.request.reuse_cache && config_.tiers.enabled()) {
    a.fetch = cache_.prefetch_cached_prefix(prefix_lookup(a.context), bytes_of(a.request.cache_salt));
    a.fetch_started = true;
  }
  return a.fetch.pending();
}

void Engine::attach(Active& a) {
  // The longest cached run of the context's full pages.
  const auto lookup = prefix_lookup(a.context);
  PrefixSource source;
  const std::size_t cached =
      a.request.reuse_cache
          ? cache_.attach_cached_prefix(a.seq(), lookup, bytes_of(a.request.cache_salt), &source, &a.fetch)
          : cache_.attach_cached_prefix(a.seq(), {});
  a.attached = true;
  a.computed = cached;
  a.sampled_last = false;
  const std::size_t from_host = source.host_pages * config_.page_size;
  const std::size_t from_disk = source.disk_pages * config_.page_size;
  if (a.response.preemptions == 0) {
    a.response.cached_prompt_tokens = cached;
    a.response.cached_from_host = from_host;
    a.response.cached_from_disk = from_disk;
  }
  std::lock_guard lock(mutex_);
  stats_.cached_prompt_tokens += cached;
  stats_.cached_from_host += from_host;
  stats_.cached_from_disk += from_disk;
}

// One forward pass over the step's chunks, split over threads in contiguous groups of about
// equal attention work (a chunk's work grows with its tokens times its context).
void Engine::forward(std::span<const ForwardChunk> chunks) {
  const std::size_t threads = std::min(threads_, chunks.size());
  std::vector<double> work(chunks.size());
  double total_work = 0;
  for (std::size_t i = 0; i < chunks.size(); ++i) {
    const auto n = static_cast<double>(chunks[i].tokens.size());
    work[i] = n * (static_cast<double>(chunks[i].start) + n) + 64.0 * n;  // attention + weights
    total_work += work[i];
  }
  // Group boundaries: chunk indexes where the running work passes each share.
  std::vector<std::size_t> bounds = {0};
  double running = 0;
  for (std::size_t i = 0; i < chunks.size() && bounds.size() < threads; ++i) {
    running += work[i];
    if (running >= total_work * static_cast<double>(bounds.size()) / static_cast<double>(threads)) bounds.push_back(i + 1);
  }
  if (bounds.back() != chunks.size()) bounds.push_back(chunks.size());
  const std::size_t groups = bounds.size() - 1;
  if (scratch_.size() < groups) scratch_.resize(groups);
  const std::size_t width = model_->config().kv_entry_width();
  const auto vocab = static_cast<std::size_t>(model_->config().vocab_size);
  // Where each group's rows start in kv_out_ and logits_.
  std::vector<std::size_t> kv_at(groups + 1, 0), logits_at(groups + 1, 0);
  for (std::size_t g = 0; g < groups; ++g) {
    kv_at[g + 1] = kv_at[g];
    logits_at[g + 1] = logits_at[g];
    for (std::size_t i = bounds[g]; i < bounds[g + 1]; ++i) {
      kv_at[g + 1] += chunks[i].tokens.size() * width;
      logits_at[g + 1] += chunks[i].want_logits ? vocab : 0;
    }
  }
  detail::parallel_for(groups, groups, [&](std::size_t g) {
    model_->forward(chunks.subspan(bounds[g], bounds[g + 1] - bounds[g]),
                    std::span(kv_out_).subspan(kv_at[g], kv_at[g + 1] - kv_at[g]),
                    std::span(logits_).subspan(logits_at[g], logits_at[g + 1] - logits_at[g]), scratch_[g]);
  });
}

void Engine::run_batch(const std::vector<Active*>& batch, const std::vector<std::size_t>& counts) {
  std::vector<ForwardChunk> chunks;
  std::size_t total = 0, sampled = 0;
  for (std::size_t i = 0; i < batch.size(); ++i) {
    Active& a = *batch[i];
    const bool samples = counts[i] == a.pending();  // the chunk reaches the last token
    chunks.push_back({cache_.view(a.seq()), a.computed, std::span(a.context).subspan(a.computed, counts[i]),
                      samples});
    total += counts[i];
    sampled += samples ? 1 : 0;
  }
  const std::size_t width = model_->config().kv_entry_width();
  const auto vocab = static_cast<std::size_t>(model_->config().vocab_size);
  kv_out_.resize(total * width);
  logits_.resize(sampled * vocab);
  try {
    forward(chunks);
  } catch (const std::exception& e) {
    for (Active* a : batch) finish(*a, FinishReason::error, fmt::format("forward pass failed: {}", e.what()));
    return;
  }
  std::size_t row = 0, logit_row = 0;
  std::uint64_t prefilled = 0, generated = 0;
  for (std::size_t i = 0; i < batch.size(); ++i) {
    Active& a = *batch[i];
    const std::size_t n = counts[i], before = a.computed;
    const std::span<const float> kv = std::span<const float>(kv_out_).subspan(row * width, n * width);
    row += n;
    std::span<float> logits;
    if (chunks[i].want_logits) logits = std::span<float>(logits_.data() + (logit_row++) * vocab, vocab);
    // What fails here is this request's alone (its logits are not finite, memory ran out):
    // it ends with the error and the batch goes on.
    try {
      cache_.append(a.seq(), kv);  // room was made
      a.computed += n;
      if (!a.sampled_last) prefilled += n;  // prompt (or recomputed) tokens, not a decode step
      if (a.request.reuse_cache && a.computed / config_.page_size > before / config_.page_size) {
        cache_.register_prefix(a.seq(), std::span(a.context).first(a.computed), bytes_of(a.request.cache_salt));
      }
      if (logits.empty()) continue;
      a.sampled_last = true;
      if (a.request.top_logits > 0) record_top_logits(a, logits);
      const std::size_t length = a.context.size();
      accept_token(a, a.sampler.sample(logits));
      generated += a.context.size() - length;  // end and stop tokens are not kept
    } catch (const std::exception& e) {
      finish(a, FinishReason::error, fmt::format("step failed: {}", e.what()));
    }
  }
  std::lock_guard lock(mutex_);
  ++stats_.steps;
  stats_.prefill_tokens += prefilled;
  stats_.generated_tokens += generated;
}

}  // namespace llmds
