#pragma once
/// @file executor.hpp
/// @brief Where jobs run: the `Job` handle, the `Executor` concept, and the executors the library
/// ships (`SynchronousExecutor`, `ThreadPoolExecutor`, `DefaultExecutor`).

#include <tasktree/detail/spin_wait.hpp>

#include <atomic>
#include <concepts>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
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
///
/// Threads that run out of work spin briefly before they sleep (see `detail::SpinWait`), and
/// `submit` wakes a sleeping thread only when no thread is spinning, so handing a job to a busy
/// pool costs a lock and no system call, while an idle pool costs no CPU.
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
    State& state = *state_;
    bool wake = false;
    {
      std::lock_guard lock(state.mutex);
      state.queue.push(job);
      state.queued.store(state.queue.size(), std::memory_order_release);
      wake = state.must_wake();
    }
    if (wake) state.ready.notify_one();
  }

  /// Number of threads in the pool.
  [[nodiscard]] std::size_t thread_count() const noexcept { return state_ ? state_->threads.size() : 0; }

 private:
  /// A FIFO ring of jobs that grows by doubling and never shrinks, so a pool in steady use does
  /// not allocate.
  class JobRing {
   public:
    [[nodiscard]] bool empty() const noexcept { return size_ == 0; }
    [[nodiscard]] std::size_t size() const noexcept { return size_; }
    void push(Job job) {
      if (size_ == jobs_.size()) grow();
      jobs_[(head_ + size_) & (jobs_.size() - 1)] = job;
      ++size_;
    }
    Job pop() noexcept {
      const Job job = jobs_[head_];
      head_ = (head_ + 1) & (jobs_.size() - 1);
      --size_;
      return job;
    }

   private:
    void grow() {
      std::vector<Job> larger(jobs_.empty() ? 64 : 2 * jobs_.size());
      for (std::size_t i = 0; i < size_; ++i) larger[i] = jobs_[(head_ + i) & (jobs_.size() - 1)];
      jobs_.swap(larger);
      head_ = 0;
    }
    std::vector<Job> jobs_;  // capacity a power of two
    std::size_t head_ = 0;
    std::size_t size_ = 0;
  };

  // Who sleeps and who wakes. Every thread is running a job, spinning (counted in `spinning`), or
  // sleeping on `ready` (counted in `sleeping`). `submit` pushes under the mutex, then wakes a
  // sleeper only if nobody spins: a spinner sees the job on its next poll, or, if its budget runs
  // out first, when it takes the mutex to go to sleep, since it leaves `spinning` and checks the
  // queue under the mutex. So no job waits while a thread sleeps, and a thread that takes a job
  // while more are queued and nobody spins wakes another (a burst of submissions fans out).
  struct State {
    std::mutex mutex;
    std::condition_variable ready;
    JobRing queue;                       // guarded by `mutex`
    std::size_t sleeping = 0;            // guarded by `mutex`
    bool closing = false;                // guarded by `mutex`
    std::atomic<std::size_t> queued{0};  // `queue.size()`, readable without the mutex, for spinners
    std::atomic<bool> closing_flag{false};
    std::atomic<std::size_t> spinning{0};
    std::vector<std::thread> threads;

    /// True if a sleeping thread must be woken for the jobs queued. Called under the mutex.
    [[nodiscard]] bool must_wake() const noexcept {
      return !queue.empty() && sleeping > 0 && spinning.load(std::memory_order_relaxed) == 0;
    }

    void work() noexcept {
      detail::SpinWait spin;
      while (true) {
        spinning.fetch_add(1, std::memory_order_relaxed);
        spin.spin([this] {
          return queued.load(std::memory_order_relaxed) > 0 || closing_flag.load(std::memory_order_relaxed);
        });
        std::unique_lock lock(mutex);
        spinning.fetch_sub(1, std::memory_order_relaxed);
        if (queue.empty() && !closing) {
          ++sleeping;
          ready.wait(lock, [this] { return closing || !queue.empty(); });
          --sleeping;
        }
        if (queue.empty()) return;  // closing, and nothing left to run
        const Job job = queue.pop();
        queued.store(queue.size(), std::memory_order_relaxed);
        const bool wake_another = must_wake();
        lock.unlock();
        if (wake_another) ready.notify_one();
        job();
      }
    }
  };

  void shutdown() noexcept {
    if (!state_) return;
    {
      std::lock_guard lock(state_->mutex);
      state_->closing = true;
      state_->closing_flag.store(true, std::memory_order_relaxed);
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
