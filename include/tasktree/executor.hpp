#pragma once
/// @file executor.hpp
/// @brief Where jobs run: the `Job` handle, the `Executor` concept, and `SynchronousExecutor`.
/// The library's thread pool and default executor are in thread_pool.hpp (included at the end).

#include <concepts>
#include <cstdint>

namespace tasktree {

namespace detail {
struct JobAccess;
}  // namespace detail

/// @brief One unit of work handed to an executor: call it exactly once, on any thread.
///
/// A `Job` is two pointers and an index, trivially copyable, and never throws when called: the
/// library catches whatever the user's job throws and reports it to the coordinator. Calling it
/// runs the user's `process_dataset` (unless the run was stopped before the job started, in which
/// case the job is skipped) and then hands the outcome back to the coordinator.
class Job {
 public:
  /// What a job calls: the library's entry point, with the run's context and the job's slot.
  using Function = void (*)(void* context, std::uint32_t slot) noexcept;

  Job() = default;
  /// A job that calls `function(context, slot)`; the coordinator makes these, executors only pass them on.
  Job(Function function, void* context, std::uint32_t slot) noexcept
      : function_(function), context_(context), slot_(slot) {}

  /// Runs the job. Call exactly once per submitted job.
  void operator()() const noexcept { function_(context_, slot_); }

 private:
  friend struct detail::JobAccess;
  Function function_ = nullptr;
  void* context_ = nullptr;
  std::uint32_t slot_ = 0;
};

/// @brief Anything that can run jobs: `executor.submit(job)` arranges for `job()` to be called
/// exactly once, now or later, on this thread or another.
///
/// `submit` may throw (the run then stops and rethrows), but only if it did not take the job.
/// A job that was taken must eventually be called, even while the executor is being destroyed:
/// the coordinator waits for every submitted job before a run returns.
///
/// What the library notices when an executor breaks this: a job called a second time (before the
/// executor is destroyed) runs nothing and ends the run with a `std::logic_error` that says so; a
/// `submit` that called the job and then threw is treated as having taken it (the job is counted
/// and reported). A job that is never called cannot be told from a slow one: the run waits for it
/// forever. A call after the executor was destroyed is undefined behaviour.
///
/// Adapting an existing pool takes a few lines:
/// @code
/// struct MyPoolExecutor {
///   my::ThreadPool* pool;
///   void submit(tasktree::Job job) { pool->post([job] { job(); }); }
/// };
/// @endcode
///
/// Two optional members, detected by the scheduler with `requires`, let an executor opt into the
/// fast paths the library's own executors use; an executor without them gets the plain behaviour:
/// - `bool runs_jobs_inline() const`: true if every job runs inside `submit`, on the thread that
///   called it. The scheduler then hands the outcome back without the cross-thread completion queue.
/// - `bool lets_jobs_coordinate() const`: true if `submit` may be called from inside a job this
///   executor is running, on that job's thread (one call at a time: the scheduler orders them).
///   Then the thread of a job that has just finished takes the coordinator role when nobody holds
///   it (docs/semantics.md §2): it runs the completion callbacks, submits what became available
///   and runs the next job itself, instead of handing the job to the calling thread and back. Its
///   callbacks and hooks then run on the executor's threads, one at a time; the calling thread
///   waits, blocked, for the end of the run. `Options::callbacks_on_calling_thread` and pacing
///   (`Options::interval_nanos`) keep the role on the calling thread whatever this says.
///
/// A third, for the library's MPI scale-out: `bool lets_jobs_defer() const`: true if the jobs'
/// `process_dataset` may call `detail::defer_job()` and so end after it returned, without holding
/// a thread meanwhile.
template <class E>
concept Executor = requires(E& executor, Job job) {
  executor.submit(job);
};

namespace detail {
/// The parts of a `Job`, for the library's own executors.
struct JobAccess {
  static Job::Function function(const Job& job) noexcept { return job.function_; }
  static void* context(const Job& job) noexcept { return job.context_; }
  static std::uint32_t slot(const Job& job) noexcept { return job.slot_; }
};

/// `executor.runs_jobs_inline()` if the executor has it, else false.
template <class E>
[[nodiscard]] constexpr bool runs_jobs_inline(const E& executor) noexcept {
  if constexpr (requires {
                  { executor.runs_jobs_inline() } -> std::convertible_to<bool>;
                }) {
    return static_cast<bool>(executor.runs_jobs_inline());
  } else {
    return false;
  }
}

/// `executor.lets_jobs_coordinate()` if the executor has it, else false.
template <class E>
[[nodiscard]] constexpr bool lets_jobs_coordinate(const E& executor) noexcept {
  if constexpr (requires {
                  { executor.lets_jobs_coordinate() } -> std::convertible_to<bool>;
                }) {
    return static_cast<bool>(executor.lets_jobs_coordinate());
  } else {
    return false;
  }
}
/// `executor.lets_jobs_defer()` if the executor has it, else false.
template <class E>
[[nodiscard]] constexpr bool lets_jobs_defer(const E& executor) noexcept {
  if constexpr (requires {
                  { executor.lets_jobs_defer() } -> std::convertible_to<bool>;
                }) {
    return static_cast<bool>(executor.lets_jobs_defer());
  } else {
    return false;
  }
}
}  // namespace detail

/// @brief Runs each job inline, inside `submit`, on the calling thread. Deterministic; used
/// by default when nothing could run in parallel anyway.
class SynchronousExecutor {
 public:
  /// Runs `job` at once, on the calling thread, and returns when it has finished.
  void submit(Job job) const noexcept { job(); }
  /// Every job runs inside `submit` (see `Executor`).
  [[nodiscard]] static constexpr bool runs_jobs_inline() noexcept { return true; }
};

static_assert(Executor<SynchronousExecutor>);

}  // namespace tasktree

// `ThreadPoolExecutor` and `DefaultExecutor` were declared in this header until they got their own:
// code that includes only executor.hpp keeps compiling.
#include <tasktree/thread_pool.hpp>
