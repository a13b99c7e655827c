#pragma once
/// @file detail/coordinator.hpp
/// @brief One run of the scheduler: the coordinator that submits the smallest available job while
/// fewer than `max_workers` are in flight, paces submissions, processes completions in name order,
/// and on a stop or an error drains every in-flight job before returning or rethrowing.
///
/// The coordinator is a role (docs/semantics.md §2), held by one thread at a time:
///
/// | phase | who holds the role |
/// |---|---|
/// | start: first callbacks, first submissions | the calling thread |
/// | the run, if the executor `lets_jobs_coordinate()`, without pacing or `callbacks_on_calling_thread` | a worker
/// whose job just finished, while nobody else holds it; between two such workers, nobody (the calling thread sleeps) |
/// | the run, otherwise | the calling thread, which sleeps on the completion queue (or a pacing deadline) when it has
/// nothing to do | | a stop or an error, draining | the calling thread (a worker that holds the role hands it over) |
/// | the end: last hooks, the return | the calling thread (the worker that found the run done hands it over) |
///
/// The role is a bit of the completion queue's word, so that a worker whose job finished either
/// takes the role or leaves its result for the holder, never both and never neither.

#include <tasktree/clock.hpp>
#include <tasktree/completion.hpp>
#include <tasktree/dataset_trie.hpp>
#include <tasktree/detail/completion_queue.hpp>
#include <tasktree/detail/deadline.hpp>
#include <tasktree/detail/error_text.hpp>
#include <tasktree/detail/job_timer.hpp>
#include <tasktree/detail/ready_queue.hpp>
#include <tasktree/executor.hpp>
#include <tasktree/journal.hpp>
#include <tasktree/log.hpp>
#include <tasktree/observer.hpp>
#include <tasktree/options.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace tasktree::detail {

/// What one run needs from the tree; all references outlive the run.
struct RunConfig {
  const DatasetTrie& trie;
  const ProcessDataset& process_dataset;
  const IntervalNanos& interval_nanos;  // empty: no pacing
  Clock& clock;
  bool clock_is_steady;  // `clock` is the tree's own `SteadyClock`: jobs may be timed with the CPU's counter
  const Logger& log;
  RunObserver* observer;  // null: none
  std::size_t max_workers;
  bool callbacks_on_calling_thread;
  std::string_view barrier_name;  // for the journal's fingerprint
  Journal* journal;               // null: none
};

class JobContext;

/// The job that a run whose jobs may defer runs on this thread, while its `process_dataset` runs
/// (see `defer_job`).
struct RunningJob {
  JobContext* context = nullptr;
  std::uint32_t index = 0;
};
inline thread_local RunningJob running_job{};

/// The part of a run that worker threads touch: the job slots, the completion queue and the
/// run's stop source. Everything else belongs to the coordinator alone.
class JobContext {
 public:
  // A cache line each: the workers of neighbouring slots write them at the same time.
  struct alignas(64) Slot {
    std::uint32_t dataset = 0;
    DatasetTrie::NodeIndex node = 0;
    std::int64_t submit_count = 0;
    CompletionCallback callback;     // written by the worker
    std::exception_ptr error;        // written by the worker
    // Written by the worker, if timed: when the job started and how long it ran, in the timer's
    // unit (`JobContext::Timing`); the coordinator turns them into nanoseconds on the run's clock.
    std::int64_t start_nanos = 0;
    std::int64_t elapsed_nanos = 0;
    bool ran = false;                // written by the worker: process_dataset was called
    // Set when the job is handed out, cleared by its one call: a second call of the same `Job`
    // finds it clear and reports the executor's broken contract instead of running.
    std::atomic<bool> pending{false};
    // A `Deferral`: whether the job's process_dataset deferred its end (`defer_job`), and which of
    // the two sides (the job's thread, `DeferredJob::finish`) is done; the last one reports.
    std::atomic<std::uint8_t> deferral{0};
  };

  /// The states of `Slot::deferral`.
  enum Deferral : std::uint8_t { not_deferred = 0, deferred = 1, deferral_returned = 2, deferral_finished = 3 };

  /// How jobs are timed: not at all, with the run's clock, or with the CPU's counter
  /// (docs/design.md; detail/job_timer.hpp).
  enum class Timing : std::uint8_t { none, clock, ticks };

  JobContext(const ProcessDataset& process_dataset, std::span<const std::string> names, std::size_t slots,
             Clock* timing_clock, Timing timing)
      : process_dataset_(&process_dataset),
        names_(names),
        timing_clock_(timing_clock),
        timing_(timing),
        slots_(slots),
        completions_(slots) {}

  /// The function behind every `Job` of this run: runs the user's job unless the run is
  /// stopping, then reports to the coordinator: through the completion queue, or, if jobs
  /// may coordinate and nobody holds the role, by taking the role, in which case it may be given
  /// the next job to run here. Never throws.
  static void execute(void* context, std::uint32_t index) noexcept {
    auto& self = *static_cast<JobContext*>(context);
    while (true) {
      if (!self.slots_[index].pending.exchange(false, std::memory_order_acq_rel)) {
        self.executor_broke_contract();  // called twice: the first call reports the job
        return;
      }
      Slot& slot = self.slots_[index];
      self.run_job(slot, index);
      // A deferred job is reported by `finish_deferred` unless that already ran; then by this thread.
      if (slot.deferral.load(std::memory_order_relaxed) != not_deferred &&
          slot.deferral.exchange(deferral_returned, std::memory_order_acq_rel) == deferred) {
        return;  // last touch of `self`
      }
      index = self.report(index);
      if (index == InFlight::free_slot) return;
    }
  }

  /// Marks the job that runs on this thread (in a run whose jobs may defer) deferred; returns it, or
  /// no context if there is none.
  static RunningJob defer_running_job() noexcept {
    const RunningJob job = std::exchange(running_job, RunningJob{});
    if (job.context != nullptr) job.context->slots_[job.index].deferral.store(deferred, std::memory_order_relaxed);
    return job;
  }

  /// Reports job `index`, which deferred its end (see `defer_job`), as finished: by this thread if
  /// its own thread is done with it, else by that thread when it is. Any thread, once per deferral.
  static void finish_deferred(JobContext& self, std::uint32_t index) noexcept {
    if (self.slots_[index].deferral.exchange(deferral_finished, std::memory_order_acq_rel) == deferred) return;
    index = self.report(index);
    if (index != InFlight::free_slot) execute(&self, index);  // this thread was given a job to run
  }

 protected:
  /// Processes `finished` (a slot whose job this worker ran) and whatever else finished, submits
  /// what became available, and gives the role up; returns a slot whose job this worker is to run
  /// next, or `InFlight::free_slot`.
  using Coordinate = std::uint32_t (*)(JobContext& self, std::uint32_t finished) noexcept;

  /// Reports job `index`, finished: through the completion queue, or by taking the role if jobs
  /// coordinate and it is free; returns a job for this thread to run next, or `InFlight::free_slot`.
  /// The caller must not touch `this` afterwards unless it got a job to run.
  std::uint32_t report(std::uint32_t index) noexcept {
    Slot& slot = slots_[index];
    if (slot.deferral.load(std::memory_order_relaxed) != not_deferred) {
      slot.deferral.store(not_deferred, std::memory_order_relaxed);
      if (timing_ != Timing::none && slot.ran && !slot.error) {
        try {
          slot.elapsed_nanos = read_timer() - slot.start_nanos;  // until its end, not its return
        } catch (...) {  // a clock that throws: the job keeps the time until process_dataset returned
        }
      }
    }
    if (!jobs_coordinate_) {
      completions_.push(index);  // last touch of `this` by this thread
      return InFlight::free_slot;
    }
    if (!completions_.push_or_take_role(index)) return InFlight::free_slot;  // pushed: last touch
    // This thread holds the role now. It gets back a job to run, which keeps the run (and so
    // `this`) alive, or none, and then must not touch `this` again.
    return coordinate_(*this, index);
  }

  void run_job(Slot& slot, std::uint32_t index) noexcept {
    if (token_.stop_requested()) return;
    try {
      const std::int64_t start = read_timer();
      slot.ran = true;  // only now: a clock that throws above means the job never started
      // `slot.callback` is empty (see `release`), so the job's result is constructed in it, not
      // in a temporary that is then moved in: the move read the bytes the call had just stored
      // in pieces, a stall of its own, and was a twentieth of an inline run of W1.
      std::destroy_at(&slot.callback);
      try {
        if (jobs_defer_) running_job = RunningJob{this, index};
        ::new (static_cast<void*>(&slot.callback))
            CompletionCallback((*process_dataset_)(names_[slot.dataset], slot.submit_count, token_));
        if (jobs_defer_) running_job = RunningJob{};
      } catch (...) {
        if (jobs_defer_) running_job = RunningJob{};
        ::new (static_cast<void*>(&slot.callback)) CompletionCallback();
        throw;
      }
      if (timing_ != Timing::none) {
        slot.start_nanos = start;
        slot.elapsed_nanos = read_timer() - start;
      }
    } catch (...) {
      slot.error = std::current_exception();
    }
  }

  /// Now, in the timer's unit (0 if jobs are not timed).
  std::int64_t read_timer() {
    switch (timing_) {
      case Timing::none: return 0;
      case Timing::ticks: return Ticks::read();
      case Timing::clock: break;
    }
    return timing_clock_->now_nanos();
  }

  /// A job was called a second time: the run ends with a `std::logic_error` (see `Coordinator::run`).
  void executor_broke_contract() noexcept {
    contract_broken_.store(true, std::memory_order_release);
    stop_.request_stop();
  }

  /// Gives the role to the calling thread, which is waiting for it in `wait_for_role` (or will
  /// be). The caller must not touch `this` afterwards unless it has a job in flight.
  void hand_off() noexcept {
    std::lock_guard lock(run_mutex_);
    handed_off_ = true;
    role_changed_.notify_one();
  }

  /// Wakes the calling thread if it waits in `wait_for_role` (on a stop).
  void wake_calling_thread() noexcept {
    std::lock_guard lock(run_mutex_);
    role_changed_.notify_one();
  }

  /// The calling thread waits, blocked, until the role is handed to it, or a stop is requested;
  /// on a stop it takes the role if it is free, else marks it wanted and waits for the holder to
  /// hand it over. Returns holding the role.
  void wait_for_role() {
    std::unique_lock lock(run_mutex_);
    role_changed_.wait(lock, [this] { return handed_off_ || token_.stop_requested(); });
    if (!handed_off_) {
      lock.unlock();
      if (completions_.take_or_want_role()) return;
      lock.lock();
      role_changed_.wait(lock, [this] { return handed_off_; });
    }
    handed_off_ = false;
    completions_.clear_wanted();
  }

 protected:
  const ProcessDataset* process_dataset_;
  std::span<const std::string> names_;
  Clock* timing_clock_;  // the run's clock
  Timing timing_;
  std::vector<Slot> slots_;
  CompletionQueue completions_;
  // For executors that run each job inside `submit` (`runs_jobs_inline()`), the coordinator runs
  // the job itself instead (see `submit_next`): the finished job skips the completion queue and its
  // atomics, and its slot is left here for the coordinator to process next. Set before the first
  // submission.
  bool runs_inline_ = false;
  std::uint32_t finished_inline_ = InFlight::free_slot;
  // Whether workers take the role (see `execute`), and how. Set before the first submission.
  bool jobs_coordinate_ = false;
  bool jobs_defer_ = false;  // the executor `lets_jobs_defer()`: see `defer_job`
  Coordinate coordinate_ = nullptr;
  std::stop_source stop_;
  std::stop_token token_ = stop_.get_token();
  // The hand-over of the role to the calling thread.
  std::mutex run_mutex_;
  std::condition_variable role_changed_;
  bool handed_off_ = false;  // guarded by `run_mutex_`
  std::atomic<bool> contract_broken_{false};
};

/// A job whose end comes after its `process_dataset` returned (see `defer_job`).
class DeferredJob {
 public:
  DeferredJob() = default;
  /// Reports the job finished: the completion callback its `process_dataset` returned is then
  /// processed as any other job's (`elapsed` runs until now). Call exactly once per deferral, on
  /// any thread, before or after `process_dataset` returned. If the executor lets jobs coordinate,
  /// this thread may take the coordinator role here, and run the run's callbacks and jobs, before
  /// it returns.
  void finish() const noexcept { JobContext::finish_deferred(*context_, index_); }

 private:
  friend DeferredJob defer_job();
  DeferredJob(JobContext* context, std::uint32_t index) noexcept : context_(context), index_(index) {}
  JobContext* context_ = nullptr;
  std::uint32_t index_ = 0;
};

/// Called from inside `process_dataset`: the job does not end when `process_dataset` returns, but
/// when the returned handle's `finish()` is called (its slot stays in flight until then). For
/// executors that hand work elsewhere and should not hold a thread while it runs (the MPI
/// scale-out's rank 0). Only in a run whose executor `lets_jobs_defer()`, on the thread of the job,
/// at most once per call of `process_dataset`; otherwise throws `std::logic_error`.
inline DeferredJob defer_job() {
  const RunningJob running = JobContext::defer_running_job();
  if (running.context == nullptr) {
    throw std::logic_error(
        "tasktree: defer_job() called outside a job of a run whose executor lets jobs defer (or twice in one job)");
  }
  return DeferredJob(running.context, running.index);
}

/// One run. `Queue` is the ready queue type (`IndexReadyQueue` or `ErasedReadyQueue`),
/// `Algorithm` the enqueue algorithm (`SimpleEnqueue` or `BarrierEnqueue`).
template <class Queue, class Algorithm>
class Coordinator : private JobContext {
 public:
  Coordinator(const RunConfig& config, Queue& ready, Algorithm& algorithm)
      : JobContext(config.process_dataset, config.trie.datasets(), slot_count(config), &config.clock, timing(config)),
        config_(config),
        ready_(ready),
        algorithm_(algorithm),
        in_flight_datasets_(slots_.size(), InFlight::free_slot) {
    for (std::size_t i = slots_.size(); i-- > 0;) free_slots_[free_count_++] = static_cast<std::uint32_t>(i);
    batch_.reserve(slots_.size());
  }

  /// Runs to the end: returns true if any completion said `fail` or the run stopped with work
  /// left; rethrows the first exception after every in-flight job has returned. Either token
  /// stops the run. `stats` is kept up to date throughout and is final when this returns or throws.
  template <class ExecutorFactory>
  bool run(ExecutorFactory& make_executor, std::stop_token tree_stop, std::stop_token run_stop, RunStats& stats) {
    stats_ = &stats;
    stats = RunStats{.total = config_.trie.dataset_count()};
    // Destroyed right after the drain (joining its threads), so that a late second call of a job is
    // still seen below.
    std::optional<decltype(make_executor())> executor_holder;
    make_executor_counting_cancelled(make_executor, executor_holder);  // may throw: nothing has started yet
    auto& executor = *executor_holder;
    using Executor = std::remove_reference_t<decltype(executor)>;
    const bool pacing = static_cast<bool>(config_.interval_nanos);
    runs_inline_ = runs_jobs_inline(executor);
    jobs_coordinate_ =
        !runs_inline_ && !pacing && !config_.callbacks_on_calling_thread && lets_jobs_coordinate(executor);
    jobs_defer_ = !runs_inline_ && lets_jobs_defer(executor);
    executor_ = &executor;
    coordinate_ = &Coordinator::coordinate_on_worker<Executor>;
    std::stop_callback wake_on_stop(token_, [this]() noexcept {
      completions_.notify_stop();
      wake_calling_thread();
    });
    std::stop_callback forward_tree_stop(std::move(tree_stop), [this]() noexcept { stop_.request_stop(); });
    std::stop_callback forward_run_stop(std::move(run_stop), [this]() noexcept { stop_.request_stop(); });
    std::int64_t next_update = 0;
    guard([&] {
      if (timing_ == Timing::ticks) calibration_.start(config_.clock);  // before any job starts
      config_.log.log(LogLevel::debug, "run started: {} datasets, {} trie nodes, max_workers={}",
                      config_.trie.dataset_count(), config_.trie.size(), config_.max_workers);
      if (config_.observer != nullptr) config_.observer->on_start(stats.total);
      if (config_.journal != nullptr) {
        JournalAccess::begin_run(*config_.journal, config_.trie.datasets(), config_.barrier_name, config_.log,
                                 config_.clock.now_nanos(), resume_);
        journal_open_ = true;
      }
      algorithm_.start(push_ready_);
      complete_resumed();
      if (pacing) next_update = config_.clock.now_nanos();
    });
    if (jobs_coordinate_) {
      // The first submissions, then the role goes to the workers until the run ends or stops.
      static_cast<void>(coordinate(executor, InFlight::free_slot, false));
      wait_for_role();
    } else {
      while (!stop_.stop_requested()) {
        if (finished_inline_ != InFlight::free_slot) {
          process_finished(std::exchange(finished_inline_, InFlight::free_slot));
        } else if (completions_.has_items()) {
          process_completions();
        } else if (!ready_.empty() && in_flight_ < config_.max_workers) {
          if (pacing && !wait_for_pacing(next_update)) continue;
          submit_next(executor, pacing, next_update, nullptr);
        } else if (in_flight_ > 0) {
          completions_.wait();
        } else {
          break;  // nothing available, nothing in flight: done
        }
      }
    }
    if (stop_.stop_requested()) work_left_ = work_left_ || !ready_.empty() || in_flight_ > 0;
    drain();
    executor_holder.reset();
    if (journal_open_) guard([&] { JournalAccess::end_run(*config_.journal); });  // after every job returned
    if (contract_broken_.load(std::memory_order_acquire)) {
      // Wins over any other error: the run's bookkeeping can no longer be trusted.
      error_ = nullptr;
      fail(std::make_exception_ptr(std::logic_error(
          "tasktree: the executor broke its contract: it called a submitted job more than once (each Job must be "
          "called exactly once)")));
    }
    stats.cancelled = stats.total - stats.started - stats.skipped - stats.resumed;
    guard([&] {
      config_.log.log(LogLevel::debug,
                      "run finished: {} started, {} completed, {} failed, {} skipped, {} cancelled{}{}", stats.started,
                      stats.completed, stats.failed, stats.skipped, stats.cancelled,
                      stop_.stop_requested() ? ", stopped" : "", error_ ? ", aborted by an exception" : "");
      if (config_.observer != nullptr) config_.observer->on_finish(stats);
    });
    if (error_) std::rethrow_exception(error_);
    return failed_ || work_left_;
  }

 private:
  /// Jobs are timed for an observer or a journal; with the CPU's counter when the run's clock is
  /// the steady clock and the counter can be trusted (detail/job_timer.hpp).
  static Timing timing(const RunConfig& config) {
    if (config.observer == nullptr && config.journal == nullptr) return Timing::none;
    return config.clock_is_steady && Ticks::usable() ? Timing::ticks : Timing::clock;
  }

  static std::size_t slot_count(const RunConfig& config) {
    return std::max<std::size_t>(1, std::min(config.max_workers, config.trie.dataset_count()));
  }

  /// Creates the run's executor; if that throws, every dataset counts as cancelled.
  template <class ExecutorFactory, class Executor>
  void make_executor_counting_cancelled(ExecutorFactory& make_executor, std::optional<Executor>& executor) {
    try {
      executor.emplace(make_executor());
    } catch (...) {
      stats_->cancelled = stats_->total;
      throw;
    }
  }

  /// Makes the job at `node` available (computes its priority key).
  struct PushReady {
    Coordinator* self;
    void operator()(DatasetTrie::NodeIndex node) const {
      const std::uint32_t dataset = self->config_.trie.dataset(node);
      if (!self->resume_.empty() && self->resume_[dataset] != 0) {
        self->resumed_nodes_.push_back(node);  // completed by `complete_resumed`, not run
        return;
      }
      self->ready_.push(ReadyJob{dataset, node}, self->names_[dataset]);
    }
  };

  /// Completes, without running them, the available datasets that the journal says succeeded
  /// before, and those that this makes available in turn.
  void complete_resumed() {
    while (!resumed_nodes_.empty()) {
      const DatasetTrie::NodeIndex node = resumed_nodes_.back();
      resumed_nodes_.pop_back();
      ++stats_->resumed;
      const std::string_view name = names_[config_.trie.dataset(node)];
      config_.log.log(LogLevel::trace, "resumed: {} (succeeded in an earlier run)", name);
      if (config_.observer != nullptr) config_.observer->on_resume(name);
      algorithm_.complete(node, true, push_ready_, skipped_);
    }
  }

  /// Counts (and reports) the jobs below `node` that will never start because of a skip.
  struct Skipped {
    Coordinator* self;
    void operator()(DatasetTrie::NodeIndex node) const {
      const std::size_t jobs = self->config_.trie.count_jobs_below(node);
      self->stats_->skipped += jobs;
      if (self->config_.observer != nullptr && jobs > 0) {
        self->config_.observer->on_skip(self->config_.trie.path(node), jobs);
      }
    }
  };

  /// Runs `step`; an exception becomes the run's error (if it is the first) and stops the run.
  template <class Step>
  void guard(Step&& step) noexcept {
    try {
      step();
    } catch (...) {
      fail(std::current_exception());
    }
  }

  void fail(std::exception_ptr error) noexcept {
    if (!error_) {
      error_ = std::move(error);
      if (config_.log.enabled(LogLevel::error)) {
        try {
          config_.log.log(LogLevel::error, "run aborted: {}", describe(error_));
        } catch (...) {  // a failing log sink must not hide the real error
        }
      }
    }
    stop_.request_stop();
  }

  /// True if the next submission may happen now; otherwise sleeps until its time, a completion
  /// or a stop (whichever is first) and returns false so the loop re-examines the state.
  bool wait_for_pacing(std::int64_t next_update) {
    bool due = false;
    guard([&] {
      if (config_.clock.now_nanos() >= next_update) {
        due = true;
      } else {
        config_.clock.wait_until(next_update, completions_);
      }
    });
    return due;
  }

  /// The coordinator's work between two jobs, on whichever thread holds the role (see
  /// `JobContext::execute`): processes `finished` (if any) and every other finished job, submits
  /// what became available and gives the role up, or hands it to the calling thread if the run is
  /// over, stopping, or the calling thread wants it. If `keep`, the first job submitted is not
  /// passed to the executor but returned, for this thread to run after giving the role up;
  /// otherwise returns `InFlight::free_slot`.
  template <class Executor>
  std::uint32_t coordinate(Executor& executor, std::uint32_t finished, bool keep) noexcept {
    batch_.clear();
    if (finished != InFlight::free_slot) batch_.push_back(finished);
    completions_.append(batch_);
    std::uint32_t kept = InFlight::free_slot;
    std::int64_t no_pacing = 0;
    while (true) {
      process_batch();
      while (!stop_.stop_requested() && !ready_.empty() && in_flight_ < config_.max_workers) {
        submit_next(executor, false, no_pacing, keep && kept == InFlight::free_slot ? &kept : nullptr);
      }
      // Nothing in flight (and so nothing available): the run is over.
      if (stop_.stop_requested() || in_flight_ == 0) {
        hand_off();
        return kept;
      }
      switch (completions_.release_role()) {
        case CompletionQueue::Release::released: return kept;
        case CompletionQueue::Release::wanted: hand_off(); return kept;
        case CompletionQueue::Release::pushed: completions_.take(batch_); break;
      }
    }
  }

  template <class Executor>
  static std::uint32_t coordinate_on_worker(JobContext& context, std::uint32_t finished) noexcept {
    auto& self = static_cast<Coordinator&>(context);
    return self.coordinate(*static_cast<Executor*>(self.executor_), finished, true);
  }

  /// Submits the best available job; if `kept` is set, the job is not passed to the executor but
  /// its slot stored there, for the calling worker to run.
  template <class Executor>
  void submit_next(Executor& executor, bool pacing, std::int64_t& next_update, std::uint32_t* kept) {
    guard([&] {
      const ReadyJob job = ready_.pop();
      ++submit_count_;
      const std::string_view name = names_[job.dataset];
      if (pacing) next_update = deadline_after(next_update, config_.interval_nanos(next_update, name, submit_count_));
      // Before the job takes a slot: a log sink that throws must not leave a phantom job in flight.
      config_.log.log(LogLevel::trace, "submit #{}: {}", submit_count_, name);
      const std::uint32_t index = free_slots_[free_count_ - 1];
      Slot& slot = slots_[index];
      slot.dataset = job.dataset;
      slot.node = job.node;
      slot.submit_count = submit_count_;
      --free_count_;
      in_flight_datasets_[index] = job.dataset;
      ++in_flight_;
      if (runs_inline_) {
        // What the executor's `submit` would do, without building a `Job` and passing it through
        // memory to an out-of-line call, which cost a fifth of an inline run of W2 (see
        // docs/performance.md), and without the `pending` handshake, which guards against an
        // executor that calls a job twice: no executor is involved here. Never throws.
        run_job(slot, index);
        finished_inline_ = index;
      } else if (kept != nullptr) {
        slot.pending.store(true, std::memory_order_release);
        *kept = index;
      } else {
        slot.pending.store(true, std::memory_order_release);
        try {
          executor.submit(Job(&JobContext::execute, static_cast<JobContext*>(this), index));
        } catch (...) {
          // A `submit` that throws must not have taken the job. If the job was called all the same
          // (it ran inside `submit`, or another thread has it), it reports back like any other:
          // keep its slot in flight. Otherwise it never will, and no later call may run it.
          if (slot.pending.exchange(false, std::memory_order_acq_rel)) {
            --in_flight_;
            release(index);
          }
          throw;
        }
      }
      if (config_.observer != nullptr) config_.observer->on_submit(name, submit_count_);
    });
  }

  /// Processes every finished job found at once, in name order.
  void process_completions() {
    completions_.take(batch_);
    process_batch();
  }

  /// Processes the finished jobs in `batch_`, in name order.
  void process_batch() {
    if (batch_.size() > 1) {
      std::sort(batch_.begin(), batch_.end(),
                [this](std::uint32_t a, std::uint32_t b) { return slots_[a].dataset < slots_[b].dataset; });
    }
    for (const std::uint32_t index : batch_) process_finished(index);
  }

  /// Counts a finished job and, unless the run is stopping, processes its completion; after a
  /// stop only its exception still counts (the drain after a stop uses this too).
  void process_finished(std::uint32_t index) {
    Slot& slot = slots_[index];
    in_flight_datasets_[index] = InFlight::free_slot;
    --in_flight_;
    if (slot.ran) ++stats_->started;
    if (slot.error) {
      fail(slot.error);
    } else if (stop_.stop_requested()) {
      work_left_ = true;  // finished, but its completion will not be processed
    } else {
      guard([&] { complete(slot); });
    }
    release(index);
  }

  void complete(Slot& slot) {
    const std::string_view name = names_[slot.dataset];
    if (!slot.callback) {
      throw std::logic_error(
          fmt::format("tasktree: process_dataset returned an empty CompletionCallback for dataset {:?}", name));
    }
    InFlight in_flight(in_flight_datasets_, in_flight_, names_, &stop_);
    // Called in place; `release` destroys it once the slot is done with (even if this throws).
    const CompletionCallbackResult result = slot.callback(in_flight);
    // Counted before anything else can throw: the callback has run, so the job has completed.
    ++stats_->completed;
    ++(result.fail ? stats_->failed : stats_->succeeded);
    failed_ = failed_ || result.fail;
    config_.log.log(LogLevel::trace, "completed: {} (no_skip={}, fail={})", name, result.no_skip, result.fail);
    if (timing_ == Timing::ticks) calibration_.convert(config_.clock, slot.start_nanos, slot.elapsed_nanos);
    if (config_.journal != nullptr) {
      JournalAccess::record(*config_.journal, slot.dataset, result.no_skip, result.fail, slot.start_nanos,
                            slot.elapsed_nanos);
    }
    if (config_.observer != nullptr) {
      config_.observer->on_complete(name, std::chrono::nanoseconds(slot.elapsed_nanos), result);
    }
    algorithm_.complete(slot.node, result.no_skip, push_ready_, skipped_);
    if (!resumed_nodes_.empty()) complete_resumed();
  }

  /// Waits for every job still in flight; their completions are not processed, but their
  /// exceptions still count.
  void drain() {
    if (in_flight_ == 0) return;
    stop_.request_stop();
    while (in_flight_ > 0) {
      if (finished_inline_ != InFlight::free_slot) {
        process_finished(std::exchange(finished_inline_, InFlight::free_slot));
      } else {
        completions_.wait_for_completion();
        process_completions();
      }
    }
  }

  void release(std::uint32_t index) noexcept {
    Slot& slot = slots_[index];
    slot.callback.reset();
    if (slot.error) slot.error = nullptr;  // the exception_ptr's destructor is not inline
    slot.ran = false;
    slot.elapsed_nanos = 0;
    in_flight_datasets_[index] = InFlight::free_slot;
    free_slots_[free_count_++] = index;
  }

  const RunConfig& config_;
  void* executor_ = nullptr;  // the run's executor, for `coordinate_on_worker`
  Queue& ready_;
  Algorithm& algorithm_;
  PushReady push_ready_{this};
  Skipped skipped_{this};
  RunStats* stats_ = nullptr;
  std::vector<std::uint32_t> in_flight_datasets_;  // per slot: dataset index, or free (for `InFlight`)
  // A stack of the free slots: its first `free_count_` entries (a `std::vector`'s push_back was a
  // call that GCC did not inline, 2% of an inline run).
  std::vector<std::uint32_t> free_slots_ = std::vector<std::uint32_t>(slots_.size());
  std::size_t free_count_ = 0;
  std::vector<std::uint32_t> batch_;
  std::size_t in_flight_ = 0;
  std::int64_t submit_count_ = 0;
  std::exception_ptr error_;
  bool failed_ = false;
  bool work_left_ = false;
  std::vector<char> resume_;                         // per dataset: the journal says it succeeded before
  std::vector<DatasetTrie::NodeIndex> resumed_nodes_;  // available, to complete without running
  bool journal_open_ = false;                         // `begin_run` succeeded: `end_run` is due
  TickCalibration calibration_;                       // if jobs are timed with the CPU's counter
};

}  // namespace tasktree::detail
