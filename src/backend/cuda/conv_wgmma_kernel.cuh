// Device helpers of the Hopper implicit-GEMM convolution (conv_wgmma.cu): TMA tile loads that
// complete on mbarriers (multicast to a cluster too), swizzle-128B shared-memory descriptors,
// wgmma m64n{64,128,256}k16 from shared memory, setmaxnreg. Device code; included by conv_wgmma.cu.
#pragma once

#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "backend/cuda/mbarrier.cuh"

namespace sd::cuda::conv_wgmma {

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define SD_CONV_WGMMA_COMPILED 1
#else
#define SD_CONV_WGMMA_COMPILED 0
#endif

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// mbarriers (shared::cta, 8 bytes each).
__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void fence_mbar_init() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
// One arrival that also announces `bytes` of TMA traffic completing on the barrier.
__device__ __forceinline__ void mbar_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}

__device__ __forceinline__ void prefetch_tensor_map(const CUtensorMap* map) {
  asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(map)) : "memory");
}

// Box of a 2D / 4D tiled tensor map at coordinates (innermost first; out-of-bounds elements are
// zero-filled) into shared memory at `dst`, completing `bar`'s transaction count.
__device__ __forceinline__ void tma_load_2d(uint32_t dst, const CUtensorMap* map, uint32_t bar, int c0, int c1,
                                            uint64_t policy) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint"
      " [%0], [%1, {%3, %4}], [%2], %5;\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(bar), "r"(c0), "r"(c1), "l"(policy)
      : "memory");
}
__device__ __forceinline__ void tma_load_4d(uint32_t dst, const CUtensorMap* map, uint32_t bar, int c0, int c1,
                                            int c2, int c3) {
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%3, %4, %5, %6}], [%2];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(bar), "r"(c0), "r"(c1), "r"(c2), "r"(c3)
      : "memory");
}
// The same box delivered to the same shared-memory offset (and mbarrier) of every CTA of the
// cluster in `mask` (bit = CTA rank).
__device__ __forceinline__ void tma_load_2d_multicast(uint32_t dst, const CUtensorMap* map, uint32_t bar, int c0,
                                                      int c1, uint16_t mask, uint64_t policy) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster"
      ".L2::cache_hint [%0], [%1, {%3, %4}], [%2], %5, %6;\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(bar), "r"(c0), "r"(c1), "h"(mask), "l"(policy)
      : "memory");
}
__device__ __forceinline__ void tma_load_4d_multicast(uint32_t dst, const CUtensorMap* map, uint32_t bar, int c0,
                                                      int c1, int c2, int c3, uint16_t mask) {
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster"
      " [%0], [%1, {%3, %4, %5, %6}], [%2], %7;\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(bar), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "h"(mask)
      : "memory");
}

// Thread-block clusters: this CTA's coordinates inside its cluster, a whole-cluster barrier
// (every thread of every CTA), and an arrive on the mbarrier at the same offset in CTA `rank`.
__device__ __forceinline__ uint32_t cluster_ctaid_x() {
  uint32_t v;
  asm volatile("mov.u32 %0, %%cluster_ctaid.x;\n" : "=r"(v));
  return v;
}
__device__ __forceinline__ uint32_t cluster_ctaid_y() {
  uint32_t v;
  asm volatile("mov.u32 %0, %%cluster_ctaid.y;\n" : "=r"(v));
  return v;
}
__device__ __forceinline__ void cluster_sync() {
  asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void mbar_arrive_cluster(uint32_t bar, uint32_t rank) {
  asm volatile(
      "{\n.reg .b32 r;\nmapa.shared::cluster.u32 r, %0, %1;\n"
      "mbarrier.arrive.release.cluster.shared::cluster.b64 _, [r];\n}\n" ::"r"(bar),
      "r"(rank)
      : "memory");
}

// L2 policy for data read once (the weights): evicted first, so the activations stay resident.
__device__ __forceinline__ uint64_t evict_first_policy() {
  uint64_t p;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(p));
  return p;
}

// Descriptor of a K-major swizzle-128B operand: rows of 64 halves (128 bytes), 8-row groups 1024
// bytes apart (stride byte offset), the leading byte offset unused; the stage base is 1024-byte
// aligned and the k16 slices inside a row are reached by adding 32 bytes to the start address.
__device__ __forceinline__ uint64_t sw128_desc(uint32_t smem_addr) {
  return uint64_t{(smem_addr >> 4) & 0x3FFFu} | (uint64_t{1} << 16) | (uint64_t{1024 >> 4} << 32) |
         (uint64_t{1} << 62);
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Pins accumulator registers here (after a wait): no use of them moves above it.
template <int N>
__device__ __forceinline__ void fence_regs(float (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i])::"memory");
}

template <int kRegs>
__device__ __forceinline__ void setmaxnreg_inc() {
#if SD_CONV_WGMMA_COMPILED
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegs));
#endif
}
template <int kRegs>
__device__ __forceinline__ void setmaxnreg_dec() {
#if SD_CONV_WGMMA_COMPILED
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegs));
#endif
}

#define SD_CONV_WG_D8(i) \
  "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), "+f"(d[i + 6]), \
      "+f"(d[i + 7])

// d[64] += A (64 x 16, smem desc, K-major) * B (16 x 128, smem desc, K-major).
#define SD_CONV_WGMMA_N128(TY)                                                                       \
  asm volatile(                                                                                      \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"                                                   \
      "wgmma.mma_async.sync.aligned.m64n128k16.f32." TY "." TY " {"                                  \
      "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"                                       \
      "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,"                             \
      "%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,"                             \
      "%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63"                              \
      "}, %64, %65, p, 1, 1, 0, 0;\n}\n"                                                           \
      : SD_CONV_WG_D8(0), SD_CONV_WG_D8(8), SD_CONV_WG_D8(16), SD_CONV_WG_D8(24), SD_CONV_WG_D8(32), \
        SD_CONV_WG_D8(40), SD_CONV_WG_D8(48), SD_CONV_WG_D8(56)                                      \
      : "l"(desc_a), "l"(desc_b), "r"(1))

// d[128] += A (64 x 16) * B (16 x 256), as above.
#define SD_CONV_WGMMA_N256(TY)                                                                        \
  asm volatile(                                                                                       \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"                                                   \
      "wgmma.mma_async.sync.aligned.m64n256k16.f32." TY "." TY " {"                                   \
      "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"                                        \
      "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,"                              \
      "%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,"                              \
      "%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63,"                              \
      "%64,%65,%66,%67,%68,%69,%70,%71,%72,%73,%74,%75,%76,%77,%78,%79,"                              \
      "%80,%81,%82,%83,%84,%85,%86,%87,%88,%89,%90,%91,%92,%93,%94,%95,"                              \
      "%96,%97,%98,%99,%100,%101,%102,%103,%104,%105,%106,%107,%108,%109,%110,%111,"                  \
      "%112,%113,%114,%115,%116,%117,%118,%119,%120,%121,%122,%123,%124,%125,%126,%127"               \
      "}, %128, %129, p, 1, 1, 0, 0;\n}\n"                                                            \
      : SD_CONV_WG_D8(0), SD_CONV_WG_D8(8), SD_CONV_WG_D8(16), SD_CONV_WG_D8(24), SD_CONV_WG_D8(32),  \
        SD_CONV_WG_D8(40), SD_CONV_WG_D8(48), SD_CONV_WG_D8(56), SD_CONV_WG_D8(64), SD_CONV_WG_D8(72), \
        SD_CONV_WG_D8(80), SD_CONV_WG_D8(88), SD_CONV_WG_D8(96), SD_CONV_WG_D8(104),                  \
        SD_CONV_WG_D8(112), SD_CONV_WG_D8(120)                                                        \
      : "l"(desc_a), "l"(desc_b), "r"(1))

// d[32] += A (64 x 16) * B (16 x 64), as above.
#define SD_CONV_WGMMA_N64(TY)                                                                        \
  asm volatile(                                                                                      \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"                                                   \
      "wgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY " {"                                   \
      "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"                                       \
      "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31"                              \
      "}, %32, %33, p, 1, 1, 0, 0;\n}\n"                                                           \
      : SD_CONV_WG_D8(0), SD_CONV_WG_D8(8), SD_CONV_WG_D8(16), SD_CONV_WG_D8(24)                     \
      : "l"(desc_a), "l"(desc_b), "r"(1))

template <typename T, int N>
__device__ __forceinline__ void wgmma_ss(float (&d)[N / 2], uint64_t desc_a, uint64_t desc_b) {
#if SD_CONV_WGMMA_COMPILED
  if constexpr (N == 256) {
    if constexpr (std::is_same_v<T, __half>) SD_CONV_WGMMA_N256("f16");
    else SD_CONV_WGMMA_N256("bf16");
  } else if constexpr (N == 128) {
    if constexpr (std::is_same_v<T, __half>) SD_CONV_WGMMA_N128("f16");
    else SD_CONV_WGMMA_N128("bf16");
  } else {
    static_assert(N == 64);
    if constexpr (std::is_same_v<T, __half>) SD_CONV_WGMMA_N64("f16");
    else SD_CONV_WGMMA_N64("bf16");
  }
#endif
}

#undef SD_CONV_WGMMA_N256
#undef SD_CONV_WGMMA_N64
#undef SD_CONV_WGMMA_N128
#undef SD_CONV_WG_D8

}  // namespace sd::cuda::conv_wgmma
