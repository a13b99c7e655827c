#include "workloads.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <numeric>
#include <random>
#include <stdexcept>
#include <thread>

namespace bench {

std::string_view label(Workload workload) {
  switch (workload) {
    case Workload::flat: return "W1";
    case Workload::flat_scattered: return "W1s";
    case Workload::tree: return "W2";
    case Workload::job_runner: return "W3";
  }
  return "?";
}

std::string_view description(Workload workload) {
  switch (workload) {
    case Workload::flat: return "flat: tank/group_XXXX/host_YYYY/<leaf>, 100 random characters";
    case Workload::flat_scattered:
      return "flat, scattered: W1's names in the same sorted vector, their heap buffers allocated in random order";
    case Workload::tree: return "tree: every node a dataset, root pool, fanout 10, breadth first";
    case Workload::job_runner: return "job runner: host/snapshot, 4 replications, ~/prune, ~/~/monitor (barriers on)";
  }
  return "?";
}

namespace {

constexpr std::string_view alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";

void append_random(std::string& out, std::size_t length, std::mt19937_64& random) {
  std::uniform_int_distribution<std::size_t> pick(0, alphabet.size() - 1);
  for (std::size_t i = 0; i < length; ++i) out.push_back(alphabet[pick(random)]);
}

std::vector<std::string> flat(std::size_t count) {
  constexpr std::size_t name_length = 100;
  std::mt19937_64 random(20240601);
  std::vector<std::string> names;
  names.reserve(count);
  while (names.size() < count) {
    std::string name;
    name.reserve(name_length);
    name += "tank/group_";
    append_random(name, 4, random);
    name += "/host_";
    append_random(name, 4, random);
    name += '/';
    append_random(name, name_length - name.size(), random);
    names.push_back(std::move(name));
  }
  return names;
}

std::vector<std::string> tree(std::size_t count) {
  std::vector<std::string> names;
  names.reserve(count);
  if (count > 0) names.emplace_back("pool");
  for (std::size_t parent = 0; names.size() < count; ++parent) {
    for (char child = '0'; child <= '9' && names.size() < count; ++child) {
      names.push_back(names[parent] + '/' + child);
    }
  }
  return names;
}

std::vector<std::string> job_runner(std::size_t count) {
  std::vector<std::string> names;
  names.reserve(count);
  for (std::size_t host = 0; names.size() < count; ++host) {
    const std::string snapshot = fmt::format("host{:07}/snapshot", host);
    std::vector<std::string> jobs{snapshot};
    for (std::size_t destination = 0; destination < replications_per_host; ++destination) {
      jobs.push_back(fmt::format("{}/replicate_to_{}", snapshot, destination));
    }
    jobs.push_back(snapshot + "/~/prune");
    jobs.push_back(snapshot + "/~/~/monitor");
    for (std::string& job : jobs) {
      if (names.size() < count) names.push_back(std::move(job));
    }
  }
  return names;
}

}  // namespace

std::vector<std::string> generate(Workload workload, std::size_t count) {
  std::vector<std::string> names = workload == Workload::tree         ? tree(count)
                                   : workload == Workload::job_runner ? job_runner(count)
                                                                      : flat(count);
  std::sort(names.begin(), names.end());
  if (std::adjacent_find(names.begin(), names.end()) != names.end()) {
    throw std::logic_error(fmt::format("generated duplicate names for {}", label(workload)));
  }
  // Sorting moved the strings, not their buffers, which still lie in the order of generation
  // (random for W1, breadth first for W2): copy them into the workload's layout.
  return copy_names(workload, names);
}

std::vector<std::string> copy_names(Workload workload, const std::vector<std::string>& names) {
  if (workload != Workload::flat_scattered) return names;  // allocates each buffer in order
  std::vector<std::size_t> order(names.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::shuffle(order.begin(), order.end(), std::mt19937_64(20240602));
  std::vector<std::string> scattered(names.size());
  for (const std::size_t i : order) scattered[i] = names[i];  // the i-th allocation goes to a random place
  return scattered;
}

void empty_job(std::string_view dataset) noexcept {
  // Keeps the call and the name alive without doing work.
  asm volatile("" : : "r"(dataset.data()) : "memory");
}

void sleep_job(long micros) noexcept { std::this_thread::sleep_for(std::chrono::microseconds(micros)); }

void spin_job(long micros) noexcept {
  const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(micros);
  while (std::chrono::steady_clock::now() < until) {
  }
}

}  // namespace bench
