#pragma once
/// @file executor.hpp
/// @brief Where jobs run: the `Job` handle, the `Executor` concept, and the executors the library
/// ships (`SynchronousExecutor`, `ThreadPoolExecutor`, `DefaultExecutor`).

#include <concepts>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

namespace tasktree {

/// @brief One unit of work handed to an executor: call it exactly once, on any thread.
///
/// A `Job` is two pointers and an index, trivially copyable, and never throws when called: the
/// library catches whatever the user's job throws and reports it to the coordinator. Calling it
/// runs the user's `process_dataset` (unless the run was stopped before the job started, in which
/// case the job is skipped) and then hands the outcome back to the coordinator.
class Job {
 public:
  using Function = void (*)(void* context, std::uint32_t slot) noexcept;

  Job() = default;
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
  void submit(Job job) const noexcept { job(); }
};

/// @brief A fixed pool of threads with a FIFO queue. The destructor runs every job still queued,
/// then joins all threads.
class ThreadPoolExecutor {
 public:
  /// Starts `threads` threads (at least one).
  explicit ThreadPoolExecutor(std::size_t threads) : state_(std::make_unique<State>()) {
    const std::size_t count = threads == 0 ? 1 : threads;
    state_->threads.reserve(count);
    try {
      for (std::size_t i = 0; i < count; ++i) {
        state_->threads.emplace_back([state = state_.get()] { state->work(); });
      }
    } catch (...) {
      shutdown();
      throw;
    }
  }
  ThreadPoolExecutor(ThreadPoolExecutor&&) noexcept = default;
  ThreadPoolExecutor& operator=(ThreadPoolExecutor&& other) noexcept {
    if (this != &other) {
      shutdown();
      state_ = std::move(other.state_);
    }
    return *this;
  }
  ThreadPoolExecutor(const ThreadPoolExecutor&) = delete;
  ThreadPoolExecutor& operator=(const ThreadPoolExecutor&) = delete;
  ~ThreadPoolExecutor() { shutdown(); }

  /// Queues `job` for the next free thread.
  void submit(Job job) {
    {
      std::lock_guard lock(state_->mutex);
      state_->queue.push_back(job);
    }
    state_->ready.notify_one();
  }

  /// Number of threads in the pool.
  [[nodiscard]] std::size_t thread_count() const noexcept { return state_ ? state_->threads.size() : 0; }

 private:
  struct State {
    std::mutex mutex;
    std::condition_variable ready;
    std::deque<Job> queue;
    bool closing = false;
    std::vector<std::thread> threads;

    void work() noexcept {
      std::unique_lock lock(mutex);
      while (true) {
        ready.wait(lock, [this] { return closing || !queue.empty(); });
        if (queue.empty()) return;  // closing, and nothing left to run
        const Job job = queue.front();
        queue.pop_front();
        lock.unlock();
        job();
        lock.lock();
      }
    }
  };

  void shutdown() noexcept {
    if (!state_) return;
    {
      std::lock_guard lock(state_->mutex);
      state_->closing = true;
    }
    state_->ready.notify_all();
    for (std::thread& thread : state_->threads) {
      if (thread.joinable()) thread.join();
    }
    state_.reset();
  }

  std::unique_ptr<State> state_;
};

/// @brief The executor used when the caller supplies none: a `ThreadPoolExecutor` with
/// `max_workers` threads when that can help (more than one worker and some trie node with two or
/// more children), otherwise inline execution like `SynchronousExecutor`.
class DefaultExecutor {
 public:
  /// Inline execution.
  DefaultExecutor() = default;
  /// A pool of `threads` threads if `parallel`, inline execution otherwise.
  DefaultExecutor(std::size_t threads, bool parallel) {
    if (parallel) pool_.emplace(threads);
  }

  void submit(Job job) {
    if (pool_) {
      pool_->submit(job);
    } else {
      job();
    }
  }

  /// True if jobs run on a thread pool, false if inline.
  [[nodiscard]] bool is_parallel() const noexcept { return pool_.has_value(); }

 private:
  std::optional<ThreadPoolExecutor> pool_;
};

static_assert(Executor<SynchronousExecutor>);
static_assert(Executor<ThreadPoolExecutor>);
static_assert(Executor<DefaultExecutor>);

}  // namespace tasktree
