// parallel_for: the one way llmds spreads a batch call (HNSW add_batch / search_batch, BM25
// search_batch) over threads. Plain std::threads per call: batch calls are long enough that
// starting two or eight threads is noise, and no pool outlives the call.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace llmds::detail {

/// Threads for n items: 0 asks for every core; never more threads than items.
inline std::size_t thread_count(std::size_t requested, std::size_t n) {
  if (requested == 0) requested = std::max(1u, std::thread::hardware_concurrency());
  return std::min(requested, std::max<std::size_t>(n, 1));
}

/// Runs body(i) for i in [0, n) on thread_count(num_threads, n) threads, handing out items one at
/// a time; the first exception is rethrown after every thread has stopped.
template <class Body>
void parallel_for(std::size_t n, std::size_t num_threads, Body&& body) {
  const std::size_t threads_wanted = thread_count(num_threads, n);
  if (threads_wanted <= 1) {
    for (std::size_t i = 0; i < n; ++i) body(i);
    return;
  }
  std::atomic<std::size_t> next{0};
  std::exception_ptr failure;
  std::mutex failure_lock;
  auto work = [&] {
    try {
      for (std::size_t i = next++; i < n; i = next++) body(i);
    } catch (...) {
      std::lock_guard g(failure_lock);
      if (!failure) failure = std::current_exception();
    }
  };
  std::vector<std::thread> threads;
  threads.reserve(threads_wanted);
  for (std::size_t t = 0; t < threads_wanted; ++t) threads.emplace_back(work);
  for (auto& t : threads) t.join();
  if (failure) std::rethrow_exception(failure);
}

}  // namespace llmds::detail
