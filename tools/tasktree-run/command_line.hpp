#pragma once
// The command line of tasktree-run, parsed (by CLI11) into plain settings: what to do, where the
// jobs come from, and how to run them. Parsing reads no file and prints nothing, so that it can be
// tested in process; execute.hpp does the rest.

#include "run.hpp"

#include <optional>
#include <string>
#include <vector>

namespace tasktree_run {

/// What the runner does with the jobs.
enum class Action {
  run,      ///< run them
  dry_run,  ///< `--dry-run`: print the dependency tree and the one-worker order
  dot,      ///< `--dot`: print the tree as a Graphviz digraph
  status    ///< `--status`: print what the `--journal` says about each job
};

/// Everything the command line says, before any jobs are read.
struct CliSettings {
  Action action = Action::run;
  /// `--demo`: the embedded demo plan (examples/demo.jobs) instead of a jobs file.
  bool demo = false;
  /// The jobs file; `-`: standard input, also when none is given. Empty with `demo`.
  std::string jobs_file;
  /// Whether the command line names the jobs file (`-` included): with none, a terminal on
  /// standard input is a usage error rather than where the jobs are typed.
  bool jobs_file_given = false;
  /// Job paths after the jobs file: run only their subtrees (and what they wait for, unless
  /// `no_prerequisites`). Empty: every job.
  std::vector<std::string> targets;
  /// `--no-ancestors`: the targets' subtrees alone.
  bool no_prerequisites = false;
  /// How to run: every setting but `jobs`, which stays empty until the jobs are read. With `demo`,
  /// `retries` is 2 and `workers` 4 unless given.
  RunSettings run;
  /// `--kill-after` in seconds as given, for messages (`run.kill_after` is the same duration).
  double kill_after_seconds = 5;
  /// `--json`: the report file; empty: no report.
  std::string json_file;
  /// `--color`: `auto`, `always` or `never`; `execute` decides `run.color` from it.
  std::string color = "auto";
  /// `--report`: the HTML report file; empty: none.
  std::string report_file;
  /// `--trace`: the timeline file (Chrome trace-event format); empty: none.
  std::string trace_file;
};

/// The outcome of parsing a command line: settings to act on, or text to print and an exit code.
struct ParsedCommandLine {
  /// Set if the command line asks for a run (or `--dry-run`, `--dot`).
  std::optional<CliSettings> settings;
  /// Without settings: 0 after `--help` or `--version`, 2 for a usage error.
  int exit_code = 0;
  /// For standard output: the help text or the version.
  std::string out;
  /// For standard error: what is wrong with the command line, naming the option and its bad
  /// value, and a pointer to `--help`.
  std::string err;
};

/// What `--shell SHELL` runs a command with: `SHELL -c`, and for bash, zsh and ksh
/// `SHELL -o pipefail -c`, so that a pipeline fails when any of its commands does.
[[nodiscard]] std::vector<std::string> shell_command(const std::string& shell);

/// Parses the arguments after the program name. Pure: reads no file, prints nothing.
[[nodiscard]] ParsedCommandLine parse_command_line(const std::vector<std::string>& args);

}  // namespace tasktree_run
