#pragma once
/// @file detail/trie_walk.hpp
/// @brief The one walk both enqueue algorithms are built on: pre-order below a node, in child
/// order, descending only where the visitor says so.

#include <tasktree/dataset_trie.hpp>

#include <vector>

namespace tasktree::detail {

/// Visits the nodes below `node` in pre-order and child order (hence jobs in name order);
/// `visit(child)` returns true to descend into `child`'s children. Iterative: `stack` holds the
/// sibling to resume at for each level entered, so any depth is fine.
template <class Visit>
void walk_below(const DatasetTrie& trie, DatasetTrie::NodeIndex node, std::vector<DatasetTrie::NodeIndex>& stack,
                Visit&& visit) {
  constexpr auto npos = DatasetTrie::npos;
  stack.clear();
  DatasetTrie::NodeIndex child = trie.first_child(node);
  while (true) {
    if (child == npos) {
      if (stack.empty()) return;
      child = stack.back();
      stack.pop_back();
      continue;
    }
    const DatasetTrie::NodeIndex next = trie.next_sibling(child);
    if (visit(child)) {
      if (next != npos) stack.push_back(next);
      child = trie.first_child(child);
    } else {
      child = next;
    }
  }
}

}  // namespace tasktree::detail
