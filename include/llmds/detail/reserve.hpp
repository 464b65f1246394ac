// reserve_room: make room for `extra` more elements ahead of a change that must not throw.
//
// std::vector::reserve(size() + extra) allocates exactly that much, so calling it before every
// append reallocates on every append: quadratic. This keeps the vector's geometric growth while
// still guaranteeing the room, so the strong exception guarantee costs nothing asymptotically.
#pragma once

#include <algorithm>
#include <cstddef>
#include <vector>

namespace llmds::detail {

template <class T, class A>
void reserve_room(std::vector<T, A>& v, std::size_t extra) {
  if (v.capacity() - v.size() >= extra) return;
  v.reserve(std::max(v.size() + extra, 2 * v.capacity()));
}

}  // namespace llmds::detail
