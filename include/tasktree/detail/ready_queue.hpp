#pragma once
/// @file detail/ready_queue.hpp
/// @brief The priority queue of available jobs: binary min-heaps keyed by (priority key, dataset
/// index), with the default key being the dataset index itself.

#include <algorithm>
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

/// Default priority: the dataset's index in sorted order, which orders exactly like comparing
/// the names but costs one integer comparison.
class IndexReadyQueue {
 public:
  void reserve(std::size_t capacity) { heap_.reserve(capacity); }
  void push(ReadyJob job, std::string_view /*name*/) {
    heap_.push_back(job);
    std::push_heap(heap_.begin(), heap_.end(), later);
  }
  ReadyJob pop() {
    std::pop_heap(heap_.begin(), heap_.end(), later);
    const ReadyJob job = heap_.back();
    heap_.pop_back();
    return job;
  }
  [[nodiscard]] bool empty() const noexcept { return heap_.empty(); }
  [[nodiscard]] std::size_t size() const noexcept { return heap_.size(); }

 private:
  static bool later(const ReadyJob& a, const ReadyJob& b) noexcept { return a.dataset > b.dataset; }
  std::vector<ReadyJob> heap_;
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
