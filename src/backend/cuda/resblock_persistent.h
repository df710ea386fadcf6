// A whole UNet ResNet block at the small levels (<= 4 position tiles of 128, <= 288 positions: the
// 8x8 level of 1-2 guided images, 8x12 / 10x10 / 12x12 of one) as one persistent cooperative kernel (sm_90a):
// group norms, both 3x3 convolutions and the shortcut between grid-wide barriers, weights by TMA.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "tensor/tensor.h"

namespace sd::cuda {

// The block in its stacked form (ResnetBlock::forward_stacked), all NHWC, dtype f16 or bf16:
//   in  = x [B, H, W, ca] or [x | skip] (skip [B, H, W, cb], channels side by side)
//   h   = conv1(silu(gn1(in))) + temb[b, temb_col + c]        (conv1 without bias: it is in temb)
//   y   = conv2(silu(gn2(h))) + b2 + (shortcut(in) + bs  or  in)
struct ResblockShape {
  int64_t b = 0, h = 0, w = 0, ca = 0, cb = 0, cout = 0;
  int groups = 32;
  bool has_shortcut = false;  // required when ca + cb != cout
};

struct ResblockOperands {
  const void* x = nullptr;     // [B, H, W, ca]
  const void* skip = nullptr;  // [B, H, W, cb] or null (cb = 0)
  const void* temb = nullptr;  // [B, temb_stride]; this block's window starts at temb_col
  int64_t temb_stride = 0, temb_col = 0;
  const void *gamma1 = nullptr, *beta1 = nullptr;  // [ca + cb]
  const void* w1 = nullptr;                        // [cout, 3, 3, ca + cb]
  const void *gamma2 = nullptr, *beta2 = nullptr;  // [cout]
  const void* w2 = nullptr;                        // [cout, 3, 3, cout]
  const void* b2 = nullptr;                        // [cout]
  const void* ws = nullptr;                        // [cout, ca + cb] (shortcut) or null
  const void* bs = nullptr;                        // [cout] or null
  float eps = 1e-5f;
  void* y = nullptr;           // [B, H, W, cout]
  void* xn = nullptr;          // scratch [B, H, W, ca + cb]: silu(gn1(in))
  void* hn = nullptr;          // scratch [B, H, W, cout]: silu(gn2(h))
  float* partial = nullptr;    // scratch: resblock_partial_floats()
  unsigned* barrier = nullptr;  // 64 words, zero before the first launch (the kernel leaves them zero)
  // Diagnostics (tests): null, or grid x 10 u64 that get each CTA's globaltimer (ns) at kernel
  // start, gn1 done, barrier, conv1 done (partials stored), barrier, gn2 done, barrier, conv2
  // done, barrier, end.
  unsigned long long* trace = nullptr;
};

// Whether the kernel takes this shape and dtype (reasons: position tiles of <= 128 positions — whole
// images, or bands of rows of images over 128 — at most 4; by default at most 288 positions in all,
// SDSERVE_CUDA_RESBLOCK_POSITIONS); channels multiples of 64 / 128, group widths
// multiples of 4 that fit the per-thread registers) and whether `device` runs it (compute capability 9.0, TMA, a cooperative
// grid of one CTA per multiprocessor).
bool resblock_persistent_supported(const ResblockShape& s, DType dtype);
bool resblock_persistent_device_ok(int device);

// CTAs of the kernel's grid on `device` (one per multiprocessor; 0 where it does not run).
int resblock_grid(int device);

// f32 scratch the split reductions need (every CTA's 128 x 128 partial tile).
size_t resblock_partial_floats(int device);

// Enqueues the kernel; false when a tensor map could not be encoded or the cooperative launch was
// refused (nothing ran).
bool launch_resblock_persistent(const ResblockOperands& ops, DType dtype, const ResblockShape& s, int device,
                                cudaStream_t stream);

// Launches so far in this process (tests check that the kernel, not the fallback, ran).
uint64_t resblock_persistent_launches();

}  // namespace sd::cuda
