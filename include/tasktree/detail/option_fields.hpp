#pragma once
/// @file detail/option_fields.hpp
/// @brief The run options that the layers share, carried from one options struct to another.
///
/// `Options`, `FaultTolerantOptions` and the two options structs of `tasktree::mpi` are flat, so
/// that designated initializers read `.max_workers = 8, .log = ...` at every level; so each
/// declares the fields it shares with the others. `carry_shared_options` moves those fields, by
/// name, wherever one layer builds the options of the layer below; `field_count` and
/// `shared_option_count` let each layer check, at compile time, that no field was added to one
/// struct and forgotten in another or in the list below.

#include <cstddef>
#include <tuple>
#include <type_traits>
#include <utility>

namespace tasktree::detail {

/// Converts to a reference to anything: brace-initializes an aggregate's field of any type.
struct AnyField {
  template <class T>
  operator T&() const&& noexcept;  // NOLINT(google-explicit-constructor): declared, never defined
};

template <class T, std::size_t... I>
constexpr bool brace_initializable_from(std::index_sequence<I...> /*fields*/) {
  return requires { T{(void(I), AnyField{})...}; };
}

/// The number of fields of the aggregate `T`.
template <class T, std::size_t N = 0>
constexpr std::size_t field_count() {
  if constexpr (brace_initializable_from<T>(std::make_index_sequence<N + 1>{})) {
    return field_count<T, N + 1>();
  } else {
    return N;
  }
}

/// Calls `visit(&To::name, &From::name)` for every shared option that both `To` and `From` have (of
/// the same name); returns how many. `process_dataset` is never shared: each layer wraps the job of
/// the layer above in its own.
template <class To, class From, class Visit>
constexpr std::size_t for_each_shared_option(Visit&& visit) {
  std::size_t shared = 0;
  const auto field = [&](auto to_field, auto from_field) {
    visit(to_field, from_field);
    ++shared;
  };
  // clang-format off
  if constexpr (requires { &To::datasets; &From::datasets; }) field(&To::datasets, &From::datasets);
  if constexpr (requires { &To::completion; &From::completion; }) field(&To::completion, &From::completion);
  if constexpr (requires { &To::skip_on_error; &From::skip_on_error; }) field(&To::skip_on_error, &From::skip_on_error);
  if constexpr (requires { &To::skip_tree_on_error; &From::skip_tree_on_error; }) field(&To::skip_tree_on_error, &From::skip_tree_on_error);
  if constexpr (requires { &To::retry_policy; &From::retry_policy; }) field(&To::retry_policy, &From::retry_policy);
  if constexpr (requires { &To::is_job_failure; &From::is_job_failure; }) field(&To::is_job_failure, &From::is_job_failure);
  if constexpr (requires { &To::termination_handler; &From::termination_handler; }) field(&To::termination_handler, &From::termination_handler);
  if constexpr (requires { &To::append_exception; &From::append_exception; }) field(&To::append_exception, &From::append_exception);
  if constexpr (requires { &To::task_name; &From::task_name; }) field(&To::task_name, &From::task_name);
  if constexpr (requires { &To::dry_run; &From::dry_run; }) field(&To::dry_run, &From::dry_run);
  if constexpr (requires { &To::attempt_timeout; &From::attempt_timeout; }) field(&To::attempt_timeout, &From::attempt_timeout);
  if constexpr (requires { &To::stall_interval; &From::stall_interval; }) field(&To::stall_interval, &From::stall_interval);
  if constexpr (requires { &To::priority; &From::priority; }) field(&To::priority, &From::priority);
  if constexpr (requires { &To::max_workers; &From::max_workers; }) field(&To::max_workers, &From::max_workers);
  if constexpr (requires { &To::executors; &From::executors; }) field(&To::executors, &From::executors);
  if constexpr (requires { &To::interval_nanos; &From::interval_nanos; }) field(&To::interval_nanos, &From::interval_nanos);
  if constexpr (requires { &To::stop_token; &From::stop_token; }) field(&To::stop_token, &From::stop_token);
  if constexpr (requires { &To::enable_barriers; &From::enable_barriers; }) field(&To::enable_barriers, &From::enable_barriers);
  if constexpr (requires { &To::barrier_name; &From::barrier_name; }) field(&To::barrier_name, &From::barrier_name);
  if constexpr (requires { &To::clock; &From::clock; }) field(&To::clock, &From::clock);
  if constexpr (requires { &To::random; &From::random; }) field(&To::random, &From::random);
  if constexpr (requires { &To::log; &From::log; }) field(&To::log, &From::log);
  if constexpr (requires { &To::observer; &From::observer; }) field(&To::observer, &From::observer);
  if constexpr (requires { &To::callbacks_on_calling_thread; &From::callbacks_on_calling_thread; }) field(&To::callbacks_on_calling_thread, &From::callbacks_on_calling_thread);
  if constexpr (requires { &To::journal; &From::journal; }) field(&To::journal, &From::journal);
  if constexpr (requires { &To::comm; &From::comm; }) field(&To::comm, &From::comm);
  // clang-format on
  return shared;
}

/// True if the member pointer `field` is one of `except`.
template <class Field, class... Except>
constexpr bool is_one_of(Field field, Except... except) {
  [[maybe_unused]] const auto is = [field](auto excepted) {
    if constexpr (std::is_same_v<Field, decltype(excepted)>) {
      return field == excepted;
    } else {
      return false;
    }
  };
  return (is(except) || ...);
}

/// Moves every shared option from `from` into `to` (see `for_each_shared_option`), except the
/// fields of `To` named in `except` (member pointers), which the caller sets itself and which stay
/// untouched in `from`.
template <class To, class From, class... Except>
void carry_shared_options(From&& from, To& to, Except... except) {
  using Source = std::remove_cvref_t<From>;
  // A tuple, not the pack itself, inside the lambda: GCC 12 expands a captured pack there as empty.
  const std::tuple<Except...> excepted{except...};
  for_each_shared_option<To, Source>([&](auto to_field, auto from_field) {
    const bool skip = std::apply([to_field](auto... fields) { return is_one_of(to_field, fields...); }, excepted);
    if (!skip) to.*to_field = std::move(from.*from_field);
  });
}

/// The number of options that `To` and `From` share.
template <class To, class From>
inline constexpr std::size_t shared_option_count = for_each_shared_option<To, From>([](auto, auto) {});

}  // namespace tasktree::detail
