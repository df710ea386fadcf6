// L2 eviction and input re-warming between autotuning runs (tuning_l2.h): a memset over a
// scratch buffer twice the L2 size, then a read-only kernel over the input (16-byte loads,
// folded into a value that is stored only in an impossible case so the loads are kept).
#include <algorithm>
#include <cstdint>
#include <cstdlib>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/tuning_l2.h"

namespace sd::cuda {

namespace {

__global__ void touch_kernel(const uint4* __restrict__ p, size_t n, unsigned* __restrict__ sink) {
  unsigned acc = 0;
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n; i += size_t{gridDim.x} * blockDim.x) {
    const uint4 v = p[i];
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x9e3779b9u && sink) *sink = acc;  // practically never; keeps the loads
}

}  // namespace

bool tune_cold_weights() {
  static const bool on = [] {
    const char* env = std::getenv("SDSERVE_CUDA_TUNE_COLD");
    return !(env && env[0] == '0');
  }();
  return on;
}

size_t l2_bytes(int device) {
  static size_t cached[64] = {};
  if (device < 0 || device >= 64) return size_t{50} << 20;
  if (cached[device] == 0) {
    int bytes = 0;
    if (cudaDeviceGetAttribute(&bytes, cudaDevAttrL2CacheSize, device) != cudaSuccess || bytes <= 0) {
      (void)cudaGetLastError();
      bytes = 50 << 20;
    }
    cached[device] = static_cast<size_t>(bytes);
  }
  return cached[device];
}

void evict_l2_keep_input(cudaStream_t stream, void* scratch, size_t scratch_bytes, const void* input,
                         size_t input_bytes, size_t l2) {
  SD_CUDA_CHECK(cudaMemsetAsync(scratch, 0, scratch_bytes, stream));
  if (!input || input_bytes < 16 || input_bytes > l2 / 2 || (reinterpret_cast<uintptr_t>(input) & 15u) != 0) return;
  const size_t n = input_bytes / 16;
  const unsigned blocks = static_cast<unsigned>(std::min<size_t>((n + 255) / 256, 1024));
  touch_kernel<<<blocks, 256, 0, stream>>>(static_cast<const uint4*>(input), n, static_cast<unsigned*>(scratch));
  SD_CUDA_LAUNCH_CHECK();
}

}  // namespace sd::cuda
