// Hopper kernel of linear_norm.h: each persistent CTA loads the whole weight [N, K] into shared
// memory once (one mbarrier per 64-wide K block, so its first tile starts on the first block) and
// streams x in 64-row x 64-column stages; two consumer warpgroups take alternate 64-row tiles
// (ping-pong: one's epilogue — bias, residual, row statistics by quad shuffles, both stores —
// runs while the other's MMAs do). A tile's row lives in one quad of one warp, so the layer
// norm needs no shared memory.
#include "backend/cuda/linear_norm.h"

#include <algorithm>
#include <atomic>

#include "backend/cuda/cuda_types.cuh"
#include "backend/cuda/pdl.cuh"
#include "backend/cuda/tma.h"
#include "backend/cuda/wgmma_sm90.cuh"

namespace sd::cuda {
namespace linear_norm {

constexpr int kThreads = 384;  // warpgroup 0: producer (one thread issues TMA), 1-2: consumers
constexpr int kBM = 64;        // rows per tile (one consumer warpgroup's m64)
constexpr int kBK = 64;        // K per stage / weight block: one 128-byte swizzle row of halves
constexpr uint32_t kAStageBytes = kBM * kBK * 2;
constexpr int kMaxKBlocks = 8;
constexpr int kMaxStages = 4;
constexpr size_t kSmemLimit = 232448;  // H100 opt-in shared memory per block
constexpr size_t kSmemReserve = 1024 + 256;  // alignment slack + the static barriers

struct Params {
  int m, n, kblocks, stages, tiles;
  const void* bias;
  const void* residual;
  const void* gamma;
  const void* beta;
  void* y;
  void* normed;
  float eps;
};

template <typename T>
__device__ __forceinline__ float2 unpack_pair(uint32_t v) {
  if constexpr (std::is_same_v<T, __half>) {
    return __half22float2(*reinterpret_cast<const __half2*>(&v));
  } else {
    return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&v));
  }
}
template <typename T>
__device__ __forceinline__ uint32_t pack_pair(float lo, float hi) {
  if constexpr (std::is_same_v<T, __half>) {
    const __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&h);
  } else {
    const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&h);
  }
}

__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// One warpgroup's 64-row tile: acc[h] holds columns [h kNH, (h + 1) kNH) as wgmma's m64 fragment
// (element i: row row0 + 8 ((i / 2) % 2), column 8 (i / 4) + 2 t + i % 2 of its half).
template <typename T, int kHalves, int kNH>
__device__ __forceinline__ void epilogue(const Params& p, float (&acc)[kHalves][kNH / 2], int row0, int t) {
  constexpr int kN = kHalves * kNH, kBlocks = kNH / 8, kChunk = 8;
  const uint32_t* bias = static_cast<const uint32_t*>(p.bias);     // T pairs
  const uint32_t* res = static_cast<const uint32_t*>(p.residual);  // T pairs
  uint32_t* y = static_cast<uint32_t*>(p.y);
  uint32_t* normed = static_cast<uint32_t*>(p.normed);
  const bool ok[2] = {row0 < p.m, row0 + 8 < p.m};
  const int64_t r0 = int64_t{row0} * (kN / 2), r1 = r0 + 4 * kN;  // pair offsets of the two rows
  float sum[2] = {0.f, 0.f};
  // y = acc + bias + residual, rounded to T (the layer norm reads the rounded values, as the
  // separate kernel would), stored; the rounded values stay in acc.
#pragma unroll
  for (int h = 0; h < kHalves; ++h) {
#pragma unroll
    for (int j0 = 0; j0 < kBlocks; j0 += kChunk) {
      uint32_t bv[kChunk], rv[kChunk][2];
#pragma unroll
      for (int jj = 0; jj < kChunk; ++jj) {
        const int pair = (h * kNH + 8 * (j0 + jj)) / 2 + t;
        const bool in = j0 + jj < kBlocks;
        bv[jj] = in && bias ? __ldg(bias + pair) : 0u;
        rv[jj][0] = in && res && ok[0] ? __ldg(res + r0 + pair) : 0u;
        rv[jj][1] = in && res && ok[1] ? __ldg(res + r1 + pair) : 0u;
      }
#pragma unroll
      for (int jj = 0; jj < kChunk; ++jj) {
        const int j = j0 + jj;
        if (j >= kBlocks) break;
        const int pair = (h * kNH + 8 * j) / 2 + t;
        const float2 b = unpack_pair<T>(bv[jj]);
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
          const float2 r = unpack_pair<T>(rv[jj][hh]);
          const uint32_t v = pack_pair<T>(acc[h][4 * j + 2 * hh] + b.x + r.x, acc[h][4 * j + 2 * hh + 1] + b.y + r.y);
          const float2 f = unpack_pair<T>(v);
          acc[h][4 * j + 2 * hh] = f.x;
          acc[h][4 * j + 2 * hh + 1] = f.y;
          sum[hh] += f.x + f.y;
          if (ok[hh]) y[(hh ? r1 : r0) + pair] = v;
        }
      }
    }
  }
  // Exact two-pass statistics over the row's N values (a quad holds the row).
  const float inv_n = 1.f / static_cast<float>(kN);
  const float mean[2] = {quad_sum(sum[0]) * inv_n, quad_sum(sum[1]) * inv_n};
  float q[2] = {0.f, 0.f};
#pragma unroll
  for (int h = 0; h < kHalves; ++h) {
#pragma unroll
    for (int j = 0; j < kBlocks; ++j) {
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const float d0 = acc[h][4 * j + 2 * hh] - mean[hh], d1 = acc[h][4 * j + 2 * hh + 1] - mean[hh];
        q[hh] = fmaf(d0, d0, fmaf(d1, d1, q[hh]));
      }
    }
  }
  const float rstd[2] = {rsqrtf(quad_sum(q[0]) * inv_n + p.eps), rsqrtf(quad_sum(q[1]) * inv_n + p.eps)};
  const uint32_t* gamma = static_cast<const uint32_t*>(p.gamma);
  const uint32_t* beta = static_cast<const uint32_t*>(p.beta);
#pragma unroll
  for (int h = 0; h < kHalves; ++h) {
#pragma unroll
    for (int j = 0; j < kBlocks; ++j) {
      const int pair = (h * kNH + 8 * j) / 2 + t;
      const float2 gm = unpack_pair<T>(__ldg(gamma + pair)), bt = unpack_pair<T>(__ldg(beta + pair));
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        if (!ok[hh]) continue;
        const float a = (acc[h][4 * j + 2 * hh] - mean[hh]) * rstd[hh] * gm.x + bt.x;
        const float b = (acc[h][4 * j + 2 * hh + 1] - mean[hh]) * rstd[hh] * gm.y + bt.y;
        normed[(hh ? r1 : r0) + pair] = pack_pair<T>(a, b);
      }
    }
  }
}

// Grid: min(tiles, SMs) persistent CTAs, CTA b taking tiles b, b + gridDim.x, ...; tile u's K
// blocks occupy ring positions u_local * kblocks .. (the producer streams without pause).
// tmap_x: [M, K] in boxes of 64 x 64; tmap_w: [N, K] in boxes of kNH x 64, kept for the kernel.
template <typename T, int kN>
__global__ void __launch_bounds__(kThreads, 1)
    linear_norm_kernel(const __grid_constant__ CUtensorMap tmap_x, const __grid_constant__ CUtensorMap tmap_w,
                       const Params p) {
#if SD_SM90A_COMPILED
  using namespace sm90;
  constexpr int kHalves = kN > 256 ? 2 : 1;
  constexpr int kNH = kN / kHalves;              // columns per wgmma (<= 256)
  constexpr uint32_t kWBlockBytes = kN * 128;    // one K block of w: N rows x 128 bytes, swizzled
  extern __shared__ uint8_t smem_raw[];
  __shared__ __align__(8) uint64_t full_bar[kMaxStages], empty_bar[kMaxStages], w_bar[kMaxKBlocks];
  const uint32_t base = (smem_addr(smem_raw) + 1023u) & ~1023u;
  const uint32_t w_base = base, a_base = base + p.kblocks * kWBlockBytes;  // both 1024-aligned
  const int stages = p.stages;
  if (threadIdx.x == 0) {
    for (int s = 0; s < stages; ++s) {
      mbarrier_init(smem_addr(&full_bar[s]), 1);
      mbarrier_init(smem_addr(&empty_bar[s]), 128);  // every thread of the consuming warpgroup
    }
    for (int b = 0; b < p.kblocks; ++b) mbarrier_init(smem_addr(&w_bar[b]), 1);
    mbarrier_init_fence();
  }
  __syncthreads();
  const int wg = threadIdx.x / 128;
  if (wg == 0) {
    setmaxnreg_dec<40>();
    if (threadIdx.x == 0) {
      tma_prefetch_descriptor(&tmap_x);
      tma_prefetch_descriptor(&tmap_w);
      // The weights do not come from the kernel before this one: requested before pdl_wait().
      for (int b = 0; b < p.kblocks; ++b) {
        const uint32_t bar = smem_addr(&w_bar[b]);
        mbarrier_arrive_expect_tx(bar, kWBlockBytes);
#pragma unroll
        for (int h = 0; h < kHalves; ++h) tma_load_2d(w_base + b * kWBlockBytes + h * kNH * 128, &tmap_w, bar, b * kBK, h * kNH);
      }
      pdl_wait();
      pdl_trigger();
      int it = 0;
      for (int u = blockIdx.x; u < p.tiles; u += gridDim.x) {
        for (int b = 0; b < p.kblocks; ++b, ++it) {
          const int s = it % stages;
          if (it >= stages) mbarrier_wait(smem_addr(&empty_bar[s]), ((it / stages) & 1) ^ 1);
          const uint32_t full = smem_addr(&full_bar[s]);
          mbarrier_arrive_expect_tx(full, kAStageBytes);
          tma_load_2d(a_base + s * kAStageBytes, &tmap_x, full, b * kBK, u * kBM);  // rows >= M read as 0
        }
      }
    }
    return;
  }
  setmaxnreg_inc<232>();
  pdl_wait();  // before the residual reads and the stores
  pdl_trigger();
  const int c = wg - 1;
  const int warp = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32;
  int it = 0, local = 0;
  for (int u = blockIdx.x; u < p.tiles; u += gridDim.x, ++local) {
    if ((local & 1) != c) {  // the other consumer's tile: skip its K blocks
      it += p.kblocks;
      continue;
    }
    // The consumers' main loops take turns (named barriers 1 and 2), so the one waiting on a stage
    // is never a full ring round ahead of its last completed fill (parity waits cannot tell).
    if (local > 0) named_barrier_sync(1 + c, 256);
    float acc[kHalves][kNH / 2];
#pragma unroll
    for (int h = 0; h < kHalves; ++h) {
#pragma unroll
      for (int i = 0; i < kNH / 2; ++i) acc[h][i] = 0.f;
    }
    for (int b = 0; b < p.kblocks; ++b, ++it) {
      const int s = it % stages;
      mbarrier_wait(smem_addr(&full_bar[s]), (it / stages) & 1);
      mbarrier_wait(smem_addr(&w_bar[b]), 0);  // completes once; later waits return at once
      const uint64_t da = desc_sw128(a_base + s * kAStageBytes);
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < kBK / 16; ++kk) {
#pragma unroll
        for (int h = 0; h < kHalves; ++h) {
          wgmma_ss<T, kNH>(acc[h], da + 2 * kk, desc_sw128(w_base + b * kWBlockBytes + h * kNH * 128) + 2 * kk, 1);
        }
      }
      wgmma_commit();
      wgmma_wait<1>();  // the previous K block's wgmmas are done: its stage goes back
      if (b > 0) mbarrier_arrive(smem_addr(&empty_bar[(it - 1) % stages]));
    }
    wgmma_wait<0>();
#pragma unroll
    for (int h = 0; h < kHalves; ++h) fence_accumulators(acc[h]);
    if (p.kblocks > 0) mbarrier_arrive(smem_addr(&empty_bar[(it - 1) % stages]));
    named_barrier_arrive(2 - c, 256);  // the other consumer's turn
    epilogue<T, kHalves, kNH>(p, acc, u * kBM + warp * 16 + lane / 4, lane % 4);
  }
#endif
}

}  // namespace linear_norm

namespace {

constexpr int kMaxDevices = 64;

int stages_for(const LinearNormShape& s) {
  const size_t w_bytes = static_cast<size_t>(s.k / linear_norm::kBK) * static_cast<size_t>(s.n) * 128;
  if (w_bytes + linear_norm::kSmemReserve >= linear_norm::kSmemLimit) return 0;
  const size_t left = linear_norm::kSmemLimit - linear_norm::kSmemReserve - w_bytes;
  return static_cast<int>(std::min<size_t>(linear_norm::kMaxStages, left / linear_norm::kAStageBytes));
}

template <typename T, int kN>
bool launch_typed(const LinearNormOperands& o, DType dtype, const LinearNormShape& s, cudaStream_t stream, int sms) {
  using namespace linear_norm;
  constexpr int kNH = kN > 256 ? kN / 2 : kN;
  CUtensorMap tx, tw;
  if (!encode_tma_2d(o.x, dtype, s.m, s.k, s.k, kBM, kBK, TmaSwizzle::k128B, &tx).ok()) return false;
  if (!encode_tma_2d(o.w, dtype, s.n, s.k, s.k, kNH, kBK, TmaSwizzle::k128B, &tw).ok()) return false;
  Params p{};
  p.m = static_cast<int>(s.m);
  p.n = static_cast<int>(s.n);
  p.kblocks = static_cast<int>(s.k / kBK);
  p.stages = stages_for(s);
  p.tiles = static_cast<int>((s.m + kBM - 1) / kBM);
  p.bias = o.bias, p.residual = o.residual, p.gamma = o.gamma, p.beta = o.beta;
  p.y = o.y, p.normed = o.normed, p.eps = o.eps;
  const size_t smem = static_cast<size_t>(p.kblocks) * kN * 128 + static_cast<size_t>(p.stages) * kAStageBytes + 1024;
  auto* kernel = linear_norm_kernel<T, kN>;
  static std::atomic<int> attr_state[kMaxDevices];  // per device: 0 unset, 1 set, 2 failed
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= kMaxDevices) return false;
  if (attr_state[dev].load() == 0) {
    const bool ok = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(kSmemLimit - 256)) == cudaSuccess;
    (void)cudaGetLastError();
    attr_state[dev].store(ok ? 1 : 2);
  }
  if (attr_state[dev].load() != 1) return false;
  const unsigned grid = static_cast<unsigned>(std::min(p.tiles, sms));
  if (try_launch_kernel(kernel, dim3(grid), dim3(kThreads), smem, stream, tx, tw, p) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return cudaGetLastError() == cudaSuccess;
}

template <typename T>
bool launch_width(const LinearNormOperands& o, DType dtype, const LinearNormShape& s, cudaStream_t stream, int sms) {
  switch (s.n) {
    case 128: return launch_typed<T, 128>(o, dtype, s, stream, sms);
    case 160: return launch_typed<T, 160>(o, dtype, s, stream, sms);
    case 192: return launch_typed<T, 192>(o, dtype, s, stream, sms);
    case 256: return launch_typed<T, 256>(o, dtype, s, stream, sms);
    case 320: return launch_typed<T, 320>(o, dtype, s, stream, sms);
    default: return false;
  }
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

}  // namespace

bool linear_norm_supported(const LinearNormShape& s, DType dtype) {
  if (dtype != DType::kF16 && dtype != DType::kBF16) return false;
  if (s.n != 128 && s.n != 160 && s.n != 192 && s.n != 256 && s.n != 320) return false;
  if (s.m < 1 || s.m >= (int64_t{1} << 31) - linear_norm::kBM) return false;
  if (s.k < linear_norm::kBK || s.k % linear_norm::kBK != 0 || s.k / linear_norm::kBK > linear_norm::kMaxKBlocks) {
    return false;
  }
  return stages_for(s) >= 2;
}

bool launch_linear_norm(const LinearNormOperands& o, DType dtype, const LinearNormShape& s, cudaStream_t stream) {
  if (!linear_norm_supported(s, dtype)) return false;
  if (!o.x || !o.w || !o.y || !o.normed || !o.gamma || !o.beta) return false;
  const void* ptrs[] = {o.x, o.w, o.y, o.normed, o.bias, o.residual, o.gamma, o.beta};
  for (const void* ptr : ptrs) {
    if (ptr && !aligned16(ptr)) return false;
  }
  const int sms = sm90_multiprocessors();
  if (sms == 0 || !tma_available()) return false;
  if (dtype == DType::kF16) return launch_width<__half>(o, dtype, s, stream, sms);
  return launch_width<__nv_bfloat16>(o, dtype, s, stream, sms);
}

}  // namespace sd::cuda
