// Tests for include/tasktree/log.hpp: silent by default, levels filter before formatting, the
// core's messages reach the sink, and the library's stderr sink never throws, whatever stderr is.

#include "catch.hpp"

#include <tasktree/tasktree.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

using tasktree::Logger;
using tasktree::LogLevel;

namespace {

struct Captured {
  std::vector<std::pair<LogLevel, std::string>> lines;
  Logger logger(LogLevel level) {
    return Logger{
        .sink = [this](LogLevel at, std::string_view message) { lines.emplace_back(at, std::string(message)); },
        .level = level};
  }
};

}  // namespace

TEST_CASE("a default logger is silent and reports nothing enabled") {
  const Logger logger;
  CHECK_FALSE(logger.enabled(LogLevel::error));
  logger.log(LogLevel::error, "ignored {}", 1);  // no sink: nothing happens
}

TEST_CASE("messages below the level are dropped before formatting") {
  Captured captured;
  const Logger logger = captured.logger(LogLevel::info);
  CHECK_FALSE(logger.enabled(LogLevel::debug));
  CHECK(logger.enabled(LogLevel::warning));
  logger.log(LogLevel::debug, "dropped");
  logger.log(LogLevel::info, "kept {}", 42);
  logger.log(LogLevel::error, "{} and {}", "a", "b");
  CHECK(captured.lines ==
        std::vector<std::pair<LogLevel, std::string>>{{LogLevel::info, "kept 42"}, {LogLevel::error, "a and b"}});
}

TEST_CASE("level names") {
  CHECK(tasktree::to_string(LogLevel::trace) == "trace");
  CHECK(tasktree::to_string(LogLevel::debug) == "debug");
  CHECK(tasktree::to_string(LogLevel::info) == "info");
  CHECK(tasktree::to_string(LogLevel::warning) == "warning");
  CHECK(tasktree::to_string(LogLevel::error) == "error");
}

TEST_CASE("a run logs its start and end at debug, each job at trace, and an abort at error") {
  Captured captured;
  tasktree::ParallelTaskTree<tasktree::SynchronousExecutor> tree({
      .datasets = {"a", "b"},
      .process_dataset = [](std::string_view dataset, std::int64_t) -> tasktree::CompletionCallback {
        if (dataset == "b") throw std::runtime_error("b broke");
        return tasktree::CompletionCallbackResult{};
      },
      .max_workers = 1,
      .log = captured.logger(LogLevel::trace),
  });
  CHECK_THROWS(tree.process_datasets_in_parallel());
  std::vector<std::string> text;
  for (const auto& [level, line] : captured.lines)
    text.push_back(fmt::format("{}: {}", tasktree::to_string(level), line));
  CHECK(text ==
        std::vector<std::string>{
            "debug: run started: 2 datasets, 3 trie nodes, max_workers=1",
            "trace: submit #1: a",
            "trace: completed: a (no_skip=true, fail=false)",
            "trace: submit #2: b",
            "error: run aborted: b broke",
            "debug: run finished: 2 started, 1 completed, 0 failed, 0 skipped, 0 cancelled, stopped, aborted by "
            "an exception",
        });
  SECTION("at info level a normal run says nothing") {
    Captured quiet;
    tasktree::ParallelTaskTree<tasktree::SynchronousExecutor> calm({
        .datasets = {"a"},
        .process_dataset = [](std::string_view, std::int64_t) { return tasktree::CompletionCallbackResult{}; },
        .max_workers = 1,
        .log = quiet.logger(LogLevel::info),
    });
    CHECK_FALSE(calm.process_datasets_in_parallel());
    CHECK(quiet.lines.empty());
  }
}

TEST_CASE("a log sink that throws ends the run like any other error, wherever it throws") {
  // Regression: a sink throwing from the "submit" message left a phantom job in flight that the
  // run then waited for forever; one throwing after a completion callback left `completed`
  // uncounted; one throwing at the start escaped before the statistics were made to add up.
  for (int throw_at = 1; throw_at <= 6; ++throw_at) {  // a normal run logs 6 messages
    CAPTURE(throw_at);
    int messages = 0;
    std::atomic<int> callbacks = 0;
    tasktree::ParallelTaskTree tree({
        .datasets = {"a", "b"},
        .process_dataset =
            [&](std::string_view, std::int64_t) {
              return tasktree::CompletionCallback([&](tasktree::InFlight&) {
                ++callbacks;
                return tasktree::CompletionCallbackResult{};
              });
            },
        .max_workers = 2,
        .log = Logger{.sink =
                          [&](LogLevel, std::string_view message) {
                            if (++messages == throw_at)
                              throw std::runtime_error(fmt::format("sink broke: {}", message));
                          },
                      .level = LogLevel::trace},
    });
    CHECK(tree.default_executor_is_parallel());
    CHECK_THROWS_WITH(tree.process_datasets_in_parallel(), Catch::Matchers::StartsWith("sink broke: "));
    const tasktree::RunStats stats = tree.last_run_stats();
    CHECK(stats.started + stats.skipped + stats.cancelled == stats.total);
    CHECK(stats.completed == static_cast<std::size_t>(callbacks.load()));
    messages = -1'000;  // the sink works again: the tree runs normally
    CHECK_FALSE(tree.process_datasets_in_parallel());
    CHECK(tree.last_run_stats().completed == 2);
  }
}

namespace {

/// Points file descriptor 2 at `fd` (or closes it, for -1) until destroyed.
class RedirectedStderr {
 public:
  explicit RedirectedStderr(int fd) : saved_(::dup(2)) {
    std::fflush(stderr);
    if (fd < 0) {
      ::close(2);
    } else {
      ::dup2(fd, 2);
    }
  }
  ~RedirectedStderr() {
    std::fflush(stderr);
    std::clearerr(stderr);
    ::dup2(saved_, 2);
    ::close(saved_);
  }
  RedirectedStderr(const RedirectedStderr&) = delete;
  RedirectedStderr& operator=(const RedirectedStderr&) = delete;

 private:
  int saved_;
};

/// A tree of three jobs that logs at debug level through `stderr_logger()`.
bool run_logging_to_stderr(int& jobs) {
  tasktree::ParallelTaskTree tree({
      .datasets = {"a", "a/b", "c"},
      .process_dataset =
          [&jobs](std::string_view, std::int64_t) {
            ++jobs;
            return tasktree::CompletionCallbackResult{.no_skip = true, .fail = false};
          },
      .max_workers = 1,
      .log = tasktree::stderr_logger(LogLevel::trace),
  });
  return tree.process_datasets_in_parallel();
}

}  // namespace

TEST_CASE("the stderr sink writes one line per message") {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  const std::uint64_t dropped = tasktree::StderrSink::dropped_messages();
  {
    const RedirectedStderr redirect(fds[1]);
    tasktree::StderrSink{}(LogLevel::warning, "disk almost full");
  }
  ::close(fds[1]);
  char buffer[256] = {};
  const ssize_t got = ::read(fds[0], buffer, sizeof buffer - 1);
  ::close(fds[0]);
  REQUIRE(got > 0);
  CHECK(std::string(buffer, static_cast<std::size_t>(got)) == "tasktree [warning] disk almost full\n");
  CHECK(tasktree::StderrSink::dropped_messages() == dropped);
}

TEST_CASE("the stock stderr logger never ends a run: closed, full or broken stderr drops and counts the lines") {
  // Runs the logging tree with fd 2 on `fd` (-1: closed): every job runs, lines are dropped.
  const auto check_run_survives = [](int fd) {
    const std::uint64_t dropped = tasktree::StderrSink::dropped_messages();
    int jobs = 0;
    bool failed = true;
    {
      const RedirectedStderr redirect(fd);
      failed = run_logging_to_stderr(jobs);
    }
    CHECK_FALSE(failed);
    CHECK(jobs == 3);
    CHECK(tasktree::StderrSink::dropped_messages() > dropped);
  };
  SECTION("stderr closed (2>&-)") { check_run_survives(-1); }
  SECTION("a full disk (2>/dev/full)") {
    const int full = ::open("/dev/full", O_WRONLY);
    REQUIRE(full >= 0);
    check_run_survives(full);
    ::close(full);
  }
  SECTION("a pipe whose reader has gone, with SIGPIPE ignored (| head)") {
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    ::close(fds[0]);
    const auto previous = std::signal(SIGPIPE, SIG_IGN);
    check_run_survives(fds[1]);
    std::signal(SIGPIPE, previous);
    ::close(fds[1]);
  }
}

TEST_CASE("with stderr full, the policy layer still rethrows the job's own exception") {
  const int full = ::open("/dev/full", O_WRONLY);
  REQUIRE(full >= 0);
  std::atomic<int> jobs{0};
  std::string what;
  {
    const RedirectedStderr redirect(full);
    tasktree::FaultTolerantOptions<> options{
        .datasets = {"a", "b", "c"},
        .process_dataset = [&](std::string_view dataset, std::string_view, const tasktree::Retry&) -> bool {
          ++jobs;
          if (dataset == "c") throw std::runtime_error("c broke");
          return true;
        },
        .max_workers = 1,
        .log = tasktree::stderr_logger(LogLevel::debug),
    };
    try {
      tasktree::process_datasets_in_parallel_and_fault_tolerant(options);
    } catch (const std::exception& error) {
      what = error.what();
    }
  }
  ::close(full);
  CHECK(what == "c broke");
  CHECK(jobs == 3);
}
