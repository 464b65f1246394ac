// The storage tiers of a tiered KV cache, fastest first.
//
//   primary  the arena attention reads: device memory on a GPU, the engine's KV arena here
//   host     a larger arena in host memory (pinned, on a GPU machine)
//   disk     local files, one per block, that survive a restart
//   remote   a store shared by many servers (Redis)
//
// A block lives in primary while a request uses it; below primary it is a cached copy that a
// later request with the same prefix brings back (onboards) instead of recomputing. The names
// are the "medium" strings vLLM's KV events use, so a router reading llmds's events and vLLM's
// sees the same words.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace llmds {

enum class Tier : std::uint8_t { kPrimary = 0, kHost = 1, kDisk = 2, kRemote = 3 };

inline constexpr std::size_t kNumTiers = 4;

/// The tier's name in events, metrics and reports: "primary", "host", "disk", "remote".
[[nodiscard]] constexpr std::string_view tier_name(Tier tier) noexcept {
  switch (tier) {
    case Tier::kPrimary: return "primary";
    case Tier::kHost: return "host";
    case Tier::kDisk: return "disk";
    case Tier::kRemote: return "remote";
  }
  return "unknown";
}

}  // namespace llmds
