// Catch2's main for tests/test_mpi.cpp, which runs under mpiexec: every rank runs the same test
// cases in the same order (they call collective functions). Rank 0 reports in full; the other
// ranks report only their failures (Catch2's compact reporter). Every rank exits with the same
// status, non-zero if a check failed on any rank, so a failure anywhere fails the test.
#include "catch.hpp"

#include <tasktree/mpi.hpp>

#include <vector>

int main(int argc, char** argv) {
  tasktree::mpi::Environment mpi(argc, argv);
  std::vector<const char*> args(argv, argv + argc);
  if (mpi.rank() != 0) {
    args.push_back("--reporter");
    args.push_back("compact");
  }
  const int failed_here = tasktree_test::run_catch_session(static_cast<int>(args.size()), args.data());
  int failed_anywhere = 0;
  MPI_Allreduce(&failed_here, &failed_anywhere, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  return failed_anywhere != 0 ? 1 : 0;
}
