// Caching device allocator: one per backend instance (hence per stream). Freed blocks go
// to a free list keyed by size and are handed out again, so a steady-state workload (the
// same op sequence each denoising step) makes no cudaMalloc calls at all.
#pragma once

#include <cstddef>
#include <map>
#include <mutex>
#include <unordered_map>

namespace sd::cuda {

struct AllocatorCounters {
  size_t in_use = 0;         // bytes in blocks held by live tensors
  size_t peak = 0;           // max of in_use since the last reset
  size_t reserved = 0;       // bytes obtained from cudaMalloc (in use + cached)
  size_t device_mallocs = 0; // cudaMalloc calls so far
  size_t cache_hits = 0;     // allocations served from the free lists
};

class DeviceAllocator {
 public:
  explicit DeviceAllocator(int device) : device_(device) {}
  ~DeviceAllocator();
  DeviceAllocator(const DeviceAllocator&) = delete;
  DeviceAllocator& operator=(const DeviceAllocator&) = delete;

  // A block of at least `bytes` (256-byte aligned). Throws sd::Error (ResourceExhausted)
  // with the CUDA message when the device is out of memory even after emptying the cache.
  void* allocate(size_t bytes);
  // Returns a block to the cache. Work queued on the owning stream that still uses the
  // block runs before any later user of it, because that user is on the same stream.
  void release(void* ptr);
  // Gives every cached block back to the driver.
  void empty_cache();

  AllocatorCounters counters() const;
  void reset_peak();

  // Block size actually used for a request (exposed for tests).
  static size_t round_size(size_t bytes);

 private:
  void free_cached_locked();

  int device_;
  mutable std::mutex mu_;
  std::unordered_map<void*, size_t> live_;  // block -> its size
  std::multimap<size_t, void*> free_;       // size -> cached block
  AllocatorCounters counters_;
};

}  // namespace sd::cuda
