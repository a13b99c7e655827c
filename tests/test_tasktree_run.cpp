// End-to-end tests for tools/tasktree-run: the built binary runs real jobs files with real
// processes, for what needs one: running jobs, exit codes, signals, timeouts, retries, logs. The
// pure parts (jobs file parsing, options, --dry-run/--dot output, --json formatting) are tested in
// process in test_tasktree_run_core.cpp. Orders are checked through files the jobs write (a job
// fails if what it depends on is not there), never through timing; waits are bounded only to turn
// a hang into a failure.

#include <tasktree/journal.hpp>

#include "catch.hpp"
#include "support.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/file.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <random>
#include <set>
#include <sstream>
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
  try {
    return {std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
  } catch (const std::ios_base::failure&) {
    // A file of /proc vanishes with its process: reading it then fails (ESRCH), which libstdc++'s
    // stream buffer throws whatever the stream's exception mask. Like a missing file: nothing.
    return {};
  }
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
  /// `terminal`: a pseudo-terminal for standard error; with `controlling`, the runner leads a new
  /// session whose controlling terminal it is, as in a terminal window.
  Started(const Scratch& scratch, std::vector<std::string> args, const fs::path& input = "/dev/null",
          const std::string& terminal = "", bool controlling = false)
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
      posix_spawn_file_actions_addopen(&actions, 2, terminal.c_str(), controlling ? O_RDWR : O_RDWR | O_NOCTTY, 0);
    }
    posix_spawnattr_t attributes;
    posix_spawnattr_init(&attributes);
    if (controlling) posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSID);  // before the opens
    const int error = ::posix_spawn(&pid_, tool, &actions, &attributes, argv.data(), envp.data());
    posix_spawnattr_destroy(&attributes);
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

/// A pseudo-terminal for a runner's standard error (`Started`'s `terminal`), `columns` wide if
/// given: the test reads everything the runner writes to it.
class PseudoTerminal {
 public:
  explicit PseudoTerminal(unsigned short columns = 0) : master_(::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC)) {
    REQUIRE(master_ >= 0);
    REQUIRE(::grantpt(master_) == 0);
    REQUIRE(::unlockpt(master_) == 0);
    if (columns > 0) {
      winsize size{};
      size.ws_col = columns;
      size.ws_row = 24;
      REQUIRE(::ioctl(master_, TIOCSWINSZ, &size) == 0);
    }
    REQUIRE(::fcntl(master_, F_SETFL, ::fcntl(master_, F_GETFL) | O_NONBLOCK) == 0);
    path_ = ::ptsname(master_);
  }
  PseudoTerminal(const PseudoTerminal&) = delete;
  PseudoTerminal& operator=(const PseudoTerminal&) = delete;
  ~PseudoTerminal() { ::close(master_); }

  [[nodiscard]] const std::string& path() const { return path_; }
  /// The terminal's foreground process group.
  [[nodiscard]] pid_t foreground() const { return ::tcgetpgrp(master_); }
  /// Types `text` at the terminal, as a user at its keyboard would.
  void type(std::string_view text) const {
    REQUIRE(::write(master_, text.data(), text.size()) == static_cast<ssize_t>(text.size()));
  }
  /// Reads what the runner wrote since the last call (which keeps the terminal's buffer from
  /// filling up); returns all it wrote so far.
  const std::string& drain() {
    std::array<char, 4096> buffer{};
    for (ssize_t got = 0; (got = ::read(master_, buffer.data(), buffer.size())) > 0;) {
      shown_.append(buffer.data(), static_cast<std::size_t>(got));
    }
    return shown_;
  }
  /// Waits (bounded) for `runner` to exit, reading the terminal meanwhile; returns all it wrote.
  const std::string& wait_for(Started& runner) {
    REQUIRE(eventually(
        [&] {
          drain();
          return runner.try_wait();
        },
        std::chrono::seconds(120)));
    return drain();
  }

 private:
  int master_;
  std::string path_;
  std::string shown_;
};

/// True once `pid` is no more: no such process, or a zombie (dead, waiting for
/// its parent).
bool gone(pid_t pid) {
  if (::kill(pid, 0) != 0 && errno == ESRCH) return true;
  const std::string stat = read_file(fmt::format("/proc/{}/stat", pid));
  const std::size_t paren = stat.rfind(')');
  return paren == std::string::npos || (paren + 2 < stat.size() && (stat[paren + 2] == 'Z' || stat[paren + 2] == 'X'));
}

pid_t read_pid(const Scratch& scratch, std::string_view name) { return std::stoi(scratch.read(name)); }

// The live processes whose parent is `parent`, each with its process group, from /proc.
struct ChildProcess {
  pid_t pid = 0;
  pid_t group = 0;
};
std::vector<ChildProcess> children_of(pid_t parent) {
  std::vector<ChildProcess> children;
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    const std::string stat = read_file(entry.path() / "stat");
    const std::size_t paren = stat.rfind(')');
    if (paren == std::string::npos || paren + 2 >= stat.size()) continue;  // gone meanwhile
    std::istringstream fields(stat.substr(paren + 2));
    char state = 0;
    pid_t parent_pid = 0;
    pid_t group = 0;
    fields >> state >> parent_pid >> group;
    if (parent_pid == parent && state != 'Z' && state != 'X') children.push_back({std::stoi(name), group});
  }
  return children;
}

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

namespace {
/// What a file that a job writes must hold after the run: these words, or anything, or nothing.
constexpr std::string_view written = "<any contents>";
constexpr std::string_view absent = "<absent>";
}  // namespace

TEST_CASE("tasktree-run: jobs run in dependency order, with their environment and output, and an exit code") {
  // Each job proves its order by what it reads and writes in $DIR: a job fails if what it
  // depends on is not there.
  struct Case {
    std::string_view name;
    std::string_view plan;
    std::vector<std::string> args;  // before the jobs file; $DIR expanded; "-" reads it from stdin
    int exit_code;
    std::vector<std::pair<std::string_view, std::string_view>> files;  // name in $DIR -> contents
    std::vector<std::string_view> out;                                 // in standard output
    std::vector<std::string_view> err;                                 // in standard error
    std::string_view not_out = {};                                     // if set: not in standard output
  };
  const Case cases[] = {
      {"a child job starts only after its parent succeeded (it reads what the parent wrote)",
       R"(# parents write, children read
a          sleep 0.2; echo from-a > $DIR/a.txt
a/b        cat $DIR/a.txt > $DIR/b.txt && echo b >> $DIR/b.txt
a/b/c      cat $DIR/b.txt > $DIR/c.txt && echo c >> $DIR/c.txt
a/d        test -s $DIR/a.txt && touch $DIR/d.txt
x/y        echo unrelated > $DIR/y.txt
)",
       {"--workers", "4"},
       0,
       {{"c.txt", "from-a\nb\nc\n"}, {"d.txt", written}, {"y.txt", written}},
       {},
       {"all 5 jobs succeeded"}},
      {"a job below a barrier starts only after every job beside the barrier finished",
       R"(
host/snapshot                      touch $DIR/snapshot
host/snapshot/replicate-a          sleep 0.3; touch $DIR/replicate-a
host/snapshot/replicate-b          touch $DIR/replicate-b
host/snapshot/~/prune              test -e $DIR/replicate-a && test -e $DIR/replicate-b && touch $DIR/prune
host/snapshot/~/~/monitor          test -e $DIR/prune && touch $DIR/monitor
)",
       {"--workers", "4"},
       0,
       {{"prune", written}, {"monitor", written}},
       {},
       {"all 5 jobs succeeded"}},
      {"jobs see TASKTREE_JOB, TASKTREE_SUBMIT_COUNT, TASKTREE_ATTEMPT and TASKTREE_RUN_DIR",
       R"(
first          echo "$TASKTREE_JOB $TASKTREE_SUBMIT_COUNT $TASKTREE_ATTEMPT" > $DIR/first
first/second   echo "$TASKTREE_JOB $TASKTREE_SUBMIT_COUNT $TASKTREE_ATTEMPT" > $DIR/second; test -d "$TASKTREE_RUN_DIR"
)",
       {"-j", "1"},
       0,
       {{"first", "first 1 1\n"}, {"second", "first/second 2 1\n"}},
       {},
       {}},
      {"a failing job is attempted 1 + --retries times",
       "always  echo x >> $DIR/attempts; exit 2\n",
       {"--retries", "2", "--retry-backoff", "0"},
       1,
       {{"attempts", "x\nx\nx\n"}},
       {},
       {"always: exit code 2 after 3 attempts"}},
      {"job output lines go to the console, prefixed with the job path",
       "a/b  echo out-line; echo err-line >&2\n",
       {},
       0,
       {},
       {"[a/b] out-line\n"},
       {"[a/b] err-line\n"}},
      {"job output lines go to --log-dir files",
       "a/b  echo out-line; echo err-line >&2\n",
       {"--log-dir", "$DIR/logs"},
       0,
       {{"logs/a/b.out", "out-line\n"}, {"logs/a/b.err", "err-line\n"}},
       {},
       {},
       "out-line"},
      {"the jobs may come from standard input ('-')",
       "a  touch $DIR/a\na/b  touch $DIR/b\n",
       {"-"},
       0,
       {{"a", written}, {"b", written}},
       {},
       {}},
      {"--work-period paces the starts and still runs every job",
       "a  touch $DIR/a\nb  touch $DIR/b\nc  touch $DIR/c\n",
       {"--work-period", "0.3"},
       0,
       {{"a", written}, {"b", written}, {"c", written}},
       {},
       {}},
      {"--work-period with --jitter",
       "a  touch $DIR/a\nb  touch $DIR/b\nc  touch $DIR/c\n",
       {"--jitter", "--work-period", "0.3"},
       0,
       {{"a", written}, {"b", written}, {"c", written}},
       {},
       {}},
      {"the failed job's file is absent, the others are there",
       "ok  touch $DIR/ok\nok/bad  exit 3\nok/bad/never  touch $DIR/never\n",
       {"--skip-on-error", "tree"},
       1,
       {{"ok", written}, {"never", absent}},
       {},
       {"ok/bad: exit code 3 after 1 attempt"}},
  };
  for (const Case& c : cases) {
    DYNAMIC_SECTION(c.name) {
      Scratch scratch;
      const auto jobs = scratch.write("plan.jobs", std::string(c.plan));
      std::vector<std::string> args;
      for (const std::string& arg : c.args) args.push_back(scratch.expand(arg));
      const bool from_stdin = !args.empty() && args.back() == "-";
      if (!from_stdin) args.push_back(jobs.string());
      const Finished run = run_tool(scratch, args, from_stdin ? jobs : fs::path("/dev/null"));
      INFO(run.err);
      CHECK(run.exit_code == c.exit_code);
      for (const auto& [name, contents] : c.files) {
        INFO(name);
        if (contents == absent) {
          CHECK_FALSE(scratch.exists(name));
        } else {
          CHECK(scratch.exists(name));
          if (contents != written) CHECK(scratch.read(name) == contents);
        }
      }
      for (const std::string_view part : c.out) CHECK(contains(run.out, part));
      for (const std::string_view part : c.err) CHECK(contains(run.err, part));
      if (!c.not_out.empty()) CHECK_FALSE(contains(run.out, c.not_out));
    }
  }
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

TEST_CASE("tasktree-run: --skip-on-error decides what runs after a failure, exit 1") {
  struct Case {
    std::string_view name;
    std::vector<std::string> args;
    std::vector<std::pair<std::string_view, std::string_view>> status;  // job -> status in the report
    std::vector<std::string_view> err;                                  // in standard error
    bool stopped_by_failure;
  };
  const Case cases[] = {
      {"dataset: the failed job's children and everything else run",
       {"--skip-on-error", "dataset"},
       {{"bad", "failed"}, {"bad/child", "succeeded"}, {"good", "succeeded"}, {"~/last", "succeeded"}},
       {"disk full"},
       false},
      // The top-level barrier waits for bad's subtree, which failed.
      {"tree: the failed job's subtree and the barriers above it are skipped",
       {"--skip-on-error", "tree"},
       {{"bad", "failed"}, {"bad/child", "skipped"}, {"good", "succeeded"}, {"~/last", "skipped"}},
       {"skipped because of a failure", "disk full"},
       false},
      // The safe default (docs/tasktree-run.md): nothing that depends on a failed job runs.
      {"tree is the default",
       {},
       {{"bad", "failed"}, {"bad/child", "skipped"}, {"good", "succeeded"}, {"~/last", "skipped"}},
       {"skipped because of a failure", "disk full"},
       false},
      // One worker and name order: `bad` runs first, so nothing else may start; the jobs that
      // depend on it are reported as skipped, the others as not run.
      {"fail: no job starts after the first failure",
       {"--skip-on-error", "fail", "-j", "1"},
       {{"bad", "failed"}, {"bad/child", "skipped"}, {"good", "not_run"}, {"~/last", "skipped"}},
       {"stopped at the first failure", "disk full"},
       true},
  };
  for (const Case& c : cases) {
    DYNAMIC_SECTION(c.name) {
      Scratch scratch;
      const auto jobs = scratch.write("skip.jobs", std::string(skip_plan));
      std::vector<std::string> args = c.args;
      for (const std::string& arg : {std::string("--json"), (scratch / "r.json").string(), jobs.string()}) {
        args.push_back(arg);
      }
      const Finished run = run_tool(scratch, args);
      INFO(run.err);
      CHECK(run.exit_code == 1);
      const json report = read_json(scratch, "r.json");
      CHECK(report.at("stopped_by_failure") == c.stopped_by_failure);
      CHECK(job(report, "bad").at("exit_code") == 7);
      std::size_t skipped = 0;
      for (const auto& [path, status] : c.status) {
        INFO(path);
        CHECK(job(report, path).at("status") == status);
        // Each job touches a file named after its last component: it exists if the job ran.
        const std::string_view file = path.substr(path.rfind('/') + 1);
        if (path != "bad") CHECK(scratch.exists(file) == (status == "succeeded"));
        if (status == "not_run") CHECK(job(report, path).at("attempts") == 0);
        if (status == "skipped") ++skipped;
      }
      if (job(report, "bad/child").at("status") == "skipped") {
        CHECK(job(report, "bad/child").at("skipped_below") == "bad");
      }
      CHECK(report.at("counts").at("skipped") == skipped);
      for (const std::string_view part : c.err) CHECK(contains(run.err, part));
    }
  }
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
    // The failure that is retried is no failure of the run: the log line says what happens next.
    CHECK(contains(run.err, "failed flaky: exit code 1 (attempt 1 of 2, "));
    CHECK(contains(run.err, "); retrying\n"));
    CHECK_FALSE(contains(run.err, "FAILED"));
  }
  SECTION("without retries it fails") {
    const Finished run = run_tool(scratch, {"--skip-on-error", "tree", jobs.string()});
    INFO(run.err);
    CHECK(run.exit_code == 1);
    CHECK_FALSE(scratch.exists("after"));
    CHECK(contains(run.err, "FAILED flaky: exit code 1 (attempt 1, "));
    CHECK_FALSE(contains(run.err, "retrying"));
  }
}

TEST_CASE("tasktree-run: started as one of several ranks (mpiexec -n 2, srun -n 2) it refuses and runs nothing") {
  Scratch scratch;
  const auto jobs = scratch.write("once.jobs", "once  touch $DIR/ran\n");
  struct Variable {
    const char* name;
    const char* value;
    bool refused;
  };
  for (const Variable& variable :
       {Variable{"OMPI_COMM_WORLD_SIZE", "2", true}, Variable{"PMI_SIZE", "4", true},
        Variable{"SLURM_STEP_NUM_TASKS", "8", true}, Variable{"SLURM_STEP_NUM_TASKS", "1", false}}) {
    INFO(variable.name << "=" << variable.value);
    ::setenv(variable.name, variable.value, 1);
    const Finished run = run_tool(scratch, {jobs.string()});
    ::unsetenv(variable.name);
    INFO(run.err);
    if (variable.refused) {
      CHECK(run.exit_code == 2);
      CHECK(contains(run.err, fmt::format("tasktree-run: error: started as one of {} processes ({}={}), each of "
                                          "which would run every job of the plan",
                                          variable.value, variable.name, variable.value)));
      CHECK_FALSE(scratch.exists("ran"));
    } else {
      CHECK(run.exit_code == 0);
      CHECK(scratch.exists("ran"));
    }
  }
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
  REQUIRE(eventually([&] { return contains(runner.err(), "failed failing: exit code 1 (attempt 1 of 6, "); }));
  REQUIRE(::kill(runner.pid(), SIGINT) == 0);
  const int code = runner.wait();
  INFO(runner.err_text);
  CHECK(code == 130);
  CHECK(contains(runner.err_text, "interrupted by SIGINT"));
  CHECK(contains(runner.err_text, "failing: exit code 1 after"));
}

TEST_CASE("tasktree-run: no process of a job outlives it: timeouts and leftovers kill its whole process group") {
  struct Case {
    std::string_view name;
    std::string_view plan;  // the job `job` writes the pids of the processes in `pids`
    std::vector<std::string> args;
    int exit_code;
    std::vector<std::string_view> pids;
    std::string_view end;  // of `job` in the report
    std::string_view err;  // in standard error
  };
  const Case cases[] = {
      {"a timeout kills the job's whole process group, grandchildren included",
       "job     sleep 300 & echo $! > $DIR/grandchild.pid; echo $$ > $DIR/child.pid; wait\njob/x   touch $DIR/never\n",
       {"--timeout", "0.5", "--kill-after", "1", "--skip-on-error", "tree"},
       1,
       {"child.pid", "grandchild.pid"},
       "timed_out",
       "job: timed out"},
      // `trap '' TERM` makes the shell and the sleep it starts ignore SIGTERM.
      {"a timed-out job that ignores SIGTERM gets SIGKILL after --kill-after",
       "job   trap '' TERM; sleep 300 & echo $! > $DIR/grandchild.pid; echo $$ > $DIR/child.pid; wait\n",
       {"--timeout", "0.5", "--kill-after", "0.5"},
       1,
       {"child.pid", "grandchild.pid"},
       "timed_out",
       "job: timed out"},
      {"what a job leaves running in its process group is killed when it exits",
       "job  sleep 300 & echo $! > $DIR/leftover.pid\n",
       {},
       0,
       {"leftover.pid"},
       "exited",
       "the job succeeded"},
  };
  for (const Case& c : cases) {
    DYNAMIC_SECTION(c.name) {
      Scratch scratch;
      const auto jobs = scratch.write("plan.jobs", std::string(c.plan));
      std::vector<std::string> args = c.args;
      for (const std::string& arg : {std::string("--json"), (scratch / "r.json").string(), jobs.string()}) {
        args.push_back(arg);
      }
      const Finished run = run_tool(scratch, args);
      INFO(run.err);
      CHECK(run.exit_code == c.exit_code);
      for (const std::string_view name : c.pids) {
        INFO(name);
        CHECK(eventually([&] { return gone(read_pid(scratch, name)); }));
      }
      CHECK_FALSE(scratch.exists("never"));
      CHECK(job(read_json(scratch, "r.json"), "job").at("end") == c.end);
      CHECK(contains(run.err, c.err));
    }
  }
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
    "tasktree-run: SIGINT, SIGTERM, SIGHUP or SIGQUIT stops the run: jobs terminated, summary printed, exit code "
    "128 + signal") {
  struct Case {
    int signal;
    std::string_view name;
  };
  // SIGHUP: the terminal or ssh session went away; SIGQUIT: Ctrl-backslash. Without handling they
  // would kill the runner and leave its jobs running, with no summary or report.
  for (const Case& c :
       {Case{SIGINT, "SIGINT"}, Case{SIGTERM, "SIGTERM"}, Case{SIGHUP, "SIGHUP"}, Case{SIGQUIT, "SIGQUIT"}}) {
    DYNAMIC_SECTION(c.name) {
      Scratch scratch;
      const auto jobs = scratch.write("long.jobs", std::string(long_plan));
      Started runner(scratch, {"-j", "2", "--json", (scratch / "r.json").string(), jobs.string()});
      wait_for_pids(scratch);
      REQUIRE(::kill(runner.pid(), c.signal) == 0);
      const int code = runner.wait();
      INFO(runner.err_text);
      CHECK(code == 128 + c.signal);
      check_all_gone(scratch);
      CHECK(contains(runner.err_text, fmt::format("interrupted by {}", c.name)));
      CHECK(contains(runner.err_text, "2 stopped, 1 not run"));
      const json report = read_json(scratch, "r.json");
      CHECK(report.at("result") == "interrupted");
      CHECK(report.at("exit_code") == 128 + c.signal);
      CHECK(report.at("signal") == c.name);
      CHECK(job(report, "a").at("status") == "stopped");
      CHECK(job(report, "b/c").at("status") == "not_run");
    }
  }
}

TEST_CASE("tasktree-run: a signal stops the jobs even while the runner's standard output is a full pipe nobody reads") {
  Scratch scratch;
  // The runner's standard output is a FIFO that this test holds open and does not read (until the
  // end): the job floods it, so the runner blocks writing its output.
  const fs::path out = scratch / "runner.out";
  REQUIRE(::mkfifo(out.c_str(), 0600) == 0);
  const int reader = ::open(out.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC);
  REQUIRE(reader >= 0);
  const int capacity = ::fcntl(reader, F_GETPIPE_SZ);
  REQUIRE(capacity > 0);
  const auto jobs = scratch.write("flood.jobs", R"(
flood   echo $$ > $DIR/flood.pid; yes "a line of output" | head -n 2000000; sleep 300
)");
  Started runner(scratch, {jobs.string()});
  // Until the pipe is full (writes block before its last page fills) and stays so: the runner is
  // blocked in a write, holding its console.
  const auto queued = [reader] {
    int bytes = 0;
    return ::ioctl(reader, FIONREAD, &bytes) == 0 ? bytes : -1;
  };
  REQUIRE(eventually([&] {
    const int before = queued();
    if (scratch.read("flood.pid").empty() || before < capacity / 2) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    return queued() == before;
  }));
  REQUIRE(::kill(runner.pid(), SIGTERM) == 0);
  // The job's process group gets SIGTERM although no byte of output can be written.
  CHECK(eventually([&] { return gone(read_pid(scratch, "flood.pid")); }));
  // Now let the output go: the runner finishes its run as after any SIGTERM. (The FIFO leaves
  // the path, so that what the runner wrote can be read back from a file: nothing, here.)
  REQUIRE(::unlink(out.c_str()) == 0);
  scratch.write("runner.out", "");
  char buffer[65536];
  const bool exited = eventually([&] {
    while (::read(reader, buffer, sizeof buffer) > 0) {
    }
    return runner.try_wait();
  });
  ::close(reader);
  REQUIRE(exited);
  INFO(runner.err_text);
  CHECK(runner.exit_code() == 128 + SIGTERM);
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
  CHECK(contains(runner.err(), "running jobs get SIGTERM (SIGKILL 100000s later, or at once on a second Ctrl-C)"));
  REQUIRE(::kill(runner.pid(), SIGINT) == 0);
  const int code = runner.wait();
  INFO(runner.err_text);
  CHECK(code == 130);
  CHECK(eventually([&] { return gone(read_pid(scratch, "child.pid")); }));
  CHECK(eventually([&] { return gone(read_pid(scratch, "grandchild.pid")); }));
  CHECK(contains(runner.err_text, "SIGINT again: killed the running jobs"));
}

TEST_CASE("tasktree-run: a bad jobs file or option is an input error: a message, exit code 2, and nothing runs") {
  // Each kind of bad line and option is in test_tasktree_run_core.cpp; here one of each reaches
  // standard error. `$JOBS` is the jobs file's path.
  struct Case {
    std::string_view name;
    std::vector<std::string> args;
    std::string_view jobs;  // the jobs file
    bool from_stdin;        // the jobs file is standard input
    std::string_view message;
  };
  const Case cases[] = {
      {"a bad line",
       {"$JOBS"},
       "# line 1\nfirst  touch $DIR/ran\na//b  touch $DIR/ran\n",
       false,
       "tasktree-run: $JOBS:3: invalid job path \"a//b\": it has an empty component"},
      {"a bad line on standard input",
       {},
       "a  touch $DIR/ran\nb\n",
       true,
       "tasktree-run: <stdin>:2: job \"b\" has no command"},
      {"no jobs", {"$JOBS"}, "# nothing\n\n", false, "tasktree-run: $JOBS: no jobs"},
      {"no such file", {"$JOBS.missing"}, "", false, "tasktree-run: cannot open jobs file \"$JOBS.missing\""},
      {"a bad option value",
       {"--workers", "0", "$JOBS"},
       "a  touch $DIR/ran\n",
       false,
       "--workers: 0 is not between 1 and 100000"},
      {"an unknown option", {"--no-such-option", "$JOBS"}, "a  touch $DIR/ran\n", false, "--no-such-option"},
  };
  for (const Case& c : cases) {
    DYNAMIC_SECTION(c.name) {
      Scratch scratch;
      const auto jobs = scratch.write("input.jobs", std::string(c.jobs));
      const auto expand = [&](std::string text) {
        for (std::size_t at = text.find("$JOBS"); at != std::string::npos; at = text.find("$JOBS", at)) {
          text.replace(at, 5, jobs.string());
        }
        return text;
      };
      std::vector<std::string> args;
      for (const std::string& arg : c.args) args.push_back(expand(arg));
      const Finished run = run_tool(scratch, args, c.from_stdin ? jobs : fs::path("/dev/null"));
      INFO(run.err);
      CHECK(run.exit_code == 2);
      CHECK(contains(run.err, expand(std::string(c.message))));
      CHECK(run.out.empty());
      CHECK_FALSE(scratch.exists("ran"));
    }
  }
}

TEST_CASE("tasktree-run: --dry-run, --dot, --help and --version print to standard output, run nothing, exit 0") {
  // What they print is checked in test_tasktree_run_core.cpp.
  struct Case {
    std::vector<std::string> args;
    std::string_view starts_with;
  };
  const Case cases[] = {
      {{"--dry-run", "$JOBS"}, "dependency tree (2 jobs;"},
      {{"-n", "--priority", "depth", "$JOBS"}, "dependency tree (2 jobs;"},
      {{"--dot", "$JOBS"}, "digraph tasktree {"},
      {{"--help"}, "Runs shell commands named by slash-separated job paths"},
      {{"--version"}, "tasktree-run "},
  };
  for (const Case& c : cases) {
    DYNAMIC_SECTION(fmt::format("{}", fmt::join(c.args, " "))) {
      Scratch scratch;
      const auto jobs = scratch.write("plan.jobs", "h  touch $DIR/ran\nh/~/p  touch $DIR/ran\n");
      std::vector<std::string> args = c.args;
      if (args.back() == "$JOBS") args.back() = jobs.string();
      const Finished run = run_tool(scratch, args);
      INFO(run.err);
      CHECK(run.exit_code == 0);
      CHECK(run.out.starts_with(c.starts_with));
      CHECK(run.err.empty());
      CHECK_FALSE(scratch.exists("ran"));
    }
  }
}

TEST_CASE("tasktree-run: --json records what happened to every job in the run") {
  // The report's format is checked in test_tasktree_run_core.cpp; here, that a real run fills it.
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
  CHECK(report.at("settings").at("workers") == 3);
  CHECK(report.at("settings").at("skip_on_error") == "tree");
  CHECK(report.at("counts") == json{{"total", 3},
                                    {"succeeded", 1},
                                    {"failed", 1},
                                    {"skipped", 1},
                                    {"stopped", 0},
                                    {"not_run", 0},
                                    {"resumed", 0},
                                    {"retries", 0}});
  const json& ok = job(report, "ok");
  CHECK(ok.at("status") == "succeeded");
  CHECK(ok.at("line") == 2);
  CHECK(ok.at("submit_count") == 1);
  CHECK(ok.at("exit_code") == 0);
  const json& bad = job(report, "ok/bad");
  CHECK(bad.at("status") == "failed");
  CHECK(bad.at("submit_count") == 2);
  CHECK(bad.at("exit_code") == 4);
  CHECK(bad.at("end") == "exited");
  CHECK(bad.at("stderr_tail") == json{"first", "second"});
  CHECK(job(report, "ok/bad/x").at("status") == "skipped");
}

TEST_CASE("tasktree-run: --json turns bytes that are not UTF-8 into U+FFFD, and the run keeps its exit code") {
  // A job path and a command with bytes 0xFF and 0xFE, and standard error that is not UTF-8: the
  // report must still be JSON, and exit code 1 says that a job failed, not that the report did.
  Scratch scratch;
  const auto jobs = scratch.write("bytes.jobs",
                                  "bad\xff  printf '\\377\\376 bad' >&2; exit 3\n"
                                  "ok     echo \xfe > $DIR/ok\n");
  const Finished run = run_tool(scratch, {"--json", (scratch / "r.json").string(), jobs.string()});
  INFO(run.err);
  CHECK(run.exit_code == 1);
  CHECK(scratch.exists("ok"));
  const json report = read_json(scratch, "r.json");
  CHECK(report.at("result") == "failed");
  CHECK(report.at("exit_code") == 1);
  const json& bad = job(report, "bad\xEF\xBF\xBD");  // U+FFFD in UTF-8
  CHECK(bad.at("exit_code") == 3);
  CHECK(bad.at("stderr_tail") == json{"\xEF\xBF\xBD\xEF\xBF\xBD bad"});
  CHECK(job(report, "ok").at("command") == "echo \xEF\xBF\xBD > " + (scratch / "ok").string());
}

namespace {
/// The names in `scratch`'s directory `dir` that begin with `prefix` (leftover temporary files).
std::vector<std::string> names_starting(const Scratch& scratch, std::string_view dir, std::string_view prefix) {
  std::vector<std::string> names;
  for (const fs::directory_entry& entry : fs::directory_iterator(scratch / dir)) {
    const std::string name = entry.path().filename().string();
    if (name.starts_with(prefix)) names.push_back(name);
  }
  return names;
}

constexpr std::string_view earlier_report = "{\"an\": \"earlier report\"}\n";
}  // namespace

TEST_CASE("tasktree-run: --json replaces an earlier report only with a complete new one") {
  Scratch scratch;
  REQUIRE(fs::create_directory(scratch / "out"));
  const fs::path report = scratch / "out" / "r.json";
  scratch.write("out/r.json", std::string(earlier_report));
  const auto leftovers = [&] { return names_starting(scratch, "out", "r.json.tmp."); };

  SECTION("a bad jobs file: nothing runs, exit 2, and the earlier report stays as it was") {
    const auto jobs = scratch.write("bad.jobs", "a  touch $DIR/ran\na//b  touch $DIR/ran\n");
    const Finished run = run_tool(scratch, {"--json", report.string(), jobs.string()});
    INFO(run.err);
    CHECK(run.exit_code == 2);
    CHECK_FALSE(scratch.exists("ran"));
    CHECK(scratch.read("out/r.json") == earlier_report);
    CHECK(leftovers().empty());
  }
  SECTION("a completed run replaces it, with its permissions, and leaves no temporary file") {
    fs::permissions(report, fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read);
    const auto jobs = scratch.write("plan.jobs", "a  touch $DIR/ran\n");
    const Finished run = run_tool(scratch, {"--json", report.string(), jobs.string()});
    INFO(run.err);
    CHECK(run.exit_code == 0);
    CHECK(read_json(scratch, "out/r.json").at("result") == "succeeded");
    CHECK((fs::status(report).permissions() & fs::perms::all) ==
          (fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read));
    CHECK(leftovers().empty());
  }
  SECTION("through a symbolic link: the link stays, the file it points to gets the report") {
    const fs::path link = scratch / "out" / "link.json";
    fs::create_symlink(report, link);
    const auto jobs = scratch.write("plan.jobs", "a  touch $DIR/ran\n");
    const Finished run = run_tool(scratch, {"--json", link.string(), jobs.string()});
    INFO(run.err);
    CHECK(run.exit_code == 0);
    CHECK(fs::is_symlink(link));
    CHECK(read_json(scratch, "out/r.json").at("result") == "succeeded");
    CHECK(leftovers().empty());
  }
  SECTION("a report that cannot be put in place: a message naming the path, exit 2, no temporary file left") {
    // The job puts a directory where the report goes: the rename at the end fails.
    const auto jobs = scratch.write("plan.jobs", "a  rm $DIR/out/r.json && mkdir -p $DIR/out/r.json/in-the-way\n");
    const Finished run = run_tool(scratch, {"--json", report.string(), jobs.string()});
    INFO(run.err);
    CHECK(run.exit_code == 2);
    CHECK(contains(run.err,
                   fmt::format("tasktree-run: cannot write the --json file {:?}: cannot rename", report.string())));
    CHECK(fs::is_directory(report));
    CHECK(leftovers().empty());
  }
}

TEST_CASE("tasktree-run: an unwritable --json path is an input error: a message, exit code 2, and nothing runs") {
  Scratch scratch;
  const auto jobs = scratch.write("plan.jobs", "a  touch $DIR/ran\n");
  const fs::path report = scratch / "missing" / "r.json";
  const Finished run = run_tool(scratch, {"--json", report.string(), jobs.string()});
  INFO(run.err);
  CHECK(run.exit_code == 2);
  CHECK(contains(run.err, fmt::format("tasktree-run: cannot write the --json file {:?}: ", report.string())));
  CHECK_FALSE(scratch.exists("ran"));
}

TEST_CASE("tasktree-run: a runner killed in mid-run leaves the earlier --json report intact") {
  Scratch scratch;
  scratch.write("r.json", std::string(earlier_report));
  const auto jobs = scratch.write("long.jobs", "long  echo $$ > $DIR/x.pid; exec sleep 300\n");
  Started runner(scratch, {"--json", (scratch / "r.json").string(), jobs.string()});
  REQUIRE(eventually([&] { return !scratch.read("x.pid").empty(); }));
  CHECK(scratch.read("r.json") == earlier_report);  // the run is under way: the report is untouched
  REQUIRE(::kill(runner.pid(), SIGKILL) == 0);
  CHECK(runner.wait() == 1000 + SIGKILL);
  // The runner's watchdog stops the job it left running.
  const pid_t job_pid = read_pid(scratch, "x.pid");
  CHECK(eventually([&] { return gone(job_pid); }));
  CHECK(scratch.read("r.json") == earlier_report);
  // What the killed runner left: its empty temporary report. The next runner that writes the same
  // report removes it, and puts its own report in place.
  CHECK(names_starting(scratch, ".", "r.json.tmp.").size() == 1);
  const auto quick = scratch.write("quick.jobs", "quick  true\n");
  const Finished next = run_tool(scratch, {"--json", (scratch / "r.json").string(), quick.string()});
  CHECK(next.exit_code == 0);
  CHECK(names_starting(scratch, ".", "r.json.tmp.").empty());
  CHECK(nlohmann::json::parse(scratch.read("r.json"))["result"] == "succeeded");
}

TEST_CASE("tasktree-run: a temporary report that no runner holds is removed and one that a live runner holds is kept") {
  // A runner holds a lock (flock) on its temporary report until it renames it: a live runner's
  // stays, a dead runner's (unlocked) goes, and names that only look alike are not touched.
  Scratch scratch;
  const auto quick = scratch.write("quick.jobs", "quick  true\n");
  scratch.write("r.json.tmp.AAAAAA", "left by a dead runner");
  scratch.write("r.json.tmp.BBBBBB", "a live runner's");
  scratch.write("r.json.tmp.long-name", "not a temporary report");
  scratch.write("other.json.tmp.CCCCCC", "another report's");
  const int held = ::open((scratch / "r.json.tmp.BBBBBB").c_str(), O_RDONLY | O_CLOEXEC);
  REQUIRE(held >= 0);
  REQUIRE(::flock(held, LOCK_EX) == 0);
  const Finished run = run_tool(scratch, {"--json", (scratch / "r.json").string(), quick.string()});
  ::close(held);
  CHECK(run.exit_code == 0);
  CHECK_FALSE(fs::exists(scratch / "r.json.tmp.AAAAAA"));
  CHECK(scratch.read("r.json.tmp.BBBBBB") == "a live runner's");
  CHECK(scratch.read("r.json.tmp.long-name") == "not a temporary report");
  CHECK(scratch.read("other.json.tmp.CCCCCC") == "another report's");
  CHECK(nlohmann::json::parse(scratch.read("r.json"))["result"] == "succeeded");
}

TEST_CASE("tasktree-run: no job outlives a runner killed with SIGKILL, nor what the job started") {
  // The job, a process it started in the background, and one that ignores SIGTERM (it gets SIGKILL
  // after --kill-after); the watchdog ends them all, removes the run directory, and then itself.
  Scratch scratch;
  const auto jobs = scratch.write("plan.jobs", R"(
a  echo $TASKTREE_RUN_DIR > $DIR/run_dir; sleep 300 & echo $! > $DIR/child.pid; echo $$ > $DIR/a.pid; wait
b  trap '' TERM; echo $$ > $DIR/b.pid; while :; do sleep 1; done
)");
  Started runner(scratch, {"-j", "2", "--kill-after", "1", jobs.string()});
  REQUIRE(eventually([&] {
    return !scratch.read("child.pid").empty() && !scratch.read("a.pid").empty() && !scratch.read("b.pid").empty();
  }));
  const pid_t a = read_pid(scratch, "a.pid");
  const pid_t child = read_pid(scratch, "child.pid");
  const pid_t b = read_pid(scratch, "b.pid");
  std::string run_directory = scratch.read("run_dir");
  while (!run_directory.empty() && run_directory.back() == '\n') run_directory.pop_back();
  REQUIRE(fs::is_directory(run_directory));
  // The watchdog is the runner's other child: the one that is not a job's shell.
  std::vector<pid_t> watchdogs;
  for (const ChildProcess& process : children_of(runner.pid())) {
    if (process.pid != a && process.pid != b && process.group == process.pid) watchdogs.push_back(process.pid);
  }
  REQUIRE(watchdogs.size() == 1);
  REQUIRE(::kill(runner.pid(), SIGKILL) == 0);
  CHECK(runner.wait() == 1000 + SIGKILL);
  CHECK(eventually([&] { return gone(a) && gone(child) && gone(b); }));
  CHECK(eventually([&] { return gone(watchdogs.front()); }));
  CHECK_FALSE(fs::exists(run_directory));
}

TEST_CASE("tasktree-run: a run removes the run directories of runners that are gone, and only those") {
  // As left when a runner and its watchdog were both killed: a directory naming a process that no
  // longer exists. One naming a live process, and one without the pid file, stay.
  Scratch scratch;
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  REQUIRE(child > 0);
  REQUIRE(::waitpid(child, nullptr, 0) == child);  // its id now names no process
  fs::create_directories(scratch / "tasktree-run.Gone01");
  scratch.write("tasktree-run.Gone01/.tasktree-run.pid", fmt::format("{}\n", child));
  scratch.write("tasktree-run.Gone01/left-by-a-job", "x");
  fs::create_directories(scratch / "tasktree-run.Alive1");
  scratch.write("tasktree-run.Alive1/.tasktree-run.pid", fmt::format("{}\n", ::getpid()));
  fs::create_directories(scratch / "tasktree-run.NoPid1");
  const auto jobs = scratch.write("plan.jobs", "a  test -e $TASKTREE_RUN_DIR/.tasktree-run.pid\n");
  const Finished run = run_tool(scratch, {jobs.string()});  // TMPDIR is the scratch directory
  INFO(run.err);
  CHECK(run.exit_code == 0);
  CHECK_FALSE(scratch.exists("tasktree-run.Gone01"));
  CHECK(contains(run.err, fmt::format("the run directory of a runner that is gone (pid {})", child)));
  CHECK(scratch.exists("tasktree-run.Alive1"));
  CHECK(scratch.exists("tasktree-run.NoPid1"));
}

TEST_CASE("tasktree-run: a run that ends normally waits for its watchdog: none outlives the runner") {
  Scratch scratch;
  const auto jobs =
      scratch.write("plan.jobs", "a  echo $$ > $DIR/a.pid; while [ ! -e $DIR/go ]; do sleep 0.05; done\n");
  Started runner(scratch, {jobs.string()});
  REQUIRE(eventually([&] { return !scratch.read("a.pid").empty(); }));
  const pid_t a = read_pid(scratch, "a.pid");
  std::vector<pid_t> watchdogs;
  for (const ChildProcess& process : children_of(runner.pid())) {
    if (process.pid != a) watchdogs.push_back(process.pid);
  }
  REQUIRE(watchdogs.size() == 1);
  scratch.write("go", "");
  CHECK(runner.wait() == 0);
  CHECK(gone(watchdogs.front()));  // at once: the runner reaped it before it exited
}

TEST_CASE("tasktree-run: --log-dir files are byte-exact copies of what the job wrote") {
  // No newline at the end, a line of 200,000 bytes (over the 64 KiB the console cuts lines into),
  // an empty line and a carriage return: the files hold exactly the bytes.
  Scratch scratch;
  const auto jobs = scratch.write("bytes.jobs", R"(
exact  printf 'one\n\nthree\r\n'; head -c 200000 /dev/zero | tr '\0' x; printf '\nno newline'; printf 'e1\ne2' >&2
)");
  const Finished run = run_tool(scratch, {"--log-dir", (scratch / "logs").string(), jobs.string()});
  INFO(run.err);
  CHECK(run.exit_code == 0);
  const std::string expected = "one\n\nthree\r\n" + std::string(200000, 'x') + "\nno newline";
  const std::string out = scratch.read("logs/exact.out");
  CHECK(out.size() == expected.size());
  CHECK(out == expected);
  CHECK(scratch.read("logs/exact.err") == "e1\ne2");
}

TEST_CASE(
    "tasktree-run: a log file that cannot be created fails only its job, and the summary and report are written") {
  Scratch scratch;
  const auto jobs = scratch.write("plan.jobs", "x/y  touch $DIR/y\nz  touch $DIR/z\n");
  fs::create_directories(scratch / "logs");
  scratch.write("logs/x", "a file where job x/y needs its log directory\n");
  const Finished run = run_tool(
      scratch, {"--log-dir", (scratch / "logs").string(), "--json", (scratch / "r.json").string(), jobs.string()});
  INFO(run.err);
  CHECK(run.exit_code == 1);
  CHECK_FALSE(scratch.exists("y"));  // it never started
  CHECK(scratch.exists("z"));
  const std::string directory = (scratch / "logs" / "x").string();
  CHECK(contains(run.err, fmt::format("FAILED x/y: cannot create log directory {:?}: Not a directory", directory)));
  CHECK(contains(run.err, "2 jobs in "));  // the summary
  const json report = read_json(scratch, "r.json");
  CHECK(job(report, "x/y").at("status") == "failed");
  CHECK(job(report, "x/y").at("end") == "output_failed");
  CHECK(job(report, "x/y").at("error") == fmt::format("cannot create log directory {:?}: Not a directory", directory));
  CHECK(job(report, "z").at("status") == "succeeded");
}

TEST_CASE("tasktree-run: more workers than the file descriptor limit allows run fewer at once, with a warning") {
  // A hard limit of 120 descriptors (set by a shell in front of the runner) has room for 11 jobs
  // at once: -j 40 would run out of descriptors; the runner says so and runs every job anyway.
  Scratch scratch;
  std::string plan;
  for (int i = 0; i < 40; ++i) plan += fmt::format("job{}  echo $$ > $DIR/ran{}; sleep 0.05\n", i, i);
  const auto jobs = scratch.write("many.jobs", plan);
  const std::string script = fmt::format("ulimit -n 120 && exec {} -j 40 {} >{} 2>{}", tool, jobs.string(),
                                         (scratch / "out").string(), (scratch / "err").string());
  const int status = std::system(script.c_str());
  const std::string err = scratch.read("err");
  INFO(err);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(contains(err,
                 "tasktree-run: warning: 40 jobs at once need about 264 file descriptors, but the limit is 120 "
                 "(ulimit -n): running at most 11 at once"));
  for (int i = 0; i < 40; ++i) CHECK(scratch.exists(fmt::format("ran{}", i)));
  CHECK(contains(err, "all 40 jobs succeeded"));
}

TEST_CASE("tasktree-run: a command run directly behaves as through the shell: arguments, not found, not executable") {
  Scratch scratch;
  scratch.write("not-executable", "#!/bin/sh\ntrue\n");
  const auto jobs = scratch.write("direct.jobs", R"(
args           /usr/bin/printf %s-%s/ one two
missing        no-such-program-of-tasktree x
not-executable $DIR/not-executable
)");
  const Finished run = run_tool(scratch, {"--json", (scratch / "r.json").string(), jobs.string()});
  INFO(run.err);
  CHECK(run.exit_code == 1);
  CHECK(contains(run.out, "[args] one-two/\n"));  // the format, used once for both arguments
  const json report = read_json(scratch, "r.json");
  CHECK(job(report, "missing").at("exit_code") == 127);  // as the shell says it
  CHECK(contains(run.err, "[missing] /bin/sh: 1: no-such-program-of-tasktree: not found"));
  CHECK(job(report, "not-executable").at("exit_code") == 126);
  CHECK(contains(run.err, "Permission denied"));
}

TEST_CASE("tasktree-run: --shell bash runs pipelines with pipefail; a shell that does not exist is an input error") {
  Scratch scratch;
  const auto jobs = scratch.write("pipe.jobs", "pipeline  false | true\n");
  CHECK(run_tool(scratch, {jobs.string()}).exit_code == 0);  // /bin/sh: the last command's status
  const Finished bash = run_tool(scratch, {"--shell", "bash", "--json", (scratch / "r.json").string(), jobs.string()});
  INFO(bash.err);
  CHECK(bash.exit_code == 1);
  CHECK(read_json(scratch, "r.json").at("settings").at("shell") == "bash");
  const auto marker = scratch.write("marker.jobs", "a  touch $DIR/ran\n");
  const Finished missing = run_tool(scratch, {"--shell", "no-such-shell-of-tasktree", marker.string()});
  CHECK(missing.exit_code == 2);
  CHECK(contains(missing.err, R"(tasktree-run: --shell: no program "no-such-shell-of-tasktree" in PATH)"));
  const Finished not_a_file = run_tool(scratch, {"--shell", scratch.dir().string(), marker.string()});
  CHECK(not_a_file.exit_code == 2);
  CHECK(contains(not_a_file.err,
                 fmt::format("tasktree-run: --shell: {:?} is not an executable file", scratch.dir().string())));
  CHECK_FALSE(scratch.exists("ran"));
}

TEST_CASE("tasktree-run: --journal FILE --status prints what the journal says, and runs nothing") {
  Scratch scratch;
  const auto jobs =
      scratch.write("plan.jobs", "ok  true\nbad  exit 3\nbad/below  touch $DIR/below\nlater  touch $DIR/later\n");
  const std::string journal = (scratch / "run.journal").string();
  // A first run of all but "later".
  const auto first = scratch.write("first.jobs", "ok  true\nbad  exit 3\nbad/below  touch $DIR/below\n");
  CHECK(run_tool(scratch, {"--journal", journal, first.string()}).exit_code == 1);
  const Finished status = run_tool(scratch, {"--journal", journal, "--status", jobs.string()});
  INFO(status.out << status.err);
  CHECK(status.exit_code == 1);
  CHECK(contains(status.out, "done     ok "));
  CHECK(contains(status.out, "FAILED   bad        exit code 3 (1 attempt)\n"));
  CHECK(contains(status.out, "not run  later\n"));
  CHECK(contains(status.out, "tasktree-run: 4 jobs: 1 done, 1 failed, 0 skipped, 0 changed, 2 not run;"));
  CHECK_FALSE(scratch.exists("later"));
  // Bad input: a journal that does not exist, and --status without --journal.
  const Finished missing = run_tool(scratch, {"--journal", (scratch / "none.journal").string(), "--status"});
  CHECK(missing.exit_code == 2);
  CHECK(contains(missing.err, "none.journal"));
  CHECK(run_tool(scratch, {"--status", jobs.string()}).exit_code == 2);
}

TEST_CASE("tasktree-run: targets run their subtrees after what they wait for; an unknown target runs nothing") {
  Scratch scratch;
  const auto jobs = scratch.write("plan.jobs", R"(
host/snapshot             echo snapshot >> $DIR/ran.log
host/snapshot/replicate   echo replicate >> $DIR/ran.log
host/snapshot/~/prune     echo prune >> $DIR/ran.log
host/snapshot/~/~/monitor echo monitor >> $DIR/ran.log
other                     echo other >> $DIR/ran.log
)");
  const Finished run = run_tool(scratch, {"-j", "1", jobs.string(), "host/snapshot/~/prune"});
  INFO(run.err);
  CHECK(run.exit_code == 0);
  CHECK(scratch.read("ran.log") == "snapshot\nreplicate\nprune\n");
  scratch.write("ran.log", "");
  CHECK(run_tool(scratch, {"--no-ancestors", jobs.string(), "host/snapshot/~/prune"}).exit_code == 0);
  CHECK(scratch.read("ran.log") == "prune\n");
  scratch.write("ran.log", "");
  const Finished unknown = run_tool(scratch, {jobs.string(), "other", "nothing/here"});
  CHECK(unknown.exit_code == 2);
  CHECK(contains(unknown.err, R"(no job "nothing/here" and none below it, so there is nothing to run)"));
  CHECK(scratch.read("ran.log").empty());
}

TEST_CASE("tasktree-run: --halt soon,fail=N starts nothing after the Nth failure") {
  Scratch scratch;
  const auto jobs = scratch.write("plan.jobs", "a  exit 1\nb  exit 2\nc  touch $DIR/c\nd  touch $DIR/d\n");
  SECTION("the second failure halts: c and d never start") {
    const Finished run = run_tool(scratch, {"-j", "1", "--halt", "soon,fail=2", jobs.string()});
    INFO(run.err);
    CHECK(run.exit_code == 1);
    CHECK_FALSE(scratch.exists("c"));
    CHECK_FALSE(scratch.exists("d"));
    CHECK(contains(run.err, "halt   2 failed jobs (--halt soon,fail=2): starting no new jobs"));
    CHECK(contains(run.err, "tasktree-run: FAILED: stopped after 2 failed jobs (--halt soon,fail=2) (exit code 1)"));
  }
  SECTION("two failures do not reach fail=3: everything runs") {
    const Finished run = run_tool(scratch, {"-j", "1", "--halt", "soon,fail=3", jobs.string()});
    CHECK(run.exit_code == 1);
    CHECK(scratch.exists("c"));
    CHECK(scratch.exists("d"));
    CHECK_FALSE(contains(run.err, "halt "));
  }
}

TEST_CASE("tasktree-run: --halt soon lets the running jobs finish; --halt now stops them") {
  for (const std::string_view when : {"soon", "now"}) {
    DYNAMIC_SECTION(when) {
      Scratch scratch;
      const auto jobs = scratch.write("plan.jobs", R"(
a-fails   while [ ! -e $DIR/b ]; do sleep 0.05; done; exit 1
b-runs    echo started > $DIR/b; while [ ! -e $DIR/go ]; do sleep 0.05; done; touch $DIR/finished
c-later   touch $DIR/later
)");
      Started runner(scratch,
                     {"-j", "2", "--halt", std::string(when), "--json", (scratch / "r.json").string(), jobs.string()});
      // a-fails fails once b-runs runs.
      REQUIRE(eventually([&] { return contains(runner.err(), "halt   1 failed job"); }));
      scratch.write("go", "");
      CHECK(runner.wait() == 1);
      INFO(runner.err_text);
      CHECK_FALSE(scratch.exists("later"));
      const json report = read_json(scratch, "r.json");
      CHECK(report.at("stopped_by_failure") == true);
      CHECK(report.at("settings").at("halt") == when);
      if (when == "soon") {
        CHECK(scratch.exists("finished"));
        CHECK(job(report, "b-runs").at("status") == "succeeded");
      } else {
        CHECK(job(report, "b-runs").at("status") == "stopped");
      }
      CHECK(job(report, "c-later").at("status") == "not_run");
    }
  }
}

TEST_CASE("tasktree-run: --trace writes the timeline in the Chrome trace-event format: attempts, outcomes, backoffs") {
  Scratch scratch;
  const auto jobs = scratch.write("plan.jobs", R"(
flaky   if [ ! -e $DIR/tried ]; then touch $DIR/tried; exit 1; fi
ok      true
bad     exit 4
)");
  const std::string file = (scratch / "run.trace.json").string();
  const Finished run = run_tool(scratch, {"-j", "2", "--retries", "1", "--retry-backoff", "0.05", "--trace", file,
                                          "--skip-on-error", "dataset", jobs.string()});
  INFO(run.err);
  CHECK(run.exit_code == 1);
  const json trace = read_json(scratch, "run.trace.json");
  const json& events = trace.at("traceEvents");
  std::map<std::string, json> slices;  // by name
  std::size_t workers = 0;
  std::size_t backoff_begins = 0;
  std::size_t backoff_ends = 0;
  for (const json& event : events) {
    const std::string phase = event.at("ph");
    if (phase == "X") {
      slices[event.at("name")] = event;
      CHECK(event.at("dur").get<std::int64_t>() > 0);
      CHECK(event.at("tid").get<int>() >= 1);
      CHECK(event.at("tid").get<int>() <= 2);  // a track per worker slot, -j 2
    }
    if (phase == "M" && event.at("name") == "thread_name") ++workers;
    if (phase == "b") ++backoff_begins;
    if (phase == "e") ++backoff_ends;
  }
  CHECK(workers >= 1);
  CHECK(workers <= 2);
  REQUIRE(slices.contains("flaky"));
  REQUIRE(slices.contains("flaky (attempt 2)"));
  CHECK(slices["flaky"].at("cname") == "yellow");  // failed, then retried
  CHECK(slices["flaky (attempt 2)"].at("cname") == "good");
  CHECK(slices["ok"].at("cname") == "good");
  REQUIRE(slices.contains("bad (attempt 2)"));
  CHECK(slices["bad (attempt 2)"].at("cname") == "terrible");
  CHECK(slices["bad (attempt 2)"].at("args").at("exit_code") == 4);
  CHECK(slices["bad (attempt 2)"].at("args").at("command") == "exit 4");
  CHECK(backoff_begins == 2);  // flaky's and bad's
  CHECK(backoff_ends == 2);
  // The retry starts after its failure has ended.
  CHECK(slices["flaky (attempt 2)"].at("ts").get<std::int64_t>() >=
        slices["flaky"].at("ts").get<std::int64_t>() + slices["flaky"].at("dur").get<std::int64_t>());
  // A path that cannot be written: an input error before anything runs.
  const Finished unwritable = run_tool(scratch, {"--trace", (scratch / "no-dir" / "t.json").string(), jobs.string()});
  CHECK(unwritable.exit_code == 2);
  CHECK(contains(unwritable.err, "cannot write the --trace file"));
}

TEST_CASE("tasktree-run: --quiet shows only failures and the summary; --verbose every start with its command") {
  Scratch scratch;
  const auto jobs = scratch.write("plan.jobs", "ok  echo ok-output\nbad  echo bad-output >&2; exit 3\n");
  const Finished quiet = run_tool(scratch, {"--quiet", jobs.string()});
  INFO(quiet.err);
  CHECK(quiet.exit_code == 1);
  CHECK_FALSE(contains(quiet.err, "start  "));
  CHECK_FALSE(contains(quiet.err, "done   "));
  CHECK_FALSE(contains(quiet.out, "ok-output"));
  CHECK_FALSE(contains(quiet.err, "[bad] bad-output"));
  CHECK(contains(quiet.err, "FAILED bad: exit code 3"));
  CHECK(contains(quiet.err, "| bad-output"));  // the summary keeps the last lines of standard error
  const Finished verbose = run_tool(scratch, {"--verbose", jobs.string()});
  CHECK(contains(verbose.err, "start  ok: echo ok-output\n"));
  CHECK(contains(verbose.err, "start  bad: echo bad-output >&2; exit 3\n"));
  CHECK(run_tool(scratch, {"--quiet", "--verbose", jobs.string()}).exit_code == 2);
}

TEST_CASE("tasktree-run: --group prints each job's output in one piece when it ends") {
  // Two jobs that write line by line, interleaved in time by each waiting for the other's line:
  // with --group each job's lines still come together.
  Scratch scratch;
  const auto jobs = scratch.write("plan.jobs", R"(
a  for i in 1 2 3; do echo a$i; touch $DIR/a$i; while [ ! -e $DIR/b$i ]; do sleep 0.02; done; done
b  for i in 1 2 3; do while [ ! -e $DIR/a$i ]; do sleep 0.02; done; echo b$i; touch $DIR/b$i; done
)");
  const Finished grouped = run_tool(scratch, {"-j", "2", "--group", jobs.string()});
  INFO(grouped.out);
  CHECK(grouped.exit_code == 0);
  CHECK((contains(grouped.out, "[a] a1\n[a] a2\n[a] a3\n") && contains(grouped.out, "[b] b1\n[b] b2\n[b] b3\n")));
}

TEST_CASE("tasktree-run: --color always colors the log lines; never and NO_COLOR leave them plain") {
  Scratch scratch;
  const auto jobs = scratch.write("plan.jobs", "ok  true\nbad  exit 1\n");
  const Finished colored = run_tool(scratch, {"--color", "always", jobs.string()});
  CHECK(contains(colored.err, "\x1b[32mdone\x1b[0m   ok"));
  CHECK(contains(colored.err, "\x1b[31mFAILED\x1b[0m bad: exit code 1"));
  const Finished plain = run_tool(scratch, {"--color", "never", jobs.string()});
  CHECK_FALSE(contains(plain.err, "\x1b["));
  CHECK(contains(plain.err, "FAILED bad: exit code 1"));
  CHECK(run_tool(scratch, {"--color", "sometimes", jobs.string()}).exit_code == 2);
}

TEST_CASE("tasktree-run: --report writes one self-contained HTML page: verdict, Gantt chart, failures, slowest") {
  Scratch scratch;
  // A path and output with characters HTML must escape, and a byte that is not UTF-8.
  const auto jobs = scratch.write("plan.jobs",
                                  "ok  true\nflaky  test -e $DIR/tried || { touch $DIR/tried; exit 1; }\n"
                                  "x<&>y  printf 'bad <b>&amp; \\377\\n' >&2; exit 5\n");
  const std::string file = (scratch / "run.html").string();
  const Finished run = run_tool(scratch, {"--retries", "1", "--retry-backoff", "0", "--skip-on-error", "dataset",
                                          "--report", file, jobs.string()});
  INFO(run.err);
  CHECK(run.exit_code == 1);
  const std::string page = scratch.read("run.html");
  CHECK(page.starts_with("<!DOCTYPE html>\n<html lang=\"en\">"));
  CHECK(page.ends_with("</html>\n"));
  CHECK(contains(page, "<meta charset=\"utf-8\">"));
  // Self-contained: nothing to run, nothing to fetch.
  CHECK_FALSE(contains(page, "<script"));
  CHECK_FALSE(contains(page, "<link"));
  CHECK_FALSE(contains(page, "src="));
  CHECK(contains(page, "<p class=\"verdict bad\">tasktree-run: FAILED (exit code 1)</p>"));
  // One bar per attempt: ok 1, flaky 2, x<&>y 2.
  std::size_t bars = 0;
  for (std::size_t at = page.find("<rect "); at != std::string::npos; at = page.find("<rect ", at + 1)) ++bars;
  CHECK(bars == 5);
  CHECK(contains(page, "<title>flaky (attempt 1): exit code 1,"));
  CHECK(contains(page, "<title>flaky (attempt 2): exit code 0,"));
  // The failed job, escaped, with its standard error; the invalid byte as U+FFFD.
  CHECK(contains(page, "<b>x&lt;&amp;&gt;y</b>: exit code 5 after 2 attempts"));
  CHECK(contains(page, "<pre>bad &lt;b&gt;&amp;amp; \xEF\xBF\xBD\n</pre>"));
  CHECK_FALSE(contains(page, "x<&>y"));
  CHECK(contains(page, "<h2>Slowest jobs</h2>"));
  const Finished unwritable = run_tool(scratch, {"--report", (scratch / "no-dir" / "r.html").string(), jobs.string()});
  CHECK(unwritable.exit_code == 2);
  CHECK(contains(unwritable.err, "cannot write the --report file"));
}

TEST_CASE("tasktree-run: --json - writes the report to standard output, and the job output to standard error") {
  Scratch scratch;
  const auto jobs = scratch.write("plan.jobs", "a  echo out-a\na/b  echo out-b\n");
  const Finished run = run_tool(scratch, {"--json", "-", jobs.string()});
  INFO(run.err);
  CHECK(run.exit_code == 0);
  CHECK_FALSE(scratch.exists("-"));
  const json report = json::parse(run.out);  // standard output is the report and nothing else
  CHECK(report.at("result") == "succeeded");
  CHECK(report.at("counts").at("succeeded") == 2);
  CHECK(contains(run.err, "[a/b] out-b"));
  CHECK(contains(run.err, "all 2 jobs succeeded"));
}

TEST_CASE("tasktree-run: jobs have no controlling terminal, so a prompt fails at once instead of hanging") {
  // The runner is in a terminal window (it leads a session on a pseudo-terminal); a job that opens
  // /dev/tty, as ssh and sudo do to ask for a password, cannot: it has no terminal to open.
  Scratch scratch;
  const auto jobs = scratch.write("prompt.jobs", R"(
prompt  if (exec 3</dev/tty) 2>/dev/null; then echo opened-a-terminal; else echo no-terminal; fi; tty || true
)");
  PseudoTerminal terminal;
  Started runner(scratch, {jobs.string()}, "/dev/null", terminal.path(), true);
  const std::string shown = terminal.wait_for(runner);
  INFO(shown);
  CHECK(runner.exit_code() == 0);
  CHECK(contains(runner.out, "[prompt] no-terminal"));
  CHECK(contains(runner.out, "[prompt] not a tty"));
  CHECK(contains(shown, "the job succeeded"));  // the runner itself did have the terminal
}

TEST_CASE("tasktree-run --tty: a job reads its answer from the runner's terminal, and has it as its terminal") {
  // As a password prompt does: it writes to /dev/tty and reads the answer from standard input. The
  // job must be the terminal's foreground to read it (a background read would stop it for good).
  Scratch scratch;
  const auto jobs = scratch.write("ask.jobs", R"(
ask  printf 'password: ' > /dev/tty; read -r answer; echo "got $answer"; [ -t 0 ] && echo stdin-is-a-terminal
ask/after  echo after
)");
  PseudoTerminal terminal;
  Started runner(scratch, {"--tty", jobs.string()}, "/dev/null", terminal.path(), true);
  REQUIRE(eventually([&] { return contains(terminal.drain(), "password: "); }));
  terminal.type("secret\n");
  const std::string shown = terminal.wait_for(runner);
  INFO(shown);
  INFO(runner.out);
  CHECK(runner.exit_code() == 0);
  CHECK(contains(runner.out, "[ask] got secret"));
  CHECK(contains(runner.out, "[ask] stdin-is-a-terminal"));
  CHECK(contains(runner.out, "[ask/after] after"));
  CHECK(contains(shown, "all 2 jobs succeeded"));  // the runner had the terminal back for its summary
}

TEST_CASE("tasktree-run --tty: Ctrl-C at the terminal reaches the job, and stops the run") {
  // The job holds the terminal's foreground, so the terminal's SIGINT goes to it, not to the
  // runner: the runner takes the job's death by SIGINT as the user's, and stops as for its own.
  Scratch scratch;
  const auto jobs = scratch.write("long.jobs", R"(
long  printf 'working\n' > /dev/tty; exec sleep 60
long/next  touch $DIR/next-ran
)");
  // Ctrl-C only once the job is `sleep` itself: a shell that gets SIGINT while it starts a command
  // (dash holds it until that command ends) would make this test wait out the sleep.
  const auto sleep_in_foreground = [](const PseudoTerminal& tty) {
    const pid_t group = tty.foreground();
    const std::string stat = read_file(fmt::format("/proc/{}/stat", group));  // the group's leader
    return group > 0 && stat.find("(sleep)") != std::string::npos;
  };
  PseudoTerminal terminal;
  const std::string report = (scratch / "report.json").string();
  Started runner(scratch, {"--tty", "--retries", "2", "--json", report, jobs.string()}, "/dev/null", terminal.path(),
                 true);
  REQUIRE(eventually([&] { return contains(terminal.drain(), "working") && sleep_in_foreground(terminal); }));
  terminal.type("\x03");  // Ctrl-C, with the terminal's default settings (ISIG)
  const std::string shown = terminal.wait_for(runner);
  INFO(shown);
  CHECK(runner.exit_code() == 130);
  const json result = read_json(scratch, "report.json");
  CHECK(result.at("result") == "interrupted");
  CHECK(result.at("signal") == "SIGINT");
  CHECK(result.at("jobs")[0].at("status") == "stopped");
  CHECK(result.at("jobs")[0].at("attempts") == 1);  // the user's stop, not a failure to retry
  CHECK_FALSE(contains(shown, "retrying"));
  CHECK_FALSE(scratch.exists("next-ran"));
}

TEST_CASE("tasktree-run --tty: several workers or no terminal are input errors, and nothing runs") {
  Scratch scratch;
  const auto jobs = scratch.write("plan.jobs", "a  touch $DIR/ran\n");
  const Finished workers = run_tool(scratch, {"--tty", "-j", "2", jobs.string()});
  CHECK(workers.exit_code == 2);
  CHECK(contains(workers.err, "--tty runs one job at a time (a terminal has one foreground), but --workers is 2"));
  const Finished no_terminal = run_tool(scratch, {"--tty", jobs.string()});  // no controlling terminal
  CHECK(no_terminal.exit_code == 2);
  CHECK(contains(no_terminal.err, "--tty: the runner has no terminal (/dev/tty: "));
  CHECK_FALSE(scratch.exists("ran"));
}

TEST_CASE("tasktree-run: without a terminal, a job leads its own process group in the runner's session") {
  // A session per job would cost short jobs a scheduling penalty on a busy machine (autogroup);
  // without a terminal there is no prompt to keep from it.
  Scratch scratch;
  const auto jobs = scratch.write("stat.jobs", "a  cat /proc/self/stat\n");
  const Finished run = run_tool(scratch, {jobs.string()});
  INFO(run.err);
  REQUIRE(run.exit_code == 0);
  REQUIRE(run.out.starts_with("[a] "));
  const std::string stat = run.out.substr(4);
  std::istringstream fields(stat.substr(stat.rfind(')') + 2));
  char state = 0;
  pid_t parent = 0;
  pid_t group = 0;
  pid_t session = 0;
  fields >> state >> parent >> group >> session;
  const pid_t pid = std::stoi(stat);
  CHECK(group == pid);  // cat runs directly (no shell syntax): it is the job, and leads its group
  CHECK(session == ::getsid(0));
}

TEST_CASE("tasktree-run: an empty jobs file name and a directory are input errors, and nothing runs") {
  Scratch scratch;
  // Standard input holds a job: an empty name must not fall back to it.
  const auto input = scratch.write("stdin.jobs", "a  touch $DIR/ran\n");
  const Finished empty = run_tool(scratch, {""}, input);
  CHECK(empty.exit_code == 2);
  CHECK(contains(empty.err, "the jobs file name is empty (use '-' for standard input)"));
  const Finished directory = run_tool(scratch, {scratch.dir().string()}, input);
  CHECK(directory.exit_code == 2);
  CHECK(contains(directory.err, fmt::format("cannot read jobs file {:?}: it is a directory", scratch.dir().string())));
  CHECK_FALSE(scratch.exists("ran"));
  const Finished dash = run_tool(scratch, {"-"}, input);  // '-' is standard input
  CHECK(dash.exit_code == 0);
  CHECK(scratch.exists("ran"));
}

TEST_CASE("tasktree-run: --json into a FIFO writes the report into it, and the FIFO stays one") {
  // Not a regular file: written in place (a rename would replace it, or a device, not write to it).
  Scratch scratch;
  const fs::path fifo = scratch / "report.fifo";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  const int reader = ::open(fifo.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC);  // the runner's open does not block
  REQUIRE(reader >= 0);
  const auto jobs = scratch.write("plan.jobs", "a  true\n");
  const Finished run = run_tool(scratch, {"--json", fifo.string(), jobs.string()});
  std::string text;
  char buffer[65536];
  for (ssize_t got; (got = ::read(reader, buffer, sizeof buffer)) > 0;) {
    text.append(buffer, static_cast<std::size_t>(got));
  }
  ::close(reader);
  INFO(run.err);
  CHECK(run.exit_code == 0);
  CHECK(json::parse(text).at("result") == "succeeded");
  CHECK(fs::is_fifo(fifo));
}

TEST_CASE(
    "tasktree-run: on a terminal, a live status line replaces the "
    "per-job log lines") {
  Scratch scratch;
  const auto jobs = scratch.write("live.jobs", "a  echo out-a\na/b  echo out-b\n");
  PseudoTerminal terminal;
  Started runner(scratch, {jobs.string()}, "/dev/null", terminal.path());
  const std::string shown = terminal.wait_for(runner);
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

TEST_CASE("tasktree-run: the live status line fits the terminal's width and counts the job that runs") {
  Scratch scratch;
  const auto jobs = scratch.write("one.jobs", "a-job-with-a-long-name  while [ ! -e $DIR/go ]; do sleep 0.05; done\n");
  PseudoTerminal terminal(40);
  Started runner(scratch, {jobs.string()}, "/dev/null", terminal.path());
  CHECK(eventually([&] { return contains(terminal.drain(), "0/1 done, 1 running"); }));
  scratch.write("go", "");
  const std::string shown = terminal.wait_for(runner);
  INFO(shown);
  CHECK(runner.exit_code() == 0);
  // Each drawing of the status line ("\r\x1b[K" and the line) leaves the last column free, so the
  // terminal never wraps it onto a line of its own.
  std::size_t drawings = 0;
  for (std::size_t at = shown.find("\r\x1b[K"); at != std::string::npos; at = shown.find("\r\x1b[K", at + 1)) {
    const std::size_t begin = at + 4;
    const std::size_t end = std::min(shown.find_first_of("\r\n", begin), shown.size());
    if (shown.substr(begin, end - begin).find(" done, ") == std::string::npos) continue;  // a clear
    ++drawings;
    CHECK(end - begin <= 39);
  }
  CHECK(drawings > 0);
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

TEST_CASE("tasktree-run: --journal and --resume: after failures or a SIGKILL, only what did not succeed runs again") {
  Scratch scratch;
  const std::string journal = (scratch / "run.journal").string();
  // Each job appends its name to ran.log; `flaky` fails while $DIR/broken exists.
  const auto jobs = scratch.write("plan.jobs", R"(
a          echo a >> $DIR/ran.log
flaky      echo flaky >> $DIR/ran.log; test ! -e $DIR/broken
flaky/b    echo flaky/b >> $DIR/ran.log
~/last     echo last >> $DIR/ran.log
)");
  const auto ran = [&] {
    std::vector<std::string> lines;
    std::istringstream in(scratch.read("ran.log"));
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    std::sort(lines.begin(), lines.end());
    scratch.write("ran.log", "");
    return lines;
  };
  scratch.write("broken", "");
  const Finished first =
      run_tool(scratch, {"--journal", journal, "--json", (scratch / "r.json").string(), jobs.string()});
  INFO(first.err);
  CHECK(first.exit_code == 1);
  CHECK(ran() == std::vector<std::string>{"a", "flaky"});
  fs::remove(scratch / "broken");

  SECTION("--resume runs the failed job, what was skipped below it and the barrier; a is not run again") {
    const Finished second =
        run_tool(scratch, {"--journal", journal, "--resume", "--json", (scratch / "r.json").string(), jobs.string()});
    INFO(second.err);
    CHECK(second.exit_code == 0);
    CHECK(ran() == std::vector<std::string>{"flaky", "flaky/b", "last"});
    CHECK(contains(second.err, "1 resumed (succeeded before)"));
    const json report = read_json(scratch, "r.json");
    CHECK(report.at("counts").at("resumed") == 1);
    CHECK(job(report, "a").at("status") == "resumed");
    // And a third run has nothing left to do.
    const Finished third = run_tool(scratch, {"--journal", journal, "--resume", jobs.string()});
    CHECK(third.exit_code == 0);
    CHECK(ran().empty());
  }
  SECTION("a changed command counts as not done") {
    const auto changed = scratch.write("changed.jobs", R"(
a          echo a >> $DIR/ran.log; true
flaky      echo flaky >> $DIR/ran.log
flaky/b    echo flaky/b >> $DIR/ran.log
~/last     echo last >> $DIR/ran.log
)");
    const Finished second = run_tool(scratch, {"--journal", journal, "--resume", changed.string()});
    CHECK(second.exit_code == 0);
    CHECK(ran() == std::vector<std::string>{"a", "flaky", "flaky/b", "last"});
  }
  SECTION("without --resume the journal is only written: everything runs") {
    const Finished second = run_tool(scratch, {"--journal", journal, jobs.string()});
    CHECK(second.exit_code == 0);
    CHECK(ran() == std::vector<std::string>{"a", "flaky", "flaky/b", "last"});
  }
}

TEST_CASE("tasktree-run: a runner killed with SIGKILL resumes without running again what had finished") {
  Scratch scratch;
  const std::string journal = (scratch / "run.journal").string();
  const auto jobs = scratch.write("plan.jobs", R"(
a        echo a >> $DIR/ran.log
a/long   echo $$ > $DIR/long.pid; exec sleep 300
b        echo b >> $DIR/ran.log
)");
  {
    Started runner(scratch, {"--journal", journal, "-j", "3", jobs.string()});
    REQUIRE(eventually([&] {
      // a and b finished (their records reach the journal's file within its sync interval) and
      // a/long runs.
      const std::string text = scratch.read("run.journal");
      return !scratch.read("long.pid").empty() && contains(text, "\"dataset\":\"a\"") &&
             contains(text, "\"dataset\":\"b\"");
    }));
    REQUIRE(::kill(runner.pid(), SIGKILL) == 0);
    CHECK(runner.wait() == 1000 + SIGKILL);
    const pid_t long_pid = read_pid(scratch, "long.pid");
    CHECK(eventually([&] { return gone(long_pid); }));  // the runner's watchdog stopped it
  }
  scratch.write("ran.log", "");
  const auto finish = scratch.write("finish.jobs", R"(
a        echo a >> $DIR/ran.log
a/long   echo long >> $DIR/ran.log
b        echo b >> $DIR/ran.log
)");
  // The command of a/long changed, so it runs; a and b are as they were.
  const Finished resumed = run_tool(scratch, {"--journal", journal, "--resume", finish.string()});
  INFO(resumed.err);
  CHECK(resumed.exit_code == 0);
  CHECK(scratch.read("ran.log") == "long\n");
  CHECK(contains(resumed.err, "2 resumed"));
}

TEST_CASE(
    "tasktree-run: killed with SIGKILL at random moments and resumed until done, every job runs, and none twice that "
    "had succeeded") {
  // 300 jobs in ten hosts' trees with barriers, each a short job that first appends its name to
  // ran.log. The runner is killed at random moments, five times, each time resumed from the
  // journal, then let finish. After each kill, the journal's file says which jobs succeeded: none
  // of them may run again. A job runs at most once per run; every job has run by the end.
  Scratch scratch;
  std::string plan;
  std::vector<std::string> paths;
  for (int host = 0; host < 10; ++host) {
    const std::string h = fmt::format("host{}", host);
    for (const std::string& path :
         {h, h + "/snapshot", h + "/snapshot/~/prune", h + "/snapshot/~/~/monitor", h + "/config"}) {
      paths.push_back(path);
    }
    for (int i = 0; i < 25; ++i) paths.push_back(fmt::format("{}/snapshot/replicate{}", h, i));
  }
  for (const std::string& path : paths) plan += fmt::format("{}  echo {} >> $DIR/ran.log; sleep 0.03\n", path, path);
  const auto jobs = scratch.write("plan.jobs", plan);
  const std::string journal = (scratch / "run.journal").string();
  const std::string report = (scratch / "report.json").string();
  const auto ran_lines = [&] {
    std::vector<std::string> lines;
    std::istringstream text(scratch.read("ran.log"));
    for (std::string line; std::getline(text, line);) lines.push_back(line);
    return lines;
  };
  std::mt19937 random(20261204);
  std::set<std::string> succeeded;  // per the journal's file after the latest kill
  std::size_t seen = 0;             // lines of ran.log before the current run
  const auto check_run = [&](const std::string& when) {
    INFO(when);
    const std::vector<std::string> lines = ran_lines();
    std::set<std::string> this_run;
    for (std::size_t i = seen; i < lines.size(); ++i) {
      CHECK_FALSE(succeeded.contains(lines[i]));  // recorded as succeeded: never again
      CHECK(this_run.insert(lines[i]).second);    // at most once per run
    }
    seen = lines.size();
  };
  // A whole run takes about 2.5 s (300 jobs of 30 ms, 4 at a time); the journal syncs every second,
  // so most kills find some successes on disk and some not.
  for (int kill = 1; kill <= 5; ++kill) {
    Started runner(scratch, {"-j", "4", "--journal", journal, "--resume", "--json", report, jobs.string()});
    std::this_thread::sleep_for(std::chrono::milliseconds(std::uniform_int_distribution<int>(300, 2500)(random)));
    // The runner's children: its watchdog and the jobs' shells. The watchdog exits once it has
    // ended every job the runner left, so that none appends to ran.log later.
    const std::vector<ChildProcess> children = children_of(runner.pid());
    ::kill(runner.pid(), SIGKILL);
    runner.wait();  // killed, or finished before the kill came
    REQUIRE(eventually([&] {
      return std::all_of(children.begin(), children.end(), [](const ChildProcess& child) { return gone(child.pid); });
    }));
    check_run(fmt::format("run {} (killed)", kill));
    for (const tasktree::JournalRecord& record : tasktree::Journal::read(journal).records) {
      if (record.succeeded()) succeeded.insert(record.dataset);
    }
  }
  CHECK(succeeded.size() > 0);  // the kills did come after syncs
  const Finished last =
      run_tool(scratch, {"-j", "4", "--journal", journal, "--resume", "--json", report, jobs.string()});
  INFO(last.err);
  CHECK(last.exit_code == 0);
  check_run("the last run");
  // Every job ran; the report and the journal are whole.
  const std::vector<std::string> lines = ran_lines();
  const std::set<std::string> ran(lines.begin(), lines.end());
  CHECK(ran.size() == paths.size());
  const json final_report = read_json(scratch, "report.json");
  CHECK(final_report.at("counts").at("total") == paths.size());
  CHECK(final_report.at("counts").at("succeeded").get<std::size_t>() +
            final_report.at("counts").at("resumed").get<std::size_t>() ==
        paths.size());
  const tasktree::JournalContents contents = tasktree::Journal::read(journal);
  CHECK(contents.warnings.empty());
  std::size_t recorded = 0;
  for (const tasktree::JournalRecord& record : contents.records) recorded += record.succeeded() ? 1 : 0;
  CHECK(recorded == paths.size());
  const std::size_t twice = lines.size() - paths.size();
  UNSCOPED_INFO(twice << " of " << lines.size() << " runs were of jobs in flight at a kill");
  CHECK(final_report.at("counts").at("resumed").get<std::size_t>() > 0);
  CHECK(twice < paths.size());
}

TEST_CASE("tasktree-run: a journal that cannot be used is an input error: a message, exit code 2, and nothing runs") {
  Scratch scratch;
  const auto jobs = scratch.write("plan.jobs", "a  touch $DIR/ran\n");
  scratch.write("corrupt.journal", "{\"tasktree_journal\":1}\n{broken\n{\"dataset\":\"a\"}\n");
  scratch.write("future.journal", "{\"tasktree_journal\":9}\n");
  const std::pair<std::vector<std::string>, std::string> cases[] = {
      {{"--journal", (scratch / "corrupt.journal").string()}, "line 2: not a journal line"},
      {{"--journal", (scratch / "future.journal").string()}, "format version 9"},
      {{"--journal", (scratch / "no-dir" / "x.journal").string()}, "No such file or directory"},
      {{"--resume"}, "--resume requires --journal"},
  };
  for (const auto& [args, message] : cases) {
    DYNAMIC_SECTION(message) {
      std::vector<std::string> all = args;
      all.push_back(jobs.string());
      const Finished run = run_tool(scratch, all);
      INFO(run.err);
      CHECK(run.exit_code == 2);
      CHECK(contains(run.err, message));
      CHECK_FALSE(scratch.exists("ran"));
    }
  }
}
