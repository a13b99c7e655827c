#pragma once
/// @file detail/completion_queue.hpp
/// @brief How finished jobs reach the coordinator: a many-producer, one-consumer queue of slot
/// indices that the coordinator can check without locking and sleep on without polling.

#include <tasktree/clock.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

namespace tasktree::detail {

class CompletionQueue final : public Wakeup {
 public:
  /// `capacity` bounds the number of completions outstanding at once (the number of slots), so
  /// `push` never allocates and never throws.
  explicit CompletionQueue(std::size_t capacity) { items_.reserve(capacity); }

  /// Called by a worker when the job in `slot` has finished.
  void push(std::uint32_t slot) noexcept {
    std::lock_guard lock(mutex_);
    items_.push_back(slot);
    has_items_.store(true, std::memory_order_release);
    // Notify while holding the lock: once the coordinator sees the item it may end the run and
    // destroy this queue, so the worker must not touch it after unlocking.
    if (sleeping_) ready_.notify_one();
  }

  /// Called when a stop is requested: wakes the coordinator and keeps `signalled()` true.
  void notify_stop() noexcept {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    stopping_flag_.store(true, std::memory_order_release);
    if (sleeping_) ready_.notify_one();
  }

  /// True if completions are queued. Lock-free; for the coordinator's non-blocking check.
  [[nodiscard]] bool has_items() const noexcept { return has_items_.load(std::memory_order_acquire); }

  /// Moves all queued completions into `out` (after clearing it).
  void take(std::vector<std::uint32_t>& out) {
    out.clear();
    std::lock_guard lock(mutex_);
    out.swap(items_);
    items_.reserve(out.capacity());  // no allocation after the first few swaps settle
    has_items_.store(false, std::memory_order_relaxed);
  }

  [[nodiscard]] bool signalled() const noexcept override {
    return has_items() || stopping_flag_.load(std::memory_order_acquire);
  }

  /// Blocks until a completion is queued, a stop is requested, or `deadline` passes.
  void wait_until(std::chrono::steady_clock::time_point deadline) override {
    std::unique_lock lock(mutex_);
    sleeping_ = true;
    ready_.wait_until(lock, deadline, [this] { return !items_.empty() || stopping_; });
    sleeping_ = false;
  }

  /// Blocks until a completion is queued or a stop is requested.
  void wait() {
    std::unique_lock lock(mutex_);
    sleeping_ = true;
    ready_.wait(lock, [this] { return !items_.empty() || stopping_; });
    sleeping_ = false;
  }

  /// Blocks until a completion is queued, ignoring stop requests (for draining after a stop).
  void wait_for_completion() {
    std::unique_lock lock(mutex_);
    sleeping_ = true;
    ready_.wait(lock, [this] { return !items_.empty(); });
    sleeping_ = false;
  }

 private:
  mutable std::mutex mutex_;
  std::condition_variable ready_;
  std::vector<std::uint32_t> items_;
  std::atomic<bool> has_items_{false};
  std::atomic<bool> stopping_flag_{false};
  bool sleeping_ = false;
  bool stopping_ = false;
};

}  // namespace tasktree::detail
