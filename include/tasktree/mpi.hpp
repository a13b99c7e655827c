#pragma once
/// @file mpi.hpp
/// @brief Scale-out: run the job tree across the ranks of an MPI job, on many machines.
///
/// Optional: needs MPI (link `tasktree::mpi`, which CMake defines when it finds MPI); the rest of
/// tasktree, and `tasktree.hpp`, never include this header.
///
/// Every rank runs the same program and calls the same entry point with the same datasets and
/// options (SPMD). Rank 0 coordinates, exactly as `ParallelTaskTree` or
/// `process_datasets_in_parallel_and_fault_tolerant()` do on one machine: priority, barriers,
/// pacing, stop requests and the failure policy all behave as documented there. Ranks 1..N-1 run
/// the jobs: each calls your job function locally and sends rank 0 a small outcome, which becomes
/// the job's completion on rank 0. When the run ends, every rank returns rank 0's result (or throws
/// its error), so `return failed ? 1 : 0;` gives every rank the same exit status.
///
/// Two entry points, at the two levels of the library:
/// - `tasktree::mpi::process_datasets_in_parallel()`: the core. A job returns a `JobOutcome`
///   (`no_skip`, `fail`, payload bytes); `Options::completion` on rank 0 turns it into the job's
///   `CompletionCallbackResult`.
/// - `tasktree::mpi::process_datasets_in_parallel_and_fault_tolerant()`: the policy layer, with
///   the same job signature and options as on one machine: retries, `skip_on_error`, statistics.
///
/// @code
/// int main(int argc, char** argv) {
///   tasktree::mpi::Environment mpi(argc, argv);  // MPI_Init_thread ... MPI_Finalize
///   const bool failed = tasktree::mpi::process_datasets_in_parallel_and_fault_tolerant({
///       .datasets = {"pool", "pool/home", "pool/home/alice", "pool/home/bob"},
///       .process_dataset = [](std::string_view dataset, std::string_view tid, const tasktree::Retry& retry) {
///         return replicate(dataset, retry.stop_token);  // runs on a worker rank
///       },
///       .skip_on_error = tasktree::SkipOnError::dataset,
///   });
///   return failed ? 1 : 0;
/// }
/// @endcode
///
/// docs/scale-out.md explains how to start it across hosts and what each rank does.

#include <tasktree/clock.hpp>
#include <tasktree/completion.hpp>
#include <tasktree/log.hpp>
#include <tasktree/observer.hpp>
#include <tasktree/options.hpp>
#include <tasktree/policy.hpp>
#include <tasktree/priority.hpp>

#include <mpi.h>
#include <signal.h>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace tasktree::mpi {

/// @brief Initializes MPI for tasktree (if nobody did yet) and finalizes it when destroyed.
///
/// tasktree starts threads on every rank but makes all MPI calls of a run on the thread that
/// called the entry point, so it needs the thread level `MPI_THREAD_FUNNELED` (if that thread is
/// the one that initialized MPI) or above. A plain `MPI_Init` gives `MPI_THREAD_SINGLE`, which
/// forbids threads; this class asks for `MPI_THREAD_FUNNELED`. If MPI was already initialized, it
/// does nothing and leaves finalizing to whoever initialized it.
///
/// @code
/// int main(int argc, char** argv) {
///   tasktree::mpi::Environment mpi(argc, argv);
///   if (mpi.rank() == 0) fmt::print("{} ranks\n", mpi.size());
///   ...
/// }  // MPI_Finalize
/// @endcode
class Environment {
 public:
  /// Calls `MPI_Init_thread(&argc, &argv, required, ...)` unless MPI is already initialized.
  /// @throws std::runtime_error if MPI provides a thread level below `required` (MPI is then
  /// finalized again) or was already finalized.
  Environment(int& argc, char**& argv, int required = MPI_THREAD_FUNNELED) { init(&argc, &argv, required); }
  /// As above, without passing the command line to MPI.
  explicit Environment(int required = MPI_THREAD_FUNNELED) { init(nullptr, nullptr, required); }

  Environment(const Environment&) = delete;
  Environment& operator=(const Environment&) = delete;
  /// Calls `MPI_Finalize` if this object initialized MPI, unless a run of this process lost a
  /// rank (`lost_ranks()`): MPI's closing synchronization includes every rank, and Open MPI 4.1
  /// then sometimes waits forever for the dead one; the process ends without it, which a launcher
  /// that survives lost ranks (`mpiexec --enable-recovery`) accepts. See docs/scale-out.md.
  inline ~Environment();

  /// This process's rank in `MPI_COMM_WORLD`.
  [[nodiscard]] int rank() const {
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    return rank;
  }
  /// The number of ranks in `MPI_COMM_WORLD`.
  [[nodiscard]] int size() const {
    int size = 0;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    return size;
  }
  /// This rank's host as runs name it (in `Options::placement`, `AttemptReport::host` and log
  /// lines): `TASKTREE_MPI_HOST_NAME` if set and not empty, else `MPI_Get_processor_name`.
  [[nodiscard]] inline std::string host_name() const;
  /// The thread level MPI provides (`MPI_THREAD_SINGLE` ... `MPI_THREAD_MULTIPLE`).
  [[nodiscard]] int thread_level() const {
    int level = MPI_THREAD_SINGLE;
    MPI_Query_thread(&level);
    return level;
  }

  /// @brief Turns `signals` on this rank into a graceful stop of the runs: call it on every rank,
  /// before the run.
  ///
  /// A signal caught on any rank stops the run in progress (or the next one) as a stop request on
  /// rank 0 would: no new job starts, the stop token of every job in flight is signalled, the run
  /// waits for them, and every rank returns (true: stopped with work left), so the program can
  /// print its summary and the journal holds what finished. A worker that catches a signal tells
  /// rank 0 and goes on until rank 0 ends the run. The same signal a second time ends the process
  /// as it would have without this call. Launchers deliver the signal to every rank: Slurm (`srun`,
  /// `scancel`) sends SIGTERM and SIGKILL 30 s later (its `KillWait`); Open MPI's `mpiexec`, on
  /// SIGINT or SIGTERM, sends the ranks SIGTERM after `odls_base_sigkill_timeout` seconds (default
  /// 1) and SIGKILL as long again, so give a run time to stop with
  /// `mpiexec --mca odls_base_sigkill_timeout 30`; it forwards SIGUSR1 and SIGUSR2 at once. See
  /// docs/scale-out.md, "Stopping from outside".
  ///
  /// The previous handlers come back, and the caught signal is forgotten, when this object is
  /// destroyed.
  /// @throws std::invalid_argument for a signal that cannot be caught (naming it), before any
  /// handler changes.
  inline void stop_on_signals(std::vector<int> signals = {SIGINT, SIGTERM, SIGHUP});

  /// The signal `stop_on_signals` caught on this rank, or 0.
  [[nodiscard]] inline int stop_signal() const noexcept;

  /// @brief For programs that take signals on a thread of their own (`sigwait`, `signalfd`)
  /// instead of through `stop_on_signals`: stops the runs as a signal caught there would, on any
  /// rank (a worker tells rank 0; rank 0 stops the run in progress, or the next one). Unlike a
  /// handler of `stop_on_signals`, a second call never ends the process: that is the caller's to
  /// decide. Async-signal-safe. `stop_signal()` returns the first signal passed.
  inline void stop_for_signal(int signal) noexcept;

 private:
  inline void init(int* argc, char*** argv, int required);
  bool owner_ = false;
  std::vector<std::pair<int, struct sigaction>> saved_handlers_;
};

/// @brief The ranks of `MPI_COMM_WORLD` that runs of this process lost (see
/// `Options::heartbeat_timeout`), in the order they were lost: known on rank 0 and on every
/// surviving rank once the run has returned. Empty if none was lost.
[[nodiscard]] inline std::vector<int> lost_ranks();

/// @brief Makes every rank's `strings` a copy of rank 0's. Collective: every rank of `comm` calls it.
///
/// For listing the work once, on rank 0 (e.g. walking a shared file system), instead of on every
/// rank, where listings taken at different moments could differ:
/// @code
/// std::vector<std::string> datasets;
/// if (mpi.rank() == 0) datasets = list_directory_tree(root);
/// tasktree::mpi::broadcast(datasets);
/// @endcode
inline void broadcast(std::vector<std::string>& strings, MPI_Comm comm = MPI_COMM_WORLD);

/// @brief The name of an MPI thread level, e.g. `"MPI_THREAD_FUNNELED"`.
[[nodiscard]] constexpr std::string_view thread_level_name(int level) noexcept {
  if (level == MPI_THREAD_SINGLE) return "MPI_THREAD_SINGLE";
  if (level == MPI_THREAD_FUNNELED) return "MPI_THREAD_FUNNELED";
  if (level == MPI_THREAD_SERIALIZED) return "MPI_THREAD_SERIALIZED";
  if (level == MPI_THREAD_MULTIPLE) return "MPI_THREAD_MULTIPLE";
  return "unknown MPI thread level";
}

/// @brief An exception that happened on another rank, carried by its message.
///
/// On rank 0 it is what a job that threw on a worker rank becomes (the exception object itself
/// cannot cross machines): `what()` is the original `what()`, `rank()` the worker. On a worker rank
/// it is what the call throws when the run threw on rank 0, with rank 0's message and the rank the
/// error came from.
class RemoteError : public std::runtime_error {
 public:
  /// The error whose `what()` is `message`, thrown on rank `rank`.
  RemoteError(const std::string& message, int rank) : std::runtime_error(message), rank_(rank) {}
  /// The rank where the exception was thrown.
  [[nodiscard]] int rank() const noexcept { return rank_; }

 private:
  int rank_ = 0;
};

/// @brief What a job reports from its worker rank to rank 0.
///
/// @code
/// return tasktree::mpi::JobOutcome{.no_skip = true, .fail = false, .payload = checksum_hex};
/// @endcode
struct JobOutcome {
  /// True lets the job's subtree continue; see `CompletionCallbackResult::no_skip`.
  bool no_skip = true;
  /// True marks the run failed; see `CompletionCallbackResult::fail`.
  bool fail = false;
  /// Bytes for rank 0, e.g. a result or an error message (any content; below 2 GiB in all).
  std::string payload{};

  friend bool operator==(const JobOutcome&, const JobOutcome&) = default;
};

/// @brief A callable that can be a job on a worker rank: `f(dataset, submit_count)` or
/// `f(dataset, submit_count, stop_token)` returning something convertible to `JobOutcome`.
template <class F>
concept RemoteDatasetJob = DatasetFunctionOf<F, JobOutcome>;

/// @brief The job of `mpi::process_datasets_in_parallel()`: `job(dataset, submit_count)` or
/// `job(dataset, submit_count, stop_token)`, returning a `JobOutcome`.
///
/// It runs on a worker rank, on a thread of its own, concurrently with other jobs if the rank runs
/// several (see `Options::max_workers`); it must be thread-safe and must not call MPI. The stop
/// token is signalled when rank 0's run stops. An exception ends the run: rank 0 rethrows it as a
/// `RemoteError` once every job in flight has returned (report failures that should not end the run
/// with `JobOutcome::fail`, or use the policy level).
///
/// @code
/// options.process_dataset = [](std::string_view dataset, std::int64_t /*submit_count*/, std::stop_token stop) {
///   return tasktree::mpi::JobOutcome{.no_skip = copy(dataset, stop)};
/// };
/// @endcode
using RemoteJob = DatasetFunction<JobOutcome>;

/// @brief Rank 0's side of a finished job: `completion(dataset, outcome, in_flight)` returns the
/// job's `CompletionCallbackResult`. It is the job's completion callback: it runs on rank 0's
/// coordinator, one at a time, and may move the payload out of `outcome`.
using Completion =
    std::function<CompletionCallbackResult(std::string_view dataset, JobOutcome& outcome, InFlight& in_flight)>;

/// @brief What rank 0 learns of one attempt of a policy-level job, from the rank that ran it; see
/// `FaultTolerantOptions::on_attempt_report`.
struct AttemptReport {
  /// The job.
  std::string_view dataset{};
  /// Which attempt: `Retry::count`, 0 for the first.
  int attempt = 0;
  /// The rank of `comm` that ran it (0 if rank 0 ran it itself).
  int rank = 0;
  /// That rank's host (see `Options::placement`).
  std::string_view host{};
  /// True if the attempt threw (its exception follows as a `RemoteError`).
  bool threw = false;
  /// What the attempt put in `attempt_report()` on its rank (may be moved out).
  std::string bytes{};
};

/// @brief Inside a job of `mpi::process_datasets_in_parallel_and_fault_tolerant()`, on the thread
/// that called it: the bytes this attempt sends to rank 0 with its outcome, where
/// `FaultTolerantOptions::on_attempt_report` receives them (its exit code, its output, timings:
/// anything a report on rank 0 needs; below 2 GiB with the rest of the reply). Empty when the
/// attempt starts; the job appends or assigns, also just before it throws. Works the same when the
/// attempt runs on rank 0 or on a single rank.
/// @throws std::logic_error outside such an attempt, or on another thread (a core-level job sends
/// its bytes as `JobOutcome::payload`).
[[nodiscard]] inline std::string& attempt_report();

/// @brief Where a job must run: `placement(dataset)` returns the name of a host, or an empty string
/// for anywhere. See `Options::placement`.
using Placement = std::function<std::string(std::string_view dataset)>;

/// @brief A `Placement` for plans whose first component names a host, like `alpha/snapshot`: the
/// dataset's first component (`"alpha"`), the whole name if it has one component.
///
/// @code
/// options.placement = tasktree::mpi::place_by_first_component;
/// @endcode
[[nodiscard]] inline std::string place_by_first_component(std::string_view dataset) {
  return std::string(dataset.substr(0, dataset.find('/')));
}

/// @brief Configuration of `mpi::process_datasets_in_parallel()`; the same on every rank. Like
/// `tasktree::Options`, with a job that runs on worker ranks.
///
/// Only `datasets`, `process_dataset` and `max_workers` are read on worker ranks; the other fields
/// are used on rank 0 alone (a stop requested through a worker's `stop_token` is not seen).
///
/// @code
/// tasktree::mpi::Options options{
///     .datasets = {"data", "data/2023", "data/2024"},
///     .process_dataset = [](std::string_view dataset, std::int64_t) {
///       return tasktree::mpi::JobOutcome{.payload = checksum(dataset)};
///     },
///     .completion = [&](std::string_view dataset, tasktree::mpi::JobOutcome& outcome, tasktree::InFlight&) {
///       sums[std::string(dataset)] = std::move(outcome.payload);  // rank 0, one at a time
///       return tasktree::CompletionCallbackResult{.no_skip = outcome.no_skip, .fail = outcome.fail};
///     },
/// };
/// @endcode
struct Options {
  /// Job names, slash-separated, in any order; see `tasktree::Options::datasets`.
  std::vector<std::string> datasets{};
  /// The job, run once per dataset on a worker rank; see `RemoteJob`.
  RemoteJob process_dataset{};
  /// Rank 0's completion callback for each job; empty means
  /// `{.no_skip = outcome.no_skip, .fail = outcome.fail}`. See `Completion`.
  Completion completion{};
  /// Which available job starts first; see `tasktree::Options::priority`.
  Priority priority{};
  /// At most this many jobs in flight at once: first rank 0's own slots (`rank0_workers`), the rest
  /// spread evenly over the worker ranks (a rank runs several at once when they exceed their
  /// number). 0 means rank 0's slots and one job per worker rank; with a single rank, jobs run on
  /// rank 0 itself, on `default_max_workers()` threads. Must be at least 0.
  int max_workers = 0;
  /// Pacing between submissions; see `tasktree::Options::interval_nanos`.
  IntervalNanos interval_nanos{};
  /// Stops the run when signalled on rank 0; see `tasktree::Options::stop_token` (and
  /// `Environment::stop_on_signals` for stops from outside, on any rank).
  std::stop_token stop_token{};
  /// Barrier algorithm on, off or automatic; see `tasktree::Options::enable_barriers`.
  std::optional<bool> enable_barriers{};
  /// The component that marks a barrier; see `tasktree::Options::barrier_name`.
  std::string barrier_name{default_barrier_name};
  /// Time source for pacing on rank 0; null means `SteadyClock`.
  std::shared_ptr<Clock> clock{};
  /// Logging hook on rank 0; silent by default.
  Logger log{};
  /// Observer hooks on rank 0; a job's elapsed time includes its trip to the worker and back.
  std::shared_ptr<RunObserver> observer{};
  /// Keeps the coordinator role on rank 0's calling thread; see
  /// `tasktree::Options::callbacks_on_calling_thread`.
  bool callbacks_on_calling_thread = false;
  /// The journal, written and read on rank 0 only; see `tasktree::Options::journal`.
  std::shared_ptr<Journal> journal{};
  /// How often a worker rank tells rank 0 that it is alive, when it has sent nothing else for this
  /// long. Read on rank 0, which tells the workers. Must be positive.
  std::chrono::nanoseconds heartbeat_interval = std::chrono::seconds(1);
  /// Rank 0 declares a worker rank lost when it has heard nothing from it (no reply, no heartbeat)
  /// for this long, or at once when MPI returns an error for a message to it. The lost rank's jobs
  /// in flight are sent to the other worker ranks (they may run twice: at least once), and the run
  /// goes on without it. Only a launcher that keeps the job alive when a rank dies lets this happen
  /// (Open MPI: `mpiexec --enable-recovery`; see docs/scale-out.md). Zero: only an MPI error loses
  /// a rank. Otherwise at least twice `heartbeat_interval`. Read on rank 0.
  std::chrono::nanoseconds heartbeat_timeout = std::chrono::seconds(30);
  /// How many jobs rank 0 runs itself at once, beside coordinating, on threads of its own: a job
  /// goes to rank 0 while one of these slots is free (no message, no delay), else to the least
  /// loaded worker rank; and while the jobs that rank 0 ran lately took less than 20 µs on average,
  /// too short to be worth a message's round trip, every job waits for one of these slots instead.
  /// -1 (the default): automatic: `default_max_workers()`, what a run on rank 0
  /// alone would use, when rank 0 is the only rank of `comm` on its host or the run has a single
  /// worker rank (`-np 2`), so that such a run is never slower than `-np 1`; otherwise 0. 0: rank 0
  /// only coordinates. Ignored with a single rank, where every job runs on rank 0. Read on rank 0.
  /// Must be at least -1.
  int rank0_workers = -1;
  /// How many jobs rank 0 sends to each worker slot ahead, beyond the one it runs, so that a worker
  /// rank starts its next job the moment one ends instead of after a message's round trip to rank
  /// 0: for jobs that take about as long as that round trip or less (up to a few milliseconds; see
  /// docs/scale-out.md). Rank 0 then has up to `max_workers` × (1 + `queue_ahead`) jobs in flight
  /// (observers see a job start when it is sent), and the jobs sent ahead were chosen by priority
  /// when they were sent: one that becomes available later with a higher priority waits behind
  /// them on that rank. 0 (the default): a worker slot gets its next job when its last one ended,
  /// and priority holds across the ranks as on one machine. Must be at least 0. Read on rank 0.
  int queue_ahead = 0;
  /// Where each job must run: the host that `placement(dataset)` names, or anywhere when it returns
  /// an empty string (or when `placement` is empty, the default). Rank 0 calls it once per dataset
  /// before anything runs, after every rank told it its host (`MPI_Get_processor_name`, or the
  /// environment variable `TASKTREE_MPI_HOST_NAME` where set, meant for tests and for launchers that
  /// give ranks on one machine different identities). A job placed on a host runs only on a rank of
  /// that host: rank 0 if it is there and has a free slot (`rank0_workers`), else the least loaded
  /// worker rank there, as soon as one runs fewer than its share of `max_workers`; jobs to other
  /// hosts or to anywhere do not wait for it. If every rank of its host is lost, the job fails with a
  /// `RemoteError` naming it and the host. See `place_by_first_component` and docs/scale-out.md.
  /// Throws `std::invalid_argument` on every rank, before anything runs, if a placement names a
  /// host where no rank of the run runs jobs (rank 0's message names the dataset and the host).
  /// Read on rank 0.
  Placement placement{};
  /// The ranks that take part: rank 0 of `comm` coordinates, the others run jobs. Every rank of
  /// `comm` must call the entry point.
  MPI_Comm comm = MPI_COMM_WORLD;
};

/// @brief Configuration of `mpi::process_datasets_in_parallel_and_fault_tolerant()`; the same on
/// every rank. The fields and their order are those of `tasktree::FaultTolerantOptions`, so that a
/// designated initializer written for one machine compiles unchanged, except that there is no
/// executor (the worker ranks are the executor), `max_workers` counts jobs across the worker ranks,
/// and the scale-out's own fields come last (`heartbeat_interval` to `comm`).
///
/// Where each field is used: on the worker rank that runs a job, `process_dataset`,
/// `is_job_failure` and `retry_policy.retryable` (so they see the real exception object, with its
/// type); everything else on rank 0 (retries are decided and backoff waits happen there, and a retry
/// may run on another worker rank).
struct FaultTolerantOptions {
  /// Job names, slash-separated, in any order; see `tasktree::FaultTolerantOptions::datasets`.
  std::vector<std::string> datasets{};
  /// The job, run on a worker rank once per attempt; see `FaultTolerantJob`. It must not call MPI.
  FaultTolerantJob process_dataset{};
  /// What a failure does once its retries are exhausted; see `SkipOnError`.
  SkipOnError skip_on_error = SkipOnError::fail;
  /// In `SkipOnError::dataset` mode, true skips the failed dataset's subtree; called on rank 0.
  std::function<bool(std::string_view dataset)> skip_tree_on_error{};
  /// How failed attempts are retried; see `RetryPolicy`. `retryable` runs on the worker rank.
  RetryPolicy retry_policy{};
  /// Which exceptions are job failures; runs on the worker rank, right after the failed attempt.
  ExceptionPredicate is_job_failure{};
  /// Called on rank 0 for the first failure handled as `fail`; see
  /// `tasktree::FaultTolerantOptions::termination_handler`.
  std::function<void()> termination_handler{};
  /// Called on rank 0 with each failure handled as `dataset` or `tree`; the exception is a
  /// `RemoteError` when the job ran on a worker rank.
  std::function<void(const std::exception_ptr& error, std::string_view task_name, std::string_view dataset)>
      append_exception{};
  /// Names the work in log messages.
  std::string task_name{};
  /// Prefixes every log message of the policy layer with `dry_run_marker`.
  bool dry_run = false;
  /// The longest an attempt may run; zero (the default) means no limit. Timed on rank 0 from the
  /// moment the attempt is handed to the transport: past it, rank 0 sends a cancel to the worker
  /// rank that runs the attempt, which signals that attempt's `Retry::stop_token` (and no other),
  /// and the attempt fails with a `TimeoutError` once its reply arrives. See
  /// `tasktree::FaultTolerantOptions::attempt_timeout`.
  std::chrono::nanoseconds attempt_timeout{0};
  /// With `attempt_timeout`: how often rank 0 reports an attempt that still runs past its timeout;
  /// see `tasktree::FaultTolerantOptions::stall_interval`.
  std::chrono::nanoseconds stall_interval = std::chrono::seconds(60);

  /// Which available job starts first; see `tasktree::Options::priority`.
  Priority priority{};
  /// At most this many jobs in flight at once; 0 means rank 0's slots and one per worker rank. See
  /// `mpi::Options::max_workers`.
  int max_workers = 0;
  /// Pacing between submissions; see `tasktree::Options::interval_nanos`.
  IntervalNanos interval_nanos{};
  /// Stops the run when signalled on rank 0.
  std::stop_token stop_token{};
  /// Barrier algorithm on, off or automatic; see `tasktree::Options::enable_barriers`.
  std::optional<bool> enable_barriers{};
  /// The component that marks a barrier; see `tasktree::Options::barrier_name`.
  std::string barrier_name{default_barrier_name};
  /// Time source on rank 0 for pacing, job durations and retry backoff; null means `SteadyClock`.
  std::shared_ptr<Clock> clock{};
  /// Random numbers for the backoff jitter, on rank 0; see `RandomSource`.
  RandomSource random{};
  /// Logging hook on rank 0; see `tasktree::FaultTolerantOptions::log`.
  Logger log{};
  /// Observer hooks on rank 0.
  std::shared_ptr<RunObserver> observer{};
  /// Keeps the coordinator role on rank 0's calling thread; see
  /// `tasktree::Options::callbacks_on_calling_thread`.
  bool callbacks_on_calling_thread = false;
  /// The journal, written and read on rank 0 only; see `tasktree::Options::journal`.
  std::shared_ptr<Journal> journal{};
  /// How often a worker rank says it is alive; see `mpi::Options::heartbeat_interval`.
  std::chrono::nanoseconds heartbeat_interval = std::chrono::seconds(1);
  /// When rank 0 gives a silent worker rank up; see `mpi::Options::heartbeat_timeout`.
  std::chrono::nanoseconds heartbeat_timeout = std::chrono::seconds(30);
  /// How many attempts rank 0 runs itself at once; see `mpi::Options::rank0_workers`.
  int rank0_workers = -1;
  /// How many attempts rank 0 sends to each worker slot ahead; see `mpi::Options::queue_ahead`.
  int queue_ahead = 0;
  /// Where each job's attempts must run; see `mpi::Options::placement`. A job whose host has lost
  /// every rank fails as a job failure that is not retried: `skip_on_error` decides what follows.
  Placement placement{};
  /// Called on rank 0 with each attempt's reply, before the policy layer sees its outcome (so
  /// before the attempt is retried or the job completes): the dataset, the attempt, the rank and
  /// host that ran it, and the bytes the attempt put in `attempt_report()`. It runs on the thread
  /// of rank 0 that waited for that attempt, concurrently with the calls for other jobs (never two
  /// for one job at once). An attempt with no reply (its rank was lost) gets no call. An exception
  /// it throws ends the run, rethrown once every job in flight has returned. Empty: the reports are
  /// dropped.
  std::function<void(AttemptReport& report)> on_attempt_report{};
  /// The ranks that take part; see `mpi::Options::comm`.
  MPI_Comm comm = MPI_COMM_WORLD;
};

/// @brief Runs `options.process_dataset` once per dataset on the worker ranks of `options.comm`,
/// coordinated by rank 0 with the semantics of `ParallelTaskTree::process_datasets_in_parallel()`.
/// Collective: every rank of `comm` calls it, with the same datasets and `max_workers`.
///
/// With a single rank, the jobs run on rank 0 itself, on threads, with the same semantics
/// (including `RemoteError` for a job that throws), so a program works unchanged under
/// `mpirun -np 1` or without `mpirun`.
///
/// @returns on every rank, what rank 0's run returns: true if a completion said `fail` or the run
/// was stopped with work left.
/// @throws std::invalid_argument on every rank, before any job runs, if any rank's options are
/// invalid (that rank's message names the value; the others name that rank), if the ranks
/// disagree on the datasets or `max_workers`, or if a placement names a host where no rank runs
/// jobs.
/// @throws std::logic_error if MPI is not initialized (or already finalized), or on every rank if
/// MPI's thread level is below `MPI_THREAD_FUNNELED` (or it is that level and this is not the
/// thread that initialized MPI).
/// @throws on rank 0, what the run threw (a job's exception as a `RemoteError`), once every job in
/// flight has returned; on the other ranks a `RemoteError` with the same message.
///
/// @code
/// tasktree::RunStats stats;
/// const bool failed = tasktree::mpi::process_datasets_in_parallel(std::move(options), stats);
/// @endcode
inline bool process_datasets_in_parallel(Options options);

/// @brief As above, and fills `stats` on every rank with rank 0's statistics of the run (also when
/// it throws after the run started).
inline bool process_datasets_in_parallel(Options options, RunStats& stats);

/// @brief `tasktree::process_datasets_in_parallel_and_fault_tolerant()` across the ranks of
/// `options.comm`: each attempt of a job runs on a worker rank, rank 0 applies the retry policy and
/// `skip_on_error`. Collective, like `mpi::process_datasets_in_parallel()`.
///
/// A job that throws on a worker is a failure like on one machine: `is_job_failure` and
/// `retry_policy.retryable` classify the exception there, and rank 0 retries it (maybe on another
/// worker rank) and then handles it as `skip_on_error` says. What rank 0 sees of the exception, and
/// passes to `append_exception` or rethrows in `fail` mode, is a `RemoteError` with its message. A
/// failing job never ends the MPI job: in every mode, every rank returns or throws normally.
///
/// @returns on every rank, what rank 0's run returns (see the one-machine version).
/// @throws as `mpi::process_datasets_in_parallel()`, and, for a failure handled as `fail` or a fatal
/// one, a `RemoteError` on every rank.
inline bool process_datasets_in_parallel_and_fault_tolerant(FaultTolerantOptions options);

/// @brief As above, and fills `stats` on every rank with rank 0's statistics of the run (also when
/// it throws after the run started).
inline bool process_datasets_in_parallel_and_fault_tolerant(FaultTolerantOptions options, FaultTolerantStats& stats);

}  // namespace tasktree::mpi

// The definitions need the types above.
#include <tasktree/mpi/run.hpp>
