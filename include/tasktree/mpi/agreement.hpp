#pragma once
/// @file mpi/agreement.hpp
/// @brief The agreement that starts every MPI run: each rank validates its own arguments and the
/// ranks compare fingerprints of them, so that no rank runs anything unless all were asked to run
/// the same thing.

#include <tasktree/detail/error_text.hpp>
#include <tasktree/detail/name_hash.hpp>
#include <tasktree/mpi/transport.hpp>
#include <tasktree/mpi/wire.hpp>
#include <tasktree/options.hpp>
#include <tasktree/parallel_task_tree.hpp>

#include <fmt/format.h>

#include <mpi.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tasktree::detail {

/// Which entry point a rank called, as exchanged in the agreement.
enum class MpiEntryPoint : std::uint32_t { core = 1, policy = 2 };

/// `max_workers` as the run uses it: 0 means one job at a time per worker rank.
inline int effective_max_workers(int requested, int ranks) {
  if (requested < 0) {
    throw std::invalid_argument(
        fmt::format("tasktree: invalid max_workers {}: it must be at least 0 (0: one job per worker rank)", requested));
  }
  if (requested > 0) return requested;
  return ranks > 1 ? ranks - 1 : default_max_workers();
}

/// What the ranks compare of a run's tree, computed without validating it or putting the names in
/// order: how many datasets, a hash of them that does not depend on their order, and a hash of the
/// options that their validation depends on besides the names.
struct TreeDigest {
  std::uint64_t datasets = 0;
  std::uint64_t hash = 0;
  std::uint64_t tree_options = 0;

  friend bool operator==(const TreeDigest&, const TreeDigest&) = default;
};

inline TreeDigest tree_digest(std::span<const std::string> datasets, std::optional<bool> enable_barriers,
                              std::string_view barrier_name) noexcept {
  TreeDigest digest{.datasets = datasets.size()};
  for (const std::string& name : datasets) digest.hash += scrambled_name_hash(name);
  digest.tree_options = scrambled_name_hash(barrier_name) + (enable_barriers ? 1 + (*enable_barriers ? 1 : 0) : 0);
  return digest;
}

/// Validates a run's datasets and tree options on a rank that builds no tree for the run, exactly
/// as the tree on rank 0 does (throwing what it throws).
inline void validate_tree(std::vector<std::string> datasets, int max_workers, std::optional<bool> enable_barriers,
                          std::string barrier_name) {
  const ParallelTaskTree<SynchronousExecutor> check(tasktree::Options<SynchronousExecutor>{
      .datasets = std::move(datasets),
      .process_dataset = [](std::string_view, std::int64_t) { return CompletionCallbackResult{}; },
      .max_workers = max_workers,
      .enable_barriers = enable_barriers,
      .barrier_name = std::move(barrier_name),
  });
}

/// The environment variable that, set and not empty, names this rank's host in place of
/// `MPI_Get_processor_name`: for tests, and for launchers that give ranks on one machine different
/// identities (see `mpi::Options::placement`).
inline constexpr const char* host_name_variable = "TASKTREE_MPI_HOST_NAME";

/// This rank's host name, as it tells rank 0 at the start of a run: `TASKTREE_MPI_HOST_NAME` if
/// set and not empty, else `MPI_Get_processor_name`. Throws `std::invalid_argument` naming the
/// variable's value if it is too long for MPI to carry.
inline std::string this_host_name() {
  if (const char* name = std::getenv(host_name_variable); name != nullptr && *name != '\0') {
    const std::string_view chosen(name);
    if (chosen.size() >= MPI_MAX_PROCESSOR_NAME) {
      throw std::invalid_argument(fmt::format("tasktree: invalid {} {:?}: it must be shorter than {} bytes",
                                              host_name_variable, chosen, MPI_MAX_PROCESSOR_NAME));
    }
    return std::string(chosen);
  }
  std::array<char, MPI_MAX_PROCESSOR_NAME> host{};
  int length = 0;
  check_mpi(MPI_Get_processor_name(host.data(), &length), "MPI_Get_processor_name");
  return {host.data(), strnlen(host.data(), host.size())};
}

/// Every rank's `host` (collective): on rank 0 by rank; empty elsewhere.
inline std::vector<std::string> gather_hosts(const RunComm& run, std::string_view host) {
  std::array<char, MPI_MAX_PROCESSOR_NAME> mine{};
  std::copy_n(host.data(), std::min(host.size(), mine.size() - 1), mine.data());
  std::vector<char> all(run.rank == 0 ? static_cast<std::size_t>(run.size) * mine.size() : 0);
  check_mpi(MPI_Gather(mine.data(), static_cast<int>(mine.size()), MPI_CHAR, all.data(), static_cast<int>(mine.size()),
                       MPI_CHAR, 0, run.comm),
            "MPI_Gather");
  std::vector<std::string> hosts;
  for (std::size_t offset = 0; offset < all.size(); offset += mine.size()) {
    const char* name = all.data() + offset;
    hosts.emplace_back(name, strnlen(name, mine.size()));
  }
  return hosts;
}

/// The most bytes of a rank's error that the agreement passes to the other ranks.
inline constexpr std::size_t max_rejection_text = 4096;

/// What the ranks agreed on at the start of a run.
struct RunAgreement {
  /// Rank 0's heartbeat interval, which every worker follows.
  std::chrono::nanoseconds heartbeat{0};
  /// On rank 0, every rank's host name (`this_host_name`), by rank; empty elsewhere.
  std::vector<std::string> hosts{};
};

/// Every rank's fingerprint, by rank (collective): whether it could start and what it was asked to
/// run; `mine` marked as rejected if `rejected`.
inline std::vector<mpi_wire::Fingerprint> exchange_fingerprints(const RunComm& run, mpi_wire::Fingerprint mine,
                                                                const std::exception_ptr& rejected) {
  mine.rejected = rejected ? 1 : 0;
  const auto bytes = mine.encode();
  constexpr int size = static_cast<int>(mpi_wire::Fingerprint::size);
  std::vector<char> all(static_cast<std::size_t>(run.size) * mpi_wire::Fingerprint::size);
  check_mpi(MPI_Allgather(bytes.data(), size, MPI_BYTE, all.data(), size, MPI_BYTE, run.comm), "MPI_Allgather");
  std::vector<mpi_wire::Fingerprint> prints;
  prints.reserve(static_cast<std::size_t>(run.size));
  for (int r = 0; r < run.size; ++r) {
    prints.push_back(mpi_wire::Fingerprint::decode(std::string_view(
        all.data() + static_cast<std::size_t>(r) * mpi_wire::Fingerprint::size, mpi_wire::Fingerprint::size)));
  }
  return prints;
}

/// The agreement that starts every run (collective), on every rank's fingerprint
/// (`exchange_fingerprints`). Throws on every rank, before anything runs, unless all ranks could
/// start the same run; a rank that could not rethrows its own error (`rejected`), and the others
/// throw a `std::invalid_argument` that names that rank and quotes its error.
inline RunAgreement agree_on_run(const RunComm& run, const std::vector<mpi_wire::Fingerprint>& prints,
                                 const std::exception_ptr& rejected) {
  // The first rank that could not start tells the others why (collective), so that every rank's
  // error names the offending value: under a launcher that ends the job when the first process
  // exits with an error, the message of the rank that rejected the run may never be printed.
  for (int r = 0; r < run.size; ++r) {
    if (prints[static_cast<std::size_t>(r)].rejected == 0) continue;
    std::string why = run.rank == r ? describe(rejected) : std::string();
    if (why.size() > max_rejection_text) why.resize(max_rejection_text);
    int length = static_cast<int>(why.size());
    check_mpi(MPI_Bcast(&length, 1, MPI_INT, r, run.comm), "MPI_Bcast");
    why.resize(static_cast<std::size_t>(length));
    check_mpi(MPI_Bcast(why.data(), length, MPI_CHAR, r, run.comm), "MPI_Bcast");
    if (rejected) std::rethrow_exception(rejected);
    throw std::invalid_argument(fmt::format("tasktree: rank {} could not start the run, so no rank did: {}", r, why));
  }
  const mpi_wire::Fingerprint& root = prints[0];
  for (int r = 1; r < run.size; ++r) {
    const mpi_wire::Fingerprint& other = prints[r];
    if (other.version != root.version) {
      throw std::invalid_argument(fmt::format(
          "tasktree: rank {} speaks MPI protocol version {} and rank 0 version {}: run the same program on every rank",
          r, other.version, root.version));
    }
    if (other.entry_point != root.entry_point) {
      const auto name = [](std::uint32_t entry_point) {
        return entry_point == static_cast<std::uint32_t>(MpiEntryPoint::core)
                   ? "process_datasets_in_parallel"
                   : "process_datasets_in_parallel_and_fault_tolerant";
      };
      throw std::invalid_argument(fmt::format("tasktree: rank {} called tasktree::mpi::{} but rank 0 called {}", r,
                                              name(other.entry_point), name(root.entry_point)));
    }
    if (other.datasets != root.datasets || other.hash != root.hash) {
      throw std::invalid_argument(fmt::format(
          "tasktree: rank {} passed {} datasets{} and rank 0 passed {}: every rank must pass the same datasets "
          "(tasktree::mpi::broadcast copies rank 0's list to every rank)",
          r, other.datasets, other.datasets == root.datasets ? " with different names" : "", root.datasets));
    }
    if (other.max_workers != root.max_workers) {
      throw std::invalid_argument(
          fmt::format("tasktree: rank {} runs with max_workers {} and rank 0 with {}: every rank must pass the same "
                      "max_workers",
                      r, other.max_workers, root.max_workers));
    }
  }
  return RunAgreement{.heartbeat = std::chrono::nanoseconds(root.heartbeat_nanos)};
}

}  // namespace tasktree::detail
