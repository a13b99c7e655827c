#pragma once
/// @file journal.hpp
/// @brief `tasktree::Journal`: a durable, append-only record of the jobs a run completed, and
/// resume: a later run of the same plan does not run again what an earlier run recorded as
/// succeeded. See docs/journal.md.

#include <tasktree/detail/journal_format.hpp>
#include <tasktree/log.hpp>

#include <fmt/format.h>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <exception>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

namespace tasktree {

/// @brief One job's line in a journal: how its completion was processed.
struct JournalRecord {
  /// The dataset (job name).
  std::string dataset{};
  /// What the completion said: false skipped the dataset's subtree.
  bool no_skip = true;
  /// What the completion said: true marked the run failed.
  bool fail = false;
  /// Attempts the job took (the policy layer's retries plus one; 1 at the core level).
  int attempts = 1;
  /// When the job started, in seconds since the Unix epoch (wall clock).
  double start = 0;
  /// How long it ran, in seconds.
  double seconds = 0;
  /// The policy layer: the text of the failure, if it failed.
  std::string error{};
  /// What `JournalOptions::key` said about the dataset when it ran (e.g. its command).
  std::string key{};
  /// The host that ran the job's last attempt, in a run across MPI ranks (`tasktree/mpi.hpp`);
  /// empty on one machine.
  std::string host{};

  /// True if a resumed run counts the dataset as done: it completed with `no_skip` and not `fail`.
  [[nodiscard]] bool succeeded() const noexcept { return no_skip && !fail; }
};

/// @brief How a `Journal` is written and read.
struct JournalOptions {
  /// True: a run treats each dataset whose latest record `succeeded()` (with the same key, if
  /// `key` is set) as done: it completes the moment it becomes available, without running, and
  /// counts in `RunStats::resumed`. False: the journal is only written.
  bool resume = false;
  /// Records reach the disk (`write` and `fdatasync`) at least this often during a run, and at
  /// its end. Must be positive.
  std::chrono::nanoseconds sync_interval = std::chrono::seconds(1);
  /// Keys each record, e.g. by the job's command: with `resume`, a success recorded under another
  /// key does not count. Called on the coordinator; empty: no key.
  std::function<std::string(std::string_view dataset)> key{};
};

/// @brief What a journal file holds, as read by `Journal::read()`.
struct JournalContents {
  /// The latest record of each dataset, in the order of their first appearance.
  std::vector<JournalRecord> records{};
  /// The fingerprint in the last run header (empty if the file has none yet).
  std::string fingerprint{};
  /// How many runs the journal has seen (run headers).
  std::size_t runs = 0;
  /// Problems that were tolerated, e.g. an incomplete last line.
  std::vector<std::string> warnings{};
  /// The size of the valid part of the file (without an incomplete last line).
  std::uint64_t valid_bytes = 0;
};

namespace detail {
class JournalAccess;
}

/// @brief A journal file, attached to runs through `Options::journal` or
/// `FaultTolerantOptions::journal`: one JSON object per line, a header per run
/// (`{"tasktree_journal":1,"fingerprint":...}`) and one record per completion the coordinator
/// processed. Opening it reads what earlier runs recorded and takes an advisory lock (`flock`),
/// held until the object is destroyed, so two runs never write one journal.
///
/// A record is durable once a sync has passed it (at least every `sync_interval` and at the end of
/// every run, normal, stopped or aborted): a resumed run never runs again a dataset whose success
/// record reached the disk. A job in flight when the process died, or completed after the last
/// sync, may run again (at least once, never lost).
///
/// @code
/// auto journal = std::make_shared<tasktree::Journal>("backup.journal", tasktree::JournalOptions{.resume = true});
/// tasktree::ParallelTaskTree tree({.datasets = datasets, .process_dataset = job, .journal = journal});
/// tree.process_datasets_in_parallel();  // after a crash: runs only what did not succeed
/// @endcode
class Journal {
 public:
  /// The format this version writes and reads (the header's `tasktree_journal`).
  static constexpr int format_version = 1;

  /// Opens (or creates) the journal at `path` and reads it.
  /// @throws std::invalid_argument if `options.sync_interval` is not positive.
  /// @throws std::runtime_error naming the path if it cannot be opened or read, if another
  /// process (or another `Journal` object) holds its lock, if it is of another format version, or
  /// if a line other than an incomplete last one is not a journal line (naming the line). An
  /// incomplete last line (the writer died mid-write) is cut off, with a warning in `warnings()`.
  explicit Journal(std::filesystem::path path, JournalOptions options = {})
      : path_(std::move(path)), options_(std::move(options)) {
    if (options_.sync_interval.count() <= 0) {
      throw std::invalid_argument(fmt::format("tasktree: invalid journal sync_interval {}ns: it must be positive",
                                              options_.sync_interval.count()));
    }
    fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd_ < 0) throw error("cannot open");
    try {
      if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK) {
          throw std::runtime_error(fmt::format(
              "tasktree: journal {:?} is in use by another run (it holds the file's lock)", path_.string()));
        }
        throw error("cannot lock");
      }
      contents_ = parse(path_, read_all(fd_, path_), &index_);
      struct stat status {};
      if (::fstat(fd_, &status) != 0) throw error("cannot stat");
      if (static_cast<std::uint64_t>(status.st_size) > contents_.valid_bytes) {
        // Cut the incomplete last line off, so that the next record starts a line of its own.
        if (::ftruncate(fd_, static_cast<off_t>(contents_.valid_bytes)) != 0) throw error("cannot truncate");
      }
      whole_bytes_ = contents_.valid_bytes;
    } catch (...) {
      ::close(fd_);
      throw;
    }
  }

  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;
  ~Journal() {
    if (fd_ >= 0) ::close(fd_);  // releases the lock
  }

  /// Reads the journal at `path` without locking it or changing it (e.g. to show a running
  /// run's progress). Same errors as the constructor, but an incomplete last line stays.
  [[nodiscard]] static JournalContents read(const std::filesystem::path& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw error(path, "cannot open");
    std::string bytes;
    try {
      bytes = read_all(fd, path);
    } catch (...) {
      ::close(fd);
      throw;
    }
    ::close(fd);
    return parse(path, std::move(bytes));
  }

  /// The file.
  [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }
  /// The options it was opened with.
  [[nodiscard]] const JournalOptions& options() const noexcept { return options_; }
  /// What the file held when opened; with `resume`, also what the runs since recorded.
  [[nodiscard]] const JournalContents& contents() const noexcept { return contents_; }
  /// The latest record of `dataset` (as `contents()`), or null.
  [[nodiscard]] const JournalRecord* find(std::string_view dataset) const {
    const auto it = index_.find(dataset);
    return it == index_.end() ? nullptr : &contents_.records[it->second];
  }

  /// For a layer above the core (the policy layer does): adds `attempts` and `error` to the
  /// record of the completion being processed. Call it from a completion callback, on the
  /// coordinator; the next record written takes it.
  void annotate(int attempts, std::string_view error = {}) {
    note_attempts_ = attempts;
    note_error_.assign(error);
  }

 private:
  friend class detail::JournalAccess;

  struct TransparentHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view text) const noexcept { return std::hash<std::string_view>{}(text); }
  };

  std::runtime_error error(std::string_view what) const { return error(path_, what); }
  static std::runtime_error error(const std::filesystem::path& path, std::string_view what) {
    return std::runtime_error(fmt::format("tasktree: journal {:?}: {}: {}", path.string(), what, std::strerror(errno)));
  }

  static std::string read_all(int fd, const std::filesystem::path& path) {
    std::string bytes;
    char buffer[1 << 16];
    off_t offset = 0;
    while (true) {
      const ssize_t got = ::pread(fd, buffer, sizeof buffer, offset);
      if (got < 0) {
        if (errno == EINTR) continue;
        throw error(path, "cannot read");
      }
      if (got == 0) return bytes;
      bytes.append(buffer, static_cast<std::size_t>(got));
      offset += got;
    }
  }

  using Index = std::unordered_map<std::string, std::size_t, TransparentHash, std::equal_to<>>;

  /// A record line as this class writes it, read without building an object: `{"key":value,...}`
  /// with strings that need no unescaping. False if the line is anything else (then the general
  /// reader decides, and names what is wrong).
  static bool read_plain_record(std::string_view line, JournalRecord& record) {
    std::size_t at = 0;
    const auto expect = [&](char c) {
      if (at < line.size() && line[at] == c) {
        ++at;
        return true;
      }
      return false;
    };
    const auto plain_string = [&](std::string_view& out) {
      if (!expect('"')) return false;
      const std::size_t end = line.find_first_of("\"\\", at);
      if (end == std::string_view::npos || line[end] != '"') return false;
      out = line.substr(at, end - at);
      at = end + 1;
      return true;
    };
    if (!expect('{')) return false;
    bool have_dataset = false;
    do {
      std::string_view key;
      if (!plain_string(key) || !expect(':')) return false;
      if (key == "dataset" || key == "error" || key == "key" || key == "host") {
        std::string_view text;
        if (!plain_string(text)) return false;
        (key == "dataset" ? record.dataset
         : key == "error" ? record.error
         : key == "key"   ? record.key
                          : record.host)
            .assign(text);
        have_dataset = have_dataset || key == "dataset";
      } else if (key == "no_skip" || key == "fail") {
        bool value = false;
        if (line.substr(at).starts_with("true")) {
          value = true;
          at += 4;
        } else if (line.substr(at).starts_with("false")) {
          at += 5;
        } else {
          return false;
        }
        (key == "no_skip" ? record.no_skip : record.fail) = value;
      } else if (key == "attempts" || key == "start" || key == "seconds") {
        double value = 0;
        const auto [end, error] = std::from_chars(line.data() + at, line.data() + line.size(), value);
        if (error != std::errc()) return false;
        at = static_cast<std::size_t>(end - line.data());
        if (key == "attempts") {
          record.attempts = static_cast<int>(value);
        } else {
          (key == "start" ? record.start : record.seconds) = value;
        }
      } else {
        return false;  // another key (a run header, or a newer field): the general reader
      }
    } while (expect(','));
    return expect('}') && at == line.size() && have_dataset;
  }

  /// Makes `record` its dataset's latest in `contents`: replaces the earlier one, or adds it.
  static void keep_latest(JournalContents& contents, Index& index, JournalRecord record) {
    if (const auto it = index.find(record.dataset); it != index.end()) {
      contents.records[it->second] = std::move(record);
    } else {
      index.emplace(record.dataset, contents.records.size());
      contents.records.push_back(std::move(record));
    }
  }

  /// Reads a journal's bytes; fills `index` (if not null) with each dataset's place in `records`.
  static JournalContents parse(const std::filesystem::path& path, std::string bytes, Index* index_out = nullptr) {
    JournalContents contents;
    Index local_index;
    Index& index = index_out != nullptr ? *index_out : local_index;
    const auto lines = static_cast<std::size_t>(std::count(bytes.begin(), bytes.end(), '\n'));
    contents.records.reserve(lines);
    index.reserve(lines);
    std::size_t at = 0;
    std::size_t line_number = 0;
    const auto bad = [&](std::string_view why) {
      return std::runtime_error(fmt::format("tasktree: journal {:?}: line {}: {}", path.string(), line_number, why));
    };
    while (at < bytes.size()) {
      ++line_number;
      const std::size_t end = bytes.find('\n', at);
      if (end == std::string::npos) {  // the writer died mid-line: what it wrote of it is lost
        contents.warnings.push_back(
            fmt::format("journal {:?}: line {} is incomplete (its writer stopped in the middle of it): ignored",
                        path.string(), line_number));
        break;
      }
      const std::string_view line(bytes.data() + at, end - at);
      at = end + 1;
      if (line.empty()) continue;
      if (contents.runs > 0) {
        JournalRecord plain;
        if (read_plain_record(line, plain)) {
          keep_latest(contents, index, std::move(plain));
          continue;
        }
      }
      std::string why;
      const auto object = detail::journal_format::LineReader(line).object(why);
      if (!object) throw bad(fmt::format("not a journal line ({})", why));
      const auto field = [&](std::string_view name) -> const detail::journal_format::Value* {
        const auto it = object->find(name);
        return it == object->end() ? nullptr : &it->second;
      };
      using Kind = detail::journal_format::Value::Kind;
      if (const auto* version = field("tasktree_journal")) {
        if (version->kind != Kind::number || version->number_value != format_version) {
          throw bad(fmt::format("format version {}, but this tasktree reads version {}",
                                version->kind == Kind::number ? fmt::format("{}", version->number_value) : "?",
                                format_version));
        }
        if (const auto* print = field("fingerprint"); print != nullptr && print->kind == Kind::string) {
          contents.fingerprint = print->text;
        }
        ++contents.runs;
        continue;
      }
      if (contents.runs == 0) throw bad("not a tasktree journal (its first line is not a journal header)");
      const auto* dataset = field("dataset");
      if (dataset == nullptr || dataset->kind != Kind::string) throw bad("a record without a \"dataset\" string");
      JournalRecord record{.dataset = dataset->text};
      const auto flag = [&](std::string_view name, bool& out) {
        if (const auto* value = field(name)) {
          if (value->kind != Kind::boolean) throw bad(fmt::format("{:?} is not true or false", name));
          out = value->bool_value;
        }
      };
      const auto number = [&](std::string_view name, double& out) {
        if (const auto* value = field(name)) {
          if (value->kind != Kind::number) throw bad(fmt::format("{:?} is not a number", name));
          out = value->number_value;
        }
      };
      const auto text = [&](std::string_view name, std::string& out) {
        if (const auto* value = field(name)) {
          if (value->kind != Kind::string) throw bad(fmt::format("{:?} is not a string", name));
          out = value->text;
        }
      };
      flag("no_skip", record.no_skip);
      flag("fail", record.fail);
      double attempts = 1;
      number("attempts", attempts);
      record.attempts = static_cast<int>(attempts);
      number("start", record.start);
      number("seconds", record.seconds);
      text("error", record.error);
      text("key", record.key);
      text("host", record.host);
      keep_latest(contents, index, std::move(record));
    }
    contents.valid_bytes = at;  // the start of an incomplete last line, if there is one
    return contents;
  }

  // ---- The run's side (through detail::JournalAccess, on the coordinator) ----------------------

  /// The writer writes its text out once it holds this much.
  static constexpr std::size_t write_threshold = std::size_t{1} << 20;

  /// What the coordinator and the writer both read of a run, set by `begin_run`; each keeps a copy
  /// on its own cache lines.
  struct RunBase {
    std::span<const std::string> datasets;  // the run's names, valid until `end_run`
    std::int64_t unix_nanos = 0;            // the run's start on the wall clock
    std::int64_t clock_nanos = 0;           // the run's start on its clock (that times its jobs)
    bool has_key = false;                   // the options have a `key`
  };

  /// A processed completion as the coordinator queues it for the sync thread, which formats it:
  /// 24 bytes, so that the queue's memory, which passes from one CPU's cache to the other's, is a
  /// quarter of what it was with the name's view and the rarely used fields in each record.
  struct QueuedRecord {
    std::int64_t start_nanos = 0;  // on the run's clock
    std::int64_t elapsed_nanos = 0;
    std::uint32_t dataset = 0;  // index into the run's names
    bool no_skip = true;
    bool fail = false;
    bool has_extra = false;  // the chunk's next `QueuedExtra` belongs to this record
  };

  /// What few records have beyond the common case: more than one attempt, an error text, a key, a host.
  struct QueuedExtra {
    int attempts = 1;
    std::string error;
    std::string key;
    std::string host;
  };

  /// A block of the queue of records from the coordinator to the sync thread (one producer, one
  /// consumer). The coordinator fills it in order and publishes each record by raising
  /// `published` (release); the writer formats what is published (acquire). When it is full the
  /// coordinator links the next one; the writer hands a chunk it has finished to `spare_`.
  /// `extras` holds the `QueuedExtra` of the records that have one, in their order; it is reserved
  /// for `capacity` before its first element, so that the coordinator's appends never move what
  /// the writer reads.
  struct Chunk {
    static constexpr std::size_t capacity = 4096;
    std::array<QueuedRecord, capacity> records{};
    std::vector<QueuedExtra> extras;
    std::atomic<std::size_t> published{0};
    std::atomic<Chunk*> next{nullptr};
  };

  /// Starts a run of `datasets` (in the run's order) at `clock_nanos` on the clock that times its
  /// jobs; fills `done` (one flag per dataset) with what the run resumes. Starts the sync thread.
  /// Logs what is worth knowing.
  void begin_run(std::span<const std::string> datasets, std::string_view barrier_name, const Logger& log,
                 std::int64_t clock_nanos, std::vector<char>& done) {
    if (in_run_.exchange(true)) {
      throw std::logic_error(
          fmt::format("tasktree: journal {:?} is already attached to a run in progress", path_.string()));
    }
    RunGuard run_guard{this};
    if (failed_.load(std::memory_order_relaxed)) rethrow_error();
    for (const std::string& warning : contents_.warnings) log.log(LogLevel::warning, "tasktree: {}", warning);
    contents_.warnings.clear();
    const std::string print = fingerprint(datasets, barrier_name);
    if (contents_.runs > 0 && print != contents_.fingerprint) {
      log.log(LogLevel::info, "tasktree: journal {:?}: the plan changed since its last run (fingerprint {} was {})",
              path_.string(), print, contents_.fingerprint);
    }
    done.clear();  // stays empty unless something is resumed: the run then checks nothing per dataset
    if (options_.resume && !contents_.records.empty()) {
      done.assign(datasets.size(), 0);
      std::size_t resumed = 0;
      std::size_t known = 0;  // datasets of the plan that the journal has
      for (std::size_t i = 0; i < datasets.size(); ++i) {
        const JournalRecord* record = find(datasets[i]);
        if (record != nullptr) ++known;
        if (record == nullptr || !record->succeeded()) continue;
        if (options_.key && record->key != options_.key(datasets[i])) continue;
        done[i] = 1;
        ++resumed;
      }
      if (resumed == 0) done.clear();
      const std::size_t unknown = contents_.records.size() - known;
      log.log(LogLevel::info, "tasktree: journal {:?}: {} of {} datasets succeeded before and are resumed{}",
              path_.string(), resumed, datasets.size(),
              unknown > 0 ? fmt::format("; {} recorded datasets are not in the plan (ignored)", unknown) : "");
    }
    contents_.fingerprint = print;
    ++contents_.runs;
    std::string header =
        fmt::format("{{\"tasktree_journal\":{},\"fingerprint\":\"{}\",\"datasets\":{},\"barrier\":", format_version,
                    print, datasets.size());
    detail::journal_format::append_string(header, barrier_name);
    // The records' start times are this moment on the wall clock plus the time since on the run's
    // clock: no clock call per record.
    run_ = RunBase{
        .datasets = datasets, .unix_nanos = unix_nanos_now(), .clock_nanos = clock_nanos, .has_key = bool(options_.key)};
    writer_run_ = run_;
    fmt::format_to(std::back_inserter(header), ",\"started\":{:.6f}}}\n", static_cast<double>(run_.unix_nanos) / 1e9);
    // The queue starts empty, in the first chunk; the others are spare.
    if (chunks_.empty()) chunks_.push_back(std::make_unique<Chunk>());
    tail_ = head_ = chunks_.front().get();
    tail_->extras.clear();
    tail_->published.store(0, std::memory_order_relaxed);
    tail_->next.store(nullptr, std::memory_order_relaxed);
    queued_ = formatted_ = extras_formatted_ = 0;
    {
      std::lock_guard lock(queue_mutex_);
      spare_.clear();
      spare_.reserve(chunks_.size());
      for (std::size_t i = 1; i < chunks_.size(); ++i) spare_.push_back(chunks_[i].get());
      closing_ = false;
      chunk_ready_ = false;
    }
    text_size_ = 0;
    std::memcpy(text_room(header.size()), header.data(), header.size());
    text_size_ += header.size();
    note_attempts_ = 0;
    note_error_.clear();
    syncer_ = std::thread([this] { sync_loop(); });  // from here on the sync thread is the writer
    run_guard.self = nullptr;                        // the run has begun: `end_run` ends it
  }

  /// Records the processed completion of the run's dataset number `dataset` (an index into the
  /// names given to `begin_run`, which stay valid until `end_run`), which started at `start_nanos`
  /// on the run's clock and ran for `elapsed_nanos`. The record is queued, and the sync thread
  /// formats and writes it. Neither locks nor allocates unless the journal has a key or an error
  /// to note (or resumes, which keeps every record), except once per `Chunk::capacity` records.
  void record(std::uint32_t dataset, bool no_skip, bool fail, std::int64_t start_nanos, std::int64_t elapsed_nanos) {
    if (failed_.load(std::memory_order_relaxed)) rethrow_error();
    const std::string_view name = run_.datasets[dataset];
    const int attempts = note_attempts_ > 0 ? note_attempts_ : 1;
    std::string key;
    if (options_.key) key = options_.key(name);
    const std::string_view host = host_of_ ? host_of_(name) : std::string_view();
    if (queued_ == Chunk::capacity) next_chunk();
    QueuedRecord& entry = tail_->records[queued_];
    entry.start_nanos = start_nanos;
    entry.elapsed_nanos = elapsed_nanos;
    entry.dataset = dataset;
    entry.no_skip = no_skip;
    entry.fail = fail;
    entry.has_extra = attempts != 1 || !note_error_.empty() || options_.key || !host.empty();
    if (entry.has_extra) {
      if (tail_->extras.capacity() < Chunk::capacity) tail_->extras.reserve(Chunk::capacity);
      // The key stays here when the journal resumes: the record kept below needs it.
      tail_->extras.push_back(QueuedExtra{.attempts = attempts,
                                          .error = note_error_,
                                          .key = options_.resume ? key : std::move(key),
                                          .host = std::string(host)});
    }
    tail_->published.store(++queued_, std::memory_order_release);
    if (queued_ == Chunk::capacity) {  // a full chunk: the sync thread formats it now
      {
        std::lock_guard lock(queue_mutex_);
        chunk_ready_ = true;
      }
      wake_.notify_one();
    }
    if (options_.resume) {
      const std::int64_t elapsed_micros = micros_of(elapsed_nanos);
      JournalRecord kept{.dataset = std::string(name),
                         .no_skip = no_skip,
                         .fail = fail,
                         .attempts = attempts,
                         .start = static_cast<double>(start_micros(run_, start_nanos)) / 1e6,
                         .seconds = static_cast<double>(elapsed_micros) / 1e6,
                         .error = note_error_,
                         .key = std::move(key),
                         .host = std::string(host)};
      keep_latest(contents_, index_, std::move(kept));
    }
    if (note_attempts_ != 0) note_attempts_ = 0;
    if (!note_error_.empty()) note_error_.clear();
  }

  /// Ends the run: joins the sync thread, formats, writes and syncs what is left. Rethrows a write
  /// error of the run (the records since the last sync may be lost then).
  void end_run() {
    {
      std::lock_guard lock(queue_mutex_);
      closing_ = true;
    }
    wake_.notify_all();
    if (syncer_.joinable()) syncer_.join();  // from here on this thread is the writer
    flush(true);
    in_run_.store(false);
    if (failed_.load(std::memory_order_relaxed)) rethrow_error();
  }

  /// Clears `in_run_` if `begin_run` throws.
  struct RunGuard {
    Journal* self;
    ~RunGuard() {
      if (self != nullptr) self->in_run_.store(false);
    }
  };

  /// Throws the write error the sync thread kept, and forgets it.
  [[noreturn]] void rethrow_error() {
    std::lock_guard lock(queue_mutex_);
    failed_.store(false, std::memory_order_relaxed);
    std::rethrow_exception(std::exchange(error_, nullptr));
  }

  /// The coordinator's next chunk, once the current one is full: a spare one or a new one, linked
  /// after the current one. The only lock (and, while the journal object is new, allocation) on
  /// the way of a record, once per `Chunk::capacity` records.
  void next_chunk() {
    Chunk* chunk = nullptr;
    {
      std::lock_guard lock(queue_mutex_);
      if (!spare_.empty()) {
        chunk = spare_.back();
        spare_.pop_back();
      }
    }
    if (chunk == nullptr) {
      chunks_.push_back(std::make_unique<Chunk>());
      chunk = chunks_.back().get();
      std::lock_guard lock(queue_mutex_);
      spare_.reserve(chunks_.size());  // so that the sync thread never allocates to hand one back
    }
    chunk->extras.clear();
    chunk->published.store(0, std::memory_order_relaxed);
    chunk->next.store(nullptr, std::memory_order_relaxed);
    tail_->next.store(chunk, std::memory_order_release);  // publishes the resets above too
    tail_ = chunk;
    queued_ = 0;
  }

  /// The sync thread: formats and writes each chunk the coordinator fills, and every
  /// `sync_interval` also what it published of the current one, and syncs. `end_run` does the
  /// rest after it returns.
  void sync_loop() noexcept {
    auto next_sync = std::chrono::steady_clock::now() + options_.sync_interval;
    std::unique_lock lock(queue_mutex_);
    while (true) {
      wake_.wait_until(lock, next_sync, [this] { return closing_ || chunk_ready_; });
      if (closing_) return;
      chunk_ready_ = false;
      const bool sync = std::chrono::steady_clock::now() >= next_sync;
      lock.unlock();
      flush(sync);
      if (sync) next_sync = std::chrono::steady_clock::now() + options_.sync_interval;
      lock.lock();
    }
  }

  /// The writer (the sync thread during a run, else the coordinator): formats what the
  /// coordinator published, writes it, and syncs if `sync` and anything was written since the last
  /// sync (else starts its writeback). An error is kept for the coordinator (the text it concerned
  /// is dropped).
  void flush(bool sync) noexcept {
    try {
      format_published();
      write_text();
      if (sync && unsynced_) {
        if (::fdatasync(fd_) != 0) throw error("cannot sync");
        unsynced_ = false;
      } else if (unsynced_) {
        start_writeback();
      }
    } catch (...) {
      text_size_ = 0;
      std::lock_guard lock(queue_mutex_);
      if (!error_) error_ = std::current_exception();
      failed_.store(true, std::memory_order_relaxed);
    }
  }

  /// The writer: formats the records the coordinator has published since the last call, writing
  /// the text out in pieces of `write_threshold`, and hands back the chunks it is done with.
  void format_published() {
    while (true) {
      const std::size_t published = head_->published.load(std::memory_order_acquire);
      while (formatted_ < published) {
        const QueuedRecord& entry = head_->records[formatted_++];
        format_record(entry, entry.has_extra ? &head_->extras[extras_formatted_++] : nullptr);
        if (text_size_ >= write_threshold) write_text();
      }
      if (formatted_ < Chunk::capacity) return;  // caught up with the coordinator
      Chunk* const next = head_->next.load(std::memory_order_acquire);
      if (next == nullptr) return;  // full, but the coordinator has not needed the next one yet
      {
        std::lock_guard lock(queue_mutex_);
        spare_.push_back(head_);  // never allocates: `next_chunk` reserved room for every chunk
      }
      head_ = next;
      formatted_ = extras_formatted_ = 0;
    }
  }

  /// The writer: writes the formatted text (whole lines) to the file. If a write fails part of
  /// the way, the file is cut back to the end of its last whole line before the error is thrown,
  /// so that what a later run appends starts a line of its own: left there, the piece of a line
  /// became a corrupt line in the middle of the file once more records followed, and the journal
  /// could no longer be opened. If even that fails, the next write tries again first.
  void write_text() {
    if (torn_) {
      if (::ftruncate(fd_, static_cast<off_t>(whole_bytes_)) != 0) throw error("cannot truncate");
      torn_ = false;
    }
    std::size_t done = 0;
    while (done < text_size_) {
      const ssize_t wrote = ::write(fd_, text_.data() + done, text_size_ - done);
      if (wrote < 0) {
        if (errno == EINTR) continue;
        const int write_errno = errno;
        const std::size_t last_newline = std::string_view(text_.data(), done).rfind('\n');
        const std::size_t whole = last_newline == std::string_view::npos ? 0 : last_newline + 1;
        whole_bytes_ += whole;
        torn_ = whole < done && ::ftruncate(fd_, static_cast<off_t>(whole_bytes_)) != 0;
        unsynced_ = unsynced_ || whole > 0;
        errno = write_errno;
        throw error("cannot write");
      }
      done += static_cast<std::size_t>(wrote);
    }
    whole_bytes_ += text_size_;
    unsynced_ = unsynced_ || text_size_ > 0;
    text_size_ = 0;
  }

  /// The writer: asks the kernel to start writing what was written to the disk, without waiting
  /// for it (Linux: `sync_file_range`), so that the next `fdatasync`, the one at the end of the run
  /// included, finds most of it there already (on a million records it had 76 MB to write, 40 ms).
  /// Only a head start: elsewhere, or if it fails, `fdatasync` does it all.
  void start_writeback() const noexcept {
#ifdef __linux__
    ::sync_file_range(fd_, 0, 0, SYNC_FILE_RANGE_WRITE);
#endif
  }

  /// The writer: room for `bytes` more bytes of text, at the end of `text_`'s first `text_size_`.
  char* text_room(std::size_t bytes) {
    if (text_size_ + bytes > text_.size()) text_.resize(std::max(2 * text_.size(), text_size_ + bytes));
    return text_.data() + text_size_;
  }

  /// `literal` (without its terminating zero) at `out`; returns the end.
  template <std::size_t N>
  static char* put(char* out, const char (&literal)[N]) noexcept {
    std::memcpy(out, literal, N - 1);
    return out + (N - 1);
  }

  /// The writer: appends `entry`'s line to the text. The fields at their defaults (no_skip, not
  /// fail, one attempt) are left out: most records are the same.
  void format_record(const QueuedRecord& entry, const QueuedExtra* extra) {
    namespace json = detail::journal_format;
    const std::string_view dataset = writer_run_.datasets[entry.dataset];
    const int attempts = extra != nullptr ? extra->attempts : 1;
    const std::string_view error = extra != nullptr ? std::string_view(extra->error) : std::string_view();
    const bool has_key = writer_run_.has_key;
    const std::string_view key = extra != nullptr ? std::string_view(extra->key) : std::string_view();
    const std::string_view host = extra != nullptr ? std::string_view(extra->host) : std::string_view();
    static constexpr std::size_t most_fixed =  // every field name and punctuation, and the numbers
        sizeof R"({"dataset":,"no_skip":false,"fail":true,"attempts":,"start":,"seconds":,"error":,"key":,"host":})" +
        json::max_integer_size + 2 * json::max_micros_size + 1;
    char* const begin =
        text_room(most_fixed + json::max_string_size(dataset.size()) + json::max_string_size(error.size()) +
                  json::max_string_size(key.size()) + json::max_string_size(host.size()));
    char* out = put(begin, R"({"dataset":)");
    out = json::write_string(out, dataset);
    if (!entry.no_skip) out = put(out, R"(,"no_skip":false)");
    if (entry.fail) out = put(out, R"(,"fail":true)");
    if (attempts != 1) {
      out = put(out, R"(,"attempts":)");
      out = json::write_integer(out, attempts);
    }
    const std::int64_t elapsed_micros = micros_of(entry.elapsed_nanos);
    out = put(out, R"(,"start":)");
    // The start's whole seconds change once a second: their text is kept.
    const std::int64_t start = start_micros(writer_run_, entry.start_nanos);
    if (start / 1'000'000 != start_second_) {
      start_second_ = start / 1'000'000;
      start_second_size_ =
          static_cast<std::size_t>(json::write_integer(start_second_text_, start_second_) - start_second_text_);
    }
    std::memcpy(out, start_second_text_, start_second_size_);
    out = json::write_fraction(out + start_second_size_, start % 1'000'000);
    out = put(out, R"(,"seconds":)");
    out = json::write_micros(out, elapsed_micros);
    if (!error.empty()) {
      out = put(out, R"(,"error":)");
      out = json::write_string(out, error);
    }
    if (has_key) {
      out = put(out, R"(,"key":)");
      out = json::write_string(out, key);
    }
    if (!host.empty()) {
      out = put(out, R"(,"host":)");
      out = json::write_string(out, host);
    }
    out = put(out, "}\n");
    text_size_ += static_cast<std::size_t>(out - begin);
  }

  /// Nanoseconds (a negative count as 0) to the nearest microsecond.
  static std::int64_t micros_of(std::int64_t nanos) noexcept { return (std::max<std::int64_t>(nanos, 0) + 500) / 1000; }

  /// The wall clock, in nanoseconds since the Unix epoch.
  static std::int64_t unix_nanos_now() noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
  }

  /// When a job of `run` that started at `start_nanos` on the run's clock started, on the wall
  /// clock, in microseconds since the Unix epoch (not before the epoch).
  [[nodiscard]] static std::int64_t start_micros(const RunBase& run, std::int64_t start_nanos) noexcept {
    return micros_of(run.unix_nanos + (start_nanos - run.clock_nanos));
  }

  /// FNV-1a over 8-byte words of each name (its length first, then its bytes, the last word padded
  /// with zeros), in four lanes: name number i of the run's order goes into lane i mod 4. The
  /// fingerprint is FNV-1a over the four lanes' hashes and then the barrier name, in hex. Word by
  /// word, because byte by byte it cost a tenth of a journaled run of a million datasets; in lanes,
  /// because one chain of multiplications over a million names still took 5 ms, and four
  /// independent ones overlap in the CPU.
  static std::string fingerprint(std::span<const std::string> datasets, std::string_view barrier_name) {
    constexpr std::uint64_t basis = 0xcbf29ce484222325ull;
    constexpr std::uint64_t prime = 0x100000001b3ull;
    const auto add = [](std::uint64_t& hash, std::string_view name) {
      const auto mix = [&hash](std::uint64_t word) { hash = (hash ^ word) * prime; };
      mix(name.size());
      std::size_t at = 0;
      for (; at + 8 <= name.size(); at += 8) {
        std::uint64_t word = 0;
        std::memcpy(&word, name.data() + at, 8);
        mix(word);
      }
      if (at < name.size()) {
        std::uint64_t word = 0;
        std::memcpy(&word, name.data() + at, name.size() - at);
        mix(word);
      }
    };
    std::array<std::uint64_t, 4> lanes{basis, basis, basis, basis};
    std::size_t i = 0;
    for (; i + 4 <= datasets.size(); i += 4) {
      add(lanes[0], datasets[i]);
      add(lanes[1], datasets[i + 1]);
      add(lanes[2], datasets[i + 2]);
      add(lanes[3], datasets[i + 3]);
    }
    for (; i < datasets.size(); ++i) add(lanes[i % 4], datasets[i]);
    std::uint64_t hash = basis;
    for (const std::uint64_t lane : lanes) hash = (hash ^ lane) * prime;
    add(hash, barrier_name);
    return fmt::format("{:016x}", hash);
  }

  std::filesystem::path path_;
  JournalOptions options_;
  int fd_ = -1;
  JournalContents contents_;
  Index index_;
  /// The host of a dataset's last attempt, for its record (an MPI run sets it while it lasts).
  std::function<std::string_view(std::string_view dataset)> host_of_;

  // The coordinator's side of the queue (also `begin_run`'s). Each side has cache lines of its
  // own: when `queued_` shared one with `text_size_`, which the sync thread writes all the time,
  // loading it was half of `record`'s time.
  static constexpr std::size_t cache_line = 64;
  alignas(cache_line) std::vector<std::unique_ptr<Chunk>> chunks_;  // every chunk, kept for the next runs
  Chunk* tail_ = nullptr;                                           // the chunk it fills
  std::size_t queued_ = 0;                                          // records in `tail_`
  RunBase run_;                                                     // the run's (the writer has a copy)
  int note_attempts_ = 0;                                           // from `annotate`, for the next record
  std::string note_error_;                                          // from `annotate`, for the next record
  // `error_` is set: checked on every record without the lock, and written only on an error, so it
  // lives here and not beside the mutex, which the sync thread writes for every chunk (sharing that
  // cache line made loading it half of `record`'s time).
  std::atomic<bool> failed_{false};

  // The writer's side: the sync thread's during a run, the coordinator's before and after.
  alignas(cache_line) Chunk* head_ = nullptr;  // the chunk it formats
  std::size_t formatted_ = 0;                  // records of `head_` formatted
  std::size_t extras_formatted_ = 0;           // extras of `head_` formatted
  RunBase writer_run_;                         // a copy of `run_`: the coordinator writes next to that one
  std::string text_;                           // formatted, not yet written: its first `text_size_` bytes
  std::size_t text_size_ = 0;
  bool unsynced_ = false;           // written since the last `fdatasync`
  std::uint64_t whole_bytes_ = 0;   // the file's size up to the end of its last whole line
  bool torn_ = false;               // the file ends in a piece of a line that could not be cut off
  std::int64_t start_second_ = -1;  // the whole seconds of the last start formatted, and their text
  char start_second_text_[detail::journal_format::max_integer_size] = {};
  std::size_t start_second_size_ = 0;

  alignas(cache_line) std::mutex queue_mutex_;
  std::condition_variable wake_;
  std::vector<Chunk*> spare_;        // guarded by `queue_mutex_`: chunks free for the coordinator
  bool chunk_ready_ = false;         // guarded by `queue_mutex_`: a chunk was filled
  bool closing_ = false;             // guarded by `queue_mutex_`
  std::exception_ptr error_;         // guarded by `queue_mutex_`: the first write error
  std::thread syncer_;
  std::atomic<bool> in_run_{false};  // between `begin_run` and `end_run`
};

namespace detail {

/// The scheduler's way into a `Journal`'s run hooks.
class JournalAccess {
 public:
  static void begin_run(Journal& journal, std::span<const std::string> datasets, std::string_view barrier_name,
                        const Logger& log, std::int64_t clock_nanos, std::vector<char>& done) {
    journal.begin_run(datasets, barrier_name, log, clock_nanos, done);
  }
  static void record(Journal& journal, std::uint32_t dataset, bool no_skip, bool fail, std::int64_t start_nanos,
                     std::int64_t elapsed_nanos) {
    journal.record(dataset, no_skip, fail, start_nanos, elapsed_nanos);
  }
  static void end_run(Journal& journal) { journal.end_run(); }
  /// Names the host of each record (`JournalRecord::host`) until called again with an empty function;
  /// called on the coordinator, at each record, with the record's dataset.
  static void set_host_source(Journal& journal, std::function<std::string_view(std::string_view dataset)> host_of) {
    journal.host_of_ = std::move(host_of);
  }
};

}  // namespace detail

}  // namespace tasktree
