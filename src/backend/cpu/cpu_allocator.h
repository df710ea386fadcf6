// Host memory for the CPU backend's tensors: 64-byte aligned blocks, live-byte and peak
// accounting, and a bounded cache of freed large blocks so that the same activation sizes,
// step after step, skip mmap, page faults and kernel page zeroing.
#pragma once

#include <atomic>
#include <cstddef>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "tensor/tensor.h"

namespace sd::cpu {

class HostAllocator : public std::enable_shared_from_this<HostAllocator> {
 public:
  // Freed blocks of at least kMinCachedBytes are kept for reuse, up to `cache_limit` bytes.
  static constexpr size_t kMinCachedBytes = size_t{1} << 20;
  static std::shared_ptr<HostAllocator> create(size_t cache_limit);
  ~HostAllocator();

  // A block of at least `bytes` bytes (never 0) whose storage returns it here when the last
  // tensor using it goes away. Throws sd::Error (ResourceExhausted) when memory runs out.
  std::shared_ptr<Storage> allocate(size_t bytes);

  size_t in_use() const { return in_use_.load(); }  // bytes held by live tensors
  size_t peak() const { return peak_.load(); }
  void reset_peak() { peak_.store(in_use_.load()); }
  size_t cached() const;  // bytes of freed blocks kept for reuse

 private:
  explicit HostAllocator(size_t cache_limit) : cache_limit_(cache_limit) {}
  void release(void* p, size_t bytes);

  const size_t cache_limit_;
  std::atomic<size_t> in_use_{0};
  std::atomic<size_t> peak_{0};
  mutable std::mutex mutex_;
  std::unordered_map<size_t, std::vector<void*>> free_blocks_;  // by rounded size
  size_t cached_bytes_ = 0;
};

}  // namespace sd::cpu
