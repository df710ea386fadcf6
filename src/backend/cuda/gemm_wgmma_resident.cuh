// The w-resident schedule of the Hopper GEMM (gemm_wgmma.h, WgmmaGemmConfig::resident): a CTA owns
// one N tile, keeps every K block of its w rows in shared memory (loaded once), and streams the
// 128-row x tiles of its share of M through a ring, so a tile moves only x from L2 (short K).
#pragma once

#include "backend/cuda/gemm_wgmma_epilogue.cuh"

namespace sd::cuda::gemm_wgmma {

constexpr int kResidentStages = 4;                     // x ring slots (a constant: cheap slot arithmetic)
constexpr uint32_t kResidentABytes = 128 * kRowBytes;  // one K block of 128 x rows: 16 KB

__host__ __device__ constexpr int64_t resident_b_bytes(int64_t kblocks, int bn) { return kblocks * bn * kRowBytes; }
// Whether w's K blocks for one tile fit beside the ring (K <= 320 at bn 256, <= 640 at bn 128).
__host__ __device__ constexpr bool resident_fits(int64_t kblocks, int bn) {
  return kblocks >= 1 && resident_b_bytes(kblocks, bn) + kResidentStages * kResidentABytes <= int64_t{225} * 1024;
}
__host__ __device__ constexpr int resident_smem_bytes(int64_t kblocks, int bn) {
  return static_cast<int>(resident_b_bytes(kblocks, bn) + kResidentStages * kResidentABytes + 1024);
}

// Grid n_tiles x ctas_per_n: CTA b takes N tile b % n_tiles and the M tiles [q m_tiles / ctas_per_n,
// (q + 1) m_tiles / ctas_per_n) of q = b / n_tiles, so the CTAs of one M range (adjacent blocks)
// read the same x tiles at about the same time (L2 hits). Producer: one thread, w first (it does
// not come from the previous kernel), then x K blocks through the ring. Consumers: two
// warpgroups of 64 rows, the 4-byte-pair epilogue (bias / residual / GEGLU) of store_unit.
template <typename T, int BN, bool GEGLU>
__global__ void __launch_bounds__(kThreads, 1)
    gemm_resident_kernel(const __grid_constant__ CUtensorMap tmap_x, const __grid_constant__ CUtensorMap tmap_w,
                         Params p, int ctas_per_n) {
#if SD_SM90A_COMPILED
  using namespace sm90;
  constexpr int kOutBN = GEGLU ? BN / 2 : BN;
  constexpr uint32_t kBBytes = BN * kRowBytes;  // one K block of the tile's w rows
  extern __shared__ uint8_t smem_raw[];
  constexpr int stages = kResidentStages;
  __shared__ __align__(8) uint64_t full_bar[stages], empty_bar[stages], w_bar;
  const uint32_t base = (smem_addr(smem_raw) + 1023u) & ~1023u;
  const uint32_t b_base = base, a_base = base + p.kblocks * kBBytes;  // both 1024-aligned
  const int n_tile = static_cast<int>(blockIdx.x) % p.n_tiles, part = static_cast<int>(blockIdx.x) / p.n_tiles;
  const int n0 = n_tile * kOutBN;
  const int mt_begin = static_cast<int>(int64_t{part} * p.m_tiles / ctas_per_n);
  const int mt_end = static_cast<int>(int64_t{part + 1} * p.m_tiles / ctas_per_n);
  if (threadIdx.x == 0) {
    for (int s = 0; s < stages; ++s) {
      mbarrier_init(smem_addr(&full_bar[s]), 1);
      mbarrier_init(smem_addr(&empty_bar[s]), 2 * 128);
    }
    mbarrier_init(smem_addr(&w_bar), 1);
    mbarrier_init_fence();
  }
  __syncthreads();
  const int wg = threadIdx.x / 128;
  if (wg == 0) {
    setmaxnreg_dec<40>();
    if (threadIdx.x == 0) {  // producer
      tma_prefetch_descriptor(&tmap_x);
      tma_prefetch_descriptor(&tmap_w);
      const uint32_t wb = smem_addr(&w_bar);
      mbarrier_arrive_expect_tx(wb, static_cast<uint32_t>(p.kblocks) * kBBytes);
      for (int kb = 0; kb < p.kblocks; ++kb) {
        if constexpr (GEGLU) {  // value rows [n0, n0 + bn/2), then gate rows [N + n0, ...)
          tma_load_2d(b_base + kb * kBBytes, &tmap_w, wb, kb * kBK, n0);
          tma_load_2d(b_base + kb * kBBytes + kBBytes / 2, &tmap_w, wb, kb * kBK, p.n + n0);
        } else {
          tma_load_2d(b_base + kb * kBBytes, &tmap_w, wb, kb * kBK, n0);
        }
      }
      pdl_wait();
      pdl_trigger();
      int it = 0;  // x K blocks issued so far (slot it % stages, round it / stages)
      for (int mt = mt_begin; mt < mt_end; ++mt) {
        for (int kb = 0; kb < p.kblocks; ++kb, ++it) {
          const int s = it % stages;
          const uint32_t full = smem_addr(&full_bar[s]);
          mbarrier_wait(smem_addr(&empty_bar[s]), ((it / stages) & 1) ^ 1);
          mbarrier_arrive_expect_tx(full, kResidentABytes);
          tma_load_2d(a_base + s * kResidentABytes, &tmap_x, full, kb * kBK, mt * 128);
        }
      }
    }
  } else {
    setmaxnreg_inc<232>();
    pdl_wait();  // before the residual and the output: they belong to earlier kernels too
    pdl_trigger();
    const int c = wg - 1, row_off = c * 64;
    const int warp = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    mbarrier_wait(smem_addr(&w_bar), 0);  // also keeps the CTA alive until w has landed
    int it = 0;
    for (int mt = mt_begin; mt < mt_end; ++mt) {
      float acc[BN / 2];
#pragma unroll
      for (int i = 0; i < BN / 2; ++i) acc[i] = 0.f;
      for (int kb = 0; kb < p.kblocks; ++kb, ++it) {
        const int s = it % stages;
        mbarrier_wait(smem_addr(&full_bar[s]), (it / stages) & 1);
        const uint64_t da = desc_sw128(a_base + s * kResidentABytes + row_off * kRowBytes);
        const uint64_t db = desc_sw128(b_base + kb * kBBytes);
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < kBK / 16; ++kk) wgmma_ss<T, BN>(acc, da + 2 * kk, db + 2 * kk, 1);
        wgmma_commit();
        wgmma_wait<1>();  // the previous slot's wgmmas are done: hand it back to the producer
        if (kb > 0) mbarrier_arrive(smem_addr(&empty_bar[(it - 1) % stages]));
      }
      wgmma_wait<0>();
      fence_accumulators(acc);
      if (p.kblocks > 0) mbarrier_arrive(smem_addr(&empty_bar[(it - 1) % stages]));
      Unit w;
      w.m0 = mt * 128;
      w.n0 = n0;
      w.kb0 = 0;
      w.nkb = p.kblocks;
      w.split = 0;
      store_unit<T, BN, GEGLU, false>(p, w, acc, w.m0 + row_off + warp * 16 + g, t);
    }
  }
#endif
}

}  // namespace sd::cuda::gemm_wgmma
