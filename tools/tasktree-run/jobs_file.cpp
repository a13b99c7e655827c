#include "jobs_file.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>
#include <stdexcept>
#include <unordered_map>

namespace tasktree_run {
namespace {

constexpr std::string_view blanks = " \t\r\v\f";

[[noreturn]] void reject(std::string_view source, int line, std::string_view message) {
  throw JobsFileError(fmt::format("{}:{}: {}", source, line, message));
}

/// Why `path` is not a valid job path, or empty if it is.
std::string path_problem(std::string_view path, std::string_view barrier_name) {
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
    if (const auto [it, inserted] = first_line.emplace(path, number); !inserted) {
      reject(source, number, fmt::format("duplicate job path {:?} (first on line {})", path, it->second));
    }
    jobs.push_back(JobSpec{std::string(path), std::string(command), number});
  }
  if (jobs.empty()) throw JobsFileError(fmt::format("{}: no jobs (each line is \"<job-path> <command>\")", source));
  return jobs;
}

std::string read_jobs_file(const std::string& path) {
  if (path == "-") {
    std::ostringstream all;
    all << std::cin.rdbuf();
    if (std::cin.bad()) throw std::runtime_error("cannot read the jobs from standard input");
    return std::move(all).str();
  }
  std::ifstream file(path, std::ios::binary);
  if (!file) throw std::runtime_error(fmt::format("cannot open jobs file {:?}: {}", path, std::strerror(errno)));
  std::string text((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  if (file.bad()) throw std::runtime_error(fmt::format("cannot read jobs file {:?}", path));
  return text;
}

}  // namespace tasktree_run
