#pragma once
/// @file detail/spin_wait.hpp
/// @brief Bounded, adaptive spinning before a thread parks: the cheap half of "spin, then park".
///
/// Handing work between threads through a mutex and a condition variable costs a futex wake and a
/// context switch, several microseconds, each way; with jobs that take nanoseconds that is the
/// whole cost of a run. A thread that expects its event soon therefore first polls for it for a
/// short while. The poll is bounded, so a thread never burns a core while jobs take real time, and
/// adaptive: a spin pays off only if the event comes sooner than a sleep and a wake would cost, so
/// after a spin that saw its event within `quick_rounds` the budget goes to its maximum, and after
/// a spin that waited longer or gave up it halves, down to a fraction of a microsecond. Threads
/// whose jobs sleep for milliseconds thus soon all but stop spinning, while a pool running jobs
/// that take nanoseconds hands work over without system calls.

#include <cstdint>

namespace tasktree::detail {

/// Tells the CPU that this is a spin loop (saves power, leaves the core's pipeline to a sibling
/// hyper-thread).
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

/// The spin budget of one waiting thread (not shared between threads).
class SpinWait {
 public:
  /// Polls `ready()` for up to the current budget; returns true as soon as it holds, false if the
  /// budget ran out (the caller then parks). The spin never yields to the scheduler: a thread that
  /// calls `sched_yield` in a loop takes CPU time from other processes on a busy machine, and on an
  /// idle one it is only a slower pause. A spin that fails halves the budget, so a thread whose
  /// events come late soon all but stops spinning and parks at once.
  template <class Ready>
  bool spin(Ready&& ready) noexcept {
    for (std::uint32_t round = 0; round < budget_; ++round) {
      if (ready()) {
        budget_ = round < quick_rounds ? max_rounds : shrunk();
        return true;
      }
      cpu_relax();
    }
    budget_ = shrunk();
    return false;
  }

 private:
  [[nodiscard]] std::uint32_t shrunk() const noexcept { return budget_ / 2 < min_rounds ? min_rounds : budget_ / 2; }

  // A round is one poll and one pause: some 10 ns on older x86, some 40 ns where `pause` takes
  // about 140 cycles. So `quick_rounds` is one to five microseconds, about what parking and waking
  // a thread costs; the maximum budget some tens of microseconds, the minimum a fraction of one.
  static constexpr std::uint32_t min_rounds = 16;
  static constexpr std::uint32_t quick_rounds = 128;
  static constexpr std::uint32_t max_rounds = 1024;
  std::uint32_t budget_ = max_rounds;
};

}  // namespace tasktree::detail
