// Fused attention on Hopper tensor cores (wgmma, sm_90a), non-causal, head dims 40, 64, 80:
// each warpgroup owns 64 query rows; K/V tiles of 128 keys are double-buffered in shared memory
// (cp.async); S = Q K^T and O += P V are wgmma (P stays in registers as the A operand).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>

#include "backend/cuda/attention.h"
#include "backend/cuda/attention_wgmma_common.cuh"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_types.cuh"
#include "backend/cuda/pdl.cuh"

namespace sd::cuda {

namespace {

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

// q [B, Lq, H*D] (rows q_stride apart), k/v [B, Lk, H*D] (rows kv_stride apart) -> o [B, Lq,
// H*D] contiguous. Grid (ceil(Lq / 64 WG), H, B), 128 WG threads. Accumulator fragments
// (per warp w of a warpgroup, lane = 4 g + t): element 4 i + e is row 16 w + g + 8 (e / 2),
// column 8 i + 2 t + e % 2; the register A fragment of a k16 step takes the same rows.
template <typename T, int D, int WG>
__global__ void __launch_bounds__(128 * WG, D <= 64 ? 2 : 1)
    attention_wgmma_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                           T* __restrict__ o, int lq, int lk, int heads, int64_t q_stride, int64_t kv_stride,
                           float scale_log2, uint64_t qk_bits, uint64_t v_bits) {
  pdl_wait();  // PDL (pdl.cuh): first, in every CTA
  pdl_trigger();
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
                                                   q_stride, min(C::kBM, lq - q0), D, threadIdx.x);
  load_canonical<kBN, C::kChunksK, C::kThreads>(sstage, kb, kv_stride, min(kBN, lk), D, threadIdx.x);
  load_canonical<kBN, C::kChunksV, C::kThreads>(sstage + C::kKBytes, vb, kv_stride, min(kBN, lk), D, threadIdx.x);
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
                                                    min(kBN, lk - nk), D, threadIdx.x);
      load_canonical<kBN, C::kChunksV, C::kThreads>(dst + C::kKBytes, vb + int64_t{nk} * kv_stride, kv_stride,
                                                    min(kBN, lk - nk), D, threadIdx.x);
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
    softmax_exp<16>(s, kv0, lk, t, scale_log2, m0, m1, l0, l1, a0, a1);
    pack_p<T, 16>(s, pa);
    scale_rows(acc, a0, a1);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < 8; ++kk) wgmma_rs<T, D>(acc, pa[kk], make_desc(v_bits, vs + kk * kVStep));
    wgmma_commit();
    wgmma_wait<0>();
    fence_regs(acc);
  }

  store_output_rows<T, D>(o, acc, l0, l1, b, h, heads, lq, q0 + wg * 64 + warp * 16 + g, t);
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
  const WgmmaLaunch l = wgmma_launch_params<C, D>(a);
  launch_kernel(kernel, l.grid, C::kThreads, C::kBytes, stream, static_cast<const T*>(a.q), static_cast<const T*>(a.k),
                                                   static_cast<const T*>(a.v), static_cast<T*>(a.o), a.lq, a.lk,
                                                   a.heads, a.q_stride, a.kv_stride, l.scale_log2, l.qk_bits, l.v_bits);
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

bool launch_attention_wgmma(DType dtype, const AttentionArgs& a, cudaStream_t stream, int consumers) {
  if (consumers != 0 && (consumers != 3 || a.d != 40)) return false;
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
  // SDSERVE_CUDA_WGMMA_KERNEL (read per call): "simple" the kernel above, else the
  // warp-specialized one, "pp<consumers>[b64][ns|pairs]" ("b64" 64-key tiles, "ns" no turns,
  // "pairs" turns in pairs, else all consumers take turns). Default (H100, perf-notes): d 40 / 64
  // "pp4ns" (4 consumers, 64-key tiles, no turns), d 80 "pp2" (2 consumers, 128-key tiles,
  // ping-pong), where 4 consumers spill.
  if (consumers == 3) {
    launch_attention_wgmma_pingpong(dtype, a, stream, WgmmaVariant{3, 64, 0});
    return true;
  }
  const char* variant = std::getenv("SDSERVE_CUDA_WGMMA_KERNEL");
  if (!variant || std::strcmp(variant, "simple") != 0) {
    WgmmaVariant w;
    if (variant && std::strncmp(variant, "pp", 2) == 0 && variant[2] >= '2' && variant[2] <= '4') {
      w.consumers = variant[2] - '0';
      w.keys = std::strstr(variant, "b64") || w.consumers == 4 ? 64 : 128;
      w.group = std::strstr(variant, "ns") ? 0 : std::strstr(variant, "pairs") ? 2 : -1;
    } else if (a.d <= 64) {
      w = WgmmaVariant{4, 64, 0};
    }
    launch_attention_wgmma_pingpong(dtype, a, stream, w);
    return true;
  }
  dispatch_half(dtype, [&](auto tag) {
    using T = decltype(tag);
    if (a.d == 40) launch<T, 40>(a, stream);
    else if (a.d == 64) launch<T, 64>(a, stream);
    else launch<T, 80>(a, stream);
  });
  return true;
}

}  // namespace sd::cuda
