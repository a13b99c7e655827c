#pragma once
/// @file detail/completion_queue.hpp
/// @brief How finished jobs reach the coordinator: a many-producer, one-consumer queue of slot
/// indices that workers push to with one compare-and-swap, that the coordinator empties with one
/// exchange, and that the coordinator can sleep on (after a short spin) without polling.

#include <tasktree/clock.hpp>
#include <tasktree/detail/spin_wait.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <vector>

namespace tasktree::detail {

/// The queue is an intrusive stack: `state_` holds the slot pushed last and `next_[slot]` the one
/// pushed before it. The coordinator takes the whole stack at once, so no slot is ever popped
/// alone and the classic ABA problem of lock-free stacks cannot arise; the order is irrelevant,
/// since the coordinator sorts each batch by name.
///
/// Sleeping. `state_` also holds a `sleeping` bit, which the coordinator sets and clears only
/// while holding `mutex_`. A worker pushes with a compare-and-swap that expects the bit clear, and
/// that CAS is its last access to the queue: the coordinator may see the entry at once, end the
/// run and destroy the queue. A worker that finds the bit set pushes under `mutex_` instead and
/// notifies before unlocking; a sleeping coordinator reads `state_` only under the mutex, so it
/// cannot see that entry (and destroy the queue) before the worker has let go of the mutex. A
/// lock-free push racing with the coordinator setting the bit fails its CAS, since the word
/// changed, and retries on the locked path, so no wake-up is lost.
class CompletionQueue final : public Wakeup {
 public:
  /// `capacity` bounds the slot indices (the number of slots), so `push` never allocates and never
  /// throws.
  explicit CompletionQueue(std::size_t capacity) : next_(capacity, empty) {}

  /// Called by a worker when the job in `slot` has finished.
  void push(std::uint32_t slot) noexcept {
    std::uint64_t state = state_.load(std::memory_order_relaxed);
    while (true) {
      if ((state & sleeping_bit) == 0) {
        next_[slot] = head(state);
        // acq_rel: publishes `next_[slot]` and the job's results in the slot; continues the release
        // sequence of earlier pushes, so the coordinator's acquiring exchange sees all of them.
        if (state_.compare_exchange_weak(state, slot, std::memory_order_acq_rel, std::memory_order_relaxed)) {
          return;
        }
        continue;
      }
      std::lock_guard lock(mutex_);
      state = state_.load(std::memory_order_relaxed);
      if ((state & sleeping_bit) != 0) {
        do {
          next_[slot] = head(state);
        } while (!state_.compare_exchange_weak(state, slot | sleeping_bit, std::memory_order_acq_rel,
                                               std::memory_order_relaxed));
        ready_.notify_one();
        return;  // unlocks: the coordinator reads `state_` only after taking the mutex
      }
      // The coordinator woke meanwhile: push without the lock after all (after unlocking).
    }
  }

  /// Called when a stop is requested: wakes the coordinator and keeps `signalled()` true.
  void notify_stop() noexcept {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    stopping_flag_.store(true, std::memory_order_release);
    ready_.notify_one();
  }

  /// True if completions are queued. Lock-free; for the coordinator's non-blocking check.
  [[nodiscard]] bool has_items() const noexcept { return head(state_.load(std::memory_order_acquire)) != empty; }

  /// Moves all queued completions into `out` (after clearing it). Coordinator only, not while it
  /// sleeps. Never allocates once `out` has room for every slot.
  void take(std::vector<std::uint32_t>& out) {
    out.clear();
    for (std::uint32_t slot = head(state_.exchange(empty, std::memory_order_acquire)); slot != empty;
         slot = next_[slot]) {
      out.push_back(slot);
    }
  }

  [[nodiscard]] bool signalled() const noexcept override {
    return has_items() || stopping_flag_.load(std::memory_order_acquire);
  }

  /// Blocks until a completion is queued, a stop is requested, or `deadline` passes.
  void wait_until(std::chrono::steady_clock::time_point deadline) override { park(true, deadline); }

  /// Blocks until a completion is queued or a stop is requested; spins briefly first, and calls
  /// `before_sleep()` if it has to sleep.
  template <class BeforeSleep>
  void wait(BeforeSleep&& before_sleep) {
    if (spin_.spin([this] { return signalled(); })) return;
    before_sleep();
    park(true, std::nullopt);
  }

  /// Blocks until a completion is queued, ignoring stop requests (for draining after a stop).
  template <class BeforeSleep>
  void wait_for_completion(BeforeSleep&& before_sleep) {
    if (spin_.spin([this] { return has_items(); })) return;
    before_sleep();
    park(false, std::nullopt);
  }

 private:
  static constexpr std::uint32_t empty = 0xFFFF'FFFFu;
  static constexpr std::uint64_t sleeping_bit = std::uint64_t{1} << 32;

  static std::uint32_t head(std::uint64_t state) noexcept { return static_cast<std::uint32_t>(state); }

  /// Sleeps until a completion is queued, a stop is requested (if `stop_counts`), or the deadline.
  void park(bool stop_counts, std::optional<std::chrono::steady_clock::time_point> deadline) {
    std::unique_lock lock(mutex_);
    const auto done = [&] { return has_items() || (stop_counts && stopping_); };
    std::uint64_t state = state_.load(std::memory_order_acquire);
    do {
      if (head(state) != empty || (stop_counts && stopping_)) return;
    } while (!state_.compare_exchange_weak(state, state | sleeping_bit, std::memory_order_acq_rel,
                                           std::memory_order_acquire));
    if (deadline) {
      ready_.wait_until(lock, *deadline, done);
    } else {
      ready_.wait(lock, done);
    }
    state_.fetch_and(~sleeping_bit, std::memory_order_acq_rel);
  }

  std::atomic<std::uint64_t> state_{empty};  // head slot (low 32 bits) and the sleeping bit
  std::vector<std::uint32_t> next_;          // per slot: the slot pushed before it
  std::mutex mutex_;
  std::condition_variable ready_;
  std::atomic<bool> stopping_flag_{false};
  bool stopping_ = false;  // guarded by `mutex_`
  SpinWait spin_;          // the coordinator's
};

}  // namespace tasktree::detail
