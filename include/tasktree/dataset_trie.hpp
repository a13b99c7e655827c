#pragma once
/// @file dataset_trie.hpp
/// @brief `DatasetTrie`: the tree formed by the path components of all datasets, as flat arrays
/// addressed by 32-bit indices, plus the validation of dataset names.

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace tasktree {

/// @brief The separator between the components of a dataset name.
inline constexpr char component_separator = '/';
/// @brief The default barrier component name.
inline constexpr std::string_view default_barrier_name = "~";

/// @brief Throws `std::invalid_argument` unless `barrier_name` is non-empty and has no `/`.
inline void validate_barrier_name(std::string_view barrier_name) {
  if (barrier_name.empty()) {
    throw std::invalid_argument("tasktree: invalid barrier_name \"\": it must not be empty");
  }
  if (barrier_name.find(component_separator) != std::string_view::npos) {
    throw std::invalid_argument(
        fmt::format("tasktree: invalid barrier_name {:?}: it must not contain '/'", barrier_name));
  }
}

/// @brief The trie of dataset path components, built once from a sorted list of dataset names.
///
/// Node 0 is the root (the empty path). A node whose path is a dataset is a *job node* and knows
/// the dataset's index in the sorted list; any other node is an *intermediate node*; a node whose
/// component equals the barrier name is a *barrier node* (never a job).
///
/// Layout: one 16-byte record per node (parent, first child, next sibling, dataset or kind), in
/// one contiguous array sized exactly; no allocation per node. Names are not copied: the trie
/// refers to the caller's dataset strings, which must outlive it and stay where they are.
///
/// Children are ordered by the smallest dataset name below them, so a pre-order walk that stops
/// at job nodes meets jobs in lexicographic order of their names, even where a character that
/// sorts before `/` (such as `-` or `.`) makes `a-b` sort before `a/c`. Job nodes are numbered in
/// name order too (a larger dataset index has a larger node index), since each job's node is
/// created when its own name is read; the default ready queue relies on this. The build is iterative
/// (no recursion whose depth follows the input) and costs O(total length of the names).
///
/// @code
/// std::vector<std::string> names{"a", "a/b", "c/d"};  // sorted, unique
/// tasktree::DatasetTrie trie(names);
/// auto a = trie.first_child(tasktree::DatasetTrie::root);
/// assert(trie.is_job(a) && trie.path(a) == "a");
/// @endcode
class DatasetTrie {
 public:
  /// Index of a node.
  using NodeIndex = std::uint32_t;
  /// "No node" (no parent, no child, no sibling) and "no dataset".
  static constexpr NodeIndex npos = 0xFFFF'FFFFu;
  /// The root node, whose path is empty.
  static constexpr NodeIndex root = 0;
  /// Largest number of datasets a trie can hold.
  static constexpr std::size_t max_datasets = 0x7FFF'FFFFu;

  /// A trie with no datasets (only the root).
  DatasetTrie() {
    nodes_.resize(1);
    nodes_[root] = Node{npos, npos, npos, intermediate};
  }

  /// Builds the trie of `sorted_datasets`, validating every name.
  ///
  /// @throws std::invalid_argument naming the offending value if a name is empty, starts or ends
  /// with `/`, has an empty component, is a duplicate, is out of order, or ends with the barrier
  /// component; or if `barrier_name` is invalid.
  explicit DatasetTrie(std::span<const std::string> sorted_datasets,
                       std::string_view barrier_name = default_barrier_name)
      : names_(sorted_datasets), barrier_name_(barrier_name) {
    validate_barrier_name(barrier_name);
    build(Order::required);
  }

  /// Builds the trie of `datasets` if they are in sorted order, validating every name on the way,
  /// as the constructor does; returns nothing, without an exception, if they are not (so that the
  /// caller can sort them and build again).
  ///
  /// @throws std::invalid_argument as the constructor does, except for the order; for input that
  /// is both out of order and invalid, nothing is returned, so that the error reported after
  /// sorting is the one a sorted list gives.
  [[nodiscard]] static std::optional<DatasetTrie> build_if_sorted(
      std::span<const std::string> datasets, std::string_view barrier_name = default_barrier_name) {
    validate_barrier_name(barrier_name);
    DatasetTrie trie;
    trie.names_ = datasets;
    trie.barrier_name_ = barrier_name;
    try {
      if (!trie.build(Order::reported)) return std::nullopt;
    } catch (const std::invalid_argument&) {
      if (!std::is_sorted(datasets.begin(), datasets.end())) return std::nullopt;
      throw;
    }
    return trie;
  }

  /// Number of nodes, including the root.
  [[nodiscard]] std::size_t size() const noexcept { return nodes_.size(); }
  /// Number of datasets (job nodes).
  [[nodiscard]] std::size_t dataset_count() const noexcept { return names_.size(); }
  /// The sorted dataset names the trie refers to.
  [[nodiscard]] std::span<const std::string> datasets() const noexcept { return names_; }
  /// The barrier component name the trie was built with.
  [[nodiscard]] std::string_view barrier_name() const noexcept { return barrier_name_; }

  /// The node's parent, or `npos` for the root.
  [[nodiscard]] NodeIndex parent(NodeIndex node) const noexcept { return nodes_[node].parent; }
  /// The node's first child in name order, or `npos` for a leaf.
  [[nodiscard]] NodeIndex first_child(NodeIndex node) const noexcept { return nodes_[node].first_child; }
  /// The node's next sibling in name order, or `npos` for the last child.
  [[nodiscard]] NodeIndex next_sibling(NodeIndex node) const noexcept { return nodes_[node].next_sibling; }
  /// True if the node's path is a dataset.
  [[nodiscard]] bool is_job(NodeIndex node) const noexcept { return nodes_[node].dataset < barrier; }
  /// True if the node's component is the barrier name.
  [[nodiscard]] bool is_barrier(NodeIndex node) const noexcept { return nodes_[node].dataset == barrier; }
  /// Index of the node's dataset in `datasets()`, or `npos` for a non-job node.
  [[nodiscard]] std::uint32_t dataset(NodeIndex node) const noexcept {
    return is_job(node) ? nodes_[node].dataset : npos;
  }
  /// True if `node` is its parent's only child.
  [[nodiscard]] bool is_only_child(NodeIndex node) const noexcept {
    return nodes_[node].next_sibling == npos && nodes_[nodes_[node].parent].first_child == node;
  }
  /// Number of children of `node` (walks the sibling list).
  [[nodiscard]] std::size_t child_count(NodeIndex node) const noexcept {
    std::size_t count = 0;
    for (NodeIndex child = first_child(node); child != npos; child = next_sibling(child)) ++count;
    return count;
  }

  /// Visits the nodes strictly below `node` in pre-order and child order (hence job nodes in name
  /// order); `visit(child)` returns true to descend into `child`'s children, false to skip them.
  /// Iterative and without a stack: after a subtree it climbs the parent links to the first
  /// ancestor with a next sibling (records just read), so any depth is fine and nothing is
  /// allocated or pushed per node (a stack of siblings to resume at was a tenth of the walk that
  /// starts a flat run). Both enqueue algorithms are built on it.
  template <class Visit>
  void walk_below(NodeIndex node, Visit&& visit) const {
    NodeIndex child = first_child(node);
    while (child != npos) {
      if (visit(child)) {
        const NodeIndex first = first_child(child);
        if (first != npos) {
          child = first;
          continue;
        }
      }
      // On to the next sibling, or that of the nearest ancestor below `node` that has one.
      while (next_sibling(child) == npos) {
        child = parent(child);
        if (child == node) return;
      }
      child = next_sibling(child);
    }
  }

  /// Number of job nodes strictly below `node`. Iterative; O(size of the subtree).
  [[nodiscard]] std::size_t count_jobs_below(NodeIndex node) const noexcept {
    std::size_t count = 0;
    walk_below(node, [&](NodeIndex child) noexcept {
      if (is_job(child)) ++count;
      return true;
    });
    return count;
  }

  /// True if some node has two or more children, i.e. some jobs could run in parallel.
  [[nodiscard]] bool has_siblings() const noexcept { return has_siblings_; }
  /// True if some dataset has a component equal to the barrier name.
  [[nodiscard]] bool has_barriers() const noexcept { return has_barriers_; }

  /// The node's path (e.g. `"a/b"`; empty for the root), a view into one of the dataset names.
  /// Costs O(depth + name length); meant for diagnostics, not for hot loops.
  [[nodiscard]] std::string_view path(NodeIndex node) const noexcept {
    if (node == root) return {};
    std::size_t depth = 0;
    for (NodeIndex up = node; up != root; up = parent(up)) ++depth;
    const std::string_view name = names_[nodes_[first_job_below(node)].dataset];
    std::size_t end = 0;
    for (std::size_t level = 0; level < depth; ++level) {
      end = name.find(component_separator, end + (level == 0 ? 0 : 1));
      if (end == std::string_view::npos) return name;
    }
    return name.substr(0, end);
  }
  /// The node's own component (e.g. `"b"` for `"a/b"`).
  [[nodiscard]] std::string_view component(NodeIndex node) const noexcept {
    const std::string_view full = path(node);
    const std::size_t slash = full.rfind(component_separator);
    return slash == std::string_view::npos ? full : full.substr(slash + 1);
  }
  /// The node whose path is `path`, or `npos`. Walks one sibling list per component; each
  /// sibling's component is read at the same offset in a dataset name below it, found by
  /// first-child links and remembered from one level to the next, so the cost does not grow with
  /// the depth of the node (a chain 100,000 levels deep is linear, not quadratic, also when only
  /// a few of its nodes are jobs).
  [[nodiscard]] NodeIndex find(std::string_view path) const noexcept {
    NodeIndex node = root;
    std::size_t start = 0;  // where the next component starts, in `path` and in the names below `node`
    // The job that first-child links lead to from `node`'s first child, if known: a first child's
    // component is read from it, so that a chain of intermediate nodes is walked down once, not
    // once per level (which made a chain 100,000 levels deep with few jobs quadratic).
    NodeIndex first_job = npos;
    while (start < path.size()) {
      const std::size_t slash = path.find(component_separator, start);
      const std::string_view part = path.substr(start, slash == std::string_view::npos ? slash : slash - start);
      NodeIndex child = first_child(node);
      NodeIndex job = npos;  // a job at or below `child`, reached by first-child links
      for (; child != npos; child = next_sibling(child)) {
        job = child == first_child(node) && first_job != npos ? first_job : first_job_below(child);
        if (component_of(job, start) == part) break;
      }
      if (child == npos) return npos;
      node = child;
      // Below a job the links start again at its first child; below any other node, `job` was
      // reached through that first child.
      first_job = is_job(node) ? npos : job;
      if (slash == std::string_view::npos) break;
      start = slash + 1;
    }
    return node;
  }

 private:
  static constexpr std::uint32_t barrier = 0xFFFF'FFFEu;       // `Node::dataset` of a barrier node
  static constexpr std::uint32_t intermediate = 0xFFFF'FFFFu;  // `Node::dataset` of other non-jobs

  struct Node {
    Node(NodeIndex parent_node, NodeIndex first, NodeIndex next, std::uint32_t kind) noexcept
        : parent(parent_node), first_child(first), next_sibling(next), dataset(kind) {}
    NodeIndex parent;
    NodeIndex first_child;
    NodeIndex next_sibling;
    std::uint32_t dataset;  // dataset index for a job node, else `barrier` or `intermediate`
  };

  /// `node` if it is a job, else the job that first-child links lead to from it (every leaf is a job).
  [[nodiscard]] NodeIndex first_job_below(NodeIndex node) const noexcept {
    while (!is_job(node)) node = first_child(node);
    return node;
  }

  /// The component that starts at `start` in the name of job node `job`.
  [[nodiscard]] std::string_view component_of(NodeIndex job, std::size_t start) const noexcept {
    const std::string_view name = names_[nodes_[job].dataset];
    const std::size_t end = name.find(component_separator, start);
    return name.substr(start, end == std::string_view::npos ? end : end - start);
  }

  /// What a build does with names out of order: reject them (the constructor) or stop and say so
  /// (`build_if_sorted`).
  enum class Order { required, reported };

  /// Validates the names and fills the nodes. Returns false, with the trie unusable, if `order`
  /// is `reported` and a name comes before the previous one.
  bool build(Order order) {
    if (names_.size() > max_datasets) {
      throw std::invalid_argument(
          fmt::format("tasktree: too many datasets: {} (at most {})", names_.size(), max_datasets));
    }
    // The array starts small and grows as the names need (see `grow_nodes`): one walk over the
    // names, where counting the nodes first took a second pass over every byte of them (a sixth of
    // building W1's trie).
    nodes_.resize(std::min(names_.size(), first_guess) + 1);
    BuildState state;
    state.order = order;
    walk(state);
    if (state.unsorted) return false;
    nodes_.resize(state.count);
    nodes_.shrink_to_fit();
    return true;
  }

  /// True if `later` extends `earlier` with a character that sorts before '/', such as "a-b" after
  /// "a": then names below `earlier` ("a/...") still come later in sorted order.
  static bool extends_below_separator(std::string_view later, std::string_view earlier) noexcept {
    return later.size() > earlier.size() && later.starts_with(earlier) &&
           static_cast<unsigned char>(later[earlier.size()]) < static_cast<unsigned char>(component_separator);
  }

  /// An upper bound on the number of nodes that the names from `from` on add to a trie that holds
  /// those before it (`previous` is the name before `from`), for names that a walk accepts: each
  /// name adds its components from the first one that is not shared with the previous name, i.e.
  /// one more than the separators after their common prefix, less one if the name goes on below
  /// the previous one ("a/b" after "a"). Exact except where a parked job resumes (see `walk`),
  /// which adds one node less than counted. One `memchr` per separator and a prefix comparison
  /// per name: about a quarter of what a walk costs.
  std::size_t node_bound(std::size_t from, std::string_view previous) const noexcept {
    std::size_t bound = 0;
    for (std::size_t index = from; index < names_.size(); ++index) {
      const std::string_view name = names_[index];
      prefetch_ahead(index);
      const std::size_t common = common_prefix(previous, name);
      const char* at = name.data() + common;
      const char* const end = name.data() + name.size();
      std::size_t nodes = 1;
      while (at < end) {
        const void* slash = std::memchr(at, component_separator, static_cast<std::size_t>(end - at));
        if (slash == nullptr) break;
        ++nodes;
        at = static_cast<const char*>(slash) + 1;
      }
      if (index > 0 && common == previous.size() && common < name.size() && name[common] == component_separator) {
        --nodes;
      }
      bound += nodes;
      previous = name;
    }
    return bound;
  }

  /// How many names ahead a walk asks the processor for, so that the cache misses of names whose
  /// buffers lie scattered over the heap (as after building them in a `std::set`) overlap instead
  /// of coming one after the other: such a build was 4-5 times slower than one over names stored in
  /// order.
  static constexpr std::size_t prefetch_distance = 16;

  /// Asks the processor for the name `prefetch_distance` after `index` (its first 128 bytes).
  /// Always inlined: a member function holding only the prefetches is "pure" to GCC, whose
  /// interprocedural pass then drops its calls as having no effect.
#if defined(__GNUC__) || defined(__clang__)
  [[gnu::always_inline]] void prefetch_ahead(std::size_t index) const noexcept {
    if (index + prefetch_distance < names_.size()) {
      const std::string& ahead = names_[index + prefetch_distance];
      __builtin_prefetch(ahead.data());
      if (ahead.size() > 64) __builtin_prefetch(ahead.data() + 64);
    }
  }
#else
  void prefetch_ahead(std::size_t /*index*/) const noexcept {}
#endif

  [[noreturn]] static void reject(std::string_view name, std::string_view why) {
    throw std::invalid_argument(fmt::format("tasktree: invalid dataset name {:?}: {}", name, why));
  }

  /// Length of the common prefix of `a` and `b`, comparing eight bytes at a time.
  static std::size_t common_prefix(std::string_view a, std::string_view b) noexcept {
    const std::size_t size = a.size() < b.size() ? a.size() : b.size();
    std::size_t at = 0;
    for (; at + 8 <= size; at += 8) {
      std::uint64_t x = 0;
      std::uint64_t y = 0;
      std::memcpy(&x, a.data() + at, 8);
      std::memcpy(&y, b.data() + at, 8);
      if (x != y) {
        if constexpr (std::endian::native == std::endian::little) {
          return at + static_cast<std::size_t>(std::countr_zero(x ^ y)) / 8;  // the first differing byte
        }
        break;
      }
    }
    while (at < size && a[at] == b[at]) ++at;
    return at;
  }

  /// Validates what can be checked of `name` alone (the first pass only).
  static void validate_ends(std::string_view name) {
    if (name.empty()) reject(name, "it is empty");
    if (name.front() == component_separator) reject(name, "it starts with '/'");
    if (name.back() == component_separator) reject(name, "it ends with '/'");
  }

  /// True if `name` may follow `previous`, given their common prefix (the first pass). A duplicate
  /// is always rejected; a name out of order too, unless `order` is `reported`.
  static bool in_order(std::string_view previous, std::string_view name, std::size_t common, Order order) {
    if (common < name.size() && (common == previous.size() || static_cast<unsigned char>(name[common]) >
                                                                  static_cast<unsigned char>(previous[common]))) {
      return true;
    }
    if (previous == name) throw std::invalid_argument(fmt::format("tasktree: duplicate dataset name {:?}", name));
    if (order == Order::reported) return false;
    throw std::invalid_argument(
        fmt::format("tasktree: datasets are not sorted: {:?} comes after {:?}", name, previous));
  }

  struct Level {
    NodeIndex node;
    std::size_t end;  // where the node's component ends in the previous name ('/' or the end)
    NodeIndex last_child;
  };
  /// The levels of the previous name, as a stack whose push is one store unless it must grow (a
  /// `std::vector::push_back` per component was a call GCC did not inline: 4% of building W1's
  /// trie). Only shrinks through `resize`.
  class LevelPath {
   public:
    LevelPath() : levels_(16) { levels_[0] = Level{root, 0, npos}; }
    [[nodiscard]] std::size_t size() const noexcept { return size_; }
    Level& operator[](std::size_t depth) noexcept { return levels_[depth]; }
    Level& back() noexcept { return levels_[size_ - 1]; }
    void resize(std::size_t depth) noexcept { size_ = depth; }
    void push_back(const Level& level) {
      if (size_ == levels_.size()) grow();
      levels_[size_++] = level;
    }

   private:
    void grow() { levels_.resize(levels_.size() * 2); }
    std::vector<Level> levels_;
    std::size_t size_ = 1;
  };
  struct Suspended {
    std::size_t depth;
    NodeIndex node;
    std::string_view component;
  };
  /// Where a walk over the sorted names stands, so that it can stop and go on later.
  struct BuildState {
    std::size_t index = 0;                     // the next name
    std::size_t count = 1;                     // nodes so far (the root)
    LevelPath path;                            // path[d] is the node at depth d of the previous name
    std::vector<Suspended> suspended;          // by non-decreasing depth
    std::string_view previous;                 // the previous name
    Order order = Order::required;
    bool unsorted = false;  // the walk stopped at a name out of order (`Order::reported`)
    bool guessed = false;   // the node array grew once (`grow_nodes`)
  };

  /// Walks the sorted names from `state`, validating each and writing their nodes, growing the
  /// array (see `grow_nodes`) when they do not fit.
  ///
  /// Each name is compared with the previous one once, byte-wise: the components that end inside
  /// their common prefix are shared (already in the trie, on `path`), and only the rest of the
  /// name is split into new nodes. Datasets below a node are contiguous in sorted order, except
  /// that a job "p/a" may be followed by siblings "p/a-x" before its own children "p/a/..."
  /// arrive; such jobs are parked on `suspended` until their children come or can no longer come.
  void walk(BuildState& state) {
    LevelPath& path = state.path;
    std::vector<Suspended>& suspended = state.suspended;
    std::size_t count = state.count;
    std::string_view previous = state.previous;
    if (count == 1) nodes_[root] = Node{npos, npos, npos, intermediate};

    std::size_t index = state.index;
    for (; index < names_.size(); ++index) {
      const std::string_view name = names_[index];
      prefetch_ahead(index);
      const std::size_t common = common_prefix(previous, name);
      if (index > 0 && !in_order(previous, name, common, state.order)) {
        state.unsorted = true;
        return;
      }
      validate_ends(name);

      // depth: the first level where this name leaves the previous name's path. A component is
      // shared if it ends inside the common prefix, or if it is the previous name's last one and
      // this name goes on below it.
      std::size_t depth = 1;
      while (depth < path.size() && path[depth].end < common) ++depth;
      if (depth == path.size() - 1 && common == previous.size() && name[common] == component_separator) ++depth;

      while (!suspended.empty() && suspended.back().depth > depth) suspended.pop_back();
      if (depth < path.size()) {
        // The previous name is a job "p/a" and this one "p/a-x": park "p/a" for its children.
        if (depth == path.size() - 1 && common == previous.size() &&
            static_cast<unsigned char>(name[common]) < static_cast<unsigned char>(component_separator)) {
          const std::size_t start = path[depth - 1].end + (depth == 1 ? 0 : 1);
          suspended.push_back({depth, path[depth].node, previous.substr(start, path[depth].end - start)});
        }
        path.resize(depth);
      }

      std::size_t start = path[depth - 1].end + (depth == 1 ? 0 : 1);
      std::size_t end = std::min(name.find(component_separator, start), name.size());
      // Resume a parked job whose children start here, dropping those that can no longer resume.
      while (!suspended.empty() && suspended.back().depth == depth) {
        const Suspended top = suspended.back();
        const std::string_view part = name.substr(start, end - start);
        if (top.component == part) {
          suspended.pop_back();
          path.push_back({top.node, end, npos});
          ++depth;
          start = end + 1;
          end = std::min(name.find(component_separator, start), name.size());
          break;
        }
        if (extends_below_separator(part, top.component)) break;
        suspended.pop_back();
      }

      // The remaining components become new nodes.
      for (;; ++depth) {
        const std::string_view part = name.substr(start, end - start);
        const bool last = end == name.size();
        if (part.empty()) reject(name, "it has an empty component");
        // The first byte settles it almost always: a `memcmp` call for every component (W2's are
        // one character long, like `~`) was 7% of building W2's trie.
        const bool is_barrier = part.front() == barrier_name_.front() && part == barrier_name_;
        if (is_barrier) {
          if (last) {
            throw std::invalid_argument(
                fmt::format("tasktree: invalid dataset name {:?}: its last component is the barrier name {:?}, so "
                            "it could never run",
                            name, barrier_name_));
          }
          has_barriers_ = true;
        }
        if (count == nodes_.size()) grow_nodes(index, previous, state.guessed);
        const auto node = static_cast<NodeIndex>(count++);
        Level& up = path.back();
        const std::uint32_t kind = last ? static_cast<std::uint32_t>(index) : is_barrier ? barrier : intermediate;
        nodes_[node] = Node{up.node, npos, npos, kind};
        if (up.last_child == npos) {
          nodes_[up.node].first_child = node;
        } else {
          nodes_[up.last_child].next_sibling = node;
          has_siblings_ = true;
        }
        up.last_child = node;
        path.push_back({node, end, npos});
        if (last) break;
        start = end + 1;
        end = std::min(name.find(component_separator, start), name.size());
      }
      previous = name;
    }
    state.index = index;
    state.count = count;
    state.previous = previous;
  }

  /// How many names the node array has room for at the start of a build, one node each: enough to
  /// tell how many nodes a name adds (see `grow_nodes`), little enough to copy when it grows.
  static constexpr std::size_t first_guess = 4096;

  /// Grows the node array during a build (the nodes written so far stay) when the names before
  /// `index`, and part of `names_[index]`, have filled it; `previous` is `names_[index - 1]`. The
  /// first time, to what all the names need if the rest add as many nodes per name as those so far
  /// (exact for names of one shape, and never less than one node per name); if that falls short,
  /// to the bound that `node_bound` gives for the names left, which are then few as a rule. So the
  /// block is the final size or close to it while the names are read, and, as a large block grows
  /// without a copy (`NodeArray`), the build's peak is the final size.
  void grow_nodes(std::size_t index, std::string_view previous, bool& guessed) {
    const std::size_t most = npos;  // indices 0 to npos - 1; npos itself means "no node"
    const std::size_t size = nodes_.size();
    if (size >= most) throw std::invalid_argument("tasktree: too many trie nodes (at most 2^32 - 1)");
    std::size_t grown = 0;
    if (!guessed) {
      guessed = true;
      const double per_name = static_cast<double>(size) / static_cast<double>(std::max<std::size_t>(index, 1));
      const double expected = std::max(per_name, 1.0) * static_cast<double>(names_.size()) + 1.0;
      grown = expected >= static_cast<double>(most) ? most : static_cast<std::size_t>(expected);
    } else {
      grown = size + node_bound(index, previous);  // counts what `names_[index]` added so far twice
    }
    nodes_.resize(std::min(std::max(grown, size + 16), most));
  }

  /// The nodes: one block from `malloc`, grown with `realloc`, sized exactly once built. For an
  /// array of a million nodes or more glibc's `realloc` moves no bytes (it remaps the pages of a
  /// block this large), so a build that grows its array copies nothing, and holds no old and new
  /// array at once: its peak is the final size (untouched pages take no memory). The elements are
  /// left uninitialised until written (sizing the array for a build wrote 44 MB for W1 at 1M).
  class NodeArray {
   public:
    NodeArray() noexcept = default;
    NodeArray(const NodeArray& other) : NodeArray() {
      resize(other.size_);
      if (other.size_ > 0) std::memcpy(data_, other.data_, other.size_ * sizeof(Node));
    }
    NodeArray(NodeArray&& other) noexcept
        : data_(std::exchange(other.data_, nullptr)),
          size_(std::exchange(other.size_, 0)),
          capacity_(std::exchange(other.capacity_, 0)) {}
    NodeArray& operator=(NodeArray other) noexcept {
      std::swap(data_, other.data_);
      std::swap(size_, other.size_);
      std::swap(capacity_, other.capacity_);
      return *this;
    }
    ~NodeArray() { std::free(data_); }

    [[nodiscard]] std::size_t size() const noexcept { return size_; }
    Node& operator[](std::size_t index) noexcept { return data_[index]; }
    const Node& operator[](std::size_t index) const noexcept { return data_[index]; }

    /// Sets the size, growing the block if it is too small (the nodes below the old size stay);
    /// new elements are uninitialised. A smaller size keeps the block (see `shrink_to_fit`).
    void resize(std::size_t size) {
      if (size > capacity_) {
        void* grown = std::realloc(data_, size * sizeof(Node));
        if (grown == nullptr) throw std::bad_alloc();
        data_ = static_cast<Node*>(grown);
        capacity_ = size;
      }
      size_ = size;
    }
    /// Gives back the capacity beyond the size (keeps it if the system cannot).
    void shrink_to_fit() noexcept {
      if (size_ == capacity_ || size_ == 0) return;
      if (void* shrunk = std::realloc(data_, size_ * sizeof(Node))) {
        data_ = static_cast<Node*>(shrunk);
        capacity_ = size_;
      }
    }

   private:
    Node* data_ = nullptr;
    std::size_t size_ = 0;
    std::size_t capacity_ = 0;
  };
  static_assert(std::is_trivially_copyable_v<Node>, "NodeArray copies nodes as bytes");

  NodeArray nodes_;
  std::span<const std::string> names_;
  std::string barrier_name_{default_barrier_name};
  bool has_siblings_ = false;
  bool has_barriers_ = false;
};

}  // namespace tasktree
