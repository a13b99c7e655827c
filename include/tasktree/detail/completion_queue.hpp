#pragma once
/// @file detail/completion_queue.hpp
/// @brief How finished jobs reach the coordinator: a many-producer, one-consumer queue of slot
/// indices that workers push to with one compare-and-swap, that the holder of the coordinator role
/// empties with one atomic operation and can sleep on (after a short spin) without polling; and the
/// coordinator role itself, a bit of the same word.

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
/// pushed before it. The consumer takes the whole stack at once, so no slot is ever popped alone
/// and the classic ABA problem of lock-free stacks cannot arise; the order is irrelevant, since the
/// consumer sorts each batch by name.
///
/// The coordinator role. The consumer is whoever holds the coordinator role (docs/semantics.md
/// §2), and the role is a bit of the same word (`held_bit`), so that a worker whose job finished
/// either takes the role or pushes its slot, in one compare-and-swap, never both and never
/// neither: `push_or_take_role` takes the role if nobody holds it and otherwise pushes. The holder
/// gives the role up only through `release_role`, which fails while anything is pushed, so a push
/// that raced with the release is never left behind. A thread that wants the role while another
/// holds it (the calling thread on a stop) sets `wanted_bit`, and the holder then hands the role
/// over instead of releasing it (see the coordinator).
///
/// Sleeping. `state_` also holds a `sleeping` bit, which the holder sets and clears only while
/// holding `mutex_`. A worker pushes with a compare-and-swap that expects the bit clear, and that
/// CAS is its last access to the queue: the holder may see the entry at once, end the run and
/// destroy the queue. A worker that finds the bit set pushes under `mutex_` instead and notifies
/// before unlocking; a sleeping holder reads `state_` only under the mutex, so it cannot see that
/// entry (and destroy the queue) before the worker has let go of the mutex. A lock-free push
/// racing with the holder setting the bit fails its CAS, since the word changed, and retries on
/// the locked path, so no wake-up is lost.
class CompletionQueue final : public Wakeup {
 public:
  /// What `release_role` found.
  enum class Release {
    released,  ///< the role is free
    pushed,    ///< completions arrived: still held, take them
    wanted,    ///< another thread wants the role: still held, hand it over
  };

  /// `capacity` bounds the slot indices (the number of slots), so `push` never allocates and never
  /// throws. The role starts held, by the thread that starts the run.
  explicit CompletionQueue(std::size_t capacity) : next_(capacity, empty) {}

  /// Called by a worker when the job in `slot` has finished.
  void push(std::uint32_t slot) noexcept { static_cast<void>(push_unless(slot, false)); }

  /// Called by a worker when the job in `slot` has finished: if nobody holds the coordinator role,
  /// takes it and returns true (`slot` is not pushed: the caller now processes it); otherwise
  /// pushes `slot` for the holder and returns false (the push is the caller's last access).
  [[nodiscard]] bool push_or_take_role(std::uint32_t slot) noexcept { return push_unless(slot, true); }

  /// The holder tries to give the role up; it succeeds only if nothing is pushed and nobody wants
  /// the role.
  [[nodiscard]] Release release_role() noexcept {
    std::uint64_t expected = empty | held_bit;
    if (state_.compare_exchange_strong(expected, empty, std::memory_order_acq_rel, std::memory_order_acquire)) {
      return Release::released;
    }
    return (expected & wanted_bit) != 0 ? Release::wanted : Release::pushed;
  }

  /// A thread that is not a worker (the calling thread, on a stop) takes the role if it is free,
  /// and returns true; otherwise marks it wanted, so that the holder hands it over, and returns
  /// false.
  [[nodiscard]] bool take_or_want_role() noexcept {
    std::uint64_t state = state_.load(std::memory_order_acquire);
    while (true) {
      const bool free = (state & held_bit) == 0;
      const std::uint64_t desired = free ? (state | held_bit) : (state | wanted_bit);
      if (state_.compare_exchange_weak(state, desired, std::memory_order_acq_rel, std::memory_order_acquire)) {
        return free;
      }
    }
  }

  /// The thread that was handed the role clears the wanted mark.
  void clear_wanted() noexcept { state_.fetch_and(~wanted_bit, std::memory_order_acq_rel); }

  /// Called when a stop is requested: wakes the holder and keeps `signalled()` true.
  void notify_stop() noexcept {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    stopping_flag_.store(true, std::memory_order_release);
    ready_.notify_one();
  }

  /// True if completions are queued. Lock-free; for the holder's non-blocking check.
  [[nodiscard]] bool has_items() const noexcept { return head(state_.load(std::memory_order_acquire)) != empty; }

  /// Moves all queued completions into `out` (after clearing it). Role holder only, not while it
  /// sleeps. Never allocates once `out` has room for every slot.
  void take(std::vector<std::uint32_t>& out) {
    out.clear();
    append(out);
  }

  /// As `take`, but keeps what `out` holds.
  void append(std::vector<std::uint32_t>& out) {
    // Setting the low 32 bits empties the stack and keeps the flags.
    for (std::uint32_t slot = head(state_.fetch_or(empty, std::memory_order_acquire)); slot != empty;
         slot = next_[slot]) {
      out.push_back(slot);
    }
  }

  [[nodiscard]] bool signalled() const noexcept override {
    return has_items() || stopping_flag_.load(std::memory_order_acquire);
  }

  /// Blocks until a completion is queued, a stop is requested, or `deadline` passes.
  void wait_until(std::chrono::steady_clock::time_point deadline) override { park(true, deadline); }

  /// Blocks until a completion is queued or a stop is requested; spins briefly first.
  void wait() {
    if (spin_.spin([this] { return signalled(); })) return;
    park(true, std::nullopt);
  }

  /// Blocks until a completion is queued, ignoring stop requests (for draining after a stop).
  void wait_for_completion() {
    if (spin_.spin([this] { return has_items(); })) return;
    park(false, std::nullopt);
  }

 private:
  static constexpr std::uint32_t empty = 0xFFFF'FFFFu;
  static constexpr std::uint64_t sleeping_bit = std::uint64_t{1} << 32;
  static constexpr std::uint64_t held_bit = std::uint64_t{1} << 33;
  static constexpr std::uint64_t wanted_bit = std::uint64_t{1} << 34;

  /// Pushes `slot`, or, if `take_free_role` and nobody holds the role, takes the role instead and
  /// returns true.
  bool push_unless(std::uint32_t slot, bool take_free_role) noexcept {
    std::uint64_t state = state_.load(std::memory_order_relaxed);
    while (true) {
      if (take_free_role && (state & held_bit) == 0) {
        // acquire: the previous holder's release, and every push before it.
        if (state_.compare_exchange_weak(state, state | held_bit, std::memory_order_acq_rel,
                                         std::memory_order_relaxed)) {
          return true;
        }
        continue;
      }
      if ((state & sleeping_bit) == 0) {
        next_[slot] = head(state);
        // acq_rel: publishes `next_[slot]` and the job's results in the slot; continues the release
        // sequence of earlier pushes, so the holder's acquiring take sees all of them.
        if (state_.compare_exchange_weak(state, (state & ~head_mask) | slot, std::memory_order_acq_rel,
                                         std::memory_order_relaxed)) {
          return false;
        }
        continue;
      }
      std::lock_guard lock(mutex_);
      state = state_.load(std::memory_order_relaxed);
      if ((state & sleeping_bit) != 0) {
        // The sleeper holds the role, so the role cannot be taken here.
        do {
          next_[slot] = head(state);
        } while (!state_.compare_exchange_weak(state, (state & ~head_mask) | slot, std::memory_order_acq_rel,
                                               std::memory_order_relaxed));
        ready_.notify_one();
        return false;  // unlocks: the holder reads `state_` only after taking the mutex
      }
      // The holder woke meanwhile: try again without the lock (after unlocking).
    }
  }

  static constexpr std::uint64_t head_mask = empty;

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

  std::atomic<std::uint64_t> state_{empty | held_bit};  // head slot (low 32 bits), sleeping, held, wanted
  std::vector<std::uint32_t> next_;                     // per slot: the slot pushed before it
  std::mutex mutex_;
  std::condition_variable ready_;
  std::atomic<bool> stopping_flag_{false};
  bool stopping_ = false;  // guarded by `mutex_`
  SpinWait spin_;          // the holder's
};

}  // namespace tasktree::detail
