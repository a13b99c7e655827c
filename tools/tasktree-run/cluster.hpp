#pragma once
// `--mpi`: this process as one rank of an MPI job. Only this and run.cpp's scheduling know MPI;
// without it (tasktree-run built where CMake found no MPI), joining fails with a message.

#include "jobs_file.hpp"

#include <memory>
#include <string>
#include <vector>

namespace tasktree_run {

/// The MPI job this process is a rank of, from `MPI_Init_thread` (in the constructor) to
/// `MPI_Finalize` (in the destructor). At most one per process.
class Cluster {
 public:
  /// Joins the MPI job (a process not started by a launcher is a job of one rank). Throws
  /// `std::runtime_error` if tasktree-run was built without MPI, or MPI cannot start.
  Cluster();
  Cluster(const Cluster&) = delete;
  Cluster& operator=(const Cluster&) = delete;
  ~Cluster();

  /// This process's rank, and the number of ranks.
  [[nodiscard]] int rank() const;
  [[nodiscard]] int size() const;
  /// This rank's host, as the scheduling names it (`TASKTREE_MPI_HOST_NAME` or the processor name).
  [[nodiscard]] std::string host() const;

  /// Collective: rank 0's `jobs`, or its `error` if it could not read them, on every rank. Returns
  /// the error (empty if none); the jobs are rank 0's on every rank then.
  [[nodiscard]] std::string share_jobs(std::vector<JobSpec>& jobs, const std::string& error);

  /// A signal taken by the runner's signal thread: a worker rank tells rank 0, which stops the run.
  /// Async-signal-safe.
  void stop_for_signal(int signal) noexcept;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace tasktree_run
