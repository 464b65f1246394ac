// The lock that lets Python threads share one index: searches run side by side, changes alone.
//
// Why not std::shared_mutex: glibc's lets a new reader in while a writer waits. A search with a
// Python filter holds the lock while it waits for the GIL, so two threads that search in a loop
// keep the lock held between them and an add waits for ever. Here a waiting writer closes the
// door to new readers; the readers inside finish and the writer goes next.
//
// Two rules keep it free of deadlocks with the GIL:
// - a thread never waits for this lock while it holds the GIL (read_lock() and write_lock()
//   release it first); holding the lock and then waiting for the GIL is allowed (a reader calling
//   a Python filter, any thread returning to Python);
// - a thread that already reads (a filter that calls back into the index) reads again without
//   waiting, where it would otherwise wait behind a writer that waits for it. Changing the index
//   from inside one of its own reads could never proceed, so it is refused with an error.
#pragma once

#include <pybind11/pybind11.h>

#include <algorithm>
#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <shared_mutex>
#include <stdexcept>
#include <utility>
#include <vector>

namespace llmds::python {

class IndexLock {
 public:
  IndexLock() = default;
  IndexLock(const IndexLock&) = delete;
  IndexLock& operator=(const IndexLock&) = delete;

  void lock_shared() {
    std::size_t& depth = reads_held(this);
    std::unique_lock g(mutex_);
    if (depth == 0) readable_.wait(g, [this] { return !writing_ && writers_waiting_ == 0; });
    ++readers_;
    ++depth;
  }

  void unlock_shared() {
    --reads_held(this);
    std::lock_guard g(mutex_);
    if (--readers_ == 0 && writers_waiting_ > 0) writable_.notify_one();
  }

  /// Throws std::logic_error (Python: RuntimeError) if this thread is reading the index.
  void lock() {
    if (reads_held(this) > 0) {
      throw std::logic_error("the index cannot be changed from inside one of its own searches (a filter)");
    }
    std::unique_lock g(mutex_);
    ++writers_waiting_;
    writable_.wait(g, [this] { return !writing_ && readers_ == 0; });
    --writers_waiting_;
    writing_ = true;
  }

  void unlock() {
    std::lock_guard g(mutex_);
    writing_ = false;
    if (writers_waiting_ > 0) {
      writable_.notify_one();
    } else {
      readable_.notify_all();
    }
  }

 private:
  // This thread's read depth on `lock`. Entries return to zero when the reads end, so a lock
  // that later reuses a destroyed one's address starts from zero as it should.
  static std::size_t& reads_held(const IndexLock* lock) {
    thread_local std::vector<std::pair<const IndexLock*, std::size_t>> held;
    auto it = std::find_if(held.begin(), held.end(), [lock](const auto& e) { return e.first == lock; });
    if (it == held.end()) {
      // Reuse an entry whose reads have ended, so the list stays as long as the most
      // indexes one thread reads at once.
      it = std::find_if(held.begin(), held.end(), [](const auto& e) { return e.second == 0; });
      if (it == held.end()) it = held.insert(held.end(), {lock, 0});
      it->first = lock;
    }
    return it->second;
  }

  std::mutex mutex_;
  std::condition_variable readable_;
  std::condition_variable writable_;
  std::size_t readers_ = 0;
  std::size_t writers_waiting_ = 0;
  bool writing_ = false;
};

/// Shares the lock; waits with the GIL released. Call with the GIL held.
[[nodiscard]] inline std::shared_lock<IndexLock> read_lock(IndexLock& lock) {
  pybind11::gil_scoped_release release;
  return std::shared_lock(lock);
}

/// Takes the lock alone; waits with the GIL released. Call with the GIL held.
[[nodiscard]] inline std::unique_lock<IndexLock> write_lock(IndexLock& lock) {
  pybind11::gil_scoped_release release;
  return std::unique_lock(lock);
}

}  // namespace llmds::python
