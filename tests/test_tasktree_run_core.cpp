// In-process tests for tools/tasktree-run's pure parts, the tasktree_run_core library: the jobs
// file parser, the command line, the --dry-run and --dot output, the --json report and the
// summary. What needs a real process (running jobs, exit codes, signals, timeouts, retries, logs)
// is in test_tasktree_run.cpp.

#include "catch.hpp"

#include "command_line.hpp"
#include "execute.hpp"
#include "jobs_file.hpp"
#include "report.hpp"
#include "run.hpp"

#include <tasktree/options.hpp>
#include <tasktree/policy.hpp>
#include <tasktree/version.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

using namespace tasktree_run;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

bool contains(std::string_view text, std::string_view part) { return text.find(part) != std::string_view::npos; }

/// The message of the `JobsFileError` that parsing `text` throws, or a marker.
std::string jobs_file_error(std::string_view text, std::string_view source = "plan.jobs") {
  try {
    (void)parse_jobs_file(text, source);
  } catch (const JobsFileError& error) {
    return error.what();
  }
  return "<nothing thrown>";
}

/// The settings of a command line that must parse.
CliSettings settings_of(const std::vector<std::string>& args) {
  ParsedCommandLine parsed = parse_command_line(args);
  INFO(parsed.err);
  REQUIRE(parsed.settings.has_value());
  CHECK(parsed.out.empty());
  CHECK(parsed.err.empty());
  return *std::move(parsed.settings);
}

/// The run settings of `args` with the jobs of `jobs_text`.
RunSettings plan(std::string_view jobs_text, const std::vector<std::string>& args = {"plan.jobs"}) {
  RunSettings settings = settings_of(args).run;
  settings.jobs = parse_jobs_file(jobs_text, "plan.jobs");
  return settings;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// The jobs file

TEST_CASE("jobs file: the path is the first word, the command the rest, comments and blank lines are skipped") {
  const std::vector<JobSpec> jobs = parse_jobs_file(
      "# a comment\n\n   \n  a   echo hi  \n\ta/b\tcat x # for the shell\r\n  # indented comment\n", "plan.jobs");
  REQUIRE(jobs.size() == 2);
  CHECK(jobs[0].path == "a");
  CHECK(jobs[0].command == "echo hi");
  CHECK(jobs[0].line == 4);
  CHECK(jobs[1].path == "a/b");
  CHECK(jobs[1].command == "cat x # for the shell");
  CHECK(jobs[1].line == 5);
}

TEST_CASE("jobs file: each bad line is rejected with FILE:LINE and the value") {
  struct Case {
    std::string_view bad_line;
    std::string_view message;  // after "plan.jobs:3: "
  };
  const Case cases[] = {
      {"a//b  touch ran", R"(invalid job path "a//b": it has an empty component ('//'))"},
      {"/a  touch ran", R"(invalid job path "/a": it starts with '/')"},
      {"a/  touch ran", R"(invalid job path "a/": it ends with '/')"},
      {"a/../b  touch ran", R"(invalid job path "a/../b": it has a ".." component (job paths name jobs, not files))"},
      {"a/./b  touch ran", R"(invalid job path "a/./b": it has a "." component (job paths name jobs, not files))"},
      {"first  touch ran", R"(duplicate job path "first" (first on line 2))"},
      {"lonely", R"(job "lonely" has no command)"},
      {"lonely   ", R"(job "lonely" has no command)"},
      {"a/~  touch ran", R"(invalid job path "a/~": its last component is the barrier "~", so it could never run )"
                         R"((a barrier waits for the jobs beside it; put jobs below it, e.g. a/~/prune))"},
      // Control characters: a path that no terminal shows as it is, and that no one typed on purpose.
      {"a\x01"
       "b  touch ran",
       R"(invalid job path "a\x01b": it contains the control character 0x01 at byte 2)"},
      {"a/b\x7f  touch ran", R"(invalid job path "a/b\x7f": it contains the control character 0x7f at byte 4)"},
      {std::string_view("x\0y  touch ran", 14),
       R"(invalid job path "x\x00y": it contains the control character 0x00 at byte 2)"},
      {std::string_view("nul  echo a\0b", 14),
       R"(the command of job "nul" contains a NUL byte (at byte 7), which no command can hold)"},
  };
  for (const Case& c : cases) {
    DYNAMIC_SECTION(c.bad_line) {
      CHECK(jobs_file_error(fmt::format("# line 1\nfirst  touch ran\n{}\nlast  echo after\n", c.bad_line)) ==
            fmt::format("plan.jobs:3: {}", c.message));
    }
  }
}

TEST_CASE("jobs file: a UTF-8 byte-order mark at the start is no part of the first path") {
  const std::vector<JobSpec> jobs =
      parse_jobs_file("\xef\xbb\xbfsnapshot  zfs snapshot\nsnapshot/send  zfs send\n", "plan.jobs");
  REQUIRE(jobs.size() == 2);
  CHECK(jobs[0].path == "snapshot");
  CHECK(jobs[1].path == "snapshot/send");
  // Anywhere else it is part of a path, and is not a control character: it stays as it is.
  const std::vector<JobSpec> inner = parse_jobs_file(
      "a  true\n\xef\xbb\xbf"
      "b  true\n",
      "plan.jobs");
  CHECK(inner[1].path ==
        "\xef\xbb\xbf"
        "b");
}

TEST_CASE("jobs file: a command longer than the system allows for one argument is rejected when parsed") {
  const std::string longest(32 * 4096 - 1, 'x');
  CHECK(parse_jobs_file(fmt::format("a  {}\n", longest), "plan.jobs")[0].command.size() == longest.size());
  CHECK(jobs_file_error(fmt::format("a  true\nbig  {}x\n", longest)) ==
        "plan.jobs:2: the command of job \"big\" is 131072 bytes long; the system allows at most 131071 for one "
        "command (put it in a script)");
}

/// The message of the `JobsFileError` that `check_log_paths` throws for `text`, or a marker.
std::string log_path_error(std::string_view text, const std::filesystem::path& log_dir = "logs") {
  const std::vector<JobSpec> jobs = parse_jobs_file(text, "plan.jobs");
  try {
    check_log_paths(jobs, "plan.jobs", log_dir);
  } catch (const JobsFileError& error) {
    return error.what();
  }
  return "<nothing thrown>";
}

TEST_CASE("jobs file: with --log-dir, a job whose log files could never be created is rejected with FILE:LINE") {
  CHECK(log_path_error("a  true\na/b  true\nc/d/e  true\n") == "<nothing thrown>");
  // A log file that another job needs as its directory, whichever comes first in the file.
  CHECK(
      log_path_error("a  true\na.out/b  true\n") ==
      R"(plan.jobs:2: job "a.out/b" needs the directory "a.out" in --log-dir, which is the log file of job "a" (line 1))");
  CHECK(
      log_path_error("x/a.err/b  true\nx/a  true\n") ==
      R"(plan.jobs:1: job "x/a.err/b" needs the directory "x/a.err" in --log-dir, which is the log file of job "x/a" (line 2))");
  // Names longer than a file system allows: a directory component, and the file name with ".out".
  const std::string long_component(256, 'd');
  CHECK(log_path_error(fmt::format("ok  true\n{}/x  true\n", long_component)) ==
        fmt::format("plan.jobs:2: job \"{0}/x\" cannot have log files in --log-dir: its component \"{0}\" is 256 "
                    "bytes, more than the 255 a directory name may have",
                    long_component));
  const std::string long_name(252, 'f');  // 252 + ".out" = 256
  CHECK(log_path_error(fmt::format("{}  true\n", long_name)) ==
        fmt::format("plan.jobs:1: job \"{0}\" cannot have log files in --log-dir: \"{0}.out\" is 256 bytes, more "
                    "than the 255 a file name may have",
                    long_name));
  CHECK(log_path_error(fmt::format("{}  true\n", std::string(251, 'f'))) == "<nothing thrown>");
  // A path longer than the system's limit, made of short components.
  std::string deep = "d";
  while (deep.size() < 4100) deep += "/ddddddddd";
  CHECK(
      contains(log_path_error(fmt::format("{}  true\n", deep)), "cannot have log files in --log-dir: their path is "));
}

TEST_CASE("jobs file: targets select their subtrees and what they wait for, in file order") {
  const std::vector<JobSpec> plan = parse_jobs_file(R"(
alpha/snapshot                   zfs snapshot
alpha/snapshot/replicate-nas     send nas
alpha/snapshot/replicate-nas/x   check nas
alpha/snapshot/replicate-offsite send offsite
alpha/snapshot/~/prune           prune
alpha/snapshot/~/~/monitor       ping
alpha/config                     backup config
beta/snapshot                    zfs snapshot
beta/snapshot/~/prune            prune
)",
                                                    "plan.jobs");
  const auto paths = [&](const std::vector<std::string>& targets, bool with_prerequisites = true) {
    std::vector<std::string> selected;
    for (const JobSpec& job : select_targets(plan, targets, with_prerequisites, "plan.jobs")) {
      selected.push_back(job.path);
    }
    return selected;
  };
  using Paths = std::vector<std::string>;
  CHECK(paths({}).size() == plan.size());
  // A job's subtree, after the jobs above it.
  CHECK(paths({"alpha/snapshot/replicate-nas"}) ==
        Paths{"alpha/snapshot", "alpha/snapshot/replicate-nas", "alpha/snapshot/replicate-nas/x"});
  // Past a barrier: the jobs beside it, which it waits for, with their subtrees; not the nested
  // barrier's monitor, which waits for prune.
  CHECK(paths({"alpha/snapshot/~/prune"}) == Paths{"alpha/snapshot", "alpha/snapshot/replicate-nas",
                                                   "alpha/snapshot/replicate-nas/x", "alpha/snapshot/replicate-offsite",
                                                   "alpha/snapshot/~/prune"});
  CHECK(paths({"alpha/snapshot/~/~/monitor"}) ==
        Paths{"alpha/snapshot", "alpha/snapshot/replicate-nas", "alpha/snapshot/replicate-nas/x",
              "alpha/snapshot/replicate-offsite", "alpha/snapshot/~/prune", "alpha/snapshot/~/~/monitor"});
  // A path with jobs below it but none of its own; several targets; without prerequisites.
  CHECK(paths({"beta", "alpha/config"}) == Paths{"alpha/config", "beta/snapshot", "beta/snapshot/~/prune"});
  CHECK(paths({"alpha/snapshot/~/prune"}, false) == Paths{"alpha/snapshot/~/prune"});
  CHECK_THROWS_WITH(select_targets(plan, {"gamma"}, true, "plan.jobs"),
                    R"(plan.jobs: no job "gamma" and none below it, so there is nothing to run)");
  CHECK_THROWS_WITH(select_targets(plan, {"alpha/snap"}, true, "plan.jobs"),
                    R"(plan.jobs: no job "alpha/snap" and none below it, so there is nothing to run)");
}

TEST_CASE("jobs file: a file without jobs is rejected, naming the file") {
  CHECK(jobs_file_error("# nothing\n\n", "empty.jobs") ==
        R"(empty.jobs: no jobs (each line is "<job-path> <command>"))");
  CHECK(jobs_file_error("", "<stdin>") == R"(<stdin>: no jobs (each line is "<job-path> <command>"))");
}

TEST_CASE("jobs file: one that cannot be opened is an error naming the file") {
  const std::string missing =
      (std::filesystem::temp_directory_path() / "tasktree-run-no-such-dir/missing.jobs").string();
  CHECK_THROWS_WITH(read_jobs_file(missing),
                    fmt::format("cannot open jobs file {:?}: No such file or directory", missing));
  CHECK_THROWS_WITH(load_jobs(settings_of({missing})),
                    fmt::format("cannot open jobs file {:?}: No such file or directory", missing));
  // Not standard input: an empty name is a mistake (an unset variable), and a directory no file.
  CHECK_THROWS_WITH(load_jobs(settings_of({""})), "the jobs file name is empty (use '-' for standard input)");
  const std::string directory = std::filesystem::temp_directory_path().string();
  CHECK_THROWS_WITH(load_jobs(settings_of({directory})),
                    fmt::format("cannot read jobs file {:?}: it is a directory", directory));
}

TEST_CASE("jobs file: --demo loads the embedded plan, without any file") {
  const std::vector<JobSpec> jobs = load_jobs(settings_of({"--demo"}));
  CHECK(jobs.size() == 16);
  CHECK(std::any_of(jobs.begin(), jobs.end(),
                    [](const JobSpec& job) { return job.path == "beta/snapshot/replicate-offsite"; }));
}

// ---------------------------------------------------------------------------------------------
// Commands

TEST_CASE("commands: one without shell syntax runs directly, as make runs it; the rest through the shell") {
  using Words = std::vector<std::string>;
  CHECK(simple_command_words("true") == Words{"true"});
  CHECK(simple_command_words("  zfs snapshot\ttank/alpha@nightly  ") == Words{"zfs", "snapshot", "tank/alpha@nightly"});
  CHECK(simple_command_words("rsync -a --delete=yes src/ host:/dst,x+y%z^w") ==
        Words{"rsync", "-a", "--delete=yes", "src/", "host:/dst,x+y%z^w"});
  CHECK(simple_command_words("true").size() == 1);  // true and false behave the same either way
  // Shell syntax: pipes, lists, redirections, quotes, expansions, globs, comments, subshells.
  for (const std::string_view command :
       {"zfs send a | ssh b", "a && b", "a; b", "a > f", "a < f", "echo 'q'", "echo \"q\"", "cat $HOME", "cat `x`",
        "ls *.c", "ls ?", "ls [ab]", "a # comment", "(a)", "a &", "cat ~/x", "a\\ b", "caf\xc3\xa9 x", "a {b,c}"}) {
    CAPTURE(command);
    CHECK(simple_command_words(command).empty());
  }
  // An assignment first, and the shell's own words (builtins, keywords, and dash's echo and pwd).
  for (const std::string_view command :
       {"A=1 make", "cd /tmp", "exit 3", "export A", "echo hi", "pwd", "printf x", "if", "while", "exec x", ". ./env",
        "test -e x", "[ -e x ]", "kill 1", "wait", "ulimit -n"}) {
    CAPTURE(command);
    CHECK(simple_command_words(command).empty());
  }
  CHECK(simple_command_words("make A=1") == Words{"make", "A=1"});
  CHECK(simple_command_words("").empty());
}

TEST_CASE("commands: --shell bash, zsh and ksh get -o pipefail; other shells just -c") {
  using Words = std::vector<std::string>;
  CHECK(shell_command("/bin/sh") == Words{"/bin/sh", "-c"});
  CHECK(shell_command("dash") == Words{"dash", "-c"});
  CHECK(shell_command("bash") == Words{"bash", "-o", "pipefail", "-c"});
  CHECK(shell_command("/usr/bin/zsh") == Words{"/usr/bin/zsh", "-o", "pipefail", "-c"});
  CHECK(shell_command("/opt/ksh") == Words{"/opt/ksh", "-o", "pipefail", "-c"});
  CHECK(settings_of({"plan.jobs"}).run.shell == Words{"/bin/sh", "-c"});
  CHECK(settings_of({"--shell", "bash", "plan.jobs"}).run.shell == Words{"bash", "-o", "pipefail", "-c"});
}

// ---------------------------------------------------------------------------------------------
// --halt

TEST_CASE("command line: --halt WHEN[,fail=N|fail=P%], and bad values name what is wrong") {
  using When = RunSettings::Halt::When;
  const RunSettings::Halt none = settings_of({"plan.jobs"}).run.halt;
  CHECK(none.when == When::never);
  const RunSettings::Halt soon = settings_of({"--halt", "soon", "plan.jobs"}).run.halt;
  CHECK(soon.when == When::soon);
  CHECK(soon.threshold(100) == 1);
  const RunSettings::Halt three = settings_of({"--halt", "now,fail=3", "plan.jobs"}).run.halt;
  CHECK(three.when == When::now);
  CHECK(three.threshold(100) == 3);
  const RunSettings::Halt share = settings_of({"--halt", "soon,fail=10%", "plan.jobs"}).run.halt;
  CHECK(share.threshold(100) == 10);
  CHECK(share.threshold(5) == 1);  // rounded up: some failure is needed
  CHECK(share.threshold(11) == 2);
  CHECK(share.text == "soon,fail=10%");
  for (const std::string_view bad :
       {"later", "soon,fail=0", "soon,fail=101%", "soon,x=1", "now,fail=abc", "now,fail="}) {
    CAPTURE(bad);
    const ParsedCommandLine parsed = parse_command_line({"--halt", std::string(bad), "plan.jobs"});
    CHECK_FALSE(parsed.settings.has_value());
    CHECK(parsed.exit_code == 2);
    CHECK(contains(parsed.err, fmt::format("{:?}", bad)));
  }
  const ParsedCommandLine both = parse_command_line({"--halt", "soon", "--skip-on-error", "fail", "plan.jobs"});
  CHECK(both.exit_code == 2);
  CHECK(contains(both.err, "--halt and --skip-on-error fail both say when to stop"));
}

// ---------------------------------------------------------------------------------------------
// The command line

TEST_CASE("command line: the defaults") {
  const CliSettings settings = settings_of({"plan.jobs"});
  CHECK(settings.action == Action::run);
  CHECK_FALSE(settings.demo);
  CHECK(settings.jobs_file == "plan.jobs");
  CHECK(settings.json_file.empty());
  CHECK(settings.kill_after_seconds == 5.0);
  const RunSettings& run = settings.run;
  CHECK(run.jobs.empty());
  CHECK(run.workers == tasktree::default_max_workers());
  CHECK(run.skip_on_error == tasktree::SkipOnError::tree);
  CHECK(run.retries == 0);
  CHECK(run.retry_backoff == 200ms);
  CHECK_FALSE(run.timeout.has_value());
  CHECK(run.kill_after == 5s);
  CHECK(run.work_period == 0ns);
  CHECK_FALSE(run.jitter);
  CHECK(run.priority == PriorityOrder::name);
  CHECK(run.log_dir.empty());
  CHECK(settings.jobs_file_given);
  CHECK(settings_of({}).jobs_file == "-");  // standard input, but a terminal there is a usage error
  CHECK_FALSE(settings_of({}).jobs_file_given);
  CHECK(settings_of({"-"}).jobs_file == "-");  // standard input, even a terminal: asked for
  CHECK(settings_of({"-"}).jobs_file_given);
  CHECK(settings_of({""}).jobs_file.empty());  // an error when the jobs are loaded, not standard input
}

TEST_CASE("command line: every option reaches the settings") {
  const CliSettings settings = settings_of({"-j",
                                            "3",
                                            "--skip-on-error",
                                            "tree",
                                            "--retries",
                                            "4",
                                            "--retry-backoff",
                                            "0.5",
                                            "--timeout",
                                            "1.25",
                                            "--kill-after",
                                            "0.75",
                                            "--work-period",
                                            "2",
                                            "--jitter",
                                            "--priority",
                                            "depth",
                                            "--log-dir",
                                            "logs",
                                            "--json",
                                            "r.json",
                                            "plan.jobs"});
  CHECK(settings.jobs_file == "plan.jobs");
  CHECK(settings.json_file == "r.json");
  CHECK(settings.kill_after_seconds == 0.75);
  const RunSettings& run = settings.run;
  CHECK(run.workers == 3);
  CHECK(run.skip_on_error == tasktree::SkipOnError::tree);
  CHECK(run.retries == 4);
  CHECK(run.retry_backoff == 500ms);
  CHECK(run.timeout == std::optional<std::chrono::nanoseconds>(1250ms));
  CHECK(run.kill_after == 750ms);
  CHECK(run.work_period == 2s);
  CHECK(run.jitter);
  CHECK(run.priority == PriorityOrder::depth);
  CHECK(run.log_dir == "logs");
  CHECK(settings_of({"--workers", "7", "plan.jobs"}).run.workers == 7);
}

TEST_CASE(
    "command line: --mpi, --tag-host, --heartbeat-timeout and --queue-ahead; --workers over all ranks only when "
    "given") {
  const CliSettings plain = settings_of({"plan.jobs"});
  CHECK_FALSE(plain.run.mpi);
  CHECK_FALSE(plain.run.tag_host);
  CHECK_FALSE(plain.run.workers_given);
  CHECK(plain.run.heartbeat_timeout == 30s);
  const CliSettings mpi = settings_of({"--mpi", "--tag-host", "--heartbeat-timeout", "2.5", "plan.jobs"});
  CHECK(mpi.run.mpi);
  CHECK(mpi.run.tag_host);
  CHECK(mpi.run.heartbeat_timeout == 2500ms);
  CHECK_FALSE(mpi.run.workers_given);  // one job per worker rank
  CHECK(settings_of({"--mpi", "-j", "8", "plan.jobs"}).run.workers_given);
  CHECK(settings_of({"--mpi", "--demo"}).run.workers_given);  // the demo's 4
  CHECK(settings_of({"--mpi", "--halt", "now", "plan.jobs"}).run.mpi);
  CHECK_FALSE(mpi.run.place_by_first_component);
  CHECK(settings_of({"--mpi", "--place-by-first-component", "plan.jobs"}).run.place_by_first_component);
  CHECK(plain.run.queue_ahead == 0);
  CHECK(settings_of({"--mpi", "--queue-ahead", "3", "plan.jobs"}).run.queue_ahead == 3);
}

TEST_CASE("command line: --skip-on-error takes the library's mode names") {
  for (const tasktree::SkipOnError mode :
       {tasktree::SkipOnError::fail, tasktree::SkipOnError::dataset, tasktree::SkipOnError::tree}) {
    DYNAMIC_SECTION(tasktree::to_string(mode)) {
      CHECK(settings_of({"--skip-on-error", std::string(tasktree::to_string(mode)), "plan.jobs"}).run.skip_on_error ==
            mode);
    }
  }
}

TEST_CASE("command line: --dry-run, -n and --dot print instead of running") {
  CHECK(settings_of({"--dry-run", "plan.jobs"}).action == Action::dry_run);
  CHECK(settings_of({"-n", "plan.jobs"}).action == Action::dry_run);
  CHECK(settings_of({"--dot", "plan.jobs"}).action == Action::dot);
}

TEST_CASE("command line: --demo runs with --retries 2 and --workers 4 unless given") {
  const CliSettings demo = settings_of({"--demo"});
  CHECK(demo.demo);
  CHECK(demo.jobs_file.empty());
  CHECK(demo.run.retries == 2);
  CHECK(demo.run.workers == 4);
  const CliSettings given = settings_of({"--demo", "--retries", "0", "-j", "1"});
  CHECK(given.run.retries == 0);
  CHECK(given.run.workers == 1);
}

TEST_CASE("command line: each bad option is a usage error (exit 2) naming the option and its value") {
  struct Case {
    std::vector<std::string> args;
    std::vector<std::string_view> named;  // what the message must mention
  };
  const Case cases[] = {
      {{"--workers", "0"}, {"--workers", "0"}},
      {{"--workers", "100001"}, {"--workers", "100001"}},
      {{"--workers", "many"}, {"--workers", "many"}},
      {{"--skip-on-error", "sometimes"}, {"--skip-on-error", "sometimes"}},
      {{"--priority", "size"}, {"--priority", "size"}},
      {{"--retries", "-1"}, {"--retries", "-1"}},
      {{"--retries", "1001"}, {"--retries", "1001"}},
      {{"--retry-backoff", "3601"}, {"--retry-backoff", "3601"}},
      {{"--timeout", "0"}, {"--timeout", "0"}},
      {{"--kill-after", "-2.5"}, {"--kill-after", "-2.5"}},
      {{"--work-period", "soon"}, {"--work-period", "soon"}},
      {{"--timeout", "nan"}, {"--timeout", "nan", "not a finite number"}},
      {{"--timeout", "inf"}, {"--timeout", "inf", "not a finite number"}},
      {{"--kill-after", "1e400"}, {"--kill-after", "1e400", "not a number"}},
      {{"--retry-backoff", "0.5s"}, {"--retry-backoff", "0.5s", "not a number"}},
      {{"--workers", "1.5"}, {"--workers", "1.5", "not an integer"}},
      {{"--workers", "99999999999999999999"}, {"--workers", "99999999999999999999", "between 1 and 100000"}},
      {{"--retries", "2x"}, {"--retries", "2x", "not an integer"}},
      {{"--jitter"}, {"--jitter", "--work-period"}},
      {{"--no-such-option"}, {"--no-such-option"}},
      {{"--dry-run", "--dot"}, {"--dot", "--dry-run"}},
      {{"--demo", "other.jobs"}, {"--demo", "jobs-file"}},
      {{"--no-ancestors", "plan.jobs"}, {"--no-ancestors", "targets"}},
      {{"--status", "plan.jobs"}, {"--status", "--journal"}},
      {{"--journal", "j", "--status", "--resume"}, {"--status", "--resume"}},
      {{"--halt", "later"}, {"--halt", "later"}},
      {{"--tag-host", "plan.jobs"}, {"--tag-host", "--mpi"}},
      {{"--place-by-first-component", "plan.jobs"}, {"--place-by-first-component", "--mpi"}},
      {{"--heartbeat-timeout", "5", "plan.jobs"}, {"--heartbeat-timeout", "--mpi"}},
      {{"--mpi", "--heartbeat-timeout", "1", "plan.jobs"}, {"--heartbeat-timeout", "1"}},
      {{"--queue-ahead", "2", "plan.jobs"}, {"--queue-ahead", "--mpi"}},
      {{"--mpi", "--queue-ahead", "-1", "plan.jobs"}, {"--queue-ahead", "-1"}},
      {{"--mpi", "--queue-ahead", "1001", "plan.jobs"}, {"--queue-ahead", "1001"}},
      {{"--mpi", "--tty", "plan.jobs"}, {"--mpi", "--tty"}},
      {{"--mpi", "--halt", "soon,fail=2", "plan.jobs"}, {"--mpi", "--halt soon,fail=2", "--halt now"}},
  };
  for (const Case& c : cases) {
    DYNAMIC_SECTION(fmt::format("{}", fmt::join(c.args, " "))) {
      const ParsedCommandLine parsed = parse_command_line(c.args);
      INFO(parsed.err);
      CHECK_FALSE(parsed.settings.has_value());
      CHECK(parsed.exit_code == 2);
      CHECK(parsed.out.empty());
      for (const std::string_view part : c.named) CHECK(contains(parsed.err, part));
      CHECK(contains(parsed.err, "Run with --help for more information."));
    }
  }
}

TEST_CASE("command line: --help lists the options with their defaults and the exit codes") {
  const ParsedCommandLine parsed = parse_command_line({"--help"});
  CHECK_FALSE(parsed.settings.has_value());
  CHECK(parsed.exit_code == 0);
  CHECK(parsed.err.empty());
  for (const std::string_view text :
       {"--workers",    "--skip-on-error", "--retries",   "--timeout",  "--work-period", "--jitter",
        "--priority",   "--dry-run",       "--dot",       "--log-dir",  "--json",        "--journal",
        "--resume",     "--demo",          "dataset",     "Exit codes", "SIGINT (130)",  "SIGTERM (143)",
        "SIGHUP (129)", "SIGQUIT (131)",   "TASKTREE_JOB"}) {
    INFO(text);
    CHECK(contains(parsed.out, text));
  }
}

TEST_CASE("command line: --version prints the library's version") {
  const ParsedCommandLine parsed = parse_command_line({"--version"});
  CHECK_FALSE(parsed.settings.has_value());
  CHECK(parsed.exit_code == 0);
  CHECK(parsed.out == fmt::format("tasktree-run {}.{}.{}\n", tasktree::version_major, tasktree::version_minor,
                                  tasktree::version_patch));
}

// ---------------------------------------------------------------------------------------------
// --dry-run and --dot

TEST_CASE("plan: --dry-run prints the dependency tree and the one-worker order") {
  const RunSettings settings = plan(R"(
h/snap            touch ran
h/snap/~/prune    echo prune
h/snap/repl-b     echo b
h/snap/repl-a     echo a
g                 echo g
)");
  CHECK(format_dry_run(settings) ==
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
2  h/snap          touch ran
3  h/snap/repl-a   echo a
4  h/snap/repl-b   echo b
5  h/snap/~/prune  echo prune
)");
}

TEST_CASE("plan: --dry-run with --priority depth starts shallow jobs first (breadth first)") {
  struct Case {
    std::vector<std::string> args;
    std::string_view order;
  };
  const Case cases[] = {
      {{"--dry-run", "plan.jobs"},
       "(--priority name):\n1  a      x\n2  a/b    x\n3  a/b/c  x\n4  z      x\n5  z/y    x\n"},
      {{"--dry-run", "--priority", "depth", "plan.jobs"},
       "(--priority depth):\n1  a      x\n2  z      x\n3  a/b    x\n4  z/y    x\n5  a/b/c  x\n"},
  };
  for (const Case& c : cases) {
    DYNAMIC_SECTION(fmt::format("{}", fmt::join(c.args, " "))) {
      const std::string out = format_dry_run(plan("a  x\na/b  x\na/b/c  x\nz  x\nz/y  x\n", c.args));
      INFO(out);
      CHECK(out.ends_with(c.order));
    }
  }
}

TEST_CASE("plan: --dot prints a Graphviz digraph, barriers as octagons fed by the jobs beside them") {
  const std::string out = format_dot(plan("h  touch ran\nh/r  x\nh/~/p  x\n"));
  CHECK(out == R"(digraph tasktree {
  rankdir=LR;
  node [shape=box, fontname="monospace"];
  n1 [label="h", tooltip="h: touch ran"];
  n2 [label="r", tooltip="h/r: x"];
  n3 [label="~", shape=octagon, tooltip="barrier h/~"];
  n4 [label="p", tooltip="h/~/p: x"];
  n1 -> n2;
  n1 -> n3;
  n2 -> n3 [style=dashed];
  n3 -> n4;
}
)");
}

TEST_CASE("plan: --dot quotes labels and shows paths without a job dashed") {
  const std::string out = format_dot(plan("a/\"q\\b  echo \"hi\"\n"));
  CHECK(contains(out, R"x(n1 [label="a", style=dashed, tooltip="a (no job)"];)x"));
  CHECK(contains(out, R"(n2 [label="\"q\\b", tooltip="a/\"q\\b: echo \"hi\""];)"));
}

// ---------------------------------------------------------------------------------------------
// The --json report and the summary

namespace {

ProcessResult ended(ProcessResult::End end) {
  ProcessResult result;
  result.end = end;
  return result;
}

ProcessResult exited(int exit_code) {
  ProcessResult result = ended(ProcessResult::End::exited);
  result.exit_code = exit_code;
  return result;
}

/// A run of the plan `ok`, `ok/bad` (failed with exit code 4 after two attempts), `ok/bad/x`
/// (skipped below it), `other` (not run) with `--skip-on-error tree -j 3 --retries 1`.
struct FinishedRun {
  RunSettings settings = plan(
      "ok  echo fine\nok/bad  echo first >&2; exit 4\nok/bad/x  touch x\nother  sleep 1\n",
      {"--skip-on-error", "tree", "-j", "3", "--retries", "1", "--timeout", "1.5", "--priority", "depth", "plan.jobs"});
  RunReport report;

  FinishedRun() {
    const Clock::time_point t0{std::chrono::seconds(100)};
    report.started = t0;
    report.finished = t0 + 4s;
    report.retries = 1;
    report.jobs.resize(4);
    JobRecord& ok = report.jobs[0];
    ok.status = JobStatus::succeeded;
    ok.attempts = 1;
    ok.submit_count = 1;
    ok.started = t0 + 500ms;
    ok.finished = t0 + 1s;
    ok.last = exited(0);
    JobRecord& bad = report.jobs[1];
    bad.status = JobStatus::failed;
    bad.attempts = 2;
    bad.submit_count = 2;
    bad.started = t0 + 1s;
    bad.finished = t0 + 3s;
    bad.last = exited(4);
    bad.stderr_tail = {"first", "second"};
    report.jobs[2].status = JobStatus::skipped;
    report.jobs[2].skipped_below = "ok/bad";
    report.jobs[3].status = JobStatus::not_run;
  }
};

}  // namespace

TEST_CASE("report: --json reports the result, the settings, the counts and every job") {
  const FinishedRun run;
  const json report = json::parse(format_json(run.settings, run.report));
  CHECK(report.at("result") == "failed");
  CHECK(report.at("exit_code") == 1);
  CHECK(report.at("signal").is_null());
  CHECK(report.at("stopped_by_failure") == false);
  CHECK(report.at("elapsed_seconds") == 4.0);
  CHECK(report.at("settings") == json{{"workers", 3},
                                      {"skip_on_error", "tree"},
                                      {"halt", "never"},
                                      {"retries", 1},
                                      {"timeout_seconds", 1.5},
                                      {"kill_after_seconds", 5.0},
                                      {"retry_backoff_seconds", 0.2},
                                      {"work_period_seconds", 0.0},
                                      {"jitter", false},
                                      {"priority", "depth"},
                                      {"shell", "/bin/sh"},
                                      {"log_dir", nullptr},
                                      {"journal", nullptr},
                                      {"resume", false},
                                      {"mpi", false}});
  CHECK(report.at("counts") == json{{"total", 4},
                                    {"succeeded", 1},
                                    {"failed", 1},
                                    {"skipped", 1},
                                    {"stopped", 0},
                                    {"not_run", 1},
                                    {"resumed", 0},
                                    {"retries", 1}});
  const json& jobs = report.at("jobs");
  REQUIRE(jobs.size() == 4);
  CHECK(jobs[0] == json{{"path", "ok"},
                        {"command", "echo fine"},
                        {"line", 1},
                        {"status", "succeeded"},
                        {"attempts", 1},
                        {"submit_count", 1},
                        {"start_seconds", 0.5},
                        {"duration_seconds", 0.5},
                        {"end", "exited"},
                        {"exit_code", 0},
                        {"signal", nullptr},
                        {"stderr_tail", json::array()}});
  CHECK(jobs[1].at("status") == "failed");
  CHECK(jobs[1].at("attempts") == 2);
  CHECK(jobs[1].at("submit_count") == 2);
  CHECK(jobs[1].at("exit_code") == 4);
  CHECK(jobs[1].at("duration_seconds") == 2.0);
  CHECK(jobs[1].at("stderr_tail") == json{"first", "second"});
  CHECK(jobs[2] == json{{"path", "ok/bad/x"},
                        {"command", "touch x"},
                        {"line", 3},
                        {"status", "skipped"},
                        {"attempts", 0},
                        {"skipped_below", "ok/bad"}});
  CHECK(jobs[3] ==
        json{{"path", "other"}, {"command", "sleep 1"}, {"line", 4}, {"status", "not_run"}, {"attempts", 0}});
  CHECK_FALSE(jobs[1].contains("host"));  // on one machine
}

TEST_CASE("report: with --mpi, --json names the host of each job's last attempt, --trace the host of each track") {
  FinishedRun run;
  run.settings.mpi = true;
  run.report.jobs[0].host = "alpha";
  run.report.jobs[1].host = "beta";
  run.report.attempts = {
      AttemptRecord{.job = 1, .attempt = 1, .slot = 0, .start = run.report.started, .end = run.report.started + 1s,
                    .result = exited(4), .retried = true, .host = "alpha"},
      AttemptRecord{.job = 1, .attempt = 2, .slot = 1, .start = run.report.started + 2s,
                    .end = run.report.started + 3s, .result = exited(4), .host = "beta"},
  };
  const json report = json::parse(format_json(run.settings, run.report));
  CHECK(report.at("settings").at("mpi") == true);
  CHECK(report.at("jobs")[0].at("host") == "alpha");
  CHECK(report.at("jobs")[1].at("host") == "beta");
  CHECK_FALSE(report.at("jobs")[2].contains("host"));  // never ran
  const json trace = json::parse(format_trace(run.settings, run.report));
  std::vector<std::string> tracks;
  std::vector<std::string> hosts;
  for (const json& event : trace.at("traceEvents")) {
    if (event.at("name") == "thread_name") tracks.push_back(event.at("args").at("name"));
    if (event.at("ph") == "X") hosts.push_back(event.at("args").at("host"));
  }
  CHECK(tracks == std::vector<std::string>{"worker 1 (alpha)", "worker 2 (beta)"});
  CHECK(hosts == std::vector<std::string>{"alpha", "beta"});
}

TEST_CASE("report: --json is written job by job, laid out as one indented document with the jobs last") {
  // The jobs are written into the text one at a time (a document of all of them held twice the
  // memory of a 100,000-job run): the text must still be the indented dump of the whole report,
  // the jobs after the verdict, the settings and the counts.
  FinishedRun run;
  run.report.jobs[1].stderr_tail = {"line one\nline two", "caf\xe9"};  // a newline and a Latin-1 byte
  const std::string text = format_json(run.settings, run.report);
  const json report = json::parse(text);
  CHECK(report.at("jobs")[1].at("stderr_tail") == json{"line one\nline two", "caf\xef\xbf\xbd"});
  json without_jobs = report;
  without_jobs.erase("jobs");
  const std::string head = without_jobs.dump(2);
  CHECK(text.starts_with(head.substr(0, head.size() - 2)));  // all but its closing "\n}"
  json jobs_only = json::object();
  jobs_only["jobs"] = report.at("jobs");
  const std::string tail = jobs_only.dump(2);
  CHECK(text.ends_with(tail.substr(1) + "\n"));  // from after its opening brace
  CHECK(std::count(text.begin(), text.end(), '\n') ==
        std::count(head.begin(), head.end(), '\n') + std::count(tail.begin(), tail.end(), '\n'));

  run.settings.jobs.clear();
  run.report.jobs.clear();
  const json empty = json::parse(format_json(run.settings, run.report));
  CHECK(empty.at("jobs") == json::array());
  CHECK(empty.at("counts").at("total") == 0);
}

TEST_CASE("report: --json: how a job ended, and without --timeout a null timeout") {
  FinishedRun run;
  run.settings.timeout.reset();
  run.report.jobs[1].last = ended(ProcessResult::End::signalled);
  run.report.jobs[1].last.signal = SIGKILL;
  run.report.jobs[0].last = ended(ProcessResult::End::timed_out);
  const json report = json::parse(format_json(run.settings, run.report));
  CHECK(report.at("settings").at("timeout_seconds").is_null());
  const json& bad = report.at("jobs")[1];
  CHECK(bad.at("end") == "signalled");
  CHECK(bad.at("exit_code").is_null());
  CHECK(bad.at("signal") == "SIGKILL");
  CHECK(report.at("jobs")[0].at("end") == "timed_out");
  CHECK(report.at("jobs")[0].at("exit_code").is_null());
  CHECK_FALSE(bad.contains("error"));
}

TEST_CASE(
    "report: --json: a job that could not be started says why, and the settings say where output and journal went") {
  FinishedRun run;
  run.report.jobs[1].last = ended(ProcessResult::End::spawn_failed);
  run.report.jobs[1].last.error = "cannot start /bin/sh: Resource temporarily unavailable";
  run.settings.log_dir = "/var/log/backup";
  run.settings.journal = "nightly.journal";
  run.settings.resume = true;
  run.settings.kill_after = std::chrono::milliseconds(2500);
  const json report = json::parse(format_json(run.settings, run.report));
  CHECK(report.at("jobs")[1].at("end") == "spawn_failed");
  CHECK(report.at("jobs")[1].at("error") == "cannot start /bin/sh: Resource temporarily unavailable");
  CHECK(report.at("settings").at("log_dir") == "/var/log/backup");
  CHECK(report.at("settings").at("journal") == "nightly.journal");
  CHECK(report.at("settings").at("resume") == true);
  CHECK(report.at("settings").at("kill_after_seconds") == 2.5);
}

TEST_CASE("report: --json: bytes that are not UTF-8 become U+FFFD, so the report is always JSON") {
  FinishedRun run;
  run.settings.jobs[1].path = "ok/caf\xff";
  run.settings.jobs[1].command = "echo \xfe\xff";
  // Latin-1, and a line cut into 64 KiB pieces in the middle of a character (the euro sign, E2 82 AC).
  run.report.jobs[1].stderr_tail = {"caf\xe9", "cut \xe2\x82"};
  const json report = json::parse(format_json(run.settings, run.report));
  const json& bad = report.at("jobs")[1];
  CHECK(bad.at("path") == "ok/caf\xEF\xBF\xBD");
  CHECK(bad.at("command") == "echo \xEF\xBF\xBD\xEF\xBF\xBD");
  CHECK(bad.at("stderr_tail") == json{"caf\xEF\xBF\xBD", "cut \xEF\xBF\xBD"});
  CHECK(report.at("jobs")[0].at("path") == "ok");  // valid UTF-8 is left as it is
}

TEST_CASE("report: --status says of each job of the plan what the journal records, and what would run again") {
  const std::vector<JobSpec> jobs =
      parse_jobs_file("a  make a\na/b  make b\na/b/c  make c\nd  make d --new\ne  make e\n", "plan.jobs");
  tasktree::JournalContents journal;
  journal.runs = 2;
  journal.records.push_back({.dataset = "a", .attempts = 1, .seconds = 1.25, .key = "make a"});
  journal.records.push_back(
      {.dataset = "a/b", .fail = true, .attempts = 3, .error = "a/b: exit code 2", .key = "make b"});
  journal.records.push_back({.dataset = "a/b/c", .no_skip = false, .key = "make c"});
  journal.records.push_back({.dataset = "d", .attempts = 1, .key = "make d"});  // another command
  journal.records.push_back({.dataset = "gone", .attempts = 1, .key = "make gone"});
  const JournalStatus status = format_journal_status(journal, jobs);
  CHECK(status.text ==
        "done     a      1 attempt, 1.2s\n"
        "FAILED   a/b    exit code 2 (3 attempts)\n"
        "skipped  a/b/c  its subtree was skipped\n"
        "changed  d      succeeded with another command: runs again\n"
        "not run  e\n"
        "tasktree-run: 5 jobs: 1 done, 1 failed, 1 skipped, 1 changed, 1 not run (1 recorded job not in the plan); "
        "the journal holds 2 runs\n");
  CHECK(status.exit_code == 1);
  // Without a plan: every job the journal records; all done is exit code 0.
  tasktree::JournalContents all_done;
  all_done.runs = 1;
  all_done.records.push_back({.dataset = "x", .attempts = 2, .seconds = 0.5, .key = "true"});
  const JournalStatus done = format_journal_status(all_done, {});
  CHECK(done.text ==
        "done     x  2 attempts, 0.5s\ntasktree-run: 1 job: 1 done, 0 failed, 0 skipped, 0 changed, 0 not run; "
        "the journal holds 1 run\n");
  CHECK(done.exit_code == 0);
  // A journal that --mpi wrote names the host of each job's last attempt.
  tasktree::JournalContents across;
  across.runs = 1;
  across.records.push_back({.dataset = "x", .attempts = 1, .seconds = 0.5, .key = "true", .host = "node2"});
  across.records.push_back(
      {.dataset = "y", .fail = true, .attempts = 2, .error = "y: exit code 1", .key = "false", .host = "node3"});
  CHECK(format_journal_status(across, {}).text ==
        "done     x  1 attempt, 0.5s on node2\n"
        "FAILED   y  exit code 1 (2 attempts on node3)\n"
        "tasktree-run: 2 jobs: 1 done, 1 failed, 0 skipped, 0 changed, 0 not run; the journal holds 1 run\n");
}

TEST_CASE("report: the verdict: exit code, --json result and the summary's last line") {
  struct Case {
    std::string_view name;
    int signal;
    bool stopped_by_failure;
    bool all_succeed;
    int exit_code;
    std::string_view result;
    std::string_view verdict;
  };
  const Case cases[] = {
      {"all succeeded", 0, false, true, 0, "succeeded", "tasktree-run: all 4 jobs succeeded\n"},
      {"a failure", 0, false, false, 1, "failed", "tasktree-run: FAILED (exit code 1)\n"},
      {"fail mode", 0, true, false, 1, "failed",
       "tasktree-run: FAILED: stopped at the first failure (--skip-on-error fail) (exit code 1)\n"},
      {"SIGINT", SIGINT, false, false, 130, "interrupted", "tasktree-run: interrupted by SIGINT (exit code 130)\n"},
      {"SIGTERM", SIGTERM, false, true, 143, "interrupted", "tasktree-run: interrupted by SIGTERM (exit code 143)\n"},
  };
  for (const Case& c : cases) {
    DYNAMIC_SECTION(c.name) {
      FinishedRun run;
      run.report.signal = c.signal;
      run.report.stopped_by_failure = c.stopped_by_failure;
      if (c.all_succeed) {
        for (JobRecord& job : run.report.jobs) job = run.report.jobs[0];
      }
      CHECK(run.report.exit_code() == c.exit_code);
      const json report = json::parse(format_json(run.settings, run.report));
      CHECK(report.at("exit_code") == c.exit_code);
      CHECK(report.at("result") == c.result);
      CHECK(report.at("stopped_by_failure") == c.stopped_by_failure);
      CHECK(report.at("signal") == (c.signal == 0 ? json(nullptr) : json(c.signal == SIGINT ? "SIGINT" : "SIGTERM")));
      CHECK(format_summary(run.settings, run.report).ends_with(c.verdict));
    }
  }
}

TEST_CASE(
    "report: the summary: counts, failed jobs with their last stderr lines, skipped and not-run jobs, the slowest") {
  const FinishedRun run;
  const std::string summary = format_summary(run.settings, run.report);
  CHECK(summary ==
        "tasktree-run: 4 jobs in 4.0s: 1 succeeded, 1 failed, 1 skipped, 0 stopped, 1 not run; 1 retry\n"
        "failed:\n"
        "  ok/bad: exit code 4 after 2 attempts (2.0s; line 2: echo first >&2; exit 4)\n"
        "    | first\n"
        "    | second\n"
        "skipped because of a failure:\n"
        "  ok/bad/x (below ok/bad)\n"
        "not run (the run stopped first):\n"
        "  other\n"
        "slowest:\n"
        "     2.0s  ok/bad\n"
        "     0.5s  ok\n"
        "tasktree-run: FAILED (exit code 1)\n");
}
