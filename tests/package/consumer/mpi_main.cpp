// Uses tasktree::mpi through its installed or vendored CMake target; exits 0 if a run works on the
// ranks it was started with (one, when started without mpirun).
#include <tasktree/mpi.hpp>

int main(int argc, char** argv) {
  tasktree::mpi::Environment mpi(argc, argv);
  tasktree::RunStats stats;
  const bool failed = tasktree::mpi::process_datasets_in_parallel(
      {
          .datasets = {"a", "a/b", "c"},
          .process_dataset = [](std::string_view, std::int64_t) { return tasktree::mpi::JobOutcome{}; },
      },
      stats);
  return !failed && stats.completed == 3 ? 0 : 1;
}
