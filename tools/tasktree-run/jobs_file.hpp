#pragma once
// The jobs file: one job per line, `<job-path> <command>`, with `#` comments and blank lines.

#include <filesystem>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace tasktree_run {

/// One line of a jobs file.
struct JobSpec {
  /// The job's path, e.g. `host1/snapshot/replicate`.
  std::string path;
  /// The command, run with `/bin/sh -c`.
  std::string command;
  /// 1-based line number in the jobs file.
  int line = 0;
};

/// A jobs file that cannot run: the message is `<source>:<line>: <what is wrong>`.
class JobsFileError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

/// Parses the text of a jobs file named `source` (for messages) into jobs, in file order.
///
/// A line is `<job-path> <command>`: the path is the first run of non-blank characters, the command
/// the rest of the line with surrounding blanks removed. Lines whose first non-blank character is
/// `#`, and blank lines, are skipped. A `#` later in a line belongs to the command (the shell sees
/// it). A UTF-8 byte-order mark at the start of the text is skipped. Throws `JobsFileError` for the
/// first bad line: an invalid path (empty component, leading or trailing `/`, a `.` or `..`
/// component, a control character), a path whose last component is `barrier_name` (it could never
/// run), a duplicate path (naming the line of the first one), a path without a command, a command
/// with a NUL byte or longer than the system allows for one argument (128 KiB), or a file without
/// any job.
[[nodiscard]] std::vector<JobSpec> parse_jobs_file(std::string_view text, std::string_view source,
                                                   std::string_view barrier_name = "~");

/// With `--log-dir DIR`: throws `JobsFileError` (`<source>:<line>: ...`) for the first job whose
/// log files `DIR/<path>.out` and `.err` could never be created: a component or file name longer
/// than 255 bytes, a path longer than 4095, or a log file that another job needs as a directory
/// (jobs `a` and `a.out/b`).
void check_log_paths(const std::vector<JobSpec>& jobs, std::string_view source, const std::filesystem::path& log_dir);

/// The jobs to run for `targets` (job paths, or paths with jobs below them), in file order, as make
/// runs the targets it is given: each target's subtree and, `with_prerequisites`, what it waits for:
/// the jobs above it on its path and, for each barrier on its path, the jobs beside the barrier
/// with their subtrees (`host/snapshot/~/prune` brings `host`, `host/snapshot` and the replications
/// below `host/snapshot`). No targets: all jobs. Throws `JobsFileError` (`<source>: ...`) for a
/// target with no job at or below it.
[[nodiscard]] std::vector<JobSpec> select_targets(std::vector<JobSpec> jobs, const std::vector<std::string>& targets,
                                                  bool with_prerequisites, std::string_view source,
                                                  std::string_view barrier_name = "~");

/// Reads a whole file (or standard input for `-`); throws `std::runtime_error` naming the file and
/// the reason if it cannot be read (an empty name and a directory included).
[[nodiscard]] std::string read_jobs_file(const std::string& path);

}  // namespace tasktree_run
