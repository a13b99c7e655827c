#include "process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <iterator>
#include <new>
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

/// Splits a stream's bytes into lines for the sink; a line that arrives whole in one read is passed
/// on without a copy.
class LineSplitter {
 public:
  LineSplitter(Stream stream, OutputSink& sink) : stream_(stream), sink_(sink) {}

  void feed(std::string_view bytes) {
    while (!bytes.empty()) {
      const std::size_t newline = bytes.find('\n');
      if (newline == std::string_view::npos) {
        while (pending_.size() + bytes.size() > OutputSink::max_line) {
          const std::size_t take = OutputSink::max_line - pending_.size();
          pending_.append(bytes.substr(0, take));
          bytes.remove_prefix(take);
          sink_.piece(stream_, pending_, false);
          pending_.clear();
        }
        pending_.append(bytes);
        return;
      }
      if (pending_.empty() && newline <= OutputSink::max_line) {
        sink_.piece(stream_, bytes.substr(0, newline), true);
      } else {
        feed(bytes.substr(0, newline));  // at most max_line - 1 bytes stay pending
        sink_.piece(stream_, pending_, true);
        pending_.clear();
      }
      bytes.remove_prefix(newline + 1);
    }
  }
  /// End of the stream: a last line without a newline.
  void finish() {
    if (!pending_.empty()) sink_.piece(stream_, pending_, false);
    pending_.clear();
  }

 private:
  Stream stream_;
  OutputSink& sink_;
  std::string pending_;
};

}  // namespace

std::string signal_name(int signal) {
  const char* abbreviation = ::sigabbrev_np(signal);
  return abbreviation != nullptr ? fmt::format("SIG{}", abbreviation) : fmt::format("signal {}", signal);
}

namespace {}  // namespace

// The table the runner and its watchdog share (anonymous shared memory, mapped before the fork):
// the run directory and one slot per job that can run at once, holding its process group id or 0.
// The runner writes it with plain stores, no system call per job; the watchdog reads it once, after
// the runner is gone.
struct WatchdogTable {
  static constexpr std::size_t directory_capacity = 4096;
  std::atomic<std::int32_t> directory_length{0};
  std::array<char, directory_capacity> directory{};
  // `capacity` slots follow the table in the mapping.

  static std::size_t bytes(std::size_t capacity) {
    return sizeof(WatchdogTable) + capacity * sizeof(std::atomic<std::int32_t>);
  }
  [[nodiscard]] std::atomic<std::int32_t>* slots() noexcept {
    return reinterpret_cast<std::atomic<std::int32_t>*>(reinterpret_cast<char*>(this) + sizeof(WatchdogTable));
  }
  [[nodiscard]] const std::atomic<std::int32_t>* slots() const noexcept {
    return reinterpret_cast<const std::atomic<std::int32_t>*>(reinterpret_cast<const char*>(this) +
                                                              sizeof(WatchdogTable));
  }
};
static_assert(sizeof(WatchdogTable) % alignof(std::atomic<std::int32_t>) == 0);
static_assert(std::atomic<std::int32_t>::is_always_lock_free, "the watchdog's table is shared between processes");

namespace {

// The watchdog's life after the fork. The runner has a single thread when it forks, so this is an
// ordinary process. It sleeps until its end of the socket reports the runner's end (the runner
// never writes into it), then stops what the table says is still running.
[[noreturn]] void watchdog_main(int channel, const WatchdogTable& table, std::size_t capacity,
                                std::chrono::nanoseconds grace) {
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

  for (;;) {
    char byte = 0;
    const ssize_t got = ::read(channel, &byte, 1);
    if (got == 0 || (got < 0 && errno != EINTR)) break;  // end of file: the runner is gone
  }

  // Whatever the runner left running is stopped, the way it would have stopped it: the groups in the
  // table, and those of the processes that carry this run's TASKTREE_RUN_DIR in their environment,
  // which finds a job the runner had started but not yet noted, and what a job moved out of its
  // group (setsid) without changing its environment.
  std::vector<pid_t> groups;
  for (std::size_t i = 0; i < capacity; ++i) {
    if (const std::int32_t group = table.slots()[i].load(std::memory_order_acquire); group > 0) groups.push_back(group);
  }
  const auto length = static_cast<std::size_t>(table.directory_length.load(std::memory_order_acquire));
  const std::string directory =
      length > 0 && length <= WatchdogTable::directory_capacity ? std::string(table.directory.data(), length) : "";
  if (!directory.empty()) {
    const std::string marker = std::string("TASKTREE_RUN_DIR=") + directory;
    std::error_code error;
    for (const auto& entry : std::filesystem::directory_iterator("/proc", error)) {
      const std::string name = entry.path().filename().string();
      if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
      const pid_t pid = std::stoi(name);
      if (pid == ::getpid()) continue;
      const int fd = ::open((entry.path() / "environ").c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) continue;
      std::string environment;
      std::array<char, 4096> chunk{};
      for (ssize_t got = 0; (got = ::read(fd, chunk.data(), chunk.size())) > 0;) {
        environment.append(chunk.data(), static_cast<std::size_t>(got));
      }
      ::close(fd);
      for (std::size_t at = 0; at < environment.size();) {
        const std::size_t end = std::min(environment.find('\0', at), environment.size());
        if (std::string_view(environment).substr(at, end - at) == marker) {
          if (const pid_t group = ::getpgid(pid); group > 0) groups.push_back(group);
          break;
        }
        at = end + 1;
      }
    }
  }
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

Watchdog::Watchdog(std::size_t capacity, std::chrono::nanoseconds grace)
    : capacity_(std::max<std::size_t>(capacity, 1)) {
  bytes_ = WatchdogTable::bytes(capacity_);
  void* memory = ::mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (memory == MAP_FAILED) throw_errno("mmap");
  table_ = new (memory) WatchdogTable;                                                                 // no directory
  for (std::size_t i = 0; i < capacity_; ++i) new (table_->slots() + i) std::atomic<std::int32_t>(0);  // no groups
  free_.reserve(capacity_);
  for (std::size_t i = capacity_; i > 0; --i) free_.push_back(i - 1);
  std::array<int, 2> ends{};
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ends.data()) != 0) {
    const int error = errno;
    ::munmap(memory, bytes_);
    throw_errno("socketpair", error);
  }
  const pid_t pid = ::fork();
  if (pid < 0) {
    const int error = errno;
    ::close(ends[0]);
    ::close(ends[1]);
    ::munmap(memory, bytes_);
    throw_errno("fork", error);
  }
  if (pid == 0) {
    ::close(ends[0]);
    watchdog_main(ends[1], *table_, capacity_, grace);
  }
  ::close(ends[1]);
  fd_ = ends[0];
  pid_ = pid;
}

Watchdog::~Watchdog() {
  ::close(fd_);
  while (::waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
  }
  ::munmap(table_, bytes_);
}

int Watchdog::add(pid_t group) noexcept {
  if (free_.empty()) return -1;
  const std::size_t slot = free_.back();
  free_.pop_back();
  table_->slots()[slot].store(static_cast<std::int32_t>(group), std::memory_order_release);
  return static_cast<int>(slot);
}

void Watchdog::remove(int slot) noexcept {
  if (slot < 0) return;
  table_->slots()[slot].store(0, std::memory_order_release);
  free_.push_back(static_cast<std::size_t>(slot));
}

void Watchdog::set_directory(std::string_view path) noexcept {
  table_->directory_length.store(0, std::memory_order_release);
  if (path.size() > WatchdogTable::directory_capacity) return;
  std::memcpy(table_->directory.data(), path.data(), path.size());
  table_->directory_length.store(static_cast<std::int32_t>(path.size()), std::memory_order_release);
}

std::vector<std::string> simple_command_words(std::string_view command) {
  constexpr std::string_view plain = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_./:,+@%=^";
  constexpr std::string_view blanks = " \t";
  // The shell's own words: builtins that change the shell or differ from the program of the same
  // name (dash's echo and pwd), and keywords. `true` and `false` behave the same either way.
  constexpr std::string_view shell_words[] = {
      ".",    ":",      "[",        "alias",   "bg",    "break", "case", "cd",    "chdir", "command", "continue",
      "do",   "done",   "echo",     "elif",    "else",  "esac",  "eval", "exec",  "exit",  "export",  "fc",
      "fg",   "fi",     "for",      "getopts", "hash",  "if",    "in",   "jobs",  "kill",  "local",   "printf",
      "pwd",  "read",   "readonly", "return",  "set",   "shift", "test", "then",  "time",  "times",   "trap",
      "type", "ulimit", "umask",    "unalias", "unset", "until", "wait", "while", "{",     "}",       "!"};
  std::vector<std::string> words;
  std::size_t at = 0;
  while (at < command.size()) {
    const std::size_t start = command.find_first_not_of(blanks, at);
    if (start == std::string_view::npos) break;
    const std::size_t end = std::min(command.find_first_of(blanks, start), command.size());
    const std::string_view word = command.substr(start, end - start);
    if (word.find_first_not_of(plain) != std::string_view::npos) return {};
    words.emplace_back(word);
    at = end;
  }
  if (words.empty()) return {};
  const std::string_view first = words.front();
  if (first.find('=') != std::string_view::npos ||
      std::find(std::begin(shell_words), std::end(shell_words), first) != std::end(shell_words)) {
    return {};
  }
  return words;
}

ProcessGroups::ProcessGroups(Watchdog* watchdog) : stop_fd_(::eventfd(0, EFD_CLOEXEC)), watchdog_(watchdog) {
  if (stop_fd_ < 0) throw_errno("eventfd");
}

void ProcessGroups::set_run_directory(const std::string& path) {
  if (watchdog_ == nullptr) return;
  std::lock_guard lock(mutex_);
  watchdog_->set_directory(path);
}

ProcessGroups::~ProcessGroups() { ::close(stop_fd_); }

pid_t ProcessGroups::spawn(const std::function<pid_t()>& spawn) {
  {
    const std::lock_guard lock(mutex_);
    if (stopping_) return 0;
  }
  // Not under the lock: posix_spawn holds this thread until the child has called exec, which on a
  // busy machine can take a whole time slice, and the other workers must not queue behind it.
  const pid_t pid = spawn();
  if (pid <= 0) return pid;
  const std::lock_guard lock(mutex_);
  groups_.emplace(pid, watchdog_ != nullptr ? watchdog_->add(pid) : -1);
  if (terminating_) ::kill(-pid, SIGTERM);  // a stop came while it started: it gets what the others got
  return pid;
}

void ProcessGroups::signal(pid_t group, int signal) {
  std::lock_guard lock(mutex_);
  if (groups_.contains(group)) ::kill(-group, signal);
}

void ProcessGroups::release(pid_t group) {
  std::lock_guard lock(mutex_);
  ::kill(-group, SIGKILL);  // the leader is a zombie that keeps the id; ESRCH if nothing else is left
  if (const auto it = groups_.find(group); it != groups_.end()) {
    if (watchdog_ != nullptr) watchdog_->remove(it->second);
    groups_.erase(it);
  }
}

void ProcessGroups::stop_starting() {
  std::lock_guard lock(mutex_);
  stopping_ = true;
}

void ProcessGroups::stop() {
  std::lock_guard lock(mutex_);
  if (terminating_) return;
  stopping_ = true;
  terminating_ = true;
  for (const auto& [group, slot] : groups_) ::kill(-group, SIGTERM);
  const std::uint64_t one = 1;
  [[maybe_unused]] const auto written = ::write(stop_fd_, &one, sizeof one);  // an eventfd write cannot fail here
}

void ProcessGroups::kill_all() {
  std::lock_guard lock(mutex_);
  for (const auto& [group, slot] : groups_) ::kill(-group, SIGKILL);
}

bool ProcessGroups::stopping() const {
  std::lock_guard lock(mutex_);
  return stopping_;
}

namespace {

/// `tcsetpgrp`, which the runner calls while it is itself in the background when it takes the
/// foreground back from a job: it ignores SIGTTOU for that (see `ProcessRequest::terminal`).
void set_foreground(int terminal, pid_t group) noexcept {
  while (::tcsetpgrp(terminal, group) != 0 && errno == EINTR) {
  }
}

/// With `--tty`: the job's process group is the terminal's foreground while it runs, if the
/// runner's group was (a runner started in the background leaves the terminal alone), and the
/// runner's group is again when it has ended.
class Foreground {
 public:
  Foreground(int terminal, pid_t job) : terminal_(terminal) {
    if (terminal < 0 || ::tcgetpgrp(terminal) != ::getpgrp()) return;
    set_foreground(terminal, job);
    // A job that read the terminal before it was the foreground was stopped (SIGTTIN): go on.
    ::kill(-job, SIGCONT);
    owner_ = ::getpgrp();
  }
  Foreground(const Foreground&) = delete;
  Foreground& operator=(const Foreground&) = delete;
  ~Foreground() {
    if (owner_ > 0) set_foreground(terminal_, owner_);
  }

 private:
  int terminal_;
  pid_t owner_ = 0;  // the runner's group, to give the foreground back to; 0: nothing to give back
};

}  // namespace

ProcessResult run_process(ProcessGroups& groups, const ProcessRequest& request, OutputSink& sink) {
  Pipe out;
  Pipe err;
  try {
    out = make_pipe();
    err = make_pipe();
  } catch (const std::system_error& error) {  // out of descriptors: the caller may wait and try again
    ProcessResult failed;
    failed.end = ProcessResult::End::spawn_failed;
    failed.error_number = error.code().value();
    failed.error = fmt::format("cannot start /bin/sh: cannot create a pipe: {}", std::strerror(failed.error_number));
    return failed;
  }

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (request.terminal >= 0) {
    posix_spawn_file_actions_adddup2(&actions, request.terminal, STDIN_FILENO);
  } else {
    posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  }
  posix_spawn_file_actions_adddup2(&actions, out.write.get(), STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, err.write.get(), STDERR_FILENO);
  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  // Its own process group, so that signals reach the whole job; with `new_session` its own session,
  // so no controlling terminal either (a prompt that opens /dev/tty, as ssh and sudo do, fails at
  // once instead of stopping the job in the background forever). The runner's blocked and ignored
  // signals back to normal.
  sigset_t none;
  sigemptyset(&none);
  sigset_t defaults;
  sigfillset(&defaults);
  posix_spawnattr_setsigmask(&attributes, &none);
  posix_spawnattr_setsigdefault(&attributes, &defaults);
  posix_spawnattr_setpgroup(&attributes, 0);
  const short session = request.new_session && request.terminal < 0 ? POSIX_SPAWN_SETSID : POSIX_SPAWN_SETPGROUP;
  posix_spawnattr_setflags(&attributes, static_cast<short>(session | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF));

  std::vector<char*> environment;
  environment.reserve(request.environment->size() + 1);
  for (const std::string& entry : *request.environment) environment.push_back(const_cast<char*>(entry.c_str()));
  environment.push_back(nullptr);
  // Directly if it has no shell syntax (one exec instead of two), else through the shell.
  static const std::vector<std::string> default_shell{"/bin/sh", "-c"};
  const std::vector<std::string>& shell =
      request.shell != nullptr && !request.shell->empty() ? *request.shell : default_shell;
  std::vector<std::string> words = simple_command_words(request.command);
  const auto spawn_words = [&](std::vector<std::string>& argument_words, int& error) {
    std::vector<char*> argv;
    argv.reserve(argument_words.size() + 1);
    for (std::string& word : argument_words) argv.push_back(word.data());
    argv.push_back(nullptr);
    return groups.spawn([&]() -> pid_t {
      pid_t child = 0;
      error = ::posix_spawnp(&child, argv[0], &actions, &attributes, argv.data(), environment.data());
      return error == 0 ? child : -1;
    });
  };
  int spawn_error = 0;
  pid_t pid = -1;
  std::string_view program;  // for the message
  if (!words.empty()) {
    program = words.front();
    pid = spawn_words(words, spawn_error);
  }
  // Not found, not executable, ...: the shell says so, with its exit code, as it always did. For a
  // lack of resources it would fail the same way.
  if (words.empty() || (pid < 0 && !lacks_resources(spawn_error))) {
    std::vector<std::string> shell_words = shell;
    shell_words.emplace_back(request.command);
    program = shell.front();
    pid = spawn_words(shell_words, spawn_error);
  }
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attributes);
  if (pid == 0) return ProcessResult::not_started();
  if (pid < 0) {
    ProcessResult failed;
    failed.end = ProcessResult::End::spawn_failed;
    failed.error_number = spawn_error;
    failed.error = fmt::format("cannot start {}: {}", program, std::strerror(spawn_error));
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
  const Foreground foreground(request.terminal, pid);  // declared after the reaper: ends before it

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
  std::array<char, 64 * 1024> buffer;  // a whole pipe's worth

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
    sink.idle();  // what was read is on its way before the wait
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
    case End::output_failed: return result.error;
  }
  return "unknown";
}

}  // namespace tasktree_run
