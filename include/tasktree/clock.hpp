#pragma once
/// @file clock.hpp
/// @brief The injectable clock behind pacing: `Clock`, the real `SteadyClock`, and the
/// `ManualClock` that makes paced runs deterministic in tests.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <utility>

namespace tasktree {

/// @brief What a clock may block on: the coordinator's "something happened" signal.
///
/// `signalled()` turns true when a job finished or a stop was requested; `wait_until()` blocks
/// until that happens or the real-time deadline passes. A `Clock` implementation uses it to
/// sleep without missing either event.
class Wakeup {
 public:
  /// True if the coordinator has something to do (a completion or a stop request).
  [[nodiscard]] virtual bool signalled() const noexcept = 0;
  /// Blocks until `signalled()` or until `deadline` on the steady clock, whichever comes first.
  virtual void wait_until(std::chrono::steady_clock::time_point deadline) = 0;

 protected:
  Wakeup() = default;
  /// Implementations may be copied by the classes derived from this one.
  Wakeup(const Wakeup&) = default;
  /// Implementations may be copied by the classes derived from this one.
  Wakeup& operator=(const Wakeup&) = default;
  ~Wakeup() = default;
};

/// @brief Source of time for pacing (`interval_nanos`): a monotonic nanosecond count and a way to
/// sleep until a point on it.
///
/// The clock is consulted for pacing only when `interval_nanos` is set (unpaced runs never read it
/// for that), and for timing jobs only when an observer or a journal is set (a journal records
/// each job's start and duration on it). In a `ParallelTaskTree` run,
/// `wait_until` is called by the coordinator only, on the calling thread (pacing keeps the role there);
/// `now_nanos` is called by the coordinator, which may run on a worker thread, and on worker
/// threads (to time jobs), so it must be thread-safe. The policy layer (policy.hpp) also times every
/// job and sleeps through retry backoffs on worker threads, with a `Wakeup` that a stop request
/// signals, so there both functions must be thread-safe.
class Clock {
 public:
  virtual ~Clock() = default;
  /// Monotonic time in nanoseconds (any epoch).
  [[nodiscard]] virtual std::int64_t now_nanos() = 0;
  /// Returns once `now_nanos() >= deadline_nanos` or `wakeup.signalled()`, whichever is first.
  virtual void wait_until(std::int64_t deadline_nanos, Wakeup& wakeup) = 0;
};

/// @brief The real clock: `std::chrono::steady_clock`; sleeps wake early on completions and stop
/// requests. Used when `Options::clock` is null.
class SteadyClock final : public Clock {
 public:
  [[nodiscard]] std::int64_t now_nanos() override {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
  void wait_until(std::int64_t deadline_nanos, Wakeup& wakeup) override {
    wakeup.wait_until(std::chrono::steady_clock::time_point(
        std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::nanoseconds(deadline_nanos))));
  }
};

/// @brief A clock that only moves when told to, for deterministic tests of pacing.
///
/// A wait returns at once: if nothing is signalled, the clock jumps to the deadline (as if the
/// coordinator had slept exactly that long); if the wakeup is signalled, time stays put (the
/// coordinator woke early). `on_wait`, if set, runs at the start of each wait with the deadline,
/// so a test can inject events "during the sleep", such as a stop request.
///
/// @code
/// auto clock = std::make_shared<tasktree::ManualClock>(1'000);
/// options.clock = clock;  // submissions now happen at exact, repeatable times
/// @endcode
class ManualClock final : public Clock {
 public:
  /// A clock that reads `start_nanos` until it is advanced or a wait moves it.
  explicit ManualClock(std::int64_t start_nanos = 0) noexcept : now_(start_nanos) {}

  [[nodiscard]] std::int64_t now_nanos() override {
    std::lock_guard lock(mutex_);
    return now_;
  }
  void wait_until(std::int64_t deadline_nanos, Wakeup& wakeup) override {
    std::function<void(std::int64_t)> hook;
    {
      std::lock_guard lock(mutex_);
      ++waits_;
      hook = on_wait_;
    }
    if (hook) hook(deadline_nanos);
    if (wakeup.signalled()) return;
    std::lock_guard lock(mutex_);
    now_ = std::max(now_, deadline_nanos);
  }

  /// Moves the clock forward by `nanos` (never backwards).
  void advance(std::int64_t nanos) {
    std::lock_guard lock(mutex_);
    now_ += std::max<std::int64_t>(nanos, 0);
  }
  /// Number of waits so far.
  [[nodiscard]] std::int64_t waits() const {
    std::lock_guard lock(mutex_);
    return waits_;
  }
  /// Sets the hook run at the start of every wait (with the wait's deadline).
  void on_wait(std::function<void(std::int64_t deadline_nanos)> hook) {
    std::lock_guard lock(mutex_);
    on_wait_ = std::move(hook);
  }

 private:
  mutable std::mutex mutex_;
  std::int64_t now_;
  std::int64_t waits_ = 0;
  std::function<void(std::int64_t)> on_wait_;
};

}  // namespace tasktree
