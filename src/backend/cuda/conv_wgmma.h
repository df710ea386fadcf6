// Hopper implicit-GEMM convolution for the small UNet levels (8x8 .. 32x32 at a few images):
// TMA tile loads into a deep shared-memory ring fed by a producer warp, wgmma from shared memory,
// the reduction split over >= one CTA per SM so the weights stream at memory speed.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "backend/cuda/conv_splitk.h"
#include "tensor/tensor.h"

namespace sd::cuda {

// Output tile bm positions (128, or 256: each consumer warpgroup runs two m64 wgmmas on one
// weight tile) x bn channels (64, 128, 160, and 256 at bm 128), the reduction (filter tap,
// 64-channel chunk) steps split into `splits` contiguous slices. Slices > 1 either write f32
// partials that a second kernel sums in slice order, or (dsmem: splits <= 16 alone, a non-portable
// cluster; cx * cy * splits <= 8 with multicast) form one cluster (cx, cy, splits) whose CTAs sum
// their tiles through distributed shared memory in slice order; both deterministic, both applying
// bias / row / residual. Clusters of cx x cy CTAs (bm 128 only; cx, cy in 1, 2, 4; cx * cy <= 8):
// the cx CTAs along N multicast the shared input box, the cy CTAs along M the shared weight box
// (each loads 1 / cx or 1 / cy of it).
struct WgmmaConvConfig {
  int bn = 128;
  int splits = 1;
  int cx = 1, cy = 1;
  int bm = 128;
  bool dsmem = false;
  // 3x3 only, bm 128, no multicast: each 64-channel chunk's input is loaded once as three
  // column-shifted halo boxes and the 9 taps are read out of them (conv_wgmma_reuse.cuh); the
  // split is over channel chunks.
  bool reuse = false;
  std::string describe() const;
};

// f16/bf16, stride 1, "same" padding (k odd, padding k / 2), Cin % 64 == 0, Cout % bn == 0, and
// a 128-position tile that is one box of the input: W divides 128 and H*W divides 128 (whole
// images per tile) or 128 divides H*W (rows of one image per tile). Or, for the reuse kernel
// only (3x3, padding 1): W in 8, 16, 32, 64 and its halo boxes fit shared memory (any H).
bool wgmma_conv_supported(const SplitKConvShape& s, DType dtype);

// Whether `cfg`'s tile and cluster fit shape `s` (grid divisible by the cluster, input pieces
// that are boxes).
bool wgmma_conv_config_ok(const SplitKConvShape& s, const WgmmaConvConfig& cfg);

// Whether `device` runs the kernel: compute capability 9.0 (wgmma, TMA) and a driver that gives
// cuTensorMapEncodeTiled (looked up through the runtime; libcuda is never linked).
bool wgmma_conv_device_ok(int device);

// Configurations worth timing for `s` on a device with `sms` SMs, the heuristic's pick first.
std::vector<WgmmaConvConfig> wgmma_conv_candidates(const SplitKConvShape& s, int sms);

// Mode 2's (forced: tests) overrides from the environment, applied to cfg:
// SDSERVE_CUDA_WGMMA_CONV_BN (64 | 128 | 160 | 256, taken where it divides `tile_cols`), _BM
// (128 | 256), _DSMEM (0 | 1), _SPLITS (>= 1). The caller checks that the result fits its shape.
void apply_wgmma_conv_env(WgmmaConvConfig& cfg, int64_t tile_cols);

// f32 elements of split partials `cfg` needs (0 without a split).
size_t wgmma_conv_workspace(const SplitKConvShape& s, const WgmmaConvConfig& cfg);

// Enqueues the convolution (and with a split the reduction that applies the adds). Pointers
// 16-byte aligned; ops.partial holds wgmma_conv_workspace() floats when cfg.splits > 1. False
// when a tensor map could not be encoded or the device refused the cluster (nothing ran).
bool launch_conv_wgmma(const SplitKConvOperands& ops, DType dtype, const SplitKConvShape& s,
                       const WgmmaConvConfig& cfg, cudaStream_t stream);

// Launches of the input-reuse kernel so far in this process (tests check that a forced
// configuration really ran it).
uint64_t wgmma_conv_reuse_launches();

// The sub-pixel upsample (Backend::conv2d_subpixel_upsample) as one phase convolution: s is
// x [B, H, W, Cin] with cout = 4 C (the stacked phase kernels w_phases [4 C, 2, 2, Cin]), k = 2,
// stride 1, ho = h, wo = w; ops.y is [B, 2H, 2W, C], ops.bias [C] or null, no row / residual. An
// N tile lies inside one phase (C % bn == 0), whose 2x2 taps start at (a - 1, c - 1) (TMA's zero
// fill is the border), and the epilogue writes y at (2i + a, 2j + c): no [B, H+1, W+1, 4 C]
// intermediate and no interleave kernel. No multicast clusters.
bool wgmma_subpixel_supported(const SplitKConvShape& s, DType dtype);
bool wgmma_subpixel_config_ok(const SplitKConvShape& s, const WgmmaConvConfig& cfg);
std::vector<WgmmaConvConfig> wgmma_subpixel_candidates(const SplitKConvShape& s, int sms);
// wgmma_conv_workspace(s, cfg) floats in ops.partial when cfg.splits > 1 without dsmem.
bool launch_conv_wgmma_subpixel(const SplitKConvOperands& ops, DType dtype, const SplitKConvShape& s,
                                const WgmmaConvConfig& cfg, cudaStream_t stream);

}  // namespace sd::cuda
