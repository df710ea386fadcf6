// Scaled dot-product attention on the CPU as a fused kernel: per (batch, head, range of
// query rows) a thread packs the head's keys and values once, then for every tile of 4 query
// rows computes the scores, a stable softmax and the weighted sum of values with 8-lane FMA
// micro-kernels. Memory is O(threads * (Lk * D)), never B*H*Lq*Lk, even at Lq = Lk = 4096.
// Rows are read through strides, so attention_cols reads packed QKV / KV projections in place.
#include <cmath>
#include <cstring>
#include <memory>

#include "backend/cpu/cpu_internal.h"
#include "backend/cpu/cpu_simd.h"

namespace sd::cpu {
namespace {

constexpr int64_t kTileRows = 4;   // query rows per micro-kernel call
constexpr int64_t kKeyBlock = 16;  // keys per score micro-kernel step (two 8-lane vectors)

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// kp [ceil(Lk/16)][D][16]: the head's keys, 16 at a time, transposed; missing keys are 0.
void pack_keys(const float* kh, int64_t ld, int64_t Lk, int64_t D, float* kp) {
  const int64_t blocks = (Lk + kKeyBlock - 1) / kKeyBlock;
  for (int64_t jb = 0; jb < blocks; ++jb) {
    float* dst = kp + jb * D * kKeyBlock;
    for (int64_t jj = 0; jj < kKeyBlock; ++jj) {
      const int64_t j = jb * kKeyBlock + jj;
      if (j < Lk) {
        const float* src = kh + j * ld;
        for (int64_t d = 0; d < D; ++d) dst[d * kKeyBlock + jj] = src[d];
      } else {
        for (int64_t d = 0; d < D; ++d) dst[d * kKeyBlock + jj] = 0.f;
      }
    }
  }
}

// Width of the value chunk starting at dimension d0 (16, or 8 for the last one).
int64_t chunk_width(int64_t Dp, int64_t d0) { return Dp - d0 >= 16 ? 16 : 8; }

// vp: the head's values split into chunks of 16 (last maybe 8) dimensions; chunk at d0 is
// [Lk][w] contiguous at vp + Lk*d0. Dimensions >= D (padding up to Dp) are 0.
void pack_values(const float* vh, int64_t ld, int64_t Lk, int64_t D, int64_t Dp, float* vp) {
  for (int64_t d0 = 0; d0 < Dp; d0 += chunk_width(Dp, d0)) {
    const int64_t w = chunk_width(Dp, d0);
    float* dst = vp + Lk * d0;
    for (int64_t j = 0; j < Lk; ++j)
      for (int64_t dd = 0; dd < w; ++dd) dst[j * w + dd] = d0 + dd < D ? vh[j * ld + d0 + dd] : 0.f;
  }
}

// s[r][0, 16*key_blocks) = qs[r] · keys, for 4 rows of pre-scaled queries qs [4][D].
SD_CPU_KERNEL void tile_scores(const float* qs, int64_t D, const float* kp, int64_t key_blocks, float* s,
                               int64_t lds) {
  for (int64_t jb = 0; jb < key_blocks; ++jb) {
    const float* kb = kp + jb * D * kKeyBlock;
    f32x8 a00 = splat8(0.f), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00;
    for (int64_t d = 0; d < D; ++d) {
      const f32x8 k0 = load8(kb + d * kKeyBlock), k1 = load8(kb + d * kKeyBlock + 8);
      const f32x8 q0 = splat8(qs[d]), q1 = splat8(qs[D + d]), q2 = splat8(qs[2 * D + d]), q3 = splat8(qs[3 * D + d]);
      a00 += q0 * k0;
      a01 += q0 * k1;
      a10 += q1 * k0;
      a11 += q1 * k1;
      a20 += q2 * k0;
      a21 += q2 * k1;
      a30 += q3 * k0;
      a31 += q3 * k1;
    }
    float* sj = s + jb * kKeyBlock;
    store8(sj, a00);
    store8(sj + 8, a01);
    store8(sj + lds, a10);
    store8(sj + lds + 8, a11);
    store8(sj + 2 * lds, a20);
    store8(sj + 2 * lds + 8, a21);
    store8(sj + 3 * lds, a30);
    store8(sj + 3 * lds + 8, a31);
  }
}

// o [4][Dp] = s[r][0, keys) · values, chunk by chunk of the packed values.
SD_CPU_KERNEL void tile_values(const float* s, int64_t lds, int64_t keys, const float* vp, int64_t Lk, int64_t Dp,
                               float* o) {
  for (int64_t d0 = 0; d0 < Dp; d0 += chunk_width(Dp, d0)) {
    const float* vc = vp + Lk * d0;
    if (chunk_width(Dp, d0) == 16) {
      f32x8 a00 = splat8(0.f), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00;
      for (int64_t j = 0; j < keys; ++j) {
        const f32x8 v0 = load8(vc + j * 16), v1 = load8(vc + j * 16 + 8);
        const f32x8 p0 = splat8(s[j]), p1 = splat8(s[lds + j]), p2 = splat8(s[2 * lds + j]), p3 = splat8(s[3 * lds + j]);
        a00 += p0 * v0;
        a01 += p0 * v1;
        a10 += p1 * v0;
        a11 += p1 * v1;
        a20 += p2 * v0;
        a21 += p2 * v1;
        a30 += p3 * v0;
        a31 += p3 * v1;
      }
      store8(o + d0, a00);
      store8(o + d0 + 8, a01);
      store8(o + Dp + d0, a10);
      store8(o + Dp + d0 + 8, a11);
      store8(o + 2 * Dp + d0, a20);
      store8(o + 2 * Dp + d0 + 8, a21);
      store8(o + 3 * Dp + d0, a30);
      store8(o + 3 * Dp + d0 + 8, a31);
    } else {
      // Two keys per step into separate accumulators: eight independent FMA chains.
      f32x8 a0 = splat8(0.f), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
      int64_t j = 0;
      for (; j + 2 <= keys; j += 2) {
        const f32x8 v0 = load8(vc + j * 8), v1 = load8(vc + j * 8 + 8);
        a0 += splat8(s[j]) * v0;
        a1 += splat8(s[lds + j]) * v0;
        a2 += splat8(s[2 * lds + j]) * v0;
        a3 += splat8(s[3 * lds + j]) * v0;
        b0 += splat8(s[j + 1]) * v1;
        b1 += splat8(s[lds + j + 1]) * v1;
        b2 += splat8(s[2 * lds + j + 1]) * v1;
        b3 += splat8(s[3 * lds + j + 1]) * v1;
      }
      if (j < keys) {
        const f32x8 v0 = load8(vc + j * 8);
        a0 += splat8(s[j]) * v0;
        a1 += splat8(s[lds + j]) * v0;
        a2 += splat8(s[2 * lds + j]) * v0;
        a3 += splat8(s[3 * lds + j]) * v0;
      }
      store8(o + d0, a0 + b0);
      store8(o + Dp + d0, a1 + b1);
      store8(o + 2 * Dp + d0, a2 + b2);
      store8(o + 3 * Dp + d0, a3 + b3);
    }
  }
}

// One worker's scratch: packed keys and values of the current head, scores of a tile.
struct Scratch {
  std::unique_ptr<float[]> kp, vp, s, qs, o;
  int64_t packed_head = -1;  // b*heads + h whose keys/values are packed, or -1
};

// Strided core: query row i of batch b starts at qp + (b*Lq + i)*q_ld, key / value row j at
// kp / vp + (b*Lk + j)*kv_ld; head h is the D columns from h*D. out [B, Lq, H*D].
void attention_rows(CpuContext& ctx, const float* qp, int64_t q_ld, const float* kp, const float* vp, int64_t kv_ld,
                    int64_t B, int64_t Lq, int64_t Lk, int heads, int64_t D, bool causal, Tensor& out) {
  const int64_t HD = heads * D;
  if (Lk == 0 || Lq == 0 || D == 0) {
    std::fill(out.f32(), out.f32() + out.numel(), 0.f);
    return;
  }
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
  const int64_t Lk_pad = round_up(Lk, kKeyBlock), Dp = round_up(D, 8);
  const int64_t BH = B * heads;

  // Work items: (batch*head, range of query rows); a few per thread for balance, each long
  // enough that packing the head's keys and values is a small cost.
  const int threads = ctx.threads();
  const int64_t rows_per_item =
      std::min(round_up(Lq, kTileRows),
               std::max<int64_t>(64, round_up((BH * Lq + 4 * threads - 1) / (4 * threads), kTileRows)));
  const int64_t items_per_head = (Lq + rows_per_item - 1) / rows_per_item, items = BH * items_per_head;
  std::vector<Scratch> scratch(static_cast<size_t>(threads));  // per worker, allocated on first use
  // Items come in head order, so a worker repacks keys and values only when it moves on to
  // the next head.
  ctx.run(items, [&](int64_t item, int worker) {
    Scratch& w = scratch[static_cast<size_t>(worker)];
    if (!w.kp) {
      w.kp.reset(new float[static_cast<size_t>(Lk_pad * D)]);
      w.vp.reset(new float[static_cast<size_t>(Lk * Dp)]);
      w.s.reset(new float[static_cast<size_t>(kTileRows * Lk_pad)]);
      w.qs.reset(new float[static_cast<size_t>(kTileRows * D)]);
      w.o.reset(new float[static_cast<size_t>(kTileRows * Dp)]);
    }
    const int64_t bh = item / items_per_head, b = bh / heads, h = bh % heads;
    const int64_t row_begin = (item % items_per_head) * rows_per_item;
    const int64_t row_end = std::min(Lq, row_begin + rows_per_item);
    if (w.packed_head != bh) {
      pack_keys(kp + b * Lk * kv_ld + h * D, kv_ld, Lk, D, w.kp.get());
      pack_values(vp + b * Lk * kv_ld + h * D, kv_ld, Lk, D, Dp, w.vp.get());
      w.packed_head = bh;
    }
    for (int64_t i0 = row_begin; i0 < row_end; i0 += kTileRows) {
      const int64_t rows = std::min(kTileRows, row_end - i0);
      // Queries of the tile, pre-scaled; missing rows repeat the last one (results dropped).
      for (int64_t r = 0; r < kTileRows; ++r) {
        const float* src = qp + (b * Lq + i0 + std::min(r, rows - 1)) * q_ld + h * D;
        for (int64_t d = 0; d < D; ++d) w.qs[static_cast<size_t>(r * D + d)] = src[d] * scale;
      }
      // With the causal mask, keys past the tile's last query are never needed.
      const int64_t keys = causal ? std::min(Lk, i0 + rows) : Lk;
      tile_scores(w.qs.get(), D, w.kp.get(), (keys + kKeyBlock - 1) / kKeyBlock, w.s.get(), Lk_pad);
      float row_sums[kTileRows];
      for (int64_t r = 0; r < kTileRows; ++r) {
        const int64_t valid = causal ? std::min(keys, i0 + std::min(r, rows - 1) + 1) : keys;
        exp_rows_inplace(w.s.get() + r * Lk_pad, 1, valid, Lk_pad, 0, false, &row_sums[r]);
        std::fill(w.s.get() + r * Lk_pad + valid, w.s.get() + r * Lk_pad + keys, 0.f);
      }
      tile_values(w.s.get(), Lk_pad, keys, w.vp.get(), Lk, Dp, w.o.get());
      for (int64_t r = 0; r < rows; ++r) {
        const float inv = 1.f / row_sums[r];
        float* dst = out.f32() + (b * Lq + i0 + r) * HD + h * D;
        for (int64_t d = 0; d < D; ++d) dst[d] = w.o[static_cast<size_t>(r * Dp + d)] * inv;
      }
    }
  });
}

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
  attention_rows(ctx, q.f32(), HD, k.f32(), v.f32(), HD, B, Lq, Lk, heads, D, causal, out);
  return out;
}

Tensor attention_cols(CpuContext& ctx, const Tensor& q_src, int64_t q_col, const Tensor& kv_src, int64_t k_col,
                      int64_t v_col, int64_t inner, int heads, bool causal) {
  check_f32(q_src, "attention_cols", "q_src");
  check_f32(kv_src, "attention_cols", "kv_src");
  SD_ASSERT(q_src.ndim() == 3 && kv_src.ndim() == 3 && q_src.dim(0) == kv_src.dim(0) && inner > 0 && heads > 0 &&
                inner % heads == 0 && q_col >= 0 && k_col >= 0 && v_col >= 0 && q_col + inner <= q_src.dim(2) &&
                k_col + inner <= kv_src.dim(2) && v_col + inner <= kv_src.dim(2),
            "attention_cols: q_src " + shape_str(q_src.shape()) + " col " + std::to_string(q_col) + ", kv_src " +
                shape_str(kv_src.shape()) + " cols " + std::to_string(k_col) + "/" + std::to_string(v_col) +
                ", inner " + std::to_string(inner) + ", heads " + std::to_string(heads));
  const int64_t B = q_src.dim(0), Lq = q_src.dim(1), Lk = kv_src.dim(1);
  Tensor out = ctx.alloc_f32({B, Lq, inner});  // [B, Lq, inner]
  attention_rows(ctx, q_src.f32() + q_col, q_src.dim(2), kv_src.f32() + k_col, kv_src.f32() + v_col, kv_src.dim(2), B,
                 Lq, Lk, heads, inner / heads, causal, out);
  return out;
}

}  // namespace sd::cpu
