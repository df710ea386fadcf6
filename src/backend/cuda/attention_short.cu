// Attention over short key sequences (<= 128 keys: the 77-token cross-attention), mma.sync: each
// CTA loads one head's K and V once and walks many 64-query tiles of that head (persistent over
// queries), the next tile's Q prefetched by cp.async while the current one computes; one pass.
#include <algorithm>
#include <cmath>
#include <string>

#include "backend/cuda/attention.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_types.cuh"
#include "backend/cuda/mma_sync.cuh"
#include "backend/cuda/pdl.cuh"

namespace sd::cuda {

namespace {

using namespace sm80;

constexpr int kThreads = 128;  // 4 warps x 16 query rows
constexpr int kBM = 64;        // queries per tile

// Shared memory: K [kBN][ld], V [kBN][ld], Q [2][kBM][ld] halves; ld = DP + 8 keeps the 8 rows of
// an ldmatrix phase in distinct 16-byte bank groups.
template <int DP, int kBN>
struct ShortCfg {
  static constexpr int kLd = DP + 8;
  static constexpr size_t kBytes = (size_t{2} * kBN + size_t{2} * kBM) * kLd * 2;
};

// rows x DP halves from global rows `src` (stride `stride`) -> dst [rows][ld] as cp.async; rows >=
// valid_rows and columns >= d are zero-filled.
template <int DP, int kRows, typename T>
__device__ __forceinline__ void load_rows(T* dst, const T* src, int64_t stride, int valid_rows, int d) {
  constexpr int kLd = DP + 8, kChunks = DP / 8;
  for (int idx = threadIdx.x; idx < kRows * kChunks; idx += kThreads) {
    const int r = idx / kChunks, c = (idx % kChunks) * 8;
    const bool ok = r < valid_rows && c < d;
    cp_async16(smem_addr(dst + r * kLd + c), ok ? src + r * stride + c : src, ok);
  }
}

// Grid (ctas per head, heads, batch): CTA x of head (b, h) takes query tiles x, x + gridDim.x, ...
// q/o rows q_stride / heads * d apart, k/v rows kv_stride (elements, multiples of 8).
template <typename T, int DP, int kBN>
__global__ void __launch_bounds__(kThreads) attention_short_kernel(const T* __restrict__ q, const T* __restrict__ k,
                                                                   const T* __restrict__ v, T* __restrict__ o, int lq,
                                                                   int lk, int heads, int d, int64_t q_stride,
                                                                   int64_t kv_stride, float scale_log2) {
  pdl_wait();
  pdl_trigger();
  using C = ShortCfg<DP, kBN>;
  constexpr int kLd = C::kLd, kNB = kBN / 8, kDF = DP / 16, kDN = DP / 8;
  extern __shared__ __align__(128) unsigned char smem[];
  T* ks = reinterpret_cast<T*>(smem);
  T* vs = ks + kBN * kLd;
  T* qs = vs + kBN * kLd;  // two Q buffers of kBM rows

  const int b = blockIdx.z, h = blockIdx.y;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int64_t rs = int64_t{heads} * d;
  const int tiles = (lq + kBM - 1) / kBM;
  const T* qb = q + int64_t{b} * lq * q_stride + int64_t{h} * d;
  const auto load_q = [&](int tile, int buf) {
    const int q0 = tile * kBM;
    load_rows<DP, kBM>(qs + buf * kBM * kLd, qb + int64_t{q0} * q_stride, q_stride, min(kBM, lq - q0), d);
  };

  // K, V and the first Q tile: group 0; the second Q tile: group 1.
  int tile = blockIdx.x;
  if (tile >= tiles) return;
  load_rows<DP, kBN>(ks, k + int64_t{b} * lk * kv_stride + int64_t{h} * d, kv_stride, lk, d);
  load_rows<DP, kBN>(vs, v + int64_t{b} * lk * kv_stride + int64_t{h} * d, kv_stride, lk, d);
  load_q(tile, 0);
  cp_async_commit();
  if (tile + static_cast<int>(gridDim.x) < tiles) load_q(tile + gridDim.x, 1);
  cp_async_commit();

  const uint32_t k_addr = smem_addr(ks), v_addr = smem_addr(vs);
  for (int it = 0; tile < tiles; tile += gridDim.x, ++it) {
    const int buf = it & 1;
    cp_async_wait<1>();  // this tile's group has landed (the next one may be in flight)
    __syncthreads();
    uint32_t qa[kDF][4];
    {
      const uint32_t qaddr = smem_addr(qs + buf * kBM * kLd);
      const int row = warp * 16 + (lane % 8) + ((lane / 8) % 2) * 8;
#pragma unroll
      for (int f = 0; f < kDF; ++f) ldsm_x4(qa[f], qaddr + (row * kLd + f * 16 + (lane / 16) * 8) * 2);
    }
    __syncthreads();  // every warp has its Q fragments: the buffer takes the tile after next
    if (tile + 2 * static_cast<int>(gridDim.x) < tiles) load_q(tile + 2 * gridDim.x, buf);
    cp_async_commit();

    // S [16 x kBN] = Q K^T.
    float s[kNB][4];
#pragma unroll
    for (int nb = 0; nb < kNB; ++nb) s[nb][0] = s[nb][1] = s[nb][2] = s[nb][3] = 0.f;
#pragma unroll
    for (int nb2 = 0; nb2 < kNB / 2; ++nb2) {
      const int key = nb2 * 16 + (lane / 16) * 8 + (lane % 8);
#pragma unroll
      for (int f = 0; f < kDF; ++f) {
        uint32_t kf[4];
        ldsm_x4(kf, k_addr + (key * kLd + f * 16 + ((lane / 8) % 2) * 8) * 2);
        mma<T>(s[2 * nb2], qa[f], kf[0], kf[1]);
        mma<T>(s[2 * nb2 + 1], qa[f], kf[2], kf[3]);
      }
    }
    // Softmax over the lk keys in one pass (rows g, g + 8 of the warp's 16; quads share a row).
    float sum[2];
#pragma unroll
    for (int row = 0; row < 2; ++row) {
      float mx = -INFINITY;
#pragma unroll
      for (int nb = 0; nb < kNB; ++nb) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          if (nb * 8 + 2 * t + e >= lk) s[nb][2 * row + e] = -INFINITY;
          mx = fmaxf(mx, s[nb][2 * row + e]);
        }
      }
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_scaled = mx * scale_log2;
      float l = 0.f;
#pragma unroll
      for (int nb = 0; nb < kNB; ++nb) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const float p = exp2f(fmaf(s[nb][2 * row + e], scale_log2, -m_scaled));
          s[nb][2 * row + e] = p;
          l += p;
        }
      }
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      sum[row] = l;
    }
    // O [16 x DP] = P V: P's C fragments become A fragments; V through ldmatrix.trans.
    float acc[kDN][4];
#pragma unroll
    for (int n = 0; n < kDN; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
#pragma unroll
    for (int kc = 0; kc < kNB / 2; ++kc) {
      uint32_t pa[4];
      pa[0] = pack_pair<T>(s[2 * kc][0], s[2 * kc][1]);
      pa[1] = pack_pair<T>(s[2 * kc][2], s[2 * kc][3]);
      pa[2] = pack_pair<T>(s[2 * kc + 1][0], s[2 * kc + 1][1]);
      pa[3] = pack_pair<T>(s[2 * kc + 1][2], s[2 * kc + 1][3]);
      const int key = kc * 16 + ((lane / 8) % 2) * 8 + (lane % 8);
#pragma unroll
      for (int n2 = 0; n2 < kDN / 2; ++n2) {
        uint32_t vf[4];
        ldsm_x4_trans(vf, v_addr + (key * kLd + n2 * 16 + (lane / 16) * 8) * 2);
        mma<T>(acc[2 * n2], pa, vf[0], vf[1]);
        mma<T>(acc[2 * n2 + 1], pa, vf[2], vf[3]);
      }
    }
    // Normalise and store pairs.
#pragma unroll
    for (int row = 0; row < 2; ++row) {
      const int qi = tile * kBM + warp * 16 + g + row * 8;
      if (qi >= lq) continue;
      const float inv = 1.f / sum[row];
      T* orow = o + (int64_t{b} * lq + qi) * rs + int64_t{h} * d;
#pragma unroll
      for (int n = 0; n < kDN; ++n) {
        const int c = n * 8 + 2 * t;
        if (c < d) {
          *reinterpret_cast<uint32_t*>(orow + c) =
              pack_pair<T>(acc[n][2 * row] * inv, acc[n][2 * row + 1] * inv);
        }
      }
    }
  }
}

template <typename T, int DP, int kBN>
void launch(const AttentionArgs& a, cudaStream_t stream) {
  using C = ShortCfg<DP, kBN>;
  auto* kernel = attention_short_kernel<T, DP, kBN>;
  SD_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(C::kBytes)));
  int device = 0, sms = 132;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) {
    (void)cudaGetLastError();
    sms = 132;
  }
  // About four CTAs per multiprocessor in all: each head's query tiles are shared among
  // ceil(4 * SMs / heads) CTAs (at least one tile each).
  const int64_t tiles = (a.lq + kBM - 1) / kBM, pairs = int64_t{a.batch} * a.heads;
  const int64_t per_head = std::clamp<int64_t>((int64_t{4} * sms + pairs - 1) / pairs, 1, tiles);
  const float scale_log2 = 1.4426950408889634f / std::sqrt(static_cast<float>(a.d));
  launch_kernel(kernel, dim3(static_cast<unsigned>(per_head), static_cast<unsigned>(a.heads),
                             static_cast<unsigned>(a.batch)),
                kThreads, C::kBytes, stream, static_cast<const T*>(a.q), static_cast<const T*>(a.k),
                static_cast<const T*>(a.v), static_cast<T*>(a.o), a.lq, a.lk, a.heads, a.d, a.q_stride, a.kv_stride,
                scale_log2);
  SD_CUDA_LAUNCH_CHECK();
}

template <typename T, int DP>
void launch_keys(const AttentionArgs& a, cudaStream_t stream) {
  if (a.lk <= 80) {
    launch<T, DP, 80>(a, stream);
  } else {
    launch<T, DP, 128>(a, stream);
  }
}

}  // namespace

bool launch_attention_short_keys(DType dtype, const AttentionArgs& a, cudaStream_t stream) {
  if (!a.vec || a.causal || a.lq < 1 || a.lk < 1 || a.lk > kShortKeysMax || a.q_stride % 8 != 0 || a.kv_stride % 8 != 0 ||
      a.batch > 65535 || a.heads > 65535) {
    return false;
  }
  const int d = a.d;
  if (d != 40 && d != 64 && d != 80 && d != 128 && d != 160) return false;
  dispatch_half(dtype, [&](auto tag) {
    using T = decltype(tag);
    if (d == 40) launch_keys<T, 48>(a, stream);
    else if (d == 64) launch_keys<T, 64>(a, stream);
    else if (d == 80) launch_keys<T, 80>(a, stream);
    else if (d == 128) launch_keys<T, 128>(a, stream);
    else launch_keys<T, 160>(a, stream);
  });
  return true;
}

}  // namespace sd::cuda
