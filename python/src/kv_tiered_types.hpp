// The C++ types of llmds.kv_block_manager's classes that more than one binding file uses: the
// KVBlockManager over integer block hashes (bound in bind_kv_tiered.cpp, an argument in
// bind_routing.cpp) and the RedisBlockStore (bound in bind_kv_tiered.cpp, an argument in
// bind_traces.cpp). Their checked argument casters (initialised.hpp) must be the same
// specialisation in every file, so they are declared here once.
#pragma once

#include <cstdint>

#include "llmds/kv/tiered/kv_block_manager.hpp"
#ifdef LLMDS_HAS_REDIS
#include "llmds/kv/tiered/redis_store.hpp"
#endif

#include "initialised.hpp"

using IntKVBlockManager = llmds::KVBlockManager<std::int64_t>;

LLMDS_PY_REQUIRE_INIT(IntKVBlockManager)
#ifdef LLMDS_HAS_REDIS
LLMDS_PY_REQUIRE_INIT(llmds::RedisBlockStore)
#endif
