#pragma once
/// @file options.hpp
/// @brief `Options`: everything a `ParallelTaskTree` is configured with, and the callable types
/// it accepts (`ProcessDataset`, `IntervalNanos`).

#include <tasktree/clock.hpp>
#include <tasktree/completion.hpp>
#include <tasktree/dataset_trie.hpp>
#include <tasktree/executor.hpp>
#include <tasktree/journal.hpp>
#include <tasktree/log.hpp>
#include <tasktree/observer.hpp>
#include <tasktree/priority.hpp>
#include <tasktree/thread_pool.hpp>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace tasktree {

template <class Result>
class DatasetFunction;

/// @brief A callable that can be a `DatasetFunction<Result>`: `f(dataset, submit_count)` or
/// `f(dataset, submit_count, stop_token)` returning something convertible to `Result` (`F` may be
/// a reference type, as deduced for a forwarding reference).
template <class F, class Result>
concept DatasetFunctionOf =
    !std::same_as<std::remove_cvref_t<F>, DatasetFunction<Result>> &&
    (std::is_convertible_v<
         std::invoke_result_t<std::decay_t<F>&, std::string_view, std::int64_t, const std::stop_token&>, Result> ||
     std::is_convertible_v<std::invoke_result_t<std::decay_t<F>&, std::string_view, std::int64_t>, Result>);

/// @brief A job as the library stores it: `f(dataset, submit_count)` or
/// `f(dataset, submit_count, stop_token)` returning a `Result`, kept in the three-argument form.
///
/// `ProcessDataset` (the core's job) and `mpi::RemoteJob` (a job on a worker rank) are this
/// template; their documentation says what the job may do and when it runs.
template <class Result>
class DatasetFunction {
 public:
  /// No job.
  DatasetFunction() = default;

  /// Stores `function`, either form.
  template <DatasetFunctionOf<Result> F>
  DatasetFunction(F&& function) {  // NOLINT(google-explicit-constructor)
    using Fn = std::decay_t<F>;
    if constexpr (std::is_invocable_v<Fn&, std::string_view, std::int64_t, const std::stop_token&>) {
      function_ = [f = Fn(std::forward<F>(function))](std::string_view dataset, std::int64_t submit_count,
                                                      const std::stop_token& stop) mutable -> Result {
        return f(dataset, submit_count, stop);
      };
    } else {
      function_ = [f = Fn(std::forward<F>(function))](std::string_view dataset, std::int64_t submit_count,
                                                      const std::stop_token&) mutable -> Result {
        return f(dataset, submit_count);
      };
    }
  }

  /// True if a job is set.
  explicit operator bool() const noexcept { return static_cast<bool>(function_); }

  /// Runs the job.
  Result operator()(std::string_view dataset, std::int64_t submit_count, const std::stop_token& stop) const {
    return function_(dataset, submit_count, stop);
  }

 private:
  std::function<Result(std::string_view, std::int64_t, const std::stop_token&)> function_;
};

/// @brief The job: `process_dataset(dataset, submit_count)` or
/// `process_dataset(dataset, submit_count, stop_token)`, returning a `CompletionCallback` (or
/// anything convertible to one, such as a `CompletionCallbackResult`).
///
/// It runs on a worker thread, concurrently with other jobs, so it must be thread-safe.
/// `submit_count` is 1 for the first job submitted in a run, 2 for the second, and so on. The
/// three-argument form receives the run's stop token, which is signalled when the run stops
/// (caller's stop request, a callback's `InFlight::request_stop()`, or an exception elsewhere), so
/// long jobs can return early. An exception thrown by the job ends the run: it is rethrown to the
/// caller once all jobs in flight have returned.
///
/// @code
/// options.process_dataset = [](std::string_view dataset, std::int64_t /*submit_count*/, std::stop_token stop) {
///   while (!stop.stop_requested() && more_work(dataset)) step(dataset);
///   return tasktree::CompletionCallbackResult{.no_skip = !stop.stop_requested()};
/// };
/// @endcode
using ProcessDataset = DatasetFunction<CompletionCallback>;

/// @brief A callable that can be a job: see `ProcessDataset`.
template <class F>
concept DatasetJob = DatasetFunctionOf<F, CompletionCallback>;

/// @brief Pacing: `interval_nanos(last_update_nanos, dataset, submit_count)` returns the delay to
/// add to the earliest time of the *next* submission (negative counts as zero). Called on the
/// coordinator just before `dataset` is submitted; `last_update_nanos` is the earliest time this
/// submission was allowed, on the `Options::clock`.
using IntervalNanos =
    std::function<std::int64_t(std::int64_t last_update_nanos, std::string_view dataset, std::int64_t submit_count)>;

/// @brief The default `max_workers`: the number of hardware threads (at least 1).
[[nodiscard]] inline int default_max_workers() noexcept {
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

/// @brief Configuration of a `ParallelTaskTree`. Designed for designated initializers; only
/// `datasets` and `process_dataset` are required.
///
/// @code
/// tasktree::Options<> options{
///     .datasets = {"pool", "pool/home", "pool/home/alice"},
///     .process_dataset = [](std::string_view /*dataset*/, std::int64_t /*submit_count*/) {
///       return tasktree::CompletionCallbackResult{.no_skip = true, .fail = false};
///     },
///     .max_workers = 4,
/// };
/// @endcode
template <Executor E = DefaultExecutor>
struct Options {
  /// Job names, slash-separated, in any order (they are sorted internally; the order never
  /// changes the schedule). No duplicates, no empty components, no leading or trailing `/`.
  std::vector<std::string> datasets{};
  /// The job, run once per dataset on a worker; see `ProcessDataset`.
  ProcessDataset process_dataset{};
  /// Which available job starts first; default: name order. See `Priority`.
  Priority priority{};
  /// At most this many jobs in flight at once; must be at least 1.
  int max_workers = default_max_workers();
  /// Makes the executor for one run; called once at the start of every run, and the executor is
  /// destroyed at the end of it. Empty: `DefaultExecutor` (or `E{}` for other executor types).
  std::function<E()> executors{};
  /// Pacing between submissions; empty means none (and the clock is never read).
  IntervalNanos interval_nanos{};
  /// Requests termination of every run of this tree (see also the per-run overload of
  /// `process_datasets_in_parallel`).
  std::stop_token stop_token{};
  /// Barrier algorithm: empty means on exactly when some dataset has the barrier component; `true`
  /// forces it on (same results on barrier-free input); `false` is an error if some dataset has a
  /// barrier component.
  std::optional<bool> enable_barriers{};
  /// The component that marks a barrier; non-empty, without `/`.
  std::string barrier_name{default_barrier_name};
  /// Time source for pacing; null means `SteadyClock`.
  std::shared_ptr<Clock> clock{};
  /// Logging hook; silent by default.
  Logger log{};
  /// Observer hooks (submit, completion with elapsed time, skipped subtrees, run end); null means
  /// none, and then jobs are not timed.
  std::shared_ptr<RunObserver> observer{};
  /// Keeps the coordinator role on the calling thread: every completion callback, `priority` call,
  /// observer hook and log message of the run then happens on the thread that called
  /// `process_datasets_in_parallel()`, for callers whose callbacks need thread affinity. Workers
  /// only run jobs, and each job costs two thread hand-offs (worker to calling thread and back),
  /// which shows with short jobs, most on a busy machine. `false` (the default): with an executor
  /// that `lets_jobs_coordinate()`, such as the default thread pool, the thread of a job that has
  /// just finished takes the role (docs/semantics.md §2); calls still never overlap.
  bool callbacks_on_calling_thread = false;
  /// Records each processed completion in this journal and, with `JournalOptions::resume`,
  /// resumes what an earlier run recorded as succeeded (docs/journal.md); null: none. A journal
  /// serves one run at a time.
  std::shared_ptr<Journal> journal{};
};

}  // namespace tasktree
