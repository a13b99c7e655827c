#pragma once
// The benchmark's workloads: how their dataset names are generated, and the job each runs.

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace bench {

enum class Workload {
  flat,        // W1: tank/group_XXXX/host_YYYY/<leaf>, 100 characters, random; ~3 trie nodes per job
  tree,        // W2: every node a dataset; root "pool", fanout 10, breadth first
  job_runner,  // W3: host/snapshot, its replications, then ~/prune and ~/~/monitor (barriers)
};

/// "W1", "W2" or "W3".
std::string_view label(Workload workload);
/// A one-line description for the report.
std::string_view description(Workload workload);

/// Replication destinations per host in W3.
inline constexpr std::size_t replications_per_host = 4;

/// The `count` dataset names of `workload`, sorted (as both tasktree and the oneTBB comparison
/// receive them) and unique. Deterministic.
std::vector<std::string> generate(Workload workload, std::size_t count);

/// What a job in W1-W3 does: nothing, behind a call the compiler cannot remove, so the figures are
/// the scheduler's own cost.
void empty_job(std::string_view dataset) noexcept;

/// What a job in W4 does: sleep `micros` microseconds, or spin (busy-wait on the steady clock)
/// that long.
void sleep_job(long micros) noexcept;
void spin_job(long micros) noexcept;

}  // namespace bench
