#pragma once
// Counts the bytes allocated (malloc and the rest, which operator new calls) while counting is on,
// so the benchmark can report the library's own memory per dataset. The replaced functions live in
// allocation_counter.cpp and apply to the whole benchmark binary (glibc only).

#include <cstddef>

namespace bench {

struct AllocationCounts {
  std::size_t peak_bytes = 0;   // largest live total seen while counting (live at start counts as 0)
  std::size_t total_bytes = 0;  // sum of all sizes allocated while counting
  std::size_t allocations = 0;  // number of allocations while counting
};

/// Starts counting from zero. Memory allocated before and freed during counting lowers the live
/// total below zero, which the peak never reports.
void start_counting_allocations() noexcept;
/// Stops counting and returns what was seen since `start_counting_allocations()`.
AllocationCounts stop_counting_allocations() noexcept;

}  // namespace bench
