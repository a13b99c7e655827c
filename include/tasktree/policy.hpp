#pragma once
/// @file policy.hpp
/// @brief The fault-tolerant policy layer: `process_datasets_in_parallel_and_fault_tolerant()`
/// runs a job per dataset like `ParallelTaskTree`, and adds what most callers want on top of the
/// core: retries with exponential backoff and jitter, a choice of what a failure does to the run
/// (`SkipOnError`), logging, and run statistics.
///
/// The core stays policy-free; this header only builds a `ParallelTaskTree` whose jobs run the
/// retry loop and whose completion callbacks apply the policy. docs/policy.md has the precise
/// semantics.

#include <tasktree/clock.hpp>
#include <tasktree/completion.hpp>
#include <tasktree/executor.hpp>
#include <tasktree/log.hpp>
#include <tasktree/observer.hpp>
#include <tasktree/options.hpp>
#include <tasktree/parallel_task_tree.hpp>
#include <tasktree/priority.hpp>
#include <tasktree/retry.hpp>

#include <fmt/format.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

namespace tasktree {

/// @brief What a job failure does to the run once its retries are exhausted.
///
/// - `fail`: the run stops: in-flight jobs are asked to stop (`InFlight::request_stop()`),
///   `termination_handler` is called, and once the in-flight jobs have returned, the job's
///   exception is rethrown from the run, unchanged.
/// - `dataset`: the error is logged and passed to `append_exception`, the run is marked failed
///   (returns `true`), and the job's subtree continues unless `skip_tree_on_error(dataset)` says to
///   skip it.
/// - `tree`: as `dataset`, but the job's subtree is always skipped.
///
/// Whatever the mode, a failure that happens once a stop was requested is handled as `fail`.
enum class SkipOnError { fail, dataset, tree };

/// @brief Lower-case name of a mode: `"fail"`, `"dataset"` or `"tree"`.
[[nodiscard]] constexpr std::string_view to_string(SkipOnError mode) noexcept {
  switch (mode) {
    case SkipOnError::fail: return "fail";
    case SkipOnError::dataset: return "dataset";
    case SkipOnError::tree: return "tree";
  }
  return "unknown";
}

/// @brief Parses `"fail"`, `"dataset"` or `"tree"` (for command-line flags and config files).
/// @throws std::invalid_argument naming the value for anything else.
[[nodiscard]] inline SkipOnError parse_skip_on_error(std::string_view name) {
  for (const SkipOnError mode : {SkipOnError::fail, SkipOnError::dataset, SkipOnError::tree}) {
    if (name == to_string(mode)) return mode;
  }
  throw std::invalid_argument(
      fmt::format("tasktree: invalid skip_on_error {:?}: it must be \"fail\", \"dataset\" or \"tree\"", name));
}

/// @brief The prefix of every policy log message when `FaultTolerantOptions::dry_run` is set.
inline constexpr std::string_view dry_run_marker = "Dry ";

/// @brief Configuration of `process_datasets_in_parallel_and_fault_tolerant()`. Designed for
/// designated initializers; only `datasets` and `process_dataset` are required. The fields after
/// `dry_run` mean what they mean in `Options`.
///
/// @code
/// using namespace std::chrono_literals;
/// tasktree::FaultTolerantOptions<> options{
///     .datasets = {"pool", "pool/home", "pool/home/alice"},
///     .process_dataset = [](std::string_view dataset, std::string_view tid, const tasktree::Retry&) {
///       return replicate(dataset);
///     },
///     .skip_on_error = tasktree::SkipOnError::dataset,
///     .retry_policy = {.max_retries = 3, .initial_backoff = 100ms},
///     .task_name = "replicate",
///     .max_workers = 8,
///     .log = tasktree::stderr_logger(),
/// };
/// @endcode
template <Executor E = DefaultExecutor>
struct FaultTolerantOptions {
  /// Job names, slash-separated, in any order; see `Options::datasets`.
  std::vector<std::string> datasets{};
  /// The job; see `FaultTolerantJob`.
  FaultTolerantJob process_dataset{};
  /// What a failure does once its retries are exhausted; see `SkipOnError`.
  SkipOnError skip_on_error = SkipOnError::fail;
  /// In `SkipOnError::dataset` mode, called with a failed dataset: true skips its subtree. Empty
  /// means false. Called by the coordinator.
  std::function<bool(std::string_view dataset)> skip_tree_on_error{};
  /// How failed attempts are retried; see `RetryPolicy`. Default: no retries.
  RetryPolicy retry_policy{};
  /// Which exceptions are job failures (retried, then handled by `skip_on_error`); the others are
  /// fatal: never retried, they end the run and are rethrown once the in-flight jobs have returned.
  /// Empty means every `std::exception` is a job failure and anything else is fatal.
  ExceptionPredicate is_job_failure{};
  /// Called at most once per run, on the coordinator, for the first failure handled as
  /// `SkipOnError::fail` (in any mode once a stop was requested), right after the in-flight jobs
  /// were asked to stop: the place to kill subprocesses or cancel remote work. Not called for fatal
  /// errors, nor for a stop without failures.
  std::function<void()> termination_handler{};
  /// Called on the coordinator with each failure handled as `dataset` or `tree`, e.g. to collect
  /// the errors for a final report.
  std::function<void(const std::exception_ptr& error, std::string_view task_name, std::string_view dataset)>
      append_exception{};
  /// Names the work in log messages, e.g. `"replicate"`.
  std::string task_name{};
  /// Prefixes every log message of this layer with `dry_run_marker`.
  bool dry_run = false;
  /// The longest an attempt may run; zero (the default) means no limit. An attempt that runs
  /// longer has its `Retry::stop_token` signalled, and fails with a `TimeoutError` once it returns
  /// (retried like any job failure). The job must look at its stop token: in-process work cannot
  /// be killed. Must be at least 0. Timed on `clock`, by a thread of the run that exists only
  /// while attempts run; with a limit set, the calls to `log`'s sink are serialized with a mutex,
  /// since that thread logs too.
  std::chrono::nanoseconds attempt_timeout{0};
  /// With `attempt_timeout`: an attempt still running this long after its timeout, and again
  /// every `stall_interval` after that, is reported at error level as stalled, with its dataset,
  /// attempt and how long it has run. Must be positive.
  std::chrono::nanoseconds stall_interval = std::chrono::seconds(60);

  /// Which available job starts first; see `Options::priority`.
  Priority priority{};
  /// At most this many jobs in flight at once; must be at least 1.
  int max_workers = default_max_workers();
  /// Makes the executor for the run; see `Options::executors`.
  std::function<E()> executors{};
  /// Pacing between submissions; see `Options::interval_nanos`.
  IntervalNanos interval_nanos{};
  /// Requests termination of the run; see `Options::stop_token`.
  std::stop_token stop_token{};
  /// Barrier algorithm on, off or automatic; see `Options::enable_barriers`.
  std::optional<bool> enable_barriers{};
  /// The component that marks a barrier; see `Options::barrier_name`.
  std::string barrier_name{default_barrier_name};
  /// Time source for pacing, job durations and retry backoff; null means `SteadyClock`. With
  /// retries, `wait_until` is also called on worker threads.
  std::shared_ptr<Clock> clock{};
  /// Random numbers for jitter; empty means a per-thread `std::mt19937_64` seeded from
  /// `std::random_device`. See `RandomSource`.
  RandomSource random{};
  /// Logging hook: the run's debug messages, a line per job at debug level
  /// (`"{tid} {task_name} done: {dataset} took {duration}"`) and failures at error level.
  Logger log{};
  /// Observer hooks; see `RunObserver` and the mapping in `FaultTolerantStats`.
  std::shared_ptr<RunObserver> observer{};
  /// Keeps the coordinator role, and so every policy hook, on the calling thread; see
  /// `Options::callbacks_on_calling_thread`.
  bool callbacks_on_calling_thread = false;
  /// Records each processed completion, with its attempts and error text, and resumes what
  /// succeeded before; see `Options::journal`.
  std::shared_ptr<Journal> journal{};
};

/// @brief What happened in a run of the policy layer.
///
/// `run` is exactly what the core counted (and what `RunObserver::on_finish` saw), read with the
/// policy in mind:
/// - `started`: jobs attempted at least once;
/// - `completed`: started jobs whose outcome the policy processed; `succeeded` of them returned
///   (`true` or `false`, possibly after retries), `failed` of them failed after their retries, in
///   any `SkipOnError` mode, including the failure that ends the run in `fail` mode;
/// - `skipped`: never started because an ancestor returned `false`, or failed with its subtree
///   skipped (`tree` mode, `skip_tree_on_error`, or `fail` mode), or a barrier above them can no
///   longer open;
/// - `cancelled`: never started because the run stopped (stop request, `fail` mode, fatal error).
///
/// `started - completed` jobs were cut off: they ended while the run was stopping; those that
/// failed are counted in `failed_while_stopping`. `started + skipped + cancelled == total` holds
/// after every run, whatever happened.
struct FaultTolerantStats {
  /// The core's statistics of the run.
  RunStats run{};
  /// Attempts after the first, over all jobs.
  std::size_t retries = 0;
  /// Jobs that failed at least once and then returned normally.
  std::size_t recovered = 0;
  /// Jobs that failed (after retries) once the run was already stopping, or whose failure's handling
  /// was cut short by a hook that threw, so their failure was not (fully) processed by the policy:
  /// each was logged at error level once, and the first of them is rethrown if nothing else is (see
  /// docs/policy.md).
  std::size_t failed_while_stopping = 0;

  friend bool operator==(const FaultTolerantStats&, const FaultTolerantStats&) = default;
};

/// @brief A human-readable duration for log messages: `"0ns"`, `"999ns"`, `"1.5us"`, `"12.3ms"`,
/// `"59.9s"`, `"2m 5s"`, `"1h 2m"`, `"3d 4h"`.
///
/// Below a minute the value has at most one decimal, truncated (never rounded up into the next
/// unit) and left out when zero; from a minute on it shows two units, the second left out when
/// zero. Negative durations get a leading `-`.
[[nodiscard]] inline std::string format_duration(std::chrono::nanoseconds duration) {
  const std::int64_t count = duration.count();
  // The magnitude as unsigned, so that the most negative count has one too.
  const std::uint64_t n =
      count < 0 ? std::uint64_t{0} - static_cast<std::uint64_t>(count) : static_cast<std::uint64_t>(count);
  const std::string_view sign = count < 0 ? "-" : "";
  constexpr std::uint64_t us = 1'000;
  constexpr std::uint64_t ms = 1'000 * us;
  constexpr std::uint64_t s = 1'000 * ms;
  constexpr std::uint64_t min = 60 * s;
  constexpr std::uint64_t h = 60 * min;
  constexpr std::uint64_t d = 24 * h;
  const auto one_decimal = [&](std::uint64_t unit, std::string_view suffix) {
    const std::uint64_t tenths = n % unit / (unit / 10);
    return tenths == 0 ? fmt::format("{}{}{}", sign, n / unit, suffix)
                       : fmt::format("{}{}.{}{}", sign, n / unit, tenths, suffix);
  };
  const auto two_units = [&](std::uint64_t unit, std::string_view suffix, std::uint64_t small,
                             std::string_view small_suffix) {
    const std::uint64_t rest = n % unit / small;
    return rest == 0 ? fmt::format("{}{}{}", sign, n / unit, suffix)
                     : fmt::format("{}{}{} {}{}", sign, n / unit, suffix, rest, small_suffix);
  };
  if (n < us) return fmt::format("{}{}ns", sign, n);
  if (n < ms) return one_decimal(us, "us");
  if (n < s) return one_decimal(ms, "ms");
  if (n < min) return one_decimal(s, "s");
  if (n < h) return two_units(min, "m", s, "s");
  if (n < d) return two_units(h, "h", min, "m");
  return two_units(d, "d", h, "h");
}

/// @brief Runs `process_dataset` once per dataset (plus retries), in parallel, parents before
/// children, with the failure policy of `options`. The run's coordinator is a role, as in
/// `ParallelTaskTree`; the call returns on the calling thread.
/// `options` is taken by value: pass a temporary (or `std::move`) to avoid copying `datasets`.
///
/// @returns true if a failure was handled as `dataset` or `tree`, or the run was stopped with work
/// left; false if everything ran (jobs returning `false` are not failures).
/// @throws std::invalid_argument before anything runs if the options are invalid, naming the
/// value: anything `ParallelTaskTree` rejects, no `process_dataset`, an unknown `skip_on_error`,
/// `retry_policy.max_retries < 0`, a negative `initial_backoff` or `max_elapsed`,
/// `max_backoff < initial_backoff`, a `multiplier` below 1 or NaN.
/// @throws the job's original exception (same type, same message) when a failure is handled as
/// `fail`, and a fatal exception as is; in both cases only after every in-flight job has returned.
/// If several happen, a fatal error wins over a job failure, and among job failures the first
/// processed wins; the others are logged at error level.
///
/// @code
/// bool failed = tasktree::process_datasets_in_parallel_and_fault_tolerant({
///     .datasets = {"pool", "pool/home", "pool/home/alice"},
///     .process_dataset = [](std::string_view dataset, std::string_view tid, const tasktree::Retry& retry) {
///       return replicate(dataset, retry.stop_token);
///     },
///     .skip_on_error = tasktree::SkipOnError::dataset,
///     .retry_policy = {.max_retries = 2},
/// });
/// @endcode
template <Executor E = DefaultExecutor>
bool process_datasets_in_parallel_and_fault_tolerant(FaultTolerantOptions<E> options);

/// @brief As above, and fills `stats` with what happened: after the run, also when it throws
/// (left all zero if the options are rejected).
template <Executor E = DefaultExecutor>
bool process_datasets_in_parallel_and_fault_tolerant(FaultTolerantOptions<E> options, FaultTolerantStats& stats);

}  // namespace tasktree

// The definitions need the types above.
#include <tasktree/policy/fault_tolerant_run.hpp>
