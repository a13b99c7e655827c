#pragma once
/// @file detail/error_text.hpp
/// @brief The text of an exception for log messages and for errors that cross to another rank.

#include <exception>
#include <string>
#include <utility>

namespace tasktree::detail {

/// `what()` of the exception, or `"unknown exception"` for one that is not a `std::exception`.
inline std::string describe(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "unknown exception";
  }
}

/// A base of exceptions that know where, beyond this process, they happened (e.g. on which rank and
/// host of an MPI run), for log lines to name the place; the layers below the scale-out see it
/// through this class alone.
class ErrorPlace {
 public:
  /// `place` completes "... on ", e.g. `"rank 2 (host node7)"`.
  explicit ErrorPlace(std::string place) : place_(std::move(place)) {}
  [[nodiscard]] const std::string& place() const noexcept { return place_; }

 private:
  std::string place_;
};

/// `" on {place}"` if `error` is an `ErrorPlace`, else empty.
inline std::string describe_place(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const ErrorPlace& placed) {
    return " on " + placed.place();
  } catch (...) {
    return {};
  }
}

}  // namespace tasktree::detail
