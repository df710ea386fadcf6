// im2col for NHWC half-precision inputs: the column matrix of a convolution, so that small
// convolutions (few output positions, long reduction) can run as one cuBLASLt GEMM with the
// filter [Cout, k, k, Cin] read as is as a [Cout, k*k*Cin] matrix (conv_fused.cc picks by timing).
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_types.cuh"
#include "backend/cuda/kernels.h"

namespace sd::cuda {

namespace {

// One thread per 16-byte chunk of col: index = ((m * k + ky) * k + kx) * nch + c8.
__global__ void im2col_kernel(const uint4* __restrict__ x, uint4* __restrict__ col, int h, int w, int nch, int k,
                              int stride, int padding, int ho, int wo, int64_t total) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total; i += int64_t{gridDim.x} * blockDim.x) {
    const int c8 = static_cast<int>(i % nch);
    int64_t r = i / nch;
    const int kx = static_cast<int>(r % k);
    r /= k;
    const int ky = static_cast<int>(r % k);
    const int64_t m = r / k;  // output position (b, oy, ox)
    const int ox = static_cast<int>(m % wo);
    const int oy = static_cast<int>((m / wo) % ho);
    const int64_t b = m / (int64_t{wo} * ho);
    const int iy = oy * stride - padding + ky, ix = ox * stride - padding + kx;
    uint4 v = make_uint4(0u, 0u, 0u, 0u);
    if (iy >= 0 && iy < h && ix >= 0 && ix < w) v = x[((b * h + iy) * w + ix) * nch + c8];
    col[i] = v;
  }
}

}  // namespace

void launch_im2col(const void* x, void* col, DType dtype, int64_t b, int64_t h, int64_t w, int64_t cin, int k,
                   int stride, int padding, int64_t ho, int64_t wo, cudaStream_t stream) {
  SD_ASSERT(dtype_size(dtype) == 2 && cin % 8 == 0, "im2col: f16/bf16 with Cin % 8 == 0");
  const int64_t nch = cin / 8;
  const int64_t total = b * ho * wo * k * k * nch;
  if (total == 0) return;
  im2col_kernel<<<grid_for(total, 256), 256, 0, stream>>>(
      static_cast<const uint4*>(x), static_cast<uint4*>(col), static_cast<int>(h), static_cast<int>(w),
      static_cast<int>(nch), k, stride, padding, static_cast<int>(ho), static_cast<int>(wo), total);
  SD_CUDA_LAUNCH_CHECK();
}

}  // namespace sd::cuda
