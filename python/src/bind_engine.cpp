// llmds.engine: Engine, Request, SamplingParams, Response, GenerationHandle, and a token stream.
//
// The engine works on its own thread. Python callbacks (Request.on_token) run there, under the
// GIL they take; every wait here (generate, result, stream) releases the GIL, so callbacks and
// other Python threads run meanwhile. Python objects that C++ copies around (the callback) are
// held through a shared_ptr whose deleter takes the GIL, so the engine thread never touches a
// reference count without it.
#include <pybind11/functional.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "llmds/engine/engine.hpp"
#include "initialised.hpp"
#include "stats_dict.hpp"

namespace py = pybind11;

namespace {
struct PyRequest;
struct TokenStream;
}  // namespace

LLMDS_PY_REQUIRE_INIT(llmds::SamplingParams)
LLMDS_PY_REQUIRE_INIT(PyRequest)
LLMDS_PY_REQUIRE_INIT(llmds::Response)
LLMDS_PY_REQUIRE_INIT(llmds::GenerationHandle)
LLMDS_PY_REQUIRE_INIT(TokenStream)
LLMDS_PY_REQUIRE_INIT(llmds::Engine)

namespace {

using llmds::Engine;
using llmds::EngineConfig;
using llmds::GenerationHandle;
using llmds::Request;
using llmds::Response;
using llmds::SamplingParams;
using llmds::TokenId;

// A Python callable the engine thread may call and drop safely.
llmds::TokenCallback python_callback(const py::object& fn) {
  if (fn.is_none()) return {};
  if (!PyCallable_Check(fn.ptr())) throw py::type_error("on_token must be a callable (token_id, text) or None");
  std::shared_ptr<py::object> held(new py::object(fn), [](py::object* p) {
    py::gil_scoped_acquire gil;
    delete p;
  });
  return [held](TokenId token, std::string_view piece) {
    py::gil_scoped_acquire gil;
    try {
      (*held)(token, py::bytes(piece.data(), piece.size()).attr("decode")("utf-8", "replace"));
    } catch (const py::error_already_set& e) {
      // The message crosses to the engine thread as a C++ exception (which ends the request with
      // reason error); the Python exception object is dropped here, under the GIL.
      throw std::runtime_error(e.what());
    }
  };
}

// Request as Python sees it: the C++ request plus the Python callback, so it can be read back.
struct PyRequest {
  Request request;
  py::object on_token = py::none();
};

py::object text_of(const std::string& s) { return py::bytes(s).attr("decode")("utf-8", "replace"); }

// Python's repr of a (possibly cut) string, for __repr__.
std::string quoted(const std::string& s, std::size_t max_bytes = 40) {
  return py::repr(text_of(s.substr(0, max_bytes))).cast<std::string>();
}

// Tokens and pieces of one request, handed from the engine thread to a Python iterator.
struct TokenStream {
  std::mutex mutex;
  std::condition_variable ready;
  std::deque<std::pair<TokenId, std::string>> pieces;
  std::optional<GenerationHandle> handle;
};

void bind_sampling(py::module_& m) {
  py::class_<SamplingParams>(m, "SamplingParams",
                             "Temperature (0 = greedy), top_k (0 = off), top_p (1 = off) and an optional seed. With "
                             "top_k off, sampling draws the same numbers as llama2.c's run.c with the same seed.")
      .def(py::init([](float temperature, int top_k, float top_p, std::optional<std::uint64_t> seed) {
             SamplingParams p{temperature, top_k, top_p, seed};
             p.validate();
             return p;
           }),
           py::arg("temperature") = 1.0f, py::arg("top_k") = 0, py::arg("top_p") = 1.0f, py::arg("seed") = py::none())
      .def_readonly("temperature", &SamplingParams::temperature)
      .def_readonly("top_k", &SamplingParams::top_k)
      .def_readonly("top_p", &SamplingParams::top_p)
      .def_readonly("seed", &SamplingParams::seed)
      .def("__repr__", [](const SamplingParams& p) {
        return fmt::format("SamplingParams(temperature={}, top_k={}, top_p={}, seed={})", p.temperature, p.top_k,
                           p.top_p, p.seed ? fmt::format("{}", *p.seed) : std::string("None"));
      });
}

void bind_request(py::module_& m) {
  py::class_<PyRequest>(m, "Request", "What to generate: a prompt (text or token ids), limits, sampling and stops.")
      .def(py::init([](const std::string& prompt, std::optional<std::vector<TokenId>> prompt_tokens, int max_tokens,
                       std::optional<SamplingParams> sampling, int priority, std::optional<double> slo_ms,
                       std::vector<TokenId> stop_token_ids, std::vector<std::string> stop_strings, bool reuse_cache,
                       bool free_cache_on_finish, std::string cache_salt, const py::object& on_token, int top_logits, bool ignore_eos) {
             PyRequest r;
             r.request.prompt = prompt;
             if (prompt_tokens) r.request.prompt_tokens = std::move(*prompt_tokens);
             r.request.max_tokens = max_tokens;
             if (sampling) r.request.sampling = *sampling;
             r.request.priority = priority;
             r.request.slo_ms = slo_ms;
             r.request.stop_token_ids = std::move(stop_token_ids);
             r.request.stop_strings = std::move(stop_strings);
             r.request.reuse_cache = reuse_cache;
             r.request.free_cache_on_finish = free_cache_on_finish;
             r.request.cache_salt = std::move(cache_salt);
             r.request.on_token = python_callback(on_token);
             r.on_token = on_token;
             r.request.top_logits = top_logits;
             r.request.ignore_eos = ignore_eos;
             r.request.validate();  // here, not on the engine thread
             return r;
           }),
           py::arg("prompt") = "", py::kw_only(), py::arg("prompt_tokens") = py::none(), py::arg("max_tokens") = 256,
           py::arg("sampling") = py::none(), py::arg("priority") = 0, py::arg("slo_ms") = py::none(),
           py::arg("stop_token_ids") = std::vector<TokenId>{}, py::arg("stop_strings") = std::vector<std::string>{},
           py::arg("reuse_cache") = true, py::arg("free_cache_on_finish") = true, py::arg("cache_salt") = "",
           py::arg("on_token") = py::none(), py::arg("top_logits") = 0,
           py::arg("ignore_eos") = false)
      .def_property_readonly("prompt", [](const PyRequest& r) { return r.request.prompt; })
      .def_property_readonly("prompt_tokens", [](const PyRequest& r) { return r.request.prompt_tokens; })
      .def_property_readonly("max_tokens", [](const PyRequest& r) { return r.request.max_tokens; })
      .def_property_readonly("sampling", [](const PyRequest& r) { return r.request.sampling; })
      .def_property_readonly("priority", [](const PyRequest& r) { return r.request.priority; })
      .def_property_readonly("slo_ms", [](const PyRequest& r) { return r.request.slo_ms; })
      .def_property_readonly("stop_token_ids", [](const PyRequest& r) { return r.request.stop_token_ids; })
      .def_property_readonly("stop_strings", [](const PyRequest& r) { return r.request.stop_strings; })
      .def_property_readonly("reuse_cache", [](const PyRequest& r) { return r.request.reuse_cache; })
      .def_property_readonly("free_cache_on_finish", [](const PyRequest& r) { return r.request.free_cache_on_finish; })
      .def_property_readonly("cache_salt", [](const PyRequest& r) { return r.request.cache_salt; })
      .def_property_readonly("on_token", [](const PyRequest& r) { return r.on_token; })
      .def_property_readonly("top_logits", [](const PyRequest& r) { return r.request.top_logits; })
      .def_property_readonly("ignore_eos", [](const PyRequest& r) { return r.request.ignore_eos; })
      .def("__repr__", [](const PyRequest& r) {
        return fmt::format("Request(prompt={}, max_tokens={})", quoted(r.request.prompt), r.request.max_tokens);
      });
}

void bind_response(py::module_& m) {
  py::class_<Response>(m, "Response", "A finished request: tokens, text, why it ended, counts and timings.")
      .def_readonly("id", &Response::id)
      .def_readonly("tokens", &Response::tokens)
      .def_property_readonly("text", [](const Response& r) { return text_of(r.text); })
      .def_property_readonly("reason", [](const Response& r) { return std::string(llmds::finish_reason_name(r.reason)); })
      .def_readonly("error", &Response::error)
      .def_property_readonly("top_logits",
                             [](const Response& r) {
                               py::list steps;
                               for (const auto& step : r.top_logits) {
                                 py::list row;
                                 for (const auto& t : step) row.append(py::make_tuple(t.token, t.logit));
                                 steps.append(row);
                               }
                               return steps;
                             })
      .def_readonly("prompt_tokens", &Response::prompt_tokens)
      .def_readonly("output_tokens", &Response::output_tokens)
      .def_readonly("cached_prompt_tokens", &Response::cached_prompt_tokens)
      .def_readonly("cached_from_host", &Response::cached_from_host)
      .def_readonly("cached_from_disk", &Response::cached_from_disk)
      .def_readonly("preemptions", &Response::preemptions)
      .def_readonly("time_to_first_token_s", &Response::time_to_first_token_s)
      .def_readonly("latency_s", &Response::latency_s)
      .def_readonly("tokens_per_s", &Response::tokens_per_s)
      .def("__repr__", [](const Response& r) {
        return fmt::format("Response(id={}, reason='{}', output_tokens={}, text={})", r.id,
                           llmds::finish_reason_name(r.reason), r.output_tokens, quoted(r.text));
      });
}

Response wait(const GenerationHandle& h, std::optional<double> timeout_s) {
  h.check_may_wait();  // RuntimeError in a token callback, where the wait would never end
  if (timeout_s && !(*timeout_s >= 0)) throw py::value_error(fmt::format("timeout must be >= 0, got {}", *timeout_s));
  // wait_for converts to the clock's integer ticks, which a huge or infinite wait would overflow.
  if (timeout_s && *timeout_s > 1e9) timeout_s.reset();
  py::gil_scoped_release release;
  if (timeout_s) {
    const auto status = h.future().wait_for(std::chrono::duration<double>(*timeout_s));
    if (status != std::future_status::ready) {
      py::gil_scoped_acquire gil;
      throw py::value_error(fmt::format("request {} did not finish within {} s", h.id(), *timeout_s));
    }
  }
  return h.get();
}

void bind_handle(py::module_& m) {
  py::class_<GenerationHandle>(m, "GenerationHandle", "A request in the engine: its id, cancel() and result().")
      .def_property_readonly("id", &GenerationHandle::id)
      .def("cancel", &GenerationHandle::cancel, "Ends the request at its next step with reason 'cancelled'.")
      .def("done", [](const GenerationHandle& h) {
        return h.future().wait_for(std::chrono::seconds(0)) == std::future_status::ready;
      })
      .def("result", &wait, py::arg("timeout") = py::none(),
           "Waits for the Response (the GIL is released); ValueError after `timeout` seconds.")
      .def("__repr__", [](const GenerationHandle& h) { return fmt::format("GenerationHandle(id={})", h.id()); });
}

void bind_stream(py::module_& m) {
  py::class_<TokenStream, std::shared_ptr<TokenStream>>(m, "TokenStream",
                                                        "Iterator over (token_id, text) as they are generated; "
                                                        "response() gives the Response once it ends.")
      .def("__iter__",
           [](const py::object& self) {
             (void)self.cast<TokenStream&>();  // TypeError if uninitialised
             return self;
           })
      .def("__next__",
           [](TokenStream& s) {
             s.handle->check_may_wait();
             std::optional<std::pair<TokenId, std::string>> item;
             {
               py::gil_scoped_release release;
               std::unique_lock lock(s.mutex);
               // The last pieces arrive before the response is set, so "done and nothing left"
               // means the end.
               while (s.pieces.empty() &&
                      s.handle->future().wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
                 s.ready.wait_for(lock, std::chrono::milliseconds(5));
               }
               if (!s.pieces.empty()) {
                 item = std::move(s.pieces.front());
                 s.pieces.pop_front();
               }
             }
             if (!item) throw py::stop_iteration();
             return py::make_tuple(item->first, text_of(item->second));
           })
      .def("cancel", [](TokenStream& s) { s.handle->cancel(); })
      .def_property_readonly("id", [](const TokenStream& s) { return s.handle->id(); })
      .def("response", [](const TokenStream& s, std::optional<double> timeout) { return wait(*s.handle, timeout); },
           py::arg("timeout") = py::none());
}

// The engines Python holds, and the threads destroying engines whose last reference went inside
// one of their own token callbacks (the engine thread cannot join itself, so another thread
// destroys the engine once the callback has returned).
//
// At interpreter exit every engine thread must be stopped while Python still runs: once Python
// finalizes, a thread that takes the GIL (to run a callback, or to drop one) is ended in the
// middle of C++ code and the process aborts. An atexit function stops them all (and joins the
// destroying threads) first; requests still in flight end as cancelled. The registry holds weak
// references, so it never keeps an engine alive, and the atexit function holds strong ones while
// it stops them, so none is destroyed under it. Never destroyed: joinable threads must not meet a
// static destructor.
struct LiveEngines {
  std::mutex mutex;
  std::vector<std::weak_ptr<Engine>> engines;
  std::vector<std::thread> deletions;
};

LiveEngines& live_engines() {
  static auto* live = new LiveEngines;
  return *live;
}

void stop_engines_at_exit() {
  std::vector<std::shared_ptr<Engine>> engines;
  std::vector<std::thread> deletions;
  {
    std::lock_guard lock(live_engines().mutex);
    for (const auto& weak : live_engines().engines) {
      if (auto e = weak.lock()) engines.push_back(std::move(e));
    }
    live_engines().engines.clear();
    deletions.swap(live_engines().deletions);
  }
  py::gil_scoped_release release;
  for (auto& t : deletions) t.join();
  for (const auto& e : engines) e->shutdown();
  engines.clear();  // an engine Python no longer held is destroyed here, without the GIL
}

// Destroys an engine with the GIL released, since its thread may be waiting for the GIL to run a
// callback; on the engine's own thread, hands it to another thread.
struct ReleasingDelete {
  void operator()(Engine* e) const {
    if (e->on_engine_thread()) {
      std::lock_guard lock(live_engines().mutex);
      live_engines().deletions.emplace_back([e] { delete e; });
      return;
    }
    if (PyGILState_Check() == 0) {
      delete e;
      return;
    }
    py::gil_scoped_release release;
    delete e;
  }
};

std::shared_ptr<Engine> held_by_python(std::unique_ptr<Engine> engine) {
  std::shared_ptr<Engine> held(engine.release(), ReleasingDelete{});
  std::lock_guard lock(live_engines().mutex);
  std::erase_if(live_engines().engines, [](const auto& weak) { return weak.expired(); });
  live_engines().engines.push_back(held);
  return held;
}

void bind_engine_class(py::module_& m) {
  py::class_<Engine, std::shared_ptr<Engine>>(
      m, "Engine",
      "Continuous-batching inference on a llama2.c model with paged attention over the KV cache, prefix reuse, "
      "preemption, streaming and cancellation.")
      .def(py::init([](const std::filesystem::path& model, const std::filesystem::path& tokenizer, std::int64_t page_size,
                       std::int64_t max_pages, std::int64_t max_batch_tokens, std::int64_t max_sequences,
                       bool enable_prefix_caching, std::int64_t num_threads, std::int64_t host_pages,
                       std::int64_t disk_pages, std::optional<std::filesystem::path> disk_directory,
                       std::string_view offload_policy, std::int64_t reclaim_pages) {
             auto non_negative = [](std::int64_t v, const char* name) {
               if (v < 1) throw py::value_error(fmt::format("{} must be at least 1, got {}", name, v));
               return static_cast<std::size_t>(v);
             };
             EngineConfig c;
             c.page_size = non_negative(page_size, "page_size");
             c.max_pages = non_negative(max_pages, "max_pages");
             c.max_batch_tokens = non_negative(max_batch_tokens, "max_batch_tokens");
             c.max_sequences = non_negative(max_sequences, "max_sequences");
             c.enable_prefix_caching = enable_prefix_caching;
             if (num_threads < 0) throw py::value_error(fmt::format("num_threads must be >= 0, got {}", num_threads));
             c.num_threads = static_cast<std::size_t>(num_threads);
             if (host_pages < 0 || disk_pages < 0 || reclaim_pages < 0) {
               throw py::value_error(fmt::format("host_pages, disk_pages and reclaim_pages must be >= 0, got {}, {} and {}",
                                                 host_pages, disk_pages, reclaim_pages));
             }
             c.tiers.reclaim_pages = static_cast<std::size_t>(reclaim_pages);
             c.tiers.host_pages = static_cast<std::size_t>(host_pages);
             c.tiers.disk_pages = static_cast<std::size_t>(disk_pages);
             if (disk_directory) c.tiers.disk_directory = *disk_directory;
             if (offload_policy == "write-through") {
               c.tiers.offload_policy = llmds::OffloadPolicy::kWriteThrough;
             } else if (offload_policy != "write-back") {
               throw py::value_error(fmt::format(
                   "offload_policy must be 'write-back' or 'write-through', got '{}'", offload_policy));
             }
             std::unique_ptr<Engine> engine;
             {
               py::gil_scoped_release release;
               engine = Engine::load(model, tokenizer, c);
             }
             return held_by_python(std::move(engine));
           }),
           py::arg("model_path"), py::arg("tokenizer_path"), py::kw_only(), py::arg("page_size") = 16,
           py::arg("max_pages") = 2048, py::arg("max_batch_tokens") = 256, py::arg("max_sequences") = 64,
           py::arg("enable_prefix_caching") = true, py::arg("num_threads") = 0, py::arg("host_pages") = 0,
           py::arg("disk_pages") = 0, py::arg("disk_directory") = py::none(), py::arg("offload_policy") = "write-back",
           py::arg("reclaim_pages") = 0)
      .def(
          "generate",
          [](Engine& e, const PyRequest& r) {
            auto handle = e.generate_async(r.request);
            return wait(handle, std::nullopt);
          },
          py::arg("request"), "Runs a request to its end (the GIL is released meanwhile).")
      .def(
          "generate_async", [](Engine& e, const PyRequest& r) { return e.generate_async(r.request); },
          py::arg("request"), "Queues a request; returns a GenerationHandle.")
      .def(
          "stream",
          [](Engine& e, const PyRequest& r) {
            auto stream = std::make_shared<TokenStream>();
            Request request = r.request;
            // The stream holds the pieces; the request's own callback (if any) still runs first.
            std::weak_ptr<TokenStream> weak = stream;
            request.on_token = [user = r.request.on_token, weak](TokenId token, std::string_view piece) {
              if (user) user(token, piece);
              if (auto s = weak.lock()) {
                std::lock_guard lock(s->mutex);
                s->pieces.emplace_back(token, std::string(piece));
                s->ready.notify_all();
              }
            };
            stream->handle = e.generate_async(std::move(request));
            return stream;
          },
          py::arg("request"), "Queues a request; returns an iterator over (token_id, text) as they are generated.")
      .def("cancel", &Engine::cancel, py::arg("request_id"))
      .def(
          "shutdown",
          [](Engine& e) {
            if (e.on_engine_thread()) e.shutdown();  // raises RuntimeError before waiting
            py::gil_scoped_release release;
            e.shutdown();
          },
          "Stops the engine: requests in flight end with reason 'cancelled', later requests raise RuntimeError. "
          "Python exit does this for every engine.")
      .def("release", &Engine::release, py::arg("request_id"),
           "Frees the pages a finished request kept (free_cache_on_finish=False).")
      .def(
          "encode",
          [](const Engine& e, const std::string& text, bool bos, bool eos) { return e.tokenizer().encode(text, bos, eos); },
          py::arg("text"), py::arg("bos") = true, py::arg("eos") = false)
      .def(
          "decode",
          [](const Engine& e, const std::vector<TokenId>& tokens) {
            for (const TokenId t : tokens) (void)e.tokenizer().text_of(t);  // IndexError for a bad id
            return text_of(e.tokenizer().decode(tokens));
          },
          py::arg("tokens"))
      .def("stats",
           [](const Engine& e) {
             return llmds::python::stats_dict(e.stats());
           })
      .def_property_readonly("config",
                             [](const Engine& e) {
                               const auto& c = e.model().config();
                               py::dict d;
                               d["dim"] = c.dim;
                               d["hidden_dim"] = c.hidden_dim;
                               d["n_layers"] = c.n_layers;
                               d["n_heads"] = c.n_heads;
                               d["n_kv_heads"] = c.n_kv_heads;
                               d["vocab_size"] = c.vocab_size;
                               d["seq_len"] = c.seq_len;
                               d["parameters"] = c.parameters();
                               d["page_size"] = e.config().page_size;
                               d["max_pages"] = e.config().max_pages;
                               d["max_batch_tokens"] = e.config().max_batch_tokens;
                               d["max_sequences"] = e.config().max_sequences;
                               d["num_threads"] = e.config().num_threads;
                               d["host_pages"] = e.config().tiers.host_pages;
                               d["disk_pages"] = e.config().tiers.disk_pages;
                               d["reclaim_pages"] = e.config().tiers.reclaim_pages;
                               return d;
                             })
      .def("__repr__", [](const Engine& e) {
        return fmt::format("Engine(parameters={}, page_size={}, max_pages={})", e.model().config().parameters(),
                           e.config().page_size, e.config().max_pages);
      });
}

}  // namespace

void bind_engine(py::module_& m) {
  py::module_::import("atexit").attr("register")(py::cpp_function(&stop_engines_at_exit));
  bind_sampling(m);
  bind_request(m);
  bind_response(m);
  bind_handle(m);
  bind_stream(m);
  bind_engine_class(m);
}
