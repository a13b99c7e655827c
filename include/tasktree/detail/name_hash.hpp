#pragma once
/// @file detail/name_hash.hpp
/// @brief A hash of one name whose sum over a list of names does not depend on their order: the
/// MPI agreement's fingerprint of a run's datasets (`TreeDigest`).

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace tasktree::detail {

/// A hash of one name, for `TreeDigest`: eight bytes at a time, then scrambled (the finalizer of
/// splitmix64) so that a sum of these is a good hash of a multiset of names.
inline std::uint64_t scrambled_name_hash(std::string_view name) noexcept {
  std::uint64_t hash = 0x9e3779b97f4a7c15ull ^ name.size();
  std::size_t i = 0;
  for (; i + 8 <= name.size(); i += 8) {
    std::uint64_t word = 0;
    std::memcpy(&word, name.data() + i, 8);
    hash = std::rotl(hash ^ word, 29) * 0xbf58476d1ce4e5b9ull;
  }
  std::uint64_t tail = 0;
  if (i < name.size()) std::memcpy(&tail, name.data() + i, name.size() - i);
  hash = std::rotl(hash ^ tail, 29) * 0x94d049bb133111ebull;
  hash ^= hash >> 30;
  hash *= 0xbf58476d1ce4e5b9ull;
  hash ^= hash >> 27;
  hash *= 0x94d049bb133111ebull;
  hash ^= hash >> 31;
  return hash;
}

}  // namespace tasktree::detail
