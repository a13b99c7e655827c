#pragma once
/// @file observer.hpp
/// @brief Run statistics and observer hooks: what a progress line, a metrics exporter or a trace
/// file needs to follow a run.

#include <tasktree/completion.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace tasktree {

/// @brief Counts of what happened to the datasets of one run. At the end of every run, whatever
/// happened, `started + skipped + cancelled == total`.
struct RunStats {
  /// Datasets in the tree.
  std::size_t total = 0;
  /// Jobs whose `process_dataset` was called.
  std::size_t started = 0;
  /// Started jobs whose completion callback ran (the others were cut off by a stop or an error).
  std::size_t completed = 0;
  /// Completed jobs whose callback said `fail = false`.
  std::size_t succeeded = 0;
  /// Completed jobs whose callback said `fail = true`.
  std::size_t failed = 0;
  /// Jobs that never started because an ancestor job, or a job in the subtree a barrier waits
  /// for, completed with `no_skip = false`.
  std::size_t skipped = 0;
  /// Jobs that never started because the run stopped first (stop request, `InFlight::request_stop`,
  /// or an exception), including jobs submitted but not yet started at that moment.
  std::size_t cancelled = 0;
  /// Datasets not run because the journal showed they had succeeded before (`Options::journal`
  /// with `JournalOptions::resume`). After every run, `started + skipped + cancelled + resumed ==
  /// total`.
  std::size_t resumed = 0;

  friend bool operator==(const RunStats&, const RunStats&) = default;
};

/// @brief Hooks called during a run, all by the coordinator, one at a time, in the order events
/// happen (on whichever thread holds the coordinator role: see `Options::callbacks_on_calling_thread`).
/// Override what you need; the defaults do nothing. An exception thrown by a hook ends the run like
/// any other error (drained, then rethrown).
///
/// @code
/// struct Progress : tasktree::RunObserver {
///   void on_complete(std::string_view dataset, std::chrono::nanoseconds took,
///                    tasktree::CompletionCallbackResult) override {
///     fmt::print("{} took {}\n", dataset, took);
///   }
/// };
/// options.observer = std::make_shared<Progress>();
/// @endcode
class RunObserver {
 public:
  virtual ~RunObserver() = default;
  /// The run begins; `total` datasets.
  virtual void on_start(std::size_t /*total*/) {}
  /// `dataset` is handed to the executor as submission number `submit_count`.
  virtual void on_submit(std::string_view /*dataset*/, std::int64_t /*submit_count*/) {}
  /// The completion callback of `dataset` returned `result`; the job itself ran for `elapsed`
  /// (measured on the worker with `Options::clock`).
  virtual void on_complete(std::string_view /*dataset*/, std::chrono::nanoseconds /*elapsed*/,
                           CompletionCallbackResult /*result*/) {}
  /// The `jobs` jobs below `path` will never start: `path` is a job that completed with
  /// `no_skip = false`, or a barrier (`X/~`) that can no longer open.
  virtual void on_skip(std::string_view /*path*/, std::size_t /*jobs*/) {}
  /// `dataset` became available and was completed without running, with `no_skip = true`: the
  /// run's journal showed it had succeeded before (`Options::journal`).
  virtual void on_resume(std::string_view /*dataset*/) {}
  /// The run ended (normally, stopped, or about to rethrow an exception) with these counts.
  virtual void on_finish(const RunStats& /*stats*/) {}

 protected:
  RunObserver() = default;
  /// Observers may be copied by the classes derived from this one.
  RunObserver(const RunObserver&) = default;
  /// Observers may be copied by the classes derived from this one.
  RunObserver& operator=(const RunObserver&) = default;
};

}  // namespace tasktree
