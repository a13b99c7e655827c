#pragma once
// The comparison: the same parent-before-child dependencies run by a oneTBB flow graph, written the
// way a user would write it best (see tbb_flow_graph.cpp).

#include "workloads.hpp"

#include <cstddef>
#include <string>
#include <vector>

namespace bench {

/// What each flow-graph node runs.
enum class JobKind { empty, sleep, spin };

/// Builds the graph of `sorted` (names of `workload`) and runs it with `workers` threads; returns
/// the end-to-end seconds (build + run). `micros` is the duration of sleeping or spinning jobs.
double run_tbb_flow_graph(Workload workload, const std::vector<std::string>& sorted, int workers,
                          JobKind job = JobKind::empty, long micros = 0);

/// The oneTBB version, e.g. "2021.8".
std::string tbb_version();

}  // namespace bench
