#pragma once
/// @file mpi/worker_loop.hpp
/// @brief A worker rank's side of an MPI run: the message loop on the calling thread, and the jobs
/// on threads of their own, started as the rank needs them and joined when the run ends.

#include <tasktree/mpi/transport.hpp>
#include <tasktree/mpi/wire.hpp>

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

namespace tasktree::detail {

/// A worker rank's side of a run: the message loop on the calling thread, the jobs on threads of
/// their own.
class WorkerLoop {
 public:
  /// A job thread wakes the message loop for each reply while its jobs take at least this long;
  /// shorter jobs' replies go out together (see `work`).
  static constexpr std::chrono::microseconds worth_a_wake{20};

  /// `capacity`: the most jobs this rank runs at once; `most_sent`: the most that rank 0 sends it
  /// at once (more than `capacity` with `queue_ahead`: those wait their turn here); `heartbeat`: how often to tell rank
  /// 0 that this rank is alive when it sent nothing else (zero: never).
  WorkerLoop(MPI_Comm comm, int rank, const ExecuteRequest& execute, std::size_t capacity, std::size_t most_sent,
             std::chrono::nanoseconds heartbeat)
      : comm_(comm),
        rank_(rank),
        execute_(execute),
        capacity_(std::max<std::size_t>(capacity, 1)),
        most_sent_(most_sent),
        heartbeat_(heartbeat) {}
  WorkerLoop(const WorkerLoop&) = delete;
  WorkerLoop& operator=(const WorkerLoop&) = delete;
  ~WorkerLoop() { close_threads(); }

  /// Runs jobs until rank 0 ends the run; returns how it ended. Aborts the MPI job if the loop
  /// itself fails.
  mpi_wire::Shutdown run() noexcept {
    try {
      mpi_wire::Shutdown shutdown = loop();
      if (shutdown.lost) {  // rank 0 gave this rank up: stop what still runs, drop its replies
        std::lock_guard lock(mutex_);
        for (auto& [id, stop] : live_) stop.request_stop();
      }
      close_threads();
      if (shutdown.lost) {
        sends_.abandon(0);  // rank 0 reads no more from this rank
      } else {
        sends_.wait();
      }
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
    std::stop_source stop;  // signalled by rank 0's cancel of this job
  };

  mpi_wire::Shutdown loop() {
    PollBackoff backoff;
    std::vector<std::string> outgoing;
    MPI_Status status;
    auto last_sent = std::chrono::steady_clock::now();
    while (true) {
      bool busy = false;
      std::optional<mpi_wire::Shutdown> shutdown;
      while (!shutdown && receive(comm_, 0, MPI_ANY_TAG, bytes_, status)) {
        busy = true;
        switch (status.MPI_TAG) {
          case mpi_wire::request: start(mpi_wire::decode_batch(bytes_)); break;
          case mpi_wire::cancel: cancel(mpi_wire::decode_cancel(bytes_)); break;
          case mpi_wire::shutdown: shutdown = mpi_wire::decode_shutdown(bytes_); break;
          default: throw std::runtime_error(fmt::format("tasktree: unexpected MPI message tag {}", status.MPI_TAG));
        }
      }
      {
        std::lock_guard lock(mutex_);
        outgoing.swap(outbox_);
        loop_woken_ = false;
      }
      const bool replied = !outgoing.empty();
      busy = busy || replied;
      sends_.send_batches(comm_, 0, mpi_wire::outcome, outgoing);
      if (heartbeat_ > std::chrono::nanoseconds(0)) {
        const auto now = std::chrono::steady_clock::now();
        if (replied) {
          last_sent = now;
        } else if (now - last_sent >= heartbeat_) {
          sends_.send(comm_, 0, mpi_wire::heartbeat, std::string());
          last_sent = now;
        }
      }
      outgoing.clear();
      if (const int signal = caught_stop_signal.load(std::memory_order_relaxed); signal != 0 && !stop_sent_) {
        sends_.send(comm_, 0, mpi_wire::stop, mpi_wire::encode_signal(signal));  // rank 0 stops the run
        stop_sent_ = true;
      }
      sends_.test();
      if (shutdown) {
        std::lock_guard lock(mutex_);
        // Rank 0 ends the run only after every reply arrived, unless it gave this rank up.
        if (running_ != 0 && !shutdown->lost) {
          throw std::runtime_error("tasktree: rank 0 ended the run while jobs were running here");
        }
        return std::move(*shutdown);
      }
      if (busy) {
        backoff.reset();
        continue;
      }
      std::unique_lock lock(mutex_);
      const auto cap = running_ >= most_sent_ ? stop_poll_cap : request_poll_cap;
      if (const auto nap = backoff.next(cap); nap > 0us) {
        wake_.wait_for(lock, nap, [this] { return !outbox_.empty(); });
      } else {
        lock.unlock();
        std::this_thread::yield();
      }
    }
  }

  /// Signals the stop token of job `id`, if it has not replied yet (a cancel may cross its reply).
  void cancel(std::uint64_t id) {
    std::stop_source stop;
    {
      std::lock_guard lock(mutex_);
      const auto it = live_.find(id);
      if (it == live_.end()) return;
      stop = it->second;
    }
    stop.request_stop();  // outside the lock: it runs the job's stop callbacks
  }

  /// Queues the jobs of a batch of requests for the job threads, starting threads for them while
  /// fewer than `capacity_` run, and wakes idle ones.
  void start(const std::vector<std::string_view>& items) {
    std::unique_lock lock(mutex_);
    for (const std::string_view item : items) start(mpi_wire::decode_request(item));
    if (idle_ == 0) return;
    if (items.size() > 1) {
      task_ready_.notify_all();
    } else {
      task_ready_.notify_one();
    }
  }

  /// Queues a job for a job thread, starting one if none is idle (under `mutex_`).
  void start(const mpi_wire::Request& request) {
    tasks_.push_back(Task{
        .id = request.id,
        .submit_count = request.submit_count,
        .retry_count = request.retry_count,
        .dataset = std::string(request.dataset),
        .tid = std::string(request.tid),
        .stop = std::stop_source(),
    });
    live_.emplace(request.id, tasks_.back().stop);
    ++running_;
    // At most `capacity_` job threads: jobs beyond it wait here, sent ahead by rank 0 (see
    // `mpi::Options::queue_ahead`), and the next starts as soon as a job thread is done.
    if (tasks_.size() > idle_ + starting_ && threads_.size() < capacity_) {
      try {
        threads_.emplace_back([this] { work(); });
        ++starting_;
      } catch (...) {  // no thread for it: the job fails, the run goes on
        live_.erase(request.id);
        tasks_.pop_back();
        --running_;
        mpi_wire::Reply reply{.id = request.id, .kind = mpi_wire::Reply::threw};
        reply.text = fmt::format("tasktree: rank {} could not start a thread for {:?}: {}", rank_, request.dataset,
                                 describe(std::current_exception()));
        outbox_.push_back(mpi_wire::encode(reply));
        return;
      }
    }
  }

  /// A job thread: runs queued jobs until the run ends.
  ///
  /// Replies of short jobs (shorter than `worth_a_wake`, lately) go out together: the thread wakes
  /// the message loop when it runs out of jobs, when a reply has waited `worth_a_wake`, or at once
  /// while jobs are long; else the loop finds them when it looks on its own (every
  /// `request_poll_cap` at most). A wake costs each side a trip through the kernel, more than a
  /// job of a few microseconds takes.
  void work() {
    std::unique_lock lock(mutex_);
    --starting_;
    std::int64_t mean_nanos = 0;  // of this thread's jobs lately: a moving average, from its first job
    bool measured = false;        // a job ran on this thread, so `mean_nanos` holds something
    while (true) {
      ++idle_;
      task_ready_.wait(lock, [this] { return closing_ || !tasks_.empty(); });
      --idle_;
      if (tasks_.empty()) return;  // closing
      const Task task = std::move(tasks_.front());
      tasks_.pop_front();
      lock.unlock();
      const auto begin = std::chrono::steady_clock::now();
      std::string reply = run_job(task);
      const auto end = std::chrono::steady_clock::now();
      const std::int64_t took = std::chrono::duration_cast<std::chrono::nanoseconds>(end - begin).count();
      mean_nanos = measured ? mean_nanos + (took - mean_nanos) / 8 : took;
      measured = true;
      const bool short_jobs = mean_nanos < std::chrono::nanoseconds(worth_a_wake).count();
      lock.lock();
      live_.erase(task.id);
      if (outbox_.empty()) oldest_reply_ = end;
      outbox_.push_back(std::move(reply));
      --running_;
      if (!loop_woken_ && (!short_jobs || tasks_.empty() || end - oldest_reply_ >= worth_a_wake)) {
        loop_woken_ = true;
        wake_.notify_one();
      }
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
      reply = execute_(request, task.stop.get_token());
    } catch (...) {
      reply = mpi_wire::Reply{.kind = mpi_wire::Reply::threw, .text = describe(std::current_exception())};
    }
    reply.id = task.id;
    std::string bytes = mpi_wire::encode(reply);
    if (bytes.size() > static_cast<std::size_t>(INT_MAX) - 64) {  // room for a batch's framing
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
  std::size_t most_sent_;
  std::chrono::nanoseconds heartbeat_;

  // Shared with the job threads, guarded by `mutex_`.
  std::mutex mutex_;
  std::condition_variable wake_;        // the message loop sleeps on it
  std::condition_variable task_ready_;  // idle job threads sleep on it
  std::deque<Task> tasks_;
  std::unordered_map<std::uint64_t, std::stop_source> live_;  // every job received and not replied to
  std::vector<std::string> outbox_;
  std::size_t idle_ = 0;
  std::size_t starting_ = 0;                              // job threads started that have not taken the lock yet
  std::size_t running_ = 0;                               // received and not yet replied to
  std::chrono::steady_clock::time_point oldest_reply_{};  // when the first reply in `outbox_` came
  bool loop_woken_ = false;  // the message loop was woken and has not looked at `outbox_` since
  bool closing_ = false;

  // The message loop's own.
  bool stop_sent_ = false;
  std::vector<std::thread> threads_;
  PendingSends sends_;
  std::string bytes_;
};

}  // namespace tasktree::detail
