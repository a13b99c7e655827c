// Stress tests at the sizes docs/semantics.md §6 promises: a million datasets and a million
// siblings on the thread pool, a chain 100,000 levels deep with barriers and skips at the bottom,
// and stops from another thread at random moments of large runs. The full sizes are tagged [slow]
// (ctest label "slow", which the sanitizer presets skip); each has a reduced variant that runs in
// every build, sanitizers included. Replay a random test with TASKTREE_TEST_SEED=<seed>.

#include "catch.hpp"
#include "model/seeded_cases.hpp"
#include "support.hpp"

#include <tasktree/tasktree.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

using namespace tasktree_test;
using tasktree::CompletionCallback;
using tasktree::CompletionCallbackResult;
using tasktree::InFlight;
using tasktree::ParallelTaskTree;

namespace {

/// Per job: how often it started, and sequence numbers of its start (on a worker) and of its
/// completion callback (on the coordinator) on one global counter, so "A completed before B
/// started" can be checked after the run.
class Ledger {
 public:
  explicit Ledger(std::size_t jobs) : runs_(jobs), started_(jobs), completed_(jobs) {}
  void start(std::size_t job) {
    ++runs_[job];
    started_[job] = ++sequence_;
  }
  void complete(std::size_t job) { completed_[job] = ++sequence_; }
  [[nodiscard]] int runs(std::size_t job) const { return runs_[job].load(); }
  /// True if `before` completed and `after` started, in that order.
  [[nodiscard]] bool completed_before_start(std::size_t before, std::size_t after) const {
    return completed_[before] != 0 && started_[after].load() != 0 && completed_[before] < started_[after].load();
  }
  [[nodiscard]] bool started(std::size_t job) const { return started_[job].load() != 0; }

 private:
  std::atomic<std::uint64_t> sequence_{0};
  std::vector<std::atomic<int>> runs_;
  std::vector<std::atomic<std::uint64_t>> started_;
  std::vector<std::uint64_t> completed_;  // coordinator only
};

/// `tops` top-level jobs "TTTT", each with `children` children "TTTT/CCCC" and a barrier job
/// "TTTT/~/done" that waits for all of them; run on the default thread pool. Every job must run
/// exactly once, each child after its parent, each barrier job after its parent and all its
/// siblings.
void run_wide_tree(std::size_t tops, std::size_t children) {
  const std::size_t per_top = children + 2;  // the top, its children, its barrier job
  std::vector<std::string> datasets;
  datasets.reserve(tops * per_top);
  for (std::size_t t = 0; t < tops; ++t) {
    datasets.push_back(fmt::format("{:04}", t));
    for (std::size_t c = 0; c < children; ++c) datasets.push_back(fmt::format("{:04}/{:04}", t, c));
    datasets.push_back(fmt::format("{:04}/~/done", t));
  }
  // A job's index from its name: the top number, then 0 for the top, 1 + c for child c, and
  // children + 1 for the barrier job.
  auto index = [per_top, children](std::string_view name) {
    const std::size_t top = std::strtoul(std::string(name.substr(0, 4)).c_str(), nullptr, 10);
    std::size_t slot = 0;
    if (name.size() > 4)
      slot = name[5] == '~' ? children + 1 : 1 + std::strtoul(std::string(name.substr(5)).c_str(), nullptr, 10);
    return top * per_top + slot;
  };
  Ledger ledger(datasets.size());
  ParallelTaskTree tree({
      .datasets = datasets,
      .process_dataset =
          [&](std::string_view dataset, std::int64_t) {
            const std::size_t job = index(dataset);
            ledger.start(job);
            return CompletionCallback([&ledger, job](InFlight&) {
              ledger.complete(job);
              return CompletionCallbackResult{};
            });
          },
      .max_workers = 4,
  });
  CHECK(tree.default_executor_is_parallel());
  CHECK(tree.barriers_enabled());
  CHECK_FALSE(tree.process_datasets_in_parallel());
  CHECK(tree.last_run_stats().completed == datasets.size());
  std::size_t wrong = 0;
  for (std::size_t job = 0; job < datasets.size(); ++job) wrong += ledger.runs(job) == 1 ? 0 : 1;
  for (std::size_t t = 0; t < tops; ++t) {
    const std::size_t top = t * per_top;
    const std::size_t done = top + children + 1;
    wrong += ledger.completed_before_start(top, done) ? 0 : 1;
    for (std::size_t c = 1; c <= children; ++c) {
      wrong += ledger.completed_before_start(top, top + c) ? 0 : 1;
      wrong += ledger.completed_before_start(top + c, done) ? 0 : 1;
    }
  }
  CHECK(wrong == 0);
}

/// One job "pool" with `count` children, on the default thread pool: all run once, after "pool".
void run_siblings(std::size_t count) {
  std::vector<std::string> datasets{"pool"};
  datasets.reserve(count + 1);
  for (std::size_t i = 0; i < count; ++i) datasets.push_back(fmt::format("pool/{:07}", i));
  Ledger ledger(count + 1);
  ParallelTaskTree tree({
      .datasets = datasets,
      .process_dataset =
          [&](std::string_view dataset, std::int64_t) {
            const std::size_t job =
                dataset.size() == 4 ? 0 : 1 + std::strtoul(std::string(dataset.substr(5)).c_str(), nullptr, 10);
            ledger.start(job);
            return CompletionCallback([&ledger, job](InFlight&) {
              ledger.complete(job);
              return CompletionCallbackResult{};
            });
          },
      .max_workers = 4,
  });
  CHECK(tree.default_executor_is_parallel());
  CHECK_FALSE(tree.process_datasets_in_parallel());
  std::size_t wrong = 0;
  for (std::size_t job = 0; job <= count; ++job) wrong += ledger.runs(job) == 1 ? 0 : 1;
  for (std::size_t job = 1; job <= count; ++job) wrong += ledger.completed_before_start(0, job) ? 0 : 1;
  CHECK(wrong == 0);
  CHECK(tree.last_run_stats().completed == count + 1);
}

}  // namespace

TEST_CASE("a million datasets on the thread pool run once each, parents and barriers first", "[slow]") {
  run_wide_tree(1'000, 998);
}

TEST_CASE("30,000 datasets on the thread pool run once each, parents and barriers first") { run_wide_tree(100, 298); }

TEST_CASE("a million siblings on the thread pool run once each, after their parent", "[slow]") {
  run_siblings(1'000'000);
}

TEST_CASE("30,000 siblings on the thread pool run once each, after their parent") { run_siblings(30'000); }

TEST_CASE("a chain 100,000 levels deep with siblings, a barrier and a skip at the bottom, on the thread pool") {
  // Jobs at depths 1, 50,000 and 100,000 and three below the deepest: two siblings and a barrier
  // job waiting for them. A skip halfway down must keep everything below it (walking 50,000
  // ancestors to close their barriers) from running.
  constexpr std::size_t depth = 100'000;
  std::string deepest = "n";
  for (std::size_t i = 1; i < depth; ++i) deepest += "/n";
  const std::string middle = deepest.substr(0, 2 * (depth / 2) - 1);
  const std::vector<std::string> datasets{"n", middle, deepest, deepest + "/x", deepest + "/y", deepest + "/~/after"};
  for (const bool skip_middle : {false, true}) {
    CAPTURE(skip_middle);
    Ledger ledger(datasets.size());
    ParallelTaskTree tree({
        .datasets = datasets,
        .process_dataset =
            [&](std::string_view dataset, std::int64_t) {
              const std::size_t job =
                  static_cast<std::size_t>(std::find(datasets.begin(), datasets.end(), dataset) - datasets.begin());
              ledger.start(job);
              return CompletionCallback([&ledger, job, skip = skip_middle && job == 1](InFlight&) {
                ledger.complete(job);
                return CompletionCallbackResult{.no_skip = !skip, .fail = false};
              });
            },
        .max_workers = 4,
    });
    CHECK(tree.default_executor_is_parallel());
    CHECK_FALSE(tree.process_datasets_in_parallel());
    const tasktree::RunStats stats = tree.last_run_stats();
    if (skip_middle) {
      CHECK(stats.started == 2);
      CHECK(stats.skipped == 4);
      for (std::size_t job = 2; job < datasets.size(); ++job) CHECK_FALSE(ledger.started(job));
    } else {
      CHECK(stats.completed == datasets.size());
      CHECK(ledger.completed_before_start(0, 1));
      CHECK(ledger.completed_before_start(1, 2));
      CHECK(ledger.completed_before_start(2, 3));
      CHECK(ledger.completed_before_start(2, 4));
      CHECK(ledger.completed_before_start(3, 5));
      CHECK(ledger.completed_before_start(4, 5));
    }
  }
}

TEST_CASE("stops from another thread at random moments of large runs leave every run clean and accounted") {
  // A tree of 2,550 jobs on four workers; a second thread requests the stop after a random delay,
  // or (every other run, so that many stops surely come mid-run) once a random number of jobs have
  // started. Whatever the moment: no job runs twice or before its parent completed, nothing runs after the
  // call returns, the statistics add up, the run returns true exactly when work was left, and the
  // tree runs completely afterwards.
  const std::uint64_t seed = tasktree_model::first_seed();
  INFO("TASKTREE_TEST_SEED=" << seed);
  std::mt19937_64 random(seed);
  std::vector<std::string> datasets;
  for (int a = 0; a < 50; ++a) {
    datasets.push_back(fmt::format("{:02}", a));
    for (int b = 0; b < 50; ++b) datasets.push_back(fmt::format("{:02}/{:02}", a, b));
  }
  auto index = [](std::string_view name) {
    const std::size_t a = std::strtoul(std::string(name.substr(0, 2)).c_str(), nullptr, 10);
    return name.size() == 2 ? a * 51 : a * 51 + 1 + std::strtoul(std::string(name.substr(3)).c_str(), nullptr, 10);
  };
  const int runs = under_sanitizer ? 100 : 300;
  int stopped_midway = 0;
  for (int run = 0; run < runs; ++run) {
    CAPTURE(run);
    Ledger ledger(datasets.size());
    std::atomic<int> running = 0;
    std::atomic<bool> returned = false;
    std::atomic<int> after_return = 0;
    std::atomic<int> started_jobs = 0;
    const auto delay = std::chrono::microseconds(std::uniform_int_distribution<int>(0, 3'000)(random));
    const bool by_progress = run % 2 == 1;
    const int stop_after = std::uniform_int_distribution<int>(0, static_cast<int>(datasets.size()) - 200)(random);
    ParallelTaskTree tree({
        .datasets = datasets,
        .process_dataset =
            [&](std::string_view dataset, std::int64_t) {
              if (returned) ++after_return;
              ++running;
              const std::size_t job = index(dataset);
              ledger.start(job);
              ++started_jobs;
              if (job % 7 == 0) std::this_thread::yield();
              --running;
              return CompletionCallback([&ledger, job](InFlight&) {
                ledger.complete(job);
                return CompletionCallbackResult{};
              });
            },
        .max_workers = 4,
    });
    std::stop_source stop;
    std::thread stopper([&] {
      if (by_progress) {
        while (started_jobs.load() < stop_after && !returned) std::this_thread::yield();
      } else {
        std::this_thread::sleep_for(delay);
      }
      stop.request_stop();
    });
    const bool result = tree.process_datasets_in_parallel(stop.get_token());
    returned = true;
    CHECK(running.load() == 0);
    stopper.join();
    const tasktree::RunStats stats = tree.last_run_stats();
    CHECK(stats.started + stats.skipped + stats.cancelled == stats.total);
    CHECK(stats.skipped == 0);
    CHECK(result == (stats.completed < stats.total));
    stopped_midway += stats.completed < stats.total ? 1 : 0;
    std::size_t started = 0;
    std::size_t wrong = 0;
    for (std::size_t job = 0; job < datasets.size(); ++job) {
      started += ledger.started(job) ? 1 : 0;
      wrong += ledger.runs(job) <= 1 ? 0 : 1;
      if (job % 51 != 0 && ledger.started(job)) wrong += ledger.completed_before_start(job - job % 51, job) ? 0 : 1;
    }
    CHECK(stats.started == started);
    CHECK(wrong == 0);
    CHECK(after_return.load() == 0);
    if (run % 50 == 0) {
      CHECK_FALSE(tree.process_datasets_in_parallel());
      CHECK(tree.last_run_stats().completed == datasets.size());
    }
  }
  CHECK(stopped_midway > 0);  // some stops really came in the middle of a run
}
