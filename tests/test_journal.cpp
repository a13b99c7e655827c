// Tests for include/tasktree/journal.hpp (docs/journal.md): what a run records, how a later run
// resumes from it, and every bad input: a clear error naming the path before anything runs.

#include "catch.hpp"
#include "model/random_case.hpp"
#include "model/reference_model.hpp"
#include "support.hpp"

#include <tasktree/tasktree.hpp>

#include <fmt/format.h>

#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

using tasktree::CompletionCallbackResult;
using tasktree::FaultTolerantOptions;
using tasktree::FaultTolerantStats;
using tasktree::Journal;
using tasktree::JournalOptions;
using tasktree::ParallelTaskTree;
using tasktree::Retry;
using tasktree::RunStats;
using tasktree::SynchronousExecutor;
namespace fs = std::filesystem;

namespace {

/// A scratch directory, removed at the end.
class Scratch {
 public:
  Scratch() {
    std::string pattern = (fs::temp_directory_path() / "tasktree-journal-test.XXXXXX").string();
    REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    dir_ = pattern;
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() {
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }
  [[nodiscard]] fs::path operator/(std::string_view name) const { return dir_ / name; }

 private:
  fs::path dir_;
};

std::string read_file(const fs::path& path) {
  std::ifstream file(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
}

void write_file(const fs::path& path, std::string_view text) {
  std::ofstream(path, std::ios::binary) << text;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::size_t at = 0;
  while (at < text.size()) {
    const std::size_t end = text.find('\n', at);
    lines.push_back(text.substr(at, end - at));
    at = end == std::string::npos ? text.size() : end + 1;
  }
  return lines;
}

bool contains(std::string_view text, std::string_view part) { return text.find(part) != std::string_view::npos; }

/// A core-level run with a journal: jobs run inline; `outcome` decides each completion.
struct JournalRun {
  std::vector<std::string> ran;
  std::vector<std::string> resumed;  // from the observer hook
  std::vector<std::string> warnings;
  std::vector<std::string> infos;
  RunStats stats;
  bool failed = false;
};

using Decide = std::function<CompletionCallbackResult(std::string_view)>;

CompletionCallbackResult succeed(std::string_view) { return {}; }

JournalRun run_with(std::vector<std::string> datasets, const std::shared_ptr<Journal>& journal,
                    const Decide& decide = succeed, std::string barrier_name = "~",
                    std::optional<bool> enable_barriers = {}) {
  JournalRun run;
  struct Resumes final : tasktree::RunObserver {
    std::vector<std::string>* resumed;
    explicit Resumes(std::vector<std::string>* out) : resumed(out) {}
    void on_resume(std::string_view dataset) override { resumed->emplace_back(dataset); }
  };
  ParallelTaskTree<SynchronousExecutor> tree({
      .datasets = std::move(datasets),
      .process_dataset =
          [&](std::string_view dataset, std::int64_t) {
            run.ran.emplace_back(dataset);
            const CompletionCallbackResult result = decide(dataset);
            return tasktree::CompletionCallback([result](tasktree::InFlight&) { return result; });
          },
      .max_workers = 1,
      .enable_barriers = enable_barriers,
      .barrier_name = std::move(barrier_name),
      .log = tasktree::Logger{.sink =
                                  [&run](tasktree::LogLevel level, std::string_view message) {
                                    if (level == tasktree::LogLevel::warning) run.warnings.emplace_back(message);
                                    if (level == tasktree::LogLevel::info) run.infos.emplace_back(message);
                                  },
                              .level = tasktree::LogLevel::info},
      .observer = std::make_shared<Resumes>(&run.resumed),
      .journal = journal,
  });
  run.failed = tree.process_datasets_in_parallel();
  run.stats = tree.last_run_stats();
  return run;
}

bool adds_up(const RunStats& stats) {
  return stats.started + stats.skipped + stats.cancelled + stats.resumed == stats.total &&
         stats.succeeded + stats.failed == stats.completed;
}

std::shared_ptr<Journal> open(const fs::path& path, bool resume = true) {
  return std::make_shared<Journal>(path, JournalOptions{.resume = resume});
}

/// What `fn` threw, or "<nothing thrown>".
template <class F>
std::string thrown_by(F&& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "<nothing thrown>";
}

/// Lowers the limit on the size of the files this process writes (RLIMIT_FSIZE) to `bytes`, with
/// SIGXFSZ ignored, so that a write past it fails with EFBIG; restores both when it goes. Nothing
/// should be checked while it lives (the test's own output could be a file).
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) {
    REQUIRE(::getrlimit(RLIMIT_FSIZE, &saved_) == 0);
    saved_handler_ = ::signal(SIGXFSZ, SIG_IGN);
    rlimit lowered = saved_;
    lowered.rlim_cur = bytes;
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &lowered) == 0);
  }
  FileSizeLimit(const FileSizeLimit&) = delete;
  FileSizeLimit& operator=(const FileSizeLimit&) = delete;
  ~FileSizeLimit() {
    ::setrlimit(RLIMIT_FSIZE, &saved_);
    ::signal(SIGXFSZ, saved_handler_);
  }

 private:
  rlimit saved_{};
  sighandler_t saved_handler_ = SIG_DFL;
};

}  // namespace

TEST_CASE("a run writes a header and one record per processed completion, in completion order") {
  Scratch scratch;
  const fs::path path = scratch / "run.journal";
  const JournalRun run = run_with({"a", "a/b", "c"}, open(path, false), [](std::string_view dataset) {
    return CompletionCallbackResult{.no_skip = dataset != "a/b", .fail = dataset == "c"};
  });
  CHECK(run.ran == std::vector<std::string>{"a", "a/b", "c"});
  const std::vector<std::string> lines = lines_of(read_file(path));
  REQUIRE(lines.size() == 4);
  CHECK(lines[0].starts_with("{\"tasktree_journal\":1,\"fingerprint\":\""));
  CHECK(contains(lines[0], "\"datasets\":3,\"barrier\":\"~\",\"started\":"));
  // What is as by default (no_skip true, fail false, one attempt) is left out.
  CHECK(lines[1].starts_with("{\"dataset\":\"a\",\"start\":"));
  CHECK(contains(lines[1], ",\"seconds\":"));
  CHECK(lines[2].starts_with("{\"dataset\":\"a/b\",\"no_skip\":false,\"start\":"));
  CHECK(lines[3].starts_with("{\"dataset\":\"c\",\"fail\":true,\"start\":"));
  const tasktree::JournalContents contents = Journal::read(path);
  CHECK(contents.runs == 1);
  REQUIRE(contents.records.size() == 3);
  CHECK(contents.records[1].dataset == "a/b");
  CHECK_FALSE(contents.records[1].succeeded());
  CHECK(contents.records[0].succeeded());
  CHECK(contents.records[0].seconds >= 0);
  CHECK(contents.records[0].start > 1.6e9);  // wall clock, seconds since 1970
  CHECK(contents.warnings.empty());
}

TEST_CASE("resume: what succeeded is not run again; failed and skipped datasets run; counts add up") {
  Scratch scratch;
  const fs::path path = scratch / "run.journal";
  const std::vector<std::string> plan{"a", "a/b", "b", "b/c", "b/c/d", "e", "e/~/f"};
  {
    // b says no_skip = false (its subtree is skipped), e fails.
    const JournalRun first = run_with(plan, open(path), [](std::string_view dataset) {
      return CompletionCallbackResult{.no_skip = dataset != "b", .fail = dataset == "e"};
    });
    CHECK(first.stats == RunStats{.total = 7, .started = 5, .completed = 5, .succeeded = 4, .failed = 1, .skipped = 2});
  }
  const JournalRun second = run_with(plan, open(path));
  CHECK(second.ran == std::vector<std::string>{"b", "b/c", "b/c/d", "e"});
  CHECK(second.resumed == std::vector<std::string>{"a", "a/b", "e/~/f"});
  CHECK(second.stats ==
        RunStats{.total = 7, .started = 4, .completed = 4, .succeeded = 4, .failed = 0, .skipped = 0, .resumed = 3});
  CHECK(adds_up(second.stats));
  CHECK(contains(second.infos.at(0), "3 of 7 datasets succeeded before and are resumed"));
  // A third run: everything succeeded before.
  const JournalRun third = run_with(plan, open(path));
  CHECK(third.ran.empty());
  CHECK(third.stats.resumed == 7);
  CHECK_FALSE(third.failed);
  CHECK(Journal::read(path).runs == 3);
}

TEST_CASE("one Journal object carries over to the next run of the same process when resuming") {
  Scratch scratch;
  const auto journal = open(scratch / "run.journal");
  const JournalRun first = run_with({"a", "b"}, journal, [](std::string_view dataset) {
    return CompletionCallbackResult{.fail = dataset == "b"};
  });
  CHECK(first.ran == std::vector<std::string>{"a", "b"});
  const JournalRun second = run_with({"a", "b"}, journal);
  CHECK(second.ran == std::vector<std::string>{"b"});
  CHECK(journal->find("b") != nullptr);
  CHECK(journal->find("b")->succeeded());
}

TEST_CASE("without resume the journal is written but nothing is resumed") {
  Scratch scratch;
  const fs::path path = scratch / "run.journal";
  run_with({"a"}, open(path, false));
  const JournalRun again = run_with({"a"}, open(path, false));
  CHECK(again.ran == std::vector<std::string>{"a"});
  CHECK(again.stats.resumed == 0);
  CHECK(Journal::read(path).runs == 2);
}

TEST_CASE("a changed plan: recorded datasets not in it are ignored and counted; new ones run") {
  Scratch scratch;
  const fs::path path = scratch / "run.journal";
  run_with({"a", "b", "c"}, open(path));
  const JournalRun changed = run_with({"a", "a/new", "d"}, open(path));
  CHECK(changed.ran == std::vector<std::string>{"a/new", "d"});
  CHECK(changed.resumed == std::vector<std::string>{"a"});
  REQUIRE(changed.infos.size() == 2);
  CHECK(contains(changed.infos[0], "the plan changed since its last run"));
  CHECK(contains(changed.infos[1], "1 of 3 datasets succeeded before and are resumed; 2 recorded datasets are not "
                                   "in the plan (ignored)"));
}

TEST_CASE("with a key, a success recorded under another key does not count") {
  Scratch scratch;
  const fs::path path = scratch / "run.journal";
  std::map<std::string, std::string, std::less<>> commands{{"a", "echo 1"}, {"b", "echo 2"}};
  const auto keyed = [&] {
    return std::make_shared<Journal>(
        path, JournalOptions{.resume = true, .key = [&](std::string_view dataset) {
                               return commands.find(dataset)->second;
                             }});
  };
  run_with({"a", "b"}, keyed());
  CHECK(contains(read_file(path), "\"key\":\"echo 2\""));
  commands["b"] = "echo 3";
  const JournalRun second = run_with({"a", "b"}, keyed());
  CHECK(second.ran == std::vector<std::string>{"b"});
}

TEST_CASE("a record's host (an MPI run's) is read back, escaped or not; a host of the wrong type is rejected") {
  Scratch scratch;
  const fs::path path = scratch / "hosts.journal";
  const std::string header = "{\"tasktree_journal\":1,\"fingerprint\":\"0\",\"datasets\":3,\"barrier\":\"~\"}\n";
  write_file(path, header + "{\"dataset\":\"a\",\"start\":1,\"seconds\":0.5,\"host\":\"node7\"}\n" +
                       "{\"dataset\":\"b\",\"host\":\"quote\\\"d\"}\n{\"dataset\":\"c\"}\n");
  const tasktree::JournalContents contents = tasktree::Journal::read(path);
  REQUIRE(contents.records.size() == 3);
  CHECK(contents.records[0].host == "node7");       // the plain reader
  CHECK(contents.records[1].host == "quote\"d");    // the general reader
  CHECK(contents.records[2].host.empty());          // one machine
  write_file(path, header + "{\"dataset\":\"a\",\"host\":7}\n");
  const std::string message = thrown_by([&] { open(path); });
  CHECK(contains(message, "line 2: \"host\" is not a string"));
}

TEST_CASE("names of any bytes round-trip: invalid UTF-8, quotes, control bytes") {
  Scratch scratch;
  const fs::path path = scratch / "run.journal";
  const std::vector<std::string> plan{std::string("\xff\xfe"), "quote\"back\\slash", std::string("tab\tnl\nx"),
                                      "caf\xc3\xa9", std::string("\xed\xa0\x80surrogate")};
  run_with(plan, open(path));
  const std::string text = read_file(path);
  CHECK(contains(text, "\"dataset\":\"\\udcff\\udcfe\""));
  CHECK(contains(text, "\"dataset\":\"caf\xc3\xa9\""));  // valid UTF-8 stays readable
  const JournalRun second = run_with(plan, open(path));
  CHECK(second.ran.empty());
  CHECK(second.stats.resumed == plan.size());
}

TEST_CASE("an incomplete last line is cut off with a warning; the journal goes on cleanly") {
  Scratch scratch;
  const fs::path path = scratch / "run.journal";
  run_with({"a", "b"}, open(path, false));
  {
    std::ofstream torn(path, std::ios::binary | std::ios::app);
    torn << "{\"dataset\":\"b\",\"no_sk";
  }
  const JournalRun resumed = run_with({"a", "b", "c"}, open(path));
  CHECK(resumed.ran == std::vector<std::string>{"c"});
  REQUIRE(resumed.warnings.size() == 1);
  CHECK(contains(resumed.warnings[0], "line 4 is incomplete"));
  CHECK(contains(resumed.warnings[0], path.string()));
  const tasktree::JournalContents contents = Journal::read(path);
  CHECK(contents.warnings.empty());  // cut off, and the new records start lines of their own
  CHECK(contents.records.size() == 3);
}

TEST_CASE("bad journals are rejected naming the path (and the line) before anything runs") {
  Scratch scratch;
  const fs::path path = scratch / "bad.journal";
  const std::string header = "{\"tasktree_journal\":1,\"fingerprint\":\"0\",\"datasets\":1,\"barrier\":\"~\"}\n";
  struct Case {
    std::string name;
    std::string text;
    std::string message;
  };
  const Case cases[] = {
      {"a corrupt line in the middle", header + "{\"dataset\":\"a\"}\n{garbage\n{\"dataset\":\"b\"}\n",
       "line 3: not a journal line"},
      {"another format version", "{\"tasktree_journal\":2}\n", "line 1: format version 2, but this tasktree reads version 1"},
      {"not a journal", "hello world\n", "line 1: not a journal line"},
      {"no header", "{\"dataset\":\"a\"}\n", "line 1: not a tasktree journal"},
      {"a record without a dataset", header + "{\"no_skip\":true}\n", "line 2: a record without a \"dataset\" string"},
      {"a flag of the wrong type", header + "{\"dataset\":\"a\",\"fail\":\"no\"}\n", "line 2: \"fail\" is not true or false"},
      {"a bad escape", header + "{\"dataset\":\"a\\q\"}\n", "line 2: not a journal line"},
  };
  for (const Case& c : cases) {
    DYNAMIC_SECTION(c.name) {
      write_file(path, c.text);
      const std::string message = thrown_by([&] { open(path); });
      CHECK(contains(message, path.string()));
      CHECK(contains(message, c.message));
      CHECK(read_file(path) == c.text);  // left as it was
    }
  }
}

TEST_CASE("a journal locked by another Journal, a path that cannot be opened, and a bad sync_interval are errors") {
  Scratch scratch;
  const fs::path path = scratch / "run.journal";
  const auto first = open(path);
  const std::string locked = thrown_by([&] { open(path); });
  CHECK(contains(locked, "is in use by another run"));
  CHECK(contains(locked, path.string()));
  const std::string missing = thrown_by([&] { open(scratch / "no-such-dir" / "x.journal"); });
  CHECK(contains(missing, "no-such-dir"));
  CHECK(contains(missing, "No such file or directory"));
  const std::string directory = thrown_by([&] { open(scratch / ""); });
  CHECK(contains(directory, "cannot open"));
  CHECK(thrown_by([&] {
          Journal(scratch / "other.journal", JournalOptions{.sync_interval = std::chrono::nanoseconds(0)});
        }) == "tasktree: invalid journal sync_interval 0ns: it must be positive");
  CHECK(thrown_by([&] { static_cast<void>(Journal::read(scratch / "absent.journal")); }).find("cannot open") !=
        std::string::npos);
}

TEST_CASE("a run that throws still has every processed completion on disk") {
  Scratch scratch;
  const fs::path path = scratch / "run.journal";
  const auto journal = open(path);
  CHECK(thrown_by([&] {
          run_with({"a", "b", "c"}, journal, [](std::string_view dataset) -> CompletionCallbackResult {
            if (dataset == "b") throw std::runtime_error("b broke");
            return {};
          });
        }) == "b broke");
  const tasktree::JournalContents contents = Journal::read(path);
  REQUIRE(contents.records.size() == 1);
  CHECK(contents.records[0].dataset == "a");
  // The journal is free for the next run after the error.
  const JournalRun again = run_with({"a", "b", "c"}, journal);
  CHECK(again.ran == std::vector<std::string>{"b", "c"});
}

TEST_CASE("policy layer: records carry the attempts and the error text; resume reruns only the failures") {
  Scratch scratch;
  const fs::path path = scratch / "run.journal";
  std::mutex mutex;
  std::vector<std::string> ran;
  std::set<std::string> failing{"b", "c"};
  const auto run = [&] {
    FaultTolerantStats stats;
    tasktree::process_datasets_in_parallel_and_fault_tolerant(
        FaultTolerantOptions<>{
            .datasets = {"a", "b", "c", "c/d"},
            .process_dataset =
                [&](std::string_view dataset, std::string_view, const Retry& retry) {
                  {
                    std::lock_guard lock(mutex);
                    ran.push_back(fmt::format("{}#{}", dataset, retry.count));
                  }
                  if (failing.contains(std::string(dataset)) && (dataset == "c" || retry.count == 0)) {
                    throw std::runtime_error(fmt::format("{} is down", dataset));
                  }
                  return true;
                },
            .skip_on_error = tasktree::SkipOnError::tree,
            .retry_policy = {.max_retries = 1, .initial_backoff = std::chrono::nanoseconds(0),
                             .max_backoff = std::chrono::nanoseconds(0)},
            .max_workers = 2,
            .journal = open(path),
        },
        stats);
    return stats;
  };
  const FaultTolerantStats first = run();
  CHECK(first.run.failed == 1);  // c; b recovered on its retry
  const tasktree::JournalContents contents = Journal::read(path);
  std::map<std::string, tasktree::JournalRecord> by_name;
  for (const auto& record : contents.records) by_name[record.dataset] = record;
  CHECK(by_name.at("a").attempts == 1);
  CHECK(by_name.at("b").attempts == 2);
  CHECK(by_name.at("b").succeeded());
  CHECK(by_name.at("c").attempts == 2);
  CHECK(by_name.at("c").error == "c is down");
  CHECK_FALSE(by_name.at("c").succeeded());
  CHECK(by_name.count("c/d") == 0);  // skipped: no completion
  ran.clear();
  failing.clear();
  const FaultTolerantStats second = run();
  std::sort(ran.begin(), ran.end());
  CHECK(ran == std::vector<std::string>{"c#0", "c/d#0"});
  CHECK(second.run.resumed == 2);
  CHECK(second.run.succeeded == 2);
}

TEST_CASE("model: for random trees and random journals, a resumed run runs what the reference model says") {
  // A dataset the journal shows succeeded behaves as a job that succeeds with no_skip = true,
  // except that it does not run: so the model's run of the case with those outcomes, less the
  // journaled datasets, is the set of jobs the resumed run must run.
  Scratch scratch;
  tasktree_model::RandomSource source(20261203);
  int checked = 0;
  for (int n = 0; n < 300; ++n) {
    tasktree_model::Case c = tasktree_model::random_case(source);
    if (tasktree_model::invalid_reason(c) || c.priority) continue;
    std::set<std::string> journaled;
    for (auto it = c.outcomes.begin(); it != c.outcomes.end();) {
      it = it->second.stop || it->second.unfinished ? c.outcomes.erase(it) : std::next(it);
    }
    for (const std::string& dataset : c.datasets) {
      if (source.chance(40)) {
        journaled.insert(dataset);
        c.outcomes[dataset] = tasktree_model::Outcome{};
      }
    }
    const tasktree_model::Prediction prediction = tasktree_model::predict(c);
    std::set<std::string> expected_ran;
    std::size_t expected_resumed = 0;
    for (const std::string& job : prediction.order) {
      if (journaled.contains(job)) {
        ++expected_resumed;
      } else {
        expected_ran.insert(job);
      }
    }
    const fs::path path = scratch / fmt::format("case{}.journal", n);
    std::string text = "{\"tasktree_journal\":1,\"fingerprint\":\"x\"}\n";
    for (const std::string& dataset : journaled) {
      text += "{\"dataset\":";
      tasktree::detail::journal_format::append_string(text, dataset);
      text += ",\"no_skip\":true,\"fail\":false}\n";
    }
    write_file(path, text);
    const JournalRun run = run_with(c.datasets, open(path), [&c](std::string_view dataset) {
      const tasktree_model::Outcome outcome = c.outcome(dataset);
      return CompletionCallbackResult{.no_skip = outcome.no_skip, .fail = outcome.fail};
    }, c.barrier_name, c.enable_barriers);
    INFO(tasktree_model::describe(c));
    CHECK(std::set<std::string>(run.ran.begin(), run.ran.end()) == expected_ran);
    CHECK(run.ran.size() == expected_ran.size());
    CHECK(run.stats.resumed == expected_resumed);
    CHECK(adds_up(run.stats));
    CHECK(run.stats.cancelled == 0);
    ++checked;
  }
  CHECK(checked > 100);
}

TEST_CASE("many records, over several of the queue's chunks and timed syncs, read back as they were") {
  Scratch scratch;
  const fs::path path = scratch / "many.journal";
  std::vector<std::string> datasets;
  for (int i = 0; i < 20'000; ++i) datasets.push_back(fmt::format("d{:05}", i));
  // Some outcomes differ from the defaults, so that lines of every shape mix; a short interval
  // makes the sync thread write and sync while the coordinator records.
  const auto outcome = [](std::string_view dataset) {
    const int i = std::stoi(std::string(dataset.substr(1)));
    return CompletionCallbackResult{.no_skip = i % 5 != 0, .fail = i % 7 == 0};
  };
  const auto journal = std::make_shared<Journal>(
      path, JournalOptions{.sync_interval = std::chrono::microseconds(200),
                           .key = [](std::string_view dataset) { return fmt::format("key of {}", dataset); }});
  const JournalRun run = run_with(datasets, journal, outcome);
  REQUIRE(run.ran.size() == datasets.size());
  const std::vector<std::string> lines = lines_of(read_file(path));
  REQUIRE(lines.size() == datasets.size() + 1);
  for (std::size_t i = 0; i < run.ran.size(); ++i) {  // in completion order
    REQUIRE(contains(lines[i + 1], fmt::format("{{\"dataset\":\"{}\",", run.ran[i])));
  }
  const tasktree::JournalContents contents = Journal::read(path);
  REQUIRE(contents.records.size() == datasets.size());
  for (const tasktree::JournalRecord& record : contents.records) {
    const CompletionCallbackResult expected = outcome(record.dataset);
    CHECK(record.no_skip == expected.no_skip);
    CHECK(record.fail == expected.fail);
    CHECK(record.attempts == 1);
    CHECK(record.key == "key of " + record.dataset);
    CHECK(record.error.empty());
    CHECK(record.seconds >= 0);
  }
}

TEST_CASE("records with and without attempts and errors mix over several chunks and keep their own fields") {
  // Most records are one attempt without an error; every third dataset fails once (two attempts,
  // succeeded) and every seventh fails for good (two attempts, an error): the queue carries those
  // fields beside the common records, and each must come out on its own line.
  Scratch scratch;
  const fs::path path = scratch / "mixed.journal";
  std::vector<std::string> datasets;
  for (int i = 0; i < 10'000; ++i) datasets.push_back(fmt::format("d{:05}", i));
  const auto number = [](std::string_view dataset) { return std::stoi(std::string(dataset.substr(1))); };
  FaultTolerantStats stats;
  tasktree::process_datasets_in_parallel_and_fault_tolerant(
      FaultTolerantOptions<SynchronousExecutor>{
          .datasets = datasets,
          .process_dataset =
              [&](std::string_view dataset, std::string_view, const Retry& retry) {
                const int i = number(dataset);
                if (i % 7 == 0) throw std::runtime_error(fmt::format("{} is down", dataset));
                if (i % 3 == 0 && retry.count == 0) throw std::runtime_error("once");
                return true;
              },
          .skip_on_error = tasktree::SkipOnError::dataset,
          .retry_policy = {.max_retries = 1, .initial_backoff = std::chrono::nanoseconds(0),
                           .max_backoff = std::chrono::nanoseconds(0)},
          .max_workers = 1,
          .journal = open(path, false),
      },
      stats);
  const tasktree::JournalContents contents = Journal::read(path);
  REQUIRE(contents.records.size() == datasets.size());  // one record per dataset: each is checked below
  for (const tasktree::JournalRecord& record : contents.records) {
    const int i = number(record.dataset);
    const bool down = i % 7 == 0;
    INFO(record.dataset);
    CHECK(record.attempts == (down || i % 3 == 0 ? 2 : 1));
    CHECK(record.error == (down ? fmt::format("{} is down", record.dataset) : std::string()));
    CHECK(record.succeeded() == !down);
    CHECK(record.key.empty());
    CHECK(record.host.empty());
  }
}

TEST_CASE("on the steady clock, a record's start and seconds hold what the job measured itself") {
  // By default jobs are timed on the steady clock (with the CPU's counter where the kernel keeps
  // time with it, detail/job_timer.hpp): a job's recorded duration, and what the observer is told,
  // include the time the job measured around its own work, and one job of a chain starts after
  // the one before it ended.
  Scratch scratch;
  const fs::path path = scratch / "timed.journal";
  std::mutex mutex;
  std::map<std::string, std::chrono::nanoseconds> measured;
  struct Elapsed final : tasktree::RunObserver {
    std::map<std::string, std::chrono::nanoseconds> seen;  // written by the coordinator only
    void on_complete(std::string_view dataset, std::chrono::nanoseconds took, CompletionCallbackResult) override {
      seen[std::string(dataset)] = took;
    }
  };
  const auto observer = std::make_shared<Elapsed>();
  const std::vector<std::string> chain{"a", "a/b", "a/b/c", "a/b/c/d"};
  std::vector<std::string> datasets = chain;
  for (int i = 0; i < 200; ++i) datasets.push_back(fmt::format("e/{:03}", i));  // short jobs between
  ParallelTaskTree tree({
      .datasets = datasets,
      .process_dataset =
          [&](std::string_view dataset, std::int64_t) {
            const auto start = std::chrono::steady_clock::now();
            if (!dataset.starts_with("e/")) std::this_thread::sleep_for(std::chrono::milliseconds(3));
            const auto took = std::chrono::steady_clock::now() - start;
            std::lock_guard lock(mutex);
            measured[std::string(dataset)] = took;
            return CompletionCallbackResult{.no_skip = true, .fail = false};
          },
      .max_workers = 2,
      .observer = observer,
      .journal = open(path, false),
  });
  CHECK_FALSE(tree.process_datasets_in_parallel());
  const tasktree::JournalContents contents = Journal::read(path);
  REQUIRE(contents.records.size() == datasets.size());
  std::map<std::string, tasktree::JournalRecord> by_name;
  for (const auto& record : contents.records) by_name[record.dataset] = record;
  // The journal keeps microseconds, rounded to the nearest: half of one either way, and as much
  // again for the conversion from the counter.
  constexpr double slack = 2e-6;
  for (const std::string& dataset : datasets) {
    INFO(dataset);
    const double own = std::chrono::duration<double>(measured.at(dataset)).count();
    CHECK(by_name.at(dataset).seconds >= own - slack);
    CHECK(observer->seen.at(dataset) >= measured.at(dataset) - std::chrono::microseconds(1));
  }
  for (std::size_t i = 1; i < chain.size(); ++i) {
    INFO(chain[i]);
    const tasktree::JournalRecord& before = by_name.at(chain[i - 1]);
    CHECK(by_name.at(chain[i]).start >= before.start + before.seconds - slack);
  }
}

TEST_CASE("a write error reaches the caller, whether the sync thread or the end of the run meets it") {
  Scratch scratch;
  // 10 records are written at the end of the run; 20,000 fill chunks that the sync thread
  // formats and writes during it, and the coordinator's next record throws its error.
  for (const int count : {10, 20'000}) {
    const fs::path path = scratch / fmt::format("limited{}.journal", count);
    std::vector<std::string> datasets;
    for (int i = 0; i < count; ++i) datasets.push_back(fmt::format("d{:05}", i));
    const auto journal = open(path, false);
    std::string what;
    {
      FileSizeLimit limit(200);  // the header and a record or two
      what = thrown_by([&] { run_with(datasets, journal); });
    }
    INFO(count);
    CHECK(contains(what, "cannot write"));
    CHECK(contains(what, path.string()));
    // The piece of a line the failed write left is cut off: the file still ends a line.
    const std::string after_error = read_file(path);
    REQUIRE(!after_error.empty());
    CHECK(after_error.back() == '\n');
    // A later run of the same object appends whole lines, and the journal opens and reads back
    // (the piece of a line was once left in the middle, and the file was rejected as corrupt).
    const JournalRun again = run_with(datasets, journal);
    CHECK(again.stats.started == datasets.size());
    const tasktree::JournalContents contents = Journal::read(path);
    CHECK(contents.warnings.empty());
    CHECK(contents.records.size() == datasets.size());
    CHECK(contents.runs == 2);
  }
}

TEST_CASE("names are escaped as a byte-at-a-time reference does, at every length and position, and read back") {
  // The writer looks at eight bytes at a time; this pins its output to the plain rule.
  const auto reference = [](std::string_view text) {
    std::string out = "\"";
    for (std::size_t i = 0; i < text.size();) {
      const auto c = static_cast<unsigned char>(text[i]);
      const std::size_t valid = c >= 0x80 ? tasktree::detail::journal_format::utf8_sequence(text.substr(i)) : 0;
      if (valid > 0) {
        out.append(text.substr(i, valid));
        i += valid;
        continue;
      }
      if (c == '"' || c == '\\') {
        out += '\\';
        out += static_cast<char>(c);
      } else if (c == '\n') {
        out += "\\n";
      } else if (c == '\t') {
        out += "\\t";
      } else if (c < 0x20) {
        out += fmt::format("\\u{:04x}", c);
      } else if (c >= 0x80) {
        out += fmt::format("\\u{:04x}", 0xDC00 + c);
      } else {
        out += static_cast<char>(c);
      }
      ++i;
    }
    return out + "\"";
  };
  std::uint64_t state = 20261207;
  const auto next = [&state] {
    state = state * 6364136223846793005u + 1442695040888963407u;
    return static_cast<unsigned>(state >> 33);
  };
  const std::string pieces[] = {"a", "Z", "/", "~", " ", "\"", "\\", "\n", "\t", "\x01", "\x1f", "\x7f",
                                "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "\x80", "\xff", "\xc3", "\xed\xa0\x80"};
  for (int n = 0; n < 5000; ++n) {
    std::string name;
    const unsigned length = next() % 40;
    const unsigned special_one_in = 1 + next() % 30;  // from all special to nearly all plain
    while (name.size() < length) {
      name += next() % special_one_in == 0 ? pieces[next() % std::size(pieces)] : pieces[next() % 5];
    }
    std::string written;
    tasktree::detail::journal_format::append_string(written, name);
    INFO(written);
    REQUIRE(written == reference(name));
    std::string why;
    const auto object = tasktree::detail::journal_format::LineReader("{\"k\":" + written + "}").object(why);
    REQUIRE(object.has_value());
    REQUIRE(object->at("k").text == name);
  }
}
