#pragma once
/// @file detail/fault_tolerant_run.hpp
/// @brief One run of the policy layer: the core job that wraps the user's job in the retry loop,
/// the completion callback that applies `SkipOnError`, and the decision, once the core run has
/// ended, about what the call returns or rethrows. Also the definitions of
/// `process_datasets_in_parallel_and_fault_tolerant()`.

#include <tasktree/clock.hpp>
#include <tasktree/completion.hpp>
#include <tasktree/detail/coordinator.hpp>
#include <tasktree/detail/retry_loop.hpp>
#include <tasktree/log.hpp>
#include <tasktree/options.hpp>
#include <tasktree/parallel_task_tree.hpp>
#include <tasktree/policy.hpp>

#include <fmt/format.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
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

/// What the coordinator side of the policy reads: references into the options of the call.
struct PolicyConfig {
  SkipOnError skip_on_error;
  const std::function<bool(std::string_view)>& skip_tree_on_error;
  const std::function<void()>& termination_handler;
  const std::function<void(const std::exception_ptr&, std::string_view, std::string_view)>& append_exception;
  std::string_view task_name;
  bool dry_run;
  const Logger& log;
};

/// The per-run state of the policy layer. Workers call `execute`; everything else runs on the
/// coordinator (completion callbacks, `finish`).
class FaultTolerantRun {
 public:
  FaultTolerantRun(const FaultTolerantJob& job, const RetryPolicy& retry_policy,
                   const ExceptionPredicate& is_job_failure, const RandomSource& random, Clock& clock,
                   const PolicyConfig& config)
      : retry_{job, retry_policy, is_job_failure, random, clock, retries_, recovered_},
        clock_(clock),
        config_(config) {}

  FaultTolerantRun(const FaultTolerantRun&) = delete;
  FaultTolerantRun& operator=(const FaultTolerantRun&) = delete;

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
    for (const JobFailure& failure : cut_off) log_failure(failure, "failed while the run was stopping");
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
    bool processed = false;  // its completion callback ran
  };

  /// What a job's completion callback carries from the worker to the coordinator.
  struct Outcome {
    std::string_view dataset;
    std::int64_t submit_count = 0;
    std::int64_t elapsed_nanos = 0;
    std::size_t failure = no_failure;  // index into `failures_`
    bool no_skip = false;
  };

  /// The completion callback: applies `skip_on_error` to a failure.
  CompletionCallbackResult complete(InFlight& in_flight, const Outcome& outcome) {
    if (config_.log.enabled(LogLevel::debug)) {
      config_.log.log(LogLevel::debug, "{} done: {} took {}", prefix(outcome.submit_count), outcome.dataset,
                      format_duration(std::chrono::nanoseconds(outcome.elapsed_nanos)));
    }
    if (outcome.failure == no_failure) return CompletionCallbackResult{.no_skip = outcome.no_skip, .fail = false};
    JobFailure failure;
    {
      std::lock_guard lock(failures_mutex_);
      failures_[outcome.failure].processed = true;
      failure = failures_[outcome.failure];
    }
    log_failure(failure, "failed");
    if (config_.skip_on_error == SkipOnError::fail || in_flight.stop_requested()) {
      in_flight.request_stop();
      if (!fail_error_) fail_error_ = failure.error;
      call_termination_handler();
      return CompletionCallbackResult{.no_skip = false, .fail = true};  // rethrown by `finish`
    }
    if (config_.append_exception) config_.append_exception(failure.error, config_.task_name, failure.dataset);
    const bool skip_tree = config_.skip_on_error == SkipOnError::tree ||
                           (config_.skip_tree_on_error && config_.skip_tree_on_error(failure.dataset));
    return CompletionCallbackResult{.no_skip = !skip_tree, .fail = true};
  }

  void call_termination_handler() {
    if (termination_handled_) return;
    termination_handled_ = true;
    if (config_.termination_handler) config_.termination_handler();
  }

  /// `"[Dry ]{tid}[ {task_name}]"`.
  [[nodiscard]] std::string prefix(std::int64_t submit_count) const {
    return fmt::format("{}{}/{}{}{}", config_.dry_run ? dry_run_marker : std::string_view(), submit_count, total_,
                       config_.task_name.empty() ? "" : " ", config_.task_name);
  }

  void log_failure(const JobFailure& failure, std::string_view what) const {
    if (!config_.log.enabled(LogLevel::error)) return;
    const std::string attempts =
        failure.retries > 0 ? fmt::format(" ({} attempts)", std::int64_t{failure.retries} + 1) : std::string();
    config_.log.log(LogLevel::error, "{} {}: {}{}: {}", prefix(failure.submit_count), what, failure.dataset, attempts,
                    describe(failure.error));
  }

  // Worker side.
  std::atomic<std::size_t> retries_{0};
  std::atomic<std::size_t> recovered_{0};
  RetryContext retry_;
  Clock& clock_;
  std::size_t total_ = 0;
  std::mutex failures_mutex_;
  std::vector<JobFailure> failures_;  // guarded by `failures_mutex_`

  // Coordinator side.
  const PolicyConfig& config_;
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
  if (!options.clock) options.clock = std::make_shared<SteadyClock>();
  const detail::PolicyConfig config{
      .skip_on_error = options.skip_on_error,
      .skip_tree_on_error = options.skip_tree_on_error,
      .termination_handler = options.termination_handler,
      .append_exception = options.append_exception,
      .task_name = options.task_name,
      .dry_run = options.dry_run,
      .log = options.log,
  };
  detail::FaultTolerantRun run(options.process_dataset, options.retry_policy, options.is_job_failure, options.random,
                               *options.clock, config);
  ParallelTaskTree<E> tree(Options<E>{
      .datasets = std::move(options.datasets),
      .process_dataset = [&run](std::string_view dataset, std::int64_t submit_count,
                                const std::stop_token& stop) { return run.execute(dataset, submit_count, stop); },
      .priority = std::move(options.priority),
      .max_workers = options.max_workers,
      .executors = std::move(options.executors),
      .interval_nanos = std::move(options.interval_nanos),
      .stop_token = options.stop_token,
      .enable_barriers = options.enable_barriers,
      .barrier_name = std::move(options.barrier_name),
      .clock = options.clock,
      .log = options.log,
      .observer = std::move(options.observer),
  });
  run.set_total(tree.datasets().size());
  bool failed = false;
  std::exception_ptr error;
  try {
    failed = tree.process_datasets_in_parallel();
  } catch (...) {
    error = std::current_exception();
  }
  return run.finish(failed, error, tree.last_run_stats(), stats);
}

}  // namespace tasktree
