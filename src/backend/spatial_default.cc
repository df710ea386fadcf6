// Portable default implementations of the spatial ops (pad_hw, crop_hw, interleave_phases2x):
// download to the host, loop, upload. Correct on every backend; a backend overrides them
// when they show up in a profile (the CPU and CUDA backends override all three).
#include <cstring>

#include "backend/backend.h"

namespace sd {

Tensor Backend::pad_hw(const Tensor& x, int top, int bottom, int left, int right) {
  SD_ASSERT(x.ndim() == 4 && top >= 0 && bottom >= 0 && left >= 0 && right >= 0, "pad_hw " + x.describe());
  const Tensor h = download(x);  // [B,H,W,C] f32
  const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), C = x.dim(3);
  const int64_t Ho = H + top + bottom, Wo = W + left + right;
  Tensor out = Tensor::zeros_host({B, Ho, Wo, C}, DType::kF32);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t y = 0; y < H; ++y)
      std::memcpy(out.f32() + ((b * Ho + y + top) * Wo + left) * C, h.f32() + ((b * H + y) * W) * C,
                  static_cast<size_t>(W * C) * 4);
  return upload(out, x.dtype());
}

Tensor Backend::crop_hw(const Tensor& x, int h0, int h, int w0, int w) {
  SD_ASSERT(x.ndim() == 4 && h0 >= 0 && w0 >= 0 && h0 + h <= x.dim(1) && w0 + w <= x.dim(2), "crop_hw " + x.describe());
  const Tensor src = download(x);
  const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), C = x.dim(3);
  Tensor out = Tensor::empty_host({B, h, w, C}, DType::kF32);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t y = 0; y < h; ++y)
      std::memcpy(out.f32() + ((b * h + y) * w) * C, src.f32() + ((b * H + y + h0) * W + w0) * C,
                  static_cast<size_t>(w * C) * 4);
  (void)H;
  return upload(out, x.dtype());
}

Tensor Backend::interleave_phases2x(const Tensor& y4, const Tensor& bias) {
  SD_ASSERT(y4.ndim() == 4 && y4.dim(1) >= 1 && y4.dim(2) >= 1 && y4.dim(3) % 4 == 0,
            "interleave_phases2x: y4 [B, H+1, W+1, 4C], got " + y4.describe());
  const int64_t B = y4.dim(0), H = y4.dim(1) - 1, W = y4.dim(2) - 1, C = y4.dim(3) / 4;
  SD_ASSERT(!bias.defined() || bias.numel() == C, "interleave_phases2x: bias " + bias.describe());
  const Tensor src = download(y4);  // [B, H+1, W+1, 4C] f32
  const Tensor b = bias.defined() ? download(bias) : Tensor();
  Tensor out = Tensor::empty_host({B, 2 * H, 2 * W, C}, DType::kF32);
  for (int64_t n = 0; n < B; ++n)
    for (int64_t y = 0; y < 2 * H; ++y)
      for (int64_t x = 0; x < 2 * W; ++x) {
        const int64_t a = y % 2, c = x % 2;
        const float* in = src.f32() + ((n * (H + 1) + y / 2 + a) * (W + 1) + x / 2 + c) * 4 * C + (2 * a + c) * C;
        float* o = out.f32() + ((n * 2 * H + y) * 2 * W + x) * C;
        for (int64_t ch = 0; ch < C; ++ch) o[ch] = in[ch] + (b.defined() ? b.f32()[ch] : 0.f);
      }
  return upload(out, y4.dtype());
}

}  // namespace sd
