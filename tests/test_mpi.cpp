// Tests for include/tasktree/mpi.hpp: the job tree across MPI ranks. Run under mpiexec (ctest
// runs them with 1, 2 and 4 ranks): every rank runs every test case, in the same order, since the
// entry points are collective. What rank 0 observes (the order of submissions and completions) is
// checked on rank 0; return values, statistics and exceptions on every rank; what jobs saw on the
// worker ranks is counted there and summed over the ranks. With one rank, the jobs run on rank 0
// itself and every test must pass all the same.

#include "catch.hpp"
#include "support.hpp"

#include <tasktree/mpi.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <csignal>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

using namespace tasktree_test;
using tasktree::CompletionCallbackResult;
using tasktree::FaultTolerantStats;
using tasktree::InFlight;
using tasktree::Retry;
using tasktree::RunStats;
using tasktree::SkipOnError;
using tasktree::mpi::JobOutcome;
using tasktree::mpi::RemoteError;

namespace {

int world_rank() {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

int world_size() {
  int size = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  return size;
}

/// The ranks that run jobs: 1..size-1, or rank 0 alone.
int worker_ranks() { return std::max(1, world_size() - 1); }

/// A path in the temporary directory named by rank 0 (`tasktree-test-NAME-<its pid>`), the same on
/// every rank: all ranks run on this machine, so jobs can meet there without calling MPI. Collective.
std::filesystem::path shared_path(std::string_view name) {
  std::vector<std::string> shared;
  if (world_rank() == 0) {
    shared.push_back(
        (std::filesystem::temp_directory_path() / fmt::format("tasktree-test-{}-{}", name, ::getpid())).string());
  }
  tasktree::mpi::broadcast(shared);
  return shared.at(0);
}

/// What `max_workers = 0` means: one job per worker rank, or, on a rank alone, its hardware threads.
int default_max_workers() { return world_size() > 1 ? world_size() - 1 : tasktree::default_max_workers(); }

std::uint64_t sum_over_ranks(std::uint64_t local, MPI_Comm comm = MPI_COMM_WORLD) {
  std::uint64_t sum = 0;
  MPI_Allreduce(&local, &sum, 1, MPI_UINT64_T, MPI_SUM, comm);
  return sum;
}

/// True if every rank passes the same `value`.
bool same_on_all_ranks(std::uint64_t value) {
  std::uint64_t low = 0;
  std::uint64_t high = 0;
  MPI_Allreduce(&value, &low, 1, MPI_UINT64_T, MPI_MIN, MPI_COMM_WORLD);
  MPI_Allreduce(&value, &high, 1, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD);
  return low == high;
}

/// This rank's host, as MPI names it.
std::string processor_name() {
  std::array<char, MPI_MAX_PROCESSOR_NAME> name{};
  int length = 0;
  MPI_Get_processor_name(name.data(), &length);
  return {name.data(), static_cast<std::size_t>(length)};
}

bool adds_up(const RunStats& stats) {
  return stats.started + stats.skipped + stats.cancelled == stats.total && stats.completed <= stats.started &&
         stats.succeeded + stats.failed == stats.completed;
}

/// Rank 0's view of a run, from the observer hooks (called on rank 0's coordinator thread; read
/// after the run has returned).
class Timeline final : public tasktree::RunObserver {
 public:
  void on_submit(std::string_view dataset, std::int64_t) override {
    std::lock_guard lock(mutex_);
    events_.push_back("submit " + std::string(dataset));
    peak_ = std::max(peak_, ++in_flight_);
  }
  void on_complete(std::string_view dataset, std::chrono::nanoseconds, CompletionCallbackResult) override {
    std::lock_guard lock(mutex_);
    events_.push_back("complete " + std::string(dataset));
    --in_flight_;
    completed_.emplace_back(dataset);
  }
  /// True if `before` completed before `after` was submitted (both happened).
  [[nodiscard]] bool completed_before_submitted(std::string_view before, std::string_view after) const {
    const long done = index("complete " + std::string(before));
    const long start = index("submit " + std::string(after));
    return done >= 0 && start >= 0 && done < start;
  }
  [[nodiscard]] std::vector<std::string> completed() const {
    std::lock_guard lock(mutex_);
    return completed_;
  }
  [[nodiscard]] long peak_in_flight() const {
    std::lock_guard lock(mutex_);
    return peak_;
  }

 private:
  [[nodiscard]] long index(const std::string& event) const {
    std::lock_guard lock(mutex_);
    const auto it = std::find(events_.begin(), events_.end(), event);
    return it == events_.end() ? -1 : static_cast<long>(it - events_.begin());
  }
  mutable std::mutex mutex_;
  std::vector<std::string> events_;
  std::vector<std::string> completed_;
  long in_flight_ = 0;
  long peak_ = 0;
};

/// A core-level run and what was seen of it.
struct CoreRun {
  bool failed = false;
  RunStats stats;
  std::shared_ptr<Timeline> timeline = std::make_shared<Timeline>();
  std::map<std::string, std::string> ran_on;  // rank 0: dataset -> rank that ran it (payload)
  std::uint64_t executed = 0;                 // jobs run, summed over all ranks
};

/// The outcome of a job, decided on the rank that runs it (the same function on every rank).
using Decide = std::function<JobOutcome(std::string_view dataset)>;

JobOutcome succeed(std::string_view) { return {}; }

/// A `Decide` that skips the subtrees of `datasets`.
Decide skipping(std::set<std::string, std::less<>> datasets) {
  return [datasets](std::string_view dataset) { return JobOutcome{.no_skip = !datasets.contains(dataset)}; };
}

CoreRun run_core(std::vector<std::string> datasets, const Decide& decide = succeed, int max_workers = 0) {
  CoreRun run;
  std::atomic<std::uint64_t> executed{0};
  run.failed = tasktree::mpi::process_datasets_in_parallel(
      {
          .datasets = std::move(datasets),
          .process_dataset =
              [&](std::string_view dataset, std::int64_t) {
                ++executed;
                JobOutcome outcome = decide(dataset);
                outcome.payload = std::to_string(world_rank());
                return outcome;
              },
          .completion =
              [&run](std::string_view dataset, JobOutcome& outcome, InFlight&) {
                run.ran_on[std::string(dataset)] = outcome.payload;
                return CompletionCallbackResult{.no_skip = outcome.no_skip, .fail = outcome.fail};
              },
          .max_workers = max_workers,
          .observer = run.timeline,
          .rank0_workers = 0,  // every job on a worker rank: the tests check where they ran
      },
      run.stats);
  run.executed = sum_over_ranks(executed.load());
  return run;
}

struct DiskFull : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct Transient : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct Permanent : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// What a call threw: the message and origin of a `RemoteError`, or of another exception type.
struct Thrown {
  std::string what = "<nothing thrown>";
  int origin = -1;
  bool remote = false;
};

template <class F>
Thrown thrown_by(F&& f) {
  Thrown thrown;
  try {
    f();
  } catch (const RemoteError& e) {
    thrown = Thrown{.what = e.what(), .origin = e.rank(), .remote = true};
  } catch (const std::exception& e) {
    thrown = Thrown{.what = e.what()};
  }
  return thrown;
}

/// Everything rank 0's policy layer tells the outside world (called on rank 0's coordinator).
struct PolicyRecorder {
  std::mutex mutex;
  std::vector<std::string> appended;  // "task dataset: what (remote from rank r)"
  std::vector<std::string> errors;    // error log lines
  std::atomic<int> terminations{0};

  tasktree::mpi::FaultTolerantOptions options(std::vector<std::string> datasets) {
    return tasktree::mpi::FaultTolerantOptions{
        .datasets = std::move(datasets),
        .termination_handler = [this] { ++terminations; },
        .append_exception =
            [this](const std::exception_ptr& error, std::string_view task, std::string_view dataset) {
              std::string remote = "local";
              try {
                std::rethrow_exception(error);
              } catch (const RemoteError& e) {
                remote = fmt::format("remote from {}", e.rank() == 0 ? "rank 0" : "a worker rank");
              } catch (...) {
              }
              std::lock_guard lock(mutex);
              appended.push_back(
                  fmt::format("{} {}: {} ({})", task, dataset, tasktree::detail::describe(error), remote));
            },
        .task_name = "replicate",
        .log = tasktree::Logger{.sink =
                                    [this](tasktree::LogLevel level, std::string_view message) {
                                      std::lock_guard lock(mutex);
                                      if (level == tasktree::LogLevel::error) errors.emplace_back(message);
                                    },
                                .level = tasktree::LogLevel::debug},
        .rank0_workers = 0,  // every attempt on a worker rank: the tests check where they ran
    };
  }
};

/// "remote from a worker rank" with worker ranks, "remote from rank 0" without.
std::string remote_origin() { return world_size() > 1 ? "remote from a worker rank" : "remote from rank 0"; }

}  // namespace

// ---- The core across ranks ----------------------------------------------------------------------

TEST_CASE("every dataset runs exactly once, on a worker rank, and every rank returns rank 0's result") {
  const CoreRun run = run_core({"a", "a/b", "a/b/c", "a/d", "e"});
  CHECK_FALSE(run.failed);
  CHECK(run.executed == 5);
  CHECK(run.stats == RunStats{.total = 5, .started = 5, .completed = 5, .succeeded = 5});
  if (world_rank() == 0) {
    CHECK(run.ran_on.size() == 5);
    for (const auto& [dataset, rank] : run.ran_on) {
      INFO(dataset << " ran on rank " << rank);
      CHECK((world_size() == 1 ? rank == "0" : rank != "0"));
    }
  }
}

TEST_CASE("with max_workers = 1 jobs complete in exact priority order, parents first") {
  const CoreRun run = run_core({"e", "a/d", "a", "a/b/c", "a/b"}, succeed, 1);
  CHECK_FALSE(run.failed);
  if (world_rank() == 0) {
    CHECK(run.timeline->completed() == std::vector<std::string>{"a", "a/b", "a/b/c", "a/d", "e"});
    CHECK(run.timeline->peak_in_flight() == 1);
  }
}

TEST_CASE("a custom priority on rank 0 decides the order across ranks") {
  std::vector<std::string> order;
  const bool failed = tasktree::mpi::process_datasets_in_parallel({
      .datasets = {"a", "b", "c", "c/x", "d"},
      .process_dataset = [](std::string_view, std::int64_t) { return JobOutcome{}; },
      .completion =
          [&order](std::string_view dataset, JobOutcome& outcome, InFlight&) {
            order.emplace_back(dataset);
            return CompletionCallbackResult{.no_skip = outcome.no_skip};
          },
      .priority = [](std::string_view dataset) { return -static_cast<int>(dataset.front()); },  // reverse
      .max_workers = 1,
  });
  CHECK_FALSE(failed);
  if (world_rank() == 0) CHECK(order == std::vector<std::string>{"d", "c", "c/x", "b", "a"});
}

TEST_CASE("with every worker busy, children are submitted only after their parent completed") {
  std::vector<std::string> datasets;
  for (int host = 0; host < 6; ++host) {
    datasets.push_back(fmt::format("h{}", host));
    for (int child = 0; child < 4; ++child) {
      datasets.push_back(fmt::format("h{}/c{}", host, child));
      datasets.push_back(fmt::format("h{}/c{}/g", host, child));
    }
  }
  const CoreRun run = run_core(datasets);
  CHECK_FALSE(run.failed);
  CHECK(run.executed == datasets.size());
  CHECK(run.stats.completed == datasets.size());
  if (world_rank() == 0) {
    CHECK(run.timeline->peak_in_flight() <= default_max_workers());
    for (int host = 0; host < 6; ++host) {
      for (int child = 0; child < 4; ++child) {
        CHECK(run.timeline->completed_before_submitted(fmt::format("h{}", host), fmt::format("h{}/c{}", host, child)));
        CHECK(run.timeline->completed_before_submitted(fmt::format("h{}/c{}", host, child),
                                                       fmt::format("h{}/c{}/g", host, child)));
      }
    }
    std::set<std::string> ranks;
    for (const auto& [dataset, rank] : run.ran_on) ranks.insert(rank);
    CHECK(ranks.size() == static_cast<std::size_t>(worker_ranks()));  // the work spread over every worker
  }
}

TEST_CASE("a job saying no_skip = false on a worker skips exactly its subtree") {
  const CoreRun run = run_core({"a", "a/b", "a/b/c", "a/d", "e", "e/f"}, skipping({"a/b"}));
  CHECK_FALSE(run.failed);
  CHECK(run.executed == 5);
  CHECK(run.stats.skipped == 1);
  CHECK(adds_up(run.stats));
  if (world_rank() == 0) {
    std::vector<std::string> completed = run.timeline->completed();
    std::sort(completed.begin(), completed.end());
    CHECK(completed == std::vector<std::string>{"a", "a/b", "a/d", "e", "e/f"});
  }
}

TEST_CASE("a job saying fail = true on a worker makes every rank return true; the run goes on") {
  const CoreRun run = run_core(
      {"a", "a/b", "c"}, [](std::string_view dataset) { return JobOutcome{.no_skip = true, .fail = dataset == "a"}; });
  CHECK(run.failed);
  CHECK(run.executed == 3);
  CHECK(run.stats == RunStats{.total = 3, .started = 3, .completed = 3, .succeeded = 2, .failed = 1});
}

// ---- Barriers across ranks (docs/semantics.md §5) ----------------------------------------------------

TEST_CASE("docs/semantics.md §5 row 1 across ranks: the barrier waits for both children; nested jobs follow") {
  for (const int max_workers : {1, 0}) {
    const CoreRun run =
        run_core({"a/b/c", "a/b/c/0d", "a/b/c/1d", "a/b/c/~/prune", "a/b/c/~/prune/monitor"}, succeed, max_workers);
    CHECK_FALSE(run.failed);
    CHECK(run.executed == 5);
    if (world_rank() == 0) {
      const Timeline& t = *run.timeline;
      CHECK(t.completed_before_submitted("a/b/c/0d", "a/b/c/~/prune"));
      CHECK(t.completed_before_submitted("a/b/c/1d", "a/b/c/~/prune"));
      CHECK(t.completed_before_submitted("a/b/c/~/prune", "a/b/c/~/prune/monitor"));
    }
  }
}

TEST_CASE("docs/semantics.md §5 row 2 across ranks: a skip below the barrier keeps it closed; siblings still run") {
  const CoreRun run =
      run_core({"a/b/c", "a/b/c/0d", "a/b/c/1d", "a/b/c/~/prune", "a/b/c/~/prune/monitor"}, skipping({"a/b/c/0d"}));
  CHECK_FALSE(run.failed);
  CHECK(run.executed == 3);
  CHECK(run.stats.skipped == 2);
  if (world_rank() == 0) {
    std::vector<std::string> completed = run.timeline->completed();
    std::sort(completed.begin(), completed.end());
    CHECK(completed == std::vector<std::string>{"a/b/c", "a/b/c/0d", "a/b/c/1d"});
  }
}

TEST_CASE(
    "docs/semantics.md §5 row 3 across ranks: a skip inside a nested barrier keeps every enclosing barrier closed") {
  const CoreRun run = run_core({"x", "x/node", "x/node/child", "x/node/~/bar/fail", "x/other", "x/~/after"},
                               skipping({"x/node/~/bar/fail"}));
  CHECK(run.executed == 5);
  if (world_rank() == 0) {
    const std::vector<std::string> completed = run.timeline->completed();
    CHECK(std::find(completed.begin(), completed.end(), "x/~/after") == completed.end());
    CHECK(std::find(completed.begin(), completed.end(), "x/other") != completed.end());
  }
}

TEST_CASE("docs/semantics.md §5 rows 4 and 5 across ranks: barriers under an intermediate node and as an only child") {
  const CoreRun run = run_core({"a/b/before", "a/b/~/after", "root", "root/~/after"});
  CHECK(run.executed == 4);
  if (world_rank() == 0) {
    CHECK(run.timeline->completed_before_submitted("a/b/before", "a/b/~/after"));
    CHECK(run.timeline->completed_before_submitted("root", "root/~/after"));
  }
}

// ---- Errors, stops and shutdown ----------------------------------------------------------------

TEST_CASE("a job throwing on a worker ends the run: every rank throws a RemoteError with its message") {
  std::atomic<std::uint64_t> executed{0};
  RunStats stats;
  const Thrown thrown = thrown_by([&] {
    tasktree::mpi::process_datasets_in_parallel(
        {
            .datasets = {"a", "a/child", "b", "c"},
            .process_dataset =
                [&](std::string_view dataset, std::int64_t) {
                  ++executed;
                  if (dataset == "a") throw DiskFull("disk full on a");
                  return JobOutcome{};
                },
            .max_workers = 1,
            .rank0_workers = 0,
        },
        stats);
  });
  CHECK(thrown.remote);
  CHECK(thrown.what == "disk full on a");
  CHECK(thrown.origin == (world_size() > 1 ? 1 : 0));
  CHECK(sum_over_ranks(executed.load()) == 1);
  CHECK(stats.started == 1);
  CHECK(stats.cancelled == 3);
  CHECK(adds_up(stats));
  // The ranks shut down cleanly: the next run works.
  CHECK_FALSE(run_core({"a", "b"}).failed);
}

TEST_CASE("a stop requested on rank 0 reaches the jobs on the workers; every rank returns true") {
  std::stop_source stop;
  std::atomic<std::uint64_t> saw_stop{0};
  std::atomic<std::uint64_t> timed_out{0};
  std::vector<std::string> datasets{"quick"};
  for (int i = 0; i < 8; ++i) datasets.push_back(fmt::format("slow{}", i));
  RunStats stats;
  const bool failed = tasktree::mpi::process_datasets_in_parallel(
      {
          .datasets = datasets,
          .process_dataset =
              [&](std::string_view dataset, std::int64_t, const std::stop_token& token) {
                if (dataset == "quick") return JobOutcome{};
                // Waits for the stop; the bound only turns a lost stop into a failure.
                ++(eventually([&] { return token.stop_requested(); }) ? saw_stop : timed_out);
                return JobOutcome{.no_skip = false};
              },
          .completion =
              [&stop](std::string_view dataset, JobOutcome& outcome, InFlight&) {
                if (dataset == "quick") stop.request_stop();
                return CompletionCallbackResult{.no_skip = outcome.no_skip};
              },
          .max_workers = 3,
          .stop_token = stop.get_token(),
      },
      stats);
  CHECK(failed);
  CHECK(sum_over_ranks(timed_out.load()) == 0);
  CHECK(sum_over_ranks(saw_stop.load()) == stats.started - 1);
  CHECK(stats.completed == 1);
  CHECK(stats.cancelled >= datasets.size() - 3);
  CHECK(adds_up(stats));
  CHECK(same_on_all_ranks(stats.started));
  CHECK_FALSE(run_core({"a", "b"}).failed);
}

TEST_CASE("several jobs run at once on a rank when max_workers exceeds the worker ranks") {
  // Every job waits until all of them have started, which they see in a directory on this machine
  // (all ranks run here; jobs must not call MPI). So all are in flight at once, and rank 0, which
  // sends each to the least loaded worker rank, gives each rank exactly its share. (Jobs that only
  // waited for their own rank's share depended on timing: on a busy machine rank 0 could start its
  // last jobs after one rank had finished its first two, and send both there.)
  const int per_rank = 2;
  const int jobs = per_rank * worker_ranks();
  std::vector<std::string> datasets;
  for (int i = 0; i < jobs; ++i) datasets.push_back(fmt::format("job{}", i));
  const std::filesystem::path started = shared_path("at-once");
  if (world_rank() == 0) std::filesystem::create_directories(started);  // before rank 0 starts any job
  const auto count_started = [&started] {
    std::error_code error;
    auto entries = std::filesystem::directory_iterator(started, error);
    return error ? 0 : std::distance(entries, std::filesystem::directory_iterator());
  };
  ConcurrencyMeter meter;
  std::atomic<int> timeouts{0};
  const bool failed = tasktree::mpi::process_datasets_in_parallel({
      .datasets = datasets,
      .process_dataset =
          [&](std::string_view dataset, std::int64_t) {
            meter.enter();
            std::ofstream(started / std::string(dataset)) << world_rank() << '\n';
            if (!eventually([&] { return count_started() >= jobs; }, std::chrono::seconds(60))) ++timeouts;
            meter.leave();
            return JobOutcome{};
          },
      .max_workers = jobs,
      .rank0_workers = 0,
  });
  CHECK_FALSE(failed);
  CHECK(timeouts.load() == 0);
  const bool runs_jobs = world_size() == 1 || world_rank() != 0;
  CHECK(meter.peak() == (runs_jobs ? per_rank : 0));
  if (world_rank() == 0) std::filesystem::remove_all(started);  // every job has returned
}

TEST_CASE("queue_ahead sends jobs ahead to the worker ranks, which still run only their share at once") {
  // Two jobs per worker slot ahead: rank 0 has up to three times max_workers in flight, a worker
  // rank runs one at a time (its share), and parents still complete before their children start.
  std::vector<std::string> datasets;
  for (int child = 0; child < 5; ++child) {
    datasets.push_back(fmt::format("r/c{}", child));
    for (int grandchild = 0; grandchild < 4; ++grandchild) {
      datasets.push_back(fmt::format("r/c{}/g{}", child, grandchild));
    }
  }
  datasets.emplace_back("r");
  ConcurrencyMeter meter;
  std::atomic<std::uint64_t> executed{0};
  const auto timeline = std::make_shared<Timeline>();
  RunStats stats;
  const bool failed = tasktree::mpi::process_datasets_in_parallel(
      {
          .datasets = datasets,
          .process_dataset =
              [&](std::string_view, std::int64_t) {
                meter.enter();
                ++executed;
                std::this_thread::sleep_for(std::chrono::milliseconds(2));
                meter.leave();
                return JobOutcome{};
              },
          .observer = timeline,
          .rank0_workers = 0,
          .queue_ahead = 2,
      },
      stats);
  CHECK_FALSE(failed);
  CHECK(sum_over_ranks(executed.load()) == datasets.size());
  CHECK(stats.completed == datasets.size());
  if (world_size() > 1) {
    CHECK(meter.peak() == (world_rank() == 0 ? 0 : 1));  // max_workers 0: one job per worker rank
    if (world_rank() == 0) {
      // Ten jobs become available at once below each child: more than one per worker is sent.
      CHECK(timeline->peak_in_flight() > worker_ranks());
      CHECK(timeline->peak_in_flight() <= 3 * worker_ranks());
    }
  }
  if (world_rank() == 0) {
    for (int child = 0; child < 5; ++child) {
      CHECK(timeline->completed_before_submitted("r", fmt::format("r/c{}", child)));
      for (int grandchild = 0; grandchild < 4; ++grandchild) {
        CHECK(timeline->completed_before_submitted(fmt::format("r/c{}", child),
                                                   fmt::format("r/c{}/g{}", child, grandchild)));
      }
    }
  }
}

TEST_CASE("a short job's reply is not held back by the job sent ahead behind it on the same worker") {
  // With two ranks both jobs go to rank 1, "b" queued behind "a" in its one slot. A worker sends
  // short jobs' replies together, but "a"'s must still reach rank 0 while "b" runs: "b" waits for
  // what rank 0's completion callback of "a" does.
  const std::filesystem::path a_done = shared_path("reply-not-held");
  std::atomic<std::uint64_t> saw_a{0};
  std::atomic<std::uint64_t> gave_up{0};
  RunStats stats;
  const bool failed = tasktree::mpi::process_datasets_in_parallel(
      {
          .datasets = {"a", "b"},
          .process_dataset =
              [&](std::string_view dataset, std::int64_t) {
                if (dataset == "b") ++(eventually([&] { return std::filesystem::exists(a_done); }) ? saw_a : gave_up);
                return JobOutcome{};
              },
          .completion =
              [&](std::string_view dataset, JobOutcome&, InFlight&) {
                if (dataset == "a") std::ofstream(a_done).put('a');
                return CompletionCallbackResult{};
              },
          .max_workers = 1,
          .rank0_workers = 0,
          .queue_ahead = 1,
      },
      stats);
  CHECK_FALSE(failed);
  CHECK(stats.completed == 2);
  CHECK(sum_over_ranks(gave_up.load()) == 0);
  CHECK(sum_over_ranks(saw_a.load()) == 1);
  MPI_Barrier(MPI_COMM_WORLD);
  if (world_rank() == 0) std::filesystem::remove(a_done);
}

TEST_CASE("a worker rank busy for longer than heartbeat_timeout, or idle while rank 0 works, is not lost") {
  // A job of 600 ms against a timeout of 400 ms: the workers' message loops keep sending heartbeats
  // (every 20 ms) while their jobs run. Rank 0's completion callback takes 600 ms with nothing out:
  // it keeps reading the heartbeats that arrive meanwhile.
  std::atomic<std::uint64_t> executed{0};
  std::vector<std::string> errors;
  const bool failed = tasktree::mpi::process_datasets_in_parallel({
      .datasets = {"a"},
      .process_dataset =
          [&executed](std::string_view, std::int64_t) {
            ++executed;
            std::this_thread::sleep_for(std::chrono::milliseconds(600));
            return JobOutcome{};
          },
      .completion =
          [](std::string_view, JobOutcome&, tasktree::InFlight&) {
            std::this_thread::sleep_for(std::chrono::milliseconds(600));
            return tasktree::CompletionCallbackResult{};
          },
      .max_workers = 1,
      .log = {.sink = [&errors](tasktree::LogLevel, std::string_view message) { errors.emplace_back(message); },
              .level = tasktree::LogLevel::warning},
      .heartbeat_interval = std::chrono::milliseconds(20),
      .heartbeat_timeout = std::chrono::milliseconds(400),
  });
  CHECK_FALSE(failed);
  CHECK(sum_over_ranks(executed.load()) == 1);
  for (const auto& e : errors) UNSCOPED_INFO(e);
  CHECK(errors.empty());
  CHECK(tasktree::mpi::lost_ranks().empty());
}

TEST_CASE("a signal caught by stop_on_signals on any rank stops the run on every rank; every rank returns true") {
  // Every rank turns SIGUSR1 into a stop; the job "root/job05" raises it in its own process, on
  // whichever rank runs it (rank 0 itself when alone, where a thread watches for it).
  tasktree::mpi::Environment signals;  // MPI is initialized already: this one only handles signals
  signals.stop_on_signals({SIGUSR1});
  CHECK_THROWS_WITH(signals.stop_on_signals({SIGKILL}), Catch::Contains("invalid signal 9"));
  std::vector<std::string> datasets{"root"};
  for (int i = 0; i < 200; ++i) datasets.push_back(fmt::format("root/job{:02}", i));
  std::atomic<std::uint64_t> executed{0};
  RunStats stats;
  const bool failed = tasktree::mpi::process_datasets_in_parallel(
      {
          .datasets = datasets,
          .process_dataset =
              [&executed](std::string_view dataset, std::int64_t, const std::stop_token& stop) {
                ++executed;
                if (dataset == "root/job05") std::raise(SIGUSR1);
                for (int i = 0; i < 100 && !stop.stop_requested(); ++i) {
                  std::this_thread::sleep_for(std::chrono::milliseconds(1));
                }
                return JobOutcome{};
              },
          .max_workers = 2,
      },
      stats);
  CHECK(failed);
  CHECK(stats.cancelled > 0);
  CHECK(stats.started + stats.skipped + stats.cancelled == stats.total);
  CHECK(sum_over_ranks(executed.load()) < datasets.size());
  CHECK(sum_over_ranks(signals.stop_signal() == SIGUSR1 ? 1 : 0) == 1);  // caught where the job ran
}

TEST_CASE("rank 0 runs jobs in its own slots (rank0_workers) first, and sends the rest to the worker ranks") {
  std::vector<std::string> datasets;
  for (int i = 0; i < 12; ++i) datasets.push_back(fmt::format("job{:02}", i));
  const auto run = [&](int max_workers, int rank0_workers) {
    std::map<std::string, std::string> ran_on;
    ConcurrencyMeter here;  // jobs at once on this rank
    const bool failed = tasktree::mpi::process_datasets_in_parallel({
        .datasets = datasets,
        .process_dataset =
            [&](std::string_view, std::int64_t) {
              here.enter();
              std::this_thread::sleep_for(std::chrono::milliseconds(20));
              here.leave();
              return JobOutcome{.payload = std::to_string(world_rank())};
            },
        .completion =
            [&ran_on](std::string_view dataset, JobOutcome& outcome, InFlight&) {
              ran_on[std::string(dataset)] = outcome.payload;
              return CompletionCallbackResult{};
            },
        .max_workers = max_workers,
        .rank0_workers = rank0_workers,
    });
    CHECK_FALSE(failed);
    return std::pair(ran_on, here.peak());
  };
  SECTION("with as many slots on rank 0 as max_workers, every job runs on rank 0") {
    const auto [ran_on, peak] = run(2, 2);
    if (world_rank() == 0) {
      CHECK(ran_on.size() == datasets.size());
      for (const auto& [dataset, rank] : ran_on) CHECK(rank == "0");
      CHECK(peak == 2);
    } else {
      CHECK(peak == 0);
    }
  }
  SECTION("with one slot on rank 0 and the default max_workers, rank 0 runs one job at a time beside the workers") {
    const auto [ran_on, peak] = run(0, 1);
    if (world_rank() == 0) {
      std::set<std::string> ranks;
      for (const auto& [dataset, rank] : ran_on) ranks.insert(rank);
      CHECK(ranks.count("0") == 1);
      if (world_size() > 1) {
        CHECK(peak == 1);
        CHECK(ranks.size() > 1);  // the workers ran some too
      }
    }
  }
  CHECK_THAT(thrown_by([&] { run(0, -2); }).what,
             Catch::Contains("invalid rank0_workers -2: it must be at least -1 (-1: automatic"));
}

TEST_CASE("payloads of any bytes arrive intact on rank 0") {
  std::string big(1 << 20, 'x');
  for (std::size_t i = 0; i < big.size(); i += 4096) big[i] = static_cast<char>(i / 4096);
  const std::string with_zeros("a\0b\0\0c", 6);
  std::map<std::string, std::string> received;
  const bool failed = tasktree::mpi::process_datasets_in_parallel({
      .datasets = {"big", "empty", "zeros"},
      .process_dataset =
          [&](std::string_view dataset, std::int64_t) {
            return JobOutcome{.payload = dataset == "big" ? big : dataset == "zeros" ? with_zeros : std::string()};
          },
      .completion =
          [&received](std::string_view dataset, JobOutcome& outcome, InFlight&) {
            received[std::string(dataset)] = std::move(outcome.payload);
            return CompletionCallbackResult{};
          },
  });
  CHECK_FALSE(failed);
  if (world_rank() == 0) {
    CHECK(received.at("big") == big);
    CHECK(received.at("empty").empty());
    CHECK(received.at("zeros") == with_zeros);
  }
}

TEST_CASE("a run on a communicator of some ranks uses only those ranks") {
  MPI_Comm half = MPI_COMM_NULL;
  MPI_Comm_split(MPI_COMM_WORLD, world_rank() % 2, world_rank(), &half);
  int half_size = 0;
  MPI_Comm_size(half, &half_size);
  std::set<std::string> ran_on;
  const bool failed = tasktree::mpi::process_datasets_in_parallel({
      .datasets = {"a", "b", "c", "d"},
      .process_dataset = [](std::string_view,
                            std::int64_t) { return JobOutcome{.payload = std::to_string(world_rank())}; },
      .completion =
          [&ran_on](std::string_view, JobOutcome& outcome, InFlight&) {
            ran_on.insert(outcome.payload);
            return CompletionCallbackResult{};
          },
      .comm = half,
  });
  CHECK_FALSE(failed);
  int half_rank = 0;
  MPI_Comm_rank(half, &half_rank);
  if (half_rank == 0) {
    CHECK_FALSE(ran_on.empty());
    for (const std::string& rank : ran_on) CHECK(std::stoi(rank) % 2 == world_rank() % 2);
  }
  MPI_Comm_free(&half);
}

// ---- Invalid input -----------------------------------------------------------------------------

TEST_CASE("invalid options are rejected on every rank, naming the value, before anything runs") {
  std::atomic<std::uint64_t> executed{0};
  const auto job = [&executed](std::string_view, std::int64_t) {
    ++executed;
    return JobOutcome{};
  };
  CHECK_THAT(thrown_by([&] {
               tasktree::mpi::process_datasets_in_parallel({.datasets = {"a//b"}, .process_dataset = job});
             }).what,
             Catch::Contains("a//b"));
  CHECK_THAT(
      thrown_by([&] {
        tasktree::mpi::process_datasets_in_parallel({.datasets = {"a"}, .process_dataset = job, .max_workers = -2});
      }).what,
      Catch::Contains("max_workers -2"));
  CHECK_THAT(thrown_by([&] { tasktree::mpi::process_datasets_in_parallel({.datasets = {"a"}}); }).what,
             Catch::Contains("process_dataset is not set"));
  CHECK_THAT(thrown_by([&] {
               tasktree::mpi::process_datasets_in_parallel_and_fault_tolerant({
                   .datasets = {"a"},
                   .process_dataset = [](std::string_view, std::string_view, const Retry&) { return true; },
                   .retry_policy = {.max_retries = -1},
               });
             }).what,
             Catch::Contains("max_retries -1"));
  CHECK_THAT(thrown_by([&] {
               tasktree::mpi::process_datasets_in_parallel_and_fault_tolerant({
                   .datasets = {"a"},
                   .process_dataset = [](std::string_view, std::string_view, const Retry&) { return true; },
                   .attempt_timeout = std::chrono::nanoseconds(-1),
               });
             }).what,
             Catch::Contains("attempt_timeout -1ns"));
  CHECK_THAT(thrown_by([&] {
               tasktree::mpi::process_datasets_in_parallel(
                   {.datasets = {"a"}, .process_dataset = job, .heartbeat_interval = std::chrono::nanoseconds(0)});
             }).what,
             Catch::Contains("heartbeat_interval 0ns"));
  CHECK_THAT(thrown_by([&] {
               tasktree::mpi::process_datasets_in_parallel_and_fault_tolerant({
                   .datasets = {"a"},
                   .process_dataset = [](std::string_view, std::string_view, const Retry&) { return true; },
                   .heartbeat_interval = std::chrono::seconds(1),
                   .heartbeat_timeout = std::chrono::milliseconds(1500),
               });
             }).what,
             Catch::Contains("heartbeat_timeout 1500000000ns: it must be 0 (no timeout) or at least twice "
                             "heartbeat_interval (1000000000ns)"));
  CHECK_THAT(thrown_by([&] {
               tasktree::mpi::process_datasets_in_parallel(
                   {.datasets = {"a"}, .process_dataset = job, .heartbeat_timeout = std::chrono::nanoseconds(-5)});
             }).what,
             Catch::Contains("heartbeat_timeout -5ns"));
  CHECK_THAT(
      thrown_by([&] {
        tasktree::mpi::process_datasets_in_parallel({.datasets = {"a"}, .process_dataset = job, .queue_ahead = -1});
      }).what,
      Catch::Contains("invalid queue_ahead -1: it must be at least 0"));
  CHECK_THAT(thrown_by([&] {
               tasktree::mpi::process_datasets_in_parallel_and_fault_tolerant({
                   .datasets = {"a"},
                   .process_dataset = [](std::string_view, std::string_view, const Retry&) { return true; },
                   .queue_ahead = -3,
               });
             }).what,
             Catch::Contains("invalid queue_ahead -3"));
  CHECK_THAT(
      thrown_by([&] {
        tasktree::mpi::process_datasets_in_parallel({.datasets = {"a"}, .process_dataset = job, .comm = MPI_COMM_NULL});
      }).what,
      Catch::Contains("MPI_COMM_NULL"));
  CHECK(sum_over_ranks(executed.load()) == 0);
}

TEST_CASE("options rejected on one rank only: that rank names the value, the others name the rank and the value") {
  const int odd_rank = world_size() - 1;
  std::atomic<std::uint64_t> executed{0};
  const Thrown thrown = thrown_by([&] {
    tasktree::mpi::process_datasets_in_parallel({
        .datasets = {"a", "b"},
        .process_dataset =
            [&executed](std::string_view, std::int64_t) {
              ++executed;
              return JobOutcome{};
            },
        .max_workers = world_rank() == odd_rank ? -1 : 0,
    });
  });
  CHECK_THAT(thrown.what, Catch::Contains("invalid max_workers -1"));
  if (world_rank() != odd_rank) {
    CHECK_THAT(thrown.what, Catch::Contains(fmt::format("rank {} could not start the run, so no rank did: ", odd_rank)));
  }
  CHECK(sum_over_ranks(executed.load()) == 0);
}

TEST_CASE("ranks given different datasets refuse to run, all of them") {
  std::atomic<std::uint64_t> executed{0};
  const auto run = [&] {
    return tasktree::mpi::process_datasets_in_parallel({
        .datasets = {"a", world_rank() == 0 ? "b" : "c"},
        .process_dataset =
            [&executed](std::string_view, std::int64_t) {
              ++executed;
              return JobOutcome{};
            },
    });
  };
  if (world_size() == 1) {
    CHECK_FALSE(run());  // nobody to disagree with
    CHECK(executed == 2);
  } else {
    CHECK_THAT(thrown_by(run).what, Catch::Contains("every rank must pass the same datasets"));
    CHECK(sum_over_ranks(executed.load()) == 0);
  }
}

TEST_CASE("a worker rank given rank 0's datasets in another order runs them") {
  // The ranks compare their datasets in any order: only rank 0 puts them in order, for its tree.
  std::vector<std::string> datasets{"r", "r/a", "r/b", "r/a/x", "s"};
  if (world_rank() % 2 == 1) std::reverse(datasets.begin(), datasets.end());
  std::atomic<std::uint64_t> executed{0};
  RunStats stats;
  const bool failed = tasktree::mpi::process_datasets_in_parallel(
      {
          .datasets = datasets,
          .process_dataset =
              [&executed](std::string_view, std::int64_t) {
                ++executed;
                return JobOutcome{};
              },
      },
      stats);
  CHECK_FALSE(failed);
  CHECK(stats.completed == datasets.size());
  CHECK(sum_over_ranks(executed.load()) == datasets.size());
}

TEST_CASE("a worker rank whose own datasets or tree options are invalid names them, though rank 0's are valid") {
  // A worker validates its own tree only where it differs from rank 0's: here it does, and its own
  // error is what it reports, not a disagreement.
  const int odd_rank = world_size() - 1;
  const bool odd = world_rank() == odd_rank && world_size() > 1;
  std::atomic<std::uint64_t> executed{0};
  const auto job = [&executed](std::string_view, std::int64_t) {
    ++executed;
    return JobOutcome{};
  };
  SECTION("a duplicate dataset") {
    const Thrown thrown = thrown_by([&] {
      tasktree::mpi::process_datasets_in_parallel({
          .datasets = {"a", odd ? "a" : "b"},
          .process_dataset = job,
      });
    });
    if (world_size() > 1) {
      CHECK_THAT(thrown.what, Catch::Contains("duplicate dataset name \"a\""));
      if (!odd) CHECK_THAT(thrown.what, Catch::Contains(fmt::format("rank {} could not start the run", odd_rank)));
      CHECK(sum_over_ranks(executed.load()) == 0);
    } else {  // alone: nobody differs
      CHECK(thrown.what == "<nothing thrown>");
      CHECK(executed.load() == 2);
    }
  }
  SECTION("the same datasets, but barriers turned off while one is a barrier") {
    const Thrown thrown = thrown_by([&] {
      tasktree::mpi::process_datasets_in_parallel({
          .datasets = {"a", "a/~/b"},
          .process_dataset = job,
          .enable_barriers = odd ? std::optional<bool>(false) : std::nullopt,
      });
    });
    if (world_size() > 1) {
      CHECK_THAT(thrown.what, Catch::Contains("enable_barriers is false but dataset \"a/~/b\""));
      if (!odd) CHECK_THAT(thrown.what, Catch::Contains(fmt::format("rank {} could not start the run", odd_rank)));
      CHECK(sum_over_ranks(executed.load()) == 0);
    } else {
      CHECK(thrown.what == "<nothing thrown>");
      CHECK(executed.load() == 2);
    }
  }
}

TEST_CASE("broadcast copies rank 0's strings to every rank") {
  std::vector<std::string> strings;
  if (world_rank() == 0) {
    strings = {"pool", "", std::string("with\0zero", 9), std::string(100000, 'y')};
  } else {
    strings = {"stale"};
  }
  tasktree::mpi::broadcast(strings);
  CHECK(strings == std::vector<std::string>{"pool", "", std::string("with\0zero", 9), std::string(100000, 'y')});
}

// ---- The policy layer across ranks -------------------------------------------------------------

TEST_CASE("policy, dataset mode: a job failing on a worker is appended on rank 0 and its children still run") {
  PolicyRecorder recorder;
  auto options = recorder.options({"a", "a/b", "a/b/c", "d"});
  std::atomic<std::uint64_t> executed{0};
  std::atomic<std::uint64_t> failed_on{0};  // the rank where a/b ran
  options.process_dataset = [&executed, &failed_on](std::string_view dataset, std::string_view, const Retry&) {
    ++executed;
    if (dataset == "a/b") {
      failed_on = static_cast<std::uint64_t>(world_rank());  // 0 elsewhere: the sum is this rank
      throw DiskFull("no space left on a/b");
    }
    return true;
  };
  options.skip_on_error = SkipOnError::dataset;
  FaultTolerantStats stats;
  CHECK(tasktree::mpi::process_datasets_in_parallel_and_fault_tolerant(std::move(options), stats));
  CHECK(sum_over_ranks(executed.load()) == 4);
  CHECK(stats.run == RunStats{.total = 4, .started = 4, .completed = 4, .succeeded = 3, .failed = 1});
  const std::uint64_t failed_rank = sum_over_ranks(failed_on.load());
  if (world_rank() == 0) {
    CHECK(recorder.appended ==
          std::vector<std::string>{fmt::format("replicate a/b: no space left on a/b ({})", remote_origin())});
    REQUIRE(recorder.errors.size() == 1);
    // Issue 17, item 8: the line names the rank and host where the job failed.
    CHECK_THAT(recorder.errors.front(),
               Catch::EndsWith(fmt::format("failed: a/b: no space left on a/b on rank {} (host {})", failed_rank,
                                           processor_name())));
    CHECK(recorder.terminations == 0);
  }
}

TEST_CASE("policy, tree mode: a job failing on a worker skips its subtree; other subtrees run") {
  PolicyRecorder recorder;
  auto options = recorder.options({"a", "a/b", "a/b/c", "a/b/c/d", "e"});
  std::atomic<std::uint64_t> executed{0};
  options.process_dataset = [&executed](std::string_view dataset, std::string_view, const Retry&) {
    ++executed;
    if (dataset == "a/b") throw DiskFull("no space left on a/b");
    return true;
  };
  options.skip_on_error = SkipOnError::tree;
  FaultTolerantStats stats;
  CHECK(tasktree::mpi::process_datasets_in_parallel_and_fault_tolerant(std::move(options), stats));
  CHECK(sum_over_ranks(executed.load()) == 3);
  CHECK(stats.run == RunStats{.total = 5, .started = 3, .completed = 3, .succeeded = 2, .failed = 1, .skipped = 2});
  if (world_rank() == 0) CHECK(recorder.appended.size() == 1);
}

TEST_CASE("policy, fail mode: the run stops, the handler runs once, every rank throws the job's message") {
  PolicyRecorder recorder;
  auto options = recorder.options({"a", "a/b", "c", "d", "e"});
  options.process_dataset = [](std::string_view dataset, std::string_view, const Retry&) {
    if (dataset == "a") throw DiskFull("disk full on a");
    return true;
  };
  options.max_workers = 1;
  FaultTolerantStats stats;
  const Thrown thrown =
      thrown_by([&] { tasktree::mpi::process_datasets_in_parallel_and_fault_tolerant(std::move(options), stats); });
  CHECK(thrown.remote);
  CHECK(thrown.what == "disk full on a");
  CHECK(thrown.origin == (world_size() > 1 ? 1 : 0));
  CHECK(stats.run == RunStats{.total = 5, .started = 1, .completed = 1, .failed = 1, .skipped = 1, .cancelled = 3});
  if (world_rank() == 0) {
    CHECK(recorder.terminations == 1);
    CHECK(recorder.appended.empty());
  }
  CHECK_FALSE(run_core({"a", "b"}).failed);
}

TEST_CASE("policy: retries are decided by exception type on the worker and run again on a worker rank") {
  PolicyRecorder recorder;
  auto options = recorder.options({"flaky", "broken", "fine"});
  std::atomic<std::uint64_t> attempts{0};
  options.process_dataset = [&attempts](std::string_view dataset, std::string_view, const Retry& retry) {
    ++attempts;
    if (dataset == "flaky" && retry.count < 2) throw Transient("try again");
    if (dataset == "broken") throw Permanent("broken for good");
    return true;
  };
  options.skip_on_error = SkipOnError::dataset;
  options.retry_policy = {.max_retries = 3,
                          .initial_backoff = std::chrono::microseconds(100),
                          .retryable = tasktree::exception_is<Transient>};
  FaultTolerantStats stats;
  CHECK(tasktree::mpi::process_datasets_in_parallel_and_fault_tolerant(std::move(options), stats));
  CHECK(sum_over_ranks(attempts.load()) == 3 + 1 + 1);  // flaky: 3 attempts, broken: 1, fine: 1
  CHECK(stats.retries == 2);
  CHECK(stats.recovered == 1);
  CHECK(stats.run.failed == 1);
  if (world_rank() == 0) {
    CHECK(recorder.appended ==
          std::vector<std::string>{fmt::format("replicate broken: broken for good ({})", remote_origin())});
  }
}

TEST_CASE("policy: each attempt's attempt_report() reaches on_attempt_report on rank 0 with its rank and host") {
  PolicyRecorder recorder;
  auto options = recorder.options({"flaky", "fine", "fine/child"});
  const int rank = world_rank();
  std::atomic<int> stale{0};  // attempts that found a report already written
  options.process_dataset = [rank, &stale](std::string_view dataset, std::string_view, const Retry& retry) {
    std::string& report = tasktree::mpi::attempt_report();
    if (!report.empty()) ++stale;
    report = fmt::format("{} attempt {} on rank {}", dataset, retry.count, rank);
    if (dataset == "flaky" && retry.count == 0) throw Transient("try again");
    return true;
  };
  options.retry_policy = {.max_retries = 1, .initial_backoff = std::chrono::microseconds(100)};
  std::mutex mutex;
  std::vector<std::string> reports;
  std::vector<std::string> mismatches;
  options.on_attempt_report = [&](tasktree::mpi::AttemptReport& report) {
    const std::lock_guard lock(mutex);
    // The rank that sent the reply is the rank the job said it ran on; the host is that rank's.
    if (report.bytes != fmt::format("{} attempt {} on rank {}", report.dataset, report.attempt, report.rank) ||
        report.host.empty()) {
      mismatches.push_back(fmt::format("{:?} from rank {} host {:?}", report.bytes, report.rank, report.host));
    }
    reports.push_back(fmt::format("{} {} {}", report.dataset, report.attempt, report.threw ? "threw" : "returned"));
  };
  CHECK_FALSE(tasktree::mpi::process_datasets_in_parallel_and_fault_tolerant(std::move(options)));
  CHECK(stale.load() == 0);  // fresh for every attempt
  if (world_rank() == 0) {
    CHECK(mismatches.empty());
    std::sort(reports.begin(), reports.end());
    CHECK(reports == std::vector<std::string>{"fine 0 returned", "fine/child 0 returned", "flaky 0 threw",
                                              "flaky 1 returned"});
  }
  // Outside an attempt there is no report to write.
  CHECK_THROWS_AS(tasktree::mpi::attempt_report(), std::logic_error);
}

TEST_CASE("policy: rank 0's journal names the host of each job's last attempt; a resumed run reruns the failure") {
  const std::filesystem::path path = shared_path("journal");
  std::atomic<std::uint64_t> attempts{0};
  std::mutex mutex;
  std::map<std::string, std::string> reported_hosts;  // rank 0: dataset -> host of its last attempt
  const auto run = [&](bool resume) {
    PolicyRecorder recorder;
    auto options = recorder.options({"a", "a/b", "c"});
    options.process_dataset = [&attempts](std::string_view dataset, std::string_view, const Retry&) {
      ++attempts;
      if (dataset == "c") throw Permanent("c is broken");
      return true;
    };
    options.skip_on_error = SkipOnError::dataset;
    options.on_attempt_report = [&](tasktree::mpi::AttemptReport& report) {
      const std::lock_guard lock(mutex);
      reported_hosts[std::string(report.dataset)] = report.host;
    };
    if (world_rank() == 0) {
      options.journal = std::make_shared<tasktree::Journal>(path, tasktree::JournalOptions{.resume = resume});
    }
    return tasktree::mpi::process_datasets_in_parallel_and_fault_tolerant(std::move(options));
  };
  CHECK(run(false));
  CHECK(sum_over_ranks(attempts.exchange(0)) == 3);
  if (world_rank() == 0) {
    const tasktree::JournalContents contents = tasktree::Journal::read(path);
    REQUIRE(contents.records.size() == 3);
    for (const tasktree::JournalRecord& record : contents.records) {
      INFO(record.dataset);
      CHECK_FALSE(record.host.empty());
      CHECK(record.host == reported_hosts.at(record.dataset));
      CHECK(record.succeeded() == (record.dataset != "c"));
    }
  }
  CHECK(run(true));  // c fails again
  CHECK(sum_over_ranks(attempts.exchange(0)) == 1);  // only c ran
  if (world_rank() == 0) std::filesystem::remove(path);
}

TEST_CASE("policy: is_job_failure runs on the worker; a fatal exception is rethrown on every rank in any mode") {
  for (const SkipOnError mode : {SkipOnError::dataset, SkipOnError::tree}) {
    PolicyRecorder recorder;
    auto options = recorder.options({"a", "b"});
    options.process_dataset = [](std::string_view dataset, std::string_view, const Retry&) {
      if (dataset == "a") throw Permanent("corrupt pool");
      return true;
    };
    options.skip_on_error = mode;
    options.is_job_failure = tasktree::exception_is<Transient>;  // Permanent is fatal
    options.retry_policy.max_retries = 3;
    const Thrown thrown =
        thrown_by([&] { tasktree::mpi::process_datasets_in_parallel_and_fault_tolerant(std::move(options)); });
    CHECK(thrown.remote);
    CHECK(thrown.what == "corrupt pool");
    if (world_rank() == 0) {
      CHECK(recorder.appended.empty());
      CHECK(recorder.terminations == 0);
    }
  }
}

TEST_CASE("policy: a stop on rank 0 reaches the attempts on the workers; every rank returns true") {
  std::stop_source stop;
  std::atomic<std::uint64_t> saw_stop{0};
  std::atomic<std::uint64_t> timed_out{0};
  PolicyRecorder recorder;
  std::vector<std::string> datasets{"quick"};
  for (int i = 0; i < 6; ++i) datasets.push_back(fmt::format("slow{}", i));
  auto options = recorder.options(datasets);
  options.process_dataset = [&](std::string_view dataset, std::string_view, const Retry& retry) {
    if (dataset == "quick") return true;  // once it completed, rank 0's observer requests the stop
    ++(eventually([&] { return retry.stop_token.stop_requested(); }) ? saw_stop : timed_out);
    return false;
  };
  struct StopAfterQuick final : tasktree::RunObserver {
    std::stop_source* stop;
    explicit StopAfterQuick(std::stop_source* source) : stop(source) {}
    void on_complete(std::string_view dataset, std::chrono::nanoseconds, CompletionCallbackResult) override {
      if (dataset == "quick") stop->request_stop();
    }
  };
  options.observer = std::make_shared<StopAfterQuick>(&stop);
  options.stop_token = stop.get_token();
  options.skip_on_error = SkipOnError::dataset;
  options.max_workers = 3;
  FaultTolerantStats stats;
  CHECK(tasktree::mpi::process_datasets_in_parallel_and_fault_tolerant(std::move(options), stats));
  CHECK(sum_over_ranks(timed_out.load()) == 0);
  CHECK(sum_over_ranks(saw_stop.load()) == stats.run.started - 1);
  CHECK(stats.run.cancelled >= datasets.size() - 3);
  CHECK(adds_up(stats.run));
  if (world_rank() == 0) CHECK(recorder.terminations == 0);
}

TEST_CASE("policy: an attempt past attempt_timeout is cancelled on its worker alone and fails with a TimeoutError") {
  // "hang" waits for its stop token, so it always times out; its child runs after the cancel, on
  // the same worker rank when there is one, and must not see a stop (a cancel is per attempt, not
  // a stop of the rank). The timeout is long next to what the quick jobs take.
  PolicyRecorder recorder;
  auto options = recorder.options({"hang", "hang/child", "other"});
  std::atomic<std::uint64_t> hang_saw_stop{0};
  std::atomic<std::uint64_t> others_saw_stop{0};
  std::atomic<std::uint64_t> executed{0};
  options.process_dataset = [&](std::string_view dataset, std::string_view, const Retry& retry) {
    ++executed;
    if (dataset == "hang") {
      if (eventually([&] { return retry.stop_token.stop_requested(); })) ++hang_saw_stop;
      return true;  // returned after the timeout: still a TimeoutError
    }
    if (retry.stop_token.stop_requested()) ++others_saw_stop;
    return true;
  };
  options.skip_on_error = SkipOnError::dataset;
  options.attempt_timeout = std::chrono::milliseconds(500);
  options.max_workers = 1;  // one job at a time: the child runs after hang's cancel arrived
  FaultTolerantStats stats;
  CHECK(tasktree::mpi::process_datasets_in_parallel_and_fault_tolerant(std::move(options), stats));
  CHECK(sum_over_ranks(executed.load()) == 3);
  CHECK(sum_over_ranks(hang_saw_stop.load()) == 1);
  CHECK(sum_over_ranks(others_saw_stop.load()) == 0);
  CHECK(stats.run == RunStats{.total = 3, .started = 3, .completed = 3, .succeeded = 2, .failed = 1});
  if (world_rank() == 0) {
    CHECK(recorder.appended ==
          std::vector<std::string>{"replicate hang: attempt 1 of hang timed out after 0.5s (local)"});
    CHECK(recorder.terminations == 0);
  }
}

TEST_CASE("policy: tids count submissions over the run, like on one machine") {
  std::mutex mutex;
  std::vector<std::string> tids;
  std::vector<std::string> submit_counts_seen;  // Retry::submit_count as "n/3", beside each tid
  const bool failed = tasktree::mpi::process_datasets_in_parallel_and_fault_tolerant({
      .datasets = {"a", "a/b", "c"},
      .process_dataset =
          [&](std::string_view, std::string_view tid, const Retry& retry) {
            std::lock_guard lock(mutex);
            tids.emplace_back(tid);
            submit_counts_seen.push_back(fmt::format("{}/3", retry.submit_count));
            return true;
          },
      .max_workers = 1,
  });
  CHECK_FALSE(failed);
  // Each rank saw some of the tids; together, "1/3", "2/3" and "3/3" once each.
  std::uint64_t submit_counts = 0;
  for (const std::string& tid : tids) {
    CHECK((tid == "1/3" || tid == "2/3" || tid == "3/3"));
    submit_counts |= std::uint64_t{1} << (tid.front() - '0');
  }
  CHECK(sum_over_ranks(tids.size()) == 3);
  CHECK(sum_over_ranks(submit_counts) == 0b1110);  // distinct bits: no tid twice
  CHECK(submit_counts_seen == tids);               // the worker ranks get Retry::submit_count too
}

// ---- Placement (issue 17, item 5) ---------------------------------------------------------------

namespace {

/// The host each rank reports in the placement tests: rank 0 `head`, rank 1 `alpha`, the others
/// `beta`; all ranks run on one machine here, so the names come from `TASKTREE_MPI_HOST_NAME`.
std::string test_host(int rank) { return rank == 0 ? "head" : rank == 1 ? "alpha" : "beta"; }

/// Sets `TASKTREE_MPI_HOST_NAME` on this rank for the runs in its scope.
class HostName {
 public:
  explicit HostName(const std::string& name) { setenv("TASKTREE_MPI_HOST_NAME", name.c_str(), 1); }
  HostName(const HostName&) = delete;
  HostName& operator=(const HostName&) = delete;
  ~HostName() { unsetenv("TASKTREE_MPI_HOST_NAME"); }
};

/// The hosts where the worker ranks run (rank 0's alone).
std::vector<std::string> worker_hosts() {
  std::set<std::string> hosts;
  for (int rank = world_size() > 1 ? 1 : 0; rank < world_size(); ++rank) hosts.insert(test_host(rank));
  return {hosts.begin(), hosts.end()};
}

/// The host named by the first component, except that `any/...` goes anywhere.
std::string first_component_but_any(std::string_view dataset) {
  std::string host = tasktree::mpi::place_by_first_component(dataset);
  return host == "any" ? std::string() : host;
}

/// A core-level run with `placement`: where each dataset ran (rank 0) and the most jobs this rank
/// ran at once.
struct PlacedRun {
  std::map<std::string, int> ran_on;
  int peak = 0;
  std::uint64_t executed = 0;
};

PlacedRun run_placed(std::vector<std::string> datasets, const tasktree::mpi::Placement& placement, int rank0_workers) {
  const HostName host(test_host(world_rank()));
  PlacedRun run;
  ConcurrencyMeter here;
  std::atomic<std::uint64_t> executed{0};
  const bool failed = tasktree::mpi::process_datasets_in_parallel({
      .datasets = std::move(datasets),
      .process_dataset =
          [&](std::string_view, std::int64_t) {
            ++executed;
            here.enter();
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
            here.leave();
            return JobOutcome{.payload = std::to_string(world_rank())};
          },
      .completion =
          [&run](std::string_view dataset, JobOutcome& outcome, InFlight&) {
            run.ran_on[std::string(dataset)] = std::stoi(outcome.payload);
            return CompletionCallbackResult{};
          },
      .rank0_workers = rank0_workers,
      .placement = placement,
  });
  CHECK_FALSE(failed);
  run.peak = here.peak();
  run.executed = sum_over_ranks(executed.load());
  return run;
}

}  // namespace

TEST_CASE("place_by_first_component names the first component of a dataset") {
  CHECK(tasktree::mpi::place_by_first_component("alpha/snapshot") == "alpha");
  CHECK(tasktree::mpi::place_by_first_component("alpha/a/b") == "alpha");
  CHECK(tasktree::mpi::place_by_first_component("alpha") == "alpha");
}

TEST_CASE("placed jobs run only on a rank of their host, no more at once than its share; the rest anywhere") {
  std::vector<std::string> datasets;
  for (const std::string& host : worker_hosts()) {
    datasets.push_back(host);
    for (int i = 0; i < 6; ++i) datasets.push_back(fmt::format("{}/s{}", host, i));
  }
  datasets.emplace_back("any");
  for (int i = 0; i < 6; ++i) datasets.push_back(fmt::format("any/x{}", i));
  const PlacedRun run = run_placed(datasets, first_component_but_any, 0);
  CHECK(run.executed == datasets.size());
  if (world_rank() == 0) {
    CHECK(run.ran_on.size() == datasets.size());
    for (const auto& [dataset, rank] : run.ran_on) {
      INFO(dataset << " ran on rank " << rank);
      const std::string placed = first_component_but_any(dataset);
      if (!placed.empty()) CHECK(test_host(rank) == placed);
      if (world_size() > 1) CHECK(rank != 0);  // rank0_workers = 0
    }
  } else {
    CHECK(run.peak <= 1);  // max_workers = 0: one job per worker rank, placed or not
  }
}

TEST_CASE("a placed job waiting for its busy host holds up no job for elsewhere") {
  if (world_size() < 4) return;  // alpha's one rank busy, beta's ranks free, one job at a time each
  const HostName host(test_host(world_rank()));
  // alpha/a0 runs on rank 1 until any/x ran (on beta: rank 1 is busy), which it learns from a file
  // (all ranks run on this machine); alpha/a1 waits for rank 1 meanwhile.
  const std::string x_ran = shared_path("placement").string();
  std::map<std::string, std::string> said;  // rank 0
  ConcurrencyMeter here;
  const bool failed = tasktree::mpi::process_datasets_in_parallel({
      .datasets = {"alpha/a0", "alpha/a1", "any/x"},  // submitted in this order (name order)
      .process_dataset =
          [&](std::string_view dataset, std::int64_t) {
            here.enter();
            std::string text = std::to_string(world_rank());
            if (dataset == "any/x") std::ofstream(x_ran) << "ran\n";
            if (dataset == "alpha/a0") {
              const bool after = eventually([&] { return std::filesystem::exists(x_ran); }, std::chrono::seconds(20));
              text += after ? " after x" : " without x";
            }
            here.leave();
            return JobOutcome{.payload = text};
          },
      .completion =
          [&said](std::string_view dataset, JobOutcome& outcome, InFlight&) {
            said[std::string(dataset)] = outcome.payload;
            return CompletionCallbackResult{};
          },
      .max_workers = 3,  // all three in flight at once, one per worker rank
      .rank0_workers = 0,
      .placement = first_component_but_any,
  });
  CHECK_FALSE(failed);
  if (world_rank() == 0) {
    // any/x ran on beta, unless its stub reached the dispatcher first (the stubs run on threads of
    // their own) and found rank 1 free.
    CHECK(said.at("alpha/a0") == "1 after x");
    CHECK(said.at("alpha/a1") == "1");
    CHECK(said.contains("any/x"));
    std::filesystem::remove(x_ran);
  }
  if (world_rank() == 1) CHECK(here.peak() == 1);  // alpha/a1 waited for alpha/a0
}

TEST_CASE("rank 0 is a rank of its host when it runs jobs: jobs placed there run in its slots") {
  // Each placed job has a child, which it makes available as it finishes: the thread of rank 0
  // that ran it, taking the coordinator role then, is often given the child to run next. It must
  // run it in the slot it holds, and give that slot back after (it kept it, and the run hung).
  constexpr int each = 8;
  std::vector<std::string> datasets;
  for (int i = 0; i < each; ++i) {
    datasets.push_back(fmt::format("head/h{}", i));
    datasets.push_back(fmt::format("head/h{}/c", i));
  }
  for (int i = 0; i < each; ++i) datasets.push_back(fmt::format("any/x{}", i));
  const PlacedRun run = run_placed(datasets, first_component_but_any, 1);
  CHECK(run.executed == datasets.size());
  if (world_rank() == 0) {
    CHECK(run.ran_on.size() == datasets.size());
    for (int i = 0; i < each; ++i) {
      CHECK(run.ran_on.at(fmt::format("head/h{}", i)) == 0);
      CHECK(run.ran_on.at(fmt::format("head/h{}/c", i)) == 0);
    }
    if (world_size() > 1) CHECK(run.peak == 1);  // waited for rank 0's one slot, never more at once
  }
}

TEST_CASE("a placement on a host where no rank runs jobs is rejected on every rank before anything runs") {
  const HostName host(test_host(world_rank()));
  std::atomic<std::uint64_t> executed{0};
  const auto core = [&](const tasktree::mpi::Placement& placement, int rank0_workers) {
    return thrown_by([&] {
      tasktree::mpi::process_datasets_in_parallel({
          .datasets = {"a", "a/b", "c"},
          .process_dataset =
              [&executed](std::string_view, std::int64_t) {
                ++executed;
                return JobOutcome{};
              },
          .rank0_workers = rank0_workers,
          .placement = placement,
      });
    });
  };
  const auto expect = [](const Thrown& thrown, const std::string& on_rank0) {
    INFO(thrown.what);
    CHECK_FALSE(thrown.remote);  // a std::invalid_argument
    // Every rank names the value, so that it is printed whichever rank the launcher lets finish.
    CHECK_THAT(thrown.what, Catch::Contains(on_rank0));
    if (world_rank() != 0) CHECK_THAT(thrown.what, Catch::Contains("rank 0 could not start the run, so no rank did: "));
  };
  const auto nowhere = [](std::string_view dataset) { return dataset == "a/b" ? "nowhere" : ""; };
  expect(core(nowhere, -1), R"(invalid placement of "a/b": no rank of the run is on host "nowhere" (the hosts: )");
  expect(thrown_by([&] {
           tasktree::mpi::process_datasets_in_parallel_and_fault_tolerant({
               .datasets = {"a", "a/b"},
               .process_dataset =
                   [&executed](std::string_view, std::string_view, const Retry&) {
                     ++executed;
                     return true;
                   },
               .placement = nowhere,
           });
         }),
         R"(invalid placement of "a/b": no rank of the run is on host "nowhere")");
  if (world_size() > 1) {
    expect(core([](std::string_view) { return "head"; }, 0),
           R"(invalid placement of "a": on host "head" only rank 0 runs, and it runs no jobs (rank0_workers is 0))");
  }
  expect(core(
             [](std::string_view dataset) -> std::string {
               if (dataset == "c") throw std::runtime_error("no host for c");
               return "";
             },
             -1),
         "no host for c");
  CHECK(sum_over_ranks(executed.load()) == 0);
}

TEST_CASE("a TASKTREE_MPI_HOST_NAME too long for MPI is rejected, naming it, on every rank") {
  const int odd_rank = world_size() - 1;
  const std::string too_long(MPI_MAX_PROCESSOR_NAME, 'h');
  const HostName host(world_rank() == odd_rank ? too_long : test_host(world_rank()));
  const Thrown thrown = thrown_by([] {
    tasktree::mpi::process_datasets_in_parallel(
        {.datasets = {"a"}, .process_dataset = [](std::string_view, std::int64_t) { return JobOutcome{}; }});
  });
  CHECK_THAT(thrown.what, Catch::Contains(fmt::format("invalid TASKTREE_MPI_HOST_NAME \"{}\"", too_long)));
  if (world_rank() != odd_rank) {
    CHECK_THAT(thrown.what, Catch::Contains(fmt::format("rank {} could not start the run, so no rank did: ", odd_rank)));
  }
}

TEST_CASE("policy: a placed job's attempts run on its host; its failure line names that rank and host") {
  const HostName host(test_host(world_rank()));
  const std::string failing = worker_hosts().back() + "/x";
  PolicyRecorder recorder;
  auto options = recorder.options({"a", failing, "b"});
  std::atomic<std::uint64_t> attempts{0};
  std::atomic<std::uint64_t> elsewhere{0};  // attempts of the failing job off its host
  std::atomic<std::uint64_t> last_on{0};    // the rank of its last attempt (0 elsewhere: summed)
  options.process_dataset = [&](std::string_view dataset, std::string_view, const Retry& retry) {
    if (dataset != failing) return true;
    ++attempts;
    if (retry.count == 2) last_on = static_cast<std::uint64_t>(world_rank());
    if (test_host(world_rank()) != worker_hosts().back()) ++elsewhere;
    throw Transient("try again");
  };
  options.retry_policy = {.max_retries = 2, .initial_backoff = std::chrono::nanoseconds(0)};
  options.skip_on_error = SkipOnError::dataset;
  options.placement = [&failing](std::string_view dataset) {
    return dataset == failing ? tasktree::mpi::place_by_first_component(dataset) : "";
  };
  CHECK(tasktree::mpi::process_datasets_in_parallel_and_fault_tolerant(std::move(options)));
  CHECK(sum_over_ranks(attempts.load()) == 3);
  CHECK(sum_over_ranks(elsewhere.load()) == 0);
  const auto last_rank = static_cast<int>(sum_over_ranks(last_on.load()));
  if (world_rank() == 0) {
    REQUIRE(recorder.errors.size() == 1);
    // Issue 17, item 8: the rank of the last attempt, and its host.
    CHECK_THAT(recorder.errors.front(),
               Catch::EndsWith(fmt::format("failed: {} (3 attempts): try again on rank {} (host {})", failing,
                                           last_rank, test_host(last_rank))));
  }
}
