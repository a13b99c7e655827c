// Custom executor: run tasktree's jobs on a thread pool your application already has.
//
// An executor is anything with `submit(tasktree::Job)`. The contract (see executor.hpp): every job
// that `submit` accepted must eventually be called exactly once, on any thread. `submit` may throw
// only if it did not take the job. Adapting an existing pool is therefore a few lines: wrap the
// job (two pointers and an index, trivially copyable) in whatever task type the pool takes.
//
// `Options::executors` is a factory, called once at the start of every run; the executor it
// returns is destroyed at the end of that run. The pool itself belongs to the application and
// outlives all runs: here one pool serves three runs of the same tree.

#include <tasktree/tasktree.hpp>

#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <functional>
#include <mutex>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace {

using namespace std::chrono_literals;

/// Index of the MyPool worker running on this thread, or -1 on any other thread.
thread_local int current_worker = -1;

/// A minimal fixed-size thread pool: a stand-in for the one your application already has.
class MyPool {
 public:
  explicit MyPool(std::size_t threads) {
    workers_.reserve(threads);
    for (std::size_t i = 0; i < threads; ++i) {
      workers_.emplace_back([this, i](std::stop_token stop) { work(static_cast<int>(i), stop); });
    }
  }
  MyPool(const MyPool&) = delete;
  MyPool& operator=(const MyPool&) = delete;
  // The std::jthread destructors request stop and join; workers run what is queued, then exit.
  ~MyPool() = default;

  /// Queues `task` for the next free worker.
  void post(std::function<void()> task) {
    {
      std::lock_guard lock(mutex_);
      tasks_.push_back(std::move(task));
    }
    ready_.notify_one();
  }

  /// Number of tasks the workers have taken from the queue so far.
  [[nodiscard]] std::size_t tasks_taken() const noexcept { return tasks_taken_.load(); }

 private:
  void work(int index, const std::stop_token& stop) {
    current_worker = index;
    std::unique_lock lock(mutex_);
    while (true) {
      // Wakes on a new task or on the stop request of the std::jthread destructor.
      ready_.wait(lock, stop, [this] { return !tasks_.empty(); });
      if (tasks_.empty()) return;  // stopping, and nothing left to run
      std::function<void()> task = std::move(tasks_.front());
      tasks_.pop_front();
      ++tasks_taken_;
      lock.unlock();
      task();
      lock.lock();
    }
  }

  std::mutex mutex_;
  std::condition_variable_any ready_;
  std::deque<std::function<void()>> tasks_;
  std::atomic<std::size_t> tasks_taken_{0};
  std::vector<std::jthread> workers_;  // last member: joined first, while the queue still exists
};

/// The adapter: tasktree's `Executor` concept asks for nothing more. If `post` throws (say,
/// std::bad_alloc) it has not taken the job, which the contract allows.
struct MyPoolExecutor {
  MyPool* pool;
  void submit(tasktree::Job job) {
    pool->post([job] { job(); });
  }
};
static_assert(tasktree::Executor<MyPoolExecutor>);

}  // namespace

int main() {
  constexpr std::size_t pool_threads = 3;
  constexpr int runs = 3;
  MyPool pool(pool_threads);  // created before the tree and destroyed after it

  int executors_made = 0;  // touched only by the factory, which runs on this thread
  std::mutex ran_mutex;    // guards `ran`: jobs run concurrently on the pool's workers
  std::vector<std::string> ran;
  bool ran_off_pool = false;

  tasktree::ParallelTaskTree<MyPoolExecutor> tree({
      .datasets = {"docs", "music", "music/flac", "music/mp3", "photos", "photos/2023", "photos/2024"},
      .process_dataset =
          [&](std::string_view dataset, std::int64_t /*submit_count*/) {
            std::this_thread::sleep_for(2ms);  // pretend to work
            std::lock_guard lock(ran_mutex);
            ran_off_pool = ran_off_pool || current_worker < 0;
            ran.push_back(fmt::format("{}@w{}", dataset, current_worker));
            return tasktree::CompletionCallbackResult{.no_skip = true, .fail = false};
          },
      // max_workers bounds the jobs in flight; matching it to the pool size keeps jobs from
      // waiting in the pool's queue (a larger pool shared with other work would be fine too).
      .max_workers = static_cast<int>(pool_threads),
      .executors =
          [&] {
            ++executors_made;
            return MyPoolExecutor{&pool};
          },
  });

  bool ok = true;
  for (int run = 1; run <= runs; ++run) {
    ran.clear();
    const bool failed = tree.process_datasets_in_parallel();
    // The run has returned, so every job has finished: no lock needed to read `ran` now.
    fmt::print("run {}: failed={} executors made so far={} tasks taken by the pool so far={}\n", run, failed,
               executors_made, pool.tasks_taken());
    fmt::print("  jobs, as they finished, with the pool worker that ran them:\n  {}\n", fmt::join(ran, " "));
    ok = ok && !failed && ran.size() == tree.datasets().size();
  }

  const std::size_t expected_tasks = tree.datasets().size() * runs;
  fmt::print("factory called once per run: {}\n", executors_made == runs);
  fmt::print("every job ran on the pool, exactly once: {}\n", !ran_off_pool && pool.tasks_taken() == expected_tasks);
  ok = ok && executors_made == runs && !ran_off_pool && pool.tasks_taken() == expected_tasks;
  return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
