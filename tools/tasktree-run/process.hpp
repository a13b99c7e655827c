#pragma once
// Running one job's command: posix_spawn into its own process group, capture of its output lines,
// timeouts (SIGTERM to the group, SIGKILL after a grace period), and the registry of running
// process groups through which a stop reaches every job at once.

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <functional>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace tasktree_run {

using Clock = std::chrono::steady_clock;

/// A helper process that stops the jobs of a runner that died without stopping them itself (SIGKILL,
/// a crash, the OOM killer): the runner tells it each process group it starts and releases, over a
/// socket; when the socket reaches end-of-file with groups still registered, the runner is gone, so
/// it sends them SIGTERM, and SIGKILL to what is left after `grace`, then removes the run directory
/// it was told of. It leads its own process group and ignores the stop signals (a Ctrl-C stops the
/// runner, which stops its jobs itself), holds no descriptor of the runner's but its socket, and
/// exits as soon as its work is done. Start it while the runner has a single thread.
class Watchdog {
 public:
  /// Forks the helper; `capacity` is the most groups that can be running at once.
  Watchdog(std::size_t capacity, std::chrono::nanoseconds grace);
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;
  /// Closes the socket and waits for the helper, which exits at once if no group is registered.
  ~Watchdog();
  /// The runner's end of the socket, for `ProcessGroups`.
  [[nodiscard]] int fd() const noexcept { return fd_; }

 private:
  int fd_ = -1;
  pid_t pid_ = -1;
};

/// The process groups of the jobs that are running, so that a stop (a signal to the runner, or a
/// failure in `--skip-on-error fail` mode) reaches all of them, and no new job starts after it.
///
/// Every member is called under one mutex, and a group leaves the registry before its leader is
/// reaped: a signal sent through the registry never reaches a recycled process id.
class ProcessGroups {
 public:
  /// `watchdog`: a `Watchdog::fd()` to tell of every group started and released; -1: none.
  explicit ProcessGroups(int watchdog = -1);
  ProcessGroups(const ProcessGroups&) = delete;
  ProcessGroups& operator=(const ProcessGroups&) = delete;
  ~ProcessGroups();

  /// Calls `spawn` (which starts a process that leads its own group and returns its id) and
  /// registers the group, atomically with respect to `stop()`; returns 0 without calling `spawn`
  /// once stopping.
  pid_t spawn(const std::function<pid_t()>& spawn);
  /// Sends `signal` to a registered group; does nothing if it is gone.
  void signal(pid_t group, int signal);
  /// Kills (SIGKILL) whatever is left in `group` after its leader exited, and forgets the group.
  /// Call before reaping the leader.
  void release(pid_t group);

  /// Stops: no new process starts, and every running group gets SIGTERM. Idempotent.
  void stop();
  /// Sends SIGKILL to every running group (a second interrupt).
  void kill_all();
  /// True once `stop()` was called.
  [[nodiscard]] bool stopping() const;
  /// A descriptor that becomes readable when `stop()` is called (for poll()).
  [[nodiscard]] int stop_fd() const noexcept { return stop_fd_; }

 private:
  mutable std::mutex mutex_;
  std::set<pid_t> groups_;
  bool stopping_ = false;
  int stop_fd_ = -1;  // an eventfd
  int watchdog_ = -1;
  void tell_watchdog(pid_t value) const noexcept;

 public:
  /// Tells the watchdog the directory to remove should the runner die; "" when there is none.
  void set_run_directory(const std::string& path) const noexcept;
};

/// Which stream a line of job output came from.
enum class Stream { out, err };

/// What to run and how.
struct ProcessRequest {
  /// Run as `/bin/sh -c command`.
  std::string_view command;
  /// The complete environment, `NAME=value` strings.
  const std::vector<std::string>* environment = nullptr;
  /// Kill the job after this long (SIGTERM, then SIGKILL after `grace`); none if empty.
  std::optional<std::chrono::nanoseconds> timeout;
  /// How long a job may take to exit after SIGTERM before it gets SIGKILL.
  std::chrono::nanoseconds grace = std::chrono::seconds(5);
};

/// How a process ended.
struct ProcessResult {
  enum class End {
    exited,       ///< exited on its own: see `exit_code`
    signalled,    ///< killed by a signal that the runner did not send: see `signal`
    timed_out,    ///< the runner killed it after its timeout
    stopped,      ///< the run was stopping; the runner sent SIGTERM/SIGKILL before it exited
    not_started,  ///< the run was stopping before the process could start
    spawn_failed  ///< posix_spawn failed: see `error`
  };
  End end = End::not_started;
  int exit_code = -1;
  int signal = 0;
  std::string error;

  [[nodiscard]] static ProcessResult not_started() { return ProcessResult{}; }
  [[nodiscard]] bool succeeded() const noexcept { return end == End::exited && exit_code == 0; }
};

/// Receives each line of output (without its newline), on the thread that runs the process.
using LineSink = std::function<void(Stream stream, std::string_view line)>;

/// Runs `request.command` to its end in a new process group, with standard input from /dev/null,
/// standard output and error captured line by line into `sink`. When the command's process exits,
/// whatever it left running in its group is killed. Blocks the calling thread.
ProcessResult run_process(ProcessGroups& groups, const ProcessRequest& request, const LineSink& sink);

/// The name of a signal, e.g. `SIGINT`.
[[nodiscard]] std::string signal_name(int signal);

/// A description such as `exit code 3`, `killed by SIGKILL`, `timed out`.
[[nodiscard]] std::string describe(const ProcessResult& result);

}  // namespace tasktree_run
