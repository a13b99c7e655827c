#pragma once
/// @file thread_pool.hpp
/// @brief The library's thread pool (`ThreadPoolExecutor`) and the executor used when the caller
/// supplies none (`DefaultExecutor`).

#include <tasktree/detail/spin_wait.hpp>
#include <tasktree/executor.hpp>

#include <atomic>
#include <chrono>
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

/// @brief A pool of up to `max_threads` threads with a FIFO queue, started as jobs need them. The
/// destructor runs every job still queued, then joins all threads.
///
/// `submit` starts a new thread only when no started thread is free to take the job, so a pool
/// never has more threads than it ever had jobs queued or running at once. A thread that runs out
/// of work polls the queue for a few microseconds (pause instructions, never `sched_yield`; see
/// `detail::SpinWait`), then sleeps on a condition variable; `submit` wakes a sleeping thread only
/// when the spinning threads are fewer than the queued jobs. So handing a job to a busy pool costs
/// no system call, and an idle pool costs no CPU.
///
/// A job that one of the pool's own threads submitted, from inside a job, is left to that thread
/// for `steal_delay` (a few microseconds): another thread takes it only once that thread has seen
/// jobs waiting that long (each idle thread times this itself, from when it first finds a job it
/// may not take until it takes one), while the submitting thread takes it at once when it comes
/// back for work. Handing a job to another thread moves the job's data and the scheduler's between
/// caches, which costs more than a job that takes nanoseconds; so a run of such jobs stays mostly
/// on one thread, while a job whose submitter is busy with a longer one waits at most the delay
/// (plus a wake-up) before another thread runs it. Jobs submitted from outside the pool are taken
/// at once.
///
/// `submit` may be called from any thread, also from inside a job the pool is running: the
/// scheduler relies on that (see `lets_jobs_coordinate()`).
class ThreadPoolExecutor {
 public:
  /// A pool of at most `max_threads` threads (at least one); none is started yet.
  explicit ThreadPoolExecutor(std::size_t max_threads) : state_(std::make_unique<State>(max_threads)) {}
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

  /// Queues `job` for the next free thread, starting a thread if none is free and fewer than
  /// `max_threads()` run. Throws (and does not take the job) only if no thread runs and none can
  /// be started; if some thread runs, a failure to start another leaves the job queued for it.
  void submit(Job job) { state_->submit(job); }

  /// Number of threads started so far.
  [[nodiscard]] std::size_t thread_count() const noexcept { return state_ ? state_->started() : 0; }

  /// The most threads this pool starts.
  [[nodiscard]] std::size_t max_threads() const noexcept { return state_ ? state_->max_threads : 0; }

  /// The scheduler may call `submit` from inside the jobs this pool runs (see `Executor`).
  [[nodiscard]] static constexpr bool lets_jobs_coordinate() noexcept { return true; }

  /// How long a job submitted by one of the pool's threads waits for that thread before another
  /// takes it (see the class description).
  static constexpr std::chrono::nanoseconds steal_delay{5'000};

 private:
  /// A FIFO ring of jobs that grows by doubling and never shrinks, so a pool in steady use does
  /// not allocate.
  class JobRing {
   public:
    /// A job and the pool thread that submitted it (null: a thread outside the pool).
    struct Entry {
      Job job;                      ///< the job
      const void* owner = nullptr;  ///< the pool thread that submitted it, or null
    };
    [[nodiscard]] bool empty() const noexcept { return size_ == 0; }
    [[nodiscard]] std::size_t size() const noexcept { return size_; }
    void push(Job job, const void* owner) {
      if (size_ == jobs_.size()) grow();
      jobs_[(head_ + size_) & (jobs_.size() - 1)] = Entry{job, owner};
      ++size_;
    }
    /// The oldest entry; not empty.
    [[nodiscard]] const Entry& front() const noexcept { return jobs_[head_]; }
    Job pop() noexcept {
      const Job job = jobs_[head_].job;
      head_ = (head_ + 1) & (jobs_.size() - 1);
      --size_;
      return job;
    }
    void drop_newest() noexcept { --size_; }

   private:
    void grow() {
      std::vector<Entry> larger(jobs_.empty() ? 64 : 2 * jobs_.size());
      for (std::size_t i = 0; i < size_; ++i) larger[i] = jobs_[(head_ + i) & (jobs_.size() - 1)];
      jobs_.swap(larger);
      head_ = 0;
    }
    std::vector<Entry> jobs_;  // capacity a power of two
    std::size_t head_ = 0;
    std::size_t size_ = 0;
  };

  // Who sleeps and who wakes. Every started thread is running a job, spinning (counted in
  // `spinning`), sleeping on `ready` (counted in `sleeping`, under `mutex`) or woken and on its way
  // back (counted in `waking`, under `mutex`). A spinner polls `queued` without the lock; when its
  // budget runs out it stops counting itself spinning, and only then takes `mutex` and checks the
  // queue before it sleeps. `submit` queues under `mutex` and only then reads `spinning`. Both are
  // sequentially consistent, so either the giving-up spinner sees the job under the lock, or
  // `submit` sees it no longer spinning and wakes a sleeper or starts a thread. The waker moves a
  // sleeper from `sleeping` to `waking` itself, so a second job queued before the woken thread
  // runs wakes a second sleeper or starts a thread instead of counting the same sleeper twice (it
  // once did: the second job then waited for a free thread, and two jobs that wait for each other
  // never finished). A thread that takes a job while more are queued than threads are on their
  // way wakes another, so a burst fans out.
  struct State {
    explicit State(std::size_t max) : max_threads(max == 0 ? 1 : max) {}

    const std::size_t max_threads;
    std::mutex mutex;
    std::condition_variable ready;
    JobRing queue;                                   // guarded by `mutex`
    std::size_t sleeping = 0;                        // asleep and not yet woken; guarded by `mutex`
    std::size_t waking = 0;                          // woken, not yet back; guarded by `mutex`
    std::vector<std::thread> threads;                // guarded by `mutex`
    std::size_t live = 0;                            // started, not returned from `work`; guarded by `mutex`
    alignas(64) std::atomic<std::size_t> queued{0};  // `queue.size()`, polled by spinners
    // Who submitted the job at the head of the queue: written under `mutex` whenever the head
    // changes, read by spinners without it.
    std::atomic<const void*> head_owner{nullptr};
    std::atomic<std::size_t> spinning{0};
    std::atomic<std::size_t> thread_count{0};
    std::atomic<bool> closing{false};  // set under `mutex` by the destructor; polled by spinners

    [[nodiscard]] std::size_t started() const noexcept { return thread_count.load(std::memory_order_acquire); }

    /// This thread's identity as a submitter to this pool: non-null on the pool's own threads.
    [[nodiscard]] const void* self() const noexcept { return worker_of == this ? &worker_of : nullptr; }

    void submit(Job job) {
      std::unique_lock lock(mutex);
      queue.push(job, self());
      note_head();
      if (takers() >= queue.size()) return;  // a spinning or woken thread takes it
      if (sleeping > 0) {
        wake_one();
        return;
      }
      // Every thread is busy: the next free one takes it. (Threads that returned, while the pool is
      // being destroyed, do not count: a job still running may submit another, and if it then
      // waits for that one, another thread must run it.)
      if (live >= max_threads) return;
      try {
        threads.emplace_back([this] { work(); });
        ++live;
        thread_count.store(threads.size(), std::memory_order_release);
      } catch (...) {
        if (!threads.empty()) return;  // a running thread will take the job
        queue.drop_newest();
        note_head();
        throw;
      }
    }

    /// Publishes the queue's size and head for the spinners. Under `mutex`.
    void note_head() noexcept {
      head_owner.store(queue.empty() ? nullptr : queue.front().owner, std::memory_order_relaxed);
      queued.store(queue.size(), std::memory_order_seq_cst);
    }

    /// How long a thread looking for work has seen jobs queued that it may not take at once.
    /// Armed when it first sees one, disarmed when it takes a job or finds the queue empty: so each
    /// idle thread takes at most one such job per `steal_delay`, and several idle threads take
    /// several at once.
    struct Watch {
      bool armed = false;                             ///< jobs were seen waiting, since `since`
      std::chrono::steady_clock::time_point since{};  ///< when this thread first saw them

      /// Starts timing, unless it has started already.
      void arm() noexcept {
        if (armed) return;
        armed = true;
        since = std::chrono::steady_clock::now();
      }

      /// True if this thread has seen jobs waiting for `steal_delay` (and starts timing if it had not).
      bool waited() noexcept {
        if (!armed) {
          arm();
          return false;
        }
        return std::chrono::steady_clock::now() - since >= steal_delay;
      }
    };

    /// True if this thread may take the head job now: one submitted from outside the pool or by
    /// this thread, any once this thread has seen jobs waiting for the delay, or once the pool is
    /// closing.
    [[nodiscard]] bool may_take(const void* owner, Watch& watch) const noexcept {
      return owner == nullptr || owner == self() || closing.load(std::memory_order_relaxed) || watch.waited();
    }

    /// Something this thread may take is queued (without the lock; `try_take` checks again).
    [[nodiscard]] bool takeable(Watch& watch) const noexcept {
      if (queued.load(std::memory_order_relaxed) == 0) {
        watch.armed = false;
        return false;
      }
      return may_take(head_owner.load(std::memory_order_relaxed), watch);
    }

    /// Takes the oldest job if this thread may; wakes another thread if more are queued than
    /// threads spin.
    bool try_take(Job& job, Watch& watch) noexcept {
      if (queued.load(std::memory_order_acquire) == 0) {
        watch.armed = false;
        return false;
      }
      std::lock_guard lock(mutex);
      if (queue.empty()) {
        watch.armed = false;
        return false;
      }
      if (!may_take(queue.front().owner, watch)) return false;
      watch.armed = false;
      job = queue.pop();
      note_head();
      if (!queue.empty() && sleeping > 0 && takers() < queue.size()) wake_one();
      return true;
    }

    /// Threads that will look at the queue without being woken: the spinning ones and those woken
    /// already. Under `mutex`.
    [[nodiscard]] std::size_t takers() const noexcept { return spinning.load(std::memory_order_seq_cst) + waking; }

    /// Wakes one sleeping thread. Under `mutex`, with `sleeping > 0`.
    void wake_one() noexcept {
      --sleeping;
      ++waking;
      ready.notify_one();
    }

    void work() noexcept {
      worker_of = this;
      detail::SpinWait spin;
      Watch watch;
      Job job;
      while (true) {
        if (try_take(job, watch)) {
          job();
          continue;
        }
        spinning.fetch_add(1, std::memory_order_seq_cst);
        const bool found = spin.spin([&] { return takeable(watch) || closing.load(std::memory_order_relaxed); });
        spinning.fetch_sub(1, std::memory_order_seq_cst);
        if (found && !closing.load(std::memory_order_relaxed)) continue;
        std::unique_lock lock(mutex);
        if (!closing.load(std::memory_order_relaxed)) {
          // Nothing queued: sleep until woken. A job that waits for its submitter: sleep until it
          // has waited out the delay (or a wake-up), then take it if it is still there.
          const bool jobs_wait = !queue.empty();
          if (jobs_wait) watch.arm();
          ++sleeping;
          const auto woken = [this] { return waking > 0 || closing.load(std::memory_order_relaxed); };
          if (jobs_wait) {
            static_cast<void>(ready.wait_until(lock, watch.since + steal_delay, woken));
          } else {
            ready.wait(lock, woken);
          }
          if (waking > 0) {
            --waking;  // the waker took this thread (or another sleeper, which counts the same) off `sleeping`
          } else {
            --sleeping;  // woken by the destructor, or the delay is over
          }
        }
        // Nothing left to run, and the pool is being destroyed. A job still running elsewhere may
        // submit another: `submit` then starts a thread for it if no thread is left to take it.
        if (closing.load(std::memory_order_relaxed) && queue.empty()) {
          --live;
          return;
        }
      }
    }

    /// The pool whose thread this is (null on other threads); `&worker_of` identifies the thread.
    static inline thread_local const State* worker_of = nullptr;
  };

  void shutdown() noexcept {
    if (!state_) return;
    std::vector<std::thread> threads;
    {
      std::lock_guard lock(state_->mutex);
      state_->closing.store(true, std::memory_order_seq_cst);
      state_->ready.notify_all();
    }
    // Threads start only inside `submit`, and nobody submits once the pool is being destroyed
    // (jobs that are still running may, so join one by one until no thread is left).
    while (true) {
      {
        std::lock_guard lock(state_->mutex);
        threads.swap(state_->threads);
      }
      if (threads.empty()) break;
      for (std::thread& thread : threads) thread.join();
      threads.clear();
    }
    state_.reset();
  }

  std::unique_ptr<State> state_;
};

/// @brief The executor used when the caller supplies none: a `ThreadPoolExecutor` of up to
/// `threads` threads when that can help (more than one worker and some trie node with two or more
/// children), otherwise inline execution like `SynchronousExecutor`.
class DefaultExecutor {
 public:
  /// Inline execution.
  DefaultExecutor() = default;
  /// A pool of up to `threads` threads if `parallel`, inline execution otherwise.
  DefaultExecutor(std::size_t threads, bool parallel) {
    if (parallel) pool_.emplace(threads);
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

  /// Threads started so far (0 if inline).
  [[nodiscard]] std::size_t thread_count() const noexcept { return pool_ ? pool_->thread_count() : 0; }

  /// True if every job runs inside `submit`, on the submitting thread (see `Executor`).
  [[nodiscard]] bool runs_jobs_inline() const noexcept { return !pool_; }

  /// The scheduler may call `submit` from inside the jobs the pool runs (see `Executor`).
  [[nodiscard]] static constexpr bool lets_jobs_coordinate() noexcept { return true; }

 private:
  std::optional<ThreadPoolExecutor> pool_;
};

static_assert(Executor<ThreadPoolExecutor>);
static_assert(Executor<DefaultExecutor>);

}  // namespace tasktree
