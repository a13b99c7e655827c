#pragma once
/// @file mpi/wire.hpp
/// @brief The messages rank 0 and the worker ranks exchange during an MPI run, and their byte
/// encoding.
///
/// Each message is one MPI message of `MPI_BYTE`s on the run's own communicator; its tag says what
/// it is, and MPI keeps message boundaries, so no length prefix frames a message. Inside, integers
/// are little-endian with a fixed width and strings are a 64-bit length and the bytes, so ranks built
/// by different compilers read each other's messages. MPI does not let messages between two ranks
/// overtake each other on one communicator, which the protocol relies on: a worker sees a job's
/// request before its cancel or the shutdown that rank 0 sent after it.

#include <fmt/format.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace tasktree::detail::mpi_wire {

/// What a message is; used as its MPI tag.
enum Tag : int {
  request = 1,    // rank 0 -> worker: run these jobs (a batch of requests)
  outcome = 2,    // worker -> rank 0: how these jobs ended (a batch of replies)
  cancel = 3,     // rank 0 -> worker: signal the stop token of one job (run stop or attempt timeout)
  shutdown = 4,   // rank 0 -> worker: the run is over, here is its result
  heartbeat = 5,  // worker -> rank 0: still here (sent when it sent nothing else for a while; empty)
  stop = 6,       // worker -> rank 0: a signal asked this rank to stop the run (the signal, i32)
};

/// Appends fixed-width little-endian fields to a byte string.
class Writer {
 public:
  void u8(std::uint8_t value) { bytes_.push_back(static_cast<char>(value)); }
  void u32(std::uint32_t value) { put(value, 4); }
  void u64(std::uint64_t value) { put(value, 8); }
  void i32(std::int32_t value) { put(static_cast<std::uint32_t>(value), 4); }
  void i64(std::int64_t value) { put(static_cast<std::uint64_t>(value), 8); }
  void str(std::string_view text) {
    u64(text.size());
    bytes_.append(text);
  }
  [[nodiscard]] std::string take() noexcept { return std::move(bytes_); }

 private:
  void put(std::uint64_t value, int width) {
    for (int i = 0; i < width; ++i) bytes_.push_back(static_cast<char>((value >> (8 * i)) & 0xFFu));
  }
  std::string bytes_;
};

/// Reads what `Writer` wrote; a message too short for its fields is an error, not a crash.
class Reader {
 public:
  explicit Reader(std::string_view bytes) noexcept : rest_(bytes) {}
  std::uint8_t u8() { return static_cast<std::uint8_t>(get(1)); }
  std::uint32_t u32() { return static_cast<std::uint32_t>(get(4)); }
  std::uint64_t u64() { return get(8); }
  std::int32_t i32() { return static_cast<std::int32_t>(static_cast<std::uint32_t>(get(4))); }
  std::int64_t i64() { return static_cast<std::int64_t>(get(8)); }
  /// A view into the message bytes: valid as long as they are.
  std::string_view str() {
    const std::uint64_t size = u64();
    if (size > rest_.size()) truncated();
    const std::string_view text = rest_.substr(0, static_cast<std::size_t>(size));
    rest_.remove_prefix(static_cast<std::size_t>(size));
    return text;
  }

 private:
  std::uint64_t get(int width) {
    if (rest_.size() < static_cast<std::size_t>(width)) truncated();
    std::uint64_t value = 0;
    for (int i = 0; i < width; ++i) value |= std::uint64_t{static_cast<unsigned char>(rest_[i])} << (8 * i);
    rest_.remove_prefix(static_cast<std::size_t>(width));
    return value;
  }
  [[noreturn]] static void truncated() {
    throw std::runtime_error("tasktree: malformed MPI message (truncated): do all ranks run the same program?");
  }
  std::string_view rest_;
};

/// A job for a worker rank. The strings are views: into the caller's data on rank 0 (alive until
/// the reply arrives), into the received message on a worker.
struct Request {
  std::uint64_t id = 0;           // rank 0's handle for the reply
  std::int64_t submit_count = 0;  // the core's submission number (both levels)
  std::int32_t retry_count = 0;   // the attempt (policy level)
  std::string_view dataset{};
  std::string_view tid{};  // "{submit_count}/{total}" (policy level)
};

inline std::string encode(const Request& request) {
  Writer out;
  out.u64(request.id);
  out.i64(request.submit_count);
  out.i32(request.retry_count);
  out.str(request.dataset);
  out.str(request.tid);
  return out.take();
}

inline Request decode_request(std::string_view bytes) {
  Reader in(bytes);
  Request request;
  request.id = in.u64();
  request.submit_count = in.i64();
  request.retry_count = in.i32();
  request.dataset = in.str();
  request.tid = in.str();
  return request;
}

/// The most bytes of messages that one batch carries (see `encode_batch`); a larger message goes
/// alone.
inline constexpr std::size_t batch_bytes = std::size_t{64} << 20;

/// Several encoded messages of one kind (requests, replies) as one: a count, then each as a string.
inline std::string encode_batch(std::span<const std::string> items) {
  Writer out;
  out.u32(static_cast<std::uint32_t>(items.size()));
  for (const std::string& item : items) out.str(item);
  return out.take();
}

/// The messages of a batch; views into `bytes`.
inline std::vector<std::string_view> decode_batch(std::string_view bytes) {
  Reader in(bytes);
  const std::uint32_t count = in.u32();
  if (count > bytes.size() / 8) throw std::runtime_error("tasktree: malformed MPI message (batch count)");
  std::vector<std::string_view> items;
  items.reserve(count);
  for (std::uint32_t i = 0; i < count; ++i) items.push_back(in.str());
  return items;
}

/// Asks the worker that runs job `id` to signal that job's stop token.
inline std::string encode_cancel(std::uint64_t id) {
  Writer out;
  out.u64(id);
  return out.take();
}

inline std::uint64_t decode_cancel(std::string_view bytes) {
  Reader in(bytes);
  return in.u64();
}

/// A signal number, as a `stop` message carries it.
inline std::string encode_signal(int signal) {
  Writer out;
  out.i32(signal);
  return out.take();
}

inline int decode_signal(std::string_view bytes) {
  Reader in(bytes);
  return in.i32();
}

/// How a job ended on its worker: it returned (with the user's outcome), or it threw.
struct Reply {
  enum Kind : std::uint8_t { returned = 0, threw = 1 };
  std::uint64_t id = 0;
  Kind kind = returned;
  bool no_skip = true;       // returned: continue into the subtree
  bool fail = false;         // returned (core level): mark the run failed
  bool job_failure = false;  // threw (policy level): `is_job_failure` said yes on the worker
  bool retryable = false;    // threw (policy level): worth another attempt, per the retry policy
  std::string text{};        // returned: the payload; threw: the exception's message
  std::string report{};      // policy level: what the attempt put in `mpi::attempt_report()`
  int rank = 0;              // the rank it ran on (filled in by the receiver)
};

inline std::string encode(const Reply& reply) {
  Writer out;
  out.u64(reply.id);
  out.u8(reply.kind);
  out.u8(static_cast<std::uint8_t>((reply.no_skip ? 1u : 0u) | (reply.fail ? 2u : 0u) | (reply.job_failure ? 4u : 0u) |
                                   (reply.retryable ? 8u : 0u)));
  out.str(reply.text);
  out.str(reply.report);
  return out.take();
}

inline Reply decode_reply(std::string_view bytes, int rank) {
  Reader in(bytes);
  Reply reply;
  reply.id = in.u64();
  const std::uint8_t kind = in.u8();
  if (kind > Reply::threw)
    throw std::runtime_error(fmt::format("tasktree: malformed MPI message (reply kind {})", kind));
  reply.kind = static_cast<Reply::Kind>(kind);
  const std::uint8_t flags = in.u8();
  reply.no_skip = (flags & 1u) != 0;
  reply.fail = (flags & 2u) != 0;
  reply.job_failure = (flags & 4u) != 0;
  reply.retryable = (flags & 8u) != 0;
  reply.text = std::string(in.str());
  reply.report = std::string(in.str());
  reply.rank = rank;
  return reply;
}

/// The end of a run, as rank 0 tells every worker: what the call returns or throws on every rank.
struct Shutdown {
  bool threw = false;       // rank 0 throws; the workers throw a RemoteError with `message`
  bool failed = false;      // what the call returns, if it does not throw
  bool lost = false;        // rank 0 declared this worker lost; replies it still sends are ignored
  std::int32_t origin = 0;  // the rank the error came from
  std::string message{};
  /// Rank 0's statistics of the run, in the order of `RunStats` and then the policy layer's
  /// counters (`FaultTolerantStats`): total, started, completed, succeeded, failed, skipped,
  /// cancelled, retries, recovered, failed_while_stopping, resumed. The wire format has no
  /// dependency on those structs; mpi/run.hpp converts.
  std::array<std::uint64_t, 11> counts{};
  /// The ranks of `MPI_COMM_WORLD` that rank 0 lost during the run.
  std::vector<std::int32_t> lost_ranks{};
};

inline std::string encode(const Shutdown& shutdown) {
  Writer out;
  out.u8(
      static_cast<std::uint8_t>((shutdown.threw ? 1u : 0u) | (shutdown.failed ? 2u : 0u) | (shutdown.lost ? 4u : 0u)));
  out.i32(shutdown.origin);
  out.str(shutdown.message);
  for (const std::uint64_t count : shutdown.counts) out.u64(count);
  out.u32(static_cast<std::uint32_t>(shutdown.lost_ranks.size()));
  for (const std::int32_t rank : shutdown.lost_ranks) out.i32(rank);
  return out.take();
}

inline Shutdown decode_shutdown(std::string_view bytes) {
  Reader in(bytes);
  Shutdown shutdown;
  const std::uint8_t flags = in.u8();
  shutdown.threw = (flags & 1u) != 0;
  shutdown.failed = (flags & 2u) != 0;
  shutdown.lost = (flags & 4u) != 0;
  shutdown.origin = in.i32();
  shutdown.message = std::string(in.str());
  for (std::uint64_t& count : shutdown.counts) count = in.u64();
  const std::uint32_t lost = in.u32();
  if (lost > bytes.size() / 4) throw std::runtime_error("tasktree: malformed MPI message (lost ranks)");
  for (std::uint32_t i = 0; i < lost; ++i) shutdown.lost_ranks.push_back(in.i32());
  return shutdown;
}

/// What each rank contributes to the agreement at the start of a run: a summary of its arguments,
/// so that ranks called with different datasets refuse to run instead of running something else.
struct Fingerprint {
  // 2: per-job cancel, RunStats::resumed; 3: heartbeats, lost ranks; 4: attempt reports; 5: requests
  // and replies in batches; 6: `hash` of the names in any order (`TreeDigest`)
  static constexpr std::uint32_t protocol_version = 6;
  static constexpr std::size_t size = 4 + 4 + 4 + 8 + 8 + 8 + 8 + 8;

  std::uint32_t version = protocol_version;
  std::uint32_t entry_point = 0;     // 1: process_datasets_in_parallel, 2: ..._and_fault_tolerant
  std::uint32_t rejected = 0;        // 1: this rank could not start the run (its options were invalid)
  std::uint64_t datasets = 0;        // how many
  std::uint64_t hash = 0;            // of the names, in any order (`TreeDigest::hash`)
  std::uint64_t tree_options = 0;    // `TreeDigest::tree_options`
  std::int64_t max_workers = 0;      // the effective value
  std::int64_t heartbeat_nanos = 0;  // rank 0's: how often a worker that sent nothing else says it is alive

  [[nodiscard]] std::array<char, size> encode() const {
    Writer out;
    out.u32(version);
    out.u32(entry_point);
    out.u32(rejected);
    out.u64(datasets);
    out.u64(hash);
    out.u64(tree_options);
    out.i64(max_workers);
    out.i64(heartbeat_nanos);
    const std::string bytes = out.take();
    std::array<char, size> fixed{};
    std::memcpy(fixed.data(), bytes.data(), size);
    return fixed;
  }

  static Fingerprint decode(std::string_view bytes) {
    Reader in(bytes);
    Fingerprint print;
    print.version = in.u32();
    print.entry_point = in.u32();
    print.rejected = in.u32();
    print.datasets = in.u64();
    print.hash = in.u64();
    print.tree_options = in.u64();
    print.max_workers = in.i64();
    print.heartbeat_nanos = in.i64();
    return print;
  }
};

}  // namespace tasktree::detail::mpi_wire
