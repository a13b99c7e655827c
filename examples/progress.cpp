// A live progress line from observer hooks, over a fault-tolerant run with retries.
//
// Five hosts each take a snapshot, replicate it to four targets in parallel, then prune (the
// `~/prune` barrier waits for all four replications). Some replications fail once and succeed when
// retried; one keeps failing, and with `SkipOnError::tree` the run is marked failed and that
// host's prune never runs. (tests/test_examples.cpp checks these counts.)
//
// The observer's hooks are coordinator calls (docs/semantics.md §2): never two at once, so the
// progress line needs no locks. On a terminal the line is rewritten in place; otherwise (CI logs)
// it is printed as a new line now and then.

#include <tasktree/tasktree.hpp>

#include <fmt/format.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <unistd.h>  // isatty

using namespace std::chrono_literals;

/// Counts what the hooks report and prints `done/running/failed/skipped/total` and the time.
class ProgressLine : public tasktree::RunObserver {
 public:
  void on_start(std::size_t total) override {
    total_ = total;
    print(true);
  }
  void on_submit(std::string_view /*dataset*/, std::int64_t /*submit_count*/) override {
    ++running_;
    print(false);
  }
  void on_complete(std::string_view /*dataset*/, std::chrono::nanoseconds /*elapsed*/,
                   tasktree::CompletionCallbackResult result) override {
    --running_;
    ++done_;
    if (result.fail) ++failed_;
    print(false);
  }
  void on_skip(std::string_view /*path*/, std::size_t jobs) override {
    skipped_ += jobs;
    print(false);
  }
  void on_finish(const tasktree::RunStats& /*stats*/) override {
    print(true);
    if (terminal_) std::fputc('\n', stdout);
  }

 private:
  void print(bool force) {
    const auto now = std::chrono::steady_clock::now();
    if (!force && now - last_print_ < (terminal_ ? 20ms : 100ms)) return;  // don't flood the output
    const std::array counts{done_, running_, failed_, skipped_};
    if (counts == last_counts_ && last_print_ != std::chrono::steady_clock::time_point{}) return;  // nothing new
    last_counts_ = counts;
    last_print_ = now;
    const std::chrono::duration<double> elapsed = now - start_;
    fmt::print("{}done {:>2}  running {}  failed {}  skipped {}  total {}  elapsed {:.1f}s{}", terminal_ ? "\r" : "",
               done_, running_, failed_, skipped_, total_, elapsed.count(), terminal_ ? "   " : "\n");
    std::fflush(stdout);
  }

  const bool terminal_ = isatty(fileno(stdout)) != 0;
  std::size_t total_ = 0, running_ = 0, done_ = 0, failed_ = 0, skipped_ = 0;
  std::array<std::size_t, 4> last_counts_{};
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now(), last_print_{};
};

int main() {
  std::vector<std::string> datasets;
  for (int host = 0; host < 5; ++host) {
    datasets.push_back(fmt::format("host{}/snapshot", host));
    for (const char target : {'a', 'b', 'c', 'd'})
      datasets.push_back(fmt::format("host{}/snapshot/replicate-{}", host, target));
    datasets.push_back(fmt::format("host{}/snapshot/~/prune", host));
  }
  tasktree::FaultTolerantStats stats;
  const bool failed = tasktree::process_datasets_in_parallel_and_fault_tolerant(
      {
          .datasets = datasets,
          .process_dataset =
              [](std::string_view dataset, std::string_view /*tid*/, const tasktree::Retry& retry) {
                std::this_thread::sleep_for(dataset.ends_with("snapshot") ? 30ms : 15ms);  // the "work"
                if (dataset == "host2/snapshot/replicate-c") throw std::runtime_error("target c unreachable");
                if (dataset.ends_with("replicate-b") && retry.count == 0) throw std::runtime_error("timed out");
                return true;
              },
          .skip_on_error = tasktree::SkipOnError::tree,
          .retry_policy = {.max_retries = 2, .initial_backoff = 20ms, .max_backoff = 100ms},
          .task_name = "backup",
          .max_workers = 4,
          .observer = std::make_shared<ProgressLine>(),
      },
      stats);
  fmt::print("run failed: {}; retries: {}; jobs a retry recovered: {}\n", failed, stats.retries, stats.recovered);
  return EXIT_SUCCESS;  // the failing replication is what this example shows, not an error
}
