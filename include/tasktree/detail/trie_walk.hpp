#pragma once
/// @file detail/trie_walk.hpp
/// @brief The one walk both enqueue algorithms are built on: pre-order below a node, in child
/// order, descending only where the visitor says so.

#include <tasktree/dataset_trie.hpp>

namespace tasktree::detail {

/// Visits the nodes below `node` in pre-order and child order (hence jobs in name order);
/// `visit(child)` returns true to descend into `child`'s children. Iterative and without a stack:
/// after a subtree it climbs the parent links to the first ancestor with a next sibling (those
/// records were just read), so any depth is fine and nothing is allocated or pushed per node (a
/// stack of siblings to resume at was a tenth of the walk that starts a flat run like W1).
template <class Visit>
void walk_below(const DatasetTrie& trie, DatasetTrie::NodeIndex node, Visit&& visit) {
  constexpr auto npos = DatasetTrie::npos;
  DatasetTrie::NodeIndex child = trie.first_child(node);
  while (child != npos) {
    if (visit(child)) {
      const DatasetTrie::NodeIndex first = trie.first_child(child);
      if (first != npos) {
        child = first;
        continue;
      }
    }
    // On to the next sibling, or that of the nearest ancestor below `node` that has one.
    while (trie.next_sibling(child) == npos) {
      child = trie.parent(child);
      if (child == node) return;
    }
    child = trie.next_sibling(child);
  }
}

}  // namespace tasktree::detail
