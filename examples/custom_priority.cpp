// Custom priority: "largest first".
//
// Among the jobs that are ready to start, tasktree submits the one with the smallest priority key
// (docs/semantics.md §4.5). By default the key is the dataset name. Here the key is the negated
// size of the dataset, so the largest ready dataset goes first, which is how you would schedule,
// say, replications when the long ones should not end up last.
//
// Two rules still apply on top of the key:
//   - ties break by name: two datasets of the same size start in name order;
//   - parents still come before children: a huge child waits for its small parent, and only then
//     competes with the jobs that are ready at that moment.
//
// One worker and the inline `SynchronousExecutor` make the order deterministic: scratch,
// scratch/tmp, tank, tank/media, tank/backups, tank/backups/old, tank/home, then alice before bob
// on their tie (tests/test_examples.cpp checks it). With more workers the rule is the same, but
// which jobs are ready depends on which finished.

#include <tasktree/tasktree.hpp>

#include <fmt/core.h>

#include <cstdint>
#include <cstdlib>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

int main() {
  // Dataset sizes in GiB; `std::less<>` allows looking them up by `std::string_view`.
  const std::map<std::string, std::int64_t, std::less<>> sizes{
      {"scratch", 50},          {"scratch/tmp", 700},       {"tank", 5},
      {"tank/backups", 900},    {"tank/backups/old", 2000}, {"tank/home", 300},
      {"tank/home/alice", 120}, {"tank/home/bob", 120},     {"tank/media", 1500},
  };
  const auto size = [&sizes](std::string_view dataset) { return sizes.find(dataset)->second; };
  std::vector<std::string> datasets;
  for (const auto& [name, gib] : sizes) datasets.push_back(name);

  tasktree::ParallelTaskTree<tasktree::SynchronousExecutor> tree({
      .datasets = datasets,
      .process_dataset =
          [&](std::string_view dataset, std::int64_t submit_count) {
            fmt::print("{:>2}. {:<18} {:>5} GiB\n", submit_count, dataset, size(dataset));
            return tasktree::CompletionCallbackResult{.no_skip = true, .fail = false};
          },
      // Any callable returning a totally ordered key works: an integer, a double, a string, a
      // std::tuple of those... It is called once per job, when the job becomes ready. Note that
      // the sizes are signed: negating an unsigned size would not reverse the order.
      .priority = [&](std::string_view dataset) { return -size(dataset); },
      .max_workers = 1,
  });
  fmt::print("Largest ready dataset first:\n");
  return tree.process_datasets_in_parallel() ? EXIT_FAILURE : EXIT_SUCCESS;
}
