#pragma once
// Where output goes: the console (job output lines prefixed with the job path, log lines, and on a
// terminal one live status line), per-job log files for --log-dir, and the live progress counts.

#include "process.hpp"

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

namespace tasktree_run {

/// The runner's standard output and error, shared by all threads. Every write is one whole line,
/// under one mutex, so lines of different jobs never mix. With `live`, the last line of the
/// terminal (standard error) is a status line that other lines are printed above.
class Console {
 public:
  Console(std::FILE* out, std::FILE* err, bool live) : out_(out), err_(err), live_(live) {}

  /// True if a live status line is shown.
  [[nodiscard]] bool live() const noexcept { return live_; }
  /// Prints `[path] line` to standard output or error.
  void job_line(Stream stream, std::string_view path, std::string_view line);
  /// Prints a line to standard error.
  void message(std::string_view line);
  /// Replaces the status line (live mode only).
  void status(std::string_view line);
  /// Removes the status line for good (live mode only).
  void clear_status();

 private:
  void write_line(std::FILE* stream, std::string_view text);

  std::mutex mutex_;
  std::FILE* out_;
  std::FILE* err_;
  bool live_;
  std::string status_;
};

/// Counts of the run so far, for the status line; updated from any thread.
struct ProgressCounts {
  std::size_t total = 0;
  std::atomic<std::size_t> running{0};
  std::atomic<std::size_t> succeeded{0};
  std::atomic<std::size_t> failed{0};
  std::atomic<std::size_t> skipped{0};
};

/// The live status line: `done / running / failed / skipped / total, elapsed, ETA`, redrawn by its
/// own thread a few times a second (live mode only; otherwise it does nothing). The thread is
/// joined by `stop()` or the destructor.
class StatusLine {
 public:
  StatusLine(Console& console, const ProgressCounts& counts, Clock::time_point start);
  StatusLine(const StatusLine&) = delete;
  StatusLine& operator=(const StatusLine&) = delete;
  ~StatusLine() { stop(); }
  /// Redraws now (after an event).
  void update();
  /// Stops redrawing and clears the line.
  void stop();

 private:
  Console& console_;
  const ProgressCounts& counts_;
  Clock::time_point start_;
  std::jthread ticker_;
};

/// Seconds since `start`, as `12.3s`, for log lines and reports.
[[nodiscard]] std::string seconds_since(Clock::time_point start, Clock::time_point now = Clock::now());

/// The output of one job: each line goes to the console (prefixed) or to the job's log files, and
/// the last lines of standard error of the latest attempt are kept for the summary.
class JobOutput {
 public:
  /// Lines kept from standard error.
  static constexpr std::size_t tail_lines = 5;

  /// To the console, or, with a non-empty `log_dir`, to `<log_dir>/<path>.out` and `.err`
  /// (created, with their directories, on the first attempt; later attempts append).
  JobOutput(Console& console, std::string_view path, const std::filesystem::path& log_dir);

  /// Starts attempt `attempt` (1-based): clears the kept lines, marks the attempt in the files.
  void begin_attempt(int attempt);
  /// The sink for `run_process`.
  void line(Stream stream, std::string_view text);
  /// Throws `std::runtime_error` if writing a log file failed during the latest attempt.
  void check() const;
  /// The last lines of standard error of the latest attempt.
  [[nodiscard]] const std::deque<std::string>& stderr_tail() const noexcept { return tail_; }

 private:
  Console& console_;
  std::string_view path_;
  std::filesystem::path out_path_;  // empty: to the console
  std::filesystem::path err_path_;
  std::ofstream out_;
  std::ofstream err_;
  std::deque<std::string> tail_;
  bool write_failed_ = false;
};

}  // namespace tasktree_run
