// The library's version: the one place it is written (CMake and the Python wheel read it here).
#pragma once

#define LLMDS_VERSION_MAJOR 0
#define LLMDS_VERSION_MINOR 1
#define LLMDS_VERSION_PATCH 0

namespace llmds {
inline constexpr int version_major = LLMDS_VERSION_MAJOR;
inline constexpr int version_minor = LLMDS_VERSION_MINOR;
inline constexpr int version_patch = LLMDS_VERSION_PATCH;
}  // namespace llmds
