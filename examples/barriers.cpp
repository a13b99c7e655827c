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
// `~` is the barrier component. Parent-before-child alone would start `prune` right after
// `snapshot`; the barrier makes everything below `X/snapshot/~` wait until every other job below
// `X/snapshot` has completed with `no_skip = true`. Barriers nest: below `X/snapshot/~`, the
// second `~` waits for the rest of `X/snapshot/~`, i.e. for `prune`.
//
// The same tree runs twice:
//   1. everything succeeds: both hosts prune and report;
//   2. backup2 is unreachable from h2: that replication completes with `no_skip = false`, so h2's
//      barrier never opens and h2's prune and monitor never run, while h1's plan is unaffected.
//
// The program checks these orderings itself (by the sequence of events, not by timing) and exits
// with 1 if one does not hold.

#include <tasktree/tasktree.hpp>

#include <fmt/format.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>

namespace {

using namespace std::chrono_literals;

/// Thread-safe log of what happened, in one global sequence: prints each event with a timestamp
/// and remembers when (at which position in the sequence) each job started and finished.
class Journal {
 public:
  void started(std::string_view job) { record(job, "start ", &Times::start); }
  void finished(std::string_view job, bool ok) { record(job, ok ? "finish" : "FAILED", &Times::finish); }
  void note(std::string_view what) {
    std::lock_guard lock(mutex_);
    fmt::print("[{:6.1f} ms] {}\n", elapsed_ms(), what);
  }

  /// Forgets the previous run (the timestamps keep counting from the program's start).
  void clear() {
    std::lock_guard lock(mutex_);
    times_.clear();
  }

  [[nodiscard]] bool ran(std::string_view job) const {
    std::lock_guard lock(mutex_);
    return times_.contains(job);
  }

  /// True if `job` started after every job in `before` had finished.
  [[nodiscard]] bool started_after(std::string_view job, std::initializer_list<std::string_view> before) const {
    std::lock_guard lock(mutex_);
    const auto it = times_.find(job);
    if (it == times_.end() || !it->second.start) return false;
    for (const std::string_view earlier : before) {
      const auto e = times_.find(earlier);
      if (e == times_.end() || !e->second.finish || *e->second.finish > *it->second.start) return false;
    }
    return true;
  }

 private:
  struct Times {
    std::optional<int> start;
    std::optional<int> finish;
  };

  void record(std::string_view job, std::string_view what, std::optional<int> Times::*field) {
    std::lock_guard lock(mutex_);
    auto it = times_.find(job);
    if (it == times_.end()) it = times_.emplace(std::string(job), Times{}).first;
    it->second.*field = next_++;
    fmt::print("[{:6.1f} ms] {} {}\n", elapsed_ms(), what, job);
  }

  [[nodiscard]] double elapsed_ms() const {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start_).count();
  }

  mutable std::mutex mutex_;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  std::map<std::string, Times, std::less<>> times_;
  int next_ = 0;
};

/// Reports the subtrees that will never run, as the scheduler discovers them.
class SkipReporter final : public tasktree::RunObserver {
 public:
  explicit SkipReporter(Journal& journal) : journal_(&journal) {}
  void on_skip(std::string_view path, std::size_t jobs) override {
    journal_->note(fmt::format("skip   {} ({} job{} will never run)", path, jobs, jobs == 1 ? "" : "s"));
  }

 private:
  Journal* journal_;
};

/// How long each kind of job "works": backup2 is the slow one, so prune visibly waits for it.
std::chrono::milliseconds duration_of(std::string_view job) {
  if (job.ends_with("replicate_to_backup1")) return 8ms;
  if (job.ends_with("replicate_to_backup2")) return 15ms;
  if (job.ends_with("monitor")) return 2ms;
  return 5ms;
}

void print_stats(const tasktree::RunStats& stats) {
  fmt::print("stats: total={} started={} completed={} succeeded={} failed={} skipped={} cancelled={}\n", stats.total,
             stats.started, stats.completed, stats.succeeded, stats.failed, stats.skipped, stats.cancelled);
}

/// Prints one check and returns whether it held.
bool check(bool holds, std::string_view what) {
  fmt::print("  [{}] {}\n", holds ? "ok" : "FAILED", what);
  return holds;
}

/// The orderings a host whose replications all succeeded must show.
bool check_complete_host(const Journal& journal, std::string_view host) {
  const std::string snapshot = fmt::format("{}/snapshot", host);
  const std::string backup1 = snapshot + "/replicate_to_backup1";
  const std::string backup2 = snapshot + "/replicate_to_backup2";
  const std::string prune = snapshot + "/~/prune";
  const std::string monitor = snapshot + "/~/~/monitor";
  bool ok = check(journal.started_after(backup1, {snapshot}) && journal.started_after(backup2, {snapshot}),
                  fmt::format("{}: both replications started after the snapshot", host));
  ok &= check(journal.started_after(prune, {backup1, backup2}),
              fmt::format("{}: prune started after both replications finished", host));
  ok &= check(journal.started_after(monitor, {prune}), fmt::format("{}: monitor started after prune", host));
  return ok;
}

}  // namespace

int main() {
  Journal journal;
  // Replications that fail in the current run. Written only between runs, read by the jobs.
  std::set<std::string, std::less<>> unreachable;

  tasktree::ParallelTaskTree tree({
      .datasets =
          {
              "h1/snapshot",
              "h1/snapshot/replicate_to_backup1",
              "h1/snapshot/replicate_to_backup2",
              "h1/snapshot/~/prune",
              "h1/snapshot/~/~/monitor",
              "h2/snapshot",
              "h2/snapshot/replicate_to_backup1",
              "h2/snapshot/replicate_to_backup2",
              "h2/snapshot/~/prune",
              "h2/snapshot/~/~/monitor",
          },
      .process_dataset =
          [&](std::string_view job, std::int64_t /*submit_count*/) {
            journal.started(job);
            std::this_thread::sleep_for(duration_of(job));
            const bool ok = !unreachable.contains(job);
            journal.finished(job, ok);
            // no_skip = false keeps the barriers above this job closed; fail = true makes the run
            // report failure. The two are independent: here a failed replication does both.
            return tasktree::CompletionCallbackResult{.no_skip = ok, .fail = !ok};
          },
      .max_workers = 4,
      .observer = std::make_shared<SkipReporter>(journal),
  });
  fmt::print("{} jobs, barriers enabled: {}\n", tree.datasets().size(), tree.barriers_enabled());
  bool ok = true;

  fmt::print("\n== run 1: every replication succeeds ==\n");
  bool failed = tree.process_datasets_in_parallel();
  fmt::print("run failed: {}\n", failed);
  print_stats(tree.last_run_stats());
  ok &= check(!failed, "the run succeeded");
  ok &= check_complete_host(journal, "h1");
  ok &= check_complete_host(journal, "h2");

  fmt::print("\n== run 2: backup2 is unreachable from h2 ==\n");
  journal.clear();
  unreachable.insert("h2/snapshot/replicate_to_backup2");
  failed = tree.process_datasets_in_parallel();
  fmt::print("run failed: {}\n", failed);
  print_stats(tree.last_run_stats());
  ok &= check(failed, "the run reported the failed replication");
  ok &= check_complete_host(journal, "h1");
  ok &= check(journal.ran("h2/snapshot/replicate_to_backup1"), "h2: the other replication still ran");
  ok &= check(!journal.ran("h2/snapshot/~/prune") && !journal.ran("h2/snapshot/~/~/monitor"),
              "h2: prune and monitor never ran");
  ok &= check(tree.last_run_stats().skipped == 2, "two jobs were skipped");

  return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
