#include "command_line.hpp"

#include <tasktree/options.hpp>
#include <tasktree/policy.hpp>
#include <tasktree/version.hpp>

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <charconv>
#include <chrono>
#include <cmath>
#include <sstream>
#include <string_view>
#include <system_error>

namespace tasktree_run {
namespace {

constexpr std::string_view footer =
    R"(Jobs file: one job per line, "<job-path> <command>".
'#' starts a comment line. A job starts after the jobs above it on its path succeeded;
a '~' component is a barrier: jobs below X/~ wait for everything else below X.
Commands without shell syntax run directly, the others with --shell (default /bin/sh) -c.

Targets: job paths after the jobs file run only those jobs and their subtrees, after the
jobs they wait for (above them, and beside a barrier on their path), as make does.

Each job runs in its own process group, with TASKTREE_JOB (its path), TASKTREE_SUBMIT_COUNT,
TASKTREE_ATTEMPT (1, 2, ...) and TASKTREE_RUN_DIR (a scratch directory shared by the jobs of
one run, removed at the end) in its environment.

Exit codes: 0 all jobs succeeded; 1 some job failed, or did not run because of a failure;
2 usage or input error; 128 + the signal if interrupted by SIGINT (130), SIGTERM (143),
SIGHUP (129) or SIGQUIT (131); a second SIGINT kills the running jobs at once.

Example: tasktree-run --demo    (see docs/tasktree-run.md)
)";

/// A number of seconds in [min, max]: rejects NaN, infinities and text that is not a number, with
/// a message that says which.
CLI::Validator seconds_in(double min, double max) {
  return CLI::Validator(
      [min, max](std::string& text) -> std::string {
        double value = 0;
        const char* end = text.data() + text.size();
        const auto [at, error] = std::from_chars(text.data(), end, value);
        if (error != std::errc() || at != end) return fmt::format("{:?} is not a number of seconds", text);
        if (!std::isfinite(value)) return fmt::format("{:?} is not a finite number of seconds", text);
        if (value < min || value > max) return fmt::format("{} is not between {} and {} seconds", text, min, max);
        return {};
      },
      fmt::format("SECONDS in [{}, {}]", min, max));
}

/// A whole number in [min, max], with a message that says "not an integer" for text that is not one.
CLI::Validator integer_in(long min, long max) {
  return CLI::Validator(
      [min, max](std::string& text) -> std::string {
        long value = 0;
        const char* end = text.data() + text.size();
        const auto [at, error] = std::from_chars(text.data(), end, value);
        if (error == std::errc::result_out_of_range) return fmt::format("{} is not between {} and {}", text, min, max);
        if (error != std::errc() || at != end) return fmt::format("{:?} is not an integer", text);
        if (value < min || value > max) return fmt::format("{} is not between {} and {}", text, min, max);
        return {};
      },
      fmt::format("INT in [{}, {}]", min, max));
}

/// `--halt WHEN[,fail=N|fail=P%]` into `halt`, or why it is not one.
std::string parse_halt(std::string_view text, RunSettings::Halt& halt) {
  using When = RunSettings::Halt::When;
  const std::size_t comma = text.find(',');
  const std::string_view when = text.substr(0, comma);
  if (when == "never") {
    halt.when = When::never;
  } else if (when == "soon") {
    halt.when = When::soon;
  } else if (when == "now") {
    halt.when = When::now;
  } else {
    return fmt::format("{:?} is not never, soon or now (optionally followed by ,fail=N or ,fail=P%)", text);
  }
  halt.text = std::string(text);
  if (comma == std::string_view::npos) return {};
  std::string_view condition = text.substr(comma + 1);
  if (!condition.starts_with("fail="))
    return fmt::format("{:?}: after the comma, fail=N or fail=P% (P percent of the jobs)", text);
  condition.remove_prefix(5);
  halt.percent = condition.ends_with('%');
  if (halt.percent) condition.remove_suffix(1);
  std::size_t value = 0;
  const auto [at, error] = std::from_chars(condition.data(), condition.data() + condition.size(), value);
  if (error != std::errc() || at != condition.data() + condition.size() || value == 0 ||
      (halt.percent && value > 100)) {
    return fmt::format("{:?}: fail= takes a number of failed jobs (1 or more) or a percentage (1% to 100%)", text);
  }
  halt.failures = value;
  return {};
}

std::chrono::nanoseconds to_nanoseconds(double seconds) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::duration<double>(seconds));
}

}  // namespace

std::vector<std::string> shell_command(const std::string& shell) {
  const std::string_view name = std::string_view(shell).substr(shell.rfind('/') + 1);
  if (name == "bash" || name == "zsh" || name == "ksh" || name == "mksh") return {shell, "-o", "pipefail", "-c"};
  return {shell, "-c"};
}

ParsedCommandLine parse_command_line(const std::vector<std::string>& args) {
  CLI::App app{"Runs shell commands named by slash-separated job paths in parallel, parents before children.",
               "tasktree-run"};
  app.footer(std::string(footer));
  app.set_version_flag("--version", fmt::format("tasktree-run {}.{}.{}", tasktree::version_major,
                                                tasktree::version_minor, tasktree::version_patch));

  std::string jobs_file;
  bool demo = false;
  int workers = tasktree::default_max_workers();
  std::string skip_on_error = "tree";
  int retries = 0;
  double retry_backoff = 0.2;
  std::optional<double> timeout;
  double kill_after = 5;
  double work_period = 0;
  bool jitter = false;
  std::string priority = "name";
  std::string shell = "/bin/sh";
  std::string halt = "never";
  bool quiet = false;
  bool verbose = false;
  bool group = false;
  bool tty = false;
  std::string color = "auto";
  bool dry_run = false;
  bool dot = false;
  std::string log_dir;
  std::string journal;
  bool resume = false;
  bool status = false;
  std::string json_file;
  std::string trace_file;
  std::string report_file;
  bool mpi = false;
  bool tag_host = false;
  bool place_by_first_component = false;
  double heartbeat_timeout = 30;
  int queue_ahead = 0;

  std::vector<std::string> targets;
  bool no_ancestors = false;
  auto* file_option = app.add_option("jobs-file", jobs_file, "The jobs file; '-' or none: standard input");
  auto* targets_option = app.add_option(
      "targets", targets,
      "Run only these jobs (or the jobs below these paths) and their subtrees, after the jobs they wait for: "
      "those above them and, past a barrier, those beside it (default: every job)");
  app.add_flag("--no-ancestors", no_ancestors,
               "With targets: run the targets' subtrees alone, not the jobs they wait for")
      ->needs(targets_option);
  app.add_flag("--demo", demo,
               "Run the built-in demo plan (examples/demo.jobs), with --retries 2 and --workers 4 unless given")
      ->excludes(file_option);
  auto* workers_option = app.add_option("-j,--workers", workers, "Jobs running at once (default: the number of CPUs)")
                             ->check(integer_in(1, 100'000))
                             ->capture_default_str();
  app.add_option("--skip-on-error", skip_on_error,
                 "After a failed job: 'tree' carries on except below it; 'fail' stops the run; 'dataset' "
                 "carries on, also below the failed job")
      ->check(CLI::IsMember({"fail", "dataset", "tree"}))
      ->capture_default_str();
  auto* retries_option = app.add_option("--retries", retries, "Retries of a failed job (timeouts included)")
                             ->check(integer_in(0, 1'000))
                             ->capture_default_str();
  app.add_option("--retry-backoff", retry_backoff,
                 "Seconds: a retry waits a random time up to this ceiling, which doubles for each further retry, "
                 "up to 10s (or this value if larger)")
      ->check(seconds_in(0.0, 3600.0))
      ->capture_default_str();
  app.add_option("--timeout", timeout, "Seconds a job may run before its process group gets SIGTERM (default: none)")
      ->check(seconds_in(0.001, 1e9));
  app.add_option("--kill-after", kill_after,
                 "Seconds between SIGTERM and SIGKILL, after a timeout or when the run is stopped")
      ->check(seconds_in(0.0, 1e9))
      ->capture_default_str();
  auto* work_period_option =
      app.add_option("--work-period", work_period, "Spread the job starts evenly over this many seconds (0: no pacing)")
          ->check(seconds_in(0.0, 1e9))
          ->capture_default_str();
  app.add_flag("--jitter", jitter, "With --work-period: random intervals between starts, the same on average")
      ->needs(work_period_option);
  app.add_option("--priority", priority, "Which ready job starts first: 'name' (path order) or 'depth' (breadth first)")
      ->check(CLI::IsMember({"name", "depth"}))
      ->capture_default_str();
  app.add_option("--halt", halt,
                 "Stop the run after failures: 'soon' starts no new job and lets the running ones finish; "
                 "'now' also stops them (SIGTERM); ',fail=N' after N failed jobs, ',fail=P%' after P percent "
                 "of the jobs failed (default 1); failures are counted after their retries")
      ->check(CLI::Validator(
          [](std::string& text) {
            RunSettings::Halt ignored;
            return parse_halt(text, ignored);
          },
          "WHEN[,fail=N|fail=P%]"))
      ->capture_default_str();
  auto* quiet_flag = app.add_flag("-q,--quiet", quiet,
                                  "Only failures, skips and the summary: no start and end lines, no job output on the "
                                  "console (--log-dir files are written all the same)");
  app.add_flag("-v,--verbose", verbose, "A start and an end line for every job, with its command, also on a terminal")
      ->excludes(quiet_flag);
  app.add_flag("--group", group,
               "Print each job's output in one piece when it ends, not line by line, so that the lines of jobs "
               "running side by side do not interleave");
  app.add_flag("--tty", tty,
               "Let jobs use the runner's terminal: standard input is the terminal, and the running job is its "
               "foreground, so that a password prompt (ssh, sudo) works; one job at a time (-j 1), and Ctrl-C "
               "stops the run. Without it, jobs have no terminal and such a prompt fails at once");
  app.add_option("--color", color,
                 "Color the log lines: 'auto' on a terminal unless NO_COLOR is set, 'always', 'never'")
      ->check(CLI::IsMember({"auto", "always", "never"}))
      ->capture_default_str();
  app.add_option("--shell", shell,
                 "The shell that runs a command with shell syntax, as SHELL -c COMMAND; bash, zsh and ksh get "
                 "-o pipefail, so that 'zfs send | ssh host zfs recv' fails when zfs send does. Commands "
                 "without shell syntax run directly")
      ->capture_default_str();
  auto* dry_run_flag = app.add_flag("-n,--dry-run", dry_run,
                                    "Print the dependency tree and the order of the jobs with one worker; run nothing");
  app.add_flag("--dot", dot, "Print the tree as a Graphviz digraph; run nothing")->excludes(dry_run_flag);
  auto* journal_option =
      app.add_option("--journal", journal,
                     "Append a line per finished job (path, outcome, attempts, command) to this file, synced "
                     "every second; see --resume");
  auto* resume_flag =
      app.add_flag("--resume", resume,
                   "With --journal: skip the jobs it shows succeeded with the same command; run the others")
          ->needs(journal_option);
  app.add_flag("--status", status,
               "With --journal: print what it says about each job of the jobs file (or, without one, each job "
               "it records): done, failed, skipped, changed, not run; run nothing. Exit code 0 if all is done")
      ->needs(journal_option)
      ->excludes(resume_flag)
      ->excludes(dry_run_flag);
  app.add_option("--log-dir", log_dir,
                 "Write each job's output to DIR/<job-path>.out and .err (default: to the console, each line "
                 "prefixed with [job-path])");
  app.add_option("--json", json_file,
                 "Write a machine-readable report of the run to this file; '-': to standard output (the jobs' "
                 "output and the log lines then go to standard error)");
  app.add_option("--report", report_file,
                 "Write a self-contained HTML page about the run to this file (no script, nothing fetched): the "
                 "verdict, a Gantt chart of the workers, the failed jobs with their standard error, the slowest");
  app.add_option("--trace", trace_file,
                 "Write the run's timeline to this file in the Chrome trace-event format, for Perfetto "
                 "(ui.perfetto.dev) or chrome://tracing: a track per worker, a slice per attempt, the backoffs");

  auto* mpi_flag = app.add_flag(
      "--mpi", mpi,
      "Run as one rank of an MPI job (mpiexec -n N tasktree-run --mpi ..., or srun): rank 0 reads the jobs, "
      "schedules and reports; every rank runs jobs (rank 0 too when it is alone on its host or N is 2). "
      "--workers is then the jobs running at once over all ranks (default: one per rank besides rank 0's own); "
      "each attempt's output reaches rank 0 when it ends");
  app.add_flag("--tag-host", tag_host, "With --mpi: prefix each output line with the host that ran the job, [host:path]")
      ->needs(mpi_flag);
  app.add_flag("--place-by-first-component", place_by_first_component,
               "With --mpi: run each job on a rank of the host its path's first component names (alpha/snapshot "
               "on host alpha, as TASKTREE_MPI_HOST_NAME or the processor name gives it); a name with no rank of "
               "the job is an error before anything runs")
      ->needs(mpi_flag);
  app.add_option("--heartbeat-timeout", heartbeat_timeout,
                 "With --mpi: seconds without a word from a rank (its heartbeat comes every second) before it is "
                 "declared lost and its running jobs start again on other ranks; a rank that dies is usually "
                 "noticed at once. Needs a launcher that keeps the job alive (mpiexec --enable-recovery)")
      ->check(seconds_in(2.0, 1e6))
      ->needs(mpi_flag)
      ->capture_default_str();
  app.add_option("--queue-ahead", queue_ahead,
                 "With --mpi: jobs sent ahead to each job slot of a rank, beyond the one it runs, so that it "
                 "starts the next without waiting for rank 0; for jobs of a few milliseconds or less. Jobs are "
                 "then chosen by priority when they are sent")
      ->check(integer_in(0, 1000))
      ->needs(mpi_flag)
      ->capture_default_str();

  std::vector<const char*> argv{"tasktree-run"};
  for (const std::string& arg : args) argv.push_back(arg.c_str());
  ParsedCommandLine parsed;
  try {
    app.parse(static_cast<int>(argv.size()), argv.data());
  } catch (const CLI::ParseError& error) {
    std::ostringstream out;
    std::ostringstream err;
    const int code = app.exit(error, out, err);
    parsed.exit_code = code == static_cast<int>(CLI::ExitCodes::Success) ? 0 : 2;
    parsed.out = std::move(out).str();
    parsed.err = std::move(err).str();
    return parsed;
  }

  if (demo) {
    if (retries_option->count() == 0) retries = 2;  // its flaky job needs one
    if (workers_option->count() == 0) workers = 4;  // its replications run side by side
  }
  if (tty) {
    if (workers_option->count() > 0 && workers != 1) {
      parsed.exit_code = 2;
      parsed.err = fmt::format(
          "--tty runs one job at a time (a terminal has one foreground), but --workers is {}\n"
          "Run with --help for more information.\n",
          workers);
      return parsed;
    }
    workers = 1;
  }
  if (mpi) {
    // A terminal belongs to one machine; a stop that lets running jobs finish cannot reach other ranks
    // (their jobs' stop tokens are signalled, which sends SIGTERM).
    std::string conflict;
    if (tty) conflict = "--tty gives jobs the runner's terminal, which the jobs on other ranks cannot have";
    RunSettings::Halt halt_settings;
    (void)parse_halt(halt, halt_settings);
    if (halt_settings.when == RunSettings::Halt::When::soon) {
      conflict = fmt::format(
          "--halt {}: a run over MPI that stops sends SIGTERM to the jobs running on every rank; use --halt now",
          halt);
    }
    if (!conflict.empty()) {
      parsed.exit_code = 2;
      parsed.err = fmt::format("--mpi: {}\nRun with --help for more information.\n", conflict);
      return parsed;
    }
  }
  CliSettings& settings = parsed.settings.emplace();
  settings.run.mpi = mpi;
  settings.run.tag_host = tag_host;
  settings.run.heartbeat_timeout = to_nanoseconds(heartbeat_timeout);
  settings.run.queue_ahead = queue_ahead;
  settings.run.place_by_first_component = place_by_first_component;
  settings.run.workers_given = workers_option->count() > 0 || demo;
  settings.action = status ? Action::status : dry_run ? Action::dry_run : dot ? Action::dot : Action::run;
  settings.demo = demo;
  settings.jobs_file_given = file_option->count() > 0;
  settings.targets = targets;
  settings.no_prerequisites = no_ancestors;
  settings.jobs_file = settings.jobs_file_given || demo ? jobs_file : "-";
  settings.run.workers = workers;
  settings.run.skip_on_error = tasktree::parse_skip_on_error(skip_on_error);
  settings.run.retries = retries;
  settings.run.retry_backoff = to_nanoseconds(retry_backoff);
  if (timeout) settings.run.timeout = to_nanoseconds(*timeout);
  settings.run.kill_after = to_nanoseconds(kill_after);
  settings.kill_after_seconds = kill_after;
  settings.run.work_period = to_nanoseconds(work_period);
  settings.run.jitter = jitter;
  settings.run.priority = priority == "depth" ? PriorityOrder::depth : PriorityOrder::name;
  settings.run.shell = shell_command(shell);
  settings.run.verbosity = quiet     ? RunSettings::Verbosity::quiet
                           : verbose ? RunSettings::Verbosity::verbose
                                     : RunSettings::Verbosity::normal;
  settings.run.group = group;
  settings.run.tty = tty;
  settings.color = color;
  (void)parse_halt(halt, settings.run.halt);  // checked above
  if (settings.run.halt.when != RunSettings::Halt::When::never &&
      settings.run.skip_on_error == tasktree::SkipOnError::fail) {
    parsed.settings.reset();
    parsed.exit_code = 2;
    parsed.err =
        "--halt and --skip-on-error fail both say when to stop: give one (--skip-on-error fail is "
        "--halt now)\nRun with --help for more information.\n";
    return parsed;
  }
  settings.run.log_dir = log_dir;
  settings.run.journal = journal;
  settings.run.resume = resume;
  settings.json_file = json_file;
  settings.trace_file = trace_file;
  settings.report_file = report_file;
  settings.run.record_attempts = !trace_file.empty() || !report_file.empty();
  return parsed;
}

}  // namespace tasktree_run
