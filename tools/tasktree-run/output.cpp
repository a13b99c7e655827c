#include "output.hpp"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>
#include <system_error>

namespace tasktree_run {

void Console::write_block(std::FILE* stream, std::string_view text) {
  // Called with the mutex held. The status line lives on standard error; lines go above it.
  const bool status_shown = live_ && !status_.empty();
  if (status_shown) {
    std::fputs("\r\x1b[K", err_);
    if (stream != err_) std::fflush(err_);
  }
  std::fwrite(text.data(), 1, text.size(), stream);
  std::fflush(stream);
  if (status_shown) {
    std::fwrite(status_.data(), 1, status_.size(), err_);
    std::fflush(err_);
  }
}

void Console::write_line(std::FILE* stream, std::string_view text) {
  std::string line;
  line.reserve(text.size() + 1);
  line.append(text);
  line += '\n';
  write_block(stream, line);
}

void Console::job_lines(Stream stream, std::string_view lines) {
  std::lock_guard lock(mutex_);
  write_block(stream == Stream::out ? out_ : err_, lines);
}

void Console::message(std::string_view line) {
  std::lock_guard lock(mutex_);
  write_line(err_, line);
}

namespace {

/// `line` cut to fit in `columns` columns, counting each UTF-8 character as one column (the status
/// line is ASCII but for job paths), leaving the last column free so that the terminal does not wrap.
std::string_view fit(std::string_view line, int columns) {
  if (columns <= 1) return line;
  const auto room = static_cast<std::size_t>(columns - 1);
  std::size_t characters = 0;
  for (std::size_t i = 0; i < line.size(); ++i) {
    if ((static_cast<unsigned char>(line[i]) & 0xC0) == 0x80) continue;  // a continuation byte
    if (characters++ == room) return line.substr(0, i);
  }
  return line;
}

}  // namespace

void Console::status(std::string_view line) {
  if (!live_) return;
  winsize size{};
  const int columns = ::ioctl(::fileno(err_), TIOCGWINSZ, &size) == 0 ? size.ws_col : 0;  // follows resizes
  std::lock_guard lock(mutex_);
  status_ = fit(line, columns);
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
  draw();
  ticker_ = std::jthread([this](std::stop_token stop) {
    std::mutex mutex;
    std::condition_variable_any tick;
    std::unique_lock lock(mutex);
    auto drawn = Clock::now();
    while (!stop.stop_requested()) {
      tick.wait_for(lock, stop, std::chrono::milliseconds(100), [] { return false; });
      if (stop.stop_requested()) break;
      const auto now = Clock::now();
      if (changed_.exchange(false, std::memory_order_relaxed) || now - drawn >= std::chrono::seconds(1)) {
        draw();
        drawn = now;
      }
    }
  });
}

void StatusLine::draw() {
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

std::string Console::paint(std::string_view text, Color color) const {
  if (!color_ || color == Color::none) return std::string(text);
  const std::string_view code = color == Color::red ? "31" : color == Color::green ? "32" : "33";
  return fmt::format("\x1b[{}m{}\x1b[0m", code, text);
}

JobOutput::JobOutput(Console& console, std::string_view path, const std::filesystem::path& log_dir, Console_mode mode,
                     Captured* captured, std::string_view host)
    : console_(console),
      prefix_(host.empty() ? fmt::format("[{}] ", path) : fmt::format("[{}:{}] ", host, path)),
      mode_(mode),
      captured_(captured) {
  if (log_dir.empty()) return;
  const std::filesystem::path base = log_dir / std::filesystem::path(std::string(path));
  out_.path = base;
  out_.path += ".out";
  err_.path = base;
  err_.path += ".err";
}

JobOutput::~JobOutput() {
  for (Target* target : {&out_, &err_}) {
    if (target->fd >= 0) ::close(target->fd);
  }
}

void JobOutput::begin_attempt(int attempt) {
  tail_.clear();
  write_error_.clear();
  if (out_.path.empty()) return;
  if (out_.fd < 0) {  // the first attempt creates the files; a retry may come with a new JobOutput
    std::error_code error;
    std::filesystem::create_directories(out_.path.parent_path(), error);
    if (error) {
      throw std::runtime_error(
          fmt::format("cannot create log directory {:?}: {}", out_.path.parent_path().string(), error.message()));
    }
    for (Target* target : {&out_, &err_}) {
      const int flags = O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (attempt == 1 ? O_TRUNC : 0);
      target->fd = ::open(target->path.c_str(), flags, 0666);
      if (target->fd < 0) {
        throw std::runtime_error(
            fmt::format("cannot open log file {:?}: {}", target->path.string(), std::strerror(errno)));
      }
      struct stat info {};
      target->ends_with_newline = ::fstat(target->fd, &info) != 0 || info.st_size == 0;  // else: unknown, assume not
    }
  }
  if (attempt > 1) {
    for (Target* target : {&out_, &err_}) {
      if (!target->ends_with_newline) target->buffer += '\n';
      fmt::format_to(std::back_inserter(target->buffer), "--- tasktree-run: attempt {} ---\n", attempt);
    }
  }
}

void JobOutput::piece(Stream stream, std::string_view bytes, bool ends_line) {
  if (stream == Stream::err) {
    tail_.emplace_back(bytes);
    if (tail_.size() > tail_lines) tail_.pop_front();
  }
  Target& target = stream == Stream::out ? out_ : err_;
  if (target.path.empty() && mode_ == Console_mode::hidden) return;
  if (target.path.empty()) {
    // The console: every piece is a line of its own (other jobs' lines come in between).
    target.buffer.append(prefix_);
    target.buffer.append(bytes);
    target.buffer += '\n';
  } else {
    target.buffer.append(bytes);
    if (ends_line) target.buffer += '\n';
  }
  const bool grouped = target.path.empty() && mode_ == Console_mode::grouped;
  if (target.buffer.size() >= (grouped ? group_limit : block)) write_out(stream);
}

void JobOutput::idle() {
  for (const Stream stream : {Stream::out, Stream::err}) {
    Target& target = stream == Stream::out ? out_ : err_;
    if (target.path.empty() && mode_ == Console_mode::grouped) continue;  // at the end of the attempt
    if (!target.buffer.empty()) write_out(stream);
  }
}

std::string JobOutput::end_attempt() {
  if (!out_.buffer.empty()) write_out(Stream::out);
  if (!err_.buffer.empty()) write_out(Stream::err);
  return write_error_;
}

void JobOutput::write_out(Stream stream) {
  Target& target = stream == Stream::out ? out_ : err_;
  if (target.path.empty() && captured_ != nullptr) {
    std::string& kept = stream == Stream::out ? captured_->out : captured_->err;
    if (captured_->cut == 0 && kept.size() + target.buffer.size() <= Captured::limit) {
      kept += target.buffer;
    } else {
      captured_->cut += target.buffer.size();
    }
    target.buffer.clear();
    return;
  }
  if (target.path.empty()) {
    console_.job_lines(stream, target.buffer);
    target.buffer.clear();
    return;
  }
  std::string_view rest = target.buffer;
  if (target.fd >= 0 && !rest.empty()) target.ends_with_newline = rest.back() == '\n';
  while (!rest.empty() && target.fd >= 0) {
    const ssize_t wrote = ::write(target.fd, rest.data(), rest.size());
    if (wrote < 0 && errno == EINTR) continue;
    if (wrote < 0) {
      if (write_error_.empty()) {
        write_error_ = fmt::format("cannot write log file {:?}: {}", target.path.string(), std::strerror(errno));
      }
      break;  // the rest of this block is lost; later blocks are tried again (a disk may get room)
    }
    rest.remove_prefix(static_cast<std::size_t>(wrote));
  }
  target.buffer.clear();
}

}  // namespace tasktree_run
