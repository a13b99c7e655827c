#pragma once
// Seeds for the randomized tests, and the loop that runs their random cases so that each failure
// prints how to replay it:
//   TASKTREE_TEST_SEED=<seed> TASKTREE_TEST_CASES=1 build/default/tests/<test> "<test name>"
// TASKTREE_TEST_SEED alone fixes the first seed of a run (by default it is random);
// TASKTREE_TEST_CASES overrides how many cases each randomized test runs.

#include "catch.hpp"
#include "random_case.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>

namespace tasktree_model {

/// The first seed of a run: TASKTREE_TEST_SEED if set, else a random one.
inline std::uint64_t first_seed() {
  if (const char* text = std::getenv("TASKTREE_TEST_SEED")) return std::strtoull(text, nullptr, 0);
  std::random_device device;
  return (static_cast<std::uint64_t>(device()) << 32) ^ device();
}

/// How many cases a randomized test runs: TASKTREE_TEST_CASES if set, else `fallback`.
inline std::size_t case_count(std::size_t fallback) {
  if (const char* text = std::getenv("TASKTREE_TEST_CASES")) return std::strtoull(text, nullptr, 0);
  return fallback;
}

/// Runs `count` random cases (see `case_count`); case i draws from a source seeded `first + i`, so
/// any one replays alone. `check(source)` draws a case, runs it and returns what went wrong, empty
/// if nothing did; each such report fails the test with the seed that replays it. Stops after
/// three failing cases.
template <class Check>
void check_seeded_cases(std::size_t count, Check&& check) {
  const std::uint64_t first = first_seed();
  count = case_count(count);
  std::size_t failures = 0;
  std::size_t checked = 0;
  for (std::size_t i = 0; i < count && failures < 3; ++i, ++checked) {
    const std::uint64_t seed = first + i;
    RandomSource source(seed);
    const std::string report = check(source);
    if (!report.empty()) {
      ++failures;
      FAIL_CHECK("replay: TASKTREE_TEST_SEED=" + std::to_string(seed) + " TASKTREE_TEST_CASES=1\n" + report);
    }
  }
  INFO("first seed " << first << ", " << checked << " cases");
  CHECK(failures == 0);
  CHECK(checked == count);
}

}  // namespace tasktree_model
