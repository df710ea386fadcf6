// Our own implicit-GEMM convolution for the small UNet levels (8x8, 16x16 at a few images): few
// output rows and a long reduction, so the reduction is split over many CTAs (split-K) and the
// weights stream at memory speed; bias / row / residual adds are fused into the last pass.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace sd::cuda {

// x [B, H, W, Cin] (NHWC), w [Cout, k, k, Cin] -> y [B, Ho, Wo, Cout]; GEMM view: M = B*Ho*Wo
// rows, N = Cout, K = k*k*Cin.
struct SplitKConvShape {
  int64_t b, h, w, cin, cout;
  int k, stride, padding;
  int64_t ho, wo;
};

// Tile bm x bn (each 64 or 128), the reduction split into `splits` slices (1 = no split), summed
// through distributed shared memory by a cluster of the slices' CTAs (cluster, splits <= 16) or
// as f32 partials in global memory by a second kernel.
struct SplitKConvConfig {
  int bm = 128, bn = 128, splits = 1;
  bool cluster = false;
  std::string describe() const;
};

// f16/bf16, Cin % 64 == 0, Cout % 64 == 0, sizes that fit 32-bit indices.
bool splitk_conv_supported(const SplitKConvShape& s, DType dtype);

// Configurations worth timing for `s` on a device with `sms` SMs, the heuristic's pick first.
std::vector<SplitKConvConfig> splitk_conv_candidates(const SplitKConvShape& s, int sms);

// f32 elements of split partials `cfg` needs (0 without a split).
size_t splitk_conv_workspace(const SplitKConvShape& s, const SplitKConvConfig& cfg);

struct SplitKConvOperands {
  const void* x = nullptr;
  const void* w = nullptr;
  void* y = nullptr;
  const void* bias = nullptr;      // [Cout] or null
  const void* row = nullptr;       // [B, Cout] or null (per image, broadcast over positions)
  const void* residual = nullptr;  // like y, or null
  float* partial = nullptr;        // splitk_conv_workspace() floats when cfg.splits > 1
};

// Enqueues the convolution (and, with a split in global memory, the reduction that applies the
// adds). Pointers 16-byte aligned. False when the device refused the cluster shape (nothing ran).
bool launch_conv_splitk(const SplitKConvOperands& ops, DType dtype, const SplitKConvShape& s,
                        const SplitKConvConfig& cfg, cudaStream_t stream);

}  // namespace sd::cuda
