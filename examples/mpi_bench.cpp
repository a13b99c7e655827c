// How well the job tree scales over MPI ranks: a W4-style workload (jobs that sleep) and its
// efficiency against the ideal. docs/scale-out.md has the figures.
//
//   mpirun -np 8 build/default/examples/example_mpi_bench [--jobs 2000] [--sleep-us 10000 | --sleep-ms 10]
//                                                          [--max-workers M] [--rank0-workers R] [--queue-ahead K]
//
// The datasets have the shape of the W2 workload: root `pool`, every node a dataset, fanout 10,
// breadth first until there are N; so a job's children wait for it, and the run starts with one
// job, then ten. Each job sleeps t on the rank that runs it (a worker, or rank 0 in its own slots)
// and reports how long it really slept, since a sleep lasts a little longer than asked. Rank 0
// prints one Markdown table row:
//
//   | ranks | slots | jobs | t | wall | ideal | efficiency | ideal (measured) | efficiency (measured) | overhead |
//   jobs/s |
//
// where slots is the sum over the ranks of the most jobs each ran at once (jobs sent ahead, see
// `--queue-ahead`, wait on their rank and do not count), ideal =
// max(N x t / slots, depth x t) (the longest chain of parents and children, depth jobs, runs one
// after another), ideal (measured) uses the jobs' measured sleeps instead of t, and overhead is
// what each job cost beyond its sleep, (wall - ideal (measured)) x slots / N: the time a slot spent
// between jobs (scheduling, messages, waiting for a parent). `--sleep-us 0` measures that alone,
// and jobs/s is then the dispatch rate.
// With one rank the jobs run on rank 0's threads: the same scheduler without MPI, for comparison.

#include <tasktree/mpi.hpp>

#include <mpi.h>

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

struct Arguments {
  int jobs = 2000;
  int sleep_us = 10'000;
  int max_workers = 0;     // 0: one job per worker rank, and rank 0's slots
  int rank0_workers = -1;  // -1: automatic
  int queue_ahead = 0;     // jobs sent ahead to each worker slot
};

/// A count: `--jobs` at least 1, the others at least 0.
int parse_count(std::string_view flag, const char* value) {
  const int count = std::atoi(value);
  if (count < 0 || (count == 0 && (flag == "--jobs" || std::string_view(value) != "0"))) {
    throw std::invalid_argument(fmt::format("invalid {} {:?}", flag, value));
  }
  return count;
}

Arguments parse(int argc, char** argv) {
  Arguments arguments;
  for (int i = 1; i < argc; ++i) {
    const std::string_view flag = argv[i];
    if (i + 1 >= argc) throw std::invalid_argument(fmt::format("{} needs a value", flag));
    const char* value = argv[++i];
    if (flag == "--jobs") {
      arguments.jobs = parse_count(flag, value);
    } else if (flag == "--sleep-ms") {
      arguments.sleep_us = 1000 * parse_count(flag, value);
    } else if (flag == "--sleep-us") {
      arguments.sleep_us = parse_count(flag, value);
    } else if (flag == "--rank0-workers") {
      arguments.rank0_workers = parse_count(flag, value);
    } else if (flag == "--queue-ahead") {
      arguments.queue_ahead = parse_count(flag, value);
    } else if (flag == "--max-workers") {
      arguments.max_workers = parse_count(flag, value);
    } else {
      throw std::invalid_argument(fmt::format("unknown argument {:?}", flag));
    }
  }
  return arguments;
}

/// W2's shape: `pool`, then `pool/0` .. `pool/9`, then their ten children each, breadth first.
std::vector<std::string> w2_tree(int count) {
  std::vector<std::string> datasets;
  std::deque<std::size_t> parents;
  datasets.emplace_back("pool");
  parents.push_back(0);
  while (static_cast<int>(datasets.size()) < count) {
    const std::size_t parent = parents.front();
    parents.pop_front();
    for (int child = 0; child < 10 && static_cast<int>(datasets.size()) < count; ++child) {
      datasets.push_back(fmt::format("{}/{}", datasets[parent], child));
      parents.push_back(datasets.size() - 1);
    }
  }
  return datasets;
}

/// The most jobs that ran at once on this rank.
class PeakRunning {
 public:
  void enter() noexcept {
    const int now = ++running_;
    int peak = peak_.load(std::memory_order_relaxed);
    while (now > peak && !peak_.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
    }
  }
  void leave() noexcept { --running_; }
  [[nodiscard]] int peak() const noexcept { return peak_.load(); }

 private:
  std::atomic<int> running_{0};
  std::atomic<int> peak_{0};
};

/// The number of jobs on the longest chain from the root down: no run is shorter than that many
/// jobs one after another.
int tree_depth(const std::vector<std::string>& datasets) {
  int depth = 0;
  for (const std::string& dataset : datasets) {
    depth = std::max(depth, 1 + static_cast<int>(std::count(dataset.begin(), dataset.end(), '/')));
  }
  return depth;
}

}  // namespace

int main(int argc, char** argv) {
  tasktree::mpi::Environment mpi(argc, argv);
  Arguments arguments;
  try {
    arguments = parse(argc, argv);
  } catch (const std::exception& e) {
    if (mpi.rank() == 0) {
      fmt::print(stderr,
                 "mpi_bench: {}\nusage: mpi_bench [--jobs N] [--sleep-us T | --sleep-ms T] [--max-workers M] "
                 "[--rank0-workers R] [--queue-ahead K]\n",
                 e.what());
    }
    return EXIT_FAILURE;  // every rank parsed the same arguments
  }

  const auto nap = std::chrono::microseconds(arguments.sleep_us);
  const std::vector<std::string> datasets = w2_tree(arguments.jobs);
  std::int64_t slept_nanos = 0;  // rank 0: the sum of the jobs' measured sleeps
  PeakRunning running;
  tasktree::RunStats stats;
  // Timed from when every rank is ready: not how much later one rank was started, or made its list.
  MPI_Barrier(MPI_COMM_WORLD);
  const auto start = std::chrono::steady_clock::now();
  const bool failed = tasktree::mpi::process_datasets_in_parallel(
      {
          .datasets = datasets,
          .process_dataset =
              [nap, &running](std::string_view, std::int64_t) {
                running.enter();
                const auto begin = std::chrono::steady_clock::now();
                if (nap.count() > 0) std::this_thread::sleep_for(nap);
                running.leave();
                const auto nanos =
                    std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - begin)
                        .count();
                return tasktree::mpi::JobOutcome{.payload = std::to_string(nanos)};
              },
          .completion =
              [&slept_nanos](std::string_view, tasktree::mpi::JobOutcome& outcome, tasktree::InFlight&) {
                slept_nanos += std::stoll(outcome.payload);
                return tasktree::CompletionCallbackResult{};
              },
          .max_workers = arguments.max_workers,
          .rank0_workers = arguments.rank0_workers,
          .queue_ahead = arguments.queue_ahead,
      },
      stats);
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  // The slots the run used: the most jobs that ran at once, rank by rank.
  int peak = running.peak();
  int slots = 0;
  MPI_Reduce(&peak, &slots, 1, MPI_INT, MPI_SUM, 0, MPI_COMM_WORLD);

  if (mpi.rank() == 0) {
    // The ideal: every slot busy, or the longest chain of parents and children, whichever is longer.
    const int workers = std::max(1, slots);
    const double t = arguments.sleep_us / 1e6;
    const double mean_sleep = static_cast<double>(slept_nanos) / 1e9 / arguments.jobs;
    const int depth = tree_depth(datasets);
    const double ideal = std::max(arguments.jobs * t / workers, depth * t);
    const double ideal_measured = std::max(arguments.jobs * mean_sleep / workers, depth * mean_sleep);
    const double overhead_us = (wall - ideal_measured) * workers / arguments.jobs * 1e6;
    fmt::print("| {} | {} | {} | {} µs | {:.3f} s | {:.3f} s | {:.1f}% | {:.3f} s | {:.1f}% | {:.1f} µs | {:.0f} |\n",
               mpi.size(), workers, arguments.jobs, arguments.sleep_us, wall, ideal, 100 * ideal / wall, ideal_measured,
               100 * ideal_measured / wall, overhead_us, arguments.jobs / wall);
  }
  const bool complete = stats.completed == static_cast<std::size_t>(arguments.jobs);
  return !failed && complete ? EXIT_SUCCESS : EXIT_FAILURE;
}
