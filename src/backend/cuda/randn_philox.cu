// Backend::randn_philox on the GPU: torch.randn(device='cuda') recomputed element for element
// (Philox4x32-10 per curand's state layout, curand_normal4's Box-Muller, aten's grid-stride
// element order), written straight to NHWC when asked and rounded once to the output dtype.
#include <string>

#include "backend/cuda/cuda_backend_impl.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_types.cuh"

namespace sd::cuda {

namespace {

// This library is compiled with --use_fast_math, which would turn logf into __logf, sqrtf
// into an approximation and contract products into FMAs. PyTorch builds its kernel without
// it, so every float operation below is an explicit round-to-nearest intrinsic.

struct Philox4 {
  uint32_t x, y, z, w;
};

// One Philox4x32-10 block: counter (x, y, z, w), key (lo, hi); see rng/torch_cuda_generator.cc.
__device__ __forceinline__ Philox4 philox4x32_10(Philox4 c, uint32_t key_lo, uint32_t key_hi) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
#pragma unroll
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      key_lo += kW0;
      key_hi += kW1;
    }
    const uint32_t hi0 = __umulhi(kM0, c.x), lo0 = kM0 * c.x;
    const uint32_t hi1 = __umulhi(kM1, c.z), lo1 = kM1 * c.z;
    c = Philox4{hi1 ^ c.y ^ key_lo, lo1, hi0 ^ c.w ^ key_hi, lo0};
  }
  return c;
}

// libdevice's __nv_logf (non-fast-math) for positive normal inputs, as rng/gpu_math.cc
// models it: a = m * 2^e, m in [2/3, 4/3), log1p(m - 1) by a degree-10 polynomial.
__device__ __forceinline__ float logf_precise(float a) {
  float e_adjust = 0.0f;
  if (a < 1.17549435e-38f) {  // subnormal (never for Box-Muller's u >= 2^-33)
    a = __fmul_rn(a, 8388608.0f);
    e_adjust = -23.0f;
  }
  const int32_t bits = __float_as_int(a);
  const int32_t exponent = (bits - 0x3f2aaaab) & static_cast<int32_t>(0xff800000u);
  const float e = __fmaf_rn(__int2float_rn(exponent), __int_as_float(0x34000000), e_adjust);
  const float f = __fsub_rn(__int_as_float(bits - exponent), 1.0f);
  float p = __fmaf_rn(__int_as_float(static_cast<int32_t>(0xBE055027u)), f, __int_as_float(0x3E1039F6));
  p = __fmaf_rn(p, f, __int_as_float(static_cast<int32_t>(0xBDF8CDCCu)));
  p = __fmaf_rn(p, f, __int_as_float(0x3E0F2955));
  p = __fmaf_rn(p, f, __int_as_float(static_cast<int32_t>(0xBE2AD8B9u)));
  p = __fmaf_rn(p, f, __int_as_float(0x3E4CED0B));
  p = __fmaf_rn(p, f, __int_as_float(static_cast<int32_t>(0xBE7FFF22u)));
  p = __fmaf_rn(p, f, __int_as_float(0x3EAAAA78));
  p = __fmaf_rn(p, f, __int_as_float(static_cast<int32_t>(0xBF000000u)));
  p = __fmul_rn(f, p);
  p = __fmaf_rn(p, f, f);
  return __fmaf_rn(e, __int_as_float(0x3F317218), p);  // + e * ln 2
}

// curand's _curand_box_muller on the device: two 32-bit draws -> two normals.
__device__ __forceinline__ void box_muller(uint32_t a, uint32_t b, float* first, float* second) {
  constexpr float kInv2Pow32 = 2.3283064e-10f;                   // CURAND_2POW32_INV
  constexpr float kInv2Pow32x2Pi = 2.3283064e-10f * 6.2831855f;  // CURAND_2POW32_INV_2PI
  const float u = __fmaf_rn(__uint2float_rn(a), kInv2Pow32, kInv2Pow32 / 2);
  const float v = __fmaf_rn(__uint2float_rn(b), kInv2Pow32x2Pi, kInv2Pow32x2Pi / 2);
  const float s = __fsqrt_rn(__fmul_rn(-2.0f, logf_precise(u)));
  float sin_v, cos_v;
  __sincosf(v, &sin_v, &cos_v);  // the hardware MUFU pair, as in curand
  *first = __fmul_rn(sin_v, s);
  *second = __fmul_rn(cos_v, s);
}

struct RandnArgs {
  int64_t n;           // elements
  int64_t threads;     // T: threads of the imitated launch
  int64_t iterations;  // curand_normal4 draws per imitated thread
  uint64_t counter0;   // offset / 4: first counter of every subsequence
  uint32_t key_lo, key_hi;
  int64_t chw, hw, channels;  // NCHW -> NHWC addressing (chw = 0: identity)
};

// One CUDA thread per (imitated thread t, draw k): four normals to the elements
// t + T * (4k + i). Consecutive CUDA threads take consecutive t (coalesced stores).
template <typename T>
__global__ void randn_philox_kernel(T* __restrict__ out, RandnArgs a) {
  const int64_t work = a.threads * a.iterations;
  for (int64_t item = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; item < work;
       item += int64_t{gridDim.x} * blockDim.x) {
    const int64_t t = item % a.threads, k = item / a.threads;
    const int64_t first = t + k * a.threads * 4;
    if (first >= a.n) continue;
    const uint64_t low = a.counter0 + static_cast<uint64_t>(k);
    const Philox4 r = philox4x32_10(Philox4{static_cast<uint32_t>(low), static_cast<uint32_t>(low >> 32),
                                            static_cast<uint32_t>(t), static_cast<uint32_t>(static_cast<uint64_t>(t) >> 32)},
                                    a.key_lo, a.key_hi);
    float normals[4];
    box_muller(r.x, r.y, &normals[0], &normals[1]);
    box_muller(r.z, r.w, &normals[2], &normals[3]);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int64_t index = first + i * a.threads;  // position in the drawn (NCHW) order
      if (index >= a.n) break;
      int64_t address = index;
      if (a.chw > 0) {
        const int64_t b = index / a.chw, rem = index - b * a.chw;
        const int64_t c = rem / a.hw, p = rem - c * a.hw;
        address = b * a.chw + p * a.channels + c;  // [B, H, W, C]
      }
      out[address] = from_f32<T>(normals[i]);
    }
  }
}

}  // namespace

bool CudaBackend::randn_philox(const Tensor& out, const PhiloxRandn& p) {
  check_on_device(out, "randn_philox");
  SD_ASSERT(p.threads > 0 && p.offset % 4 == 0, "randn_philox: bad launch (threads " + std::to_string(p.threads) +
                                                    ", offset " + std::to_string(p.offset) + ")");
  const int64_t n = out.numel();
  if (n == 0) return true;
  RandnArgs a{};
  a.n = n;
  a.threads = p.threads;
  a.iterations = (n - 1) / (p.threads * 4) + 1;
  a.counter0 = p.offset / 4;
  a.key_lo = static_cast<uint32_t>(p.seed);
  a.key_hi = static_cast<uint32_t>(p.seed >> 32);
  if (p.nchw_to_nhwc) {
    SD_ASSERT(out.ndim() == 4, "randn_philox: NCHW -> NHWC needs a 4-D tensor, got " + out.describe());
    a.hw = out.dim(1) * out.dim(2);
    a.channels = out.dim(3);
    a.chw = a.hw * a.channels;
  }
  activate();
  const int64_t work = a.threads * a.iterations;
  dispatch_float(out.dtype(), [&](auto tag) {
    using T = decltype(tag);
    randn_philox_kernel<T><<<grid_for(work, 256), 256, 0, stream_>>>(static_cast<T*>(out.raw()), a);
    SD_CUDA_LAUNCH_CHECK();
  });
  return true;
}

}  // namespace sd::cuda
