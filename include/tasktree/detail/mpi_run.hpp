#pragma once
/// @file detail/mpi_run.hpp
/// @brief One run across MPI ranks: the agreement at the start, rank 0's dispatcher (job stubs that
/// wait for replies, and the message loop that sends their requests to the least loaded worker
/// rank), the worker ranks' message loop and job threads, and the shutdown that hands rank 0's
/// result to every rank. Also the definitions of the entry points of mpi.hpp.
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

#include <tasktree/detail/coordinator.hpp>
#include <tasktree/detail/mpi_wire.hpp>
#include <tasktree/executor.hpp>
#include <tasktree/mpi.hpp>
#include <tasktree/options.hpp>
#include <tasktree/parallel_task_tree.hpp>
#include <tasktree/policy.hpp>

#include <fmt/format.h>

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <exception>
#include <functional>
#include <list>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

namespace tasktree::detail {

using namespace std::chrono_literals;

/// Longest sleep of rank 0's loop while jobs are out: bounds the delay before a reply is seen.
inline constexpr std::chrono::microseconds reply_poll_cap = 50us;
/// Longest sleep of a worker's loop while it could receive a job.
inline constexpr std::chrono::microseconds request_poll_cap = 200us;
/// Longest sleep of a worker's loop while its jobs fill its capacity (only a stop can arrive).
inline constexpr std::chrono::microseconds stop_poll_cap = 2ms;

/// Which entry point a rank called, as exchanged in the agreement.
enum class MpiEntryPoint : std::uint32_t { core = 1, policy = 2 };

/// Ends the whole MPI job after the message loop failed (out of memory, a malformed message):
/// the ranks could not agree on an orderly end of the run any more, and waiting would hang them.
[[noreturn]] inline void abort_mpi_job(MPI_Comm comm, int rank, const std::exception_ptr& error) noexcept {
  try {
    fmt::print(stderr, "tasktree: rank {}: the MPI message loop failed: {}; aborting the MPI job\n", rank,
               describe(error));
  } catch (...) {
  }
  MPI_Abort(comm, 70);
  std::abort();  // MPI_Abort does not return; this keeps [[noreturn]] honest
}

/// Throws if an MPI call that may return an error (the caller's error handler decides) did.
inline void check_mpi(int code, std::string_view call) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING] = {};
  int length = 0;
  MPI_Error_string(code, text, &length);
  throw std::runtime_error(fmt::format("tasktree: {} failed: {}", call, std::string_view(text, length)));
}

/// The run's own communicator (a duplicate of the caller's, so our messages never meet theirs), with
/// this rank's place in it. Construction and destruction are collective.
class RunComm {
 public:
  explicit RunComm(MPI_Comm parent) {
    int initialized = 0;
    int finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    if (finalized != 0) throw std::logic_error("tasktree: MPI was already finalized: a run needs MPI");
    if (initialized == 0) {
      throw std::logic_error(
          "tasktree: MPI is not initialized: call MPI_Init_thread (or create a tasktree::mpi::Environment) first");
    }
    if (parent == MPI_COMM_NULL) {
      throw std::invalid_argument("tasktree: invalid comm MPI_COMM_NULL: pass the communicator of the ranks to use");
    }
    int inter = 0;
    check_mpi(MPI_Comm_test_inter(parent, &inter), "MPI_Comm_test_inter");
    if (inter != 0)
      throw std::invalid_argument("tasktree: invalid comm: an intercommunicator; pass an intracommunicator");
    check_mpi(MPI_Comm_dup(parent, &comm), "MPI_Comm_dup");
    // An MPI failure inside a run cannot be recovered from on all ranks alike; let MPI end the job.
    MPI_Comm_set_errhandler(comm, MPI_ERRORS_ARE_FATAL);
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
  }
  RunComm(const RunComm&) = delete;
  RunComm& operator=(const RunComm&) = delete;
  ~RunComm() { MPI_Comm_free(&comm); }

  MPI_Comm comm = MPI_COMM_NULL;
  int rank = 0;
  int size = 1;
};

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

/// `max_workers` as the run uses it: 0 means one job at a time per worker rank.
inline int effective_max_workers(int requested, int ranks) {
  if (requested < 0) {
    throw std::invalid_argument(
        fmt::format("tasktree: invalid max_workers {}: it must be at least 0 (0: one job per worker rank)", requested));
  }
  if (requested > 0) return requested;
  return ranks > 1 ? ranks - 1 : default_max_workers();
}

/// The summary of a validated tree that the ranks compare.
inline mpi_wire::Fingerprint fingerprint(MpiEntryPoint entry_point, std::span<const std::string> sorted_datasets,
                                         int max_workers) noexcept {
  return mpi_wire::Fingerprint{
      .entry_point = static_cast<std::uint32_t>(entry_point),
      .datasets = sorted_datasets.size(),
      .hash = mpi_wire::hash_names(sorted_datasets),
      .max_workers = max_workers,
  };
}

/// Validates a run's datasets and tree options on a rank that builds no tree for the run, exactly
/// as the tree on rank 0 does (throwing what it throws), and returns the run's fingerprint.
inline mpi_wire::Fingerprint validated_fingerprint(MpiEntryPoint entry_point, std::vector<std::string> datasets,
                                                   int max_workers, std::optional<bool> enable_barriers,
                                                   std::string barrier_name) {
  const ParallelTaskTree<SynchronousExecutor> check(tasktree::Options<SynchronousExecutor>{
      .datasets = std::move(datasets),
      .process_dataset = [](std::string_view, std::int64_t) { return CompletionCallbackResult{}; },
      .max_workers = max_workers,
      .enable_barriers = enable_barriers,
      .barrier_name = std::move(barrier_name),
  });
  return fingerprint(entry_point, check.datasets(), max_workers);
}

/// The agreement that starts every run (collective): each rank says whether it could start and
/// what it was asked to run. Throws on every rank, before anything runs, unless all ranks could
/// start the same run; a rank that could not rethrows its own error.
inline void agree_on_run(const RunComm& run, mpi_wire::Fingerprint mine, const std::exception_ptr& rejected) {
  mine.rejected = rejected ? 1 : 0;
  const auto bytes = mine.encode();
  constexpr int size = static_cast<int>(mpi_wire::Fingerprint::size);
  std::vector<char> all(static_cast<std::size_t>(run.size) * mpi_wire::Fingerprint::size);
  MPI_Allgather(bytes.data(), size, MPI_BYTE, all.data(), size, MPI_BYTE, run.comm);
  std::vector<mpi_wire::Fingerprint> prints;
  prints.reserve(static_cast<std::size_t>(run.size));
  for (int r = 0; r < run.size; ++r) {
    prints.push_back(mpi_wire::Fingerprint::decode(std::string_view(
        all.data() + static_cast<std::size_t>(r) * mpi_wire::Fingerprint::size, mpi_wire::Fingerprint::size)));
  }
  if (rejected) std::rethrow_exception(rejected);
  for (int r = 0; r < run.size; ++r) {
    if (prints[r].rejected != 0) {
      throw std::invalid_argument(
          fmt::format("tasktree: rank {} could not start the run (its own exception says why), so no rank did", r));
    }
  }
  const mpi_wire::Fingerprint& root = prints[0];
  for (int r = 1; r < run.size; ++r) {
    const mpi_wire::Fingerprint& other = prints[r];
    if (other.version != root.version) {
      throw std::invalid_argument(fmt::format(
          "tasktree: rank {} speaks MPI protocol version {} and rank 0 version {}: run the same program on every rank",
          r, other.version, root.version));
    }
    if (other.entry_point != root.entry_point) {
      const auto name = [](std::uint32_t entry_point) {
        return entry_point == static_cast<std::uint32_t>(MpiEntryPoint::core)
                   ? "process_datasets_in_parallel"
                   : "process_datasets_in_parallel_and_fault_tolerant";
      };
      throw std::invalid_argument(fmt::format("tasktree: rank {} called tasktree::mpi::{} but rank 0 called {}", r,
                                              name(other.entry_point), name(root.entry_point)));
    }
    if (other.datasets != root.datasets || other.hash != root.hash) {
      throw std::invalid_argument(fmt::format(
          "tasktree: rank {} passed {} datasets{} and rank 0 passed {}: every rank must pass the same datasets "
          "(tasktree::mpi::broadcast copies rank 0's list to every rank)",
          r, other.datasets, other.datasets == root.datasets ? " with different names" : "", root.datasets));
    }
    if (other.max_workers != root.max_workers) {
      throw std::invalid_argument(
          fmt::format("tasktree: rank {} runs with max_workers {} and rank 0 with {}: every rank must pass the same "
                      "max_workers",
                      r, other.max_workers, root.max_workers));
    }
  }
}

/// Sleeps of an idle message loop: a few rounds without sleeping, then doubling from 5 us up to a
/// cap.
class PollBackoff {
 public:
  void reset() noexcept { rounds_ = 0; }
  std::chrono::microseconds next(std::chrono::microseconds cap) noexcept {
    constexpr int spin_rounds = 3;
    const int round = rounds_;
    if (rounds_ < 64) ++rounds_;
    if (round < spin_rounds) return 0us;
    return std::min(cap, std::chrono::microseconds(std::int64_t{5} << std::min(round - spin_rounds, 20)));
  }

 private:
  int rounds_ = 0;
};

/// Messages being sent without blocking; each buffer stays put until MPI is done with it.
class PendingSends {
 public:
  PendingSends() = default;
  PendingSends(const PendingSends&) = delete;
  PendingSends& operator=(const PendingSends&) = delete;
  ~PendingSends() = default;

  void send(MPI_Comm comm, int rank, int tag, std::string bytes) {
    if (bytes.size() > static_cast<std::size_t>(INT_MAX)) {
      throw std::length_error(fmt::format("tasktree: an MPI message of {} bytes is too large", bytes.size()));
    }
    Send& entry = sends_.emplace_back();
    entry.bytes = std::move(bytes);
    MPI_Isend(entry.bytes.data(), static_cast<int>(entry.bytes.size()), MPI_BYTE, rank, tag, comm, &entry.request);
  }
  /// Forgets the sends that completed.
  void test() {
    for (auto it = sends_.begin(); it != sends_.end();) {
      int done = 0;
      MPI_Test(&it->request, &done, MPI_STATUS_IGNORE);
      it = done != 0 ? sends_.erase(it) : std::next(it);
    }
  }
  /// Blocks until every send completed.
  void wait() {
    for (Send& entry : sends_) MPI_Wait(&entry.request, MPI_STATUS_IGNORE);
    sends_.clear();
  }
  [[nodiscard]] bool empty() const noexcept { return sends_.empty(); }

 private:
  struct Send {
    std::string bytes;
    MPI_Request request = MPI_REQUEST_NULL;
  };
  std::list<Send> sends_;  // a list: MPI holds pointers into the buffers
};

/// Receives the next message matching `source` and `tag`, if one has arrived.
inline bool receive(MPI_Comm comm, int source, int tag, std::string& bytes, MPI_Status& status) {
  int arrived = 0;
  MPI_Message message = MPI_MESSAGE_NULL;
  MPI_Improbe(source, tag, comm, &arrived, &message, &status);
  if (arrived == 0) return false;
  int count = 0;
  MPI_Get_count(&status, MPI_BYTE, &count);
  bytes.assign(static_cast<std::size_t>(count), '\0');
  MPI_Mrecv(bytes.data(), count, MPI_BYTE, &message, MPI_STATUS_IGNORE);
  return true;
}

/// Runs one request where the job lives (a worker rank, or rank 0 when it is alone); returns the
/// reply. Called on job threads.
using ExecuteRequest = std::function<mpi_wire::Reply(const mpi_wire::Request& request, const std::stop_token& stop)>;

/// Rank 0's side of the transport: job stubs `call` it from the coordinator's worker threads; the
/// calling thread runs `pump`, the message loop that sends requests and delivers replies.
class Dispatcher {
 public:
  /// Jobs run on worker ranks 1..size-1 of `comm`.
  Dispatcher(MPI_Comm comm, int size) : comm_(comm), size_(size), load_(static_cast<std::size_t>(size), 0) {
    for (int rank = 1; rank < size; ++rank) by_load_.emplace(0, rank);
  }
  /// A single rank: jobs run in this process, by `local`, on the thread that calls.
  explicit Dispatcher(const ExecuteRequest& local) : local_(&local) {}

  Dispatcher(const Dispatcher&) = delete;
  Dispatcher& operator=(const Dispatcher&) = delete;
  ~Dispatcher() = default;

  /// Runs `request` on a worker rank and returns its reply; blocks until it arrives. A stop
  /// request on `stop` reaches the workers (their jobs' stop tokens are signalled). Any thread.
  mpi_wire::Reply call(const mpi_wire::Request& request, const std::stop_token& stop) {
    if (local_ != nullptr) return (*local_)(request, stop);
    Call call{.request = &request};
    std::stop_callback forward(stop, [this]() noexcept { note_stop(); });
    std::unique_lock lock(mutex_);
    new_calls_.push_back(&call);
    wake_.notify_one();
    call.replied.wait(lock, [&call] { return call.done; });
    return std::move(call.reply);
  }

  /// Called once the coordinator has returned (every job stub has returned before).
  void coordinator_finished() noexcept {
    std::lock_guard lock(mutex_);
    coordinator_finished_ = true;
    wake_.notify_one();
  }

  /// The message loop, on the thread that made the run's other MPI calls; returns once the
  /// coordinator has finished. Aborts the MPI job if the loop itself fails.
  void pump() noexcept {
    try {
      pump_until_finished();
    } catch (...) {
      abort_mpi_job(comm_, 0, std::current_exception());
    }
  }

  /// Tells every worker rank how the run ended, and waits until every message left.
  void shutdown(const mpi_wire::Shutdown& result) noexcept {
    try {
      const std::string bytes = mpi_wire::encode(result);
      for (int rank = 1; rank < size_; ++rank) sends_.send(comm_, rank, mpi_wire::shutdown, bytes);
      sends_.wait();
    } catch (...) {
      abort_mpi_job(comm_, 0, std::current_exception());
    }
  }

 private:
  struct Call {
    const mpi_wire::Request* request = nullptr;
    mpi_wire::Reply reply{};
    bool done = false;  // guarded by `mutex_`
    std::condition_variable replied{};
  };

  void note_stop() noexcept {
    std::lock_guard lock(mutex_);
    stop_requested_ = true;
    wake_.notify_one();
  }

  void pump_until_finished() {
    std::vector<Call*> calls;
    PollBackoff backoff;
    while (true) {
      bool stop = false;
      bool finished = false;
      {
        std::lock_guard lock(mutex_);
        calls.swap(new_calls_);
        stop = stop_requested_;
        finished = coordinator_finished_;
      }
      bool busy = !calls.empty();
      for (Call* call : calls) dispatch(*call);
      calls.clear();
      if (stop && !stop_sent_) {
        for (int rank = 1; rank < size_; ++rank) sends_.send(comm_, rank, mpi_wire::stop, std::string());
        stop_sent_ = true;
        busy = true;
      }
      busy = receive_replies() || busy;
      sends_.test();
      // The coordinator finishes only after every stub returned, i.e. got its reply.
      if (finished) return;
      if (busy) {
        backoff.reset();
        continue;
      }
      std::unique_lock lock(mutex_);
      const auto local_event = [this] {
        return !new_calls_.empty() || (stop_requested_ && !stop_sent_) || coordinator_finished_;
      };
      if (outstanding_.empty() && sends_.empty()) {
        wake_.wait(lock, local_event);  // nothing can arrive from the workers now
      } else if (const auto nap = backoff.next(reply_poll_cap); nap > 0us) {
        wake_.wait_for(lock, nap, local_event);
      } else {
        lock.unlock();
        std::this_thread::yield();
      }
    }
  }

  /// Sends `call`'s request to the least loaded worker rank (the lowest such rank).
  void dispatch(Call& call) {
    const auto least = by_load_.begin();
    const auto [load, rank] = *least;
    mpi_wire::Request request = *call.request;
    request.id = next_id_++;
    sends_.send(comm_, rank, mpi_wire::request, mpi_wire::encode(request));
    by_load_.erase(least);
    by_load_.emplace(load + 1, rank);
    load_[static_cast<std::size_t>(rank)] = load + 1;
    outstanding_.emplace(request.id, &call);
  }

  /// Delivers every reply that has arrived; true if there was one.
  bool receive_replies() {
    bool any = false;
    MPI_Status status;
    while (receive(comm_, MPI_ANY_SOURCE, mpi_wire::outcome, bytes_, status)) {
      any = true;
      const int rank = status.MPI_SOURCE;
      mpi_wire::Reply reply = mpi_wire::decode_reply(bytes_, rank);
      const auto it = outstanding_.find(reply.id);
      if (it == outstanding_.end()) {
        throw std::runtime_error(fmt::format("tasktree: rank {} replied to unknown job {}", rank, reply.id));
      }
      Call* call = it->second;
      outstanding_.erase(it);
      int& load = load_[static_cast<std::size_t>(rank)];
      by_load_.erase({load, rank});
      by_load_.emplace(--load, rank);
      std::lock_guard lock(mutex_);
      call->reply = std::move(reply);
      call->done = true;
      call->replied.notify_one();  // under the lock: the stub destroys `call` once it sees `done`
    }
    return any;
  }

  const ExecuteRequest* local_ = nullptr;
  MPI_Comm comm_ = MPI_COMM_NULL;
  int size_ = 1;

  // Shared with the job stubs and the coordinator, guarded by `mutex_`.
  std::mutex mutex_;
  std::condition_variable wake_;  // the message loop sleeps on it
  std::vector<Call*> new_calls_;
  bool stop_requested_ = false;
  bool coordinator_finished_ = false;

  // The message loop's own.
  std::unordered_map<std::uint64_t, Call*> outstanding_;
  std::uint64_t next_id_ = 1;
  std::vector<int> load_;                  // per rank: jobs out
  std::set<std::pair<int, int>> by_load_;  // {load, rank} of every worker rank
  PendingSends sends_;
  std::string bytes_;
  bool stop_sent_ = false;
};

/// A worker rank's side of a run: the message loop on the calling thread, the jobs on threads of
/// their own.
class WorkerLoop {
 public:
  /// `capacity`: the most jobs rank 0 sends this rank at once.
  WorkerLoop(MPI_Comm comm, int rank, const ExecuteRequest& execute, std::size_t capacity)
      : comm_(comm), rank_(rank), execute_(execute), capacity_(capacity) {}
  WorkerLoop(const WorkerLoop&) = delete;
  WorkerLoop& operator=(const WorkerLoop&) = delete;
  ~WorkerLoop() { close_threads(); }

  /// Runs jobs until rank 0 ends the run; returns how it ended. Aborts the MPI job if the loop
  /// itself fails.
  mpi_wire::Shutdown run() noexcept {
    try {
      mpi_wire::Shutdown shutdown = loop();
      close_threads();
      sends_.wait();
      return shutdown;
    } catch (...) {
      abort_mpi_job(comm_, rank_, std::current_exception());
    }
  }

 private:
  struct Task {
    std::uint64_t id = 0;
    std::int64_t submit_count = 0;
    std::int32_t retry_count = 0;
    std::string dataset;
    std::string tid;
  };

  mpi_wire::Shutdown loop() {
    PollBackoff backoff;
    std::vector<std::string> outgoing;
    MPI_Status status;
    while (true) {
      bool busy = false;
      std::optional<mpi_wire::Shutdown> shutdown;
      while (!shutdown && receive(comm_, 0, MPI_ANY_TAG, bytes_, status)) {
        busy = true;
        switch (status.MPI_TAG) {
          case mpi_wire::request: start(mpi_wire::decode_request(bytes_)); break;
          case mpi_wire::stop: stop_.request_stop(); break;
          case mpi_wire::shutdown: shutdown = mpi_wire::decode_shutdown(bytes_); break;
          default: throw std::runtime_error(fmt::format("tasktree: unexpected MPI message tag {}", status.MPI_TAG));
        }
      }
      {
        std::lock_guard lock(mutex_);
        outgoing.swap(outbox_);
      }
      busy = busy || !outgoing.empty();
      for (std::string& reply : outgoing) sends_.send(comm_, 0, mpi_wire::outcome, std::move(reply));
      outgoing.clear();
      sends_.test();
      if (shutdown) {
        std::lock_guard lock(mutex_);
        // Rank 0 ends the run only after every reply arrived.
        if (running_ != 0) throw std::runtime_error("tasktree: rank 0 ended the run while jobs were running here");
        return std::move(*shutdown);
      }
      if (busy) {
        backoff.reset();
        continue;
      }
      std::unique_lock lock(mutex_);
      const auto cap = running_ >= capacity_ ? stop_poll_cap : request_poll_cap;
      if (const auto nap = backoff.next(cap); nap > 0us) {
        wake_.wait_for(lock, nap, [this] { return !outbox_.empty(); });
      } else {
        lock.unlock();
        std::this_thread::yield();
      }
    }
  }

  /// Queues a job for a job thread, starting one if none is idle.
  void start(const mpi_wire::Request& request) {
    std::unique_lock lock(mutex_);
    tasks_.push_back(Task{
        .id = request.id,
        .submit_count = request.submit_count,
        .retry_count = request.retry_count,
        .dataset = std::string(request.dataset),
        .tid = std::string(request.tid),
    });
    ++running_;
    if (tasks_.size() > idle_) {
      try {
        threads_.emplace_back([this] { work(); });
      } catch (...) {  // no thread for it: the job fails, the run goes on
        tasks_.pop_back();
        --running_;
        mpi_wire::Reply reply{.id = request.id, .kind = mpi_wire::Reply::threw};
        reply.text = fmt::format("tasktree: rank {} could not start a thread for {:?}: {}", rank_, request.dataset,
                                 describe(std::current_exception()));
        outbox_.push_back(mpi_wire::encode(reply));
        return;
      }
    }
    task_ready_.notify_one();
  }

  /// A job thread: runs queued jobs until the run ends.
  void work() {
    std::unique_lock lock(mutex_);
    while (true) {
      ++idle_;
      task_ready_.wait(lock, [this] { return closing_ || !tasks_.empty(); });
      --idle_;
      if (tasks_.empty()) return;  // closing
      const Task task = std::move(tasks_.front());
      tasks_.pop_front();
      lock.unlock();
      std::string reply = run_job(task);
      lock.lock();
      outbox_.push_back(std::move(reply));
      --running_;
      wake_.notify_one();
    }
  }

  /// Runs one job and encodes its reply.
  std::string run_job(const Task& task) {
    const mpi_wire::Request request{
        .id = task.id,
        .submit_count = task.submit_count,
        .retry_count = task.retry_count,
        .dataset = task.dataset,
        .tid = task.tid,
    };
    mpi_wire::Reply reply;
    try {
      reply = execute_(request, stop_.get_token());
    } catch (...) {
      reply = mpi_wire::Reply{.kind = mpi_wire::Reply::threw, .text = describe(std::current_exception())};
    }
    reply.id = task.id;
    std::string bytes = mpi_wire::encode(reply);
    if (bytes.size() > static_cast<std::size_t>(INT_MAX)) {
      const std::size_t size = bytes.size();
      bytes = mpi_wire::encode(mpi_wire::Reply{
          .id = task.id,
          .kind = mpi_wire::Reply::threw,
          .text = fmt::format("tasktree: the outcome of {:?} is {} bytes, more than an MPI message carries (2 GiB)",
                              task.dataset, size),
      });
    }
    return bytes;
  }

  void close_threads() noexcept {
    {
      std::lock_guard lock(mutex_);
      closing_ = true;
    }
    task_ready_.notify_all();
    for (std::thread& thread : threads_) {
      if (thread.joinable()) thread.join();
    }
    threads_.clear();
  }

  MPI_Comm comm_;
  int rank_;
  const ExecuteRequest& execute_;
  std::size_t capacity_;
  std::stop_source stop_;  // the jobs' stop token: signalled by rank 0's stop message

  // Shared with the job threads, guarded by `mutex_`.
  std::mutex mutex_;
  std::condition_variable wake_;        // the message loop sleeps on it
  std::condition_variable task_ready_;  // idle job threads sleep on it
  std::deque<Task> tasks_;
  std::vector<std::string> outbox_;
  std::size_t idle_ = 0;
  std::size_t running_ = 0;  // received and not yet replied to
  bool closing_ = false;

  // The message loop's own.
  std::vector<std::thread> threads_;
  PendingSends sends_;
  std::string bytes_;
};

/// Runs a validated run on this rank: rank 0 calls `coordinate(dispatcher, stats)` (on a thread of
/// its own while the calling thread pumps messages, or on the calling thread when it is alone);
/// worker ranks run jobs with `execute` until rank 0 sends the result. Every rank returns rank 0's
/// result and fills `stats` with its statistics.
template <class Coordinate>
bool run_on_ranks(const RunComm& run, int max_workers, const ExecuteRequest& execute, Coordinate&& coordinate,
                  FaultTolerantStats& stats) {
  if (run.size == 1) {
    Dispatcher local(execute);
    return coordinate(local, stats);
  }
  if (run.rank != 0) {
    const auto workers = static_cast<std::size_t>(run.size - 1);
    const std::size_t capacity = (static_cast<std::size_t>(max_workers) + workers - 1) / workers;
    WorkerLoop worker(run.comm, run.rank, execute, capacity);
    mpi_wire::Shutdown result = worker.run();
    stats = result.stats;
    if (result.threw) throw mpi::RemoteError(result.message, result.origin);
    return result.failed;
  }
  Dispatcher dispatcher(run.comm, run.size);
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
  mpi_wire::Shutdown result{.failed = failed, .stats = run_stats};
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

/// A job's exception on a worker rank, as rank 0's policy layer sees it: with the worker's verdict
/// on whether it is a job failure and worth retrying.
class RemoteAttemptError final : public mpi::RemoteError {
 public:
  RemoteAttemptError(const mpi_wire::Reply& reply)
      : mpi::RemoteError(reply.text, reply.rank), job_failure_(reply.job_failure), retryable_(reply.retryable) {}
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

/// One attempt of a policy-level job on the rank that runs it; a failure is classified here, where
/// the exception object exists.
inline mpi_wire::Reply run_remote_attempt(const mpi::FaultTolerantOptions& options, const mpi_wire::Request& request,
                                          const std::stop_token& stop) {
  std::exception_ptr error;
  try {
    const bool no_skip = options.process_dataset(
        request.dataset, request.tid,
        Retry{.count = request.retry_count, .submit_count = request.submit_count, .stop_token = stop});
    return mpi_wire::Reply{.no_skip = no_skip};
  } catch (...) {
    error = std::current_exception();
  }
  mpi_wire::Reply reply{.kind = mpi_wire::Reply::threw, .text = describe(error)};
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

inline bool process_datasets_in_parallel(Options options) {
  RunStats stats;
  return process_datasets_in_parallel(std::move(options), stats);
}

inline bool process_datasets_in_parallel(Options options, RunStats& stats) {
  stats = RunStats{};
  detail::RunComm run(options.comm);
  // Rank 0's jobs are stubs that run the real job elsewhere, through the dispatcher of the run.
  detail::Dispatcher* dispatcher = nullptr;
  std::optional<ParallelTaskTree<>> tree;
  std::exception_ptr rejected;
  detail::mpi_wire::Fingerprint mine;
  int max_workers = 0;
  try {
    detail::check_thread_level();
    max_workers = detail::effective_max_workers(options.max_workers, run.size);
    if (!options.process_dataset) throw std::invalid_argument("tasktree: process_dataset is not set");
    if (run.rank == 0) {
      tree.emplace(tasktree::Options<>{
          .datasets = std::move(options.datasets),
          .process_dataset = [&dispatcher, &completion = options.completion](
                                 std::string_view dataset, std::int64_t submit_count,
                                 const std::stop_token& stop) -> CompletionCallback {
            detail::mpi_wire::Reply reply = dispatcher->call({.submit_count = submit_count, .dataset = dataset}, stop);
            if (reply.kind == detail::mpi_wire::Reply::threw) throw RemoteError(reply.text, reply.rank);
            return CompletionCallback(
                [&completion, dataset,
                 outcome = JobOutcome{.no_skip = reply.no_skip, .fail = reply.fail, .payload = std::move(reply.text)}](
                    InFlight& in_flight) mutable {
                  if (completion) return completion(dataset, outcome, in_flight);
                  return CompletionCallbackResult{.no_skip = outcome.no_skip, .fail = outcome.fail};
                });
          },
          .priority = std::move(options.priority),
          .max_workers = max_workers,
          .interval_nanos = std::move(options.interval_nanos),
          .stop_token = options.stop_token,
          .enable_barriers = options.enable_barriers,
          .barrier_name = options.barrier_name,
          .clock = std::move(options.clock),
          .log = std::move(options.log),
          .observer = std::move(options.observer),
      });
      mine = detail::fingerprint(detail::MpiEntryPoint::core, tree->datasets(), max_workers);
    } else {
      // A worker needs no tree.
      mine = detail::validated_fingerprint(detail::MpiEntryPoint::core, std::move(options.datasets), max_workers,
                                           options.enable_barriers, options.barrier_name);
    }
  } catch (...) {
    rejected = std::current_exception();
  }
  detail::agree_on_run(run, mine, rejected);

  const detail::ExecuteRequest execute = [&job = options.process_dataset](const detail::mpi_wire::Request& request,
                                                                          const std::stop_token& stop) {
    return detail::run_remote_job(job, request, stop);
  };
  FaultTolerantStats all_stats;
  try {
    const bool failed = detail::run_on_ranks(
        run, max_workers, execute,
        [&](detail::Dispatcher& transport, FaultTolerantStats& run_stats) {
          dispatcher = &transport;
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

inline bool process_datasets_in_parallel_and_fault_tolerant(FaultTolerantOptions options) {
  FaultTolerantStats stats;
  return process_datasets_in_parallel_and_fault_tolerant(std::move(options), stats);
}

inline bool process_datasets_in_parallel_and_fault_tolerant(FaultTolerantOptions options, FaultTolerantStats& stats) {
  stats = FaultTolerantStats{};
  detail::RunComm run(options.comm);
  std::exception_ptr rejected;
  detail::mpi_wire::Fingerprint mine;
  int max_workers = 0;
  try {
    detail::check_thread_level();
    max_workers = detail::effective_max_workers(options.max_workers, run.size);
    detail::validate_policy(options.process_dataset, options.skip_on_error, options.retry_policy);
    // Validated as the policy layer will on rank 0, which keeps its datasets for the run; a worker
    // needs no tree and gives them away.
    mine = detail::validated_fingerprint(detail::MpiEntryPoint::policy,
                                         run.rank == 0 ? options.datasets : std::move(options.datasets), max_workers,
                                         options.enable_barriers, options.barrier_name);
  } catch (...) {
    rejected = std::current_exception();
  }
  detail::agree_on_run(run, mine, rejected);

  const detail::ExecuteRequest execute = [&options](const detail::mpi_wire::Request& request,
                                                    const std::stop_token& stop) {
    return detail::run_remote_attempt(options, request, stop);
  };
  const auto coordinate = [&](detail::Dispatcher& dispatcher, FaultTolerantStats& run_stats) {
    RetryPolicy retry = options.retry_policy;
    retry.retryable = [](const std::exception_ptr& error) {
      return detail::RemoteAttemptError::says(error, &detail::RemoteAttemptError::retryable);
    };
    return tasktree::process_datasets_in_parallel_and_fault_tolerant(
        tasktree::FaultTolerantOptions<>{
            .datasets = std::move(options.datasets),
            .process_dataset = [&dispatcher](std::string_view dataset, std::string_view tid,
                                             const Retry& attempt) -> bool {
              detail::mpi_wire::Reply reply = dispatcher.call(
                  {.submit_count = attempt.submit_count, .retry_count = attempt.count, .dataset = dataset, .tid = tid},
                  attempt.stop_token);
              if (reply.kind == detail::mpi_wire::Reply::threw) throw detail::RemoteAttemptError(reply);
              return reply.no_skip;
            },
            .skip_on_error = options.skip_on_error,
            .skip_tree_on_error = std::move(options.skip_tree_on_error),
            .retry_policy = std::move(retry),
            .is_job_failure =
                [](const std::exception_ptr& error) {
                  return detail::RemoteAttemptError::says(error, &detail::RemoteAttemptError::job_failure);
                },
            .termination_handler = std::move(options.termination_handler),
            .append_exception = std::move(options.append_exception),
            .task_name = std::move(options.task_name),
            .dry_run = options.dry_run,
            .priority = std::move(options.priority),
            .max_workers = max_workers,
            .interval_nanos = std::move(options.interval_nanos),
            .stop_token = options.stop_token,
            .enable_barriers = options.enable_barriers,
            .barrier_name = std::move(options.barrier_name),
            .clock = std::move(options.clock),
            .random = std::move(options.random),
            .log = std::move(options.log),
            .observer = std::move(options.observer),
        },
        run_stats);
  };
  return detail::run_on_ranks(run, max_workers, execute, coordinate, stats);
}

}  // namespace tasktree::mpi
