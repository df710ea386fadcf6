// Caching device allocator: one per backend instance (hence per stream). Freed blocks go
// to a free list keyed by size and are handed out again, so a steady-state workload (the
// same op sequence each denoising step) makes no cudaMalloc calls at all. Private pools
// keep the blocks of a captured CUDA graph away from other work while the graph lives.
#pragma once

#include <cstddef>
#include <map>
#include <mutex>
#include <thread>
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
  // Gives every cached block of the shared cache back to the driver (cudaFree; not while any
  // stream of the device is capturing).
  void free_cached();
  // Gives every cached block (of the shared cache) back to the driver.
  void empty_cache();

  // ---- private pools (CUDA graph capture) ----
  // A new, empty pool with one owner; returns its id (> 0).
  int create_pool();
  // One more owner of pool `id` (graphs captured into one pool share its memory); false
  // when the pool is gone.
  bool retain_pool(int id);
  // Until end_pool(), allocations made by the calling thread belong to pool `id`: they come
  // from the pool's own free blocks, else the shared cache, else cudaMalloc (never freeing
  // cached blocks: cudaFree is not allowed during capture). Blocks of the pool released in
  // the meantime or later go back to the pool, never to the shared cache, so graphs'
  // intermediates stay reserved for their replays. Cached pool blocks count as in use.
  void begin_pool(int id);
  void end_pool();
  // Drops one owner; with the last one the pool ends: its cached blocks join the shared
  // cache, and blocks of it still held by tensors go there when released.
  void release_pool(int id);

  AllocatorCounters counters() const;
  void reset_peak();

  // Block size actually used for a request (exposed for tests).
  static size_t round_size(size_t bytes);

 private:
  struct Block {
    size_t size = 0;
    int pool = 0;  // 0: the shared cache
  };
  using FreeList = std::multimap<size_t, void*>;  // size -> cached block
  void free_cached_locked();
  // A cached block of `size` (or slightly larger) from `list`; nullptr if none fits.
  static void* take_locked(FreeList& list, size_t size, size_t* got);

  int device_;
  mutable std::mutex mu_;
  std::unordered_map<void*, Block> live_;  // block held by a tensor -> its size and pool
  FreeList free_;                          // the shared cache
  struct Pool {
    FreeList free;  // cached blocks
    int owners = 0;
  };
  std::unordered_map<int, Pool> pools_;    // live private pools
  int next_pool_ = 1;
  int active_pool_ = 0;                    // pool of allocations by active_thread_
  std::thread::id active_thread_;
  AllocatorCounters counters_;
};

}  // namespace sd::cuda
