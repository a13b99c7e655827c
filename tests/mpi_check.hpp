#pragma once
// Checks for the MPI test programs that a driver starts under a launcher, outside Catch (their
// ranks die, or get signalled, on purpose): each failed check prints one "FAILED: ..." line, which
// the ctest entry looks for, and counts.

#include <fmt/format.h>

#include <cstdio>
#include <string_view>

namespace mpi_check {

/// How many checks failed on this rank.
inline int failures = 0;

/// Counts and reports a check that failed.
inline void check(bool ok, std::string_view what) {
  if (ok) return;
  ++failures;
  fmt::print(stderr, "FAILED: {}\n", what);
}

}  // namespace mpi_check
