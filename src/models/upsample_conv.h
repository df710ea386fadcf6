// UpsampleConv: diffusers' Upsample2D (nearest 2x upsample, then a 3x3 convolution with padding
// 1) computed as a sub-pixel convolution: each of the four output phases is a 2x2 convolution of
// the small image, so the layer does 4/9 of the FLOPs and never materialises the upsampled input.
#pragma once

#include <string>

#include "backend/backend.h"
#include "models/layers.h"
#include "models/loader.h"

namespace sd {

// The four phases' 2x2 kernels of a 3x3 kernel applied after a nearest 2x upsample:
// w [out, in, 3, 3] (host, any float dtype, as stored) -> f32 host [4*out, 2, 2, in] (the
// backends' NHWC kernel layout), rows of phase p = 2a + c (output row parity a, column parity c)
// at [p*out, (p+1)*out). Along each axis the
// taps of parity 0 are {w0} and {w1 + w2} (small-image rows i-1, i), of parity 1 {w0 + w1} and
// {w2} (rows i, i+1); sums in f64, rounded once.
Tensor subpixel_phase_weights(const Tensor& w_oihw);

// Whether models load sub-pixel weights: on unless SDSERVE_SUBPIXEL_UPSAMPLE=0 (read per call;
// the A/B switch for benchmarks).
bool subpixel_upsample_enabled();

struct UpsampleConv {
  Conv2d conv;      // the stored 3x3 conv [out, 3, 3, in]: kept where odd sizes may occur, or when off
  Tensor w_phases;  // [4*out, 2, 2, in] the four phases' kernels; undefined when off
  Tensor bias;      // [out]
  // keep_3x3: also keep the 3x3 weights, for targets of odd size (2H-1: the UNet's skip sizes
  // when the latent size is not a multiple of 2^levels).
  void load(ModelLoader& l, const std::string& prefix, int64_t channels, bool keep_3x3);
  // x [B, H, W, C] -> [B, out_h, out_w, out]; out_h in {2H, 2H-1}, out_w in {2W, 2W-1} (nearest
  // resize to that size, then the convolution).
  Tensor operator()(Backend& be, const Tensor& x, int64_t out_h, int64_t out_w) const;
};

}  // namespace sd
