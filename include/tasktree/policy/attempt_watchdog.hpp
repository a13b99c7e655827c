#pragma once
/// @file policy/attempt_watchdog.hpp
/// @brief `FaultTolerantOptions::attempt_timeout`: one thread per run that signals the stop token
/// of every attempt that runs past the timeout, and reports at error level, every
/// `stall_interval`, the attempts that still run after that (they ignore their stop token).
///
/// In-process work cannot be killed: the watchdog only asks. An attempt that never looks at its
/// stop token keeps its worker until it returns, and is reported as stalled meanwhile.

#include <tasktree/clock.hpp>
#include <tasktree/log.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace tasktree::detail {

/// Watches the attempts of one run. The thread starts with the first attempt and is joined by the
/// destructor, which runs after the run's last job returned; it waits on the run's clock, so that
/// a `ManualClock` makes its timeouts deterministic.
class AttemptWatchdog {
  struct Entry {
    std::string_view dataset;
    int attempt = 0;
    std::int64_t start = 0;
    std::int64_t deadline = 0;     // start + timeout
    std::int64_t next_report = 0;  // the next "stalled" report, once timed out
    std::stop_source source;       // the attempt's own stop token comes from here
    bool timed_out = false;        // guarded by the watchdog's mutex
  };

 public:
  /// One attempt under watch, from construction until destruction (the attempt's return).
  class Watch {
   public:
    Watch(AttemptWatchdog& watchdog, std::string_view dataset, int attempt, const std::stop_token& run_stop)
        : watchdog_(watchdog), entry_(std::make_shared<Entry>()) {
      entry_->dataset = dataset;
      entry_->attempt = attempt;
      forward_.emplace(run_stop, Forward{entry_.get()});  // a stop of the run stops the attempt
      watchdog_.add(entry_);
    }
    Watch(const Watch&) = delete;
    Watch& operator=(const Watch&) = delete;
    ~Watch() { watchdog_.remove(entry_); }

    /// The attempt's stop token: signalled when the run stops or the attempt times out.
    [[nodiscard]] std::stop_token token() const noexcept { return entry_->source.get_token(); }
    /// True if the attempt ran past the timeout (its stop token was signalled for it).
    [[nodiscard]] bool timed_out() const {
      std::lock_guard lock(watchdog_.mutex_);
      return entry_->timed_out;
    }

   private:
    struct Forward {
      Entry* entry;
      void operator()() const noexcept { entry->source.request_stop(); }
    };
    AttemptWatchdog& watchdog_;
    std::shared_ptr<Entry> entry_;
    std::optional<std::stop_callback<Forward>> forward_;
  };

  /// `timeout` and `stall_interval` must be positive (validated by the policy layer); `log` is
  /// the run's logger, whose calls the policy layer serializes when a watchdog exists.
  AttemptWatchdog(Clock& clock, std::chrono::nanoseconds timeout, std::chrono::nanoseconds stall_interval,
                  const Logger& log, std::string_view task_name)
      : clock_(clock),
        timeout_(timeout.count()),
        stall_interval_(stall_interval.count()),
        log_(log),
        task_name_(task_name),
        wakeup_(*this) {}
  AttemptWatchdog(const AttemptWatchdog&) = delete;
  AttemptWatchdog& operator=(const AttemptWatchdog&) = delete;
  ~AttemptWatchdog() {
    {
      std::lock_guard lock(mutex_);
      closing_ = true;
      changed_.notify_all();
    }
    if (thread_.joinable()) thread_.join();
  }

  /// The timeout, in nanoseconds.
  [[nodiscard]] std::chrono::nanoseconds timeout() const noexcept { return std::chrono::nanoseconds(timeout_); }

 private:
  /// Wakes the thread's clock wait when an attempt starts or ends, or the run ends.
  class ChangeWakeup final : public Wakeup {
   public:
    explicit ChangeWakeup(AttemptWatchdog& owner) : owner_(owner) {}
    [[nodiscard]] bool signalled() const noexcept override {
      std::lock_guard lock(owner_.mutex_);
      return owner_.changed_flag_ || owner_.closing_;
    }
    void wait_until(std::chrono::steady_clock::time_point deadline) override {
      std::unique_lock lock(owner_.mutex_);
      owner_.changed_.wait_until(lock, deadline, [this] { return owner_.changed_flag_ || owner_.closing_; });
    }

   private:
    AttemptWatchdog& owner_;
  };

  static std::int64_t add_saturated(std::int64_t a, std::int64_t b) noexcept {
    return a > std::numeric_limits<std::int64_t>::max() - b ? std::numeric_limits<std::int64_t>::max() : a + b;
  }

  void add(const std::shared_ptr<Entry>& entry) {
    const std::int64_t now = clock_.now_nanos();
    std::lock_guard lock(mutex_);
    entry->start = now;
    entry->deadline = add_saturated(now, timeout_);
    entries_.push_back(entry);
    changed_flag_ = true;
    changed_.notify_all();
    if (!thread_.joinable()) thread_ = std::thread([this] { loop(); });
  }

  void remove(const std::shared_ptr<Entry>& entry) {
    std::lock_guard lock(mutex_);
    for (std::size_t i = 0; i < entries_.size(); ++i) {
      if (entries_[i] == entry) {
        entries_[i] = std::move(entries_.back());
        entries_.pop_back();
        break;
      }
    }
    changed_flag_ = true;
    changed_.notify_all();
  }

  void loop() {
    std::vector<std::shared_ptr<Entry>> expired;
    std::vector<std::shared_ptr<Entry>> stalled;
    while (true) {
      std::int64_t next = std::numeric_limits<std::int64_t>::max();
      const std::int64_t now = clock_.now_nanos();
      {
        std::unique_lock lock(mutex_);
        if (closing_) return;
        changed_flag_ = false;
        for (const std::shared_ptr<Entry>& entry : entries_) {
          if (!entry->timed_out && now >= entry->deadline) {
            entry->timed_out = true;
            entry->next_report = add_saturated(entry->deadline, stall_interval_);
            expired.push_back(entry);
          } else if (entry->timed_out && now >= entry->next_report) {
            entry->next_report = add_saturated(now, stall_interval_);
            stalled.push_back(entry);
          }
          next = std::min(next, entry->timed_out ? entry->next_report : entry->deadline);
        }
      }
      // Outside the lock: a stop callback of the job may wait for something that needs it.
      for (const std::shared_ptr<Entry>& entry : expired) entry->source.request_stop();
      for (const std::shared_ptr<Entry>& entry : stalled) report_stall(*entry, now);
      expired.clear();
      stalled.clear();
      if (next == std::numeric_limits<std::int64_t>::max()) {
        std::unique_lock lock(mutex_);
        changed_.wait(lock, [this] { return changed_flag_ || closing_; });
      } else {
        clock_.wait_until(next, wakeup_);
      }
    }
  }

  void report_stall(const Entry& entry, std::int64_t now) const {
    if (!log_.enabled(LogLevel::error)) return;
    const double ran = static_cast<double>(now - entry.start) * 1e-9;
    const double limit = static_cast<double>(timeout_) * 1e-9;
    log_.log(LogLevel::error,
             "{}{}{}: attempt {} has run for {:.3g}s, past its timeout of {:.3g}s: stalled (it has not returned "
             "since its stop token was signalled)",
             task_name_, task_name_.empty() ? "" : " ", entry.dataset, entry.attempt + 1, ran, limit);
  }

  Clock& clock_;
  const std::int64_t timeout_;
  const std::int64_t stall_interval_;
  const Logger& log_;
  std::string_view task_name_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  bool changed_flag_ = false;  // guarded by `mutex_`
  bool closing_ = false;       // guarded by `mutex_`
  std::vector<std::shared_ptr<Entry>> entries_;  // guarded by `mutex_`
  ChangeWakeup wakeup_;
  std::thread thread_;  // last: joined before the rest is destroyed
};

}  // namespace tasktree::detail
