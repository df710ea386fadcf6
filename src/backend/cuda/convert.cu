// Dtype conversion on the device (uploads convert checkpoint f32/f16/bf16 to the compute
// dtype here, downloads convert back to f32) and the one-pass bias / per-row / residual add
// used as the convolution (and cuBLAS fallback) epilogue.
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_types.cuh"
#include "backend/cuda/pdl.cuh"
#include "backend/cuda/kernels.h"

#include <type_traits>

namespace sd::cuda {

namespace {

template <typename S, typename D>
__global__ void convert_kernel(const S* __restrict__ src, D* __restrict__ dst, int64_t n) {
  pdl_wait();  // PDL (pdl.cuh): first, in every CTA
  pdl_trigger();
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    dst[i] = from_f32<D>(to_f32(src[i]));
  }
}

// Backend::to_pixels_u8, the same steps as pixels_u8_value() (backend.h): NaN -> 0, x * 0.5 is
// exact (so contraction into an FMA changes nothing), v * 255 rounded to f32, halves up in double.
template <typename S>
__global__ void pixels_u8_kernel(const S* __restrict__ src, uint8_t* __restrict__ dst, int64_t n) {
  pdl_wait();  // PDL (pdl.cuh): first, in every CTA
  pdl_trigger();
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    float v = __fadd_rn(__fmul_rn(to_f32(src[i]), 0.5f), 0.5f);
    v = v > 0.0f ? (v < 1.0f ? v : 1.0f) : 0.0f;
    dst[i] = static_cast<uint8_t>(static_cast<double>(__fmul_rn(v, 255.0f)) + 0.5);
  }
}

// y[b, p, c] += bias[c] + row[b, c] + residual[b, p, c], each term optional (null), in one
// pass: the conv epilogue when cuDNN does not fuse it. V elements per thread (16-byte vectors
// when C % 8 == 0 and every pointer is aligned), I the index type (32-bit when it fits).
template <typename T, int V, typename I>
__global__ void add_epilogue_kernel(T* __restrict__ y, const T* __restrict__ bias, const T* __restrict__ row,
                                    const T* __restrict__ residual, I per_batch, I channels, I n_vec) {
  pdl_wait();  // PDL (pdl.cuh): first, in every CTA
  pdl_trigger();
  using VT = Vec<T, V>;
  for (I i = blockIdx.x * I(blockDim.x) + threadIdx.x; i < n_vec; i += I(gridDim.x) * blockDim.x) {
    const I e = i * V;  // first element of this vector
    const I c = e % channels;
    VT vy = reinterpret_cast<const VT*>(y)[i];
    float f[V];
#pragma unroll
    for (int j = 0; j < V; ++j) f[j] = to_f32(vy.v[j]);
    if (bias) {
      const VT vb = *reinterpret_cast<const VT*>(bias + c);
#pragma unroll
      for (int j = 0; j < V; ++j) f[j] += to_f32(vb.v[j]);
    }
    if (row) {
      const VT vr = *reinterpret_cast<const VT*>(row + (e / per_batch) * channels + c);
#pragma unroll
      for (int j = 0; j < V; ++j) f[j] += to_f32(vr.v[j]);
    }
    if (residual) {
      const VT vs = reinterpret_cast<const VT*>(residual)[i];
#pragma unroll
      for (int j = 0; j < V; ++j) f[j] += to_f32(vs.v[j]);
    }
#pragma unroll
    for (int j = 0; j < V; ++j) vy.v[j] = from_f32<T>(f[j]);
    reinterpret_cast<VT*>(y)[i] = vy;
  }
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

}  // namespace

void launch_convert(const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  dispatch_float(src_dtype, [&](auto s) {
    using S = decltype(s);
    dispatch_float(dst_dtype, [&](auto d) {
      using D = decltype(d);
      launch_kernel(convert_kernel<S, D>, grid_for(n, 256), 256, 0, stream, static_cast<const S*>(src),
          static_cast<D*>(dst), n);
      SD_CUDA_LAUNCH_CHECK();
    });
  });
}

void launch_pixels_u8(const void* src, DType src_dtype, void* dst, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  dispatch_float(src_dtype, [&](auto s) {
    using S = decltype(s);
    launch_kernel(pixels_u8_kernel<S>, grid_for(n, 256), 256, 0, stream, static_cast<const S*>(src),
        static_cast<uint8_t*>(dst), n);
    SD_CUDA_LAUNCH_CHECK();
  });
}

void launch_add_epilogue(void* y, const void* bias, const void* row, const void* residual, DType dtype,
                         int64_t batch, int64_t positions, int64_t channels, cudaStream_t stream) {
  const int64_t n = batch * positions * channels;
  if (n == 0 || (!bias && !row && !residual)) return;
  dispatch_float(dtype, [&](auto t) {
    using T = decltype(t);
    constexpr int kV = 16 / sizeof(T);
    const bool vec = channels % kV == 0 && aligned16(y) && (!bias || aligned16(bias)) && (!row || aligned16(row)) &&
                     (!residual || aligned16(residual));
    const auto launch = [&](auto v_tag, auto i_tag) {
      constexpr int V = decltype(v_tag)::value;
      using I = decltype(i_tag);
      launch_kernel(add_epilogue_kernel<T, V, I>, grid_for(n / V, 256), 256, 0, stream, static_cast<T*>(y),
          static_cast<const T*>(bias), static_cast<const T*>(row),
          static_cast<const T*>(residual), static_cast<I>(positions * channels), static_cast<I>(channels),
          static_cast<I>(n / V));
    };
    const bool small = n < (int64_t{1} << 31) - 65536LL * 8 * 256;  // grid-stride index never overflows
    if (vec && small) {
      launch(std::integral_constant<int, kV>{}, int32_t{});
    } else if (vec) {
      launch(std::integral_constant<int, kV>{}, int64_t{});
    } else if (small) {
      launch(std::integral_constant<int, 1>{}, int32_t{});
    } else {
      launch(std::integral_constant<int, 1>{}, int64_t{});
    }
    SD_CUDA_LAUNCH_CHECK();
  });
}

void launch_add_bias_rows(void* y, const void* bias, DType dtype, int64_t rows, int64_t channels,
                          cudaStream_t stream) {
  launch_add_epilogue(y, bias, nullptr, nullptr, dtype, 1, rows, channels, stream);
}

}  // namespace sd::cuda
