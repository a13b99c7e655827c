// Tests for include/tasktree/policy.hpp: the fault-tolerant policy layer. Retries run on a
// ManualClock with a fixed random source, so backoff schedules are exact and nothing sleeps for
// real; the few tests on real threads check behaviour, never timing.

#include "catch.hpp"
#include "support.hpp"

#include <tasktree/tasktree.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <system_error>
#include <thread>
#include <typeinfo>
#include <utility>
#include <vector>

using namespace tasktree_test;
using namespace std::chrono_literals;
using tasktree::FaultTolerantOptions;
using tasktree::FaultTolerantStats;
using tasktree::LogLevel;
using tasktree::ManualClock;
using tasktree::process_datasets_in_parallel_and_fault_tolerant;
using tasktree::Retry;
using tasktree::RunStats;
using tasktree::SkipOnError;
using tasktree::SynchronousExecutor;

namespace {

/// A job failure with its own type, to check that the run rethrows the very exception.
struct DiskFull : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct Transient : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct Permanent : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// Runs `f`; returns the message of the `Exception` it threw (of exactly that dynamic type), or a
/// marker saying what went wrong. Other exception types escape and fail the test.
template <class Exception, class F>
std::string message_of(F&& f) {
  try {
    f();
  } catch (const Exception& e) {
    if (typeid(e) != typeid(Exception)) return "<wrong dynamic type>";
    return e.what();
  }
  return "<nothing thrown>";
}

bool adds_up(const RunStats& stats) {
  return stats.started + stats.skipped + stats.cancelled == stats.total && stats.completed <= stats.started &&
         stats.succeeded + stats.failed == stats.completed;
}

/// Everything the policy tells the outside world, recorded thread-safely: which jobs ran (each
/// attempt), log lines, `append_exception` and `termination_handler` calls.
struct Recorder {
  mutable std::mutex mutex;
  std::vector<std::string> attempts;  // "dataset#retry.count"
  std::vector<std::string> tids;
  std::vector<std::pair<LogLevel, std::string>> lines;
  std::vector<std::string> appended;  // "task_name dataset: what"
  std::atomic<int> terminations{0};

  void attempt(std::string_view dataset, std::string_view tid, const Retry& retry) {
    std::lock_guard lock(mutex);
    attempts.push_back(fmt::format("{}#{}", dataset, retry.count));
    tids.emplace_back(tid);
  }
  [[nodiscard]] std::vector<std::string> ran() const {
    std::lock_guard lock(mutex);
    return attempts;
  }
  [[nodiscard]] bool logged(LogLevel level, std::string_view text) const {
    std::lock_guard lock(mutex);
    return std::any_of(lines.begin(), lines.end(), [&](const auto& line) {
      return line.first == level && line.second.find(text) != std::string::npos;
    });
  }

  /// Options wired to this recorder; the caller sets the job and the rest.
  template <class E = SynchronousExecutor>
  FaultTolerantOptions<E> options(std::vector<std::string> datasets) {
    return FaultTolerantOptions<E>{
        .datasets = std::move(datasets),
        .termination_handler = [this] { ++terminations; },
        .append_exception =
            [this](const std::exception_ptr& error, std::string_view task_name, std::string_view dataset) {
              std::lock_guard lock(mutex);
              appended.push_back(fmt::format("{} {}: {}", task_name, dataset, tasktree::detail::describe(error)));
            },
        .task_name = "replicate",
        .max_workers = 1,
        .log = tasktree::Logger{.sink =
                                    [this](LogLevel level, std::string_view message) {
                                      std::lock_guard lock(mutex);
                                      lines.emplace_back(level, std::string(message));
                                    },
                                .level = LogLevel::trace},
    };
  }

  /// A job that records the attempt and then returns `outcome(dataset, retry)`, which may throw.
  template <class Outcome>
  tasktree::FaultTolerantJob job(Outcome outcome) {
    return [this, outcome](std::string_view dataset, std::string_view tid, const Retry& retry) {
      attempt(dataset, tid, retry);
      return outcome(dataset, retry);
    };
  }
};

/// Throws `DiskFull(dataset)` for the datasets in `failing`, succeeds for the others.
auto fails_for(std::vector<std::string> failing) {
  return [failing = std::move(failing)](std::string_view dataset, const Retry&) {
    if (std::find(failing.begin(), failing.end(), dataset) != failing.end()) {
      throw DiskFull(fmt::format("disk full on {}", dataset));
    }
    return true;
  };
}

std::vector<std::string> first_attempts(const std::vector<std::string>& attempts) {
  std::vector<std::string> names;
  for (const std::string& attempt : attempts) {
    if (attempt.ends_with("#0")) names.push_back(attempt.substr(0, attempt.size() - 2));
  }
  return names;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Helpers

TEST_CASE("format_duration picks the unit, truncates to one decimal and drops zero parts") {
  using std::chrono::nanoseconds;
  using tasktree::format_duration;
  CHECK(format_duration(0ns) == "0ns");
  CHECK(format_duration(999ns) == "999ns");
  CHECK(format_duration(1000ns) == "1us");
  CHECK(format_duration(1500ns) == "1.5us");
  CHECK(format_duration(999'999ns) == "999.9us");  // truncated, never rounded up to "1000us"
  CHECK(format_duration(1'999'999ns) == "1.9ms");
  CHECK(format_duration(12'345'678'901ns) == "12.3s");
  CHECK(format_duration(59'999'999'999ns) == "59.9s");
  CHECK(format_duration(60s) == "1m");
  CHECK(format_duration(125s) == "2m 5s");
  CHECK(format_duration(3600s) == "1h");
  CHECK(format_duration(3725s) == "1h 2m");
  CHECK(format_duration(90'000s) == "1d 1h");
  CHECK(format_duration(-1500ns) == "-1.5us");
  CHECK(format_duration(nanoseconds::max()) == "106751d 23h");
  CHECK(format_duration(nanoseconds::min()) == "-106751d 23h");
}

TEST_CASE("skip_on_error modes have names and parse back; unknown names are rejected") {
  for (const SkipOnError mode : {SkipOnError::fail, SkipOnError::dataset, SkipOnError::tree}) {
    CHECK(tasktree::parse_skip_on_error(tasktree::to_string(mode)) == mode);
  }
  CHECK(tasktree::to_string(SkipOnError::dataset) == "dataset");
  CHECK_THROWS_WITH(tasktree::parse_skip_on_error("Tree"),
                    "tasktree: invalid skip_on_error \"Tree\": it must be \"fail\", \"dataset\" or \"tree\"");
}

TEST_CASE("exception_is matches the named types and types derived from them, nothing else") {
  const auto error_of = [](auto exception) { return std::make_exception_ptr(exception); };
  constexpr auto runtime = tasktree::exception_is<std::runtime_error>;
  CHECK(runtime(error_of(std::runtime_error("x"))));
  CHECK(runtime(error_of(DiskFull("x"))));
  CHECK_FALSE(runtime(error_of(std::logic_error("x"))));
  CHECK_FALSE(runtime(error_of(42)));
  CHECK_FALSE(runtime(nullptr));
  constexpr auto either = tasktree::exception_is<Transient, std::logic_error>;
  CHECK(either(error_of(Transient("x"))));
  CHECK(either(error_of(std::invalid_argument("x"))));
  CHECK_FALSE(either(error_of(Permanent("x"))));
}

// ---------------------------------------------------------------------------------------------
// Validation

TEST_CASE("invalid options are rejected naming the value, before anything runs") {
  Recorder recorder;
  auto options = recorder.options({"a", "a/b"});
  options.process_dataset = recorder.job(fails_for({}));
  FaultTolerantStats stats;
  stats.retries = 99;  // overwritten even when the options are rejected
  const auto rejected = [&](auto change) {
    auto changed = options;
    change(changed);
    std::string message;
    try {
      process_datasets_in_parallel_and_fault_tolerant(changed, stats);
    } catch (const std::invalid_argument& e) {
      message = e.what();
    }
    return message;
  };
  CHECK(rejected([](auto& o) { o.retry_policy.max_retries = -1; }) ==
        "tasktree: invalid retry_policy.max_retries -1: it must be at least 0");
  CHECK(rejected([](auto& o) { o.retry_policy.initial_backoff = -5ns; }) ==
        "tasktree: invalid retry_policy.initial_backoff -5ns: it must be at least 0");
  CHECK(rejected([](auto& o) {
          o.retry_policy.initial_backoff = 100ns;
          o.retry_policy.max_backoff = 99ns;
        }) == "tasktree: invalid retry_policy.max_backoff 99ns: it must be at least initial_backoff (100ns)");
  CHECK(rejected([](auto& o) { o.retry_policy.multiplier = 0.5; }) ==
        "tasktree: invalid retry_policy.multiplier 0.5: it must be at least 1");
  CHECK(rejected([](auto& o) { o.retry_policy.multiplier = std::nan(""); }) ==
        "tasktree: invalid retry_policy.multiplier nan: it must be at least 1");
  CHECK(rejected([](auto& o) { o.retry_policy.max_elapsed = -1s; }) ==
        "tasktree: invalid retry_policy.max_elapsed -1000000000ns: it must be at least 0");
  CHECK(rejected([](auto& o) { o.skip_on_error = static_cast<SkipOnError>(7); }) ==
        "tasktree: invalid skip_on_error 7: it must be fail, dataset or tree");
  CHECK(rejected([](auto& o) { o.process_dataset = nullptr; }) == "tasktree: process_dataset is not set");
  CHECK(rejected([](auto& o) { o.attempt_timeout = -1ns; }) ==
        "tasktree: invalid attempt_timeout -1ns: it must be at least 0 (0: none)");
  CHECK(rejected([](auto& o) { o.stall_interval = 0ns; }) ==
        "tasktree: invalid stall_interval 0ns: it must be positive");
  // What the core rejects is rejected here too.
  CHECK(rejected([](auto& o) { o.max_workers = 0; }) == "tasktree: invalid max_workers 0: it must be at least 1");
  CHECK(rejected([](auto& o) { o.datasets.push_back("a//c"); }).find("\"a//c\"") != std::string::npos);
  CHECK(recorder.ran().empty());
  CHECK(stats == FaultTolerantStats{});
}

// ---------------------------------------------------------------------------------------------
// Outcomes without errors

TEST_CASE("zero datasets: nothing runs, the run succeeds and the statistics are all zero") {
  Recorder recorder;
  auto options = recorder.options({});
  options.process_dataset = recorder.job(fails_for({}));
  FaultTolerantStats stats;
  CHECK_FALSE(process_datasets_in_parallel_and_fault_tolerant(options, stats));
  CHECK(recorder.ran().empty());
  CHECK(stats == FaultTolerantStats{});
}

TEST_CASE("all succeed: every dataset runs once, parents first, with tid submit_count/total") {
  Recorder recorder;
  auto options = recorder.options({"e", "a/d", "a", "a/b/c", "a/b"});
  options.process_dataset = recorder.job(fails_for({}));
  FaultTolerantStats stats;
  CHECK_FALSE(process_datasets_in_parallel_and_fault_tolerant(options, stats));
  CHECK(recorder.ran() == std::vector<std::string>{"a#0", "a/b#0", "a/b/c#0", "a/d#0", "e#0"});
  CHECK(recorder.tids == std::vector<std::string>{"1/5", "2/5", "3/5", "4/5", "5/5"});
  CHECK(stats.run == RunStats{.total = 5, .started = 5, .completed = 5, .succeeded = 5});
  CHECK(stats.retries == 0);
  CHECK(recorder.appended.empty());
  CHECK(recorder.terminations == 0);
}

TEST_CASE("all succeed on a thread pool: each dataset once, children after parents, every tid once") {
  std::vector<std::string> datasets;
  for (int host = 0; host < 8; ++host) {
    datasets.push_back(fmt::format("h{}", host));
    for (int child = 0; child < 5; ++child) datasets.push_back(fmt::format("h{}/c{}", host, child));
  }
  EventLog events;
  std::mutex mutex;
  std::vector<std::string> tids;
  FaultTolerantStats stats;
  const bool failed = process_datasets_in_parallel_and_fault_tolerant(
      {
          .datasets = datasets,
          .process_dataset =
              [&](std::string_view dataset, std::string_view tid, const Retry&) {
                events.start(dataset);
                {
                  std::lock_guard lock(mutex);
                  tids.emplace_back(tid);
                }
                events.end(dataset);
                return true;
              },
          .max_workers = 4,
      },
      stats);
  CHECK_FALSE(failed);
  CHECK(events.start_count() == datasets.size());
  for (int host = 0; host < 8; ++host) {
    for (int child = 0; child < 5; ++child) {
      CHECK(events.ended_before_start(fmt::format("h{}", host), fmt::format("h{}/c{}", host, child)));
    }
  }
  std::sort(tids.begin(), tids.end());
  std::vector<std::string> expected;
  for (std::size_t i = 1; i <= datasets.size(); ++i) expected.push_back(fmt::format("{}/{}", i, datasets.size()));
  std::sort(expected.begin(), expected.end());
  CHECK(tids == expected);
  CHECK(stats.run.succeeded == datasets.size());
  CHECK(adds_up(stats.run));
}

TEST_CASE("a job returning false skips exactly its subtree and is not a failure") {
  Recorder recorder;
  auto options = recorder.options({"a", "a/b", "a/b/c", "a/bc", "a/d", "e"});
  options.process_dataset = recorder.job([](std::string_view dataset, const Retry&) { return dataset != "a/b"; });
  FaultTolerantStats stats;
  CHECK_FALSE(process_datasets_in_parallel_and_fault_tolerant(options, stats));
  CHECK(recorder.ran() == std::vector<std::string>{"a#0", "a/b#0", "a/bc#0", "a/d#0", "e#0"});
  CHECK(stats.run == RunStats{.total = 6, .started = 5, .completed = 5, .succeeded = 5, .skipped = 1});
  CHECK_FALSE(recorder.logged(LogLevel::error, ""));
}

// ---------------------------------------------------------------------------------------------
// skip_on_error

TEST_CASE("dataset mode: the error is logged and appended, the run fails, the children still run") {
  Recorder recorder;
  auto options = recorder.options({"a", "a/b", "a/b/c", "d"});
  options.process_dataset = recorder.job(fails_for({"a/b"}));
  options.skip_on_error = SkipOnError::dataset;
  std::vector<std::string> asked;
  options.skip_tree_on_error = [&](std::string_view dataset) {
    asked.emplace_back(dataset);
    return false;
  };
  FaultTolerantStats stats;
  CHECK(process_datasets_in_parallel_and_fault_tolerant(options, stats));
  CHECK(recorder.ran() == std::vector<std::string>{"a#0", "a/b#0", "a/b/c#0", "d#0"});
  CHECK(asked == std::vector<std::string>{"a/b"});
  CHECK(recorder.appended == std::vector<std::string>{"replicate a/b: disk full on a/b"});
  CHECK(recorder.logged(LogLevel::error, "2/4 replicate failed: a/b: disk full on a/b"));
  CHECK(recorder.terminations == 0);
  CHECK(stats.run == RunStats{.total = 4, .started = 4, .completed = 4, .succeeded = 3, .failed = 1});
}

TEST_CASE("dataset mode: skip_tree_on_error true skips the failed dataset's subtree only") {
  Recorder recorder;
  auto options = recorder.options({"a", "a/b", "a/b/c", "a/b/c/d", "a/e", "f"});
  options.process_dataset = recorder.job(fails_for({"a/b"}));
  options.skip_on_error = SkipOnError::dataset;
  options.skip_tree_on_error = [](std::string_view dataset) { return dataset == "a/b"; };
  FaultTolerantStats stats;
  CHECK(process_datasets_in_parallel_and_fault_tolerant(options, stats));
  CHECK(recorder.ran() == std::vector<std::string>{"a#0", "a/b#0", "a/e#0", "f#0"});
  CHECK(recorder.appended == std::vector<std::string>{"replicate a/b: disk full on a/b"});
  CHECK(stats.run == RunStats{.total = 6, .started = 4, .completed = 4, .succeeded = 3, .failed = 1, .skipped = 2});
}

TEST_CASE("tree mode: the failed dataset's subtree is always skipped, without asking skip_tree_on_error") {
  Recorder recorder;
  auto options = recorder.options({"a", "a/b", "a/b/c", "a/e", "f"});
  options.process_dataset = recorder.job(fails_for({"a/b", "f"}));
  options.skip_on_error = SkipOnError::tree;
  int asked = 0;
  options.skip_tree_on_error = [&](std::string_view) {
    ++asked;
    return false;
  };
  FaultTolerantStats stats;
  CHECK(process_datasets_in_parallel_and_fault_tolerant(options, stats));
  CHECK(recorder.ran() == std::vector<std::string>{"a#0", "a/b#0", "a/e#0", "f#0"});
  CHECK(asked == 0);
  CHECK(recorder.appended ==
        std::vector<std::string>{"replicate a/b: disk full on a/b", "replicate f: disk full on f"});
  CHECK(recorder.terminations == 0);
  CHECK(stats.run == RunStats{.total = 5, .started = 4, .completed = 4, .succeeded = 2, .failed = 2, .skipped = 1});
}

TEST_CASE("fail mode: the run stops, the handler runs once, the original exception is rethrown") {
  Recorder recorder;
  auto options = recorder.options({"a", "a/b", "a/b/c", "d", "e"});
  options.process_dataset = recorder.job(fails_for({"a/b"}));
  options.skip_on_error = SkipOnError::fail;
  FaultTolerantStats stats;
  CHECK(message_of<DiskFull>([&] { process_datasets_in_parallel_and_fault_tolerant(options, stats); }) ==
        "disk full on a/b");
  CHECK(recorder.ran() == std::vector<std::string>{"a#0", "a/b#0"});
  CHECK(recorder.terminations == 1);
  CHECK(recorder.appended.empty());
  CHECK(recorder.logged(LogLevel::error, "2/5 replicate failed: a/b: disk full on a/b"));
  // a/b/c is skipped (below the failure); d and e are cancelled (the run stopped first).
  CHECK(stats.run ==
        RunStats{.total = 5, .started = 2, .completed = 2, .succeeded = 1, .failed = 1, .skipped = 1, .cancelled = 2});
}

TEST_CASE("fail mode asks the jobs in flight to stop and rethrows once they have returned") {
  // `slow` waits for its stop token; `bad` fails once `slow` is running.
  std::atomic<bool> slow_started{false};
  std::atomic<bool> slow_returned{false};
  std::atomic<bool> slow_saw_stop{false};
  std::atomic<int> terminations{0};
  WorkerChecks checks;
  FaultTolerantStats stats;
  const std::string message = message_of<DiskFull>([&] {
    process_datasets_in_parallel_and_fault_tolerant(
        {
            .datasets = {"bad", "slow", "slow/child", "z"},
            .process_dataset =
                [&](std::string_view dataset, std::string_view, const Retry& retry) {
                  if (dataset == "slow") {
                    slow_started = true;
                    checks.eventually([&] { return retry.stop_token.stop_requested(); });
                    slow_saw_stop = retry.stop_token.stop_requested();
                    slow_returned = true;
                    return true;
                  }
                  if (dataset == "bad") {
                    checks.eventually([&] { return slow_started.load(); });
                    throw DiskFull("bad disk");
                  }
                  return true;
                },
            .skip_on_error = SkipOnError::fail,
            .termination_handler = [&] { ++terminations; },
            .max_workers = 2,
        },
        stats);
  });
  CHECK(message == "bad disk");
  CHECK(checks.failures() == 0);
  CHECK(slow_saw_stop);
  CHECK(slow_returned);  // the exception came out only after the job in flight returned
  CHECK(terminations == 1);
  // bad completed (as a failure); slow started and was cut off; its child and z never started.
  CHECK(stats.run == RunStats{.total = 4, .started = 2, .completed = 1, .failed = 1, .cancelled = 2});
  CHECK(stats.failed_while_stopping == 0);
}

TEST_CASE("fail mode: a second failure while stopping is logged, the first one is rethrown") {
  std::atomic<bool> slow_started{false};
  WorkerChecks checks;
  Recorder recorder;
  auto options = recorder.options<tasktree::DefaultExecutor>({"bad", "slow"});
  options.max_workers = 2;
  options.process_dataset = [&](std::string_view dataset, std::string_view, const Retry& retry) -> bool {
    if (dataset == "slow") {
      slow_started = true;
      checks.eventually([&] { return retry.stop_token.stop_requested(); });
      throw Permanent("interrupted");
    }
    checks.eventually([&] { return slow_started.load(); });
    throw DiskFull("bad disk");
  };
  FaultTolerantStats stats;
  CHECK(message_of<DiskFull>([&] { process_datasets_in_parallel_and_fault_tolerant(options, stats); }) == "bad disk");
  CHECK(checks.failures() == 0);
  CHECK(recorder.terminations == 1);
  CHECK(recorder.logged(LogLevel::error, "replicate failed while the run was stopping: slow: interrupted"));
  CHECK(stats.failed_while_stopping == 1);
  CHECK(stats.run == RunStats{.total = 2, .started = 2, .completed = 1, .failed = 1});
}

TEST_CASE("a fatal error wins over a failure handled as fail") {
  std::atomic<bool> slow_started{false};
  WorkerChecks checks;
  std::atomic<int> terminations{0};
  FaultTolerantStats stats;
  CHECK_THROWS_WITH(
      process_datasets_in_parallel_and_fault_tolerant(
          {
              .datasets = {"bad", "slow"},
              .process_dataset = [&](std::string_view dataset, std::string_view, const Retry& retry) -> bool {
                if (dataset == "slow") {
                  slow_started = true;
                  checks.eventually([&] { return retry.stop_token.stop_requested(); });
                  throw std::logic_error("fatal: broken invariant");
                }
                checks.eventually([&] { return slow_started.load(); });
                throw DiskFull("bad disk");
              },
              .skip_on_error = SkipOnError::fail,
              .is_job_failure = tasktree::exception_is<std::runtime_error>,
              .termination_handler = [&] { ++terminations; },
              .max_workers = 2,
          },
          stats),
      "fatal: broken invariant");
  CHECK(checks.failures() == 0);
  CHECK(terminations == 1);  // the job failure was handled as fail before the fatal error arrived
  CHECK(adds_up(stats.run));
  CHECK(stats.run.failed == 1);
}

TEST_CASE("a failure while the caller's stop is in progress behaves as in fail mode, in any mode") {
  const SkipOnError mode = GENERATE(SkipOnError::dataset, SkipOnError::tree, SkipOnError::fail);
  CAPTURE(tasktree::to_string(mode));
  Recorder recorder;
  std::stop_source source;
  auto options = recorder.options({"a", "b", "c"});
  options.skip_on_error = mode;
  options.stop_token = source.get_token();
  options.retry_policy = {.max_retries = 5, .initial_backoff = 0ns};
  options.process_dataset = recorder.job([&](std::string_view dataset, const Retry&) -> bool {
    if (dataset == "b") {
      source.request_stop();  // e.g. the user pressed Ctrl-C, and the job gave up because of it
      throw DiskFull("interrupted b");
    }
    return true;
  });
  FaultTolerantStats stats;
  CHECK(message_of<DiskFull>([&] { process_datasets_in_parallel_and_fault_tolerant(options, stats); }) ==
        "interrupted b");
  CHECK(recorder.ran() == std::vector<std::string>{"a#0", "b#0"});  // no retry once stopping
  CHECK(recorder.terminations == 1);
  CHECK(recorder.appended.empty());
  CHECK(recorder.logged(LogLevel::error, "2/3 replicate failed while the run was stopping: b: interrupted b"));
  CHECK(stats.failed_while_stopping == 1);
  CHECK(stats.run == RunStats{.total = 3, .started = 2, .completed = 1, .succeeded = 1, .cancelled = 1});
}

TEST_CASE("a stop without failures returns true with the rest cancelled, and calls no handler") {
  Recorder recorder;
  std::stop_source source;
  auto options = recorder.options({"a", "b", "c"});
  options.stop_token = source.get_token();
  options.process_dataset = recorder.job([&](std::string_view dataset, const Retry&) {
    if (dataset == "b") source.request_stop();
    return true;
  });
  FaultTolerantStats stats;
  CHECK(process_datasets_in_parallel_and_fault_tolerant(options, stats));
  CHECK(recorder.terminations == 0);
  CHECK(stats.run == RunStats{.total = 3, .started = 2, .completed = 1, .succeeded = 1, .cancelled = 1});
}

// ---------------------------------------------------------------------------------------------
// Error classification

TEST_CASE("fatal errors are not retried nor handled by the policy: rethrown after draining") {
  const SkipOnError mode = GENERATE(SkipOnError::dataset, SkipOnError::tree, SkipOnError::fail);
  CAPTURE(tasktree::to_string(mode));
  Recorder recorder;
  auto options = recorder.options({"a", "a/b", "c"});
  options.skip_on_error = mode;
  options.retry_policy = {.max_retries = 3, .initial_backoff = 0ns};
  options.is_job_failure = tasktree::exception_is<std::runtime_error>;
  options.process_dataset = recorder.job([](std::string_view dataset, const Retry&) -> bool {
    if (dataset == "a") throw std::logic_error("bug in a");
    return true;
  });
  FaultTolerantStats stats;
  CHECK(message_of<std::logic_error>([&] { process_datasets_in_parallel_and_fault_tolerant(options, stats); }) ==
        "bug in a");
  CHECK(recorder.ran() == std::vector<std::string>{"a#0"});
  CHECK(recorder.terminations == 0);
  CHECK(recorder.appended.empty());
  CHECK(stats.run == RunStats{.total = 3, .started = 1, .cancelled = 2});
  CHECK(stats.retries == 0);
}

TEST_CASE("by default a std::exception is a job failure and anything else is fatal") {
  Recorder recorder;
  auto options = recorder.options({"a", "b", "c"});
  options.skip_on_error = SkipOnError::dataset;
  options.process_dataset = recorder.job([](std::string_view dataset, const Retry&) -> bool {
    if (dataset == "a") throw std::system_error(std::make_error_code(std::errc::io_error), "a");
    if (dataset == "b") throw 42;
    return true;
  });
  FaultTolerantStats stats;
  CHECK_THROWS_AS(process_datasets_in_parallel_and_fault_tolerant(options, stats), int);
  CHECK(recorder.ran() == std::vector<std::string>{"a#0", "b#0"});
  CHECK(recorder.appended.size() == 1);  // a was handled by the policy
  CHECK(stats.run == RunStats{.total = 3, .started = 2, .completed = 1, .failed = 1, .cancelled = 1});
}

// ---------------------------------------------------------------------------------------------
// Retries

TEST_CASE("a job succeeding on its third attempt counts as succeeded, and its children run") {
  Recorder recorder;
  auto options = recorder.options({"a", "a/b"});
  options.retry_policy = {.max_retries = 5, .initial_backoff = 10ns, .max_backoff = 10ns};
  options.clock = std::make_shared<ManualClock>();
  options.process_dataset = recorder.job([](std::string_view dataset, const Retry& retry) {
    if (dataset == "a" && retry.count < 2) throw Transient("flaky");
    return true;
  });
  FaultTolerantStats stats;
  CHECK_FALSE(process_datasets_in_parallel_and_fault_tolerant(options, stats));
  CHECK(recorder.ran() == std::vector<std::string>{"a#0", "a#1", "a#2", "a/b#0"});
  CHECK(recorder.tids == std::vector<std::string>{"1/2", "1/2", "1/2", "2/2"});  // one submission, three attempts
  CHECK(stats.retries == 2);
  CHECK(stats.recovered == 1);
  CHECK(stats.run == RunStats{.total = 2, .started = 2, .completed = 2, .succeeded = 2});
  CHECK(recorder.terminations == 0);
  CHECK_FALSE(recorder.logged(LogLevel::error, ""));
}

TEST_CASE("Retry::submit_count is the job's submission number, the same on every attempt") {
  Recorder recorder;
  auto options = recorder.options({"a", "a/b", "c"});
  options.retry_policy = {.max_retries = 5, .initial_backoff = 0ns, .max_backoff = 0ns};
  options.clock = std::make_shared<ManualClock>();
  std::vector<std::string> seen;  // "dataset#count@submit_count tid"; one worker, so no lock
  options.process_dataset = [&](std::string_view dataset, std::string_view tid, const Retry& retry) {
    seen.push_back(fmt::format("{}#{}@{} {}", dataset, retry.count, retry.submit_count, tid));
    if ((dataset == "a" && retry.count < 2) || (dataset == "c" && retry.count < 1)) throw Transient("flaky");
    return true;
  };
  CHECK_FALSE(process_datasets_in_parallel_and_fault_tolerant(options));
  CHECK(seen ==
        std::vector<std::string>{"a#0@1 1/3", "a#1@1 1/3", "a#2@1 1/3", "a/b#0@2 2/3", "c#0@3 3/3", "c#1@3 3/3"});
}

TEST_CASE("a job is attempted at most 1 + max_retries times, then handled by skip_on_error") {
  const int max_retries = GENERATE(0, 1, 4);
  Recorder recorder;
  auto options = recorder.options({"a", "a/b"});
  options.skip_on_error = SkipOnError::tree;
  options.retry_policy = {.max_retries = max_retries, .initial_backoff = 0ns};
  options.process_dataset = recorder.job(fails_for({"a"}));
  FaultTolerantStats stats;
  CHECK(process_datasets_in_parallel_and_fault_tolerant(options, stats));
  std::vector<std::string> expected;
  for (int i = 0; i <= max_retries; ++i) expected.push_back(fmt::format("a#{}", i));
  CHECK(recorder.ran() == expected);
  CHECK(stats.retries == static_cast<std::size_t>(max_retries));
  CHECK(stats.run == RunStats{.total = 2, .started = 1, .completed = 1, .failed = 1, .skipped = 1});
  const std::string attempts = max_retries > 0 ? fmt::format(" ({} attempts)", max_retries + 1) : "";
  CHECK(recorder.logged(LogLevel::error, fmt::format("1/2 replicate failed: a{}: disk full on a", attempts)));
}

TEST_CASE("backoff: ceilings grow by the multiplier up to max_backoff, full jitter scales them") {
  const bool jitter = GENERATE(true, false);
  CAPTURE(jitter);
  auto clock = std::make_shared<ManualClock>(1'000);
  std::vector<std::int64_t> deadlines;
  clock->on_wait([&](std::int64_t deadline) { deadlines.push_back(deadline); });
  std::vector<std::int64_t> attempt_times;
  int random_calls = 0;
  FaultTolerantStats stats;
  CHECK(process_datasets_in_parallel_and_fault_tolerant<SynchronousExecutor>(
      {
          .datasets = {"a"},
          .process_dataset = [&](std::string_view, std::string_view, const Retry&) -> bool {
            attempt_times.push_back(clock->now_nanos());
            throw Transient("flaky");
          },
          .skip_on_error = SkipOnError::dataset,
          .retry_policy = {.max_retries = 4,
                           .initial_backoff = 100ns,
                           .max_backoff = 500ns,
                           .multiplier = 2.0,
                           .full_jitter = jitter},
          .max_workers = 1,
          .clock = clock,
          .random =
              [&] {
                ++random_calls;
                return 0.5;
              },
      },
      stats));
  // Ceilings 100, 200, 400, 500 (capped); with jitter the fixed random 0.5 halves them.
  const std::vector<std::int64_t> expected_times = jitter ? std::vector<std::int64_t>{1000, 1050, 1150, 1350, 1600}
                                                          : std::vector<std::int64_t>{1000, 1100, 1300, 1700, 2200};
  CHECK(attempt_times == expected_times);
  CHECK(deadlines == std::vector<std::int64_t>(expected_times.begin() + 1, expected_times.end()));
  CHECK(random_calls == (jitter ? 4 : 0));
  CHECK(stats.retries == 4);
  CHECK(stats.run.failed == 1);
}

TEST_CASE("backoff: no retry starts later than max_elapsed after the first attempt") {
  auto clock = std::make_shared<ManualClock>(1'000);
  std::vector<std::int64_t> attempt_times;
  FaultTolerantStats stats;
  CHECK(process_datasets_in_parallel_and_fault_tolerant<SynchronousExecutor>(
      {
          .datasets = {"a"},
          .process_dataset = [&](std::string_view, std::string_view, const Retry&) -> bool {
            attempt_times.push_back(clock->now_nanos());
            clock->advance(10);  // each attempt takes 10ns
            throw Transient("flaky");
          },
          .skip_on_error = SkipOnError::dataset,
          .retry_policy = {.max_retries = 10,
                           .initial_backoff = 100ns,
                           .max_backoff = 1000ns,
                           .full_jitter = false,
                           .max_elapsed = 330ns},
          .max_workers = 1,
          .clock = clock,
      },
      stats));
  // Retry 1 starts at +110 and retry 2 at +320 (both within 330ns); retry 3 would start at +730.
  CHECK(attempt_times == std::vector<std::int64_t>{1000, 1110, 1320});
  CHECK(stats.retries == 2);
}

TEST_CASE("non-retryable failures are not retried; retryable ones are") {
  Recorder recorder;
  auto options = recorder.options({"permanent", "transient"});
  options.skip_on_error = SkipOnError::dataset;
  options.clock = std::make_shared<ManualClock>();
  options.retry_policy = {.max_retries = 2, .initial_backoff = 5ns, .retryable = tasktree::exception_is<Transient>};
  options.process_dataset = recorder.job([](std::string_view dataset, const Retry&) -> bool {
    if (dataset == "permanent") throw Permanent("gone");
    throw Transient("busy");
  });
  FaultTolerantStats stats;
  CHECK(process_datasets_in_parallel_and_fault_tolerant(options, stats));
  CHECK(recorder.ran() == std::vector<std::string>{"permanent#0", "transient#0", "transient#1", "transient#2"});
  CHECK(stats.retries == 2);
  CHECK(stats.run.failed == 2);
}

TEST_CASE("a stop during a backoff wakes it at once: no further attempt, handled as fail") {
  const SkipOnError mode = GENERATE(SkipOnError::dataset, SkipOnError::fail);
  CAPTURE(tasktree::to_string(mode));
  auto clock = std::make_shared<ManualClock>(0);
  std::stop_source source;
  clock->on_wait([&](std::int64_t) { source.request_stop(); });  // the stop arrives mid-sleep
  Recorder recorder;
  auto options = recorder.options({"a", "b"});
  options.skip_on_error = mode;
  options.stop_token = source.get_token();
  options.clock = clock;
  options.retry_policy = {.max_retries = 3, .initial_backoff = 1'000'000ns, .full_jitter = false};
  options.process_dataset = recorder.job(fails_for({"a"}));
  FaultTolerantStats stats;
  CHECK(message_of<DiskFull>([&] { process_datasets_in_parallel_and_fault_tolerant(options, stats); }) ==
        "disk full on a");
  CHECK(recorder.ran() == std::vector<std::string>{"a#0"});
  CHECK(clock->waits() == 1);
  CHECK(clock->now_nanos() == 0);  // woke before the deadline
  CHECK(recorder.terminations == 1);
  CHECK(stats.retries == 0);
  CHECK(stats.run == RunStats{.total = 2, .started = 1, .cancelled = 1});
  CHECK(stats.failed_while_stopping == 1);
}

TEST_CASE("a stop during a real-time backoff of an hour ends the sleep at once") {
  // On the real clock: if the sleep did not wake on the stop request, this test would hang (and
  // the test driver's timeout would fail it); it measures nothing.
  std::stop_source source;
  std::atomic<int> attempts{0};
  std::jthread stopper([&] {
    if (eventually([&] { return attempts.load() > 0; })) source.request_stop();
  });
  FaultTolerantStats stats;
  CHECK(message_of<Transient>([&] {
          process_datasets_in_parallel_and_fault_tolerant(
              {
                  .datasets = {"a", "b"},
                  .process_dataset = [&](std::string_view dataset, std::string_view, const Retry&) -> bool {
                    if (dataset == "a") {
                      ++attempts;
                      throw Transient("flaky");
                    }
                    return true;
                  },
                  .retry_policy = {.max_retries = 1,
                                   .initial_backoff = 1h,
                                   .max_backoff = 1h,
                                   .full_jitter = false,
                                   .max_elapsed = 2h},
                  .max_workers = 2,
                  .stop_token = source.get_token(),
              },
              stats);
        }) == "flaky");
  CHECK(attempts == 1);
  CHECK(adds_up(stats.run));
}

TEST_CASE("a random source outside [0, 1] is an error that ends the run") {
  Recorder recorder;
  auto options = recorder.options({"a"});
  options.skip_on_error = SkipOnError::dataset;
  options.retry_policy = {.max_retries = 1, .initial_backoff = 10ns};
  options.random = [] { return 1.5; };
  options.process_dataset = recorder.job(fails_for({"a"}));
  FaultTolerantStats stats;
  CHECK(message_of<std::out_of_range>([&] { process_datasets_in_parallel_and_fault_tolerant(options, stats); }) ==
        "tasktree: the random source returned 1.5, outside [0, 1]");
  CHECK(adds_up(stats.run));
}

// ---------------------------------------------------------------------------------------------
// Barriers

TEST_CASE("barriers under each mode: a failed replication keeps the prune closed unless dataset mode continues") {
  const std::vector<std::string> datasets{"h/snap", "h/snap/r1", "h/snap/r2", "h/snap/~/prune",
                                          "h/snap/~/prune/monitor"};
  struct Case {
    SkipOnError mode;
    bool skip_tree;
    bool prune_runs;
  };
  const Case c = GENERATE(Case{SkipOnError::dataset, false, true}, Case{SkipOnError::dataset, true, false},
                          Case{SkipOnError::tree, false, false});
  CAPTURE(tasktree::to_string(c.mode), c.skip_tree);
  Recorder recorder;
  auto options = recorder.options(datasets);
  options.skip_on_error = c.mode;
  options.skip_tree_on_error = [&](std::string_view) { return c.skip_tree; };
  options.process_dataset = recorder.job(fails_for({"h/snap/r1"}));
  FaultTolerantStats stats;
  CHECK(process_datasets_in_parallel_and_fault_tolerant(options, stats));
  const auto ran = first_attempts(recorder.ran());
  CHECK(position(ran, "h/snap/r2") >= 0);  // the sibling is unaffected
  CHECK((position(ran, "h/snap/~/prune") >= 0) == c.prune_runs);
  CHECK((position(ran, "h/snap/~/prune/monitor") >= 0) == c.prune_runs);
  if (c.prune_runs) CHECK(position(ran, "h/snap/r2") < position(ran, "h/snap/~/prune"));
  CHECK(stats.run.skipped == (c.prune_runs ? 0u : 2u));
  CHECK(stats.run.failed == 1);
  CHECK(adds_up(stats.run));
}

TEST_CASE("barriers in fail mode: the barrier never opens and the failure is rethrown") {
  Recorder recorder;
  auto options = recorder.options({"h/snap", "h/snap/r1", "h/snap/r2", "h/snap/~/prune"});
  options.skip_on_error = SkipOnError::fail;
  options.process_dataset = recorder.job(fails_for({"h/snap/r1"}));
  FaultTolerantStats stats;
  CHECK(message_of<DiskFull>([&] { process_datasets_in_parallel_and_fault_tolerant(options, stats); }) ==
        "disk full on h/snap/r1");
  CHECK(first_attempts(recorder.ran()) == std::vector<std::string>{"h/snap", "h/snap/r1"});
  CHECK(recorder.terminations == 1);
  CHECK(stats.run ==
        RunStats{.total = 4, .started = 2, .completed = 2, .succeeded = 1, .failed = 1, .skipped = 1, .cancelled = 1});
}

TEST_CASE("barriers: a job returning false keeps the barrier closed without failing the run") {
  Recorder recorder;
  auto options = recorder.options({"h/snap", "h/snap/r1", "h/snap/r2", "h/snap/~/prune"});
  options.process_dataset = recorder.job([](std::string_view dataset, const Retry&) { return dataset != "h/snap/r2"; });
  FaultTolerantStats stats;
  CHECK_FALSE(process_datasets_in_parallel_and_fault_tolerant(options, stats));
  CHECK(first_attempts(recorder.ran()) == std::vector<std::string>{"h/snap", "h/snap/r1", "h/snap/r2"});
  CHECK(stats.run == RunStats{.total = 4, .started = 3, .completed = 3, .succeeded = 3, .skipped = 1});
}

// ---------------------------------------------------------------------------------------------
// Logging, observer

TEST_CASE("each processed job is logged at debug with its tid, task name and duration") {
  Recorder recorder;
  auto clock = std::make_shared<ManualClock>();
  auto options = recorder.options({"a", "b"});
  options.clock = clock;
  options.skip_on_error = SkipOnError::dataset;
  options.dry_run = GENERATE(false, true);
  options.process_dataset = recorder.job([&](std::string_view dataset, const Retry&) -> bool {
    clock->advance(dataset == "a" ? 1'500 : 2'000'000'000);
    if (dataset == "b") throw DiskFull("no space");
    return true;
  });
  CHECK(process_datasets_in_parallel_and_fault_tolerant(options));
  const std::string dry = options.dry_run ? "Dry " : "";
  CHECK(recorder.logged(LogLevel::debug, dry + "1/2 replicate done: a took 1.5us"));
  CHECK(recorder.logged(LogLevel::debug, dry + "2/2 replicate done: b took 2s"));
  CHECK(recorder.logged(LogLevel::error, dry + "2/2 replicate failed: b: no space"));
  std::lock_guard lock(recorder.mutex);
  for (const auto& [level, line] : recorder.lines) {
    // The policy's own lines carry the marker; the core's run start/end lines are its own.
    if (line.find("replicate") != std::string::npos) {
      CHECK((line.starts_with(dry + "1/2") || line.starts_with(dry + "2/2")));
    }
  }
}

TEST_CASE("without a task name the log lines read naturally") {
  Recorder recorder;
  auto options = recorder.options({"a"});
  options.task_name = "";
  options.process_dataset = recorder.job(fails_for({}));
  CHECK_FALSE(process_datasets_in_parallel_and_fault_tolerant(options));
  CHECK(recorder.logged(LogLevel::debug, "1/1 done: a took "));
}

TEST_CASE("the observer sees failures as completions with fail = true, and the same final counts") {
  struct Observer : tasktree::RunObserver {
    std::vector<std::string> completions;
    RunStats finished;
    void on_complete(std::string_view dataset, std::chrono::nanoseconds,
                     tasktree::CompletionCallbackResult result) override {
      completions.push_back(fmt::format("{} no_skip={} fail={}", dataset, result.no_skip, result.fail));
    }
    void on_finish(const RunStats& stats) override { finished = stats; }
  };
  const SkipOnError mode = GENERATE(SkipOnError::tree, SkipOnError::fail);
  auto observer = std::make_shared<Observer>();
  Recorder recorder;
  auto options = recorder.options({"a", "a/b", "c"});
  options.skip_on_error = mode;
  options.observer = observer;
  options.process_dataset = recorder.job(fails_for({"a"}));
  FaultTolerantStats stats;
  bool threw = false;
  try {
    process_datasets_in_parallel_and_fault_tolerant(options, stats);
  } catch (const DiskFull&) {
    threw = true;
  }
  CHECK(threw == (mode == SkipOnError::fail));
  if (mode == SkipOnError::tree) {
    CHECK(observer->completions == std::vector<std::string>{"a no_skip=false fail=true", "c no_skip=true fail=false"});
  } else {
    CHECK(observer->completions == std::vector<std::string>{"a no_skip=false fail=true"});
  }
  CHECK(observer->finished == stats.run);
  CHECK(adds_up(stats.run));
}

TEST_CASE("statistics add up on a thread pool with retries, failures in every mode, and a stop") {
  std::vector<std::string> datasets;
  for (int host = 0; host < 6; ++host) {
    datasets.push_back(fmt::format("h{}", host));
    for (int r = 0; r < 4; ++r) datasets.push_back(fmt::format("h{}/r{}", host, r));
    datasets.push_back(fmt::format("h{}/~/prune", host));
  }
  const SkipOnError mode = GENERATE(SkipOnError::dataset, SkipOnError::tree, SkipOnError::fail);
  const bool stop = GENERATE(false, true);
  CAPTURE(tasktree::to_string(mode), stop);
  std::stop_source source;
  FaultTolerantStats stats;
  std::exception_ptr error;
  try {
    process_datasets_in_parallel_and_fault_tolerant(
        {
            .datasets = datasets,
            .process_dataset =
                [&](std::string_view dataset, std::string_view tid, const Retry& retry) {
                  if (stop && tid.starts_with("12/")) source.request_stop();
                  if (dataset.ends_with("r1") && retry.count == 0) throw Transient("flaky");  // recovers
                  if (dataset == "h2/r3" || dataset == "h4") throw DiskFull("broken");
                  return true;
                },
            .skip_on_error = mode,
            .retry_policy = {.max_retries = 1, .initial_backoff = 0ns, .retryable = tasktree::exception_is<Transient>},
            .max_workers = 3,
            .stop_token = source.get_token(),
        },
        stats);
  } catch (const std::exception&) {
    error = std::current_exception();
  }
  CHECK(adds_up(stats.run));
  CHECK(stats.run.total == datasets.size());
  if (mode == SkipOnError::fail || stop) {
    CHECK(stats.run.cancelled + stats.run.skipped > 0);
  } else {
    CHECK(error == nullptr);
    CHECK(stats.run.failed == 2);
    CHECK(stats.recovered == (mode == SkipOnError::dataset ? 6u : 5u));  // tree mode skips h4/r1
    CHECK(stats.retries == stats.recovered);
  }
}

TEST_CASE("dataset mode calls skip_tree_on_error, then logs, then append_exception, as the original does") {
  std::vector<std::string> calls;
  FaultTolerantOptions<SynchronousExecutor> options{
      .datasets = {"a", "a/b", "c"},
      .process_dataset = [](std::string_view dataset, std::string_view, const Retry&) -> bool {
        if (dataset == "a") throw DiskFull("a is full");
        return true;
      },
      .skip_on_error = SkipOnError::dataset,
      .skip_tree_on_error =
          [&](std::string_view dataset) {
            calls.push_back(fmt::format("skip_tree_on_error {}", dataset));
            return true;
          },
      .append_exception =
          [&](const std::exception_ptr&, std::string_view, std::string_view dataset) {
            calls.push_back(fmt::format("append_exception {}", dataset));
          },
      .max_workers = 1,
      .log = {.sink =
                  [&](LogLevel level, std::string_view message) {
                    if (level == LogLevel::error) calls.push_back(fmt::format("log {}", message.substr(0, 10)));
                  },
              .level = LogLevel::info},
  };
  FaultTolerantStats stats;
  CHECK(process_datasets_in_parallel_and_fault_tolerant(options, stats));
  CHECK(calls == std::vector<std::string>{"skip_tree_on_error a", "log 1/3 failed", "append_exception a"});
  CHECK(stats.run.skipped == 1);  // a/b
}

TEST_CASE("a failure whose handling a hook cut short is still counted, once, and the hook's error is rethrown") {
  // Regression: the failure was marked processed before the hooks ran; when one threw, the
  // failure was counted nowhere (failed = 0, failed_while_stopping = 0).
  struct HookBroke : std::runtime_error {
    using std::runtime_error::runtime_error;
  };
  for (const std::string hook : {"skip_tree_on_error", "append_exception", "termination_handler", "log"}) {
    CAPTURE(hook);
    int error_lines = 0;
    FaultTolerantOptions<SynchronousExecutor> options{
        .datasets = {"a", "b"},
        .process_dataset = [](std::string_view dataset, std::string_view, const Retry&) -> bool {
          if (dataset == "a") throw DiskFull("a is full");
          return true;
        },
        .skip_on_error = hook == "termination_handler" ? SkipOnError::fail : SkipOnError::dataset,
        .skip_tree_on_error = [&](std::string_view) -> bool {
          if (hook == "skip_tree_on_error") throw HookBroke("skip_tree_on_error broke");
          return false;
        },
        .termination_handler = [&] { throw HookBroke("termination_handler broke"); },
        .append_exception =
            [&](const std::exception_ptr&, std::string_view, std::string_view) {
              if (hook == "append_exception") throw HookBroke("append_exception broke");
            },
        .max_workers = 1,
        .log = {.sink =
                    [&](LogLevel level, std::string_view) {
                      if (level != LogLevel::error) return;
                      ++error_lines;
                      if (hook == "log") throw HookBroke("log broke");
                    },
                .level = LogLevel::info},
    };
    FaultTolerantStats stats;
    CHECK_THROWS_WITH(process_datasets_in_parallel_and_fault_tolerant(options, stats), hook + " broke");
    CHECK(stats.failed_while_stopping == 1);
    CHECK(stats.run.failed == 0);  // the core never saw the callback return
    CHECK(error_lines >= 1);
    CHECK(error_lines <= 2);  // the failure's line (once), and the run's "aborted" line
  }
}

// ---------------------------------------------------------------------------------------------
// attempt_timeout (docs/policy.md "Attempt timeouts"). Real clock and threads: the timeouts are
// short, the jobs that must time out wait for their stop token (so they always do), and the jobs
// that must not have an hour. Nothing asserts how long anything took.

namespace {

/// Waits until `stop` is signalled; returns whether it was (false: gave up after a minute, which
/// a test then reports as a failure instead of hanging).
bool wait_for_stop(const std::stop_token& stop) {
  return eventually([&] { return stop.stop_requested(); });
}

}  // namespace

TEST_CASE("attempt_timeout: an attempt past the timeout is stopped, fails with TimeoutError and is retried") {
  std::mutex mutex;
  std::vector<std::string> attempts;
  std::atomic<bool> saw_stop{false};
  FaultTolerantOptions<> options{
      .datasets = {"a", "a/b", "c"},
      .process_dataset =
          [&](std::string_view dataset, std::string_view, const Retry& retry) {
            {
              std::lock_guard lock(mutex);
              attempts.push_back(fmt::format("{}#{}", dataset, retry.count));
            }
            if (dataset == "a" && retry.count == 0) {  // hangs until stopped: times out
              saw_stop = wait_for_stop(retry.stop_token);
              return true;  // what it returns after the timeout does not count
            }
            return true;
          },
      .skip_on_error = SkipOnError::tree,
      .retry_policy = {.max_retries = 1, .initial_backoff = 0ns, .max_backoff = 0ns},
      .attempt_timeout = 200ms,
      .max_workers = 2,
  };
  FaultTolerantStats stats;
  CHECK_FALSE(process_datasets_in_parallel_and_fault_tolerant(options, stats));
  CHECK(saw_stop);
  std::sort(attempts.begin(), attempts.end());
  CHECK(attempts == std::vector<std::string>{"a#0", "a#1", "a/b#0", "c#0"});  // a retried, then its child ran
  CHECK(stats.retries == 1);
  CHECK(stats.recovered == 1);
  CHECK(stats.run.succeeded == 3);
}

TEST_CASE("attempt_timeout: a timed-out attempt out of retries fails the job with the TimeoutError, "
          "whatever it threw") {
  std::vector<std::string> errors;
  FaultTolerantOptions<> options{
      .datasets = {"a", "a/b", "c"},
      .process_dataset =
          [&](std::string_view dataset, std::string_view, const Retry& retry) -> bool {
            if (dataset == "a") {
              if (!wait_for_stop(retry.stop_token)) return true;
              throw std::runtime_error("interrupted");
            }
            return true;
          },
      .skip_on_error = SkipOnError::tree,
      .append_exception =
          [&](const std::exception_ptr& error, std::string_view, std::string_view dataset) {
            try {
              std::rethrow_exception(error);
            } catch (const tasktree::TimeoutError& e) {
              errors.push_back(fmt::format("{}: {} (attempt {}, {}ms)", dataset, e.what(), e.attempt(),
                                           std::chrono::duration_cast<std::chrono::milliseconds>(e.timeout()).count()));
            } catch (const std::exception& e) {
              errors.push_back(fmt::format("{}: not a TimeoutError: {}", dataset, e.what()));
            }
          },
      .attempt_timeout = 200ms,
      .max_workers = 2,
  };
  FaultTolerantStats stats;
  CHECK(process_datasets_in_parallel_and_fault_tolerant(options, stats));
  CHECK(errors == std::vector<std::string>{
                      "a: attempt 1 of a timed out after 0.2s (then: interrupted) (attempt 0, 200ms)"});
  CHECK(stats.run.failed == 1);
  CHECK(stats.run.skipped == 1);    // a/b, below the failure
  CHECK(stats.run.succeeded == 1);  // c
}

TEST_CASE("attempt_timeout: attempts within the timeout are untouched; zero means no limit") {
  for (const auto timeout : {std::chrono::nanoseconds(1h), std::chrono::nanoseconds(0)}) {
    std::atomic<int> stopped{0};
    FaultTolerantOptions<> options{
        .datasets = {"a", "a/b", "c", "d"},
        .process_dataset =
            [&](std::string_view, std::string_view, const Retry& retry) {
              if (retry.stop_token.stop_requested()) ++stopped;
              return true;
            },
        .attempt_timeout = timeout,
        .max_workers = 2,
    };
    FaultTolerantStats stats;
    CHECK_FALSE(process_datasets_in_parallel_and_fault_tolerant(options, stats));
    CHECK(stats.run.succeeded == 4);
    CHECK(stats.retries == 0);
    CHECK(stopped == 0);
  }
}

TEST_CASE("attempt_timeout: a run stop still reaches the attempts, and is not a timeout") {
  std::stop_source stop;
  std::atomic<bool> saw_stop{false};
  std::vector<std::string> errors;
  FaultTolerantOptions<> options{
      .datasets = {"a"},
      .process_dataset =
          [&](std::string_view, std::string_view, const Retry& retry) -> bool {
            stop.request_stop();
            saw_stop = wait_for_stop(retry.stop_token);
            throw std::runtime_error("stopped");
          },
      .skip_on_error = SkipOnError::tree,
      .append_exception =
          [&](const std::exception_ptr& error, std::string_view, std::string_view) {
            errors.push_back(tasktree::exception_is<tasktree::TimeoutError>(error) ? "timeout" : "other");
          },
      .attempt_timeout = 1h,
      .stop_token = stop.get_token(),
  };
  FaultTolerantStats stats;
  std::string rethrown;
  try {
    process_datasets_in_parallel_and_fault_tolerant(options, stats);
  } catch (const tasktree::TimeoutError& e) {
    rethrown = fmt::format("TimeoutError: {}", e.what());
  } catch (const std::runtime_error& e) {
    rethrown = e.what();
  }
  CHECK(saw_stop);
  CHECK(rethrown == "stopped");  // the job's own error, not a timeout
  CHECK(std::find(errors.begin(), errors.end(), "timeout") == errors.end());
}

TEST_CASE("attempt_timeout: an attempt that ignores its stop token is reported as stalled, at error level, "
          "every stall_interval, until it returns") {
  std::mutex mutex;
  std::vector<std::string> stalls;
  std::atomic<int> reports{0};
  FaultTolerantOptions<> options{
      .datasets = {"slow"},
      .process_dataset =
          [&](std::string_view, std::string_view, const Retry&) {
            // Ignores its stop token; returns after the second stall report.
            (void)eventually([&] { return reports.load() >= 2; });
            return true;
          },
      .skip_on_error = SkipOnError::tree,
      .task_name = "replicate",
      .attempt_timeout = 5ms,
      .stall_interval = 5ms,
      .log = {.sink =
                  [&](LogLevel level, std::string_view message) {
                    if (message.find("stalled") == std::string_view::npos) return;
                    std::lock_guard lock(mutex);
                    stalls.push_back(fmt::format("{}|{}", static_cast<int>(level), message));
                    ++reports;
                  }},
  };
  FaultTolerantStats stats;
  CHECK(process_datasets_in_parallel_and_fault_tolerant(options, stats));  // the timeout failed it
  CHECK(stats.run.failed == 1);
  std::lock_guard lock(mutex);
  REQUIRE(stalls.size() >= 2);
  for (const std::string& stall : stalls) {
    INFO(stall);
    CHECK(stall.starts_with(fmt::format("{}|replicate slow: attempt 1 has run for ", static_cast<int>(LogLevel::error))));
    CHECK(stall.find("past its timeout of 0.005s: stalled") != std::string::npos);
  }
}
