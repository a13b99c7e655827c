#pragma once
/// @file version.hpp
/// @brief The library version.

namespace tasktree {

/// @brief Major, minor and patch version of this tasktree release.
inline constexpr int version_major = 0;
inline constexpr int version_minor = 1;
inline constexpr int version_patch = 0;

}  // namespace tasktree
