// The demo: a large generated tree, run on the default thread pool, with a short report.
//
//   demo [--datasets N] [--workers N]
//
// It builds N datasets (default 100000) shaped like the ZFS pools of a fleet of hosts:
//
//   pool3                                     a pool
//   pool3/host7                               a host's datasets in it
//   pool3/host7/dataset12                     a dataset ...
//   pool3/host7/dataset12/vol1                ... its volumes ...
//   pool3/host7/dataset12/vol0/clone          ... and a clone of the first volume
//   pool3/host7/dataset12/~/prune             barrier: after the dataset and all its volumes
//   pool3/host7/~/report                      barrier: after everything of the host, prunes included
//
// and runs one tiny job per dataset (it hashes the name) with `--workers` workers on the default
// executor, a thread pool. Then it reports sizes, timings, the run's statistics and the first jobs
// in submission order, recorded by a `RunObserver`.

#include <tasktree/tasktree.hpp>

#include <fmt/format.h>

#include <charconv>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace {

constexpr std::string_view usage = "usage: demo [--datasets N] [--workers N]\n";

struct Arguments {
  std::size_t datasets = 100'000;
  int workers = 4;
};

/// Parses `text` as a whole decimal number in [low, high].
template <class Int>
std::optional<Int> parse_number(std::string_view text, Int low, Int high) {
  Int value{};
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size() || value < low || value > high) return std::nullopt;
  return value;
}

/// Parses the command line; prints a message and returns nullopt on bad input.
std::optional<Arguments> parse_arguments(int argc, char** argv) {
  Arguments arguments;
  for (int i = 1; i < argc; ++i) {
    std::string_view option = argv[i];
    std::string_view value;
    if (const std::size_t equals = option.find('='); option.starts_with("--") && equals != std::string_view::npos) {
      value = option.substr(equals + 1);  // --datasets=N
      option = option.substr(0, equals);
    } else if (option == "--datasets" || option == "--workers") {
      if (i + 1 == argc) {
        fmt::print(stderr, "demo: {} needs a value\n{}", option, usage);
        return std::nullopt;
      }
      value = argv[++i];  // --datasets N
    }
    if (option == "--datasets") {
      constexpr std::size_t most = 100'000'000;  // far beyond any demo, well within the trie's limits
      const auto count = parse_number<std::size_t>(value, 1, most);
      if (!count) {
        fmt::print(stderr, "demo: invalid --datasets {:?}: expected a whole number from 1 to {}\n", value, most);
        return std::nullopt;
      }
      arguments.datasets = *count;
    } else if (option == "--workers") {
      constexpr int most = 1024;
      const auto count = parse_number<int>(value, 1, most);
      if (!count) {
        fmt::print(stderr, "demo: invalid --workers {:?}: expected a whole number from 1 to {}\n", value, most);
        return std::nullopt;
      }
      arguments.workers = *count;
    } else {
      fmt::print(stderr, "demo: unknown argument {:?}\n{}", argv[i], usage);
      return std::nullopt;
    }
  }
  return arguments;
}

/// Generates `count` dataset names of the shape described at the top, in the order a listing would
/// produce them (not sorted: "dataset10" comes after "dataset9"; tasktree does not mind).
std::vector<std::string> generate_datasets(std::size_t count) {
  constexpr int hosts_per_pool = 20;
  constexpr int datasets_per_host = 50;
  constexpr int volumes_per_dataset = 3;

  std::vector<std::string> names;
  names.reserve(count);
  const auto full = [&] { return names.size() == count; };
  const auto add = [&](std::string name) {
    if (!full()) names.push_back(std::move(name));
  };
  for (int p = 0; !full(); ++p) {
    const std::string pool = fmt::format("pool{}", p);
    add(pool);
    for (int h = 0; h < hosts_per_pool && !full(); ++h) {
      const std::string host = fmt::format("{}/host{}", pool, h);
      add(host);
      for (int d = 0; d < datasets_per_host && !full(); ++d) {
        const std::string dataset = fmt::format("{}/dataset{}", host, d);
        add(dataset);
        for (int v = 0; v < volumes_per_dataset; ++v) add(fmt::format("{}/vol{}", dataset, v));
        add(dataset + "/vol0/clone");
        add(dataset + "/~/prune");
      }
      add(host + "/~/report");
    }
  }
  return names;
}

/// The job's "work": FNV-1a over the name, a few rounds.
std::uint64_t hash_name(std::string_view name) {
  std::uint64_t hash = 14695981039346656037ULL;
  for (int round = 0; round < 4; ++round) {
    for (const char c : name) {
      hash ^= static_cast<unsigned char>(c);
      hash *= 1099511628211ULL;
    }
  }
  return hash;
}

/// Records the first few submissions. Observer hooks run on the coordinator thread, one at a
/// time, so no locking is needed.
class FirstSubmissions final : public tasktree::RunObserver {
 public:
  static constexpr std::size_t kept = 10;

  void on_start(std::size_t /*total*/) override { names_.clear(); }
  void on_submit(std::string_view dataset, std::int64_t /*submit_count*/) override {
    if (names_.size() < kept) names_.emplace_back(dataset);
  }
  [[nodiscard]] const std::vector<std::string>& names() const noexcept { return names_; }

 private:
  std::vector<std::string> names_;
};

using Stopwatch = std::chrono::steady_clock;

double seconds_since(Stopwatch::time_point start) {
  return std::chrono::duration<double>(Stopwatch::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && (std::string_view(argv[1]) == "--help" || std::string_view(argv[1]) == "-h")) {
    fmt::print("{}", usage);
    return EXIT_SUCCESS;
  }
  const std::optional<Arguments> arguments = parse_arguments(argc, argv);
  if (!arguments) return 2;

  auto start = Stopwatch::now();
  std::vector<std::string> datasets = generate_datasets(arguments->datasets);
  const double generate_seconds = seconds_since(start);

  auto first_submissions = std::make_shared<FirstSubmissions>();
  std::uint64_t checksum = 0;  // updated by completion callbacks, which run on this thread only

  start = Stopwatch::now();
  tasktree::ParallelTaskTree tree({
      .datasets = std::move(datasets),
      .process_dataset =
          [&checksum](std::string_view dataset, std::int64_t /*submit_count*/) {
            const std::uint64_t hash = hash_name(dataset);  // on a worker
            // The callback runs later on the coordinator thread, one at a time: it can update
            // plain shared state without a lock. (Small captures are stored without allocating.)
            return tasktree::CompletionCallback([hash, &checksum](tasktree::InFlight&) {
              checksum ^= hash;
              return tasktree::CompletionCallbackResult{.no_skip = true, .fail = false};
            });
          },
      .max_workers = arguments->workers,
      .observer = first_submissions,
  });
  const double construct_seconds = seconds_since(start);

  start = Stopwatch::now();
  const bool failed = tree.process_datasets_in_parallel();
  const double run_seconds = seconds_since(start);

  const tasktree::RunStats& stats = tree.last_run_stats();
  fmt::print("tasktree demo: {} datasets, max_workers={}\n", tree.datasets().size(), arguments->workers);
  fmt::print("  trie nodes          {}\n", tree.trie().size());
  fmt::print("  barriers enabled    {}\n", tree.barriers_enabled() ? "yes" : "no");
  fmt::print("  executor            {}\n",
             tree.default_executor_is_parallel() ? "thread pool" : "inline, on the coordinator thread");
  fmt::print("  generate            {:9.1f} ms\n", generate_seconds * 1e3);
  fmt::print("  construct           {:9.1f} ms\n", construct_seconds * 1e3);
  fmt::print("  run                 {:9.1f} ms  ({:.0f} datasets/s)\n", run_seconds * 1e3,
             static_cast<double>(stats.total) / run_seconds);
  fmt::print("  run failed          {}\n", failed);
  fmt::print("  stats               total={} started={} completed={} succeeded={} failed={} skipped={} cancelled={}\n",
             stats.total, stats.started, stats.completed, stats.succeeded, stats.failed, stats.skipped,
             stats.cancelled);
  fmt::print("  checksum            {:016x}\n", checksum);
  fmt::print("  first {} submitted:\n", first_submissions->names().size());
  for (std::size_t i = 0; i < first_submissions->names().size(); ++i) {
    fmt::print("    {:>2}  {}\n", i + 1, first_submissions->names()[i]);
  }

  return !failed && stats.succeeded == stats.total ? EXIT_SUCCESS : EXIT_FAILURE;
}
