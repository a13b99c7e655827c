// Quickstart: the smallest useful tasktree program.
//
// Five jobs named by paths. A job starts only after the job above it on its path has finished
// ("a/b" after "a", "a/b/c" after "a/b"), jobs in unrelated subtrees run in parallel, and never
// more than `max_workers` run at once. One possible output:
//
//   a
//   e
//   a/b
//   a/d
//   a/b/c
//   failed: false
//
// "e" may print before or after "a"'s children, but "a" always precedes "a/b" and "a/d", and
// "a/b" always precedes "a/b/c".

#include <tasktree/tasktree.hpp>

#include <fmt/core.h>

#include <cstdint>
#include <cstdlib>
#include <string_view>

int main() {
  tasktree::ParallelTaskTree tree({
      .datasets = {"a", "a/b", "a/b/c", "a/d", "e"},
      // The job: runs on a worker thread. It returns a completion callback, which the coordinator
      // runs later, one callback at a time, to learn whether the job's subtree may continue
      // (`no_skip`) and whether the run counts as failed (`fail`): docs/semantics.md §4.6.
      .process_dataset =
          [](std::string_view dataset, std::int64_t /*submit_count*/) {
            fmt::print("{}\n", dataset);
            return tasktree::CompletionCallback(
                [](tasktree::InFlight&) { return tasktree::CompletionCallbackResult{.no_skip = true, .fail = false}; });
          },
      .max_workers = 2,
  });
  bool failed = tree.process_datasets_in_parallel();
  fmt::print("failed: {}\n", failed);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
