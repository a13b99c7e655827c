#pragma once
// Runs a `tasktree_model::Case` through the library and compares what happened with the reference
// model. Shared by tests/test_model.cpp and the fuzzer (fuzz/fuzz_tasktree.cpp), so it reports
// problems as strings instead of using a test framework.
//
// Three ways to run the jobs:
// - inline: each job runs inside `submit`; the exact order, the `priority` calls, the return value
//   and the statistics must equal the model's prediction;
// - interleaved: a deterministic executor that holds submitted jobs and runs them later, in an
//   order drawn from the case's decisions, also while completion callbacks run, so several jobs are
//   in flight and finish in every possible order, reproducibly;
// - thread pool: real threads with random job durations.
// In every mode the coordinator's events (priority calls, submissions, completion callbacks) are
// checked against the model as they happen (`ScheduleChecker`), and afterwards: each job ran at
// most once, the set of jobs run is the model's, no job started before each of its prerequisites
// had completed (from sequence numbers), the jobs running at once never exceeded max_workers, no
// job was running and no executor (so no thread) was alive when the run returned.
//
// The first run can also be disturbed: a stop requested at a chosen moment (before the run, from
// another thread, inside a job, a callback, a `priority` call or a pacing sleep), or exceptions
// thrown from chosen calls of any user callable (`Site`). Then the trace must still be valid, the
// return value and statistics must match what the trace says, the first exception must reach the
// caller, and the next run must be correct again.

#include "random_case.hpp"
#include "reference_model.hpp"

#include <tasktree/tasktree.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace tasktree_model {

/// Where the jobs run.
enum class Mode { inline_jobs, interleaved, thread_pool };

inline const char* to_string(Mode mode) {
  switch (mode) {
    case Mode::inline_jobs: return "inline";
    case Mode::interleaved: return "interleaved";
    case Mode::thread_pool: return "thread pool";
  }
  return "?";
}

/// A decision in [0, n) (0 if n is 0 or 1).
using Decide = std::function<std::size_t(std::size_t)>;

/// Where a stop request comes from.
enum class StopAt { never, before_run, from_thread, in_job, in_callback, in_priority, in_clock_wait };

/// A stop request: at the `count`-th call of the named kind (for `from_thread`: after `count`
/// microseconds).
struct StopPlan {
  StopAt at = StopAt::never;
  std::size_t count = 1;
};

/// The user callables and hooks an exception can be thrown from.
enum class Site {
  job,
  callback,
  priority,
  interval,
  executor_factory,
  executor_submit,
  clock_now,
  clock_wait,
  on_start,
  on_submit,
  on_complete,
  on_skip,
  on_finish,
  log,
};
inline constexpr std::size_t site_count = 14;

inline const char* to_string(Site site) {
  static const char* const names[site_count] = {"process_dataset",  "completion callback",
                                                "priority",         "interval_nanos",
                                                "executor factory", "executor submit",
                                                "clock now_nanos",  "clock wait_until",
                                                "on_start",         "on_submit",
                                                "on_complete",      "on_skip",
                                                "on_finish",        "log sink"};
  return names[static_cast<std::size_t>(site)];
}

/// An exception to throw at the `call`-th call of `site` (counting from 1).
struct Fault {
  Site site = Site::job;
  std::size_t call = 1;
  bool std_exception = true;  // else a type not derived from std::exception
};

/// What an injected fault throws.
struct InjectedError : std::runtime_error {
  InjectedError(long fault_id, const char* site)
      : std::runtime_error(std::string("injected fault #") + std::to_string(fault_id) + " in " + site), id(fault_id) {}
  long id;
};
struct InjectedNonStd {
  long id;
};

struct CheckOptions {
  Mode mode = Mode::inline_jobs;
  /// Attach an observer (always in modes other than inline, which need its submit events).
  bool observe = true;
  /// Run the same tree this many times; every run after the first must behave exactly as predicted.
  int runs = 1;
  /// Pace submissions with random intervals on a `ManualClock`.
  bool pacing = false;
  /// Send the library's log, at trace level, to a sink.
  bool logging = false;
  /// A stop request in the first run.
  StopPlan stop{};
  /// Exceptions thrown in the first run.
  std::vector<Fault> faults{};
  /// `Options::callbacks_on_calling_thread`.
  bool callbacks_on_calling_thread = false;
  /// On a thread pool: whether the executor `lets_jobs_coordinate()` (so that finishing workers
  /// take the coordinator role).
  bool workers_coordinate = true;
};

/// Throws the planned faults, counting the calls of each site. Thread-safe.
class FaultInjector {
 public:
  struct Fired {
    long id;
    Site site;
  };

  explicit FaultInjector(std::vector<Fault> faults) : faults_(std::move(faults)) {}

  /// Called at each call of a user callable: throws if a fault is planned for this call.
  void point(Site site) {
    if (faults_.empty()) return;
    const std::size_t call = ++calls_[static_cast<std::size_t>(site)];
    for (const Fault& fault : faults_) {
      if (fault.site == site && fault.call == call) fire(fault);
    }
  }
  [[nodiscard]] std::vector<Fired> fired() const {
    std::lock_guard lock(mutex_);
    return fired_;
  }
  /// Runs (on the thread of the faulting call) just before a fault is thrown.
  std::function<void()> on_fire;

 private:
  [[noreturn]] void fire(const Fault& fault) {
    long id = 0;
    {
      std::lock_guard lock(mutex_);
      id = next_id_++;
      fired_.push_back({id, fault.site});
    }
    if (on_fire) on_fire();
    if (fault.std_exception) throw InjectedError(id, to_string(fault.site));
    throw InjectedNonStd{id};
  }

  std::vector<Fault> faults_;
  std::array<std::atomic<std::size_t>, site_count> calls_{};
  mutable std::mutex mutex_;
  std::vector<Fired> fired_;
  long next_id_ = 1;
};

/// A single-threaded executor that holds submitted jobs and runs them at moments and in an order
/// chosen by `decide`: inside `submit`, or inside a completion callback (as if the job had finished
/// while the callback ran). It never lets the coordinator block with every in-flight job held: it
/// knows how many jobs are available (each `priority` call makes one available, each submission
/// takes one), so it knows when the coordinator will come back for another submission and when it
/// would wait for a completion instead. Needs a traced priority. After a stop or a fault it runs
/// everything at once (`flush`), since the coordinator then waits for the jobs in flight.
class Interleaver {
 public:
  Interleaver(Decide decide, std::size_t max_workers) : decide_(std::move(decide)), max_workers_(max_workers) {}

  void priority_called() { ++priority_calls_; }

  void submit(tasktree::Job job) {
    ++submits_;
    if (flushed_) {
      job();
      return;
    }
    held_.push_back(job);
    if (!coordinator_comes_back() || decide_(3) != 0) run_some(1);
  }

  /// Called at the start of every completion callback, with the job's name.
  void in_callback(const std::string& dataset) {
    if (flushed_) return;
    if (batch_left_ == 0) {  // the coordinator took a new batch: everything run since the last one
      batch_left_ = queued_;
      queued_ = 0;
      if (batch_left_ == 0) {
        problem_ = "a completion callback for a job that never ran: " + dataset;
        return;
      }
    } else if (!(previous_ < dataset)) {
      // docs/semantics.md §4.6: jobs found finished at once get their callbacks in name order.
      problem_ = "callbacks of one batch out of name order: " + previous_ + " before " + dataset;
    }
    previous_ = dataset;
    --batch_left_;
    if (!held_.empty() && decide_(4) == 0) run_some(0);
    // After the last callback of a batch, with nothing queued, the coordinator either submits
    // (a job is available and a slot free) or waits for a held job: then one must finish now.
    if (batch_left_ == 0 && queued_ == 0 && !held_.empty() && !coordinator_comes_back()) run_some(1);
  }

  /// Runs every held job now and every later one at once.
  void flush() {
    flushed_ = true;
    while (!held_.empty()) {
      const tasktree::Job job = held_.front();
      held_.erase(held_.begin());
      job();
    }
  }

  /// What went wrong, if anything.
  [[nodiscard]] const std::string& problem() const { return problem_; }

 private:
  [[nodiscard]] bool coordinator_comes_back() const {
    return queued_ > 0 || (priority_calls_ > submits_ && held_.size() < max_workers_);
  }
  void run_some(std::size_t at_least) {
    std::size_t count = std::min(held_.size(), at_least + decide_(held_.size() + 1 - std::min(at_least, held_.size())));
    // A job may flush the rest (a fault or a stop inside it), hence the emptiness check.
    while (count-- > 0 && !held_.empty() && !flushed_) {
      const std::size_t at = decide_(held_.size());
      const tasktree::Job job = held_[at];
      held_.erase(held_.begin() + static_cast<std::ptrdiff_t>(at));
      ++queued_;
      job();
    }
  }

  Decide decide_;
  std::size_t max_workers_;
  std::vector<tasktree::Job> held_;
  std::size_t priority_calls_ = 0;
  std::size_t submits_ = 0;
  std::size_t queued_ = 0;      // run, not yet taken by the coordinator
  std::size_t batch_left_ = 0;  // callbacks left in the batch being processed
  std::string previous_;        // the previous callback's job in this batch
  std::string problem_;
  bool flushed_ = false;
};

inline Stats to_model(const tasktree::RunStats& s) {
  return Stats{s.total, s.started, s.completed, s.succeeded, s.failed, s.skipped, s.cancelled};
}

namespace detail {

/// Everything recorded during one run.
struct RunRecord {
  RunRecord(const Case& c, const Model& model, bool priority_traced, bool trace_events, Mode run_mode,
            const Decide& decide, const CheckOptions& options, bool disturbed)
      : checker(c, model, priority_traced),
        traced(trace_events),
        mode(run_mode),
        injector(disturbed ? options.faults : std::vector<Fault>{}),
        stop(disturbed ? options.stop : StopPlan{}),
        starts(model.size()),
        start_seq(model.size()),
        complete_seq(model.size(), -1),
        job_submit_count(model.size()),
        observed_submit_count(model.size()),
        durations(model.size()),
        intervals(model.size()) {
    if (mode == Mode::interleaved) {
      interleaver.emplace(decide, static_cast<std::size_t>(c.max_workers));
      injector.on_fire = [this] { interleaver->flush(); };
    }
    if (mode == Mode::thread_pool) {
      for (int& d : durations) {
        const std::size_t roll = decide(10);
        d = roll < 4 ? 0 : roll < 6 ? -1 : static_cast<int>(decide(200));  // -1: yield; else microseconds
      }
    }
    static constexpr std::int64_t interval_choices[] = {-100, 0, 0, 50, 1'000, 1'000'000};
    for (std::int64_t& interval : intervals) interval = interval_choices[decide(6)];
  }

  /// `stop.at` happened for the `count`-th time: request the stop if planned.
  void maybe_stop(StopAt at, std::atomic<std::size_t>& count, tasktree::InFlight* in_flight = nullptr) {
    if (stop.at != at || ++count != stop.count) return;
    if (in_flight != nullptr) {
      in_flight->request_stop();
    } else {
      stop_source.request_stop();
    }
    if (interleaver) interleaver->flush();
  }

  void worker_problem(std::string what) {
    std::lock_guard lock(mutex);
    if (worker_problems.size() < 10) worker_problems.push_back(std::move(what));
  }

  /// Marks one call of the coordinator into user code (a completion callback, `priority`, an
  /// observer hook, `interval_nanos`, the log sink) for its duration: two such calls must never
  /// overlap, on whatever threads they run (docs/semantics.md §2), and when the role stays on the
  /// calling thread they must all run there.
  class CoordinatorCall {
   public:
    explicit CoordinatorCall(RunRecord& record) : record_(record) {
      if (record_.coordinator_calls.fetch_add(1, std::memory_order_acq_rel) != 0) {
        record_.worker_problem("two calls of the coordinator into user code overlap");
      }
      if (record_.role_on_calling_thread && std::this_thread::get_id() != record_.calling_thread) {
        record_.worker_problem("a coordinator call ran off the calling thread although the role stays there");
      }
      // Widens the window in which an overlapping call would be seen.
      if (record_.mode == Mode::thread_pool) std::this_thread::yield();
    }
    ~CoordinatorCall() { record_.coordinator_calls.fetch_sub(1, std::memory_order_acq_rel); }
    CoordinatorCall(const CoordinatorCall&) = delete;
    CoordinatorCall& operator=(const CoordinatorCall&) = delete;

   private:
    RunRecord& record_;
  };

  ScheduleChecker checker;
  bool traced;  // the coordinator's events go to `checker` (else only the prediction is compared)
  Mode mode;
  FaultInjector injector;
  StopPlan stop;
  std::stop_source stop_source;
  std::atomic<std::size_t> job_calls{0};
  std::atomic<std::size_t> callback_calls{0};
  std::atomic<std::size_t> priority_calls_seen{0};
  std::atomic<std::size_t> clock_waits{0};
  std::optional<Interleaver> interleaver;
  std::vector<std::atomic<int>> starts;
  std::vector<std::atomic<long>> start_seq;
  std::vector<long> complete_seq;  // coordinator only
  std::vector<std::atomic<std::int64_t>> job_submit_count;
  std::vector<std::int64_t> observed_submit_count;  // coordinator only
  std::vector<int> durations;
  std::vector<std::int64_t> intervals;
  std::vector<std::string> order;           // start order; single-threaded modes only
  std::vector<std::string> priority_calls;  // coordinator only
  std::atomic<long> sequence{0};
  std::atomic<int> running{0};
  std::atomic<int> peak{0};
  std::optional<Stats> finish_stats;
  std::mutex mutex;
  std::vector<std::string> worker_problems;
  std::atomic<int> coordinator_calls{0};  // calls into user code in progress, see `CoordinatorCall`
  std::thread::id calling_thread = std::this_thread::get_id();
  bool role_on_calling_thread = true;  // set by `check_case`
};

/// State shared by all runs of one case; everything the library calls reaches the current run
/// through it.
struct Harness {
  RunRecord* current = nullptr;
  std::atomic<int> live_executors{0};
};

class ModelObserver final : public tasktree::RunObserver {
 public:
  explicit ModelObserver(Harness* harness) : harness_(harness) {}
  void on_start(std::size_t total) override {
    RunRecord& r = *harness_->current;
    const RunRecord::CoordinatorCall call(r);
    r.injector.point(Site::on_start);
    if (total != r.checker.model().size()) r.checker.problem("on_start with total " + std::to_string(total));
    r.checker.started();
  }
  void on_submit(std::string_view dataset, std::int64_t submit_count) override {
    RunRecord& r = *harness_->current;
    const RunRecord::CoordinatorCall call(r);
    r.injector.point(Site::on_submit);
    r.checker.submitted(dataset, submit_count);
    if (const auto job = r.checker.model().find(dataset)) r.observed_submit_count[*job] = submit_count;
  }
  void on_complete(std::string_view, std::chrono::nanoseconds, tasktree::CompletionCallbackResult) override {
    RunRecord& r = *harness_->current;
    const RunRecord::CoordinatorCall call(r);
    r.injector.point(Site::on_complete);
    r.checker.completed();
  }
  void on_skip(std::string_view, std::size_t) override {
    RunRecord& r = *harness_->current;
    const RunRecord::CoordinatorCall call(r);
    r.injector.point(Site::on_skip);
  }
  void on_finish(const tasktree::RunStats& stats) override {
    RunRecord& r = *harness_->current;
    const RunRecord::CoordinatorCall call(r);
    r.finish_stats = to_model(stats);
    r.injector.point(Site::on_finish);
  }

 private:
  Harness* harness_;
};

/// A `ManualClock` with fault points, and a stop request during a chosen pacing sleep.
class ModelClock final : public tasktree::Clock {
 public:
  explicit ModelClock(Harness* harness) : harness_(harness) {}
  [[nodiscard]] std::int64_t now_nanos() override {
    harness_->current->injector.point(Site::clock_now);
    return clock_.now_nanos();
  }
  void wait_until(std::int64_t deadline_nanos, tasktree::Wakeup& wakeup) override {
    RunRecord& r = *harness_->current;
    r.maybe_stop(StopAt::in_clock_wait, r.clock_waits);
    r.injector.point(Site::clock_wait);
    clock_.wait_until(deadline_nanos, wakeup);
  }

 private:
  Harness* harness_;
  tasktree::ManualClock clock_;
};

}  // namespace detail

/// One executor type for all modes, so the library is instantiated once.
class ModelExecutor {
 public:
  ModelExecutor(Mode mode, std::size_t threads, Interleaver* interleaver, FaultInjector* injector,
                std::atomic<int>* live, bool jobs_coordinate)
      : interleaver_(mode == Mode::interleaved ? interleaver : nullptr),
        injector_(injector),
        live_(live),
        jobs_coordinate_(mode == Mode::thread_pool && jobs_coordinate) {
    if (mode == Mode::thread_pool) pool_.emplace(threads);
    ++*live_;
  }
  ModelExecutor(ModelExecutor&& other) noexcept
      : pool_(std::move(other.pool_)),
        interleaver_(other.interleaver_),
        injector_(other.injector_),
        live_(std::exchange(other.live_, nullptr)),
        jobs_coordinate_(other.jobs_coordinate_) {}
  ModelExecutor& operator=(ModelExecutor&&) = delete;
  ModelExecutor(const ModelExecutor&) = delete;
  ModelExecutor& operator=(const ModelExecutor&) = delete;
  ~ModelExecutor() {
    pool_.reset();  // joins the threads
    if (live_ != nullptr) --*live_;
  }

  /// On a thread pool, as the case says: finishing workers may take the coordinator role.
  [[nodiscard]] bool lets_jobs_coordinate() const noexcept { return jobs_coordinate_; }

  void submit(tasktree::Job job) {
    injector_->point(Site::executor_submit);  // throws before taking the job, as the concept asks
    if (pool_) {
      pool_->submit(job);
    } else if (interleaver_ != nullptr) {
      interleaver_->submit(job);
    } else {
      job();
    }
  }

 private:
  std::optional<tasktree::ThreadPoolExecutor> pool_;
  Interleaver* interleaver_;
  FaultInjector* injector_;
  std::atomic<int>* live_;
  bool jobs_coordinate_;
};

/// Runs `c` through the library as `options` says and returns every disagreement with the model
/// (empty if none). `decide` drives the interleaving, job durations and pacing intervals.
inline std::vector<std::string> check_case(const Case& c, const CheckOptions& options, const Decide& decide) {
  using detail::RunRecord;
  std::vector<std::string> problems;
  const std::optional<std::string> invalid = invalid_reason(c);
  const Mode mode = options.mode;
  const bool observe = options.observe || mode != Mode::inline_jobs;
  bool priority_fault = false;
  for (const Fault& fault : options.faults) priority_fault = priority_fault || fault.site == Site::priority;
  // The interleaver counts priority calls, so it needs a priority; the name gives the default order.
  const bool priority_traced = c.priority.has_value() || mode == Mode::interleaved || priority_fault;
  detail::Harness harness;
  detail::Harness* h = &harness;
  std::atomic<int> jobs_called{0};

  tasktree::Options<ModelExecutor> library_options{
      .datasets = c.datasets,
      .process_dataset =
          [h, &jobs_called](std::string_view dataset, std::int64_t submit_count) {
            ++jobs_called;
            RunRecord& r = *h->current;
            const auto job = r.checker.model().find(dataset);
            if (!job) {
              r.worker_problem("job called for unknown dataset " + std::string(dataset));
              return tasktree::CompletionCallback(tasktree::CompletionCallbackResult{});
            }
            if (r.starts[*job]++ == 0) {
              r.start_seq[*job] = r.sequence++;
              r.job_submit_count[*job] = submit_count;
            }
            const int now = ++r.running;
            for (int seen = r.peak.load(); now > seen && !r.peak.compare_exchange_weak(seen, now);) {
            }
            struct Leave {
              std::atomic<int>& running;
              ~Leave() { --running; }
            } leave{r.running};
            if (r.mode != Mode::thread_pool) r.order.emplace_back(dataset);
            r.maybe_stop(StopAt::in_job, r.job_calls);
            r.injector.point(Site::job);
            if (r.mode == Mode::thread_pool) {
              const int duration = r.durations[*job];
              if (duration < 0) {
                std::this_thread::yield();
              } else if (duration > 0) {
                std::this_thread::sleep_for(std::chrono::microseconds(duration));
              }
            }
            return tasktree::CompletionCallback([&r, job = *job](tasktree::InFlight& in_flight) {
              const RunRecord::CoordinatorCall call(r);
              const std::string& name = r.checker.model().name(job);
              if (r.interleaver) r.interleaver->in_callback(name);
              r.injector.point(Site::callback);
              std::vector<std::string> view(in_flight.begin(), in_flight.end());
              if (view.size() != in_flight.size()) r.checker.problem("InFlight::size() disagrees with its elements");
              r.complete_seq[job] = r.sequence++;
              const Outcome outcome = r.checker.model().outcome(job);
              if (r.traced) r.checker.completing(name, std::move(view), outcome);
              r.maybe_stop(StopAt::in_callback, r.callback_calls, &in_flight);
              return tasktree::CompletionCallbackResult{.no_skip = outcome.no_skip, .fail = outcome.fail};
            });
          },
      .max_workers = c.max_workers,
      .executors =
          [h, mode, workers = c.max_workers, workers_coordinate = options.workers_coordinate] {
            RunRecord& r = *h->current;
            r.injector.point(Site::executor_factory);
            return ModelExecutor(mode, static_cast<std::size_t>(std::max(workers, 1)),
                                 r.interleaver ? &*r.interleaver : nullptr, &r.injector, &h->live_executors,
                                 workers_coordinate);
          },
      .enable_barriers = c.enable_barriers,
      .barrier_name = c.barrier_name,
  };
  // Called for every priority call of a traced priority.
  auto on_priority = [h](std::string_view dataset) {
    RunRecord& r = *h->current;
    const RunRecord::CoordinatorCall call(r);
    r.injector.point(Site::priority);
    if (r.traced) r.checker.priority_called(dataset);
    r.priority_calls.emplace_back(dataset);
    if (r.interleaver) r.interleaver->priority_called();
    r.maybe_stop(StopAt::in_priority, r.priority_calls_seen);
  };
  if (c.priority) {
    library_options.priority = [on_priority, keys = *c.priority](std::string_view dataset) {
      on_priority(dataset);
      const auto it = keys.find(dataset);
      return it == keys.end() ? 0 : it->second;
    };
  } else if (priority_traced) {
    library_options.priority = [on_priority](std::string_view dataset) {
      on_priority(dataset);
      return std::string(dataset);
    };
  }
  if (observe) library_options.observer = std::make_shared<detail::ModelObserver>(h);
  if (options.pacing || observe) library_options.clock = std::make_shared<detail::ModelClock>(h);
  if (options.pacing) {
    library_options.interval_nanos = [h](std::int64_t, std::string_view dataset, std::int64_t) {
      RunRecord& r = *h->current;
      const RunRecord::CoordinatorCall call(r);
      r.injector.point(Site::interval);
      const auto job = r.checker.model().find(dataset);
      return job ? r.intervals[*job] : 0;
    };
  }
  if (options.logging) {
    library_options.log = tasktree::Logger{
        .sink =
            [h](tasktree::LogLevel, std::string_view) {
              const RunRecord::CoordinatorCall call(*h->current);
              h->current->injector.point(Site::log);
            },
        .level = tasktree::LogLevel::trace,
    };
  }

  library_options.callbacks_on_calling_thread = options.callbacks_on_calling_thread;

  std::optional<tasktree::ParallelTaskTree<ModelExecutor>> tree;
  try {
    tree.emplace(std::move(library_options));
  } catch (const std::invalid_argument& e) {
    if (!invalid) problems.push_back(std::string("rejected a valid input: ") + e.what());
    if (std::string_view(e.what()).empty()) problems.push_back("std::invalid_argument without a message");
    return problems;
  } catch (const std::exception& e) {
    problems.push_back(std::string("construction threw something other than std::invalid_argument: ") + e.what());
    return problems;
  } catch (...) {
    problems.push_back("construction threw a non-std exception");
    return problems;
  }
  if (invalid) {
    problems.push_back("accepted an invalid input (" + *invalid + ")");
    return problems;
  }

  const Model model(c);
  const Prediction prediction = predict(model);
  const std::size_t n = model.size();
  for (int run = 0; run < options.runs; ++run) {
    const bool disturbed = run == 0;
    RunRecord record(c, model, priority_traced, observe, mode, decide, options, disturbed);
    record.role_on_calling_thread = mode != Mode::thread_pool || !options.workers_coordinate ||
                                    options.callbacks_on_calling_thread || options.pacing;
    harness.current = &record;
    ScheduleChecker& checker = record.checker;
    const std::string where = std::string(to_string(mode)) + " run " + std::to_string(run + 1) + ": ";

    if (record.stop.at == StopAt::before_run) record.stop_source.request_stop();
    std::thread stopper;
    if (record.stop.at == StopAt::from_thread) {
      stopper = std::thread([&record] {
        std::this_thread::sleep_for(std::chrono::microseconds(record.stop.count));
        record.stop_source.request_stop();
      });
    }
    bool returned = false;
    std::optional<long> thrown;
    try {
      returned = tree->process_datasets_in_parallel(record.stop_source.get_token());
    } catch (const InjectedError& e) {
      thrown = e.id;
    } catch (const InjectedNonStd& e) {
      thrown = e.id;
    } catch (const std::exception& e) {
      checker.problem(std::string("threw ") + e.what());
    } catch (...) {
      checker.problem("threw an unknown exception");
    }
    // Nothing of the run may still be going on.
    if (record.running.load() != 0) checker.problem("a job was still running when the run returned");
    if (harness.live_executors.load() != 0) checker.problem("the executor outlived the run");
    if (stopper.joinable()) stopper.join();

    const Stats stats = to_model(tree->last_run_stats());
    std::size_t started = 0;
    for (std::size_t job = 0; job < n; ++job) {
      const int count = record.starts[job].load();
      started += count > 0 ? 1 : 0;
      if (count > 1) checker.problem(model.name(job) + " ran " + std::to_string(count) + " times");
    }
    if (static_cast<std::size_t>(jobs_called.exchange(0)) != started) checker.problem("a job was called twice");

    // Exceptions: the first one reaches the caller; none is swallowed.
    const std::vector<FaultInjector::Fired> fired = record.injector.fired();
    if (!fired.empty() && !thrown) {
      checker.problem(std::string("the fault in ") + to_string(fired.front().site) + " did not reach the caller");
    }
    if (thrown) {
      bool worker_side = false;  // faults recorded by the coordinator later than they were thrown
      bool known = false;
      for (const auto& f : fired) {
        worker_side = worker_side || f.site == Site::job || f.site == Site::clock_now;
        known = known || f.id == *thrown;
      }
      if (!known) checker.problem("threw a fault that was never injected");
      if (!worker_side && !fired.empty() && fired.front().id != *thrown) {
        checker.problem(std::string("rethrew a later fault, not the first one (in ") + to_string(fired.front().site) +
                        ")");
      }
    }

    const bool stopped = record.stop.at != StopAt::never;
    if (thrown) {
      checker.aborted(stats, started);
    } else if (observe) {
      checker.finished(returned, stats, started, !stopped);
    }
    if (observe && record.finish_stats && record.finish_stats != stats) {
      checker.problem("on_finish saw other stats than last_run_stats()");
    }
    if (observe && !record.finish_stats && fired.empty()) checker.problem("on_finish was not called");
    if (record.interleaver && !record.interleaver->problem().empty()) checker.problem(record.interleaver->problem());
    for (const std::string& p : record.worker_problems) checker.problem(p);
    if (record.peak.load() > c.max_workers) {
      checker.problem(std::to_string(record.peak.load()) + " jobs ran at once with max_workers " +
                      std::to_string(c.max_workers));
    }
    for (std::size_t job = 0; job < n; ++job) {
      if (record.starts[job].load() == 0) continue;
      if (observe && record.observed_submit_count[job] != 0 &&
          record.job_submit_count[job].load() != record.observed_submit_count[job]) {
        checker.problem(model.name(job) + " got submit_count " + std::to_string(record.job_submit_count[job].load()) +
                        " but on_submit said " + std::to_string(record.observed_submit_count[job]));
      }
      for (const std::size_t before : model.prerequisites(job)) {
        if (record.complete_seq[before] < 0 || record.complete_seq[before] > record.start_seq[job].load()) {
          checker.problem(model.name(job) + " started before its prerequisite " + model.name(before) + " completed");
        }
      }
    }
    if (!stopped && !thrown) {
      if (mode == Mode::inline_jobs && record.order != prediction.order) {
        std::string text = "order:";
        for (const auto& name : record.order) text += " " + name;
        text += "\nexpected:";
        for (const auto& name : prediction.order) text += " " + name;
        checker.problem(text);
      }
      if (mode == Mode::inline_jobs && c.priority && record.priority_calls != prediction.priority_calls) {
        checker.problem("priority calls differ from the prediction");
      }
      if (returned != prediction.failed) checker.problem("returned " + std::to_string(returned) + ", predicted not");
      if (stats != prediction.stats) {
        checker.problem("stats " + to_string(stats) + ", predicted " + to_string(prediction.stats));
      }
    }
    for (const std::string& p : checker.problems()) problems.push_back(where + p);
    harness.current = nullptr;
    if (!problems.empty()) break;
  }
  return problems;
}

}  // namespace tasktree_model
