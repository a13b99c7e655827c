// Cooperative stop: ending a run early, cleanly.
//
// `process_datasets_in_parallel(stop_token)` watches the token (docs/semantics.md §4.8). Once stop
// is requested, the scheduler submits nothing more, signals the stop token that running jobs
// received (the three-argument form of `process_dataset`), waits until every one of them has
// returned, and returns true because work was left. Nothing is killed: a job notices the request at
// its next check and returns, so it can leave things tidy.
//
// Here a thread requests stop after about 100 ms. Quick jobs have finished by then, long ones
// notice the request and return early, and the jobs that had not started never do. (Which job
// lands in which group depends on timing; tests/test_examples.cpp checks the parts that do not.)

#include <tasktree/tasktree.hpp>

#include <fmt/format.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <map>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

/// How many 10 ms steps each job takes; -1 (like following a log) ends only when asked to stop.
const std::map<std::string, int, std::less<>> steps{
    {"backup/db", 5},    {"backup/db/verify", 3}, {"backup/files", 40}, {"backup/files/verify", 3},
    {"follow/logs", -1}, {"report", 5},           {"report/email", 1},
};

int main() {
  std::vector<std::string> datasets;
  for (const auto& [name, count] : steps) datasets.push_back(name);

  tasktree::ParallelTaskTree tree({
      .datasets = datasets,
      .process_dataset =
          [](std::string_view dataset, std::int64_t /*submit_count*/, std::stop_token stop) {
            const int total = steps.find(dataset)->second;
            int done = 0;
            while (done != total && !stop.stop_requested()) {  // small steps, checking between them
              std::this_thread::sleep_for(10ms);
              ++done;
            }
            fmt::print("{:<20} {} after {} steps\n", dataset, done == total ? "finished" : "stopped", done);
            // A job that did not finish says so: its subtree must not continue.
            return tasktree::CompletionCallbackResult{.no_skip = done == total, .fail = false};
          },
      .max_workers = 3,
  });

  std::stop_source source;
  std::jthread stopper([&source] {
    std::this_thread::sleep_for(100ms);
    fmt::print("---- requesting stop ----\n");
    source.request_stop();
  });
  const bool work_left = tree.process_datasets_in_parallel(source.get_token());
  const tasktree::RunStats& stats = tree.last_run_stats();
  fmt::print("run returned {}: {} jobs started, {} never started\n", work_left, stats.started, stats.cancelled);
  return EXIT_SUCCESS;
}
