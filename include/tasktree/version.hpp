#pragma once
/// @file version.hpp
/// @brief The library version.

namespace tasktree {

/// @brief Major version of this tasktree release: the `0` of 0.1.0.
inline constexpr int version_major = 0;
/// @brief Minor version of this tasktree release: the `1` of 0.1.0.
inline constexpr int version_minor = 1;
/// @brief Patch version of this tasktree release: the last `0` of 0.1.0.
inline constexpr int version_patch = 0;

}  // namespace tasktree
