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
#include <thread>

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
  /// budget ran out (the caller then parks). Every few rounds the thread yields, so a spinner does
  /// not keep the thread it waits for off the CPU on a machine with fewer cores than threads.
  template <class Ready>
  bool spin(Ready&& ready) noexcept {
    for (std::uint32_t round = 0; round < budget_; ++round) {
      if (ready()) {
        budget_ = round < quick_rounds ? max_rounds : shrunk();
        return true;
      }
      if (round % yield_every == yield_every - 1) {
        std::this_thread::yield();
      } else {
        cpu_relax();
      }
    }
    budget_ = shrunk();
    return false;
  }

 private:
  [[nodiscard]] std::uint32_t shrunk() const noexcept { return budget_ / 2 < min_rounds ? min_rounds : budget_ / 2; }

  // A round is one poll and one pause (some 15 ns on current x86) or, every `yield_every` rounds,
  // a yield (a system call, a few hundred ns when no other thread wants the core). So
  // `quick_rounds` is a few microseconds, about what parking and waking a thread costs; the
  // maximum budget is some tens of microseconds, the minimum a fraction of one.
  static constexpr std::uint32_t min_rounds = 16;
  static constexpr std::uint32_t quick_rounds = 256;
  static constexpr std::uint32_t max_rounds = 2048;
  static constexpr std::uint32_t yield_every = 64;
  std::uint32_t budget_ = max_rounds;
};

}  // namespace tasktree::detail
