#pragma once
/// @file mpi/dispatcher.hpp
/// @brief Rank 0's side of an MPI run: the job stubs that hand requests to the message loop and wait
/// for replies, and the loop that sends each request to the least loaded worker rank.

#include <tasktree/mpi/transport.hpp>
#include <tasktree/mpi/wire.hpp>

#include <mpi.h>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <mutex>
#include <set>
#include <stop_token>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace tasktree::detail {

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
  /// request on `stop` reaches the worker that runs this request (its job's stop token is
  /// signalled), so `stop` may be the run's token or one attempt's. Any thread.
  mpi_wire::Reply call(const mpi_wire::Request& request, const std::stop_token& stop) {
    if (local_ != nullptr) return (*local_)(request, stop);
    Call call{.request = &request};
    std::stop_callback forward(stop, [this, &call]() noexcept { note_cancel(call); });
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
    bool done = false;       // guarded by `mutex_`
    bool cancel = false;     // guarded by `mutex_`: its stop token was signalled
    bool cancel_sent = false;  // the message loop's own, like the two below
    std::uint64_t id = 0;
    int rank = 0;
    std::condition_variable replied{};
  };

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
    cancels_.clear();
    {
      std::lock_guard lock(mutex_);
      for (const auto& [id, call] : outstanding_) {
        if (call->cancel && !call->cancel_sent) {
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
    while (true) {
      bool cancel = false;
      bool finished = false;
      {
        std::lock_guard lock(mutex_);
        calls.swap(new_calls_);
        cancel = std::exchange(cancel_pending_, false);
        finished = coordinator_finished_;
      }
      bool busy = !calls.empty() || cancel;
      for (Call* call : calls) dispatch(*call);
      calls.clear();
      if (cancel) send_cancels();
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
        return !new_calls_.empty() || cancel_pending_ || coordinator_finished_;
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
    call.id = request.id;
    call.rank = rank;
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
  bool cancel_pending_ = false;  // some call's stop token was signalled since the loop last looked
  bool coordinator_finished_ = false;

  // The message loop's own.
  std::unordered_map<std::uint64_t, Call*> outstanding_;
  std::uint64_t next_id_ = 1;
  std::vector<int> load_;                  // per rank: jobs out
  std::set<std::pair<int, int>> by_load_;  // {load, rank} of every worker rank
  PendingSends sends_;
  std::string bytes_;
  std::vector<std::pair<std::uint64_t, int>> cancels_;  // {id, rank} to send
};

}  // namespace tasktree::detail
