// Custom executor: run tasktree's jobs on a thread pool your application already has.
//
// An executor is anything with `submit(tasktree::Job)` (docs/semantics.md §4.11). The contract (see
// executor.hpp): every job that `submit` accepted must eventually be called exactly once, on any
// thread; `submit` may throw only if it did not take the job. Adapting an existing pool is
// therefore a few lines: wrap the job (two pointers and an index, trivially copyable) in whatever
// task type the pool takes.
//
// `Options::executors` is a factory, called once at the start of every run; the executor it
// returns is destroyed at the end of that run. The pool itself belongs to the application and
// outlives all runs: here one pool serves three runs of the same tree.

#include <tasktree/tasktree.hpp>

#include <fmt/format.h>

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <functional>
#include <mutex>
#include <stop_token>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

/// A minimal fixed-size thread pool: a stand-in for the one your application already has.
class MyPool {
 public:
  explicit MyPool(std::size_t threads) {
    for (std::size_t i = 0; i < threads; ++i) workers_.emplace_back([this](std::stop_token stop) { work(stop); });
  }
  // The std::jthread destructors request stop and join; workers run what is queued, then exit.

  void post(std::function<void()> task) {
    {
      std::lock_guard lock(mutex_);
      tasks_.push_back(std::move(task));
    }
    ready_.notify_one();
  }

 private:
  void work(const std::stop_token& stop) {
    std::unique_lock lock(mutex_);
    // Wakes on a new task or on the std::jthread destructor's stop request; false: stopping, and
    // nothing left to run.
    while (ready_.wait(lock, stop, [this] { return !tasks_.empty(); })) {
      std::function<void()> task = std::move(tasks_.front());
      tasks_.pop_front();
      lock.unlock();
      task();
      lock.lock();
    }
  }

  std::mutex mutex_;
  std::condition_variable_any ready_;
  std::deque<std::function<void()>> tasks_;
  std::vector<std::jthread> workers_;  // last member: joined first, while the queue still exists
};

/// The adapter: tasktree's `Executor` concept asks for nothing more.
struct MyPoolExecutor {
  MyPool* pool;
  void submit(tasktree::Job job) {
    pool->post([job] { job(); });
  }
};

int main() {
  MyPool pool(3);  // created before the tree and destroyed after it
  int executors_made = 0;

  tasktree::ParallelTaskTree<MyPoolExecutor> tree({
      .datasets = {"docs", "music", "music/flac", "music/mp3", "photos", "photos/2023", "photos/2024"},
      .process_dataset =
          [](std::string_view dataset, std::int64_t /*submit_count*/) {
            fmt::print("  {} (on a pool thread)\n", dataset);
            return tasktree::CompletionCallbackResult{.no_skip = true, .fail = false};
          },
      .max_workers = 3,  // the pool's size, so that no job waits in the pool's queue
      .executors =
          [&] {
            ++executors_made;
            return MyPoolExecutor{&pool};
          },
  });
  for (int run = 1; run <= 3; ++run) {
    const bool failed = tree.process_datasets_in_parallel();
    fmt::print("run {}: failed={}, executors made so far: {}\n", run, failed, executors_made);
  }
  return EXIT_SUCCESS;
}
