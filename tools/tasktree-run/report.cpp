#include "report.hpp"

#include <tasktree/dataset_trie.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <string.h>

#include <algorithm>
#include <chrono>
#include <iterator>
#include <numeric>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace tasktree_run {

double seconds(Clock::duration duration) { return std::chrono::duration<double>(duration).count(); }

Clock::duration duration_of(const JobRecord& job) {
  return job.attempts > 0 ? job.finished - job.started : Clock::duration{};
}

std::vector<std::size_t> slowest_jobs(const RunReport& report, std::size_t count) {
  std::vector<std::size_t> ran;
  for (std::size_t i = 0; i < report.jobs.size(); ++i) {
    if (report.jobs[i].attempts > 0) ran.push_back(i);
  }
  const std::size_t shown = std::min(ran.size(), count);
  std::partial_sort(
      ran.begin(), ran.begin() + static_cast<std::ptrdiff_t>(shown), ran.end(),
      [&](std::size_t a, std::size_t b) { return duration_of(report.jobs[a]) > duration_of(report.jobs[b]); });
  ran.resize(shown);
  return ran;
}

std::string_view to_string(ProcessResult::End end) {
  using End = ProcessResult::End;
  switch (end) {
    case End::exited: return "exited";
    case End::signalled: return "signalled";
    case End::timed_out: return "timed_out";
    case End::stopped: return "stopped";
    case End::not_started: return "not_started";
    case End::spawn_failed: return "spawn_failed";
    case End::output_failed: return "output_failed";
  }
  return "unknown";
}

namespace {

/// The sorted job paths (the trie refers to them) and the index of each in `settings.jobs`.
struct SortedJobs {
  std::vector<std::string> paths;
  std::vector<std::size_t> index;
  explicit SortedJobs(const RunSettings& settings) {
    index.resize(settings.jobs.size());
    std::iota(index.begin(), index.end(), std::size_t{0});
    std::sort(index.begin(), index.end(),
              [&](std::size_t a, std::size_t b) { return settings.jobs[a].path < settings.jobs[b].path; });
    for (const std::size_t i : index) paths.push_back(settings.jobs[i].path);
  }
};

/// Appends formatted lines to a string.
struct LineWriter {
  std::string& out;
  template <class... Args>
  void operator()(fmt::format_string<Args...> format, Args&&... args) const {
    fmt::format_to(std::back_inserter(out), format, std::forward<Args>(args)...);
    out += '\n';
  }
};

}  // namespace

std::string format_summary(const RunSettings& settings, const RunReport& report) {
  std::string out;
  const LineWriter line{out};
  const std::size_t total = report.jobs.size();
  const std::size_t resumed = report.count(JobStatus::resumed);
  line("tasktree-run: {} job{} in {:.1f}s: {} succeeded, {} failed, {} skipped, {} stopped, {} not run; {} retr{}{}",
       total, total == 1 ? "" : "s", seconds(report.finished - report.started), report.count(JobStatus::succeeded),
       report.count(JobStatus::failed), report.count(JobStatus::skipped), report.count(JobStatus::stopped),
       report.count(JobStatus::not_run), report.retries, report.retries == 1 ? "y" : "ies",
       resumed > 0 ? fmt::format("; {} resumed (succeeded before)", resumed) : std::string());

  const auto list = [&](JobStatus status, std::string_view heading, auto&& describe_job, std::size_t limit) {
    std::size_t shown = 0, all = report.count(status);
    if (all == 0) return;
    line("{}:", heading);
    for (std::size_t i = 0; i < total && shown < limit; ++i) {
      if (report.jobs[i].status != status) continue;
      describe_job(settings.jobs[i], report.jobs[i]);
      ++shown;
    }
    if (all > shown) line("  ... and {} more", all - shown);
  };
  list(
      JobStatus::failed, "failed",
      [&](const JobSpec& spec, const JobRecord& job) {
        line("  {}: {} after {} attempt{} ({:.1f}s; line {}: {})", spec.path, describe(job.last), job.attempts,
             job.attempts == 1 ? "" : "s", seconds(duration_of(job)), spec.line, spec.command);
        for (const std::string& text : job.stderr_tail) line("    | {}", text);
      },
      20);
  list(
      JobStatus::stopped, "stopped while running",
      [&](const JobSpec& spec, const JobRecord& job) {
        line("  {}: {} ({:.1f}s)", spec.path, describe(job.last), seconds(duration_of(job)));
      },
      20);
  list(
      JobStatus::skipped, "skipped because of a failure",
      [&](const JobSpec& spec, const JobRecord& job) { line("  {} (below {})", spec.path, job.skipped_below); }, 10);
  list(
      JobStatus::not_run, "not run (the run stopped first)",
      [&](const JobSpec& spec, const JobRecord&) { line("  {}", spec.path); }, 10);

  if (const std::vector<std::size_t> slowest = slowest_jobs(report, 5); !slowest.empty()) {
    line("slowest:");
    for (const std::size_t i : slowest)
      line("  {:>6.1f}s  {}", seconds(duration_of(report.jobs[i])), settings.jobs[i].path);
  }

  const int code = report.exit_code();
  if (report.signal != 0) {
    line("tasktree-run: interrupted by {} (exit code {})", signal_name(report.signal), code);
  } else if (report.stopped_by_failure && settings.halt.when != RunSettings::Halt::When::never) {
    line("tasktree-run: FAILED: stopped after {} failed job{} (--halt {}) (exit code {})",
         report.count(JobStatus::failed), report.count(JobStatus::failed) == 1 ? "" : "s", settings.halt.text, code);
  } else if (report.stopped_by_failure) {
    line("tasktree-run: FAILED: stopped at the first failure (--skip-on-error fail) (exit code {})", code);
  } else if (code != 0) {
    line("tasktree-run: FAILED (exit code {})", code);
  } else {
    if (total == 1) {
      line("tasktree-run: the job succeeded");
    } else {
      line("tasktree-run: all {} jobs succeeded", total);
    }
  }
  return out;
}

std::string format_json(const RunSettings& settings, const RunReport& report) {
  using nlohmann::json;
  // Paths, commands and standard error are bytes, not necessarily UTF-8 (a Latin-1 file name, a
  // binary's output, a long line cut into pieces mid-character); each byte that is not part of valid
  // UTF-8 becomes U+FFFD, so that the report is always valid JSON (the default handler throws).
  const auto dump = [](const json& value) { return value.dump(2, ' ', false, json::error_handler_t::replace); };
  const int code = report.exit_code();
  const json head{
      {"result", report.signal != 0 ? "interrupted"
                 : code == 0        ? "succeeded"
                                    : "failed"},
      {"exit_code", code},
      {"signal", report.signal != 0 ? json(signal_name(report.signal)) : json(nullptr)},
      {"stopped_by_failure", report.stopped_by_failure},
      {"elapsed_seconds", seconds(report.finished - report.started)},
      {"settings",
       {
           {"workers", settings.workers},
           {"skip_on_error", tasktree::to_string(settings.skip_on_error)},
           {"halt", settings.halt.text.empty() ? std::string("never") : settings.halt.text},
           {"retries", settings.retries},
           {"timeout_seconds", settings.timeout ? json(seconds(*settings.timeout)) : json(nullptr)},
           {"kill_after_seconds", seconds(settings.kill_after)},
           {"retry_backoff_seconds", seconds(settings.retry_backoff)},
           {"work_period_seconds", seconds(settings.work_period)},
           {"jitter", settings.jitter},
           {"priority", settings.priority == PriorityOrder::name ? "name" : "depth"},
           {"shell", settings.shell.empty() ? std::string("/bin/sh") : settings.shell.front()},
           {"log_dir", settings.log_dir.empty() ? json(nullptr) : json(settings.log_dir.string())},
           {"journal", settings.journal.empty() ? json(nullptr) : json(settings.journal.string())},
           {"resume", settings.resume},
           {"mpi", settings.mpi},
       }},
      {"counts",
       {
           {"total", report.jobs.size()},
           {"succeeded", report.count(JobStatus::succeeded)},
           {"failed", report.count(JobStatus::failed)},
           {"skipped", report.count(JobStatus::skipped)},
           {"stopped", report.count(JobStatus::stopped)},
           {"not_run", report.count(JobStatus::not_run)},
           {"resumed", report.count(JobStatus::resumed)},
           {"retries", report.retries},
       }},
  };
  // The jobs are written one at a time into the text, not gathered into one document first: a
  // document of 100,000 jobs held twice the memory of the whole run. The layout is that of a dump
  // with an indent of 2, with "jobs" last, after the verdict and the counts.
  std::string out = dump(head);
  out.pop_back();  // the closing brace
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  out += ",\n  \"jobs\": [";
  for (std::size_t i = 0; i < report.jobs.size(); ++i) {
    const JobSpec& spec = settings.jobs[i];
    const JobRecord& job = report.jobs[i];
    json entry{
        {"path", spec.path},        {"command", spec.command}, {"line", spec.line}, {"status", to_string(job.status)},
        {"attempts", job.attempts},
    };
    if (job.attempts > 0) {
      entry["submit_count"] = job.submit_count;
      entry["start_seconds"] = seconds(job.started - report.started);
      entry["duration_seconds"] = seconds(duration_of(job));
      entry["end"] = to_string(job.last.end);
      entry["exit_code"] = job.last.end == ProcessResult::End::exited ? json(job.last.exit_code) : json(nullptr);
      entry["signal"] =
          job.last.end == ProcessResult::End::signalled ? json(signal_name(job.last.signal)) : json(nullptr);
      entry["stderr_tail"] = job.stderr_tail;
      if (!job.host.empty()) entry["host"] = job.host;  // --mpi: where the last attempt ran
      if (job.last.end == ProcessResult::End::spawn_failed || job.last.end == ProcessResult::End::output_failed) {
        entry["error"] = job.last.error;
      }
    }
    if (job.status == JobStatus::skipped) entry["skipped_below"] = job.skipped_below;
    out += i == 0 ? "\n    " : ",\n    ";
    for (const char c : dump(entry)) {  // one level deeper: a string's newlines are escaped, so each is the layout's
      out += c;
      if (c == '\n') out += "    ";
    }
  }
  out += report.jobs.empty() ? "]\n}\n" : "\n  ]\n}\n";
  return out;
}

std::string format_dry_run(const RunSettings& settings, std::string_view barrier_name) {
  const SortedJobs sorted(settings);
  const tasktree::DatasetTrie trie(sorted.paths, barrier_name);
  using Node = tasktree::DatasetTrie::NodeIndex;
  constexpr Node none = tasktree::DatasetTrie::npos;

  std::string out;
  fmt::format_to(std::back_inserter(out),
                 "dependency tree ({} jobs; a job starts after the jobs above it; "
                 "below {:?} only after everything beside it):\n",
                 settings.jobs.size(), barrier_name);
  // Iterative pre-order walk; `last[d]` says whether the ancestor at depth d was its parent's last
  // child (which decides between "│" and blank in the indentation).
  std::vector<bool> last;
  Node node = trie.first_child(tasktree::DatasetTrie::root);
  while (node != none) {
    for (const bool ancestor_last : last) out += ancestor_last ? "    " : "│   ";
    out += trie.next_sibling(node) == none ? "└── " : "├── ";
    out += trie.component(node);
    if (trie.is_barrier(node)) {
      out += "  (barrier)";
    } else if (!trie.is_job(node)) {
      out += "  (no job)";
    }
    out += '\n';
    if (trie.first_child(node) != none) {
      last.push_back(trie.next_sibling(node) == none);
      node = trie.first_child(node);
      continue;
    }
    while (node != none && trie.next_sibling(node) == none) {
      node = trie.parent(node);
      if (node == tasktree::DatasetTrie::root) {
        node = none;
      } else {
        last.pop_back();
      }
    }
    if (node != none) node = trie.next_sibling(node);
  }

  fmt::format_to(std::back_inserter(out), "\norder with one worker if every job succeeds (--priority {}):\n",
                 settings.priority == PriorityOrder::name ? "name" : "depth");
  const std::vector<std::size_t> order = dry_run_order(settings);
  const std::size_t width = fmt::formatted_size("{}", order.size());
  std::size_t path_width = 0;
  for (const JobSpec& job : settings.jobs) path_width = std::max(path_width, job.path.size());
  for (std::size_t k = 0; k < order.size(); ++k) {
    const JobSpec& job = settings.jobs[order[k]];
    fmt::format_to(std::back_inserter(out), "{:>{}}  {:<{}}  {}\n", k + 1, width, job.path, path_width, job.command);
  }
  return out;
}

std::string format_dot(const RunSettings& settings, std::string_view barrier_name) {
  const SortedJobs sorted(settings);
  const tasktree::DatasetTrie trie(sorted.paths, barrier_name);
  using Node = tasktree::DatasetTrie::NodeIndex;
  constexpr Node none = tasktree::DatasetTrie::npos;
  const auto quoted = [](std::string_view text) {
    std::string escaped = "\"";
    for (const char c : text) {
      if (c == '"' || c == '\\') escaped += '\\';
      escaped += c == '\n' ? ' ' : c;
    }
    return escaped + '"';
  };

  std::string out = "digraph tasktree {\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];\n";
  for (Node node = 1; node < trie.size(); ++node) {
    if (trie.is_job(node)) {
      const JobSpec& job = settings.jobs[sorted.index[trie.dataset(node)]];
      fmt::format_to(std::back_inserter(out), "  n{} [label={}, tooltip={}];\n", node, quoted(trie.component(node)),
                     quoted(fmt::format("{}: {}", job.path, job.command)));
    } else if (trie.is_barrier(node)) {
      fmt::format_to(std::back_inserter(out), "  n{} [label={}, shape=octagon, tooltip={}];\n", node,
                     quoted(trie.component(node)), quoted(fmt::format("barrier {}", trie.path(node))));
    } else {
      fmt::format_to(std::back_inserter(out), "  n{} [label={}, style=dashed, tooltip={}];\n", node,
                     quoted(trie.component(node)), quoted(fmt::format("{} (no job)", trie.path(node))));
    }
  }
  for (Node node = 1; node < trie.size(); ++node) {
    if (trie.parent(node) != tasktree::DatasetTrie::root) {
      fmt::format_to(std::back_inserter(out), "  n{} -> n{};\n", trie.parent(node), node);
    }
    if (trie.is_barrier(node)) {  // the barrier waits for everything beside it
      for (Node sibling = trie.first_child(trie.parent(node)); sibling != none; sibling = trie.next_sibling(sibling)) {
        if (sibling != node) fmt::format_to(std::back_inserter(out), "  n{} -> n{} [style=dashed];\n", sibling, node);
      }
    }
  }
  out += "}\n";
  return out;
}

std::string format_trace(const RunSettings& settings, const RunReport& report) {
  using nlohmann::json;
  const auto micros = [&](Clock::time_point at) {
    return std::chrono::duration_cast<std::chrono::microseconds>(at - report.started).count();
  };
  json events = json::array();
  int slots = 0;
  std::vector<std::string_view> slot_hosts;  // --mpi: the host of each track
  for (const AttemptRecord& attempt : report.attempts) {
    slots = std::max(slots, attempt.slot + 1);
    slot_hosts.resize(static_cast<std::size_t>(slots));
    if (!attempt.host.empty()) slot_hosts[static_cast<std::size_t>(attempt.slot)] = attempt.host;
  }
  events.push_back({{"name", "process_name"}, {"ph", "M"}, {"pid", 1}, {"args", {{"name", "tasktree-run"}}}});
  for (int slot = 0; slot < slots; ++slot) {
    events.push_back({{"name", "thread_name"},
                      {"ph", "M"},
                      {"pid", 1},
                      {"tid", slot + 1},
                      {"args",
                       {{"name", slot_hosts[static_cast<std::size_t>(slot)].empty()
                                     ? fmt::format("worker {}", slot + 1)
                                     : fmt::format("worker {} ({})", slot + 1,
                                                   slot_hosts[static_cast<std::size_t>(slot)])}}}});
    events.push_back(
        {{"name", "thread_sort_index"}, {"ph", "M"}, {"pid", 1}, {"tid", slot + 1}, {"args", {{"sort_index", slot}}}});
  }
  // The attempts of each job in order, to draw the backoff between a failure and its retry.
  std::vector<std::vector<const AttemptRecord*>> by_job(settings.jobs.size());
  for (const AttemptRecord& attempt : report.attempts) by_job[attempt.job].push_back(&attempt);
  for (const AttemptRecord& attempt : report.attempts) {
    const JobSpec& job = settings.jobs[attempt.job];
    const ProcessResult& result = attempt.result;
    const char* color = result.succeeded()                          ? "good"
                        : attempt.retried                           ? "yellow"
                        : result.end == ProcessResult::End::stopped ? "grey"
                                                                    : "terrible";
    json args{
        {"attempt", attempt.attempt}, {"end", to_string(result.end)}, {"command", job.command}, {"line", job.line}};
    if (result.end == ProcessResult::End::exited) args["exit_code"] = result.exit_code;
    if (result.end == ProcessResult::End::signalled) args["signal"] = signal_name(result.signal);
    if (!result.error.empty()) args["error"] = result.error;
    if (!attempt.host.empty()) args["host"] = attempt.host;
    events.push_back(
        {{"name", attempt.attempt == 1 ? job.path : fmt::format("{} (attempt {})", job.path, attempt.attempt)},
         {"cat", result.succeeded() ? "succeeded"
                 : attempt.retried  ? "retried"
                                    : "failed"},
         {"ph", "X"},
         {"ts", micros(attempt.start)},
         {"dur", std::max<std::int64_t>(micros(attempt.end) - micros(attempt.start), 1)},
         {"pid", 1},
         {"tid", attempt.slot + 1},
         {"cname", color},
         {"args", std::move(args)}});
  }
  std::size_t id = 0;
  for (std::size_t i = 0; i < by_job.size(); ++i) {
    const auto& attempts = by_job[i];
    for (std::size_t k = 0; k + 1 < attempts.size(); ++k) {
      ++id;
      const json common{
          {"name", fmt::format("backoff {}", settings.jobs[i].path)}, {"cat", "backoff"}, {"id", id}, {"pid", 1}};
      json begin = common;
      begin["ph"] = "b";
      begin["ts"] = micros(attempts[k]->end);
      begin["args"] = {{"before_attempt", attempts[k + 1]->attempt}};
      json end = common;
      end["ph"] = "e";
      end["ts"] = micros(attempts[k + 1]->start);
      events.push_back(std::move(begin));
      events.push_back(std::move(end));
    }
  }
  const json document{{"traceEvents", std::move(events)},
                      {"displayTimeUnit", "ms"},
                      {"otherData", {{"tool", "tasktree-run"}, {"jobs", settings.jobs.size()}}}};
  return document.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
}

JournalStatus format_journal_status(const tasktree::JournalContents& journal, const std::vector<JobSpec>& jobs) {
  std::unordered_map<std::string_view, const tasktree::JournalRecord*> records;
  for (const tasktree::JournalRecord& record : journal.records) records.emplace(record.dataset, &record);
  std::size_t width = 0;
  for (const JobSpec& job : jobs) width = std::max(width, job.path.size());
  if (jobs.empty()) {
    for (const tasktree::JournalRecord& record : journal.records) width = std::max(width, record.dataset.size());
  }
  width = std::min<std::size_t>(width, 60);

  std::string out;
  const LineWriter line{out};
  std::size_t done = 0, failed = 0, skipped = 0, changed = 0, not_run = 0;
  const auto attempts = [](int count) { return fmt::format("{} attempt{}", count, count == 1 ? "" : "s"); };
  // The policy layer records "<job>: <reason>"; the job is in the line already.
  const auto reason = [](const tasktree::JournalRecord& record) {
    const std::string_view error = record.error;
    return error.starts_with(record.dataset + ": ") ? error.substr(record.dataset.size() + 2) : error;
  };
  // A run with --mpi records where the last attempt ran.
  const auto on_host = [](const tasktree::JournalRecord& record) {
    return record.host.empty() ? std::string() : fmt::format(" on {}", record.host);
  };
  const auto show = [&](std::string_view path, const tasktree::JournalRecord* record, const JobSpec* job) {
    if (record == nullptr) {
      ++not_run;
      line("not run  {}", path);
    } else if (record->succeeded() && job != nullptr && record->key != job->command) {
      ++changed;
      line("changed  {:<{}}  succeeded with another command: runs again", path, width);
    } else if (record->succeeded()) {
      ++done;
      line("done     {:<{}}  {}, {:.1f}s{}", path, width, attempts(record->attempts), record->seconds,
           on_host(*record));
    } else if (record->fail) {
      ++failed;
      line("FAILED   {:<{}}  {} ({}{})", path, width, record->error.empty() ? "failed" : reason(*record),
           attempts(record->attempts), on_host(*record));
    } else {
      ++skipped;
      line("skipped  {:<{}}  its subtree was skipped", path, width);
    }
  };
  if (jobs.empty()) {
    for (const tasktree::JournalRecord& record : journal.records) show(record.dataset, &record, nullptr);
  } else {
    for (const JobSpec& job : jobs) {
      const auto it = records.find(job.path);
      show(job.path, it == records.end() ? nullptr : it->second, &job);
    }
  }
  // Job paths are unique, so the recorded jobs of the plan are those shown with a record.
  const std::size_t unknown = jobs.empty() ? 0 : journal.records.size() - (done + failed + skipped + changed);
  const std::size_t total = done + failed + skipped + changed + not_run;
  line(
      "tasktree-run: {} job{}: {} done, {} failed, {} skipped, {} changed, {} not run{}; the journal holds {} "
      "run{}",
      total, total == 1 ? "" : "s", done, failed, skipped, changed, not_run,
      unknown == 0 ? std::string()
                   : fmt::format(" ({} recorded job{} not in the plan)", unknown, unknown == 1 ? "" : "s"),
      journal.runs, journal.runs == 1 ? "" : "s");
  return JournalStatus{std::move(out), done == total ? 0 : 1};
}

}  // namespace tasktree_run
