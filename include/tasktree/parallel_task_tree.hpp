#pragma once
/// @file parallel_task_tree.hpp
/// @brief `ParallelTaskTree`: runs a job per dataset, parents before children, in parallel.

#include <tasktree/clock.hpp>
#include <tasktree/completion.hpp>
#include <tasktree/dataset_trie.hpp>
#include <tasktree/detail/barrier_enqueue.hpp>
#include <tasktree/detail/coordinator.hpp>
#include <tasktree/detail/ready_queue.hpp>
#include <tasktree/detail/simple_enqueue.hpp>
#include <tasktree/detail/sort_names.hpp>
#include <tasktree/executor.hpp>
#include <tasktree/observer.hpp>
#include <tasktree/options.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <concepts>
#include <cstddef>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <utility>

namespace tasktree {

/// @brief Runs `process_dataset` once per dataset, in parallel, so that each job starts only
/// after the jobs above it on its path have completed successfully.
///
/// Construction validates the options and builds the dataset trie; nothing runs until
/// `process_datasets_in_parallel()`, which can be called many times (each run starts fresh, with
/// a fresh executor), but not while a run of the same tree is in progress. The *coordinator*
/// owns all scheduling state, runs every completion callback, and calls `priority`,
/// `interval_nanos`, the observer and the log sink, one call at a time; jobs run on the executor.
/// The coordinator is a role, not a thread: with the default thread pool, the worker whose job
/// just finished usually holds it, runs the callbacks and the next job itself, while the calling
/// thread sleeps until the run ends (`Options::callbacks_on_calling_thread` keeps it on the
/// calling thread). The call returns on the calling thread.
///
/// Scheduling, in brief:
/// - **parent before child**: a job becomes available when its nearest ancestor job completed
///   with `no_skip = true` (intermediate path components without a job pass straight through);
/// - **barriers**: jobs below `X/~` wait until everything else below `X` has completed with
///   `no_skip = true`;
/// - **priority**: the smallest available job (by `priority`, then name) is submitted next, and
///   never more than `max_workers` are in flight;
/// - **skip and fail**: a completion's `no_skip = false` skips the job's subtree, `fail = true`
///   makes the run return `true`;
/// - **pacing, termination, errors**: see `Options::interval_nanos`, `Options::stop_token` and
///   `process_datasets_in_parallel()`.
///
/// @code
/// tasktree::ParallelTaskTree tree({
///     .datasets = {"a", "a/b", "a/b/c", "a/d", "e"},
///     .process_dataset = [](std::string_view dataset, std::int64_t /*submit_count*/) {
///       fmt::print("{}\n", dataset);
///       return tasktree::CompletionCallback([](tasktree::InFlight&) {
///         return tasktree::CompletionCallbackResult{.no_skip = true, .fail = false};
///       });
///     },
///     .max_workers = 2,
/// });
/// bool failed = tree.process_datasets_in_parallel();
/// @endcode
///
/// @tparam E the executor type (see `Executor`); `DefaultExecutor` picks a thread pool or inline
/// execution per run.
template <Executor E = DefaultExecutor>
class ParallelTaskTree {
 public:
  /// The executor type `E`.
  using executor_type = E;
  /// The options type this tree is built from.
  using options_type = Options<E>;

  /// Validates `options` and builds the dataset trie.
  ///
  /// @throws std::invalid_argument with a message naming the offending value: an empty dataset
  /// name, one starting or ending with `/`, an empty component, a duplicate, a dataset whose last
  /// component is the barrier name; `max_workers < 1`; an empty `barrier_name` or one containing
  /// `/`; `enable_barriers == false` while a dataset has a barrier component; no `process_dataset`;
  /// no `executors` factory for an executor type that cannot be default-constructed.
  explicit ParallelTaskTree(Options<E> options) : options_(std::move(options)) {
    if (options_.max_workers < 1) {
      throw std::invalid_argument(
          fmt::format("tasktree: invalid max_workers {}: it must be at least 1", options_.max_workers));
    }
    if (!options_.process_dataset) throw std::invalid_argument("tasktree: process_dataset is not set");
    if (!options_.executors && !std::default_initializable<E>) {
      throw std::invalid_argument("tasktree: executors is not set and the executor type has no default constructor");
    }
    std::vector<std::string>& datasets = options_.datasets;
    // Sorted input (the usual case) is validated and built in one walk over the names; the walk
    // notices when the names are out of order, and then they are sorted and built again.
    if (std::optional<DatasetTrie> sorted = DatasetTrie::build_if_sorted(datasets, options_.barrier_name)) {
      trie_ = std::move(*sorted);
    } else {
      detail::sort_names(datasets);
      trie_ = DatasetTrie(datasets, options_.barrier_name);
    }
    if (options_.enable_barriers == false && trie_.has_barriers()) {
      const auto offending = std::find_if(datasets.begin(), datasets.end(), [&](const std::string& name) {
        return has_component(name, options_.barrier_name);
      });
      throw std::invalid_argument(
          fmt::format("tasktree: enable_barriers is false but dataset {:?} contains the barrier component {:?}",
                      *offending, options_.barrier_name));
    }
    barriers_ = trie_.has_barriers() || options_.enable_barriers.value_or(false);
    parallel_ = options_.max_workers > 1 && trie_.has_siblings();
    if (!options_.clock) {
      options_.clock = std::make_shared<SteadyClock>();
      own_steady_clock_ = true;
    }
  }

  /// Takes over another tree's options and trie; the moved-from tree may only be destroyed or assigned to.
  ParallelTaskTree(ParallelTaskTree&&) noexcept = default;
  /// Takes over another tree's options and trie; the moved-from tree may only be destroyed or assigned to.
  ParallelTaskTree& operator=(ParallelTaskTree&&) noexcept = default;
  ParallelTaskTree(const ParallelTaskTree&) = delete;
  ParallelTaskTree& operator=(const ParallelTaskTree&) = delete;
  ~ParallelTaskTree() = default;

  /// Runs every job; stops early if `Options::stop_token` is signalled.
  ///
  /// @returns true if any completion callback said `fail`, or if the run was stopped while a job
  /// was still available or in flight; false otherwise.
  /// @throws whatever `process_dataset`, a completion callback, `priority`, `interval_nanos`, the
  /// clock, the executor factory or the executor threw first. Before rethrowing, the run stops
  /// submitting, signals the stop token of the jobs in flight and waits until every one of them
  /// has returned; no thread of the run is left running. The tree stays usable.
  /// @throws std::logic_error, changing nothing, if a run of this tree is already in progress
  /// (a call from one of its callbacks, or from another thread).
  bool process_datasets_in_parallel() { return run(std::stop_token()); }

  /// As above, with a stop token for this run only (the options' token is honoured as well).
  bool process_datasets_in_parallel(std::stop_token stop) { return run(std::move(stop)); }

  /// The dataset trie (node indices are stable for the lifetime of the tree).
  [[nodiscard]] const DatasetTrie& trie() const noexcept { return trie_; }
  /// The dataset names in sorted order (a job's index in this list is its default priority).
  [[nodiscard]] std::span<const std::string> datasets() const noexcept { return options_.datasets; }
  /// True if the barrier algorithm is used.
  [[nodiscard]] bool barriers_enabled() const noexcept { return barriers_; }
  /// True if the default executor would run jobs on a thread pool (`max_workers > 1` and some
  /// trie node has two or more children).
  [[nodiscard]] bool default_executor_is_parallel() const noexcept { return parallel_; }
  /// What happened to the datasets in the most recent run (final even if it threw); all zero
  /// before the first run.
  [[nodiscard]] const RunStats& last_run_stats() const noexcept { return stats_; }
  /// The options, with `datasets` sorted and `clock` filled in.
  [[nodiscard]] const Options<E>& options() const noexcept { return options_; }

 private:
  static bool has_component(std::string_view name, std::string_view component) {
    std::size_t start = 0;
    while (true) {
      const std::size_t slash = name.find(component_separator, start);
      if (name.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start) == component) {
        return true;
      }
      if (slash == std::string_view::npos) return false;
      start = slash + 1;
    }
  }

  E make_executor() const {
    if (options_.executors) return options_.executors();
    if constexpr (std::same_as<E, DefaultExecutor>) {
      // Never more threads than jobs can be in flight at once (docs/semantics.md §4.11).
      const std::size_t threads = std::min(static_cast<std::size_t>(options_.max_workers), trie_.dataset_count());
      return DefaultExecutor(threads, parallel_);
    } else if constexpr (std::default_initializable<E>) {
      return E{};
    } else {
      throw std::logic_error("tasktree: no executor factory");  // rejected by the constructor
    }
  }

  /// Marks a run in progress, so that another call throws; movable, and a moved-to flag is clear.
  class RunningFlag {
   public:
    RunningFlag() = default;
    RunningFlag(RunningFlag&&) noexcept {}
    RunningFlag& operator=(RunningFlag&&) noexcept { return *this; }
    RunningFlag(const RunningFlag&) = delete;
    RunningFlag& operator=(const RunningFlag&) = delete;
    ~RunningFlag() = default;
    /// Sets the flag; throws if it was set.
    void enter() {
      if (running_.exchange(true, std::memory_order_acq_rel)) {
        throw std::logic_error(
            "tasktree: process_datasets_in_parallel was called while a run of the same ParallelTaskTree is in "
            "progress (from one of its callbacks or from another thread); runs of one tree do not overlap");
      }
    }
    void leave() noexcept { running_.store(false, std::memory_order_release); }

   private:
    std::atomic<bool> running_{false};
  };

  bool run(std::stop_token stop) {
    running_.enter();
    struct Leave {
      RunningFlag& flag;
      ~Leave() { flag.leave(); }
    } leave{running_};
    const detail::RunConfig config{
        .trie = trie_,
        .process_dataset = options_.process_dataset,
        .interval_nanos = options_.interval_nanos,
        .clock = *options_.clock,
        .clock_is_steady = own_steady_clock_,
        .log = options_.log,
        .observer = options_.observer.get(),
        .max_workers = static_cast<std::size_t>(options_.max_workers),
        .callbacks_on_calling_thread = options_.callbacks_on_calling_thread,
        .barrier_name = options_.barrier_name,
        .journal = options_.journal.get(),
    };
    if (options_.priority.is_name_order()) {
      detail::IndexReadyQueue ready(trie_);
      return run_with(config, ready, std::move(stop));
    }
    detail::ErasedReadyQueue ready(options_.priority.make_queue());
    return run_with(config, ready, std::move(stop));
  }

  template <class Queue>
  bool run_with(const detail::RunConfig& config, Queue& ready, std::stop_token stop) {
    ready.reserve(trie_.dataset_count());
    auto make = [this] { return make_executor(); };
    if (barriers_) {
      detail::BarrierEnqueue algorithm(trie_);
      detail::Coordinator<Queue, detail::BarrierEnqueue> coordinator(config, ready, algorithm);
      return coordinator.run(make, options_.stop_token, std::move(stop), stats_);
    }
    detail::SimpleEnqueue algorithm(trie_);
    detail::Coordinator<Queue, detail::SimpleEnqueue> coordinator(config, ready, algorithm);
    return coordinator.run(make, options_.stop_token, std::move(stop), stats_);
  }

  Options<E> options_;
  bool own_steady_clock_ = false;  // `options_.clock` was empty: the tree made the steady clock
  DatasetTrie trie_;
  RunStats stats_;
  RunningFlag running_;
  bool barriers_ = false;
  bool parallel_ = false;
};

}  // namespace tasktree
