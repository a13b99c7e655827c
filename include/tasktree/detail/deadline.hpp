#pragma once
/// @file detail/deadline.hpp
/// @brief Deadlines on the nanosecond clock without overflow.

#include <cstdint>
#include <limits>

namespace tasktree::detail {

/// The time `delay` nanoseconds after `time`: a negative delay counts as zero, and a deadline past
/// the end of `std::int64_t` is the far future (`max()`), never a wrapped-around past.
[[nodiscard]] constexpr std::int64_t deadline_after(std::int64_t time, std::int64_t delay) noexcept {
  if (delay <= 0) return time;
  return time > std::numeric_limits<std::int64_t>::max() - delay ? std::numeric_limits<std::int64_t>::max()
                                                                 : time + delay;
}

}  // namespace tasktree::detail
