// Scaled dot-product attention on the CPU: per (batch, head) and per block of query rows,
// S = Q K^T / sqrt(D) and O = softmax(S) V through sgemm on strided head views, so the
// score buffer is at most [block, Lk] (never B*H*Lq*Lk) even at Lq = Lk = 4096.
#include <cmath>
#include <memory>

#include "backend/cpu/cpu_internal.h"

namespace sd::cpu {
namespace {

// Score-block budget in floats: keeps S in cache while the GEMMs stay large.
constexpr int64_t kScoreBudgetFloats = int64_t{1} << 20;  // 4 MiB

}  // namespace

Tensor attention(CpuContext& ctx, const Tensor& q, const Tensor& k, const Tensor& v, int heads, bool causal) {
  check_f32(q, "attention", "q");
  check_f32(k, "attention", "k");
  check_f32(v, "attention", "v");
  SD_ASSERT(q.ndim() == 3 && k.ndim() == 3 && v.shape() == k.shape() && q.dim(0) == k.dim(0) && q.dim(2) == k.dim(2),
            "attention: q " + shape_str(q.shape()) + ", k " + shape_str(k.shape()) + ", v " + shape_str(v.shape()) +
                " (want [B,Lq,H*D], [B,Lk,H*D], [B,Lk,H*D])");
  SD_ASSERT(heads > 0 && q.dim(2) % heads == 0,
            "attention: " + std::to_string(q.dim(2)) + " features not divisible by " + std::to_string(heads) + " heads");
  const int64_t B = q.dim(0), Lq = q.dim(1), Lk = k.dim(1), HD = q.dim(2), D = HD / heads;
  Tensor out = ctx.alloc_f32(q.shape());  // [B, Lq, H*D]
  if (Lk == 0) {
    std::fill(out.f32(), out.f32() + out.numel(), 0.f);
    return out;
  }
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
  const int64_t block = std::clamp<int64_t>(kScoreBudgetFloats / Lk, 1, std::max<int64_t>(Lq, 1));
  std::unique_ptr<float[]> scores(new float[static_cast<size_t>(block * Lk)]);  // [block, Lk]
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < heads; ++h) {
      // Head views: rows of H*D floats, this head's D columns at offset h*D.
      const float* qh = q.f32() + b * Lq * HD + h * D;
      const float* kh = k.f32() + b * Lk * HD + h * D;
      const float* vh = v.f32() + b * Lk * HD + h * D;
      float* oh = out.f32() + b * Lq * HD + h * D;
      for (int64_t i0 = 0; i0 < Lq; i0 += block) {
        const int64_t rows = std::min(block, Lq - i0);
        // With the causal mask, keys past the block's last query are never needed.
        const int64_t keys = causal ? std::min(Lk, i0 + rows) : Lk;
        gemm_nt(rows, keys, D, scale, qh + i0 * HD, HD, kh, HD, 0.f, scores.get(), keys);  // S [rows, keys]
        softmax_rows_inplace(ctx, scores.get(), rows, keys, keys, i0, causal);
        gemm_nn(rows, D, keys, 1.f, scores.get(), keys, vh, HD, 0.f, oh + i0 * HD, HD);  // O [rows, D]
      }
    }
  }
  return out;
}

}  // namespace sd::cpu
