#include "busy_load.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <string>
#include <system_error>

namespace bench {

namespace {

/// The signals after which the benchmark must not leave busy children behind.
constexpr std::array<int, 5> fatal_signals{SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE};

/// The busy children alive now; 0 marks a free slot. Atomics, so that a signal handler on any
/// thread may take them.
constinit std::array<std::atomic<pid_t>, max_busy_processes> children{};

/// Kills and reaps every busy child. Async-signal-safe: kill, waitpid and atomics only.
void kill_and_reap_all() noexcept {
  const int saved_errno = errno;
  std::array<pid_t, max_busy_processes> killed{};
  std::size_t count = 0;
  for (std::atomic<pid_t>& slot : children) {
    const pid_t pid = slot.exchange(0);
    if (pid <= 0) continue;
    kill(pid, SIGKILL);
    killed[count++] = pid;
  }
  for (std::size_t i = 0; i < count; ++i) {
    while (waitpid(killed[i], nullptr, 0) < 0 && errno == EINTR) {
    }
  }
  errno = saved_errno;
}

/// The benchmark was told to stop: kill the children, then die of the signal as it would have.
void on_fatal_signal(int signal) {
  kill_and_reap_all();
  struct sigaction default_action {};
  default_action.sa_handler = SIG_DFL;
  sigemptyset(&default_action.sa_mask);
  sigaction(signal, &default_action, nullptr);
  raise(signal);  // blocked until this handler returns, then the default action ends the process
}

std::terminate_handler previous_terminate = nullptr;

void on_terminate() {
  kill_and_reap_all();
  if (previous_terminate != nullptr) previous_terminate();  // prints the exception and aborts
  std::abort();
}

sigset_t fatal_signal_set() {
  sigset_t set;
  sigemptyset(&set);
  for (const int signal : fatal_signals) sigaddset(&set, signal);
  return set;
}

/// A busy child: after fork, so async-signal-safe calls only (the parent has other threads).
[[noreturn]] void spin_forever(int read_end, int write_end, pid_t parent, const sigset_t& mask) noexcept {
  struct sigaction default_action {};
  default_action.sa_handler = SIG_DFL;
  sigemptyset(&default_action.sa_mask);
  for (const int signal : fatal_signals) sigaction(signal, &default_action, nullptr);
  // The backstop: SIGKILL when the forking thread (the benchmark's main thread) dies. If the
  // parent died before this line, nothing would send it, hence the check.
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent) _exit(EXIT_FAILURE);
  sigprocmask(SIG_SETMASK, &mask, nullptr);
  // Hold none of the benchmark's output open (a pipe to ctest or tee would not see its end).
  const int null = open("/dev/null", O_RDWR);
  if (null >= 0) {
    dup2(null, STDIN_FILENO);
    dup2(null, STDOUT_FILENO);
    dup2(null, STDERR_FILENO);
    if (null > STDERR_FILENO) close(null);
  }
  close(read_end);
  const char running = 1;
  if (write(write_end, &running, 1) != 1) _exit(EXIT_FAILURE);
  close(write_end);
  volatile std::uint64_t counter = 0;
  for (;;) counter = counter + 1;
}

}  // namespace

BusyLoad::BusyLoad(int processes) : processes_(std::max(processes, 0)) {
  if (processes_ == 0) return;
  if (processes_ > max_busy_processes) {
    throw std::invalid_argument("at most " + std::to_string(max_busy_processes) + " busy processes");
  }
  if (busy_processes_running() != 0) throw std::logic_error("one BusyLoad at a time");
  int ready[2];
  if (pipe2(ready, O_CLOEXEC) != 0) throw std::system_error(errno, std::generic_category(), "pipe2");
  // No fatal signal between a fork and the child's pid landing in `children`.
  const sigset_t fatal = fatal_signal_set();
  sigset_t previous;
  pthread_sigmask(SIG_BLOCK, &fatal, &previous);
  const pid_t parent = getpid();
  int error = 0;
  for (int i = 0; i < processes_; ++i) {
    const pid_t pid = fork();
    if (pid == 0) spin_forever(ready[0], ready[1], parent, previous);
    if (pid < 0) {
      error = errno;
      break;
    }
    children[static_cast<std::size_t>(i)].store(pid);
  }
  pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  close(ready[1]);
  // Each child writes one byte once it runs; the end of the pipe before that means one died.
  for (int running = 0; error == 0 && running < processes_;) {
    char bytes[64];
    const ssize_t got = read(ready[0], bytes, sizeof bytes);
    if (got > 0) {
      running += static_cast<int>(got);
    } else if (got == 0) {
      error = ECHILD;
    } else if (errno != EINTR) {
      error = errno;
    }
  }
  close(ready[0]);
  if (error != 0) {
    kill_and_reap_all();
    throw std::system_error(error, std::generic_category(), "starting the busy processes");
  }
}

BusyLoad::~BusyLoad() {
  if (processes_ > 0) kill_and_reap_all();
}

void install_busy_load_cleanup() {
  static std::once_flag once;
  std::call_once(once, [] {
    std::atexit(kill_and_reap_all);
    previous_terminate = std::set_terminate(on_terminate);
    struct sigaction action {};
    action.sa_handler = on_fatal_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    for (const int signal : fatal_signals) {
      struct sigaction previous {};
      sigaction(signal, &action, &previous);
      if (previous.sa_handler == SIG_IGN) sigaction(signal, &previous, nullptr);  // e.g. SIGHUP under nohup
    }
  });
}

std::size_t busy_processes_running() noexcept {
  return static_cast<std::size_t>(
      std::count_if(children.begin(), children.end(), [](const std::atomic<pid_t>& slot) { return slot.load() > 0; }));
}

}  // namespace bench
