// Device-side helpers shared by the kernels: f32 <-> f16/bf16 conversions through one
// overloaded pair (to_f32 / from_f32<T>), the dtype -> C++ type dispatch used by every op
// launcher, and launch-size arithmetic.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "core/status.h"
#include "tensor/tensor.h"

namespace sd::cuda {

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_f32(float x);
template <>
__device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half from_f32<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// Calls fn(T{}) with T the C++ type of a float dtype (f32, f16, bf16).
template <typename Fn>
void dispatch_float(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kF32: fn(float{}); return;
    case DType::kF16: fn(__half{}); return;
    case DType::kBF16: fn(__nv_bfloat16{}); return;
    default: SD_ASSERT(false, std::string("CUDA op needs a float tensor, got ") + dtype_name(dtype));
  }
}

// Half types only (tensor-core kernels).
template <typename Fn>
void dispatch_half(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kF16: fn(__half{}); return;
    case DType::kBF16: fn(__nv_bfloat16{}); return;
    default: SD_ASSERT(false, std::string("CUDA op needs an f16/bf16 tensor, got ") + dtype_name(dtype));
  }
}

inline unsigned grid_for(int64_t n, int block, int64_t max_blocks = 65535LL * 8) {
  int64_t g = (n + block - 1) / block;
  if (g < 1) g = 1;
  if (g > max_blocks) g = max_blocks;
  return static_cast<unsigned>(g);
}

__device__ __forceinline__ float silu_f(float x) { return x / (1.f + __expf(-x)); }
// gelu(x) = x Phi(x) = 0.5 x (1 + erf(x / sqrt 2)) with erfc(z) (z = |x| / sqrt 2) by Abramowitz &
// Stegun 7.1.26: erfc(z) = t (a1 + t (a2 + t (a3 + t (a4 + t a5)))) e^(-z^2), t = 1 / (1 + p z),
// |error| <= 1.5e-7 for z >= 0. Then gelu = x (1 - erfc / 2) for x >= 0 and x erfc / 2 below
// (no cancellation). ~14 instructions, 2 of them MUFU (rcp, ex2), against ~30-40 for erff with
// its two branches: it is what bounds the GEGLU GEMM epilogue (gemm_wgmma_epilogue.cuh).
__device__ __forceinline__ float gelu_erf_f(float x) {
  // Constants folded: p z = (p / sqrt 2) |x|, the a_i halved (erfc / 2 directly), and
  // e^(-z^2) = 2^(x^2 (-log2(e) / 2)).
  const float t = __fdividef(1.f, fmaf(0.3275911f * 0.70710678118654752f, fabsf(x), 1.f));
  float p = fmaf(0.5f * 1.061405429f, t, 0.5f * -1.453152027f);
  p = fmaf(p, t, 0.5f * 1.421413741f);
  p = fmaf(p, t, 0.5f * -0.284496736f);
  p = fmaf(p, t, 0.5f * 0.254829592f);
  const float half_erfc = p * t * exp2f(x * x * (-0.5f * 1.44269504088896341f));
  return x * (x >= 0.f ? 1.f - half_erfc : half_erfc);
}
__device__ __forceinline__ float gelu_tanh_f(float x) {
  const float k = 0.7978845608028654f;  // sqrt(2/pi)
  return 0.5f * x * (1.f + tanhf(k * (x + 0.044715f * x * x * x)));
}
__device__ __forceinline__ float quick_gelu_f(float x) { return x / (1.f + __expf(-1.702f * x)); }

// V elements moved as one aligned load/store (16 bytes when V * sizeof(T) == 16).
template <typename T, int V>
struct alignas(sizeof(T) * V) Vec {
  T v[V];
};

// The eight 2-byte elements (f16 / bf16) of one 16-byte load as floats, and back.
template <typename T>
__device__ __forceinline__ void unpack8(const uint4& raw, float (&f)[8]) {
  const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int i = 0; i < 8; ++i) f[i] = to_f32(e[i]);
}

template <typename T>
__device__ __forceinline__ uint4 pack8(const float (&f)[8]) {
  uint4 raw;
  T* e = reinterpret_cast<T*>(&raw);
#pragma unroll
  for (int i = 0; i < 8; ++i) e[i] = from_f32<T>(f[i]);
  return raw;
}

}  // namespace sd::cuda
