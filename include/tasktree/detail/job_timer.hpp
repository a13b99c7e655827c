#pragma once
/// @file detail/job_timer.hpp
/// @brief How a run times its jobs (for the journal and the observer): with the run's `Clock`, or,
/// when that clock is the steady clock the tree made itself (`Options::clock` left empty) and the
/// kernel keeps time with the CPU's time-stamp counter, with the counter itself, converted to the
/// clock's nanoseconds on the coordinator.
///
/// Why: a job is timed with two readings, and on the machine of docs/performance.md
/// `steady_clock::now()` costs about 30 ns (the vDSO reads the counter, orders the read and scales
/// it), a third of what an inline run of W2 costs per job without a journal; reading the counter
/// costs about 11 ns. The conversion happens once per completion, on the coordinator, by
/// interpolating between two (counter, clock) pairs; it is as exact as the clock readings it
/// starts from (see `TickCalibration`).

#include <tasktree/clock.hpp>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>

// The counter is read with the compiler's builtin, not through <x86intrin.h>: that header pulls in
// every intrinsic and added about a third of a second to each translation unit that includes
// tasktree.hpp.
#if defined(__x86_64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__))
#define TASKTREE_DETAIL_HAS_TICKS 1
#else
#define TASKTREE_DETAIL_HAS_TICKS 0
#endif

namespace tasktree::detail {

/// The CPU's time-stamp counter, where it is trustworthy.
struct Ticks {
  /// True if jobs can be timed with `read()`: on x86-64 Linux, when the kernel's own clocksource is
  /// the TSC, which Linux chooses only if the counter is invariant (constant rate, also in deep
  /// sleep) and synchronised across CPUs, so that readings on different threads compare. Looked up
  /// once per process.
  static bool usable() noexcept {
#if TASKTREE_DETAIL_HAS_TICKS
    static const bool usable = [] {
      std::FILE* file = std::fopen("/sys/devices/system/clocksource/clocksource0/current_clocksource", "re");
      if (file == nullptr) return false;
      char name[32] = {};
      const bool read = std::fgets(name, sizeof name, file) != nullptr;
      std::fclose(file);
      return read && std::strcmp(name, "tsc\n") == 0;
    }();
    return usable;
#else
    return false;
#endif
  }

  /// The counter (only if `usable()`). Not ordered against the code around it: the error is a few
  /// nanoseconds, against a job that is called through a `std::function` in between.
  static std::int64_t read() noexcept {
#if TASKTREE_DETAIL_HAS_TICKS
    return static_cast<std::int64_t>(__builtin_ia32_rdtsc());
#else
    return 0;
#endif
  }
};

/// Converts counter readings to nanoseconds on a run's clock, on the coordinator (one thread at a
/// time). It holds two (counter, clock) pairs: the run's start and a later one, and maps a
/// reading by the straight line through them. A reading later than the second pair by more than
/// a 64th of the distance between the pairs takes a new second pair first, so conversions
/// interpolate, or extrapolate over a short stretch: the rate's error is the clock's read jitter
/// divided by the distance between the pairs, and so is the error of a converted duration that
/// fits between them. The first pair moves up to the second once they are 2^32 ticks (about two
/// seconds) apart, so that a slewed clock (NTP) is followed. New pairs are taken geometrically
/// less often: about 900 clock readings for a run of a second, whatever its number of jobs.
class TickCalibration {
 public:
  /// The run's start: the first pair.
  void start(Clock& clock) {
    first_ = second_ = take(clock);
    rate_ = 1.0;
    refresh_after_ = std::numeric_limits<std::int64_t>::min();  // the first conversion takes a pair
  }

  /// Converts a job's start reading and its elapsed ticks (`start + elapsed` is no later than now)
  /// to nanoseconds on the clock: the start in place, and the elapsed time.
  void convert(Clock& clock, std::int64_t& start, std::int64_t& elapsed) {
    if (start + elapsed > refresh_after_) recalibrate(clock);
    start = first_.nanos + static_cast<std::int64_t>(static_cast<double>(start - first_.ticks) * rate_);
    elapsed = elapsed <= 0 ? 0 : static_cast<std::int64_t>(static_cast<double>(elapsed) * rate_);
  }

 private:
  struct Pair {
    std::int64_t ticks = 0;
    std::int64_t nanos = 0;
  };

  /// A clock reading and the counter at the same moment: the middle of two counter readings, of
  /// the tightest of a few tries (a thread preempted between them would make the pair off by up
  /// to half its time off the CPU).
  static Pair take(Clock& clock) {
    Pair best;
    std::int64_t best_width = -1;
    for (int attempt = 0; attempt < 4; ++attempt) {
      const std::int64_t before = Ticks::read();
      const std::int64_t nanos = clock.now_nanos();
      const std::int64_t after = Ticks::read();
      const std::int64_t width = after - before;
      if (best_width < 0 || width < best_width) {
        best = Pair{.ticks = before + width / 2, .nanos = nanos};
        best_width = width;
      }
      if (width < tight_ticks) break;
    }
    return best;
  }

  /// Two counter readings around a clock reading this close (a few microseconds) are tight enough.
  static constexpr std::int64_t tight_ticks = std::int64_t{1} << 13;

  void recalibrate(Clock& clock) {
    if (second_.ticks - first_.ticks > (std::int64_t{1} << 32)) first_ = second_;
    second_ = take(clock);
    const std::int64_t ticks = second_.ticks - first_.ticks;
    // Until the pairs are apart (a first job of a few nanoseconds), one tick counts as one
    // nanosecond: the figures are then as small as the jitter either way.
    rate_ = ticks > 0 && second_.nanos > first_.nanos
                ? static_cast<double>(second_.nanos - first_.nanos) / static_cast<double>(ticks)
                : 1.0;
    refresh_after_ = second_.ticks + ticks / 64;
  }

  Pair first_;
  Pair second_;
  double rate_ = 1.0;  // nanoseconds per tick
  std::int64_t refresh_after_ = std::numeric_limits<std::int64_t>::min();  // a later reading takes a new pair
};

}  // namespace tasktree::detail
