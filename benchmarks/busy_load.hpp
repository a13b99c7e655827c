#pragma once
// CPU-bound background processes that run beside the measured repetitions (tasktree-bench --busy),
// so that the figures show how the scheduler fares when it does not have the machine to itself.
//
// Each is a forked child spinning on a volatile counter. None may outlive the benchmark: a
// `BusyLoad` kills (SIGKILL) and reaps its children when it is destroyed, and
// `install_busy_load_cleanup()` makes every other exit path do the same: `std::exit`, an uncaught
// exception (`std::terminate`), and SIGINT, SIGTERM, SIGHUP, SIGQUIT and SIGPIPE, after which the
// benchmark dies of the signal as it would have. Last, each child asks the kernel for SIGKILL when
// its parent dies (PR_SET_PDEATHSIG), which covers even a SIGKILL of the benchmark.

#include <cstddef>

namespace bench {

/// The most busy processes one `BusyLoad` starts.
inline constexpr int max_busy_processes = 256;

class BusyLoad {
 public:
  /// Starts `processes` busy children (0: none) and returns once each of them is running. Throws
  /// std::system_error if one cannot be started (after killing those that were). Call it from the
  /// main thread only: PR_SET_PDEATHSIG fires when the thread that forked the child exits.
  explicit BusyLoad(int processes);
  /// Kills and reaps the children.
  ~BusyLoad();
  BusyLoad(const BusyLoad&) = delete;
  BusyLoad& operator=(const BusyLoad&) = delete;
  BusyLoad(BusyLoad&&) = delete;
  BusyLoad& operator=(BusyLoad&&) = delete;

 private:
  int processes_;
};

/// Installs the handlers that kill every busy child on the exit paths above. Idempotent.
void install_busy_load_cleanup();

/// How many busy children are alive now (0 between measured blocks).
std::size_t busy_processes_running() noexcept;

}  // namespace bench
