#pragma once
/// @file completion.hpp
/// @brief What a finished job tells the scheduler: `CompletionCallback`, its result, and the
/// `InFlight` view it receives.

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <iterator>
#include <memory>
#include <new>
#include <span>
#include <stop_token>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

namespace tasktree {

/// @brief The decision a completion callback returns for its job.
///
/// @code
/// return tasktree::CompletionCallbackResult{.no_skip = true, .fail = false};
/// @endcode
struct CompletionCallbackResult {
  /// True lets the job's subtree continue (its children may start, the barriers above it may
  /// open); false skips every descendant of the job and keeps the barriers of the job and of its
  /// ancestors closed.
  bool no_skip = true;
  /// True marks the whole run as failed; the run still continues.
  bool fail = false;

  friend bool operator==(const CompletionCallbackResult&, const CompletionCallbackResult&) = default;
};

/// @brief A view of the jobs still in flight, handed to each completion callback.
///
/// "In flight" means submitted to the executor and not yet processed by the coordinator; the job
/// whose callback is running is not part of the view. Iterating yields the dataset names. The view
/// is only valid during the callback.
///
/// `request_stop()` is how fail-fast policies cancel: no new job is submitted, jobs that have not
/// started yet never run, running jobs see their `std::stop_token` signalled, and the run returns
/// `true` once the in-flight jobs have returned (their completion callbacks do not run).
class InFlight {
 public:
  /// Sentinel in the slot table for "no job in this slot".
  static constexpr std::uint32_t free_slot = 0xFFFF'FFFFu;

  /// Forward iterator over the dataset names of the jobs in flight.
  class iterator {
   public:
    /// A forward iterator.
    using iterator_category = std::forward_iterator_tag;
    /// It yields dataset names.
    using value_type = std::string_view;
    /// Distance between two iterators.
    using difference_type = std::ptrdiff_t;
    /// No `operator->`: the names are returned by value.
    using pointer = void;
    /// `operator*` returns a view, not a reference.
    using reference = std::string_view;

    iterator() = default;
    /// The dataset name of the job in the current slot.
    std::string_view operator*() const noexcept { return (*names_)[*slot_]; }
    /// Moves to the next occupied slot.
    iterator& operator++() noexcept {
      ++slot_;
      skip_free();
      return *this;
    }
    /// Moves to the next occupied slot; returns the iterator as it was before.
    iterator operator++(int) noexcept {
      iterator before = *this;
      ++*this;
      return before;
    }
    friend bool operator==(const iterator& a, const iterator& b) noexcept { return a.slot_ == b.slot_; }

   private:
    friend class InFlight;
    iterator(const std::uint32_t* slot, const std::uint32_t* end, const std::span<const std::string>* names) noexcept
        : slot_(slot), end_(end), names_(names) {
      skip_free();
    }
    void skip_free() noexcept {
      while (slot_ != end_ && *slot_ == free_slot) ++slot_;
    }
    const std::uint32_t* slot_ = nullptr;
    const std::uint32_t* end_ = nullptr;
    const std::span<const std::string>* names_ = nullptr;
  };

  /// Builds a view over a slot table: `slots[i]` is the index into `names` of the dataset in
  /// slot `i`, or `free_slot`. Used by the coordinator and by tests of custom callbacks.
  InFlight(std::span<const std::uint32_t> slots, std::size_t count, std::span<const std::string> names,
           std::stop_source* stop) noexcept
      : slots_(slots), count_(count), names_(names), stop_(stop) {}

  /// Number of jobs in flight, not counting the one whose callback is running.
  [[nodiscard]] std::size_t size() const noexcept { return count_; }
  /// True if no other job is in flight.
  [[nodiscard]] bool empty() const noexcept { return count_ == 0; }
  /// The first job in flight, in slot order (not name or start order).
  [[nodiscard]] iterator begin() const noexcept {
    return iterator(slots_.data(), slots_.data() + slots_.size(), &names_);
  }
  /// Past the last job in flight.
  [[nodiscard]] iterator end() const noexcept {
    return iterator(slots_.data() + slots_.size(), slots_.data() + slots_.size(), &names_);
  }

  /// Stops the run: cancels the in-flight jobs and submits nothing more (see the class comment).
  void request_stop() noexcept {
    if (stop_ != nullptr) stop_->request_stop();
  }
  /// True once a stop was requested, by a callback or by the caller's `std::stop_token`.
  [[nodiscard]] bool stop_requested() const noexcept { return stop_ != nullptr && stop_->stop_requested(); }

 private:
  std::span<const std::uint32_t> slots_;
  std::size_t count_ = 0;
  std::span<const std::string> names_;
  std::stop_source* stop_ = nullptr;
};

class CompletionCallback;

/// @brief A callable that can be a completion callback: `CompletionCallbackResult f(InFlight&)`
/// (`F` may be a reference type, as deduced for a forwarding reference).
template <class F>
concept CompletionFunction = !std::same_as<std::remove_cvref_t<F>, CompletionCallback> &&
                             std::is_invocable_r_v<CompletionCallbackResult, std::decay_t<F>&, InFlight&>;

/// @brief What `process_dataset` returns: run later by the coordinator, it decides how the
/// schedule continues after the job.
///
/// A move-only callable `CompletionCallbackResult(InFlight&)`. The job runs on a worker; its
/// callback runs on the coordinator, one at a time, each after the previous one returned, so it may
/// touch state that only the coordinator's calls share without locks (it may run on a worker
/// thread: see `Options::callbacks_on_calling_thread`). Callables up to four pointers in size are stored inline
/// (no allocation). A plain `CompletionCallbackResult` converts to a callback that just returns it.
///
/// @code
/// return tasktree::CompletionCallback([ok](tasktree::InFlight& in_flight) {
///   if (!ok) in_flight.request_stop();  // fail fast
///   return tasktree::CompletionCallbackResult{.no_skip = ok, .fail = !ok};
/// });
/// @endcode
class CompletionCallback {
 public:
  /// An empty callback; returning one from `process_dataset` is an error.
  CompletionCallback() noexcept = default;

  /// A callback that returns `result` without calling anything.
  CompletionCallback(CompletionCallbackResult result) noexcept
      : ops_(&result_ops) {  // NOLINT(google-explicit-constructor)
    ::new (static_cast<void*>(storage_)) CompletionCallbackResult(result);
  }

  /// Wraps any callable `CompletionCallbackResult(InFlight&)`.
  template <CompletionFunction F>
  CompletionCallback(F&& f) {  // NOLINT(google-explicit-constructor)
    using Fn = std::decay_t<F>;
    if constexpr (fits_inline<Fn>) {
      ::new (static_cast<void*>(storage_)) Fn(std::forward<F>(f));
      ops_ = &inline_ops<Fn>;
    } else {
      auto* heap = new Fn(std::forward<F>(f));
      ::new (static_cast<void*>(storage_)) Fn*(heap);
      ops_ = &heap_ops<Fn>;
    }
  }

  /// Takes over `other`'s callable; `other` is left empty.
  CompletionCallback(CompletionCallback&& other) noexcept : ops_(other.ops_) { relocate_from(other); }
  /// Destroys this callable and takes over `other`'s; `other` is left empty.
  CompletionCallback& operator=(CompletionCallback&& other) noexcept {
    if (this != &other) {
      reset();
      ops_ = other.ops_;
      relocate_from(other);
    }
    return *this;
  }
  CompletionCallback(const CompletionCallback&) = delete;
  CompletionCallback& operator=(const CompletionCallback&) = delete;
  ~CompletionCallback() { reset(); }

  /// True unless default-constructed or moved from.
  explicit operator bool() const noexcept { return ops_ != nullptr; }

  /// Runs the callback. Precondition: not empty.
  CompletionCallbackResult operator()(InFlight& in_flight) { return ops_->invoke(storage_, in_flight); }

  /// Destroys the wrapped callable, leaving the callback empty.
  void reset() noexcept {
    if (ops_ != nullptr) {
      if (ops_->destroy != nullptr) ops_->destroy(storage_);
      ops_ = nullptr;
    }
  }

 private:
  static constexpr std::size_t inline_size = 4 * sizeof(void*);

  // `relocate` and `destroy` are null for trivially copyable callables (the common small lambda,
  // and a plain result), which then move by copying the bytes and need no destruction: the
  // scheduler moves and destroys one callback per job, so this saves two indirect calls per job.
  struct Ops {
    CompletionCallbackResult (*invoke)(void* storage, InFlight& in_flight);
    void (*relocate)(void* to, void* from) noexcept;  // move-construct into `to`, destroy `from`
    void (*destroy)(void* storage) noexcept;
  };

  void relocate_from(CompletionCallback& other) noexcept {
    if (ops_ == nullptr) return;
    if (ops_->relocate != nullptr) {
      ops_->relocate(storage_, other.storage_);
    } else {
      std::memcpy(storage_, other.storage_, inline_size);
    }
    other.ops_ = nullptr;
  }

  template <class Fn>
  static constexpr bool fits_inline = sizeof(Fn) <= inline_size &&
                                      alignof(Fn) <= alignof(void*) && std::is_nothrow_move_constructible_v<Fn>;

  template <class Fn>
  static constexpr bool trivial = std::is_trivially_copyable_v<Fn>&& std::is_trivially_destructible_v<Fn>;

  template <class Fn>
  static constexpr Ops inline_ops{
      [](void* storage, InFlight& in_flight) -> CompletionCallbackResult {
        return std::invoke(*std::launder(static_cast<Fn*>(storage)), in_flight);
      },
      trivial<Fn> ? nullptr
                  : +[](void* to, void* from) noexcept {
                      Fn* source = std::launder(static_cast<Fn*>(from));
                      ::new (to) Fn(std::move(*source));
                      source->~Fn();
                    },
      trivial<Fn> ? nullptr : +[](void* storage) noexcept { std::launder(static_cast<Fn*>(storage))->~Fn(); },
  };

  template <class Fn>
  static constexpr Ops heap_ops{
      [](void* storage, InFlight& in_flight) -> CompletionCallbackResult {
        return std::invoke(**std::launder(static_cast<Fn**>(storage)), in_flight);
      },
      nullptr,  // the pointer moves by copying
      [](void* storage) noexcept { delete *std::launder(static_cast<Fn**>(storage)); },
  };

  static constexpr Ops result_ops{
      [](void* storage, InFlight&) -> CompletionCallbackResult {
        return *std::launder(static_cast<CompletionCallbackResult*>(storage));
      },
      nullptr,
      nullptr,
  };

  alignas(void*) unsigned char storage_[inline_size];
  const Ops* ops_ = nullptr;
};

}  // namespace tasktree
