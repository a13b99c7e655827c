#pragma once
/// @file thread_pool.hpp
/// @brief The library's thread pool (`ThreadPoolExecutor`) and the executor used when the caller
/// supplies none (`DefaultExecutor`).

#include <tasktree/detail/spin_wait.hpp>
#include <tasktree/executor.hpp>

#include <atomic>
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

class DefaultExecutor;

namespace detail {
void wake_workers_for_queued_jobs(DefaultExecutor& executor) noexcept;
}  // namespace detail

/// @brief A fixed pool of threads with a FIFO queue. The destructor runs every job still queued,
/// then joins all threads.
///
/// Threads that run out of work spin briefly before they sleep (see `detail::SpinWait`), and
/// `submit` wakes a sleeping thread only when no thread is spinning, so handing a job to a busy
/// pool costs no system call, while an idle pool costs no CPU.
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
  /// Takes over another pool's threads and queue; the moved-from pool may only be destroyed or assigned to.
  ThreadPoolExecutor(ThreadPoolExecutor&&) noexcept = default;
  /// Runs this pool's queued jobs and joins its threads, then takes over `other`'s.
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
    {
      QueueLock lock(state);
      state.queue.push(job);
      state.queued.store(state.queue.size(), std::memory_order_seq_cst);
    }
    if (state.coordinated) {
      state.wake_one_if_all_asleep();
    } else {
      state.wake_one_if_needed();
    }
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

  // The queue is guarded by a spin lock: its critical sections are a few instructions, and a
  // std::mutex that three threads hit a million times a second puts them to sleep in the kernel.
  //
  // Who sleeps and who wakes. Every thread is running a job, spinning (counted in `spinning`), or
  // sleeping on `ready` (counted in `sleeping`). Going to sleep, a thread takes `sleep_mutex`,
  // counts itself sleeping and no longer spinning, and only then checks `queued`; `submit` stores
  // `queued` and only then reads the two counts. All four accesses are sequentially consistent,
  // so either the thread sees the job, or `submit` sees the thread asleep and, if nobody spins,
  // wakes one (taking `sleep_mutex`, so the wake cannot fall between the check and the wait). A
  // spinner that `submit` relied on sees the job on its next poll or, if its budget runs out
  // first, on its check before sleeping. A thread that takes a job while more are queued and
  // nobody spins wakes another, so a burst of submissions fans out.
  struct State {
    alignas(64) std::atomic<bool> locked{false};  // the queue's spin lock
    JobRing queue;
    alignas(64) std::atomic<std::size_t> queued{0};  // `queue.size()`, polled by spinners
    std::atomic<bool> closing{false};
    alignas(64) std::atomic<std::size_t> spinning{0};
    std::atomic<std::size_t> sleeping{0};
    std::mutex sleep_mutex;
    std::condition_variable ready;
    std::vector<std::thread> threads;
    // Set for the scheduler's own pool. Its submitter, the coordinator, waits for the jobs it
    // submitted and calls `wake_for_queued_jobs()` before it blocks and before it calls user code
    // (which may take any time); so `submit` wakes a thread
    // only when all sleep, and a thread that takes a job does not wake another. Jobs that take
    // nanoseconds then run on the one thread that is awake, next to the coordinator, instead of
    // waking the others on every submission to compete for the cores; jobs that take long still
    // fan out, as soon as the coordinator has nothing to do but wait. Set right after
    // construction, before any job is submitted.
    std::atomic<bool> coordinated{false};

    void wake_one_if_needed() {
      if (queued.load(std::memory_order_seq_cst) > 0 && sleeping.load(std::memory_order_seq_cst) > 0 &&
          spinning.load(std::memory_order_seq_cst) == 0) {
        std::lock_guard lock(sleep_mutex);
        ready.notify_one();
      }
    }

    void wake_one_if_all_asleep() {
      if (sleeping.load(std::memory_order_seq_cst) == threads.size()) {
        std::lock_guard lock(sleep_mutex);
        ready.notify_one();
      }
    }

    /// Wakes a sleeping thread for every queued job that the spinning threads will not take. A
    /// spinner takes one job, and here a thread that takes a job wakes no other, so with more jobs
    /// than spinners the rest would wait, with threads asleep, until a job finishes.
    void wake_for_queued_jobs() noexcept {
      const std::size_t jobs = queued.load(std::memory_order_seq_cst);
      const std::size_t spinners = spinning.load(std::memory_order_seq_cst);
      if (jobs <= spinners) return;
      const std::size_t asleep = sleeping.load(std::memory_order_seq_cst);
      if (asleep == 0) return;
      const std::size_t wanted = jobs - spinners;
      std::lock_guard lock(sleep_mutex);
      if (wanted >= asleep) {
        ready.notify_all();
      } else {
        for (std::size_t i = 0; i < wanted; ++i) ready.notify_one();
      }
    }

    /// Takes the oldest job, if any.
    bool try_take(Job& job) noexcept {
      if (queued.load(std::memory_order_acquire) == 0) return false;
      QueueLock lock(*this);
      if (queue.empty()) return false;
      job = queue.pop();
      queued.store(queue.size(), std::memory_order_seq_cst);
      return true;
    }

    void work() noexcept {
      detail::SpinWait spin;
      Job job;
      while (true) {
        if (try_take(job)) {
          if (!coordinated.load(std::memory_order_relaxed)) wake_one_if_needed();
          job();
          continue;
        }
        spinning.fetch_add(1, std::memory_order_seq_cst);
        const bool woken = spin.spin(
            [this] { return queued.load(std::memory_order_relaxed) > 0 || closing.load(std::memory_order_relaxed); });
        if (woken) {
          spinning.fetch_sub(1, std::memory_order_seq_cst);
        } else {
          std::unique_lock lock(sleep_mutex);
          sleeping.fetch_add(1, std::memory_order_seq_cst);
          spinning.fetch_sub(1, std::memory_order_seq_cst);
          ready.wait(lock, [this] {
            return queued.load(std::memory_order_seq_cst) > 0 || closing.load(std::memory_order_seq_cst);
          });
          sleeping.fetch_sub(1, std::memory_order_seq_cst);
        }
        if (closing.load(std::memory_order_acquire) && queued.load(std::memory_order_acquire) == 0) {
          // Nothing left to run. (`closing` is set only by the destructor, after which nobody
          // submits, so the queue stays empty.)
          return;
        }
      }
    }
  };

  /// Holds the queue's spin lock; yields now and then so a preempted holder can finish.
  class QueueLock {
   public:
    explicit QueueLock(State& state) noexcept : locked_(state.locked) {
      for (std::uint32_t round = 1; locked_.exchange(true, std::memory_order_acquire); ++round) {
        while (locked_.load(std::memory_order_relaxed)) {
          if (round % 64 == 0) {
            std::this_thread::yield();
          } else {
            detail::cpu_relax();
          }
          ++round;
        }
      }
    }
    ~QueueLock() { locked_.store(false, std::memory_order_release); }
    QueueLock(const QueueLock&) = delete;
    QueueLock& operator=(const QueueLock&) = delete;

   private:
    std::atomic<bool>& locked_;
  };

  void shutdown() noexcept {
    if (!state_) return;
    {
      std::lock_guard lock(state_->sleep_mutex);
      state_->closing.store(true, std::memory_order_seq_cst);
    }
    state_->ready.notify_all();
    for (std::thread& thread : state_->threads) {
      if (thread.joinable()) thread.join();
    }
    state_.reset();
  }

  friend class DefaultExecutor;

  struct Coordinated {};
  /// A pool whose submitter promises to call `wake_for_queued_jobs()` before it blocks or runs
  /// user code (see
  /// `State::coordinated`).
  ThreadPoolExecutor(std::size_t threads, Coordinated) : ThreadPoolExecutor(threads) {
    state_->coordinated.store(true, std::memory_order_relaxed);
  }

  void wake_for_queued_jobs() noexcept { state_->wake_for_queued_jobs(); }

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
    if (parallel) pool_.emplace(ThreadPoolExecutor(threads, ThreadPoolExecutor::Coordinated{}));
  }

  /// Queues `job` on the pool, or runs it at once on the calling thread if inline.
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
  friend void detail::wake_workers_for_queued_jobs(DefaultExecutor& executor) noexcept;
  void wake_for_queued_jobs() noexcept {
    if (pool_) pool_->wake_for_queued_jobs();
  }

  std::optional<ThreadPoolExecutor> pool_;
};

namespace detail {
/// Called by the coordinator before it blocks or calls user code: the default pool wakes threads
/// only then (see `ThreadPoolExecutor::State::coordinated`).
inline void wake_workers_for_queued_jobs(DefaultExecutor& executor) noexcept { executor.wake_for_queued_jobs(); }
}  // namespace detail

static_assert(Executor<ThreadPoolExecutor>);
static_assert(Executor<DefaultExecutor>);

}  // namespace tasktree
