// Tests for include/tasktree/parallel_task_tree.hpp: the scheduling contract of docs/semantics.md §4,
// input validation (section 3), reuse, errors and termination.

#include "catch.hpp"
#include "support.hpp"

#include <tasktree/tasktree.hpp>

#include <algorithm>
#include <atomic>
#include <latch>
#include <optional>
#include <random>
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

CompletionCallback ok_callback() { return CompletionCallbackResult{.no_skip = true, .fail = false}; }

/// The message of the `std::invalid_argument` thrown when constructing and running with
/// `options` ("no exception" if none); checks that no job ran if it threw.
template <class E = tasktree::DefaultExecutor>
std::string rejection(tasktree::Options<E> options) {
  auto ran = std::make_shared<std::atomic<int>>(0);
  if (options.process_dataset) {
    options.process_dataset = [ran](std::string_view, std::int64_t) {
      ++*ran;
      return ok_callback();
    };
  }
  std::string message = "no exception";
  try {
    ParallelTaskTree<E> tree(std::move(options));
    tree.process_datasets_in_parallel();
  } catch (const std::invalid_argument& e) {
    message = e.what();
    CHECK(ran->load() == 0);
  }
  return message;
}

tasktree::Options<> options_for(std::vector<std::string> datasets) {
  return {.datasets = std::move(datasets),
          .process_dataset = [](std::string_view, std::int64_t) { return ok_callback(); }};
}

}  // namespace

TEST_CASE("the minimal use of docs/semantics.md §7 runs every dataset and reports success") {
  std::mutex mutex;
  std::vector<std::string> seen;
  ParallelTaskTree tree({
      .datasets = {"a", "a/b", "a/b/c", "a/d", "e"},
      .process_dataset =
          [&](std::string_view dataset, std::int64_t) {
            std::lock_guard lock(mutex);
            seen.emplace_back(dataset);
            return CompletionCallback(
                [](InFlight&) { return CompletionCallbackResult{.no_skip = true, .fail = false}; });
          },
      .max_workers = 2,
  });
  static_assert(std::is_same_v<decltype(tree), ParallelTaskTree<tasktree::DefaultExecutor>>);
  CHECK_FALSE(tree.process_datasets_in_parallel());
  std::sort(seen.begin(), seen.end());
  CHECK(seen == std::vector<std::string>{"a", "a/b", "a/b/c", "a/d", "e"});
}

TEST_CASE("with one worker jobs run in exact priority order, parents first") {
  const auto run = run_inline({"a", "a/b", "a/b/c", "a/d", "e"});
  CHECK(run.order == std::vector<std::string>{"a", "a/b", "a/b/c", "a/d", "e"});
  CHECK_FALSE(run.failed);
  SECTION("a smaller job that becomes available later still goes first") {
    // After "b" completes, "b/a" (< "c") becomes available and runs before "c".
    CHECK(run_inline({"b", "b/a", "c"}).order == std::vector<std::string>{"b", "b/a", "c"});
    // "a/z" only becomes available after "a", but "a" < "b", so "a/z" (< "b") runs second.
    CHECK(run_inline({"a", "a/z", "b"}).order == std::vector<std::string>{"a", "a/z", "b"});
  }
}

TEST_CASE("intermediate nodes pass straight through to the nearest jobs") {
  // No job "a/b": "a/b/c" becomes available as soon as "a" completes.
  const auto run = run_inline({"a", "a/b/c", "z"});
  CHECK(run.order == std::vector<std::string>{"a", "a/b/c", "z"});
  SECTION("jobs without any ancestor job are roots, available at the start") {
    EventLog log;
    ParallelTaskTree<tasktree::SynchronousExecutor> tree({
        .datasets = {"x/a", "y/b/c"},
        .process_dataset =
            [&](std::string_view dataset, std::int64_t) {
              log.start(dataset);
              return ok_callback();
            },
        .max_workers = 1,
    });
    CHECK_FALSE(tree.process_datasets_in_parallel());
    CHECK(log.started() == std::set<std::string>{"x/a", "y/b/c"});
  }
}

TEST_CASE("the input order never changes the schedule") {
  const std::vector<std::string> sorted{"a",    "a-b", "a.c", "a/b",     "a/b/c", "a/b/d/e",
                                        "a/b0", "b",   "b/x", "b/x/y/z", "c/d",   "c/d-e/f"};
  const auto expected = run_inline(sorted).order;
  std::mt19937 random(12345);
  for (int round = 0; round < 20; ++round) {
    auto shuffled = sorted;
    std::shuffle(shuffled.begin(), shuffled.end(), random);
    CHECK(run_inline(shuffled).order == expected);
  }
}

TEST_CASE("a completion with no_skip = false skips exactly the job's subtree") {
  Outcomes outcomes;
  outcomes.by_name["a/b"] = {.no_skip = false, .fail = false};
  const auto run = run_inline({"a", "a/b", "a/b/c", "a/b/c/d", "a/bb", "a/d", "e", "e/f"}, outcomes);
  CHECK(run.order == std::vector<std::string>{"a", "a/b", "a/bb", "a/d", "e", "e/f"});
  CHECK_FALSE(run.failed);
  CHECK(run.stats.skipped == 2);
  CHECK(run.stats.started == 6);
}

TEST_CASE("fail = true makes the run return true but the run continues") {
  Outcomes outcomes;
  outcomes.by_name["a"] = {.no_skip = true, .fail = true};
  const auto run = run_inline({"a", "a/b", "c"}, outcomes);
  CHECK(run.order == std::vector<std::string>{"a", "a/b", "c"});
  CHECK(run.failed);
  SECTION("skip and fail together") {
    outcomes.by_name["a"] = {.no_skip = false, .fail = true};
    const auto skipped = run_inline({"a", "a/b", "c"}, outcomes);
    CHECK(skipped.order == std::vector<std::string>{"a", "c"});
    CHECK(skipped.failed);
  }
  SECTION("a fail anywhere is remembered to the end") {
    outcomes.by_name.clear();
    outcomes.by_name["c"] = {.no_skip = true, .fail = true};
    CHECK(run_inline({"a", "a/b", "c", "d"}, outcomes).failed);
  }
}

TEST_CASE("an empty dataset list runs nothing and returns false") {
  int calls = 0;
  ParallelTaskTree tree({.datasets = {}, .process_dataset = [&](std::string_view, std::int64_t) {
                           ++calls;
                           return ok_callback();
                         }});
  CHECK_FALSE(tree.process_datasets_in_parallel());
  CHECK(calls == 0);
}

TEST_CASE("submit_count counts submissions in a run from 1, afresh in every run") {
  std::vector<std::int64_t> counts;
  ParallelTaskTree<tasktree::SynchronousExecutor> tree({
      .datasets = {"a", "a/b", "c"},
      .process_dataset =
          [&](std::string_view, std::int64_t submit_count) {
            counts.push_back(submit_count);
            return ok_callback();
          },
      .max_workers = 1,
  });
  tree.process_datasets_in_parallel();
  tree.process_datasets_in_parallel();
  CHECK(counts == std::vector<std::int64_t>{1, 2, 3, 1, 2, 3});
}

TEST_CASE("in-flight jobs never exceed max_workers and reach it when work allows") {
  for (const int workers : {1, 2, 3, 8}) {
    CAPTURE(workers);
    ConcurrencyMeter meter;
    WorkerChecks checks;
    std::latch all_running(workers);
    std::vector<std::string> datasets;
    for (int i = 0; i < 40; ++i) datasets.push_back(fmt::format("pool/{:02}", i));
    ParallelTaskTree tree({
        .datasets = datasets,
        .process_dataset =
            [&](std::string_view dataset, std::int64_t submit_count) {
              meter.enter();
              if (submit_count <= workers) {
                // The first `workers` jobs wait for each other: this only finishes if they really
                // run at the same time.
                all_running.count_down();
                checks.eventually([&] { return all_running.try_wait(); });
              } else {
                std::this_thread::sleep_for(std::chrono::microseconds(dataset.back() % 3 * 100));
              }
              meter.leave();
              return ok_callback();
            },
        .max_workers = workers,
    });
    CHECK_FALSE(tree.process_datasets_in_parallel());
    CHECK(meter.peak() == workers);
    CHECK(checks.failures() == 0);
  }
}

TEST_CASE("several jobs found finished at once get their callbacks in name order") {
  std::vector<std::string> callbacks;
  std::vector<std::vector<std::string>> views;
  ParallelTaskTree<BatchingExecutor> tree({
      .datasets = {"d", "b", "a", "c"},
      .process_dataset =
          [&](std::string_view dataset, std::int64_t) {
            return CompletionCallback([&, name = std::string(dataset)](InFlight& in_flight) {
              callbacks.push_back(name);
              std::vector<std::string> others(in_flight.begin(), in_flight.end());
              std::sort(others.begin(), others.end());
              CHECK(others.size() == in_flight.size());
              views.push_back(others);
              return CompletionCallbackResult{};
            });
          },
      .max_workers = 4,
      .executors = [] { return BatchingExecutor{.batch = 4}; },
  });
  CHECK_FALSE(tree.process_datasets_in_parallel());
  // The executor ran them d, c, b, a; the callbacks still come a, b, c, d, and each sees the
  // jobs whose callbacks have not run yet as in flight.
  CHECK(callbacks == std::vector<std::string>{"a", "b", "c", "d"});
  CHECK(views == std::vector<std::vector<std::string>>{{"b", "c", "d"}, {"c", "d"}, {"d"}, {}});
}

TEST_CASE("one tree runs many times, each run fresh") {
  std::atomic<int> factory_calls = 0;
  std::atomic<int> jobs = 0;
  bool fail_first = true;
  ParallelTaskTree tree({
      .datasets = {"a", "a/b", "c", "c/d"},
      .process_dataset =
          [&](std::string_view dataset, std::int64_t) {
            ++jobs;
            const bool fail = fail_first && dataset == "a";
            return CompletionCallback(CompletionCallbackResult{.no_skip = !fail, .fail = fail});
          },
      .max_workers = 2,
      .executors =
          [&] {
            ++factory_calls;
            return tasktree::DefaultExecutor(2, true);
          },
  });
  CHECK(tree.process_datasets_in_parallel());  // "a" fails and skips "a/b"
  CHECK(jobs == 3);
  CHECK(tree.last_run_stats().skipped == 1);
  fail_first = false;
  CHECK_FALSE(tree.process_datasets_in_parallel());
  CHECK(jobs == 3 + 4);
  CHECK(tree.last_run_stats().skipped == 0);
  CHECK(factory_calls == 2);
}

TEST_CASE("a chain 100,000 levels deep runs without recursion") {
  // Jobs at a few depths down a 100,000-level chain; the levels between are intermediate nodes
  // that every completion walks through (a job at every level would need 10 GB of names).
  constexpr std::size_t depth = 100'000;
  std::string deepest = "n";
  for (std::size_t i = 1; i < depth; ++i) deepest += "/n";
  std::vector<std::string> datasets;
  for (const std::size_t level : {std::size_t{1}, std::size_t{2}, depth / 2, depth - 1, depth}) {
    datasets.push_back(deepest.substr(0, 2 * level - 1));
  }
  const std::vector<std::string> expected = datasets;
  for (const std::optional<bool> barriers : {std::optional<bool>{}, std::optional<bool>{true}}) {
    std::vector<std::string> order;
    ParallelTaskTree tree({
        .datasets = datasets,
        .process_dataset =
            [&](std::string_view dataset, std::int64_t) {
              order.emplace_back(dataset);
              return ok_callback();
            },
        .max_workers = 4,  // a chain has no siblings: the default executor runs it inline
        .enable_barriers = barriers,
    });
    CHECK(tree.barriers_enabled() == barriers.has_value());
    CHECK_FALSE(tree.default_executor_is_parallel());
    CHECK_FALSE(tree.process_datasets_in_parallel());
    CHECK(order == expected);
  }
  SECTION("a barrier at the bottom of the chain waits for the deepest job") {
    datasets.push_back(deepest + "/~/after");
    datasets.push_back(deepest + "/x");
    const auto run = run_inline(datasets);
    CHECK(run.order.size() == datasets.size());
    CHECK(run.order.back() == deepest + "/~/after");
  }
}

TEST_CASE("on a thread pool every job runs exactly once and after its parent") {
  std::vector<std::string> datasets;
  for (int a = 0; a < 10; ++a) {
    datasets.push_back(fmt::format("p{}", a));
    for (int b = 0; b < 10; ++b) {
      datasets.push_back(fmt::format("p{}/c{}", a, b));
      for (int c = 0; c < 5; ++c) datasets.push_back(fmt::format("p{}/c{}/g{}", a, b, c));
    }
  }
  EventLog log;
  std::atomic<int> runs = 0;
  ParallelTaskTree tree({
      .datasets = datasets,
      .process_dataset =
          [&](std::string_view dataset, std::int64_t) {
            ++runs;
            log.start(dataset);
            log.end(dataset);
            return ok_callback();
          },
      .max_workers = 4,
  });
  CHECK(tree.default_executor_is_parallel());
  CHECK_FALSE(tree.process_datasets_in_parallel());
  CHECK(runs == static_cast<int>(datasets.size()));
  CHECK(log.start_count() == datasets.size());
  for (const std::string& dataset : datasets) {
    const auto slash = dataset.rfind('/');
    if (slash != std::string::npos) CHECK(log.ended_before_start(dataset.substr(0, slash), dataset));
  }
}

TEST_CASE("invalid options are rejected before anything runs, naming the value") {
  using Catch::Matchers::Equals;
  auto with = [](std::vector<std::string> datasets) { return options_for(std::move(datasets)); };
  CHECK_THAT(rejection(with({"a", ""})), Equals("tasktree: invalid dataset name \"\": it is empty"));
  CHECK_THAT(rejection(with({"/a"})), Equals("tasktree: invalid dataset name \"/a\": it starts with '/'"));
  CHECK_THAT(rejection(with({"a/b/"})), Equals("tasktree: invalid dataset name \"a/b/\": it ends with '/'"));
  CHECK_THAT(rejection(with({"a//b"})), Equals("tasktree: invalid dataset name \"a//b\": it has an empty component"));
  CHECK_THAT(rejection(with({"b", "a", "b"})), Equals("tasktree: duplicate dataset name \"b\""));
  CHECK_THAT(rejection(with({"a", "a/~"})),
             Equals("tasktree: invalid dataset name \"a/~\": its last component is the barrier name \"~\", so it "
                    "could never run"));
  auto zero_workers = with({"a"});
  zero_workers.max_workers = 0;
  CHECK_THAT(rejection(zero_workers), Equals("tasktree: invalid max_workers 0: it must be at least 1"));
  auto negative_workers = with({"a"});
  negative_workers.max_workers = -3;
  CHECK_THAT(rejection(negative_workers), Equals("tasktree: invalid max_workers -3: it must be at least 1"));
  auto empty_barrier = with({"a"});
  empty_barrier.barrier_name = "";
  CHECK_THAT(rejection(empty_barrier), Equals("tasktree: invalid barrier_name \"\": it must not be empty"));
  auto slash_barrier = with({"a"});
  slash_barrier.barrier_name = "a/b";
  CHECK_THAT(rejection(slash_barrier), Equals("tasktree: invalid barrier_name \"a/b\": it must not contain '/'"));
  auto disabled_barriers = with({"x", "x/~/y"});
  disabled_barriers.enable_barriers = false;
  CHECK_THAT(rejection(disabled_barriers),
             Equals("tasktree: enable_barriers is false but dataset \"x/~/y\" contains the barrier component \"~\""));
  auto custom_barrier = with({"x", "x/~/y"});
  custom_barrier.barrier_name = "B";
  custom_barrier.enable_barriers = false;
  CHECK_THAT(rejection(custom_barrier), Equals("no exception"));  // "~" is not the barrier here
  auto no_job = with({"a"});
  no_job.process_dataset = {};
  CHECK_THAT(rejection(no_job), Equals("tasktree: process_dataset is not set"));
}

TEST_CASE("a callback that returns an empty CompletionCallback is an error naming the dataset") {
  ParallelTaskTree<tasktree::SynchronousExecutor> tree({
      .datasets = {"a", "b"},
      .process_dataset =
          [](std::string_view dataset, std::int64_t) {
            return dataset == "b" ? CompletionCallback() : CompletionCallback(CompletionCallbackResult{});
          },
      .max_workers = 1,
  });
  CHECK_THROWS_WITH(tree.process_datasets_in_parallel(),
                    "tasktree: process_dataset returned an empty CompletionCallback for dataset \"b\"");
}

// ---------------------------------------------------------------------------------------------
// Exceptions (docs/semantics.md §4.9): whatever throws, in-flight jobs finish first, then the first exception
// reaches the caller, and the tree stays usable.

namespace {

struct Boom : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// Runs a tree where "slow1" and "slow2" are in flight when `where` throws for dataset "bad".
/// Returns the exception message; checks that the slow jobs were asked to stop and had
/// returned before the exception reached us.
std::string throw_while_others_in_flight(const std::string& where) {
  std::atomic<int> slow_started = 0;
  std::atomic<int> slow_returned = 0;
  std::atomic<int> slow_saw_stop = 0;
  WorkerChecks workers;
  auto options = tasktree::Options<>{
      .datasets = {"bad", "slow1", "slow2", "slow2/child"},
      .process_dataset =
          [&](std::string_view dataset, std::int64_t, std::stop_token stop) {
            if (dataset.starts_with("slow")) {
              ++slow_started;
              // Stay in flight until the run asks us to stop.
              workers.eventually([&] { return stop.stop_requested(); });
              ++slow_saw_stop;
              std::this_thread::sleep_for(std::chrono::milliseconds(20));
              ++slow_returned;
              return ok_callback();
            }
            workers.eventually([&] { return slow_started.load() == 2; });
            if (where == "job") throw Boom("job failed");
            if (where == "callback") {
              return CompletionCallback([](InFlight& in_flight) -> CompletionCallbackResult {
                CHECK(in_flight.size() == 2);
                throw Boom("callback failed");
              });
            }
            return ok_callback();
          },
      .max_workers = 3,
  };
  if (where == "priority") {
    // Called for "slow2/child"? No: it never becomes available. Throw when "bad"'s children...
    // "bad" has none, so throw on the third priority call instead (after all three roots).
    auto calls = std::make_shared<int>(0);
    options.datasets.push_back("bad/child");
    options.priority = [calls](std::string_view dataset) {
      if (dataset == "bad/child") throw Boom("priority failed");
      return std::string(dataset);
    };
  }
  std::string message = "no exception";
  ParallelTaskTree tree(std::move(options));
  try {
    tree.process_datasets_in_parallel();
  } catch (const Boom& e) {
    message = e.what();
    CHECK(slow_returned.load() == 2);  // both had finished before the exception reached us
    CHECK(slow_saw_stop.load() == 2);
  }
  const auto stats = tree.last_run_stats();
  CHECK(stats.started + stats.skipped + stats.cancelled == stats.total);
  CHECK(workers.failures() == 0);
  return message;
}

}  // namespace

TEST_CASE("an exception from a job is rethrown after the in-flight jobs have returned") {
  CHECK(throw_while_others_in_flight("job") == "job failed");
}

TEST_CASE("an exception from a completion callback is rethrown after the in-flight jobs have returned") {
  CHECK(throw_while_others_in_flight("callback") == "callback failed");
}

TEST_CASE("an exception from priority is rethrown after the in-flight jobs have returned") {
  CHECK(throw_while_others_in_flight("priority") == "priority failed");
}

TEST_CASE("the first of several exceptions wins and the tree stays usable") {
  std::atomic<bool> throwing = true;
  std::atomic<int> ran = 0;
  ParallelTaskTree tree({
      .datasets = {"a", "b", "c", "d"},
      .process_dataset =
          [&](std::string_view dataset, std::int64_t) {
            ++ran;
            if (throwing) throw Boom(std::string(dataset));
            return ok_callback();
          },
      .max_workers = 1,
  });
  CHECK_THROWS_WITH(tree.process_datasets_in_parallel(), "a");
  CHECK(ran == 1);  // nothing else was submitted after the error
  CHECK(tree.last_run_stats().cancelled == 3);
  throwing = false;
  ran = 0;
  CHECK_FALSE(tree.process_datasets_in_parallel());
  CHECK(ran == 4);
}

TEST_CASE("non-std exceptions are rethrown unchanged") {
  ParallelTaskTree<tasktree::SynchronousExecutor> tree({
      .datasets = {"a"},
      .process_dataset = [](std::string_view, std::int64_t) -> CompletionCallback { throw 42; },
      .max_workers = 1,
  });
  CHECK_THROWS_AS(tree.process_datasets_in_parallel(), int);
}

// ---------------------------------------------------------------------------------------------
// Termination (docs/semantics.md §4.8)

TEST_CASE("a stop requested before the run starts runs nothing and returns true") {
  std::stop_source source;
  source.request_stop();
  int ran = 0;
  auto options = options_for({"a", "b"});
  options.process_dataset = [&](std::string_view, std::int64_t) {
    ++ran;
    return ok_callback();
  };
  options.stop_token = source.get_token();
  ParallelTaskTree tree(std::move(options));
  CHECK(tree.process_datasets_in_parallel());
  CHECK(ran == 0);
  CHECK(tree.last_run_stats().cancelled == 2);
  SECTION("with nothing to do, a stopped run has no work left and returns false") {
    ParallelTaskTree empty({.datasets = {},
                            .process_dataset = [](std::string_view, std::int64_t) { return ok_callback(); },
                            .stop_token = source.get_token()});
    CHECK_FALSE(empty.process_datasets_in_parallel());
  }
}

TEST_CASE("a stop during a run stops submissions, signals running jobs and waits for them") {
  std::stop_source source;
  std::atomic<bool> stopping_run = true;
  WorkerChecks workers;
  std::atomic<int> started = 0;
  std::atomic<int> returned = 0;
  std::vector<std::string> datasets;
  for (int i = 0; i < 50; ++i) datasets.push_back(fmt::format("job{:02}", i));
  ParallelTaskTree tree({
      .datasets = datasets,
      .process_dataset =
          [&](std::string_view, std::int64_t, std::stop_token stop) {
            if (stopping_run) {
              if (++started == 2) source.request_stop();  // the caller stops the run mid-way
              workers.eventually([&] { return stop.stop_requested(); });
              ++returned;
            }
            return ok_callback();
          },
      .max_workers = 2,
  });
  CHECK(tree.process_datasets_in_parallel(source.get_token()));
  CHECK(started.load() == returned.load());  // every started job had returned
  CHECK(started.load() <= 2);
  const auto stats = tree.last_run_stats();
  CHECK(stats.started == static_cast<std::size_t>(started.load()));
  CHECK(stats.completed == 0);
  CHECK(stats.cancelled == datasets.size() - stats.started);
  CHECK(workers.failures() == 0);
  SECTION("the next run with a fresh token runs everything") {
    stopping_run = false;
    CHECK_FALSE(tree.process_datasets_in_parallel(std::stop_source().get_token()));
    CHECK(tree.last_run_stats().completed == datasets.size());
  }
}

TEST_CASE("a callback's request_stop cancels in-flight jobs and ends the run with true") {
  std::atomic<int> ran = 0;
  ParallelTaskTree<BatchingExecutor> tree({
      .datasets = {"a", "b", "c", "d", "e"},
      .process_dataset =
          [&](std::string_view dataset, std::int64_t) {
            ++ran;
            return CompletionCallback([name = std::string(dataset)](InFlight& in_flight) {
              if (name == "a") {
                CHECK_FALSE(in_flight.stop_requested());
                in_flight.request_stop();
                CHECK(in_flight.stop_requested());
              }
              return CompletionCallbackResult{};
            });
          },
      .max_workers = 2,
      .executors = [] { return BatchingExecutor{.batch = 2}; },
  });
  CHECK(tree.process_datasets_in_parallel());
  CHECK(ran == 2);  // "a" and "b" ran together; nothing was submitted after the stop
  const auto stats = tree.last_run_stats();
  CHECK(stats.completed == 1);  // "b"'s callback did not run
  CHECK(stats.started == 2);
  CHECK(stats.cancelled == 3);
}

TEST_CASE("a stop requested by a job running inline leaves its completion unprocessed") {
  std::stop_source source;
  std::vector<std::string> completed;
  ParallelTaskTree<tasktree::SynchronousExecutor> tree({
      .datasets = {"a", "b", "c"},
      .process_dataset =
          [&](std::string_view dataset, std::int64_t) {
            if (dataset == "b") source.request_stop();
            return CompletionCallback([&completed, name = std::string(dataset)](InFlight&) {
              completed.push_back(name);
              return CompletionCallbackResult{};
            });
          },
      .max_workers = 1,
  });
  CHECK(tree.process_datasets_in_parallel(source.get_token()));
  CHECK(completed == std::vector<std::string>{"a"});
  const auto stats = tree.last_run_stats();
  CHECK(stats.started == 2);
  CHECK(stats.completed == 1);
  CHECK(stats.cancelled == 1);
}

TEST_CASE("jobs submitted but not yet started when a stop comes never run") {
  // One pool thread, two slots: while "a" runs, "b" waits in the pool's queue.
  std::atomic<int> ran_b = 0;
  std::stop_source source;
  ParallelTaskTree tree({
      .datasets = {"a", "b"},
      .process_dataset =
          [&](std::string_view dataset, std::int64_t) {
            if (dataset == "a") {
              source.request_stop();
            } else {
              ++ran_b;
            }
            return ok_callback();
          },
      .max_workers = 2,
      .executors = [] { return tasktree::DefaultExecutor(1, true); },
  });
  CHECK(tree.process_datasets_in_parallel(source.get_token()));
  CHECK(ran_b == 0);
  CHECK(tree.last_run_stats().started == 1);
}

TEST_CASE("the options' stop token and the per-run token both stop a run") {
  std::stop_source options_source;
  std::stop_source run_source;
  auto options = options_for({"a"});
  options.stop_token = options_source.get_token();
  ParallelTaskTree tree(std::move(options));
  CHECK_FALSE(tree.process_datasets_in_parallel(run_source.get_token()));
  run_source.request_stop();
  CHECK(tree.process_datasets_in_parallel(run_source.get_token()));
  CHECK_FALSE(tree.process_datasets_in_parallel(std::stop_source().get_token()));
  options_source.request_stop();
  CHECK(tree.process_datasets_in_parallel(std::stop_source().get_token()));
  CHECK(tree.process_datasets_in_parallel());
}
