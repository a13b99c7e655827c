// Tests for the programs in examples/: each example teaches one idea and only prints what happens;
// the checks of what it shows live here, on the same trees and options (with shorter sleeps, and
// ordering checked by the sequence of events, never by timing). The examples themselves still run
// as smoke tests (examples/CMakeLists.txt). When an example changes its scenario, change its test
// case here.

#include "catch.hpp"
#include "support.hpp"

#include <tasktree/tasktree.hpp>

#include <fmt/format.h>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

using namespace tasktree_test;
using namespace std::chrono_literals;

namespace {

// ---- examples/barriers.cpp --------------------------------------------------------------------

const std::vector<std::string> backup_plan{"h1/snapshot",
                                           "h1/snapshot/replicate_to_backup1",
                                           "h1/snapshot/replicate_to_backup2",
                                           "h1/snapshot/~/prune",
                                           "h1/snapshot/~/~/monitor",
                                           "h2/snapshot",
                                           "h2/snapshot/replicate_to_backup1",
                                           "h2/snapshot/replicate_to_backup2",
                                           "h2/snapshot/~/prune",
                                           "h2/snapshot/~/~/monitor"};

struct BackupRun {
  EventLog log;
  bool failed = false;
  tasktree::RunStats stats;
};

/// The example's tree, on a pool of 4 workers; the replications in `unreachable` fail.
BackupRun run_backup_plan(const std::set<std::string, std::less<>>& unreachable) {
  BackupRun run;
  tasktree::ParallelTaskTree tree({
      .datasets = backup_plan,
      .process_dataset =
          [&](std::string_view job, std::int64_t) {
            run.log.start(job);
            std::this_thread::sleep_for(job.ends_with("backup2") ? 3ms : 1ms);
            const bool ok = !unreachable.contains(job);
            run.log.end(job);
            return tasktree::CompletionCallbackResult{.no_skip = ok, .fail = !ok};
          },
      .max_workers = 4,
  });
  run.failed = tree.process_datasets_in_parallel();
  run.stats = tree.last_run_stats();
  return run;
}

/// The orderings of a host whose replications all succeeded.
void check_complete_host(const EventLog& log, const std::string& host) {
  const std::string snapshot = host + "/snapshot";
  const std::string backup1 = snapshot + "/replicate_to_backup1";
  const std::string backup2 = snapshot + "/replicate_to_backup2";
  const std::string prune = snapshot + "/~/prune";
  CHECK(log.ended_before_start(snapshot, backup1));
  CHECK(log.ended_before_start(snapshot, backup2));
  CHECK(log.ended_before_start(backup1, prune));
  CHECK(log.ended_before_start(backup2, prune));
  CHECK(log.ended_before_start(prune, snapshot + "/~/~/monitor"));
}

// ---- examples/custom_executor.cpp -------------------------------------------------------------

thread_local bool on_my_pool = false;

/// The example's `MyPool`, which also marks its threads and counts the tasks it ran.
class MyPool {
 public:
  explicit MyPool(std::size_t threads) {
    for (std::size_t i = 0; i < threads; ++i) workers_.emplace_back([this](std::stop_token stop) { work(stop); });
  }
  void post(std::function<void()> task) {
    {
      std::lock_guard lock(mutex_);
      tasks_.push_back(std::move(task));
    }
    ready_.notify_one();
  }
  [[nodiscard]] std::size_t tasks_taken() {
    std::lock_guard lock(mutex_);
    return tasks_taken_;
  }

 private:
  void work(const std::stop_token& stop) {
    on_my_pool = true;
    std::unique_lock lock(mutex_);
    while (ready_.wait(lock, stop, [this] { return !tasks_.empty(); })) {
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
  std::size_t tasks_taken_ = 0;
  std::vector<std::jthread> workers_;
};

struct MyPoolExecutor {
  MyPool* pool;
  void submit(tasktree::Job job) {
    pool->post([job] { job(); });
  }
};
static_assert(tasktree::Executor<MyPoolExecutor>);

// ---- examples/progress.cpp --------------------------------------------------------------------

/// Counts what the hooks report, as the example's `ProgressLine` does, without printing.
struct HookCounts final : tasktree::RunObserver {
  std::size_t total = 0, submitted = 0, completed = 0, failed = 0, skipped = 0, finished = 0;
  void on_start(std::size_t jobs) override { total = jobs; }
  void on_submit(std::string_view, std::int64_t) override { ++submitted; }
  void on_complete(std::string_view, std::chrono::nanoseconds, tasktree::CompletionCallbackResult result) override {
    ++completed;
    if (result.fail) ++failed;
  }
  void on_skip(std::string_view, std::size_t jobs) override { skipped += jobs; }
  void on_finish(const tasktree::RunStats&) override { ++finished; }
};

}  // namespace

TEST_CASE("examples/barriers.cpp: prune waits for both replications, monitor for prune") {
  const BackupRun run = run_backup_plan({});
  CHECK_FALSE(run.failed);
  CHECK(run.log.started().size() == backup_plan.size());
  check_complete_host(run.log, "h1");
  check_complete_host(run.log, "h2");
}

TEST_CASE("examples/barriers.cpp: a failed replication keeps only that host's barrier closed") {
  const BackupRun run = run_backup_plan({"h2/snapshot/replicate_to_backup2"});
  CHECK(run.failed);
  check_complete_host(run.log, "h1");
  CHECK(run.log.seq("h2/snapshot/replicate_to_backup1", true) >= 0);
  CHECK(run.log.seq("h2/snapshot/~/prune", true) < 0);
  CHECK(run.log.seq("h2/snapshot/~/~/monitor", true) < 0);
  CHECK(run.stats.skipped == 2);
  CHECK(run.stats.failed == 1);
}

TEST_CASE("examples/cooperative_stop.cpp: a stop ends long jobs early, returns true and counts every job") {
  const std::map<std::string, int, std::less<>> steps{
      {"backup/db", 5},    {"backup/db/verify", 3}, {"backup/files", 40}, {"backup/files/verify", 3},
      {"follow/logs", -1}, {"report", 5},           {"report/email", 1},
  };
  std::vector<std::string> datasets;
  for (const auto& [name, count] : steps) datasets.push_back(name);
  EventLog log;
  std::mutex outcomes_mutex;
  std::map<std::string, bool, std::less<>> finished;  // per job that ran: did it finish?
  tasktree::ParallelTaskTree tree({
      .datasets = datasets,
      .process_dataset =
          [&](std::string_view dataset, std::int64_t, std::stop_token stop) {
            log.start(dataset);
            const int total = steps.find(dataset)->second;
            int done = 0;
            while (done != total && !stop.stop_requested()) {
              std::this_thread::sleep_for(1ms);
              ++done;
            }
            {
              std::lock_guard lock(outcomes_mutex);
              finished.emplace(dataset, done == total);
            }
            log.end(dataset);
            return tasktree::CompletionCallbackResult{.no_skip = done == total, .fail = false};
          },
      .max_workers = 3,
  });
  std::stop_source source;
  // Stops once the job that only ends when asked has started (name order submits it third, at once).
  std::jthread stopper([&] {
    eventually([&] { return log.seq("follow/logs", true) >= 0; });
    source.request_stop();
  });
  const bool work_left = tree.process_datasets_in_parallel(source.get_token());
  const std::size_t started_when_returned = log.start_count();
  stopper.join();

  CHECK(work_left);  // follow/logs cannot finish without the stop
  const tasktree::RunStats& stats = tree.last_run_stats();
  CHECK(stats.started == finished.size());
  CHECK(stats.started == started_when_returned);
  CHECK(stats.started + stats.skipped + stats.cancelled == stats.total);
  CHECK(stats.cancelled > 0);
  REQUIRE(finished.contains("follow/logs"));
  CHECK_FALSE(finished.at("follow/logs"));
  for (const auto& [name, count] : steps) {
    if (log.seq(name, true) >= 0) CHECK(log.seq(name, false) >= 0);  // every job that started returned
  }
  std::this_thread::sleep_for(5ms);
  CHECK(log.start_count() == started_when_returned);  // nothing starts after the run returned
}

TEST_CASE("examples/custom_priority.cpp: largest ready dataset first, parents first, ties by name") {
  const std::map<std::string, std::int64_t, std::less<>> sizes{
      {"scratch", 50},          {"scratch/tmp", 700},       {"tank", 5},
      {"tank/backups", 900},    {"tank/backups/old", 2000}, {"tank/home", 300},
      {"tank/home/alice", 120}, {"tank/home/bob", 120},     {"tank/media", 1500},
  };
  const auto size = [&sizes](std::string_view dataset) { return sizes.find(dataset)->second; };
  std::vector<std::string> datasets;
  for (const auto& [name, gib] : sizes) datasets.push_back(name);
  std::vector<std::string> order;
  tasktree::ParallelTaskTree<tasktree::SynchronousExecutor> tree({
      .datasets = datasets,
      .process_dataset =
          [&](std::string_view dataset, std::int64_t submit_count) {
            CHECK(submit_count == static_cast<std::int64_t>(order.size()) + 1);
            order.emplace_back(dataset);
            return tasktree::CompletionCallbackResult{.no_skip = true, .fail = false};
          },
      .priority = [&](std::string_view dataset) { return -size(dataset); },
      .max_workers = 1,
  });
  CHECK_FALSE(tree.process_datasets_in_parallel());
  // Ready at the start: scratch (50) and tank (5). Once scratch is done, scratch/tmp (700) is ready
  // and beats tank. After tank: media (1500), backups (900) and home (300); media, then backups,
  // whose child old (2000) is now ready and goes next; then home and its children, alice before
  // bob on the tie.
  const std::vector<std::string> expected{
      "scratch",   "scratch/tmp",     "tank",          "tank/media", "tank/backups", "tank/backups/old",
      "tank/home", "tank/home/alice", "tank/home/bob",
  };
  CHECK(order == expected);
}

TEST_CASE("examples/custom_executor.cpp: the factory runs once per run and every job runs on the pool once") {
  constexpr int runs = 3;
  MyPool pool(3);
  int executors_made = 0;
  std::mutex ran_mutex;
  std::vector<std::string> ran;
  bool ran_off_pool = false;
  tasktree::ParallelTaskTree<MyPoolExecutor> tree({
      .datasets = {"docs", "music", "music/flac", "music/mp3", "photos", "photos/2023", "photos/2024"},
      .process_dataset =
          [&](std::string_view dataset, std::int64_t) {
            std::lock_guard lock(ran_mutex);
            ran_off_pool = ran_off_pool || !on_my_pool;
            ran.emplace_back(dataset);
            return tasktree::CompletionCallbackResult{.no_skip = true, .fail = false};
          },
      .max_workers = 3,
      .executors =
          [&] {
            ++executors_made;
            return MyPoolExecutor{&pool};
          },
  });
  for (int run = 1; run <= runs; ++run) {
    ran.clear();
    CHECK_FALSE(tree.process_datasets_in_parallel());
    CHECK(executors_made == run);
    CHECK(ran.size() == tree.datasets().size());
  }
  CHECK_FALSE(ran_off_pool);
  CHECK(pool.tasks_taken() == tree.datasets().size() * runs);
}

TEST_CASE("examples/progress.cpp: retries recover five jobs, one failure skips its host's prune") {
  std::vector<std::string> datasets;
  for (int host = 0; host < 5; ++host) {
    datasets.push_back(fmt::format("host{}/snapshot", host));
    for (const char target : {'a', 'b', 'c', 'd'}) {
      datasets.push_back(fmt::format("host{}/snapshot/replicate-{}", host, target));
    }
    datasets.push_back(fmt::format("host{}/snapshot/~/prune", host));
  }
  const auto hooks = std::make_shared<HookCounts>();
  std::vector<std::string> errors;  // filled by append_exception, a coordinator call
  tasktree::FaultTolerantStats stats;
  const bool failed = tasktree::process_datasets_in_parallel_and_fault_tolerant(
      {
          .datasets = datasets,
          .process_dataset =
              [](std::string_view dataset, std::string_view, const tasktree::Retry& retry) {
                if (dataset == "host2/snapshot/replicate-c") throw std::runtime_error("target c unreachable");
                if (dataset.ends_with("replicate-b") && retry.count == 0) throw std::runtime_error("timed out");
                return true;
              },
          .skip_on_error = tasktree::SkipOnError::tree,
          .retry_policy = {.max_retries = 2, .initial_backoff = 1ms, .max_backoff = 5ms},
          .append_exception =
              [&errors](const std::exception_ptr&, std::string_view task_name, std::string_view dataset) {
                errors.push_back(fmt::format("{} {}", task_name, dataset));
              },
          .task_name = "backup",
          .max_workers = 4,
          .observer = hooks,
      },
      stats);
  CHECK(failed);
  CHECK(errors == std::vector<std::string>{"backup host2/snapshot/replicate-c"});
  const tasktree::RunStats& run = stats.run;
  CHECK(run.failed == 1);
  CHECK(run.skipped == 1);  // host2's prune
  CHECK(run.cancelled == 0);
  CHECK(run.started + run.skipped + run.cancelled == run.total);
  CHECK(stats.recovered == 5);    // each host's replicate-b, on its first retry
  CHECK(stats.retries == 5 + 2);  // and replicate-c of host2 twice, in vain
  // What the progress line is drawn from.
  CHECK(hooks->total == run.total);
  CHECK(hooks->submitted == run.started);
  CHECK(hooks->completed == run.completed);
  CHECK(hooks->failed == run.failed);
  CHECK(hooks->skipped == run.skipped);
  CHECK(hooks->finished == 1);
}
