#pragma once
// Where output goes: the console (job output lines prefixed with the job path, log lines, and on a
// terminal one live status line), per-job log files for --log-dir, and the live progress counts.

#include "process.hpp"

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

namespace tasktree_run {

/// The runner's standard output and error, shared by all threads. Every write is of whole lines,
/// under one mutex, so lines of different jobs never mix. With `live`, the last line of the
/// terminal (standard error) is a status line that other lines are printed above.
class Console {
 public:
  Console(std::FILE* out, std::FILE* err, bool live) : out_(out), err_(err), live_(live) {}

  /// True if a live status line is shown.
  [[nodiscard]] bool live() const noexcept { return live_; }
  /// Prints whole lines (each ending in a newline, already prefixed) to standard output or error,
  /// in one write.
  void job_lines(Stream stream, std::string_view lines);
  /// Prints a line to standard error.
  void message(std::string_view line);
  /// The colors of log lines.
  enum class Color { none, red, green, yellow };
  /// `text` in `color` if colors are on (`set_color`), else as it is.
  [[nodiscard]] std::string paint(std::string_view text, Color color) const;
  /// Turns colors on or off (off by default).
  void set_color(bool on) noexcept { color_ = on; }
  /// Replaces the status line (live mode only), cut to the terminal's width.
  void status(std::string_view line);
  /// Removes the status line for good (live mode only).
  void clear_status();

 private:
  void write_line(std::FILE* stream, std::string_view text);
  void write_block(std::FILE* stream, std::string_view text);
  void draw_status();

  std::mutex mutex_;
  std::FILE* out_;
  std::FILE* err_;
  bool live_;
  bool color_ = false;
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
/// own thread ten times a second when something changed, and at least every second for the clock
/// (live mode only; otherwise it does nothing). The thread is joined by `stop()` or the destructor.
class StatusLine {
 public:
  StatusLine(Console& console, const ProgressCounts& counts, Clock::time_point start);
  StatusLine(const StatusLine&) = delete;
  StatusLine& operator=(const StatusLine&) = delete;
  ~StatusLine() { stop(); }
  /// Notes that the counts changed: the next tick redraws.
  void update() noexcept { changed_.store(true, std::memory_order_relaxed); }
  /// Stops redrawing and clears the line.
  void stop();

 private:
  void draw();

  Console& console_;
  const ProgressCounts& counts_;
  Clock::time_point start_;
  std::atomic<bool> changed_{true};
  std::jthread ticker_;
};

/// Seconds since `start`, as `12.3s`, for log lines and reports.
[[nodiscard]] std::string seconds_since(Clock::time_point start, Clock::time_point now = Clock::now());

/// The output of one job: to the console, each line prefixed with `[path]`, or to the job's log
/// files, byte for byte; the last lines of standard error of the latest attempt are kept for the
/// summary. Output is buffered and written in large blocks: when 64 KiB have gathered, when the job
/// falls quiet (`idle`), and at the end of the attempt.
class JobOutput final : public OutputSink {
 public:
  /// Lines kept from standard error.
  static constexpr std::size_t tail_lines = 5;

  /// What the console gets of a job's output.
  enum class Console_mode {
    lines,    ///< line by line, in blocks as the job writes them
    grouped,  ///< all of an attempt at its end (`--group`), in pieces of 16 MiB for a huge output
    hidden    ///< nothing (`--quiet`); the last lines of standard error are still kept
  };
  /// What would go to the console, kept for another process to print (rank 0 of an MPI run): each
  /// stream's prefixed lines, up to `limit` bytes each; `cut` counts the bytes left out beyond it.
  struct Captured {
    static constexpr std::size_t limit = 16 * 1024 * 1024;
    std::string out;
    std::string err;
    std::uint64_t cut = 0;
  };
  /// To the console (or to `captured`, if not null), or, with a non-empty `log_dir`, to
  /// `<log_dir>/<path>.out` and `.err` (created, with their directories, on the first attempt; later
  /// attempts append). Console lines are prefixed `[path]`, or `[host:path]` with a `host`.
  JobOutput(Console& console, std::string_view path, const std::filesystem::path& log_dir,
            Console_mode mode = Console_mode::lines, Captured* captured = nullptr, std::string_view host = {});
  JobOutput(const JobOutput&) = delete;
  JobOutput& operator=(const JobOutput&) = delete;
  ~JobOutput() override;

  /// Starts attempt `attempt` (1-based): clears the kept lines, opens the log files (throwing
  /// `std::runtime_error` that names the file and the reason if one cannot be created), and on a
  /// retry marks the attempt in them.
  void begin_attempt(int attempt);
  void piece(Stream stream, std::string_view bytes, bool ends_line) override;
  void idle() override;
  /// Writes out what is buffered. Returns why a log file could not be written during the attempt
  /// (naming the file and the reason), or "" if all went well.
  [[nodiscard]] std::string end_attempt();
  /// The last lines of standard error of the latest attempt.
  [[nodiscard]] const std::deque<std::string>& stderr_tail() const noexcept { return tail_; }

 private:
  static constexpr std::size_t block = 64 * 1024;
  struct Target {
    std::filesystem::path path;  // empty: the console
    int fd = -1;
    std::string buffer;
    bool ends_with_newline = true;  // of what has gone into the file
  };
  void write_out(Stream stream);

  static constexpr std::size_t group_limit = 16 * 1024 * 1024;
  Console& console_;
  std::string prefix_;  // "[path] " or "[host:path] "
  Console_mode mode_;
  Captured* captured_;
  Target out_;
  Target err_;
  std::deque<std::string> tail_;
  std::string write_error_;  // the first failure of the attempt
};

}  // namespace tasktree_run
