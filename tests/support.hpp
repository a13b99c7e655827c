#pragma once
// Shared helpers for tasktree's tests: deterministic runs, thread-safe event logs.

#include <tasktree/tasktree.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace tasktree_test {

using tasktree::CompletionCallback;
using tasktree::CompletionCallbackResult;
using tasktree::InFlight;

/// Every job succeeds and continues into its subtree.
inline CompletionCallbackResult ok(std::string_view) { return {.no_skip = true, .fail = false}; }

/// Outcome per dataset name, defaulting to `ok`.
struct Outcomes {
  std::map<std::string, CompletionCallbackResult, std::less<>> by_name;
  CompletionCallbackResult operator()(std::string_view dataset) const {
    const auto it = by_name.find(dataset);
    return it == by_name.end() ? ok(dataset) : it->second;
  }
};

/// The result of a deterministic run: the order jobs ran in and the return value.
struct InlineRun {
  std::vector<std::string> order;
  bool failed = false;
  tasktree::RunStats stats;
};

/// Runs `datasets` inline with one worker, each job's callback returning `outcome(dataset)`.
inline InlineRun run_inline(std::vector<std::string> datasets,
                            std::function<CompletionCallbackResult(std::string_view)> outcome = ok,
                            std::optional<bool> enable_barriers = std::nullopt) {
  InlineRun result;
  tasktree::ParallelTaskTree<tasktree::SynchronousExecutor> tree({
      .datasets = std::move(datasets),
      .process_dataset =
          [&](std::string_view dataset, std::int64_t) {
            result.order.emplace_back(dataset);
            return CompletionCallback([r = outcome(dataset)](InFlight&) { return r; });
          },
      .max_workers = 1,
      .enable_barriers = enable_barriers,
  });
  result.failed = tree.process_datasets_in_parallel();
  result.stats = tree.last_run_stats();
  return result;
}

/// Position of `name` in `order`, or -1.
inline long position(const std::vector<std::string>& order, std::string_view name) {
  const auto it = std::find(order.begin(), order.end(), name);
  return it == order.end() ? -1 : static_cast<long>(it - order.begin());
}

/// A thread-safe log of job start and end events with a global sequence number, for checking
/// ordering under real concurrency.
class EventLog {
 public:
  EventLog() = default;
  EventLog(const EventLog& other) {
    std::lock_guard lock(other.mutex_);
    starts_ = other.starts_;
    ends_ = other.ends_;
    next_ = other.next_;
    start_events_ = other.start_events_;
  }
  EventLog& operator=(const EventLog&) = delete;

  void start(std::string_view dataset) { record(dataset, true); }
  void end(std::string_view dataset) { record(dataset, false); }

  /// Sequence number of the start (or end) of `dataset`; -1 if it never happened.
  [[nodiscard]] long seq(std::string_view dataset, bool start) const {
    std::lock_guard lock(mutex_);
    const auto& map = start ? starts_ : ends_;
    const auto it = map.find(std::string(dataset));
    return it == map.end() ? -1 : it->second;
  }
  [[nodiscard]] std::set<std::string> started() const {
    std::lock_guard lock(mutex_);
    std::set<std::string> names;
    for (const auto& [name, seq] : starts_) names.insert(name);
    return names;
  }
  [[nodiscard]] std::size_t start_count() const {
    std::lock_guard lock(mutex_);
    return start_events_;
  }
  /// True if `before` ended before `after` started (both must have happened).
  [[nodiscard]] bool ended_before_start(std::string_view before, std::string_view after) const {
    const long end = seq(before, false);
    const long start = seq(after, true);
    return end >= 0 && start >= 0 && end < start;
  }

 private:
  void record(std::string_view dataset, bool is_start) {
    std::lock_guard lock(mutex_);
    (is_start ? starts_ : ends_)[std::string(dataset)] = next_++;
    if (is_start) ++start_events_;
  }
  mutable std::mutex mutex_;
  std::map<std::string, long> starts_;
  std::map<std::string, long> ends_;
  long next_ = 0;
  std::size_t start_events_ = 0;
};

/// Tracks how many jobs run at once.
class ConcurrencyMeter {
 public:
  void enter() {
    const int now = ++current_;
    int seen = peak_.load();
    while (now > seen && !peak_.compare_exchange_weak(seen, now)) {
    }
  }
  void leave() { --current_; }
  [[nodiscard]] int peak() const { return peak_.load(); }

 private:
  std::atomic<int> current_{0};
  std::atomic<int> peak_{0};
};

/// Waits (bounded) until `predicate` holds; returns whether it did. Used for liveness, never to
/// measure speed: the bound only turns a hang into a failed assertion.
template <class Predicate>
bool eventually(Predicate predicate, std::chrono::seconds limit = std::chrono::seconds(60)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!predicate()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  return true;
}

/// Catch2 assertions are not thread-safe, so code running on worker threads records its failures
/// here and the test checks `failures() == 0` on its own thread afterwards.
class WorkerChecks {
 public:
  /// Like `eventually`, counting a timeout as a failure.
  template <class Predicate>
  void eventually(Predicate predicate) {
    if (!tasktree_test::eventually(predicate)) ++failures_;
  }
  [[nodiscard]] int failures() const { return failures_.load(); }

 private:
  std::atomic<int> failures_{0};
};

}  // namespace tasktree_test

namespace tasktree_test {

/// An executor that holds submitted jobs until `batch` of them are waiting, then runs them all
/// inline, last submitted first. Makes "several jobs finished at once, in an order unlike their
/// names" deterministic. Only for scenarios where exactly `batch` jobs are submitted together.
struct BatchingExecutor {
  std::size_t batch = 1;
  std::vector<tasktree::Job> pending{};
  void submit(tasktree::Job job) {
    pending.push_back(job);
    if (pending.size() < batch) return;
    std::vector<tasktree::Job> now;
    now.swap(pending);
    for (auto it = now.rbegin(); it != now.rend(); ++it) (*it)();
  }
};

}  // namespace tasktree_test

namespace tasktree_test {

/// True when built with ThreadSanitizer, which slows even single-threaded code down 5x to 15x.
#if defined(__SANITIZE_THREAD__)
inline constexpr bool under_thread_sanitizer = true;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
inline constexpr bool under_thread_sanitizer = true;
#else
inline constexpr bool under_thread_sanitizer = false;
#endif
#else
inline constexpr bool under_thread_sanitizer = false;
#endif

/// True when built with AddressSanitizer or ThreadSanitizer: the randomized and stress tests then
/// use smaller sizes (the full sizes run in the other builds).
#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool under_sanitizer = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
inline constexpr bool under_sanitizer = true;
#else
inline constexpr bool under_sanitizer = under_thread_sanitizer;
#endif
#else
inline constexpr bool under_sanitizer = under_thread_sanitizer;
#endif

}  // namespace tasktree_test
