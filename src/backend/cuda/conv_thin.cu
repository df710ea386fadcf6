// 3x3 convolutions with few output channels and positions (the UNet conv_out 320 -> 4 of a
// batch-1 step): an implicit GEMM on mma.sync m16n8k16 with N = 8, where cuDNN's kernels waste
// most of their tiles (26 us at 2x64x64x320 -> 4, this 13). Stride 1, padding 1, Cin % 16 == 0.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_types.cuh"
#include "backend/cuda/kernels.h"
#include "backend/cuda/mma_sync.cuh"
#include "backend/cuda/pdl.cuh"

namespace sd::cuda {

namespace {

constexpr int kTilesM = 2;               // m16 tiles per block: 32 output positions
constexpr int kPositions = 16 * kTilesM;
constexpr int kThreads = 9 * 32;         // one warp per filter tap

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
// Block: 32 consecutive output positions (two m16 tiles) x 8 couts; warp `tap` reduces over that
// tap's Cin (B fragments straight from global memory: the weights stay in L1 / L2), then the
// nine partial tiles are summed in shared memory in tap order (deterministic).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    conv3x3_thin_out_kernel(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias,
                            T* __restrict__ y, int batch, int h, int wd, int cin, int cout) {
  __shared__ float partial[9][32][4 * kTilesM];  // [tap][lane][accumulator]
  pdl_wait();
  pdl_trigger();
  const int tap = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int dy = tap / 3 - 1, dx = tap % 3 - 1;
  const int64_t positions = int64_t{batch} * h * wd, p0 = int64_t{blockIdx.x} * kPositions;
  // This lane's four A rows (position p0 + 16 m + g + 8 hh) at this tap; null: zero padding / past the end.
  const T* row[kTilesM][2];
#pragma unroll
  for (int m = 0; m < kTilesM; ++m) {
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      const int64_t p = p0 + 16 * m + g + 8 * hh;
      const int64_t b = p / (int64_t{h} * wd);
      const int r = static_cast<int>(p - b * h * wd), iy = r / wd + dy, ix = r % wd + dx;
      const bool ok = p < positions && iy >= 0 && iy < h && ix >= 0 && ix < wd;
      row[m][hh] = ok ? x + ((b * h + iy) * wd + ix) * cin + 4 * t : nullptr;
    }
  }
  const T* wrow = g < cout ? w + (int64_t{g} * 9 + tap) * cin + 4 * t : nullptr;
  float acc[kTilesM][4] = {};
  const int chunks = cin / 16;
#pragma unroll 4
  for (int c = 0; c < chunks; ++c) {
    const Pair b = wrow ? load_pair(wrow + c * 16) : Pair{0u, 0u};
#pragma unroll
    for (int m = 0; m < kTilesM; ++m) {
      const Pair r0 = row[m][0] ? load_pair(row[m][0] + c * 16) : Pair{0u, 0u};
      const Pair r1 = row[m][1] ? load_pair(row[m][1] + c * 16) : Pair{0u, 0u};
      const uint32_t a[4] = {r0.lo, r1.lo, r0.hi, r1.hi};
      sm80::mma<T>(acc[m], a, b.lo, b.hi);
    }
  }
#pragma unroll
  for (int m = 0; m < kTilesM; ++m) {
#pragma unroll
    for (int i = 0; i < 4; ++i) partial[tap][lane][4 * m + i] = acc[m][i];
  }
  __syncthreads();
  // Thread i < 256: lane i / 8, accumulator e = i % 8 (tile e / 4; C fragment: row g + 8 ((e / 2) % 2),
  // cout 2t + e % 2).
  if (threadIdx.x < 32 * 4 * kTilesM) {
    const int l = threadIdx.x / (4 * kTilesM), e = threadIdx.x % (4 * kTilesM);
    const int m = e / 4, i = e % 4, n = 2 * (l % 4) + i % 2;
    const int64_t p = p0 + 16 * m + l / 4 + 8 * (i / 2);
    if (n < cout && p < positions) {
      float v = bias ? to_f32(bias[n]) : 0.f;
#pragma unroll
      for (int k = 0; k < 9; ++k) v += partial[k][l][e];
      y[p * cout + n] = from_f32<T>(v);
    }
  }
}

}  // namespace

// Measured on the H100 (UNet conv_out 320 -> 4, per op in the step profile): 2 x 64 x 64 positions
// 13.2 us vs cuDNN's 26.4; 32 x 64 x 64 positions 162 vs 141 (the nine tap warps then re-read
// the input from L2 rather than L1). So only up to kMaxPositions (one or two images' latents).
constexpr int64_t kMaxPositions = 32768;

bool conv3x3_thin_out_applies(int64_t positions, int64_t cin, int64_t cout, int64_t k, int stride, int padding) {
  return k == 3 && stride == 1 && padding == 1 && cout >= 1 && cout <= 8 && cin % 16 == 0 && cin >= 16 &&
         cin <= 65536 && positions <= kMaxPositions;
}

void launch_conv3x3_thin_out(const void* x, const void* w, const void* bias, void* y, DType dtype, int64_t batch,
                             int64_t h, int64_t wd, int64_t cin, int64_t cout, cudaStream_t stream) {
  const int64_t blocks = (batch * h * wd + kPositions - 1) / kPositions;
  if (blocks == 0) return;
  dispatch_half(dtype, [&](auto tag) {
    using T = decltype(tag);
    launch_kernel(conv3x3_thin_out_kernel<T>, dim3(static_cast<unsigned>(blocks)), dim3(kThreads), 0, stream,
        static_cast<const T*>(x), static_cast<const T*>(w), static_cast<const T*>(bias), static_cast<T*>(y),
        static_cast<int>(batch), static_cast<int>(h), static_cast<int>(wd), static_cast<int>(cin),
        static_cast<int>(cout));
  });
  SD_CUDA_LAUNCH_CHECK();
}

}  // namespace sd::cuda
