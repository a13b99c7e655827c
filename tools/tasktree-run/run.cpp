#include "run.hpp"

#include <tasktree/tasktree.hpp>

#include <fmt/format.h>

#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <utility>

extern char** environ;

namespace tasktree_run {

std::string_view to_string(JobStatus status) noexcept {
  switch (status) {
    case JobStatus::not_run: return "not_run";
    case JobStatus::succeeded: return "succeeded";
    case JobStatus::failed: return "failed";
    case JobStatus::skipped: return "skipped";
    case JobStatus::stopped: return "stopped";
    case JobStatus::resumed: return "resumed";
  }
  return "unknown";
}

std::size_t RunReport::count(JobStatus status) const noexcept {
  return static_cast<std::size_t>(
      std::count_if(jobs.begin(), jobs.end(), [status](const JobRecord& job) { return job.status == status; }));
}

int RunReport::exit_code() const noexcept {
  if (signal != 0) return 128 + signal;
  if (stopped_by_failure || count(JobStatus::failed) > 0 || count(JobStatus::skipped) > 0) return 1;
  return count(JobStatus::succeeded) + count(JobStatus::resumed) == jobs.size() ? 0 : 1;
}

namespace {

/// The runner's environment without the variables it sets for each job.
std::vector<std::string> base_environment() {
  constexpr std::string_view per_job[] = {
      "TASKTREE_JOB=", "TASKTREE_SUBMIT_COUNT=", "TASKTREE_ATTEMPT=", "TASKTREE_RUN_DIR="};
  std::vector<std::string> variables;
  for (char** entry = environ; *entry != nullptr; ++entry) {
    const std::string_view variable = *entry;
    if (std::none_of(std::begin(per_job), std::end(per_job),
                     [&](std::string_view name) { return variable.starts_with(name); })) {
      variables.emplace_back(variable);
    }
  }
  return variables;
}

/// The file in a run directory that names the runner's process id.
constexpr std::string_view runner_pid_file = ".tasktree-run.pid";

/// Removes the run directories in `parent` that runners now gone left behind (a runner and its
/// watchdog both killed): `tasktree-run.XXXXXX` directories of this user whose runner pid file
/// names a process that does not exist. A directory without the file, or whose process exists
/// (perhaps another one with a recycled id), is left alone.
void remove_stale_run_directories(const std::filesystem::path& parent) {
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(parent, error)) {
    const std::string name = entry.path().filename().string();
    if (!name.starts_with("tasktree-run.") || name.size() != 19) continue;
    struct stat info {};
    if (::lstat(entry.path().c_str(), &info) != 0 || !S_ISDIR(info.st_mode) || info.st_uid != ::geteuid()) continue;
    std::ifstream file(entry.path() / runner_pid_file);
    long pid = 0;
    if (!(file >> pid) || pid <= 0 || pid == ::getpid()) continue;
    if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;
    std::error_code ignored;
    std::filesystem::remove_all(entry.path(), ignored);
    if (!ignored) {
      fmt::print(stderr, "tasktree-run: removed {:?}, the run directory of a runner that is gone (pid {})\n",
                 entry.path().string(), pid);
    }
  }
}

/// A private scratch directory for the jobs of one run (`TASKTREE_RUN_DIR`), removed at the end,
/// and by the watchdog should the runner die first; the next run removes it should both die.
class RunDirectory {
 public:
  explicit RunDirectory(ProcessGroups& groups) : groups_(groups) {
    const char* tmpdir = std::getenv("TMPDIR");
    const std::filesystem::path parent = tmpdir != nullptr && *tmpdir != '\0' ? tmpdir : "/tmp";
    remove_stale_run_directories(parent);
    std::string pattern = (parent / "tasktree-run.XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) {
      throw std::system_error(errno, std::generic_category(), fmt::format("cannot create a directory {:?}", pattern));
    }
    path_ = std::move(pattern);
    groups_.set_run_directory(path_.string());
    std::ofstream(path_ / runner_pid_file) << ::getpid() << '\n';
  }
  RunDirectory(const RunDirectory&) = delete;
  RunDirectory& operator=(const RunDirectory&) = delete;
  ~RunDirectory() {
    std::error_code error;
    std::filesystem::remove_all(path_, error);
    if (error) fmt::print(stderr, "tasktree-run: cannot remove {:?}: {}\n", path_.string(), error.message());
    groups_.set_run_directory("");
  }
  [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }

 private:
  ProcessGroups& groups_;
  std::filesystem::path path_;
};

/// Shared state of one run, used by the jobs on worker threads and by the scheduler's hooks on
/// the coordinator thread. Each `JobRecord` is written only by the worker running that job while
/// the run lasts; the report is assembled after the run, when all workers are gone.
class Runner {
 public:
  Runner(const RunSettings& settings, ProcessGroups& groups, Console& console, RunReport& report)
      : settings_(settings),
        groups_(groups),
        console_(console),
        report_(report),
        environment_(base_environment()),
        run_directory_(groups) {
    counts_.total = settings.jobs.size();
    index_.reserve(settings.jobs.size());
    for (std::size_t i = 0; i < settings.jobs.size(); ++i) index_.emplace(settings.jobs[i].path, i);
    report_.jobs.assign(settings.jobs.size(), JobRecord{});
  }

  [[nodiscard]] std::size_t index(std::string_view dataset) const { return index_.at(dataset); }
  [[nodiscard]] const std::shared_ptr<tasktree::Journal>& journal() const noexcept { return journal_; }
  void set_journal(std::shared_ptr<tasktree::Journal> journal) noexcept { journal_ = std::move(journal); }
  [[nodiscard]] ProgressCounts& counts() noexcept { return counts_; }
  [[nodiscard]] ProcessGroups& groups() noexcept { return groups_; }
  [[nodiscard]] Console& console() noexcept { return console_; }
  [[nodiscard]] const RunSettings& settings() const noexcept { return settings_; }
  [[nodiscard]] std::size_t retries() const noexcept { return retries_.load(); }

  /// Runs attempt `attempt` (1-based) of job `index` to its end and records it. A result of
  /// `not_started` (the run is stopping) leaves the record as it was. `retries_left`: whether a
  /// failure of this attempt is retried, for the log line.
  ProcessResult attempt(std::size_t index, std::int64_t submit_count, int attempt, bool retries_left,
                        JobOutput& output) {
    const JobSpec& job = settings_.jobs[index];
    JobRecord& record = report_.jobs[index];
    if (groups_.stopping()) return ProcessResult::not_started();
    std::string output_error;  // a log file that cannot be opened fails the attempt, not the run
    try {
      output.begin_attempt(attempt);
    } catch (const std::exception& error) {
      output_error = error.what();
    }
    std::vector<std::string> environment = environment_;
    environment.push_back(fmt::format("TASKTREE_JOB={}", job.path));
    environment.push_back(fmt::format("TASKTREE_SUBMIT_COUNT={}", submit_count));
    environment.push_back(fmt::format("TASKTREE_ATTEMPT={}", attempt));
    environment.push_back(fmt::format("TASKTREE_RUN_DIR={}", run_directory_.path().string()));

    const auto start = Clock::now();
    if (attempt == 1) {
      record.submit_count = submit_count;
      record.started = start;
    } else {
      ++retries_;
    }
    if (start_and_end_lines()) {
      std::string line =
          attempt == 1
              ? fmt::format("[{:>7}] start  {}", seconds_since(report_.started, start), job.path)
              : fmt::format("[{:>7}] start  {} (attempt {})", seconds_since(report_.started, start), job.path, attempt);
      if (settings_.verbosity == RunSettings::Verbosity::verbose)
        fmt::format_to(std::back_inserter(line), ": {}", job.command);
      console_.message(line);
    }
    const ProcessRequest request{
        .command = job.command,
        .shell = &settings_.shell,
        .environment = &environment,
        .timeout = settings_.timeout,
        .grace = settings_.kill_after,
        .new_session = settings_.new_session,
        .terminal = settings_.terminal,
    };
    ProcessResult result;
    const int slot = take_slot();
    if (output_error.empty()) {
      ++counts_.running;
      if (status_ != nullptr) status_->update();
      result = run_process(groups_, request, output);
      // Out of descriptors, processes or memory: wait for other jobs to give some back, rather
      // than fail a job that never ran.
      auto pause = std::chrono::milliseconds(10);
      const auto give_up = Clock::now() + std::chrono::seconds(60);
      bool told = false;
      while (result.lacked_resources() && !groups_.stopping() && Clock::now() < give_up) {
        if (!told) {
          console_.message(fmt::format("[{:>7}] wait   {}: {}; trying again", seconds_since(report_.started), job.path,
                                       result.error));
          told = true;
        }
        std::this_thread::sleep_for(pause);
        pause = std::min<std::chrono::milliseconds>(pause * 2, std::chrono::seconds(1));
        result = run_process(groups_, request, output);
      }
      --counts_.running;
      if (status_ != nullptr) status_->update();
      if (std::string error = output.end_attempt(); !error.empty() && result.end != ProcessResult::End::not_started) {
        result.end = ProcessResult::End::output_failed;
        result.error = std::move(error);
      }
    } else {
      result.end = ProcessResult::End::output_failed;
      result.error = std::move(output_error);
    }
    const auto end = Clock::now();
    give_slot(slot);
    // With --tty the job is the terminal's foreground, so Ctrl-C and Ctrl-\ reach it and not the
    // runner: the user meant the run. It stops as for that signal, before this attempt returns (so
    // the run cannot end first), and the job counts as stopped, not as failed.
    if (settings_.tty && result.end == ProcessResult::End::signalled &&
        (result.signal == SIGINT || result.signal == SIGQUIT)) {
      if (settings_.interrupted) settings_.interrupted(result.signal);
      result.end = ProcessResult::End::stopped;
    }
    if (result.end == ProcessResult::End::not_started) return result;
    // A failure the policy layer retries: logged and drawn as such, not as the job's failure.
    const bool retried =
        !result.succeeded() && result.end != ProcessResult::End::stopped && retries_left && !groups_.stopping();
    if (settings_.record_attempts) {
      const std::lock_guard lock(attempts_mutex_);
      report_.attempts.push_back(AttemptRecord{
          .job = index,
          .attempt = attempt,
          .slot = slot,
          .start = start,
          .end = end,
          .result = result,
          .retried = retried,
      });
    }
    record.attempts = attempt;
    record.finished = end;
    record.last = result;
    record.stderr_tail = output.stderr_tail();

    const std::string at = seconds_since(report_.started, end);
    const std::string took = seconds_since(start, end);
    using Color = Console::Color;
    if (result.succeeded()) {
      if (start_and_end_lines()) {
        console_.message(fmt::format("[{:>7}] {}   {} ({})", at, console_.paint("done", Color::green), job.path, took));
      }
    } else if (result.end == ProcessResult::End::stopped) {
      console_.message(fmt::format("[{:>7}] {} {} ({})", at, console_.paint("stopped", Color::yellow), job.path, took));
    } else if (retried) {
      console_.message(fmt::format("[{:>7}] {} {}: {} (attempt {} of {}, {}); retrying", at,
                                   console_.paint("failed", Color::yellow), job.path, describe(result), attempt,
                                   settings_.retries + 1, took));
    } else {
      console_.message(fmt::format("[{:>7}] {} {}: {} (attempt {}, {})", at, console_.paint("FAILED", Color::red),
                                   job.path, describe(result), attempt, took));
    }
    return result;
  }

  /// The scheduler's hooks, on the coordinator thread: progress counts, log lines for skipped
  /// subtrees, and the paths below which jobs were skipped.
  class Observer final : public tasktree::RunObserver {
   public:
    explicit Observer(Runner& runner) : runner_(runner) {}
    // `running` counts processes, kept by `attempt`: a job waiting for a retry is not running.
    void on_complete(std::string_view, std::chrono::nanoseconds, tasktree::CompletionCallbackResult result) override {
      if (result.fail) runner_.count_failure();
      ++(result.fail ? runner_.counts_.failed : runner_.counts_.succeeded);
      if (runner_.status_ != nullptr) runner_.status_->update();
    }
    void on_resume(std::string_view dataset) override { runner_.resumed_.insert(runner_.index(dataset)); }
    void on_skip(std::string_view path, std::size_t jobs) override {
      runner_.counts_.skipped += jobs;
      runner_.skipped_below_.emplace(path);
      runner_.console_.message(fmt::format("[{:>7}] {}   {} job{} below {}", seconds_since(runner_.report_.started),
                                           runner_.console_.paint("skip", Console::Color::yellow), jobs,
                                           jobs == 1 ? "" : "s", path));
    }

   private:
    Runner& runner_;
  };

  void set_status_line(StatusLine* status) noexcept { status_ = status; }

  /// After the run: the final status of every job.
  void classify() {
    for (std::size_t i = 0; i < report_.jobs.size(); ++i) {
      JobRecord& record = report_.jobs[i];
      if (resumed_.contains(i)) {
        record.status = JobStatus::resumed;
      } else if (record.attempts == 0) {
        record.status = JobStatus::not_run;
        const std::string_view path = settings_.jobs[i].path;
        for (std::size_t slash = path.find('/'); slash != std::string_view::npos; slash = path.find('/', slash + 1)) {
          if (const auto it = skipped_below_.find(path.substr(0, slash)); it != skipped_below_.end()) {
            record.status = JobStatus::skipped;
            record.skipped_below = *it;
            break;
          }
        }
      } else if (record.last.succeeded()) {
        record.status = JobStatus::succeeded;
      } else if (record.last.end == ProcessResult::End::stopped) {
        record.status = JobStatus::stopped;
      } else {
        record.status = JobStatus::failed;
      }
    }
    report_.retries = retries();
  }

  /// Marks the run as stopped by a failure (`--skip-on-error fail`); coordinator thread.
  void stopped_by_failure() { report_.stopped_by_failure = true; }

  /// `--halt`: the stop source the run's scheduling watches.
  void set_halt(std::stop_source* halt) noexcept { halt_ = halt; }
  /// A job failed for good (after its retries); coordinator thread. With `--halt`, the failure
  /// that reaches its threshold stops the run: no new jobs; with `now`, SIGTERM to the running ones.
  void count_failure() {
    ++failures_;
    const RunSettings::Halt& halt = settings_.halt;
    if (halt.when == RunSettings::Halt::When::never || halting_ || failures_ < halt.threshold(counts_.total)) return;
    halting_ = true;
    report_.stopped_by_failure = true;
    if (halt.when == RunSettings::Halt::When::now) {
      groups_.stop();
    } else {
      groups_.stop_starting();
    }
    if (halt_ != nullptr) halt_->request_stop();
    // After the stop: a console nobody reads must not hold it up.
    console_.message(fmt::format("[{:>7}] halt   {} failed job{} (--halt {}): {}", seconds_since(report_.started),
                                 failures_, failures_ == 1 ? "" : "s", halt.text,
                                 halt.when == RunSettings::Halt::When::now
                                     ? "starting no new jobs; running jobs get SIGTERM"
                                     : "starting no new jobs; running jobs may finish"));
  }
  /// What a job's stop token asks of its processes: SIGTERM, unless `--halt soon` is the reason.
  void stop_processes() {
    if (halting_soon()) {
      groups_.stop_starting();
    } else {
      groups_.stop();
    }
  }
  /// True once `stopped_by_failure()` was called.
  [[nodiscard]] bool was_stopped_by_failure() const noexcept { return report_.stopped_by_failure; }

 private:
  const RunSettings& settings_;
  ProcessGroups& groups_;
  Console& console_;
  RunReport& report_;
  std::vector<std::string> environment_;
  RunDirectory run_directory_;
  std::unordered_map<std::string_view, std::size_t> index_;
  ProgressCounts counts_;
  std::atomic<std::size_t> retries_{0};
  std::set<std::string, std::less<>> skipped_below_;
  std::set<std::size_t> resumed_;  // jobs the journal shows succeeded before (coordinator thread)
  std::shared_ptr<tasktree::Journal> journal_;
  StatusLine* status_ = nullptr;
  std::mutex attempts_mutex_;  // report_.attempts, and the slots
  std::vector<int> free_slots_;
  int slots_ = 0;
  std::stop_source* halt_ = nullptr;
  std::size_t failures_ = 0;          // coordinator thread
  std::atomic<bool> halting_{false};  // read by workers' stop callbacks

  /// The lowest free worker slot, for the timeline's tracks.
  int take_slot() {
    const std::lock_guard lock(attempts_mutex_);
    if (free_slots_.empty()) return slots_++;
    const auto lowest = std::min_element(free_slots_.begin(), free_slots_.end());
    const int slot = *lowest;
    free_slots_.erase(lowest);
    return slot;
  }
  void give_slot(int slot) {
    const std::lock_guard lock(attempts_mutex_);
    free_slots_.push_back(slot);
  }

  /// Whether each start and end gets a log line: not on a live terminal (the status line shows
  /// them), nor with --quiet; always with --verbose.
  [[nodiscard]] bool start_and_end_lines() const noexcept {
    if (settings_.verbosity == RunSettings::Verbosity::verbose) return true;
    return settings_.verbosity == RunSettings::Verbosity::normal && !console_.live();
  }

  [[nodiscard]] bool halting_soon() const noexcept {
    return halting_.load() && settings_.halt.when == RunSettings::Halt::When::soon;
  }
};

/// The ready-job order of `--priority`.
tasktree::Priority make_priority(PriorityOrder order) {
  if (order == PriorityOrder::name) return {};
  return tasktree::Priority([](std::string_view dataset) { return std::count(dataset.begin(), dataset.end(), '/'); });
}

/// `--work-period`: starts spread evenly over the period (`period / jobs` apart), or with
/// `--jitter` a random interval in [0, 2 * period / jobs], the same on average.
tasktree::IntervalNanos make_pacing(const RunSettings& settings) {
  if (settings.work_period.count() <= 0) return {};
  const std::int64_t interval = settings.work_period.count() / static_cast<std::int64_t>(settings.jobs.size());
  if (!settings.jitter) return [interval](std::int64_t, std::string_view, std::int64_t) { return interval; };
  auto random = std::make_shared<std::mt19937_64>(std::random_device{}());  // the coordinator alone calls it
  return [interval, random](std::int64_t, std::string_view, std::int64_t) {
    return std::uniform_int_distribution<std::int64_t>(0, 2 * interval)(*random);
  };
}

std::vector<std::string> paths_of(const RunSettings& settings) {
  std::vector<std::string> paths;
  paths.reserve(settings.jobs.size());
  for (const JobSpec& job : settings.jobs) paths.push_back(job.path);
  return paths;
}

/// A failed attempt (non-zero exit, timeout, signal, spawn error): what the policy layer retries
/// and, once the retries are exhausted, handles as `--skip-on-error` says.
class JobFailure : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// The scheduling: every job on the library's fault-tolerant policy layer, which retries failed
/// attempts with backoff and applies `--skip-on-error`. Each call of the job is one attempt.
void schedule(Runner& runner, std::stop_token stop) {
  const RunSettings& settings = runner.settings();
  tasktree::FaultTolerantStats stats;
  // The scheduling stops on the caller's stop (a signal) or on --halt.
  std::stop_source halt;
  const std::stop_callback forward(stop, [&halt]() noexcept { halt.request_stop(); });
  runner.set_halt(&halt);
  try {
    (void)tasktree::process_datasets_in_parallel_and_fault_tolerant(
        tasktree::FaultTolerantOptions<>{
            .datasets = paths_of(settings),
            .process_dataset =
                [&runner, &settings](std::string_view dataset, std::string_view, const tasktree::Retry& retry) {
                  // Whatever stops the run (a signal, a failure in fail mode, an error) stops the processes.
                  const std::stop_callback stop_processes(retry.stop_token,
                                                          [&runner]() noexcept { runner.stop_processes(); });
                  const std::size_t index = runner.index(dataset);
                  JobOutput output(runner.console(), settings.jobs[index].path, settings.log_dir,
                                   settings.verbosity == RunSettings::Verbosity::quiet ? JobOutput::Console_mode::hidden
                                   : settings.group ? JobOutput::Console_mode::grouped
                                                    : JobOutput::Console_mode::lines);
                  const ProcessResult result = runner.attempt(index, retry.submit_count, retry.count + 1,
                                                              retry.count < settings.retries, output);
                  if (result.succeeded()) return true;
                  // Once the run is stopping, nothing is retried and the report has what happened;
                  // returning (rather than throwing) keeps the failure from being rethrown.
                  if (result.end == ProcessResult::End::not_started || result.end == ProcessResult::End::stopped ||
                      retry.stop_token.stop_requested()) {
                    return false;
                  }
                  throw JobFailure(fmt::format("{}: {}", dataset, describe(result)));
                },
            .skip_on_error = settings.skip_on_error,
            .retry_policy =
                {
                    .max_retries = settings.retries,
                    .initial_backoff = settings.retry_backoff,
                    .max_backoff = std::max<std::chrono::nanoseconds>(settings.retry_backoff, std::chrono::seconds(10)),
                    .max_elapsed = std::chrono::hours(24 * 365),  // --retries alone bounds the retries
                },
            .is_job_failure = tasktree::exception_is<JobFailure>,
            .termination_handler =
                [&runner] {
                  runner.stopped_by_failure();
                  runner.groups().stop();
                },
            .task_name = "job",
            .priority = make_priority(settings.priority),
            .max_workers = settings.workers,
            .interval_nanos = make_pacing(settings),
            .stop_token = halt.get_token(),
            .observer = std::make_shared<Runner::Observer>(runner),
            .journal = runner.journal(),
        },
        stats);
  } catch (const JobFailure&) {
    // --skip-on-error fail: the policy rethrows the failure that stopped the run once every job
    // has returned. It is in the report, with the job's exit code and standard error.
    if (!runner.was_stopped_by_failure()) throw;
  }
}

}  // namespace

std::shared_ptr<tasktree::Journal> open_journal(const RunSettings& settings) {
  if (settings.journal.empty()) return nullptr;
  // Views into `settings`, which outlives the run and its journal.
  std::unordered_map<std::string_view, std::string_view> commands;
  for (const JobSpec& job : settings.jobs) commands.emplace(job.path, job.command);
  return std::make_shared<tasktree::Journal>(
      settings.journal, tasktree::JournalOptions{.resume = settings.resume,
                                                 .key = [commands = std::move(commands)](std::string_view dataset) {
                                                   const auto it = commands.find(dataset);
                                                   return it == commands.end() ? std::string()
                                                                               : std::string(it->second);
                                                 }});
}

RunReport run_jobs(const RunSettings& settings, ProcessGroups& groups, Console& console, std::stop_token stop,
                   std::shared_ptr<tasktree::Journal> journal) {
  RunReport report;
  report.started = Clock::now();
  Runner runner(settings, groups, console, report);
  runner.set_journal(std::move(journal));
  {
    StatusLine status(console, runner.counts(), report.started);
    runner.set_status_line(&status);
    schedule(runner, std::move(stop));
    runner.set_status_line(nullptr);
  }
  report.finished = Clock::now();
  runner.classify();
  return report;
}

std::vector<std::size_t> dry_run_order(const RunSettings& settings) {
  std::unordered_map<std::string_view, std::size_t> index;
  for (std::size_t i = 0; i < settings.jobs.size(); ++i) index.emplace(settings.jobs[i].path, i);
  std::vector<std::size_t> order;
  order.reserve(settings.jobs.size());
  tasktree::ParallelTaskTree<tasktree::SynchronousExecutor> tree({
      .datasets = paths_of(settings),
      .process_dataset =
          [&](std::string_view dataset, std::int64_t) {
            order.push_back(index.at(dataset));
            return tasktree::CompletionCallbackResult{.no_skip = true, .fail = false};
          },
      .priority = make_priority(settings.priority),
      .max_workers = 1,
  });
  (void)tree.process_datasets_in_parallel();
  return order;
}

}  // namespace tasktree_run
