#pragma once
// One run of a jobs file: the settings from the command line, what happened to each job, and the
// function that runs them on tasktree's fault-tolerant policy layer.

#include "jobs_file.hpp"
#include "output.hpp"
#include "process.hpp"

#include <tasktree/policy.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

namespace tasktree_run {

/// Which ready job starts first (`--priority`).
enum class PriorityOrder {
  name,  ///< by job path
  depth  ///< fewest components first (breadth first), then by path
};

/// Everything a run is configured with.
struct RunSettings {
  std::vector<JobSpec> jobs;
  int workers = 1;
  /// `--skip-on-error`: `fail` stops the run (no new jobs, running jobs get SIGTERM); `dataset`
  /// carries on, also below the failed job; `tree` carries on except below it.
  tasktree::SkipOnError skip_on_error = tasktree::SkipOnError::tree;
  int retries = 0;
  std::chrono::nanoseconds retry_backoff = std::chrono::milliseconds(200);
  std::optional<std::chrono::nanoseconds> timeout;
  std::chrono::nanoseconds kill_after = std::chrono::seconds(5);
  std::chrono::nanoseconds work_period{0};
  bool jitter = false;
  PriorityOrder priority = PriorityOrder::name;
  /// `--shell`: the shell and its arguments before a command (`bash -o pipefail -c`); empty:
  /// `/bin/sh -c`. Commands without shell syntax run directly either way.
  std::vector<std::string> shell;
  std::filesystem::path log_dir;  // empty: output to the console, prefixed
  /// `--journal`: record each finished job (keyed by its command) here; empty: no journal.
  std::filesystem::path journal;
  /// `--resume`: with a journal, do not run again what it shows succeeded with the same command.
  bool resume = false;
  /// `--quiet`: no start and end lines and no job output on the console (failures, skips and the
  /// summary still); `--verbose`: start and end lines also on a terminal, with the command.
  enum class Verbosity { quiet, normal, verbose } verbosity = Verbosity::normal;
  /// `--group`: each attempt's console output in one piece when it ends, not line by line.
  bool group = false;
  /// `--color`: color the log lines (red failures, green successes, yellow retries and skips).
  bool color = false;
  /// Start each job in a session of its own (no controlling terminal): when the runner has a
  /// terminal, so that a job's password prompt fails instead of stopping it. `execute` decides.
  bool new_session = false;
  /// `--tty`: jobs get the runner's terminal as standard input and are its foreground process group
  /// while they run (one at a time); a job ended by SIGINT or SIGQUIT (Ctrl-C, Ctrl-\ at the
  /// terminal, which reach the foreground job and not the runner) stops the run as if the runner
  /// had been sent it.
  bool tty = false;
  /// With `tty`: the terminal, open for the run (`execute` opens it); -1 otherwise.
  int terminal = -1;
  /// With `tty`: called with SIGINT or SIGQUIT when a job dies of it (the terminal's Ctrl-C or
  /// Ctrl-\ reached the job); stops the run as that signal sent to the runner does. Before the
  /// attempt returns, so the run ends interrupted.
  std::function<void(int signal)> interrupted{};
  /// `--trace`: keep every attempt in `RunReport::attempts`.
  bool record_attempts = false;
  /// `--mpi`: this process is one rank of an MPI job (`mpi::process_datasets_in_parallel_and_fault_tolerant`);
  /// rank 0 schedules and reports, every rank may run jobs. `workers` then counts jobs over all ranks.
  bool mpi = false;
  /// With `mpi`: whether `workers` was given (or set by `--demo`); if not, one job per worker rank.
  bool workers_given = false;
  /// `--tag-host`: with `mpi`, output lines are prefixed `[host:path]`.
  bool tag_host = false;
  /// `--place-by-first-component`: with `mpi`, each job runs on a rank of the host its first path
  /// component names (`mpi::place_by_first_component`).
  bool place_by_first_component = false;
  /// `--heartbeat-timeout`: with `mpi`, rank 0 declares a rank lost after this long without a word.
  std::chrono::nanoseconds heartbeat_timeout = std::chrono::seconds(30);
  /// `--queue-ahead`: with `mpi`, the jobs sent ahead to each job slot of a rank
  /// (`mpi::FaultTolerantOptions::queue_ahead`).
  int queue_ahead = 0;
  /// With `mpi`: this rank's host name (`execute` sets it).
  std::string host;
  /// `--halt`: stop the run once this many jobs have failed (after their retries); 0: never.
  struct Halt {
    enum class When { never, soon, now } when = When::never;  ///< soon: no new jobs; now: also stop the running ones
    std::size_t failures = 1;                                 ///< with `percent`: a percentage of the jobs
    bool percent = false;
    std::string text;  ///< as given, for messages
    /// The failures that halt a run of `job_count` jobs.
    [[nodiscard]] std::size_t threshold(std::size_t job_count) const noexcept {
      if (!percent) return failures;
      return std::max<std::size_t>(1, (failures * job_count + 99) / 100);
    }
  } halt;
};

/// What finally happened to a job.
enum class JobStatus {
  not_run,    ///< never started: the run stopped first
  succeeded,  ///< exited 0 (possibly after retries)
  failed,     ///< failed on its last attempt
  skipped,    ///< never started because a job it depends on failed
  stopped,    ///< was running when the run stopped, and was terminated
  resumed     ///< not run: the journal shows it succeeded before, with the same command (`--resume`)
};

[[nodiscard]] std::string_view to_string(JobStatus status) noexcept;

/// What happened to one job (indexes match `RunSettings::jobs`).
struct JobRecord {
  JobStatus status = JobStatus::not_run;
  int attempts = 0;
  std::int64_t submit_count = 0;
  Clock::time_point started{};   // first attempt
  Clock::time_point finished{};  // last attempt
  ProcessResult last{};          // of the last attempt
  std::deque<std::string> stderr_tail;
  std::string skipped_below;  // for skipped jobs: the failed job (or barrier) that kept it from running
  std::string host;           // `--mpi`: the host of the last attempt
};

/// One attempt of a job, for `--trace`.
struct AttemptRecord {
  std::size_t job = 0;  ///< index into `RunSettings::jobs`
  int attempt = 1;
  int slot = 0;  ///< which of the `workers` slots ran it (0-based): a track of the timeline
  Clock::time_point start{};
  Clock::time_point end{};
  ProcessResult result{};
  bool retried = false;  ///< a failure that was retried
  std::string host{};    ///< `--mpi`: the host that ran it
};

/// What happened in a run.
struct RunReport {
  std::vector<JobRecord> jobs;
  /// Every attempt, in the order they ended; only with `RunSettings::record_attempts`.
  std::vector<AttemptRecord> attempts;
  Clock::time_point started{};
  Clock::time_point finished{};
  std::size_t retries = 0;
  /// True if failures stopped the run (`--skip-on-error fail`, or `--halt`).
  bool stopped_by_failure = false;
  /// The signal that stopped the run, or 0.
  int signal = 0;

  [[nodiscard]] std::size_t count(JobStatus status) const noexcept;
  /// 0 all succeeded; 1 some job failed or did not run because of a failure; 128 + signal if
  /// interrupted.
  [[nodiscard]] int exit_code() const noexcept;
};

/// Runs the jobs; returns when every job has ended and every process is gone. `stop` is the
/// interruption (a signal); `groups` must be the registry the signal watcher stops.
[[nodiscard]] RunReport run_jobs(const RunSettings& settings, ProcessGroups& groups, Console& console,
                                 std::stop_token stop, std::shared_ptr<tasktree::Journal> journal = {});

/// Opens `settings.journal` (null if empty), keyed by each job's command, resuming if
/// `settings.resume`. Throws `std::runtime_error` naming the path if it cannot be used.
[[nodiscard]] std::shared_ptr<tasktree::Journal> open_journal(const RunSettings& settings);

/// The order in which the jobs would start with one worker if every job succeeded.
[[nodiscard]] std::vector<std::size_t> dry_run_order(const RunSettings& settings);

}  // namespace tasktree_run
