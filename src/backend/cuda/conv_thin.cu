// 3x3 convolutions with few output channels (UNet conv_out 320 -> 4, VAE conv_out 128 -> 3):
// an implicit GEMM on mma.sync m16n8k16 with N = 8, where cuDNN's kernels waste most of their
// tiles (26 us at 2x64x64x320 -> 4 against a 3 us floor). Stride 1, padding 1, Cin % 16 == 0.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_types.cuh"
#include "backend/cuda/kernels.h"
#include "backend/cuda/mma_sync.cuh"

namespace sd::cuda {

namespace {

constexpr int kTilesM = 2;               // m16 tiles per block: 32 output positions
constexpr int kPositions = 16 * kTilesM;
constexpr int kWarps = 8;                // the 16-channel chunks of Cin are dealt round-robin to the warps
constexpr int kThreads = 32 * kWarps;

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
// Block: 32 consecutive output positions (two m16 tiles) x 8 couts. Warp k takes the channel
// chunks k, k + 8, ... and runs all nine taps of each back to back (the ~3 KB of input a chunk
// touches is re-read from L1; B fragments straight from global memory, the weights stay in
// L1 / L2), then the eight partial tiles are summed in shared memory in warp order (deterministic).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    conv3x3_thin_out_kernel(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias,
                            T* __restrict__ y, int batch, int h, int wd, int cin, int cout) {
  __shared__ float partial[kWarps][4 * kTilesM][33];  // [warp][accumulator][lane], padded: no bank conflicts
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int64_t positions = int64_t{batch} * h * wd, p0 = int64_t{blockIdx.x} * kPositions;
  // This lane's four A rows (position p0 + 16 m + g + 8 hh): the centre tap's address and a mask
  // of the taps inside the image (bit 3 (dy + 1) + dx + 1; 0 past the last position).
  const T* centre[kTilesM][2];
  uint32_t inside[kTilesM][2];
#pragma unroll
  for (int m = 0; m < kTilesM; ++m) {
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      const int64_t p = min(p0 + 16 * m + g + 8 * hh, positions - 1);
      const int64_t b = p / (int64_t{h} * wd);
      const int r = static_cast<int>(p - b * h * wd), py = r / wd, px = r % wd;
      uint32_t mask = 0;
      for (int tap = 0; tap < 9; ++tap) {
        const int iy = py + tap / 3 - 1, ix = px + tap % 3 - 1;
        if (iy >= 0 && iy < h && ix >= 0 && ix < wd) mask |= 1u << tap;
      }
      centre[m][hh] = x + p * cin + 4 * t;
      inside[m][hh] = p0 + 16 * m + g + 8 * hh < positions ? mask : 0u;
    }
  }
  const T* wrow = g < cout ? w + int64_t{g} * 9 * cin + 4 * t : nullptr;  // [tap][Cin] of cout g
  float acc[kTilesM][4] = {};
  for (int c = warp; c < cin / 16; c += kWarps) {
#pragma unroll
    for (int tap = 0; tap < 9; ++tap) {
      const int64_t shift = int64_t{(tap / 3 - 1) * wd + tap % 3 - 1} * cin + c * 16;
      const Pair b = wrow ? load_pair(wrow + tap * cin + c * 16) : Pair{0u, 0u};
#pragma unroll
      for (int m = 0; m < kTilesM; ++m) {
        const Pair r0 = (inside[m][0] >> tap) & 1u ? load_pair(centre[m][0] + shift) : Pair{0u, 0u};
        const Pair r1 = (inside[m][1] >> tap) & 1u ? load_pair(centre[m][1] + shift) : Pair{0u, 0u};
        const uint32_t a[4] = {r0.lo, r1.lo, r0.hi, r1.hi};
        sm80::mma<T>(acc[m], a, b.lo, b.hi);
      }
    }
  }
#pragma unroll
  for (int m = 0; m < kTilesM; ++m) {
#pragma unroll
    for (int i = 0; i < 4; ++i) partial[warp][4 * m + i][lane] = acc[m][i];
  }
  __syncthreads();
  // Thread i: accumulator e = i / 32 (tile e / 4; C fragment row g + 8 ((e / 2) % 2), cout 2t + e % 2)
  // of lane l = i % 32.
  const int e = threadIdx.x / 32, l = threadIdx.x % 32;
  const int m = e / 4, i = e % 4, n = 2 * (l % 4) + i % 2;
  const int64_t p = p0 + 16 * m + l / 4 + 8 * (i / 2);
  if (n < cout && p < positions) {
    float v = bias ? to_f32(bias[n]) : 0.f;
#pragma unroll
    for (int k = 0; k < kWarps; ++k) v += partial[k][e][l];
    y[p * cout + n] = from_f32<T>(v);
  }
}

}  // namespace

bool conv3x3_thin_out_applies(int64_t cin, int64_t cout, int64_t k, int stride, int padding) {
  return k == 3 && stride == 1 && padding == 1 && cout >= 1 && cout <= 8 && cin % 16 == 0 && cin >= 16 &&
         cin <= 65536;
}

void launch_conv3x3_thin_out(const void* x, const void* w, const void* bias, void* y, DType dtype, int64_t batch,
                             int64_t h, int64_t wd, int64_t cin, int64_t cout, cudaStream_t stream) {
  const int64_t blocks = (batch * h * wd + kPositions - 1) / kPositions;
  if (blocks == 0) return;
  dispatch_half(dtype, [&](auto tag) {
    using T = decltype(tag);
    conv3x3_thin_out_kernel<T><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
        static_cast<const T*>(x), static_cast<const T*>(w), static_cast<const T*>(bias), static_cast<T*>(y),
        static_cast<int>(batch), static_cast<int>(h), static_cast<int>(wd), static_cast<int>(cin),
        static_cast<int>(cout));
  });
  SD_CUDA_LAUNCH_CHECK();
}

}  // namespace sd::cuda
