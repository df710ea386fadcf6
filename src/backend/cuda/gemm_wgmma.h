// Hopper GEMM of our own (TMA + wgmma, warp-specialized; sm_90a): y = x w^T (+ bias) (+ residual)
// or the fused feed-forward GEGLU y = a * gelu_erf(g), with split-K for small M. The dispatch
// (gemm_wgmma_choice.cc) times it against cuBLASLt per shape; see docs/perf-notes.md.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace sd::cuda {

// y[M, N] = x[M, K] · w[N, K]^T (+ bias[N]) (+ residual[M, N]); all row-major, contiguous, f16 or
// bf16, f32 accumulation. GEGLU: w is [2N, K] and bias [2N] (rows [0, N) the value a, rows
// [N, 2N) the gate g, as the checkpoint stores them) and y[M, N] = a * gelu_erf(g) (no residual).
struct WgmmaGemmShape {
  int64_t m, n, k;
  bool geglu = false;
  // > 0: x is two sources side by side, [x (M x k1) | x2 (M x (k - k1))] (the UNet decoder's
  // [h | skip]), read in place; k1 % 64 == 0 (a K block never straddles them), k1 < k.
  int64_t k1 = 0;
};

// One kernel configuration: a tile of bm x bn outputs — bm 128: cooperative, both consumer
// warpgroups on one tile (64 rows each), bn 64, 128, 160, 192 or 256; bm 64: ping-pong, the
// consumers take alternate tiles (one's epilogue overlaps the other's MMAs), bn 128, 160 or 256.
// With GEGLU bn counts the value and gate columns of the tile, so it writes bn / 2 outputs.
// One persistent CTA per multiprocessor walks the tiles.
// splits: the K range cut into this many slices (f32 partials in the workspace, summed in order
// by a reduce kernel that applies the epilogue: deterministic).
// vec_epilogue (splits 1 only; output columns per tile / 8 a multiple of 4): the epilogue swaps
// values within each quad by shuffles so bias / residual / y move as 16-byte vectors. Not yet
// measured on a GPU: candidates list it only with SDSERVE_CUDA_WGMMA_GEMM_VEC=1 (see perf-notes).
// tma_store (not with vec_epilogue): each consumer warpgroup writes its 64 rows of the tile (bias,
// residual, GEGLU applied) into a swizzled shared-memory staging tile, and one thread stores it by
// TMA (asynchronous, coalesced, M / N tails clipped) while the warpgroup goes on to its next tile;
// the residual tile is TMA-loaded into the staging tile during the main loop. With splits > 1 the
// K slices are summed in the kernel (no reduce kernel): each slice writes its f32 partials and
// counts itself done on a per-tile counter; the CTA completing the count sums the slices in order
// (deterministic) and runs the epilogue. The candidates use it for unsplit tiles by default
// (SDSERVE_CUDA_WGMMA_GEMM_TMA=0: never; =2: for split ones too — the in-kernel sum measured 1.3-3x
// slower than the reduce kernel on the H100, so split candidates keep the reduce kernel).
// overlap (tma_store, splits 1, bm 128, bn 64 or 128; GEGLU bn 128): the consumers issue the next
// tile's first K blocks to the tensor cores before running this tile's epilogue (from a copy of
// the accumulators), so the epilogue no longer idles the tensor cores in the cooperative schedule.
// Correct on the H100 (tests), speed not yet measured: candidates list it beside the plain
// TMA-store twin only with SDSERVE_CUDA_WGMMA_GEMM_OVERLAP=1 (see perf-notes, H16).
struct WgmmaGemmConfig {
  int bm = 128, bn = 128;
  int splits = 1;
  bool vec_epilogue = false;
  bool tma_store = false;
  bool overlap = false;
  std::string describe() const;  // "wgmma 128x128 s1" (+ " v" vec_epilogue, " t" tma_store, " o" overlap)
};

// Limits: f16 / bf16, K % 8 == 0 and N % 8 == 0 (TMA strides of 16 bytes; K tails are zero
// filled), M >= 1 arbitrary, every extent < 2^31; the device must be sm_90 (checked at launch).
bool wgmma_gemm_supported(const WgmmaGemmShape& s, DType dtype);
// Candidate configurations for the shape on a GPU of `sms` multiprocessors, best guess first.
std::vector<WgmmaGemmConfig> wgmma_gemm_candidates(const WgmmaGemmShape& s, int sms);
// Workspace bytes of the configuration (0 unless split): splits x M x N f32 (x 2N with GEGLU), with
// tma_store plus one int per tile. It needs no zeroing (every split writes its whole slice; the
// launch zeroes the tile counters itself, a memset node in a graph).
size_t wgmma_gemm_workspace(const WgmmaGemmShape& s, const WgmmaGemmConfig& c);

struct WgmmaGemmOperands {
  const void* x = nullptr;
  const void* x2 = nullptr;  // shape.k1 > 0: the second source [M, k - k1]
  const void* w = nullptr;
  void* y = nullptr;
  const void* bias = nullptr;
  const void* residual = nullptr;
  void* workspace = nullptr;  // wgmma_gemm_workspace() bytes, no zeroing needed (16-byte aligned)
};

// Enqueues the GEMM on `stream` (graph-capturable: no host sync, no allocation). False if it
// could not launch (nothing ran): unsupported shape / config, no sm_90 device, no TMA entry
// point in the driver, missing workspace. Pointers 16-byte aligned (the caller checks).
bool launch_wgmma_gemm(const WgmmaGemmOperands& o, DType dtype, const WgmmaGemmShape& s, const WgmmaGemmConfig& c,
                       cudaStream_t stream);

}  // namespace sd::cuda
