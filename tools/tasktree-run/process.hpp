#pragma once
// Running one job's command: posix_spawn into its own process group, capture of its output lines,
// timeouts (SIGTERM to the group, SIGKILL after a grace period), and the registry of running
// process groups through which a stop reaches every job at once.

#include <sys/types.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tasktree_run {

/// A file descriptor closed on destruction.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) noexcept : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) {
      reset();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }
  [[nodiscard]] int get() const noexcept { return fd_; }
  void reset() noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

using Clock = std::chrono::steady_clock;

struct WatchdogTable;

/// A helper process that stops the jobs of a runner that died without stopping them itself (SIGKILL,
/// a crash, the OOM killer). The runner and the watchdog share a table in memory (mapped before the
/// fork) where the runner notes each job's process group as it starts and is released, with plain
/// stores, no system call; the watchdog sleeps in a read of a socket that the runner never writes
/// to. When the read reaches end-of-file, the runner is gone: the watchdog sends the groups left in
/// the table SIGTERM, and the groups of the processes whose environment holds the run's
/// `TASKTREE_RUN_DIR` (a job started but not yet noted, or one that left its group), and SIGKILL to
/// what is left after `grace`, then removes the run directory the table names. It leads its own process group and
/// ignores the stop signals (a Ctrl-C stops the runner, which stops its jobs itself), holds no descriptor of the
/// runner's but its socket, and exits as soon as its work is done. Start it while the runner has a single thread. Not
/// thread-safe: `ProcessGroups` calls it under its mutex.
class Watchdog {
 public:
  /// Forks the helper; `capacity` is the most groups that can be running at once.
  Watchdog(std::size_t capacity, std::chrono::nanoseconds grace);
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;
  /// Closes the socket and waits for the helper, which exits at once if no group is registered.
  ~Watchdog();
  /// Notes a group that started; returns its slot for `remove`, or -1 if the table is full.
  int add(pid_t group) noexcept;
  /// Forgets the group in `slot` (-1: none).
  void remove(int slot) noexcept;
  /// The run directory to remove should the runner die ("": none; longer than 4096 bytes: none).
  void set_directory(std::string_view path) noexcept;

 private:
  std::size_t capacity_;
  std::size_t bytes_ = 0;
  WatchdogTable* table_ = nullptr;
  std::vector<std::size_t> free_;  // the free slots
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
  /// `watchdog`: told of every group started and released; null: none.
  explicit ProcessGroups(Watchdog* watchdog = nullptr);
  ProcessGroups(const ProcessGroups&) = delete;
  ProcessGroups& operator=(const ProcessGroups&) = delete;
  ~ProcessGroups();

  /// Calls `spawn` (which starts a process that leads its own group and returns its id) and
  /// registers the group; returns 0 without calling `spawn` once stopping. A group that a `stop()`
  /// missed while it started gets its SIGTERM when it is registered.
  pid_t spawn(const std::function<pid_t()>& spawn);
  /// Sends `signal` to a registered group; does nothing if it is gone.
  void signal(pid_t group, int signal);
  /// Kills (SIGKILL) whatever is left in `group` after its leader exited, and forgets the group.
  /// Call before reaping the leader.
  void release(pid_t group);

  /// Stops: no new process starts, and every running group gets SIGTERM. Idempotent.
  void stop();
  /// Stops starting: no new process starts; the running ones go on (`--halt soon`). A later
  /// `stop()` still sends them SIGTERM.
  void stop_starting();
  /// Sends SIGKILL to every running group (a second interrupt).
  void kill_all();
  /// True once `stop()` or `stop_starting()` was called.
  [[nodiscard]] bool stopping() const;
  /// A descriptor that becomes readable when `stop()` is called (for poll()).
  [[nodiscard]] int stop_fd() const noexcept { return stop_fd_; }

 private:
  mutable std::mutex mutex_;
  std::map<pid_t, int> groups_;  // each group with its slot in the watchdog's table
  bool stopping_ = false;
  bool terminating_ = false;  // stop() was called
  int stop_fd_ = -1;          // an eventfd
  Watchdog* watchdog_ = nullptr;

 public:
  /// Tells the watchdog the directory to remove should the runner die; "" when there is none.
  void set_run_directory(const std::string& path);
};

/// Which stream a line of job output came from.
enum class Stream { out, err };

/// What to run and how.
struct ProcessRequest {
  /// Run as `<shell...> command` (`/bin/sh -c command`), or, if it has no shell syntax (see
  /// `simple_command_words`), directly.
  std::string_view command;
  /// The shell and its arguments before the command; null or empty: `/bin/sh -c`. Looked up in
  /// `PATH` unless it contains a `/`.
  const std::vector<std::string>* shell = nullptr;
  /// The complete environment, `NAME=value` strings.
  const std::vector<std::string>* environment = nullptr;
  /// Kill the job after this long (SIGTERM, then SIGKILL after `grace`); none if empty.
  std::optional<std::chrono::nanoseconds> timeout;
  /// How long a job may take to exit after SIGTERM before it gets SIGKILL.
  std::chrono::nanoseconds grace = std::chrono::seconds(5);
  /// Start it in a session of its own, without a controlling terminal; else in a process group of
  /// its own in the runner's session. A session per job costs short jobs dearly on a busy machine
  /// where the kernel groups tasks by session (autogroup): each starts in a new group.
  bool new_session = true;
  /// -1: standard input from /dev/null. Else a terminal (the runner's controlling one, with
  /// `new_session` false): the job's standard input, and while it runs the terminal's foreground
  /// process group, if the runner's was, so that it can read from and prompt on it; the runner's
  /// group gets the foreground back when the job has ended. The runner must ignore SIGTTOU, which
  /// it would get for that (and for writing to the terminal) while a job holds the foreground.
  int terminal = -1;
};

/// The words of `command` if it can run without a shell, as make runs such commands: nothing but
/// words of letters, digits and `-_./:,+@%=^` separated by blanks, the first no assignment (`A=1`)
/// and no shell builtin or keyword whose meaning differs from a program's (`cd`, `exit`, `echo`,
/// `if`, ...). Empty if the command needs the shell. A direct start that fails for any reason but
/// a lack of resources falls back to the shell, so the shell's messages and exit codes (127 for a
/// command not found) stay as they were.
[[nodiscard]] std::vector<std::string> simple_command_words(std::string_view command);

/// Whether an errno value from starting a process means a resource that may come free (descriptors,
/// processes, memory).
[[nodiscard]] constexpr bool lacks_resources(int error_number) noexcept {
  return error_number == EAGAIN || error_number == EMFILE || error_number == ENFILE || error_number == ENOMEM;
}

/// How a process ended.
struct ProcessResult {
  enum class End {
    exited,        ///< exited on its own: see `exit_code`
    signalled,     ///< killed by a signal that the runner did not send: see `signal`
    timed_out,     ///< the runner killed it after its timeout
    stopped,       ///< the run was stopping; the runner sent SIGTERM/SIGKILL before it exited
    not_started,   ///< the run was stopping before the process could start
    spawn_failed,  ///< posix_spawn failed: see `error` and `error_number`
    output_failed  ///< the job's log files could not be created or written: see `error`
  };
  End end = End::not_started;
  int exit_code = -1;
  int signal = 0;
  std::string error;
  /// With `spawn_failed`: the errno value.
  int error_number = 0;

  /// A start that failed for want of a resource that may come free (descriptors, processes,
  /// memory): worth waiting for and trying again.
  [[nodiscard]] bool lacked_resources() const noexcept {
    return end == End::spawn_failed && lacks_resources(error_number);
  }

  [[nodiscard]] static ProcessResult not_started() { return ProcessResult{}; }
  [[nodiscard]] bool succeeded() const noexcept { return end == End::exited && exit_code == 0; }
};

/// Receives a job's output as `run_process` reads it, on the thread that runs the process.
class OutputSink {
 public:
  /// Lines longer than this are passed on in pieces of this size.
  static constexpr std::size_t max_line = 64 * 1024;

  OutputSink() = default;
  OutputSink(const OutputSink&) = delete;
  OutputSink& operator=(const OutputSink&) = delete;
  virtual ~OutputSink() = default;
  /// Bytes of `stream`: a line without its newline (`ends_line`), or a piece of a line that is
  /// longer than `max_line` or that the job ended without a newline (not `ends_line`). The bytes,
  /// with a newline after each `ends_line`, are exactly what the job wrote.
  virtual void piece(Stream stream, std::string_view bytes, bool ends_line) = 0;
  /// Everything read so far has been passed on, and the next read may wait: write out what is
  /// buffered, so that output reaches its destination while the job is quiet.
  virtual void idle() = 0;
};

/// Runs `request.command` to its end in a new session (so its own process group, and no
/// controlling terminal), with standard input from /dev/null, standard output and error captured
/// into `sink`. When the command's process exits, whatever it left running in its group is killed.
/// Blocks the calling thread.
ProcessResult run_process(ProcessGroups& groups, const ProcessRequest& request, OutputSink& sink);

/// The name of a signal, e.g. `SIGINT`.
[[nodiscard]] std::string signal_name(int signal);

/// A description such as `exit code 3`, `killed by SIGKILL`, `timed out`.
[[nodiscard]] std::string describe(const ProcessResult& result);

}  // namespace tasktree_run
