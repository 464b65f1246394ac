// Uses one piece of each family that is installed, and exits non-zero if any misbehaves.
#include <llmds/llmds.hpp>

#include <cstdio>
#include <string>
#include <vector>

int main() {
  llmds::IndexedHeap<> queue;
  queue.push(1, 3.0);
  queue.push(2, 1.0);
  if (queue.pop().key != 2) return 1;

  llmds::TokenLRU<int, std::vector<int>> cache({}, 4);
  cache.put(1, {1, 2, 3});
  cache.put(2, {4, 5});
  if (cache.contains(1) || cache.total_tokens() != 2) return 2;

  llmds::CountMinSketch sketch;
  sketch.add("hello", 3);
  if (sketch.estimate("hello") < 3) return 3;

  const std::vector<double> latencies = {1.0, 2.0, 3.0, 4.0};
  if (llmds::compute_percentiles(latencies).p50 != 2.5) return 4;

  // The KV cache links the compiled OpenSSL glue (block hashes) through the installed package.
  llmds::KVCache<float> kv({.page_size = 2, .max_pages = 8, .entry_width = 1});
  const std::vector<float> entries = {1, 2, 3, 4, 5};
  const std::vector<llmds::TokenId> prompt = {7, 8, 9, 10};
  kv.attach(1, entries, prompt);
  kv.attach(2, entries, prompt);
  if (kv.stats().shared_pages != 2 || kv.get(2) != entries) return 5;

  // The scheduler as the README shows it: a batch is released when forced.
  llmds::Scheduler scheduler({.max_batch_size = 32, .max_wait_ms = 50});
  const auto id = scheduler.submit(/*tokens=*/512, /*slo_ms=*/200.0);
  if (auto batch = scheduler.get_batch(/*force=*/true)) {
    if (batch->size() != 1 || batch->front() != id) return 6;
    scheduler.complete_batch(*batch);
  } else {
    return 6;
  }

  std::printf("llmds %d.%d.%d consumer: ok\n", llmds::version_major, llmds::version_minor,
              llmds::version_patch);
  return 0;
}
