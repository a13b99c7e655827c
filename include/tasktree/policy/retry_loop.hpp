#pragma once
/// @file policy/retry_loop.hpp
/// @brief The loop the policy layer runs on a worker around each job: attempts, the exponential
/// backoff with full jitter between them, and a backoff sleep on the injectable clock that ends at
/// once when the run stops.
///
/// The backoff sleeps on the worker, not on the coordinator: other jobs keep being submitted and
/// completed while one job waits for its next attempt.

#include <tasktree/clock.hpp>
#include <tasktree/detail/deadline.hpp>
#include <tasktree/policy/attempt_watchdog.hpp>
#include <tasktree/retry.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <limits>
#include <mutex>
#include <optional>
#include <random>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>

namespace tasktree::detail {

/// A `Wakeup` that a stop request signals, so that `Clock::wait_until` can sleep through a backoff
/// on a worker thread and still wake at once when the run stops.
class StopWakeup final : public Wakeup {
 public:
  explicit StopWakeup(const std::stop_token& stop) : on_stop_(stop, Signal{this}) {}
  StopWakeup(const StopWakeup&) = delete;
  StopWakeup& operator=(const StopWakeup&) = delete;
  ~StopWakeup() = default;

  [[nodiscard]] bool signalled() const noexcept override { return stopped_.load(std::memory_order_acquire); }

  void wait_until(std::chrono::steady_clock::time_point deadline) override {
    std::unique_lock lock(mutex_);
    woken_.wait_until(lock, deadline, [this] { return stopped_.load(std::memory_order_relaxed); });
  }

 private:
  struct Signal {
    StopWakeup* self;
    void operator()() const noexcept {
      std::lock_guard lock(self->mutex_);
      self->stopped_.store(true, std::memory_order_release);
      self->woken_.notify_all();
    }
  };

  std::mutex mutex_;
  std::condition_variable woken_;
  std::atomic<bool> stopped_{false};
  // Last: it may run `Signal` while being constructed, and must be unregistered before the rest
  // is destroyed.
  std::stop_callback<Signal> on_stop_;
};

/// Sleeps on `clock` until `deadline_nanos` or a stop request, whichever comes first.
inline void sleep_until(Clock& clock, std::int64_t deadline_nanos, const std::stop_token& stop) {
  StopWakeup wakeup(stop);
  while (!wakeup.signalled() && clock.now_nanos() < deadline_nanos) clock.wait_until(deadline_nanos, wakeup);
}

/// The default `RandomSource`: uniform in [0, 1), one engine per thread.
inline double default_random() {
  thread_local std::mt19937_64 engine{std::random_device{}()};
  return std::uniform_real_distribution<double>(0.0, 1.0)(engine);
}

/// The waits of one job's retries: the ceiling starts at `initial_backoff` and grows by
/// `multiplier` per retry up to `max_backoff`; with full jitter the wait is uniform up to it.
class Backoff {
 public:
  explicit Backoff(const RetryPolicy& policy) noexcept
      : ceiling_(static_cast<double>(policy.initial_backoff.count())),
        max_(static_cast<double>(policy.max_backoff.count())),
        multiplier_(policy.multiplier),
        full_jitter_(policy.full_jitter) {}

  /// The wait before the next retry, in nanoseconds.
  /// @throws std::out_of_range if `random` returns a number outside [0, 1].
  std::int64_t next(const RandomSource& random) {
    double wait = ceiling_;
    if (full_jitter_) {
      const double unit = random ? random() : default_random();
      if (!(unit >= 0.0 && unit <= 1.0)) {
        throw std::out_of_range(fmt::format("tasktree: the random source returned {}, outside [0, 1]", unit));
      }
      wait = ceiling_ * unit;
    }
    ceiling_ = std::min(max_, ceiling_ * multiplier_);
    // 2^63 is the first double past the int64 range (max_backoff may be nanoseconds::max()).
    return wait >= 0x1p63 ? std::numeric_limits<std::int64_t>::max() : static_cast<std::int64_t>(wait);
  }

 private:
  double ceiling_;
  double max_;
  double multiplier_;
  bool full_jitter_;
};

/// What the retry loop reads; shared by every worker and read-only during the run, except for the
/// two counters.
struct RetryContext {
  const FaultTolerantJob& job;
  const RetryPolicy& policy;
  const ExceptionPredicate& is_job_failure;  // empty: every std::exception
  const RandomSource& random;                // empty: default_random
  Clock& clock;
  std::atomic<std::size_t>& retries;
  std::atomic<std::size_t>& recovered;
  AttemptWatchdog* watchdog = nullptr;  // null: no attempt_timeout
};

/// The text of `error`'s exception, for a `TimeoutError`'s cause.
inline std::string exception_text(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "an exception not derived from std::exception";
  }
}

/// How a job's attempts ended: it returned `no_skip`, or failed with `error` (a job failure).
struct Attempts {
  bool no_skip = false;
  std::exception_ptr error{};
  int retries = 0;  // attempts after the first
};

/// Runs `dataset`'s job until it returns or its failure may not be retried. `submit_count` is the
/// job's submission number (in `tid` and `Retry::submit_count`); `start_nanos` is when the first
/// attempt starts, on `context.clock`. A fatal exception (not a job failure) escapes at once,
/// unchanged.
inline Attempts run_with_retries(const RetryContext& context, std::string_view dataset, std::int64_t submit_count,
                                 std::string_view tid, const std::stop_token& stop, std::int64_t start_nanos) {
  const RetryPolicy& policy = context.policy;
  const std::int64_t max_elapsed = policy.max_elapsed.count();
  Backoff backoff(policy);
  for (int count = 0;; ++count) {
    std::exception_ptr error;
    std::optional<AttemptWatchdog::Watch> watch;
    if (context.watchdog != nullptr) watch.emplace(*context.watchdog, dataset, count, stop);
    try {
      const bool no_skip = context.job(
          dataset, tid, Retry{.count = count, .submit_count = submit_count, .stop_token = watch ? watch->token() : stop});
      if (watch && watch->timed_out()) {
        // Whatever it returned, the attempt ran past its timeout: it failed.
        error = std::make_exception_ptr(TimeoutError(dataset, count, context.watchdog->timeout()));
      } else {
        if (count > 0) context.recovered.fetch_add(1, std::memory_order_relaxed);
        return Attempts{.no_skip = no_skip, .retries = count};
      }
    } catch (...) {
      error = std::current_exception();
      // What an attempt throws once its stop token was signalled for the timeout is most likely
      // its answer to the stop: the failure is the timeout, with that as its cause.
      if (watch && watch->timed_out() && !exception_is<TimeoutError>(error)) {
        error = std::make_exception_ptr(
            TimeoutError(dataset, count, context.watchdog->timeout(), exception_text(error)));
      }
    }
    watch.reset();
    const bool job_failure =
        context.is_job_failure ? context.is_job_failure(error) : exception_is<std::exception>(error);
    if (!job_failure) std::rethrow_exception(error);
    const Attempts failed{.error = error, .retries = count};
    if (count >= policy.max_retries || stop.stop_requested()) return failed;
    if (policy.retryable && !policy.retryable(error)) return failed;
    const std::int64_t wait = backoff.next(context.random);
    const std::int64_t now = context.clock.now_nanos();
    const std::int64_t elapsed = std::max<std::int64_t>(0, now - start_nanos);
    if (elapsed > max_elapsed || wait > max_elapsed - elapsed) return failed;  // would start too late
    sleep_until(context.clock, deadline_after(now, wait), stop);
    if (stop.stop_requested()) return failed;
    context.retries.fetch_add(1, std::memory_order_relaxed);
  }
}

}  // namespace tasktree::detail
