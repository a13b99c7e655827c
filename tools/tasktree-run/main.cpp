// tasktree-run: runs a jobs file of shell commands named by slash-separated paths, parents before
// children, barriers, in parallel, with retries, timeouts and a report. docs/tasktree-run.md is
// its manual.

#include "demo_jobs.hpp"
#include "jobs_file.hpp"
#include "output.hpp"
#include "process.hpp"
#include "report.hpp"
#include "run.hpp"
#include "signals.hpp"

#include <tasktree/options.hpp>
#include <tasktree/policy.hpp>
#include <tasktree/version.hpp>

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <map>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>

namespace {

using namespace tasktree_run;

constexpr std::string_view footer =
    R"(Jobs file: one job per line, "<job-path> <command>"; the command runs with /bin/sh -c.
'#' starts a comment line. A job starts after the jobs above it on its path succeeded;
a '~' component is a barrier: jobs below X/~ wait for everything else below X.

Each job runs in its own process group, with TASKTREE_JOB (its path), TASKTREE_SUBMIT_COUNT,
TASKTREE_ATTEMPT (1, 2, ...) and TASKTREE_RUN_DIR (a scratch directory shared by the jobs of
one run, removed at the end) in its environment.

Exit codes: 0 all jobs succeeded; 1 some job failed, or did not run because of a failure;
2 usage or input error; 130/143 interrupted by SIGINT/SIGTERM (a second SIGINT kills the
running jobs at once).

Example: tasktree-run --demo    (see docs/tasktree-run.md)
)";

std::chrono::nanoseconds to_nanoseconds(double seconds) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::duration<double>(seconds));
}

/// True if standard error shows a live status line: a terminal that understands escapes.
bool live_terminal() {
  const char* term = std::getenv("TERM");
  return ::isatty(STDERR_FILENO) == 1 && term != nullptr && std::string_view(term) != "dumb";
}

int run(int argc, char** argv) {
  CLI::App app{"Runs shell commands named by slash-separated job paths in parallel, parents before children.",
               "tasktree-run"};
  app.footer(std::string(footer));
  app.set_version_flag("--version", fmt::format("tasktree-run {}.{}.{}", tasktree::version_major,
                                                tasktree::version_minor, tasktree::version_patch));

  std::string jobs_file;
  bool demo = false;
  int workers = tasktree::default_max_workers();
  std::string skip_on_error = "dataset";
  int retries = 0;
  double retry_backoff = 0.2;
  std::optional<double> timeout;
  double kill_after = 5;
  double work_period = 0;
  bool jitter = false;
  std::string priority = "name";
  bool dry_run = false;
  bool dot = false;
  std::string log_dir;
  std::string json_file;

  auto* file_option = app.add_option("jobs-file", jobs_file, "The jobs file; '-' or none: standard input");
  app.add_flag("--demo", demo,
               "Run the built-in demo plan (examples/demo.jobs), with --retries 2 and --workers 4 unless given")
      ->excludes(file_option);
  auto* workers_option = app.add_option("-j,--workers", workers, "Jobs running at once (default: the number of CPUs)")
                             ->check(CLI::Range(1, 100'000))
                             ->capture_default_str();
  app.add_option("--skip-on-error", skip_on_error,
                 "After a failed job: 'fail' stops the run; 'dataset' carries on, also below the failed job; "
                 "'tree' carries on except below it")
      ->check(CLI::IsMember({"fail", "dataset", "tree"}))
      ->capture_default_str();
  auto* retries_option = app.add_option("--retries", retries, "Retries of a failed job (timeouts included)")
                             ->check(CLI::Range(0, 1'000))
                             ->capture_default_str();
  app.add_option("--retry-backoff", retry_backoff,
                 "Seconds: a retry waits a random time up to this ceiling, which doubles for each further retry, "
                 "up to 10s (or this value if larger)")
      ->check(CLI::Range(0.0, 3600.0))
      ->capture_default_str();
  app.add_option("--timeout", timeout, "Seconds a job may run before its process group gets SIGTERM (default: none)")
      ->check(CLI::Range(0.001, 1e9));
  app.add_option("--kill-after", kill_after,
                 "Seconds between SIGTERM and SIGKILL, after a timeout or when the run is stopped")
      ->check(CLI::Range(0.0, 1e9))
      ->capture_default_str();
  app.add_option("--work-period", work_period, "Spread the job starts evenly over this many seconds (0: no pacing)")
      ->check(CLI::Range(0.0, 1e9))
      ->capture_default_str();
  app.add_flag("--jitter", jitter, "With --work-period: random intervals between starts, the same on average");
  app.add_option("--priority", priority, "Which ready job starts first: 'name' (path order) or 'depth' (breadth first)")
      ->check(CLI::IsMember({"name", "depth"}))
      ->capture_default_str();
  auto* dry_run_flag = app.add_flag("-n,--dry-run", dry_run,
                                    "Print the dependency tree and the order of the jobs with one worker; run nothing");
  app.add_flag("--dot", dot, "Print the tree as a Graphviz digraph; run nothing")->excludes(dry_run_flag);
  app.add_option("--log-dir", log_dir,
                 "Write each job's output to DIR/<job-path>.out and .err (default: to the console, each line "
                 "prefixed with [job-path])");
  app.add_option("--json", json_file, "Write a machine-readable report of the run to this file");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    const int code = app.exit(error);
    return code == static_cast<int>(CLI::ExitCodes::Success) ? 0 : 2;
  }

  RunSettings settings;
  try {
    std::string text;
    std::string source;
    if (demo) {
      text = demo_jobs();
      source = "demo.jobs";
      if (retries_option->count() == 0) retries = 2;  // its flaky job needs one
      if (workers_option->count() == 0) workers = 4;  // its replications run side by side
    } else if (jobs_file.empty() || jobs_file == "-") {
      if (::isatty(STDIN_FILENO) == 1) {
        fmt::print(stderr,
                   "tasktree-run: no jobs file given, and standard input is a terminal\n"
                   "Run with --help for more information, or try --demo.\n");
        return 2;
      }
      text = read_jobs_file("-");
      source = "<stdin>";
    } else {
      text = read_jobs_file(jobs_file);
      source = jobs_file;
    }
    settings.jobs = parse_jobs_file(text, source);
  } catch (const std::exception& error) {
    fmt::print(stderr, "tasktree-run: {}\n", error.what());
    return 2;
  }
  settings.workers = workers;
  settings.skip_on_error = tasktree::parse_skip_on_error(skip_on_error);
  settings.retries = retries;
  settings.retry_backoff = to_nanoseconds(retry_backoff);
  if (timeout) settings.timeout = to_nanoseconds(*timeout);
  settings.kill_after = to_nanoseconds(kill_after);
  settings.work_period = to_nanoseconds(work_period);
  settings.jitter = jitter;
  settings.priority = priority == "depth" ? PriorityOrder::depth : PriorityOrder::name;
  settings.log_dir = log_dir;

  if (dry_run) {
    fmt::print("{}", format_dry_run(settings));
    return 0;
  }
  if (dot) {
    fmt::print("{}", format_dot(settings));
    return 0;
  }

  // Open the report file now: a typo in its path should not cost a whole run.
  std::ofstream json;
  if (!json_file.empty()) {
    json.open(json_file, std::ios::binary | std::ios::trunc);
    if (!json) {
      fmt::print(stderr, "tasktree-run: cannot write the --json file {:?}\n", json_file);
      return 2;
    }
  }

  block_stop_signals();  // before the first thread starts, so that only the watcher receives them
  Console console(stdout, stderr, live_terminal());
  ProcessGroups groups;
  std::stop_source stop;
  RunReport report;
  {
    SignalWatcher watcher(
        [&](int signal) {
          console.message(
              fmt::format("tasktree-run: {}: starting no new jobs; running jobs get SIGTERM (SIGKILL {}s later{})",
                          signal_name(signal), kill_after, signal == SIGINT ? ", or at once on a second Ctrl-C" : ""));
          stop.request_stop();
          groups.stop();
        },
        [&](int signal) {
          groups.kill_all();
          console.message(fmt::format("tasktree-run: {} again: killed the running jobs", signal_name(signal)));
        });
    report = run_jobs(settings, groups, console, stop.get_token());
    report.signal = watcher.received();
    std::fputs(format_summary(settings, report).c_str(), stderr);
  }

  if (json.is_open()) {
    json << format_json(settings, report);
    json.close();
    if (!json) {
      fmt::print(stderr, "tasktree-run: cannot write the --json file {:?}\n", json_file);
      return 2;
    }
  }
  return report.exit_code();
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& error) {
    std::fflush(stdout);
    fmt::print(stderr, "tasktree-run: error: {}\n", error.what());
    return 2;
  }
}
