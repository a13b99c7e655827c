// Tests for include/tasktree/observer.hpp: run statistics add up in every scenario, and the
// hooks see every event in order.

#include "catch.hpp"
#include "support.hpp"

#include <tasktree/tasktree.hpp>

#include <memory>
#include <string>
#include <vector>

using namespace tasktree_test;
using tasktree::CompletionCallback;
using tasktree::CompletionCallbackResult;
using tasktree::ParallelTaskTree;
using tasktree::RunStats;
using tasktree::SynchronousExecutor;

namespace {

/// Records every hook call as a line of text.
struct Recorder : tasktree::RunObserver {
  std::vector<std::string> events;
  RunStats finished;
  std::vector<std::int64_t> elapsed;
  void on_start(std::size_t total) override { events.push_back(fmt::format("start {}", total)); }
  void on_submit(std::string_view dataset, std::int64_t submit_count) override {
    events.push_back(fmt::format("submit {} #{}", dataset, submit_count));
  }
  void on_complete(std::string_view dataset, std::chrono::nanoseconds took, CompletionCallbackResult result) override {
    events.push_back(fmt::format("complete {} no_skip={} fail={}", dataset, result.no_skip, result.fail));
    elapsed.push_back(took.count());
  }
  void on_skip(std::string_view path, std::size_t jobs) override {
    events.push_back(fmt::format("skip {} {}", path, jobs));
  }
  void on_finish(const RunStats& stats) override {
    finished = stats;
    events.push_back("finish");
  }
};

bool adds_up(const RunStats& stats) {
  return stats.started + stats.skipped + stats.cancelled == stats.total && stats.completed <= stats.started &&
         stats.succeeded + stats.failed == stats.completed;
}

}  // namespace

TEST_CASE("hooks see start, each submit and completion, skipped subtrees and the end") {
  auto recorder = std::make_shared<Recorder>();
  auto clock = std::make_shared<tasktree::ManualClock>();
  ParallelTaskTree<SynchronousExecutor> tree({
      .datasets = {"a", "a/b", "a/b/c", "a/d", "e", "e/~/f"},
      .process_dataset =
          [&](std::string_view dataset, std::int64_t) {
            clock->advance(static_cast<std::int64_t>(dataset.size()));  // a job "takes" its name's length
            return CompletionCallbackResult{.no_skip = dataset != "a/b", .fail = dataset == "e"};
          },
      .max_workers = 1,
      .clock = clock,
      .observer = recorder,
  });
  CHECK(tree.process_datasets_in_parallel());
  CHECK(recorder->events == std::vector<std::string>{
                                "start 6",
                                "submit a #1",
                                "complete a no_skip=true fail=false",
                                "submit a/b #2",
                                "complete a/b no_skip=false fail=false",
                                "skip a/b 1",
                                "submit a/d #3",
                                "complete a/d no_skip=true fail=false",
                                "submit e #4",
                                "complete e no_skip=true fail=true",
                                "submit e/~/f #5",
                                "complete e/~/f no_skip=true fail=false",
                                "finish",
                            });
  CHECK(recorder->elapsed == std::vector<std::int64_t>{1, 3, 3, 1, 5});
  const RunStats expected{
      .total = 6, .started = 5, .completed = 5, .succeeded = 4, .failed = 1, .skipped = 1, .cancelled = 0};
  CHECK(recorder->finished == expected);
  CHECK(tree.last_run_stats() == expected);
}

TEST_CASE("a barrier that can no longer open is reported with the jobs behind it") {
  auto recorder = std::make_shared<Recorder>();
  ParallelTaskTree<SynchronousExecutor> tree({
      .datasets = {"h/snap", "h/snap/r1", "h/snap/r2", "h/snap/~/prune", "h/snap/~/prune/x", "h/snap/~/~/monitor"},
      .process_dataset = [](std::string_view dataset,
                            std::int64_t) { return CompletionCallbackResult{.no_skip = dataset != "h/snap/r2"}; },
      .max_workers = 1,
      .observer = recorder,
  });
  CHECK_FALSE(tree.process_datasets_in_parallel());
  CHECK(std::find(recorder->events.begin(), recorder->events.end(), "skip h/snap/~ 3") != recorder->events.end());
  CHECK(tree.last_run_stats().skipped == 3);
  CHECK(adds_up(tree.last_run_stats()));
}

TEST_CASE("statistics add up after a normal run, a stop, a fail-fast and an exception") {
  std::vector<std::string> datasets;
  for (int a = 0; a < 6; ++a) {
    datasets.push_back(fmt::format("h{}", a));
    for (int b = 0; b < 6; ++b) datasets.push_back(fmt::format("h{}/r{}", a, b));
    datasets.push_back(fmt::format("h{}/~/prune", a));
  }
  const std::size_t total = datasets.size();
  SECTION("normal, with skips") {
    const auto run = run_inline(datasets, [](std::string_view d) {
      return CompletionCallbackResult{.no_skip = !d.ends_with("r3"), .fail = d.ends_with("r5")};
    });
    CHECK(run.stats.total == total);
    CHECK(run.stats.skipped == 6);  // every prune
    CHECK(run.stats.cancelled == 0);
    CHECK(run.stats.failed == 6);
    CHECK(adds_up(run.stats));
  }
  SECTION("stopped by the caller") {
    std::stop_source source;
    ParallelTaskTree tree({
        .datasets = datasets,
        .process_dataset =
            [&](std::string_view, std::int64_t submit_count) {
              if (submit_count == 10) source.request_stop();
              return CompletionCallbackResult{};
            },
        .max_workers = 3,
    });
    CHECK(tree.process_datasets_in_parallel(source.get_token()));
    const auto stats = tree.last_run_stats();
    CHECK(stats.cancelled > 0);
    CHECK(adds_up(stats));
  }
  SECTION("fail-fast from a callback") {
    ParallelTaskTree tree({
        .datasets = datasets,
        .process_dataset =
            [&](std::string_view dataset, std::int64_t) {
              return CompletionCallback([bad = dataset == "h2/r2"](tasktree::InFlight& in_flight) {
                if (bad) in_flight.request_stop();
                return CompletionCallbackResult{.no_skip = !bad, .fail = bad};
              });
            },
        .max_workers = 4,
    });
    CHECK(tree.process_datasets_in_parallel());
    CHECK(adds_up(tree.last_run_stats()));
    CHECK(tree.last_run_stats().failed == 1);
  }
  SECTION("an exception") {
    auto recorder = std::make_shared<Recorder>();
    ParallelTaskTree tree({
        .datasets = datasets,
        .process_dataset = [&](std::string_view dataset, std::int64_t) -> CompletionCallback {
          if (dataset == "h3/r1") throw std::runtime_error("boom");
          return CompletionCallbackResult{};
        },
        .max_workers = 4,
        .observer = recorder,
    });
    CHECK_THROWS_WITH(tree.process_datasets_in_parallel(), "boom");
    CHECK(adds_up(tree.last_run_stats()));
    CHECK(recorder->finished == tree.last_run_stats());  // on_finish ran before the rethrow
    CHECK(recorder->events.back() == "finish");
  }
}

TEST_CASE("an exception from a hook ends the run like any other error") {
  struct Throwing : tasktree::RunObserver {
    void on_submit(std::string_view dataset, std::int64_t) override {
      if (dataset == "b") throw std::runtime_error("hook failed");
    }
  };
  int ran = 0;
  ParallelTaskTree<SynchronousExecutor> tree({
      .datasets = {"a", "b", "c"},
      .process_dataset =
          [&](std::string_view, std::int64_t) {
            ++ran;
            return CompletionCallbackResult{};
          },
      .max_workers = 1,
      .observer = std::make_shared<Throwing>(),
  });
  CHECK_THROWS_WITH(tree.process_datasets_in_parallel(), "hook failed");
  CHECK(ran == 2);  // "b" had already run inline when on_submit threw; "c" never did
  CHECK(adds_up(tree.last_run_stats()));
}
