// How well the job tree scales over MPI ranks: a W4-style workload (jobs that sleep) and its
// efficiency against the ideal N x t / workers. docs/scale-out.md has the figures.
//
//   mpirun -np 8 build/default/examples/example_mpi_bench [--jobs 2000] [--sleep-ms 10] [--max-workers M]
//
// The datasets have the shape of the W2 workload: root `pool`, every node a dataset, fanout 10,
// breadth first until there are N; so a job's children wait for it, and the run starts with one
// job, then ten. Each job sleeps t ms on its worker and reports how long it really slept, since a
// sleep lasts a little longer than asked. Rank 0 prints one Markdown table row:
//
//   | ranks | workers | jobs | t | wall | ideal | efficiency | ideal (measured) | efficiency (measured) | overhead |
//
// where ideal = N x t / workers, ideal (measured) uses the jobs' measured sleeps instead of t, and
// overhead is what each job cost beyond its sleep: (wall - ideal (measured)) x workers / N, the
// time a worker spent between jobs (scheduling, messages, waiting for a parent). `--sleep-ms 0`
// measures that alone.
// With one rank the jobs run on rank 0's threads: the same scheduler without MPI, for comparison.

#include <tasktree/mpi.hpp>

#include <fmt/format.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

struct Arguments {
  int jobs = 2000;
  int sleep_ms = 10;
  int max_workers = 0;  // 0: one job per worker rank
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
      arguments.sleep_ms = parse_count(flag, value);
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

}  // namespace

int main(int argc, char** argv) {
  tasktree::mpi::Environment mpi(argc, argv);
  Arguments arguments;
  try {
    arguments = parse(argc, argv);
  } catch (const std::exception& e) {
    if (mpi.rank() == 0) {
      fmt::print(stderr, "mpi_bench: {}\nusage: mpi_bench [--jobs N] [--sleep-ms T] [--max-workers M]\n", e.what());
    }
    return EXIT_FAILURE;  // every rank parsed the same arguments
  }

  const auto nap = std::chrono::milliseconds(arguments.sleep_ms);
  std::int64_t slept_nanos = 0;  // rank 0: the sum of the jobs' measured sleeps
  tasktree::RunStats stats;
  const auto start = std::chrono::steady_clock::now();
  const bool failed = tasktree::mpi::process_datasets_in_parallel(
      {
          .datasets = w2_tree(arguments.jobs),
          .process_dataset =
              [nap](std::string_view, std::int64_t) {
                const auto begin = std::chrono::steady_clock::now();
                std::this_thread::sleep_for(nap);
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
      },
      stats);
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  if (mpi.rank() == 0) {
    const int workers = arguments.max_workers > 0 ? arguments.max_workers
                        : mpi.size() > 1          ? mpi.size() - 1
                                                  : tasktree::default_max_workers();
    const double ideal = arguments.jobs * (arguments.sleep_ms / 1000.0) / workers;
    const double ideal_measured = static_cast<double>(slept_nanos) / 1e9 / workers;
    const double overhead_ms = (wall - ideal_measured) * workers / arguments.jobs * 1000;
    fmt::print("| {} | {} | {} | {} ms | {:.3f} s | {:.3f} s | {:.1f}% | {:.3f} s | {:.1f}% | {:.2f} ms |\n",
               mpi.size(), workers, arguments.jobs, arguments.sleep_ms, wall, ideal, 100 * ideal / wall, ideal_measured,
               100 * ideal_measured / wall, overhead_ms);
  }
  const bool complete = stats.completed == static_cast<std::size_t>(arguments.jobs);
  return !failed && complete ? EXIT_SUCCESS : EXIT_FAILURE;
}
