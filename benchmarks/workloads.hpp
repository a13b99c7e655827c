#pragma once
// The benchmark's workloads: how their dataset names are generated, and the job each runs.

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace bench {

enum class Workload {
  flat,            // W1: tank/group_XXXX/host_YYYY/<leaf>, 100 characters, random; ~3 trie nodes per job
  flat_scattered,  // W1s: W1's names, their heap buffers allocated in random order (scattered in memory)
  tree,            // W2: every node a dataset; root "pool", fanout 10, breadth first
  job_runner,      // W3: host/snapshot, its replications, then ~/prune and ~/~/monitor (barriers)
};

/// "W1", "W1s", "W2" or "W3".
std::string_view label(Workload workload);
/// A one-line description for the report.
std::string_view description(Workload workload);

/// Replication destinations per host in W3.
inline constexpr std::size_t replications_per_host = 4;

/// The `count` dataset names of `workload`, sorted (as both tasktree and the oneTBB comparison
/// receive them) and unique. Deterministic. The strings' heap buffers lie in the workload's layout:
/// allocated in the vector's order (adjacent names, adjacent buffers) for every workload but W1s,
/// whose buffers are allocated in a random order, so that reading the names in order misses the
/// cache on every name, as with names a caller collected from many places before sorting them.
std::vector<std::string> generate(Workload workload, std::size_t count);

/// A copy of `names` (as `generate` returned them for `workload`) whose buffers lie in the same
/// layout: what each tasktree repetition receives, since tasktree consumes its input. A plain
/// vector copy would allocate W1s's buffers in order again.
std::vector<std::string> copy_names(Workload workload, const std::vector<std::string>& names);

/// What a job in W1-W3 does: nothing, behind a call the compiler cannot remove, so the figures are
/// the scheduler's own cost.
void empty_job(std::string_view dataset) noexcept;

/// What a job in W4 does: sleep `micros` microseconds, or spin (busy-wait on the steady clock)
/// that long.
void sleep_job(long micros) noexcept;
void spin_job(long micros) noexcept;

}  // namespace bench
