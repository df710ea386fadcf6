// Dtype conversion on the device (uploads convert checkpoint f32/f16/bf16 to the compute
// dtype here, downloads convert back to f32) and the per-channel bias add used as the
// convolution epilogue.
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_types.cuh"
#include "backend/cuda/kernels.h"

namespace sd::cuda {

namespace {

template <typename S, typename D>
__global__ void convert_kernel(const S* __restrict__ src, D* __restrict__ dst, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    dst[i] = from_f32<D>(to_f32(src[i]));
  }
}

template <typename T>
__global__ void add_bias_rows_kernel(T* __restrict__ y, const T* __restrict__ bias, int64_t n, int64_t channels) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    y[i] = from_f32<T>(to_f32(y[i]) + to_f32(bias[i % channels]));
  }
}

}  // namespace

void launch_convert(const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  dispatch_float(src_dtype, [&](auto s) {
    using S = decltype(s);
    dispatch_float(dst_dtype, [&](auto d) {
      using D = decltype(d);
      convert_kernel<S, D><<<grid_for(n, 256), 256, 0, stream>>>(static_cast<const S*>(src), static_cast<D*>(dst), n);
      SD_CUDA_LAUNCH_CHECK();
    });
  });
}

void launch_add_bias_rows(void* y, const void* bias, DType dtype, int64_t rows, int64_t channels,
                          cudaStream_t stream) {
  const int64_t n = rows * channels;
  if (n == 0) return;
  dispatch_float(dtype, [&](auto t) {
    using T = decltype(t);
    add_bias_rows_kernel<T><<<grid_for(n, 256), 256, 0, stream>>>(static_cast<T*>(y), static_cast<const T*>(bias), n,
                                                                  channels);
    SD_CUDA_LAUNCH_CHECK();
  });
}

}  // namespace sd::cuda
