#include "process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

namespace tasktree_run {
namespace {

[[noreturn]] void throw_errno(std::string_view what, int error = errno) {
  throw std::system_error(error, std::generic_category(), std::string(what));
}

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

struct Pipe {
  Fd read;
  Fd write;
};

Pipe make_pipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw_errno("pipe2");
  return Pipe{Fd(fds[0]), Fd(fds[1])};
}

/// A pidfd for `pid` (readable once the process exits), or -1 where the kernel has none.
int open_pidfd(pid_t pid) noexcept {
#ifdef SYS_pidfd_open
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
#else
  (void)pid;
  return -1;
#endif
}

/// True once `pid` (our child) has exited; leaves it unreaped, so that its id, which is also its
/// group's id, cannot be reused while we may still signal the group.
bool has_exited(pid_t pid) {
  siginfo_t info{};
  if (::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) != 0) throw_errno("waitid");
  return info.si_pid == pid;
}

/// Splits a stream's bytes into lines for the sink.
class LineSplitter {
 public:
  static constexpr std::size_t max_line = 64 * 1024;  // longer lines are passed on in pieces

  LineSplitter(Stream stream, const LineSink& sink) : stream_(stream), sink_(sink) {}

  void feed(std::string_view bytes) {
    while (!bytes.empty()) {
      const std::size_t newline = bytes.find('\n');
      if (newline == std::string_view::npos) {
        pending_.append(bytes);
        if (pending_.size() >= max_line) flush();
        return;
      }
      pending_.append(bytes.substr(0, newline));
      flush();
      bytes.remove_prefix(newline + 1);
    }
  }
  void flush() {
    sink_(stream_, pending_);
    pending_.clear();
  }
  void finish() {
    if (!pending_.empty()) flush();
  }

 private:
  Stream stream_;
  const LineSink& sink_;
  std::string pending_;
};

}  // namespace

std::string signal_name(int signal) {
  const char* abbreviation = ::sigabbrev_np(signal);
  return abbreviation != nullptr ? fmt::format("SIG{}", abbreviation) : fmt::format("signal {}", signal);
}

namespace {

// The watchdog's life after the fork. The runner has a single thread when it forks, so this is an
// ordinary process. Messages are 4-byte integers: a process group id, positive when the group starts
// and negative when it is released; or 0, a 4-byte length and that many bytes: the run directory to
// remove should the runner die (length 0: none).
[[noreturn]] void watchdog_main(int channel, std::size_t capacity, std::chrono::nanoseconds grace) {
  ::setpgid(0, 0);
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  sigemptyset(&ignore.sa_mask);
  for (const int signal : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE, SIGTSTP, SIGTTIN, SIGTTOU}) {
    ::sigaction(signal, &ignore, nullptr);
  }
  // Hold nothing of the runner's (a pipe it writes into, a file it renames, its working directory)
  // but the socket.
  if (channel != 3) {
    ::dup2(channel, 3);
    channel = 3;
  }
  ::close_range(4, ~0U, 0);
  const int null = ::open("/dev/null", O_RDWR);
  if (null >= 0) {
    for (int fd = 0; fd <= 2; ++fd) ::dup2(null, fd);
    if (null > 2) ::close(null);
  }
  [[maybe_unused]] const int root = ::chdir("/");

  std::vector<pid_t> groups;
  groups.reserve(capacity);
  std::string directory;
  std::string pending;
  std::array<char, 4096> buffer{};
  const auto take = [&pending](std::size_t at) {
    std::int32_t value = 0;
    std::memcpy(&value, pending.data() + at, sizeof value);
    return value;
  };
  for (;;) {
    const ssize_t got = ::read(channel, buffer.data(), buffer.size());
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;
    pending.append(buffer.data(), static_cast<std::size_t>(got));
    std::size_t at = 0;
    while (at + sizeof(std::int32_t) <= pending.size()) {
      const std::int32_t value = take(at);
      if (value == 0) {
        if (at + 2 * sizeof(std::int32_t) > pending.size()) break;
        const auto length = static_cast<std::size_t>(take(at + sizeof(std::int32_t)));
        if (at + 2 * sizeof(std::int32_t) + length > pending.size()) break;
        directory.assign(pending, at + 2 * sizeof(std::int32_t), length);
        at += 2 * sizeof(std::int32_t) + length;
        continue;
      }
      if (value > 0) {
        groups.push_back(value);
      } else if (const auto it = std::find(groups.begin(), groups.end(), -value); it != groups.end()) {
        *it = groups.back();
        groups.pop_back();
      }
      at += sizeof(std::int32_t);
    }
    pending.erase(0, at);
  }

  // End of file: the runner is gone. Whatever it left running is stopped, the way it would have.
  if (!groups.empty()) {
    for (const pid_t group : groups) {
      ::kill(-group, SIGTERM);
      ::kill(-group, SIGCONT);  // a stopped job would not act on the SIGTERM
    }
    const auto deadline = std::chrono::steady_clock::now() + grace;
    const auto alive = [&groups] {
      return std::any_of(groups.begin(), groups.end(), [](pid_t group) { return ::kill(-group, 0) == 0; });
    };
    while (alive() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    for (const pid_t group : groups) ::kill(-group, SIGKILL);
  }
  if (!directory.empty()) {
    std::error_code ignored;
    std::filesystem::remove_all(directory, ignored);
  }
  ::_exit(0);
}

}  // namespace

Watchdog::Watchdog(std::size_t capacity, std::chrono::nanoseconds grace) {
  std::array<int, 2> ends{};
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ends.data()) != 0) throw_errno("socketpair");
  const pid_t pid = ::fork();
  if (pid < 0) {
    const int error = errno;
    ::close(ends[0]);
    ::close(ends[1]);
    errno = error;
    throw_errno("fork");
  }
  if (pid == 0) {
    ::close(ends[0]);
    watchdog_main(ends[1], capacity, grace);
  }
  ::close(ends[1]);
  fd_ = ends[0];
  pid_ = pid;
}

Watchdog::~Watchdog() {
  ::close(fd_);
  while (::waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
  }
}

ProcessGroups::ProcessGroups(int watchdog) : stop_fd_(::eventfd(0, EFD_CLOEXEC)), watchdog_(watchdog) {
  if (stop_fd_ < 0) throw_errno("eventfd");
}

void ProcessGroups::tell_watchdog(pid_t value) const noexcept {
  if (watchdog_ < 0) return;
  const auto message = static_cast<std::int32_t>(value);
  // A watchdog that is gone cannot be helped: the runner goes on (MSG_NOSIGNAL: no SIGPIPE).
  [[maybe_unused]] const auto sent = ::send(watchdog_, &message, sizeof message, MSG_NOSIGNAL);
}

void ProcessGroups::set_run_directory(const std::string& path) const noexcept {
  if (watchdog_ < 0) return;
  std::string message(2 * sizeof(std::int32_t), '\0');
  const auto length = static_cast<std::int32_t>(path.size());
  std::memcpy(message.data() + sizeof(std::int32_t), &length, sizeof length);
  message += path;
  std::lock_guard lock(mutex_);  // one message, not interleaved with a group's
  [[maybe_unused]] const auto sent = ::send(watchdog_, message.data(), message.size(), MSG_NOSIGNAL);
}

ProcessGroups::~ProcessGroups() { ::close(stop_fd_); }

pid_t ProcessGroups::spawn(const std::function<pid_t()>& spawn) {
  std::lock_guard lock(mutex_);
  if (stopping_) return 0;
  const pid_t pid = spawn();
  if (pid > 0) {
    groups_.insert(pid);
    tell_watchdog(pid);
  }
  return pid;
}

void ProcessGroups::signal(pid_t group, int signal) {
  std::lock_guard lock(mutex_);
  if (groups_.contains(group)) ::kill(-group, signal);
}

void ProcessGroups::release(pid_t group) {
  std::lock_guard lock(mutex_);
  ::kill(-group, SIGKILL);  // the leader is a zombie that keeps the id; ESRCH if nothing else is left
  if (groups_.erase(group) != 0) tell_watchdog(-group);
}

void ProcessGroups::stop() {
  std::lock_guard lock(mutex_);
  if (stopping_) return;
  stopping_ = true;
  for (const pid_t group : groups_) ::kill(-group, SIGTERM);
  const std::uint64_t one = 1;
  [[maybe_unused]] const auto written = ::write(stop_fd_, &one, sizeof one);  // an eventfd write cannot fail here
}

void ProcessGroups::kill_all() {
  std::lock_guard lock(mutex_);
  for (const pid_t group : groups_) ::kill(-group, SIGKILL);
}

bool ProcessGroups::stopping() const {
  std::lock_guard lock(mutex_);
  return stopping_;
}

ProcessResult run_process(ProcessGroups& groups, const ProcessRequest& request, const LineSink& sink) {
  Pipe out = make_pipe();
  Pipe err = make_pipe();

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, out.write.get(), STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, err.write.get(), STDERR_FILENO);
  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  // Own process group (so that signals reach the whole job), the runner's blocked and ignored
  // signals back to normal.
  sigset_t none;
  sigemptyset(&none);
  sigset_t defaults;
  sigfillset(&defaults);
  posix_spawnattr_setpgroup(&attributes, 0);
  posix_spawnattr_setsigmask(&attributes, &none);
  posix_spawnattr_setsigdefault(&attributes, &defaults);
  posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

  std::vector<char*> environment;
  environment.reserve(request.environment->size() + 1);
  for (const std::string& entry : *request.environment) environment.push_back(const_cast<char*>(entry.c_str()));
  environment.push_back(nullptr);
  const std::string command(request.command);
  char shell[] = "/bin/sh";
  char dash_c[] = "-c";
  char* const argv[] = {shell, dash_c, const_cast<char*>(command.c_str()), nullptr};

  int spawn_error = 0;
  const pid_t pid = groups.spawn([&]() -> pid_t {
    pid_t child = 0;
    spawn_error = ::posix_spawn(&child, shell, &actions, &attributes, argv, environment.data());
    return spawn_error == 0 ? child : -1;
  });
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attributes);
  if (pid == 0) return ProcessResult::not_started();
  if (pid < 0) {
    ProcessResult failed;
    failed.end = ProcessResult::End::spawn_failed;
    failed.error = fmt::format("cannot start /bin/sh: {}", std::strerror(spawn_error));
    return failed;
  }
  out.write.reset();
  err.write.reset();
  // Should anything below throw, the job's processes must not outlive the error.
  struct Reaper {
    ProcessGroups& groups;
    pid_t pid;
    bool armed = true;
    Reaper(ProcessGroups& group_registry, pid_t child) : groups(group_registry), pid(child) {}
    Reaper(const Reaper&) = delete;
    Reaper& operator=(const Reaper&) = delete;
    ~Reaper() {
      if (!armed) return;
      groups.release(pid);
      while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
      }
    }
  } reaper(groups, pid);

  const Fd pidfd(open_pidfd(pid));
  LineSplitter out_lines(Stream::out, sink);
  LineSplitter err_lines(Stream::err, sink);
  constexpr auto never = Clock::time_point::max();
  Clock::time_point term_deadline = never;   // when to send SIGTERM (the timeout)
  Clock::time_point kill_deadline = never;   // when to send SIGKILL
  Clock::time_point drain_deadline = never;  // after the exit: stop waiting for EOF then
  if (request.timeout) term_deadline = Clock::now() + *request.timeout;
  bool timed_out = false;
  bool stop_seen = false;
  bool exited = false;
  bool out_open = true;
  bool err_open = true;
  std::array<char, 16 * 1024> buffer;

  while (!exited || out_open || err_open) {
    std::array<pollfd, 4> fds{};
    nfds_t count = 0;
    int out_index = -1, err_index = -1, pid_index = -1, stop_index = -1;
    if (out_open) fds[out_index = static_cast<int>(count++)] = {out.read.get(), POLLIN, 0};
    if (err_open) fds[err_index = static_cast<int>(count++)] = {err.read.get(), POLLIN, 0};
    if (!exited && pidfd.get() >= 0) fds[pid_index = static_cast<int>(count++)] = {pidfd.get(), POLLIN, 0};
    if (!exited && !stop_seen) fds[stop_index = static_cast<int>(count++)] = {groups.stop_fd(), POLLIN, 0};

    auto next = never;
    if (!exited) {
      next = std::min(term_deadline, kill_deadline);
      if (pidfd.get() < 0) next = std::min(next, Clock::now() + std::chrono::milliseconds(20));
    } else {
      next = drain_deadline;
    }
    int timeout_ms = -1;
    if (next != never) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(next - Clock::now()).count();
      timeout_ms = static_cast<int>(std::clamp<long long>(left, 0, 60'000));
    }
    if (::poll(fds.data(), count, timeout_ms) < 0) {
      if (errno == EINTR) continue;
      throw_errno("poll");
    }

    const auto read_into = [&](int index, const Fd& fd, LineSplitter& lines, bool& open) {
      if (index < 0 || fds[index].revents == 0) return;
      const ssize_t got = ::read(fd.get(), buffer.data(), buffer.size());
      if (got > 0) {
        lines.feed(std::string_view(buffer.data(), static_cast<std::size_t>(got)));
      } else if (got == 0 || errno != EINTR) {
        lines.finish();
        open = false;
      }
    };
    read_into(out_index, out.read, out_lines, out_open);
    read_into(err_index, err.read, err_lines, err_open);

    const auto now = Clock::now();
    if (!exited && stop_index >= 0 && fds[stop_index].revents != 0) {
      stop_seen = true;  // the registry sent SIGTERM; SIGKILL follows after the grace period
      kill_deadline = std::min(kill_deadline, now + request.grace);
    }
    if (!exited && ((pid_index >= 0 && fds[pid_index].revents != 0) || (pidfd.get() < 0 && has_exited(pid)))) {
      exited = true;
      groups.release(pid);                             // kills what the job left behind, so its pipes reach EOF
      drain_deadline = now + std::chrono::seconds(2);  // a process that left the group may hold them
      continue;
    }
    if (exited) {
      if (now >= drain_deadline) break;
      continue;
    }
    if (now >= term_deadline) {
      timed_out = true;
      term_deadline = never;
      groups.signal(pid, SIGTERM);
      kill_deadline = std::min(kill_deadline, now + request.grace);
    }
    if (now >= kill_deadline) {
      kill_deadline = never;
      groups.signal(pid, SIGKILL);
    }
  }
  out_lines.finish();
  err_lines.finish();

  reaper.armed = false;
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) throw_errno("waitpid");
  }
  ProcessResult result;
  if (WIFEXITED(status)) {
    result.end = ProcessResult::End::exited;
    result.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    result.end = ProcessResult::End::signalled;
    result.signal = WTERMSIG(status);
  }
  if (timed_out) {
    result.end = ProcessResult::End::timed_out;  // a failure, even if the job exited 0 on SIGTERM
  } else if (!result.succeeded() && (stop_seen || groups.stopping())) {
    result.end = ProcessResult::End::stopped;
  }
  return result;
}

std::string describe(const ProcessResult& result) {
  using End = ProcessResult::End;
  switch (result.end) {
    case End::exited: return fmt::format("exit code {}", result.exit_code);
    case End::signalled: return fmt::format("killed by {}", signal_name(result.signal));
    case End::timed_out: return "timed out";
    case End::stopped: return "stopped";
    case End::not_started: return "not started";
    case End::spawn_failed: return result.error;
  }
  return "unknown";
}

}  // namespace tasktree_run
