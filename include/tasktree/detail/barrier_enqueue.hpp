#pragma once
/// @file detail/barrier_enqueue.hpp
/// @brief The barrier algorithm: parent-before-child scheduling where the jobs below `X/~` wait
/// for the whole subtree of `X` outside `X/~`.
///
/// Per node, one run keeps:
/// - `pending`: how many child subtrees were entered (a job made available, or an intermediate or
///   opened barrier node passed through) and have not yet completed;
/// - `barrier`: the barrier child parked until `pending` drops to zero, `no_barrier`, or
///   `spent` once it was opened or can never open;
/// - a `cleared` bit: set on a job that completed with `no_skip = false` and on all its ancestors,
///   keeping their barriers closed for good (each node is cleared at most once, so repeated skips
///   do not rewalk the ancestor chain).
///
/// When a node's `pending` reaches zero, its barrier opens (its subtree is entered like a child);
/// if there is none, or it is spent, the node's subtree is complete and its parent's `pending` is
/// decremented, and so on up the tree. Everything is iterative.

#include <tasktree/dataset_trie.hpp>

#include <cstdint>
#include <vector>

namespace tasktree::detail {

class BarrierEnqueue {
 public:
  explicit BarrierEnqueue(const DatasetTrie& trie) : trie_(&trie), state_(trie.size()) {}

  /// Enters the root: the root jobs become available, top-level barriers are parked.
  template <class PushReady>
  void start(PushReady& push_ready) {
    auto nothing_skipped = [](DatasetTrie::NodeIndex) {};
    complete(DatasetTrie::root, true, push_ready, nothing_skipped);
  }

  /// Records that the job at `node` completed. With `no_skip`, its children are entered; without,
  /// the barriers of the node and of all its ancestors stay closed forever. Then completion
  /// propagates upwards, opening each barrier whose subtree is done. `skipped(n)` is called for
  /// the skipped job and for each parked barrier that can no longer open: the jobs below `n`
  /// will never start.
  template <class PushReady, class Skipped>
  void complete(DatasetTrie::NodeIndex node, bool no_skip, PushReady& push_ready, Skipped& skipped) {
    if (no_skip) {
      enter_children(node, push_ready);
    } else {
      skipped(node);
      for (auto up = node; up != DatasetTrie::npos && !cleared(up); up = trie_->parent(up)) {
        state_[up].pending |= cleared_bit;
        const DatasetTrie::NodeIndex barrier = state_[up].barrier;
        state_[up].barrier = spent;
        if (barrier != no_barrier && barrier != spent) skipped(barrier);
      }
    }
    while (pending(node) == 0) {
      if (no_skip) {
        const DatasetTrie::NodeIndex barrier = state_[node].barrier;
        state_[node].barrier = spent;
        if (barrier != no_barrier && barrier != spent) {
          ++state_[node].pending;
          enter_children(barrier, push_ready);
          break;  // the barrier's subtree now has to complete first
        }
      }
      const DatasetTrie::NodeIndex parent = trie_->parent(node);
      if (parent == DatasetTrie::npos) break;  // the root's subtree is complete
      node = parent;
      --state_[node].pending;
    }
  }

 private:
  static constexpr std::uint32_t cleared_bit = 0x8000'0000u;
  static constexpr DatasetTrie::NodeIndex no_barrier = DatasetTrie::npos;
  static constexpr DatasetTrie::NodeIndex spent = DatasetTrie::npos - 1;

  struct NodeState {
    std::uint32_t pending = 0;  // low 31 bits: the count; top bit: `cleared`
    DatasetTrie::NodeIndex barrier = no_barrier;
  };

  [[nodiscard]] std::uint32_t pending(DatasetTrie::NodeIndex node) const noexcept {
    return state_[node].pending & ~cleared_bit;
  }
  [[nodiscard]] bool cleared(DatasetTrie::NodeIndex node) const noexcept {
    return (state_[node].pending & cleared_bit) != 0;
  }

  /// Enters the children of `node`: jobs become available, intermediate nodes and only-child
  /// barriers are passed through (their own children entered in turn), and a barrier with siblings
  /// is parked on its parent. Pre-order in child order, so jobs are made available in name order.
  template <class PushReady>
  void enter_children(DatasetTrie::NodeIndex node, PushReady& push_ready) {
    trie_->walk_below(node, [&](DatasetTrie::NodeIndex child) {
      const DatasetTrie::NodeIndex parent = trie_->parent(child);
      if (trie_->is_barrier(child) && !trie_->is_only_child(child)) {
        state_[parent].barrier = child;  // parked until the rest of `parent`'s subtree is done
        return false;
      }
      ++state_[parent].pending;
      if (!trie_->is_job(child)) return true;
      push_ready(child);
      return false;
    });
  }

  const DatasetTrie* trie_;
  std::vector<NodeState> state_;
};

}  // namespace tasktree::detail
