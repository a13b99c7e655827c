#pragma once
// SIGINT and SIGTERM: received by one dedicated thread (through a signalfd), never by a handler,
// so that the reaction (stop the run, signal the jobs) is ordinary code.

#include <atomic>
#include <functional>
#include <thread>

namespace tasktree_run {

/// Blocks SIGINT and SIGTERM in the calling thread, and so in every thread it starts afterwards,
/// and ignores SIGPIPE. Call in `main` before any other thread exists. (Jobs get every signal back
/// to its default when they start.)
void block_stop_signals();

/// A thread that waits for SIGINT and SIGTERM while it exists.
///
/// The first of them calls `on_stop(signal)`; every later one calls `on_kill(signal)`. Both run on
/// the watcher's thread. The destructor stops and joins the thread; signals that arrive afterwards
/// stay blocked (pending) and are ignored.
class SignalWatcher {
 public:
  SignalWatcher(std::function<void(int signal)> on_stop, std::function<void(int signal)> on_kill);
  SignalWatcher(const SignalWatcher&) = delete;
  SignalWatcher& operator=(const SignalWatcher&) = delete;
  ~SignalWatcher();

  /// Handles `signal` as if it had been received, on the calling thread: with `--tty` the terminal
  /// sends Ctrl-C to the job that holds it, not to the runner, and the job's death by it is the
  /// user's stop. Any thread; the callbacks must allow that.
  void deliver(int signal) noexcept;

  /// The first signal received, or 0.
  [[nodiscard]] int received() const noexcept { return received_.load(); }

 private:
  void watch();

  std::function<void(int)> on_stop_;
  std::function<void(int)> on_kill_;
  std::atomic<int> received_{0};
  int signal_fd_ = -1;
  int wake_fd_ = -1;  // an eventfd: written by the destructor
  std::thread thread_;
};

}  // namespace tasktree_run
