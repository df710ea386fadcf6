// The two fused attention kernels' launchers: the mma.sync kernel (default; registers hold
// Q, scores and the output accumulator, head dims up to 160) and the WMMA kernel (head dims
// up to 256; also selectable with SDSERVE_CUDA_ATTENTION=wmma for comparison). Wider heads
// take the unfused path (CudaBackend::attention_unfused).
#pragma once

#include <cuda_runtime.h>

#include "tensor/tensor.h"

namespace sd::cuda {

// q [B, Lq, H*D], k/v [B, Lk, H*D] -> o [B, Lq, H*D], all contiguous, f16 or bf16.
struct AttentionArgs {
  const void* q;
  const void* k;
  const void* v;
  void* o;
  int batch, lq, lk, heads, d;
  bool causal;
  bool vec;  // d % 8 == 0 and q/k/v 16-byte aligned: 16-byte global loads
};

constexpr int kMmaAttentionMaxHeadDim = 160;
constexpr int kWmmaAttentionMaxHeadDim = 256;  // beyond: unfused (cuBLAS + softmax), attention_unfused.cu

void launch_attention_mma(DType dtype, const AttentionArgs& a, cudaStream_t stream);
void launch_attention_wmma(DType dtype, const AttentionArgs& a, cudaStream_t stream);

}  // namespace sd::cuda
