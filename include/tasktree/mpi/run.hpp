#pragma once
/// @file mpi/run.hpp
/// @brief One run across MPI ranks, put together: the agreement at the start (mpi/agreement.hpp),
/// rank 0's dispatcher (mpi/dispatcher.hpp) or a worker rank's message loop (mpi/worker_loop.hpp),
/// and the shutdown that hands rank 0's result to every rank. Also the definitions of the entry
/// points of mpi.hpp.
///
/// Threads: every MPI call of a run happens on the thread that called the entry point, which runs
/// a message loop on every rank, so `MPI_THREAD_FUNNELED` is enough. On rank 0 the coordinator (the
/// core's `ParallelTaskTree`, or the policy layer over it) runs on a thread the call starts; its
/// jobs are stubs that hand a request to the message loop and wait for the reply. On a worker rank,
/// jobs run on threads of their own, started on demand (as many as the rank runs at once) and
/// joined when the run ends.
///
/// The message loops poll: MPI cannot wake a thread that waits on a condition variable, nor the
/// reverse. A loop that just did something polls again at once; an idle one sleeps on its condition
/// variable (which local events, such as a finished job, interrupt) for a time that doubles up to a
/// cap. The caps bound the latency a reply or a request can see (`reply_poll_cap`,
/// `request_poll_cap`) and, on a worker whose jobs occupy all its capacity, how long a stop request
/// may wait (`stop_poll_cap`).

#include <tasktree/detail/error_text.hpp>
#include <tasktree/detail/option_fields.hpp>
#include <tasktree/mpi.hpp>
#include <tasktree/mpi/agreement.hpp>
#include <tasktree/mpi/dispatcher.hpp>
#include <tasktree/mpi/placement.hpp>
#include <tasktree/mpi/transport.hpp>
#include <tasktree/mpi/wire.hpp>
#include <tasktree/mpi/worker_loop.hpp>
#include <tasktree/options.hpp>
#include <tasktree/parallel_task_tree.hpp>
#include <tasktree/policy.hpp>

#include <fmt/format.h>

#include <mpi.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

namespace tasktree::detail {

/// Throws `std::logic_error` unless this thread may make MPI calls while other threads run.
inline void check_thread_level() {
  int level = MPI_THREAD_SINGLE;
  MPI_Query_thread(&level);
  if (level < MPI_THREAD_FUNNELED) {
    throw std::logic_error(
        fmt::format("tasktree: MPI thread level {} forbids threads; initialize MPI with MPI_Init_thread and at least "
                    "MPI_THREAD_FUNNELED (tasktree::mpi::Environment does)",
                    mpi::thread_level_name(level)));
  }
  int main_thread = 0;
  MPI_Is_thread_main(&main_thread);
  if (level == MPI_THREAD_FUNNELED && main_thread == 0) {
    throw std::logic_error(
        "tasktree: MPI thread level MPI_THREAD_FUNNELED allows MPI calls on the thread that initialized MPI only; call "
        "from that thread or initialize MPI with MPI_THREAD_SERIALIZED");
  }
}

/// Throws `std::invalid_argument` unless `liveness` (an entry point's `heartbeat_interval` and
/// `heartbeat_timeout`) can work.
inline void validate_liveness(const Liveness& liveness) {
  if (liveness.heartbeat.count() <= 0) {
    throw std::invalid_argument(
        fmt::format("tasktree: invalid heartbeat_interval {}ns: it must be positive", liveness.heartbeat.count()));
  }
  if (liveness.timeout.count() < 0 || (liveness.timeout.count() > 0 && liveness.timeout < 2 * liveness.heartbeat)) {
    throw std::invalid_argument(
        fmt::format("tasktree: invalid heartbeat_timeout {}ns: it must be 0 (no timeout) or at least twice "
                    "heartbeat_interval ({}ns)",
                    liveness.timeout.count(), liveness.heartbeat.count()));
  }
}

/// What both entry points set up from their options before a run: when a worker rank is lost, a
/// logger that rank 0's message loop may share with the coordinator, and the run's own stop source,
/// which the caller's token and a caught signal both stop. Not movable: the forwarding callback
/// points to it.
struct RunControls {
  struct Forward {
    std::stop_source* stop;
    void operator()() const noexcept { stop->request_stop(); }
  };

  /// Takes `options.log` (serialized) and replaces `options.stop_token` with the run's own.
  template <class EntryOptions>
  explicit RunControls(EntryOptions& options)
      : liveness{.heartbeat = options.heartbeat_interval, .timeout = options.heartbeat_timeout} {
    serialize_sink(options.log);  // the message loop logs lost ranks beside the coordinator
    log = options.log;
    forward.emplace(options.stop_token, Forward{&stop});
    options.stop_token = stop.get_token();
  }
  RunControls(const RunControls&) = delete;
  RunControls& operator=(const RunControls&) = delete;
  ~RunControls() = default;

  Liveness liveness;
  Logger log{};
  std::stop_source stop{};
  std::optional<std::stop_callback<Forward>> forward{};
};

/// What `start_run` settled.
struct StartedRun {
  /// The `max_workers` all ranks agreed on: the caller's, or with 0 one per worker rank.
  int max_workers = 0;
  /// On rank 0 with worker ranks: the slots where rank 0 runs jobs itself; 0 elsewhere.
  int rank0_workers = 0;
  /// The most jobs rank 0 has in flight: `max_workers`, plus `rank0_workers` when the caller left
  /// `max_workers` to the library, plus `queue_ahead` jobs per worker slot.
  int total_workers = 0;
  /// With worker ranks: the jobs sent ahead to each worker slot (`mpi::Options::queue_ahead`), on
  /// every rank.
  int queue_ahead = 0;
  RunAgreement agreement{};
  /// On rank 0: where placed jobs run (see `mpi::Options::placement`); empty elsewhere.
  PlacementTable placement{};
};

/// The number of ranks of `comm` on this rank's host, this one included (collective).
inline int ranks_on_this_host(MPI_Comm comm) {
  MPI_Comm host = MPI_COMM_NULL;
  check_mpi(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &host), "MPI_Comm_split_type");
  int size = 1;
  MPI_Comm_size(host, &size);
  MPI_Comm_free(&host);
  return size;
}

/// The start of every run (collective): checks MPI's thread level, `max_workers`,
/// `rank0_workers`, `queue_ahead` and `liveness`, validates this rank's arguments with
/// `validate(total_workers, tree)` (`tree`: its datasets and tree options too; see below),
/// settles on rank 0 where placed jobs run with `place(hosts, rank0_runs_jobs)`, which returns a
/// `PlacementTable` (`hosts`: every rank's, by rank), and agrees on the run with the other ranks
/// (see `agree_on_run`), so that every rank throws if any of these threw on one. `digest`: this
/// rank's datasets and tree options, as the ranks compare them.
///
/// Rank 0 validates its tree, which it builds for the run. A worker rank, which needs none,
/// validates its own datasets and tree options only when they are not rank 0's (by `digest`) or
/// rank 0 rejected its own: the same datasets and options validate the same way on every rank, so
/// each rank's error still names what is wrong with its own arguments, and a worker does not sort
/// and build a tree of every dataset only to drop it.
template <class Validate, class Place>
StartedRun start_run(const RunComm& run, MpiEntryPoint entry_point, const TreeDigest& digest,
                     int requested_max_workers, int requested_rank0_workers, int requested_queue_ahead,
                     const Liveness& liveness, Validate&& validate, Place&& place) {
  std::exception_ptr rejected;
  mpi_wire::Fingerprint mine{.entry_point = static_cast<std::uint32_t>(entry_point),
                             .datasets = digest.datasets,
                             .hash = digest.hash,
                             .tree_options = digest.tree_options};
  StartedRun started;
  const int on_host = run.size > 1 ? ranks_on_this_host(run.comm) : 1;
  std::string host;
  try {
    host = this_host_name();
  } catch (...) {
    rejected = std::current_exception();
  }
  std::vector<std::string> hosts = gather_hosts(run, host);  // every rank takes part, rejected or not
  try {
    if (rejected) std::rethrow_exception(rejected);  // this rank has no host name
    check_thread_level();
    started.max_workers = effective_max_workers(requested_max_workers, run.size);
    if (requested_rank0_workers < -1) {
      throw std::invalid_argument(fmt::format(
          "tasktree: invalid rank0_workers {}: it must be at least -1 (-1: automatic, 0: rank 0 only coordinates)",
          requested_rank0_workers));
    }
    if (run.rank == 0 && run.size > 1) {
      // Automatic: what a run on rank 0 alone would use, when that costs the worker ranks nothing
      // (rank 0 alone on its host) or a single worker rank could not match it (-np 2).
      const bool automatic_on = on_host == 1 || run.size == 2;
      started.rank0_workers = requested_rank0_workers >= 0 ? requested_rank0_workers
                              : automatic_on               ? default_max_workers()
                                                           : 0;
    }
    if (requested_queue_ahead < 0) {
      throw std::invalid_argument(fmt::format(
          "tasktree: invalid queue_ahead {}: it must be at least 0 (0: a worker slot gets a job when it is free)",
          requested_queue_ahead));
    }
    started.queue_ahead = run.size > 1 ? requested_queue_ahead : 0;
    const auto total = std::int64_t{started.max_workers} * (1 + std::int64_t{started.queue_ahead}) +
                       (requested_max_workers == 0 ? started.rank0_workers : 0);
    if (total > std::int64_t{std::numeric_limits<int>::max()}) {
      throw std::invalid_argument(
          fmt::format("tasktree: invalid queue_ahead {}: with max_workers {} it makes more than {} jobs in flight",
                      requested_queue_ahead, started.max_workers, std::numeric_limits<int>::max()));
    }
    started.total_workers = static_cast<int>(total);
    validate_liveness(liveness);
    validate(started.total_workers, run.rank == 0);
    mine.max_workers = started.max_workers;  // what every rank must agree on
    mine.heartbeat_nanos = liveness.heartbeat.count();
    if (run.rank == 0) started.placement = place(std::as_const(hosts), run.size == 1 || started.rank0_workers > 0);
  } catch (...) {
    rejected = std::current_exception();
  }
  std::vector<mpi_wire::Fingerprint> prints = exchange_fingerprints(run, mine, rejected);
  // A worker whose tree is not rank 0's, or any worker if rank 0 rejected its own, validates its
  // own now, and the ranks compare again (only then: a run that starts costs one exchange).
  const mpi_wire::Fingerprint root = prints[0];
  const auto unchecked = [&root](const mpi_wire::Fingerprint& print) {
    return print.rejected == 0 && (root.rejected != 0 || print.datasets != root.datasets || print.hash != root.hash ||
                                   print.tree_options != root.tree_options);
  };
  if (std::any_of(prints.begin() + 1, prints.end(), unchecked)) {
    if (run.rank != 0 && unchecked(prints[static_cast<std::size_t>(run.rank)])) {
      try {
        validate(started.total_workers, true);
      } catch (...) {
        rejected = std::current_exception();
      }
    }
    prints = exchange_fingerprints(run, mine, rejected);
  }
  started.agreement = agree_on_run(run, prints, rejected);
  started.agreement.hosts = std::move(hosts);
  return started;
}

/// The ranks of `MPI_COMM_WORLD` lost during the runs of this process (see `mpi::lost_ranks()`).
struct LostRanks {
  std::mutex mutex;
  std::vector<int> ranks;

  static LostRanks& instance() {
    static LostRanks lost;
    return lost;
  }
  void add(const std::vector<std::int32_t>& more) {
    if (more.empty()) return;
    const std::lock_guard lock(mutex);
    for (const std::int32_t rank : more) {
      if (std::find(ranks.begin(), ranks.end(), rank) == ranks.end()) ranks.push_back(rank);
    }
  }
};

/// `ranks` of `comm`, as ranks of `MPI_COMM_WORLD`.
inline std::vector<std::int32_t> world_ranks(MPI_Comm comm, const std::vector<int>& ranks) {
  if (ranks.empty()) return {};
  MPI_Group group = MPI_GROUP_NULL;
  MPI_Group world = MPI_GROUP_NULL;
  std::vector<int> translated(ranks.size(), MPI_UNDEFINED);
  if (MPI_Comm_group(comm, &group) == MPI_SUCCESS && MPI_Comm_group(MPI_COMM_WORLD, &world) == MPI_SUCCESS) {
    MPI_Group_translate_ranks(group, static_cast<int>(ranks.size()), ranks.data(), world, translated.data());
  }
  if (group != MPI_GROUP_NULL) MPI_Group_free(&group);
  if (world != MPI_GROUP_NULL) MPI_Group_free(&world);
  return {translated.begin(), translated.end()};
}

/// Rank 0's statistics as the shutdown message carries them (see `mpi_wire::Shutdown::counts`).
inline std::array<std::uint64_t, 11> to_wire(const FaultTolerantStats& stats) noexcept {
  const RunStats& run = stats.run;
  return {run.total,   run.started,   run.completed, run.succeeded,   run.failed,
          run.skipped, run.cancelled, stats.retries, stats.recovered, stats.failed_while_stopping,
          run.resumed};
}

inline FaultTolerantStats from_wire(const std::array<std::uint64_t, 11>& counts) noexcept {
  FaultTolerantStats stats;
  RunStats& run = stats.run;
  std::size_t* const fields[] = {
      &run.total,   &run.started,   &run.completed, &run.succeeded,   &run.failed,
      &run.skipped, &run.cancelled, &stats.retries, &stats.recovered, &stats.failed_while_stopping,
      &run.resumed};
  for (std::size_t i = 0; i < counts.size(); ++i) *fields[i] = static_cast<std::size_t>(counts[i]);
  return stats;
}

/// Runs a validated run on this rank: rank 0 calls `coordinate(dispatcher, stats)` (on a thread of
/// its own while the calling thread pumps messages, or on the calling thread when it is alone);
/// worker ranks run jobs with `execute` until rank 0 sends the result. Every rank returns rank 0's
/// result and fills `stats` with its statistics. On rank 0, `controls` say when a worker is lost,
/// who hears of it, and what a caught signal stops.
template <class Coordinate>
bool run_on_ranks(const RunComm& run, StartedRun started, RunControls& controls, const ExecuteRequest& execute,
                  Coordinate&& coordinate, FaultTolerantStats& stats) {
  const Logger& log = controls.log;
  std::stop_source& run_stop = controls.stop;
  if (run.size == 1) {
    Dispatcher local(execute, started.agreement.hosts);
    // No message loop to look for a caught signal: a thread does, while the run lasts.
    std::jthread watch;
    if (stop_signals_installed.load()) {
      watch = std::jthread([&run_stop, &log](const std::stop_token& done) {
        std::mutex mutex;
        std::condition_variable_any nap;
        std::unique_lock lock(mutex);
        while (!done.stop_requested()) {
          if (const int signal = caught_stop_signal.load(); signal != 0) {
            log.log(LogLevel::warning, "tasktree: rank 0 caught {}: stopping the run", signal_name(signal));
            run_stop.request_stop();
            return;
          }
          nap.wait_for(lock, done, signal_poll_cap, [] { return false; });
        }
      });
    }
    return coordinate(local, stats);
  }
  if (run.rank != 0) {
    const auto workers = static_cast<std::size_t>(run.size - 1);
    const std::size_t capacity = (static_cast<std::size_t>(started.max_workers) + workers - 1) / workers;
    WorkerLoop worker(run.comm, run.rank, execute, capacity,
                      capacity * (1 + static_cast<std::size_t>(started.queue_ahead)), started.agreement.heartbeat);
    mpi_wire::Shutdown result = worker.run();
    LostRanks::instance().add(result.lost_ranks);
    stats = from_wire(result.counts);
    if (result.threw) throw mpi::RemoteError(result.message, result.origin);
    return result.failed;
  }
  Dispatcher dispatcher(run.comm, run.size, controls.liveness, std::move(started.agreement.hosts), log);
  dispatcher.stop_on_signal(run_stop);
  dispatcher.run_here(execute, started.rank0_workers);
  dispatcher.queue_ahead(started.queue_ahead);
  // A worker rank's share, as its `WorkerLoop::capacity` (rank 0's slots come on top).
  const int workers = run.size - 1;
  dispatcher.place(std::move(started.placement), (started.max_workers + workers - 1) / workers);
  bool failed = false;
  std::exception_ptr error;
  FaultTolerantStats run_stats;
  std::thread coordinator;
  try {
    coordinator = std::thread([&]() noexcept {
      try {
        failed = coordinate(dispatcher, run_stats);
      } catch (...) {
        error = std::current_exception();
      }
      dispatcher.coordinator_finished();
    });
  } catch (...) {  // no thread, so no run: tell the workers
    error = std::current_exception();
    dispatcher.coordinator_finished();
  }
  dispatcher.pump();
  if (coordinator.joinable()) coordinator.join();
  stats = run_stats;
  mpi_wire::Shutdown result{
      .failed = failed, .counts = to_wire(run_stats), .lost_ranks = world_ranks(run.comm, dispatcher.lost_ranks())};
  LostRanks::instance().add(result.lost_ranks);
  if (error) {
    result.threw = true;
    result.message = describe(error);
    try {
      std::rethrow_exception(error);
    } catch (const mpi::RemoteError& remote) {
      result.origin = remote.rank();
    } catch (...) {
    }
  }
  dispatcher.shutdown(result);
  if (error) std::rethrow_exception(error);
  return failed;
}

/// The host of each dataset's last attempt, for the records of the run's journal
/// (`JournalRecord::host`): noted by the threads of rank 0 that receive the replies, taken by the
/// coordinator when it records a completion (after the reply, which the run's hand-over orders), so
/// that only the jobs in flight are held.
class JournalHosts {
 public:
  /// Names the hosts in `journal`'s records (null: does nothing) while this object lives (and keeps
  /// it alive as long).
  explicit JournalHosts(std::shared_ptr<Journal> journal) : journal_(std::move(journal)) {
    if (journal_ == nullptr) return;
    JournalAccess::set_host_source(*journal_, [this](std::string_view dataset) {
      const std::lock_guard lock(mutex_);
      const auto it = hosts_.find(dataset);
      if (it == hosts_.end()) return std::string_view();
      const std::string_view host = it->second;  // the dispatcher's, valid for the run
      hosts_.erase(it);
      return host;
    });
  }
  JournalHosts(const JournalHosts&) = delete;
  JournalHosts& operator=(const JournalHosts&) = delete;
  ~JournalHosts() {
    if (journal_ != nullptr) JournalAccess::set_host_source(*journal_, {});
  }
  /// `dataset` (a name of the run) last ran on `host` (a host of the run's dispatcher).
  void note(std::string_view dataset, std::string_view host) {
    if (journal_ == nullptr) return;
    const std::lock_guard lock(mutex_);
    hosts_[dataset] = host;
  }

 private:
  std::shared_ptr<Journal> journal_;
  std::mutex mutex_;
  std::unordered_map<std::string_view, std::string_view> hosts_;
};

/// A job's exception on a worker rank, as rank 0's policy layer sees it: with the worker's verdict
/// on whether it is a job failure and worth retrying, and the place it ran for the failure's log
/// line (`ErrorPlace`).
class RemoteAttemptError final : public mpi::RemoteError, public ErrorPlace {
 public:
  /// `host`: the host of the rank that sent `reply`.
  RemoteAttemptError(const mpi_wire::Reply& reply, std::string_view host)
      : mpi::RemoteError(reply.text, reply.rank),
        ErrorPlace(fmt::format("rank {} (host {})", reply.rank, host)),
        job_failure_(reply.job_failure),
        retryable_(reply.retryable) {}
  [[nodiscard]] bool job_failure() const noexcept { return job_failure_; }
  [[nodiscard]] bool retryable() const noexcept { return retryable_; }

  /// True if `error` is a `RemoteAttemptError` whose `flag` is set.
  static bool says(const std::exception_ptr& error, bool (RemoteAttemptError::*flag)() const noexcept) {
    try {
      std::rethrow_exception(error);
    } catch (const RemoteAttemptError& remote) {
      return (remote.*flag)();
    } catch (...) {
      return false;
    }
  }

 private:
  bool job_failure_;
  bool retryable_;
};

/// A core-level job on the rank that runs it.
inline mpi_wire::Reply run_remote_job(const mpi::RemoteJob& job, const mpi_wire::Request& request,
                                      const std::stop_token& stop) {
  try {
    mpi::JobOutcome outcome = job(request.dataset, request.submit_count, stop);
    return mpi_wire::Reply{.no_skip = outcome.no_skip, .fail = outcome.fail, .text = std::move(outcome.payload)};
  } catch (...) {
    return mpi_wire::Reply{.kind = mpi_wire::Reply::threw, .text = describe(std::current_exception())};
  }
}

/// The completion of a core-level job on rank 0, from its reply: notes where it ran for the
/// journal, throws its exception as a `RemoteError`, else hands its outcome to the user's
/// `completion` (or takes the job's own verdict).
inline CompletionCallbackResult complete_remote_job(mpi_wire::Reply& reply, std::string_view dataset,
                                                    const mpi::Completion& completion, JournalHosts& hosts,
                                                    const Dispatcher& dispatcher, InFlight& in_flight) {
  hosts.note(dataset, dispatcher.host(reply.rank));
  if (reply.kind == mpi_wire::Reply::threw) throw mpi::RemoteError(reply.text, reply.rank);
  mpi::JobOutcome outcome{.no_skip = reply.no_skip, .fail = reply.fail, .payload = std::move(reply.text)};
  if (completion) return completion(dataset, outcome, in_flight);
  return CompletionCallbackResult{.no_skip = outcome.no_skip, .fail = outcome.fail};
}

/// The report of the attempt that runs on this thread (`mpi::attempt_report()`), or null.
inline thread_local std::string* attempt_report_target = nullptr;

/// Points `mpi::attempt_report()` of this thread at `report` while it lives.
class AttemptReportScope {
 public:
  explicit AttemptReportScope(std::string& report) noexcept
      : previous_(std::exchange(attempt_report_target, &report)) {}
  AttemptReportScope(const AttemptReportScope&) = delete;
  AttemptReportScope& operator=(const AttemptReportScope&) = delete;
  ~AttemptReportScope() { attempt_report_target = previous_; }

 private:
  std::string* previous_;
};

/// One attempt of a policy-level job on the rank that runs it; a failure is classified here, where
/// the exception object exists.
inline mpi_wire::Reply run_remote_attempt(const mpi::FaultTolerantOptions& options, const mpi_wire::Request& request,
                                          const std::stop_token& stop) {
  std::string report;
  std::exception_ptr error;
  try {
    const AttemptReportScope scope(report);
    const bool no_skip = options.process_dataset(
        request.dataset, request.tid,
        Retry{.count = request.retry_count, .submit_count = request.submit_count, .stop_token = stop});
    return mpi_wire::Reply{.no_skip = no_skip, .report = std::move(report)};
  } catch (...) {
    error = std::current_exception();
  }
  mpi_wire::Reply reply{.kind = mpi_wire::Reply::threw, .text = describe(error), .report = std::move(report)};
  try {
    reply.job_failure = options.is_job_failure ? options.is_job_failure(error) : exception_is<std::exception>(error);
    const RetryPolicy& retry = options.retry_policy;
    reply.retryable =
        reply.job_failure && request.retry_count < retry.max_retries && (!retry.retryable || retry.retryable(error));
  } catch (...) {  // a throwing predicate is a fatal error, as on one machine
    reply = mpi_wire::Reply{.kind = mpi_wire::Reply::threw, .text = describe(std::current_exception())};
  }
  return reply;
}

}  // namespace tasktree::detail

namespace tasktree::mpi {

inline std::vector<int> lost_ranks() {
  detail::LostRanks& lost = detail::LostRanks::instance();
  const std::lock_guard lock(lost.mutex);
  return lost.ranks;
}

inline Environment::~Environment() {
  for (auto it = saved_handlers_.rbegin(); it != saved_handlers_.rend(); ++it)
    sigaction(it->first, &it->second, nullptr);
  if (!saved_handlers_.empty()) {
    detail::stop_signals_installed = false;
    detail::caught_stop_signal = 0;
  }
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (owner_ && finalized == 0 && lost_ranks().empty()) MPI_Finalize();
}

inline void Environment::stop_on_signals(std::vector<int> signals) {
  for (const int signal : signals) {
    if (signal <= 0 || signal >= NSIG || signal == SIGKILL || signal == SIGSTOP) {
      throw std::invalid_argument(
          fmt::format("tasktree: invalid signal {} for stop_on_signals: it cannot be caught", signal));
    }
  }
  for (const int signal : signals) {
    struct sigaction action = {};
    action.sa_handler = detail::on_stop_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    struct sigaction previous = {};
    if (sigaction(signal, &action, &previous) != 0) {
      throw std::system_error(errno, std::generic_category(),
                              fmt::format("tasktree: sigaction({})", detail::signal_name(signal)));
    }
    saved_handlers_.emplace_back(signal, previous);
  }
  detail::stop_signals_installed = true;
}

inline int Environment::stop_signal() const noexcept { return detail::caught_stop_signal.load(); }

inline std::string Environment::host_name() const { return detail::this_host_name(); }

inline void Environment::stop_for_signal(int signal) noexcept {
  int expected = 0;
  detail::caught_stop_signal.compare_exchange_strong(expected, signal);
  detail::stop_signals_installed = true;
}

inline std::string& attempt_report() {
  if (detail::attempt_report_target == nullptr) {
    throw std::logic_error(
        "tasktree::mpi::attempt_report() called outside an attempt of "
        "mpi::process_datasets_in_parallel_and_fault_tolerant() (or on another thread than the attempt's)");
  }
  return *detail::attempt_report_target;
}

inline void Environment::init(int* argc, char*** argv, int required) {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized != 0) throw std::runtime_error("tasktree: MPI was already finalized; it cannot be initialized again");
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized != 0) return;
  int provided = MPI_THREAD_SINGLE;
  detail::check_mpi(MPI_Init_thread(argc, argv, required, &provided), "MPI_Init_thread");
  if (provided < required) {
    MPI_Finalize();
    throw std::runtime_error(fmt::format("tasktree: MPI provides the thread level {}, below the {} required",
                                         thread_level_name(provided), thread_level_name(required)));
  }
  owner_ = true;
}

inline void broadcast(std::vector<std::string>& strings, MPI_Comm comm) {
  int rank = 0;
  detail::check_mpi(MPI_Comm_rank(comm, &rank), "MPI_Comm_rank");
  std::string bytes;
  if (rank == 0) {
    detail::mpi_wire::Writer out;
    out.u64(strings.size());
    for (const std::string& text : strings) out.str(text);
    bytes = out.take();
  }
  std::uint64_t size = bytes.size();
  detail::check_mpi(MPI_Bcast(&size, 1, MPI_UINT64_T, 0, comm), "MPI_Bcast");
  bytes.resize(static_cast<std::size_t>(size));
  constexpr std::uint64_t chunk = 1u << 30;  // counts are ints
  for (std::uint64_t offset = 0; offset < size; offset += chunk) {
    const int count = static_cast<int>(std::min(chunk, size - offset));
    detail::check_mpi(MPI_Bcast(bytes.data() + offset, count, MPI_BYTE, 0, comm), "MPI_Bcast");
  }
  if (rank == 0) return;
  detail::mpi_wire::Reader in(bytes);
  const std::uint64_t count = in.u64();
  if (count > size / 8) throw std::runtime_error("tasktree: malformed broadcast of strings");
  strings.clear();
  strings.reserve(static_cast<std::size_t>(count));
  for (std::uint64_t i = 0; i < count; ++i) strings.emplace_back(in.str());
}

inline bool process_datasets_in_parallel(Options options, RunStats& stats) {
  stats = RunStats{};
  detail::RunComm run(options.comm);
  // Rank 0's jobs are stubs that run the real job elsewhere, through the dispatcher of the run.
  detail::Dispatcher* dispatcher = nullptr;
  detail::JournalHosts* journal_hosts = nullptr;  // rank 0, while its run lasts
  int rank0_slots = 0;                            // rank 0's own slots, once agreed
  std::optional<ParallelTaskTree<detail::RankZeroExecutor>> tree;
  detail::RunControls controls(options);
  const detail::StartedRun started = detail::start_run(
      run, detail::MpiEntryPoint::core,
      detail::tree_digest(options.datasets, options.enable_barriers, options.barrier_name), options.max_workers,
      options.rank0_workers, options.queue_ahead, controls.liveness,
      [&](int workers, bool validate_tree) {
        if (!options.process_dataset) throw std::invalid_argument("tasktree: process_dataset is not set");
        if (!validate_tree) return;
        if (run.rank != 0) {  // a worker needs no tree
          detail::validate_tree(std::move(options.datasets), workers, options.enable_barriers, options.barrier_name);
          return;
        }
        using Core = tasktree::Options<detail::RankZeroExecutor>;
        Core core{
            .process_dataset = [&dispatcher, &journal_hosts, &completion = options.completion](
                                   std::string_view dataset, std::int64_t submit_count,
                                   const std::stop_token& stop) -> CompletionCallback {
              detail::Dispatcher& transport = *dispatcher;
              const detail::mpi_wire::Request request{.submit_count = submit_count, .dataset = dataset};
              std::optional<detail::mpi_wire::Reply> reply =
                  transport.alone() ? transport.call(request, stop) : transport.try_run_here(request, stop);
              if (reply) {  // it ran here, on this thread
                return CompletionCallback([reply = std::move(*reply), &completion, hosts = journal_hosts, &transport,
                                           dataset](InFlight& in_flight) mutable {
                  return detail::complete_remote_job(reply, dataset, completion, *hosts, transport, in_flight);
                });
              }
              // Sent to a worker rank: the job ends when the message loop has its reply.
              auto call = std::make_unique<detail::Dispatcher::Call>();
              call->own_request = request;
              call->stop = stop;
              detail::Dispatcher::Call& posted = *call;
              CompletionCallback callback(
                  [call = std::move(call), &completion, hosts = journal_hosts, &transport](InFlight& in_flight) {
                    return detail::complete_remote_job(call->reply, call->own_request.dataset, completion, *hosts,
                                                       transport, in_flight);
                  });
              posted.job = detail::defer_job();
              transport.post(posted);
              return callback;
            },
        };
        // All of the core's options but the job and the executor (the ranks are the executor) come
        // from these options; the job, `completion` and `comm` are the scale-out's own.
        static_assert(detail::shared_option_count<Core, Options> == detail::field_count<Core>() - 2,
                      "an option of tasktree::Options is missing from mpi::Options or detail::for_each_shared_option");
        // The scale-out's own: process_dataset, completion, heartbeat_interval, heartbeat_timeout,
        // rank0_workers, queue_ahead, placement, comm.
        static_assert(detail::field_count<Options>() == detail::shared_option_count<Core, Options> + 8,
                      "a new option of mpi::Options: share it with tasktree::Options or handle it here");
        detail::carry_shared_options(std::move(options), core, &Core::max_workers);
        core.max_workers = workers;
        core.executors = [&dispatcher, &rank0_slots, &tree, workers] {
          if (!dispatcher->alone()) return detail::RankZeroExecutor(*dispatcher, rank0_slots);
          // As `ParallelTaskTree<>` would on one machine.
          const std::size_t threads = std::min(static_cast<std::size_t>(workers), tree->datasets().size());
          return detail::RankZeroExecutor(DefaultExecutor(threads, threads > 1));
        };
        tree.emplace(std::move(core));
      },
      [&](std::span<const std::string> hosts, bool rank0_runs_jobs) {
        if (!options.placement) return detail::PlacementTable();
        return detail::PlacementTable(options.placement, tree->datasets(), hosts, rank0_runs_jobs);
      });
  rank0_slots = started.rank0_workers;

  const detail::ExecuteRequest execute = [&job = options.process_dataset](const detail::mpi_wire::Request& request,
                                                                          const std::stop_token& stop) {
    return detail::run_remote_job(job, request, stop);
  };
  FaultTolerantStats all_stats;
  try {
    const bool failed = detail::run_on_ranks(
        run, started, controls, execute,
        [&](detail::Dispatcher& transport, FaultTolerantStats& run_stats) {
          dispatcher = &transport;
          detail::JournalHosts hosts(tree->options().journal);
          journal_hosts = &hosts;
          try {
            const bool result = tree->process_datasets_in_parallel();
            run_stats.run = tree->last_run_stats();
            return result;
          } catch (...) {
            run_stats.run = tree->last_run_stats();
            throw;
          }
        },
        all_stats);
    stats = all_stats.run;
    return failed;
  } catch (...) {
    stats = all_stats.run;
    throw;
  }
}

inline bool process_datasets_in_parallel_and_fault_tolerant(FaultTolerantOptions options, FaultTolerantStats& stats) {
  stats = FaultTolerantStats{};
  detail::RunComm run(options.comm);
  detail::RunControls controls(options);
  const detail::StartedRun started = detail::start_run(
      run, detail::MpiEntryPoint::policy,
      detail::tree_digest(options.datasets, options.enable_barriers, options.barrier_name), options.max_workers,
      options.rank0_workers, options.queue_ahead, controls.liveness,
      [&](int workers, bool validate_tree) {
        detail::validate_policy(options.process_dataset, options.skip_on_error, options.retry_policy);
        detail::validate_attempt_timeout(options.attempt_timeout, options.stall_interval);
        if (!validate_tree) return;
        // Validated as the policy layer will on rank 0, which keeps its datasets for the run; a worker
        // needs no tree and gives them away.
        detail::validate_tree(run.rank == 0 ? options.datasets : std::move(options.datasets), workers,
                              options.enable_barriers, options.barrier_name);
      },
      [&](std::span<const std::string> hosts, bool rank0_runs_jobs) {
        if (!options.placement) return detail::PlacementTable();
        return detail::PlacementTable(options.placement, options.datasets, hosts, rank0_runs_jobs);
      });

  const detail::ExecuteRequest execute = [&options](const detail::mpi_wire::Request& request,
                                                    const std::stop_token& stop) {
    return detail::run_remote_attempt(options, request, stop);
  };
  const auto coordinate = [&](detail::Dispatcher& dispatcher, FaultTolerantStats& run_stats) {
    using Local = tasktree::FaultTolerantOptions<>;
    detail::JournalHosts hosts(options.journal);
    Local local{
        .process_dataset = [&dispatcher, &hosts, on_attempt_report = std::move(options.on_attempt_report)](
                               std::string_view dataset, std::string_view tid, const Retry& attempt) -> bool {
          detail::mpi_wire::Reply reply = dispatcher.call(
              {.submit_count = attempt.submit_count, .retry_count = attempt.count, .dataset = dataset, .tid = tid},
              attempt.stop_token);
          const std::string_view host = dispatcher.host(reply.rank);
          hosts.note(dataset, host);
          if (on_attempt_report) {
            mpi::AttemptReport report{.dataset = dataset,
                                      .attempt = attempt.count,
                                      .rank = reply.rank,
                                      .host = host,
                                      .threw = reply.kind == detail::mpi_wire::Reply::threw,
                                      .bytes = std::move(reply.report)};
            on_attempt_report(report);
          }
          if (reply.kind == detail::mpi_wire::Reply::threw) throw detail::RemoteAttemptError(reply, host);
          return reply.no_skip;
        },
    };
    // All of the policy layer's options but the job and the executor come from these options; the
    // job and `comm` are the scale-out's own.
    static_assert(detail::shared_option_count<Local, FaultTolerantOptions> == detail::field_count<Local>() - 2,
                  "an option of tasktree::FaultTolerantOptions is missing from mpi::FaultTolerantOptions or "
                  "detail::for_each_shared_option");
    // The scale-out's own: process_dataset, heartbeat_interval, heartbeat_timeout, rank0_workers,
    // queue_ahead, placement, on_attempt_report, comm.
    static_assert(
        detail::field_count<FaultTolerantOptions>() == detail::shared_option_count<Local, FaultTolerantOptions> + 8,
        "a new option of mpi::FaultTolerantOptions: share it with tasktree::FaultTolerantOptions or handle "
        "it here");
    // The job's exception is classified where it ran (`run_remote_attempt` reads `is_job_failure` and
    // `retry_policy` there, and on this rank when it is alone); here the verdict travels with it.
    detail::carry_shared_options(std::move(options), local, &Local::max_workers, &Local::retry_policy,
                                 &Local::is_job_failure);
    local.max_workers = started.total_workers;
    local.retry_policy = options.retry_policy;
    // A `TimeoutError` is made here, on rank 0, when an attempt ran past `attempt_timeout`: the
    // user's predicates judge it here, as they would on one machine.
    local.retry_policy.retryable = [user = options.retry_policy.retryable](const std::exception_ptr& error) {
      if (exception_is<TimeoutError>(error)) return !user || user(error);
      return detail::RemoteAttemptError::says(error, &detail::RemoteAttemptError::retryable);
    };
    local.is_job_failure = [user = options.is_job_failure](const std::exception_ptr& error) {
      if (exception_is<TimeoutError>(error)) return !user || user(error);
      return detail::RemoteAttemptError::says(error, &detail::RemoteAttemptError::job_failure);
    };
    return tasktree::process_datasets_in_parallel_and_fault_tolerant(std::move(local), run_stats);
  };
  return detail::run_on_ranks(run, started, controls, execute, coordinate, stats);
}

inline bool process_datasets_in_parallel(Options options) {
  RunStats stats;
  return process_datasets_in_parallel(std::move(options), stats);
}

inline bool process_datasets_in_parallel_and_fault_tolerant(FaultTolerantOptions options) {
  FaultTolerantStats stats;
  return process_datasets_in_parallel_and_fault_tolerant(std::move(options), stats);
}

}  // namespace tasktree::mpi
