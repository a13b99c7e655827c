// tasktree-bench: the scheduler's own cost on the workloads of docs/performance.md, against a oneTBB
// flow graph running the same dependencies, in the same process on the same machine.
//
//   tasktree-bench [--quick] [--workload W1|W1s|W2|W3|W4]... [--size N]... [--workers N]... [--repeat N]
//                  [--no-tbb]
//
// W1-W3 run jobs that do nothing, at each size, inline (max_workers = 1) and on the thread pool
// (max_workers 2 and 4); each figure is the best of several repetitions of construct + run. The
// library's memory is counted on one extra, untimed repetition by a replaced global operator new
// (allocation_counter.cpp): the bytes allocated from the start of construction to the end of the
// run, not counting the caller's input vector. W4 runs 10,000 jobs that sleep 1 ms (and a variant
// that spins 100 us) on 8 workers, against the ideal N x t / workers, with the process's CPU time,
// next to two floors measured in the same run: plain threads (no scheduling at all) and one
// deciding thread handing out jobs through condition variables (what any design pays in which one
// thread decides what runs next, as tasktree's coordinator does); and it prints what one thread
// hand-off costs on this machine.
// --quick runs small sizes once, for CI: it checks that everything works, not how fast.

#include "allocation_counter.hpp"
#include "workloads.hpp"
#if TASKTREE_BENCH_HAVE_TBB
#include "tbb_flow_graph.hpp"
#endif

#include <tasktree/tasktree.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace {

using bench::Workload;

struct Arguments {
  bool quick = false;
  std::vector<std::string> workloads;  // empty: all
  std::vector<std::size_t> sizes;      // empty: the mode's default
  std::vector<int> workers;            // empty: 1, 2, 4
  int repeat = 0;                      // 0: by size
  bool tbb = true;                     // false: tasktree only (for profiling)
};

constexpr std::string_view usage =
    "usage: tasktree-bench [--quick] [--workload W1|W1s|W2|W3|W4]... [--size N]... [--workers N]... [--repeat N] "
    "[--no-tbb]\n";

template <class Int>
std::optional<Int> parse_number(std::string_view text) {
  Int value{};
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size() || value < 1) return std::nullopt;
  return value;
}

std::optional<Arguments> parse_arguments(int argc, char** argv) {
  Arguments arguments;
  for (int i = 1; i < argc; ++i) {
    const std::string_view option = argv[i];
    if (option == "--quick") {
      arguments.quick = true;
      continue;
    }
    if (option == "--no-tbb") {
      arguments.tbb = false;
      continue;
    }
    if (i + 1 == argc) {
      fmt::print(stderr, "tasktree-bench: unknown argument or missing value: {:?}\n{}", option, usage);
      return std::nullopt;
    }
    const std::string_view value = argv[++i];
    bool ok = true;
    if (option == "--workload") {
      ok = value == "W1" || value == "W1s" || value == "W2" || value == "W3" || value == "W4";
      arguments.workloads.emplace_back(value);
    } else if (option == "--size") {
      const auto size = parse_number<std::size_t>(value);
      ok = size.has_value();
      if (ok) arguments.sizes.push_back(*size);
    } else if (option == "--workers") {
      const auto workers = parse_number<int>(value);
      ok = workers.has_value() && *workers <= 1024;
      if (ok) arguments.workers.push_back(*workers);
    } else if (option == "--repeat") {
      const auto repeat = parse_number<int>(value);
      ok = repeat.has_value();
      if (ok) arguments.repeat = *repeat;
    } else {
      fmt::print(stderr, "tasktree-bench: unknown argument {:?}\n{}", option, usage);
      return std::nullopt;
    }
    if (!ok) {
      fmt::print(stderr, "tasktree-bench: invalid value {:?} for {}\n{}", value, option, usage);
      return std::nullopt;
    }
  }
  return arguments;
}

bool wanted(const Arguments& arguments, std::string_view workload) {
  return arguments.workloads.empty() ||
         std::find(arguments.workloads.begin(), arguments.workloads.end(), workload) != arguments.workloads.end();
}

using Stopwatch = std::chrono::steady_clock;

double seconds_since(Stopwatch::time_point start) {
  return std::chrono::duration<double>(Stopwatch::now() - start).count();
}

double process_cpu_seconds() {
  timespec now{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now);
  return static_cast<double>(now.tv_sec) + static_cast<double>(now.tv_nsec) * 1e-9;
}

[[noreturn]] void die(const std::string& message) {
  fmt::print(stderr, "tasktree-bench: {}\n", message);
  std::exit(EXIT_FAILURE);
}

/// One tasktree run, end to end: construct the tree from `names` (moved in, as a caller would)
/// and run it with the default executor. Checks that every job ran and succeeded.
template <class Job>
double run_tasktree(std::vector<std::string> names, int workers, Job job, bench::AllocationCounts* memory = nullptr) {
  const std::size_t count = names.size();
  if (memory != nullptr) bench::start_counting_allocations();
  const auto start = Stopwatch::now();
  tasktree::ParallelTaskTree tree({
      .datasets = std::move(names),
      .process_dataset =
          [&job](std::string_view dataset, std::int64_t /*submit_count*/) {
            job(dataset);
            return tasktree::CompletionCallbackResult{.no_skip = true, .fail = false};
          },
      .max_workers = workers,
  });
  const bool failed = tree.process_datasets_in_parallel();
  const double seconds = seconds_since(start);
  if (memory != nullptr) *memory = bench::stop_counting_allocations();
  const tasktree::RunStats& stats = tree.last_run_stats();
  if (failed || stats.succeeded != count || stats.total != count) {
    die(fmt::format("a tasktree run went wrong: failed={} succeeded={} total={} expected={}", failed, stats.succeeded,
                    stats.total, count));
  }
  if (workers > 1 && !tree.default_executor_is_parallel()) die("expected the thread pool");
  return seconds;
}

struct Row {
  Workload workload;
  std::size_t size;
  int workers;
  double seconds;
  bench::AllocationCounts memory;
  std::optional<double> tbb_seconds;
};

std::string executor_name(int workers) { return workers == 1 ? "inline" : fmt::format("pool {}", workers); }

std::string per_second(double count, double seconds) {
  const double rate = count / seconds;
  if (rate >= 1e6) return fmt::format("{:.2f} M", rate / 1e6);
  return fmt::format("{:.0f} k", rate / 1e3);
}

std::string size_label(std::size_t size) {
  if (size >= 1'000'000 && size % 1'000'000 == 0) return fmt::format("{}M", size / 1'000'000);
  if (size >= 1'000 && size % 1'000 == 0) return fmt::format("{}k", size / 1'000);
  return fmt::format("{}", size);
}

int repetitions(const Arguments& arguments, std::size_t size) {
  if (arguments.repeat > 0) return arguments.repeat;
  if (arguments.quick) return 1;
  return size >= 100'000 ? 5 : 15;
}

std::string machine() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  std::string model = "unknown CPU";
  while (std::getline(cpuinfo, line)) {
    if (line.starts_with("model name")) {
      model = line.substr(line.find(':') + 2);
      break;
    }
  }
  return fmt::format("{}, {} hardware threads; compiler {}", model, std::thread::hardware_concurrency(), __VERSION__);
}

/// The 1, 5 and 15 minute load averages: other processes on the machine skew every figure.
std::string load_average() {
  std::ifstream file("/proc/loadavg");
  double one = 0;
  double five = 0;
  double fifteen = 0;
  if (!(file >> one >> five >> fifteen)) return "unknown";
  return fmt::format("{:.2f} {:.2f} {:.2f}", one, five, fifteen);
}

void run_scheduler_workloads(const Arguments& arguments, std::vector<Row>& rows) {
  const std::vector<std::size_t> sizes = !arguments.sizes.empty() ? arguments.sizes
                                         : arguments.quick
                                             ? std::vector<std::size_t>{1'000, 10'000}
                                             : std::vector<std::size_t>{1'000, 10'000, 100'000, 1'000'000};
  const std::vector<int> workers = arguments.workers.empty() ? std::vector<int>{1, 2, 4} : arguments.workers;
  for (const Workload workload : {Workload::flat, Workload::flat_scattered, Workload::tree, Workload::job_runner}) {
    if (!wanted(arguments, bench::label(workload))) continue;
    for (const std::size_t size : sizes) {
      const std::vector<std::string> names = bench::generate(workload, size);
      for (const int worker_count : workers) {
        Row row{workload, size, worker_count, 0, {}, std::nullopt};
        const auto job = [](std::string_view dataset) { bench::empty_job(dataset); };
        // untimed: counts memory, warms up
        run_tasktree(bench::copy_names(workload, names), worker_count, job, &row.memory);
        double best = 1e300;
        for (int r = 0; r < repetitions(arguments, size); ++r)
          best = std::min(best, run_tasktree(bench::copy_names(workload, names), worker_count, job));
        row.seconds = best;
#if TASKTREE_BENCH_HAVE_TBB
        if (arguments.tbb) {
          double tbb_best = 1e300;
          for (int r = 0; r < repetitions(arguments, size); ++r) {
            tbb_best = std::min(tbb_best, bench::run_tbb_flow_graph(workload, names, worker_count));
          }
          row.tbb_seconds = tbb_best;
        }
#endif
        const auto n = static_cast<double>(size);
        fmt::print(stderr, "  {} {:>5} {:<7} tasktree {:8.4f} s {:>9}/s {:6.1f} B/dataset{}\n", bench::label(workload),
                   size_label(size), executor_name(worker_count), row.seconds, per_second(n, row.seconds),
                   static_cast<double>(row.memory.peak_bytes) / n,
                   row.tbb_seconds ? fmt::format("  oneTBB {:8.4f} s", *row.tbb_seconds) : std::string());
        rows.push_back(row);
      }
    }
  }
}

void print_scheduler_tables(const std::vector<Row>& rows) {
  if (rows.empty()) return;
  fmt::print("\n### W1-W3: the scheduler's own cost (jobs do nothing), construct + run\n\n");
  fmt::print(
      "| workload | datasets | executor | tasktree | datasets/s | peak B/dataset | allocated B/dataset | "
      "allocations | oneTBB flow graph | tasktree / oneTBB |\n");
  fmt::print("|---|--:|---|--:|--:|--:|--:|--:|--:|--:|\n");
  for (const Row& row : rows) {
    const auto n = static_cast<double>(row.size);
    fmt::print("| {} | {} | {} | {:.4f} s | {} | {:.1f} | {:.1f} | {} | {} | {} |\n", bench::label(row.workload),
               size_label(row.size), executor_name(row.workers), row.seconds, per_second(n, row.seconds),
               static_cast<double>(row.memory.peak_bytes) / n, static_cast<double>(row.memory.total_bytes) / n,
               row.memory.allocations, row.tbb_seconds ? fmt::format("{:.4f} s", *row.tbb_seconds) : "n/a",
               row.tbb_seconds ? fmt::format("{:.2f}", row.seconds / *row.tbb_seconds) : "n/a");
  }
  // Scaling: ns per dataset at the largest size against 10k.
  std::map<std::pair<Workload, int>, std::map<std::size_t, double>> ns;
  for (const Row& row : rows)
    ns[{row.workload, row.workers}][row.size] = row.seconds * 1e9 / static_cast<double>(row.size);
  bool header = false;
  for (const auto& [key, by_size] : ns) {
    const auto small = by_size.find(10'000);
    const auto large = std::prev(by_size.end());
    if (small == by_size.end() || large->first <= small->first) continue;
    if (!header) {
      fmt::print("\n### Scaling: ns per dataset, largest size against 10k\n\n");
      fmt::print("| workload | executor | ns/dataset at 10k | ns/dataset at {} | ratio |\n|---|---|--:|--:|--:|\n",
                 size_label(large->first));
      header = true;
    }
    fmt::print("| {} | {} | {:.0f} | {:.0f} | {:.2f} |\n", bench::label(key.first), executor_name(key.second),
               small->second, large->second, large->second / small->second);
  }
}

/// What one thread hand-off costs on this machine, the unit of W4's overhead: a thread that has
/// just slept 1 ms (like a W4 job) wakes another that sleeps on a condition variable, `rounds`
/// times. Prints the delay from the notify to the woken thread running, at three percentiles.
void print_wake_latency(int rounds) {
  std::mutex mutex;
  std::condition_variable woken;
  int round = 0;                   // guarded by `mutex`
  Stopwatch::time_point notified;  // guarded by `mutex`
  std::vector<double> micros;
  micros.reserve(static_cast<std::size_t>(rounds));
  std::thread sleeper([&] {
    std::unique_lock lock(mutex);
    for (int seen = 0; seen < rounds;) {
      woken.wait(lock, [&] { return round > seen; });
      micros.push_back(std::chrono::duration<double, std::micro>(Stopwatch::now() - notified).count());
      seen = round;
    }
  });
  for (int r = 1; r <= rounds; ++r) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    {
      std::lock_guard lock(mutex);
      round = r;
      notified = Stopwatch::now();
    }
    woken.notify_one();
  }
  sleeper.join();
  std::sort(micros.begin(), micros.end());
  const auto at = [&](double share) {
    return micros[static_cast<std::size_t>(share * static_cast<double>(micros.size() - 1))];
  };
  fmt::print(
      "\nOne thread hand-off on this machine (a thread wakes another sleeping on a condition variable, "
      "{} times): {:.1f} us at the median, {:.1f} us at the 90th percentile, {:.1f} us at the 99th.\n",
      rounds, at(0.5), at(0.9), at(0.99));
}

/// The least any design pays in which one thread decides what runs next, as tasktree's coordinator
/// does today (docs/semantics.md §2): `workers` threads each wait on a condition variable of their own for
/// a job index, run the job and report back on the coordinator's condition variable; the
/// coordinator hands each reporting thread the next index. Two thread hand-offs per job and
/// nothing else: no trie, no priorities, no spinning. Runs `job(i)` for i in [0, count).
template <class Job>
void run_on_minimal_coordinator(std::size_t count, int workers, const Job& job) {
  struct Worker {
    std::mutex mutex;
    std::condition_variable assigned;
    std::optional<std::size_t> next;  // guarded by `mutex`; `count` means "stop"
  };
  std::vector<Worker> pool(static_cast<std::size_t>(workers));
  std::mutex mutex;
  std::condition_variable reported;
  std::vector<std::size_t> finished;  // worker numbers, guarded by `mutex`
  std::vector<std::thread> threads;
  for (std::size_t w = 0; w < pool.size(); ++w) {
    threads.emplace_back([&, w] {
      while (true) {
        std::size_t index = 0;
        {
          std::unique_lock lock(pool[w].mutex);
          pool[w].assigned.wait(lock, [&] { return pool[w].next.has_value(); });
          index = *std::exchange(pool[w].next, std::nullopt);
        }
        if (index == count) return;
        job(index);
        {
          std::lock_guard lock(mutex);
          finished.push_back(w);
        }
        reported.notify_one();
      }
    });
  }
  const auto assign = [&](std::size_t w, std::size_t index) {
    {
      std::lock_guard lock(pool[w].mutex);
      pool[w].next = index;
    }
    pool[w].assigned.notify_one();
  };
  std::size_t next = 0;
  std::size_t in_flight = 0;
  for (std::size_t w = 0; w < pool.size() && next < count; ++w, ++in_flight) assign(w, next++);
  std::vector<std::size_t> batch;
  while (in_flight > 0) {
    {
      std::unique_lock lock(mutex);
      reported.wait(lock, [&] { return !finished.empty(); });
      batch.swap(finished);
    }
    for (const std::size_t w : batch) {
      --in_flight;
      if (next < count) {
        assign(w, next++);
        ++in_flight;
      }
    }
    batch.clear();
  }
  for (std::size_t w = 0; w < pool.size(); ++w) assign(w, count);
  for (std::thread& thread : threads) thread.join();
}

/// W4: real work. `ideal` is N x t / workers; `ideal_measured` the sum of the jobs' own measured
/// durations / workers (a sleep takes a little longer than asked).
void run_real_work(const Arguments& arguments) {
  const std::size_t count = arguments.quick ? 1'000 : 10'000;
  constexpr int workers = 8;
  const std::vector<std::string> names = bench::generate(Workload::tree, count);
  fmt::print("\n### W4: real work, {} jobs (W2 shape), {} workers\n\n", count, workers);
  fmt::print(
      "| job | runner | wall | ideal N x t / workers | wall / ideal | ideal from measured job times | "
      "wall / that | process CPU / wall |\n|---|---|--:|--:|--:|--:|--:|--:|\n");
  for (const bool sleeping : {true, false}) {
    const long micros = sleeping ? 1000 : 100;
    std::atomic<std::int64_t> job_nanos{0};
    const auto job = [&](std::string_view) {
      const auto start = Stopwatch::now();
      if (sleeping) {
        bench::sleep_job(micros);
      } else {
        bench::spin_job(micros);
      }
      job_nanos.fetch_add(std::chrono::duration_cast<std::chrono::nanoseconds>(Stopwatch::now() - start).count(),
                          std::memory_order_relaxed);
    };
    const double ideal = static_cast<double>(count) * static_cast<double>(micros) * 1e-6 / workers;
    const auto report = [&](std::string_view runner, double wall, double cpu, std::optional<double> measured) {
      fmt::print("| {} {} us | {} | {:.4f} s | {:.4f} s | {:.3f} | {} | {} | {:.1f}% |\n", sleeping ? "sleep" : "spin",
                 micros, runner, wall, ideal, wall / ideal, measured ? fmt::format("{:.4f} s", *measured) : "n/a",
                 measured ? fmt::format("{:.3f}", wall / *measured) : "n/a", 100 * cpu / wall);
    };
    // Runs the jobs once through `run_all` and reports it as `runner`: wall and CPU time, and the
    // jobs' own measured durations.
    const auto measure = [&](std::string_view runner, const auto& run_all) {
      job_nanos = 0;
      const double cpu_start = process_cpu_seconds();
      const auto start = Stopwatch::now();
      run_all();
      const double wall = seconds_since(start);
      report(runner, wall, process_cpu_seconds() - cpu_start, static_cast<double>(job_nanos.load()) * 1e-9 / workers);
    };
    // The floor on this machine: the same jobs on `workers` plain threads, no scheduling at all.
    measure("plain threads, no scheduler", [&] {
      std::vector<std::thread> threads;
      for (int t = 0; t < workers; ++t) {
        threads.emplace_back([&, t] {
          for (std::size_t i = static_cast<std::size_t>(t); i < count; i += workers) job(names[i]);
        });
      }
      for (std::thread& thread : threads) thread.join();
    });
    // The floor of a design with one deciding thread: two hand-offs per job.
    measure("one deciding thread, no scheduler",
            [&] { run_on_minimal_coordinator(count, workers, [&](std::size_t i) { job(names[i]); }); });
    job_nanos = 0;
    const double cpu_start = process_cpu_seconds();
    const double wall = run_tasktree(names, workers, job);
    const double cpu = process_cpu_seconds() - cpu_start;
    report("tasktree", wall, cpu, static_cast<double>(job_nanos.load()) * 1e-9 / workers);
#if TASKTREE_BENCH_HAVE_TBB
    if (!arguments.tbb) continue;
    const double tbb_cpu_start = process_cpu_seconds();
    const double tbb_wall = bench::run_tbb_flow_graph(Workload::tree, names, workers,
                                                      sleeping ? bench::JobKind::sleep : bench::JobKind::spin, micros);
    report("oneTBB flow graph", tbb_wall, process_cpu_seconds() - tbb_cpu_start, std::nullopt);
#endif
  }
  print_wake_latency(arguments.quick ? 100 : 1'000);
  fmt::print("\nThe spinning variant is CPU-bound: with {} hardware threads its floor is N x t / {} = {:.4f} s.\n",
             std::thread::hardware_concurrency(), std::min<unsigned>(workers, std::thread::hardware_concurrency()),
             static_cast<double>(count) * 100e-6 / std::min<unsigned>(workers, std::thread::hardware_concurrency()));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && (std::string_view(argv[1]) == "--help" || std::string_view(argv[1]) == "-h")) {
    fmt::print("{}", usage);
    return EXIT_SUCCESS;
  }
  const std::optional<Arguments> arguments = parse_arguments(argc, argv);
  if (!arguments) return 2;
  const auto start = Stopwatch::now();
  fmt::print("## tasktree-bench{}\n\nMachine: {}.\nLoad average at the start: {}.\n",
             arguments->quick ? " --quick" : "", machine(), load_average());
#if TASKTREE_BENCH_HAVE_TBB
  fmt::print("Comparison: oneTBB {} flow graph.\n", bench::tbb_version());
#else
  fmt::print("Comparison: none (oneTBB was not found at build time).\n");
#endif
  std::fflush(stdout);
  std::vector<Row> rows;
  run_scheduler_workloads(*arguments, rows);
  print_scheduler_tables(rows);
  if (wanted(*arguments, "W4")) run_real_work(*arguments);
  fmt::print("\nLoad average at the end: {}. Total benchmark time: {:.1f} s.\n", load_average(), seconds_since(start));
  return EXIT_SUCCESS;
}
