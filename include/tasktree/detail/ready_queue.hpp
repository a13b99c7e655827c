#pragma once
/// @file detail/ready_queue.hpp
/// @brief The queue of available jobs: for the default name order a bitset over the trie's nodes,
/// for a custom priority the binary heap that `Priority` makes.

#include <tasktree/dataset_trie.hpp>
#include <tasktree/priority.hpp>

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>
#include <utility>
#include <vector>

namespace tasktree::detail {

/// A job that is ready to be submitted: its dataset index and trie node.
struct ReadyJob {
  std::uint32_t dataset;
  std::uint32_t node;
};

/// Default priority: name order. Job nodes are numbered in name order (see `DatasetTrie`), so the
/// available job with the smallest name is the one with the smallest node index, and the queue is
/// a set of node indices: a bitset with one bit per trie node, plus summary levels in which a bit
/// says whether a 64-bit word of the level below has any bit set. Push sets a bit (and its summary
/// bits up to the first word that already had one); pop takes the first bit of the first node word
/// if a hint says which word that is, and otherwise follows the first set bit down from the top.
/// Both cost a few word operations per level at most (four levels for 16M nodes), instead of a
/// heap's cache misses along a path of log2(n) entries; the set takes an eighth of a byte per node.
class IndexReadyQueue {
 public:
  explicit IndexReadyQueue(const DatasetTrie& trie) : trie_(&trie) {
    std::size_t bits = trie.size();
    std::size_t words = 0;
    do {
      offsets_[levels_++] = words;
      bits = (bits + 63) / 64;
      words += bits;
    } while (bits > 1);
    words_.assign(words, 0);
  }
  /// The set is sized for every node on construction.
  void reserve(std::size_t /*capacity*/) {}
  void push(ReadyJob job, std::string_view /*name*/) {
    std::size_t index = job.node;
    if (index / 64 < first_word_) first_word_ = index / 64;
    for (std::size_t level = 0; level < levels_; ++level, index /= 64) {
      std::uint64_t& word = words_[offsets_[level] + index / 64];
      const bool had_bits = word != 0;
      word |= std::uint64_t{1} << (index % 64);
      if (had_bits) break;  // the levels above already know this word is not empty
    }
    ++size_;
  }
  ReadyJob pop() {
    std::size_t index = 0;
    if (const std::uint64_t word = words_[first_word_]; word != 0) {
      index = first_word_ * 64 + static_cast<std::size_t>(std::countr_zero(word));
    } else {
      for (std::size_t level = levels_; level-- > 0;) {
        index = index * 64 + static_cast<std::size_t>(std::countr_zero(words_[offsets_[level] + index]));
      }
      first_word_ = index / 64;
    }
    const auto node = static_cast<std::uint32_t>(index);
    for (std::size_t level = 0; level < levels_; ++level, index /= 64) {
      std::uint64_t& word = words_[offsets_[level] + index / 64];
      word &= ~(std::uint64_t{1} << (index % 64));
      if (word != 0) break;  // the word still has bits: the levels above stay as they are
    }
    --size_;
    return ReadyJob{trie_->dataset(node), node};
  }
  [[nodiscard]] bool empty() const noexcept { return size_ == 0; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }

 private:
  const DatasetTrie* trie_;
  std::vector<std::uint64_t> words_;      // all levels, the node bits first
  std::array<std::size_t, 8> offsets_{};  // where each level starts in `words_`
  std::size_t levels_ = 0;                // 2^32 nodes need 6 levels
  // No node word before this one has a bit set, so when it has one, pop takes it without the walk
  // down from the top level, whose loads depend on each other (that walk was a fifth of an inline
  // run of W1; pops mostly take the next bit of the same word).
  std::size_t first_word_ = 0;
  std::size_t size_ = 0;
};

/// A custom priority's queue (see `Priority::Queue`) with the same interface as `IndexReadyQueue`,
/// so the coordinator is written once for both.
class ErasedReadyQueue {
 public:
  explicit ErasedReadyQueue(std::unique_ptr<Priority::Queue> queue) : queue_(std::move(queue)) {}
  void reserve(std::size_t capacity) { queue_->reserve(capacity); }
  void push(ReadyJob job, std::string_view name) { queue_->push(job.dataset, job.node, name); }
  ReadyJob pop() {
    const auto [dataset, node] = queue_->pop();
    return ReadyJob{dataset, node};
  }
  [[nodiscard]] bool empty() const noexcept { return queue_->empty(); }
  [[nodiscard]] std::size_t size() const noexcept { return queue_->size(); }

 private:
  std::unique_ptr<Priority::Queue> queue_;
};

}  // namespace tasktree::detail
