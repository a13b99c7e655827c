#pragma once
/// @file executor.hpp
/// @brief Where jobs run: the `Job` handle, the `Executor` concept, and `SynchronousExecutor`.
/// The library's thread pool and default executor are in thread_pool.hpp (included at the end).

#include <concepts>
#include <cstdint>

namespace tasktree {

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
/// Adapting an existing pool takes a few lines:
/// @code
/// struct MyPoolExecutor {
///   my::ThreadPool* pool;
///   void submit(tasktree::Job job) { pool->post([job] { job(); }); }
/// };
/// @endcode
template <class E>
concept Executor = requires(E& executor, Job job) {
  executor.submit(job);
};

/// @brief Runs each job inline, inside `submit`, on the coordinator thread. Deterministic; used
/// by default when nothing could run in parallel anyway.
class SynchronousExecutor {
 public:
  /// Runs `job` at once, on the calling thread, and returns when it has finished.
  void submit(Job job) const noexcept { job(); }
};

static_assert(Executor<SynchronousExecutor>);

}  // namespace tasktree

// `ThreadPoolExecutor` and `DefaultExecutor` were declared in this header until they got their own:
// code that includes only executor.hpp keeps compiling.
#include <tasktree/thread_pool.hpp>
