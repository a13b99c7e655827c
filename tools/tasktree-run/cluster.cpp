#include "cluster.hpp"

#include <stdexcept>

#if TASKTREE_RUN_WITH_MPI
#include <tasktree/mpi.hpp>

#include <charconv>
#endif

namespace tasktree_run {

#if TASKTREE_RUN_WITH_MPI
struct Cluster::State {
  tasktree::mpi::Environment environment;
};

Cluster::Cluster() : state_(std::make_unique<State>()) {}
Cluster::~Cluster() = default;
int Cluster::rank() const { return state_->environment.rank(); }
int Cluster::size() const { return state_->environment.size(); }
std::string Cluster::host() const { return state_->environment.host_name(); }
void Cluster::stop_for_signal(int signal) noexcept { state_->environment.stop_for_signal(signal); }

std::string Cluster::share_jobs(std::vector<JobSpec>& jobs, const std::string& error) {
  // Rank 0's strings: its error (empty if none), then three per job: path, command, line number.
  std::vector<std::string> strings;
  if (rank() == 0) {
    strings.reserve(1 + 3 * jobs.size());
    strings.push_back(error);
    for (const JobSpec& job : jobs) {
      strings.push_back(job.path);
      strings.push_back(job.command);
      strings.push_back(std::to_string(job.line));
    }
  }
  tasktree::mpi::broadcast(strings);
  if (strings.empty() || (strings.size() - 1) % 3 != 0) {
    throw std::runtime_error("tasktree-run: --mpi: rank 0 sent a malformed list of jobs");
  }
  if (rank() == 0) return error;
  jobs.clear();
  jobs.reserve((strings.size() - 1) / 3);
  for (std::size_t i = 1; i < strings.size(); i += 3) {
    int line = 0;
    std::from_chars(strings[i + 2].data(), strings[i + 2].data() + strings[i + 2].size(), line);
    jobs.push_back(JobSpec{.path = std::move(strings[i]), .command = std::move(strings[i + 1]), .line = line});
  }
  return strings.front();
}
#else
struct Cluster::State {};

Cluster::Cluster() {
  throw std::runtime_error(
      "--mpi: this tasktree-run was built without MPI (install libopenmpi-dev and build again; see "
      "docs/scale-out.md)");
}
Cluster::~Cluster() = default;
int Cluster::rank() const { return 0; }
int Cluster::size() const { return 1; }
std::string Cluster::host() const { return {}; }
void Cluster::stop_for_signal(int) noexcept {}
std::string Cluster::share_jobs(std::vector<JobSpec>&, const std::string& error) { return error; }
#endif

}  // namespace tasktree_run
