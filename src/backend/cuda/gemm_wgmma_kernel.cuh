// Device side of the Hopper GEMM (gemm_wgmma.h): a warp-specialized TMA + wgmma main loop (one
// producer warpgroup, two consumer warpgroups of 64 rows) with the bias / residual / GEGLU
// epilogue, or f32 partials per K slice plus the deterministic split-K reduce kernel.
#pragma once

#include <cuda.h>

#include <cstdint>

#include "backend/cuda/cuda_types.cuh"
#include "backend/cuda/wgmma_sm90.cuh"

namespace sd::cuda::gemm_wgmma {

// Tile rows bm: 128 (cooperative: both consumer warpgroups share a tile, 64 rows each) or 64
// (ping-pong: the consumers take alternate tiles, so one's epilogue overlaps the other's MMAs).
constexpr int kBK = 64;          // K per stage: one 128-byte swizzle row of halves
constexpr int kThreads = 384;    // producer warpgroup + 2 consumers
constexpr int kGroupM = 8;       // tile raster: 8 M tiles sweep all N tiles before moving on
constexpr int kRowBytes = kBK * 2;

// Pipeline depth per tile width (stages of (128 + bn) x 64 halves: 180..192 KB of shared memory).
__host__ __device__ constexpr int stages_for(int bm, int bn) {
  const int s = 200 * 1024 / ((bm + bn) * kRowBytes);
  return s > 8 ? 8 : s;
}
__host__ __device__ constexpr int smem_bytes_for(int bm, int bn) {
  return stages_for(bm, bn) * (bm + bn) * kRowBytes + 1024;
}

// Epilogue kinds (template parameter EPI of gemm_kernel).
constexpr int kEpiPairs = 0;  // 4-byte stores of column pairs straight from the accumulators
constexpr int kEpiVec = 1;    // quad shuffles, 16-byte bias / residual / y
constexpr int kEpiTma = 2;    // staged in shared memory, TMA store (residual TMA-loaded there first)

// TMA-store epilogue: each consumer warpgroup owns a staging tile of its 64 rows x out_bn columns,
// as boxes of 64 rows x kBoxCols columns (box rows of 32 / 64 / 128 bytes, swizzled at that width
// so the fragment writes are free of bank conflicts). The stages share what remains of 227 KB.
__host__ __device__ constexpr int tma_box_cols(int out_bn) { return out_bn % 64 == 0 ? 64 : out_bn % 32 == 0 ? 32 : 16; }
__host__ __device__ constexpr int staging_bytes_for(int out_bn) { return 2 * 64 * out_bn * 2; }
__host__ __device__ constexpr int stages_for_tma(int bm, int bn, int out_bn) {
  const int s = (227 * 1024 - 3072 - staging_bytes_for(out_bn)) / ((bm + bn) * kRowBytes);
  return s > 8 ? 8 : s;
}
__host__ __device__ constexpr int smem_bytes_for_tma(int bm, int bn, int out_bn) {
  return stages_for_tma(bm, bn, out_bn) * (bm + bn) * kRowBytes + staging_bytes_for(out_bn) + 1024;
}

struct Params {
  int m, n, k;                // n: output columns (GEGLU: w has 2n rows)
  int kblocks;                // ceil(k / 64)
  int kblocks_per_split;
  int m_tiles, n_tiles;       // n_tiles over output columns
  void* y;                    // [m, n] (unsplit)
  const void* bias;           // [n] ([2n] GEGLU) or null
  const void* residual;       // [m, n] or null
  float* partial;             // split: [splits, m, wn] f32, wn = n (2n GEGLU: value cols then gate cols)
  int* tile_counters;         // in-kernel split-K (TMA-store epilogue): [tiles] slices done, zeroed per launch
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

// Work unit: one bm x bn tile and one K slice. Units are (tile, slice) with the slice fastest;
// tiles go in a raster of kGroupM M tiles (M fastest within a group) across all N tiles.
struct Unit {
  int m0, n0, kb0, nkb, split;
};
template <int kBM, int kOutBN>
__device__ __forceinline__ Unit unit_at(const Params& p, int u, int splits) {
  Unit w;
  w.split = u % splits;
  const int tile = u / splits;
  const int per_group = kGroupM * p.n_tiles;
  const int group = tile / per_group, in_group = tile % per_group;
  const int first_m = group * kGroupM;
  const int group_m = min(p.m_tiles - first_m, kGroupM);
  w.m0 = (first_m + in_group % group_m) * kBM;
  w.n0 = (in_group / group_m) * kOutBN;
  w.kb0 = w.split * p.kblocks_per_split;
  w.nkb = max(0, min(p.kblocks, w.kb0 + p.kblocks_per_split) - w.kb0);
  return w;
}

// Consumer epilogue of one unit: acc (this thread's m64nBN fragment, rows row0 and row0 + 8 of
// each 8-column block) plus bias / residual / GEGLU into y, or raw into the slice's partials.
template <typename T, int BN, bool GEGLU, bool SPLIT>
__device__ __forceinline__ void store_unit(const Params& p, const Unit& w, const float (&acc)[BN / 2], int row0, int t) {
  constexpr int kOutBN = GEGLU ? BN / 2 : BN;
  if constexpr (SPLIT) {
    const int64_t wn = GEGLU ? 2 * int64_t{p.n} : p.n;
    float* part = p.partial + int64_t{w.split} * p.m * wn;
#pragma unroll
    for (int j = 0; j < BN / 8; ++j) {
      int col = 8 * (j % (kOutBN / 8)) + 2 * t + w.n0;
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
    // Chunks of kChunk 8-column blocks: every load of a chunk (bias pairs, residual pairs) is
    // issued before its stores, so a chunk waits for one memory latency, not one per block
    // (y may alias nothing here, but the compiler cannot know that).
    constexpr int kBlocks = kOutBN / 8, kChunk = 8;
    const uint32_t* bias = static_cast<const uint32_t*>(p.bias);      // T pairs
    const uint32_t* res = static_cast<const uint32_t*>(p.residual);   // T pairs
    uint32_t* y = static_cast<uint32_t*>(p.y);
    const int64_t half_n = p.n / 2;  // pairs per row
#pragma unroll
    for (int j0 = 0; j0 < kBlocks; j0 += kChunk) {
      uint32_t bv[kChunk], gv[kChunk], rv[kChunk][2];
#pragma unroll
      for (int jj = 0; jj < kChunk; ++jj) {
        const int col = w.n0 + 8 * (j0 + jj) + 2 * t;
        const bool ok = j0 + jj < kBlocks && col < p.n;
        bv[jj] = ok && bias ? __ldg(bias + col / 2) : 0u;
        gv[jj] = GEGLU && ok && bias ? __ldg(bias + (p.n + col) / 2) : 0u;
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int row = row0 + 8 * h;
          rv[jj][h] = !GEGLU && ok && res && row < p.m ? __ldg(res + row * half_n + col / 2) : 0u;
        }
      }
#pragma unroll
      for (int jj = 0; jj < kChunk; ++jj) {
        const int j = j0 + jj;
        const int col = w.n0 + 8 * j + 2 * t;
        if (j >= kBlocks || col >= p.n) continue;
        const T* b2 = reinterpret_cast<const T*>(&bv[jj]);
        const T* g2 = reinterpret_cast<const T*>(&gv[jj]);
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int row = row0 + 8 * h;
          if (row >= p.m) continue;
          float v0 = acc[4 * j + 2 * h] + to_f32(b2[0]), v1 = acc[4 * j + 2 * h + 1] + to_f32(b2[1]);
          if constexpr (GEGLU) {
            constexpr int kGate = 4 * kBlocks;
            v0 *= gelu_erf_f(acc[kGate + 4 * j + 2 * h] + to_f32(g2[0]));
            v1 *= gelu_erf_f(acc[kGate + 4 * j + 2 * h + 1] + to_f32(g2[1]));
          } else {
            const T* r2 = reinterpret_cast<const T*>(&rv[jj][h]);
            v0 += to_f32(r2[0]);
            v1 += to_f32(r2[1]);
          }
          y[row * half_n + col / 2] = pack_pair<T>(v0, v1);
        }
      }
    }
  }
}

// In-kernel split-K: acc = the sum of the tile's K slices in slice order (0, 1, ..), read back
// from the partials exactly where store_unit<SPLIT> wrote them (the own slice too, so the sum
// is the same whichever CTA runs it: deterministic). Out-of-range rows / columns give 0.
template <int BN, bool GEGLU>
__device__ __forceinline__ void sum_partials(const Params& p, const Unit& w, float (&acc)[BN / 2], int row0, int t,
                                             int splits) {
  constexpr int kOutBN = GEGLU ? BN / 2 : BN;
  const int64_t wn = GEGLU ? 2 * int64_t{p.n} : p.n;
  const int64_t slice = int64_t{p.m} * wn;
  for (int s = 0; s < splits; ++s) {
    const float* part = p.partial + s * slice;
#pragma unroll
    for (int j = 0; j < BN / 8; ++j) {
      int col = 8 * (j % (kOutBN / 8)) + 2 * t + w.n0;
      const bool col_ok = col < p.n;
      if (GEGLU && j >= kOutBN / 8) col += p.n;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int row = row0 + 8 * h;
        float2 v = make_float2(0.f, 0.f);
        if (col_ok && row < p.m) v = __ldcg(reinterpret_cast<const float2*>(part + row * wn + col));
        if (s == 0) {
          acc[4 * j + 2 * h] = v.x;
          acc[4 * j + 2 * h + 1] = v.y;
        } else {
          acc[4 * j + 2 * h] += v.x;
          acc[4 * j + 2 * h + 1] += v.y;
        }
      }
    }
  }
}

// Wide-store epilogue (config vec_epilogue): the four threads of a quad hold, for 4 consecutive
// 8-column blocks, 2 columns each; a 4 x 4 exchange by shuffles (selects, no register indexing)
// gives thread t all 8 columns of block j0 + t, so bias and residual are read and y written as
// 16-byte vectors (a warp covers 64 contiguous bytes of 8 rows) instead of 4-byte pairs.
// GEGLU is applied before the exchange (value and gate sit in the same thread there).
// Needs (bn, or bn / 2 with GEGLU) / 8 % 4 == 0.
// v[4 (j0 + k) + idx] for a run-time k in 0..3, by selects (no register-array indexing).
template <int N>
__device__ __forceinline__ float pick4(const float (&v)[N], int j0, int k, int idx) {
  const float a = v[4 * (j0 + 0) + idx], b = v[4 * (j0 + 1) + idx], c = v[4 * (j0 + 2) + idx],
              d = v[4 * (j0 + 3) + idx];
  return k == 0 ? a : k == 1 ? b : k == 2 ? c : d;
}

template <typename T, int BN, bool GEGLU>
__device__ __forceinline__ void store_unit_vec(const Params& p, const Unit& w, float (&acc)[BN / 2], int row0, int t) {
  constexpr int kOutBN = GEGLU ? BN / 2 : BN;
  constexpr int kBlocks = kOutBN / 8;
  static_assert(kBlocks % 4 == 0, "wide-store epilogue: output blocks per tile must be a multiple of 4");
  const int lane = threadIdx.x % 32;
  if constexpr (GEGLU) {
    const uint32_t* bias = static_cast<const uint32_t*>(p.bias);
#pragma unroll
    for (int j = 0; j < kBlocks; ++j) {
      const int col = w.n0 + 8 * j + 2 * t;
      const bool ok = col < p.n && bias;
      const uint32_t bv = ok ? __ldg(bias + col / 2) : 0u, gv = ok ? __ldg(bias + (p.n + col) / 2) : 0u;
      const T* b2 = reinterpret_cast<const T*>(&bv);
      const T* g2 = reinterpret_cast<const T*>(&gv);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float a = acc[4 * j + i] + to_f32(b2[i % 2]);
        acc[4 * j + i] = a * gelu_erf_f(acc[4 * kBlocks + 4 * j + i] + to_f32(g2[i % 2]));
      }
    }
  }
  const uint4* bias16 = GEGLU ? nullptr : static_cast<const uint4*>(p.bias);
  const uint4* res16 = GEGLU ? nullptr : static_cast<const uint4*>(p.residual);
  uint4* y16 = static_cast<uint4*>(p.y);
  const int64_t n8 = p.n / 8;
#pragma unroll
  for (int j0 = 0; j0 < kBlocks; j0 += 4) {
    const int col = w.n0 + 8 * (j0 + t);  // this thread's block after the exchange
    const bool col_ok = col < p.n;
    uint4 bv = make_uint4(0, 0, 0, 0), rv[2] = {make_uint4(0, 0, 0, 0), make_uint4(0, 0, 0, 0)};
    if (col_ok && bias16) bv = __ldg(bias16 + col / 8);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = row0 + 8 * h;
      if (col_ok && res16 && row < p.m) rv[h] = __ldg(res16 + row * n8 + col / 8);
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float o[8];
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        // Round r: read quad lane s = (t + r) % 4, which sends its block j0 + ((s - r) % 4) = j0 + t.
        const int send_block = (t - r) & 3;
        const float s0 = pick4(acc, j0, send_block, 2 * h), s1 = pick4(acc, j0, send_block, 2 * h + 1);
        const int src = (lane & ~3) | ((t + r) & 3);
        const float r0 = __shfl_sync(0xffffffffu, s0, src), r1 = __shfl_sync(0xffffffffu, s1, src);
        const int sl = (t + r) & 3;  // columns 2 sl, 2 sl + 1 of the block
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          if (k == sl) {
            o[2 * k] = r0;
            o[2 * k + 1] = r1;
          }
        }
      }
      const int row = row0 + 8 * h;
      if (!col_ok || row >= p.m) continue;
      const T* b8 = reinterpret_cast<const T*>(&bv);
      const T* r8 = reinterpret_cast<const T*>(&rv[h]);
      uint4 out;
      uint32_t* o4 = reinterpret_cast<uint32_t*>(&out);
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        float v0 = o[2 * k], v1 = o[2 * k + 1];
        if constexpr (!GEGLU) {
          v0 += to_f32(b8[2 * k]) + to_f32(r8[2 * k]);
          v1 += to_f32(b8[2 * k + 1]) + to_f32(r8[2 * k + 1]);
        }
        o4[k] = pack_pair<T>(v0, v1);
      }
      y16[row * n8 + col / 8] = out;
    }
  }
}

// TMA-store epilogue of one tile for one consumer warpgroup (64 rows from row m0): values with
// bias (+ residual, already TMA-loaded into the staging tile at `stage`) or GEGLU are written as
// column pairs into the swizzled staging boxes (conflict-free: the 8 rows of a fragment land in
// 8 different 16-byte chunks), then one thread stores the boxes by TMA (rows / columns past M / N
// clipped) and commits them as a bulk group; the warpgroup goes on to its next tile at once.
template <typename T, int BN, bool GEGLU>
__device__ __forceinline__ void store_unit_tma(const Params& p, int n0, const float (&acc)[BN / 2], uint32_t stage,
                                               bool has_res, int warp, int g, int t) {
  constexpr int kOutBN = GEGLU ? BN / 2 : BN;
  constexpr int kBlocks = kOutBN / 8, kChunk = 8;
  constexpr int kBoxCols = tma_box_cols(kOutBN), kBoxRowBytes = kBoxCols * 2, kBoxBytes = 64 * kBoxRowBytes;
  constexpr uint32_t kSwzMask = kBoxRowBytes / 16 - 1;  // 16-byte chunk bits XORed with address bits 7..
  const uint32_t* bias = static_cast<const uint32_t*>(p.bias);  // T pairs
#pragma unroll
  for (int j0 = 0; j0 < kBlocks; j0 += kChunk) {
    uint32_t bv[kChunk], gv[kChunk];
#pragma unroll
    for (int jj = 0; jj < kChunk; ++jj) {
      const int col = n0 + 8 * (j0 + jj) + 2 * t;
      const bool ok = j0 + jj < kBlocks && col < p.n && bias;
      bv[jj] = ok ? __ldg(bias + col / 2) : 0u;
      gv[jj] = GEGLU && ok ? __ldg(bias + (p.n + col) / 2) : 0u;
    }
#pragma unroll
    for (int jj = 0; jj < kChunk; ++jj) {
      const int j = j0 + jj;
      if (j >= kBlocks) continue;
      const T* b2 = reinterpret_cast<const T*>(&bv[jj]);
      const T* g2 = reinterpret_cast<const T*>(&gv[jj]);
      const int oc = 8 * j + 2 * t;  // column within the tile
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const uint32_t rr = warp * 16 + g + 8 * h;
        uint32_t off = rr * kBoxRowBytes + (oc % kBoxCols) * 2;
        off ^= ((off >> 7) & kSwzMask) << 4;
        const uint32_t addr = stage + (oc / kBoxCols) * kBoxBytes + off;
        float v0 = acc[4 * j + 2 * h] + to_f32(b2[0]), v1 = acc[4 * j + 2 * h + 1] + to_f32(b2[1]);
        if constexpr (GEGLU) {
          constexpr int kGate = 4 * kBlocks;
          v0 *= gelu_erf_f(acc[kGate + 4 * j + 2 * h] + to_f32(g2[0]));
          v1 *= gelu_erf_f(acc[kGate + 4 * j + 2 * h + 1] + to_f32(g2[1]));
        } else {
          if (has_res) {
            const uint32_t rv = sm90::ld_shared_u32(addr);
            const T* r2 = reinterpret_cast<const T*>(&rv);
            v0 += to_f32(r2[0]);
            v1 += to_f32(r2[1]);
          }
        }
        sm90::st_shared_u32(addr, pack_pair<T>(v0, v1));
      }
    }
  }
}

// Persistent kernel: CTA b takes units b, b + gridDim.x, ... The producer thread streams the K
// blocks of its units through the stage ring without pause, so the next unit's loads overlap
// this unit's epilogue. Shared memory: stages of A (128 rows x 128 B) then of B (bn rows x
// 128 B), both 128-byte swizzled as TMA writes them. GEGLU: the B tile holds w rows
// [n0, n0 + bn/2) (values) then [N + n0, N + n0 + bn/2) (gates), so a thread's value and gate
// accumulators pair up.
// EPI == kEpiTma: tmap_y / tmap_r map y and the residual ([M, N], boxes of 64 rows x
// tma_box_cols(out_bn)); with the other epilogues they are unused.
template <typename T, int BM, int BN, bool GEGLU, bool SPLIT, int EPI = kEpiPairs>
__global__ void __launch_bounds__(kThreads, 1)
    gemm_kernel(const __grid_constant__ CUtensorMap tmap_x, const __grid_constant__ CUtensorMap tmap_w,
                const __grid_constant__ CUtensorMap tmap_y, const __grid_constant__ CUtensorMap tmap_r, Params p,
                int units, int splits) {
#if SD_SM90A_COMPILED
  using namespace sm90;
  constexpr bool kTma = EPI == kEpiTma;  // with SPLIT: the in-kernel split-K reduction
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
      tma_prefetch_descriptor(&tmap_w);
      int it = 0;  // K blocks issued so far (stage it % kStages, round it / kStages)
      for (int u = blockIdx.x; u < units; u += gridDim.x) {
        const Unit w = unit_at<BM, kOutBN>(p, u, splits);
        for (int i = 0; i < w.nkb; ++i, ++it) {
          const int s = it % kStages;
          mbarrier_wait(smem_addr(&empty_bar[s]), ((it / kStages) & 1) ^ 1);
          const uint32_t full = smem_addr(&full_bar[s]);
          mbarrier_arrive_expect_tx(full, kABytes + kBBytes);
          const int kc = (w.kb0 + i) * kBK;
          tma_load_2d(a_base + s * kABytes, &tmap_x, full, kc, w.m0);
          if constexpr (GEGLU) {
            tma_load_2d(b_base + s * kBBytes, &tmap_w, full, kc, w.n0);
            tma_load_2d(b_base + s * kBBytes + kBBytes / 2, &tmap_w, full, kc, p.n + w.n0);
          } else {
            tma_load_2d(b_base + s * kBBytes, &tmap_w, full, kc, w.n0);
          }
        }
      }
    }
  } else {
    setmaxnreg_inc<232>();
    const int c = wg - 1;  // cooperative: rows m0 + 64 c ..; ping-pong: this CTA's units c, c + 2, ..
    const int warp = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32;
    const int g = lane / 4, t = lane % 4;
    const int row_off = kPingPong ? 0 : c * 64;
    const bool leader = threadIdx.x % 128 == 0;  // issues this warpgroup's TMA stores
    const bool has_res = !GEGLU && p.residual != nullptr;
    const uint32_t stage = staging_base + c * kStagingBytes;
    int it = 0, local = 0, res_phase = 0;
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
