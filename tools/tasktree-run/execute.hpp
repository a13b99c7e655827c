#pragma once
// Acting on a parsed command line: reading the jobs, printing the plan (--dry-run, --dot) or
// running the jobs with signal handling, the summary and the --json report.

#include "command_line.hpp"
#include "jobs_file.hpp"

#include <string>
#include <vector>

namespace tasktree_run {

/// The jobs that `settings` names: the demo plan, the jobs file, or standard input (`<stdin>` in
/// messages). Throws `JobsFileError` for a bad line, `std::runtime_error` if the file cannot be
/// read.
[[nodiscard]] std::vector<JobSpec> load_jobs(const CliSettings& settings);

/// If this process is one of several that a launcher started at once (`mpiexec -n N`, `srun -n N`,
/// N > 1), a message that says so, naming the variable that told; empty otherwise. Each such
/// process would run the whole plan.
[[nodiscard]] std::string started_as_one_of_many_ranks();

/// Does what `settings` asks for and returns the exit code: 0 all jobs succeeded (or the plan was
/// printed), 1 some job failed or did not run because of one, 2 an input error (reported on
/// standard error), 128 + signal if interrupted. Running jobs blocks SIGINT and SIGTERM in the
/// calling thread: call it from `main`, before any other thread exists. Without `--mpi`, refuses
/// (2, running nothing) when `started_as_one_of_many_ranks()` says why. With `--mpi`, every rank of
/// the MPI job calls it: rank 0 reads the jobs, prints and writes the report, and returns the exit
/// code above; the other ranks run jobs and return 0 (2 if the run could not start).
[[nodiscard]] int execute(const CliSettings& settings);

}  // namespace tasktree_run
