// Memory as the CPU's caches see it: the cache line, a prefetch hint and cache-line aligned
// storage. HNSW's search is bound by memory rather than arithmetic (ann/hnsw.hpp says why), and
// these are its tools for that: vectors that start on a line, so no SIMD load straddles two, and
// requests for the lines a search will read next while it computes the current distance.
#pragma once

#include <cstddef>
#include <new>
#include <vector>

namespace llmds::detail {

/// The cache line size of the x86-64 and Arm cores llmds runs on.
inline constexpr std::size_t kCacheLine = 64;

/// Starts loading the cache line holding p into all cache levels; a hint, never a fault.
inline void prefetch(const void* p) noexcept {
#if defined(__GNUC__) || defined(__clang__)
  __builtin_prefetch(p, 0, 3);
#else
  (void)p;
#endif
}

/// An allocator of Align-byte aligned storage, for vectors whose rows SIMD loads read whole.
template <class T, std::size_t Align>
struct AlignedAllocator {
  using value_type = T;
  template <class U>
  struct rebind {
    using other = AlignedAllocator<U, Align>;
  };
  AlignedAllocator() noexcept = default;
  template <class U>
  explicit AlignedAllocator(const AlignedAllocator<U, Align>&) noexcept {}
  T* allocate(std::size_t n) {
    return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t{Align}));
  }
  void deallocate(T* p, std::size_t) noexcept { ::operator delete(p, std::align_val_t{Align}); }
  friend bool operator==(const AlignedAllocator&, const AlignedAllocator&) noexcept { return true; }
};

/// A vector whose data starts on a cache line.
template <class T>
using CacheAlignedVector = std::vector<T, AlignedAllocator<T, kCacheLine>>;

}  // namespace llmds::detail
