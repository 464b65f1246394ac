// The whole of llmds in one include. Each structure's own header is cheaper to include.
#pragma once

#include "llmds/version.hpp"

#include "llmds/ann/distance.hpp"
#include "llmds/ann/hnsw.hpp"

#include "llmds/core/errors.hpp"
#include "llmds/core/float16.hpp"
#include "llmds/core/indexed_heap.hpp"
#include "llmds/core/memory_profiler.hpp"
#include "llmds/core/sha256.hpp"
#include "llmds/core/statistics.hpp"
#include "llmds/core/timer.hpp"
#include "llmds/core/token_lru.hpp"

#include "llmds/engine/engine.hpp"
#include "llmds/engine/llama.hpp"
#include "llmds/engine/sampler.hpp"
#include "llmds/engine/tokenizer.hpp"

#include "llmds/kv/block_hash.hpp"
#include "llmds/kv/block_pool.hpp"
#include "llmds/kv/kv_cache.hpp"
#include "llmds/kv/paged_allocator.hpp"
#include "llmds/kv/trace_replay.hpp"

#include "llmds/retrieval/retrieval_pipeline.hpp"

#include "llmds/sched/admission_controller.hpp"
#include "llmds/sched/clock.hpp"
#include "llmds/sched/scheduler.hpp"
#include "llmds/sched/token_budget.hpp"

#include "llmds/sketch/count_min_sketch.hpp"

#include "llmds/text/analyzer.hpp"
#include "llmds/text/inverted_index.hpp"
#include "llmds/text/porter_stemmer.hpp"
#include "llmds/text/posting_list.hpp"
