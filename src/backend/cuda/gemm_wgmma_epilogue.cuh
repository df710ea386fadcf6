// Layout constants, parameters and the consumer epilogues of the Hopper GEMM (gemm_wgmma.h):
// 4-byte pair stores, f32 split-K partials and their in-kernel sum, 16-byte stores by quad
// shuffles, and the shared-memory-staged TMA-store epilogue. The kernels: gemm_wgmma_kernel.cuh.
#pragma once

#include <cuda.h>

#include <cstdint>

#include "backend/cuda/cuda_types.cuh"
#include "backend/cuda/pdl.cuh"
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
// kEpiTma whose epilogue runs while the next tile's first K blocks are already issued to the
// tensor cores (cooperative, unsplit, plain; accumulators copied aside: bn <= 128 fits)
constexpr int kEpiTmaOverlap = 3;

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
  int k1;                     // x's K columns [0, k1) come from tmap_x, [k1, k) from tmap_x2 (k1 = k: one source)
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

}  // namespace sd::cuda::gemm_wgmma
