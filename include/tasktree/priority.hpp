#pragma once
/// @file priority.hpp
/// @brief `Priority`: which available job starts first.

#include <tasktree/detail/ready_queue.hpp>

#include <concepts>
#include <functional>
#include <memory>
#include <string_view>
#include <type_traits>
#include <utility>

namespace tasktree {

namespace detail {
/// Makes the ready queue for one run of a custom priority.
class PriorityModel {
 public:
  virtual ~PriorityModel() = default;
  [[nodiscard]] virtual std::unique_ptr<ReadyQueueModel> make_queue() const = 0;
};

template <class F>
class PriorityFunction final : public PriorityModel {
 public:
  using Key = std::remove_cvref_t<std::invoke_result_t<const F&, std::string_view>>;
  explicit PriorityFunction(F function) : function_(std::move(function)) {}
  [[nodiscard]] std::unique_ptr<ReadyQueueModel> make_queue() const override {
    return std::make_unique<KeyedReadyQueue<Key, F>>(function_);
  }

 private:
  F function_;
};
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
/// `std::tuple` of those, ...) can replace it. The function is called exactly once per job, on the
/// coordinator thread, when the job becomes available; a NaN key is rejected with
/// `std::invalid_argument`.
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
      : model_(std::make_shared<detail::PriorityFunction<std::decay_t<F>>>(std::forward<F>(function))) {}

  /// True for the default name order.
  [[nodiscard]] bool is_name_order() const noexcept { return model_ == nullptr; }

  /// The queue for one run (custom priorities only). Used by the scheduler.
  [[nodiscard]] std::unique_ptr<detail::ReadyQueueModel> make_queue() const { return model_->make_queue(); }

 private:
  std::shared_ptr<const detail::PriorityModel> model_;
};

}  // namespace tasktree
