#include "signals.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <system_error>

namespace tasktree_run {
namespace {

sigset_t stop_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);   // the terminal closed (tmux kill-session, ssh hang-up)
  sigaddset(&set, SIGQUIT);  // Ctrl-backslash
  return set;
}

}  // namespace

void block_stop_signals() {
  const sigset_t set = stop_signals();
  if (const int error = pthread_sigmask(SIG_BLOCK, &set, nullptr); error != 0) {
    throw std::system_error(error, std::generic_category(), "pthread_sigmask");
  }
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  sigemptyset(&ignore.sa_mask);
  if (sigaction(SIGPIPE, &ignore, nullptr) != 0) throw std::system_error(errno, std::generic_category(), "sigaction");
}

SignalWatcher::SignalWatcher(std::function<void(int)> on_stop, std::function<void(int)> on_kill)
    : on_stop_(std::move(on_stop)), on_kill_(std::move(on_kill)) {
  const sigset_t set = stop_signals();
  signal_fd_ = ::signalfd(-1, &set, SFD_CLOEXEC);
  if (signal_fd_ < 0) throw std::system_error(errno, std::generic_category(), "signalfd");
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC);
  if (wake_fd_ < 0) {
    const int error = errno;
    ::close(signal_fd_);
    throw std::system_error(error, std::generic_category(), "eventfd");
  }
  thread_ = std::thread([this] { watch(); });
}

SignalWatcher::~SignalWatcher() {
  const std::uint64_t one = 1;
  [[maybe_unused]] const auto written = ::write(wake_fd_, &one, sizeof one);
  thread_.join();
  ::close(wake_fd_);
  ::close(signal_fd_);
}

void SignalWatcher::watch() {
  while (true) {
    pollfd fds[2] = {{signal_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;  // cannot happen with valid descriptors; nothing sensible left to watch
    }
    if (fds[1].revents != 0) return;
    signalfd_siginfo info{};
    if (::read(signal_fd_, &info, sizeof info) != static_cast<ssize_t>(sizeof info)) continue;
    deliver(static_cast<int>(info.ssi_signo));
  }
}

void SignalWatcher::deliver(int signal) noexcept {
  int expected = 0;
  const bool first = received_.compare_exchange_strong(expected, signal);
  try {
    (first ? on_stop_ : on_kill_)(signal);
  } catch (...) {
    // Nowhere to report it but standard error (this is the signal thread, or with --tty a job's
    // thread); the stop itself has happened.
    constexpr char message[] = "tasktree-run: error while handling a signal\n";
    [[maybe_unused]] const auto written = ::write(STDERR_FILENO, message, sizeof message - 1);
  }
}

}  // namespace tasktree_run
