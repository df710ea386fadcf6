// The one-pass register group norm of group_norm_fast.cu: x read once into registers, shifted f32
// statistics, a per-batch-row barrier on global atomics (cooperative launch: co-resident grid),
// apply from the registers (batches too large: waves of rows, x streamed twice). Tried first by
// group_norm_vec; falls back (returns false) elsewhere.
#pragma once

#include <cstdint>

#include "tensor/tensor.h"

namespace sd::cuda {

class CudaBackend;

// The fast kernel's configuration for a [batch, positions, channels] input: ctas_per_row 0 where
// it does not apply (groups not dividing C, C % 8, too many groups, a row needing more than
// 16 vectors per thread at the co-resident CTA count, ...).
struct FastPlan {
  int threads = 0;       // per CTA: rows x C/8 rounded up to whole warps
  int rows = 0;          // position lanes per CTA
  int slice = 0;         // channels per CTA (whole groups, a multiple of 8; about C / 4)
  int slices = 0;        // C / slice (grid y)
  int ctas_per_row = 0;  // CTAs per (batch row, slice) (grid x); 0: does not apply
  int chunk = 0;         // positions per CTA (a multiple of rows but for the last CTA)
  int vectors = 0;       // 16-byte vectors per thread at most (chunk / rows)
  int max_vectors = 0;   // the kernel instance: 4, 8 or 16 registers' worth of vectors; 0 streams x twice
  size_t smem = 0;       // dynamic shared memory per CTA
  int waves_z = 0;       // batch rows a wave (grid z): B, or fewer where B rows do not fit at once
  bool prefetch = false;  // waves: the next wave's vectors loaded before the barrier (<= 8 vectors)
};
// SDSERVE_CUDA_GN_FAST_CTAS=N: CTAs in all to aim for (default: SMs, or 2 x SMs where one per SM
// would hold more than 8 vectors a thread); _CPR=N forces CTAs per
// (row, slice); _SLICES=n forces slices of C / n channels. Where the batch does not fit one
// co-resident grid, rows go in waves (grid z < B): _WAVES=stream (default: x read twice, Z rows a
// wave within _STREAM_MB, default 24 MB, so the second read hits L2; y stored evict-first unless
// _STREAM_STORE=wb; _STREAM_PER_SM=n caps CTAs per SM), regs (x in registers:
// _PREFETCH=0 takes 16 vectors a thread and no prefetch, default 8 + the next wave's prefetch) or 0
// (none); _Z=n forces n rows a wave (also below B).
FastPlan group_norm_fast_plan(int device, int64_t batch, int64_t positions, int64_t channels, int groups);
// Whether the fast kernel is the default for this shape (SDSERVE_CUDA_GN_FAST unset): where it
// measured faster than the previous default on an H100 (docs/perf-notes.md, "Fast group norm";
// streamed waves: "Norms at batch 16").
bool group_norm_fast_default(int device, int64_t batch, int64_t positions, int64_t channels, const FastPlan& plan);
// One launch; false (nothing enqueued) where it does not apply or is not chosen:
// SDSERVE_CUDA_GN_FAST=0 never, 1 wherever it fits, "require" throws where it does not (tests),
// unset / auto: group_norm_fast_default, and not when SDSERVE_CUDA_GN_ONCHIP asks for a path
// (0, 1, require). Same arguments as group_norm_vec (x, y 16-byte aligned, C % 8 == 0); with x2
// the input is the channel concatenation [x | x2] (x [B, ..., C1], x2 [B, ..., C - C1], C1 % 8 == 0,
// both read in place; y [B, ..., C]).
bool group_norm_fast(CudaBackend& be, const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& y,
                     int groups, float eps, bool silu, const void* add, int64_t add_ld, const Tensor* x2 = nullptr);

}  // namespace sd::cuda
