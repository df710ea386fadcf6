// HostAllocator: sizes are rounded (64 B for small blocks, 64 KiB for large ones) so that
// repeated shapes map to the same cache bucket; storages hold a shared_ptr to the allocator,
// so tensors may outlive the backend that made them.
#include "backend/cpu/cpu_allocator.h"

#include <cstdlib>
#include <string>

namespace sd::cpu {
namespace {

size_t round_size(size_t bytes) {
  const size_t granule = bytes >= HostAllocator::kMinCachedBytes ? (size_t{1} << 16) : 64;
  return (bytes / granule + 1) * granule;  // never 0
}

}  // namespace

std::shared_ptr<HostAllocator> HostAllocator::create(size_t cache_limit) {
  return std::shared_ptr<HostAllocator>(new HostAllocator(cache_limit));
}

HostAllocator::~HostAllocator() {
  for (auto& [size, blocks] : free_blocks_)
    for (void* p : blocks) std::free(p);
}

std::shared_ptr<Storage> HostAllocator::allocate(size_t bytes) {
  const size_t rounded = round_size(bytes);
  void* p = nullptr;
  if (rounded >= kMinCachedBytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = free_blocks_.find(rounded);
    if (it != free_blocks_.end() && !it->second.empty()) {
      p = it->second.back();
      it->second.pop_back();
      cached_bytes_ -= rounded;
    }
  }
  if (!p) p = std::aligned_alloc(64, rounded);
  if (!p) {
    // Give the cache back to the system and try once more before giving up.
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (auto& [size, blocks] : free_blocks_)
        for (void* q : blocks) std::free(q);
      free_blocks_.clear();
      cached_bytes_ = 0;
    }
    p = std::aligned_alloc(64, rounded);
    if (!p) throw Error(ResourceExhausted("cpu backend: out of host memory allocating " + std::to_string(bytes) + " bytes"));
  }
  const size_t now = in_use_.fetch_add(rounded) + rounded;
  size_t old_peak = peak_.load();
  while (now > old_peak && !peak_.compare_exchange_weak(old_peak, now)) {
  }
  auto self = shared_from_this();
  return std::make_shared<Storage>(p, rounded, Device::cpu(), [self, rounded](void* q) { self->release(q, rounded); });
}

void HostAllocator::release(void* p, size_t bytes) {
  in_use_.fetch_sub(bytes);
  if (bytes >= kMinCachedBytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (cached_bytes_ + bytes <= cache_limit_) {
      free_blocks_[bytes].push_back(p);
      cached_bytes_ += bytes;
      return;
    }
  }
  std::free(p);
}

size_t HostAllocator::cached() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return cached_bytes_;
}

}  // namespace sd::cpu
