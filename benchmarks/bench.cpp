// tasktree-bench: the scheduler's own cost on the workloads of docs/performance.md, against a oneTBB
// flow graph running the same dependencies, in the same process on the same machine, on an idle
// machine and beside CPU-bound background processes.
//
//   tasktree-bench [--quick] [--workload W1|W1s|W2|W3|W4|J]... [--size N]... [--workers N]...
//                  [--repeat N] [--w4-repeat N] [--block-seconds S] [--busy [K]] [--idle-and-busy]
//                  [--no-tbb]
//
// W1-W3 (and W1s, W1's names with their string buffers scattered in memory) run jobs that do
// nothing, at each size, inline (max_workers = 1) and on the thread pool (max_workers 2 and 4);
// each row is several repetitions of construct + run for tasktree, then as many for oneTBB, and
// reports the minimum, median and maximum of each, tasktree's median / minimum (a figure far above
// 1 shows a bimodal row), and tasktree / oneTBB from the medians and from the minimums. The
// library's memory is counted on one extra, untimed, idle repetition by replaced C allocation
// functions (allocation_counter.cpp): the bytes allocated from the start of construction to the end
// of the run, not counting the caller's input vector.
//
// W4 runs 10,000 jobs that sleep 1 ms (and a variant that spins 100 us) on 8 workers, against the
// ideal N x t / workers, several repetitions with the runners interleaved: tasktree, oneTBB and two
// floors, plain threads (no scheduling at all) and one deciding thread handing out jobs through
// condition variables (what any design pays in which one thread decides what runs next, as
// tasktree's coordinator does). It reports wall time (min, median, max), the process's CPU time
// against oneTBB's, and the CPUs kept busy (CPU time / wall), and prints what one thread hand-off
// costs on this machine.
//
// --busy K starts K CPU-bound processes (busy_load.cpp) before each measured block and kills them
// after it; --idle-and-busy measures each row idle and then busy, so that both figures come from
// the same minutes, and prints one table for each. A W1-W3 block (one runner's repetitions of one
// row under one load) starts no new repetition after --block-seconds (default 60), so that rows
// that stall under load still end; the tables' runs column shows how many ran. --quick runs small
// sizes 3 times, for CI: it checks that everything works, not how fast.

#include "allocation_counter.hpp"
#include "busy_load.hpp"
#include "workloads.hpp"
#if TASKTREE_BENCH_HAVE_TBB
#include "tbb_flow_graph.hpp"
#endif

#include <tasktree/tasktree.hpp>

#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
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

/// Whether a measured block runs alone or beside the busy processes.
enum class Load { idle, busy };

struct Arguments {
  bool quick = false;
  std::vector<std::string> workloads;  // empty: all
  std::vector<std::size_t> sizes;      // empty: the mode's default
  std::vector<int> workers;            // empty: 1, 2, 4
  int repeat = 0;                      // W1-W3; 0: by size
  int w4_repeat = 3;                   // W4: repetitions of each runner
  int block_seconds = 60;              // W1-W3: no new repetition in a block after this long; 0: no limit
  bool tbb = true;                     // false: tasktree only (for profiling)
  std::optional<int> busy;             // busy processes in the busy load; unset: as many as hardware threads
  bool idle_and_busy = false;

  int busy_processes() const {
    return busy.value_or(static_cast<int>(std::max(1U, std::thread::hardware_concurrency())));
  }
  /// The loads every row is measured under, in this order.
  std::vector<Load> loads() const {
    if (idle_and_busy) return {Load::idle, Load::busy};
    if (busy.has_value() && *busy > 0) return {Load::busy};
    return {Load::idle};
  }
};

constexpr std::string_view usage = R"(usage: tasktree-bench [options]
  --quick          small sizes, 3 repetitions, 1,000 W4 jobs: checks that everything works (CI), not how fast
  --workload W     W1, W1s, W2, W3, W4 or J (W2 inline with a journal); repeatable (default: all)
  --size N         datasets in W1-W3; repeatable (default: 1000 10000 100000 1000000; --quick: 1000 10000)
  --workers N      max_workers in W1-W3; repeatable (default: 1 2 4)
  --repeat N       timed repetitions of each W1-W3 row, per runner and load, and of each J row
                   (default: 15 up to 10k datasets, 5 from 100k, J 9; --quick: 3)
  --w4-repeat N    repetitions of each W4 runner per load (default: 3)
  --block-seconds S  a W1-W3 block (one runner's repetitions of a row under one load) starts no new
                   repetition after S seconds, so that rows that stall under load end; the runs column
                   shows how many ran (default: 60; 0: no limit)
  --busy [K]       run K CPU-bound processes beside every measured block (K omitted: one per hardware
                   thread; 0: none, the default)
  --idle-and-busy  measure every row idle, then beside the busy processes (K from --busy, or one per
                   hardware thread), and print a table for each
  --no-tbb         tasktree only, no oneTBB comparison (for profiling)
  --help, -h       this text
)";

/// A whole non-negative number (`minimum` or more), and nothing else.
template <class Int>
std::optional<Int> parse_number(std::string_view text, Int minimum = 1) {
  Int value{};
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size() || value < minimum) return std::nullopt;
  return value;
}

std::optional<Arguments> parse_arguments(int argc, char** argv) {
  Arguments arguments;
  for (int i = 1; i < argc; ++i) {
    const std::string_view option = argv[i];
    if (option == "--help" || option == "-h") {
      fmt::print("{}", usage);
      std::exit(EXIT_SUCCESS);
    }
    if (option == "--quick") {
      arguments.quick = true;
      continue;
    }
    if (option == "--no-tbb") {
      arguments.tbb = false;
      continue;
    }
    if (option == "--idle-and-busy") {
      arguments.idle_and_busy = true;
      continue;
    }
    if (option == "--busy") {  // the count is optional: take the next argument only if it is one
      const std::optional<int> count = i + 1 < argc ? parse_number<int>(argv[i + 1], 0) : std::nullopt;
      if (count.has_value() && *count > bench::max_busy_processes) {
        fmt::print(stderr, "tasktree-bench: at most {} busy processes\n{}", bench::max_busy_processes, usage);
        return std::nullopt;
      }
      if (count.has_value()) ++i;
      arguments.busy = count.value_or(arguments.busy_processes());
      continue;
    }
    if (i + 1 == argc) {
      fmt::print(stderr, "tasktree-bench: unknown argument or missing value: {:?}\n{}", option, usage);
      return std::nullopt;
    }
    const std::string_view value = argv[++i];
    bool ok = true;
    if (option == "--workload") {
      ok = value == "W1" || value == "W1s" || value == "W2" || value == "W3" || value == "W4" || value == "J";
      arguments.workloads.emplace_back(value);
    } else if (option == "--size") {
      const auto size = parse_number<std::size_t>(value);
      ok = size.has_value();
      if (ok) arguments.sizes.push_back(*size);
    } else if (option == "--workers") {
      const auto workers = parse_number<int>(value);
      ok = workers.has_value() && *workers <= 1024;
      if (ok) arguments.workers.push_back(*workers);
    } else if (option == "--block-seconds") {
      const auto seconds = parse_number<int>(value, 0);
      ok = seconds.has_value();
      if (ok) arguments.block_seconds = *seconds;
    } else if (option == "--repeat" || option == "--w4-repeat") {
      const auto repeat = parse_number<int>(value);
      ok = repeat.has_value();
      if (ok) (option == "--repeat" ? arguments.repeat : arguments.w4_repeat) = *repeat;
    } else {
      fmt::print(stderr, "tasktree-bench: unknown argument {:?}\n{}", option, usage);
      return std::nullopt;
    }
    if (!ok) {
      fmt::print(stderr, "tasktree-bench: invalid value {:?} for {}\n{}", value, option, usage);
      return std::nullopt;
    }
  }
  if (arguments.idle_and_busy && arguments.busy == 0) {
    fmt::print(stderr, "tasktree-bench: --idle-and-busy needs at least one busy process, not --busy 0\n{}", usage);
    return std::nullopt;
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
  std::exit(EXIT_FAILURE);  // the atexit handler of busy_load.cpp kills the busy processes
}

/// Runs `body` as one measured block under `load`: beside the busy processes, started before it
/// and killed after it (also when it throws), or alone.
template <class Body>
void measure_under(Load load, const Arguments& arguments, const Body& body) {
  const bench::BusyLoad busy(load == Load::busy ? arguments.busy_processes() : 0);
  body();
}

/// The minimum, median and maximum of a set of samples.
struct Stats {
  double min = 0;
  double median = 0;
  double max = 0;
};

Stats summarize(std::vector<double> samples) {
  if (samples.empty()) return {};
  std::sort(samples.begin(), samples.end());
  const std::size_t n = samples.size();
  const double median = n % 2 == 1 ? samples[n / 2] : (samples[n / 2 - 1] + samples[n / 2]) / 2;
  return {samples.front(), median, samples.back()};
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

/// One row's times under one load, in seconds, and how many repetitions ran.
struct Timing {
  Stats tasktree;
  std::optional<Stats> tbb;
  std::size_t tasktree_runs = 0;
  std::size_t tbb_runs = 0;
};

struct Row {
  Workload workload;
  std::size_t size;
  int workers;
  bench::AllocationCounts memory;
  std::map<Load, Timing> timing;
};

std::string executor_name(int workers) { return workers == 1 ? "inline" : fmt::format("pool {}", workers); }

std::string per_second(double count, double seconds) {
  const double rate = count / seconds;
  if (rate >= 1e6) return fmt::format("{:.2f} M", rate / 1e6);
  if (rate >= 1e3) return fmt::format("{:.0f} k", rate / 1e3);
  return fmt::format("{:.0f}", rate);  // a stalled row: "0 k" would hide how slow
}

/// Milliseconds with three or four significant digits, for the tables' "(ms)" columns.
std::string milliseconds(double seconds) {
  const double ms = seconds * 1e3;
  if (ms < 1) return fmt::format("{:.4f}", ms);
  if (ms < 10) return fmt::format("{:.3f}", ms);
  if (ms < 100) return fmt::format("{:.2f}", ms);
  return fmt::format("{:.1f}", ms);
}

std::string size_label(std::size_t size) {
  if (size >= 1'000'000 && size % 1'000'000 == 0) return fmt::format("{}M", size / 1'000'000);
  if (size >= 1'000 && size % 1'000 == 0) return fmt::format("{}k", size / 1'000);
  return fmt::format("{}", size);
}

int repetitions(const Arguments& arguments, std::size_t size) {
  if (arguments.repeat > 0) return arguments.repeat;
  if (arguments.quick) return 3;
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

std::string_view load_name(Load load) { return load == Load::idle ? "idle" : "busy"; }

/// The heading's words for a load: "idle" or "busy: K CPU-bound processes beside it".
std::string load_title(Load load, const Arguments& arguments) {
  if (load == Load::idle) return "idle";
  return fmt::format("busy: {} CPU-bound process{} beside it", arguments.busy_processes(),
                     arguments.busy_processes() == 1 ? "" : "es");
}

std::string mode_description(const Arguments& arguments) {
  const int k = arguments.busy_processes();
  const std::string processes =
      fmt::format("{} CPU-bound background process{} (a loop on a volatile counter each)", k, k == 1 ? "" : "es");
  if (arguments.idle_and_busy) {
    return fmt::format(
        "idle and busy, interleaved per row: each row's idle repetitions, then the same row's repetitions beside {}, "
        "started before and killed after each measured block",
        processes);
  }
  if (arguments.loads().front() == Load::busy) {
    return fmt::format("busy: every measured block runs beside {}, started before and killed after it", processes);
  }
  return "idle: nothing of the benchmark's own runs beside the measured repetitions";
}

std::string repetitions_description(const Arguments& arguments) {
  const std::string w1_w3 = arguments.repeat > 0 ? fmt::format("{}", arguments.repeat)
                            : arguments.quick    ? "3"
                                                 : "15 up to 10k datasets, 5 from 100k";
  const std::string budget =
      arguments.block_seconds > 0
          ? fmt::format(", but none started after a block (a runner's repetitions of a row) has run {} s",
                        arguments.block_seconds)
          : std::string();
  return fmt::format("W1-W3 {} per runner and load{}; W4 {} per runner and load, the runners interleaved", w1_w3,
                     budget, arguments.w4_repeat);
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
      const int reps = repetitions(arguments, size);
      for (const int worker_count : workers) {
        Row row{workload, size, worker_count, {}, {}};
        const auto job = [](std::string_view dataset) { bench::empty_job(dataset); };
        // Untimed and idle: counts memory, warms up.
        run_tasktree(bench::copy_names(workload, names), worker_count, job, &row.memory);
        for (const Load load : arguments.loads()) {
          Timing& timing = row.timing[load];
          // Repetitions of one block until `reps` or the block's time budget: at least one.
          const auto repeat = [&](const auto& run_once) {
            std::vector<double> samples;
            const auto block_start = Stopwatch::now();
            while (static_cast<int>(samples.size()) < reps && (samples.empty() || arguments.block_seconds == 0 ||
                                                               seconds_since(block_start) < arguments.block_seconds)) {
              samples.push_back(run_once());
            }
            return samples;
          };
          std::vector<double> samples;
          measure_under(load, arguments, [&] {
            samples = repeat([&] { return run_tasktree(bench::copy_names(workload, names), worker_count, job); });
          });
          timing.tasktree = summarize(samples);
          timing.tasktree_runs = samples.size();
#if TASKTREE_BENCH_HAVE_TBB
          if (arguments.tbb) {
            measure_under(load, arguments, [&] {
              samples = repeat([&] { return bench::run_tbb_flow_graph(workload, names, worker_count); });
            });
            timing.tbb = summarize(samples);
            timing.tbb_runs = samples.size();
          }
#endif
          fmt::print(stderr, "  {:<3} {:>5} {:<7} {} tasktree min {:>8} ms median {:>8} ms ({:.2f}x min){}\n",
                     bench::label(workload), size_label(size), executor_name(worker_count), load_name(load),
                     milliseconds(timing.tasktree.min), milliseconds(timing.tasktree.median),
                     timing.tasktree.median / timing.tasktree.min,
                     timing.tbb ? fmt::format("  oneTBB min {:>8} ms median {:>8} ms", milliseconds(timing.tbb->min),
                                              milliseconds(timing.tbb->median))
                                : std::string());
        }
        rows.push_back(row);
      }
    }
  }
}

void print_scheduler_tables(const Arguments& arguments, const std::vector<Row>& rows) {
  if (rows.empty()) return;
  for (const Load load : arguments.loads()) {
    fmt::print("\n### W1-W3: the scheduler's own cost (jobs do nothing), construct + run; {}\n\n",
               load_title(load, arguments));
    fmt::print(
        "runs: the repetitions that ran, tasktree/oneTBB (fewer than asked: the block reached --block-seconds). "
        "median / min: tasktree's; far above 1, the row is bimodal.\n\n");
    fmt::print(
        "| workload | datasets | executor | runs | tasktree min (ms) | median (ms) | max (ms) | median / min | "
        "datasets/s at median | peak B/dataset | allocated B/dataset | allocations | oneTBB min (ms) | median (ms) | "
        "max (ms) | tasktree / oneTBB, medians | tasktree / oneTBB, minimums |\n");
    fmt::print("|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    for (const Row& row : rows) {
      const auto n = static_cast<double>(row.size);
      const Timing& timing = row.timing.at(load);
      const Stats& tt = timing.tasktree;
      const auto tbb = [&](double Stats::*field) {
        return timing.tbb ? milliseconds((*timing.tbb).*field) : std::string("n/a");
      };
      const auto ratio = [&](double Stats::*field) {
        return timing.tbb ? fmt::format("{:.2f}", tt.*field / (*timing.tbb).*field) : std::string("n/a");
      };
      const std::string runs = timing.tbb ? fmt::format("{}/{}", timing.tasktree_runs, timing.tbb_runs)
                                          : fmt::format("{}", timing.tasktree_runs);
      fmt::print("| {} | {} | {} | {} | {} | {} | {} | {:.2f} | {} | {:.1f} | {:.1f} | {} | {} | {} | {} | {} | {} |\n",
                 bench::label(row.workload), size_label(row.size), executor_name(row.workers), runs,
                 milliseconds(tt.min), milliseconds(tt.median), milliseconds(tt.max), tt.median / tt.min,
                 per_second(n, tt.median), static_cast<double>(row.memory.peak_bytes) / n,
                 static_cast<double>(row.memory.total_bytes) / n, row.memory.allocations, tbb(&Stats::min),
                 tbb(&Stats::median), tbb(&Stats::max), ratio(&Stats::median), ratio(&Stats::min));
    }
    // Scaling: ns per dataset at the largest size against 10k, from the medians and the minimums.
    std::map<std::pair<Workload, int>, std::map<std::size_t, Stats>> ns;
    for (const Row& row : rows) {
      const Stats& tt = row.timing.at(load).tasktree;
      const double scale = 1e9 / static_cast<double>(row.size);
      ns[{row.workload, row.workers}][row.size] = {tt.min * scale, tt.median * scale, tt.max * scale};
    }
    bool header = false;
    for (const auto& [key, by_size] : ns) {
      const auto small = by_size.find(10'000);
      const auto large = std::prev(by_size.end());
      if (small == by_size.end() || large->first <= small->first) continue;
      if (!header) {
        fmt::print("\n### Scaling: ns per dataset, largest size against 10k; {}\n\n", load_title(load, arguments));
        fmt::print(
            "| workload | executor | ns/dataset at 10k, median | ns/dataset at {}, median | ratio of medians | "
            "ratio of minimums |\n|---|---|--:|--:|--:|--:|\n",
            size_label(large->first));
        header = true;
      }
      fmt::print("| {} | {} | {:.0f} | {:.0f} | {:.2f} | {:.2f} |\n", bench::label(key.first),
                 executor_name(key.second), small->second.median, large->second.median,
                 large->second.median / small->second.median, large->second.min / small->second.min);
    }
  }
}

/// What one thread hand-off costs on this machine, the unit of W4's overhead: a thread that has
/// just slept 1 ms (like a W4 job) wakes another that sleeps on a condition variable, `rounds`
/// times. Returns the delay from the notify to the woken thread running, at three percentiles.
std::string wake_latency(int rounds) {
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
  return fmt::format(
      "a thread wakes another sleeping on a condition variable, {} times: {:.1f} us at the median, {:.1f} us at the "
      "90th percentile, {:.1f} us at the 99th",
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

/// One run of the W4 jobs by one runner.
struct W4Sample {
  double wall = 0;
  double cpu = 0;                        // the whole process's CPU time during the run
  std::optional<double> measured_ideal;  // the jobs' own measured durations / workers
};

/// One W4 table row: a runner's repetitions under one load.
struct W4Row {
  std::string job;
  std::string runner;
  bool is_tbb = false;
  double ideal = 0;
  std::vector<W4Sample> samples;
};

/// W4: real work. `ideal` is N x t / workers; "ideal from measured job times" the sum of the
/// jobs' own measured durations / workers (a sleep takes a little longer than asked). Per job kind
/// and load, every repetition runs each runner once, so that all runners' figures come from the
/// same minutes.
void run_real_work(const Arguments& arguments) {
  const std::size_t count = arguments.quick ? 1'000 : 10'000;
  constexpr int workers = 8;
  const std::vector<std::string> names = bench::generate(Workload::tree, count);
  std::map<Load, std::vector<W4Row>> tables;
  std::map<Load, std::string> latencies;
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
    struct Runner {
      std::string name;
      bool is_tbb;
      std::function<void()> run_all;
    };
    std::vector<Runner> runners;
    // The floor on this machine: the same jobs on `workers` plain threads, no scheduling at all.
    runners.push_back({"plain threads, no scheduler", false, [&] {
                         std::vector<std::thread> threads;
                         for (int t = 0; t < workers; ++t) {
                           threads.emplace_back([&, t] {
                             for (std::size_t i = static_cast<std::size_t>(t); i < count; i += workers) job(names[i]);
                           });
                         }
                         for (std::thread& thread : threads) thread.join();
                       }});
    // The floor of a design with one deciding thread: two hand-offs per job.
    runners.push_back({"one deciding thread, no scheduler", false,
                       [&] { run_on_minimal_coordinator(count, workers, [&](std::size_t i) { job(names[i]); }); }});
    runners.push_back({"tasktree", false, [&] { run_tasktree(names, workers, job); }});
#if TASKTREE_BENCH_HAVE_TBB
    if (arguments.tbb) {
      runners.push_back({"oneTBB flow graph", true, [&] {
                           bench::run_tbb_flow_graph(Workload::tree, names, workers,
                                                     sleeping ? bench::JobKind::sleep : bench::JobKind::spin, micros);
                         }});
    }
#endif
    const std::string job_label = fmt::format("{} {} us", sleeping ? "sleep" : "spin", micros);
    const double ideal = static_cast<double>(count) * static_cast<double>(micros) * 1e-6 / workers;
    for (const Load load : arguments.loads()) {
      std::vector<W4Row> rows;
      for (const Runner& runner : runners) rows.push_back({job_label, runner.name, runner.is_tbb, ideal, {}});
      measure_under(load, arguments, [&] {
        for (int r = 0; r < arguments.w4_repeat; ++r) {
          for (std::size_t i = 0; i < runners.size(); ++i) {
            job_nanos = 0;
            const double cpu_start = process_cpu_seconds();
            const auto start = Stopwatch::now();
            runners[i].run_all();
            const double wall = seconds_since(start);
            W4Sample sample{wall, process_cpu_seconds() - cpu_start, std::nullopt};
            // oneTBB's nodes run the job without measuring it.
            if (!runners[i].is_tbb) sample.measured_ideal = static_cast<double>(job_nanos.load()) * 1e-9 / workers;
            rows[i].samples.push_back(sample);
            fmt::print(stderr, "  W4 {} {} {:<33} wall {:.4f} s, {:.3f} CPUs busy\n", job_label, load_name(load),
                       runners[i].name, wall, sample.cpu / wall);
          }
        }
      });
      tables[load].insert(tables[load].end(), rows.begin(), rows.end());
    }
  }
  for (const Load load : arguments.loads()) {
    measure_under(load, arguments, [&] { latencies[load] = wake_latency(arguments.quick ? 100 : 1'000); });
  }

  const unsigned cpus = std::max(1U, std::thread::hardware_concurrency());
  for (const Load load : arguments.loads()) {
    fmt::print("\n### W4: real work, {} jobs (W2 shape), {} workers, {} repetitions; {}\n\n", count, workers,
               arguments.w4_repeat, load_title(load, arguments));
    fmt::print(
        "Ideal N x t / workers: {:.4f} s for the sleeping jobs, {:.4f} s for the spinning ones (their floor with {} "
        "hardware threads: N x t / {} = {:.4f} s). CPUs busy: the process's CPU time / wall time, at most {}.\n\n",
        static_cast<double>(count) * 1000e-6 / workers, static_cast<double>(count) * 100e-6 / workers, cpus,
        std::min<unsigned>(workers, cpus), static_cast<double>(count) * 100e-6 / std::min<unsigned>(workers, cpus),
        cpus);
    fmt::print(
        "| job | runner | wall min (s) | median (s) | max (s) | median / ideal | wall / ideal from measured job "
        "times, median | process CPU, median (s) | CPU / oneTBB's, medians | CPUs busy, median | min | max |\n"
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    const std::vector<W4Row>& rows = tables.at(load);
    for (const W4Row& row : rows) {
      std::vector<double> wall;
      std::vector<double> cpu;
      std::vector<double> busy;
      std::vector<double> over_measured;
      for (const W4Sample& sample : row.samples) {
        wall.push_back(sample.wall);
        cpu.push_back(sample.cpu);
        busy.push_back(sample.cpu / sample.wall);
        if (sample.measured_ideal) over_measured.push_back(sample.wall / *sample.measured_ideal);
      }
      const Stats wall_stats = summarize(wall);
      const Stats cpu_stats = summarize(cpu);
      const Stats busy_stats = summarize(busy);
      // oneTBB's CPU time in the same load and job kind, for the ratio.
      std::optional<double> tbb_cpu;
      for (const W4Row& other : rows) {
        if (other.is_tbb && other.job == row.job) {
          std::vector<double> other_cpu;
          for (const W4Sample& sample : other.samples) other_cpu.push_back(sample.cpu);
          tbb_cpu = summarize(other_cpu).median;
        }
      }
      fmt::print("| {} | {} | {:.4f} | {:.4f} | {:.4f} | {:.3f} | {} | {:.4f} | {} | {:.3f} | {:.3f} | {:.3f} |\n",
                 row.job, row.runner, wall_stats.min, wall_stats.median, wall_stats.max, wall_stats.median / row.ideal,
                 over_measured.empty() ? std::string("n/a") : fmt::format("{:.3f}", summarize(over_measured).median),
                 cpu_stats.median, tbb_cpu ? fmt::format("{:.2f}", cpu_stats.median / *tbb_cpu) : std::string("n/a"),
                 busy_stats.median, busy_stats.min, busy_stats.max);
    }
    fmt::print("\nOne thread hand-off on this machine, {}: {}.\n", load_name(load), latencies.at(load));
  }
}

}  // namespace

/// One inline W2 run of `names` with a journal at `path` (or none if empty); `resume`: the journal
/// holds every dataset's success, so nothing runs. Returns the seconds, end to end.
double run_with_journal(std::vector<std::string> names, const std::filesystem::path& path, bool resume) {
  const std::size_t count = names.size();
  const auto start = Stopwatch::now();
  std::shared_ptr<tasktree::Journal> journal;
  if (!path.empty()) journal = std::make_shared<tasktree::Journal>(path, tasktree::JournalOptions{.resume = resume});
  tasktree::ParallelTaskTree tree({
      .datasets = std::move(names),
      .process_dataset =
          [](std::string_view dataset, std::int64_t) {
            bench::empty_job(dataset);
            return tasktree::CompletionCallbackResult{.no_skip = true, .fail = false};
          },
      .max_workers = 1,
      .journal = journal,
  });
  const bool failed = tree.process_datasets_in_parallel();
  journal.reset();  // closing is part of the cost
  const double seconds = seconds_since(start);
  const tasktree::RunStats& stats = tree.last_run_stats();
  if (failed || stats.total != count || (resume ? stats.resumed : stats.succeeded) != count) {
    die(fmt::format("a journal run went wrong: failed={} succeeded={} resumed={} total={}", failed, stats.succeeded,
                    stats.resumed, stats.total));
  }
  return seconds;
}

/// J: what a journal costs, on W2 inline at each size: runs without one, writing one (a new file
/// each time), and resuming from a complete one (every job resumed), interleaved.
void run_journal_cost(const Arguments& arguments) {
  std::vector<std::size_t> sizes = arguments.sizes;
  if (sizes.empty()) sizes = arguments.quick ? std::vector<std::size_t>{10'000} : std::vector<std::size_t>{1'000'000};
  // Nine by default: with five, the median ratio of one run to the next swung by a third on this
  // shared machine.
  const int reps = arguments.quick ? 3 : arguments.repeat > 0 ? arguments.repeat : 9;
  const std::filesystem::path directory = std::filesystem::temp_directory_path();
  const std::filesystem::path path = directory / fmt::format("tasktree-bench-{}.journal", ::getpid());
  fmt::print("\n### J: a journal on W2, inline, {} repetitions (journal in {})\n\n", reps, directory.string());
  fmt::print(
      "| datasets | load | no journal: min / median / max | writing a journal | with / without (medians) | "
      "resuming all from it | resume / without |\n|--:|--|--:|--:|--:|--:|--:|\n");
  for (const std::size_t size : sizes) {
    const std::vector<std::string> names = bench::generate(Workload::tree, size);
    for (const Load load : arguments.loads()) {
      std::vector<double> none, writing, resuming;
      measure_under(load, arguments, [&] {
        for (int rep = 0; rep < reps; ++rep) {
          none.push_back(run_with_journal(names, {}, false));
          std::filesystem::remove(path);
          writing.push_back(run_with_journal(names, path, false));
          resuming.push_back(run_with_journal(names, path, true));
        }
      });
      std::filesystem::remove(path);
      const Stats a = summarize(none);
      const Stats b = summarize(writing);
      const Stats c = summarize(resuming);
      fmt::print(
          "| {} | {} | {:.3f} / {:.3f} / {:.3f} s | {:.3f} / {:.3f} / {:.3f} s | {:.2f} | {:.3f} / {:.3f} / {:.3f} s | "
          "{:.2f} |\n",
          size, load_name(load), a.min, a.median, a.max, b.min, b.median, b.max, b.median / a.median, c.min, c.median,
          c.max, c.median / a.median);
      std::fflush(stdout);
    }
  }
}

int main(int argc, char** argv) {
  const std::optional<Arguments> arguments = parse_arguments(argc, argv);
  if (!arguments) return 2;
  const std::vector<Load> loads = arguments->loads();
  if (std::find(loads.begin(), loads.end(), Load::busy) != loads.end()) bench::install_busy_load_cleanup();
  try {
    const auto start = Stopwatch::now();
    std::string command = "tasktree-bench";
    for (int i = 1; i < argc; ++i) command += fmt::format(" {}", argv[i]);
    fmt::print("## {}\n\nMachine: {}.\nMode: {}.\nRepetitions: {}.\nLoad average at the start: {}.\n", command,
               machine(), mode_description(*arguments), repetitions_description(*arguments), load_average());
#if TASKTREE_BENCH_HAVE_TBB
    fmt::print("Comparison: {}.\n", arguments->tbb ? fmt::format("oneTBB {} flow graph", bench::tbb_version())
                                                   : std::string("none (--no-tbb)"));
#else
    fmt::print("Comparison: none (oneTBB was not found at build time).\n");
#endif
    fmt::print("\nWorkloads:\n\n");
    for (const Workload workload : {Workload::flat, Workload::flat_scattered, Workload::tree, Workload::job_runner}) {
      if (wanted(*arguments, bench::label(workload))) {
        fmt::print("- {}: {}\n", bench::label(workload), bench::description(workload));
      }
    }
    if (wanted(*arguments, "W4")) {
      fmt::print("- W4: real work: jobs of W2's shape that sleep 1 ms, or spin 100 us, on 8 workers\n");
    }
    if (wanted(*arguments, "J")) fmt::print("- J: W2 inline with a journal, written and then resumed from\n");
    std::fflush(stdout);
    std::vector<Row> rows;
    run_scheduler_workloads(*arguments, rows);
    print_scheduler_tables(*arguments, rows);
    if (wanted(*arguments, "W4")) run_real_work(*arguments);
    if (wanted(*arguments, "J")) run_journal_cost(*arguments);
    fmt::print("\nLoad average at the end: {}. Total benchmark time: {:.1f} s.\n", load_average(),
               seconds_since(start));
  } catch (const std::exception& error) {  // the busy processes are gone: their BusyLoad was unwound
    fmt::print(stderr, "tasktree-bench: {}\n", error.what());
    return EXIT_FAILURE;
  }
  return EXIT_SUCCESS;
}
