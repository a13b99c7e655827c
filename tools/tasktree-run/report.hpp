#pragma once
// What the runner prints about a plan or a run: the summary at the end, the --json report, and for
// --dry-run and --dot the dependency tree.

#include "run.hpp"

#include <tasktree/journal.hpp>

#include <cstdio>
#include <string>
#include <vector>

namespace tasktree_run {

/// `duration` in seconds.
[[nodiscard]] double seconds(Clock::duration duration);
/// How long the job ran, from its first attempt's start to its last attempt's end (0 if it never ran).
[[nodiscard]] Clock::duration duration_of(const JobRecord& job);
/// The jobs that ran longest, longest first, at most `count` (indices into `report.jobs`).
[[nodiscard]] std::vector<std::size_t> slowest_jobs(const RunReport& report, std::size_t count);
/// How an attempt ended, as the reports name it (`exited`, `timed_out`, ...).
[[nodiscard]] std::string_view to_string(ProcessResult::End end);

/// The summary printed at the end of a run: counts, failed jobs with their exit codes and last
/// lines of standard error, jobs skipped because of a failure, the slowest jobs, and the verdict.
[[nodiscard]] std::string format_summary(const RunSettings& settings, const RunReport& report);

/// The machine-readable report of `--json`: settings, counts, and every job with its outcome.
/// Always valid JSON: bytes of paths, commands or standard error that are not UTF-8 become U+FFFD.
[[nodiscard]] std::string format_json(const RunSettings& settings, const RunReport& report);

/// `--dry-run`: the dependency tree, then the order in which the jobs would start with one worker
/// if every job succeeded.
[[nodiscard]] std::string format_dry_run(const RunSettings& settings, std::string_view barrier_name = "~");

/// `--dot`: the tree as a Graphviz digraph, with barriers drawn as octagons that the jobs beside
/// them feed into (dashed edges).
[[nodiscard]] std::string format_dot(const RunSettings& settings, std::string_view barrier_name = "~");

/// `--trace`: the run in the Chrome trace-event format (Perfetto, chrome://tracing): one track per
/// worker slot, one slice per attempt colored by its outcome (green succeeded, yellow failed and
/// retried, red failed, grey stopped) with its exit code and command, and each backoff between a
/// failure and its retry as an async slice. Needs `RunSettings::record_attempts`.
[[nodiscard]] std::string format_trace(const RunSettings& settings, const RunReport& report);

/// `--report FILE.html`: one self-contained page (inline CSS and SVG; no script, nothing fetched):
/// the verdict, the counts, a Gantt chart of the run (a row per worker slot, a bar per attempt
/// colored like `--trace`'s slices, each with a tooltip), the failed jobs with their command and
/// the tail of their standard error, the slowest jobs and the summary. Text is HTML-escaped, and
/// bytes that are not UTF-8 become U+FFFD. Needs `RunSettings::record_attempts`.
[[nodiscard]] std::string format_html_report(const RunSettings& settings, const RunReport& report);

/// What `--status` prints about a journal.
struct JournalStatus {
  /// A line per job and a last line with the counts.
  std::string text;
  /// 0 if every job of the plan succeeded (so `--resume` would run nothing), 1 otherwise.
  int exit_code = 0;
};

/// `--journal FILE --status`: what the journal says about each job of the plan (`jobs`), in
/// file order: `done` (succeeded with the same command), `FAILED` (with the reason and attempts),
/// `skipped` (below a failure), `changed` (succeeded with another command, so it runs again),
/// `not run`; then the journal's jobs that the plan does not have. Without a plan (`jobs` empty),
/// every job the journal records.
[[nodiscard]] JournalStatus format_journal_status(const tasktree::JournalContents& journal,
                                                  const std::vector<JobSpec>& jobs);

}  // namespace tasktree_run
