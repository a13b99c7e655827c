#pragma once
/// @file detail/simple_enqueue.hpp
/// @brief The simple algorithm (no barriers): a job's children become available when it
/// completes with `no_skip`.

#include <tasktree/dataset_trie.hpp>

#include <vector>

namespace tasktree::detail {

/// Parent-before-child scheduling without barriers. Stateless between completions: the trie is
/// all it needs.
class SimpleEnqueue {
 public:
  explicit SimpleEnqueue(const DatasetTrie& trie) : trie_(&trie) {}

  /// Makes the root jobs (those with no ancestor job) available.
  template <class PushReady>
  void start(PushReady& push_ready) {
    enqueue_nearest_jobs(DatasetTrie::root, push_ready);
  }

  /// Records that the job at `node` completed; on `no_skip` its nearest descendant jobs become
  /// available, otherwise its subtree never runs (reported to `skipped`).
  template <class PushReady, class Skipped>
  void complete(DatasetTrie::NodeIndex node, bool no_skip, PushReady& push_ready, Skipped& skipped) {
    if (no_skip) {
      enqueue_nearest_jobs(node, push_ready);
    } else {
      skipped(node);
    }
  }

 private:
  /// Makes available every job below `node` that has no job between it and `node`; intermediate
  /// nodes are passed through.
  template <class PushReady>
  void enqueue_nearest_jobs(DatasetTrie::NodeIndex node, PushReady& push_ready) {
    trie_->walk_below(node, [&](DatasetTrie::NodeIndex child) {
      if (!trie_->is_job(child)) return true;
      push_ready(child);
      return false;
    });
  }

  const DatasetTrie* trie_;
};

}  // namespace tasktree::detail
