#include "run.hpp"

#include <tasktree/tasktree.hpp>
#if TASKTREE_RUN_WITH_MPI
#include <tasktree/mpi.hpp>
#include <tasktree/mpi/wire.hpp>
#endif

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
#include <map>
#include <memory>
#include <mutex>
#include <optional>
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
  [[nodiscard]] Clock::time_point report_started() const noexcept { return report_.started; }

  /// What an attempt did, on the rank that ran it.
  struct AttemptResult {
    ProcessResult result{};
    Clock::time_point start{};
    Clock::time_point end{};
    int slot = 0;  // of this rank's slots
    std::deque<std::string> stderr_tail{};
  };

  /// Runs attempt `attempt` (1-based) of job `index` to its end and records it. A result of
  /// `not_started` (the run is stopping) leaves the record as it was. `retries_left`: whether a
  /// failure of this attempt is retried, for the log line.
  ProcessResult attempt(std::size_t index, std::int64_t submit_count, int attempt, bool retries_left,
                        JobOutput& output) {
    AttemptResult done = execute(index, submit_count, attempt, output, true);
    if (done.result.end == ProcessResult::End::not_started) return done.result;
    ProcessResult result = done.result;
    record(index, attempt, retries_left, std::move(done), {});
    return result;
  }

  /// Runs attempt `attempt` (1-based) of job `index` on this rank. `local`: this rank also keeps
  /// the report (not so on the ranks of an MPI run, where rank 0 does, and prints the lines).
  AttemptResult execute(std::size_t index, std::int64_t submit_count, int attempt, JobOutput& output, bool local) {
    const JobSpec& job = settings_.jobs[index];
    AttemptResult done;
    if (groups_.stopping()) return done;
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

    done.start = Clock::now();
    if (local) {
      JobRecord& record = report_.jobs[index];
      if (attempt == 1) {
        record.submit_count = submit_count;
        record.started = done.start;
      } else {
        ++retries_;
      }
    }
    if (local && start_and_end_lines()) {
      std::string line = attempt == 1 ? fmt::format("[{:>7}] start  {}", seconds_since(report_.started, done.start),
                                                    job.path)
                                      : fmt::format("[{:>7}] start  {} (attempt {})",
                                                    seconds_since(report_.started, done.start), job.path, attempt);
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
    ProcessResult& result = done.result;
    done.slot = take_slot();
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
    done.end = Clock::now();
    give_slot(done.slot);
    // With --tty the job is the terminal's foreground, so Ctrl-C and Ctrl-\ reach it and not the
    // runner: the user meant the run. It stops as for that signal, before this attempt returns (so
    // the run cannot end first), and the job counts as stopped, not as failed.
    if (settings_.tty && result.end == ProcessResult::End::signalled &&
        (result.signal == SIGINT || result.signal == SIGQUIT)) {
      if (settings_.interrupted) settings_.interrupted(result.signal);
      result.end = ProcessResult::End::stopped;
    }
    done.stderr_tail = output.stderr_tail();
    return done;
  }

  /// Where an attempt ran, in an MPI run.
  struct Place {
    int rank = 0;
    std::string_view host{};
    std::int64_t submit_count = 0;  // the job's, for its first attempt
  };

  /// Records attempt `attempt` of job `index`, which ended (not `not_started`), and writes its end
  /// line. `retries_left`: whether a failure of this attempt is retried. `place`: where it ran, in an
  /// MPI run; its `slot` is then that rank's, which this maps to a track of the timeline.
  void record(std::size_t index, int attempt, bool retries_left, AttemptResult&& done, std::optional<Place> place) {
    const JobSpec& job = settings_.jobs[index];
    JobRecord& record = report_.jobs[index];
    const ProcessResult& result = done.result;
    // A failure the policy layer retries: logged and drawn as such, not as the job's failure.
    const bool retried =
        !result.succeeded() && result.end != ProcessResult::End::stopped && retries_left && !groups_.stopping();
    if (settings_.record_attempts) {
      const std::lock_guard lock(attempts_mutex_);
      int track = done.slot;
      if (place) {
        const auto [it, added] =
            tracks_.try_emplace({place->rank, done.slot}, static_cast<int>(tracks_.size()));
        track = it->second;
      }
      report_.attempts.push_back(AttemptRecord{
          .job = index,
          .attempt = attempt,
          .slot = track,
          .start = done.start,
          .end = done.end,
          .result = result,
          .retried = retried,
          .host = place ? std::string(place->host) : std::string(),
      });
    }
    if (place) {
      if (attempt == 1) {
        record.started = done.start;
        record.submit_count = place->submit_count;
      }
      if (attempt > 1) ++retries_;
      record.host = place->host;
    }
    record.attempts = attempt;
    record.finished = done.end;
    record.last = result;
    record.stderr_tail = std::move(done.stderr_tail);

    const std::string at = seconds_since(report_.started, done.end);
    std::string took = seconds_since(done.start, done.end);
    if (place) took = fmt::format("{} on {}", took, place->host);
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
  std::map<std::pair<int, int>, int> tracks_;  // MPI run: (rank, its slot) -> track of the timeline
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

/// What the policy layer makes of an attempt's `result`: true for a success; false, without a retry,
/// once the run is stopping (the report has what happened, and returning rather than throwing keeps
/// the failure from being rethrown); else a `JobFailure` to retry or to handle as --skip-on-error says.
bool verdict(const ProcessResult& result, std::string_view dataset, const tasktree::Retry& retry) {
  if (result.succeeded()) return true;
  if (result.end == ProcessResult::End::not_started || result.end == ProcessResult::End::stopped ||
      retry.stop_token.stop_requested()) {
    return false;
  }
  throw JobFailure(fmt::format("{}: {}", dataset, describe(result)));
}

/// What the console gets of each job's output.
JobOutput::Console_mode console_mode(const RunSettings& settings) {
  if (settings.verbosity == RunSettings::Verbosity::quiet) return JobOutput::Console_mode::hidden;
  return settings.group ? JobOutput::Console_mode::grouped : JobOutput::Console_mode::lines;
}

/// The policy layer's options for `runner`, on one machine (`tasktree::FaultTolerantOptions<>`) or
/// over MPI ranks (`tasktree::mpi::FaultTolerantOptions`, whose fields come in the same order):
/// `job` runs an attempt; the run stops when `halt` is signalled.
template <class Options, class Job>
Options scheduling_options(Runner& runner, std::stop_source& halt, Job job) {
  const RunSettings& settings = runner.settings();
  return Options{
      .datasets = paths_of(settings),
      .process_dataset = std::move(job),
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
  };
}

/// Runs `run` (a policy-layer entry point); the failure that `--skip-on-error fail` rethrows is in
/// the report already.
template <class Run>
void run_policy(Runner& runner, Run&& run) {
  try {
    run();
  } catch (const JobFailure&) {
    // --skip-on-error fail: the policy rethrows the failure that stopped the run once every job
    // has returned. It is in the report, with the job's exit code and standard error.
    if (!runner.was_stopped_by_failure()) throw;
  }
}

#if TASKTREE_RUN_WITH_MPI
/// The bytes of an attempt from the rank that ran it to rank 0 (`mpi::attempt_report()`), in the
/// scale-out's own encoding (fixed-width little-endian integers, length-prefixed strings).
namespace attempt_bytes {

namespace wire = tasktree::detail::mpi_wire;

std::string encode(const Runner::AttemptResult& done, std::int64_t submit_count, const JobOutput::Captured& captured) {
  wire::Writer out;
  out.u8(static_cast<std::uint8_t>(done.result.end));
  out.i32(done.result.exit_code);
  out.i32(done.result.signal);
  out.str(done.result.error);
  out.i32(done.result.error_number);
  out.i64(std::chrono::duration_cast<std::chrono::nanoseconds>(done.end - done.start).count());
  out.i32(done.slot);
  out.i64(submit_count);
  out.u32(static_cast<std::uint32_t>(done.stderr_tail.size()));
  for (const std::string& line : done.stderr_tail) out.str(line);
  out.str(captured.out);
  out.str(captured.err);
  out.u64(captured.cut);
  return out.take();
}

/// What `encode` wrote, read into `done` (its times end now), `submit_count` and `captured`.
void decode(std::string_view bytes, Runner::AttemptResult& done, std::int64_t& submit_count,
            JobOutput::Captured& captured) {
  const auto malformed = [] {
    return std::runtime_error("malformed attempt report from another rank: do all ranks run the same tasktree-run?");
  };
  wire::Reader in(bytes);
  const std::uint8_t end = in.u8();
  if (end > static_cast<std::uint8_t>(ProcessResult::End::output_failed)) throw malformed();
  done.result.end = static_cast<ProcessResult::End>(end);
  done.result.exit_code = in.i32();
  done.result.signal = in.i32();
  done.result.error = in.str();
  done.result.error_number = in.i32();
  done.end = Clock::now();
  done.start = done.end - std::chrono::nanoseconds(in.i64());
  done.slot = in.i32();
  submit_count = in.i64();
  const std::uint32_t lines = in.u32();
  if (lines > bytes.size()) throw malformed();
  for (std::uint32_t i = 0; i < lines; ++i) done.stderr_tail.emplace_back(in.str());
  captured.out = in.str();
  captured.err = in.str();
  captured.cut = in.u64();
}

}  // namespace attempt_bytes
#endif

/// The scheduling: every job on the library's fault-tolerant policy layer, which retries failed
/// attempts with backoff and applies `--skip-on-error`. Each call of the job is one attempt. With
/// `--mpi`, over the ranks of the MPI job: an attempt runs on any rank, which sends rank 0 its
/// result, standard-error tail and console output, and rank 0 records and prints them.
void schedule(Runner& runner, std::stop_token stop) {
  const RunSettings& settings = runner.settings();
  // The scheduling stops on the caller's stop (a signal) or on --halt.
  std::stop_source halt;
  const std::stop_callback forward(stop, [&halt]() noexcept { halt.request_stop(); });
  runner.set_halt(&halt);
  if (!settings.mpi) {
    auto options = scheduling_options<tasktree::FaultTolerantOptions<>>(
        runner, halt, [&runner, &settings](std::string_view dataset, std::string_view, const tasktree::Retry& retry) {
          // Whatever stops the run (a signal, a failure in fail mode, an error) stops the processes.
          const std::stop_callback stop_processes(retry.stop_token, [&runner]() noexcept { runner.stop_processes(); });
          const std::size_t index = runner.index(dataset);
          JobOutput output(runner.console(), settings.jobs[index].path, settings.log_dir, console_mode(settings));
          const ProcessResult result =
              runner.attempt(index, retry.submit_count, retry.count + 1, retry.count < settings.retries, output);
          return verdict(result, dataset, retry);
        });
    run_policy(runner, [&] { (void)tasktree::process_datasets_in_parallel_and_fault_tolerant(std::move(options)); });
    return;
  }
#if TASKTREE_RUN_WITH_MPI
  auto options = scheduling_options<tasktree::mpi::FaultTolerantOptions>(
      runner, halt, [&runner, &settings](std::string_view dataset, std::string_view, const tasktree::Retry& retry) {
        // On the rank that runs the attempt: a stop of the run reaches it as its stop token.
        const std::stop_callback stop_processes(retry.stop_token, [&runner]() noexcept { runner.stop_processes(); });
        const std::size_t index = runner.index(dataset);
        JobOutput::Captured captured;
        JobOutput output(runner.console(), settings.jobs[index].path, settings.log_dir, console_mode(settings),
                         &captured, settings.tag_host ? std::string_view(settings.host) : std::string_view());
        const Runner::AttemptResult done =
            runner.execute(index, retry.submit_count, retry.count + 1, output, /*local=*/false);
        tasktree::mpi::attempt_report() = attempt_bytes::encode(done, retry.submit_count, captured);
        return verdict(done.result, dataset, retry);
      });
  if (!settings.workers_given) options.max_workers = 0;  // one job per worker rank, and rank 0's own
  options.heartbeat_timeout = settings.heartbeat_timeout;
  options.queue_ahead = settings.queue_ahead;
  if (settings.place_by_first_component) options.placement = tasktree::mpi::place_by_first_component;
  options.heartbeat_interval = std::min<std::chrono::nanoseconds>(std::chrono::seconds(1), settings.heartbeat_timeout / 2);
  // The scale-out's own notes (a rank lost, a signal caught on a rank) go to the console; the policy
  // layer's failure lines would repeat the runner's own.
  options.log = tasktree::Logger{
      .sink =
          [&runner](tasktree::LogLevel, std::string_view message) {
            if (message.starts_with("tasktree: ")) {
              runner.console().message(
                  fmt::format("[{:>7}] {}", seconds_since(runner.report_started()), message));
            }
          },
      .level = tasktree::LogLevel::warning,
  };
  options.on_attempt_report = [&runner, &settings](tasktree::mpi::AttemptReport& report) {
    // On rank 0: the attempt's output, its end line and its record.
    Runner::AttemptResult done;
    std::int64_t submit_count = 0;
    JobOutput::Captured captured;
    attempt_bytes::decode(report.bytes, done, submit_count, captured);
    if (done.result.end == ProcessResult::End::not_started) return;
    const std::size_t index = runner.index(report.dataset);
    if (!captured.out.empty()) runner.console().job_lines(Stream::out, captured.out);
    if (!captured.err.empty()) runner.console().job_lines(Stream::err, captured.err);
    if (captured.cut > 0) {
      runner.console().message(fmt::format("[{}] tasktree-run: {} bytes of output left out (more than {} MiB)",
                                           report.dataset, captured.cut, JobOutput::Captured::limit >> 20));
    }
    runner.record(index, report.attempt + 1, report.attempt < settings.retries, std::move(done),
                  Runner::Place{.rank = report.rank, .host = report.host, .submit_count = submit_count});
  };
  run_policy(runner,
             [&] { (void)tasktree::mpi::process_datasets_in_parallel_and_fault_tolerant(std::move(options)); });
#else
  throw std::logic_error("tasktree-run was built without MPI, so --mpi cannot run");
#endif
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
