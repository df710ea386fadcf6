// Device helpers of the Hopper implicit-GEMM convolution (conv_wgmma.cu) beyond the shared
// wgmma_sm90.cuh: TMA loads multicast to a thread-block cluster, cluster ids / barrier / remote
// mbarrier arrive, and an evict-first L2 policy. Device code; included by conv_wgmma.cu.
#pragma once

#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "backend/cuda/mbarrier.cuh"
#include "backend/cuda/pdl.cuh"
#include "backend/cuda/wgmma_sm90.cuh"

namespace sd::cuda::conv_wgmma {

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
// Arrives on the mbarrier at `bar` in cluster CTA `rank`, with the default semantics (release at
// CTA scope) as CUTLASS's cluster barrier does: the caller's reads of the stage finished at its
// wgmma.wait_group. (Until session 7 this was .release.cluster, suspected by helper H17 of the
// multicast clusters' 2-2.5x slowdown.)
__device__ __forceinline__ void mbar_arrive_cluster(uint32_t bar, uint32_t rank) {
  asm volatile(
      "{\n.reg .b32 r;\nmapa.shared::cluster.u32 r, %0, %1;\n"
      "mbarrier.arrive.shared::cluster.b64 _, [r];\n}\n" ::"r"(bar),
      "r"(rank)
      : "memory");
}

// DSMEM: a float2 store to this CTA's shared memory, and a float4 load from the same offset of
// CTA `rank` of the cluster.
__device__ __forceinline__ void st_shared_f32x2(uint32_t addr, float a, float b) {
  asm volatile("st.shared.v2.f32 [%0], {%1, %2};\n" ::"r"(addr), "f"(a), "f"(b) : "memory");
}
__device__ __forceinline__ float4 ld_cluster_f32x4(uint32_t addr, int rank) {
  float4 v;
  asm volatile(
      "{\n.reg .b32 r;\nmapa.shared::cluster.u32 r, %4, %5;\n"
      "ld.shared::cluster.v4.f32 {%0, %1, %2, %3}, [r];\n}\n"
      : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w)
      : "r"(addr), "r"(rank)
      : "memory");
  return v;
}

// L2 policy for data read once (the weights): evicted first, so the activations stay resident.
__device__ __forceinline__ uint64_t evict_first_policy() {
  uint64_t p;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(p));
  return p;
}

}  // namespace sd::cuda::conv_wgmma
