// The C++ type of Python's KVBlockManager (integer block hashes), for every file that binds it
// (bind_kv_tiered.cpp) or takes it as an argument (bind_routing.cpp): its checked argument
// caster (initialised.hpp) must be the same specialisation in each.
#pragma once

#include <cstdint>

#include "llmds/kv/tiered/kv_block_manager.hpp"

#include "initialised.hpp"

using IntKVBlockManager = llmds::KVBlockManager<std::int64_t>;

LLMDS_PY_REQUIRE_INIT(IntKVBlockManager)
