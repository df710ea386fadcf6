// Device side of the Hopper GEMM (gemm_wgmma.h): a warp-specialized TMA + wgmma main loop (one
// producer warpgroup, two consumer warpgroups of 64 rows) with the bias / residual / GEGLU
// epilogue, or f32 partials per K slice plus the deterministic split-K reduce kernel.
#pragma once

#include <cuda.h>

#include <cstdint>

#include "backend/cuda/cuda_types.cuh"
#include "backend/cuda/wgmma_sm90.cuh"

namespace sd::cuda::gemm_wgmma {

constexpr int kBM = 128;         // rows per CTA: two consumer warpgroups of 64
constexpr int kBK = 64;          // K per stage: one 128-byte swizzle row of halves
constexpr int kThreads = 384;    // producer warpgroup + 2 consumers
constexpr int kGroupM = 8;       // tile raster: 8 M tiles sweep all N tiles before moving on
constexpr int kRowBytes = kBK * 2;

// Pipeline depth per tile width (stages of (128 + bn) x 64 halves: 192 KB of shared memory).
__host__ __device__ constexpr int stages_for(int bn) { return bn == 64 ? 8 : bn == 128 ? 6 : 4; }
__host__ __device__ constexpr int smem_bytes_for(int bn) { return stages_for(bn) * (kBM + bn) * kRowBytes + 1024; }

struct Params {
  int m, n, k;                // n: output columns (GEGLU: w has 2n rows)
  int kblocks;                // ceil(k / 64)
  int kblocks_per_split;
  int m_tiles, n_tiles;       // n_tiles over output columns
  void* y;                    // [m, n] (unsplit)
  const void* bias;           // [n] ([2n] GEGLU) or null
  const void* residual;       // [m, n] or null
  float* partial;             // split: [splits, m, wn] f32, wn = n (2n GEGLU: value cols then gate cols)
};

template <typename T>
__device__ __forceinline__ uint32_t pack_pair(float lo, float hi) {
  uint32_t r;
  if constexpr (std::is_same_v<T, __half>) {
    const __half2 h = __floats2half2_rn(lo, hi);
    r = *reinterpret_cast<const uint32_t*>(&h);
  } else {
    const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    r = *reinterpret_cast<const uint32_t*>(&h);
  }
  return r;
}

// y = x w^T for one bm x bn tile (blockIdx.x: tile, raster of kGroupM M tiles; blockIdx.y: the
// K slice). Shared memory: stages of A (128 rows x 128 B) then of B (bn rows x 128 B), both
// 128-byte swizzled as TMA writes them. GEGLU: the B tile holds w rows [n0, n0 + bn/2) (values)
// then [N + n0, N + n0 + bn/2) (gates), so a thread's value and gate accumulators pair up.
template <typename T, int BN, bool GEGLU, bool SPLIT>
__global__ void __launch_bounds__(kThreads, 1)
    gemm_kernel(const __grid_constant__ CUtensorMap tmap_x, const __grid_constant__ CUtensorMap tmap_w, Params p) {
#if SD_SM90A_COMPILED
  using namespace sm90;
  constexpr int kStages = stages_for(BN);
  constexpr int kOutBN = GEGLU ? BN / 2 : BN;
  constexpr uint32_t kABytes = kBM * kRowBytes, kBBytes = BN * kRowBytes;
  extern __shared__ uint8_t smem_raw[];
  __shared__ __align__(8) uint64_t full_bar[kStages], empty_bar[kStages];
  const uint32_t base = (smem_addr(smem_raw) + 1023u) & ~1023u;
  const uint32_t a_base = base, b_base = base + kStages * kABytes;

  // Tile raster: groups of kGroupM M tiles, M fastest within a group.
  const int per_group = kGroupM * p.n_tiles;
  const int group = blockIdx.x / per_group, in_group = blockIdx.x % per_group;
  const int first_m = group * kGroupM;
  const int group_m = min(p.m_tiles - first_m, kGroupM);
  const int m0 = (first_m + in_group % group_m) * kBM;
  const int n0 = (in_group / group_m) * kOutBN;
  const int kb0 = blockIdx.y * p.kblocks_per_split;
  const int nkb = max(0, min(p.kblocks, kb0 + p.kblocks_per_split) - kb0);

  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      mbarrier_init(smem_addr(&full_bar[s]), 1);
      mbarrier_init(smem_addr(&empty_bar[s]), 2 * 128);
    }
    mbarrier_init_fence();
  }
  __syncthreads();
  const int wg = threadIdx.x / 128;
  if (wg == 0) {
    setmaxnreg_dec<40>();
    if (threadIdx.x == 0) {  // producer
      tma_prefetch_descriptor(&tmap_x);
      tma_prefetch_descriptor(&tmap_w);
      for (int i = 0; i < nkb; ++i) {
        const int s = i % kStages;
        mbarrier_wait(smem_addr(&empty_bar[s]), ((i / kStages) & 1) ^ 1);
        const uint32_t full = smem_addr(&full_bar[s]);
        mbarrier_arrive_expect_tx(full, kABytes + kBBytes);
        const int kc = (kb0 + i) * kBK;
        tma_load_2d(a_base + s * kABytes, &tmap_x, full, kc, m0);
        if constexpr (GEGLU) {
          tma_load_2d(b_base + s * kBBytes, &tmap_w, full, kc, n0);
          tma_load_2d(b_base + s * kBBytes + kBBytes / 2, &tmap_w, full, kc, p.n + n0);
        } else {
          tma_load_2d(b_base + s * kBBytes, &tmap_w, full, kc, n0);
        }
      }
    }
  } else {
    setmaxnreg_inc<232>();
    const int c = wg - 1;                        // consumer: rows m0 + 64 c ..
    const int warp = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32;
    const int g = lane / 4, t = lane % 4;
    float acc[BN / 2];
#pragma unroll
    for (int i = 0; i < BN / 2; ++i) acc[i] = 0.f;
    for (int i = 0; i < nkb; ++i) {
      const int s = i % kStages;
      mbarrier_wait(smem_addr(&full_bar[s]), (i / kStages) & 1);
      const uint64_t da = desc_sw128(a_base + s * kABytes + c * 64 * kRowBytes);
      const uint64_t db = desc_sw128(b_base + s * kBBytes);
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < kBK / 16; ++kk) wgmma_ss<T, BN>(acc, da + 2 * kk, db + 2 * kk, 1);
      wgmma_commit();
      wgmma_wait<1>();  // the previous stage's wgmmas are done: hand it back to the producer
      if (i > 0) mbarrier_arrive(smem_addr(&empty_bar[(i - 1) % kStages]));
    }
    wgmma_wait<0>();
    fence_accumulators(acc);

    const int row0 = m0 + c * 64 + warp * 16 + g;
    if constexpr (SPLIT) {
      const int64_t wn = GEGLU ? 2 * int64_t{p.n} : p.n;
      float* part = p.partial + int64_t{blockIdx.y} * p.m * wn;
#pragma unroll
      for (int j = 0; j < BN / 8; ++j) {
        int col = 8 * (j % (kOutBN / 8)) + 2 * t + n0;
        if (col >= p.n) continue;
        if (GEGLU && j >= kOutBN / 8) col += p.n;
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int row = row0 + 8 * h;
          if (row < p.m)
            *reinterpret_cast<float2*>(part + row * wn + col) = make_float2(acc[4 * j + 2 * h], acc[4 * j + 2 * h + 1]);
        }
      }
    } else {
      const T* bias = static_cast<const T*>(p.bias);
      const T* res = static_cast<const T*>(p.residual);
      T* y = static_cast<T*>(p.y);
#pragma unroll
      for (int j = 0; j < kOutBN / 8; ++j) {
        const int col = n0 + 8 * j + 2 * t;
        if (col >= p.n) continue;
        float b0 = 0.f, b1 = 0.f, bg0 = 0.f, bg1 = 0.f;
        if (bias) {
          b0 = to_f32(bias[col]);
          b1 = to_f32(bias[col + 1]);
          if constexpr (GEGLU) {
            bg0 = to_f32(bias[p.n + col]);
            bg1 = to_f32(bias[p.n + col + 1]);
          }
        }
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int row = row0 + 8 * h;
          if (row >= p.m) continue;
          float v0 = acc[4 * j + 2 * h] + b0, v1 = acc[4 * j + 2 * h + 1] + b1;
          if constexpr (GEGLU) {
            constexpr int kGate = 4 * (kOutBN / 8);
            v0 *= gelu_erf_f(acc[kGate + 4 * j + 2 * h] + bg0);
            v1 *= gelu_erf_f(acc[kGate + 4 * j + 2 * h + 1] + bg1);
          } else if (res) {
            const uint32_t r = *reinterpret_cast<const uint32_t*>(res + int64_t{row} * p.n + col);
            const T* rp = reinterpret_cast<const T*>(&r);
            v0 += to_f32(rp[0]);
            v1 += to_f32(rp[1]);
          }
          *reinterpret_cast<uint32_t*>(y + int64_t{row} * p.n + col) = pack_pair<T>(v0, v1);
        }
      }
    }
  }
#endif
}

// Split-K epilogue: y[m, n] = sum over slices (in order) of the partials, then bias / residual /
// GEGLU as the unsplit kernel applies them. Four outputs per thread (n % 8 == 0).
template <typename T, bool GEGLU>
__global__ void splitk_reduce_kernel(Params p, int splits) {
  const int64_t quads = int64_t{p.m} * (p.n / 4);
  const int64_t wn = GEGLU ? 2 * int64_t{p.n} : p.n;
  const int64_t slice = int64_t{p.m} * wn;
  const T* bias = static_cast<const T*>(p.bias);
  const T* res = static_cast<const T*>(p.residual);
  T* y = static_cast<T*>(p.y);
  for (int64_t q = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; q < quads; q += int64_t{gridDim.x} * blockDim.x) {
    const int64_t row = q / (p.n / 4);
    const int col = static_cast<int>(q % (p.n / 4)) * 4;
    const float* src = p.partial + row * wn + col;
    float4 v = *reinterpret_cast<const float4*>(src), gate{};
    if constexpr (GEGLU) gate = *reinterpret_cast<const float4*>(src + p.n);
    for (int s = 1; s < splits; ++s) {
      const float4 a = *reinterpret_cast<const float4*>(src + s * slice);
      v.x += a.x; v.y += a.y; v.z += a.z; v.w += a.w;
      if constexpr (GEGLU) {
        const float4 b = *reinterpret_cast<const float4*>(src + s * slice + p.n);
        gate.x += b.x; gate.y += b.y; gate.z += b.z; gate.w += b.w;
      }
    }
    float o[4] = {v.x, v.y, v.z, v.w};
    const float gt[4] = {gate.x, gate.y, gate.z, gate.w};
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      if (bias) o[e] += to_f32(bias[col + e]);
      if constexpr (GEGLU) {
        o[e] *= gelu_erf_f(gt[e] + (bias ? to_f32(bias[p.n + col + e]) : 0.f));
      } else if (res) {
        o[e] += to_f32(res[row * p.n + col + e]);
      }
    }
    uint2 out;
    out.x = pack_pair<T>(o[0], o[1]);
    out.y = pack_pair<T>(o[2], o[3]);
    *reinterpret_cast<uint2*>(y + row * p.n + col) = out;
  }
}

}  // namespace sd::cuda::gemm_wgmma
