// Caching device allocator: size-rounded blocks from cudaMalloc, recycled through free
// lists; on out-of-memory the cache is emptied and the request retried once before the
// failure is reported with the CUDA message. Private pools hold captured graphs' blocks.
#include "backend/cuda/device_allocator.h"

#include <cuda_runtime.h>

#include <string>

#include "backend/cuda/cuda_check.h"

namespace sd::cuda {

namespace {
constexpr size_t kSmallLimit = size_t{1} << 20;  // below: 512-byte granules
constexpr size_t kLargeGranule = size_t{2} << 20;  // above: 2 MiB granules
}  // namespace

size_t DeviceAllocator::round_size(size_t bytes) {
  if (bytes == 0) bytes = 1;
  if (bytes < kSmallLimit) return (bytes + 511) / 512 * 512;
  return (bytes + kLargeGranule - 1) / kLargeGranule * kLargeGranule;
}

DeviceAllocator::~DeviceAllocator() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [id, pool] : pools_) free_.merge(pool.free);  // no graph can outlive its allocator
  free_cached_locked();
  // Blocks still held by live tensors are leaked on purpose: their owners outlive us.
}

void DeviceAllocator::free_cached() {
  std::lock_guard<std::mutex> lock(mu_);
  free_cached_locked();
}

void DeviceAllocator::free_cached_locked() {
  int prev = -1;
  cudaGetDevice(&prev);
  cudaSetDevice(device_);
  for (auto& [size, ptr] : free_) {
    cudaFree(ptr);
    counters_.reserved -= size;
  }
  free_.clear();
  if (prev >= 0) cudaSetDevice(prev);
}

void* DeviceAllocator::take_locked(FreeList& list, size_t size, size_t* got) {
  // A cached block of this size, or a slightly larger one (at most 1/8 extra for large
  // blocks, 2x for small ones) so big blocks are not wasted on small requests.
  auto it = list.lower_bound(size);
  const size_t limit = size < kSmallLimit ? 2 * size : size + size / 8;
  if (it == list.end() || it->first > limit) return nullptr;
  void* ptr = it->second;
  *got = it->first;
  list.erase(it);
  return ptr;
}

void* DeviceAllocator::allocate(size_t bytes) {
  const size_t size = round_size(bytes);
  std::lock_guard<std::mutex> lock(mu_);
  const int pool = (active_pool_ != 0 && std::this_thread::get_id() == active_thread_) ? active_pool_ : 0;
  size_t got = 0;
  void* ptr = nullptr;
  bool counted = false;  // pool blocks are counted in use while cached
  if (pool != 0) {
    ptr = take_locked(pools_[pool].free, size, &got);
    counted = ptr != nullptr;
  }
  if (!ptr) ptr = take_locked(free_, size, &got);
  if (ptr) {
    ++counters_.cache_hits;
  } else {
    cudaError_t err = cudaSuccess;
    if (pool != 0) {
      // Inside a graph capture cudaMalloc counts as unsafe and would invalidate it; this block
      // is owned by the pool, so the allocation is safe: allow it for this one call.
      cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
      cudaThreadExchangeStreamCaptureMode(&mode);
      err = cudaMalloc(&ptr, size);
      cudaThreadExchangeStreamCaptureMode(&mode);
    } else {
      err = cudaMalloc(&ptr, size);
    }
    if (err == cudaErrorMemoryAllocation && pool == 0) {
      cudaGetLastError();  // clear the (non-sticky) error, drop the cache, try once more
      free_cached_locked();
      err = cudaMalloc(&ptr, size);
    }
    if (err != cudaSuccess) {
      cudaGetLastError();
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      throw Error(cuda_status(err, "allocating " + std::to_string(bytes) + " bytes on cuda:" +
                                       std::to_string(device_) + " (" + std::to_string(counters_.in_use >> 20) +
                                       " MiB in use by this backend, " + std::to_string(free_b >> 20) + " of " +
                                       std::to_string(total_b >> 20) + " MiB free on the device)"));
    }
    got = size;
    counters_.reserved += size;
    ++counters_.device_mallocs;
  }
  live_[ptr] = Block{got, pool};
  if (!counted) counters_.in_use += got;
  if (counters_.in_use > counters_.peak) counters_.peak = counters_.in_use;
  return ptr;
}

void DeviceAllocator::release(void* ptr) {
  if (!ptr) return;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = live_.find(ptr);
  if (it == live_.end()) return;  // not ours; nothing sensible to do
  const Block block = it->second;
  live_.erase(it);
  auto pool = block.pool != 0 ? pools_.find(block.pool) : pools_.end();
  if (pool != pools_.end()) {
    pool->second.free.emplace(block.size, ptr);  // stays reserved (and counted) for its graphs
    return;
  }
  counters_.in_use -= block.size;
  free_.emplace(block.size, ptr);
}

int DeviceAllocator::create_pool() {
  std::lock_guard<std::mutex> lock(mu_);
  const int id = next_pool_++;
  pools_[id].owners = 1;
  return id;
}

bool DeviceAllocator::retain_pool(int id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = pools_.find(id);
  if (it == pools_.end()) return false;
  ++it->second.owners;
  return true;
}

void DeviceAllocator::begin_pool(int id) {
  std::lock_guard<std::mutex> lock(mu_);
  SD_ASSERT(active_pool_ == 0, "begin_pool: pool " + std::to_string(active_pool_) + " is still active");
  SD_ASSERT(pools_.count(id) == 1, "begin_pool: no pool " + std::to_string(id));
  active_pool_ = id;
  active_thread_ = std::this_thread::get_id();
}

void DeviceAllocator::end_pool() {
  std::lock_guard<std::mutex> lock(mu_);
  active_pool_ = 0;
  active_thread_ = std::thread::id();
}

void DeviceAllocator::release_pool(int id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = pools_.find(id);
  if (it == pools_.end() || --it->second.owners > 0) return;
  for (auto& [size, ptr] : it->second.free) {
    counters_.in_use -= size;
    free_.emplace(size, ptr);
  }
  pools_.erase(it);
  if (active_pool_ == id) {
    active_pool_ = 0;
    active_thread_ = std::thread::id();
  }
}

void DeviceAllocator::empty_cache() {
  std::lock_guard<std::mutex> lock(mu_);
  free_cached_locked();
}

AllocatorCounters DeviceAllocator::counters() const {
  std::lock_guard<std::mutex> lock(mu_);
  return counters_;
}

void DeviceAllocator::reset_peak() {
  std::lock_guard<std::mutex> lock(mu_);
  counters_.peak = counters_.in_use;
}

}  // namespace sd::cuda
