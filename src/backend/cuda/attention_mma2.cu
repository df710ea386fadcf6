// Fused attention, pipelined mma.sync version: each warp owns 16 or 32 query rows (MT = 1 or
// 2 m-tiles, so every K/V fragment read from shared memory feeds MT tensor-core ops), K and V
// tiles of 64 keys are double-buffered with cp.async, fragments come from ldmatrix (V through
// .trans, so V stays row-major), one __syncthreads per tile. 16-byte aligned, d % 8 == 0.
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>

#include "backend/cuda/attention.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_types.cuh"
#include "backend/cuda/pdl.cuh"
#include "backend/cuda/mma_sync.cuh"

namespace sd::cuda {

namespace {

constexpr int kBN = 64;        // keys per tile
constexpr int kThreads = 128;  // 4 warps

// Shared memory: K0 V0 K1 V1, each [kBN][ld] halves; the Q tile is staged in K1|V1 first.
// ld = DP + 8: (DP + 8) / 8 is odd for DP % 16 == 0, so the 8 row addresses of an ldmatrix
// phase fall in distinct 16-byte bank groups.
template <int DP, int MT>
struct Mma2Cfg {
  static constexpr int kLd = DP + 8;
  static constexpr int kBM = 4 * 16 * MT;  // queries per block
  static constexpr int kTile = kBN * kLd;  // halves of one K or V tile
  static constexpr size_t kBytes = size_t{4} * kTile * 2;
  static_assert(kBM <= 2 * kBN, "the Q tile is staged in one K/V stage");
};

using namespace sm80;

// rows x DP halves from global rows `src` (row stride `stride`) -> dst [rows][ld], issued as
// cp.async; rows >= valid_rows and columns >= d are zero-filled (src_base is a safe address).
template <int DP, int kRows, typename T>
__device__ __forceinline__ void load_async(T* dst, const T* src, int64_t stride, int valid_rows, int d) {
  constexpr int kLd = DP + 8, kChunks = DP / 8;
  for (int idx = threadIdx.x; idx < kRows * kChunks; idx += kThreads) {
    const int r = idx / kChunks, c = (idx % kChunks) * 8;
    const bool ok = r < valid_rows && c < d;
    cp_async16(smem_addr(dst + r * kLd + c), ok ? src + r * stride + c : src, ok);
  }
}

// q [B, Lq, H*D], k/v [B, Lk, H*D] -> o [B, Lq, H*D]; q rows q_stride apart, k/v rows kv_stride
// (elements, multiples of 8). Grid (ceil(Lq/kBM), H, B), 128 threads.
// mma.m16n8k16 fragments: lane = 4*g + t; A (row g | g+8, cols 2t,2t+1 | +8), B (k 2t,2t+1 |
// +8, n g), C (row g | g+8, cols 2t,2t+1). Warp w owns rows [w*16*MT, (w+1)*16*MT).
template <typename T, int DP, int MT>
__global__ void __launch_bounds__(kThreads) attention_mma2_kernel(const T* __restrict__ q, const T* __restrict__ k,
                                                                  const T* __restrict__ v, T* __restrict__ o, int lq,
                                                                  int lk, int heads, int d, int64_t q_stride,
                                                                  int64_t kv_stride, float scale_log2, bool causal) {
  pdl_wait();  // PDL (pdl.cuh): first, in every CTA
  pdl_trigger();
  using C = Mma2Cfg<DP, MT>;
  constexpr int kLd = C::kLd, kBM = C::kBM, kTile = C::kTile;
  constexpr int kDF = DP / 16;  // k-steps of Q K^T
  constexpr int kDN = DP / 8;   // 8-wide column blocks of O
  extern __shared__ __align__(128) unsigned char smem[];
  T* sbase = reinterpret_cast<T*>(smem);

  const int b = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * kBM;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;
  const int64_t rs = int64_t{heads} * d;  // output row stride
  const int64_t kvs = kv_stride;
  const T* kb = k + int64_t{b} * lk * kvs + int64_t{h} * d;
  const T* vb = v + int64_t{b} * lk * kvs + int64_t{h} * d;
  const int kv_end = causal ? min(lk, q0 + kBM) : lk;
  const int ntiles = (kv_end + kBN - 1) / kBN;

  // Q -> stage 1 (K1|V1), tile 0 -> stage 0, one group; Q fragments -> registers.
  load_async<DP, kBM>(sbase + 2 * kTile, q + (int64_t{b} * lq + q0) * q_stride + int64_t{h} * d, q_stride,
                      min(kBM, lq - q0), d);
  load_async<DP, kBN>(sbase, kb, kvs, min(kBN, lk), d);
  load_async<DP, kBN>(sbase + kTile, vb, kvs, min(kBN, lk), d);
  cp_async_commit();
  cp_async_wait_all();
  __syncthreads();
  uint32_t qa[MT][kDF][4];
  {
    const uint32_t qs = smem_addr(sbase + 2 * kTile);
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      const int row = warp * 16 * MT + mt * 16 + (lane % 8) + ((lane / 8) % 2) * 8;
#pragma unroll
      for (int f = 0; f < kDF; ++f) ldsm_x4(qa[mt][f], qs + (row * kLd + f * 16 + (lane / 16) * 8) * 2);
    }
  }
  __syncthreads();  // stage 1 is free for tile 1

  float acc[MT][kDN][4];
  float m_row[MT][2], l_row[MT][2];  // running max (raw score units) and this lane's share of the sums
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int n = 0; n < kDN; ++n) acc[mt][n][0] = acc[mt][n][1] = acc[mt][n][2] = acc[mt][n][3] = 0.f;
    m_row[mt][0] = m_row[mt][1] = -INFINITY;
    l_row[mt][0] = l_row[mt][1] = 0.f;
  }
  const int row0 = q0 + warp * 16 * MT + g;  // query of (mt = 0, row g); + mt*16, + 8

  for (int it = 0; it < ntiles; ++it) {
    const int kv0 = it * kBN;
    if (it + 1 < ntiles) {  // prefetch the next tile into the other stage
      const int nk = kv0 + kBN;
      T* dst = sbase + ((it + 1) & 1) * 2 * kTile;
      load_async<DP, kBN>(dst, kb + int64_t{nk} * kvs, kvs, min(kBN, lk - nk), d);
      load_async<DP, kBN>(dst + kTile, vb + int64_t{nk} * kvs, kvs, min(kBN, lk - nk), d);
    }
    cp_async_commit();
    const uint32_t ks = smem_addr(sbase + (it & 1) * 2 * kTile);
    const uint32_t vs = ks + kTile * 2;

    // S [MT*16 x 64] = Q K^T; each ldmatrix.x4 gives B fragments of two 8-key blocks.
    float s[MT][8][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
      for (int nb = 0; nb < 8; ++nb) s[mt][nb][0] = s[mt][nb][1] = s[mt][nb][2] = s[mt][nb][3] = 0.f;
    }
#pragma unroll
    for (int nb2 = 0; nb2 < 4; ++nb2) {
      const int key = nb2 * 16 + (lane / 16) * 8 + (lane % 8);
#pragma unroll
      for (int f = 0; f < kDF; ++f) {
        uint32_t kf[4];
        ldsm_x4(kf, ks + (key * kLd + f * 16 + ((lane / 8) % 2) * 8) * 2);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          mma<T>(s[mt][2 * nb2], qa[mt][f], kf[0], kf[1]);
          mma<T>(s[mt][2 * nb2 + 1], qa[mt][f], kf[2], kf[3]);
        }
      }
    }

    // Masks (only on a ragged last tile or when causal), row max over the quad, rescale.
    if (kv0 + kBN > lk || causal) {
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int nb = 0; nb < 8; ++nb) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int j = kv0 + nb * 8 + 2 * t + (e & 1);
            const int qi = row0 + mt * 16 + (e / 2) * 8;
            if (j >= lk || (causal && j > qi)) s[mt][nb][e] = -INFINITY;
          }
        }
      }
    }
    float m_scaled[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
      for (int row = 0; row < 2; ++row) {
        float mx = -INFINITY;
#pragma unroll
        for (int nb = 0; nb < 8; ++nb) mx = fmaxf(mx, fmaxf(s[mt][nb][2 * row], s[mt][nb][2 * row + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float m_new = fmaxf(m_row[mt][row], mx);
        const float alpha = m_row[mt][row] == -INFINITY ? 0.f : exp2f((m_row[mt][row] - m_new) * scale_log2);
        m_row[mt][row] = m_new;
        m_scaled[mt][row] = m_new == -INFINITY ? 0.f : m_new * scale_log2;  // all masked so far: p = 0
        l_row[mt][row] *= alpha;
#pragma unroll
        for (int n = 0; n < kDN; ++n) {
          acc[mt][n][2 * row] *= alpha;
          acc[mt][n][2 * row + 1] *= alpha;
        }
      }
#pragma unroll
      for (int nb = 0; nb < 8; ++nb) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float p = exp2f(fmaf(s[mt][nb][e], scale_log2, -m_scaled[mt][e / 2]));
          s[mt][nb][e] = p;
          l_row[mt][e / 2] += p;
        }
      }
    }

    // O += P V: P's C fragments become A fragments in place; ldmatrix.trans on row-major V
    // gives B fragments of two 8-column blocks.
#pragma unroll
    for (int kc = 0; kc < 4; ++kc) {
      uint32_t pa[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        pa[mt][0] = pack_pair<T>(s[mt][2 * kc][0], s[mt][2 * kc][1]);
        pa[mt][1] = pack_pair<T>(s[mt][2 * kc][2], s[mt][2 * kc][3]);
        pa[mt][2] = pack_pair<T>(s[mt][2 * kc + 1][0], s[mt][2 * kc + 1][1]);
        pa[mt][3] = pack_pair<T>(s[mt][2 * kc + 1][2], s[mt][2 * kc + 1][3]);
      }
      const int key = kc * 16 + ((lane / 8) % 2) * 8 + (lane % 8);
#pragma unroll
      for (int n2 = 0; n2 < kDN / 2; ++n2) {
        uint32_t vf[4];
        ldsm_x4_trans(vf, vs + (key * kLd + n2 * 16 + (lane / 16) * 8) * 2);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          mma<T>(acc[mt][2 * n2], pa[mt], vf[0], vf[1]);
          mma<T>(acc[mt][2 * n2 + 1], pa[mt], vf[2], vf[3]);
        }
      }
    }

    cp_async_wait_all();  // the next tile has landed ...
    __syncthreads();      // ... and everyone is done with this one
  }

  // Row sums across the quad, normalise, store pairs (d % 8 == 0, rows 4-byte aligned).
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int row = 0; row < 2; ++row) {
      float l = l_row[mt][row];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      const int qi = row0 + mt * 16 + row * 8;
      if (qi >= lq) continue;
      const float inv = l > 0.f ? 1.f / l : 0.f;
      T* orow = o + (int64_t{b} * lq + qi) * rs + int64_t{h} * d;
#pragma unroll
      for (int n = 0; n < kDN; ++n) {
        const int c = n * 8 + 2 * t;
        if (c < d) {
          *reinterpret_cast<uint32_t*>(orow + c) =
              pack_pair<T>(acc[mt][n][2 * row] * inv, acc[mt][n][2 * row + 1] * inv);
        }
      }
    }
  }
}

template <typename T, int DP, int MT>
void launch(const AttentionArgs& a, cudaStream_t stream) {
  using C = Mma2Cfg<DP, MT>;
  constexpr size_t bytes = C::kBytes;
  SD_CUDA_CHECK(cudaFuncSetAttribute(attention_mma2_kernel<T, DP, MT>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     static_cast<int>(bytes)));
  const float scale_log2 = 1.4426950408889634f / std::sqrt(static_cast<float>(a.d));
  const dim3 grid(static_cast<unsigned>((a.lq + C::kBM - 1) / C::kBM), static_cast<unsigned>(a.heads),
                  static_cast<unsigned>(a.batch));
  launch_kernel(attention_mma2_kernel<T, DP, MT>, grid, kThreads, bytes, stream, static_cast<const T*>(a.q),
      static_cast<const T*>(a.k), static_cast<const T*>(a.v), static_cast<T*>(a.o), a.lq,
      a.lk, a.heads, a.d, a.q_stride, a.kv_stride, scale_log2, a.causal);
  SD_CUDA_LAUNCH_CHECK();
}

// SDSERVE_CUDA_ATTENTION_ROWS=16|32 forces the rows per warp; 0: chosen by shape.
int forced_rows_per_warp() {
  static const int rows = [] {
    const char* env = std::getenv("SDSERVE_CUDA_ATTENTION_ROWS");
    return env ? std::atoi(env) : 0;
  }();
  return rows;
}

// 32 rows per warp halves the shared-memory traffic per tensor-core op but gives half as many
// blocks (and ~250 registers: 2 blocks per SM): used for head dims up to 80 when there are at
// least two such blocks per SM (H100, batch 2: 0.213 vs 0.247 ms at 4096 queries and 512
// blocks; 16 rows won at 160 blocks, perf-notes).
bool use_two_mtiles(const AttentionArgs& a, int dp) {
  const int forced = forced_rows_per_warp();
  if (dp > 80) return false;
  if (forced == 16 || forced == 32) return forced == 32;
  const int64_t blocks = (int64_t{a.lq} + 127) / 128 * a.heads * a.batch;
  return blocks >= 132 * 2;
}

template <typename T, int DP>
void launch_dp(const AttentionArgs& a, cudaStream_t stream) {
  if constexpr (DP <= 80) {
    if (use_two_mtiles(a, DP)) {
      launch<T, DP, 2>(a, stream);
      return;
    }
  }
  launch<T, DP, 1>(a, stream);
}

}  // namespace

void launch_attention_mma2(DType dtype, const AttentionArgs& a, cudaStream_t stream) {
  SD_ASSERT(a.vec && a.d % 8 == 0 && a.d >= 8 && a.d <= kMmaAttentionMaxHeadDim && a.q_stride % 8 == 0 &&
                a.kv_stride % 8 == 0,
            "mma2 attention: head dim " + std::to_string(a.d) + (a.vec ? "" : " (unaligned)"));
  dispatch_half(dtype, [&](auto tag) {
    using T = decltype(tag);
    const int d = a.d;
    if (d <= 16) launch_dp<T, 16>(a, stream);
    else if (d <= 32) launch_dp<T, 32>(a, stream);
    else if (d <= 48) launch_dp<T, 48>(a, stream);
    else if (d <= 64) launch_dp<T, 64>(a, stream);
    else if (d <= 80) launch_dp<T, 80>(a, stream);
    else if (d <= 96) launch_dp<T, 96>(a, stream);
    else if (d <= 128) launch_dp<T, 128>(a, stream);
    else launch_dp<T, 160>(a, stream);
  });
}

}  // namespace sd::cuda
