// 3x3 convolutions with few output channels (UNet conv_out 320 -> 4, VAE conv_out 128 -> 3):
// an implicit GEMM on mma.sync m16n8k16 with N = 8, where cuDNN's kernels waste most of their
// tiles (26 us at 2x64x64x320 -> 4 against a 3 us floor). Stride 1, padding 1, Cin % 16 == 0.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_types.cuh"
#include "backend/cuda/kernels.h"
#include "backend/cuda/mma_sync.cuh"

namespace sd::cuda {

namespace {

constexpr int kWarps = 4;       // warps per block
constexpr int kTilesM = 2;      // m16 tiles per warp: 32 output positions
constexpr int kPosPerWarp = 16 * kTilesM;

// K order inside a 16-channel chunk: lane t's A / B registers hold channels 4t .. 4t + 3 as
// k (2t, 2t + 1) and (2t + 8, 2t + 9), so each operand pair is one 8-byte load.
struct Pair {
  uint32_t lo, hi;
};

__device__ __forceinline__ Pair load_pair(const void* p) {
  const uint2 v = *reinterpret_cast<const uint2*>(p);
  return {v.x, v.y};
}

// x [B, H, W, Cin], w [Cout, 3, 3, Cin] -> y [B, H, W, Cout] (+ bias), Cout <= 8.
// Shared memory: the weights as [9 * Cin / 16 chunks][8 couts][4 lanes] 8-byte pairs (couts past
// Cout zero), so lane (g, t) reads its B fragment of chunk q at q * 256 + g * 32 + t * 8.
// Each warp computes 32 consecutive output positions (two m16 tiles) for all 8 couts.
template <typename T>
__global__ void __launch_bounds__(32 * kWarps)
    conv3x3_thin_out_kernel(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias,
                            T* __restrict__ y, int batch, int h, int wd, int cin, int cout) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int chunks = cin / 16, kchunks = 9 * chunks;
  // Stage the weights: pair index i = (q, g, t) -> w[g][tap][c0 + 4t .. + 4], q = tap * chunks + c.
  for (int i = threadIdx.x; i < kchunks * 32; i += blockDim.x) {
    const int q = i / 32, g = (i / 4) % 8, t = i % 4;
    const int tap = q / chunks, c0 = (q % chunks) * 16 + 4 * t;
    uint2 v = make_uint2(0u, 0u);
    if (g < cout) v = *reinterpret_cast<const uint2*>(w + (int64_t{g} * 9 + tap) * cin + c0);
    *reinterpret_cast<uint2*>(smem + static_cast<size_t>(i) * 8) = v;
  }
  __syncthreads();

  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int64_t positions = int64_t{batch} * h * wd;
  const int64_t warps_total = int64_t{gridDim.x} * kWarps;
  for (int64_t p0 = (int64_t{blockIdx.x} * kWarps + threadIdx.x / 32) * kPosPerWarp; p0 < positions;
       p0 += warps_total * kPosPerWarp) {
    // This lane's four A rows: position p0 + 16 m + g + 8 hh (m tile, half).
    int py[kTilesM][2], px[kTilesM][2];
    int64_t base[kTilesM][2];  // element offset of (b, 0, 0, 0) in x; -1: position past the end
#pragma unroll
    for (int m = 0; m < kTilesM; ++m) {
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const int64_t p = p0 + 16 * m + g + 8 * hh;
        const int64_t b = p / (int64_t{h} * wd);
        const int r = static_cast<int>(p - b * h * wd);
        py[m][hh] = r / wd;
        px[m][hh] = r % wd;
        base[m][hh] = p < positions ? b * h * wd * cin : -1;
      }
    }
    float acc[kTilesM][4] = {};
    for (int tap = 0; tap < 9; ++tap) {
      const int dy = tap / 3 - 1, dx = tap % 3 - 1;
      const T* row[kTilesM][2];
#pragma unroll
      for (int m = 0; m < kTilesM; ++m) {
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
          const int iy = py[m][hh] + dy, ix = px[m][hh] + dx;
          const bool ok = base[m][hh] >= 0 && iy >= 0 && iy < h && ix >= 0 && ix < wd;
          row[m][hh] = ok ? x + base[m][hh] + (int64_t{iy} * wd + ix) * cin + 4 * t : nullptr;
        }
      }
      const unsigned char* wq = smem + static_cast<size_t>(tap * chunks) * 256 + g * 32 + t * 8;
#pragma unroll 4
      for (int c = 0; c < chunks; ++c) {
        const Pair b = load_pair(wq + c * 256);
#pragma unroll
        for (int m = 0; m < kTilesM; ++m) {
          const Pair r0 = row[m][0] ? load_pair(row[m][0] + c * 16) : Pair{0u, 0u};
          const Pair r1 = row[m][1] ? load_pair(row[m][1] + c * 16) : Pair{0u, 0u};
          const uint32_t a[4] = {r0.lo, r1.lo, r0.hi, r1.hi};
          sm80::mma<T>(acc[m], a, b.lo, b.hi);
        }
      }
    }
    // C fragment: rows g / g + 8, couts 2t, 2t + 1.
#pragma unroll
    for (int m = 0; m < kTilesM; ++m) {
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const int64_t p = p0 + 16 * m + g + 8 * hh;
        if (p >= positions) continue;
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int n = 2 * t + e;
          if (n < cout) {
            const float v = acc[m][2 * hh + e] + (bias ? to_f32(bias[n]) : 0.f);
            y[p * cout + n] = from_f32<T>(v);
          }
        }
      }
    }
  }
}

}  // namespace

bool conv3x3_thin_out_applies(int64_t cin, int64_t cout, int64_t k, int stride, int padding) {
  return k == 3 && stride == 1 && padding == 1 && cout >= 1 && cout <= 8 && cin % 16 == 0 && cin >= 16 &&
         cin <= 1024;  // weights staged in <= 144 KB of shared memory
}

void launch_conv3x3_thin_out(const void* x, const void* w, const void* bias, void* y, DType dtype, int64_t batch,
                             int64_t h, int64_t wd, int64_t cin, int64_t cout, cudaStream_t stream) {
  const int64_t positions = batch * h * wd;
  const int64_t warps = (positions + kPosPerWarp - 1) / kPosPerWarp;
  const int blocks = static_cast<int>(std::min<int64_t>((warps + kWarps - 1) / kWarps, 132 * 8));
  const size_t smem = size_t{9} * static_cast<size_t>(cin / 16) * 256;
  dispatch_half(dtype, [&](auto tag) {
    using T = decltype(tag);
    const auto kernel = conv3x3_thin_out_kernel<T>;
    if (smem > 48 * 1024) {
      SD_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    }
    kernel<<<blocks, 32 * kWarps, smem, stream>>>(static_cast<const T*>(x), static_cast<const T*>(w),
                                                 static_cast<const T*>(bias), static_cast<T*>(y),
                                                 static_cast<int>(batch), static_cast<int>(h), static_cast<int>(wd),
                                                 static_cast<int>(cin), static_cast<int>(cout));
  });
  SD_CUDA_LAUNCH_CHECK();
}

}  // namespace sd::cuda
