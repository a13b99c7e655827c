#pragma once
/// @file detail/name_hash.hpp
/// @brief FNV-1a over a list of names: the fingerprint of a plan, in the MPI agreement and in a
/// journal's run header.

#include <cstdint>
#include <string_view>

namespace tasktree::detail {

/// FNV-1a over the names, each followed by a zero byte as a separator, starting from `hash` (to
/// hash several lists as one).
template <class Names>
std::uint64_t hash_names(const Names& names, std::uint64_t hash = 0xcbf29ce484222325ull) noexcept {
  const auto mix = [&hash](unsigned char byte) {
    hash ^= byte;
    hash *= 0x100000001b3ull;
  };
  for (const auto& name : names) {
    for (const char c : std::string_view(name)) mix(static_cast<unsigned char>(c));
    mix(0);
  }
  return hash;
}

}  // namespace tasktree::detail
