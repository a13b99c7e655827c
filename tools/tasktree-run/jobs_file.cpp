#include "jobs_file.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>
#include <stdexcept>
#include <unordered_map>

namespace tasktree_run {
namespace {

constexpr std::string_view blanks = " \t\r\v\f";

/// The longest command `/bin/sh -c` can be given: Linux's limit on one argument (MAX_ARG_STRLEN,
/// 32 pages), less its terminating NUL.
constexpr std::size_t max_command_bytes = 32 * 4096 - 1;

constexpr bool is_control(char byte) {
  const auto code = static_cast<unsigned char>(byte);
  return code < 0x20 || code == 0x7f;
}

[[noreturn]] void reject(std::string_view source, int line, std::string_view message) {
  throw JobsFileError(fmt::format("{}:{}: {}", source, line, message));
}

/// Why `path` is not a valid job path, or empty if it is.
std::string path_problem(std::string_view path, std::string_view barrier_name) {
  if (const auto control = std::find_if(path.begin(), path.end(), is_control); control != path.end()) {
    return fmt::format("it contains the control character 0x{:02x} at byte {}", static_cast<unsigned char>(*control),
                       control - path.begin() + 1);
  }
  if (path.front() == '/') return "it starts with '/'";
  if (path.back() == '/') return "it ends with '/'";
  std::size_t start = 0;
  while (true) {
    const std::size_t slash = path.find('/', start);
    const std::string_view component =
        path.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
    if (component.empty()) return "it has an empty component ('//')";
    if (component == "." || component == "..") {
      return fmt::format("it has a {:?} component (job paths name jobs, not files)", component);
    }
    if (slash == std::string_view::npos) {
      if (component == barrier_name) {
        return fmt::format(
            "its last component is the barrier {:?}, so it could never run (a barrier waits for the "
            "jobs beside it; put jobs below it, e.g. {}/prune)",
            barrier_name, path);
      }
      return {};
    }
    start = slash + 1;
  }
}

}  // namespace

std::vector<JobSpec> parse_jobs_file(std::string_view text, std::string_view source, std::string_view barrier_name) {
  std::vector<JobSpec> jobs;
  std::unordered_map<std::string_view, int> first_line;  // views into `text`
  int number = 0;
  std::size_t at = 0;
  // A byte-order mark is no part of the first job's path (editors on Windows write one).
  if (text.starts_with("\xef\xbb\xbf")) at = 3;
  while (at < text.size()) {
    ++number;
    const std::size_t end = std::min(text.find('\n', at), text.size());
    std::string_view line = text.substr(at, end - at);
    at = end + 1;

    const std::size_t first = line.find_first_not_of(blanks);
    if (first == std::string_view::npos || line[first] == '#') continue;
    line = line.substr(first, line.find_last_not_of(blanks) - first + 1);
    const std::size_t path_end = std::min(line.find_first_of(blanks), line.size());
    const std::string_view path = line.substr(0, path_end);
    const std::size_t command_start = line.find_first_not_of(blanks, path_end);
    const std::string_view command = command_start == std::string_view::npos ? "" : line.substr(command_start);

    if (const std::string problem = path_problem(path, barrier_name); !problem.empty()) {
      reject(source, number, fmt::format("invalid job path {:?}: {}", path, problem));
    }
    if (command.empty()) reject(source, number, fmt::format("job {:?} has no command", path));
    if (const std::size_t nul = command.find('\0'); nul != std::string_view::npos) {
      reject(source, number,
             fmt::format("the command of job {:?} contains a NUL byte (at byte {}), which no command can hold", path,
                         nul + 1));
    }
    if (command.size() > max_command_bytes) {
      reject(source, number,
             fmt::format("the command of job {:?} is {} bytes long; the system allows at most {} for one command "
                         "(put it in a script)",
                         path, command.size(), max_command_bytes));
    }
    if (const auto [it, inserted] = first_line.emplace(path, number); !inserted) {
      reject(source, number, fmt::format("duplicate job path {:?} (first on line {})", path, it->second));
    }
    jobs.push_back(JobSpec{std::string(path), std::string(command), number});
  }
  if (jobs.empty()) throw JobsFileError(fmt::format("{}: no jobs (each line is \"<job-path> <command>\")", source));
  return jobs;
}

void check_log_paths(const std::vector<JobSpec>& jobs, std::string_view source, const std::filesystem::path& log_dir) {
  constexpr std::size_t name_max = 255;   // NAME_MAX of Linux file systems
  constexpr std::size_t path_max = 4095;  // PATH_MAX less the terminating NUL
  // Every directory a job's log files go into, relative to log_dir, with the first job that needs it.
  std::unordered_map<std::string_view, const JobSpec*> directories;
  for (const JobSpec& job : jobs) {
    const std::string_view path = job.path;
    for (std::size_t slash = path.find('/'); slash != std::string_view::npos; slash = path.find('/', slash + 1)) {
      directories.emplace(path.substr(0, slash), &job);
    }
  }
  for (const JobSpec& job : jobs) {
    const std::string_view path = job.path;
    std::size_t start = 0;
    for (std::size_t slash = path.find('/'); slash != std::string_view::npos; slash = path.find('/', start)) {
      if (slash - start > name_max) {
        reject(source, job.line,
               fmt::format("job {:?} cannot have log files in --log-dir: its component {:?} is {} bytes, more than "
                           "the {} a directory name may have",
                           path, path.substr(start, slash - start), slash - start, name_max));
      }
      start = slash + 1;
    }
    if (path.size() - start + 4 > name_max) {
      reject(source, job.line,
             fmt::format("job {:?} cannot have log files in --log-dir: \"{}.out\" is {} bytes, more than the {} a "
                         "file name may have",
                         path, path.substr(start), path.size() - start + 4, name_max));
    }
    if (const std::size_t length = (log_dir / std::string(path)).native().size() + 4; length > path_max) {
      reject(source, job.line,
             fmt::format("job {:?} cannot have log files in --log-dir: their path is {} bytes, more than the {} a "
                         "path may have",
                         path, length, path_max));
    }
    for (const std::string_view suffix : {".out", ".err"}) {
      const std::string file = fmt::format("{}{}", path, suffix);
      if (const auto it = directories.find(file); it != directories.end()) {
        const JobSpec& other = *it->second;
        reject(source, other.line,
               fmt::format("job {:?} needs the directory {:?} in --log-dir, which is the log file of job {:?} "
                           "(line {})",
                           other.path, file, path, job.line));
      }
    }
  }
}

std::vector<JobSpec> select_targets(std::vector<JobSpec> jobs, const std::vector<std::string>& targets,
                                    bool with_prerequisites, std::string_view source, std::string_view barrier_name) {
  if (targets.empty()) return jobs;
  const auto below = [](std::string_view path, std::string_view top) {
    return path.size() > top.size() && path.starts_with(top) && path[top.size()] == '/';
  };
  std::vector<bool> selected(jobs.size(), false);
  const auto select = [&](auto&& wanted) {
    for (std::size_t i = 0; i < jobs.size(); ++i) {
      if (!selected[i] && wanted(std::string_view(jobs[i].path))) selected[i] = true;
    }
  };
  for (const std::string& target : targets) {
    const std::string_view top = target;
    if (std::none_of(jobs.begin(), jobs.end(),
                     [&](const JobSpec& job) { return job.path == top || below(job.path, top); })) {
      throw JobsFileError(fmt::format("{}: no job {:?} and none below it, so there is nothing to run", source, top));
    }
    select([&](std::string_view path) { return path == top || below(path, top); });
    if (!with_prerequisites) continue;
    // What the target waits for: the jobs above it on its path and, for each barrier on the path,
    // the jobs beside the barrier (everything else below the barrier's parent), with their subtrees.
    for (std::size_t slash = top.find('/'); slash != std::string_view::npos; slash = top.find('/', slash + 1)) {
      const std::string_view parent = top.substr(0, slash);
      select([&](std::string_view path) { return path == parent; });
      const std::size_t next = top.find('/', slash + 1);
      const std::string_view component =
          top.substr(slash + 1, next == std::string_view::npos ? std::string_view::npos : next - slash - 1);
      if (component == barrier_name) {
        const std::string_view barrier = top.substr(0, next == std::string_view::npos ? top.size() : next);
        select([&](std::string_view path) { return below(path, parent) && path != barrier && !below(path, barrier); });
      }
    }
  }
  std::vector<JobSpec> kept;
  for (std::size_t i = 0; i < jobs.size(); ++i) {
    if (selected[i]) kept.push_back(std::move(jobs[i]));
  }
  return kept;
}

std::string read_jobs_file(const std::string& path) {
  if (path == "-") {
    std::ostringstream all;
    all << std::cin.rdbuf();
    if (std::cin.bad()) throw std::runtime_error("cannot read the jobs from standard input");
    return std::move(all).str();
  }
  if (path.empty()) throw std::runtime_error("the jobs file name is empty (use '-' for standard input)");
  std::error_code error;
  if (std::filesystem::is_directory(path, error)) {
    throw std::runtime_error(fmt::format("cannot read jobs file {:?}: it is a directory", path));
  }
  std::ifstream file(path, std::ios::binary);
  if (!file) throw std::runtime_error(fmt::format("cannot open jobs file {:?}: {}", path, std::strerror(errno)));
  std::string text((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  if (file.bad()) throw std::runtime_error(fmt::format("cannot read jobs file {:?}", path));
  return text;
}

}  // namespace tasktree_run
