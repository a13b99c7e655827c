// A live progress line from observer hooks, over a fault-tolerant run with retries.
//
// Five hosts each take a snapshot, replicate it to four targets in parallel, then prune (the
// `~/prune` barrier waits for all four replications). Some replications fail once and succeed when
// retried; one keeps failing. With `SkipOnError::tree` that failure is logged and passed to
// `append_exception`, the run is marked failed, and host2's prune (behind the barrier) never runs;
// everything else carries on.
//
// The observer's hooks run on the coordinator thread, one at a time, so the progress line needs no
// locks. On a terminal the line is rewritten in place; otherwise (CI logs) it is printed as a new
// line now and then.

#include <tasktree/tasktree.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iterator>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <unistd.h>  // isatty

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

/// Counts what the hooks report and prints `done/running/failed/skipped/total, elapsed, ETA`.
class ProgressLine : public tasktree::RunObserver {
 public:
  void on_start(std::size_t total) override {
    total_ = total;
    start_ = Clock::now();
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
  void on_finish(const tasktree::RunStats& stats) override {
    running_ = stats.started - stats.completed;  // jobs cut off by a stop, if any
    print(true);
    if (terminal_) std::fputc('\n', stdout);
  }

 private:
  void print(bool force) {
    const auto now = Clock::now();
    if (!force && now - last_print_ < (terminal_ ? 20ms : 100ms)) return;  // don't flood the output
    const std::size_t counts[] = {done_, running_, failed_, skipped_};
    if (std::equal(std::begin(counts), std::end(counts), last_counts_) && last_print_ != Clock::time_point{}) {
      return;  // nothing new to say
    }
    std::copy(std::begin(counts), std::end(counts), last_counts_);
    last_print_ = now;
    const double elapsed = std::chrono::duration<double>(now - start_).count();
    const std::size_t finished = done_ + skipped_;
    const std::string eta =
        finished == 0 || finished == total_
            ? std::string(finished == total_ ? "0.0s" : "--")
            : fmt::format("{:.1f}s", elapsed / static_cast<double>(finished) * static_cast<double>(total_ - finished));
    fmt::print("{}done {:>2}  running {}  failed {}  skipped {}  total {}  elapsed {:.1f}s  eta {}{}",
               terminal_ ? "\r" : "", done_, running_, failed_, skipped_, total_, elapsed, eta,
               terminal_ ? "   " : "\n");
    std::fflush(stdout);
  }

  const bool terminal_ = isatty(fileno(stdout)) != 0;
  std::size_t total_ = 0;
  std::size_t running_ = 0;
  std::size_t done_ = 0;
  std::size_t failed_ = 0;
  std::size_t skipped_ = 0;
  Clock::time_point start_ = Clock::now();
  Clock::time_point last_print_{};
  std::size_t last_counts_[4] = {};
};

/// A network hiccup: worth retrying.
struct Timeout : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace

int main() {
  std::vector<std::string> datasets;
  for (int host = 0; host < 5; ++host) {
    datasets.push_back(fmt::format("host{}/snapshot", host));
    for (const char target : {'a', 'b', 'c', 'd'}) {
      datasets.push_back(fmt::format("host{}/snapshot/replicate-{}", host, target));
    }
    datasets.push_back(fmt::format("host{}/snapshot/~/prune", host));
  }

  std::vector<std::string> errors;  // filled by append_exception, on the coordinator
  tasktree::FaultTolerantStats stats;
  const bool failed = tasktree::process_datasets_in_parallel_and_fault_tolerant(
      {
          .datasets = datasets,
          .process_dataset =
              [](std::string_view dataset, std::string_view /*tid*/, const tasktree::Retry& retry) {
                std::this_thread::sleep_for(dataset.ends_with("snapshot") ? 30ms : 15ms);  // the "work"
                if (dataset == "host2/snapshot/replicate-c") throw Timeout("target c unreachable");
                if (dataset.ends_with("replicate-b") && retry.count == 0) throw Timeout("timed out, will retry");
                return true;
              },
          .skip_on_error = tasktree::SkipOnError::tree,
          .retry_policy = {.max_retries = 2, .initial_backoff = 20ms, .max_backoff = 100ms},
          .append_exception =
              [&errors](const std::exception_ptr& error, std::string_view task_name, std::string_view dataset) {
                try {
                  std::rethrow_exception(error);
                } catch (const std::exception& e) {
                  errors.push_back(fmt::format("{} {}: {}", task_name, dataset, e.what()));
                }
              },
          .task_name = "backup",
          .max_workers = 4,
          .observer = std::make_shared<ProgressLine>(),
      },
      stats);

  fmt::print("\nrun failed: {}\n", failed);
  for (const std::string& error : errors) fmt::print("error: {}\n", error);
  const tasktree::RunStats& run = stats.run;
  fmt::print("stats: total={} started={} succeeded={} failed={} skipped={} cancelled={} retries={} recovered={}\n",
             run.total, run.started, run.succeeded, run.failed, run.skipped, run.cancelled, stats.retries,
             stats.recovered);

  // None of this depends on timing: which jobs fail, and how often, is fixed by their names.
  const bool as_expected = failed && errors.size() == 1 && run.failed == 1 && run.skipped == 1 && run.cancelled == 0 &&
                           run.started + run.skipped + run.cancelled == run.total && stats.recovered == 5 &&
                           stats.retries == 5 + 2;
  return as_expected ? EXIT_SUCCESS : EXIT_FAILURE;
}
