#pragma once
/// @file log.hpp
/// @brief The optional logging hook: a level and a sink; silent unless a sink is set.

#include <fmt/format.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <iterator>
#include <string_view>
#include <utility>

namespace tasktree {

/// @brief Severity of a log message, from most to least verbose.
enum class LogLevel { trace, debug, info, warning, error };

/// @brief Lower-case name of a level, e.g. `"debug"`.
[[nodiscard]] constexpr std::string_view to_string(LogLevel level) noexcept {
  switch (level) {
    case LogLevel::trace: return "trace";
    case LogLevel::debug: return "debug";
    case LogLevel::info: return "info";
    case LogLevel::warning: return "warning";
    case LogLevel::error: return "error";
  }
  return "unknown";
}

/// @brief Where the library's log messages go. Default-constructed, it is silent and costs
/// nothing: messages are only formatted when a sink is set and the level passes the threshold.
///
/// The sink is called by the coordinator only, one call at a time, so it need not be thread-safe on
/// the library's account; it may run on a worker thread (see `Options::callbacks_on_calling_thread`).
///
/// @code
/// tasktree::Logger log{
///     .sink = [](tasktree::LogLevel level, std::string_view message) {
///       fmt::print(stderr, "[{}] {}\n", tasktree::to_string(level), message);
///     },
///     .level = tasktree::LogLevel::debug,
/// };
/// @endcode
struct Logger {
  /// Receives each message that passes `level`; empty means silent.
  std::function<void(LogLevel, std::string_view)> sink;
  /// Messages below this level are dropped before they are formatted.
  LogLevel level = LogLevel::info;

  /// True if a message at `at` would reach the sink.
  [[nodiscard]] bool enabled(LogLevel at) const noexcept { return sink && at >= level; }

  /// Formats with fmt and passes the message to the sink, if `enabled(at)`.
  template <class... Args>
  void log(LogLevel at, fmt::format_string<Args...> format, Args&&... args) const {
    if (enabled(at)) sink(at, fmt::format(format, std::forward<Args>(args)...));
  }
};

/// @brief The library's own sink for stderr: each message becomes one `tasktree [level] message`
/// line, written with a single `fwrite`. It never throws: a line that cannot be written (stderr
/// closed, as under `2>&-`; a full disk; a pipe whose reader has gone, with `SIGPIPE` ignored) or
/// formatted (out of memory) is dropped and counted in `dropped_messages()`, and the run goes on.
/// Closed or full stderr is normal under cron, systemd and pipes; a sink of your own that throws
/// still ends the run, as any callback does.
class StderrSink {
 public:
  /// Writes the line, or counts it dropped.
  void operator()(LogLevel at, std::string_view message) const noexcept {
    try {
      fmt::memory_buffer line;
      fmt::format_to(std::back_inserter(line), "tasktree [{}] {}\n", to_string(at), message);
      if (std::fwrite(line.data(), 1, line.size(), stderr) != line.size()) {
        std::clearerr(stderr);  // so that a later write, once stderr works again, is not refused
        count_dropped();
      }
    } catch (...) {
      count_dropped();
    }
  }

  /// Lines that every `StderrSink` of this process failed to write, so far.
  [[nodiscard]] static std::uint64_t dropped_messages() noexcept { return dropped().load(std::memory_order_relaxed); }

 private:
  static std::atomic<std::uint64_t>& dropped() noexcept {
    static std::atomic<std::uint64_t> count{0};
    return count;
  }
  static void count_dropped() noexcept { dropped().fetch_add(1, std::memory_order_relaxed); }
};

/// @brief A logger that prints `tasktree [level] message` lines to stderr, at `level` and above,
/// through a `StderrSink` (which never throws).
[[nodiscard]] inline Logger stderr_logger(LogLevel level = LogLevel::info) {
  return Logger{.sink = StderrSink{}, .level = level};
}

}  // namespace tasktree
