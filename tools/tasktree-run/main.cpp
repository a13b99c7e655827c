// tasktree-run: runs a jobs file of shell commands named by slash-separated paths, parents before
// children, barriers, in parallel, with retries, timeouts and a report. docs/tasktree-run.md is
// its manual. Everything but main() is in the tasktree_run_core library: command_line.hpp parses
// the arguments, execute.hpp acts on them.

#include "command_line.hpp"
#include "execute.hpp"

#include <fmt/format.h>

#include <cstdio>
#include <exception>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  try {
    const std::vector<std::string> args(argv + (argc > 0 ? 1 : 0), argv + argc);
    const tasktree_run::ParsedCommandLine parsed = tasktree_run::parse_command_line(args);
    std::fputs(parsed.out.c_str(), stdout);
    std::fputs(parsed.err.c_str(), stderr);
    if (!parsed.settings) return parsed.exit_code;
    return tasktree_run::execute(*parsed.settings);
  } catch (const std::exception& error) {
    std::fflush(stdout);
    fmt::print(stderr, "tasktree-run: error: {}\n", error.what());
    return 2;
  }
}
