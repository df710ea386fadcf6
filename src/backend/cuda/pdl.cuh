// Programmatic dependent launch (Hopper PDL) for our own kernels: launch_kernel() launches with
// cudaLaunchAttributeProgrammaticStreamSerialization when SDSERVE_CUDA_PDL is on (stream capture turns
// it into a programmatic graph edge), pdl_wait() / pdl_trigger() are the kernel-side griddepcontrol.
#pragma once

// Host-side switch (also in builds without CUDA, where it does nothing).
namespace sd::cuda {

// SDSERVE_CUDA_PDL=0|1, read once per process (default: see pdl.cc); set_pdl_enabled() overrides it
// (tests and benchmarks: PDL on vs off in one process; launches already captured keep their mode).
bool pdl_enabled();
void set_pdl_enabled(bool on);

}  // namespace sd::cuda

#ifdef __CUDACC__
#include <cuda_runtime.h>

#include <utility>

#include "backend/cuda/cuda_check.h"

namespace sd::cuda {

// Every kernel launched through launch_kernel() MUST call pdl_wait() unconditionally as its first
// statement, in every CTA, before any global memory access or early return: with PDL on it may
// start while the kernel before it still runs, and its own completion must imply the predecessor's
// (so a third kernel waiting on it sees the first one's writes too). No-op when launched plainly.
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// Lets the next PDL-launched kernel start (its CTAs then sit in pdl_wait() until this grid has
// completed and flushed); call it after pdl_wait(). Ordering is unaffected: only the launch moves.
// Build with -DSD_PDL_NO_TRIGGER to measure without it (dependents then start as CTAs exit).
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && !defined(SD_PDL_NO_TRIGGER)
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// For launches built by hand (clusters): appends the PDL attribute to cfg when pdl_enabled().
// attrs is cfg's attribute array (cfg.attrs is set to it) with room for cfg.numAttrs + 1 entries.
inline void add_pdl_attribute(cudaLaunchConfig_t& cfg, cudaLaunchAttribute* attrs) {
  cfg.attrs = attrs;
  if (!pdl_enabled()) return;
  attrs[cfg.numAttrs].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attrs[cfg.numAttrs].val.programmaticStreamSerializationAllowed = 1;
  ++cfg.numAttrs;
}

// kernel<<<grid, block, smem, stream>>>(args...) with the PDL attribute when pdl_enabled();
// returns the launch's error (cudaSuccess when enqueued).
template <typename... Params, typename... Args>
cudaError_t try_launch_kernel(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                              Args&&... args) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  if (pdl_enabled()) {
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
  }
  return cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
}

// As try_launch_kernel; throws sd::Error (cuda_check.h) when the launch is refused.
template <typename... Params, typename... Args>
void launch_kernel(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                   Args&&... args) {
  SD_CUDA_CHECK(try_launch_kernel(kernel, grid, block, smem, stream, std::forward<Args>(args)...));
}

}  // namespace sd::cuda
#endif  // __CUDACC__
