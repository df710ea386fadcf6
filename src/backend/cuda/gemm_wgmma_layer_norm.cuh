// The layer norm folded into the Hopper GEMM (Backend::layer_norm_linear): row statistics of x taken
// from the A tiles already in shared memory during the main loop, and the epilogue transform
// y = rstd * (acc - mean * colsum[n]) before bias / GEGLU. Split-K slices leave partial statistics.
#pragma once

#include "backend/cuda/gemm_wgmma_epilogue.cuh"

namespace sd::cuda::gemm_wgmma {

// One thread's share of a row's statistics over the K blocks seen so far: sums of x - shift and
// of its square, the shift being the row's first element in this K slice (both threads of a row
// read the same one), which keeps the variance exact when |mean| >> std.
struct LnAcc {
  float shift = 0.f, s1a = 0.f, s1b = 0.f, s2a = 0.f, s2b = 0.f;
};

// Thread `lane` of warp `warp` in a consumer warpgroup reads row r = warp * 16 + lane / 2 of the
// warpgroup's 64 A rows (a_rows: the stage's first such row; rows of 128 bytes, 128-byte swizzled:
// physical 16-byte chunk q holds logical chunk q ^ (r % 8)), the four chunks of half lane % 2, in
// an order rotated by row so a quarter warp's loads hit eight different chunks (no bank
// conflicts). Chunks at or past K (zero-filled by TMA) are skipped. kc: the block's first column.
template <typename T>
__device__ __forceinline__ void ln_accumulate(LnAcc& a, uint32_t a_rows, int warp, int lane, int kc, int k,
                                              bool first) {
  const int r = warp * 16 + lane / 2, half = lane & 1;
  const uint32_t row = a_rows + static_cast<uint32_t>(r) * kRowBytes;
  if (first) {
    const uint32_t v = sm90::ld_shared_u32(row + ((r & 7) << 4));  // logical chunk 0: elements 0, 1
    a.shift = to_f32(reinterpret_cast<const T*>(&v)[0]);
  }
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const int q = half * 4 + ((j + r) & 3);
    if (kc + 8 * (q ^ (r & 7)) >= k) continue;
    const uint4 raw = sm90::ld_shared_v4(row + static_cast<uint32_t>(q) * 16);
    float f[8];
    unpack8<T>(raw, f);
#pragma unroll
    for (int i = 0; i < 8; i += 2) {
      const float d0 = f[i] - a.shift, d1 = f[i + 1] - a.shift;
      a.s1a += d0;
      a.s1b += d1;
      a.s2a = fmaf(d0, d0, a.s2a);
      a.s2b = fmaf(d1, d1, a.s2b);
    }
  }
}

// Shifted sums of the row (both threads of the pair), for a thread of either lane.
__device__ __forceinline__ float2 ln_pair_sums(const LnAcc& a) {
  float s1 = a.s1a + a.s1b, s2 = a.s2a + a.s2b;
  s1 += __shfl_xor_sync(0xffffffffu, s1, 1);
  s2 += __shfl_xor_sync(0xffffffffu, s2, 1);
  return make_float2(s1, s2);
}

// Unsplit: (mean, rstd) of rows g and g + 8 of this warp's 16 (the accumulator fragment's rows),
// from the statistics over all n = K columns.
__device__ __forceinline__ void ln_row_stats(const LnAcc& a, float n, float eps, int lane, float2& lo, float2& hi) {
  const float2 s = ln_pair_sums(a);
  const float m1 = s.x / n;
  const float mean = a.shift + m1;
  const float rstd = rsqrtf(fmaxf(s.y / n - m1 * m1, 0.f) + eps);
  const int g = lane / 4;
  lo = make_float2(__shfl_sync(0xffffffffu, mean, 2 * g), __shfl_sync(0xffffffffu, rstd, 2 * g));
  hi = make_float2(__shfl_sync(0xffffffffu, mean, 2 * g + 16), __shfl_sync(0xffffffffu, rstd, 2 * g + 16));
}

// Split: this slice's (mean, M2, n) of row `row` (n columns of the slice) into stats[slice * m + row],
// written by the even lane of each pair. Only the units of the first N tile call it.
__device__ __forceinline__ void ln_store_slice(const LnAcc& a, float n, int lane, float4* stats, int row, int m) {
  const float2 s = ln_pair_sums(a);
  if ((lane & 1) == 0 && row < m) {
    const float m1 = s.x / n;
    stats[row] = make_float4(a.shift + m1, fmaxf(s.y - s.x * m1, 0.f), n, 0.f);
  }
}

// Chan's combination of the slices' (mean, M2, n) in slice order (deterministic): (mean, rstd).
__device__ __forceinline__ float2 ln_combine_slices(const float4* stats, int m, int row, int splits, float eps) {
  float n = 0.f, mean = 0.f, m2 = 0.f;
  for (int s = 0; s < splits; ++s) {
    const float4 v = __ldcg(stats + int64_t{s} * m + row);
    if (v.z <= 0.f) continue;
    const float nn = n + v.z, delta = v.x - mean;
    mean += delta * (v.z / nn);
    m2 += v.y + delta * delta * (n * v.z / nn);
    n = nn;
  }
  return make_float2(mean, rsqrtf(m2 / fmaxf(n, 1.f) + eps));
}

// acc = rstd * (acc - mean * colsum[col]) for this thread's fragment (rows g: lo, g + 8: hi);
// GEGLU's gate columns read colsum[n + col].
template <int BN, bool GEGLU>
__device__ __forceinline__ void ln_apply(const Params& p, int n0, float (&acc)[BN / 2], float2 lo, float2 hi, int t) {
  constexpr int kOutBN = GEGLU ? BN / 2 : BN, kBlocks = kOutBN / 8;
#pragma unroll
  for (int j = 0; j < BN / 8; ++j) {
    int col = n0 + 8 * (j % kBlocks) + 2 * t;
    const bool ok = col < p.n;
    if (GEGLU && j >= kBlocks) col += p.n;
    const float2 s = ok ? __ldg(reinterpret_cast<const float2*>(p.ln_colsum + col)) : make_float2(0.f, 0.f);
    acc[4 * j + 0] = fmaf(-lo.x, s.x, acc[4 * j + 0]) * lo.y;
    acc[4 * j + 1] = fmaf(-lo.x, s.y, acc[4 * j + 1]) * lo.y;
    acc[4 * j + 2] = fmaf(-hi.x, s.x, acc[4 * j + 2]) * hi.y;
    acc[4 * j + 3] = fmaf(-hi.x, s.y, acc[4 * j + 3]) * hi.y;
  }
}

}  // namespace sd::cuda::gemm_wgmma
