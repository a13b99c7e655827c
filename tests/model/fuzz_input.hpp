#pragma once
// How the fuzzer's bytes become a scheduling problem, and the checks run on it. Shared by the
// libFuzzer target (fuzz/fuzz_tasktree.cpp) and by tests/test_model.cpp, which replays the seed
// corpus (fuzz/corpus/) in every build, so the decoding is compiled and exercised everywhere.
//
// Layout: the first byte picks the kind of input.
// - Raw (first byte % 8 == 0): three bytes choose the barrier name, enable_barriers and max_workers
//   (0 to 4, so 0 is invalid), one byte whether priorities are used; the rest are dataset names
//   separated by '\n', any bytes at all (validation gets exercised); outcomes and priority keys are
//   derived from the names' bytes.
// - Structured (otherwise): the bytes drive `random_case` and then the interleaving executor.
// Both kinds run inline (compared with the model's exact prediction), then interleaved, and that
// run may be disturbed by a stop or by exceptions from user callables (`fuzz_disturbance`).

#include "library_run.hpp"
#include "random_case.hpp"
#include "reference_model.hpp"

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace tasktree_model {

/// A case whose dataset names come straight from the bytes.
inline Case raw_case(ByteSource& source) {
  Case c;
  static const char* const barrier_names[] = {"~", "-", "a", "", "a/b", "~~"};
  c.barrier_name = barrier_names[source.pick(6)];
  const std::size_t barriers = source.pick(3);
  if (barriers > 0) c.enable_barriers = barriers == 1;
  c.max_workers = static_cast<int>(source.pick(5));
  const bool keyed = source.pick(2) == 1;
  std::string rest = source.rest();
  std::size_t start = 0;
  while (start <= rest.size() && c.datasets.size() < 64) {
    const std::size_t end = std::min(rest.find('\n', start), rest.size());
    c.datasets.push_back(rest.substr(start, end - start));
    start = end + 1;
  }
  std::map<std::string, int, std::less<>> keys;
  for (const std::string& name : c.datasets) {
    unsigned sum = 0;
    for (const char ch : name) sum += static_cast<unsigned char>(ch);
    keys[name] = static_cast<int>(sum % 3);
    if (sum % 7 == 3) c.outcomes[name] = Outcome{.no_skip = false, .fail = false};
    if (sum % 11 == 5) c.outcomes[name] = Outcome{.no_skip = sum % 2 == 0, .fail = true};
  }
  if (keyed) c.priority = std::move(keys);
  return c;
}

/// How the interleaved run is disturbed: a stop at some moment, or one or two exceptions from
/// user callables (then the tree runs a second time, undisturbed), or nothing; sometimes paced.
inline CheckOptions fuzz_disturbance(ByteSource& source, std::size_t jobs) {
  CheckOptions options{.mode = Mode::interleaved, .runs = 2, .pacing = source.chance(25), .logging = source.chance(10)};
  const std::size_t kind = source.pick(4);
  if (kind == 1) {
    static constexpr StopAt kinds[] = {StopAt::before_run, StopAt::in_job, StopAt::in_callback, StopAt::in_priority,
                                       StopAt::in_clock_wait};
    options.stop = {kinds[source.pick(5)], 1 + source.pick(jobs + 1)};
    options.pacing = options.pacing || options.stop.at == StopAt::in_clock_wait;
  }
  for (std::size_t i = 0; kind >= 2 && i < kind - 1; ++i) {
    const auto site = static_cast<Site>(source.pick(site_count));
    options.faults.push_back(
        Fault{.site = site, .call = 1 + source.pick(2 * jobs + 2), .std_exception = source.pick(5) != 0});
    options.pacing = options.pacing || site == Site::interval || site == Site::clock_wait;
    options.logging = options.logging || site == Site::log;
  }
  return options;
}

/// Decodes `data`, runs the case through the library and returns every disagreement with the
/// model, each prefixed with the case.
inline std::vector<std::string> check_fuzz_input(const std::uint8_t* data, std::size_t size) {
  ByteSource source(data, size);
  const bool raw = source.pick(8) == 0;
  CaseLimits limits;
  limits.max_nodes = 60;
  limits.max_depth = 6;
  limits.invalid_percent = 5;
  const Case c = raw ? raw_case(source) : random_case(source, limits);
  const CheckOptions disturbed = fuzz_disturbance(source, c.datasets.size());
  const Decide decide = [&source](std::size_t n) { return source.pick(n); };
  std::vector<std::string> problems = check_case(c, CheckOptions{.mode = Mode::inline_jobs}, decide);
  if (problems.empty()) problems = check_case(c, disturbed, decide);
  if (!problems.empty()) {
    std::string how = "interleaved";
    if (disturbed.stop.at != StopAt::never) how += ", stop kind " + std::to_string(static_cast<int>(disturbed.stop.at));
    for (const Fault& fault : disturbed.faults) how += std::string(", fault in ") + to_string(fault.site);
    problems.insert(problems.begin(), describe(c) + "\n" + how);
  }
  return problems;
}

}  // namespace tasktree_model
