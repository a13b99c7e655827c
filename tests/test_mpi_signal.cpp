// A stop from outside (docs/scale-out.md, "Stopping from outside"): SIGTERM to mpiexec, which
// passes it to every rank. With Environment::stop_on_signals, the run stops gracefully: no new job
// starts, the jobs in flight see their stop token, and every rank returns rank 0's result.
//
// Driven by tests/mpi_signal.sh, which starts
//   mpiexec -n 3 --mca odls_base_sigkill_timeout 5 test_mpi_signal MARKER
// waits for MARKER (rank 0 writes it once a few jobs have completed), sends mpiexec SIGTERM and
// checks what every rank printed: "rank N returned ..." on each, and "signal test: passed" on
// rank 0 when every check held.

#include "mpi_check.hpp"

#include <tasktree/mpi.hpp>

#include <fmt/format.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

namespace {

using namespace std::chrono_literals;

using mpi_check::check;
using mpi_check::failures;

}  // namespace

int main(int argc, char** argv) {
  tasktree::mpi::Environment mpi(argc, argv);
  if (argc != 2) {
    if (mpi.rank() == 0) fmt::print(stderr, "usage: mpiexec -n N test_mpi_signal MARKER\n");
    return 2;
  }
  const std::string marker = argv[1];
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
                // 100 ms of work that ends early when asked to.
                std::mutex nap_mutex;
                std::condition_variable_any nap;
                std::unique_lock lock(nap_mutex);
                if (!nap.wait_for(lock, stop, 100ms, [] { return false; }) && stop.stop_requested()) {
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
