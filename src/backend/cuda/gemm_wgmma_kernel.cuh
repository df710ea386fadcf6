// Device side of the Hopper GEMM (gemm_wgmma.h): a warp-specialized TMA + wgmma main loop (one
// producer warpgroup, two consumer warpgroups of 64 rows) with the bias / residual / GEGLU
// epilogue, or f32 partials per K slice plus the deterministic split-K reduce kernel.
#pragma once

#include "backend/cuda/gemm_wgmma_epilogue.cuh"

namespace sd::cuda::gemm_wgmma {

// Consumer warpgroup c of the overlapped cooperative schedule (EPI kEpiTmaOverlap): for each tile,
// the first K blocks (all of them without a residual, about half with one, so that the residual
// load issued after the epilogue still hides behind MMAs) are issued to the tensor cores before
// the previous tile's TMA-store epilogue runs from a copy of its accumulators; then the rest of
// the main loop. Stages go back to the producer as their wgmmas complete, as in the main kernel.
// GEGLU (bn 128 only): the tile's 64 value and 64 gate columns give 64 outputs (no residual).
template <typename T, int BN, bool GEGLU, int kStages, uint32_t kABytes, uint32_t kBBytes>
__device__ __forceinline__ void run_overlapped(const Params& p, int units, int splits, const CUtensorMap* tmap_y,
                                               const CUtensorMap* tmap_r, uint32_t a_base, uint32_t b_base,
                                               uint64_t* full_bar, uint64_t* empty_bar, uint32_t res_bar,
                                               uint32_t stage, int row_off, bool has_res, bool leader, int c, int warp,
                                               int g, int t, int& res_phase) {
  using namespace sm90;
  constexpr int kOutBN = GEGLU ? BN / 2 : BN;
  constexpr int kBoxCols = tma_box_cols(kOutBN), kBoxBytes = 64 * kBoxCols * 2;
  constexpr uint32_t kStagingBytes = 64 * kOutBN * 2;
  const auto load_residual = [&](int m0, int n0) {  // into the staging tile, once the last store read it
    if (has_res && leader) {
      bulk_wait_group_read<0>();
      mbarrier_arrive_expect_tx(res_bar, kStagingBytes);
#pragma unroll
      for (int b = 0; b < kOutBN / kBoxCols; ++b) {
        tma_load_2d(stage + b * kBoxBytes, tmap_r, res_bar, n0 + b * kBoxCols, m0);
      }
    }
  };
  const auto epilogue = [&](const float (&a)[BN / 2], int m0, int n0) {
    if (has_res) {
      mbarrier_wait(res_bar, res_phase & 1);
      ++res_phase;
    } else {
      if (leader) bulk_wait_group_read<0>();  // the previous store has read the staging tile
      named_barrier_sync(3 + c, 128);
    }
    store_unit_tma<T, BN, GEGLU>(p, n0, a, stage, has_res, warp, g, t);
    fence_proxy_async_smem();  // the staging writes, visible to the TMA store
    named_barrier_sync(3 + c, 128);
    if (leader) {
#pragma unroll
      for (int b = 0; b < kOutBN / kBoxCols; ++b) tma_store_2d(tmap_y, stage + b * kBoxBytes, n0 + b * kBoxCols, m0);
      bulk_commit_group();
    }
  };
  const auto issue = [&](float (&acc)[BN / 2], int it) {  // one K block's wgmmas, one group
    const int s = it % kStages;
    mbarrier_wait(smem_addr(&full_bar[s]), (it / kStages) & 1);
    const uint64_t da = desc_sw128(a_base + s * kABytes + row_off * kRowBytes);
    const uint64_t db = desc_sw128(b_base + s * kBBytes);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kBK / 16; ++kk) wgmma_ss<T, BN>(acc, da + 2 * kk, db + 2 * kk, 1);
    wgmma_commit();
  };
  float acc[BN / 2], prev[BN / 2];  // this tile's accumulators; the previous tile's, awaiting its epilogue
  int it = 0, prev_m0 = 0, prev_n0 = 0;
  bool have_prev = false;
  for (int u = blockIdx.x; u < units; u += gridDim.x) {
    const Unit w = unit_at<128, kOutBN>(p, u, splits);
    const int m0 = w.m0 + row_off;
    if (!have_prev) load_residual(m0, w.n0);
#pragma unroll
    for (int i = 0; i < BN / 2; ++i) acc[i] = 0.f;
    const int pre = have_prev ? min(min(w.nkb, kStages - 1), has_res ? (w.nkb + 1) / 2 : w.nkb) : 0;
    for (int i = 0; i < pre; ++i) issue(acc, it + i);
    fence_accumulators(acc);
    if (have_prev) {
      epilogue(prev, prev_m0, prev_n0);
      load_residual(m0, w.n0);
    }
    if (pre > 0) {
      wgmma_wait<0>();
      fence_accumulators(acc);
      for (int i = 0; i < pre; ++i) mbarrier_arrive(smem_addr(&empty_bar[(it + i) % kStages]));
      it += pre;
    }
    for (int i = pre; i < w.nkb; ++i, ++it) {
      issue(acc, it);
      wgmma_wait<1>();  // the previous stage's wgmmas are done: hand it back to the producer
      if (i > pre) mbarrier_arrive(smem_addr(&empty_bar[(it - 1) % kStages]));
    }
    wgmma_wait<0>();
    fence_accumulators(acc);
    if (w.nkb > pre) mbarrier_arrive(smem_addr(&empty_bar[(it - 1) % kStages]));
#pragma unroll
    for (int i = 0; i < BN / 2; ++i) prev[i] = acc[i];
    prev_m0 = m0;
    prev_n0 = w.n0;
    have_prev = true;
  }
  if (have_prev) epilogue(prev, prev_m0, prev_n0);
}

// Persistent kernel: CTA b takes units b, b + gridDim.x, ... The producer thread streams the K
// blocks of its units through the stage ring without pause, so the next unit's loads overlap
// this unit's epilogue. Shared memory: stages of A (128 rows x 128 B) then of B (bn rows x
// 128 B), both 128-byte swizzled as TMA writes them. GEGLU: the B tile holds w rows
// [n0, n0 + bn/2) (values) then [N + n0, N + n0 + bn/2) (gates), so a thread's value and gate
// accumulators pair up.
// EPI == kEpiTma: tmap_y / tmap_r map y and the residual ([M, N], boxes of 64 rows x
// tma_box_cols(out_bn)); with the other epilogues they are unused. Two-source x (the decoder's
// [h | skip]): K blocks from p.k1 on (a multiple of 64) come from tmap_x2, at column kc - k1.
template <typename T, int BM, int BN, bool GEGLU, bool SPLIT, int EPI = kEpiPairs>
__global__ void __launch_bounds__(kThreads, 1)
    gemm_kernel(const __grid_constant__ CUtensorMap tmap_x, const __grid_constant__ CUtensorMap tmap_w,
                const __grid_constant__ CUtensorMap tmap_y, const __grid_constant__ CUtensorMap tmap_r,
                const __grid_constant__ CUtensorMap tmap_x2, Params p, int units, int splits) {
#if SD_SM90A_COMPILED
  using namespace sm90;
  constexpr bool kOverlap = EPI == kEpiTmaOverlap;  // cooperative, unsplit, plain, bn <= 128
  constexpr bool kTma = EPI == kEpiTma || kOverlap;  // with SPLIT: the in-kernel split-K reduction
  static_assert(!kOverlap || (BM == 128 && BN <= 128 && (!GEGLU || BN == 128) && !SPLIT),
                "overlap: cooperative, unsplit, bn <= 128 (GEGLU: 128)");
  constexpr int kOutBN = GEGLU ? BN / 2 : BN;
  constexpr int kStages = kTma ? stages_for_tma(BM, BN, kOutBN) : stages_for(BM, BN);
  constexpr bool kPingPong = BM == 64;
  constexpr uint32_t kABytes = BM * kRowBytes, kBBytes = BN * kRowBytes;
  constexpr int kBoxCols = tma_box_cols(kOutBN), kBoxBytes = 64 * kBoxCols * 2;
  constexpr uint32_t kStagingBytes = 64 * kOutBN * 2;  // per consumer warpgroup
  extern __shared__ uint8_t smem_raw[];
  __shared__ __align__(8) uint64_t full_bar[kStages], empty_bar[kStages], res_bar[2];
  __shared__ int last_slice[2];  // in-kernel split-K: this tile's slices all done (per tile owner)
  const uint32_t base = (smem_addr(smem_raw) + 1023u) & ~1023u;
  const uint32_t a_base = base, b_base = base + kStages * kABytes;
  const uint32_t staging_base = b_base + kStages * kBBytes;  // 1024-aligned: tiles are multiples of 8 rows

  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      mbarrier_init(smem_addr(&full_bar[s]), 1);
      mbarrier_init(smem_addr(&empty_bar[s]), kPingPong ? 128 : 2 * 128);
    }
    mbarrier_init(smem_addr(&res_bar[0]), 1);
    mbarrier_init(smem_addr(&res_bar[1]), 1);
    mbarrier_init_fence();
  }
  __syncthreads();
  const int wg = threadIdx.x / 128;
  if (wg == 0) {
    setmaxnreg_dec<40>();
    if (threadIdx.x == 0) {  // producer
      tma_prefetch_descriptor(&tmap_x);
      if (p.k1 < p.k) tma_prefetch_descriptor(&tmap_x2);
      tma_prefetch_descriptor(&tmap_w);
      const auto load_w = [&](int s, int kc, const Unit& w) {
        const uint32_t full = smem_addr(&full_bar[s]);
        if constexpr (GEGLU) {
          tma_load_2d(b_base + s * kBBytes, &tmap_w, full, kc, w.n0);
          tma_load_2d(b_base + s * kBBytes + kBBytes / 2, &tmap_w, full, kc, p.n + w.n0);
        } else {
          tma_load_2d(b_base + s * kBBytes, &tmap_w, full, kc, w.n0);
        }
      };
      // The weights do not come from the kernel before this one: the first unit's first stages
      // of w are requested before pdl_wait() (programmatic dependent launch), x's after it.
      int pre = 0;
      if (static_cast<int>(blockIdx.x) < units) {
        const Unit w = unit_at<BM, kOutBN>(p, blockIdx.x, splits);
        pre = min(w.nkb, kStages);
        for (int i = 0; i < pre; ++i) {
          mbarrier_arrive_expect_tx(smem_addr(&full_bar[i]), kABytes + kBBytes);
          load_w(i, (w.kb0 + i) * kBK, w);
        }
      }
      pdl_wait();
      pdl_trigger();
      int it = 0;  // K blocks issued so far (stage it % kStages, round it / kStages)
      for (int u = blockIdx.x; u < units; u += gridDim.x) {
        const Unit w = unit_at<BM, kOutBN>(p, u, splits);
        for (int i = 0; i < w.nkb; ++i, ++it) {
          const int s = it % kStages;
          const uint32_t full = smem_addr(&full_bar[s]);
          const int kc = (w.kb0 + i) * kBK;
          if (it >= pre) {
            mbarrier_wait(smem_addr(&empty_bar[s]), ((it / kStages) & 1) ^ 1);
            mbarrier_arrive_expect_tx(full, kABytes + kBBytes);
            load_w(s, kc, w);
          }
          if (kc < p.k1) {
            tma_load_2d(a_base + s * kABytes, &tmap_x, full, kc, w.m0);
          } else {
            tma_load_2d(a_base + s * kABytes, &tmap_x2, full, kc - p.k1, w.m0);
          }
        }
      }
    }
  } else {
    setmaxnreg_inc<232>();
    pdl_wait();  // before the residual / partials / output: they belong to earlier kernels too
    pdl_trigger();
    const int c = wg - 1;  // cooperative: rows m0 + 64 c ..; ping-pong: this CTA's units c, c + 2, ..
    const int warp = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32;
    const int g = lane / 4, t = lane % 4;
    const int row_off = kPingPong ? 0 : c * 64;
    const bool leader = threadIdx.x % 128 == 0;  // issues this warpgroup's TMA stores
    const bool has_res = !GEGLU && p.residual != nullptr;
    const uint32_t stage = staging_base + c * kStagingBytes;
    int it = 0, local = 0, res_phase = 0;
    if constexpr (kOverlap) {
      int resp = 0;
      run_overlapped<T, BN, GEGLU, kStages, kABytes, kBBytes>(p, units, splits, &tmap_y, &tmap_r, a_base, b_base,
                                                              full_bar, empty_bar, smem_addr(&res_bar[c]), stage,
                                                              row_off, has_res, leader, c, warp, g, t, resp);
    } else
    for (int u = blockIdx.x; u < units; u += gridDim.x, ++local) {
      const Unit w = unit_at<BM, kOutBN>(p, u, splits);
      if (kPingPong && (local & 1) != c) {  // the other consumer's unit: skip its K blocks
        it += w.nkb;
        continue;
      }
      if constexpr (kTma && !SPLIT) {
        // The residual tile goes into the staging tile while the main loop runs, once the
        // previous tile's store has read it out.
        if (has_res && leader) {
          bulk_wait_group_read<0>();
          const uint32_t bar = smem_addr(&res_bar[c]);
          mbarrier_arrive_expect_tx(bar, kStagingBytes);
#pragma unroll
          for (int b = 0; b < kOutBN / kBoxCols; ++b)
            tma_load_2d(stage + b * kBoxBytes, &tmap_r, bar, w.n0 + b * kBoxCols, w.m0 + row_off);
        }
      }
      // Ping-pong: the consumers' main loops take turns (named barriers 1 and 2), so the one
      // waiting on a stage is never a full ring round ahead of the stage's last completed fill
      // (the phase-parity wait cannot tell rounds r and r + 2 apart).
      if (kPingPong && local > 0) named_barrier_sync(1 + c, 2 * 128);
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
      if (kPingPong) named_barrier_arrive(2 - c, 2 * 128);  // the other consumer's turn
      if constexpr (kTma && SPLIT) {
        // In-kernel split-K: every slice writes its partials; the tile's owner threads (both
        // consumers when cooperative, one when ping-pong) publish them (fence, barrier, one
        // atomic); the CTA that completes the tile's count sums all slices in order and runs
        // the epilogue. Nothing waits on another CTA, so no co-residency is needed.
        constexpr int kOwners = kPingPong ? 128 : 256;
        const int bar_id = kPingPong ? 3 + c : 5, flag = kPingPong ? c : 0;
        const int row0 = w.m0 + row_off + warp * 16 + g;
        store_unit<T, BN, GEGLU, true>(p, w, acc, row0, t);
        __threadfence();
        named_barrier_sync(bar_id, kOwners);
        if (threadIdx.x == (kPingPong ? 128 * (c + 1) : 128)) {
          int* counter = p.tile_counters + (w.m0 / BM) * p.n_tiles + w.n0 / kOutBN;
          last_slice[flag] = atomicAdd(counter, 1) == splits - 1;
        }
        named_barrier_sync(bar_id, kOwners);
        if (!last_slice[flag]) continue;
        __threadfence();
        if (has_res && leader) {  // the residual tile into the staging tile while the sum runs
          bulk_wait_group_read<0>();
          const uint32_t bar = smem_addr(&res_bar[c]);
          mbarrier_arrive_expect_tx(bar, kStagingBytes);
#pragma unroll
          for (int b = 0; b < kOutBN / kBoxCols; ++b)
            tma_load_2d(stage + b * kBoxBytes, &tmap_r, bar, w.n0 + b * kBoxCols, w.m0 + row_off);
        }
        sum_partials<BN, GEGLU>(p, w, acc, row0, t, splits);
      }
      if constexpr (kTma) {
        if (has_res) {
          mbarrier_wait(smem_addr(&res_bar[c]), res_phase & 1);
          ++res_phase;
        } else {
          if (leader) bulk_wait_group_read<0>();  // the previous store has read the staging tile
          named_barrier_sync(3 + c, 128);
        }
        store_unit_tma<T, BN, GEGLU>(p, w.n0, acc, stage, has_res, warp, g, t);
        fence_proxy_async_smem();  // the staging writes, visible to the TMA store
        named_barrier_sync(3 + c, 128);
        if (leader) {
#pragma unroll
          for (int b = 0; b < kOutBN / kBoxCols; ++b)
            tma_store_2d(&tmap_y, stage + b * kBoxBytes, w.n0 + b * kBoxCols, w.m0 + row_off);
          bulk_commit_group();
        }
      } else if constexpr (EPI == kEpiVec && !SPLIT) {
        store_unit_vec<T, BN, GEGLU>(p, w, acc, w.m0 + row_off + warp * 16 + g, t);
      } else {
        store_unit<T, BN, GEGLU, SPLIT>(p, w, acc, w.m0 + row_off + warp * 16 + g, t);
      }
    }
    if constexpr (kTma) {
      if (leader) bulk_wait_group<0>();  // the stores have finished before the CTA (and its smem) goes
    }
  }
#endif
}

// Split-K epilogue: y[m, n] = sum over slices (in order) of the partials, then bias / residual /
// GEGLU as the unsplit kernel applies them. Four outputs per thread (n % 8 == 0).
template <typename T, bool GEGLU>
__global__ void splitk_reduce_kernel(Params p, int splits) {
  pdl_wait();
  pdl_trigger();
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
