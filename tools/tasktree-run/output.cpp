#include "output.hpp"

#include <fmt/format.h>

#include <chrono>
#include <stdexcept>
#include <system_error>

namespace tasktree_run {

void Console::write_line(std::FILE* stream, std::string_view text) {
  // Called with the mutex held. The status line lives on standard error; lines go above it.
  if (live_ && !status_.empty()) std::fputs("\r\x1b[K", err_);
  if (stream != err_ && live_ && !status_.empty()) std::fflush(err_);
  std::fwrite(text.data(), 1, text.size(), stream);
  std::fputc('\n', stream);
  std::fflush(stream);
  if (live_ && !status_.empty()) {
    std::fwrite(status_.data(), 1, status_.size(), err_);
    std::fflush(err_);
  }
}

void Console::job_line(Stream stream, std::string_view path, std::string_view line) {
  const std::string text = fmt::format("[{}] {}", path, line);
  std::lock_guard lock(mutex_);
  write_line(stream == Stream::out ? out_ : err_, text);
}

void Console::message(std::string_view line) {
  std::lock_guard lock(mutex_);
  write_line(err_, line);
}

void Console::status(std::string_view line) {
  if (!live_) return;
  std::lock_guard lock(mutex_);
  status_ = line;
  std::fputs("\r\x1b[K", err_);
  std::fwrite(status_.data(), 1, status_.size(), err_);
  std::fflush(err_);
}

void Console::clear_status() {
  if (!live_) return;
  std::lock_guard lock(mutex_);
  if (!status_.empty()) std::fputs("\r\x1b[K", err_);
  std::fflush(err_);
  status_.clear();
}

std::string seconds_since(Clock::time_point start, Clock::time_point now) {
  const double seconds = std::chrono::duration<double>(now - start).count();
  return fmt::format("{:.1f}s", seconds);
}

StatusLine::StatusLine(Console& console, const ProgressCounts& counts, Clock::time_point start)
    : console_(console), counts_(counts), start_(start) {
  if (!console_.live()) return;
  update();
  ticker_ = std::jthread([this](std::stop_token stop) {
    std::mutex mutex;
    std::condition_variable_any tick;
    std::unique_lock lock(mutex);
    while (!stop.stop_requested()) {
      tick.wait_for(lock, stop, std::chrono::milliseconds(250), [] { return false; });
      if (!stop.stop_requested()) update();
    }
  });
}

void StatusLine::update() {
  if (!console_.live()) return;
  const std::size_t succeeded = counts_.succeeded.load();
  const std::size_t failed = counts_.failed.load();
  const std::size_t skipped = counts_.skipped.load();
  const std::size_t finished = succeeded + failed + skipped;
  const auto now = Clock::now();
  std::string eta = "ETA -";
  if (finished > 0 && finished < counts_.total) {
    const double elapsed = std::chrono::duration<double>(now - start_).count();
    eta = fmt::format("ETA {:.0f}s",
                      elapsed / static_cast<double>(finished) * static_cast<double>(counts_.total - finished));
  } else if (finished >= counts_.total) {
    eta = "ETA 0s";
  }
  console_.status(fmt::format("tasktree-run: {}/{} done, {} running, {} failed, {} skipped | {} elapsed, {}", succeeded,
                              counts_.total, counts_.running.load(), failed, skipped, seconds_since(start_, now), eta));
}

void StatusLine::stop() {
  if (ticker_.joinable()) {
    ticker_.request_stop();
    ticker_.join();
  }
  console_.clear_status();
}

JobOutput::JobOutput(Console& console, std::string_view path, const std::filesystem::path& log_dir)
    : console_(console), path_(path) {
  if (log_dir.empty()) return;
  const std::filesystem::path base = log_dir / std::filesystem::path(std::string(path));
  out_path_ = base;
  out_path_ += ".out";
  err_path_ = base;
  err_path_ += ".err";
}

void JobOutput::begin_attempt(int attempt) {
  tail_.clear();
  if (out_path_.empty()) return;
  if (!out_.is_open()) {  // the first attempt creates the files; a retry may come with a new JobOutput
    std::error_code error;
    std::filesystem::create_directories(out_path_.parent_path(), error);
    if (error) {
      throw std::runtime_error(
          fmt::format("cannot create log directory {:?}: {}", out_path_.parent_path().string(), error.message()));
    }
    const auto mode = std::ios::binary | (attempt == 1 ? std::ios::trunc : std::ios::app);
    for (auto [stream, path] : {std::pair{&out_, &out_path_}, std::pair{&err_, &err_path_}}) {
      stream->open(*path, mode);
      if (!*stream) throw std::runtime_error(fmt::format("cannot write log file {:?}", path->string()));
    }
  }
  if (attempt > 1) {
    const std::string mark = fmt::format("--- tasktree-run: attempt {} ---\n", attempt);
    out_ << mark << std::flush;
    err_ << mark << std::flush;
  }
}

void JobOutput::line(Stream stream, std::string_view text) {
  if (stream == Stream::err) {
    tail_.emplace_back(text);
    if (tail_.size() > tail_lines) tail_.pop_front();
  }
  if (out_path_.empty()) {
    console_.job_line(stream, path_, text);
    return;
  }
  std::ofstream& file = stream == Stream::out ? out_ : err_;
  file.write(text.data(), static_cast<std::streamsize>(text.size()));
  file.put('\n');
  file.flush();
  if (!file) write_failed_ = true;  // reported by check() once the process has ended
}

void JobOutput::check() const {
  if (write_failed_) {
    throw std::runtime_error(
        fmt::format("cannot write the log files of job {:?} in {:?}", path_, out_path_.parent_path().string()));
  }
}

}  // namespace tasktree_run
