// Fused attention on mma.sync.m16n8k16, first version (synchronous tile loads): each warp owns
// 16 query rows held in registers with the 16x64 scores, softmax state and output; K tiles
// (row-major) and V tiles (transposed) stream through shared memory 64 keys at a time. Head
// dims up to 160; used where the pipelined kernel cannot (d % 8 != 0, unaligned) or with
// SDSERVE_CUDA_ATTENTION=mma1.
#include <cmath>
#include <string>

#include "backend/cuda/attention.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_types.cuh"

namespace sd::cuda {

namespace {

constexpr int kBM = 64;        // query rows per block (16 per warp)
constexpr int kBN = 64;        // keys per tile
constexpr int kThreads = 128;  // 4 warps
constexpr int kLdV = kBN + 8;  // V^T row stride (halves): 36 words, conflict-free 32-bit reads

// Row stride (halves) of the K tile / Q staging buffer: (DP+8)/2 words is an odd multiple of
// 4, so the 8 row groups of a warp's 32-bit fragment reads hit distinct banks.
template <int DP>
__host__ __device__ constexpr int ld_k() {
  return DP + 8;
}

template <int DP>
__host__ __device__ constexpr size_t smem_bytes() {
  return (size_t{kBN} * ld_k<DP>() + size_t{DP} * kLdV) * 2;
}

// D (16x8, f32) += A (16x16, row) * B (16x8, col) for f16 or bf16 operands.
template <typename T>
__device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);

template <>
__device__ __forceinline__ void mma16816<__half>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <>
__device__ __forceinline__ void mma16816<__nv_bfloat16>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                                        uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two f32 -> one 32-bit register of two halves, `lo` in the low 16 bits (lower column).
template <typename T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi);
template <>
__device__ __forceinline__ uint32_t pack2<__half>(float lo, float hi) {
  const __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&h);
}
template <>
__device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&h);
}

// 64 rows x DP cols of `src` (row stride `stride`) -> dst (row stride ld_k<DP>()), zero past
// `valid_rows` and the head dim `d`.
template <typename T, int DP>
__device__ void load_rows(T* __restrict__ dst, const T* __restrict__ src, int64_t stride, int valid_rows, int d,
                          bool vec) {
  constexpr int kLd = ld_k<DP>();
  if (vec) {
    constexpr int kChunks = DP / 8;
    for (int idx = threadIdx.x; idx < kBN * kChunks; idx += kThreads) {
      const int r = idx / kChunks, c = (idx % kChunks) * 8;
      uint4 val = make_uint4(0, 0, 0, 0);
      if (r < valid_rows && c < d) val = *reinterpret_cast<const uint4*>(src + r * stride + c);
      *reinterpret_cast<uint4*>(dst + r * kLd + c) = val;
    }
  } else {
    for (int idx = threadIdx.x; idx < kBN * DP; idx += kThreads) {
      const int r = idx / DP, c = idx % DP;
      dst[r * kLd + c] = (r < valid_rows && c < d) ? src[r * stride + c] : from_f32<T>(0.f);
    }
  }
}

// 64 keys x DP dims of V -> dst transposed [DP][kLdV] (dst[c][key]), zero-padded likewise.
template <typename T, int DP>
__device__ void load_rows_transposed(T* __restrict__ dst, const T* __restrict__ src, int64_t stride, int valid_rows,
                                     int d, bool vec) {
  if (vec) {
    constexpr int kChunks = DP / 8;
    for (int idx = threadIdx.x; idx < kBN * kChunks; idx += kThreads) {
      const int r = idx % kBN, c = (idx / kBN) * 8;  // consecutive threads: consecutive keys
      uint4 val = make_uint4(0, 0, 0, 0);
      if (r < valid_rows && c < d) val = *reinterpret_cast<const uint4*>(src + r * stride + c);
      const T* e = reinterpret_cast<const T*>(&val);
#pragma unroll
      for (int i = 0; i < 8; ++i) dst[(c + i) * kLdV + r] = e[i];
    }
  } else {
    for (int idx = threadIdx.x; idx < kBN * DP; idx += kThreads) {
      const int r = idx % kBN, c = idx / kBN;
      dst[c * kLdV + r] = (r < valid_rows && c < d) ? src[r * stride + c] : from_f32<T>(0.f);
    }
  }
}

// q [B, Lq, H*D], k/v [B, Lk, H*D] -> o [B, Lq, H*D]; q rows q_stride apart, k/v rows kv_stride
// (elements). Grid (ceil(Lq/64), H, B), 128 threads.
// Fragment layouts (PTX ISA, mma.m16n8k16): lane = 4*g + t; A regs hold (row g | g+8,
// cols 2t,2t+1 | +8); B regs (k = 2t,2t+1 | +8, n = g); C holds (row g | g+8, cols 2t,2t+1).
template <typename T, int DP>
__global__ void __launch_bounds__(kThreads) flash_attention_mma_kernel(const T* __restrict__ q,
                                                                       const T* __restrict__ k,
                                                                       const T* __restrict__ v, T* __restrict__ o,
                                                                       int lq, int lk, int heads, int d,
                                                                       int64_t q_stride, int64_t kv_stride,
                                                                       float scale_log2, bool causal, bool vec) {
  constexpr int kLd = ld_k<DP>();
  constexpr int kDF = DP / 16;  // k-steps of Q K^T
  constexpr int kDN = DP / 8;   // n-blocks of the output
  extern __shared__ __align__(128) unsigned char smem[];
  T* ks = reinterpret_cast<T*>(smem);                      // [kBN][kLd] (first: Q staging)
  T* vt = reinterpret_cast<T*>(smem) + size_t{kBN} * kLd;  // [DP][kLdV]
  const uint32_t* ks32 = reinterpret_cast<const uint32_t*>(ks);
  const uint32_t* vt32 = reinterpret_cast<const uint32_t*>(vt);

  const int b = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * kBM;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;
  const int64_t row_stride = int64_t{heads} * d;  // output rows
  const T* kb = k + int64_t{b} * lk * kv_stride + int64_t{h} * d;
  const T* vb = v + int64_t{b} * lk * kv_stride + int64_t{h} * d;

  // Q: staged through the K buffer into A fragments.
  load_rows<T, DP>(ks, q + (int64_t{b} * lq + q0) * q_stride + int64_t{h} * d, q_stride, min(kBM, lq - q0), d, vec);
  __syncthreads();
  uint32_t qa[kDF][4];
  {
    const int r0 = warp * 16 + g;
#pragma unroll
    for (int f = 0; f < kDF; ++f) {
      const int c = f * 16 + 2 * t;
      qa[f][0] = ks32[(r0 * kLd + c) / 2];
      qa[f][1] = ks32[((r0 + 8) * kLd + c) / 2];
      qa[f][2] = ks32[(r0 * kLd + c + 8) / 2];
      qa[f][3] = ks32[((r0 + 8) * kLd + c + 8) / 2];
    }
  }

  float acc[kDN][4];
#pragma unroll
  for (int n = 0; n < kDN; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
  float m_row[2] = {-INFINITY, -INFINITY};  // running max (log2 domain) of rows g, g+8
  float l_row[2] = {0.f, 0.f};              // this thread's share of the running sums
  const int qi[2] = {q0 + warp * 16 + g, q0 + warp * 16 + g + 8};
  const int kv_end = causal ? min(lk, q0 + kBM) : lk;

  for (int kv0 = 0; kv0 < kv_end; kv0 += kBN) {
    __syncthreads();  // previous tile (or the Q staging) fully consumed
    const int valid = min(kBN, lk - kv0);
    load_rows<T, DP>(ks, kb + int64_t{kv0} * kv_stride, kv_stride, valid, d, vec);
    load_rows_transposed<T, DP>(vt, vb + int64_t{kv0} * kv_stride, kv_stride, valid, d, vec);
    __syncthreads();

    // S [16 x 64] = Q K^T: 8 n-blocks of 8 keys.
    float s[8][4];
#pragma unroll
    for (int nb = 0; nb < 8; ++nb) {
      s[nb][0] = s[nb][1] = s[nb][2] = s[nb][3] = 0.f;
      const int key = nb * 8 + g;
#pragma unroll
      for (int f = 0; f < kDF; ++f) {
        const int c = f * 16 + 2 * t;
        mma16816<T>(s[nb], qa[f], ks32[(key * kLd + c) / 2], ks32[(key * kLd + c + 8) / 2]);
      }
    }

    // Mask, scale, row max over the quad (the 4 lanes sharing g hold one row's 64 scores).
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nb = 0; nb < 8; ++nb) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int j = kv0 + nb * 8 + 2 * t + (e & 1);
        const int row = e / 2;
        const bool ok = j < lk && (!causal || j <= qi[row]);
        s[nb][e] = ok ? s[nb][e] * scale_log2 : -INFINITY;
        mx[row] = fmaxf(mx[row], s[nb][e]);
      }
    }
    float alpha[2], m_use[2];
#pragma unroll
    for (int row = 0; row < 2; ++row) {
      mx[row] = fmaxf(mx[row], __shfl_xor_sync(0xffffffffu, mx[row], 1));
      mx[row] = fmaxf(mx[row], __shfl_xor_sync(0xffffffffu, mx[row], 2));
      const float m_new = fmaxf(m_row[row], mx[row]);
      alpha[row] = m_row[row] == -INFINITY ? 0.f : exp2f(m_row[row] - m_new);
      m_use[row] = m_new == -INFINITY ? 0.f : m_new;  // all masked so far: every p is exp2(-inf) = 0
      m_row[row] = m_new;
    }
    float sum[2] = {0.f, 0.f};
#pragma unroll
    for (int nb = 0; nb < 8; ++nb) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[nb][e] = exp2f(s[nb][e] - m_use[e / 2]);
        sum[e / 2] += s[nb][e];
      }
    }
#pragma unroll
    for (int row = 0; row < 2; ++row) l_row[row] = l_row[row] * alpha[row] + sum[row];
#pragma unroll
    for (int n = 0; n < kDN; ++n) {
      acc[n][0] *= alpha[0];
      acc[n][1] *= alpha[0];
      acc[n][2] *= alpha[1];
      acc[n][3] *= alpha[1];
    }

    // O [16 x DP] += P [16 x 64] V [64 x DP]: P's C fragments become A fragments in place.
#pragma unroll
    for (int kc = 0; kc < 4; ++kc) {
      const uint32_t pa[4] = {pack2<T>(s[2 * kc][0], s[2 * kc][1]), pack2<T>(s[2 * kc][2], s[2 * kc][3]),
                              pack2<T>(s[2 * kc + 1][0], s[2 * kc + 1][1]),
                              pack2<T>(s[2 * kc + 1][2], s[2 * kc + 1][3])};
      const int key = kc * 16 + 2 * t;
#pragma unroll
      for (int n = 0; n < kDN; ++n) {
        const int col = n * 8 + g;
        mma16816<T>(acc[n], pa, vt32[(col * kLdV + key) / 2], vt32[(col * kLdV + key + 8) / 2]);
      }
    }
  }

  // Finish the row sums across the quad, normalise, store.
#pragma unroll
  for (int row = 0; row < 2; ++row) {
    l_row[row] += __shfl_xor_sync(0xffffffffu, l_row[row], 1);
    l_row[row] += __shfl_xor_sync(0xffffffffu, l_row[row], 2);
  }
#pragma unroll
  for (int row = 0; row < 2; ++row) {
    if (qi[row] >= lq) continue;
    const float inv = l_row[row] > 0.f ? 1.f / l_row[row] : 0.f;
    T* orow = o + int64_t(int64_t{b} * lq + qi[row]) * row_stride + int64_t{h} * d;
#pragma unroll
    for (int n = 0; n < kDN; ++n) {
      const int c = n * 8 + 2 * t;
      if (c < d) orow[c] = from_f32<T>(acc[n][2 * row] * inv);
      if (c + 1 < d) orow[c + 1] = from_f32<T>(acc[n][2 * row + 1] * inv);
    }
  }
}

template <typename T, int DP>
void launch(const AttentionArgs& a, cudaStream_t stream) {
  constexpr size_t bytes = smem_bytes<DP>();
  SD_CUDA_CHECK(cudaFuncSetAttribute(flash_attention_mma_kernel<T, DP>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     static_cast<int>(bytes)));
  const float scale_log2 = 1.4426950408889634f / std::sqrt(static_cast<float>(a.d));
  const dim3 grid(static_cast<unsigned>((a.lq + kBM - 1) / kBM), static_cast<unsigned>(a.heads),
                  static_cast<unsigned>(a.batch));
  flash_attention_mma_kernel<T, DP><<<grid, kThreads, bytes, stream>>>(
      static_cast<const T*>(a.q), static_cast<const T*>(a.k), static_cast<const T*>(a.v), static_cast<T*>(a.o), a.lq,
      a.lk, a.heads, a.d, a.q_stride, a.kv_stride, scale_log2, a.causal, a.vec);
  SD_CUDA_LAUNCH_CHECK();
}

}  // namespace

void launch_attention_mma(DType dtype, const AttentionArgs& a, cudaStream_t stream) {
  SD_ASSERT(a.d >= 1 && a.d <= kMmaAttentionMaxHeadDim, "mma attention: head dim " + std::to_string(a.d));
  dispatch_half(dtype, [&](auto tag) {
    using T = decltype(tag);
    const int d = a.d;
    if (d <= 16) launch<T, 16>(a, stream);
    else if (d <= 32) launch<T, 32>(a, stream);
    else if (d <= 48) launch<T, 48>(a, stream);
    else if (d <= 64) launch<T, 64>(a, stream);
    else if (d <= 80) launch<T, 80>(a, stream);
    else if (d <= 96) launch<T, 96>(a, stream);
    else if (d <= 128) launch<T, 128>(a, stream);
    else launch<T, 160>(a, stream);
  });
}

}  // namespace sd::cuda
