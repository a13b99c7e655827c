#pragma once
// Random scheduling problems for the reference model: trees with nested, top-level and only-child
// barriers, intermediate nodes without jobs, names where '-' and '.' sort before '/', priorities
// with ties, random outcomes, shuffled input, and now and then an invalid input.
//
// Every decision is drawn from a `Source`: a seeded generator in the tests, the fuzzer's bytes in
// fuzz/, so the same code turns either into cases. Independent of the library.

#include "reference_model.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace tasktree_model {

/// Decisions from a seeded pseudo-random generator.
class RandomSource {
 public:
  explicit RandomSource(std::uint64_t seed) : engine_(seed) {}
  /// A number in [0, n); 0 if n is 0.
  std::size_t pick(std::size_t n) {
    if (n <= 1) return 0;
    return std::uniform_int_distribution<std::size_t>(0, n - 1)(engine_);
  }
  /// True with probability `percent`/100.
  bool chance(unsigned percent) { return pick(100) < percent; }

 private:
  std::mt19937_64 engine_;
};

/// Decisions from a byte string (the fuzzer's input): each decision consumes bytes; once they run
/// out, `pick` returns 0 and `chance` false, which always leads to a small, finite case.
class ByteSource {
 public:
  ByteSource(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}
  std::size_t pick(std::size_t n) {
    if (n <= 1) return 0;
    std::size_t value = 0;
    for (std::size_t range = 1; range < n && at_ < size_; range <<= 8) value = (value << 8) | data_[at_++];
    return value % n;
  }
  bool chance(unsigned percent) { return !exhausted() && pick(100) < percent; }
  [[nodiscard]] bool exhausted() const { return at_ >= size_; }
  /// The bytes not consumed yet.
  [[nodiscard]] std::string rest() const {
    return std::string(reinterpret_cast<const char*>(data_ + at_), size_ - at_);
  }

 private:
  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t at_ = 0;
};

/// Size limits of random cases.
struct CaseLimits {
  std::size_t max_nodes = 60;  // trie nodes, roughly
  std::size_t max_depth = 5;
  int max_workers = 4;
  unsigned invalid_percent = 3;  // chance of an invalid input
};

/// Component names chosen so that sort order around '/' matters: "a" < "a-" < "a-b" < "a.b" < "a/x"
/// < "a0" < "b" < "b." < "c".
inline const std::vector<std::string>& component_alphabet() {
  static const std::vector<std::string> alphabet{"a", "a-", "a-b", "a.b", "a0", "b", "b.", "c", "0"};
  return alphabet;
}

template <class Source>
void shuffle(std::vector<std::string>& names, Source& source) {
  for (std::size_t i = names.size(); i > 1; --i) std::swap(names[i - 1], names[source.pick(i)]);
}

/// Turns a valid case into an invalid one in one of the ways docs/semantics.md §3 lists.
template <class Source>
void make_invalid(Case& c, Source& source) {
  const std::string some = c.datasets.empty() ? std::string("a") : c.datasets[source.pick(c.datasets.size())];
  switch (source.pick(9)) {
    case 0:  // a duplicate
      c.datasets.push_back(some);
      if (c.datasets.size() == 1) c.datasets.push_back(some);
      break;
    case 1: c.datasets.push_back(""); break;
    case 2: c.datasets.push_back("/" + some); break;
    case 3: c.datasets.push_back(some + "/"); break;
    case 4: c.datasets.push_back(some + "//x"); break;
    case 5: c.datasets.push_back(some + "/" + c.barrier_name); break;
    case 6: c.max_workers = -static_cast<int>(source.pick(3)); break;
    case 7: c.barrier_name = source.chance(50) ? "" : "~/~"; break;
    default:
      c.datasets.push_back(some + "/" + c.barrier_name + "/x");
      c.enable_barriers = false;
      break;
  }
  shuffle(c.datasets, source);
}

/// A random case: a random tree of components, jobs on all leaves and on some inner nodes,
/// barrier components at any level (also at the top and as only children), random priorities
/// and outcomes, shuffled.
template <class Source>
Case random_case(Source& source, const CaseLimits& limits = {}) {
  Case c;
  const std::size_t barrier_choice = source.pick(10);
  c.barrier_name = barrier_choice < 8 ? "~" : barrier_choice == 8 ? "b" : "a-";  // "b", "a-" also in the alphabet
  const auto& alphabet = component_alphabet();

  struct Node {
    std::vector<std::string> path;
    bool barrier;
  };
  std::vector<Node> nodes{{{}, false}};  // the root
  std::vector<std::string> datasets;
  auto join = [](const std::vector<std::string>& path) {
    std::string name;
    for (const std::string& part : path) name += (name.empty() ? "" : "/") + part;
    return name;
  };
  // Breadth-first; `nodes` grows while we walk it. The size budget varies, so that small cases
  // (easy to read when they fail) are common and large ones frequent enough.
  const std::size_t budget = 4 + source.pick(limits.max_nodes);
  for (std::size_t at = 0; at < nodes.size(); ++at) {
    const Node node = nodes[at];
    std::size_t children = 0;
    if (node.path.empty()) {
      children = 1 + source.pick(4);
    } else if (node.path.size() < limits.max_depth && nodes.size() < budget) {
      const std::size_t roll = source.pick(20);
      children = roll < 5 ? 0 : roll < 11 ? 1 : roll < 16 ? 2 : 3;
    }
    if (node.barrier && children == 0) children = 1;  // a barrier is never a leaf
    std::vector<std::string> used;
    for (std::size_t i = 0; i < children; ++i) {
      std::string part = source.chance(18) ? c.barrier_name : alphabet[source.pick(alphabet.size())];
      if (std::find(used.begin(), used.end(), part) != used.end()) {
        if (!node.barrier || !used.empty()) continue;
        part = "a";  // a barrier needs one child; "a" is never the barrier name
      }
      used.push_back(part);
      Node child{node.path, part == c.barrier_name};
      child.path.push_back(part);
      nodes.push_back(child);
    }
    const bool leaf = used.empty();
    if (!node.path.empty() && !node.barrier && (leaf || source.chance(60))) datasets.push_back(join(node.path));
  }
  if (source.chance(1)) datasets.clear();

  c.datasets = datasets;
  shuffle(c.datasets, source);
  bool has_barrier = false;
  for (const std::string& name : c.datasets) {
    for (const std::string& part : components(name)) has_barrier = has_barrier || part == c.barrier_name;
  }
  const std::size_t barriers_choice = source.pick(3);
  if (barriers_choice == 1) c.enable_barriers = true;
  if (barriers_choice == 2 && !has_barrier) c.enable_barriers = false;
  c.max_workers = 1 + static_cast<int>(source.pick(static_cast<std::size_t>(limits.max_workers)));
  if (source.chance(60)) {
    const int range = 1 + static_cast<int>(source.pick(4));  // 1: every key ties
    std::map<std::string, int, std::less<>> keys;
    for (const std::string& name : c.datasets) keys[name] = static_cast<int>(source.pick(range)) - 1;
    c.priority = std::move(keys);
  }
  for (const std::string& name : c.datasets) {
    Outcome outcome;
    outcome.no_skip = !source.chance(12);
    outcome.fail = source.chance(10);
    if (!outcome.no_skip || outcome.fail) c.outcomes[name] = outcome;
  }
  if (source.chance(limits.invalid_percent)) make_invalid(c, source);
  return c;
}

/// The case as C++-like text, for failure messages.
inline std::string describe(const Case& c) {
  std::string text = "datasets {";
  for (const std::string& name : c.datasets) text += "\"" + name + "\", ";
  text += "}\nbarrier_name \"" + c.barrier_name + "\", enable_barriers " +
          (c.enable_barriers ? (*c.enable_barriers ? "true" : "false") : "unset") + ", max_workers " +
          std::to_string(c.max_workers) + "\npriority ";
  if (c.priority) {
    text += "{";
    for (const auto& [name, key] : *c.priority) text += name + ":" + std::to_string(key) + " ";
    text += "}";
  } else {
    text += "by name";
  }
  text += "\noutcomes {";
  for (const auto& [name, outcome] : c.outcomes) {
    text += name + (outcome.no_skip ? "" : " skip") + (outcome.fail ? " fail" : "") + "; ";
  }
  return text + "}";
}

}  // namespace tasktree_model
