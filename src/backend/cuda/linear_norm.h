// A linear layer and the layer norm after it in one Hopper kernel (sm_90a, TMA + wgmma):
// y = x w^T (+ bias) (+ residual) and n = layer_norm(y) (gamma, beta, eps), both written, for
// widths N whose weights fit in shared memory (the UNet's 64x64-level transformer: N = K = 320).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "tensor/tensor.h"

namespace sd::cuda {

// x [M, K], w [N, K], y / normed [M, N]: row-major, contiguous, 16-byte aligned, f16 or bf16.
struct LinearNormShape {
  int64_t m = 0, n = 0, k = 0;
};

// N 128, 160, 192, 256 or 320 (one CTA owns whole rows: 64 rows x N); K % 64 == 0 with the
// whole weight (K x N halves) resident in shared memory beside a ring of at least two x stages;
// M < 2^31. The device must be sm_90 with TMA (checked at launch).
bool linear_norm_supported(const LinearNormShape& s, DType dtype);

struct LinearNormOperands {
  const void* x = nullptr;
  const void* w = nullptr;
  const void* bias = nullptr;      // [N] or null
  const void* residual = nullptr;  // [M, N] or null
  const void* gamma = nullptr;     // [N]
  const void* beta = nullptr;      // [N]
  void* y = nullptr;               // [M, N]: the linear's output (rounded to the dtype)
  void* normed = nullptr;          // [M, N]: layer_norm(y) with the rounded y, f32 statistics
  float eps = 1e-5f;
};

// Enqueues the kernel on `stream` (no sync, no allocation: capturable). False when the shape,
// the pointers or the device do not qualify, or the launch is refused.
bool launch_linear_norm(const LinearNormOperands& o, DType dtype, const LinearNormShape& s, cudaStream_t stream);

}  // namespace sd::cuda
