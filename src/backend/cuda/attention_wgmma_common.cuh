// Shared device helpers of the Hopper wgmma attention kernels (attention_wgmma*.cu): the
// canonical shared-memory operand layout and its cp.async loads, wgmma / mbarrier / named-barrier
// wrappers, and the online-softmax step on wgmma accumulator fragments.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "backend/cuda/attention.h"
#include "backend/cuda/mbarrier.cuh"

namespace sd::cuda {

// Configuration of the warp-specialized kernel (attention_wgmma_pingpong.cu): consumer
// warpgroups of 64 query rows (2; 3 at d 40; 4 at d <= 64, with 64-key tiles), keys per tile
// (128 or 64), and how many consumers take turns issuing wgmmas (named barriers): -1 all of
// them, 2 pairs, 0 none.
struct WgmmaVariant {
  int consumers = 2;
  int keys = 128;
  int group = -1;
};
// Softmax options of the warp-specialized kernel (attention_wgmma_pingpong.cu, which reads them
// from the environment per call): poly / 8 of the exps by polynomial on the FMA pipe (0..4; only
// the 4-consumer 64-key kernel at d 40 has them, the others run 0), and the output rescale:
// 0 every tile, 1 skipped by a warp whose rows' maxima did not change, 2 as 1 with the maxima
// raised only by more than 8 / scale_log2 (so most tiles skip it).
// rowsum_mma (d 40 4-consumer kernel only): the row sums of P come from the P V wgmma (n 48:
// V gets a column of ones) instead of FADDs in the softmax. Defaults: attention_wgmma_pingpong.cu.
struct WgmmaSoftmax {
  int poly = 0;
  int rescale = 0;
  bool rowsum_mma = false;
  bool lazy = false;  // d 40 4-consumer kernel: exp_pack_lazy's fast path (needs rowsum_mma, rescale 2)
  int lazy_limit_log2 = 8;  // its fallback when P exceeds 2^this
  bool tma = true;          // the lazy kernel's K / V by TMA (SDSERVE_CUDA_WGMMA_TMA)
  // The lazy kernel's fallback scales P's rows by powers of two (shift_p_rows) where P is finite,
  // new exps only past f16's range (SDSERVE_CUDA_WGMMA_LAZY_SHIFT=0: always new exps).
  bool lazy_shift = true;
};
// The caller has checked the arguments and the device.
void launch_attention_wgmma_pingpong(DType dtype, const AttentionArgs& a, cudaStream_t stream,
                                     const WgmmaVariant& w);

namespace {

// Shared-memory operands use the canonical no-swizzle layout: a tile of R rows x C halves
// (C % 8 == 0) is stored as 8-row x 16-byte core matrices, core matrix (row group rg, column
// chunk c) at byte ((rg * C/8) + c) * 128, row r % 8 of it at + 16 * (r % 8). For Q and K
// (K-major operands, C = head dim rounded up to 16) the descriptor's leading byte offset
// (between core matrices along k) is 128 and the stride byte offset (between row groups) is
// C/8 * 128. V [keys x d] is the B operand of P V in MN-major form (transpose bit set): core
// matrices along k (keys) are C/8 * 128 apart (leading), along n (d) 128 apart (stride).
constexpr int kBN = 128;  // keys per tile

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
// `tid` is the thread's index among the kThreads loading threads. kKeepPastD: columns >= d are
// left as they are (the ones column of the row-sum-by-MMA V tile) instead of zero-filled.
template <int kRows, int kChunks, int kThreads, typename T, bool kKeepPastD = false>
__device__ __forceinline__ void load_canonical(uint32_t dst, const T* src, int64_t stride, int valid_rows, int d,
                                               int tid) {
  for (int idx = tid; idx < kRows * kChunks; idx += kThreads) {
    const int r = (idx / (8 * kChunks)) * 8 + idx % 8, c = (idx / 8) % kChunks;
    if (kKeepPastD && c * 8 >= d) continue;
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

#define SD_WGMMA_SS_N64(TY) \
  asm volatile( \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n" \
      "wgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY " {" \
      "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15," \
      "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31" \
      "}, %32, %33, p, 1, 1, 0, 0;\n}\n" \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), \
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), \
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]) \
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

#define SD_WGMMA_RS_N48(TY) \
  asm volatile( \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %29, 0;\n" \
      "wgmma.mma_async.sync.aligned.m64n48k16.f32." TY "." TY " {" \
      "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15," \
      "%16,%17,%18,%19,%20,%21,%22,%23" \
      "}, {%24,%25,%26,%27}, %28, p, 1, 1, 1;\n}\n" \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), \
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]) \
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

// d[N/2] (+)= A (64 x 16, smem desc) * B (16 x N, smem desc, K-major); scale_d 0 overwrites.
template <typename T, int N>
__device__ __forceinline__ void wgmma_ss(float (&d)[N / 2], uint64_t desc_a, uint64_t desc_b, int scale_d) {
#if SD_WGMMA_COMPILED
  if constexpr (N == 128) {
    if constexpr (std::is_same_v<T, __half>) SD_WGMMA_SS_N128("f16");
    else SD_WGMMA_SS_N128("bf16");
  } else {
    static_assert(N == 64);
    if constexpr (std::is_same_v<T, __half>) SD_WGMMA_SS_N64("f16");
    else SD_WGMMA_SS_N64("bf16");
  }
#endif
}

// d[N/2] += A (64 x 16, registers) * B (16 x N, smem desc, MN-major).
template <typename T, int N>
__device__ __forceinline__ void wgmma_rs(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t desc_b) {
#if SD_WGMMA_COMPILED
  if constexpr (N == 40) {
    if constexpr (std::is_same_v<T, __half>) SD_WGMMA_RS_N40("f16");
    else SD_WGMMA_RS_N40("bf16");
  } else if constexpr (N == 48) {
    if constexpr (std::is_same_v<T, __half>) SD_WGMMA_RS_N48("f16");
    else SD_WGMMA_RS_N48("bf16");
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

// mbarriers (shared::cta, 8 bytes each) and named barriers.
__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void fence_mbar_init() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
// mbar_wait (blocks until the phase of parity `parity` of `bar` has completed): mbarrier.cuh.
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("{\n.reg .b64 st;\nmbarrier.arrive.shared::cta.b64 st, [%0];\n}\n" ::"r"(bar) : "memory");
}
// One arrival on `bar` once all of this thread's earlier cp.async copies have landed (the
// barrier's expected count includes it: .noinc).
__device__ __forceinline__ void cp_async_mbar_arrive(uint32_t bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void named_bar_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ void named_bar_arrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
// Keeps registers read by an in-flight wgmma (register A operand) alive up to this point.
template <int N, int M>
__device__ __forceinline__ void keep_live(const uint32_t (&r)[N][M]) {
#pragma unroll
  for (int i = 0; i < N; ++i) {
#pragma unroll
    for (int j = 0; j < M; ++j) asm volatile("" ::"r"(r[i][j]) : "memory");
  }
}

// 2^x on the FMA pipe (FlashAttention-4's split of the exps between MUFU and FMA): x clamped to
// >= -126, n = round(x) by the 1.5 * 2^23 magic-number addition, 2^(x - n) by a degree-3 minimax
// polynomial on [-0.5, 0.5] (relative error 7.5e-5, below f16's half ulp 4.9e-4), n added into the
// exponent bits. The __fadd_rn keep the compiler from folding the magic-number rounding away.
__device__ __forceinline__ float exp2_poly(float x) {
  constexpr float kMagic = 12582912.f;  // 1.5 * 2^23: x + kMagic has round(x) in its low mantissa bits
  x = fmaxf(x, -126.f);  // p >= 0.707 (exponent field >= 126): n >= -126 keeps the field >= 0
  const float j = __fadd_rn(x, kMagic);
  const float f = __fadd_rn(x, -__fadd_rn(j, -kMagic));  // x - round(x), in [-0.5, 0.5]
  float p = fmaf(0.0551716685f, f, 0.242611125f);
  p = fmaf(p, f, 0.693260968f);
  p = fmaf(p, f, 0.999928057f);
  return __uint_as_float(__float_as_uint(p) + (__float_as_uint(j) << 23));
}

// Ragged last tile: S elements of keys >= lk (key0 + 8 i + 2 t + e % 2 for element 4 i + e) to -inf.
template <int NB>
__device__ __forceinline__ void mask_keys(float (&s)[4 * NB], int key0, int lk, int t) {
  if (key0 + 8 * NB > lk) {
#pragma unroll
    for (int i = 0; i < NB; ++i) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        if (key0 + 8 * i + 2 * t + (e & 1) >= lk) s[4 * i + e] = -INFINITY;
      }
    }
  }
}

// Online softmax over NB 8-key blocks of S accumulators s[4 NB] (keys key0 + 8 i + 2 t + e % 2
// for element 4 i + e): masks keys >= lk, updates the row maxima m0 / m1 (raw score units; rows
// g, g + 8) and this thread's row sums l0 / l1, returns the factors alpha0 / alpha1 for the
// output so far, and overwrites s with the unnormalized probabilities.
// kPoly (0..4): elements j with j % 8 < kPoly (kPoly / 8 of them) take exp2_poly, the rest
// ex2.approx (MUFU). max_slack (raw score units, >= 0): a row's maximum is only raised when the
// tile's exceeds it by more than this (0: whenever it grows); then alpha is exactly 1 and the
// caller may skip the rescale of the output (probabilities stay <= 2^(max_slack * scale_log2)).
// kRowSum false: l0 / l1 are left alone (the row sums come from the P V MMA's ones column).
template <int NB, int kPoly = 0, bool kRowSum = true>
__device__ __forceinline__ void softmax_exp(float (&s)[4 * NB], int key0, int lk, int t, float scale_log2,
                                            float& m0, float& m1, float& l0, float& l1, float& alpha0,
                                            float& alpha1, float max_slack = 0.f) {
  static_assert(kPoly >= 0 && kPoly <= 4, "kPoly: 0..4 of every 8 elements");
  mask_keys<NB>(s, key0, lk, t);
  // Row maxima as trees (depth log2 NB + 2 instead of a chain of NB dependent FMNMX).
  float t0[NB], t1[NB];
#pragma unroll
  for (int i = 0; i < NB; ++i) {
    t0[i] = fmaxf(s[4 * i], s[4 * i + 1]);
    t1[i] = fmaxf(s[4 * i + 2], s[4 * i + 3]);
  }
#pragma unroll
  for (int step = 1; step < NB; step *= 2) {
#pragma unroll
    for (int i = 0; i + step < NB; i += 2 * step) {
      t0[i] = fmaxf(t0[i], t0[i + step]);
      t1[i] = fmaxf(t1[i], t1[i + step]);
    }
  }
  float mx0 = fmaxf(m0, t0[0]), mx1 = fmaxf(m1, t1[0]);
  mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
  mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
  mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
  mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
  // Keep the old maximum unless the new one exceeds it by more than max_slack (m = -inf: always
  // taken, since the first key of a tile exists and the maxima are finite after it).
  if (!(mx0 > m0 + max_slack)) mx0 = m0;
  if (!(mx1 > m1 + max_slack)) mx1 = m1;
  // exp2(-inf) = 0; exp2(0) = 1 exactly.
  alpha0 = exp2f((m0 - mx0) * scale_log2);
  alpha1 = exp2f((m1 - mx1) * scale_log2);
  m0 = mx0;
  m1 = mx1;
  const float ms0 = mx0 * scale_log2, ms1 = mx1 * scale_log2;
#pragma unroll
  for (int i = 0; i < NB; ++i) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const float x = fmaf(s[4 * i + e], scale_log2, e < 2 ? -ms0 : -ms1);
      s[4 * i + e] = (4 * i + e) % 8 < kPoly ? exp2_poly(x) : exp2f(x);
    }
  }
  if constexpr (kRowSum) {  // row sums as trees too (the same association for every tile)
    float u0[NB], u1[NB];
#pragma unroll
    for (int i = 0; i < NB; ++i) {
      u0[i] = s[4 * i] + s[4 * i + 1];
      u1[i] = s[4 * i + 2] + s[4 * i + 3];
    }
#pragma unroll
    for (int step = 1; step < NB; step *= 2) {
#pragma unroll
      for (int i = 0; i + step < NB; i += 2 * step) {
        u0[i] += u0[i + step];
        u1[i] += u1[i + step];
      }
    }
    l0 = l0 * alpha0 + u0[0];
    l1 = l1 * alpha1 + u1[0];
  }
}

// P (probabilities s[4 NB]) as the register A fragments of NB / 2 k16 steps.
template <typename T, int NB>
__device__ __forceinline__ void pack_p(const float (&s)[4 * NB], uint32_t (&p)[NB / 2][4]) {
#pragma unroll
  for (int i = 0; i < NB; ++i) {
    p[i / 2][(i % 2) * 2] = pack2<T>(s[4 * i], s[4 * i + 1]);
    p[i / 2][(i % 2) * 2 + 1] = pack2<T>(s[4 * i + 2], s[4 * i + 3]);
  }
}

// The softmax's fast path with lazy maxima (the ones-column kernels, which need no row sums):
// P = 2^(s scale_log2 - ms) with the running maxima ms0 / ms1 (rows g, g + 8; scaled units) as
// they are, packed straight into P's register A fragments p; no row maxima are computed. Returns
// true when some element of P exceeds `limit` (a power of two <= 2^15, so P stays finite in f16;
// found by a max tree over the packed pairs): then the tile must take the exact path
// (softmax_exp), which raises those rows' maxima. Masked keys (-inf) give 0.
template <typename T, int NB>
__device__ __forceinline__ bool exp_pack_lazy(const float (&s)[4 * NB], float ms0, float ms1, float scale_log2,
                                              float limit, uint32_t (&p)[NB / 2][4]) {
  using T2 = std::conditional_t<std::is_same_v<T, __half>, __half2, __nv_bfloat162>;
#pragma unroll
  for (int i = 0; i < NB; ++i) {
    p[i / 2][(i % 2) * 2] = pack2<T>(exp2f(fmaf(s[4 * i], scale_log2, -ms0)), exp2f(fmaf(s[4 * i + 1], scale_log2, -ms0)));
    p[i / 2][(i % 2) * 2 + 1] =
        pack2<T>(exp2f(fmaf(s[4 * i + 2], scale_log2, -ms1)), exp2f(fmaf(s[4 * i + 3], scale_log2, -ms1)));
  }
  T2 m[NB / 2];
#pragma unroll
  for (int i = 0; i < NB / 2; ++i) {
    const T2 a = __hmax2(*reinterpret_cast<const T2*>(&p[i][0]), *reinterpret_cast<const T2*>(&p[i][1]));
    const T2 b = __hmax2(*reinterpret_cast<const T2*>(&p[i][2]), *reinterpret_cast<const T2*>(&p[i][3]));
    m[i] = __hmax2(a, b);
  }
#pragma unroll
  for (int step = 1; step < NB / 2; step *= 2) {
#pragma unroll
    for (int i = 0; i + step < NB / 2; i += 2 * step) m[i] = __hmax2(m[i], m[i + step]);
  }
  return __low2float(m[0]) > limit || __high2float(m[0]) > limit;
}

// The lazy path's cheap fallback: instead of new exps under raised maxima, P's rows (packed by
// exp_pack_lazy: words 0 / 2 row g, 1 / 3 row g + 8) whose maximum over the quad exceeds `limit`
// are scaled by 2^-k, k the smallest with max * 2^-k < 1 (k0 / k1; 0 for the other rows); exact in
// f16 / bf16 (a power of two), as is the caller's rescale of the output by the same factor.
// Returns false when some P of this thread's rows overflowed f16 (inf): then only the
// exact path (softmax_exp) gives it. Quad-uniform k (shuffles over the 4 threads of a row).
template <typename T, int NB>
__device__ __forceinline__ bool shift_p_rows(uint32_t (&p)[NB / 2][4], float limit, int& k0, int& k1) {
  using T2 = std::conditional_t<std::is_same_v<T, __half>, __half2, __nv_bfloat162>;
  T2 r0 = *reinterpret_cast<const T2*>(&p[0][0]), r1 = *reinterpret_cast<const T2*>(&p[0][1]);
  r0 = __hmax2(r0, *reinterpret_cast<const T2*>(&p[0][2]));
  r1 = __hmax2(r1, *reinterpret_cast<const T2*>(&p[0][3]));
#pragma unroll
  for (int i = 1; i < NB / 2; ++i) {
    r0 = __hmax2(r0, __hmax2(*reinterpret_cast<const T2*>(&p[i][0]), *reinterpret_cast<const T2*>(&p[i][2])));
    r1 = __hmax2(r1, __hmax2(*reinterpret_cast<const T2*>(&p[i][1]), *reinterpret_cast<const T2*>(&p[i][3])));
  }
  // An inf survives the maxima (a NaN P, from a NaN score, stays in P as in the exact path).
  float x0 = fmaxf(__low2float(r0), __high2float(r0)), x1 = fmaxf(__low2float(r1), __high2float(r1));
  x0 = fmaxf(x0, __shfl_xor_sync(0xffffffffu, x0, 1));
  x1 = fmaxf(x1, __shfl_xor_sync(0xffffffffu, x1, 1));
  x0 = fmaxf(x0, __shfl_xor_sync(0xffffffffu, x0, 2));
  x1 = fmaxf(x1, __shfl_xor_sync(0xffffffffu, x1, 2));
  if (!(x0 <= 65504.f) || !(x1 <= 65504.f)) return false;  // inf: f16 overflow
  // x in [2^n, 2^(n+1)): exponent field n + 127, k = n + 1 puts it in [0.5, 1).
  k0 = x0 > limit ? static_cast<int>(__float_as_uint(x0) >> 23) - 126 : 0;
  k1 = x1 > limit ? static_cast<int>(__float_as_uint(x1) >> 23) - 126 : 0;
  const float f0 = __uint_as_float(static_cast<uint32_t>(127 - k0) << 23);
  const float f1 = __uint_as_float(static_cast<uint32_t>(127 - k1) << 23);
  const uint32_t w0 = pack2<T>(f0, f0), w1 = pack2<T>(f1, f1);
  const T2 h0 = *reinterpret_cast<const T2*>(&w0), h1 = *reinterpret_cast<const T2*>(&w1);
#pragma unroll
  for (int i = 0; i < NB / 2; ++i) {
    *reinterpret_cast<T2*>(&p[i][0]) = __hmul2(*reinterpret_cast<const T2*>(&p[i][0]), h0);
    *reinterpret_cast<T2*>(&p[i][2]) = __hmul2(*reinterpret_cast<const T2*>(&p[i][2]), h0);
    *reinterpret_cast<T2*>(&p[i][1]) = __hmul2(*reinterpret_cast<const T2*>(&p[i][1]), h1);
    *reinterpret_cast<T2*>(&p[i][3]) = __hmul2(*reinterpret_cast<const T2*>(&p[i][3]), h1);
  }
  return true;
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

// Launch parameters shared by the wgmma kernels: softmax scale in log2 units, the smem
// descriptor bits of the Q/K (K-major) and V (MN-major) tiles, the grid (query tiles of C::kBM
// rows, heads, batch). C: the kernel's configuration (kChunksK, kChunksV, kBM).
struct WgmmaLaunch {
  float scale_log2;
  uint64_t qk_bits, v_bits;
  dim3 grid;
};
template <typename C, int D>
WgmmaLaunch wgmma_launch_params(const AttentionArgs& a) {
  WgmmaLaunch l;
  l.scale_log2 = 1.4426950408889634f / std::sqrt(static_cast<float>(D));
  l.qk_bits = desc_bits(128, C::kChunksK * 128);  // leading (along k), stride (row groups)
  l.v_bits = desc_bits(C::kChunksV * 128, 128);   // leading (along keys), stride (along d)
  l.grid = dim3(static_cast<unsigned>((a.lq + C::kBM - 1) / C::kBM), static_cast<unsigned>(a.heads),
                static_cast<unsigned>(a.batch));
  return l;
}

// The end of a warpgroup's rows: sums this thread's row sums l0 / l1 over its quad, divides the
// output accumulators (D / 2 per thread, wgmma's m64nD fragment) and stores rows r0 and r0 + 8
// (r0: the first row of this thread's fragment; rows >= lq are skipped) of o [B, Lq, heads * D].
// acc may hold more columns than D (N / 2 >= D / 2 accumulators): those are not stored.
template <typename T, int D, int N = D>
__device__ __forceinline__ void store_output_rows(T* __restrict__ o, const float (&acc)[N / 2], float l0, float l1,
                                                  int b, int h, int heads, int lq, int r0, int t) {
  l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
  l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
  const float inv0 = 1.f / l0, inv1 = 1.f / l1;
  const int64_t os = int64_t{heads} * D;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int row = r0 + 8 * half;
    if (row < lq) {
      T* orow = o + (int64_t{b} * lq + row) * os + int64_t{h} * D;
      const float inv = half ? inv1 : inv0;
#pragma unroll
      for (int i = 0; i < D / 8; ++i) {
        *reinterpret_cast<uint32_t*>(orow + 8 * i + 2 * t) =
            pack2<T>(acc[4 * i + 2 * half] * inv, acc[4 * i + 2 * half + 1] * inv);
      }
    }
  }
}

}  // namespace
}  // namespace sd::cuda
