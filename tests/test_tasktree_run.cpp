// Tests for tools/tasktree-run: the built binary runs real jobs files with real
// processes. Orders are checked through files the jobs write (a job fails if
// what it depends on is not there), never through timing; waits are bounded
// only to turn a hang into a failure.

#include "catch.hpp"
#include "support.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

extern char** environ;

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using tasktree_test::eventually;

constexpr const char* tool = TASKTREE_RUN_PATH;  // set by tests/CMakeLists.txt

std::string read_file(const fs::path& path) {
  std::ifstream file(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
}

/// A scratch directory for one test, removed at the end; the runner's TMPDIR
/// points into it.
class Scratch {
 public:
  Scratch() {
    std::string pattern = (fs::temp_directory_path() / "tasktree-run-test.XXXXXX").string();
    REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    dir_ = pattern;
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() {
    std::error_code ignored;  // a leftover scratch directory must not fail a
                              // test that passed
    fs::remove_all(dir_, ignored);
  }
  [[nodiscard]] const fs::path& dir() const { return dir_; }
  [[nodiscard]] fs::path operator/(std::string_view name) const { return dir_ / name; }
  /// `text` with each `$DIR` replaced by the scratch directory.
  [[nodiscard]] std::string expand(std::string text) const {
    for (std::size_t at = text.find("$DIR"); at != std::string::npos; at = text.find("$DIR", at)) {
      text.replace(at, 4, dir_.string());
    }
    return text;
  }
  /// Writes a file, with `$DIR` expanded.
  fs::path write(std::string_view name, std::string text) const {
    std::ofstream(dir_ / name, std::ios::binary) << expand(std::move(text));
    return dir_ / name;
  }
  [[nodiscard]] bool exists(std::string_view name) const { return fs::exists(dir_ / name); }
  [[nodiscard]] std::string read(std::string_view name) const { return read_file(dir_ / name); }

 private:
  fs::path dir_;
};

/// The runner started in the background, its standard output and error going to
/// files (or its standard error to `terminal`, a pseudo-terminal's path, with
/// `TERM=xterm`).
class Started {
 public:
  Started(const Scratch& scratch, std::vector<std::string> args, const fs::path& input = "/dev/null",
          const std::string& terminal = "")
      : out_(scratch / "runner.out"), err_(scratch / "runner.err") {
    args.insert(args.begin(), tool);
    std::vector<char*> argv;
    for (std::string& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    std::vector<std::string> variables;
    for (char** entry = environ; *entry != nullptr; ++entry) {
      const std::string_view variable = *entry;
      if (!variable.starts_with("TMPDIR=") && !variable.starts_with("TERM=")) variables.emplace_back(variable);
    }
    variables.push_back("TMPDIR=" + scratch.dir().string());
    variables.push_back(terminal.empty() ? "TERM=dumb" : "TERM=xterm");
    std::vector<char*> envp;
    for (std::string& variable : variables) envp.push_back(variable.data());
    envp.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, input.c_str(), O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, out_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (terminal.empty()) {
      posix_spawn_file_actions_addopen(&actions, 2, err_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    } else {
      posix_spawn_file_actions_addopen(&actions, 2, terminal.c_str(), O_RDWR | O_NOCTTY, 0);
    }
    const int error = ::posix_spawn(&pid_, tool, &actions, nullptr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&actions);
    REQUIRE(error == 0);
  }
  Started(const Started&) = delete;
  Started& operator=(const Started&) = delete;
  ~Started() {
    if (pid_ > 0) {  // a failed test: do not leave the runner behind
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }

  [[nodiscard]] pid_t pid() const { return pid_; }
  /// What the runner wrote to its standard error so far.
  [[nodiscard]] std::string err() const { return read_file(err_); }

  /// True once the runner has exited (then `exit_code()`, `out` and `err_text`
  /// are set).
  bool try_wait() {
    if (pid_ < 0) return true;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) != pid_) return false;
    pid_ = -1;
    exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 1000 + WTERMSIG(status);
    out = read_file(out_);
    err_text = read_file(err_);
    return true;
  }
  /// Waits (bounded) for the exit; returns the exit code, or 1000 + signal if
  /// killed.
  int wait() {
    REQUIRE(eventually([&] { return try_wait(); }, std::chrono::seconds(120)));
    return exit_code_;
  }
  [[nodiscard]] int exit_code() const { return exit_code_; }

  std::string out;
  std::string err_text;

 private:
  fs::path out_;
  fs::path err_;
  pid_t pid_ = -1;
  int exit_code_ = -1;
};

struct Finished {
  int exit_code = -1;
  std::string out;
  std::string err;
};

/// Runs the runner to its end.
Finished run_tool(const Scratch& scratch, std::vector<std::string> args, const fs::path& input = "/dev/null") {
  Started runner(scratch, std::move(args), input);
  const int code = runner.wait();
  return Finished{code, runner.out, runner.err_text};
}

/// True once `pid` is no more: no such process, or a zombie (dead, waiting for
/// its parent).
bool gone(pid_t pid) {
  if (::kill(pid, 0) != 0 && errno == ESRCH) return true;
  const std::string stat = read_file(fmt::format("/proc/{}/stat", pid));
  const std::size_t paren = stat.rfind(')');
  return paren == std::string::npos || (paren + 2 < stat.size() && (stat[paren + 2] == 'Z' || stat[paren + 2] == 'X'));
}

pid_t read_pid(const Scratch& scratch, std::string_view name) { return std::stoi(scratch.read(name)); }

json read_json(const Scratch& scratch, std::string_view name) { return json::parse(scratch.read(name)); }

const json& job(const json& report, std::string_view path) {
  for (const json& entry : report.at("jobs")) {
    if (entry.at("path") == path) return entry;
  }
  FAIL("no job " << path << " in the report");
  throw std::logic_error("unreachable");
}

bool contains(std::string_view text, std::string_view part) { return text.find(part) != std::string_view::npos; }

}  // namespace

TEST_CASE(
    "tasktree-run: a child job starts only after its parent succeeded "
    "(it reads what the parent wrote)") {
  Scratch scratch;
  const auto jobs = scratch.write("order.jobs", R"(# parents write, children read
a          sleep 0.2; echo from-a > $DIR/a.txt
a/b        cat $DIR/a.txt > $DIR/b.txt && echo b >> $DIR/b.txt
a/b/c      cat $DIR/b.txt > $DIR/c.txt && echo c >> $DIR/c.txt
a/d        test -s $DIR/a.txt && touch $DIR/d.txt
x/y        echo unrelated > $DIR/y.txt
)");
  const Finished run = run_tool(scratch, {"--workers", "4", jobs.string()});
  INFO(run.err);
  CHECK(run.exit_code == 0);
  CHECK(scratch.read("c.txt") == "from-a\nb\nc\n");
  CHECK(scratch.exists("d.txt"));
  CHECK(scratch.exists("y.txt"));
  CHECK(contains(run.err, "all 5 jobs succeeded"));
}

TEST_CASE(
    "tasktree-run: a job below a barrier starts only after every job "
    "beside the barrier finished") {
  Scratch scratch;
  const auto jobs = scratch.write("barrier.jobs", R"(
host/snapshot                      touch $DIR/snapshot
host/snapshot/replicate-a          sleep 0.3; touch $DIR/replicate-a
host/snapshot/replicate-b          touch $DIR/replicate-b
host/snapshot/~/prune              test -e $DIR/replicate-a && test -e $DIR/replicate-b && touch $DIR/prune
host/snapshot/~/~/monitor          test -e $DIR/prune && touch $DIR/monitor
)");
  const Finished run = run_tool(scratch, {"--workers", "4", jobs.string()});
  INFO(run.err);
  CHECK(run.exit_code == 0);
  CHECK(scratch.exists("prune"));
  CHECK(scratch.exists("monitor"));
}

namespace {
/// `bad` fails; `bad/child` depends on it; `good` does not; `~/last` waits for
/// everything.
constexpr std::string_view skip_plan = R"(
bad          echo "disk full" >&2; exit 7
bad/child    touch $DIR/child
good         touch $DIR/good
~/last       touch $DIR/last
)";
}  // namespace

TEST_CASE(
    "tasktree-run: --skip-on-error dataset runs the failed job's "
    "children and everything else, exit 1") {
  Scratch scratch;
  const auto jobs = scratch.write("skip.jobs", std::string(skip_plan));
  const Finished run =
      run_tool(scratch, {"--skip-on-error", "dataset", "--json", (scratch / "r.json").string(), jobs.string()});
  INFO(run.err);
  CHECK(run.exit_code == 1);
  CHECK(scratch.exists("child"));
  CHECK(scratch.exists("good"));
  CHECK(scratch.exists("last"));
  const json report = read_json(scratch, "r.json");
  CHECK(job(report, "bad").at("status") == "failed");
  CHECK(job(report, "bad").at("exit_code") == 7);
  CHECK(job(report, "bad/child").at("status") == "succeeded");
}

TEST_CASE("tasktree-run: --skip-on-error is dataset by default") {
  Scratch scratch;
  const auto jobs = scratch.write("skip.jobs", std::string(skip_plan));
  const Finished run = run_tool(scratch, {jobs.string()});
  CHECK(run.exit_code == 1);
  CHECK(scratch.exists("child"));
}

TEST_CASE(
    "tasktree-run: --skip-on-error tree skips the failed job's subtree "
    "and the barriers above it") {
  Scratch scratch;
  const auto jobs = scratch.write("skip.jobs", std::string(skip_plan));
  const Finished run =
      run_tool(scratch, {"--skip-on-error", "tree", "--json", (scratch / "r.json").string(), jobs.string()});
  INFO(run.err);
  CHECK(run.exit_code == 1);
  CHECK_FALSE(scratch.exists("child"));
  CHECK(scratch.exists("good"));
  CHECK_FALSE(scratch.exists("last"));  // the top-level barrier waits for bad's subtree, which failed
  const json report = read_json(scratch, "r.json");
  CHECK(job(report, "bad/child").at("status") == "skipped");
  CHECK(job(report, "bad/child").at("skipped_below") == "bad");
  CHECK(job(report, "~/last").at("status") == "skipped");
  CHECK(report.at("counts").at("skipped") == 2);
  CHECK(contains(run.err, "skipped because of a failure"));
  CHECK(contains(run.err, "disk full"));  // the failed job's last stderr lines
}

TEST_CASE(
    "tasktree-run: --skip-on-error fail starts no job after the first "
    "failure") {
  Scratch scratch;
  const auto jobs = scratch.write("skip.jobs", std::string(skip_plan));
  // One worker and name order: `bad` runs first, so nothing else may start.
  const Finished run =
      run_tool(scratch, {"--skip-on-error", "fail", "-j", "1", "--json", (scratch / "r.json").string(), jobs.string()});
  INFO(run.err);
  CHECK(run.exit_code == 1);
  CHECK_FALSE(scratch.exists("child"));
  CHECK_FALSE(scratch.exists("good"));
  CHECK_FALSE(scratch.exists("last"));
  const json report = read_json(scratch, "r.json");
  CHECK(report.at("stopped_by_failure") == true);
  CHECK(job(report, "good").at("status") == "not_run");
  CHECK(job(report, "good").at("attempts") == 0);
  CHECK(contains(run.err, "stopped at the first failure"));
}

TEST_CASE(
    "tasktree-run: --skip-on-error fail stops the jobs that are running "
    "when a job fails") {
  Scratch scratch;
  const auto jobs = scratch.write("fail-fast.jobs", R"(
a-long     echo $$ > $DIR/long.pid; exec sleep 300
b-fails    while [ ! -s $DIR/long.pid ]; do sleep 0.05; done; exit 1
)");
  const Finished run = run_tool(scratch, {"--skip-on-error", "fail", "-j", "2", jobs.string()});
  INFO(run.err);
  CHECK(run.exit_code == 1);
  CHECK(eventually([&] { return gone(read_pid(scratch, "long.pid")); }));
  CHECK(contains(run.err, "a-long: stopped"));
}

TEST_CASE("tasktree-run: --retries runs a flaky job again until it succeeds") {
  Scratch scratch;
  const auto jobs = scratch.write("flaky.jobs", R"(
flaky        if [ ! -e "$TASKTREE_RUN_DIR/tried" ]; then touch "$TASKTREE_RUN_DIR/tried"; echo transient >&2; exit 1; fi; echo "$TASKTREE_ATTEMPT" > $DIR/attempt
flaky/after  touch $DIR/after
)");
  SECTION("with one retry it succeeds on the second attempt") {
    const Finished run = run_tool(
        scratch, {"--retries", "1", "--retry-backoff", "0", "--json", (scratch / "r.json").string(), jobs.string()});
    INFO(run.err);
    CHECK(run.exit_code == 0);
    CHECK(scratch.read("attempt") == "2\n");
    CHECK(scratch.exists("after"));
    const json report = read_json(scratch, "r.json");
    CHECK(job(report, "flaky").at("attempts") == 2);
    CHECK(job(report, "flaky").at("status") == "succeeded");
    CHECK(report.at("counts").at("retries") == 1);
  }
  SECTION("without retries it fails") {
    const Finished run = run_tool(scratch, {"--skip-on-error", "tree", jobs.string()});
    CHECK(run.exit_code == 1);
    CHECK_FALSE(scratch.exists("after"));
  }
}

TEST_CASE("tasktree-run: a failing job is attempted 1 + --retries times") {
  Scratch scratch;
  const auto jobs = scratch.write("fails.jobs", "always  echo x >> $DIR/attempts; exit 2\n");
  const Finished run = run_tool(scratch, {"--retries", "2", "--retry-backoff", "0", jobs.string()});
  CHECK(run.exit_code == 1);
  CHECK(scratch.read("attempts") == "x\nx\nx\n");
  CHECK(contains(run.err, "always: exit code 2 after 3 attempts"));
}

TEST_CASE("tasktree-run: a job that timed out is retried like any failure") {
  Scratch scratch;
  const auto jobs = scratch.write("slow-once.jobs", R"(
slow-once    if [ "$TASKTREE_ATTEMPT" = 1 ]; then exec sleep 300; fi; touch $DIR/second
)");
  const Finished run =
      run_tool(scratch, {"--timeout", "0.5", "--kill-after", "0.5", "--retries", "1", "--retry-backoff", "0", "--json",
                         (scratch / "r.json").string(), jobs.string()});
  INFO(run.err);
  CHECK(run.exit_code == 0);
  CHECK(scratch.exists("second"));
  const json report = read_json(scratch, "r.json");
  CHECK(job(report, "slow-once").at("attempts") == 2);
  CHECK(job(report, "slow-once").at("status") == "succeeded");
  CHECK(contains(run.err, "slow-once: timed out (attempt 1"));
}

TEST_CASE("tasktree-run: SIGINT during a retry's backoff ends the run without further attempts") {
  Scratch scratch;
  const auto jobs = scratch.write("failing.jobs", "failing  echo x >> $DIR/attempts; exit 1\n");
  // A backoff ceiling of an hour: only the stop can end the wait within the test's bounds (unless
  // the random wait happens to be short, when the next attempt fails the same way).
  Started runner(scratch, {"--retries", "5", "--retry-backoff", "3600", jobs.string()});
  REQUIRE(eventually([&] { return contains(runner.err(), "FAILED failing"); }));
  REQUIRE(::kill(runner.pid(), SIGINT) == 0);
  const int code = runner.wait();
  INFO(runner.err_text);
  CHECK(code == 130);
  CHECK(contains(runner.err_text, "interrupted by SIGINT"));
  CHECK(contains(runner.err_text, "failing: exit code 1 after"));
}

TEST_CASE(
    "tasktree-run: a timeout kills the job's whole process group, "
    "grandchildren included") {
  Scratch scratch;
  const auto jobs = scratch.write("timeout.jobs", R"(
slow     sleep 300 & echo $! > $DIR/grandchild.pid; echo $$ > $DIR/child.pid; wait
slow/x   touch $DIR/never
)");
  const Finished run = run_tool(scratch, {"--timeout", "0.5", "--kill-after", "1", "--skip-on-error", "tree", "--json",
                                          (scratch / "r.json").string(), jobs.string()});
  INFO(run.err);
  CHECK(run.exit_code == 1);
  CHECK(eventually([&] { return gone(read_pid(scratch, "child.pid")); }));
  CHECK(eventually([&] { return gone(read_pid(scratch, "grandchild.pid")); }));
  CHECK_FALSE(scratch.exists("never"));
  CHECK(job(read_json(scratch, "r.json"), "slow").at("end") == "timed_out");
  CHECK(contains(run.err, "slow: timed out"));
}

TEST_CASE(
    "tasktree-run: a timed-out job that ignores SIGTERM gets SIGKILL "
    "after --kill-after") {
  Scratch scratch;
  // `trap '' TERM` makes the shell and the sleep it starts ignore SIGTERM.
  const auto jobs = scratch.write("stubborn.jobs", R"(
stubborn   trap '' TERM; sleep 300 & echo $! > $DIR/grandchild.pid; echo $$ > $DIR/child.pid; wait
)");
  const Finished run = run_tool(scratch, {"--timeout", "0.5", "--kill-after", "0.5", jobs.string()});
  INFO(run.err);
  CHECK(run.exit_code == 1);
  CHECK(eventually([&] { return gone(read_pid(scratch, "child.pid")); }));
  CHECK(eventually([&] { return gone(read_pid(scratch, "grandchild.pid")); }));
}

TEST_CASE(
    "tasktree-run: what a job leaves running in its process group is "
    "killed when it exits") {
  Scratch scratch;
  const auto jobs = scratch.write("leftover.jobs", "leaves  sleep 300 & echo $! > $DIR/leftover.pid\n");
  const Finished run = run_tool(scratch, {jobs.string()});
  CHECK(run.exit_code == 0);
  CHECK(eventually([&] { return gone(read_pid(scratch, "leftover.pid")); }));
}

namespace {
/// Two long jobs that record their pids (and a grandchild's), and one that must
/// never start.
constexpr std::string_view long_plan = R"(
a       echo $$ > $DIR/a.pid; sleep 300
b       sleep 300 & echo $! > $DIR/b-grandchild.pid; echo $$ > $DIR/b.pid; wait
b/c     touch $DIR/never
)";

void wait_for_pids(const Scratch& scratch) {
  REQUIRE(eventually([&] {
    return !scratch.read("a.pid").empty() && !scratch.read("b.pid").empty() &&
           !scratch.read("b-grandchild.pid").empty();
  }));
}

void check_all_gone(const Scratch& scratch) {
  for (const std::string_view name : {"a.pid", "b.pid", "b-grandchild.pid"}) {
    INFO(name);
    CHECK(eventually([&] { return gone(read_pid(scratch, name)); }));
  }
  CHECK_FALSE(scratch.exists("never"));
}
}  // namespace

TEST_CASE(
    "tasktree-run: SIGINT stops the run: jobs terminated, summary "
    "printed, exit code 130") {
  Scratch scratch;
  const auto jobs = scratch.write("long.jobs", std::string(long_plan));
  Started runner(scratch, {"-j", "2", "--json", (scratch / "r.json").string(), jobs.string()});
  wait_for_pids(scratch);
  REQUIRE(::kill(runner.pid(), SIGINT) == 0);
  const int code = runner.wait();
  INFO(runner.err_text);
  CHECK(code == 130);
  check_all_gone(scratch);
  CHECK(contains(runner.err_text, "interrupted by SIGINT"));
  CHECK(contains(runner.err_text, "2 stopped, 1 not run"));
  const json report = read_json(scratch, "r.json");
  CHECK(report.at("result") == "interrupted");
  CHECK(report.at("exit_code") == 130);
  CHECK(job(report, "a").at("status") == "stopped");
  CHECK(job(report, "b/c").at("status") == "not_run");
}

TEST_CASE("tasktree-run: SIGTERM stops the run like SIGINT, with exit code 143") {
  Scratch scratch;
  const auto jobs = scratch.write("long.jobs", std::string(long_plan));
  Started runner(scratch, {"-j", "2", jobs.string()});
  wait_for_pids(scratch);
  REQUIRE(::kill(runner.pid(), SIGTERM) == 0);
  const int code = runner.wait();
  INFO(runner.err_text);
  CHECK(code == 143);
  check_all_gone(scratch);
  CHECK(contains(runner.err_text, "interrupted by SIGTERM"));
}

TEST_CASE("tasktree-run: a second SIGINT kills jobs that ignore SIGTERM at once") {
  Scratch scratch;
  const auto jobs = scratch.write("stubborn.jobs", R"(
stubborn   trap '' TERM; sleep 300 & echo $! > $DIR/grandchild.pid; echo $$ > $DIR/child.pid; wait
)");
  // With --kill-after 100000 only the second SIGINT can end the job within the
  // test's bounds.
  Started runner(scratch, {"--kill-after", "100000", jobs.string()});
  REQUIRE(eventually([&] { return !scratch.read("child.pid").empty() && !scratch.read("grandchild.pid").empty(); }));
  REQUIRE(::kill(runner.pid(), SIGINT) == 0);
  REQUIRE(eventually([&] { return contains(runner.err(), "starting no new jobs"); }));
  REQUIRE(::kill(runner.pid(), SIGINT) == 0);
  const int code = runner.wait();
  INFO(runner.err_text);
  CHECK(code == 130);
  CHECK(eventually([&] { return gone(read_pid(scratch, "child.pid")); }));
  CHECK(eventually([&] { return gone(read_pid(scratch, "grandchild.pid")); }));
  CHECK(contains(runner.err_text, "SIGINT again: killed the running jobs"));
}

TEST_CASE(
    "tasktree-run: a bad jobs file is rejected with its line number, "
    "exit code 2, and nothing runs") {
  Scratch scratch;
  struct Case {
    std::string_view bad_line;
    std::string_view message;
  };
  const Case cases[] = {
      {"a//b  touch $DIR/ran", ":3: invalid job path \"a//b\": it has an empty component"},
      {"/a  touch $DIR/ran", ":3: invalid job path \"/a\": it starts with '/'"},
      {"a/  touch $DIR/ran", ":3: invalid job path \"a/\": it ends with '/'"},
      {"a/../b  touch $DIR/ran", ":3: invalid job path \"a/../b\": it has a \"..\" component"},
      {"first  touch $DIR/ran", ":3: duplicate job path \"first\" (first on line 2)"},
      {"lonely", ":3: job \"lonely\" has no command"},
      {"a/~  touch $DIR/ran", ":3: invalid job path \"a/~\": its last component is the barrier \"~\""},
  };
  for (const Case& c : cases) {
    INFO(c.bad_line);
    const auto jobs = scratch.write("bad.jobs", fmt::format("# line 1\nfirst  touch $DIR/ran\n{}\n", c.bad_line));
    const Finished run = run_tool(scratch, {jobs.string()});
    CHECK(run.exit_code == 2);
    CHECK(contains(run.err, fmt::format("{}{}", jobs.string(), c.message)));
    CHECK_FALSE(scratch.exists("ran"));
  }
}

TEST_CASE(
    "tasktree-run: a jobs file without jobs, or one that does not exist, "
    "is an input error (exit 2)") {
  Scratch scratch;
  const auto empty = scratch.write("empty.jobs", "# nothing\n\n");
  const Finished none = run_tool(scratch, {empty.string()});
  CHECK(none.exit_code == 2);
  CHECK(contains(none.err, "no jobs"));
  const Finished missing = run_tool(scratch, {(scratch / "missing.jobs").string()});
  CHECK(missing.exit_code == 2);
  CHECK(contains(missing.err, "cannot open jobs file"));
}

TEST_CASE("tasktree-run: bad options are usage errors (exit 2)") {
  Scratch scratch;
  const auto jobs = scratch.write("ok.jobs", "a  touch $DIR/ran\n");
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"--workers", "0"},
           {"--skip-on-error", "sometimes"},
           {"--priority", "size"},
           {"--retries", "-1"},
           {"--timeout", "0"},
           {"--no-such-option"},
       }) {
    INFO(fmt::format("{}", fmt::join(args, " ")));
    std::vector<std::string> all = args;
    all.push_back(jobs.string());
    const Finished run = run_tool(scratch, all);
    CHECK(run.exit_code == 2);
    CHECK_FALSE(run.err.empty());
  }
  CHECK_FALSE(scratch.exists("ran"));
}

TEST_CASE("tasktree-run: the jobs may come from standard input") {
  Scratch scratch;
  const auto jobs = scratch.write("stdin.jobs", "a  touch $DIR/a\na/b  touch $DIR/b\n");
  const Finished run = run_tool(scratch, {"-"}, jobs);
  CHECK(run.exit_code == 0);
  CHECK(scratch.exists("b"));
  const Finished bad = run_tool(scratch, {}, scratch.write("bad.jobs", "a\n"));
  CHECK(bad.exit_code == 2);
  CHECK(contains(bad.err, "<stdin>:1: job \"a\" has no command"));
}

TEST_CASE(
    "tasktree-run: --dry-run prints the tree and the one-worker order, "
    "and runs nothing") {
  Scratch scratch;
  const auto jobs = scratch.write("plan.jobs", R"(
h/snap            touch $DIR/ran
h/snap/~/prune    echo prune
h/snap/repl-b     echo b
h/snap/repl-a     echo a
g                 echo g
)");
  const Finished run = run_tool(scratch, {"--dry-run", jobs.string()});
  CHECK(run.exit_code == 0);
  CHECK_FALSE(scratch.exists("ran"));
  CHECK(
      run.out ==
      scratch.expand(
          R"(dependency tree (5 jobs; a job starts after the jobs above it; below "~" only after everything beside it):
├── g
└── h  (no job)
    └── snap
        ├── repl-a
        ├── repl-b
        └── ~  (barrier)
            └── prune

order with one worker if every job succeeds (--priority name):
1  g               echo g
2  h/snap          touch $DIR/ran
3  h/snap/repl-a   echo a
4  h/snap/repl-b   echo b
5  h/snap/~/prune  echo prune
)"));
}

TEST_CASE(
    "tasktree-run: --priority depth starts shallow jobs first (breadth "
    "first)") {
  Scratch scratch;
  const auto jobs = scratch.write("plan.jobs", "a  x\na/b  x\na/b/c  x\nz  x\nz/y  x\n");
  const Finished by_name = run_tool(scratch, {"--dry-run", jobs.string()});
  CHECK(contains(by_name.out, "1  a      x\n2  a/b    x\n3  a/b/c  x\n4  z      x\n5  z/y    x\n"));
  const Finished by_depth = run_tool(scratch, {"--dry-run", "--priority", "depth", jobs.string()});
  CHECK(contains(by_depth.out, "1  a      x\n2  z      x\n3  a/b    x\n4  z/y    x\n5  a/b/c  x\n"));
}

TEST_CASE(
    "tasktree-run: --dot prints a Graphviz digraph with barriers, and "
    "runs nothing") {
  Scratch scratch;
  const auto jobs = scratch.write("plan.jobs", "h  touch $DIR/ran\nh/r  x\nh/~/p  x\n");
  const Finished run = run_tool(scratch, {"--dot", jobs.string()});
  CHECK(run.exit_code == 0);
  CHECK_FALSE(scratch.exists("ran"));
  CHECK(run.out.starts_with("digraph tasktree {"));
  CHECK(contains(run.out, "[label=\"~\", shape=octagon"));
  CHECK(contains(run.out, "n1 -> n2;"));
  CHECK(contains(run.out,
                 "[style=dashed];"));  // the job beside the barrier feeds it
}

TEST_CASE("tasktree-run: --json reports settings, counts and every job") {
  Scratch scratch;
  const auto jobs = scratch.write("plan.jobs", R"(
ok       echo fine
ok/bad   echo "first" >&2; echo "second" >&2; exit 4
ok/bad/x touch $DIR/x
)");
  const Finished run =
      run_tool(scratch, {"--skip-on-error", "tree", "-j", "3", "--json", (scratch / "r.json").string(), jobs.string()});
  CHECK(run.exit_code == 1);
  const json report = read_json(scratch, "r.json");
  CHECK(report.at("result") == "failed");
  CHECK(report.at("exit_code") == 1);
  CHECK(report.at("signal").is_null());
  CHECK(report.at("settings").at("workers") == 3);
  CHECK(report.at("settings").at("skip_on_error") == "tree");
  CHECK(report.at("counts") == json{{"total", 3},
                                    {"succeeded", 1},
                                    {"failed", 1},
                                    {"skipped", 1},
                                    {"stopped", 0},
                                    {"not_run", 0},
                                    {"retries", 0}});
  const json& ok = job(report, "ok");
  CHECK(ok.at("status") == "succeeded");
  CHECK(ok.at("command") == "echo fine");
  CHECK(ok.at("line") == 2);
  CHECK(ok.at("submit_count") == 1);
  CHECK(ok.at("exit_code") == 0);
  const json& bad = job(report, "ok/bad");
  CHECK(bad.at("status") == "failed");
  CHECK(bad.at("exit_code") == 4);
  CHECK(bad.at("end") == "exited");
  CHECK(bad.at("stderr_tail") == json{"first", "second"});
  CHECK(bad.at("duration_seconds").get<double>() >= 0);
  CHECK(job(report, "ok/bad/x").at("status") == "skipped");
}

TEST_CASE(
    "tasktree-run: jobs see TASKTREE_JOB, TASKTREE_SUBMIT_COUNT and "
    "TASKTREE_ATTEMPT") {
  Scratch scratch;
  const auto jobs = scratch.write("env.jobs", R"(
first          echo "$TASKTREE_JOB $TASKTREE_SUBMIT_COUNT $TASKTREE_ATTEMPT" > $DIR/first
first/second   echo "$TASKTREE_JOB $TASKTREE_SUBMIT_COUNT $TASKTREE_ATTEMPT" > $DIR/second; test -d "$TASKTREE_RUN_DIR"
)");
  const Finished run = run_tool(scratch, {"-j", "1", jobs.string()});
  INFO(run.err);
  CHECK(run.exit_code == 0);
  CHECK(scratch.read("first") == "first 1 1\n");
  CHECK(scratch.read("second") == "first/second 2 1\n");
}

TEST_CASE(
    "tasktree-run: job output lines are prefixed with the job path, or "
    "go to --log-dir files") {
  Scratch scratch;
  const auto jobs = scratch.write("out.jobs", "a/b  echo out-line; echo err-line >&2\n");
  SECTION("on the console") {
    const Finished run = run_tool(scratch, {jobs.string()});
    CHECK(run.exit_code == 0);
    CHECK(contains(run.out, "[a/b] out-line\n"));
    CHECK(contains(run.err, "[a/b] err-line\n"));
  }
  SECTION("in files") {
    const Finished run = run_tool(scratch, {"--log-dir", (scratch / "logs").string(), jobs.string()});
    CHECK(run.exit_code == 0);
    CHECK_FALSE(contains(run.out, "out-line"));
    CHECK(scratch.read("logs/a/b.out") == "out-line\n");
    CHECK(scratch.read("logs/a/b.err") == "err-line\n");
  }
}

TEST_CASE(
    "tasktree-run: on a terminal, a live status line replaces the "
    "per-job log lines") {
  Scratch scratch;
  const auto jobs = scratch.write("live.jobs", "a  echo out-a\na/b  echo out-b\n");
  // The runner's standard error is a pseudo-terminal; the test reads everything
  // written to it.
  const int master = ::posix_openpt(O_RDWR | O_NOCTTY);
  REQUIRE(master >= 0);
  REQUIRE(::grantpt(master) == 0);
  REQUIRE(::unlockpt(master) == 0);
  const std::string terminal = ::ptsname(master);
  Started runner(scratch, {jobs.string()}, "/dev/null", terminal);
  std::string shown;
  char buffer[4096];
  const int flags = ::fcntl(master, F_GETFL);
  REQUIRE(::fcntl(master, F_SETFL, flags | O_NONBLOCK) == 0);
  const auto drain = [&] {
    while (true) {
      const ssize_t got = ::read(master, buffer, sizeof buffer);
      if (got <= 0) return;
      shown.append(buffer, static_cast<std::size_t>(got));
    }
  };
  const bool exited = eventually(
      [&] {
        drain();  // keeps the terminal's buffer from filling up
        return runner.try_wait();
      },
      std::chrono::seconds(120));
  REQUIRE(exited);
  drain();
  ::close(master);
  INFO(shown);
  CHECK(runner.exit_code() == 0);
  CHECK(contains(shown, "\r\x1b[K"));  // the status line is redrawn in place
  CHECK(contains(shown, "done, "));
  CHECK(contains(shown, " running, "));
  CHECK(contains(shown, "ETA"));
  CHECK_FALSE(contains(shown, "start  a"));  // no per-job log lines on a terminal
  CHECK(contains(shown, "all 2 jobs succeeded"));
  CHECK(contains(runner.out, "[a/b] out-b"));
}

TEST_CASE("tasktree-run: --work-period paces the starts and still runs every job") {
  Scratch scratch;
  const auto jobs = scratch.write("paced.jobs", "a  touch $DIR/a\nb  touch $DIR/b\nc  touch $DIR/c\n");
  for (const bool jitter : {false, true}) {
    std::vector<std::string> args{"--work-period", "0.3", jobs.string()};
    if (jitter) args.insert(args.begin(), "--jitter");
    const Finished run = run_tool(scratch, args);
    CHECK(run.exit_code == 0);
    CHECK(scratch.exists("c"));
  }
}

TEST_CASE(
    "tasktree-run: --help lists the options with their defaults and the "
    "exit codes") {
  Scratch scratch;
  const Finished run = run_tool(scratch, {"--help"});
  CHECK(run.exit_code == 0);
  for (const std::string_view text :
       {"--workers", "--skip-on-error", "--retries", "--timeout", "--work-period", "--jitter", "--priority",
        "--dry-run", "--dot", "--log-dir", "--json", "--demo", "dataset", "Exit codes", "130/143", "TASKTREE_JOB"}) {
    INFO(text);
    CHECK(contains(run.out, text));
  }
}

TEST_CASE(
    "tasktree-run: --demo runs the embedded plan, from any directory, "
    "and succeeds after one retry") {
  Scratch scratch;
  const Finished run = run_tool(scratch, {"--demo", "--json", (scratch / "r.json").string()});
  INFO(run.err);
  CHECK(run.exit_code == 0);
  const json report = read_json(scratch, "r.json");
  CHECK(report.at("counts").at("succeeded") == 16);
  CHECK(report.at("counts").at("retries") == 1);
  CHECK(job(report, "beta/snapshot/replicate-offsite").at("attempts") == 2);
}
