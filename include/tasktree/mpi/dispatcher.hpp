#pragma once
/// @file mpi/dispatcher.hpp
/// @brief Rank 0's side of an MPI run: the job stubs that hand requests to the message loop and wait
/// for replies, and the loop that sends each request to the least loaded worker rank (of its host,
/// for a placed job), watches that every worker rank is still there, and sends the jobs of a rank it
/// lost to the others.

#include <tasktree/detail/coordinator.hpp>
#include <tasktree/log.hpp>
#include <tasktree/mpi/placement.hpp>
#include <tasktree/mpi/transport.hpp>
#include <tasktree/mpi/wire.hpp>
#include <tasktree/thread_pool.hpp>

#include <fmt/format.h>

#include <mpi.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <iterator>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

namespace tasktree::detail {

/// How rank 0 tells that a worker rank is gone.
struct Liveness {
  /// How often a worker that sent nothing else sends a heartbeat.
  std::chrono::nanoseconds heartbeat{std::chrono::seconds(1)};
  /// A worker silent this long is lost; zero: only an MPI error loses a rank.
  std::chrono::nanoseconds timeout{std::chrono::seconds(30)};
};

/// False on the threads of rank 0 that must not run a job themselves (the message loop's, and one
/// that hands a job on in `RankZeroExecutor::submit`): a job stub there always sends its job away.
inline thread_local bool rank0_may_block = true;
/// Jobs that took less than this on rank 0's own threads (on average, lately) are not worth a
/// message: while rank 0's jobs are that short, `RankZeroExecutor` queues every job for rank 0's
/// threads instead of sending some to worker ranks, whose round trip costs more (tens of
/// microseconds on one idle host, milliseconds on a busy one), so that `-np 2` is never slower
/// than `-np 1`.
inline constexpr std::chrono::microseconds worth_sending{20};
/// True on a thread of rank 0's own from the start of a job that `RankZeroExecutor` queued there
/// (`Dispatcher::queue_here`) until the job's stub runs.
inline thread_local bool rank0_job_was_queued = false;
class Dispatcher;
/// On a thread of rank 0's own that ran a job of a core-level run: the dispatcher whose slot it
/// holds until it goes back to wait for work (it may be given the next job meanwhile, when it takes
/// the coordinator role), so that the jobs submitted meanwhile see that slot taken.
inline thread_local Dispatcher* rank0_slot_held = nullptr;

/// Rank 0's side of the transport: job stubs `call` it from the coordinator's worker threads and
/// wait, or `post` a job and return (a deferred job, see `defer_job`); the calling thread runs
/// `pump`, the message loop that sends requests and delivers replies.
class Dispatcher {
 public:
  /// One job on its way to a worker rank and back.
  struct Call {
    const mpi_wire::Request* request = nullptr;
    int host = -1;  // where it is placed (see `PlacementTable`); -1: anywhere
    mpi_wire::Reply reply{};
    bool done = false;         // guarded by `mutex_`
    bool here = false;         // guarded by `mutex_`: done, and rank 0 must run it
    bool cancel = false;       // guarded by `mutex_`: its stop token was signalled
    bool cancel_sent = false;  // the message loop's own, like the two below
    std::uint64_t id = 0;
    int rank = 0;
    std::condition_variable replied{};
    // A posted call's (see `post`): its request, its job, and the run's stop token (for a run on
    // rank 0).
    bool posted = false;
    mpi_wire::Request own_request{};
    DeferredJob job{};
    std::stop_token stop{};
    Dispatcher* owner = nullptr;
  };

  /// Jobs run on worker ranks 1..size-1 of `comm`, which run on `hosts` (by rank); `log` hears of
  /// lost ranks (its sink must take a lock: the coordinator logs too; see `serialize_sink`).
  Dispatcher(MPI_Comm comm, int size, Liveness liveness, std::vector<std::string> hosts, Logger log)
      : comm_(comm),
        size_(size),
        liveness_(liveness),
        hosts_(std::move(hosts)),
        log_(std::move(log)),
        load_(static_cast<std::size_t>(size), 0),
        alive_(static_cast<std::size_t>(size), true),
        last_heard_(static_cast<std::size_t>(size)),
        outgoing_(static_cast<std::size_t>(size)) {
    for (int rank = 1; rank < size; ++rank) by_load_.emplace(0, rank);
  }
  /// A single rank: jobs run in this process, by `local`, on the thread that calls; `hosts` names
  /// its host.
  Dispatcher(const ExecuteRequest& local, std::vector<std::string> hosts) : local_(&local), hosts_(std::move(hosts)) {}

  Dispatcher(const Dispatcher&) = delete;
  Dispatcher& operator=(const Dispatcher&) = delete;
  ~Dispatcher() = default;

  /// Runs `request` on a worker rank and returns its reply; blocks until it arrives. A stop
  /// request on `stop` reaches the worker that runs this request (its job's stop token is
  /// signalled), so `stop` may be the run's token or one attempt's. Any thread.
  mpi_wire::Reply call(const mpi_wire::Request& request, const std::stop_token& stop) {
    if (local_ != nullptr) return (*local_)(request, stop);
    const int host = placement_.host_of(request.dataset);  // -1: anywhere, always without placements
    if (here_ != nullptr && (host < 0 || host == placement_.host_of_rank(0)) && take_slot_here(false)) {
      return run_here(request, stop);
    }
    Call call{.request = &request, .host = host};
    std::stop_callback forward(stop, [this, &call]() noexcept { note_cancel(call); });
    std::unique_lock lock(mutex_);
    new_calls_.push_back(&call);
    wake_.notify_one();
    call.replied.wait(lock, [&call] { return call.done; });
    if (call.here) {  // placed on rank 0's host, which has no worker rank left
      lock.unlock();
      take_slot_here(true);
      return run_here(request, stop);
    }
    return std::move(call.reply);
  }

  /// True if this is a single rank's dispatcher, which runs every job in this process.
  [[nodiscard]] bool alone() const noexcept { return local_ != nullptr; }

  /// If this thread may run a job (`rank0_may_block`: one of rank 0's own threads, which runs one
  /// job at a time) and `request` may run on rank 0 (its placement): runs it here and returns its
  /// reply. Otherwise returns nothing, and the job is for `post`.
  std::optional<mpi_wire::Reply> try_run_here(const mpi_wire::Request& request, const std::stop_token& stop) {
    if (std::exchange(rank0_job_was_queued, false)) start_queued_here();
    if (!rank0_may_block || here_ == nullptr) return std::nullopt;
    const int host = placement_.host_of(request.dataset);
    if (host >= 0 && host != placement_.host_of_rank(0)) return std::nullopt;
    if (rank0_slot_held == nullptr) {
      std::lock_guard lock(mutex_);
      ++running_here_;
      rank0_slot_held = this;  // given back by `release_held_slot`
    }
    const auto start = std::chrono::steady_clock::now();
    mpi_wire::Reply reply = run_here(request, stop, false);
    // How long rank 0's jobs take, lately (for `queue_here`): a moving average over about eight.
    const std::int64_t took =
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start).count();
    const std::int64_t mean = local_job_nanos_.load(std::memory_order_relaxed);
    local_job_nanos_.store(mean == unmeasured ? took : mean + (took - mean) / 8, std::memory_order_relaxed);
    return reply;
  }

  /// True if a job should go to rank 0's threads (`RankZeroExecutor`): one of its slots is free,
  /// not counting the jobs queued for them already, or its jobs are too short to be worth sending
  /// (`worth_sending`). Counts the job as queued; `start_queued_here` ends that.
  [[nodiscard]] bool queue_here() {
    const bool short_jobs =
        local_job_nanos_.load(std::memory_order_relaxed) < std::chrono::nanoseconds(worth_sending).count();
    std::lock_guard lock(mutex_);
    if (!short_jobs && running_here_ + queued_here_ >= slots_here_) return false;
    ++queued_here_;
    return true;
  }

  /// A job queued by `queue_here` started on one of rank 0's threads (or was not queued after all).
  void start_queued_here() noexcept {
    std::lock_guard lock(mutex_);
    --queued_here_;
  }

  /// Gives back the slot of rank 0 that this thread holds, if any (see `rank0_slot_held`): a thread
  /// of rank 0's own, done with its job and with whatever job it was given after it.
  static void release_held_slot() noexcept {
    if (Dispatcher* const held = std::exchange(rank0_slot_held, nullptr)) held->release_slot_here();
  }

  /// Gives back one of rank 0's slots.
  void release_slot_here() noexcept {
    std::lock_guard lock(mutex_);
    --running_here_;
    slot_freed_.notify_one();
  }

  /// Sends `call` (`own_request`, `stop` and the deferred `job` filled in) to a worker rank
  /// without waiting: once its reply is in `call.reply`, `call.job.finish()` is called,
  /// on the message loop's thread (or on one of `pool`'s, if it must run on rank 0 after all).
  /// A stop of `call.stop`, the run's token, cancels every posted call. `call` must live until
  /// then; it is not touched after `finish`. Any thread. Terminates if out of memory: a job that
  /// deferred its end must end.
  void post(Call& call) noexcept {
    call.posted = true;
    call.owner = this;
    call.request = &call.own_request;
    call.host = placement_.host_of(call.request->dataset);
    if (!watching_stop_.exchange(true)) run_stop_watch_.emplace(call.stop, CancelPosted{this});
    std::lock_guard lock(mutex_);
    new_calls_.push_back(&call);
    wake_.notify_one();
  }

  /// Where a posted call that must run on rank 0 runs (see `post`); null: none. Before the first
  /// call and after the last.
  void local_pool(ThreadPoolExecutor* pool) noexcept { pool_ = pool; }

  /// Called once the coordinator has returned (every job stub has returned before).
  void coordinator_finished() noexcept {
    std::lock_guard lock(mutex_);
    coordinator_finished_ = true;
    wake_.notify_one();
  }

  /// The message loop, on the thread that made the run's other MPI calls; returns once the
  /// coordinator has finished. Aborts the MPI job if the loop itself fails.
  void pump() noexcept {
    // A job that the coordinator gives this thread (it may take the role when a reply arrives) is
    // sent away, not run here.
    const bool may_block = std::exchange(rank0_may_block, false);
    try {
      pump_until_finished();
    } catch (...) {
      abort_mpi_job(comm_, 0, std::current_exception());
    }
    rank0_may_block = may_block;
  }

  /// Tells every worker rank how the run ended, and waits until every message to a rank not lost
  /// left. A lost rank is told too, in case it was only silent: it then drops what it still runs
  /// and returns; its message is short, so that MPI sends it without waiting for the receiver.
  void shutdown(const mpi_wire::Shutdown& result) noexcept {
    try {
      const std::string bytes = mpi_wire::encode(result);
      mpi_wire::Shutdown lost = result;
      lost.lost = true;
      if (lost.message.size() > 200) lost.message.resize(200);
      if (lost.lost_ranks.size() > 64) lost.lost_ranks.resize(64);
      const std::string lost_bytes = mpi_wire::encode(lost);
      for (int rank = 1; rank < size_; ++rank) {
        if (alive_[static_cast<std::size_t>(rank)]) {
          sends_.send(comm_, rank, mpi_wire::shutdown, bytes);
        } else {
          sends_.send(comm_, rank, mpi_wire::shutdown, lost_bytes);
          sends_.abandon(rank);
        }
      }
      sends_.wait();
    } catch (...) {
      abort_mpi_job(comm_, 0, std::current_exception());
    }
  }

  /// Lets rank 0 run up to `slots` jobs itself with `execute`, on the threads that call `call`: a
  /// call takes a free slot before it would go to a worker rank. Before the first call.
  void run_here(const ExecuteRequest& execute, int slots) noexcept {
    here_ = slots > 0 ? &execute : nullptr;
    slots_here_ = slots;
  }

  /// Keeps up to `ahead` more jobs than it runs on each worker rank's slots: `share` (below) and
  /// the worker's slots times `ahead + 1` for placed jobs. Before the first call.
  void queue_ahead(int ahead) noexcept { ahead_ = std::max(ahead, 0); }

  /// Sends each job that `placement` places to a rank of its host: rank 0 if it is on that host and
  /// has a free slot (see `run_here`), else the least loaded live worker rank there that runs fewer
  /// than `share` jobs; while every one runs `share`, the job waits for one of them, and jobs to
  /// other hosts or to anywhere go on meanwhile. When the host has no live worker rank left, rank 0
  /// runs the job if it is on that host and runs jobs, else the job fails. Before the first call.
  void place(PlacementTable placement, int share) {
    placement_ = std::move(placement);
    share_ = std::max(share, 1) * (ahead_ + 1);
    waiting_.assign(placement_.empty() ? 0 : placement_.hosts(), {});
  }

  /// Makes a signal caught by `stop_on_signals`, on this rank or a worker, request a stop of
  /// `stop`, the run's stop source. Before `pump`.
  void stop_on_signal(std::stop_source& stop) noexcept { run_stop_ = &stop; }

  /// The host of `rank`, as it said at the start of the run; `"?"` for a rank that is not one.
  /// Any thread.
  [[nodiscard]] std::string_view host(int rank) const noexcept {
    const auto r = static_cast<std::size_t>(rank);
    return r < hosts_.size() ? std::string_view(hosts_[r]) : std::string_view("?");
  }

  /// The worker ranks lost during the run, in the order they were lost. After `pump`.
  [[nodiscard]] const std::vector<int>& lost_ranks() const noexcept { return lost_; }

 private:
  /// Takes one of rank 0's slots if one is free, or, with `wait`, once one is.
  bool take_slot_here(bool wait) {
    std::unique_lock lock(mutex_);
    if (wait) slot_freed_.wait(lock, [this] { return running_here_ < slots_here_; });
    if (running_here_ >= slots_here_) return false;
    ++running_here_;
    return true;
  }

  /// Runs `request` on rank 0, on the calling thread, in a slot taken by `take_slot_here` (given
  /// back when it returns, if `release`) or held by this thread (`rank0_slot_held`).
  mpi_wire::Reply run_here(const mpi_wire::Request& request, const std::stop_token& stop, bool release = true) {
    const SlotHere slot{*this, release};  // given back however the job ends, if `release`
    mpi_wire::Reply reply = (*here_)(request, stop);
    reply.rank = 0;
    return reply;
  }

  /// One of rank 0's slots, taken by `take_slot_here`, given back when this ends if `release`.
  struct SlotHere {
    SlotHere(Dispatcher& owner, bool release_at_end) noexcept : dispatcher(owner), release(release_at_end) {}
    SlotHere(const SlotHere&) = delete;
    SlotHere& operator=(const SlotHere&) = delete;
    ~SlotHere() {
      if (release) dispatcher.release_slot_here();
    }
    Dispatcher& dispatcher;
    bool release;
  };

  /// Cancels every posted call (see `post`): the run's stop.
  struct CancelPosted {
    Dispatcher* self;
    void operator()() const noexcept {
      std::lock_guard lock(self->mutex_);
      self->posted_cancelled_ = true;
      self->cancel_pending_ = true;
      self->wake_.notify_one();
    }
  };

  /// Runs a posted call that must run on rank 0 (`no_rank_left_on_host`), on a thread of `pool_`.
  /// The thread holds the slot it waited for (`rank0_slot_held`) until it goes back to wait for
  /// work: finishing the call may give it the next job to run, in that slot.
  static void run_posted_here(void* context, std::uint32_t) noexcept {
    auto& call = *static_cast<Call*>(context);
    Dispatcher& self = *call.owner;
    self.take_slot_here(true);
    rank0_slot_held = &self;
    mpi_wire::Reply reply;
    try {
      reply = self.run_here(*call.request, call.stop, false);
    } catch (...) {
      reply = mpi_wire::Reply{.kind = mpi_wire::Reply::threw, .text = describe(std::current_exception())};
    }
    self.finish(call, std::move(reply));
    release_held_slot();
  }

  /// True if a cancel must reach the worker that runs `call`: its stop token was signalled, or it
  /// was posted and the run stopped. Under `mutex_`.
  [[nodiscard]] bool wants_cancel(const Call& call) const noexcept {
    return call.cancel || (call.posted && posted_cancelled_);
  }

  void note_cancel(Call& call) noexcept {
    std::lock_guard lock(mutex_);
    call.cancel = true;
    cancel_pending_ = true;
    wake_.notify_one();
  }

  /// Sends a cancel for every outstanding call whose stop token was signalled. Only outstanding
  /// calls are looked at: a call leaves `outstanding_` when its reply arrives, before its stub may
  /// return and destroy it.
  void send_cancels() {
    flush_requests();  // a worker must see a job's request before its cancel
    cancels_.clear();
    {
      std::lock_guard lock(mutex_);
      for (const auto& [id, call] : outstanding_) {
        if (wants_cancel(*call) && !call->cancel_sent) {
          call->cancel_sent = true;
          cancels_.emplace_back(id, call->rank);
        }
      }
    }
    for (const auto& [id, rank] : cancels_) sends_.send(comm_, rank, mpi_wire::cancel, mpi_wire::encode_cancel(id));
  }

  void pump_until_finished() {
    std::vector<Call*> calls;
    PollBackoff backoff;
    const bool watch = liveness_.timeout > std::chrono::nanoseconds(0);
    auto next_check = std::chrono::steady_clock::now();
    std::fill(last_heard_.begin(), last_heard_.end(), next_check);
    while (true) {
      const auto iteration_start = std::chrono::steady_clock::now();
      bool cancel = false;
      bool finished = false;
      {
        std::lock_guard lock(mutex_);
        calls.swap(new_calls_);
        // Posted calls that come after the run's stop are cancelled as they go out.
        cancel = std::exchange(cancel_pending_, false) || (posted_cancelled_ && !calls.empty());
        finished = coordinator_finished_;
      }
      bool busy = !calls.empty() || cancel;
      for (Call* call : calls) dispatch(*call);
      calls.clear();
      flush_requests();
      if (cancel) send_cancels();
      busy = receive_messages() || busy;
      flush_requests();  // what replies made available, and what went to other ranks in `lose`
      if (const int failed = sends_.test(); failed > 0) lose(failed, "MPI could not send to it");
      if (const int signal = caught_stop_signal.load(std::memory_order_relaxed); signal != 0) stop_by_signal(signal, 0);
      if (watch) {
        const auto now = std::chrono::steady_clock::now();
        if (now - iteration_start > liveness_.heartbeat) {
          // This thread was away (a completion callback ran here, see `post`): what the workers
          // sent meanwhile may not all have been read yet. Read it before judging anyone silent.
          next_check = now + liveness_.heartbeat;
        } else if (now >= next_check) {
          next_check = now + liveness_.heartbeat;
          check_silence(now);
        }
      }
      // The coordinator finishes only after every stub returned, i.e. got its reply.
      if (finished) return;
      if (busy) {
        backoff.reset();
        continue;
      }
      std::unique_lock lock(mutex_);
      const auto local_event = [this] { return !new_calls_.empty() || cancel_pending_ || coordinator_finished_; };
      if (outstanding_.empty() && sends_.empty()) {
        // Only heartbeats and stops can arrive; read them often enough that a quiet rank is not
        // taken for a lost one, and a signal stops the run soon.
        auto nap = std::chrono::nanoseconds::max();
        if (watch) nap = liveness_.heartbeat;
        if (stop_signals_installed.load(std::memory_order_relaxed))
          nap = std::min<std::chrono::nanoseconds>(nap, signal_poll_cap);
        if (nap == std::chrono::nanoseconds::max()) {
          wake_.wait(lock, local_event);
        } else {
          wake_.wait_for(lock, nap, local_event);
        }
      } else if (const auto nap = backoff.next(reply_poll_cap); nap > 0us) {
        wake_.wait_for(lock, nap, local_event);
      } else {
        lock.unlock();
        std::this_thread::yield();
      }
    }
  }

  /// Loses every worker rank not heard from within the timeout.
  void check_silence(std::chrono::steady_clock::time_point now) {
    for (int rank = 1; rank < size_; ++rank) {
      const auto silent = now - last_heard_[static_cast<std::size_t>(rank)];
      if (alive_[static_cast<std::size_t>(rank)] && silent > liveness_.timeout) {
        lose(rank, fmt::format("silent for {:.1f} s, past the heartbeat timeout of {:.1f} s",
                               std::chrono::duration<double>(silent).count(),
                               std::chrono::duration<double>(liveness_.timeout).count()));
      }
    }
  }

  /// Marks `rank` lost: it gets no more jobs, and the jobs it had are sent to the others (or fail,
  /// if no worker rank is left). A reply it still sends is ignored.
  void lose(int rank, const std::string& why) {
    const auto r = static_cast<std::size_t>(rank);
    if (!alive_[r]) return;
    alive_[r] = false;
    lost_.push_back(rank);
    by_load_.erase({load_[r], rank});
    load_[r] = 0;
    outgoing_[r].clear();  // its jobs are in `outstanding_`, sent again below
    sends_.abandon(rank);
    std::vector<Call*> orphans;
    for (auto it = outstanding_.begin(); it != outstanding_.end();) {
      if (it->second->rank == rank) {
        orphans.push_back(it->second);
        it = outstanding_.erase(it);
      } else {
        ++it;
      }
    }
    std::sort(orphans.begin(), orphans.end(), [](const Call* a, const Call* b) { return a->id < b->id; });
    std::string names;
    for (const Call* call : orphans) {
      fmt::format_to(std::back_inserter(names), "{}{:?}", names.empty() ? "" : ", ", call->request->dataset);
    }
    const bool any_left = !by_load_.empty();
    note(LogLevel::error,
         fmt::format("tasktree: worker rank {} on host {} lost ({}); {}", rank, host(rank), why,
                     orphans.empty() ? std::string("it was running no job")
                     : any_left
                         ? fmt::format("running its {} job(s) again on other ranks: {}", orphans.size(), names)
                         : fmt::format("no worker rank is left to run its {} job(s): {}", orphans.size(), names)));
    bool cancel = false;
    for (Call* call : orphans) {
      if (!any_left && call->host < 0) {
        finish(*call, mpi_wire::Reply{.kind = mpi_wire::Reply::threw,
                                      .text = fmt::format("tasktree: {:?} was running on worker rank {} on host {}, "
                                                          "which was lost ({}), and no worker rank is left",
                                                          call->request->dataset, rank, host(rank), why),
                                      .rank = rank});
        continue;
      }
      call->cancel_sent = false;
      {
        // Read before `dispatch`, which may finish the call (its stub may then destroy it); a
        // cancel after this read finds it in `outstanding_` as any other.
        std::lock_guard lock(mutex_);
        cancel = cancel || wants_cancel(*call);
      }
      dispatch(*call);
    }
    if (cancel) send_cancels();
    // Jobs that wait for this rank's host may have no rank left to wait for.
    if (waiting_count_ > 0) start_waiting(placement_.host_of_rank(rank));
  }

  /// A signal caught on `rank` stops the run (once).
  void stop_by_signal(int signal, int rank) {
    if (run_stop_ == nullptr || signal_stopped_) return;
    signal_stopped_ = true;
    note(LogLevel::warning, fmt::format("tasktree: rank {} on host {} caught {}: stopping the run", rank, host(rank),
                                        signal_name(signal)));
    run_stop_->request_stop();  // no lock held: the run's stop callbacks take ours
  }

  /// Tells the log; a sink that throws does not end the message loop.
  void note(LogLevel level, const std::string& text) noexcept {
    try {
      if (log_.enabled(level)) log_.sink(level, text);
    } catch (...) {
    }
  }

  /// Sends `call`'s request to the least loaded worker rank (the lowest such rank); fails the call
  /// if every worker rank was lost. A placed call goes to its host (`dispatch_placed`).
  void dispatch(Call& call) {
    if (call.host >= 0) {
      dispatch_placed(call);
      return;
    }
    if (by_load_.empty()) {
      finish(call, mpi_wire::Reply{.kind = mpi_wire::Reply::threw,
                                   .text = fmt::format("tasktree: {:?} cannot run: every worker rank was lost",
                                                       call.request->dataset)});
      return;
    }
    send_to(by_load_.begin()->second, call);
  }

  /// Queues `call`'s request for worker rank `rank` (`flush_requests` sends it) and counts it
  /// there. A failed send loses the rank then, which sends its jobs elsewhere.
  void send_to(int rank, Call& call) {
    mpi_wire::Request request = *call.request;
    request.id = next_id_++;
    outgoing_[static_cast<std::size_t>(rank)].push_back(mpi_wire::encode(request));
    const int load = load_[static_cast<std::size_t>(rank)];
    by_load_.erase({load, rank});
    by_load_.emplace(load + 1, rank);
    load_[static_cast<std::size_t>(rank)] = load + 1;
    call.id = request.id;
    call.rank = rank;
    outstanding_.emplace(request.id, &call);
  }

  /// Sends the requests that `send_to` queued, one batch per rank; a rank that MPI cannot send to
  /// is lost, and its jobs go to the others (and are sent here too).
  void flush_requests() {
    bool again = true;
    while (again) {
      again = false;
      for (int rank = 1; rank < size_; ++rank) {
        std::vector<std::string>& queued = outgoing_[static_cast<std::size_t>(rank)];
        if (queued.empty()) continue;
        if (!sends_.send_batches(comm_, rank, mpi_wire::request, queued)) {
          lose(rank, "MPI could not send to it");
          again = true;
        }
      }
    }
  }

  /// The least loaded live worker rank on `host` (the lowest such rank), or -1 if none is left.
  [[nodiscard]] int least_loaded_on(int host) const {
    int least = -1;
    for (const int rank : placement_.worker_ranks(host)) {
      const auto r = static_cast<std::size_t>(rank);
      if (alive_[r] && (least < 0 || load_[r] < load_[static_cast<std::size_t>(least)])) least = rank;
    }
    return least;
  }

  /// Sends a placed call to the least loaded live worker rank of its host, or queues it while every
  /// one runs its share; with no live worker rank there, hands it to rank 0 if rank 0 is on that
  /// host and runs jobs, else fails it.
  void dispatch_placed(Call& call) {
    const int rank = least_loaded_on(call.host);
    if (rank < 0) {
      no_rank_left_on_host(call);
    } else if (load_[static_cast<std::size_t>(rank)] >= share_) {
      waiting_[static_cast<std::size_t>(call.host)].push_back(&call);
      ++waiting_count_;
    } else {
      send_to(rank, call);
    }
  }

  /// Sends the calls that wait for `host` while one of its ranks runs less than its share, and
  /// settles them all once it has no live worker rank (see `dispatch_placed`).
  void start_waiting(int host) {
    std::deque<Call*>& queue = waiting_[static_cast<std::size_t>(host)];
    bool cancel = false;
    while (!queue.empty()) {
      const int rank = least_loaded_on(host);
      if (rank >= 0 && load_[static_cast<std::size_t>(rank)] >= share_) break;
      Call* call = queue.front();
      queue.pop_front();
      --waiting_count_;
      {
        std::lock_guard lock(mutex_);  // before dispatching: see `lose`
        // Stopped while it waited: the worker must hear of it.
        cancel = cancel || wants_cancel(*call);
      }
      dispatch_placed(*call);
    }
    if (cancel) send_cancels();
  }

  /// A placed call whose host has no live worker rank: rank 0 runs it if it is a rank of that host
  /// that runs jobs; otherwise it fails, as a job failure (the policy layer applies `skip_on_error`;
  /// a retry could only fail the same way).
  void no_rank_left_on_host(Call& call) {
    if (here_ != nullptr && call.host == placement_.host_of_rank(0)) {
      if (call.posted) {  // on a thread of rank 0's own, which may wait for a slot
        pool_->submit(Job(&Dispatcher::run_posted_here, &call, 0));
        return;
      }
      std::lock_guard lock(mutex_);
      call.here = true;
      call.done = true;
      call.replied.notify_one();
      return;
    }
    int last_lost = 0;  // the host's rank lost last: where the job would have run
    for (auto it = lost_.rbegin(); it != lost_.rend(); ++it) {
      if (placement_.host_of_rank(*it) == call.host) {
        last_lost = *it;
        break;
      }
    }
    finish(call, mpi_wire::Reply{.kind = mpi_wire::Reply::threw,
                                 .job_failure = true,
                                 .text = fmt::format("tasktree: {:?} is placed on host {}, and every rank there was "
                                                     "lost, so it cannot run",
                                                     call.request->dataset, placement_.host_name(call.host)),
                                 .rank = last_lost});
  }

  /// Hands `reply` to the stub that waits for it, or finishes the posted call's job (which may run
  /// the coordinator on this thread; `call` may be gone when this returns).
  void finish(Call& call, mpi_wire::Reply reply) {
    if (call.posted) {
      call.reply = std::move(reply);
      call.job.finish();
      return;
    }
    std::lock_guard lock(mutex_);
    call.reply = std::move(reply);
    call.done = true;
    call.replied.notify_one();  // under the lock: the stub destroys `call` once it sees `done`
  }

  /// Reads every message that has arrived: delivers replies, notes heartbeats; true if there was
  /// one. What a lost rank still sends is dropped.
  bool receive_messages() {
    bool any = false;
    MPI_Status status;
    while (receive(comm_, MPI_ANY_SOURCE, MPI_ANY_TAG, bytes_, status)) {
      any = true;
      const int rank = status.MPI_SOURCE;
      const auto r = static_cast<std::size_t>(rank);
      if (rank <= 0 || rank >= size_ || !alive_[r]) continue;
      last_heard_[r] = std::chrono::steady_clock::now();
      if (status.MPI_TAG == mpi_wire::heartbeat) continue;
      if (status.MPI_TAG == mpi_wire::stop) {
        stop_by_signal(mpi_wire::decode_signal(bytes_), rank);
        continue;
      }
      if (status.MPI_TAG != mpi_wire::outcome) {
        throw std::runtime_error(
            fmt::format("tasktree: rank {} sent an unexpected MPI message tag {}", rank, status.MPI_TAG));
      }
      // Views into `bytes_`, which `finish` may not overwrite: it may run the coordinator, which
      // only queues new calls.
      for (const std::string_view item : mpi_wire::decode_batch(bytes_)) {
        if (!alive_[r]) break;  // lost meanwhile (a send to it failed): the rest is dropped
        mpi_wire::Reply reply = mpi_wire::decode_reply(item, rank);
        const auto it = outstanding_.find(reply.id);
        if (it == outstanding_.end()) {
          throw std::runtime_error(fmt::format("tasktree: rank {} replied to unknown job {}", rank, reply.id));
        }
        Call* call = it->second;
        outstanding_.erase(it);
        int& load = load_[r];
        by_load_.erase({load, rank});
        by_load_.emplace(--load, rank);
        finish(*call, std::move(reply));
        if (waiting_count_ > 0) start_waiting(placement_.host_of_rank(rank));
      }
    }
    return any;
  }

  const ExecuteRequest* local_ = nullptr;
  MPI_Comm comm_ = MPI_COMM_NULL;
  int size_ = 1;
  Liveness liveness_{};
  std::vector<std::string> hosts_;
  Logger log_;

  // Shared with the job stubs and the coordinator, guarded by `mutex_`.
  std::mutex mutex_;
  std::condition_variable wake_;  // the message loop sleeps on it
  std::vector<Call*> new_calls_;
  bool cancel_pending_ = false;  // some call's stop token was signalled since the loop last looked
  bool coordinator_finished_ = false;
  int running_here_ = 0;                // jobs rank 0 runs itself
  int queued_here_ = 0;                 // jobs queued for rank 0's threads (`queue_here`)
  std::condition_variable slot_freed_;  // a call that must run on rank 0 waits on it

  bool posted_cancelled_ = false;         // the run's stop cancelled every posted call
  const ExecuteRequest* here_ = nullptr;  // rank 0 runs jobs too (see `run_here`)
  int slots_here_ = 0;
  ThreadPoolExecutor* pool_ = nullptr;  // see `local_pool`
  // The mean time of rank 0's own jobs lately (`run_here`); until one ran, long enough to send.
  static constexpr std::int64_t unmeasured = std::numeric_limits<std::int64_t>::max();
  std::atomic<std::int64_t> local_job_nanos_{unmeasured};
  int ahead_ = 0;  // see `queue_ahead`
  std::atomic<bool> watching_stop_{false};
  std::optional<std::stop_callback<CancelPosted>> run_stop_watch_;

  // The message loop's own.
  std::unordered_map<std::uint64_t, Call*> outstanding_;
  std::uint64_t next_id_ = 1;
  std::vector<int> load_;                                          // per rank: jobs out
  std::set<std::pair<int, int>> by_load_;                          // {load, rank} of every worker rank not lost
  std::vector<bool> alive_;                                        // per rank: not lost
  std::vector<std::chrono::steady_clock::time_point> last_heard_;  // per rank
  std::vector<int> lost_;
  PlacementTable placement_;                // empty: nothing placed
  int share_ = 1;                           // the most placed jobs a worker rank runs at once
  std::vector<std::deque<Call*>> waiting_;  // by host: placed calls waiting for a rank there
  std::size_t waiting_count_ = 0;           // in all of `waiting_`
  std::stop_source* run_stop_ = nullptr;
  bool signal_stopped_ = false;
  PendingSends sends_;
  std::string bytes_;
  std::vector<std::pair<std::uint64_t, int>> cancels_;  // {id, rank} to send
  std::vector<std::vector<std::string>> outgoing_;      // per rank: requests for `flush_requests`
};

/// Rank 0's executor in a core-level run (`mpi::process_datasets_in_parallel`). Alone, it is the
/// `DefaultExecutor` of a run on one machine. With worker ranks, a job is queued for one of rank
/// 0's own threads while one of its slots is free, or while rank 0's jobs are too short to be worth
/// a message (`Dispatcher::queue_here`), and its stub runs it there; any other job is run at once
/// inside `submit`, where its stub posts it to a worker rank and defers its end (`defer_job`), so
/// that no thread of rank 0 waits for a worker rank's reply: the message loop finishes the job
/// when the reply arrives, and takes the coordinator role then if it is free.
class RankZeroExecutor {
 public:
  /// A single rank: jobs run as on one machine.
  explicit RankZeroExecutor(DefaultExecutor local) : local_(std::move(local)) {}
  /// With worker ranks: `slots` jobs at once on rank 0's own threads (started as needed).
  RankZeroExecutor(Dispatcher& dispatcher, int slots) : dispatcher_(&dispatcher) {
    if (slots > 0) {
      pool_ = std::make_unique<ThreadPoolExecutor>(static_cast<std::size_t>(slots));
      dispatcher.local_pool(pool_.get());
    }
  }
  RankZeroExecutor(RankZeroExecutor&&) noexcept = default;
  RankZeroExecutor& operator=(RankZeroExecutor&&) = delete;
  RankZeroExecutor(const RankZeroExecutor&) = delete;
  RankZeroExecutor& operator=(const RankZeroExecutor&) = delete;
  /// Joins rank 0's own threads (every job has returned by then).
  ~RankZeroExecutor() {
    if (pool_ != nullptr) dispatcher_->local_pool(nullptr);
  }

  void submit(Job job) {
    if (local_) {
      local_->submit(job);
    } else if (pool_ != nullptr && JobAccess::function(job) == &JobContext::execute && dispatcher_->queue_here()) {
      try {
        pool_->submit(Job(&RankZeroExecutor::run_queued, JobAccess::context(job), JobAccess::slot(job)));
      } catch (...) {
        dispatcher_->start_queued_here();
        throw;
      }
    } else {
      const bool may_block = std::exchange(rank0_may_block, false);  // the stub posts the job
      job();
      rank0_may_block = may_block;
    }
  }
  [[nodiscard]] bool runs_jobs_inline() const noexcept { return local_ && local_->runs_jobs_inline(); }
  [[nodiscard]] static constexpr bool lets_jobs_coordinate() noexcept { return true; }
  [[nodiscard]] bool lets_jobs_defer() const noexcept { return !local_; }

 private:
  /// A job queued for rank 0's threads (`Dispatcher::queue_here`): its stub counts it started.
  static void run_queued(void* context, std::uint32_t slot) noexcept {
    rank0_job_was_queued = true;
    JobContext::execute(context, slot);
    // Still set only if the run stopped before the job's stub ran: it submits nothing more, so the
    // count of queued jobs no longer matters.
    rank0_job_was_queued = false;
    Dispatcher::release_held_slot();
  }

  std::optional<DefaultExecutor> local_;
  Dispatcher* dispatcher_ = nullptr;
  std::unique_ptr<ThreadPoolExecutor> pool_;
};

}  // namespace tasktree::detail
