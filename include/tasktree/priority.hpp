#pragma once
/// @file priority.hpp
/// @brief `Priority`: which available job starts first.

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <ranges>
#include <stdexcept>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <fmt/format.h>

namespace tasktree {

namespace detail {
/// True if `key` is NaN or holds one anywhere: a floating-point value, a tuple-like value (pair,
/// tuple, array) or a range (vector, ...) of such keys, nested to any depth. A NaN makes the order
/// of keys no strict weak order, which the heap needs. Strings are ranges of characters, never NaN.
template <class Key>
[[nodiscard]] bool contains_nan(const Key& key) {
  if constexpr (std::is_floating_point_v<Key>) {
    return std::isnan(key);
  } else if constexpr (std::is_convertible_v<const Key&, std::string_view>) {
    return false;
  } else if constexpr (requires { std::tuple_size<Key>::value; }) {
    return std::apply([](const auto&... parts) { return (contains_nan(parts) || ...); }, key);
  } else if constexpr (std::ranges::input_range<const Key>) {
    if constexpr (std::is_floating_point_v<std::ranges::range_value_t<const Key>> ||
                  !std::is_arithmetic_v<std::ranges::range_value_t<const Key>>) {
      for (const auto& part : key) {
        if (contains_nan(part)) return true;
      }
    }
    return false;
  } else {
    return false;
  }
}
}  // namespace detail

class Priority;

/// @brief A callable that can be a priority: `key = f(dataset)` with a totally ordered key type
/// (`F` may be a reference type, as deduced for a forwarding reference).
template <class F>
concept PriorityKeyFunction =
    !std::same_as<std::remove_cvref_t<F>, Priority> && std::invocable<const std::decay_t<F>&, std::string_view> &&
    std::totally_ordered<std::remove_cvref_t<std::invoke_result_t<const std::decay_t<F>&, std::string_view>>>;

/// @brief The order in which available jobs start: the job with the smallest key goes first, ties
/// broken by dataset name.
///
/// Default-constructed, the key is the dataset name itself (lexicographic order), implemented as
/// an integer comparison of positions in the sorted list. Any callable `key(std::string_view
/// dataset)` whose key type is totally ordered (an integer, a `double`, a `std::string`, a
/// `std::tuple` of those, ...) can replace it. The function is called exactly once per job, by the
/// coordinator, when the job becomes available; a key that is NaN or holds a NaN (in a `std::pair`, a
/// `std::tuple`, a `std::array` or a range such as a `std::vector`, nested to any depth) is rejected
/// with `std::invalid_argument` naming the dataset. Keys of other class types are not inspected:
/// their `operator<` must be a strict weak order.
///
/// @code
/// // largest first; ties by name
/// options.priority = [&sizes](std::string_view dataset) { return -sizes.at(std::string(dataset)); };
/// @endcode
class Priority {
 public:
  /// Name order.
  Priority() noexcept = default;

  /// Orders by `function(dataset)`, smallest first.
  template <PriorityKeyFunction F>
  Priority(F&& function)  // NOLINT(google-explicit-constructor)
      : model_(std::make_shared<Function<std::decay_t<F>>>(std::forward<F>(function))) {}

  /// True for the default name order.
  [[nodiscard]] bool is_name_order() const noexcept { return model_ == nullptr; }

  /// @brief The available jobs of one run, ordered by a custom priority: a binary min-heap of
  /// (key, dataset index), with each key computed once, when its job is pushed. Used by the
  /// scheduler through one virtual call per push and pop; users do not need it.
  class Queue {
   public:
    virtual ~Queue() = default;
    /// Makes room for `capacity` jobs.
    virtual void reserve(std::size_t capacity) = 0;
    /// Adds the job of dataset number `dataset` (its place in name order, which breaks ties)
    /// named `name`, computing its key; `tag` comes back with it from `pop`.
    /// @throws std::invalid_argument naming the dataset if its key is NaN.
    virtual void push(std::uint32_t dataset, std::uint32_t tag, std::string_view name) = 0;
    /// Removes the job with the smallest key (ties: the smallest dataset number) and returns its
    /// dataset number and tag. The queue must not be empty.
    virtual std::pair<std::uint32_t, std::uint32_t> pop() = 0;
    /// True if no job is queued.
    [[nodiscard]] virtual bool empty() const noexcept = 0;
    /// The number of queued jobs.
    [[nodiscard]] virtual std::size_t size() const noexcept = 0;
  };

  /// A new, empty queue for one run. Only for a custom priority (`!is_name_order()`).
  [[nodiscard]] std::unique_ptr<Queue> make_queue() const { return model_->make_queue(); }

 private:
  class Model {
   public:
    virtual ~Model() = default;
    [[nodiscard]] virtual std::unique_ptr<Queue> make_queue() const = 0;
  };
  template <class F>
  class Function;

  std::shared_ptr<const Model> model_;
};

/// The queue of a key function `F`: keys of type `Key`, compared inline.
template <class F>
class Priority::Function final : public Priority::Model {
 public:
  using Key = std::remove_cvref_t<std::invoke_result_t<const F&, std::string_view>>;
  explicit Function(F function) : function_(std::move(function)) {}
  [[nodiscard]] std::unique_ptr<Queue> make_queue() const override { return std::make_unique<KeyedQueue>(function_); }

 private:
  class KeyedQueue final : public Queue {
   public:
    explicit KeyedQueue(const F& function) : function_(function) {}
    void reserve(std::size_t capacity) override { heap_.reserve(capacity); }
    void push(std::uint32_t dataset, std::uint32_t tag, std::string_view name) override {
      Key key = function_(name);
      if (detail::contains_nan(key)) {
        throw std::invalid_argument(fmt::format("tasktree: priority of dataset {:?} {} NaN", name,
                                                std::is_floating_point_v<Key> ? "is" : "holds a"));
      }
      heap_.push_back(Entry{std::move(key), dataset, tag});
      std::push_heap(heap_.begin(), heap_.end(), later);
    }
    std::pair<std::uint32_t, std::uint32_t> pop() override {
      std::pop_heap(heap_.begin(), heap_.end(), later);
      const Entry& entry = heap_.back();
      const std::pair<std::uint32_t, std::uint32_t> job{entry.dataset, entry.tag};
      heap_.pop_back();
      return job;
    }
    [[nodiscard]] bool empty() const noexcept override { return heap_.empty(); }
    [[nodiscard]] std::size_t size() const noexcept override { return heap_.size(); }

   private:
    struct Entry {
      Key key;
      std::uint32_t dataset;
      std::uint32_t tag;
    };
    static bool later(const Entry& a, const Entry& b) {
      if (b.key < a.key) return true;
      if (a.key < b.key) return false;
      return a.dataset > b.dataset;
    }
    const F& function_;
    std::vector<Entry> heap_;
  };

  F function_;
};

}  // namespace tasktree
