// The vectorised group norm (+ SiLU) of group_norm_vec.cu: f16/bf16, C % 8 == 0, 16-byte
// aligned x and y; two launches (split statistics, then an apply pass that merges them first).
// CudaBackend::group_norm uses it by default where it applies (SDSERVE_CUDA_NORM=v1: never).
#pragma once

#include "tensor/tensor.h"

namespace sd::cuda {

class CudaBackend;

constexpr int kGnVecMaxChunks = 512;  // C/8 <= this: a stats block holds C/8 x rows lanes
constexpr int kGnMaxBatch = 65535;    // batch rows: the grid's y dimension
constexpr int kGnVecMaxGroups = 1024; // the apply prologue keeps (sum, sum of squares, mean, rstd) per group in shared memory

// Whether group_norm_vec can normalise x [B, ..., C] into y with `groups` groups.
bool group_norm_vec_applies(const Tensor& x, const Tensor& y, int groups);
// y = group_norm(x) (then SiLU); gamma/beta [C] in x's dtype. Enqueues on be.stream(). With
// SDSERVE_CUDA_GN_CLUSTER=1, small inputs on Hopper take group_norm_cluster instead.
// One-launch variant (group_norm_cluster.cu): one thread-block cluster per batch row; false (nothing
// enqueued) where it does not apply: not enabled, no clusters, too many batch rows, large x.
bool group_norm_cluster(CudaBackend& be, const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& y,
                        int groups, float eps, bool silu);
// With `add` (x's dtype, 16-byte aligned, row stride add_ld elements, a multiple of 8): normalises
// x + add[b, c] instead (the ResNet time embedding, Backend::group_norm_add).
void group_norm_vec(CudaBackend& be, const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& y,
                    int groups, float eps, bool silu, const void* add = nullptr, int64_t add_ld = 0);

}  // namespace sd::cuda
