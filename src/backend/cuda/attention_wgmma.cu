// Fused attention on Hopper tensor cores (wgmma, sm_90a), non-causal, head dims 40, 64, 80:
// each warpgroup owns 64 query rows; K/V tiles of 128 keys are double-buffered in shared memory
// (cp.async); S = Q K^T and O += P V are wgmma (P stays in registers as the A operand).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>

#include "backend/cuda/attention.h"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_types.cuh"

namespace sd::cuda {

namespace {

// Shared-memory operands use the canonical no-swizzle layout: a tile of R rows x C halves
// (C % 8 == 0) is stored as 8-row x 16-byte core matrices, core matrix (row group rg, column
// chunk c) at byte ((rg * C/8) + c) * 128, row r % 8 of it at + 16 * (r % 8). For Q and K
// (K-major operands, C = head dim rounded up to 16) the descriptor's leading byte offset
// (between core matrices along k) is 128 and the stride byte offset (between row groups) is
// C/8 * 128. V [keys x d] is the B operand of P V in MN-major form (transpose bit set): core
// matrices along k (keys) are C/8 * 128 apart (leading), along n (d) 128 apart (stride).
constexpr int kBN = 128;  // keys per tile

template <int D, int WG>
struct WgmmaCfg {
  static constexpr int kDK = (D + 15) / 16 * 16;  // Q K^T depth, zero-filled past D
  static constexpr int kChunksK = kDK / 8, kChunksV = D / 8;
  static constexpr int kBM = 64 * WG;  // queries per block
  static constexpr int kThreads = 128 * WG;
  static constexpr uint32_t kQBytes = uint32_t{kBM} * kDK * 2;
  static constexpr uint32_t kKBytes = uint32_t{kBN} * kDK * 2;
  static constexpr uint32_t kVBytes = uint32_t{kBN} * D * 2;
  static constexpr uint32_t kStageBytes = kKBytes + kVBytes;
  static constexpr uint32_t kBytes = kQBytes + 2 * kStageBytes;
};

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

// rows x (chunks * 8) halves from global rows `src` (row stride `stride` elements) into the
// canonical layout at `dst`: thread slot idx writes bytes [16 idx, 16 idx + 16), i.e. row
// (idx / (8 chunks)) * 8 + idx % 8, chunk (idx / 8) % chunks. Rows >= valid_rows and columns
// >= d are zero-filled.
template <int kRows, int kChunks, int kThreads, typename T>
__device__ __forceinline__ void load_canonical(uint32_t dst, const T* src, int64_t stride, int valid_rows, int d) {
  for (int idx = threadIdx.x; idx < kRows * kChunks; idx += kThreads) {
    const int r = (idx / (8 * kChunks)) * 8 + idx % 8, c = (idx / 8) % kChunks;
    const bool ok = r < valid_rows && c * 8 < d;
    cp_async16(dst + idx * 16, ok ? src + r * stride + c * 8 : src, ok);
  }
}

// Descriptor bits of the layout (address field left 0): leading / stride byte offsets, no swizzle.
__host__ __device__ constexpr uint64_t desc_bits(uint32_t leading_bytes, uint32_t stride_bytes) {
  return (uint64_t{(leading_bytes >> 4) & 0x3FFFu} << 16) | (uint64_t{(stride_bytes >> 4) & 0x3FFFu} << 32);
}
__device__ __forceinline__ uint64_t make_desc(uint64_t bits, uint32_t smem_addr) {
  return bits | uint64_t{(smem_addr >> 4) & 0x3FFFu};
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Pins accumulator registers at this point (after a wait): no use of them moves above it.
template <int N>
__device__ __forceinline__ void fence_regs(float (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i])::"memory");
}
__device__ __forceinline__ void fence_proxy_async() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

template <typename T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  if constexpr (std::is_same_v<T, __half>) {
    const __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&h);
  } else {
    const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&h);
  }
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define SD_WGMMA_COMPILED 1
#else
#define SD_WGMMA_COMPILED 0
#endif

// Operand lists of the wgmma forms used here (accumulators d[], f32).
#define SD_WGMMA_SS_N128(TY) \
  asm volatile( \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n" \
      "wgmma.mma_async.sync.aligned.m64n128k16.f32." TY "." TY " {" \
      "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15," \
      "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31," \
      "%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47," \
      "%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63" \
      "}, %64, %65, p, 1, 1, 0, 0;\n}\n" \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), \
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), \
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), \
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), \
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), \
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), \
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]) \
      : "l"(desc_a), "l"(desc_b), "r"(scale_d))

#define SD_WGMMA_RS_N40(TY) \
  asm volatile( \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %25, 0;\n" \
      "wgmma.mma_async.sync.aligned.m64n40k16.f32." TY "." TY " {" \
      "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15," \
      "%16,%17,%18,%19" \
      "}, {%20,%21,%22,%23}, %24, p, 1, 1, 1;\n}\n" \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), \
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]) \
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(1))

#define SD_WGMMA_RS_N64(TY) \
  asm volatile( \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n" \
      "wgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY " {" \
      "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15," \
      "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31" \
      "}, {%32,%33,%34,%35}, %36, p, 1, 1, 1;\n}\n" \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), \
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), \
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]) \
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(1))

#define SD_WGMMA_RS_N80(TY) \
  asm volatile( \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %45, 0;\n" \
      "wgmma.mma_async.sync.aligned.m64n80k16.f32." TY "." TY " {" \
      "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15," \
      "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31," \
      "%32,%33,%34,%35,%36,%37,%38,%39" \
      "}, {%40,%41,%42,%43}, %44, p, 1, 1, 1;\n}\n" \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), \
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), \
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), \
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]) \
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(1))


// d[64] (+)= A (64 x 16, smem desc) * B (16 x 128, smem desc, K-major); scale_d 0 overwrites.
template <typename T>
__device__ __forceinline__ void wgmma_ss_n128(float (&d)[64], uint64_t desc_a, uint64_t desc_b, int scale_d) {
#if SD_WGMMA_COMPILED
  if constexpr (std::is_same_v<T, __half>) SD_WGMMA_SS_N128("f16");
  else SD_WGMMA_SS_N128("bf16");
#endif
}

// d[N/2] += A (64 x 16, registers) * B (16 x N, smem desc, MN-major).
template <typename T, int N>
__device__ __forceinline__ void wgmma_rs(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t desc_b) {
#if SD_WGMMA_COMPILED
  if constexpr (N == 40) {
    if constexpr (std::is_same_v<T, __half>) SD_WGMMA_RS_N40("f16");
    else SD_WGMMA_RS_N40("bf16");
  } else if constexpr (N == 64) {
    if constexpr (std::is_same_v<T, __half>) SD_WGMMA_RS_N64("f16");
    else SD_WGMMA_RS_N64("bf16");
  } else {
    static_assert(N == 80);
    if constexpr (std::is_same_v<T, __half>) SD_WGMMA_RS_N80("f16");
    else SD_WGMMA_RS_N80("bf16");
  }
#endif
}

// One online-softmax step over NB 8-key blocks of S accumulators s[4 NB] (keys key0 + 8 i + 2 t
// + e % 2 for element 4 i + e): masks keys >= lk, updates the row maxima m0 / m1 (raw score
// units; rows g, g + 8) and this thread's row sums l0 / l1, returns the factors alpha0 / alpha1
// for the output so far, and writes P as the A fragments of NB / 2 k16 steps.
template <typename T, int NB>
__device__ __forceinline__ void softmax_step(float (&s)[4 * NB], int key0, int lk, int t, float scale_log2,
                                             float& m0, float& m1, float& l0, float& l1, float& alpha0,
                                             float& alpha1, uint32_t (&p)[NB / 2][4]) {
  if (key0 + 8 * NB > lk) {  // ragged last tile: keys >= lk do not exist
#pragma unroll
    for (int i = 0; i < NB; ++i) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        if (key0 + 8 * i + 2 * t + (e & 1) >= lk) s[4 * i + e] = -INFINITY;
      }
    }
  }
  float mx0 = m0, mx1 = m1;
#pragma unroll
  for (int i = 0; i < NB; ++i) {
    mx0 = fmaxf(mx0, fmaxf(s[4 * i], s[4 * i + 1]));
    mx1 = fmaxf(mx1, fmaxf(s[4 * i + 2], s[4 * i + 3]));
  }
  mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
  mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
  mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
  mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
  // The first key of a tile exists, so the maxima are finite after it; exp2(-inf) = 0.
  alpha0 = exp2f((m0 - mx0) * scale_log2);
  alpha1 = exp2f((m1 - mx1) * scale_log2);
  m0 = mx0;
  m1 = mx1;
  const float ms0 = mx0 * scale_log2, ms1 = mx1 * scale_log2;
  float sum0 = 0.f, sum1 = 0.f;
#pragma unroll
  for (int i = 0; i < NB; ++i) {
    const float p0 = exp2f(fmaf(s[4 * i], scale_log2, -ms0)), p1 = exp2f(fmaf(s[4 * i + 1], scale_log2, -ms0));
    const float p2 = exp2f(fmaf(s[4 * i + 2], scale_log2, -ms1)), p3 = exp2f(fmaf(s[4 * i + 3], scale_log2, -ms1));
    sum0 += p0 + p1;
    sum1 += p2 + p3;
    p[i / 2][(i % 2) * 2] = pack2<T>(p0, p1);
    p[i / 2][(i % 2) * 2 + 1] = pack2<T>(p2, p3);
  }
  l0 = l0 * alpha0 + sum0;
  l1 = l1 * alpha1 + sum1;
}

// Output accumulators: rows g (elements 4 i, 4 i + 1) times a0, rows g + 8 times a1.
template <int N>
__device__ __forceinline__ void scale_rows(float (&acc)[N], float a0, float a1) {
#pragma unroll
  for (int i = 0; i < N / 4; ++i) {
    acc[4 * i] *= a0;
    acc[4 * i + 1] *= a0;
    acc[4 * i + 2] *= a1;
    acc[4 * i + 3] *= a1;
  }
}

// q [B, Lq, H*D] (rows q_stride apart), k/v [B, Lk, H*D] (rows kv_stride apart) -> o [B, Lq,
// H*D] contiguous. Grid (ceil(Lq / 64 WG), H, B), 128 WG threads. Accumulator fragments
// (per warp w of a warpgroup, lane = 4 g + t): element 4 i + e is row 16 w + g + 8 (e / 2),
// column 8 i + 2 t + e % 2; the register A fragment of a k16 step takes the same rows.
template <typename T, int D, int WG>
__global__ void __launch_bounds__(128 * WG, D <= 64 ? 2 : 1)
    attention_wgmma_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                           T* __restrict__ o, int lq, int lk, int heads, int64_t q_stride, int64_t kv_stride,
                           float scale_log2, uint64_t qk_bits, uint64_t v_bits) {
#if SD_WGMMA_COMPILED
  using C = WgmmaCfg<D, WG>;
  constexpr int kSteps = C::kDK / 16;
  constexpr int kOut = D / 2;  // output accumulators per thread
  extern __shared__ __align__(128) unsigned char smem[];
  const uint32_t sq = smem_u32(smem);
  const uint32_t sstage = sq + C::kQBytes;

  const int b = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * C::kBM;
  const int wg = threadIdx.x / 128, warp = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;
  const T* kb = k + int64_t{b} * lk * kv_stride + int64_t{h} * D;
  const T* vb = v + int64_t{b} * lk * kv_stride + int64_t{h} * D;
  const int ntiles = (lk + kBN - 1) / kBN;

  load_canonical<C::kBM, C::kChunksK, C::kThreads>(sq, q + (int64_t{b} * lq + q0) * q_stride + int64_t{h} * D,
                                                   q_stride, min(C::kBM, lq - q0), D);
  load_canonical<kBN, C::kChunksK, C::kThreads>(sstage, kb, kv_stride, min(kBN, lk), D);
  load_canonical<kBN, C::kChunksV, C::kThreads>(sstage + C::kKBytes, vb, kv_stride, min(kBN, lk), D);
  cp_async_commit();

  float acc[kOut];
#pragma unroll
  for (int i = 0; i < kOut; ++i) acc[i] = 0.f;
  float m0 = -INFINITY, m1 = -INFINITY;  // running row maxima (raw score units), rows g and g + 8
  float l0 = 0.f, l1 = 0.f;              // this thread's share of the row sums
  const uint32_t q_tile = sq + uint32_t(wg) * 64 * C::kDK * 2;

  for (int it = 0; it < ntiles; ++it) {
    cp_async_wait_all();  // tile `it` has landed (this thread's part)
    fence_proxy_async();  // ... and is visible to the tensor cores
    __syncthreads();      // everyone's part; everyone is also done with tile it - 1
    if (it + 1 < ntiles) {
      const int nk = (it + 1) * kBN;
      const uint32_t dst = sstage + ((it + 1) & 1) * C::kStageBytes;
      load_canonical<kBN, C::kChunksK, C::kThreads>(dst, kb + int64_t{nk} * kv_stride, kv_stride,
                                                    min(kBN, lk - nk), D);
      load_canonical<kBN, C::kChunksV, C::kThreads>(dst + C::kKBytes, vb + int64_t{nk} * kv_stride, kv_stride,
                                                    min(kBN, lk - nk), D);
    }
    cp_async_commit();
    const uint32_t ks = sstage + (it & 1) * C::kStageBytes;
    const uint32_t vs = ks + C::kKBytes;
    const int kv0 = it * kBN;
    constexpr uint32_t kVStep = 2 * C::kChunksV * 128;  // bytes of 16 V rows

    // S [64 x 128] = Q K^T over kSteps k16 steps (2 chunks = 256 bytes each), then P V.
    float s[64];
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kSteps; ++kk) {
      wgmma_ss_n128<T>(s, make_desc(qk_bits, q_tile + kk * 256), make_desc(qk_bits, ks + kk * 256), kk > 0);
    }
    wgmma_commit();
    wgmma_wait<0>();
    fence_regs(s);
    uint32_t pa[8][4];
    float a0, a1;
    softmax_step<T, 16>(s, kv0, lk, t, scale_log2, m0, m1, l0, l1, a0, a1, pa);
    scale_rows(acc, a0, a1);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < 8; ++kk) wgmma_rs<T, D>(acc, pa[kk], make_desc(v_bits, vs + kk * kVStep));
    wgmma_commit();
    wgmma_wait<0>();
    fence_regs(acc);
  }

  l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
  l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
  const float inv0 = 1.f / l0, inv1 = 1.f / l1;
  const int64_t os = int64_t{heads} * D;
  const int r0 = q0 + wg * 64 + warp * 16 + g;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int row = r0 + 8 * half;
    if (row < lq) {
      T* orow = o + (int64_t{b} * lq + row) * os + int64_t{h} * D;
      const float inv = half ? inv1 : inv0;
#pragma unroll
      for (int i = 0; i < kOut / 4; ++i) {
        *reinterpret_cast<uint32_t*>(orow + 8 * i + 2 * t) =
            pack2<T>(acc[4 * i + 2 * half] * inv, acc[4 * i + 2 * half + 1] * inv);
      }
    }
  }
#endif
}

// Writes 1 where this binary holds the sm_90a (wgmma) build of the kernels.
__global__ void wgmma_probe_kernel(int* out) { *out = SD_WGMMA_COMPILED; }

// Per device: 0 unknown, 1 wgmma kernels usable, 2 not (not a 9.0 device or no sm_90a code).
std::atomic<int> g_supported[64];

int probe_device(int device) {
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, device) != cudaSuccess || prop.major != 9 || prop.minor != 0) return 2;
  int* flag = nullptr;
  int host = 0;
  if (cudaMalloc(&flag, sizeof(int)) != cudaSuccess) return 2;
  wgmma_probe_kernel<<<1, 1>>>(flag);
  const bool ok = cudaGetLastError() == cudaSuccess &&
                  cudaMemcpy(&host, flag, sizeof(int), cudaMemcpyDeviceToHost) == cudaSuccess;
  cudaFree(flag);
  return ok && host == 1 ? 1 : 2;
}

template <typename T, int D>
void launch(const AttentionArgs& a, cudaStream_t stream) {
  constexpr int WG = 2;  // H100: 2 warpgroups per block beat 1 (independent blocks) by 1.6x at l4096 d40
  using C = WgmmaCfg<D, WG>;
  const auto kernel = attention_wgmma_kernel<T, D, WG>;
  SD_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(C::kBytes)));
  const float scale_log2 = 1.4426950408889634f / std::sqrt(static_cast<float>(D));
  const uint64_t qk_bits = desc_bits(128, C::kChunksK * 128);  // leading (along k), stride (row groups)
  const uint64_t v_bits = desc_bits(C::kChunksV * 128, 128);   // leading (along keys), stride (along d)
  const dim3 grid(static_cast<unsigned>((a.lq + C::kBM - 1) / C::kBM), static_cast<unsigned>(a.heads),
                  static_cast<unsigned>(a.batch));
  kernel<<<grid, C::kThreads, C::kBytes, stream>>>(static_cast<const T*>(a.q), static_cast<const T*>(a.k),
                                                   static_cast<const T*>(a.v), static_cast<T*>(a.o), a.lq, a.lk,
                                                   a.heads, a.q_stride, a.kv_stride, scale_log2, qk_bits, v_bits);
  SD_CUDA_LAUNCH_CHECK();
}

}  // namespace

bool attention_wgmma_supported(int device) {
  if (device < 0 || device >= 64) return false;
  int state = g_supported[device].load(std::memory_order_acquire);
  if (state == 0) {
    int current = 0;
    if (cudaGetDevice(&current) != cudaSuccess) return false;
    if (current != device && cudaSetDevice(device) != cudaSuccess) return false;
    state = probe_device(device);
    if (current != device) cudaSetDevice(current);
    g_supported[device].store(state, std::memory_order_release);
  }
  return state == 1;
}

bool launch_attention_wgmma(DType dtype, const AttentionArgs& a, cudaStream_t stream) {
  if (a.causal || !a.vec || (a.d != 40 && a.d != 64 && a.d != 80) || a.lq <= 0 || a.lk <= 0) return false;
  if (a.q_stride % 8 != 0 || a.kv_stride % 8 != 0) return false;
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return false;
  int state = device >= 0 && device < 64 ? g_supported[device].load(std::memory_order_acquire) : 2;
  if (state == 0) {
    // The probe synchronizes: not while this stream is being captured.
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(stream, &capture) != cudaSuccess || capture != cudaStreamCaptureStatusNone) return false;
    state = attention_wgmma_supported(device) ? 1 : 2;
  }
  if (state != 1) return false;
  dispatch_half(dtype, [&](auto tag) {
    using T = decltype(tag);
    if (a.d == 40) launch<T, 40>(a, stream);
    else if (a.d == 64) launch<T, 64>(a, stream);
    else launch<T, 80>(a, stream);
  });
  return true;
}

}  // namespace sd::cuda
