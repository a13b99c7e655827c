// Replaces the global operator new and delete of the benchmark binary with versions that keep a
// size header in front of each block, so a delete knows how much it frees even when unsized.
// Counting is switched on only around the measured region; otherwise the cost is one relaxed load.

#include "allocation_counter.hpp"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <new>

namespace {

std::atomic<bool> counting{false};
std::atomic<std::int64_t> live{0};
std::atomic<std::int64_t> peak{0};
std::atomic<std::int64_t> total{0};
std::atomic<std::int64_t> count{0};

// The header keeps the size; it is as large as the alignment so the user's block stays aligned.
void* allocate(std::size_t size, std::size_t alignment) {
  const std::size_t header = std::max<std::size_t>(alignment, alignof(std::max_align_t));
  void* block = alignment <= alignof(std::max_align_t)
                    ? std::malloc(header + size)
                    : std::aligned_alloc(alignment, (header + size + alignment - 1) / alignment * alignment);
  if (block == nullptr) throw std::bad_alloc();
  auto* user = static_cast<unsigned char*>(block) + header;
  auto* fields = reinterpret_cast<std::size_t*>(user) - 2;
  fields[0] = header;
  fields[1] = size;
  if (counting.load(std::memory_order_relaxed)) {
    const auto bytes = static_cast<std::int64_t>(size);
    const std::int64_t now = live.fetch_add(bytes, std::memory_order_relaxed) + bytes;
    total.fetch_add(bytes, std::memory_order_relaxed);
    count.fetch_add(1, std::memory_order_relaxed);
    std::int64_t seen = peak.load(std::memory_order_relaxed);
    while (now > seen && !peak.compare_exchange_weak(seen, now, std::memory_order_relaxed)) {
    }
  }
  return user;
}

void release(void* user) noexcept {
  if (user == nullptr) return;
  auto* fields = static_cast<std::size_t*>(user) - 2;
  if (counting.load(std::memory_order_relaxed)) {
    live.fetch_sub(static_cast<std::int64_t>(fields[1]), std::memory_order_relaxed);
  }
  std::free(static_cast<unsigned char*>(user) - fields[0]);
}

}  // namespace

namespace bench {

void start_counting_allocations() noexcept {
  live = 0;
  peak = 0;
  total = 0;
  count = 0;
  counting = true;
}

AllocationCounts stop_counting_allocations() noexcept {
  counting = false;
  return {static_cast<std::size_t>(peak.load()), static_cast<std::size_t>(total.load()),
          static_cast<std::size_t>(count.load())};
}

}  // namespace bench

void* operator new(std::size_t size) { return allocate(size, alignof(std::max_align_t)); }
void* operator new[](std::size_t size) { return allocate(size, alignof(std::max_align_t)); }
void* operator new(std::size_t size, std::align_val_t alignment) {
  return allocate(size, static_cast<std::size_t>(alignment));
}
void* operator new[](std::size_t size, std::align_val_t alignment) {
  return allocate(size, static_cast<std::size_t>(alignment));
}
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
  try {
    return allocate(size, alignof(std::max_align_t));
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept {
  try {
    return allocate(size, alignof(std::max_align_t));
  } catch (...) {
    return nullptr;
  }
}
void operator delete(void* p) noexcept { release(p); }
void operator delete[](void* p) noexcept { release(p); }
void operator delete(void* p, std::size_t) noexcept { release(p); }
void operator delete[](void* p, std::size_t) noexcept { release(p); }
void operator delete(void* p, std::align_val_t) noexcept { release(p); }
void operator delete[](void* p, std::align_val_t) noexcept { release(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { release(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { release(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { release(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { release(p); }
