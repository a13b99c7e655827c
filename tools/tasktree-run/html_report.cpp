// --report FILE.html: one self-contained page (no script, no network) with the summary, a Gantt
// chart of the run drawn in inline SVG, the failed jobs with the tail of their standard error, and
// the slowest jobs.

#include "report.hpp"

#include <tasktree/detail/journal_format.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

namespace tasktree_run {
namespace {

/// `text` for HTML: `&<>"'` escaped, bytes that are not UTF-8 as U+FFFD.
std::string escape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x80) {
      const std::size_t length = tasktree::detail::journal_format::utf8_sequence(text.substr(i));
      if (length == 0) {
        out += "\xEF\xBF\xBD";
        ++i;
      } else {
        out.append(text.substr(i, length));
        i += length;
      }
      continue;
    }
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default:
        if (c < 0x20 && c != '\t' && c != '\n') {
          out += "\xEF\xBF\xBD";
        } else {
          out += static_cast<char>(c);
        }
    }
    ++i;
  }
  return out;
}

/// The ticks of a time axis of `total` seconds: about eight, at 1, 2 or 5 times a power of ten.
double tick_step(double total) {
  if (total <= 0) return 1;
  const double raw = total / 8;
  const double power = std::pow(10.0, std::floor(std::log10(raw)));
  for (const double factor : {1.0, 2.0, 5.0}) {
    if (raw <= factor * power) return factor * power;
  }
  return 10 * power;
}

constexpr std::string_view style = R"(
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 20px; margin: 0 0 4px; }
h2 { font-size: 16px; margin: 24px 0 8px; }
.verdict { font-weight: 600; padding: 6px 10px; display: inline-block; border-radius: 4px; }
.ok { background: #e3f4e1; color: #1c5e20; }
.bad { background: #fbe3e1; color: #8c1d18; }
table { border-collapse: collapse; }
td, th { padding: 2px 10px 2px 0; text-align: left; vertical-align: top; }
th { font-weight: 600; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
pre { margin: 2px 0 8px; padding: 6px; background: #f6f6f6; white-space: pre-wrap; font-size: 12px; }
.legend span { display: inline-block; width: 12px; height: 12px; margin: 0 4px 0 12px; vertical-align: middle; }
svg text { font: 11px system-ui, sans-serif; fill: #444; }
svg text.bar { fill: #fff; font-size: 10px; }
)";

constexpr std::string_view color_succeeded = "#43a047";
constexpr std::string_view color_retried = "#f9a825";
constexpr std::string_view color_failed = "#c62828";
constexpr std::string_view color_stopped = "#9e9e9e";

}  // namespace

std::string format_html_report(const RunSettings& settings, const RunReport& report) {
  std::string out;
  const int code = report.exit_code();
  const double elapsed = seconds(report.finished - report.started);
  std::string summary = format_summary(settings, report);
  while (!summary.empty() && summary.back() == '\n') summary.pop_back();
  const std::string verdict = summary.substr(summary.rfind('\n') + 1);

  out += "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n";
  out += "<title>tasktree-run report</title>\n<style>";
  out += style;
  out += "</style>\n</head>\n<body>\n<h1>tasktree-run report</h1>\n";
  fmt::format_to(std::back_inserter(out), "<p>{} jobs, {:.1f} s, {} workers, exit code {}</p>\n", report.jobs.size(),
                 elapsed, settings.workers, code);
  fmt::format_to(std::back_inserter(out), "<p class=\"verdict {}\">{}</p>\n", code == 0 ? "ok" : "bad",
                 escape(verdict));

  // Counts.
  out += "<h2>Counts</h2>\n<table>\n";
  const std::pair<std::string_view, std::size_t> counts[] = {
      {"succeeded", report.count(JobStatus::succeeded)},
      {"failed", report.count(JobStatus::failed)},
      {"skipped", report.count(JobStatus::skipped)},
      {"stopped", report.count(JobStatus::stopped)},
      {"not run", report.count(JobStatus::not_run)},
      {"resumed", report.count(JobStatus::resumed)},
      {"retries", report.retries},
  };
  for (const auto& [name, count] : counts) {
    fmt::format_to(std::back_inserter(out), "<tr><th>{}</th><td class=\"n\">{}</td></tr>\n", name, count);
  }
  out += "</table>\n";

  // The Gantt chart: a row per worker slot, a bar per attempt.
  out += "<h2>Timeline</h2>\n";
  if (report.attempts.empty()) {
    out += "<p>No job ran.</p>\n";
  } else {
    int slots = 0;
    for (const AttemptRecord& attempt : report.attempts) slots = std::max(slots, attempt.slot + 1);
    constexpr int width = 1000;
    constexpr int label_width = 70;
    constexpr int row = 18;
    constexpr int top = 20;
    const double total = std::max(elapsed, 1e-6);
    const int height = top + slots * row + 4;
    fmt::format_to(std::back_inserter(out),
                   "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" viewBox=\"0 0 {} {}\" "
                   "role=\"img\" aria-label=\"timeline\">\n",
                   width + label_width + 10, height, width + label_width + 10, height);
    const double step = tick_step(total);
    for (double t = 0; t <= total + 1e-9; t += step) {
      const double x = label_width + t / total * width;
      fmt::format_to(std::back_inserter(out),
                     "<line x1=\"{0:.1f}\" y1=\"{1}\" x2=\"{0:.1f}\" y2=\"{2}\" stroke=\"#ddd\"/><text x=\"{0:.1f}\" "
                     "y=\"12\" text-anchor=\"middle\">{3:g}s</text>\n",
                     x, top - 4, height, t);
    }
    for (int slot = 0; slot < slots; ++slot) {
      fmt::format_to(std::back_inserter(out), "<text x=\"0\" y=\"{}\">worker {}</text>\n", top + slot * row + 13,
                     slot + 1);
    }
    for (const AttemptRecord& attempt : report.attempts) {
      const JobSpec& job = settings.jobs[attempt.job];
      const ProcessResult& result = attempt.result;
      const std::string_view color = result.succeeded()                          ? color_succeeded
                                     : attempt.retried                           ? color_retried
                                     : result.end == ProcessResult::End::stopped ? color_stopped
                                                                                 : color_failed;
      const double x = label_width + seconds(attempt.start - report.started) / total * width;
      const double w = std::max(seconds(attempt.end - attempt.start) / total * width, 1.0);
      fmt::format_to(std::back_inserter(out),
                     "<rect x=\"{:.1f}\" y=\"{}\" width=\"{:.1f}\" height=\"{}\" fill=\"{}\" stroke=\"#fff\" "
                     "stroke-width=\"1\"><title>{} (attempt {}): {}, {:.3f}s</title></rect>\n",
                     x, top + attempt.slot * row + 2, w, row - 4, color, escape(job.path), attempt.attempt,
                     escape(describe(result)), seconds(attempt.end - attempt.start));
      // The job's last component on its bar, if the bar has room for a few characters of it.
      constexpr double char_width = 6.2;
      if (w >= 5 * char_width) {
        const std::string_view path = job.path;
        std::string_view label = path.substr(path.rfind('/') + 1);
        const auto room = static_cast<std::size_t>((w - 6) / char_width);
        std::string text(label.substr(0, room));
        if (label.size() > room && room > 1) text = std::string(label.substr(0, room - 1)) + "\u2026";
        fmt::format_to(std::back_inserter(out),
                       "<text x=\"{:.1f}\" y=\"{}\" class=\"bar\" pointer-events=\"none\">{}</text>\n", x + 3,
                       top + attempt.slot * row + 13, escape(text));
      }
    }
    out += "</svg>\n";
    fmt::format_to(std::back_inserter(out),
                   "<p class=\"legend\"><span style=\"background:{}\"></span>succeeded<span "
                   "style=\"background:{}\"></span>failed, retried<span style=\"background:{}\"></span>failed<span "
                   "style=\"background:{}\"></span>stopped</p>\n",
                   color_succeeded, color_retried, color_failed, color_stopped);
  }

  // Failed jobs, with the tail of their standard error.
  std::vector<std::size_t> failed;
  for (std::size_t i = 0; i < report.jobs.size(); ++i) {
    if (report.jobs[i].status == JobStatus::failed) failed.push_back(i);
  }
  if (!failed.empty()) {
    out += "<h2>Failed jobs</h2>\n";
    for (const std::size_t i : failed) {
      const JobRecord& job = report.jobs[i];
      const JobSpec& spec = settings.jobs[i];
      fmt::format_to(std::back_inserter(out), "<p><b>{}</b>: {} after {} attempt{} (line {}: <code>{}</code>)</p>\n",
                     escape(spec.path), escape(describe(job.last)), job.attempts, job.attempts == 1 ? "" : "s",
                     spec.line, escape(spec.command));
      if (!job.stderr_tail.empty()) {
        out += "<pre>";
        for (const std::string& line : job.stderr_tail) {
          out += escape(line);
          out += '\n';
        }
        out += "</pre>\n";
      }
    }
  }

  // The slowest jobs.
  if (const std::vector<std::size_t> slowest = slowest_jobs(report, 10); !slowest.empty()) {
    out += "<h2>Slowest jobs</h2>\n<table>\n<tr><th>seconds</th><th>job</th><th>status</th></tr>\n";
    for (const std::size_t i : slowest) {
      fmt::format_to(std::back_inserter(out), "<tr><td class=\"n\">{:.3f}</td><td>{}</td><td>{}</td></tr>\n",
                     seconds(duration_of(report.jobs[i])), escape(settings.jobs[i].path),
                     to_string(report.jobs[i].status));
    }
    out += "</table>\n";
  }
  fmt::format_to(std::back_inserter(out), "<h2>Summary</h2>\n<pre>{}</pre>\n", escape(summary));
  out += "</body>\n</html>\n";
  return out;
}

}  // namespace tasktree_run
