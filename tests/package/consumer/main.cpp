// Uses tasktree through its installed or vendored CMake target; exits 0 if a small run works.
#include <tasktree/tasktree.hpp>

#include <atomic>

int main() {
  std::atomic<int> ran = 0;
  tasktree::ParallelTaskTree tree({
      .datasets = {"a", "a/b", "c"},
      .process_dataset =
          [&ran](std::string_view, std::int64_t) {
            ++ran;
            return tasktree::CompletionCallbackResult{.no_skip = true, .fail = false};
          },
      .max_workers = 2,
  });
  const bool failed = tree.process_datasets_in_parallel();
  return !failed && ran == 3 ? 0 : 1;
}
