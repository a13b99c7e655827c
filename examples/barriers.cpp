// Barriers: a job that waits for a whole subtree, not just for the jobs above it.
//
// A nightly backup plan for two hosts. For each host X in {h1, h2}:
//
//   X/snapshot                         take a snapshot
//   X/snapshot/replicate_to_backup1    send it to backup1   } in parallel, once the snapshot exists
//   X/snapshot/replicate_to_backup2    send it to backup2   }
//   X/snapshot/~/prune                 delete old snapshots, only once BOTH replications succeeded
//   X/snapshot/~/~/monitor             tell monitoring the night went well, only after prune
//
// `~` is the barrier component (docs/semantics.md §5). Parent-before-child alone would start
// `prune` right after `snapshot`; the barrier makes everything below `X/snapshot/~` wait until
// every other job below `X/snapshot` has completed with `no_skip = true`. Barriers nest: the second
// `~` waits for the rest of `X/snapshot/~`, i.e. for `prune`.
//
// Tonight backup2 is unreachable from h2: that replication completes with `no_skip = false`, so
// h2's barrier never opens and h2's prune and monitor never run, while h1's plan is unaffected.
// (tests/test_examples.cpp checks these orderings.)

#include <tasktree/tasktree.hpp>

#include <fmt/format.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <thread>

int main() {
  using namespace std::chrono_literals;
  const auto start = std::chrono::steady_clock::now();
  const auto print = [&](std::string_view what, std::string_view job) {
    const std::chrono::duration<double, std::milli> elapsed = std::chrono::steady_clock::now() - start;
    fmt::print("[{:5.1f} ms] {} {}\n", elapsed.count(), what, job);
  };

  tasktree::ParallelTaskTree tree({
      .datasets = {"h1/snapshot", "h1/snapshot/replicate_to_backup1", "h1/snapshot/replicate_to_backup2",
                   "h1/snapshot/~/prune", "h1/snapshot/~/~/monitor", "h2/snapshot", "h2/snapshot/replicate_to_backup1",
                   "h2/snapshot/replicate_to_backup2", "h2/snapshot/~/prune", "h2/snapshot/~/~/monitor"},
      .process_dataset =
          [&](std::string_view job, std::int64_t /*submit_count*/) {
            print("start ", job);
            std::this_thread::sleep_for(job.ends_with("backup2") ? 15ms : 5ms);  // prune visibly waits
            const bool ok = job != "h2/snapshot/replicate_to_backup2";
            print(ok ? "done  " : "FAILED", job);
            // no_skip = false keeps the barriers above this job closed; fail = true makes the run
            // report failure. The two are independent: here a failed replication does both.
            return tasktree::CompletionCallbackResult{.no_skip = ok, .fail = !ok};
          },
      .max_workers = 4,
  });
  const bool failed = tree.process_datasets_in_parallel();
  fmt::print("run failed: {}; jobs that never ran: {}\n", failed, tree.last_run_stats().skipped);
  return EXIT_SUCCESS;  // the failed replication is what this example shows, not an error
}
