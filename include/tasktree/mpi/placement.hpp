#pragma once
/// @file mpi/placement.hpp
/// @brief Where a run's placed jobs may run (`mpi::Options::placement`): settled on rank 0 before
/// anything runs, from every dataset's placement and every rank's host, and read by the dispatcher
/// for each job.

#include <fmt/format.h>

#include <cstddef>
#include <functional>
#include <iterator>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace tasktree::detail {

/// The hosts of a run's ranks, each named once, and the host of every dataset that has a placement.
/// Empty (the default) when the run places nothing: then every job goes anywhere.
class PlacementTable {
 public:
  PlacementTable() = default;

  /// Calls `placement` once for each of `datasets`; `hosts` names each rank's host, by rank, and
  /// `rank0_runs_jobs` says whether rank 0 counts as a rank of its host. Throws
  /// `std::invalid_argument`, naming the dataset and the host, for a placement on a host where no
  /// rank runs jobs; what `placement` throws goes through.
  PlacementTable(const std::function<std::string(std::string_view dataset)>& placement,
                 std::span<const std::string> datasets, std::span<const std::string> hosts, bool rank0_runs_jobs) {
    std::unordered_map<std::string_view, int> host_index;
    rank_host_.reserve(hosts.size());
    for (const std::string& name : hosts) {
      const auto [it, added] = host_index.emplace(name, static_cast<int>(names_.size()));
      if (added) {
        names_.push_back(name);
        worker_ranks_.emplace_back();
      }
      const int rank = static_cast<int>(rank_host_.size());
      if (rank > 0) worker_ranks_[static_cast<std::size_t>(it->second)].push_back(rank);
      rank_host_.push_back(it->second);
    }
    for (const std::string& dataset : datasets) {
      std::string host = placement(dataset);
      if (host.empty()) continue;  // anywhere
      const auto it = host_index.find(host);
      if (it == host_index.end()) {
        throw std::invalid_argument(
            fmt::format("tasktree: invalid placement of {:?}: no rank of the run is on host {:?} (the hosts: {})",
                        dataset, host, host_list()));
      }
      const int index = it->second;
      if (!rank0_runs_jobs && worker_ranks_[static_cast<std::size_t>(index)].empty()) {
        throw std::invalid_argument(
            fmt::format("tasktree: invalid placement of {:?}: on host {:?} only rank 0 runs, and it runs no jobs "
                        "(rank0_workers is 0)",
                        dataset, host));
      }
      placed_.emplace(dataset, index);
    }
  }

  /// True if no job has a placement.
  [[nodiscard]] bool empty() const noexcept { return placed_.empty(); }

  /// The host where `dataset` must run, or -1 for anywhere.
  [[nodiscard]] int host_of(std::string_view dataset) const {
    if (placed_.empty()) return -1;
    const auto it = placed_.find(dataset);
    return it == placed_.end() ? -1 : it->second;
  }

  /// The host of `rank`. Not on an empty table.
  [[nodiscard]] int host_of_rank(int rank) const { return rank_host_[static_cast<std::size_t>(rank)]; }

  /// The name of `host`.
  [[nodiscard]] const std::string& host_name(int host) const { return names_[static_cast<std::size_t>(host)]; }

  /// The worker ranks (not rank 0) on `host`, lowest first.
  [[nodiscard]] std::span<const int> worker_ranks(int host) const {
    return worker_ranks_[static_cast<std::size_t>(host)];
  }

  /// The number of hosts.
  [[nodiscard]] std::size_t hosts() const noexcept { return names_.size(); }

 private:
  /// The first hosts, for an error message.
  [[nodiscard]] std::string host_list() const {
    constexpr std::size_t shown = 10;
    std::string list;
    for (std::size_t i = 0; i < names_.size() && i < shown; ++i) {
      fmt::format_to(std::back_inserter(list), "{}{:?}", i == 0 ? "" : ", ", names_[i]);
    }
    if (names_.size() > shown) fmt::format_to(std::back_inserter(list), " and {} more", names_.size() - shown);
    return list;
  }

  /// Hashes a `std::string` and a `std::string_view` alike, so that a lookup copies no name.
  struct NameHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view name) const noexcept { return std::hash<std::string_view>{}(name); }
  };

  std::vector<std::string> names_;                                          // by host
  std::vector<int> rank_host_;                                              // by rank
  std::vector<std::vector<int>> worker_ranks_;                              // by host
  std::unordered_map<std::string, int, NameHash, std::equal_to<>> placed_;  // dataset -> host
};

}  // namespace tasktree::detail
