// Tests for include/tasktree/detail/barrier_enqueue.hpp: docs/semantics.md §5, every row of its table,
// nesting, only-child and top-level barriers, skip propagation, and equivalence with the simple
// algorithm on barrier-free input.

#include "catch.hpp"
#include "support.hpp"

#include <tasktree/tasktree.hpp>

#include <random>
#include <string>
#include <vector>

using namespace tasktree_test;
using tasktree::CompletionCallback;
using tasktree::CompletionCallbackResult;
using tasktree::ParallelTaskTree;

namespace {

const CompletionCallbackResult skip{.no_skip = false, .fail = false};

bool ran(const InlineRun& run, std::string_view name) { return position(run.order, name) >= 0; }
bool before(const InlineRun& run, std::string_view first, std::string_view second) {
  const long a = position(run.order, first);
  const long b = position(run.order, second);
  return a >= 0 && b >= 0 && a < b;
}

/// Runs `datasets` on a thread pool with jobs of uneven length and returns the event log.
EventLog run_on_pool(const std::vector<std::string>& datasets, const Outcomes& outcomes, int workers = 4) {
  EventLog log;
  ParallelTaskTree tree({
      .datasets = datasets,
      .process_dataset =
          [&](std::string_view dataset, std::int64_t) {
            log.start(dataset);
            std::this_thread::sleep_for(std::chrono::microseconds(100 * (dataset.size() % 5)));
            log.end(dataset);
            return CompletionCallback(outcomes(dataset));
          },
      .max_workers = workers,
  });
  tree.process_datasets_in_parallel();
  return log;
}

}  // namespace

TEST_CASE("docs/semantics.md §5 row 1: the barrier waits for both children; nested jobs follow") {
  const std::vector<std::string> datasets{"a/b/c", "a/b/c/0d", "a/b/c/1d", "a/b/c/~/prune", "a/b/c/~/prune/monitor"};
  const auto run = run_inline(datasets);
  CHECK(run.order.size() == 5);
  CHECK(before(run, "a/b/c/0d", "a/b/c/~/prune"));
  CHECK(before(run, "a/b/c/1d", "a/b/c/~/prune"));
  CHECK(before(run, "a/b/c/~/prune", "a/b/c/~/prune/monitor"));
  CHECK_FALSE(run.failed);
  SECTION("also under real concurrency") {
    for (int round = 0; round < 20; ++round) {
      const auto log = run_on_pool(datasets, Outcomes{});
      CHECK(log.started().size() == 5);
      CHECK(log.ended_before_start("a/b/c/0d", "a/b/c/~/prune"));
      CHECK(log.ended_before_start("a/b/c/1d", "a/b/c/~/prune"));
      CHECK(log.ended_before_start("a/b/c/~/prune", "a/b/c/~/prune/monitor"));
    }
  }
}

TEST_CASE("docs/semantics.md §5 row 2: a skip below the barrier keeps it closed; siblings still run") {
  Outcomes outcomes;
  outcomes.by_name["a/b/c/0d"] = skip;
  const auto run = run_inline({"a/b/c", "a/b/c/0d", "a/b/c/1d", "a/b/c/~/prune", "a/b/c/~/prune/monitor"}, outcomes);
  CHECK(run.order == std::vector<std::string>{"a/b/c", "a/b/c/0d", "a/b/c/1d"});
  CHECK(run.stats.skipped == 2);
  CHECK(run.stats.cancelled == 0);
  CHECK_FALSE(run.failed);
  SECTION("whichever of the two finishes last") {
    outcomes.by_name.clear();
    outcomes.by_name["a/b/c/1d"] = skip;
    const auto other =
        run_inline({"a/b/c", "a/b/c/0d", "a/b/c/1d", "a/b/c/~/prune", "a/b/c/~/prune/monitor"}, outcomes);
    CHECK(other.order == std::vector<std::string>{"a/b/c", "a/b/c/0d", "a/b/c/1d"});
  }
}

TEST_CASE("docs/semantics.md §5 row 3: a skip inside a nested barrier keeps every enclosing barrier closed") {
  const std::vector<std::string> datasets{"x", "x/node", "x/node/child", "x/node/~/bar/fail", "x/other", "x/~/after"};
  Outcomes outcomes;
  outcomes.by_name["x/node/~/bar/fail"] = skip;
  SECTION("with one worker") {
    const auto run = run_inline(datasets, outcomes);
    CHECK(ran(run, "x/node/~/bar/fail"));
    CHECK(ran(run, "x/other"));
    CHECK_FALSE(ran(run, "x/~/after"));
    CHECK(run.stats.skipped == 1);
  }
  SECTION("even if x/other finishes last") {
    // Make x/other the last job to complete: it waits until the skip has been processed.
    std::atomic<bool> skip_done = false;
    std::atomic<bool> after_ran = false;
    WorkerChecks workers;
    ParallelTaskTree tree({
        .datasets = datasets,
        .process_dataset =
            [&](std::string_view dataset, std::int64_t) {
              if (dataset == "x/other") workers.eventually([&] { return skip_done.load(); });
              if (dataset == "x/~/after") after_ran = true;
              const bool skipping = dataset == "x/node/~/bar/fail";
              return CompletionCallback([&, skipping](tasktree::InFlight&) {
                if (skipping) skip_done = true;
                return CompletionCallbackResult{.no_skip = !skipping, .fail = false};
              });
            },
        .max_workers = 2,
    });
    CHECK(tree.default_executor_is_parallel());
    CHECK_FALSE(tree.process_datasets_in_parallel());
    CHECK_FALSE(after_ran.load());
    CHECK(tree.last_run_stats().skipped == 1);
    CHECK(workers.failures() == 0);
  }
}

TEST_CASE("docs/semantics.md §5 row 4: a barrier under an intermediate node waits for its siblings") {
  const auto run = run_inline({"a/b/before", "a/b/~/after"});
  CHECK(run.order == std::vector<std::string>{"a/b/before", "a/b/~/after"});
  const auto log = run_on_pool({"a/b/before", "a/b/~/after", "a/c"}, Outcomes{});
  CHECK(log.ended_before_start("a/b/before", "a/b/~/after"));
}

TEST_CASE("docs/semantics.md §5 row 5: a barrier that is the only child opens right after its parent") {
  const auto run = run_inline({"root", "root/~/after"});
  CHECK(run.order == std::vector<std::string>{"root", "root/~/after"});
  SECTION("an only-child barrier directly under the root opens at the start") {
    CHECK(run_inline({"~/first", "~/first/next"}).order == std::vector<std::string>{"~/first", "~/first/next"});
  }
  SECTION("a job's skip keeps its only-child barrier's jobs from running") {
    Outcomes outcomes;
    outcomes.by_name["root"] = skip;
    CHECK(run_inline({"root", "root/~/after"}, outcomes).order == std::vector<std::string>{"root"});
  }
}

TEST_CASE("barriers nest: X/~/~ waits for everything in X/~ outside it") {
  const std::vector<std::string> datasets{"x",           "x/a",        "x/b",       "x/~/prune",
                                          "x/~/prune/y", "x/~/~/done", "x/~/~/~/z", "x/~/~/done/w"};
  const auto run = run_inline(datasets);
  CHECK(run.order.size() == datasets.size());
  for (const char* first : {"x/a", "x/b"}) CHECK(before(run, first, "x/~/prune"));
  CHECK(before(run, "x/~/prune/y", "x/~/~/done"));
  CHECK(before(run, "x/~/~/done/w", "x/~/~/~/z"));
  SECTION("on a pool") {
    for (int round = 0; round < 10; ++round) {
      const auto log = run_on_pool(datasets, Outcomes{});
      CHECK(log.started().size() == datasets.size());
      CHECK(log.ended_before_start("x/a", "x/~/prune"));
      CHECK(log.ended_before_start("x/b", "x/~/prune"));
      CHECK(log.ended_before_start("x/~/prune/y", "x/~/~/done"));
      CHECK(log.ended_before_start("x/~/~/done/w", "x/~/~/~/z"));
    }
  }
  SECTION("a skip in the first stage keeps the later stages closed") {
    Outcomes outcomes;
    outcomes.by_name["x/~/prune/y"] = skip;
    const auto skipped = run_inline(datasets, outcomes);
    CHECK(skipped.order == std::vector<std::string>{"x", "x/a", "x/b", "x/~/prune", "x/~/prune/y"});
    CHECK(skipped.stats.skipped == 3);
  }
}

TEST_CASE("a top-level barrier waits for every other job") {
  const std::vector<std::string> datasets{"a", "a/b", "c/d", "~/report"};
  const auto run = run_inline(datasets);
  CHECK(run.order.back() == "~/report");
  Outcomes outcomes;
  outcomes.by_name["c/d"] = skip;
  const auto skipped = run_inline(datasets, outcomes);
  CHECK(skipped.order == std::vector<std::string>{"a", "a/b", "c/d"});
  CHECK(skipped.stats.skipped == 1);
}

TEST_CASE("a job with both children and a barrier: the barrier also waits for the job's descendants") {
  const std::vector<std::string> datasets{"h/snap", "h/snap/r1", "h/snap/r1/verify", "h/snap/r2", "h/snap/~/prune"};
  const auto run = run_inline(datasets);
  CHECK(before(run, "h/snap/r1/verify", "h/snap/~/prune"));
  CHECK(before(run, "h/snap/r2", "h/snap/~/prune"));
  const auto log = run_on_pool(datasets, Outcomes{});
  CHECK(log.ended_before_start("h/snap/r1/verify", "h/snap/~/prune"));
  CHECK(log.ended_before_start("h/snap/r2", "h/snap/~/prune"));
  SECTION("a skipped job inside keeps the barrier closed even though its children never ran") {
    Outcomes outcomes;
    outcomes.by_name["h/snap/r1"] = skip;
    const auto skipped = run_inline(datasets, outcomes);
    CHECK(skipped.order == std::vector<std::string>{"h/snap", "h/snap/r1", "h/snap/r2"});
    CHECK(skipped.stats.skipped == 2);
  }
}

TEST_CASE("a skip in one subtree leaves the barriers of unrelated subtrees alone") {
  const std::vector<std::string> datasets{"h1/snap", "h1/snap/r1", "h1/snap/r2", "h1/snap/~/prune",
                                          "h2/snap", "h2/snap/r1", "h2/snap/r2", "h2/snap/~/prune"};
  Outcomes outcomes;
  outcomes.by_name["h2/snap/r2"] = skip;
  const auto run = run_inline(datasets, outcomes);
  CHECK(ran(run, "h1/snap/~/prune"));
  CHECK_FALSE(ran(run, "h2/snap/~/prune"));
  CHECK(run.stats.skipped == 1);
  CHECK_FALSE(run.failed);
}

TEST_CASE("forcing barriers on barrier-free input gives exactly the simple schedule") {
  std::mt19937 random(2024);
  for (int round = 0; round < 200; ++round) {
    // A random forest of up to 40 datasets, some intermediate nodes, random skips.
    std::set<std::string> names;
    const int count = 1 + static_cast<int>(random() % 40);
    while (static_cast<int>(names.size()) < count) {
      std::string name;
      const int depth = 1 + static_cast<int>(random() % 4);
      for (int level = 0; level < depth; ++level) {
        if (level > 0) name += '/';
        name += static_cast<char>('a' + random() % 3);
        if (random() % 5 == 0) name += "-x";
      }
      names.insert(name);
    }
    Outcomes outcomes;
    for (const auto& name : names) {
      if (random() % 6 == 0) outcomes.by_name[name] = {.no_skip = false, .fail = random() % 2 == 0};
    }
    const std::vector<std::string> datasets(names.begin(), names.end());
    const auto simple = run_inline(datasets, outcomes);
    const auto barrier = run_inline(datasets, outcomes, true);
    CAPTURE(datasets);
    CHECK(simple.order == barrier.order);
    CHECK(simple.failed == barrier.failed);
    CHECK(simple.stats == barrier.stats);
  }
}
