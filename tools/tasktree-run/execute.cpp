#include "execute.hpp"

#include "cluster.hpp"
#include "demo_jobs.hpp"
#include "output.hpp"
#include "process.hpp"
#include "report.hpp"
#include "run.hpp"
#include "signals.hpp"

#include <fmt/format.h>

#include <fcntl.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <memory>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <utility>

namespace tasktree_run {
namespace {

/// True if standard error shows a live status line: a terminal that understands escapes.
bool live_terminal() {
  const char* term = std::getenv("TERM");
  return ::isatty(STDERR_FILENO) == 1 && term != nullptr && std::string_view(term) != "dumb";
}

/// Room in the file-descriptor limit for jobs running at once.
struct DescriptorRoom {
  std::size_t jobs;  ///< how many fit (at least 1), all those asked for if the limit allows
  rlim_t wanted;     ///< descriptors the jobs asked for need
  rlim_t limit;      ///< the soft limit, after raising it
};

/// Makes room for `jobs` jobs at once: each running job holds up to five descriptors (two pipes
/// while it starts, a pidfd) and two more with log files. The soft limit is raised as far as that
/// needs, never above the hard limit (the jobs inherit it); returns how many jobs fit.
DescriptorRoom room_for(std::size_t jobs, bool log_files) {
  const rlim_t per_job = log_files ? 7 : 5;
  constexpr rlim_t reserve = 64;  // the runner's own: standard streams, report, journal, watchdog, ...
  const rlim_t wanted = reserve + per_job * static_cast<rlim_t>(jobs);
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return {jobs, wanted, wanted};
  if (limit.rlim_cur >= wanted) return {jobs, wanted, limit.rlim_cur};
  rlimit raised = limit;
  raised.rlim_cur = limit.rlim_max == RLIM_INFINITY ? wanted : std::min(wanted, limit.rlim_max);
  if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) limit = raised;
  if (limit.rlim_cur >= wanted) return {jobs, wanted, limit.rlim_cur};
  const rlim_t fit = limit.rlim_cur > reserve + per_job ? (limit.rlim_cur - reserve) / per_job : 1;
  return {static_cast<std::size_t>(fit), wanted, limit.rlim_cur};
}

/// Makes room for `settings.workers` jobs at once: no more workers than jobs, and enough file
/// descriptors for them (`room_for`); if even the hard limit is too low, fewer jobs run at once,
/// with a warning.
void fit_workers(RunSettings& settings) {
  settings.workers = static_cast<int>(std::min<std::size_t>(static_cast<std::size_t>(settings.workers),
                                                            std::max<std::size_t>(settings.jobs.size(), 1)));
  const DescriptorRoom room = room_for(static_cast<std::size_t>(settings.workers), !settings.log_dir.empty());
  if (room.jobs >= static_cast<std::size_t>(settings.workers)) return;
  fmt::print(stderr,
             "tasktree-run: warning: {} jobs at once need about {} file descriptors, but the limit is {} "
             "(ulimit -n): running at most {} at once\n",
             settings.workers, room.wanted, room.limit, room.jobs);
  settings.workers = static_cast<int>(room.jobs);
}

/// Why `program` (a path, or a name looked up in `PATH`) cannot be run, or "" if it can.
std::string program_problem(const std::string& program) {
  const auto runnable = [](const std::string& file) {
    std::error_code error;
    return ::access(file.c_str(), X_OK) == 0 && !std::filesystem::is_directory(file, error);
  };
  if (program.find('/') != std::string::npos) {
    return runnable(program) ? "" : fmt::format("{:?} is not an executable file", program);
  }
  const char* path = std::getenv("PATH");
  const std::string_view directories = path != nullptr ? path : "/usr/bin:/bin";
  for (std::size_t start = 0; start <= directories.size();) {
    const std::size_t end = std::min(directories.find(':', start), directories.size());
    const std::string_view directory = directories.substr(start, end - start);
    if (runnable(fmt::format("{}/{}", directory.empty() ? "." : directory, program))) return "";
    start = end + 1;
  }
  return fmt::format("no program {:?} in PATH", program);
}

/// The file of `--json FILE` (or `--report`, `--trace`: `option`, for messages), opened when the
/// run starts (a typo in its path should not cost a whole run) and written when it ends.
///
/// A regular file, or a path where nothing is yet, is replaced atomically: the report goes to a
/// temporary file beside it (`FILE.tmp.XXXXXX`, created at the start), which is flushed to disk and
/// renamed over FILE once the report is complete. So FILE is never empty or cut short, and an
/// earlier report stays as it was until a new complete one replaces it; if the runner is killed,
/// only the temporary file is left. The new file gets the old one's permissions (or 0666 less the
/// umask). A symbolic link stays one: the file it points to is replaced. Anything else that exists
/// (a pipe, a terminal, `/dev/null`) is written in place: a rename would replace it, not write to it.
/// `-` is standard output, written in place.
///
/// The runner holds an advisory lock (`flock`) on its temporary file until it is renamed or removed.
/// The lock ends with the process, so a temporary file beside FILE that nobody holds locked was left
/// by a runner that died (SIGKILL, a crash, a reboot): the next runner that writes FILE removes it.
class ReportFile {
 public:
  /// Throws `std::runtime_error` naming the path if the file cannot be created or opened.
  ReportFile(const std::string& path, std::string_view option) : path_(path), option_(option) {
    if (path == "-") {
      path_ = "<stdout>";
      fd_ = ::fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 3);
      if (fd_ < 0) fail("open", path_);
      return;
    }
    struct stat existing {};
    const bool exists = ::stat(path_.c_str(), &existing) == 0;
    if (exists && !S_ISREG(existing.st_mode)) {
      fd_ = ::open(path_.c_str(), O_WRONLY | O_NOCTTY | O_CLOEXEC);
      if (fd_ < 0) fail("open", path_);
      return;
    }
    target_ = path_;
    mode_t mode = 0;
    if (exists) {
      std::error_code error;
      const std::filesystem::path resolved = std::filesystem::canonical(path_, error);
      if (!error) target_ = resolved.string();
      mode = existing.st_mode & 0777;
    } else {
      const mode_t mask = ::umask(0);  // reading the umask sets it: no other thread exists yet
      ::umask(mask);
      mode = 0666 & ~mask;
    }
    const std::string pattern = target_ + ".tmp.XXXXXX";
    remove_stale_temporaries(target_);
    std::string temporary;
    while (true) {
      temporary = pattern;
      fd_ = ::mkostemp(temporary.data(), O_CLOEXEC);  // close-on-exec: the jobs must not inherit it
      if (fd_ < 0) fail("create", pattern);
      int locked = 0;
      do {
        locked = ::flock(fd_, LOCK_EX);
      } while (locked != 0 && errno == EINTR);
      // A file system without locks: no sweep can take the file either (it needs the lock).
      if (locked != 0) break;
      // Another runner's sweep may have removed the file between its creation and the lock: then
      // it has no name any more, and a new one is made.
      struct stat created {};
      if (::fstat(fd_, &created) != 0 || created.st_nlink > 0) break;
      ::close(std::exchange(fd_, -1));
    }
    temporary_ = temporary;
    if (::fchmod(fd_, mode) != 0) {
      const int error = errno;
      discard();  // the destructor does not run for a constructor that throws
      errno = error;
      fail("set the permissions of", temporary);
    }
  }
  ReportFile(const ReportFile&) = delete;
  ReportFile& operator=(const ReportFile&) = delete;
  /// Removes the temporary file if `commit` did not put it in place.
  ~ReportFile() { discard(); }

  /// Writes `text` and, for a replaced file, puts it in place. Throws `std::runtime_error` naming
  /// the path and the reason if any step fails (the earlier file, if any, is then as it was).
  void commit(std::string_view text) {
    const std::string& written = temporary_.empty() ? path_ : temporary_;
    while (!text.empty()) {
      const ssize_t wrote = ::write(fd_, text.data(), text.size());
      if (wrote < 0 && errno == EINTR) continue;
      if (wrote < 0) fail("write", written);
      text.remove_prefix(static_cast<std::size_t>(wrote));
    }
    // fsync before the rename: otherwise a crash of the machine could leave the new name on an
    // empty file. (EINVAL: a file that cannot be synchronized, which is no write error.)
    if (!temporary_.empty() && ::fsync(fd_) != 0 && errno != EINVAL) fail("flush", written);
    if (temporary_.empty()) {
      if (::close(std::exchange(fd_, -1)) != 0) fail("close", written);
      return;
    }
    // Renamed while still open, so still locked: closing first would let another runner's sweep
    // take it for a dead runner's file and remove it before the rename.
    if (::rename(temporary_.c_str(), target_.c_str()) != 0) {
      fail(fmt::format("rename {:?} to", temporary_), target_);
    }
    temporary_.clear();
    ::close(std::exchange(fd_, -1));  // written and flushed: what close could report is past
    // Make the rename itself durable. The report is complete and in place by now, whatever this
    // says: a directory that cannot be synchronized is no reason to fail the run.
    std::filesystem::path directory = std::filesystem::path(target_).parent_path();
    if (directory.empty()) directory = ".";
    const int directory_fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (directory_fd >= 0) {
      [[maybe_unused]] const int synced = ::fsync(directory_fd);
      ::close(directory_fd);
    }
  }

 private:
  /// Throws the error for `errno` while doing `what` to `file`.
  [[noreturn]] void fail(std::string_view what, const std::string& file) const {
    const int error = errno;
    throw std::runtime_error(fmt::format("cannot write the {} file {:?}: cannot {} {:?}: {}", option_, path_, what,
                                         file, std::strerror(error)));
  }

  void discard() noexcept {
    // Unlinked before closing: closing ends the lock, and another runner's sweep must not find the
    // file unlocked while it still has its name.
    if (!temporary_.empty()) ::unlink(std::exchange(temporary_, {}).c_str());
    if (fd_ >= 0) ::close(std::exchange(fd_, -1));
  }

  /// Removes the temporary files of `target` (`TARGET.tmp.` and six characters) that no runner
  /// holds locked: those of runners that died before they could rename or remove them. Best effort:
  /// a file that cannot be read or removed stays.
  static void remove_stale_temporaries(const std::string& target) noexcept {
    try {
      const std::filesystem::path path(target);
      const std::filesystem::path directory = path.has_parent_path() ? path.parent_path() : ".";
      const std::string prefix = path.filename().string() + ".tmp.";
      std::error_code error;
      for (const auto& entry : std::filesystem::directory_iterator(directory, error)) {
        const std::string name = entry.path().filename().string();
        if (name.size() != prefix.size() + 6 || !name.starts_with(prefix)) continue;
        const int fd = ::open(entry.path().c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
        if (fd < 0) continue;
        struct stat opened {};
        struct stat named {};
        // Unlocked, a regular file, and still the file of that name (not replaced meanwhile).
        if (::flock(fd, LOCK_EX | LOCK_NB) == 0 && ::fstat(fd, &opened) == 0 && S_ISREG(opened.st_mode) &&
            ::lstat(entry.path().c_str(), &named) == 0 && named.st_dev == opened.st_dev &&
            named.st_ino == opened.st_ino) {
          ::unlink(entry.path().c_str());
        }
        ::close(fd);
      }
    } catch (...) {  // a name that cannot be converted, an allocation: the sweep is only tidying up
    }
  }

  std::string path_;         // as given, for messages
  std::string_view option_;  // --json or --trace, for messages
  std::string target_;       // the file that `temporary_` replaces: `path_` with symbolic links resolved
  std::string temporary_;    // empty if the file is written in place, or once it has been renamed
  int fd_ = -1;
};

}  // namespace

std::vector<JobSpec> load_jobs(const CliSettings& settings) {
  const std::string source = settings.demo ? "demo.jobs" : settings.jobs_file == "-" ? "<stdin>" : settings.jobs_file;
  std::vector<JobSpec> jobs =
      parse_jobs_file(settings.demo ? std::string(demo_jobs()) : read_jobs_file(settings.jobs_file), source);
  if (!settings.run.log_dir.empty()) check_log_paths(jobs, source, settings.run.log_dir);
  return select_targets(std::move(jobs), settings.targets, !settings.no_prerequisites, source);
}

std::string started_as_one_of_many_ranks() {
  // Open MPI's mpiexec; MPICH's and Intel MPI's hydra (and Slurm's PMI-2); srun, for the step's tasks.
  for (const char* variable : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_STEP_NUM_TASKS"}) {
    const char* value = std::getenv(variable);
    if (value == nullptr) continue;
    char* end = nullptr;
    const long ranks = std::strtol(value, &end, 10);
    if (end == value || *end != '\0' || ranks <= 1) continue;
    return fmt::format(
        "started as one of {} processes ({}={}), each of which would run every job of the plan: to spread "
        "the jobs over the processes, run with --mpi (rank 0 schedules, every rank runs jobs); otherwise "
        "start tasktree-run once, not under mpiexec or srun with several tasks",
        ranks, variable, value);
  }
  return {};
}

namespace {

/// With `--mpi`: how many jobs this rank may run at once, at most: rank 0's own slots (as many as
/// a run on one machine would use) or a worker rank's share of `--workers`.
std::size_t rank_slots(const RunSettings& settings, const Cluster& cluster) {
  const auto cpus = static_cast<std::size_t>(tasktree::default_max_workers());
  if (cluster.rank() == 0 || cluster.size() == 1) return std::max<std::size_t>(cpus, 1);
  if (!settings.workers_given) return 1;
  const auto workers = static_cast<std::size_t>(cluster.size() - 1);
  return (static_cast<std::size_t>(settings.workers) + workers - 1) / workers;
}

/// With `--mpi`: makes room for `slots` jobs at once (`room_for`). The scheduling decides how many
/// run here, so too low a limit is only a warning: starts that lack descriptors wait and try again.
void fit_descriptors(std::size_t slots, const RunSettings& settings) {
  const DescriptorRoom room = room_for(slots, !settings.log_dir.empty());
  if (room.jobs >= slots) return;
  fmt::print(stderr,
             "tasktree-run: warning: on host {}, {} jobs at once need about {} file descriptors, but the limit "
             "is {} (ulimit -n): jobs may wait for some\n",
             settings.host, slots, room.wanted, room.limit);
}

}  // namespace

int execute(const CliSettings& cli) {
  if (!cli.run.mpi) {
    if (const std::string refusal = started_as_one_of_many_ranks(); !refusal.empty()) {
      fmt::print(stderr, "tasktree-run: error: {}\n", refusal);
      return 2;
    }
  }
  RunSettings settings = cli.run;
  // --mpi: the watchdog is forked, and SIGINT and SIGTERM are blocked, before MPI starts: MPI's own
  // threads must not take those signals (their default would end the rank at once), and a forked
  // helper should hold none of MPI's connections.
  std::optional<Watchdog> watchdog;
  std::unique_ptr<Cluster> cluster;
  if (cli.run.mpi) {
    try {
      if (cli.action == Action::run) {
        const auto cpus = static_cast<std::size_t>(std::max(tasktree::default_max_workers(), 1));
        watchdog.emplace(std::max(static_cast<std::size_t>(settings.workers), cpus) + 1, settings.kill_after);
        block_stop_signals();
      }
      cluster = std::make_unique<Cluster>();
      settings.host = cluster->host();
    } catch (const std::exception& error) {
      fmt::print(stderr, "tasktree-run: {}\n", error.what());
      return 2;
    }
    // Printing the plan or the journal is rank 0's.
    if (cluster->rank() != 0 && cli.action != Action::run) return 0;
  }
  const bool rank0 = !cluster || cluster->rank() == 0;

  if (cli.action == Action::status) {
    try {
      // The plan, if one is named: then the jobs it has and the journal lacks are "not run".
      if (cli.demo || cli.jobs_file_given) settings.jobs = load_jobs(cli);
      const tasktree::JournalContents contents = tasktree::Journal::read(settings.journal);
      for (const std::string& warning : contents.warnings) fmt::print(stderr, "tasktree-run: warning: {}\n", warning);
      const JournalStatus status = format_journal_status(contents, settings.jobs);
      fmt::print("{}", status.text);
      return status.exit_code;
    } catch (const std::exception& error) {
      fmt::print(stderr, "tasktree-run: {}\n", error.what());
      return 2;
    }
  }

  // Create the output files now: a typo in a path should not cost a whole run. An earlier file
  // stays as it was until the new one is complete. Rank 0's alone with --mpi.
  struct OutputFile {
    const std::string& path;
    std::string_view option;
    std::string (*format)(const RunSettings&, const RunReport&);
    std::optional<ReportFile> file{};
  };
  std::array<OutputFile, 3> outputs{{
      {cli.json_file, "--json", format_json},
      {cli.report_file, "--report", format_html_report},
      {cli.trace_file, "--trace", format_trace},
  }};
  std::shared_ptr<tasktree::Journal> journal;
  // Rank 0 reads the jobs and opens its files; with --mpi the other ranks get the jobs, or the
  // message that stops every rank before anything runs.
  std::string problem;
  if (rank0) {
    try {
      if (!cli.demo && !cli.jobs_file_given && ::isatty(STDIN_FILENO) == 1) {
        throw std::runtime_error(
            "no jobs file given, and standard input is a terminal\n"
            "Run with --help for more information, or try --demo.");
      }
      settings.jobs = load_jobs(cli);
      if (cli.action == Action::dry_run) {
        fmt::print("{}", format_dry_run(settings));
        return 0;
      }
      if (cli.action == Action::dot) {
        fmt::print("{}", format_dot(settings));
        return 0;
      }
      if (!settings.shell.empty()) {
        if (const std::string why = program_problem(settings.shell.front()); !why.empty()) {
          throw std::runtime_error(fmt::format("--shell: {}", why));
        }
      }
      for (OutputFile& output : outputs) {
        if (!output.path.empty()) output.file.emplace(output.path, output.option);
      }
      // The journal too: a bad path, another format, a corrupt line or another live run on it is an
      // input error before anything runs.
      journal = open_journal(settings);
    } catch (const std::exception& error) {
      problem = error.what();
      if (problem.empty()) problem = "unknown error";
    }
  }
  if (cluster) {
    try {
      problem = cluster->share_jobs(settings.jobs, problem);
    } catch (const std::exception& error) {
      fmt::print(stderr, "tasktree-run: {}\n", error.what());
      return 2;
    }
  }
  if (!problem.empty()) {
    if (rank0) fmt::print(stderr, "tasktree-run: {}\n", problem);
    return 2;
  }

  if (cluster) {
    fit_descriptors(rank_slots(settings, *cluster), settings);
  } else {
    fit_workers(settings);
  }
  // Jobs get sessions of their own (and so no controlling terminal) only where there is a terminal
  // to keep them from: a session per job costs short jobs a scheduling penalty on a busy machine
  // (autogroup puts each session in a group of its own): 3x slower for 1,000 'true' jobs.
  // With --tty they stay in the runner's session, and the terminal is theirs in turn.
  Fd terminal;
  if (settings.tty) {
    terminal = Fd(::open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC));
    if (terminal.get() < 0) {
      fmt::print(stderr, "tasktree-run: --tty: the runner has no terminal (/dev/tty: {})\n", std::strerror(errno));
      return 2;
    }
    settings.terminal = terminal.get();
    // While a job has the terminal the runner is in the background, where taking the foreground
    // back, or writing to the terminal with `stty tostop`, would stop the runner: it ignores SIGTTOU
    // (its jobs start with the default).
    ::signal(SIGTTOU, SIG_IGN);
  } else if (const int tty = ::open("/dev/tty", O_RDONLY | O_NOCTTY | O_CLOEXEC); tty >= 0) {
    ::close(tty);
    settings.new_session = true;
  }
  if (!cluster) {
    // While this is the only thread: the helper that stops the jobs should the runner die unannounced.
    try {
      watchdog.emplace(static_cast<std::size_t>(settings.workers) + 1, settings.kill_after);
    } catch (const std::exception& error) {
      fmt::print(stderr, "tasktree-run: cannot start the watchdog process: {}\n", error.what());
      return 2;
    }
    block_stop_signals();  // before the first thread starts, so that only the watcher receives them
  }
  // With `--json -` the report has standard output to itself: job output and log lines go to stderr.
  // No live status line with --mpi: rank 0 does not know what runs on the other ranks until it ends.
  const bool live = !cluster && live_terminal();
  Console console(cli.json_file == "-" ? stderr : stdout, stderr, live);
  // --color auto: on a terminal that understands escapes, unless NO_COLOR is set (no-color.org).
  const char* no_color = std::getenv("NO_COLOR");
  settings.color = cli.color == "always" || (cli.color == "auto" && live && (no_color == nullptr || *no_color == '\0'));
  console.set_color(settings.color);
  ProcessGroups groups(&*watchdog);
  std::stop_source stop;
  RunReport report;
  {
    SignalWatcher watcher(
        [&](int signal) {
          // Stop first: the message takes the console lock, and a console nobody reads (stdout a
          // full pipe) would hold it, and the stop, forever. A worker rank stops its own jobs and
          // tells rank 0, which stops the run.
          stop.request_stop();
          groups.stop();
          if (cluster) cluster->stop_for_signal(signal);
          const std::string where = rank0 ? "" : fmt::format(" on rank {} ({})", cluster->rank(), settings.host);
          console.message(fmt::format(
              "tasktree-run: {}{}: starting no new jobs; running jobs get SIGTERM (SIGKILL {}s later{})",
              signal_name(signal), where, cli.kill_after_seconds,
              signal == SIGINT ? ", or at once on a second Ctrl-C" : ""));
        },
        [&](int signal) {
          groups.kill_all();
          console.message(fmt::format("tasktree-run: {} again: killed the running jobs", signal_name(signal)));
        });
    if (settings.tty) settings.interrupted = [&watcher](int signal) { watcher.deliver(signal); };
    report = run_jobs(settings, groups, console, stop.get_token(), journal);
    report.signal = watcher.received();
    if (rank0) std::fputs(format_summary(settings, report).c_str(), stderr);
  }
  // The report, the summary and the exit code are rank 0's: mpiexec exits with the first non-zero.
  if (!rank0) return 0;

  int code = report.exit_code();
  // Each file is written even if another cannot be.
  for (OutputFile& output : outputs) {
    if (!output.file) continue;
    try {
      output.file->commit(output.format(settings, report));
    } catch (const std::exception& error) {
      fmt::print(stderr, "tasktree-run: {}\n", error.what());
      code = 2;
    }
  }
  return code;
}

}  // namespace tasktree_run
