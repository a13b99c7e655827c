#pragma once
/// @file log.hpp
/// @brief The optional logging hook: a level and a sink; silent unless a sink is set.

#include <fmt/format.h>

#include <cstdio>
#include <functional>
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
/// The sink is called on the coordinator thread only (the thread that called
/// `process_datasets_in_parallel()`), so it need not be thread-safe on the library's account.
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

/// @brief A logger that prints `tasktree [level] message` lines to stderr, at `level` and above.
[[nodiscard]] inline Logger stderr_logger(LogLevel level = LogLevel::info) {
  return Logger{
      .sink = [](LogLevel at,
                 std::string_view message) { fmt::print(stderr, "tasktree [{}] {}\n", to_string(at), message); },
      .level = level,
  };
}

}  // namespace tasktree
