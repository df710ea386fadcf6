// Caching device allocator: size-rounded blocks from cudaMalloc, recycled through free
// lists; on out-of-memory the cache is emptied and the request retried once before the
// failure is reported with the CUDA message.
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
  free_cached_locked();
  // Blocks still held by live tensors are leaked on purpose: their owners outlive us.
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

void* DeviceAllocator::allocate(size_t bytes) {
  const size_t size = round_size(bytes);
  std::lock_guard<std::mutex> lock(mu_);
  // Reuse a cached block of this size, or a slightly larger one (at most 1/8 extra for
  // large blocks, 2x for small ones) so big blocks are not wasted on small requests.
  auto it = free_.lower_bound(size);
  const size_t limit = size < kSmallLimit ? 2 * size : size + size / 8;
  void* ptr = nullptr;
  size_t got = 0;
  if (it != free_.end() && it->first <= limit) {
    ptr = it->second;
    got = it->first;
    free_.erase(it);
    ++counters_.cache_hits;
  } else {
    cudaError_t err = cudaMalloc(&ptr, size);
    if (err == cudaErrorMemoryAllocation) {
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
  live_[ptr] = got;
  counters_.in_use += got;
  if (counters_.in_use > counters_.peak) counters_.peak = counters_.in_use;
  return ptr;
}

void DeviceAllocator::release(void* ptr) {
  if (!ptr) return;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = live_.find(ptr);
  if (it == live_.end()) return;  // not ours; nothing sensible to do
  counters_.in_use -= it->second;
  free_.emplace(it->second, ptr);
  live_.erase(it);
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
