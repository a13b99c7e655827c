// Model-based randomized tests of the policy layer (include/tasktree/policy.hpp): thousands of
// random cases per run through `process_datasets_in_parallel_and_fault_tolerant()`, checked against
// the reference model of tests/model/.
//
// A case is a random tree from `random_case()` (barriers, missing intermediate jobs, shuffled input,
// names with '-' and '.') plus random policy options and, per dataset, a *script* for the job:
// return true or false, throw a job failure on the first k attempts and then return, always throw,
// or throw a fatal error. What each dataset then does is derived from docs/policy.md alone: the
// retry rules (max_retries, retryable, max_elapsed, the backoff formula on a ManualClock, so nothing
// sleeps for real) give its attempts and whether it finally returned or failed, and `skip_on_error`
// turns a failure into a core outcome (fail: skip and stop the run; dataset: fail and continue
// unless skip_tree_on_error; tree: fail and skip). The reference model predicts the run from those
// outcomes. Inline (one worker) everything must match exactly: the order of first attempts, every
// attempt, the return value or the rethrown exception, append_exception, skip_tree_on_error and
// termination_handler calls, log lines, observer events and statistics. On a thread pool, runs
// without a stop must match in everything the schedule cannot change; runs that stop (fail mode,
// fatal errors) must obey what holds for any schedule.
//
// Every failure prints its seed. Replay one case with
//   TASKTREE_TEST_SEED=<seed> TASKTREE_TEST_CASES=1 build/default/tests/test_policy_model "<test name>"
// TASKTREE_TEST_SEED alone fixes the first seed of a run (by default it is random);
// TASKTREE_TEST_CASES overrides how many cases each randomized test runs.

#include "catch.hpp"
#include "model/random_case.hpp"
#include "model/reference_model.hpp"
#include "model/seeded_cases.hpp"
#include "support.hpp"

#include <tasktree/tasktree.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <exception>
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

using tasktree::SkipOnError;
using tasktree_model::Outcome;

namespace {

// ---------------------------------------------------------------------------------------------
// Random cases

/// Job failures (`std::runtime_error`s); with `retry_transient_only` only `Transient` is retried.
struct Transient : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct Permanent : std::runtime_error {
  using std::runtime_error::runtime_error;
};
/// A fatal error: not a `std::exception`, so never a job failure.
struct Fatal {
  std::string dataset;
  int attempt = 0;
};

/// What one attempt of a job does.
enum class Attempt { returns, job_failure, fatal };

/// What a dataset's job does on each attempt.
struct Script {
  enum class End { returns, keeps_failing, fatal };
  int failures = 0;              // leading attempts that throw a job failure
  End end = End::returns;        // what every later attempt does
  bool value = true;             // End::returns: the value returned
  bool transient = true;         // its job failures are `Transient` (else `Permanent`)
  bool skip_tree = false;        // what skip_tree_on_error answers for it
  std::int64_t attempt_nanos{};  // each attempt advances the ManualClock this much
  int pool_micros = 0;           // on the thread pool, each attempt sleeps this long (-1: yields)

  [[nodiscard]] Attempt attempt(int count) const {
    if (count < failures) return Attempt::job_failure;
    switch (end) {
      case End::returns: return Attempt::returns;
      case End::keeps_failing: return Attempt::job_failure;
      case End::fatal: return Attempt::fatal;
    }
    return Attempt::returns;
  }
};

std::string failure_message(std::string_view dataset, int attempt) {
  return fmt::format("{} failed on attempt {}", dataset, attempt);
}

constexpr std::int64_t an_hour = 3'600'000'000'000;

/// A random tree with random policy options and a script per dataset.
struct PolicyCase {
  tasktree_model::Case tree;  // the datasets and core options; its `outcomes` are not used
  std::map<std::string, Script, std::less<>> scripts;
  SkipOnError mode = SkipOnError::fail;
  int max_retries = 0;
  std::int64_t initial_backoff = 0;
  std::int64_t max_backoff = 0;
  double multiplier = 2.0;
  bool full_jitter = true;
  std::int64_t max_elapsed = an_hour;
  double random_unit = 0.5;  // what the random source always returns
  bool retry_transient_only = false;
  bool explicit_job_failure = false;  // is_job_failure = exception_is<std::runtime_error>
  std::string task_name;
  bool dry_run = false;
  /// The caller's stop request arrives during the `stop_at`-th attempt of the run, or during its
  /// `stop_at`-th backoff sleep (counting from 1).
  enum class StopAt { never, attempt, backoff } stop = StopAt::never;
  std::size_t stop_at = 0;

  [[nodiscard]] const Script& script(std::string_view dataset) const {
    static const Script none{};
    const auto it = scripts.find(dataset);
    return it == scripts.end() ? none : it->second;
  }
};

/// A random case. `pool`: to be run on a thread pool, so the options keep the attempts of every
/// job independent of the schedule (max_elapsed stays an hour: the shared ManualClock advances
/// with every job's attempts and backoffs).
template <class Source>
PolicyCase random_policy_case(Source& source, bool pool) {
  PolicyCase pc;
  tasktree_model::CaseLimits limits;
  if (pool) limits.invalid_percent = 0;
  pc.tree = tasktree_model::random_case(source, limits);
  pc.tree.outcomes.clear();  // derived from the scripts instead
  if (pc.tree.max_workers >= 1) pc.tree.max_workers = pool ? 2 + static_cast<int>(source.pick(3)) : 1;
  pc.mode = static_cast<SkipOnError>(source.pick(3));
  pc.max_retries = static_cast<int>(source.pick(4));
  pc.initial_backoff = source.chance(25) ? 0 : 1 + static_cast<std::int64_t>(source.pick(100));
  pc.max_backoff = pc.initial_backoff + (source.chance(30) ? 0 : static_cast<std::int64_t>(source.pick(1000)));
  static constexpr double multipliers[] = {1.0, 1.5, 2.0, 3.0};
  pc.multiplier = multipliers[source.pick(4)];
  pc.full_jitter = source.chance(70);
  static constexpr double units[] = {0.0, 0.25, 0.3, 0.5, 1.0};
  pc.random_unit = units[source.pick(5)];
  if (!pool && source.chance(40)) pc.max_elapsed = static_cast<std::int64_t>(source.pick(400));
  pc.retry_transient_only = source.chance(30);
  pc.explicit_job_failure = source.chance(30);
  pc.task_name = source.chance(70) ? "replicate" : "";
  pc.dry_run = source.chance(20);
  if (source.chance(20)) {
    pc.stop = source.chance(50) ? PolicyCase::StopAt::attempt : PolicyCase::StopAt::backoff;
    pc.stop_at = 1 + source.pick(pc.stop == PolicyCase::StopAt::attempt ? 2 * pc.tree.datasets.size() + 1 : 6);
  }
  // Most cases fail now and then; some never, some often; fatal errors in a few.
  static constexpr unsigned failure_percents[] = {0, 5, 15, 40};
  const unsigned failure_percent = failure_percents[source.pick(4)];
  const unsigned fatal_percent = source.chance(15) ? 10 : 0;
  for (const std::string& name : pc.tree.datasets) {
    Script script;
    if (source.chance(fatal_percent)) {
      script.end = Script::End::fatal;
      script.failures = static_cast<int>(source.pick(3));
    } else if (source.chance(failure_percent)) {
      script.end = Script::End::keeps_failing;
    } else {
      script.failures = source.chance(30) ? 1 + static_cast<int>(source.pick(4)) : 0;
      script.value = !source.chance(15);
    }
    script.transient = source.chance(70);
    script.skip_tree = source.chance(50);
    script.attempt_nanos = source.chance(25) ? 0 : static_cast<std::int64_t>(source.pick(60));
    const std::size_t roll = source.pick(10);
    script.pool_micros = roll < 3 ? -1 : roll < 6 ? 0 : static_cast<int>(source.pick(40));
    pc.scripts.emplace(name, script);
  }
  if (source.chance(3)) {  // an invalid policy option
    switch (source.pick(6)) {
      case 0: pc.max_retries = -1 - static_cast<int>(source.pick(3)); break;
      case 1: pc.initial_backoff = -1 - static_cast<std::int64_t>(source.pick(100)); break;
      case 2:
        pc.initial_backoff = 100;
        pc.max_backoff = static_cast<std::int64_t>(source.pick(100));
        break;
      case 3: pc.multiplier = source.chance(50) ? 0.5 : std::nan(""); break;
      case 4: pc.max_elapsed = -1 - static_cast<std::int64_t>(source.pick(100)); break;
      default: pc.mode = static_cast<SkipOnError>(3 + source.pick(5)); break;
    }
  }
  return pc;
}

/// What in `pc`'s policy options docs/policy.md says must be rejected: the text the message must
/// contain (it names the value), or nothing if they are valid.
std::optional<std::string> invalid_policy(const PolicyCase& pc) {
  if (pc.mode != SkipOnError::fail && pc.mode != SkipOnError::dataset && pc.mode != SkipOnError::tree) {
    return fmt::format("skip_on_error {}", static_cast<int>(pc.mode));
  }
  if (pc.max_retries < 0) return fmt::format("max_retries {}", pc.max_retries);
  if (pc.initial_backoff < 0) return fmt::format("initial_backoff {}ns", pc.initial_backoff);
  if (pc.max_backoff < pc.initial_backoff) return fmt::format("max_backoff {}ns", pc.max_backoff);
  if (!(pc.multiplier >= 1.0)) return fmt::format("multiplier {}", pc.multiplier);
  if (pc.max_elapsed < 0) return fmt::format("max_elapsed {}ns", pc.max_elapsed);
  return std::nullopt;
}

/// The case as text, for failure messages.
std::string describe(const PolicyCase& pc) {
  std::string text = tasktree_model::describe(pc.tree);
  text += fmt::format(
      "\nskip_on_error {}, max_retries {}, initial_backoff {}ns, max_backoff {}ns, multiplier {}, full_jitter {}, "
      "max_elapsed {}ns, random {}, retry {}, is_job_failure {}, task_name \"{}\", dry_run {}, stop at {} {}\n"
      "scripts {{",
      static_cast<int>(pc.mode), pc.max_retries, pc.initial_backoff, pc.max_backoff, pc.multiplier, pc.full_jitter,
      pc.max_elapsed, pc.random_unit, pc.retry_transient_only ? "Transient only" : "all",
      pc.explicit_job_failure ? "runtime_error" : "default", pc.task_name, pc.dry_run,
      pc.stop == PolicyCase::StopAt::never     ? "never"
      : pc.stop == PolicyCase::StopAt::attempt ? "attempt"
                                               : "backoff",
      pc.stop_at);
  for (const auto& [name, s] : pc.scripts) {
    const char* end = s.end == Script::End::returns         ? (s.value ? "true" : "false")
                      : s.end == Script::End::keeps_failing ? "keeps failing"
                                                            : "fatal";
    text += fmt::format("{}: {} failures then {}, {}, skip_tree {}, {}ns, {}us; ", name, s.failures, end,
                        s.transient ? "Transient" : "Permanent", s.skip_tree, s.attempt_nanos, s.pool_micros);
  }
  return text + "}";
}

// ---------------------------------------------------------------------------------------------
// What docs/policy.md says each dataset does

/// How a dataset's attempts end, from its script and the retry rules.
struct Expected {
  int attempts = 0;
  Attempt last = Attempt::returns;
  /// ManualClock time from the first attempt's start to the end of the last one, inline (where only
  /// this job moves the clock).
  std::int64_t elapsed = 0;
  /// The backoff before each retry.
  std::vector<std::int64_t> waits;
  /// Calls of the random source (one per backoff computed, with full jitter).
  std::size_t random_calls = 0;
};

/// docs/policy.md, "Retries": after attempt n fails with a job failure, another attempt follows only
/// if n < max_retries, no stop was requested (never inline: nothing else runs meanwhile), the
/// failure is retryable, and (now - start) + wait <= max_elapsed; the wait is floor(c(n) * u) with
/// full jitter, else c(n), where c(0) = initial_backoff and c(n) = min(max_backoff, c(n-1) *
/// multiplier).
Expected expect(const Script& script, const PolicyCase& pc) {
  Expected e;
  double ceiling = static_cast<double>(pc.initial_backoff);
  for (int n = 0;; ++n) {
    e.attempts = n + 1;
    e.elapsed += script.attempt_nanos;
    e.last = script.attempt(n);
    if (e.last != Attempt::job_failure) return e;
    if (n >= pc.max_retries) return e;
    if (pc.retry_transient_only && !script.transient) return e;
    if (pc.full_jitter) ++e.random_calls;
    const double wait_exact = pc.full_jitter ? std::floor(ceiling * pc.random_unit) : ceiling;
    const auto wait = static_cast<std::int64_t>(wait_exact);
    ceiling = std::min(static_cast<double>(pc.max_backoff), ceiling * pc.multiplier);
    if (e.elapsed + wait > pc.max_elapsed) return e;
    e.elapsed += wait;
    e.waits.push_back(wait);
  }
}

/// docs/policy.md, "After the retries": the core outcome of a dataset whose attempts ended as `e`.
Outcome core_outcome(const Expected& e, const Script& script, SkipOnError mode) {
  switch (e.last) {
    case Attempt::returns: return Outcome{.no_skip = script.value, .fail = false};
    case Attempt::fatal: return Outcome{.unfinished = true};
    case Attempt::job_failure: break;
  }
  switch (mode) {
    case SkipOnError::fail: return Outcome{.no_skip = false, .fail = true, .stop = true};
    case SkipOnError::dataset: return Outcome{.no_skip = !script.skip_tree, .fail = true};
    case SkipOnError::tree: return Outcome{.no_skip = false, .fail = true};
  }
  return Outcome{};
}

/// `"[Dry ]{tid}[ {task_name}]"`, the start of every log line of the policy layer.
std::string log_prefix(const PolicyCase& pc, std::string_view tid) {
  return fmt::format("{}{}{}{}", pc.dry_run ? tasktree::dry_run_marker : "", tid, pc.task_name.empty() ? "" : " ",
                     pc.task_name);
}

std::string attempts_note(int attempts) {
  return attempts > 1 ? fmt::format(" ({} attempts)", attempts) : std::string();
}

// ---------------------------------------------------------------------------------------------
// Running a case through the library

/// Inline (no threads) or on a fresh thread pool per run; counts live executors.
class PolicyExecutor {
 public:
  PolicyExecutor(std::size_t threads, std::atomic<int>* live) : live_(live) {
    if (threads > 0) pool_.emplace(threads);
    ++*live_;
  }
  PolicyExecutor(PolicyExecutor&& other) noexcept
      : pool_(std::move(other.pool_)), live_(std::exchange(other.live_, nullptr)) {}
  PolicyExecutor& operator=(PolicyExecutor&&) = delete;
  PolicyExecutor(const PolicyExecutor&) = delete;
  PolicyExecutor& operator=(const PolicyExecutor&) = delete;
  ~PolicyExecutor() {
    pool_.reset();  // joins the threads
    if (live_ != nullptr) --*live_;
  }

  void submit(tasktree::Job job) {
    if (pool_) {
      pool_->submit(job);
    } else {
      job();
    }
  }

 private:
  std::optional<tasktree::ThreadPoolExecutor> pool_;
  std::atomic<int>* live_;
};

/// What happened to one dataset.
struct JobRecord {
  std::vector<int> counts;  // retry.count of each attempt
  std::string tid;          // of the first attempt
  long first_start = -1;    // sequence number
  Attempt last = Attempt::returns;
  long completed_at = -1;  // sequence number of on_complete
  tasktree::CompletionCallbackResult completion{};
};

/// Everything a run shows the outside world, recorded thread-safely with global sequence numbers.
struct Record {
  explicit Record(std::size_t datasets) : jobs(datasets) {}

  std::mutex mutex;
  std::atomic<long> sequence{0};
  std::atomic<std::size_t> attempt_number{0};
  std::atomic<std::size_t> sleep_number{0};
  std::atomic<std::size_t> random_calls{0};
  std::stop_source stop_source;
  std::atomic<long> stop_requested_at{-1};  // sequence number
  std::vector<JobRecord> jobs;
  std::vector<std::string> attempts;        // "dataset#count", in order
  std::vector<std::string> first_attempts;  // in order
  std::vector<std::string> appended;        // "task_name|dataset|type: what"
  std::vector<std::string> appended_datasets;
  std::vector<std::string> skip_tree_asked;
  std::vector<std::string> completions;  // datasets, in on_complete order
  std::vector<std::string> lines;        // the policy's log lines, "level text"
  std::optional<tasktree::RunStats> finish_stats;
  std::int64_t submits = 0;
  std::int64_t completes = 0;
  long last_submit = -1;  // sequence number
  int terminations = 0;
  long terminated_at = -1;  // sequence number of the first termination_handler call
  std::atomic<int> running{0};
  std::atomic<int> peak{0};
  std::vector<std::string> problems;  // found on workers or in hooks

  /// The caller's stop request.
  void request_stop() {
    stop_requested_at = sequence++;
    stop_source.request_stop();
  }

  void problem(std::string what) {
    std::lock_guard lock(mutex);
    if (problems.size() < 10) problems.push_back(std::move(what));
  }
};

/// Observer hooks: submissions (with the in-flight count), completions and the final counts.
class PolicyObserver final : public tasktree::RunObserver {
 public:
  PolicyObserver(Record* record, const tasktree_model::Model* model, int max_workers)
      : record_(record), model_(model), max_workers_(max_workers) {}
  void on_submit(std::string_view dataset, std::int64_t) override {
    const long seq = record_->sequence++;
    std::lock_guard lock(record_->mutex);
    ++record_->submits;
    record_->last_submit = seq;
    if (record_->submits - record_->completes > max_workers_) {
      record_->problems.push_back(fmt::format("{} submitted with {} jobs in flight, max_workers {}", dataset,
                                              record_->submits - record_->completes, max_workers_));
    }
  }
  void on_complete(std::string_view dataset, std::chrono::nanoseconds,
                   tasktree::CompletionCallbackResult result) override {
    const long seq = record_->sequence++;
    std::lock_guard lock(record_->mutex);
    ++record_->completes;
    record_->completions.emplace_back(dataset);
    if (const auto job = model_->find(dataset)) {
      JobRecord& r = record_->jobs[*job];
      if (r.completed_at >= 0) record_->problems.push_back(fmt::format("{} completed twice", dataset));
      r.completed_at = seq;
      r.completion = result;
    }
  }
  void on_finish(const tasktree::RunStats& stats) override {
    std::lock_guard lock(record_->mutex);
    record_->finish_stats = stats;
  }

 private:
  Record* record_;
  const tasktree_model::Model* model_;
  int max_workers_;
};

/// How the call ended.
struct Ending {
  bool returned = false;
  enum class Kind { value, transient, permanent, fatal, invalid, other } kind = Kind::value;
  std::string what;  // message; for Fatal "dataset#attempt"
};

std::string to_string(const Ending& ending) {
  switch (ending.kind) {
    case Ending::Kind::value: return ending.returned ? "returned true" : "returned false";
    case Ending::Kind::transient: return "threw Transient(\"" + ending.what + "\")";
    case Ending::Kind::permanent: return "threw Permanent(\"" + ending.what + "\")";
    case Ending::Kind::fatal: return "threw Fatal{" + ending.what + "}";
    case Ending::Kind::invalid: return "threw std::invalid_argument(\"" + ending.what + "\")";
    case Ending::Kind::other: return "threw something else: " + ending.what;
  }
  return "?";
}

/// The ending of a job failure of `dataset` on `attempt`, as the job threw it.
Ending job_failure_ending(const Script& script, std::string_view dataset, int attempt) {
  return Ending{.kind = script.transient ? Ending::Kind::transient : Ending::Kind::permanent,
                .what = failure_message(dataset, attempt)};
}

bool operator==(const Ending& a, const Ending& b) {
  return a.kind == b.kind && a.what == b.what && (a.kind != Ending::Kind::value || a.returned == b.returned);
}

std::string list(const std::vector<std::string>& names) {
  std::string out = "[";
  for (const std::string& name : names) out += (out.size() > 1 ? ", " : "") + name;
  return out + "]";
}

std::string to_string(const tasktree::RunStats& s) {
  return fmt::format("{{total {}, started {}, completed {}, succeeded {}, failed {}, skipped {}, cancelled {}}}",
                     s.total, s.started, s.completed, s.succeeded, s.failed, s.skipped, s.cancelled);
}

tasktree::RunStats to_run_stats(const tasktree_model::Stats& s) {
  return tasktree::RunStats{.total = s.total,
                            .started = s.started,
                            .completed = s.completed,
                            .succeeded = s.succeeded,
                            .failed = s.failed,
                            .skipped = s.skipped,
                            .cancelled = s.cancelled};
}

/// Runs `pc` through the library, inline (`pool` false: max_workers 1, exact comparison with the
/// model) or on a thread pool, and returns every disagreement with docs/policy.md and the model.
std::vector<std::string> check_policy_case(const PolicyCase& pc, bool pool) {
  std::vector<std::string> problems;
  const std::optional<std::string> invalid_tree = tasktree_model::invalid_reason(pc.tree);
  const std::optional<std::string> invalid_options = invalid_policy(pc);
  // A model of a valid case only; an invalid one only needs its names looked up.
  tasktree_model::Case valid_tree = pc.tree;
  if (invalid_tree) valid_tree.datasets.clear();
  const tasktree_model::Model structure(valid_tree);
  Record record(structure.size());
  Record* r = &record;
  std::atomic<int> live_executors{0};
  auto clock = std::make_shared<tasktree::ManualClock>(1'000);
  if (pc.stop == PolicyCase::StopAt::backoff) {
    // Only backoffs sleep (no pacing here), and only those longer than 0.
    clock->on_wait([r, &pc](std::int64_t) {
      if (++r->sleep_number == pc.stop_at) r->request_stop();
    });
  }

  tasktree::FaultTolerantOptions<PolicyExecutor> options{
      .datasets = pc.tree.datasets,
      .process_dataset = [r, &pc, &structure, clock, pool](std::string_view dataset, std::string_view tid,
                                                           const tasktree::Retry& retry) -> bool {
        const long seq = r->sequence++;
        const int now = ++r->running;
        for (int seen = r->peak.load(); now > seen && !r->peak.compare_exchange_weak(seen, now);) {
        }
        struct Leave {
          std::atomic<int>& running;
          ~Leave() { --running; }
        } leave{r->running};
        const auto job = structure.find(dataset);
        if (!job) {
          r->problem(fmt::format("job called for unknown dataset {}", dataset));
          return true;
        }
        if (pc.stop == PolicyCase::StopAt::attempt && ++r->attempt_number == pc.stop_at) r->request_stop();
        const Script& script = pc.script(dataset);
        const Attempt attempt = script.attempt(retry.count);
        {
          std::lock_guard lock(r->mutex);
          JobRecord& j = r->jobs[*job];
          if (j.counts.empty()) {
            j.first_start = seq;
            j.tid = std::string(tid);
            r->first_attempts.emplace_back(dataset);
          } else if (j.tid != tid) {
            r->problems.push_back(
                fmt::format("{} attempt {} got tid {}, the first got {}", dataset, retry.count, tid, j.tid));
          }
          j.counts.push_back(retry.count);
          j.last = attempt;
          r->attempts.push_back(fmt::format("{}#{}", dataset, retry.count));
        }
        clock->advance(script.attempt_nanos);
        if (pool) {
          if (script.pool_micros < 0) {
            std::this_thread::yield();
          } else if (script.pool_micros > 0) {
            std::this_thread::sleep_for(std::chrono::microseconds(script.pool_micros));
          }
        }
        switch (attempt) {
          case Attempt::returns: return script.value;
          case Attempt::fatal: throw Fatal{std::string(dataset), retry.count};
          case Attempt::job_failure: break;
        }
        if (script.transient) throw Transient(failure_message(dataset, retry.count));
        throw Permanent(failure_message(dataset, retry.count));
      },
      .skip_on_error = pc.mode,
      .skip_tree_on_error =
          [r, &pc](std::string_view dataset) {
            std::lock_guard lock(r->mutex);
            r->skip_tree_asked.emplace_back(dataset);
            return pc.script(dataset).skip_tree;
          },
      .retry_policy = {.max_retries = pc.max_retries,
                       .initial_backoff = std::chrono::nanoseconds(pc.initial_backoff),
                       .max_backoff = std::chrono::nanoseconds(pc.max_backoff),
                       .multiplier = pc.multiplier,
                       .full_jitter = pc.full_jitter,
                       .max_elapsed = std::chrono::nanoseconds(pc.max_elapsed)},
      .termination_handler =
          [r] {
            const long seq = r->sequence++;
            std::lock_guard lock(r->mutex);
            if (r->terminations++ == 0) r->terminated_at = seq;
          },
      .append_exception =
          [r](const std::exception_ptr& error, std::string_view task_name, std::string_view dataset) {
            std::string what;
            try {
              std::rethrow_exception(error);
            } catch (const Transient& e) {
              what = std::string("Transient: ") + e.what();
            } catch (const Permanent& e) {
              what = std::string("Permanent: ") + e.what();
            } catch (...) {
              what = "something else";
            }
            std::lock_guard lock(r->mutex);
            r->appended.push_back(fmt::format("{}|{}|{}", task_name, dataset, what));
            r->appended_datasets.emplace_back(dataset);
          },
      .task_name = pc.task_name,
      .dry_run = pc.dry_run,
      .max_workers = pc.tree.max_workers,
      .executors =
          [pool, workers = pc.tree.max_workers, &live_executors] {
            return PolicyExecutor(pool ? static_cast<std::size_t>(std::max(workers, 1)) : 0, &live_executors);
          },
      .stop_token = record.stop_source.get_token(),
      .enable_barriers = pc.tree.enable_barriers,
      .barrier_name = pc.tree.barrier_name,
      .clock = clock,
      .random =
          [r, unit = pc.random_unit] {
            ++r->random_calls;
            return unit;
          },
      .log = tasktree::Logger{.sink =
                                  [r](tasktree::LogLevel level, std::string_view message) {
                                    // The policy's lines start with "[Dry ]{tid}"; the core's with "run ".
                                    const std::string_view rest = message.starts_with(tasktree::dry_run_marker)
                                                                      ? message.substr(tasktree::dry_run_marker.size())
                                                                      : message;
                                    if (rest.empty() || rest.front() < '0' || rest.front() > '9') return;
                                    std::lock_guard lock(r->mutex);
                                    r->lines.push_back(fmt::format("{} {}", tasktree::to_string(level), message));
                                  },
                              .level = tasktree::LogLevel::debug},
      .observer = std::make_shared<PolicyObserver>(r, &structure, pc.tree.max_workers),
  };
  if (pc.retry_transient_only) options.retry_policy.retryable = tasktree::exception_is<Transient>;
  if (pc.explicit_job_failure) options.is_job_failure = tasktree::exception_is<std::runtime_error>;
  if (pc.tree.priority) {
    options.priority = [keys = *pc.tree.priority](std::string_view dataset) {
      const auto it = keys.find(dataset);
      return it == keys.end() ? 0 : it->second;
    };
  }

  tasktree::FaultTolerantStats stats;
  stats.retries = 12345;  // must be overwritten, also when the options are rejected
  Ending ending;
  try {
    ending.returned = tasktree::process_datasets_in_parallel_and_fault_tolerant(std::move(options), stats);
  } catch (const Transient& e) {
    ending = Ending{.kind = Ending::Kind::transient, .what = e.what()};
  } catch (const Permanent& e) {
    ending = Ending{.kind = Ending::Kind::permanent, .what = e.what()};
  } catch (const Fatal& e) {
    ending = Ending{.kind = Ending::Kind::fatal, .what = fmt::format("{}#{}", e.dataset, e.attempt)};
  } catch (const std::invalid_argument& e) {
    ending = Ending{.kind = Ending::Kind::invalid, .what = e.what()};
  } catch (const std::exception& e) {
    ending = Ending{.kind = Ending::Kind::other, .what = e.what()};
  } catch (...) {
    ending = Ending{.kind = Ending::Kind::other, .what = "not a std::exception"};
  }
  // Nothing of the run may still be going on.
  if (record.running.load() != 0) problems.push_back("a job was still running when the call returned");
  if (live_executors.load() != 0) problems.push_back("the executor outlived the run");
  for (const std::string& p : record.problems) problems.push_back(p);

  // Invalid options: std::invalid_argument naming the value, before anything runs.
  if (invalid_tree || invalid_options) {
    if (ending.kind != Ending::Kind::invalid) {
      problems.push_back(fmt::format("accepted invalid options ({}): {}",
                                     invalid_options ? *invalid_options : *invalid_tree, to_string(ending)));
    } else if (ending.what.empty()) {
      problems.push_back("std::invalid_argument without a message");
    } else if (!invalid_tree && ending.what.find(*invalid_options) == std::string::npos) {
      problems.push_back(fmt::format("the message \"{}\" does not name the value ({})", ending.what, *invalid_options));
    }
    if (!record.attempts.empty()) problems.push_back("a job ran although the options were rejected");
    if (stats != tasktree::FaultTolerantStats{}) problems.push_back("statistics not all zero after a rejection");
    return problems;
  }
  if (ending.kind == Ending::Kind::invalid || ending.kind == Ending::Kind::other) {
    problems.push_back("valid options: " + to_string(ending));
    return problems;
  }

  // What docs/policy.md says each dataset does, and what the model predicts from that.
  const std::size_t n = structure.size();
  std::vector<Expected> expected(n);
  tasktree_model::Case derived = pc.tree;
  for (std::size_t job = 0; job < n; ++job) {
    const std::string& name = structure.name(job);
    expected[job] = expect(pc.script(name), pc);
    derived.outcomes[name] = core_outcome(expected[job], pc.script(name), pc.mode);
  }
  // Inline, the caller's stop request arrives during a known attempt or backoff of a known job:
  // no attempt follows (a backoff ends at once, and the failure before it stands), the job never
  // completes, and its failure, if it failed, is "handled when the run has ended" (docs/policy.md).
  const bool stop_requested = record.stop_source.stop_requested();
  bool stop_expected = false;
  if (!pool && pc.stop != PolicyCase::StopAt::never) {
    std::size_t seen = 0;  // attempts or sleeps before this job's
    for (const std::string& name : predict(derived).order) {
      const std::size_t job = *structure.find(name);
      Expected& e = expected[job];
      int last = -1;  // the attempt during or after which the stop arrives
      if (pc.stop == PolicyCase::StopAt::attempt) {
        if (seen + static_cast<std::size_t>(e.attempts) >= pc.stop_at) last = static_cast<int>(pc.stop_at - seen) - 1;
        seen += static_cast<std::size_t>(e.attempts);
      } else {
        for (std::size_t retry = 0; retry < e.waits.size() && last < 0; ++retry) {
          if (e.waits[retry] > 0 && ++seen == pc.stop_at) last = static_cast<int>(retry);
        }
      }
      if (last >= 0) {
        // A stop in an attempt comes before that attempt's backoff is computed; one in a backoff,
        // after.
        const auto backoffs = static_cast<std::size_t>(pc.stop == PolicyCase::StopAt::attempt ? last : last + 1);
        e.random_calls = pc.full_jitter ? backoffs : 0;
        e.elapsed = (last + 1) * pc.script(name).attempt_nanos;
        for (int retry = 0; retry < last; ++retry) e.elapsed += e.waits[static_cast<std::size_t>(retry)];
        e.attempts = last + 1;
        e.last = pc.script(name).attempt(last);
        derived.outcomes[name] = Outcome{.unfinished = true};
        stop_expected = true;
        break;
      }
    }
  }
  const tasktree_model::Model model(derived);
  const tasktree_model::Prediction prediction = predict(model);
  const auto tid_of = [&](std::size_t job) { return record.jobs[job].tid; };

  // ---- What holds whatever the schedule.
  // Failures processed by the policy, in the order their callbacks ran, and the one handled as
  // `fail`: in fail mode any; in the others the one whose callback found the caller's stop already
  // requested ("Once a stop was requested, a failure behaves as in fail, whatever the mode"), which
  // is not passed to append_exception. Either asks the run to stop, so no callback runs after it.
  std::vector<std::string> processed_failures;
  for (const std::string& name : record.completions) {
    if (const auto job = structure.find(name); job && record.jobs[*job].completion.fail) {
      processed_failures.push_back(name);
    }
  }
  std::vector<std::string> handled_as_fail;
  for (const std::string& name : processed_failures) {
    if (pc.mode == SkipOnError::fail || std::find(record.appended_datasets.begin(), record.appended_datasets.end(),
                                                  name) == record.appended_datasets.end()) {
      handled_as_fail.push_back(name);
    }
  }
  if (!handled_as_fail.empty()) {
    const std::string& name = handled_as_fail.front();
    const long completed_at = record.jobs[*structure.find(name)].completed_at;
    if (handled_as_fail.size() > 1 || name != record.completions.back()) {
      problems.push_back("callbacks ran after the failure handled as fail: " + list(record.completions));
    }
    if (pc.mode != SkipOnError::fail &&
        (record.stop_requested_at.load() < 0 || record.stop_requested_at.load() > completed_at)) {
      problems.push_back(name + " was handled as fail without a stop request before it");
    }
    if (record.terminated_at < 0 || record.terminated_at > completed_at) {
      problems.push_back("termination_handler was not called in the callback of " + name);
    }
  }
  const auto is_handled_as_fail = [&](const std::string& name) {
    return std::find(handled_as_fail.begin(), handled_as_fail.end(), name) != handled_as_fail.end();
  };
  std::size_t started = 0;
  std::size_t attempt_total = 0;
  std::size_t recovered = 0;
  std::size_t cut_off_failures = 0;
  bool fatal_thrown = false;
  std::vector<std::string> expected_lines;  // order-free on the pool: done lines without their duration
  for (std::size_t job = 0; job < n; ++job) {
    const JobRecord& j = record.jobs[job];
    const std::string& name = structure.name(job);
    if (j.counts.empty()) {
      if (j.completed_at >= 0) problems.push_back(name + " completed without being attempted");
      continue;
    }
    ++started;
    attempt_total += j.counts.size();
    for (std::size_t k = 0; k < j.counts.size(); ++k) {
      if (j.counts[k] != static_cast<int>(k)) {
        problems.push_back(fmt::format("{} attempt {} had retry.count {}", name, k, j.counts[k]));
        break;
      }
    }
    const int attempts = static_cast<int>(j.counts.size());
    if (attempts > expected[job].attempts) {
      problems.push_back(
          fmt::format("{} attempted {} times, at most {} expected", name, attempts, expected[job].attempts));
    }
    if (j.last == Attempt::returns && attempts > 1) ++recovered;
    if (j.last == Attempt::fatal) fatal_thrown = true;
    const bool completed = j.completed_at >= 0;
    if (!completed && j.last == Attempt::job_failure) ++cut_off_failures;
    const std::string prefix = log_prefix(pc, j.tid);
    if (completed) {
      // Its retry loop ended before any stop, so it ran exactly as docs/policy.md says.
      const Outcome outcome = is_handled_as_fail(name) ? Outcome{.no_skip = false, .fail = true} : model.outcome(job);
      if (attempts != expected[job].attempts || j.completion.no_skip != outcome.no_skip ||
          j.completion.fail != outcome.fail) {
        problems.push_back(
            fmt::format("{} completed after {} attempts with no_skip={} fail={}; expected {} attempts, "
                        "no_skip={} fail={}",
                        name, attempts, j.completion.no_skip, j.completion.fail, expected[job].attempts,
                        outcome.no_skip, outcome.fail));
      }
      expected_lines.push_back(fmt::format("debug {} done: {} took", prefix, name));
      if (j.last == Attempt::job_failure) {
        expected_lines.push_back(fmt::format("error {} failed: {}{}: {}", prefix, name, attempts_note(attempts),
                                             failure_message(name, attempts - 1)));
      }
    } else if (j.last == Attempt::job_failure) {
      expected_lines.push_back(fmt::format("error {} failed while the run was stopping: {}{}: {}", prefix, name,
                                           attempts_note(attempts), failure_message(name, attempts - 1)));
    }
    // Parents (and what barriers wait for) completed, saying no_skip, before the first attempt.
    for (const std::size_t before : model.prerequisites(job)) {
      const JobRecord& b = record.jobs[before];
      if (b.completed_at < 0 || b.completed_at > j.first_start || !b.completion.no_skip) {
        problems.push_back(name + " started before its prerequisite " + model.name(before) + " completed");
      }
    }
  }
  if (record.peak.load() > pc.tree.max_workers) {
    problems.push_back(fmt::format("{} jobs ran at once with max_workers {}", record.peak.load(), pc.tree.max_workers));
  }
  std::vector<std::string> expected_appended;
  std::vector<std::string> expected_asked;
  for (const std::string& name : processed_failures) {
    if (!is_handled_as_fail(name)) {
      if (pc.mode == SkipOnError::dataset) expected_asked.push_back(name);
      const int attempts = static_cast<int>(record.jobs[*structure.find(name)].counts.size());
      expected_appended.push_back(fmt::format("{}|{}|{}: {}", pc.task_name, name,
                                              pc.script(name).transient ? "Transient" : "Permanent",
                                              failure_message(name, attempts - 1)));
    }
  }
  if (record.appended != expected_appended) {
    problems.push_back("append_exception calls " + list(record.appended) + ", expected " + list(expected_appended));
  }
  if (record.skip_tree_asked != expected_asked) {
    problems.push_back("skip_tree_on_error calls " + list(record.skip_tree_asked) + ", expected " +
                       list(expected_asked));
  }
  // The statistics: the core's counts, read with the policy in mind, and the policy's own.
  const tasktree::RunStats& run = stats.run;
  std::size_t succeeded = 0;
  for (const std::string& name : record.completions) {
    if (const auto job = structure.find(name); job && !record.jobs[*job].completion.fail) ++succeeded;
  }
  if (run.total != n || run.started != started || run.completed != record.completions.size() ||
      run.succeeded != succeeded || run.failed != processed_failures.size() ||
      run.started + run.skipped + run.cancelled != run.total) {
    problems.push_back(fmt::format("stats {} do not add up with {} datasets, {} attempted, {} completed, {} failed",
                                   to_string(run), n, started, record.completions.size(), processed_failures.size()));
  }
  if (!record.finish_stats || *record.finish_stats != run) problems.push_back("on_finish saw other stats");
  if (stats.retries != attempt_total - started || stats.recovered != recovered ||
      stats.failed_while_stopping != cut_off_failures) {
    problems.push_back(fmt::format("retries {}, recovered {}, failed_while_stopping {}; expected {}, {}, {}",
                                   stats.retries, stats.recovered, stats.failed_while_stopping, attempt_total - started,
                                   recovered, cut_off_failures));
  }
  // What the call ends with: a fatal error wins; then the failure handled as fail; then the first
  // failure while stopping. termination_handler for a failure handled as fail, or for the one
  // rethrown after stopping.
  const bool fail_handled = !handled_as_fail.empty();
  int expected_terminations = fail_handled ? 1 : 0;
  if (fatal_thrown) {
    bool known = false;
    for (std::size_t job = 0; job < n; ++job) {
      const JobRecord& j = record.jobs[job];
      known = known || (j.last == Attempt::fatal &&
                        ending.what == fmt::format("{}#{}", structure.name(job), j.counts.size() - 1));
    }
    if (ending.kind != Ending::Kind::fatal || !known) {
      problems.push_back("a job threw a fatal error, but the call " + to_string(ending));
    }
  } else if (fail_handled) {
    const std::string& first = handled_as_fail.front();
    const int attempts = static_cast<int>(record.jobs[*structure.find(first)].counts.size());
    const Ending expected_ending = job_failure_ending(pc.script(first), first, attempts - 1);
    if (!(ending == expected_ending)) {
      problems.push_back("the call " + to_string(ending) + ", expected it " + to_string(expected_ending));
    }
  } else if (cut_off_failures > 0) {
    expected_terminations = 1;
    bool known = false;
    for (std::size_t job = 0; job < n; ++job) {
      const JobRecord& j = record.jobs[job];
      if (j.counts.empty() || j.completed_at >= 0 || j.last != Attempt::job_failure) continue;
      known = known || ending == job_failure_ending(pc.script(structure.name(job)), structure.name(job),
                                                    static_cast<int>(j.counts.size()) - 1);
    }
    if (!known) problems.push_back("the call " + to_string(ending) + ", not a failure while stopping");
  } else if (ending.kind != Ending::Kind::value || ending.returned != (!processed_failures.empty() || stop_requested)) {
    // A stop request arrives while a job runs: work is left, and the run returns true.
    problems.push_back(fmt::format("the call {} after {} failures, stop requested {}", to_string(ending),
                                   processed_failures.size(), stop_requested));
  }
  if (record.terminations != expected_terminations) {
    problems.push_back(
        fmt::format("termination_handler called {} times, expected {}", record.terminations, expected_terminations));
  }
  if (record.terminations > 0 && record.last_submit > record.terminated_at) {
    problems.push_back("a job was submitted after the run was stopped");
  }
  {
    std::vector<std::string> lines = record.lines;
    for (std::string& line : lines) {
      if (line.starts_with("debug ")) line.erase(line.find(" took ") + 5);
    }
    std::sort(lines.begin(), lines.end());
    std::sort(expected_lines.begin(), expected_lines.end());
    if (lines != expected_lines) problems.push_back("log lines " + list(lines) + ", expected " + list(expected_lines));
  }
  if (!problems.empty()) return problems;

  // ---- Runs that do not stop do the same on any schedule: what ran, how often, the counts.
  std::size_t attempts_without_stop = 0;
  for (const std::string& name : prediction.order) attempts_without_stop += expected[*structure.find(name)].attempts;
  if (pool && !prediction.stopped && pc.stop == PolicyCase::StopAt::attempt &&
      stop_requested != (pc.stop_at <= attempts_without_stop)) {
    problems.push_back(fmt::format("{} attempts in all, yet the stop at attempt {} {}", attempts_without_stop,
                                   pc.stop_at, stop_requested ? "happened" : "did not happen"));
  }
  if (pool && !prediction.stopped && !stop_requested) {
    std::vector<std::string> ran = record.first_attempts;
    std::vector<std::string> expected_ran = prediction.order;
    std::sort(ran.begin(), ran.end());
    std::sort(expected_ran.begin(), expected_ran.end());
    if (ran != expected_ran) problems.push_back("attempted " + list(ran) + ", expected " + list(expected_ran));
    for (std::size_t job = 0; job < n; ++job) {
      const JobRecord& j = record.jobs[job];
      if (!j.counts.empty() && static_cast<int>(j.counts.size()) != expected[job].attempts) {
        problems.push_back(fmt::format("{} attempted {} times, expected {}", structure.name(job), j.counts.size(),
                                       expected[job].attempts));
      }
    }
    const tasktree::RunStats predicted = to_run_stats(prediction.stats);
    if (run != predicted) problems.push_back("stats " + to_string(run) + ", predicted " + to_string(predicted));
    std::size_t random_calls = 0;
    for (const std::string& name : prediction.order) random_calls += expected[*structure.find(name)].random_calls;
    if (record.random_calls.load() != random_calls) {
      problems.push_back(fmt::format("random called {} times, expected {}", record.random_calls.load(), random_calls));
    }
    if (ending.kind != Ending::Kind::value || ending.returned != prediction.failed) {
      problems.push_back(fmt::format("the call {}, predicted to return {}", to_string(ending), prediction.failed));
    }
  }
  if (pool && prediction.stopped && !stop_requested && ending.kind == Ending::Kind::value) {
    problems.push_back("a job must have stopped the run, but the call " + to_string(ending));
  }
  if (pool) return problems;
  if (stop_requested != stop_expected) {
    problems.push_back(fmt::format("stop requested {}, expected {}", stop_requested, stop_expected));
  }

  // ---- Inline: exactly the model's run.
  if (record.first_attempts != prediction.order) {
    problems.push_back("first attempts " + list(record.first_attempts) + ", predicted " + list(prediction.order));
    return problems;
  }
  std::vector<std::string> expected_attempts;
  std::vector<std::string> exact_lines;
  for (std::size_t position = 0; position < prediction.order.size(); ++position) {
    const std::string& name = prediction.order[position];
    const std::size_t job = *structure.find(name);
    const Expected& e = expected[job];
    for (int k = 0; k < e.attempts; ++k) expected_attempts.push_back(fmt::format("{}#{}", name, k));
    const std::string tid = fmt::format("{}/{}", position + 1, n);
    if (tid_of(job) != tid) problems.push_back(fmt::format("{} got tid {}, expected {}", name, tid_of(job), tid));
    const std::string prefix = log_prefix(pc, tid);
    if (model.outcome(job).unfinished) {  // never completes: no done line
      if (e.last == Attempt::job_failure) {
        exact_lines.push_back(fmt::format("error {} failed while the run was stopping: {}{}: {}", prefix, name,
                                          attempts_note(e.attempts), failure_message(name, e.attempts - 1)));
      }
      continue;
    }
    exact_lines.push_back(fmt::format("debug {} done: {} took {}", prefix, name,
                                      tasktree::format_duration(std::chrono::nanoseconds(e.elapsed))));
    if (e.last == Attempt::job_failure) {
      exact_lines.push_back(fmt::format("error {} failed: {}{}: {}", prefix, name, attempts_note(e.attempts),
                                        failure_message(name, e.attempts - 1)));
    }
  }
  // The ManualClock moved only by attempts and backoffs; a stop ended a backoff at once.
  std::int64_t time = 1'000;
  std::size_t random_calls = 0;
  for (const std::string& name : prediction.order) {
    time += expected[*structure.find(name)].elapsed;
    random_calls += expected[*structure.find(name)].random_calls;
  }
  if (clock->now_nanos() != time) {
    problems.push_back(fmt::format("the clock ended at {}, expected {}", clock->now_nanos(), time));
  }
  if (record.random_calls.load() != random_calls) {
    problems.push_back(fmt::format("random called {} times, expected {}", record.random_calls.load(), random_calls));
  }
  if (record.attempts != expected_attempts) {
    problems.push_back("attempts " + list(record.attempts) + ", expected " + list(expected_attempts));
  }
  if (record.lines != exact_lines) {
    problems.push_back("log lines " + list(record.lines) + ", expected " + list(exact_lines));
  }
  const tasktree::RunStats predicted = to_run_stats(prediction.stats);
  if (run != predicted) problems.push_back("stats " + to_string(run) + ", predicted " + to_string(predicted));
  Ending expected_ending{.returned = prediction.failed, .kind = Ending::Kind::value, .what = {}};
  if (!prediction.order.empty()) {
    const std::string& last = prediction.order.back();
    const Expected& e = expected[*structure.find(last)];
    if (e.last == Attempt::fatal) {
      expected_ending = Ending{.kind = Ending::Kind::fatal, .what = fmt::format("{}#{}", last, e.attempts - 1)};
    } else if (prediction.stopped && e.last == Attempt::job_failure) {
      expected_ending = job_failure_ending(pc.script(last), last, e.attempts - 1);
    } else if (prediction.stopped) {
      expected_ending.returned = true;  // stopped by the caller while `last` ran: work was left
    }
  }
  if (!(ending == expected_ending)) {
    problems.push_back("the call " + to_string(ending) + ", predicted " + to_string(expected_ending));
  }
  return problems;
}

// ---------------------------------------------------------------------------------------------
// Running random cases

/// Runs `count` random cases (see `check_seeded_cases`).
void check_random_cases(bool pool, std::size_t count) {
  tasktree_model::check_seeded_cases(count, [pool](tasktree_model::RandomSource& source) {
    const PolicyCase pc = random_policy_case(source, pool);
    const std::vector<std::string> problems = check_policy_case(pc, pool);
    if (problems.empty()) return std::string();
    std::string report = describe(pc) + "\n";
    for (const std::string& problem : problems) report += "- " + problem + "\n";
    return report;
  });
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// The test's own derivations, against the examples of docs/policy.md and tests/test_policy.cpp: if
// these fail, the expectations of the randomized tests are wrong, not the library.

TEST_CASE("derivation: the backoff example of docs/policy.md gives its waits") {
  PolicyCase pc;
  pc.max_retries = 4;
  pc.initial_backoff = 100;
  pc.max_backoff = 500;
  pc.multiplier = 2.0;
  pc.random_unit = 0.5;
  const Script always{.end = Script::End::keeps_failing};
  pc.full_jitter = true;  // waits 50, 100, 200, 250
  CHECK(expect(always, pc).attempts == 5);
  CHECK(expect(always, pc).elapsed == 600);
  pc.full_jitter = false;  // waits 100, 200, 400, 500
  CHECK(expect(always, pc).elapsed == 1'200);
}

TEST_CASE("derivation: no retry starts later than max_elapsed, none after a non-retryable failure") {
  PolicyCase pc;
  pc.max_retries = 10;
  pc.initial_backoff = 100;
  pc.max_backoff = 1'000;
  pc.full_jitter = false;
  pc.max_elapsed = 330;
  Script always{.end = Script::End::keeps_failing, .attempt_nanos = 10};
  // As in test_policy.cpp: retries start at +110 and +320; a third would start at +730.
  CHECK(expect(always, pc).attempts == 3);
  pc.retry_transient_only = true;
  always.transient = false;
  CHECK(expect(always, pc).attempts == 1);
  const Script recovers{.failures = 2, .value = false};
  pc.max_elapsed = an_hour;
  CHECK(expect(recovers, pc).attempts == 3);
  CHECK(expect(recovers, pc).last == Attempt::returns);
  pc.max_retries = 1;
  CHECK(expect(recovers, pc).last == Attempt::job_failure);
}

TEST_CASE("model: a job that stops the run leaves its subtree skipped and the rest cancelled") {
  // test_policy.cpp, "fail mode: the run stops, ...": a/b fails in fail mode.
  tasktree_model::Case c{.datasets = {"a", "a/b", "a/b/c", "d", "e"}};
  c.outcomes["a/b"] = Outcome{.no_skip = false, .fail = true, .stop = true};
  const auto p = predict(c);
  CHECK(p.order == std::vector<std::string>{"a", "a/b"});
  CHECK(p.stopped);
  CHECK(p.failed);
  CHECK(to_run_stats(p.stats) ==
        tasktree::RunStats{
            .total = 5, .started = 2, .completed = 2, .succeeded = 1, .failed = 1, .skipped = 1, .cancelled = 2});
  // "barriers in fail mode": the barrier behind the failure is skipped, the sibling cancelled.
  tasktree_model::Case b{.datasets = {"h/snap", "h/snap/r1", "h/snap/r2", "h/snap/~/prune"}};
  b.outcomes["h/snap/r1"] = Outcome{.no_skip = false, .fail = true, .stop = true};
  CHECK(to_run_stats(predict(b).stats) ==
        tasktree::RunStats{
            .total = 4, .started = 2, .completed = 2, .succeeded = 1, .failed = 1, .skipped = 1, .cancelled = 1});
}

TEST_CASE("model: an unfinished job is started, never completed, and stops the run") {
  // test_policy.cpp, "fatal errors are not retried nor handled by the policy": a throws.
  tasktree_model::Case c{.datasets = {"a", "a/b", "c"}};
  c.outcomes["a"] = Outcome{.unfinished = true};
  const auto p = predict(c);
  CHECK(p.order == std::vector<std::string>{"a"});
  CHECK(p.stopped);
  CHECK(to_run_stats(p.stats) == tasktree::RunStats{.total = 3, .started = 1, .cancelled = 2});
}

// ---------------------------------------------------------------------------------------------
// The policy layer against the model.

// 10,000 inline cases per run; fewer under the sanitizers (3,000 with ASan, 1,000 with TSan), which
// slow these single-threaded runs down most and find little in them.
TEST_CASE("policy: random cases run inline exactly as docs/policy.md and the model predict") {
  check_random_cases(false, tasktree_test::under_thread_sanitizer ? 1'000
                            : tasktree_test::under_sanitizer      ? 3'000
                                                                  : 10'000);
}

TEST_CASE("policy: random cases on a thread pool start each job once, after its prerequisites, and add up") {
  check_random_cases(true, tasktree_test::under_sanitizer ? 250 : 1'000);
}
