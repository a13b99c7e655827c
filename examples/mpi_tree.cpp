// Scale-out with MPI: checksum every file of a directory tree on many machines.
//
//   mpirun -np 4 build/default/examples/example_mpi_tree [DIRECTORY]
//
// Every rank runs this same program. Rank 0 lists the tree once and broadcasts the list; then all
// ranks call `tasktree::mpi::process_datasets_in_parallel()`: rank 0 schedules, ranks 1..3 run the
// jobs. A job is a directory or a file, named by its path relative to DIRECTORY, so a directory's
// job runs before the jobs of its contents (parent before child): it checks that the directory can
// still be read, and if it cannot, its whole subtree is skipped. A file's job computes its CRC-32
// on the worker and sends it back as the job's payload; rank 0 collects the results, one at a time,
// in its completion callback, and prints a manifest in the style of `cksum`.
//
// Across hosts, DIRECTORY must be on a file system every host sees (NFS, Lustre, ...). Without an
// argument the program makes a small tree in /tmp, checks every checksum again on rank 0 at the end,
// and removes the tree.

#include <tasktree/mpi.hpp>

#include <fmt/format.h>

#include <unistd.h>
#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <stop_token>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace {

namespace fs = std::filesystem;

/// CRC-32 (the IEEE polynomial, as in zlib and PNG) of a file, read in 64 KiB blocks. Stops early,
/// returning nothing useful, when the run is stopped.
struct FileChecksum {
  std::uint32_t crc = 0;
  std::uintmax_t bytes = 0;
};

constexpr std::array<std::uint32_t, 256> crc_table = [] {
  std::array<std::uint32_t, 256> table{};
  for (std::uint32_t i = 0; i < 256; ++i) {
    std::uint32_t value = i;
    for (int bit = 0; bit < 8; ++bit) value = (value & 1u) != 0 ? 0xEDB88320u ^ (value >> 1) : value >> 1;
    table[i] = value;
  }
  return table;
}();

FileChecksum checksum(const fs::path& path, const std::stop_token& stop) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(fmt::format("cannot open {}", path.string()));
  std::vector<char> block(64 * 1024);
  std::uint32_t crc = 0xFFFFFFFFu;
  std::uintmax_t bytes = 0;
  while (in && !stop.stop_requested()) {
    in.read(block.data(), static_cast<std::streamsize>(block.size()));
    const auto count = static_cast<std::size_t>(in.gcount());
    for (std::size_t i = 0; i < count; ++i) {
      crc = crc_table[(crc ^ static_cast<unsigned char>(block[i])) & 0xFFu] ^ (crc >> 8);
    }
    bytes += count;
  }
  if (in.bad()) throw std::runtime_error(fmt::format("cannot read {}", path.string()));
  return {.crc = crc ^ 0xFFFFFFFFu, .bytes = bytes};
}

/// Every directory and regular file below `root`, as paths relative to it (symbolic links and
/// special files are left out).
std::vector<std::string> list_tree(const fs::path& root) {
  std::vector<std::string> entries;
  for (const fs::directory_entry& entry : fs::recursive_directory_iterator(root)) {
    if (entry.is_symlink() || !(entry.is_directory() || entry.is_regular_file())) continue;
    entries.push_back(fs::relative(entry.path(), root).generic_string());
  }
  return entries;
}

/// A small tree to checksum when no directory is given: 3 projects x 4 directories x 5 files.
fs::path make_demo_tree() {
  const fs::path root = fs::temp_directory_path() / fmt::format("tasktree-mpi-tree-{}", ::getpid());
  for (int project = 0; project < 3; ++project) {
    for (int dir = 0; dir < 4; ++dir) {
      const fs::path directory = root / fmt::format("project{}", project) / fmt::format("dir{}", dir);
      fs::create_directories(directory);
      for (int file = 0; file < 5; ++file) {
        std::ofstream out(directory / fmt::format("file{}.dat", file), std::ios::binary);
        const int size = 1000 * (project * 20 + dir * 5 + file);
        for (int i = 0; i < size; ++i) out.put(static_cast<char>((i * 31 + project + dir + file) % 251));
      }
    }
  }
  return root;
}

}  // namespace

int main(int argc, char** argv) {
  tasktree::mpi::Environment mpi(argc, argv);
  mpi.stop_on_signals();  // Ctrl-C, scancel: every rank stops the run and returns, none dies first
  const bool demo = argc < 2;

  // Rank 0 decides what to do and tells the others: listing a big tree on every host at once
  // would load the file server, and listings taken at different moments could differ.
  std::vector<std::string> root{demo ? std::string() : std::string(argv[1])};
  std::vector<std::string> datasets;
  if (mpi.rank() == 0) {
    try {
      if (demo) root[0] = make_demo_tree().string();
      datasets = list_tree(root[0]);
    } catch (const std::exception& e) {
      fmt::print(stderr, "mpi_tree: {}\n", e.what());
      root[0].clear();  // tells every rank to give up
    }
  }
  tasktree::mpi::broadcast(root);
  if (root[0].empty()) return EXIT_FAILURE;
  tasktree::mpi::broadcast(datasets);

  struct Line {
    std::string checksum;  // "crc bytes", "directory" or the error
    std::string rank;
    bool failed = false;
  };
  std::map<std::string, Line, std::less<>> manifest;  // rank 0 only: written by the completion callback
  const auto start = std::chrono::steady_clock::now();
  tasktree::RunStats stats;
  const bool failed = tasktree::mpi::process_datasets_in_parallel(
      {
          .datasets = datasets,
          // On a worker rank. The payload is "rank:text": who did the work, and its result.
          .process_dataset =
              [&](std::string_view dataset, std::int64_t /*submit_count*/, const std::stop_token& stop) {
                const fs::path path = fs::path(root[0]) / dataset;
                const std::string rank = std::to_string(mpi.rank());
                std::error_code error;
                if (fs::is_directory(path, error)) {
                  fs::directory_iterator readable(path, error);  // can we still list it?
                  if (error) {
                    // Skip its contents: their jobs would fail one by one for the same reason.
                    return tasktree::mpi::JobOutcome{
                        .no_skip = false, .fail = true, .payload = rank + ":cannot list: " + error.message()};
                  }
                  return tasktree::mpi::JobOutcome{.payload = rank + ":directory"};
                }
                try {
                  const FileChecksum sum = checksum(path, stop);
                  return tasktree::mpi::JobOutcome{.payload = fmt::format("{}:{} {}", rank, sum.crc, sum.bytes)};
                } catch (const std::exception& e) {
                  return tasktree::mpi::JobOutcome{.fail = true, .payload = rank + ":" + e.what()};
                }
              },
          // On rank 0, one job at a time: no lock needed for `manifest`.
          .completion =
              [&manifest](std::string_view dataset, tasktree::mpi::JobOutcome& outcome, tasktree::InFlight&) {
                const std::size_t colon = outcome.payload.find(':');
                manifest[std::string(dataset)] = Line{.checksum = outcome.payload.substr(colon + 1),
                                                      .rank = outcome.payload.substr(0, colon),
                                                      .failed = outcome.fail};
                return tasktree::CompletionCallbackResult{.no_skip = outcome.no_skip, .fail = outcome.fail};
              },
          // File names cannot contain a NUL byte, so no file is ever taken for a barrier.
          .barrier_name = std::string(1, '\0'),
      },
      stats);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  int status = failed ? EXIT_FAILURE : EXIT_SUCCESS;
  if (mpi.rank() == 0) {
    std::map<std::string, int> per_rank;
    std::uintmax_t files = 0;
    for (const auto& [path, line] : manifest) {
      ++per_rank[line.rank];
      if (line.checksum == "directory") continue;
      ++files;
      fmt::print("{} {}{}\n", line.checksum, path, line.failed ? "  (FAILED)" : "");
    }
    fmt::print(stderr, "\n{} datasets ({} files) under {} in {:.3f} s on {} ranks; failed: {}\n", stats.total, files,
               root[0], seconds, mpi.size(), failed);
    for (const auto& [rank, jobs] : per_rank) fmt::print(stderr, "  rank {}: {} jobs\n", rank, jobs);
    if (demo) {
      // Check the workers' results against checksums computed here, then clean up.
      int wrong = 0;
      for (const auto& [path, line] : manifest) {
        if (line.checksum == "directory") continue;
        const FileChecksum sum = checksum(fs::path(root[0]) / path, std::stop_token());
        if (line.checksum != fmt::format("{} {}", sum.crc, sum.bytes)) ++wrong;
      }
      const bool complete = manifest.size() == datasets.size() && stats.completed == datasets.size();
      fmt::print(stderr, "checked on rank 0: {} of {} checksums wrong, every dataset done: {}\n", wrong, files,
                 complete);
      if (wrong != 0 || !complete) status = EXIT_FAILURE;
      fs::remove_all(root[0]);
    }
  }
  return status;
}
