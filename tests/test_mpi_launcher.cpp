// MPI runs that a launcher takes part in (docs/scale-out.md): a worker rank lost in the middle of a
// run, and a stop from outside. One program, several scenarios, each its own ctest entry:
//
//   mpiexec --enable-recovery -n 3 test_mpi_launcher kill     rank 2 dies (SIGKILL) inside a job
//   mpiexec --enable-recovery -n 3 test_mpi_launcher freeze   rank 2 stops (SIGSTOP) inside a job and
//                                                              is continued once declared lost
//   mpiexec --enable-recovery -n 3 test_mpi_launcher host     rank 2, the only rank of host "beta",
//                                                              dies: the jobs placed there fail
//   tests/mpi_signal.sh ... test_mpi_launcher signal MARKER   SIGTERM to a running mpiexec
//
// "When a rank is lost": rank 0 notices, sends the lost rank's job to another rank, and the run
// finishes with the survivors. Open MPI's mpiexec exits with 0 under --enable-recovery whatever the
// ranks return, so rank 0 prints "lost-rank test (...): passed" when every check held, and ctest
// looks for that line. Every job start is recorded, on every rank, as a line of one shared file
// (the ranks run on this host), so that the test can tell which jobs ran twice: only the one in
// flight on the lost rank.
//
// "Stopping from outside": with Environment::stop_on_signals, SIGTERM to mpiexec (which passes it
// to every rank) stops the run gracefully: no new job starts, the jobs in flight see their stop
// token, and every rank returns rank 0's result. tests/mpi_signal.sh waits for MARKER (rank 0
// writes it once a few jobs have completed), sends mpiexec SIGTERM and checks what every rank
// printed: "rank N returned ..." on each, and "signal test: passed" on rank 0.

#include "mpi_check.hpp"

#include <tasktree/mpi.hpp>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;
using mpi_check::check;
using mpi_check::failures;

/// Appends one line to `path` with a single write (O_APPEND: whole lines from concurrent writers).
void append_line(const std::string& path, const std::string& line) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) std::abort();
  const std::string text = line + "\n";
  if (::write(fd, text.data(), text.size()) != static_cast<ssize_t>(text.size())) std::abort();
  ::close(fd);
}

/// A file path in a fresh directory that rank 0 makes (`NAME.XXXXXX` in the temporary directory),
/// the same on every rank, where the ranks record job starts. Collective.
std::string shared_starts_file(int rank, const std::string& name) {
  std::vector<std::string> shared;
  if (rank == 0) {
    std::string dir = (std::filesystem::temp_directory_path() / (name + ".XXXXXX")).string();
    if (::mkdtemp(dir.data()) == nullptr) std::abort();
    shared.push_back(dir + "/starts");
  }
  tasktree::mpi::broadcast(shared);
  return shared.at(0);
}

std::map<std::string, int> count_lines(const std::string& path, int field) {
  std::map<std::string, int> counts;
  std::ifstream in(path);
  std::string dataset;
  std::string rank;
  while (in >> dataset >> rank) ++counts[field == 0 ? dataset : rank];
  return counts;
}

/// A worker rank lost mid-run: `scenario` "kill" (the policy layer) or "freeze" (the core).
int lost_rank(tasktree::mpi::Environment& mpi, const std::string& scenario) {
  const int rank = mpi.rank();

  // Where the ranks record job starts, and who is who.
  const std::string starts = shared_starts_file(rank, "tasktree-lost-rank");
  std::vector<int> pids(3);
  const int pid = static_cast<int>(::getpid());
  MPI_Allgather(&pid, 1, MPI_INT, pids.data(), 1, MPI_INT, MPI_COMM_WORLD);

  std::vector<std::string> datasets{"root"};
  for (int i = 0; i < 150; ++i) datasets.push_back(fmt::format("root/job{:03}", i));
  const std::size_t total = datasets.size();

  // Rank 2 is lost in its fourth job.
  int started_here = 0;
  const auto job = [&](std::string_view dataset) {
    append_line(starts, fmt::format("{} {}", dataset, rank));
    if (rank == 2 && ++started_here == 4) {
      if (scenario == "kill") ::raise(SIGKILL);
      ::raise(SIGSTOP);  // frozen until rank 0 gives it up
    }
    std::this_thread::sleep_for(15ms);
  };

  std::mutex log_mutex;
  std::vector<std::string> errors;
  const tasktree::Logger log{.sink =
                                 [&](tasktree::LogLevel level, std::string_view message) {
                                   const std::lock_guard lock(log_mutex);
                                   if (level >= tasktree::LogLevel::error) errors.emplace_back(message);
                                   // A frozen rank comes back once lost: its late reply must be ignored.
                                   if (scenario == "freeze" && message.find("lost") != std::string_view::npos) {
                                     ::kill(pids[2], SIGCONT);
                                   }
                                 },
                             .level = tasktree::LogLevel::info};

  bool failed = true;
  std::map<std::string, int> completions;
  std::size_t succeeded = 0;
  std::size_t completed = 0;
  if (scenario == "kill") {  // the policy layer
    tasktree::FaultTolerantStats stats;
    failed = tasktree::mpi::process_datasets_in_parallel_and_fault_tolerant(
        {
            .datasets = datasets,
            .process_dataset =
                [&](std::string_view dataset, std::string_view, const tasktree::Retry&) {
                  job(dataset);
                  return true;
                },
            .log = log,
            .heartbeat_interval = 50ms,
            .heartbeat_timeout = 1s,
        },
        stats);
    succeeded = stats.run.succeeded;
    completed = stats.run.completed;
    check(stats.retries == 0, "a lost rank costs no retry of the policy");
  } else {  // the core
    tasktree::RunStats stats;
    failed = tasktree::mpi::process_datasets_in_parallel(
        {
            .datasets = datasets,
            .process_dataset =
                [&](std::string_view dataset, std::int64_t) {
                  job(dataset);
                  return tasktree::mpi::JobOutcome{};
                },
            .completion =
                [&](std::string_view dataset, tasktree::mpi::JobOutcome& outcome, tasktree::InFlight&) {
                  ++completions[std::string(dataset)];
                  return tasktree::CompletionCallbackResult{.no_skip = outcome.no_skip, .fail = outcome.fail};
                },
            .log = log,
            .heartbeat_interval = 50ms,
            .heartbeat_timeout = 1s,
        },
        stats);
    succeeded = stats.succeeded;
    completed = stats.completed;
  }

  // Every surviving rank returns rank 0's result and knows which rank was lost (and, so, that its
  // tasktree::mpi::Environment will not call MPI_Finalize: Open MPI may hang in it).
  check(!failed, fmt::format("rank {}: the run failed", rank));
  check(tasktree::mpi::lost_ranks() == std::vector<int>{2},
        fmt::format("rank {}: lost_ranks() is {}", rank, fmt::join(tasktree::mpi::lost_ranks(), ",")));
  if (rank != 0) return failures == 0 ? 0 : 1;

  check(completed == total, fmt::format("{} of {} jobs completed", completed, total));
  check(succeeded == total, fmt::format("{} of {} jobs succeeded", succeeded, total));
  if (scenario == "freeze") {
    check(completions.size() == total, fmt::format("{} datasets completed", completions.size()));
    for (const auto& [dataset, count] : completions)
      check(count == 1, fmt::format("{} completed {} times", dataset, count));
  }
  const auto runs = count_lines(starts, 0);
  const auto by_rank = count_lines(starts, 1);
  check(runs.size() == total, fmt::format("{} of {} datasets started", runs.size(), total));
  std::vector<std::string> twice;
  for (const auto& [dataset, count] : runs) {
    if (count == 2) twice.push_back(dataset);
    check(count == 1 || count == 2, fmt::format("{} started {} times", dataset, count));
  }
  check(twice.size() == 1, fmt::format("{} datasets started twice, not only the lost rank's", twice.size()));
  check(by_rank.count("2") != 0 && by_rank.at("2") == 4, "rank 2 started exactly the four jobs before it was lost");
  {
    const std::lock_guard lock(log_mutex);
    bool named = false;
    for (const std::string& message : errors) {
      fmt::print("logged: {}\n", message);
      named =
          named || (message.find("worker rank 2") != std::string::npos && message.find("lost") != std::string::npos &&
                    !twice.empty() && message.find(twice.front()) != std::string::npos);
    }
    check(named, "an error names the lost rank and the dataset it was running");
  }
  std::filesystem::remove_all(std::filesystem::path(starts).parent_path());
  if (failures == 0) fmt::print("lost-rank test ({}): passed\n", scenario);
  return failures == 0 ? 0 : 1;
}

/// The only rank of a host lost mid-run (docs/scale-out.md, "Placement"): ranks 1 and 2 say they
/// run on hosts "alpha" and "beta" (TASKTREE_MPI_HOST_NAME), half the jobs are placed on each, and
/// rank 2 dies in its fourth job. The jobs placed on beta that had not succeeded fail, without
/// hanging and without running elsewhere; those on alpha all succeed; the run goes on to the end.
int lost_host(tasktree::mpi::Environment& mpi) {
  const int rank = mpi.rank();
  const std::string host = rank == 0 ? "head" : rank == 1 ? "alpha" : "beta";
  ::setenv("TASKTREE_MPI_HOST_NAME", host.c_str(), 1);

  const std::string starts = shared_starts_file(rank, "tasktree-lost-host");  // lines "dataset rank"

  std::vector<std::string> datasets;
  for (const char* placed : {"alpha", "beta"}) {
    for (int i = 0; i < 40; ++i) datasets.push_back(fmt::format("{}/job{:03}", placed, i));
  }
  std::mutex mutex;
  std::vector<std::string> errors;
  std::vector<std::string> failed_datasets;
  int started_here = 0;
  tasktree::FaultTolerantStats stats;
  const bool failed = tasktree::mpi::process_datasets_in_parallel_and_fault_tolerant(
      {
          .datasets = datasets,
          .process_dataset =
              [&](std::string_view dataset, std::string_view, const tasktree::Retry&) {
                append_line(starts, fmt::format("{} {}", dataset, rank));
                if (rank == 2 && ++started_here == 4) ::raise(SIGKILL);
                std::this_thread::sleep_for(15ms);
                return true;
              },
          .skip_on_error = tasktree::SkipOnError::dataset,
          .retry_policy = {.max_retries = 2},
          .append_exception =
              [&](const std::exception_ptr&, std::string_view, std::string_view dataset) {
                const std::lock_guard lock(mutex);
                failed_datasets.emplace_back(dataset);
              },
          .log = {.sink =
                      [&](tasktree::LogLevel level, std::string_view message) {
                        const std::lock_guard lock(mutex);
                        if (level >= tasktree::LogLevel::error) errors.emplace_back(message);
                      },
                  .level = tasktree::LogLevel::info},
          .heartbeat_interval = 50ms,
          .heartbeat_timeout = 1s,
          .rank0_workers = 0,
          .placement = tasktree::mpi::place_by_first_component,
      },
      stats);

  check(failed, fmt::format("rank {}: the run did not fail", rank));
  check(tasktree::mpi::lost_ranks() == std::vector<int>{2},
        fmt::format("rank {}: lost_ranks() is {}", rank, fmt::join(tasktree::mpi::lost_ranks(), ",")));
  if (rank != 0) return failures == 0 ? 0 : 1;

  const auto runs = count_lines(starts, 0);
  std::ifstream in(starts);
  std::string dataset;
  std::string ran_on;
  while (in >> dataset >> ran_on) {
    const std::string expected = dataset.starts_with("alpha/") ? "1" : "2";
    check(ran_on == expected, fmt::format("{} ran on rank {}", dataset, ran_on));
  }
  check(stats.run.completed == datasets.size(), fmt::format("{} jobs completed", stats.run.completed));
  check(stats.run.succeeded == 43,
        fmt::format("{} jobs succeeded, not alpha's 40 and beta's first 3", stats.run.succeeded));
  check(stats.retries == 0, "a job whose host is gone is not retried");
  check(failed_datasets.size() == 37 && std::all_of(failed_datasets.begin(), failed_datasets.end(),
                                                    [](const std::string& name) { return name.starts_with("beta/"); }),
        fmt::format("failed: {}", fmt::join(failed_datasets, ", ")));
  std::size_t named = 0;  // failure lines that name the host and the rank lost there
  for (const std::string& message : errors) {
    if (message.find("is placed on host beta, and every rank there was lost") != std::string::npos &&
        message.ends_with("on rank 2 (host beta)")) {
      ++named;
    }
  }
  check(named == 37,
        fmt::format("{} failure lines name the host and its lost rank: {}", named, fmt::join(errors, "\n")));
  std::filesystem::remove_all(std::filesystem::path(starts).parent_path());
  if (failures == 0) fmt::print("lost-rank test (host): passed\n");
  return failures == 0 ? 0 : 1;
}

/// SIGTERM to mpiexec mid-run; rank 0 writes `marker` once the run is under way.
int stopped_by_signal(tasktree::mpi::Environment& mpi, const std::string& marker) {
  mpi.stop_on_signals();
  const int rank = mpi.rank();

  std::vector<std::string> datasets{"root"};
  for (int i = 0; i < 600; ++i) datasets.push_back(fmt::format("root/job{:03}", i));

  std::mutex mutex;
  std::vector<std::string> warnings;
  int completions = 0;
  int stopped_jobs = 0;  // jobs that saw their stop token (on this rank)
  tasktree::RunStats stats;
  const bool failed = tasktree::mpi::process_datasets_in_parallel(
      {
          .datasets = datasets,
          .process_dataset =
              [&](std::string_view, std::int64_t, const std::stop_token& stop) {
                // 100 ms of work that ends early when asked to; once the marker is there (the signal
                // comes seconds later), work that lasts until the stop: a stop that takes longer to
                // arrive than a job's rest (rank 0 looks for a caught signal every 50 ms, and the
                // sanitizers slow everything) would otherwise find no job in flight.
                const auto work = std::filesystem::exists(marker) ? std::chrono::milliseconds(60s) : 100ms;
                std::mutex nap_mutex;
                std::condition_variable_any nap;
                std::unique_lock lock(nap_mutex);
                if (!nap.wait_for(lock, stop, work, [] { return false; }) && stop.stop_requested()) {
                  const std::lock_guard count(mutex);
                  ++stopped_jobs;
                }
                return tasktree::mpi::JobOutcome{};
              },
          .completion =
              [&](std::string_view, tasktree::mpi::JobOutcome& outcome, tasktree::InFlight&) {
                if (++completions == 3) std::ofstream(marker) << "running\n";
                return tasktree::CompletionCallbackResult{.no_skip = outcome.no_skip, .fail = outcome.fail};
              },
          .log = {.sink =
                      [&](tasktree::LogLevel level, std::string_view message) {
                        const std::lock_guard lock(mutex);
                        if (level >= tasktree::LogLevel::warning) warnings.emplace_back(message);
                      },
                  .level = tasktree::LogLevel::info},
      },
      stats);

  // Every rank gets here, caught the signal, and returns rank 0's result: stopped with work left.
  check(failed, fmt::format("rank {}: the stopped run returned false", rank));
  check(mpi.stop_signal() == SIGTERM, fmt::format("rank {}: stop_signal() is {}", rank, mpi.stop_signal()));
  check(stats.cancelled > 0, fmt::format("rank {}: {} jobs cancelled", rank, stats.cancelled));
  check(stats.started + stats.skipped + stats.cancelled + stats.resumed == stats.total,
        fmt::format("rank {}: started {} + skipped {} + cancelled {} != total {}", rank, stats.started, stats.skipped,
                    stats.cancelled, stats.total));
  int saw_stop = 0;  // over all ranks
  MPI_Reduce(&stopped_jobs, &saw_stop, 1, MPI_INT, MPI_SUM, 0, MPI_COMM_WORLD);
  std::fflush(stderr);
  fmt::print("rank {} returned: failed {}, started {} of {}, {} of its jobs saw the stop\n", rank, failed,
             stats.started, stats.total, stopped_jobs);
  if (rank == 0) {
    check(saw_stop > 0, "the jobs in flight saw their stop token");
    bool logged = false;
    for (const std::string& message : warnings) {
      fmt::print("logged: {}\n", message);
      logged = logged || message.find("caught SIGTERM: stopping the run") != std::string::npos;
    }
    check(logged, "rank 0 logged the signal that stopped the run");
    if (failures == 0) fmt::print("signal test: passed\n");
  }
  std::fflush(stdout);
  return failures == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  tasktree::mpi::Environment mpi(argc, argv);
  const std::string scenario = argc > 1 ? argv[1] : "";
  if ((scenario == "kill" || scenario == "freeze") && argc == 2 && mpi.size() == 3) return lost_rank(mpi, scenario);
  if (scenario == "host" && argc == 2 && mpi.size() == 3) return lost_host(mpi);
  if (scenario == "signal" && argc == 3) return stopped_by_signal(mpi, argv[2]);
  if (mpi.rank() == 0) {
    fmt::print(stderr,
               "usage: mpiexec --enable-recovery -n 3 test_mpi_launcher kill|freeze|host\n"
               "       mpiexec -n N test_mpi_launcher signal MARKER\n");
  }
  return 2;
}
