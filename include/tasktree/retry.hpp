#pragma once
/// @file retry.hpp
/// @brief The policy layer's vocabulary for attempts and retries: what a job learns about its
/// attempt (`Retry`), the job's signature (`FaultTolerantJob`), how failures are classified
/// (`ExceptionPredicate`, `exception_is`) and retried (`RetryPolicy`, `RandomSource`). Included by
/// policy.hpp; the retry loop (policy/retry_loop.hpp) needs only this.

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>

namespace tasktree {

/// @brief What a job learns about its attempt: which one it is, and whether the run is stopping.
///
/// @code
/// [](std::string_view dataset, std::string_view tid, const tasktree::Retry& retry) {
///   if (retry.count > 0) fmt::print("{} retry #{} of {}\n", tid, retry.count, dataset);
///   return replicate(dataset, retry.stop_token);  // true: continue into the subtree
/// }
/// @endcode
struct Retry {
  /// 0 on the first attempt, then 1, 2, ... on each retry.
  int count = 0;
  /// The job's submission number, 1-based and the same on every attempt: the `submit_count` of
  /// `tid` (`"{submit_count}/{total}"`), as a number.
  std::int64_t submit_count = 0;
  /// Signalled when the run stops (the caller's stop request, a failure in `fail` mode, or an
  /// error elsewhere); long jobs should return or throw soon after.
  std::stop_token stop_token{};
};

/// @brief Decides from a failed attempt's exception whether something holds (is it a job failure?
/// is it worth retrying?). Called on worker threads, so it must be thread-safe. `exception_is`
/// makes the usual ones.
using ExceptionPredicate = std::function<bool(const std::exception_ptr& error)>;

/// @brief An `ExceptionPredicate` that is true when the exception is one of `Exceptions` (or
/// derives from one).
///
/// @code
/// .is_job_failure = tasktree::exception_is<std::system_error, std::runtime_error>,
/// .retry_policy = {.max_retries = 3, .retryable = tasktree::exception_is<TransientError>},
/// @endcode
template <class... Exceptions>
struct ExceptionIs {
  static_assert(sizeof...(Exceptions) > 0, "name at least one exception type");

  /// True if `error` is not null and holds one of `Exceptions` or a class derived from one.
  [[nodiscard]] bool operator()(const std::exception_ptr& error) const {
    return error != nullptr && (matches<Exceptions>(error) || ...);
  }

 private:
  template <class Exception>
  static bool matches(const std::exception_ptr& error) {
    try {
      std::rethrow_exception(error);
    } catch (const Exception&) {
      return true;
    } catch (...) {
      return false;
    }
  }
};

/// @brief See `ExceptionIs`.
template <class... Exceptions>
inline constexpr ExceptionIs<Exceptions...> exception_is{};

/// @brief How a failed job is retried: exponential backoff with full jitter, bounded in count and
/// in total time.
///
/// After the failure of attempt `n` (0-based), the next attempt waits a random time in
/// `[0, ceiling(n)]` (or exactly `ceiling(n)` without `full_jitter`), where
/// `ceiling(0) = initial_backoff` and `ceiling(n) = min(max_backoff, ceiling(n - 1) * multiplier)`.
/// A retry happens only if the failure is a job failure, `retryable` says yes, fewer than
/// `max_retries` retries were made, no stop was requested, and the retry would start no later than
/// `max_elapsed` after the first attempt started. The wait happens on the worker, on the options'
/// `clock`, and ends at once when the run stops.
///
/// @code
/// using namespace std::chrono_literals;
/// tasktree::RetryPolicy retry{.max_retries = 5, .initial_backoff = 100ms, .max_backoff = 10s};
/// @endcode
struct RetryPolicy {
  /// Retries after the first attempt; 0 means none. Must be at least 0.
  int max_retries = 0;
  /// Ceiling of the first backoff. Must be at least 0.
  std::chrono::nanoseconds initial_backoff = std::chrono::milliseconds(125);
  /// Largest ceiling. Must be at least `initial_backoff`.
  std::chrono::nanoseconds max_backoff = std::chrono::seconds(10);
  /// Growth of the ceiling per retry. Must be at least 1 (and not NaN).
  double multiplier = 2.0;
  /// True: wait a uniformly random time up to the ceiling ("full jitter", which spreads retries of
  /// many jobs that failed together); false: wait exactly the ceiling.
  bool full_jitter = true;
  /// No retry starts later than this after the job's first attempt started. Must be at least 0.
  std::chrono::nanoseconds max_elapsed = std::chrono::hours(1);
  /// Which job failures are worth retrying; empty means all of them.
  ExceptionPredicate retryable{};
};

/// @brief The failure of an attempt that ran longer than `FaultTolerantOptions::attempt_timeout`:
/// its stop token was signalled at the timeout, and whatever the attempt then returned or threw,
/// it failed with this exception. A `std::runtime_error`, so a job failure and retried like any
/// other unless `is_job_failure` or `retryable` say otherwise.
class TimeoutError : public std::runtime_error {
 public:
  /// `what()` names the dataset, the attempt (0-based) and the timeout; `cause`, if not empty, is
  /// what the attempt threw after its stop token was signalled.
  TimeoutError(std::string_view dataset, int attempt, std::chrono::nanoseconds timeout, std::string_view cause = {})
      : std::runtime_error(message(dataset, attempt, timeout, cause)), attempt_(attempt), timeout_(timeout) {}
  /// The attempt that timed out: 0 for the first, then 1, 2, ... (as `Retry::count`).
  [[nodiscard]] int attempt() const noexcept { return attempt_; }
  /// The timeout it exceeded.
  [[nodiscard]] std::chrono::nanoseconds timeout() const noexcept { return timeout_; }

 private:
  static std::string message(std::string_view dataset, int attempt, std::chrono::nanoseconds timeout,
                             std::string_view cause) {
    std::string text = "attempt " + std::to_string(attempt + 1) + " of " + std::string(dataset) +
                       " timed out after " + format_seconds(timeout);
    if (!cause.empty()) text += " (then: " + std::string(cause) + ")";
    return text;
  }
  static std::string format_seconds(std::chrono::nanoseconds duration) {
    char buffer[32];
    std::snprintf(buffer, sizeof buffer, "%gs", std::chrono::duration<double>(duration).count());
    return buffer;
  }
  int attempt_;
  std::chrono::nanoseconds timeout_;
};

/// @brief The user's job in the policy layer:
/// `process_dataset(dataset, tid, retry) -> bool`.
///
/// `tid` is `"{submit_count}/{total}"` (e.g. `"7/120"`), handy for log lines. Returning `true`
/// continues into the dataset's subtree; `false` skips the subtree without counting as a failure.
/// Throwing is a failure of the attempt (see `FaultTolerantOptions::is_job_failure`). Runs on a
/// worker thread, concurrently with other jobs, once per attempt.
using FaultTolerantJob = std::function<bool(std::string_view dataset, std::string_view tid, const Retry& retry)>;

/// @brief Uniform random numbers in `[0, 1]` for jitter. Called on worker threads, so it must be
/// thread-safe.
using RandomSource = std::function<double()>;

}  // namespace tasktree
