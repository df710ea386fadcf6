// Direct NHWC convolution kernel: the correctness fallback behind cuDNN for shapes it has
// no forward algorithm for (odd channel counts in half precision, for instance). One thread
// per output element, f32 accumulation; slow but exact enough and dependency-free.
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_types.cuh"
#include "backend/cuda/kernels.h"

namespace sd::cuda {

namespace {

template <typename T>
__global__ void conv2d_direct_kernel(const T* __restrict__ x, const T* __restrict__ w, T* __restrict__ y,
                                     ConvDims d, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t co = i % d.cout;
    int64_t t = i / d.cout;
    const int64_t ox = t % d.wo;
    t /= d.wo;
    const int64_t oy = t % d.ho;
    const int64_t b = t / d.ho;
    float acc = 0.f;
    for (int64_t ky = 0; ky < d.k; ++ky) {
      const int64_t iy = oy * d.stride - d.padding + ky;
      if (iy < 0 || iy >= d.h) continue;
      for (int64_t kx = 0; kx < d.k; ++kx) {
        const int64_t ix = ox * d.stride - d.padding + kx;
        if (ix < 0 || ix >= d.w) continue;
        const T* xp = x + ((b * d.h + iy) * d.w + ix) * d.cin;
        const T* wp = w + ((co * d.k + ky) * d.k + kx) * d.cin;
        for (int64_t c = 0; c < d.cin; ++c) acc += to_f32(xp[c]) * to_f32(wp[c]);
      }
    }
    y[i] = from_f32<T>(acc);
  }
}

}  // namespace

void launch_conv2d_direct(const void* x, const void* w, void* y, DType dtype, const ConvDims& d, cudaStream_t stream) {
  const int64_t n = d.b * d.ho * d.wo * d.cout;
  if (n == 0) return;
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    conv2d_direct_kernel<T><<<grid_for(n, 256), 256, 0, stream>>>(static_cast<const T*>(x), static_cast<const T*>(w),
                                                                  static_cast<T*>(y), d, n);
    SD_CUDA_LAUNCH_CHECK();
  });
}

}  // namespace sd::cuda
