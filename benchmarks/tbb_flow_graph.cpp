// oneTBB flow graph, with the best code a user would write for these workloads: the input is
// already sorted; one pass keeps a stack of ancestors to find each job's nearest ancestor job; one
// `continue_node` per job, stored in a deque (nodes cannot move); an edge from parent to child; the
// root jobs are started with `try_put`. W3's barriers become explicit edges from each replication
// to the prune job and from the prune job to the monitor job, which is what the barrier means there.

#include "tbb_flow_graph.hpp"

#include <oneapi/tbb/flow_graph.h>
#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/task_arena.h>
#include <oneapi/tbb/version.h>

#include <chrono>
#include <deque>
#include <string_view>
#include <utility>

namespace bench {

namespace {

using Node = tbb::flow::continue_node<tbb::flow::continue_msg>;

/// True if `ancestor` names a dataset above `name`. (The stack below relies on sorted order, which
/// holds for these workloads: none uses a character that sorts before '/'.)
bool is_above(std::string_view ancestor, std::string_view name) {
  return name.size() > ancestor.size() && name[ancestor.size()] == '/' && name.starts_with(ancestor);
}

template <class Job>
void build_and_run(Workload workload, const std::vector<std::string>& sorted, Job job) {
  tbb::flow::graph graph;
  std::deque<Node> nodes;
  std::vector<Node*> roots;
  const auto add = [&](std::string_view name) -> Node& {
    return nodes.emplace_back(graph, [name, &job](const tbb::flow::continue_msg&) { job(name); });
  };
  if (workload == Workload::job_runner) {
    Node* snapshot = nullptr;
    Node* prune = nullptr;
    std::vector<Node*> replications;
    for (const std::string& name : sorted) {
      Node& node = add(name);
      if (name.ends_with("/~/~/monitor")) {
        tbb::flow::make_edge(*prune, node);
      } else if (name.ends_with("/~/prune")) {
        for (Node* replication : replications) tbb::flow::make_edge(*replication, node);
        prune = &node;
      } else if (name.find("/replicate_to_") != std::string::npos) {
        tbb::flow::make_edge(*snapshot, node);
        replications.push_back(&node);
      } else {
        snapshot = &node;
        replications.clear();
        roots.push_back(&node);
      }
    }
  } else {
    std::vector<std::pair<std::string_view, Node*>> ancestors;
    for (const std::string& name : sorted) {
      while (!ancestors.empty() && !is_above(ancestors.back().first, name)) ancestors.pop_back();
      Node& node = add(name);
      if (ancestors.empty()) {
        roots.push_back(&node);
      } else {
        tbb::flow::make_edge(*ancestors.back().second, node);
      }
      ancestors.emplace_back(name, &node);
    }
  }
  for (Node* root : roots) root->try_put(tbb::flow::continue_msg());
  graph.wait_for_all();
}

}  // namespace

double run_tbb_flow_graph(Workload workload, const std::vector<std::string>& sorted, int workers, JobKind job,
                          long micros) {
  tbb::global_control parallelism(tbb::global_control::max_allowed_parallelism, static_cast<std::size_t>(workers));
  const auto start = std::chrono::steady_clock::now();
  tbb::task_arena arena(workers);
  arena.execute([&] {
    switch (job) {
      case JobKind::empty: build_and_run(workload, sorted, [](std::string_view name) { empty_job(name); }); break;
      case JobKind::sleep: build_and_run(workload, sorted, [micros](std::string_view) { sleep_job(micros); }); break;
      case JobKind::spin: build_and_run(workload, sorted, [micros](std::string_view) { spin_job(micros); }); break;
    }
  });
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

std::string tbb_version() { return TBB_VERSION_STRING; }

}  // namespace bench
