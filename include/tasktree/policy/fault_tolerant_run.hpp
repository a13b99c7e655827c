#pragma once
/// @file policy/fault_tolerant_run.hpp
/// @brief One run of the policy layer: the core job that wraps the user's job in the retry loop,
/// the completion callback that applies `SkipOnError`, and the decision, once the core run has
/// ended, about what the call returns or rethrows. Also the definitions of
/// `process_datasets_in_parallel_and_fault_tolerant()`.

#include <tasktree/clock.hpp>
#include <tasktree/completion.hpp>
#include <tasktree/detail/error_text.hpp>
#include <tasktree/detail/option_fields.hpp>
#include <tasktree/log.hpp>
#include <tasktree/options.hpp>
#include <tasktree/parallel_task_tree.hpp>
#include <tasktree/policy.hpp>
#include <tasktree/policy/retry_loop.hpp>

#include <fmt/format.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tasktree::detail {

/// Rejects invalid policy options before anything runs (the core validates the rest).
inline void validate_policy(const FaultTolerantJob& process_dataset, SkipOnError skip_on_error,
                            const RetryPolicy& retry) {
  if (!process_dataset) throw std::invalid_argument("tasktree: process_dataset is not set");
  if (skip_on_error != SkipOnError::fail && skip_on_error != SkipOnError::dataset &&
      skip_on_error != SkipOnError::tree) {
    throw std::invalid_argument(fmt::format("tasktree: invalid skip_on_error {}: it must be fail, dataset or tree",
                                            static_cast<int>(skip_on_error)));
  }
  if (retry.max_retries < 0) {
    throw std::invalid_argument(
        fmt::format("tasktree: invalid retry_policy.max_retries {}: it must be at least 0", retry.max_retries));
  }
  if (retry.initial_backoff.count() < 0) {
    throw std::invalid_argument(fmt::format(
        "tasktree: invalid retry_policy.initial_backoff {}ns: it must be at least 0", retry.initial_backoff.count()));
  }
  if (retry.max_backoff < retry.initial_backoff) {
    throw std::invalid_argument(
        fmt::format("tasktree: invalid retry_policy.max_backoff {}ns: it must be at least initial_backoff ({}ns)",
                    retry.max_backoff.count(), retry.initial_backoff.count()));
  }
  if (!(retry.multiplier >= 1.0)) {  // also rejects NaN
    throw std::invalid_argument(
        fmt::format("tasktree: invalid retry_policy.multiplier {}: it must be at least 1", retry.multiplier));
  }
  if (retry.max_elapsed.count() < 0) {
    throw std::invalid_argument(fmt::format("tasktree: invalid retry_policy.max_elapsed {}ns: it must be at least 0",
                                            retry.max_elapsed.count()));
  }
}

/// Throws `std::invalid_argument` naming the value unless `attempt_timeout >= 0` and
/// `stall_interval > 0`.
inline void validate_attempt_timeout(std::chrono::nanoseconds attempt_timeout, std::chrono::nanoseconds stall_interval) {
  if (attempt_timeout.count() < 0) {
    throw std::invalid_argument(fmt::format("tasktree: invalid attempt_timeout {}ns: it must be at least 0 (0: none)",
                                            attempt_timeout.count()));
  }
  if (stall_interval.count() <= 0) {
    throw std::invalid_argument(
        fmt::format("tasktree: invalid stall_interval {}ns: it must be positive", stall_interval.count()));
  }
}

/// Makes `log`'s sink take a mutex around each call, for runs in which a thread other than the
/// coordinator logs (the attempt watchdog).
inline void serialize_sink(Logger& log) {
  if (!log.sink) return;
  auto mutex = std::make_shared<std::mutex>();
  log.sink = [mutex, sink = std::move(log.sink)](LogLevel level, std::string_view message) {
    std::lock_guard lock(*mutex);
    sink(level, message);
  };
}

/// The fields of `FaultTolerantOptions` that only the policy layer reads: `skip_on_error`,
/// `skip_tree_on_error`, `retry_policy`, `is_job_failure`, `termination_handler`,
/// `append_exception`, `task_name`, `dry_run`, `attempt_timeout`, `stall_interval`, `random`.
inline constexpr std::size_t policy_only_options = 11;

/// The per-run state of the policy layer. Workers call `execute`; everything else runs on the
/// coordinator (completion callbacks, `finish`). Reads the policy's own fields of `policy` (the
/// run options it shares with the core were moved into the core tree) and the core tree's log and
/// clock.
template <Executor E>
class FaultTolerantRun {
 public:
  FaultTolerantRun(const FaultTolerantOptions<E>& policy, const Options<E>& core)
      : retry_{policy.process_dataset,
               policy.retry_policy,
               policy.is_job_failure,
               policy.random,
               *core.clock,
               retries_,
               recovered_},
        clock_(*core.clock),
        policy_(policy),
        log_(core.log),
        journal_(core.journal.get()) {
    if (policy.attempt_timeout.count() > 0) {
      watchdog_.emplace(*core.clock, policy.attempt_timeout, policy.stall_interval, core.log, policy.task_name);
      retry_.watchdog = &*watchdog_;
    }
  }

  FaultTolerantRun(const FaultTolerantRun&) = delete;
  FaultTolerantRun& operator=(const FaultTolerantRun&) = delete;

  /// Ends the attempt watchdog's thread, if any; called once the core run returned (every job
  /// has), before the tree whose logger it uses goes away.
  void stop_watchdog() noexcept { watchdog_.reset(); }

  /// The number of datasets, for `tid`; set before the run starts.
  void set_total(std::size_t total) noexcept { total_ = total; }

  /// The core's job, on a worker: the retry loop around the user's job, timed on the clock. A
  /// failure is recorded before the callback is returned, so that it is reported even if the
  /// callback never runs (the run is stopping).
  CompletionCallback execute(std::string_view dataset, std::int64_t submit_count, const std::stop_token& stop) {
    char buffer[48];  // two int64s and a slash
    const auto tid_end = fmt::format_to_n(buffer, sizeof buffer, "{}/{}", submit_count, total_).out;
    const std::string_view tid(buffer, static_cast<std::size_t>(tid_end - buffer));
    const std::int64_t start = clock_.now_nanos();
    Attempts attempts = run_with_retries(retry_, dataset, submit_count, tid, stop, start);
    Outcome outcome{
        .dataset = dataset,
        .submit_count = submit_count,
        .elapsed_nanos = clock_.now_nanos() - start,
        .attempts = attempts.retries + 1,
        .no_skip = attempts.no_skip,
    };
    if (attempts.error) {
      std::lock_guard lock(failures_mutex_);
      outcome.failure = failures_.size();
      failures_.push_back(JobFailure{
          .dataset = dataset,
          .submit_count = submit_count,
          .error = std::move(attempts.error),
          .retries = attempts.retries,
      });
    }
    return CompletionCallback([this, outcome](InFlight& in_flight) { return complete(in_flight, outcome); });
  }

  /// After the core run returned `core_failed` or threw `core_error`: fills `stats`, reports the
  /// failures whose callbacks never ran, and returns or rethrows what the call should.
  bool finish(bool core_failed, const std::exception_ptr& core_error, const RunStats& run_stats,
              FaultTolerantStats& stats) {
    std::vector<JobFailure> cut_off;
    {
      std::lock_guard lock(failures_mutex_);  // the workers are done; the lock is for clarity
      for (const JobFailure& failure : failures_) {
        if (!failure.processed) cut_off.push_back(failure);
      }
    }
    stats = FaultTolerantStats{
        .run = run_stats,
        .retries = retries_.load(std::memory_order_relaxed),
        .recovered = recovered_.load(std::memory_order_relaxed),
        .failed_while_stopping = cut_off.size(),
    };
    for (const JobFailure& failure : cut_off) {
      if (!failure.logged) log_failure(failure, "failed while the run was stopping");
    }
    // A fatal error wins over a job failure; among job failures, the first processed wins.
    std::exception_ptr error = core_error ? core_error : fail_error_;
    if (!error && !cut_off.empty()) {
      // The caller's stop request was being served when these failed; a failure then behaves as in
      // `fail` mode (the in-flight jobs were already asked to stop, and have returned).
      error = cut_off.front().error;
      call_termination_handler();
    }
    if (error) std::rethrow_exception(error);
    return core_failed;
  }

 private:
  static constexpr std::size_t no_failure = std::numeric_limits<std::size_t>::max();

  /// A job that failed after its retries, as recorded by its worker.
  struct JobFailure {
    std::string_view dataset;
    std::int64_t submit_count = 0;
    std::exception_ptr error;
    int retries = 0;
    bool logged = false;     // its error-level line was written
    bool processed = false;  // its completion callback ran to the end (every hook returned)
  };

  /// What a job's completion callback carries from the worker to the coordinator.
  struct Outcome {
    std::string_view dataset;
    std::int64_t submit_count = 0;
    std::int64_t elapsed_nanos = 0;
    std::size_t failure = no_failure;  // index into `failures_`
    int attempts = 1;
    bool no_skip = false;
  };

  /// The completion callback: applies `skip_on_error` to a failure.
  CompletionCallbackResult complete(InFlight& in_flight, const Outcome& outcome) {
    if (log_.enabled(LogLevel::debug)) {
      log_.log(LogLevel::debug, "{} done: {} took {}", prefix(outcome.submit_count), outcome.dataset,
               format_duration(std::chrono::nanoseconds(outcome.elapsed_nanos)));
    }
    if (outcome.failure == no_failure) {
      if (journal_ != nullptr) journal_->annotate(outcome.attempts);
      return CompletionCallbackResult{.no_skip = outcome.no_skip, .fail = false};
    }
    JobFailure failure;
    {
      std::lock_guard lock(failures_mutex_);
      failure = failures_[outcome.failure];
    }
    if (journal_ != nullptr) journal_->annotate(outcome.attempts, describe(failure.error));
    // The failure counts as processed only once every hook below has returned: if one throws, the
    // run ends with that exception and the failure is counted in `failed_while_stopping`.
    if (policy_.skip_on_error == SkipOnError::fail || in_flight.stop_requested()) {
      log_failure(outcome.failure, failure);
      in_flight.request_stop();
      if (!fail_error_) fail_error_ = failure.error;
      call_termination_handler();
      mark_processed(outcome.failure);
      return CompletionCallbackResult{.no_skip = false, .fail = true};  // rethrown by `finish`
    }
    // The original's order: ask whether to skip the subtree, log, then collect the error.
    const bool skip_tree = policy_.skip_on_error == SkipOnError::tree ||
                           (policy_.skip_tree_on_error && policy_.skip_tree_on_error(failure.dataset));
    log_failure(outcome.failure, failure);
    if (policy_.append_exception) policy_.append_exception(failure.error, policy_.task_name, failure.dataset);
    mark_processed(outcome.failure);
    return CompletionCallbackResult{.no_skip = !skip_tree, .fail = true};
  }

  /// Logs the failure at error level, once: marked first, so that a sink that throws here is not
  /// asked again at the end of the run.
  void log_failure(std::size_t index, const JobFailure& failure) {
    {
      std::lock_guard lock(failures_mutex_);
      failures_[index].logged = true;
    }
    log_failure(failure, "failed");
  }

  void mark_processed(std::size_t index) {
    std::lock_guard lock(failures_mutex_);
    failures_[index].processed = true;
  }

  void call_termination_handler() {
    if (termination_handled_) return;
    termination_handled_ = true;
    if (policy_.termination_handler) policy_.termination_handler();
  }

  /// `"[Dry ]{tid}[ {task_name}]"`.
  [[nodiscard]] std::string prefix(std::int64_t submit_count) const {
    return fmt::format("{}{}/{}{}{}", policy_.dry_run ? dry_run_marker : std::string_view(), submit_count, total_,
                       policy_.task_name.empty() ? "" : " ", policy_.task_name);
  }

  void log_failure(const JobFailure& failure, std::string_view what) const {
    if (!log_.enabled(LogLevel::error)) return;
    const std::string attempts =
        failure.retries > 0 ? fmt::format(" ({} attempts)", std::int64_t{failure.retries} + 1) : std::string();
    // Where the last attempt ran, when that was elsewhere (e.g. "on rank 2 (host node7)").
    log_.log(LogLevel::error, "{} {}: {}{}: {}{}", prefix(failure.submit_count), what, failure.dataset, attempts,
             describe(failure.error), describe_place(failure.error));
  }

  // Worker side.
  std::atomic<std::size_t> retries_{0};
  std::atomic<std::size_t> recovered_{0};
  RetryContext retry_;
  Clock& clock_;
  std::size_t total_ = 0;
  std::mutex failures_mutex_;
  std::vector<JobFailure> failures_;  // guarded by `failures_mutex_`
  std::optional<AttemptWatchdog> watchdog_;  // with an attempt_timeout; its thread ends with the run

  // Coordinator side.
  const FaultTolerantOptions<E>& policy_;
  const Logger& log_;
  Journal* journal_;  // null: none; its records get the attempts and the error text
  std::exception_ptr fail_error_;  // the failure handled as `fail`, rethrown by `finish`
  bool termination_handled_ = false;
};

}  // namespace tasktree::detail

namespace tasktree {

template <Executor E>
bool process_datasets_in_parallel_and_fault_tolerant(FaultTolerantOptions<E> options) {
  FaultTolerantStats stats;
  return process_datasets_in_parallel_and_fault_tolerant<E>(std::move(options), stats);
}

template <Executor E>
bool process_datasets_in_parallel_and_fault_tolerant(FaultTolerantOptions<E> options, FaultTolerantStats& stats) {
  stats = FaultTolerantStats{};
  detail::validate_policy(options.process_dataset, options.skip_on_error, options.retry_policy);
  detail::validate_attempt_timeout(options.attempt_timeout, options.stall_interval);
  if (options.attempt_timeout.count() > 0) detail::serialize_sink(options.log);
  // The run's state exists once the tree does: it reads the log and the clock where the tree keeps
  // them. Jobs call it only during the run.
  std::optional<detail::FaultTolerantRun<E>> run;
  Options<E> core{
      .process_dataset = [&run](std::string_view dataset, std::int64_t submit_count, const std::stop_token& stop) {
        return run->execute(dataset, submit_count, stop);
      }};
  // Every core option but the job comes from the policy options; the others are the policy's own.
  static_assert(
      detail::field_count<Options<E>>() == detail::shared_option_count<Options<E>, FaultTolerantOptions<E>> + 1,
      "an option of Options is missing from FaultTolerantOptions or from detail::for_each_shared_option");
  static_assert(detail::field_count<FaultTolerantOptions<E>>() ==
                    detail::shared_option_count<Options<E>, FaultTolerantOptions<E>> + 1 + detail::policy_only_options,
                "a new option of FaultTolerantOptions: share it with Options (detail::for_each_shared_option) or "
                "read it in detail::FaultTolerantRun and count it in detail::policy_only_options");
  detail::carry_shared_options(std::move(options), core);
  ParallelTaskTree<E> tree(std::move(core));
  run.emplace(options, tree.options());
  run->set_total(tree.datasets().size());
  bool failed = false;
  std::exception_ptr error;
  try {
    failed = tree.process_datasets_in_parallel();
  } catch (...) {
    error = std::current_exception();
  }
  run->stop_watchdog();
  return run->finish(failed, error, tree.last_run_stats(), stats);
}

}  // namespace tasktree
