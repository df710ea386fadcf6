// Portable default implementations of the rarely used spatial ops (pad_hw, crop_hw):
// download to the host, loop, upload. Correct on every backend; a backend overrides them
// when they show up in a profile (they run once per VAE encode or odd-sized UNet level).
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

}  // namespace sd
