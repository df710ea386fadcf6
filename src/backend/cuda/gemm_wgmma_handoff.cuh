// The hand-off schedule of the Hopper GEMM (gemm_wgmma.h, WgmmaGemmConfig::handoff): the two MMA
// warpgroups of a cooperative 128-row tile write their accumulators (as T) to shared memory and go
// straight on to the next tile; the producer warpgroup's three other warps run the epilogue.
#pragma once

#include "backend/cuda/gemm_wgmma_epilogue.cuh"

namespace sd::cuda::gemm_wgmma {

constexpr int kHandoffThreads = 384;  // producer warp + 3 epilogue warps, two MMA warpgroups
constexpr int kEpilogueThreads = 96;

// Accumulator staging per MMA warpgroup: [64 rows][bn] T, the 16-byte chunk j of row r at j ^ (r % 8)
// (the fragment writes and the epilogue's 16-byte reads are free of bank conflicts).
__host__ __device__ constexpr int handoff_staging_bytes(int bn) { return 2 * 64 * bn * 2; }
__host__ __device__ constexpr int handoff_stages(int bn) {
  const int s = (227 * 1024 - 3072 - handoff_staging_bytes(bn)) / ((128 + bn) * kRowBytes);
  return s > 6 ? 6 : s;
}
__host__ __device__ constexpr int handoff_smem_bytes(int bn) {
  return handoff_stages(bn) * (128 + bn) * kRowBytes + handoff_staging_bytes(bn) + 1024;
}

// Persistent: CTA b takes units b, b + gridDim.x, ... (unsplit 128 x bn tiles, unit_at's raster).
// Warp 0: one producer thread (w and x K blocks through the stage ring, as gemm_kernel). Warps 1-3
// (the epilogue, 48 registers): per tile and half, 16-byte chunks of 8 outputs: bias, then GEGLU
// (value chunk times gelu of the gate chunk) or the residual, stored as 16-byte vectors.
// Warpgroups 1, 2 (232 registers; a 512-thread block would leave wgmma n256 128): the main loop of
// rows 64 c.. of each tile, then (once the epilogue has read their previous tile) the
// accumulators into their staging half.
template <typename T, int BN, bool GEGLU>
__global__ void __launch_bounds__(kHandoffThreads, 1)
    gemm_handoff_kernel(const __grid_constant__ CUtensorMap tmap_x, const __grid_constant__ CUtensorMap tmap_w,
                        Params p, int units) {
#if SD_SM90A_COMPILED
  using namespace sm90;
  constexpr int kOutBN = GEGLU ? BN / 2 : BN;
  constexpr int kStages = handoff_stages(BN);
  constexpr uint32_t kABytes = 128 * kRowBytes, kBBytes = BN * kRowBytes;
  constexpr uint32_t kRowStaging = BN * 2, kHalfStaging = 64 * kRowStaging;
  static_assert(kStages >= 2, "hand-off: at least two stages");
  extern __shared__ uint8_t smem_raw[];
  __shared__ __align__(8) uint64_t full_bar[kStages], empty_bar[kStages], acc_full[2], acc_empty[2];
  const uint32_t base = (smem_addr(smem_raw) + 1023u) & ~1023u;
  const uint32_t a_base = base, b_base = base + kStages * kABytes;
  const uint32_t staging = b_base + kStages * kBBytes;
  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      mbarrier_init(smem_addr(&full_bar[s]), 1);
      mbarrier_init(smem_addr(&empty_bar[s]), 2 * 128);
    }
    for (int c = 0; c < 2; ++c) {
      mbarrier_init(smem_addr(&acc_full[c]), 128);
      mbarrier_init(smem_addr(&acc_empty[c]), kEpilogueThreads);
    }
    mbarrier_init_fence();
  }
  __syncthreads();
  const int wg = threadIdx.x / 128;
  if (wg == 0) setmaxnreg_dec<48>();
  if (threadIdx.x < 32) {
    if (threadIdx.x != 0) return;
    tma_prefetch_descriptor(&tmap_x);
    tma_prefetch_descriptor(&tmap_w);
    pdl_wait();
    pdl_trigger();
    int it = 0;  // K blocks issued so far (stage it % kStages, round it / kStages)
    for (int u = blockIdx.x; u < units; u += gridDim.x) {
      const Unit w = unit_at<128, kOutBN>(p, u, 1);
      for (int i = 0; i < w.nkb; ++i, ++it) {
        const int s = it % kStages;
        const uint32_t full = smem_addr(&full_bar[s]);
        const int kc = i * kBK;
        mbarrier_wait(smem_addr(&empty_bar[s]), ((it / kStages) & 1) ^ 1);
        mbarrier_arrive_expect_tx(full, kABytes + kBBytes);
        if constexpr (GEGLU) {  // value rows [n0, n0 + bn/2), then gate rows [N + n0, ...)
          tma_load_2d(b_base + s * kBBytes, &tmap_w, full, kc, w.n0);
          tma_load_2d(b_base + s * kBBytes + kBBytes / 2, &tmap_w, full, kc, p.n + w.n0);
        } else {
          tma_load_2d(b_base + s * kBBytes, &tmap_w, full, kc, w.n0);
        }
        tma_load_2d(a_base + s * kABytes, &tmap_x, full, kc, w.m0);
      }
    }
  } else if (wg >= 1) {
    setmaxnreg_inc<232>();
    pdl_wait();
    pdl_trigger();
    const int c = wg - 1, row_off = c * 64;
    const int warp = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const uint32_t stg = staging + c * kHalfStaging;
    int it = 0, local = 0;
    for (int u = blockIdx.x; u < units; u += gridDim.x, ++local) {
      const Unit w = unit_at<128, kOutBN>(p, u, 1);
      float acc[BN / 2];
#pragma unroll
      for (int i = 0; i < BN / 2; ++i) acc[i] = 0.f;
      for (int i = 0; i < w.nkb; ++i, ++it) {
        const int s = it % kStages;
        mbarrier_wait(smem_addr(&full_bar[s]), (it / kStages) & 1);
        const uint64_t da = desc_sw128(a_base + s * kABytes + row_off * kRowBytes);
        const uint64_t db = desc_sw128(b_base + s * kBBytes);
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < kBK / 16; ++kk) wgmma_ss<T, BN>(acc, da + 2 * kk, db + 2 * kk, 1);
        wgmma_commit();
        wgmma_wait<1>();  // the previous stage's wgmmas are done: hand it back to the producer
        if (i > 0) mbarrier_arrive(smem_addr(&empty_bar[(it - 1) % kStages]));
      }
      wgmma_wait<0>();
      fence_accumulators(acc);
      if (w.nkb > 0) mbarrier_arrive(smem_addr(&empty_bar[(it - 1) % kStages]));
      mbarrier_wait(smem_addr(&acc_empty[c]), (local & 1) ^ 1);  // the epilogue has read the last tile
#pragma unroll
      for (int j = 0; j < BN / 8; ++j) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int r = warp * 16 + g + 8 * h;
          st_shared_u32(stg + r * kRowStaging + ((j ^ (r & 7)) * 16) + 4 * t,
                        pack_pair<T>(acc[4 * j + 2 * h], acc[4 * j + 2 * h + 1]));
        }
      }
      mbarrier_arrive(smem_addr(&acc_full[c]));
    }
  } else {
    pdl_wait();
    pdl_trigger();
    const int et = threadIdx.x - 32;
    constexpr int kChunks = kOutBN / 8;  // output chunks of 8 columns per row
    const T* bias = static_cast<const T*>(p.bias);
    const T* res = static_cast<const T*>(p.residual);
    T* y = static_cast<T*>(p.y);
    int local = 0;
    for (int u = blockIdx.x; u < units; u += gridDim.x, ++local) {
      const Unit w = unit_at<128, kOutBN>(p, u, 1);
      for (int c = 0; c < 2; ++c) {
        const uint32_t stg = staging + c * kHalfStaging;
        mbarrier_wait(smem_addr(&acc_full[c]), local & 1);
        for (int q = et; q < 64 * kChunks; q += kEpilogueThreads) {
          const int r = q / kChunks, oc = q % kChunks;
          const int64_t row = int64_t{w.m0} + c * 64 + r;
          const int col = w.n0 + oc * 8;
          float v[8];
          unpack8<T>(ld_shared_v4(stg + r * kRowStaging + ((oc ^ (r & 7)) * 16)), v);
          float gate[8];
          if constexpr (GEGLU) unpack8<T>(ld_shared_v4(stg + r * kRowStaging + (((kChunks + oc) ^ (r & 7)) * 16)), gate);
          if (row >= p.m || col >= p.n) continue;
          if (bias) {
            float b[8];
            unpack8<T>(__ldg(reinterpret_cast<const uint4*>(bias + col)), b);
#pragma unroll
            for (int i = 0; i < 8; ++i) v[i] += b[i];
            if constexpr (GEGLU) {
              unpack8<T>(__ldg(reinterpret_cast<const uint4*>(bias + p.n + col)), b);
#pragma unroll
              for (int i = 0; i < 8; ++i) gate[i] += b[i];
            }
          }
          if constexpr (GEGLU) {
#pragma unroll
            for (int i = 0; i < 8; ++i) v[i] *= gelu_erf_f(gate[i]);
          } else if (res) {
            float rv[8];
            unpack8<T>(__ldg(reinterpret_cast<const uint4*>(res + row * p.n + col)), rv);
#pragma unroll
            for (int i = 0; i < 8; ++i) v[i] += rv[i];
          }
          *reinterpret_cast<uint4*>(y + row * p.n + col) = pack8<T>(v);
        }
        mbarrier_arrive(smem_addr(&acc_empty[c]));
      }
    }
  }
#endif
}

}  // namespace sd::cuda::gemm_wgmma
