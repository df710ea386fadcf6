// Entry points of the CUDA backend. When sdserve is built without CUDA, cuda_stub.cc
// provides them (built() is false, no devices), so callers need no #ifdef.
// All CUDA code lives in this folder.
#pragma once

#include <cstddef>
#include <memory>

#include "backend/backend.h"

namespace sd::cuda {

bool built();
int device_count();  // 0 when not built or no driver/device (never fails)
// Compute dtype from SDSERVE_CUDA_DTYPE ("f16", the default, or "bf16").
StatusOr<std::unique_ptr<Backend>> make_backend(int device_index);
StatusOr<std::unique_ptr<Backend>> make_backend(int device_index, DType compute_dtype);

// Counters of a CUDA backend's caching allocator (all zero for any other backend).
struct AllocatorStats {
  size_t in_use = 0;          // bytes held by live tensors
  size_t peak = 0;            // peak of in_use since reset_memory_peak()
  size_t reserved = 0;        // bytes obtained from the driver (in use + cached)
  size_t device_mallocs = 0;  // cudaMalloc calls so far
  size_t cache_hits = 0;      // allocations served from the cache
};
AllocatorStats allocator_stats(const Backend& backend);

// Whether device `device_index` runs the Hopper (wgmma) attention kernel: a compute-capability
// 9.0 device and a build that holds its sm_90a code (false without CUDA).
bool attention_wgmma_supported(int device_index);

// Launches of the all-heads row attention kernel (attention_rows.cu) in this process so far
// (tests: a forced path that falls back runs something else; 0 without CUDA).
long attention_rows_launches();

}  // namespace sd::cuda
