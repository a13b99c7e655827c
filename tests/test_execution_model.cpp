// Tests of the execution model: the coordinator as a role that one thread holds at a time
// (docs/semantics.md §2), runs of one tree that do not overlap (§4.10), and the default pool's
// thread count (§4.11); and the optional executor members that opt into the fast paths
// (`lets_jobs_coordinate`, `runs_jobs_inline`).

#include "catch.hpp"
#include "support.hpp"

#include <tasktree/tasktree.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <filesystem>
#include <latch>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

using namespace tasktree_test;
using tasktree::CompletionCallback;
using tasktree::CompletionCallbackResult;
using tasktree::InFlight;
using tasktree::ParallelTaskTree;

namespace {

/// Threads of this process, from /proc/self/task.
std::size_t process_threads();

/// Threads of this process once the runtime has started what it starts with the first thread of a
/// program (ThreadSanitizer starts a background thread then): the baseline to compare with. The
/// fewest seen over 50 ms, as the probe thread may still be listed for a moment after its join (see
/// `threads_once_exited`).
std::size_t baseline_threads() {
  std::thread([] {}).join();
  std::size_t fewest = process_threads();
  for (int i = 0; i < 50; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    fewest = std::min(fewest, process_threads());
  }
  return fewest;
}

std::size_t process_threads() {
  std::size_t count = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator("/proc/self/task")) ++count;
  return count;
}

/// The process's threads once those that have exited are gone from /proc, or after 10 s: a thread
/// that `std::thread::join` has joined can still be listed there for a moment (the kernel wakes the
/// joiner as the thread exits, before it removes the thread), which a busy machine stretches. A
/// thread that outlives a run, still running or never joined, stays listed.
std::size_t threads_once_exited(std::size_t expected) {
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  std::size_t count = process_threads();
  while (count > expected && std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    count = process_threads();
  }
  return count;
}

/// Records the largest number of threads seen while jobs ran.
struct ThreadPeak {
  std::atomic<std::size_t> peak{0};
  void sample() {
    const std::size_t now = process_threads();
    for (std::size_t seen = peak.load(); now > seen && !peak.compare_exchange_weak(seen, now);) {
    }
  }
};

/// Where and how the coordinator's calls into user code ran.
struct CallLog {
  std::atomic<int> inside{0};
  std::atomic<int> overlaps{0};
  std::mutex mutex;
  std::multiset<std::thread::id> threads;  // one entry per call

  /// Marks a call for its duration: counts an overlap if another is in progress.
  class Call {
   public:
    explicit Call(CallLog& log) : log_(log) {
      if (log_.inside.fetch_add(1) != 0) ++log_.overlaps;
      {
        std::lock_guard lock(log_.mutex);
        log_.threads.insert(std::this_thread::get_id());
      }
      std::this_thread::sleep_for(std::chrono::microseconds(10));  // a window for an overlap to show
    }
    ~Call() { log_.inside.fetch_sub(1); }
    Call(const Call&) = delete;
    Call& operator=(const Call&) = delete;

   private:
    CallLog& log_;
  };

  [[nodiscard]] std::size_t calls_on(std::thread::id id) {
    std::lock_guard lock(mutex);
    return threads.count(id);
  }
  [[nodiscard]] std::size_t calls() {
    std::lock_guard lock(mutex);
    return threads.size();
  }
};

class LoggingObserver final : public tasktree::RunObserver {
 public:
  explicit LoggingObserver(CallLog& log) : log_(log) {}
  void on_submit(std::string_view, std::int64_t) override { const CallLog::Call call(log_); }
  void on_complete(std::string_view, std::chrono::nanoseconds, CompletionCallbackResult) override {
    const CallLog::Call call(log_);
  }

 private:
  CallLog& log_;
};

/// 24 sibling jobs that sleep 2 ms, on 4 workers, with callbacks, a priority and observer hooks that
/// log where they ran.
template <tasktree::Executor E = tasktree::DefaultExecutor>
tasktree::Options<E> logged_options(CallLog& log, std::set<std::thread::id>& job_threads, std::mutex& mutex) {
  std::vector<std::string> datasets;
  for (int i = 0; i < 24; ++i) datasets.push_back(fmt::format("pool/{:02}", i));
  return tasktree::Options<E>{
      .datasets = datasets,
      .process_dataset =
          [&](std::string_view, std::int64_t) {
            {
              std::lock_guard lock(mutex);
              job_threads.insert(std::this_thread::get_id());
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
            return CompletionCallback([&log](InFlight&) {
              const CallLog::Call call(log);
              return CompletionCallbackResult{.no_skip = true, .fail = false};
            });
          },
      .priority =
          [&log](std::string_view dataset) {
            const CallLog::Call call(log);
            return std::string(dataset);
          },
      .max_workers = 4,
      .observer = std::make_shared<LoggingObserver>(log),
  };
}

/// What one logged run records: the coordinator's calls, and the threads that ran jobs.
struct Logged {
  CallLog log;
  std::set<std::thread::id> job_threads;
  std::mutex mutex;
  template <tasktree::Executor E = tasktree::DefaultExecutor>
  tasktree::Options<E> options() {
    return logged_options<E>(log, job_threads, mutex);
  }
};

/// An executor of its own threads that opts into (or out of) letting jobs coordinate.
class OwnThreadsExecutor {
 public:
  explicit OwnThreadsExecutor(bool coordinate)
      : pool_(std::make_unique<tasktree::ThreadPoolExecutor>(4)), coordinate_(coordinate) {}
  void submit(tasktree::Job job) { pool_->submit(job); }
  [[nodiscard]] bool lets_jobs_coordinate() const noexcept { return coordinate_; }

 private:
  std::unique_ptr<tasktree::ThreadPoolExecutor> pool_;
  bool coordinate_;
};

/// Without the optional members: the plain behaviour.
class PlainExecutor {
 public:
  PlainExecutor() : pool_(std::make_unique<tasktree::ThreadPoolExecutor>(4)) {}
  void submit(tasktree::Job job) { pool_->submit(job); }

 private:
  std::unique_ptr<tasktree::ThreadPoolExecutor> pool_;
};

}  // namespace

TEST_CASE("§2: on the default pool, finishing workers hold the coordinator role and calls never overlap") {
  Logged run;
  CallLog& log = run.log;
  ParallelTaskTree tree(run.options());
  REQUIRE(tree.default_executor_is_parallel());
  CHECK_FALSE(tree.process_datasets_in_parallel());
  CHECK(tree.last_run_stats().completed == 24);
  CHECK(log.overlaps == 0);
  // 24 callbacks, 24 priority calls, 24 + 24 observer hooks.
  CHECK(log.calls() == 96);
  CHECK_FALSE(run.job_threads.contains(std::this_thread::get_id()));
}

TEST_CASE("§2: on the default pool, completion callbacks run on the workers' threads") {
  // The calling thread holds the role for the first submissions, then sleeps; the jobs take far
  // longer than those submissions, so nearly every completion finds the role free and is processed
  // by the worker whose job finished. (Which ones exactly depends on timing; that some do does not.)
  std::mutex mutex;
  std::multiset<std::thread::id> callback_threads;
  std::vector<std::string> datasets;
  for (int i = 0; i < 40; ++i) datasets.push_back(fmt::format("pool/{:02}", i));
  ParallelTaskTree tree({
      .datasets = datasets,
      .process_dataset =
          [&](std::string_view, std::int64_t) {
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
            return CompletionCallback([&](InFlight&) {
              std::lock_guard lock(mutex);
              callback_threads.insert(std::this_thread::get_id());
              return CompletionCallbackResult{.no_skip = true, .fail = false};
            });
          },
      .max_workers = 4,
  });
  CHECK_FALSE(tree.process_datasets_in_parallel());
  CHECK(callback_threads.size() == 40);
  CHECK(callback_threads.count(std::this_thread::get_id()) < 40);
}

TEST_CASE("§2: callbacks_on_calling_thread keeps every coordinator call on the calling thread") {
  Logged run;
  CallLog& log = run.log;
  auto options = run.options();
  options.callbacks_on_calling_thread = true;
  ParallelTaskTree tree(std::move(options));
  CHECK_FALSE(tree.process_datasets_in_parallel());
  CHECK(tree.last_run_stats().completed == 24);
  CHECK(log.overlaps == 0);
  CHECK(log.calls() == 96);
  CHECK(log.calls_on(std::this_thread::get_id()) == 96);
  CHECK_FALSE(run.job_threads.contains(std::this_thread::get_id()));  // jobs still run on the pool
}

TEST_CASE("§2: pacing keeps the coordinator role on the calling thread") {
  Logged run;
  CallLog& log = run.log;
  auto options = run.options();
  options.interval_nanos = [](std::int64_t, std::string_view, std::int64_t) { return std::int64_t{1'000}; };
  ParallelTaskTree tree(std::move(options));
  CHECK_FALSE(tree.process_datasets_in_parallel());
  CHECK(log.overlaps == 0);
  CHECK(log.calls_on(std::this_thread::get_id()) == 96);
}

TEST_CASE("an executor opts into letting jobs coordinate with lets_jobs_coordinate(); without it, nothing changes") {
  const auto caller = std::this_thread::get_id();
  SECTION("opted in") {
    Logged run;
    CallLog& log = run.log;
    auto options = run.options<OwnThreadsExecutor>();
    options.executors = [] { return OwnThreadsExecutor(true); };
    ParallelTaskTree<OwnThreadsExecutor> tree(std::move(options));
    CHECK_FALSE(tree.process_datasets_in_parallel());
    CHECK(log.overlaps == 0);
    CHECK(log.calls() == 96);
    CHECK(log.calls_on(caller) < 96);  // the jobs take far longer than the calls: see the test above
  }
  SECTION("opted out") {
    Logged run;
    CallLog& log = run.log;
    auto options = run.options<OwnThreadsExecutor>();
    options.executors = [] { return OwnThreadsExecutor(false); };
    ParallelTaskTree<OwnThreadsExecutor> tree(std::move(options));
    CHECK_FALSE(tree.process_datasets_in_parallel());
    CHECK(log.calls_on(caller) == 96);
  }
  SECTION("no such member") {
    Logged run;
    CallLog& log = run.log;
    ParallelTaskTree<PlainExecutor> tree(run.options<PlainExecutor>());
    CHECK_FALSE(tree.process_datasets_in_parallel());
    CHECK(log.calls_on(caller) == 96);
  }
}

TEST_CASE("§4.10: a run started from one of the tree's own callbacks throws std::logic_error and changes nothing") {
  std::optional<ParallelTaskTree<>> tree;
  std::optional<std::string> inner_error;
  int runs_seen = 0;
  tree.emplace(tasktree::Options<>{
      .datasets = {"a", "b", "c"},
      .process_dataset =
          [&](std::string_view dataset, std::int64_t) {
            return CompletionCallback([&, first = dataset == "a"](InFlight&) {
              ++runs_seen;
              if (first) {
                try {
                  tree->process_datasets_in_parallel();
                } catch (const std::logic_error& error) {
                  inner_error = error.what();
                }
              }
              return CompletionCallbackResult{.no_skip = true, .fail = false};
            });
          },
      .max_workers = 2,
  });
  CHECK_FALSE(tree->process_datasets_in_parallel());
  REQUIRE(inner_error.has_value());
  CHECK_THAT(*inner_error, Catch::Matchers::Contains("in progress"));
  CHECK(runs_seen == 3);  // the inner call ran nothing
  CHECK(tree->last_run_stats().completed == 3);
  CHECK(tree->last_run_stats().total == 3);
  // Not caught: the outer run rethrows it once every job has returned, and the tree stays usable.
  std::optional<ParallelTaskTree<>> self;
  bool call_itself = true;
  self.emplace(tasktree::Options<>{
      .datasets = {"a", "b"},
      .process_dataset =
          [&](std::string_view, std::int64_t) {
            return CompletionCallback([&](InFlight&) {
              if (std::exchange(call_itself, false)) self->process_datasets_in_parallel();
              return CompletionCallbackResult{.no_skip = true, .fail = false};
            });
          },
      .max_workers = 2,
  });
  CHECK_THROWS_AS(self->process_datasets_in_parallel(), std::logic_error);
  CHECK(self->last_run_stats().total == 2);
  CHECK(self->last_run_stats().completed == 0);  // the callback that threw did not complete
  CHECK_FALSE(self->process_datasets_in_parallel());
  // A callback of one tree may run another tree.
  bool ran_other = false;
  ParallelTaskTree other({
      .datasets = {"x"},
      .process_dataset =
          [&](std::string_view, std::int64_t) {
            return CompletionCallback([&](InFlight&) {
              ran_other = true;
              tree->process_datasets_in_parallel();
              return CompletionCallbackResult{.no_skip = true, .fail = false};
            });
          },
  });
  CHECK_NOTHROW(other.process_datasets_in_parallel());
  CHECK(ran_other);
}

TEST_CASE("§4.10: a run started from another thread while one is in progress throws std::logic_error") {
  std::latch started(1);
  std::latch release(1);
  ParallelTaskTree tree({
      .datasets = {"a", "b"},
      .process_dataset =
          [&](std::string_view dataset, std::int64_t) {
            if (dataset == "a") {
              started.count_down();
              release.wait();
            }
            return CompletionCallbackResult{.no_skip = true, .fail = false};
          },
      .max_workers = 2,
  });
  std::thread runner([&] { tree.process_datasets_in_parallel(); });
  started.wait();
  CHECK_THROWS_AS(tree.process_datasets_in_parallel(), std::logic_error);
  release.count_down();
  runner.join();
  CHECK(tree.last_run_stats().completed == 2);
  CHECK_FALSE(tree.process_datasets_in_parallel());  // and once it is over, the next run works
}

TEST_CASE("§4.11: the default pool never has more threads than datasets, whatever max_workers says") {
  for (const int max_workers : {20'000, 1'000'000}) {
    CAPTURE(max_workers);
    ThreadPeak peak;
    const std::size_t before = baseline_threads();
    ParallelTaskTree tree({
        .datasets = {"a", "b"},
        .process_dataset =
            [&](std::string_view, std::int64_t) {
              peak.sample();
              std::this_thread::sleep_for(std::chrono::milliseconds(2));
              peak.sample();
              return CompletionCallbackResult{.no_skip = true, .fail = false};
            },
        .max_workers = max_workers,
    });
    REQUIRE(tree.default_executor_is_parallel());
    CHECK_FALSE(tree.process_datasets_in_parallel());
    CHECK(peak.peak.load() <= before + 2);
    CHECK(peak.peak.load() > before);
  }
}

TEST_CASE("§4.11: the default pool starts threads only as the run needs them") {
  // `a` runs alone, then its two children: the pool needs two threads although it may have three.
  ThreadPeak peak;
  const std::size_t before = baseline_threads();
  ParallelTaskTree tree({
      .datasets = {"a", "a/x", "a/y"},
      .process_dataset =
          [&](std::string_view, std::int64_t) {
            peak.sample();
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
            peak.sample();
            return CompletionCallbackResult{.no_skip = true, .fail = false};
          },
      .max_workers = 8,
  });
  REQUIRE(tree.default_executor_is_parallel());
  CHECK_FALSE(tree.process_datasets_in_parallel());
  CHECK(peak.peak.load() <= before + 2);
}

TEST_CASE("no thread of a run outlives it, in either mode") {
  for (const bool on_calling_thread : {false, true}) {
    CAPTURE(on_calling_thread);
    const std::size_t before = baseline_threads();
    ParallelTaskTree tree({
        .datasets = {"a", "b", "c", "d"},
        .process_dataset = [](std::string_view, std::int64_t) { return CompletionCallbackResult{}; },
        .max_workers = 4,
        .callbacks_on_calling_thread = on_calling_thread,
    });
    tree.process_datasets_in_parallel();
    CHECK(threads_once_exited(before) == before);
  }
}

TEST_CASE("the policy layer works with the role on the workers and on the calling thread") {
  for (const bool on_calling_thread : {false, true}) {
    CAPTURE(on_calling_thread);
    std::mutex mutex;
    std::multiset<std::thread::id> hook_threads;
    std::atomic<int> attempts{0};
    tasktree::FaultTolerantOptions<> options{
        .datasets = {"a", "a/b", "c", "c/d", "e", "f", "g", "h"},
        .process_dataset = [&](std::string_view dataset, std::string_view, const tasktree::Retry& retry) -> bool {
          ++attempts;
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
          if (dataset == "c" && retry.count == 0) throw std::runtime_error("flaky");
          return true;
        },
        .skip_on_error = tasktree::SkipOnError::tree,
        .retry_policy = {.max_retries = 1, .initial_backoff = std::chrono::nanoseconds(0)},
        .max_workers = 3,
        .callbacks_on_calling_thread = on_calling_thread,
    };
    options.log = tasktree::Logger{.sink =
                                       [&](tasktree::LogLevel, std::string_view) {
                                         std::lock_guard lock(mutex);
                                         hook_threads.insert(std::this_thread::get_id());
                                       },
                                   .level = tasktree::LogLevel::debug};
    tasktree::FaultTolerantStats stats;
    CHECK_FALSE(tasktree::process_datasets_in_parallel_and_fault_tolerant(options, stats));
    CHECK(stats.run.succeeded == 8);
    CHECK(attempts == 9);  // one retry of c
    if (on_calling_thread) CHECK(hook_threads.count(std::this_thread::get_id()) == hook_threads.size());
    CHECK_FALSE(hook_threads.empty());
  }
}
