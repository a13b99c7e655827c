// Tests for include/tasktree/clock.hpp and pacing (docs/semantics.md §4.7): a fake clock makes submission
// times exact; real-clock tests only check that sleeps end early, never how fast anything is.

#include "catch.hpp"
#include "support.hpp"

#include <tasktree/tasktree.hpp>

#include <chrono>
#include <memory>
#include <thread>
#include <vector>

using namespace tasktree_test;
using tasktree::CompletionCallback;
using tasktree::CompletionCallbackResult;
using tasktree::ManualClock;
using tasktree::ParallelTaskTree;
using tasktree::SynchronousExecutor;

namespace {

struct Submission {
  std::string dataset;
  std::int64_t at;
  friend bool operator==(const Submission&, const Submission&) = default;
};

}  // namespace

TEST_CASE("ManualClock only moves when waited on or advanced") {
  ManualClock clock(100);
  CHECK(clock.now_nanos() == 100);
  clock.advance(5);
  CHECK(clock.now_nanos() == 105);
  clock.advance(-50);  // never backwards
  CHECK(clock.now_nanos() == 105);
  struct NeverSignalled : tasktree::Wakeup {
    bool signalled() const noexcept override { return false; }
    void wait_until(std::chrono::steady_clock::time_point) override {}
  } idle;
  clock.wait_until(90, idle);  // the past: no change
  CHECK(clock.now_nanos() == 105);
  clock.wait_until(1000, idle);
  CHECK(clock.now_nanos() == 1000);
  CHECK(clock.waits() == 2);
}

TEST_CASE("submission times are the start time plus the sum of the intervals before them") {
  auto clock = std::make_shared<ManualClock>(1'000);
  std::vector<Submission> submissions;
  std::vector<std::int64_t> last_updates;
  ParallelTaskTree<SynchronousExecutor> tree({
      .datasets = {"a", "a/b", "c", "d"},
      .process_dataset =
          [&](std::string_view dataset, std::int64_t) {
            submissions.push_back({std::string(dataset), clock->now_nanos()});
            return CompletionCallbackResult{};
          },
      .max_workers = 1,
      .interval_nanos =
          [&](std::int64_t last_update, std::string_view, std::int64_t submit_count) {
            last_updates.push_back(last_update);
            return submit_count * 10;  // 10, 20, 30, 40
          },
      .clock = clock,
  });
  CHECK_FALSE(tree.process_datasets_in_parallel());
  CHECK(submissions == std::vector<Submission>{{"a", 1000}, {"a/b", 1010}, {"c", 1030}, {"d", 1060}});
  // `last_update_nanos` is the earliest time the submission was allowed.
  CHECK(last_updates == std::vector<std::int64_t>{1000, 1010, 1030, 1060});
}

TEST_CASE("a negative interval counts as zero") {
  auto clock = std::make_shared<ManualClock>(0);
  std::vector<std::int64_t> times;
  ParallelTaskTree<SynchronousExecutor> tree({
      .datasets = {"a", "b", "c"},
      .process_dataset =
          [&](std::string_view, std::int64_t) {
            times.push_back(clock->now_nanos());
            return CompletionCallbackResult{};
          },
      .max_workers = 1,
      .interval_nanos = [](std::int64_t, std::string_view dataset, std::int64_t) -> std::int64_t {
        return dataset == "a" ? -1'000'000 : 7;
      },
      .clock = clock,
  });
  tree.process_datasets_in_parallel();
  CHECK(times == std::vector<std::int64_t>{0, 0, 7});
}

TEST_CASE("without interval_nanos the clock is never consulted") {
  auto clock = std::make_shared<ManualClock>(0);
  ParallelTaskTree<SynchronousExecutor> tree({
      .datasets = {"a", "b"},
      .process_dataset = [](std::string_view, std::int64_t) { return CompletionCallbackResult{}; },
      .max_workers = 1,
      .clock = clock,
  });
  tree.process_datasets_in_parallel();
  CHECK(clock->waits() == 0);
}

TEST_CASE("while pacing, finished jobs are collected first so a smaller job can go next") {
  // Two workers. "b" is submitted at 0; "z" is due at 100. While the coordinator waits for 100,
  // "b" finishes and makes "b/a" available, which is smaller than "z" and is submitted at 100.
  auto clock = std::make_shared<ManualClock>(0);
  std::vector<Submission> submissions;
  std::mutex mutex;
  ParallelTaskTree<SynchronousExecutor> tree({
      .datasets = {"b", "b/a", "z"},
      .process_dataset =
          [&](std::string_view dataset, std::int64_t) {
            std::lock_guard lock(mutex);
            submissions.push_back({std::string(dataset), clock->now_nanos()});
            return CompletionCallbackResult{};
          },
      .max_workers = 2,
      .interval_nanos = [](std::int64_t, std::string_view, std::int64_t) { return 100; },
      .clock = clock,
  });
  tree.process_datasets_in_parallel();
  CHECK(submissions == std::vector<Submission>{{"b", 0}, {"b/a", 100}, {"z", 200}});
}

TEST_CASE("a stop during a pacing sleep wakes the coordinator at once") {
  SECTION("fake clock: the sleep ends before its deadline and nothing more runs") {
    auto clock = std::make_shared<ManualClock>(0);
    std::stop_source source;
    clock->on_wait([&](std::int64_t) { source.request_stop(); });  // the stop arrives mid-sleep
    std::vector<std::string> ran;
    ParallelTaskTree<SynchronousExecutor> tree({
        .datasets = {"a", "b", "c"},
        .process_dataset =
            [&](std::string_view dataset, std::int64_t) {
              ran.emplace_back(dataset);
              return CompletionCallbackResult{};
            },
        .max_workers = 1,
        .interval_nanos = [](std::int64_t, std::string_view, std::int64_t) { return 1'000'000'000; },
        .clock = clock,
    });
    CHECK(tree.process_datasets_in_parallel(source.get_token()));  // stopped with work left
    CHECK(ran == std::vector<std::string>{"a"});
    CHECK(clock->now_nanos() == 0);  // woke early: the clock never reached the deadline
    CHECK(clock->waits() == 1);
  }
  SECTION("real clock: an hour-long pause ends when the stop comes") {
    std::stop_source source;
    std::atomic<int> ran = 0;
    WorkerChecks stopper_checks;
    ParallelTaskTree<SynchronousExecutor> tree({
        .datasets = {"a", "b"},
        .process_dataset =
            [&](std::string_view, std::int64_t) {
              ++ran;
              return CompletionCallbackResult{};
            },
        .max_workers = 1,
        .interval_nanos = [](std::int64_t, std::string_view,
                             std::int64_t) { return std::int64_t{3600} * 1'000'000'000; },
    });
    std::jthread stopper([&] {
      stopper_checks.eventually([&] { return ran.load() == 1; });
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      source.request_stop();
    });
    // If the sleep did not wake on the stop request, this would block for an hour.
    CHECK(tree.process_datasets_in_parallel(source.get_token()));
    CHECK(ran == 1);
    stopper.join();
    CHECK(stopper_checks.failures() == 0);
  }
}

TEST_CASE("an interval that would overflow the clock saturates instead") {
  auto clock = std::make_shared<ManualClock>(std::numeric_limits<std::int64_t>::max() - 10);
  std::stop_source source;
  clock->on_wait([&](std::int64_t deadline) {
    CHECK(deadline == std::numeric_limits<std::int64_t>::max());
    source.request_stop();
  });
  ParallelTaskTree<SynchronousExecutor> tree({
      .datasets = {"a", "b"},
      .process_dataset = [](std::string_view, std::int64_t) { return CompletionCallbackResult{}; },
      .max_workers = 1,
      .interval_nanos = [](std::int64_t, std::string_view,
                           std::int64_t) { return std::numeric_limits<std::int64_t>::max(); },
      .clock = clock,
  });
  CHECK(tree.process_datasets_in_parallel(source.get_token()));
}

TEST_CASE("an exception from interval_nanos is rethrown after in-flight jobs return") {
  std::atomic<int> started = 0;
  std::atomic<int> returned = 0;
  WorkerChecks workers;
  ParallelTaskTree tree({
      .datasets = {"a", "b", "c"},
      .process_dataset =
          [&](std::string_view, std::int64_t, std::stop_token stop) {
            ++started;
            workers.eventually([&] { return stop.stop_requested(); });
            ++returned;
            return CompletionCallbackResult{};
          },
      .max_workers = 3,
      .interval_nanos = [&](std::int64_t, std::string_view, std::int64_t submit_count) -> std::int64_t {
        // Regression: the default pool wakes sleeping threads when the coordinator is about to
        // block; it must also wake them before it calls user code such as this function, or the
        // second job waits in the queue while this one waits for it. Letting the pool's threads
        // fall asleep before the first submission makes that case certain.
        if (submit_count == 1) std::this_thread::sleep_for(std::chrono::milliseconds(20));
        if (submit_count == 3) {
          CHECK(eventually([&] { return started.load() == 2; }));  // both others are running
          throw std::runtime_error("bad interval");
        }
        return 0;
      },
  });
  CHECK_THROWS_WITH(tree.process_datasets_in_parallel(), "bad interval");
  CHECK(returned == 2);
  CHECK(workers.failures() == 0);
}

TEST_CASE("a clock that throws while timing a job: the job did not start and the error reaches the caller") {
  // With an observer, jobs are timed on the clock. Regression: a job whose timing failed before
  // process_dataset was called used to count as started.
  struct BrokenClock final : tasktree::Clock {
    [[nodiscard]] std::int64_t now_nanos() override { throw std::runtime_error("clock broke"); }
    void wait_until(std::int64_t, tasktree::Wakeup&) override {}
  };
  struct Watching final : tasktree::RunObserver {};
  int ran = 0;
  ParallelTaskTree<SynchronousExecutor> tree({
      .datasets = {"a", "b"},
      .process_dataset =
          [&](std::string_view, std::int64_t) {
            ++ran;
            return CompletionCallbackResult{};
          },
      .max_workers = 1,
      .clock = std::make_shared<BrokenClock>(),
      .observer = std::make_shared<Watching>(),
  });
  CHECK_THROWS_WITH(tree.process_datasets_in_parallel(), "clock broke");
  CHECK(ran == 0);
  const tasktree::RunStats stats = tree.last_run_stats();
  CHECK(stats.started == 0);
  CHECK(stats.cancelled == 2);
}
