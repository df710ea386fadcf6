// Layout ops of the CPU backend: nearest 2x upsampling, sub-pixel phase interleaving, padding
// and cropping (NHWC), channel concatenation, embedding lookup and row concatenation. Pure data movement with memcpy of
// contiguous channel runs, split over threads where the tensors are large.
#include <cstring>

#include "backend/cpu/cpu_internal.h"

namespace sd::cpu {

Tensor upsample_nearest2x(CpuContext& ctx, const Tensor& x) {
  check_f32(x, "upsample_nearest2x", "x");
  SD_ASSERT(x.ndim() == 4, "upsample_nearest2x: x must be [B,H,W,C], got " + shape_str(x.shape()));
  const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), C = x.dim(3);
  Tensor y = ctx.alloc_f32({B, 2 * H, 2 * W, C});  // [B, 2H, 2W, C]
  const size_t pixel_bytes = static_cast<size_t>(C) * sizeof(float);
  parallel_chunks(ctx, B * H, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, W * C)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {  // r = b*H + iy
      const float* src = x.f32() + r * W * C;
      float* dst = y.f32() + r * 2 * (2 * W * C);  // output rows 2*iy and 2*iy+1 of sample b
      for (int64_t ix = 0; ix < W; ++ix) {
        std::memcpy(dst + (2 * ix) * C, src + ix * C, pixel_bytes);
        std::memcpy(dst + (2 * ix + 1) * C, src + ix * C, pixel_bytes);
      }
      std::memcpy(dst + 2 * W * C, dst, 2 * W * pixel_bytes);
    }
  });
  return y;
}

Tensor interleave_phases2x(CpuContext& ctx, const Tensor& y4, const Tensor& bias) {
  check_f32(y4, "interleave_phases2x", "y4");
  SD_ASSERT(y4.ndim() == 4 && y4.dim(1) >= 1 && y4.dim(2) >= 1 && y4.dim(3) % 4 == 0,
            "interleave_phases2x: y4 must be [B, H+1, W+1, 4C], got " + shape_str(y4.shape()));
  const int64_t B = y4.dim(0), H = y4.dim(1) - 1, W = y4.dim(2) - 1, C = y4.dim(3) / 4;
  if (bias.defined()) {
    check_f32(bias, "interleave_phases2x", "bias");
    SD_ASSERT(bias.numel() == C, "interleave_phases2x: bias " + shape_str(bias.shape()) + " for " + std::to_string(C) +
                                     " channels");
  }
  Tensor y = ctx.alloc_f32({B, 2 * H, 2 * W, C});  // [B, 2H, 2W, C]
  const float* bv = bias.defined() ? bias.f32() : nullptr;
  parallel_chunks(ctx, B * 2 * H, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, 2 * W * C)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {  // r = b*2H + oy
      const int64_t b = r / (2 * H), oy = r % (2 * H), a = oy % 2;
      const float* row = y4.f32() + (b * (H + 1) + oy / 2 + a) * (W + 1) * 4 * C;  // [W+1, 4C]
      float* dst = y.f32() + r * 2 * W * C;
      for (int64_t ox = 0; ox < 2 * W; ++ox) {
        const int64_t c = ox % 2;
        const float* src = row + (ox / 2 + c) * 4 * C + (2 * a + c) * C;
        float* o = dst + ox * C;
        if (bv) {
          for (int64_t ch = 0; ch < C; ++ch) o[ch] = src[ch] + bv[ch];
        } else {
          std::memcpy(o, src, static_cast<size_t>(C) * sizeof(float));
        }
      }
    }
  });
  return y;
}

Tensor concat_channels(CpuContext& ctx, const Tensor& a, const Tensor& b) {
  check_f32(a, "concat_channels", "a");
  check_f32(b, "concat_channels", "b");
  bool same_lead = a.ndim() == b.ndim() && a.ndim() >= 1;
  for (int i = 0; same_lead && i + 1 < a.ndim(); ++i) same_lead = a.dim(i) == b.dim(i);
  SD_ASSERT(same_lead, "concat_channels: " + shape_str(a.shape()) + " and " + shape_str(b.shape()) +
                           " differ outside the last dimension");
  const int64_t Ca = a.dim(-1), Cb = b.dim(-1), C = Ca + Cb;
  const int64_t rows = Ca ? a.numel() / Ca : (Cb ? b.numel() / Cb : 0);
  Shape out_shape = a.shape();
  out_shape.back() = C;
  Tensor y = ctx.alloc_f32(out_shape);
  parallel_chunks(ctx, rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, C)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      std::memcpy(y.f32() + r * C, a.f32() + r * Ca, static_cast<size_t>(Ca) * sizeof(float));
      std::memcpy(y.f32() + r * C + Ca, b.f32() + r * Cb, static_cast<size_t>(Cb) * sizeof(float));
    }
  });
  return y;
}

Tensor embedding(CpuContext& ctx, const Tensor& ids, const Tensor& table) {
  SD_ASSERT(ids.defined() && ids.dtype() == DType::kI32, "embedding: ids must be i32, got " + ids.describe());
  check_f32(table, "embedding", "table");
  SD_ASSERT(table.ndim() == 2, "embedding: table must be [V, D], got " + shape_str(table.shape()));
  const int64_t V = table.dim(0), D = table.dim(1);
  Shape out_shape = ids.shape();
  out_shape.push_back(D);
  Tensor y = ctx.alloc_f32(out_shape);  // [..., D]
  const int32_t* id = ids.i32();
  for (int64_t i = 0; i < ids.numel(); ++i) {
    SD_ASSERT(id[i] >= 0 && id[i] < V, "embedding: id " + std::to_string(id[i]) + " at " + std::to_string(i) +
                                           " outside the table of " + std::to_string(V) + " rows");
    std::memcpy(y.f32() + i * D, table.f32() + id[i] * D, static_cast<size_t>(D) * sizeof(float));
  }
  return y;
}

Tensor concat_rows(CpuContext& ctx, const std::vector<Tensor>& parts) {
  SD_ASSERT(!parts.empty(), "concat_rows: no parts");
  Shape out_shape = parts.front().shape();
  SD_ASSERT(!out_shape.empty(), "concat_rows: parts need a row dimension");
  out_shape[0] = 0;
  for (const Tensor& p : parts) {
    SD_ASSERT(p.defined() && p.device().is_cpu() && p.dtype() == parts.front().dtype(),
              "concat_rows: part " + p.describe() + " vs " + parts.front().describe());
    bool same_tail = p.ndim() == parts.front().ndim();
    for (int i = 1; same_tail && i < p.ndim(); ++i) same_tail = p.dim(i) == parts.front().dim(i);
    SD_ASSERT(same_tail, "concat_rows: part " + shape_str(p.shape()) + " vs " + shape_str(parts.front().shape()));
    out_shape[0] += p.dim(0);
  }
  Tensor y = ctx.alloc(out_shape, parts.front().dtype());
  char* dst = static_cast<char*>(y.raw());
  for (const Tensor& p : parts) {
    std::memcpy(dst, p.raw(), p.nbytes());
    dst += p.nbytes();
  }
  return y;
}

Tensor pad_hw(CpuContext& ctx, const Tensor& x, int top, int bottom, int left, int right) {
  check_f32(x, "pad_hw", "x");
  SD_ASSERT(x.ndim() == 4 && top >= 0 && bottom >= 0 && left >= 0 && right >= 0,
            "pad_hw: x " + shape_str(x.shape()) + " pads " + std::to_string(top) + "," + std::to_string(bottom) + "," +
                std::to_string(left) + "," + std::to_string(right));
  const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), C = x.dim(3);
  const int64_t Ho = H + top + bottom, Wo = W + left + right;
  Tensor y = ctx.alloc_f32({B, Ho, Wo, C});  // [B, Ho, Wo, C]
  parallel_chunks(ctx, B * Ho, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, Wo * C)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {  // r = b*Ho + oy
      float* dst = y.f32() + r * Wo * C;
      const int64_t b = r / Ho, iy = r % Ho - top;
      if (iy < 0 || iy >= H) {
        std::memset(dst, 0, static_cast<size_t>(Wo * C) * sizeof(float));
        continue;
      }
      std::memset(dst, 0, static_cast<size_t>(left * C) * sizeof(float));
      std::memcpy(dst + left * C, x.f32() + (b * H + iy) * W * C, static_cast<size_t>(W * C) * sizeof(float));
      std::memset(dst + (left + W) * C, 0, static_cast<size_t>(right * C) * sizeof(float));
    }
  });
  return y;
}

Tensor crop_hw(CpuContext& ctx, const Tensor& x, int h0, int h, int w0, int w) {
  check_f32(x, "crop_hw", "x");
  SD_ASSERT(x.ndim() == 4 && h0 >= 0 && w0 >= 0 && h >= 0 && w >= 0 && h0 + h <= x.dim(1) && w0 + w <= x.dim(2),
            "crop_hw: x " + shape_str(x.shape()) + " window rows " + std::to_string(h0) + "+" + std::to_string(h) +
                " cols " + std::to_string(w0) + "+" + std::to_string(w));
  const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), C = x.dim(3);
  Tensor y = ctx.alloc_f32({B, h, w, C});  // [B, h, w, C]
  parallel_chunks(ctx, B * h, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, w * C)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {  // r = b*h + oy
      const int64_t b = r / h, iy = h0 + r % h;
      std::memcpy(y.f32() + r * w * C, x.f32() + ((b * H + iy) * W + w0) * C, static_cast<size_t>(w * C) * sizeof(float));
    }
  });
  return y;
}

}  // namespace sd::cpu
