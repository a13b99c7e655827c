// Replaces the C allocation functions of the benchmark binary (malloc, calloc, realloc, free and
// the aligned ones) with versions that count, and forward to glibc's own (`__libc_malloc` and the
// rest, which glibc exports for this purpose). Counting there, rather than in a replaced global
// operator new, also sees what the library allocates with `malloc` and grows with `realloc` (the
// trie's node array), and sees a `realloc` that grows a block in place as what it is. A block
// counts as the size `malloc_usable_size` gives (what the allocator set aside: the request rounded
// up, a few bytes more). Counting is switched on only around the measured region; otherwise the
// cost is one relaxed load per call.

#include "allocation_counter.hpp"

#include <malloc.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>

extern "C" {
void* __libc_malloc(std::size_t size) noexcept;
void* __libc_calloc(std::size_t count, std::size_t size) noexcept;
void* __libc_realloc(void* block, std::size_t size) noexcept;
void __libc_free(void* block) noexcept;
void* __libc_memalign(std::size_t alignment, std::size_t size) noexcept;
}

namespace {

std::atomic<bool> counting{false};
std::atomic<std::int64_t> live{0};
std::atomic<std::int64_t> peak{0};
std::atomic<std::int64_t> total{0};
std::atomic<std::int64_t> count{0};

std::int64_t usable(void* block) noexcept {
  return block == nullptr ? 0 : static_cast<std::int64_t>(malloc_usable_size(block));
}

/// `live` changed by `delta` with `allocated` new bytes (one allocation).
void note(std::int64_t delta, std::int64_t allocated) noexcept {
  const std::int64_t now = live.fetch_add(delta, std::memory_order_relaxed) + delta;
  total.fetch_add(allocated, std::memory_order_relaxed);
  count.fetch_add(1, std::memory_order_relaxed);
  std::int64_t seen = peak.load(std::memory_order_relaxed);
  while (now > seen && !peak.compare_exchange_weak(seen, now, std::memory_order_relaxed)) {
  }
}

void* allocated(void* block) noexcept {
  if (block != nullptr && counting.load(std::memory_order_relaxed)) {
    const std::int64_t bytes = usable(block);
    note(bytes, bytes);
  }
  return block;
}

bool valid_alignment(std::size_t alignment) noexcept {
  return alignment >= sizeof(void*) && (alignment & (alignment - 1)) == 0;
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

extern "C" {

void* malloc(std::size_t size) noexcept { return allocated(__libc_malloc(size)); }

void* calloc(std::size_t count_, std::size_t size) noexcept { return allocated(__libc_calloc(count_, size)); }

void* realloc(void* block, std::size_t size) noexcept {
  if (!counting.load(std::memory_order_relaxed)) return __libc_realloc(block, size);
  const std::int64_t before = usable(block);
  void* moved = __libc_realloc(block, size);
  if (moved == nullptr && size != 0) return nullptr;  // failed: `block` is untouched
  const std::int64_t after = usable(moved);
  note(after - before, after > before ? after - before : 0);
  return moved;
}

void free(void* block) noexcept {
  if (block != nullptr && counting.load(std::memory_order_relaxed)) {
    live.fetch_sub(usable(block), std::memory_order_relaxed);
  }
  __libc_free(block);
}

void* aligned_alloc(std::size_t alignment, std::size_t size) noexcept {
  return allocated(__libc_memalign(alignment, size));
}

void* memalign(std::size_t alignment, std::size_t size) noexcept { return allocated(__libc_memalign(alignment, size)); }

int posix_memalign(void** out, std::size_t alignment, std::size_t size) noexcept {
  if (!valid_alignment(alignment)) return EINVAL;
  void* block = allocated(__libc_memalign(alignment, size));
  if (block == nullptr) return ENOMEM;
  *out = block;
  return 0;
}

}  // extern "C"
