// Scaled dot-product attention on the CPU: work items are (batch, head, block of query
// rows); each thread computes S = Q K^T / sqrt(D), a stable softmax and O = S V for its item
// with single-threaded sgemm on strided head views, in its own [block, Lk] score buffer, so
// memory stays O(threads * block * Lk) (never B*H*Lq*Lk) even at Lq = Lk = 4096.
#include <cmath>
#include <memory>

#include "backend/cpu/cpu_internal.h"

namespace sd::cpu {
namespace {

// Score-block budget per thread in floats: keeps S in cache while the GEMMs stay large.
constexpr int64_t kScoreBudgetFloats = int64_t{1} << 20;  // 4 MiB
constexpr int64_t kMaxBlock = 1024;                         // query rows per item

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
  if (Lk == 0 || Lq == 0) {
    std::fill(out.f32(), out.f32() + out.numel(), 0.f);
    return out;
  }
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
  const int threads = ctx.threads();
  int64_t block = std::clamp<int64_t>(kScoreBudgetFloats / Lk, 16, kMaxBlock);
  // Enough items to keep every thread busy when there are few heads.
  block = std::min(block, std::max<int64_t>(16, (B * heads * Lq + threads - 1) / threads / (B * heads)));
  block = std::min(block, Lq);
  const int64_t blocks_per_head = (Lq + block - 1) / block, items = B * heads * blocks_per_head;
  const int workers = static_cast<int>(std::min<int64_t>(threads, items));
  const size_t score_floats = static_cast<size_t>(block * Lk);
  std::unique_ptr<float[]> scores(new float[score_floats * static_cast<size_t>(workers)]);  // [workers][block, Lk]
#pragma omp parallel for num_threads(workers) schedule(dynamic, 1) if (workers > 1)
  for (int64_t item = 0; item < items; ++item) {
    const int64_t bh = item / blocks_per_head, b = bh / heads, h = bh % heads;
    const int64_t i0 = (item % blocks_per_head) * block, rows = std::min(block, Lq - i0);
    // Head views: rows of H*D floats, this head's D columns at offset h*D.
    const float* qh = q.f32() + (b * Lq + i0) * HD + h * D;
    const float* kh = k.f32() + b * Lk * HD + h * D;
    const float* vh = v.f32() + b * Lk * HD + h * D;
    float* oh = out.f32() + (b * Lq + i0) * HD + h * D;
    float* s = scores.get() + score_floats * static_cast<size_t>(omp_get_thread_num());
    // With the causal mask, keys past the block's last query are never needed.
    const int64_t keys = causal ? std::min(Lk, i0 + rows) : Lk;
    gemm_nt_serial(rows, keys, D, scale, qh, HD, kh, HD, 0.f, s, keys);  // S [rows, keys]
    float row_sums[kMaxBlock];
    exp_rows_inplace(s, rows, keys, keys, i0, causal, row_sums);  // softmax numerators
    gemm_nn_serial(rows, D, keys, 1.f, s, keys, vh, HD, 0.f, oh, HD);  // O [rows, D]
    for (int64_t r = 0; r < rows; ++r) {  // normalise the small output instead of S
      const float inv = 1.f / row_sums[r];
      for (int64_t d = 0; d < D; ++d) oh[r * HD + d] *= inv;
    }
  }
  return out;
}

}  // namespace sd::cpu
