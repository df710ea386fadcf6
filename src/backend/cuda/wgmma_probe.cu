// wgmma_probe.h: microbenchmarks of m64nNk16 wgmmas (f16 in, f32 accumulators) as the attention
// kernels issue them — Q K^T from shared memory (SS, N 64 or 128, 3 k-steps for d 40) and P V with
// P in registers (RS, N 48, 4 k-steps) — on 1 to 4 warpgroups per SM, one group in flight each.
#include "backend/cuda/wgmma_probe.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "backend/cuda/attention_wgmma_common.cuh"

namespace sd::cuda {

namespace {

// kKind 0: SS n64 x3; 1: SS n128 x3; 2: RS n48 x4; 3: SS n64 x3 then RS n48 x4 (one tile of the
// d40 kernel); 4: SS n128 x6 (a longer chain, reference). Every warpgroup waits for its group before the
// next (as a consumer waits for S). Shared memory: 64 KB of operand tiles, contents arbitrary.
template <int kKind>
__global__ void __launch_bounds__(512, 1) wgmma_probe_kernel(int iterations, float* sink, long long* cycles) {
#if SD_WGMMA_COMPILED
  extern __shared__ __align__(128) unsigned char smem[];
  const uint32_t base = smem_u32(smem);
  for (int i = threadIdx.x; i < 16384; i += blockDim.x) reinterpret_cast<uint32_t*>(smem)[i] = 0x3c003c00u ^ (i * 2654435761u & 0x03ff03ffu);
  __syncthreads();
  const uint64_t bits = desc_bits(128, 6 * 128), vbits = desc_bits(6 * 128, 128);
  float s64[32], s128[64], o48[24];
#pragma unroll
  for (int i = 0; i < 24; ++i) o48[i] = 0.f;
  uint32_t pa[4] = {0x3c003c00u, 0x3c003c00u, 0x3c003c00u, 0x3c003c00u};
  const long long t0 = clock64();
  for (int it = 0; it < iterations; ++it) {
    wgmma_fence();
    if constexpr (kKind == 0 || kKind == 3) {
#pragma unroll
      for (int kk = 0; kk < 3; ++kk) wgmma_ss<__half, 64>(s64, make_desc(bits, base + kk * 256), make_desc(bits, base + 16384 + kk * 256), kk > 0);
    }
    if constexpr (kKind == 1) {
#pragma unroll
      for (int kk = 0; kk < 3; ++kk) wgmma_ss<__half, 128>(s128, make_desc(bits, base + kk * 256), make_desc(bits, base + 16384 + kk * 256), kk > 0);
    }
    if constexpr (kKind == 4) {
#pragma unroll
      for (int kk = 0; kk < 6; ++kk) {
        wgmma_ss<__half, 128>(s128, make_desc(bits, base + (kk % 3) * 256), make_desc(bits, base + 16384 + (kk % 3) * 256), kk > 0);
      }
    }
    if constexpr (kKind == 2 || kKind == 3) {
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) wgmma_rs<__half, 48>(o48, pa, make_desc(vbits, base + 49152 + kk * 1536));
    }
    wgmma_commit();
    wgmma_wait<0>();
    if constexpr (kKind == 0 || kKind == 3) fence_regs(s64);
    if constexpr (kKind == 1 || kKind == 4) fence_regs(s128);
    fence_regs(o48);
  }
  const long long t1 = clock64();
  float acc = 0.f;
#pragma unroll
  for (int i = 0; i < 24; ++i) acc += o48[i];
  if constexpr (kKind == 0 || kKind == 3) {
#pragma unroll
    for (int i = 0; i < 32; ++i) acc += s64[i];
  }
  if constexpr (kKind == 1 || kKind == 4) {
#pragma unroll
    for (int i = 0; i < 64; ++i) acc += s128[i];
  }
  sink[blockIdx.x * blockDim.x + threadIdx.x] = acc;
  if (threadIdx.x == 0 && blockIdx.x == 0) *cycles = t1 - t0;
#endif
}

// Multiply-adds per group per warpgroup of each kind.
double fma_per_group(int kind) {
  switch (kind) {
    case 0: return 3.0 * 64 * 64 * 16;
    case 1: return 3.0 * 64 * 128 * 16;
    case 2: return 4.0 * 64 * 48 * 16;
    case 3: return 3.0 * 64 * 64 * 16 + 4.0 * 64 * 48 * 16;
    default: return 6.0 * 64 * 128 * 16;
  }
}

template <int kKind>
WgmmaProbeResult probe(int warpgroups, int iterations, int sms, float* sink, long long* cycles) {
  const auto kernel = wgmma_probe_kernel<kKind>;
  constexpr int kSmem = 65536;
  cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem);
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  kernel<<<sms, 128 * warpgroups, kSmem>>>(16, sink, cycles);  // warm-up
  cudaEventRecord(a);
  kernel<<<sms, 128 * warpgroups, kSmem>>>(iterations, sink, cycles);
  cudaEventRecord(b);
  cudaEventSynchronize(b);
  float ms = 0.f;
  cudaEventElapsedTime(&ms, a, b);
  long long clk = 0;
  cudaMemcpy(&clk, cycles, sizeof(clk), cudaMemcpyDeviceToHost);
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  static const char* names[] = {"ss m64n64k16 x3 (QK^T, 64 keys, d40)", "ss m64n128k16 x3 (QK^T, 128 keys)",
                                "rs m64n48k16 x4 (P V, d40 + ones)", "ss n64 x3 + rs n48 x4 (one d40 tile)",
                                "ss m64n128k16 x6 (a longer chain; reference)"};
  WgmmaProbeResult r;
  r.name = std::string(names[kKind]) + ", " + std::to_string(warpgroups) + " warpgroup" + (warpgroups > 1 ? "s" : "");
  const double fmas = fma_per_group(kKind) * iterations * warpgroups;  // per SM
  r.tflops = 2.0 * fmas * sms / (ms * 1e-3) * 1e-12;
  r.fma_per_clk_sm = clk > 0 ? fmas / static_cast<double>(clk) : 0.0;
  return r;
}

}  // namespace

std::vector<WgmmaProbeResult> run_wgmma_probes(int iterations) {
  std::vector<WgmmaProbeResult> out;
  int dev = 0, major = 0, minor = 0, sms = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return out;
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
  cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  if (major != 9 || minor != 0 || sms <= 0) return out;
  float* sink = nullptr;
  long long* cycles = nullptr;
  if (cudaMalloc(&sink, sizeof(float) * sms * 512) != cudaSuccess) return out;
  if (cudaMalloc(&cycles, sizeof(long long)) != cudaSuccess) {
    cudaFree(sink);
    return out;
  }
  for (int wg : {1, 2, 4}) {
    out.push_back(probe<0>(wg, iterations, sms, sink, cycles));
    out.push_back(probe<1>(wg, iterations, sms, sink, cycles));
    out.push_back(probe<2>(wg, iterations, sms, sink, cycles));
    out.push_back(probe<3>(wg, iterations, sms, sink, cycles));
    out.push_back(probe<4>(wg, iterations, sms, sink, cycles));
  }
  cudaFree(sink);
  cudaFree(cycles);
  (void)cudaGetLastError();
  return out;
}

}  // namespace sd::cuda
