#pragma once
/// @file detail/error_text.hpp
/// @brief The text of an exception for log messages and for errors that cross to another rank.

#include <exception>
#include <string>

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

}  // namespace tasktree::detail
