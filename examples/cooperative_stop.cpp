// Cooperative stop: ending a run early, cleanly.
//
// `process_datasets_in_parallel(stop_token)` watches the token. Once stop is requested, the
// scheduler submits nothing more, signals the stop token that running jobs received (the
// three-argument form of `process_dataset`), waits until every one of them has returned, and
// returns true because work was left. Nothing is killed: a job notices the request at its next
// check and returns, so it can leave things tidy.
//
// Here a separate thread requests stop after about 100 ms. Quick jobs finish before that, long
// ones notice the request and return early, and the jobs that had not started by then never do.
// (Exactly which job lands in which group depends on timing; the program only checks the parts
// that do not.)

#include <tasktree/tasktree.hpp>

#include <fmt/format.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <map>
#include <mutex>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace {

using namespace std::chrono_literals;

constexpr auto step = 10ms;
constexpr int until_stopped = -1;

/// How many steps each job takes; `until_stopped` jobs (like following a log) end only when asked.
const std::map<std::string, int, std::less<>> steps{
    {"backup/db", 5},           {"backup/db/verify", 3},        {"backup/files", 40},
    {"backup/files/verify", 3}, {"follow/logs", until_stopped}, {"report", 5},
    {"report/email", 1},
};

const auto program_start = std::chrono::steady_clock::now();

double elapsed_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - program_start).count();
}

}  // namespace

int main() {
  std::mutex outcomes_mutex;  // jobs run concurrently and record their outcome here
  std::map<std::string, std::string, std::less<>> outcomes;

  std::vector<std::string> datasets;
  for (const auto& [name, step_count] : steps) datasets.push_back(name);

  tasktree::ParallelTaskTree tree({
      .datasets = datasets,
      // The three-argument form: the job also receives the run's stop token.
      .process_dataset =
          [&](std::string_view dataset, std::int64_t /*submit_count*/, std::stop_token stop) {
            fmt::print("[{:6.1f} ms] start   {}\n", elapsed_ms(), dataset);
            const int total = steps.find(dataset)->second;
            int done = 0;
            // Small steps, checking for a stop request between them.
            while ((total == until_stopped || done < total) && !stop.stop_requested()) {
              std::this_thread::sleep_for(step);
              ++done;
            }
            const bool finished = done == total;
            std::string outcome = finished                 ? fmt::format("finished ({} steps)", done)
                                  : total == until_stopped ? fmt::format("stopped after {} steps", done)
                                                           : fmt::format("stopped early ({} of {} steps)", done, total);
            fmt::print("[{:6.1f} ms] {:<7} {}\n", elapsed_ms(), finished ? "finish" : "stopped", dataset);
            {
              std::lock_guard lock(outcomes_mutex);
              outcomes.emplace(dataset, std::move(outcome));
            }
            // After a stop the scheduler does not run completion callbacks any more, but a job
            // that did not finish should still say so: its subtree must not continue.
            return tasktree::CompletionCallbackResult{.no_skip = finished, .fail = false};
          },
      .max_workers = 3,
  });

  std::stop_source source;
  std::jthread stopper([&source] {
    std::this_thread::sleep_for(100ms);
    fmt::print("[{:6.1f} ms] ---- requesting stop ----\n", elapsed_ms());
    source.request_stop();
  });

  const bool result = tree.process_datasets_in_parallel(source.get_token());
  fmt::print("[{:6.1f} ms] run returned {} ({})\n", elapsed_ms(), result,
             result ? "stopped with work left" : "everything ran");

  // The run has returned: every job has returned too, so `outcomes` is complete.
  fmt::print("\nOutcome per job:\n");
  for (const std::string_view dataset : tree.datasets()) {
    const auto it = outcomes.find(dataset);
    fmt::print("  {:<20} {}\n", dataset, it != outcomes.end() ? it->second : "never started (cancelled)");
  }

  const tasktree::RunStats& stats = tree.last_run_stats();
  fmt::print("\nstats: total={} started={} completed={} skipped={} cancelled={}\n", stats.total, stats.started,
             stats.completed, stats.skipped, stats.cancelled);
  fmt::print(
      "(started = process_dataset was called; completed = its completion callback ran, which does not\n"
      " happen after the stop; cancelled = never started because the run stopped first)\n");

  // `follow/logs` only ends when stopped, so the run cannot end without the stop: it returns true.
  const bool consistent =
      stats.started == outcomes.size() && stats.started + stats.skipped + stats.cancelled == stats.total;
  return result && consistent ? EXIT_SUCCESS : EXIT_FAILURE;
}
