#include "execute.hpp"

#include "demo_jobs.hpp"
#include "output.hpp"
#include "process.hpp"
#include "report.hpp"
#include "run.hpp"
#include "signals.hpp"

#include <fmt/format.h>

#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <stop_token>
#include <string_view>

namespace tasktree_run {
namespace {

/// True if standard error shows a live status line: a terminal that understands escapes.
bool live_terminal() {
  const char* term = std::getenv("TERM");
  return ::isatty(STDERR_FILENO) == 1 && term != nullptr && std::string_view(term) != "dumb";
}

}  // namespace

std::vector<JobSpec> load_jobs(const CliSettings& settings) {
  if (settings.demo) return parse_jobs_file(demo_jobs(), "demo.jobs");
  if (settings.jobs_file.empty() || settings.jobs_file == "-") return parse_jobs_file(read_jobs_file("-"), "<stdin>");
  return parse_jobs_file(read_jobs_file(settings.jobs_file), settings.jobs_file);
}

int execute(const CliSettings& cli) {
  RunSettings settings = cli.run;
  try {
    if (!cli.demo && (cli.jobs_file.empty() || cli.jobs_file == "-") && ::isatty(STDIN_FILENO) == 1) {
      fmt::print(stderr,
                 "tasktree-run: no jobs file given, and standard input is a terminal\n"
                 "Run with --help for more information, or try --demo.\n");
      return 2;
    }
    settings.jobs = load_jobs(cli);
  } catch (const std::exception& error) {
    fmt::print(stderr, "tasktree-run: {}\n", error.what());
    return 2;
  }

  if (cli.action == Action::dry_run) {
    fmt::print("{}", format_dry_run(settings));
    return 0;
  }
  if (cli.action == Action::dot) {
    fmt::print("{}", format_dot(settings));
    return 0;
  }

  // Open the report file now: a typo in its path should not cost a whole run.
  std::ofstream json;
  if (!cli.json_file.empty()) {
    json.open(cli.json_file, std::ios::binary | std::ios::trunc);
    if (!json) {
      fmt::print(stderr, "tasktree-run: cannot write the --json file {:?}\n", cli.json_file);
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
          // Stop first: the message takes the console lock, and a console nobody reads (stdout a
          // full pipe) would hold it, and the stop, forever.
          stop.request_stop();
          groups.stop();
          console.message(fmt::format(
              "tasktree-run: {}: starting no new jobs; running jobs get SIGTERM (SIGKILL {}s later{})",
              signal_name(signal), cli.kill_after_seconds, signal == SIGINT ? ", or at once on a second Ctrl-C" : ""));
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
      fmt::print(stderr, "tasktree-run: cannot write the --json file {:?}\n", cli.json_file);
      return 2;
    }
  }
  return report.exit_code();
}

}  // namespace tasktree_run
