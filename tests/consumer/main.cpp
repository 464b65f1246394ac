// Uses one piece of each family that is installed, and exits non-zero if any misbehaves.
#include <llmds/llmds.hpp>

#include <cstdio>
#include <memory>
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

  // The engine (Eigen, threads) on a tiny model made here: three greedy tokens come back.
  llmds::LlamaConfig config;
  config.dim = 8;
  config.hidden_dim = 16;
  config.n_layers = 1;
  config.n_heads = 2;
  config.n_kv_heads = 1;
  config.vocab_size = 8;
  config.seq_len = 32;
  llmds::LlamaWeights w;
  w.embedding = llmds::RowMatrix::Random(8, 8);
  w.layers.resize(1);
  auto& layer = w.layers[0];
  layer.attention_norm = llmds::Vector::Ones(8);
  layer.ffn_norm = llmds::Vector::Ones(8);
  layer.wq = llmds::RowMatrix::Random(8, 8);
  layer.wk = llmds::RowMatrix::Random(4, 8);
  layer.wv = llmds::RowMatrix::Random(4, 8);
  layer.wo = llmds::RowMatrix::Random(8, 8);
  layer.w1 = llmds::RowMatrix::Random(16, 8);
  layer.w2 = llmds::RowMatrix::Random(8, 16);
  layer.w3 = llmds::RowMatrix::Random(16, 8);
  w.final_norm = llmds::Vector::Ones(8);
  auto model = std::make_shared<const llmds::LlamaModel>(config, std::move(w));
  auto tokenizer = std::make_shared<const llmds::Tokenizer>(
      std::vector<std::string>{"<unk>", "\n<s>\n", "\n</s>\n", " ", "a", "b", "c", "d"},
      std::vector<float>(8, 0.0f));
  llmds::Engine engine(model, tokenizer);
  llmds::Request request;
  request.prompt_tokens = {1, 4};
  request.max_tokens = 3;
  request.sampling.temperature = 0.0f;
  request.ignore_eos = true;
  if (engine.generate(request).tokens.size() != 3) return 7;

  std::printf("llmds %d.%d.%d consumer: ok\n", llmds::version_major, llmds::version_minor,
              llmds::version_patch);
  return 0;
}
