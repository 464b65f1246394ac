// The lock that guards a structure shared with Python code: its own callbacks, and other threads.
//
// A structure that calls Python (a key's __eq__, token_of, a search filter, a value's __del__
// when it is dropped) hands the interpreter to code that may call the structure again, on this
// thread or, since Python switches threads while that code runs, on another. Either would find
// the structure halfway through a change. ObjectLock makes both safe:
// - on the same thread, a call that would see a change halfway (any call inside a change, or a
//   change inside a read) throws std::logic_error (Python: RuntimeError) before it touches
//   anything; a read inside a read (a filter that searches the index it filters) is allowed;
// - other threads wait: reads side by side, changes alone.
//
// Why not std::shared_mutex: glibc's lets a new reader in while a writer waits. A search with a
// Python filter holds the lock while it waits for the GIL, so two threads that search in a loop
// keep the lock held between them and an add waits for ever. Here a waiting writer closes the
// door to new readers; the readers inside finish and the writer goes next.
//
// Two rules keep it free of deadlocks with the GIL:
// - a thread never waits for this lock while it holds the GIL (read_lock() and write_lock()
//   release it before they wait); holding the lock and then waiting for the GIL is allowed (a
//   reader calling a Python filter, any thread returning to Python);
// - a thread that already reads reads again without waiting, where it would otherwise wait
//   behind a writer that waits for it.
// The common case, no other thread inside, takes the lock without releasing the GIL.
#pragma once

#include <pybind11/pybind11.h>

#include <algorithm>
#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <shared_mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <fmt/format.h>

namespace llmds::python {

class ObjectLock {
 public:
  /// `structure` and `callbacks` name the structure and the Python code it runs, for the error
  /// a re-entrant call gets: ObjectLock("TokenLRU", "a key's __hash__ or __eq__, or token_of").
  ObjectLock(const char* structure, const char* callbacks) : structure_(structure), callbacks_(callbacks) {}
  ObjectLock(const ObjectLock&) = delete;
  ObjectLock& operator=(const ObjectLock&) = delete;

  void lock_shared() {
    std::unique_lock g(mutex_);
    if (!admit_reader(g, /*wait=*/true)) throw std::logic_error("unreachable");
  }
  bool try_lock_shared() {
    std::unique_lock g(mutex_);
    return admit_reader(g, /*wait=*/false);
  }

  void unlock_shared() {
    --reads_held(this);
    std::lock_guard g(mutex_);
    if (--readers_ == 0 && writers_waiting_ > 0) writable_.notify_one();
  }

  void lock() {
    std::unique_lock g(mutex_);
    if (!admit_writer(g, /*wait=*/true)) throw std::logic_error("unreachable");
  }
  bool try_lock() {
    std::unique_lock g(mutex_);
    return admit_writer(g, /*wait=*/false);
  }

  void unlock() {
    std::lock_guard g(mutex_);
    writing_ = false;
    writer_ = {};
    if (writers_waiting_ > 0) {
      writable_.notify_one();
    } else {
      readable_.notify_all();
    }
  }

 private:
  [[noreturn]] void refuse(const char* attempt) const {
    throw std::logic_error(fmt::format("{} cannot be {} from inside one of its own calls into Python ({})", structure_,
                                       attempt, callbacks_));
  }

  bool admit_reader(std::unique_lock<std::mutex>& g, bool wait) {
    if (writing_ && writer_ == std::this_thread::get_id()) refuse("used");
    std::size_t& depth = reads_held(this);
    if (depth == 0) {
      auto open = [this] { return !writing_ && writers_waiting_ == 0; };
      if (!wait && !open()) return false;
      readable_.wait(g, open);
    }
    ++readers_;
    ++depth;
    return true;
  }

  bool admit_writer(std::unique_lock<std::mutex>& g, bool wait) {
    if (reads_held(this) > 0 || (writing_ && writer_ == std::this_thread::get_id())) refuse("changed");
    auto open = [this] { return !writing_ && readers_ == 0; };
    if (!open()) {
      if (!wait) return false;
      ++writers_waiting_;
      writable_.wait(g, open);
      --writers_waiting_;
    }
    writing_ = true;
    writer_ = std::this_thread::get_id();
    return true;
  }

  // This thread's read depth on `lock`. Entries return to zero when the reads end, so a lock
  // that later reuses a destroyed one's address starts from zero as it should.
  static std::size_t& reads_held(const ObjectLock* lock) {
    thread_local std::vector<std::pair<const ObjectLock*, std::size_t>> held;
    auto it = std::find_if(held.begin(), held.end(), [lock](const auto& e) { return e.first == lock; });
    if (it == held.end()) {
      // Reuse an entry whose reads have ended, so the list stays as long as the most
      // structures one thread reads at once.
      it = std::find_if(held.begin(), held.end(), [](const auto& e) { return e.second == 0; });
      if (it == held.end()) it = held.insert(held.end(), {lock, 0});
      it->first = lock;
    }
    return it->second;
  }

  const char* structure_;
  const char* callbacks_;
  std::mutex mutex_;
  std::condition_variable readable_;
  std::condition_variable writable_;
  std::size_t readers_ = 0;
  std::size_t writers_waiting_ = 0;
  bool writing_ = false;
  std::thread::id writer_;
};

/// Shares the lock; waits, if it must, with the GIL released. Call with the GIL held. Throws
/// std::logic_error inside one of the structure's own changes on this thread.
[[nodiscard]] inline std::shared_lock<ObjectLock> read_lock(ObjectLock& lock) {
  std::shared_lock<ObjectLock> held(lock, std::try_to_lock);
  if (!held.owns_lock()) {
    pybind11::gil_scoped_release release;
    held.lock();
  }
  return held;
}

/// Takes the lock alone; waits, if it must, with the GIL released. Call with the GIL held.
/// Throws std::logic_error inside one of the structure's own calls on this thread.
[[nodiscard]] inline std::unique_lock<ObjectLock> write_lock(ObjectLock& lock) {
  std::unique_lock<ObjectLock> held(lock, std::try_to_lock);
  if (!held.owns_lock()) {
    pybind11::gil_scoped_release release;
    held.lock();
  }
  return held;
}

}  // namespace llmds::python
