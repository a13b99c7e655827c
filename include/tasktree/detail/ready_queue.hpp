#pragma once
/// @file detail/ready_queue.hpp
/// @brief The queue of available jobs: for the default priority (name order) a bitset over trie
/// nodes (`IndexReadyQueue`); for a custom priority a binary min-heap keyed by (priority key,
/// dataset index) behind one virtual call (`KeyedReadyQueue`, used through `ErasedReadyQueue`).

#include <tasktree/dataset_trie.hpp>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string_view>
#include <type_traits>
#include <vector>

#include <fmt/format.h>

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
/// bits up to the first word that already had one); pop follows the first set bit down from the
/// top. Both cost a few word operations per level (four levels for 16M nodes), instead of a heap's
/// cache misses along a path of log2(n) entries; the set takes an eighth of a byte per node.
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
    for (std::size_t level = levels_; level-- > 0;) {
      index = index * 64 + static_cast<std::size_t>(std::countr_zero(words_[offsets_[level] + index]));
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
  std::size_t size_ = 0;
};

/// The interface a custom-priority queue is used through; one virtual call per push and pop.
class ReadyQueueModel {
 public:
  virtual ~ReadyQueueModel() = default;
  virtual void reserve(std::size_t capacity) = 0;
  virtual void push(ReadyJob job, std::string_view name) = 0;
  virtual ReadyJob pop() = 0;
  [[nodiscard]] virtual bool empty() const noexcept = 0;
  [[nodiscard]] virtual std::size_t size() const noexcept = 0;
};

/// A queue keyed by `priority(name)`, computed once per job when it is pushed; ties break by
/// dataset index (name order).
template <class Key, class Priority>
class KeyedReadyQueue final : public ReadyQueueModel {
 public:
  explicit KeyedReadyQueue(const Priority& priority) : priority_(priority) {}

  void reserve(std::size_t capacity) override { heap_.reserve(capacity); }
  void push(ReadyJob job, std::string_view name) override {
    Key key = priority_(name);
    if constexpr (std::is_floating_point_v<Key>) {
      if (std::isnan(key)) {
        throw std::invalid_argument(fmt::format("tasktree: priority of dataset {:?} is NaN", name));
      }
    }
    heap_.push_back(Entry{std::move(key), job});
    std::push_heap(heap_.begin(), heap_.end(), later);
  }
  ReadyJob pop() override {
    std::pop_heap(heap_.begin(), heap_.end(), later);
    const ReadyJob job = heap_.back().job;
    heap_.pop_back();
    return job;
  }
  [[nodiscard]] bool empty() const noexcept override { return heap_.empty(); }
  [[nodiscard]] std::size_t size() const noexcept override { return heap_.size(); }

 private:
  struct Entry {
    Key key;
    ReadyJob job;
  };
  static bool later(const Entry& a, const Entry& b) {
    if (b.key < a.key) return true;
    if (a.key < b.key) return false;
    return a.job.dataset > b.job.dataset;
  }
  const Priority& priority_;
  std::vector<Entry> heap_;
};

/// Owns a `ReadyQueueModel` and exposes the same interface as `IndexReadyQueue`, so the
/// coordinator is written once for both.
class ErasedReadyQueue {
 public:
  explicit ErasedReadyQueue(std::unique_ptr<ReadyQueueModel> model) : model_(std::move(model)) {}
  void reserve(std::size_t capacity) { model_->reserve(capacity); }
  void push(ReadyJob job, std::string_view name) { model_->push(job, name); }
  ReadyJob pop() { return model_->pop(); }
  [[nodiscard]] bool empty() const noexcept { return model_->empty(); }
  [[nodiscard]] std::size_t size() const noexcept { return model_->size(); }

 private:
  std::unique_ptr<ReadyQueueModel> model_;
};

}  // namespace tasktree::detail
