#pragma once
/// @file mpi/transport.hpp
/// @brief What every message loop of an MPI run stands on: the run's own communicator, the check
/// of MPI's state, non-blocking sends, receiving a whole message, and the backoff
/// of an idle loop.

#include <tasktree/detail/error_text.hpp>
#include <tasktree/mpi/wire.hpp>

#include <fmt/format.h>

#include <mpi.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <iterator>
#include <list>
#include <span>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

namespace tasktree::detail {

using namespace std::chrono_literals;

/// Longest sleep of rank 0's loop while jobs are out: bounds the delay before a reply is seen.
inline constexpr std::chrono::microseconds reply_poll_cap = 50us;
/// Longest sleep of a worker's loop while it could receive a job.
inline constexpr std::chrono::microseconds request_poll_cap = 200us;
/// Longest sleep of a worker's loop while its jobs fill its capacity (only a stop can arrive).
inline constexpr std::chrono::microseconds stop_poll_cap = 2ms;

/// The signal that `mpi::Environment::stop_on_signals` caught on this rank, or 0: set by the
/// handler, read by the message loops (a lock-free atomic: safe in a signal handler).
inline std::atomic<int> caught_stop_signal{0};
static_assert(std::atomic<int>::is_always_lock_free);
/// True once `stop_on_signals` installed its handlers: the loops then look at `caught_stop_signal`
/// at least every `signal_poll_cap`.
inline std::atomic<bool> stop_signals_installed{false};
/// Longest a run goes without looking whether a signal asked it to stop.
inline constexpr std::chrono::milliseconds signal_poll_cap{50};

/// The handler `stop_on_signals` installs: notes the first signal; the same signal again ends the
/// process as it would have without the handler. Only async-signal-safe calls.
inline void on_stop_signal(int signal) noexcept {
  int expected = 0;
  if (caught_stop_signal.compare_exchange_strong(expected, signal) || expected != signal) return;
  std::signal(signal, SIG_DFL);
  std::raise(signal);
}

/// The name of a signal, e.g. "SIGTERM".
inline std::string signal_name(int signal) {
  switch (signal) {
    case SIGINT: return "SIGINT";
    case SIGTERM: return "SIGTERM";
    case SIGHUP: return "SIGHUP";
    case SIGQUIT: return "SIGQUIT";
    case SIGUSR1: return "SIGUSR1";
    case SIGUSR2: return "SIGUSR2";
    default: return fmt::format("signal {}", signal);
  }
}

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
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    // Rank 0 outlives a worker rank that fails (see docs/scale-out.md, "When a rank is lost"): MPI
    // returns the errors of its calls, and a send that fails marks its destination lost. On a
    // worker, an MPI failure (rank 0 gone) leaves nothing to do; MPI ends the job.
    MPI_Comm_set_errhandler(comm, rank == 0 ? MPI_ERRORS_RETURN : MPI_ERRORS_ARE_FATAL);
  }
  RunComm(const RunComm&) = delete;
  RunComm& operator=(const RunComm&) = delete;
  ~RunComm() { MPI_Comm_free(&comm); }

  MPI_Comm comm = MPI_COMM_NULL;
  int rank = 0;
  int size = 1;
};

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
///
/// Errors: on a communicator whose error handler returns errors (rank 0's), a send that MPI says
/// failed names its destination, which the caller may then treat as lost (`abandon`); elsewhere MPI
/// ends the job first.
class PendingSends {
 public:
  PendingSends() = default;
  PendingSends(const PendingSends&) = delete;
  PendingSends& operator=(const PendingSends&) = delete;
  /// A send still pending here was abandoned or never waited for: MPI may still read its buffer
  /// (it cannot take a send back), so the buffer is kept, reachable, until the process ends.
  ~PendingSends() {
    test();
    sends_.splice(sends_.end(), abandoned_);
    if (sends_.empty()) return;
    static std::list<Send>* const kept = new std::list<Send>();  // NOLINT: deliberately never freed
    for (Send& entry : sends_) MPI_Request_free(&entry.request);
    kept->splice(kept->end(), sends_);
  }

  /// Starts sending `bytes` to `rank`; false if MPI returned an error for it (nothing is pending).
  bool send(MPI_Comm comm, int rank, int tag, std::string bytes) {
    if (bytes.size() > static_cast<std::size_t>(INT_MAX)) {
      throw std::length_error(fmt::format("tasktree: an MPI message of {} bytes is too large", bytes.size()));
    }
    Send& entry = sends_.emplace_back();
    entry.bytes = std::move(bytes);
    entry.rank = rank;
    if (MPI_Isend(entry.bytes.data(), static_cast<int>(entry.bytes.size()), MPI_BYTE, rank, tag, comm,
                  &entry.request) != MPI_SUCCESS) {
      sends_.pop_back();
      return false;
    }
    return true;
  }
  /// Starts sending `items` (encoded messages of one kind) to `rank` as batches (see
  /// `mpi_wire::encode_batch`) of at most `mpi_wire::batch_bytes`, or one item each when larger;
  /// false if MPI returned an error for one (the rest are not sent). Empties `items`.
  bool send_batches(MPI_Comm comm, int rank, int tag, std::vector<std::string>& items) {
    std::size_t first = 0;
    bool sent = true;
    while (sent && first < items.size()) {
      std::size_t last = first + 1;
      std::size_t bytes = items[first].size();
      while (last < items.size() && bytes + items[last].size() <= mpi_wire::batch_bytes) bytes += items[last++].size();
      sent = send(comm, rank, tag, mpi_wire::encode_batch(std::span(items).subspan(first, last - first)));
      first = last;
    }
    items.clear();
    return sent;
  }
  /// Forgets the sends that completed; returns the destination of one that failed, or -1.
  int test() {
    int failed = -1;
    for (auto it = sends_.begin(); it != sends_.end();) {
      int done = 0;
      if (MPI_Test(&it->request, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS) {
        failed = it->rank;
        done = 1;
      }
      it = done != 0 ? sends_.erase(it) : std::next(it);
    }
    for (auto it = abandoned_.begin(); it != abandoned_.end();) {
      int done = 0;
      if (MPI_Test(&it->request, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS) done = 1;
      it = done != 0 ? abandoned_.erase(it) : std::next(it);
    }
    return failed;
  }
  /// Blocks until every send completed.
  void wait() {
    for (Send& entry : sends_) MPI_Wait(&entry.request, MPI_STATUS_IGNORE);
    sends_.clear();
  }
  /// Stops waiting for the sends to `rank` (a rank that will never receive them, or whose receipt
  /// no longer matters): `test` still forgets each when it completes, `wait` does not wait for it.
  void abandon(int rank) {
    for (auto it = sends_.begin(); it != sends_.end();) {
      const auto next = std::next(it);
      if (it->rank == rank) abandoned_.splice(abandoned_.end(), sends_, it);
      it = next;
    }
  }
  [[nodiscard]] bool empty() const noexcept { return sends_.empty(); }

 private:
  struct Send {
    std::string bytes;
    MPI_Request request = MPI_REQUEST_NULL;
    int rank = 0;
  };
  std::list<Send> sends_;      // a list: MPI holds pointers into the buffers
  std::list<Send> abandoned_;  // not waited for
};

/// Receives the next message matching `source` and `tag`, if one has arrived.
inline bool receive(MPI_Comm comm, int source, int tag, std::string& bytes, MPI_Status& status) {
  int arrived = 0;
  MPI_Message message = MPI_MESSAGE_NULL;
  check_mpi(MPI_Improbe(source, tag, comm, &arrived, &message, &status), "MPI_Improbe");
  if (arrived == 0) return false;
  int count = 0;
  MPI_Get_count(&status, MPI_BYTE, &count);
  bytes.assign(static_cast<std::size_t>(count), '\0');
  check_mpi(MPI_Mrecv(bytes.data(), count, MPI_BYTE, &message, MPI_STATUS_IGNORE), "MPI_Mrecv");
  return true;
}

/// Runs one request where the job lives (a worker rank, or rank 0 when it is alone); returns the
/// reply. Called on job threads.
using ExecuteRequest = std::function<mpi_wire::Reply(const mpi_wire::Request& request, const std::stop_token& stop)>;

}  // namespace tasktree::detail
