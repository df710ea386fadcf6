// The vectorised group norm (+ SiLU) of group_norm_vec.cu: f16/bf16, C % 8 == 0, 16-byte
// aligned x and y; one on-chip launch where the batch row fits a cluster's shared memory, else two
// launches (split statistics, then an apply pass that merges them first).
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
// False when SDSERVE_CUDA_NORM=v1 asks for the general kernels only (norm.cu).
bool vector_group_norm_enabled();
// The one-launch on-chip kernel's configuration for a [batch, positions, channels] input
// (group_norm_onchip.cu): cluster 0 where it does not apply (no clusters, or even the narrowest
// slice of whole groups larger than 16 CTAs' shared memory). SDSERVE_CUDA_GN_ONCHIP_BUDGET caps the
// slab bytes per CTA, SDSERVE_CUDA_GN_ONCHIP_CLUSTER / _SLICE force the cluster size / slice width.
struct OnchipPlan {
  int cluster = 0;          // CTAs per (batch row, slice): one cluster; 0: does not apply
  int slice = 0, slices = 0;  // channels per cluster (whole groups, multiple of 8); C / slice
  int threads = 0, rows = 0;  // threads per CTA; position lanes (threads = rows x C/8, in warps)
  int chunk = 0;            // positions per CTA
  int stage_positions = 0;  // positions per load stage
  size_t smem = 0;          // dynamic shared memory per CTA
};
OnchipPlan group_norm_onchip_plan(int device, int64_t batch, int64_t positions, int64_t channels, int groups);
// Whether the on-chip kernel is the default (SDSERVE_CUDA_GN_ONCHIP unset) for this plan: where
// it measured faster than the two-kernel path on an H100 (at most ~2 waves of CTAs, clusters <= 8).
bool group_norm_onchip_default(int device, int64_t batch, const OnchipPlan& plan);
// One launch, x read once (group_norm_onchip.cu); false (nothing enqueued) where it does not apply
// or is not chosen: SDSERVE_CUDA_GN_ONCHIP=0 never, 1 wherever it fits, "require" throws where it
// does not (tests), unset: group_norm_onchip_default. Same arguments as group_norm_vec; with x2 the
// input is the channel concatenation [x | x2] (x [B, ..., C1], x2 [B, ..., C - C1], C1 % 8 == 0,
// both read in place; y [B, ..., C]).
bool group_norm_onchip(CudaBackend& be, const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& y,
                       int groups, float eps, bool silu, const void* add, int64_t add_ld, const Tensor* x2 = nullptr);
// y = group_norm(x) (then SiLU); gamma/beta [C] in x's dtype. Enqueues on be.stream(): the
// on-chip kernel where it applies (above), else two launches.
// With `add` (x's dtype, 16-byte aligned, row stride add_ld elements, a multiple of 8): normalises
// x + add[b, c] instead (the ResNet time embedding, Backend::group_norm_add).
void group_norm_vec(CudaBackend& be, const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& y,
                    int groups, float eps, bool silu, const void* add = nullptr, int64_t add_ld = 0);
// Group norm (+ SiLU) of the channel concatenation [a | b] of a [B, ..., Ca] and b [B, ..., Cb]
// (same leading dims, f16 / bf16, contiguous, 16-byte aligned, Ca % 8 == 0, Cb % 8 == 0) into
// y [B, ..., Ca + Cb], reading a and b in place (the UNet decoder's skip connections). False
// (nothing enqueued) where it does not apply; the caller then concatenates. Where it applies it runs
// the path group_norm_vec would take for the concatenated tensor (same plans and overrides).
bool group_norm_vec_concat(CudaBackend& be, const Tensor& a, const Tensor& b, const Tensor& gamma,
                           const Tensor& beta, const Tensor& y, int groups, float eps, bool silu);

}  // namespace sd::cuda
