// Model-based randomized tests: the library against the reference model of tests/model/, on
// thousands of random cases per run, inline (exact order), with a deterministic interleaving
// executor, and on a thread pool; plus the fuzzer's seed corpus, and checks of the model itself
// against the worked examples of docs/semantics.md.
//
// Every failure prints its seed. Replay one case with
//   TASKTREE_TEST_SEED=<seed> TASKTREE_TEST_CASES=1 build/default/tests/test_model "<test name>"
// TASKTREE_TEST_SEED alone fixes the first seed of a run (by default it is random);
// TASKTREE_TEST_CASES overrides how many cases each randomized test runs.

#include "catch.hpp"
#include "model/fuzz_input.hpp"
#include "model/library_run.hpp"
#include "model/random_case.hpp"
#include "model/reference_model.hpp"
#include "model/seeded_cases.hpp"
#include "support.hpp"

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <vector>

using tasktree_model::Case;
using tasktree_model::CheckOptions;
using tasktree_model::Mode;
using tasktree_model::Outcome;
using tasktree_model::predict;

namespace {

/// Chooses how a random case is run.
using Configure = std::function<CheckOptions(const Case&, tasktree_model::RandomSource&)>;

/// Runs `count` random cases, each run as `configure` says (see `check_seeded_cases`).
void check_random_cases(const Configure& configure, std::size_t count, const tasktree_model::CaseLimits& limits = {}) {
  tasktree_model::check_seeded_cases(count, [&](tasktree_model::RandomSource& source) {
    const Case c = tasktree_model::random_case(source, limits);
    const CheckOptions options = configure(c, source);
    const auto problems = tasktree_model::check_case(c, options, [&source](std::size_t n) { return source.pick(n); });
    if (problems.empty()) return std::string();
    std::string report = tasktree_model::describe(c) + "\n";
    if (options.stop.at != tasktree_model::StopAt::never) {
      report += "stop kind " + std::to_string(static_cast<int>(options.stop.at)) + " at " +
                std::to_string(options.stop.count) + "\n";
    }
    for (const auto& fault : options.faults) {
      report += std::string("fault in ") + tasktree_model::to_string(fault.site) + " at call " +
                std::to_string(fault.call) + "\n";
    }
    for (const std::string& problem : problems) report += "- " + problem + "\n";
    return report;
  });
}

/// Plain runs in `mode`, sometimes paced, logged or run twice.
Configure plain(Mode mode) {
  return [mode](const Case&, tasktree_model::RandomSource& source) {
    return CheckOptions{.mode = mode,
                        .observe = source.chance(80),
                        .runs = source.chance(10) ? 2 : 1,
                        .pacing = source.chance(20),
                        .logging = source.chance(5),
                        .callbacks_on_calling_thread = source.chance(25),
                        .workers_coordinate = source.chance(80)};
  };
}

Mode random_mode(tasktree_model::RandomSource& source) {
  const std::size_t roll = source.pick(4);
  return roll < 2 ? Mode::thread_pool : roll == 2 ? Mode::inline_jobs : Mode::interleaved;
}

bool ran(const tasktree_model::Prediction& p, const std::string& name) {
  return std::find(p.order.begin(), p.order.end(), name) != p.order.end();
}
bool before(const tasktree_model::Prediction& p, const std::string& a, const std::string& b) {
  const auto ia = std::find(p.order.begin(), p.order.end(), a);
  const auto ib = std::find(p.order.begin(), p.order.end(), b);
  return ia != p.order.end() && ib != p.order.end() && ia < ib;
}

const Outcome skip{.no_skip = false, .fail = false};

}  // namespace

// ---------------------------------------------------------------------------------------------
// The model itself, against the examples of docs/semantics.md: if these fail, the model is wrong.

TEST_CASE("model: parents first, intermediate nodes pass through, priority order with ties by name") {
  const auto p = predict(Case{.datasets = {"e", "a/b/c", "a", "a/d"}});
  CHECK(p.order == std::vector<std::string>{"a", "a/b/c", "a/d", "e"});
  CHECK(p.priority_calls == std::vector<std::string>{"a", "e", "a/b/c", "a/d"});
  Case keyed{.datasets = {"a", "b", "c", "b/x"}};
  keyed.priority = std::map<std::string, int, std::less<>>{{"a", 1}, {"b", 0}, {"c", 1}, {"b/x", 2}};
  CHECK(predict(keyed).order == std::vector<std::string>{"b", "a", "c", "b/x"});
}

TEST_CASE("model: skip and fail") {
  Case c{.datasets = {"a", "a/b", "a/b/c", "d"}};
  c.outcomes["a/b"] = skip;
  c.outcomes["d"] = Outcome{.no_skip = true, .fail = true};
  const auto p = predict(c);
  CHECK(p.order == std::vector<std::string>{"a", "a/b", "d"});
  CHECK(p.failed);
  CHECK(p.stats ==
        tasktree_model::Stats{
            .total = 4, .started = 3, .completed = 3, .succeeded = 2, .failed = 1, .skipped = 1, .cancelled = 0});
}

TEST_CASE("model: every row of the barrier table of docs/semantics.md §5") {
  const std::vector<std::string> row1{"a/b/c", "a/b/c/0d", "a/b/c/1d", "a/b/c/~/prune", "a/b/c/~/prune/monitor"};
  const auto p1 = predict(Case{.datasets = row1});
  CHECK(p1.order.size() == 5);
  CHECK(before(p1, "a/b/c/0d", "a/b/c/~/prune"));
  CHECK(before(p1, "a/b/c/1d", "a/b/c/~/prune"));
  CHECK(before(p1, "a/b/c/~/prune", "a/b/c/~/prune/monitor"));
  Case c2{.datasets = row1};
  c2.outcomes["a/b/c/0d"] = skip;
  CHECK(predict(c2).order == std::vector<std::string>{"a/b/c", "a/b/c/0d", "a/b/c/1d"});
  Case c3{.datasets = {"x", "x/node", "x/node/child", "x/node/~/bar/fail", "x/other", "x/~/after"}};
  c3.outcomes["x/node/~/bar/fail"] = skip;
  const auto p3 = predict(c3);
  CHECK(ran(p3, "x/other"));
  CHECK_FALSE(ran(p3, "x/~/after"));
  CHECK(p3.stats.skipped == 1);
  const auto p4 = predict(Case{.datasets = {"a/b/~/after", "a/b/before"}});
  CHECK(p4.order == std::vector<std::string>{"a/b/before", "a/b/~/after"});
  const auto p5 = predict(Case{.datasets = {"root/~/after", "root"}});
  CHECK(p5.order == std::vector<std::string>{"root", "root/~/after"});
}

TEST_CASE("model: nested, top-level and only-child barriers") {
  // X/~/~ waits for X/~'s subtree outside it; a top-level ~ waits for everything else; an
  // only-child barrier opens at once.
  const auto nested = predict(Case{.datasets = {"x/~/~/done", "x/~/prune", "x/~/prune/deep", "x/a", "z"}});
  CHECK(nested.order == std::vector<std::string>{"x/a", "x/~/prune", "x/~/prune/deep", "x/~/~/done", "z"});
  const auto top = predict(Case{.datasets = {"~/last", "a", "b/c"}});
  CHECK(top.order.back() == "~/last");
  Case only{.datasets = {"~/first", "~/first/x"}};
  only.priority = std::map<std::string, int, std::less<>>{{"~/first", 0}, {"~/first/x", 0}};
  CHECK(predict(only).priority_calls.front() == "~/first");
  const auto custom = predict(Case{.datasets = {"b/x", "a", "~"}, .barrier_name = "b"});
  CHECK(custom.order == std::vector<std::string>{"a", "~", "b/x"});  // "b" is the barrier, "~" a job
}

TEST_CASE("model: invalid inputs are recognised") {
  using tasktree_model::invalid_reason;
  CHECK_FALSE(invalid_reason(Case{.datasets = {"a", "a-b", "a/b"}}));
  CHECK(invalid_reason(Case{.datasets = {"a", ""}}));
  CHECK(invalid_reason(Case{.datasets = {"/a"}}));
  CHECK(invalid_reason(Case{.datasets = {"a/"}}));
  CHECK(invalid_reason(Case{.datasets = {"a//b"}}));
  CHECK(invalid_reason(Case{.datasets = {"a", "a"}}));
  CHECK(invalid_reason(Case{.datasets = {"a/~"}}));
  CHECK(invalid_reason(Case{.datasets = {"a"}, .max_workers = 0}));
  CHECK(invalid_reason(Case{.datasets = {"a"}, .barrier_name = ""}));
  CHECK(invalid_reason(Case{.datasets = {"a"}, .barrier_name = "x/y"}));
  CHECK(invalid_reason(Case{.datasets = {"a/~/b"}, .enable_barriers = false}));
  CHECK_FALSE(invalid_reason(Case{.datasets = {"a/~/b"}, .barrier_name = "B", .enable_barriers = false}));
}

// ---------------------------------------------------------------------------------------------
// The library against the model.

// 10,000 cases each in every build but ThreadSanitizer's, where these single-threaded runs gain
// nothing and cost the most.
constexpr std::size_t single_threaded_cases = tasktree_test::under_thread_sanitizer ? 2'000 : 10'000;

TEST_CASE("random cases run inline in exactly the order, with exactly the results, the model predicts") {
  check_random_cases(plain(Mode::inline_jobs), single_threaded_cases);
}

TEST_CASE("random cases with jobs finishing in random interleavings obey the model") {
  check_random_cases(plain(Mode::interleaved), single_threaded_cases);
}

TEST_CASE("random cases on a thread pool with random job durations obey the model") {
  tasktree_model::CaseLimits limits;
  limits.max_workers = 6;
  limits.invalid_percent = 0;
  check_random_cases(plain(Mode::thread_pool), tasktree_test::under_sanitizer ? 300 : 1'000, limits);
}

TEST_CASE("a stop requested at a random moment leaves a valid, fully accounted run and a reusable tree") {
  // From another thread after a random delay, before the run, or inside the k-th job, completion
  // callback, priority call or pacing sleep; on a thread pool, inline and interleaved. The trace
  // up to the stop must be valid, the return value must say whether work was left, the statistics
  // must account for every dataset, nothing may run after the call returns, and the next run
  // (without a stop) must be exactly right.
  using tasktree_model::StopAt;
  tasktree_model::CaseLimits limits;
  limits.invalid_percent = 0;
  check_random_cases(
      [](const Case& c, tasktree_model::RandomSource& source) {
        CheckOptions options{.mode = random_mode(source), .runs = 2, .pacing = source.chance(30)};
        options.callbacks_on_calling_thread = source.chance(25);
        options.workers_coordinate = source.chance(80);
        const std::size_t jobs = c.datasets.size();
        const std::size_t kinds = options.mode == Mode::thread_pool ? 6 : 5;
        switch (source.pick(kinds)) {
          case 0: options.stop = {StopAt::before_run, 1}; break;
          case 1: options.stop = {StopAt::in_job, 1 + source.pick(jobs + 1)}; break;
          case 2: options.stop = {StopAt::in_callback, 1 + source.pick(jobs + 1)}; break;
          case 3: options.stop = {StopAt::in_priority, 1 + source.pick(jobs + 1)}; break;
          case 4:
            options.pacing = true;
            options.stop = {StopAt::in_clock_wait, 1 + source.pick(jobs / 2 + 1)};
            break;
          default: options.stop = {StopAt::from_thread, source.pick(300)}; break;
        }
        return options;
      },
      tasktree_test::under_sanitizer ? 300 : 1'000, limits);
}

TEST_CASE("an exception from any user callable at a random call reaches the caller after a clean drain") {
  // Every site in turn: process_dataset, the completion callback, priority, interval_nanos, the
  // executor factory and submit, the clock, each observer hook and the log sink; sometimes a second
  // fault elsewhere, sometimes a type not derived from std::exception. The first exception must be
  // rethrown (none swallowed), no job may run and no executor live after the call, the statistics
  // must add up, and the next run must be exactly right.
  using tasktree_model::Fault;
  using tasktree_model::Site;
  tasktree_model::CaseLimits limits;
  limits.invalid_percent = 0;
  std::size_t next_site = 0;
  check_random_cases(
      [&next_site](const Case& c, tasktree_model::RandomSource& source) {
        CheckOptions options{.mode = random_mode(source), .runs = 2, .pacing = source.chance(40)};
        options.callbacks_on_calling_thread = source.chance(25);
        options.workers_coordinate = source.chance(80);
        const std::size_t jobs = c.datasets.size();
        auto random_fault = [&](Site site) {
          std::size_t calls = jobs + 2;
          if (site == Site::executor_factory || site == Site::on_start || site == Site::on_finish) calls = 1;
          if (site == Site::log || site == Site::clock_now) calls = 3 * jobs + 3;
          if (site == Site::interval || site == Site::clock_wait) options.pacing = true;
          if (site == Site::log) options.logging = true;
          return Fault{.site = site, .call = 1 + source.pick(calls), .std_exception = !source.chance(20)};
        };
        options.faults.push_back(random_fault(static_cast<Site>(next_site++ % tasktree_model::site_count)));
        if (source.chance(25)) {
          options.faults.push_back(random_fault(static_cast<Site>(source.pick(tasktree_model::site_count))));
        }
        return options;
      },
      tasktree_test::under_sanitizer ? 700 : 2'800, limits);
}

TEST_CASE("the fuzzer's seed corpus replays clean") {
  std::size_t files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(TASKTREE_FUZZ_CORPUS)) {
    std::ifstream in(entry.path(), std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto problems =
        tasktree_model::check_fuzz_input(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
    INFO(entry.path().filename().string());
    for (const std::string& problem : problems) FAIL_CHECK(problem);
    ++files;
  }
  CHECK(files >= 10);
}
