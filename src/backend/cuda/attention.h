// The fused attention paths' entry points: the mma.sync kernels (head dims up to 160;
// attention_mma2.cu the pipelined one, attention_short.cu the one for <= 128 keys), the WMMA kernel
// (head dims up to 256), the Hopper wgmma kernels and cuDNN's fused SDPA (attention_cudnn.cc).
// Wider heads take the unfused path (CudaBackend::attention_unfused). attention.cu picks among them.
#pragma once

#include <cuda_runtime.h>

#include <functional>
#include <vector>

#include "tensor/tensor.h"

namespace sd::cuda {

// q [B, Lq, H*D], k/v [B, Lk, H*D] -> o [B, Lq, H*D] contiguous, f16 or bf16. q/k/v rows may
// be strided (attention_cols: windows of packed projections): row i of q starts at
// q + i * q_stride, row j of k / v at k / v + j * kv_stride (elements; H*D when contiguous).
struct AttentionArgs {
  const void* q;
  const void* k;
  const void* v;
  void* o;
  int batch, lq, lk, heads, d;
  bool causal;
  bool vec;  // d % 8 == 0, strides % 8 == 0 and q/k/v 16-byte aligned: 16-byte global loads
  int64_t q_stride, kv_stride;
  bool contiguous() const { return q_stride == int64_t{heads} * d && kv_stride == int64_t{heads} * d; }
};

constexpr int kMmaAttentionMaxHeadDim = 160;
constexpr int kWmmaAttentionMaxHeadDim = 256;  // beyond: unfused (cuBLAS + softmax), attention_unfused.cu

void launch_attention_mma(DType dtype, const AttentionArgs& a, cudaStream_t stream);
// WMMA kernel: contiguous q/k/v only (strided callers copy the windows first).
void launch_attention_wmma(DType dtype, const AttentionArgs& a, cudaStream_t stream);
// Pipelined mma.sync kernel: needs a.vec (d % 8 == 0, 16-byte aligned), d <= 160.
void launch_attention_mma2(DType dtype, const AttentionArgs& a, cudaStream_t stream);

// Short key sequences (the 77-token text context; attention_short.cu): all keys in one tile (80
// or 128) loaded once per CTA, which walks many 64-query tiles of its head. Non-causal,
// lk <= kShortKeysMax, a.vec, d 40 / 64 / 80 / 128 / 160; false (nothing enqueued) otherwise.
constexpr int kShortKeysMax = 128;
bool launch_attention_short_keys(DType dtype, const AttentionArgs& a, cudaStream_t stream);

// All heads of 64 query rows per tile (attention_rows.cu; Hopper TMA, mma.sync): the d 40, 8-head
// cross-attention over <= 80 keys (SD 1.x's 64x64 level), Q / O as whole rows, o contiguous.
// False (nothing enqueued) for other shapes, unaligned pointers or a device without TMA.
bool launch_attention_rows(DType dtype, const AttentionArgs& a, cudaStream_t stream);

// cuDNN's fused SDPA (non-causal): builds and caches an execution plan per shape (and row
// strides) on `device` and runs it on `stream`; `workspace(bytes)` returns device scratch valid for this call.
// Returns false (nothing enqueued) when cuDNN has no plan for the shape, or while `stream` is
// being captured and the shape has no plan yet; the caller then uses a kernel of its own.
bool run_attention_cudnn(int device, DType dtype, const AttentionArgs& a, cudaStream_t stream,
                         const std::function<void*(size_t)>& workspace);
// Builds the SDPA plans of these shapes on `device` in background threads, one per shape
// (run_attention_cudnn waits for a shape still building). No-op for shapes built or building.
// SDSERVE_CUDNN_PREPARE=0 turns it off.
struct SdpaShape {
  int64_t batch, lq, lk, heads, d, q_stride, kv_stride;
};
void prepare_attention_cudnn(int device, DType dtype, const std::vector<SdpaShape>& shapes);
// Whether a background build (prepare_attention_cudnn) of any of these shapes is in flight.
bool attention_cudnn_building(int device, DType dtype, const std::vector<SdpaShape>& shapes);
// Joins the background builds of `device` (the backend's destructor).
void wait_attention_cudnn_prepared(int device);
// Destroys device's cuDNN SDPA plans and the handles background builds made (after waiting for
// builds in flight); false (nothing done) while another backend of the device may hold graphs
// that run them (attention_cudnn_users > 1).
bool forget_attention_cudnn(int device);
// Backends of `device` that may run its cuDNN SDPA plans (CudaBackend's constructor / destructor).
void attention_cudnn_user(int device, int delta);

// Hopper wgmma kernel (attention_wgmma.cu): non-causal, d 40 / 64 / 80, a.vec, row strides % 8
// == 0, on a compute-capability 9.0 device with the sm_90a build of the kernel. Returns false
// (nothing enqueued) where it does not apply, or when its one-time device probe would have to
// run while `stream` is being captured. consumers = 3 (d 40 only, else false): the 3-consumer
// form of the default d 40 kernel (192 query rows a block against 256): a candidate of the timed
// choice, for shapes whose 256-row blocks fill the last wave poorly (e.g. 1 x 6144 x 8 heads:
// 192 blocks on 132 SMs).
bool launch_attention_wgmma(DType dtype, const AttentionArgs& a, cudaStream_t stream, int consumers = 0);

}  // namespace sd::cuda
