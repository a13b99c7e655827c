#pragma once
// The reference model: an independent, deliberately simple statement of docs/semantics.md's scheduling
// semantics, used to check the library on random cases (tests/test_model.cpp, fuzz/).
//
// It includes nothing from the library and shares none of its machinery: no trie, no heap, no
// pending counters, no incremental barrier state. A job's prerequisites are written down once,
// straight from the contract's words, as a list of other jobs; a job is available when all of them
// have completed with no_skip = true; every question is answered by scanning plain vectors. It is
// quadratic and proud of it: small enough to be checked by reading.
//
// docs/semantics.md §4.1 and §5, restated as prerequisites of a job J with components c[0..n):
// - every ancestor job of J (a dataset equal to c[0..k) for some k < n), and
// - for every barrier component c[i] == barrier_name (i < n - 1) with X = c[0..i): every job
//   strictly below X that is not below X/barrier. (If there is none, the barrier is its node's only
//   child and opens at once; X itself, when it is a job, is an ancestor anyway.)
// Skips need no rule of their own: a job whose prerequisite completed with no_skip = false can never
// become available, and that is exactly the contract's "no descendant starts" (§4.2) and "the barrier never
// opens, nor the barriers of the job's ancestors" (§5 rule 4).
// A run that stops early (a callback asks it to stop, a job throws, or a stop request arrives while
// a job runs: docs/semantics.md §4.8, §4.9; the policy layer's fail mode, fatal errors and stops in
// tests/test_policy_model.cpp) needs one rule: nothing is submitted after the job that stopped it.
// Its unstarted jobs then count as skipped if a prerequisite completed with no_skip = false, and as
// cancelled otherwise.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tasktree_model {

/// What a job's completion callback returns, and whether the job ends the run.
struct Outcome {
  bool no_skip = true;
  bool fail = false;
  /// The callback also asks the run to stop (`InFlight::request_stop()`, as a fail-fast policy
  /// does): nothing is submitted after it (docs/semantics.md §4.6 and §4.8).
  bool stop = false;
  /// The job never completes, and the run stops: the job throws (§4.9), or the run is asked to
  /// stop while the job runs (§4.8). Its callback never runs; it counts as started.
  bool unfinished = false;
  friend bool operator==(const Outcome&, const Outcome&) = default;
};

/// One scheduling problem: the input of a run and the outcome of every job.
struct Case {
  std::vector<std::string> datasets{};  // as handed to the library, in any order
  std::string barrier_name = "~";
  std::optional<bool> enable_barriers{};
  int max_workers = 1;
  /// Priority key per dataset (smaller first, ties by name); empty means the default name order.
  std::optional<std::map<std::string, int, std::less<>>> priority{};
  /// Outcome per dataset; a dataset not listed succeeds and continues.
  std::map<std::string, Outcome, std::less<>> outcomes{};

  [[nodiscard]] Outcome outcome(std::string_view dataset) const {
    const auto it = outcomes.find(dataset);
    return it == outcomes.end() ? Outcome{} : it->second;
  }
};

/// The counts the library reports as `RunStats`, field by field.
struct Stats {
  std::size_t total = 0;
  std::size_t started = 0;
  std::size_t completed = 0;
  std::size_t succeeded = 0;
  std::size_t failed = 0;
  std::size_t skipped = 0;
  std::size_t cancelled = 0;
  friend bool operator==(const Stats&, const Stats&) = default;
};

inline std::string to_string(const Stats& s) {
  return "{total " + std::to_string(s.total) + ", started " + std::to_string(s.started) + ", completed " +
         std::to_string(s.completed) + ", succeeded " + std::to_string(s.succeeded) + ", failed " +
         std::to_string(s.failed) + ", skipped " + std::to_string(s.skipped) + ", cancelled " +
         std::to_string(s.cancelled) + "}";
}

/// `name` split at every '/', keeping empty components.
inline std::vector<std::string> components(std::string_view name) {
  std::vector<std::string> parts(1);
  for (const char c : name) {
    if (c == '/') {
      parts.emplace_back();
    } else {
      parts.back() += c;
    }
  }
  return parts;
}

/// Why the library must reject `c` with std::invalid_argument (docs/semantics.md §3), or nothing if it must not.
inline std::optional<std::string> invalid_reason(const Case& c) {
  if (c.max_workers < 1) return "max_workers < 1";
  if (c.barrier_name.empty()) return "empty barrier name";
  if (c.barrier_name.find('/') != std::string::npos) return "barrier name contains '/'";
  std::set<std::string> seen;
  bool has_barrier = false;
  for (const std::string& name : c.datasets) {
    if (name.empty()) return "empty dataset name";
    if (name.front() == '/') return "dataset name starts with '/': " + name;
    if (name.back() == '/') return "dataset name ends with '/': " + name;
    const std::vector<std::string> parts = components(name);
    for (const std::string& part : parts) {
      if (part.empty()) return "empty component: " + name;
      if (part == c.barrier_name) has_barrier = true;
    }
    if (parts.back() == c.barrier_name) return "last component is the barrier: " + name;
    if (!seen.insert(name).second) return "duplicate: " + name;
  }
  if (c.enable_barriers == false && has_barrier) return "barrier component with enable_barriers = false";
  return std::nullopt;
}

/// The jobs of a valid case, sorted by name, with their prerequisites, keys and outcomes.
class Model {
 public:
  /// Precondition: `!invalid_reason(c)`.
  explicit Model(const Case& c) : names_(c.datasets) {
    std::sort(names_.begin(), names_.end());
    std::vector<std::vector<std::string>> parts;
    for (const std::string& name : names_) {
      parts.push_back(components(name));
      keys_.push_back(c.priority ? c.priority->at(name) : 0);
      outcomes_.push_back(c.outcome(name));
    }
    // True if `path` is strictly below the node made of the first `depth` components of `node`.
    auto is_below = [](const std::vector<std::string>& path, const std::vector<std::string>& node, std::size_t depth) {
      return path.size() > depth &&
             std::equal(node.begin(), node.begin() + static_cast<std::ptrdiff_t>(depth), path.begin());
    };
    prerequisites_.resize(names_.size());
    for (std::size_t job = 0; job < names_.size(); ++job) {
      const std::vector<std::string>& path = parts[job];
      for (std::size_t other = 0; other < names_.size(); ++other) {
        const std::vector<std::string>& candidate = parts[other];
        // An ancestor job.
        bool before = is_below(path, candidate, candidate.size());
        // A job that a barrier on this job's path waits for: below X = path[0..i), not below X/~.
        for (std::size_t i = 0; i + 1 < path.size() && !before; ++i) {
          before = path[i] == c.barrier_name && is_below(candidate, path, i) && candidate[i] != c.barrier_name;
        }
        if (before) prerequisites_[job].push_back(other);
      }
    }
  }

  [[nodiscard]] std::size_t size() const { return names_.size(); }
  [[nodiscard]] const std::string& name(std::size_t job) const { return names_[job]; }
  [[nodiscard]] const std::vector<std::string>& names() const { return names_; }
  [[nodiscard]] const std::vector<std::size_t>& prerequisites(std::size_t job) const { return prerequisites_[job]; }
  [[nodiscard]] Outcome outcome(std::size_t job) const { return outcomes_[job]; }
  /// The job called `name`, if any.
  [[nodiscard]] std::optional<std::size_t> find(std::string_view name) const {
    const auto it = std::lower_bound(names_.begin(), names_.end(), name);
    if (it == names_.end() || *it != name) return std::nullopt;
    return static_cast<std::size_t>(it - names_.begin());
  }
  /// True if `a` goes before `b`: smaller key, then smaller name (names are sorted, so the index).
  [[nodiscard]] bool goes_before(std::size_t a, std::size_t b) const {
    return keys_[a] != keys_[b] ? keys_[a] < keys_[b] : a < b;
  }

 private:
  std::vector<std::string> names_;
  std::vector<int> keys_;
  std::vector<Outcome> outcomes_;
  std::vector<std::vector<std::size_t>> prerequisites_;
};

/// What happened to the jobs so far in one run, and the questions docs/semantics.md asks about it.
class RunState {
 public:
  explicit RunState(const Model& model)
      : model_(&model),
        made_available_(model.size()),
        submitted_(model.size()),
        completed_(model.size()),
        continued_(model.size()),
        skipping_(model.size()) {}

  /// Marks and returns, in name order, the jobs whose prerequisites have all completed with
  /// no_skip = true and that were not available before: one "step" of docs/semantics.md §4.5.
  std::vector<std::size_t> newly_available() {
    std::vector<std::size_t> jobs;
    for (std::size_t job = 0; job < model_->size(); ++job) {
      if (made_available_[job]) continue;
      const auto& before = model_->prerequisites(job);
      if (std::all_of(before.begin(), before.end(), [&](std::size_t p) { return continued_[p] != 0; })) {
        made_available_[job] = 1;
        jobs.push_back(job);
      }
    }
    return jobs;
  }

  /// Available and not submitted.
  [[nodiscard]] bool is_available(std::size_t job) const { return made_available_[job] && !submitted_[job]; }
  [[nodiscard]] bool any_available() const {
    for (std::size_t job = 0; job < model_->size(); ++job) {
      if (is_available(job)) return true;
    }
    return false;
  }
  /// The available job that must be submitted next, if any.
  [[nodiscard]] std::optional<std::size_t> smallest_available() const {
    std::optional<std::size_t> best;
    for (std::size_t job = 0; job < model_->size(); ++job) {
      if (is_available(job) && (!best || model_->goes_before(job, *best))) best = job;
    }
    return best;
  }
  [[nodiscard]] bool is_in_flight(std::size_t job) const { return submitted_[job] && !completed_[job]; }
  [[nodiscard]] std::vector<std::size_t> in_flight() const {
    std::vector<std::size_t> jobs;
    for (std::size_t job = 0; job < model_->size(); ++job) {
      if (is_in_flight(job)) jobs.push_back(job);
    }
    return jobs;
  }
  [[nodiscard]] bool was_submitted(std::size_t job) const { return submitted_[job] != 0; }
  [[nodiscard]] bool was_completed(std::size_t job) const { return completed_[job] != 0; }

  void submit(std::size_t job) { submitted_[job] = 1; }
  void complete(std::size_t job, Outcome outcome) {
    completed_[job] = 1;
    continued_[job] = outcome.no_skip ? 1 : 0;
    skipping_[job] = outcome.no_skip ? 0 : 1;
    ++completed_count_;
    if (outcome.fail) ++failed_count_;
  }

  [[nodiscard]] std::size_t completed_count() const { return completed_count_; }
  [[nodiscard]] std::size_t failed_count() const { return failed_count_; }
  /// Jobs that can never start because a prerequisite completed with no_skip = false.
  [[nodiscard]] std::size_t skipped_count() const {
    std::size_t count = 0;
    for (std::size_t job = 0; job < model_->size(); ++job) {
      const auto& before = model_->prerequisites(job);
      if (std::any_of(before.begin(), before.end(), [&](std::size_t p) { return skipping_[p] != 0; })) ++count;
    }
    return count;
  }
  /// The statistics after a run in which `started` jobs had their job function called.
  [[nodiscard]] Stats stats(std::size_t started) const {
    Stats s;
    s.total = model_->size();
    s.started = started;
    s.completed = completed_count_;
    s.failed = failed_count_;
    s.succeeded = completed_count_ - failed_count_;
    s.skipped = skipped_count();
    s.cancelled = s.total - s.started - s.skipped;
    return s;
  }

 private:
  const Model* model_;
  std::vector<char> made_available_;
  std::vector<char> submitted_;
  std::vector<char> completed_;
  std::vector<char> continued_;  // completed with no_skip = true
  std::vector<char> skipping_;   // completed with no_skip = false
  std::size_t completed_count_ = 0;
  std::size_t failed_count_ = 0;
};

/// What docs/semantics.md says a valid case does when run with jobs executed inline, one at a time
/// (`max_workers = 1`, or any executor that runs each job inside `submit`).
struct Prediction {
  /// The order in which the jobs run (and complete, except a last job that is unfinished).
  std::vector<std::string> order;
  /// The `priority` calls, in order: each step's newly available jobs, in name order.
  std::vector<std::string> priority_calls;
  /// What the run returns; meaningless if the last job is unfinished.
  bool failed = false;
  /// The last job in `order` stopped the run (`Outcome::stop` or `Outcome::unfinished`).
  bool stopped = false;
  Stats stats;
};

inline Prediction predict(const Model& model) {
  RunState state(model);
  Prediction prediction;
  auto step = [&] {
    for (const std::size_t job : state.newly_available()) prediction.priority_calls.push_back(model.name(job));
  };
  step();
  while (const auto next = state.smallest_available()) {
    const Outcome outcome = model.outcome(*next);
    prediction.order.push_back(model.name(*next));
    state.submit(*next);
    if (outcome.unfinished) {
      prediction.stopped = true;
      break;
    }
    state.complete(*next, outcome);
    prediction.failed = prediction.failed || outcome.fail;
    step();
    if (outcome.stop) {
      // Stopped with work left: the run returns true (docs/semantics.md §4.8).
      prediction.stopped = true;
      prediction.failed = prediction.failed || state.any_available();
      break;
    }
  }
  prediction.stats = state.stats(prediction.order.size());
  return prediction;
}

inline Prediction predict(const Case& c) { return predict(Model(c)); }

/// Checks a trace of the coordinator's events, as they happen, against docs/semantics.md: that each job is
/// submitted only when available and is then the smallest available one; that no more than
/// `max_workers` are in flight; that `priority` is called once per job, when it becomes available,
/// in name order within a step; that each completion callback sees exactly the other jobs in flight;
/// and, at the end, the return value and the statistics. Works for any executor, since the
/// coordinator's events are sequential whatever the workers do.
class ScheduleChecker {
 public:
  /// `model` is `Model(c)`; `priority_traced`: the run uses a custom priority whose calls are
  /// reported.
  ScheduleChecker(const Case& c, const Model& model, bool priority_traced)
      : case_(&c), model_(model), state_(model_), priority_traced_(priority_traced) {}

  [[nodiscard]] const Model& model() const { return model_; }
  [[nodiscard]] const RunState& state() const { return state_; }
  [[nodiscard]] const std::vector<std::string>& problems() const { return problems_; }

  /// The run started (`on_start`): the root step.
  void started() {
    if (started_) problem("on_start twice");
    started_ = true;
    step();
  }

  void priority_called(std::string_view dataset) {
    if (!priority_traced_) return;
    if (expected_priority_.empty()) {
      problem("priority(" + std::string(dataset) + ") called, but no job became available");
    } else if (model_.name(expected_priority_.front()) != dataset) {
      problem("priority(" + std::string(dataset) + ") called, expected priority(" +
              model_.name(expected_priority_.front()) + ")");
      expected_priority_.erase(expected_priority_.begin());
    } else {
      expected_priority_.erase(expected_priority_.begin());
    }
  }

  void submitted(std::string_view dataset, std::int64_t submit_count) {
    expect_no_pending_priority("submit of " + std::string(dataset));
    ++submits_;
    if (submit_count != submits_) {
      problem("submit_count " + std::to_string(submit_count) + " for submission number " + std::to_string(submits_));
    }
    const auto job = known(dataset, "submitted");
    if (!job) return;
    if (!state_.is_available(*job)) {
      problem("submitted " + std::string(dataset) + " which is not available" +
              (state_.was_submitted(*job) ? " (submitted before)" : ""));
    } else {
      const auto best = state_.smallest_available();
      if (best != job) problem("submitted " + std::string(dataset) + " but " + model_.name(*best) + " goes first");
    }
    state_.submit(*job);
    const std::size_t in_flight = state_.in_flight().size();
    if (in_flight > static_cast<std::size_t>(case_->max_workers)) {
      problem(std::to_string(in_flight) + " jobs in flight with max_workers " + std::to_string(case_->max_workers));
    }
  }

  /// The completion callback of `dataset` runs, seeing `view` as the other jobs in flight, and
  /// returns `outcome`.
  void completing(std::string_view dataset, std::vector<std::string> view, Outcome outcome) {
    expect_no_pending_priority("completion of " + std::string(dataset));
    const auto job = known(dataset, "completed");
    if (!job) return;
    if (!state_.is_in_flight(*job)) {
      problem("completion callback of " + std::string(dataset) + " which is not in flight");
      return;
    }
    std::vector<std::string> expected;
    for (const std::size_t other : state_.in_flight()) {
      if (other != *job) expected.push_back(model_.name(other));
    }
    std::sort(view.begin(), view.end());
    if (view != expected) {
      problem("the completion callback of " + std::string(dataset) + " sees " + list(view) + " in flight, expected " +
              list(expected));
    }
    state_.complete(*job, outcome);
    failed_ = failed_ || outcome.fail;
  }

  /// The completion was processed (after the callback returned and the observer saw it): the next
  /// step. Separate from `completing` so that a hook that throws in between can be modelled.
  void completed() { step(); }

  /// The run returned `returned` with `stats`; `started` jobs had their job function called. With
  /// `whole` (no stop, no error), everything must have run exactly as the model says.
  void finished(bool returned, const Stats& stats, std::size_t started, bool whole) {
    expect_no_pending_priority("the end of the run");
    const bool work_left = state_.any_available() || !state_.in_flight().empty();
    if (whole && work_left) problem("the run ended with work left: " + list(names(state_.in_flight())));
    const bool expected_return = failed_ || work_left;
    if (returned != expected_return) {
      problem(std::string("returned ") + (returned ? "true" : "false") + ", expected " +
              (expected_return ? "true" : "false"));
    }
    const Stats expected = state_.stats(started);
    if (stats != expected) problem("stats " + to_string(stats) + ", expected " + to_string(expected));
    if (whole) {
      const Prediction prediction = predict(model_);
      std::vector<std::string> ran;
      for (std::size_t job = 0; job < model_.size(); ++job) {
        if (state_.was_completed(job)) ran.push_back(model_.name(job));
      }
      std::vector<std::string> expected_ran = prediction.order;
      std::sort(expected_ran.begin(), expected_ran.end());
      if (ran != expected_ran) problem("ran " + list(ran) + ", expected " + list(expected_ran));
      if (stats != prediction.stats)
        problem("stats " + to_string(stats) + ", predicted " + to_string(prediction.stats));
    }
  }

  /// The run threw (an injected fault): the statistics must still add up and agree with what was
  /// seen, except that a skip cut short by the fault may have counted fewer jobs as skipped (the
  /// rest count as cancelled).
  void aborted(const Stats& stats, std::size_t started) {
    const Stats expected = state_.stats(started);
    if (stats.total != expected.total || stats.started != expected.started || stats.completed != expected.completed ||
        stats.failed != expected.failed || stats.succeeded != expected.succeeded || stats.skipped > expected.skipped ||
        stats.started + stats.skipped + stats.cancelled != stats.total) {
      problem("after an exception: stats " + to_string(stats) + ", expected about " + to_string(expected));
    }
  }

  void problem(std::string what) {
    if (problems_.size() < 20) problems_.push_back(std::move(what));
  }

 private:
  void step() {
    for (const std::size_t job : state_.newly_available()) {
      if (priority_traced_) expected_priority_.push_back(job);
    }
  }
  void expect_no_pending_priority(const std::string& at) {
    if (!expected_priority_.empty()) {
      problem("priority(" + model_.name(expected_priority_.front()) + ") not called before " + at);
      expected_priority_.clear();
    }
  }
  std::optional<std::size_t> known(std::string_view dataset, const char* what) {
    const auto job = model_.find(dataset);
    if (!job) problem(std::string(what) + " unknown dataset " + std::string(dataset));
    return job;
  }
  std::vector<std::string> names(const std::vector<std::size_t>& jobs) const {
    std::vector<std::string> out;
    for (const std::size_t job : jobs) out.push_back(model_.name(job));
    return out;
  }
  static std::string list(const std::vector<std::string>& names) {
    std::string out = "[";
    for (const std::string& name : names) out += (out.size() > 1 ? ", " : "") + name;
    return out + "]";
  }

  const Case* case_;
  const Model& model_;
  RunState state_;
  bool priority_traced_;
  bool started_ = false;
  bool failed_ = false;
  std::int64_t submits_ = 0;
  std::vector<std::size_t> expected_priority_;
  std::vector<std::string> problems_;
};

}  // namespace tasktree_model
