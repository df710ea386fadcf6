// Elementwise ops: activations, GEGLU, add/mul/scale, add_per_channel (time-embedding
// broadcast) and lincomb (the sampler/guidance arithmetic). f32 math on f16/bf16/f32
// tensors; 16-byte vector loads whenever sizes and addresses allow.
#include <string>

#include "backend/cuda/cuda_backend_impl.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_types.cuh"
#include "backend/cuda/pdl.cuh"

namespace sd::cuda {

namespace {

struct ActOp {
  int act;
  __device__ float operator()(float x, float) const {
    switch (act) {
      case 0: return silu_f(x);
      case 1: return gelu_erf_f(x);
      case 2: return gelu_tanh_f(x);
      default: return quick_gelu_f(x);
    }
  }
};
struct AddOp {
  __device__ float operator()(float a, float b) const { return a + b; }
};
struct MulOp {
  __device__ float operator()(float a, float b) const { return a * b; }
};
struct ScaleOp {
  float s;
  __device__ float operator()(float a, float) const { return a * s; }
};

// out[i] = op(a[i], b[i]) (b may be null for unary ops); n counts V-element vectors.
template <typename T, int V, typename Op>
__global__ void map_kernel(T* __restrict__ out, const T* __restrict__ a, const T* __restrict__ b, int64_t n, Op op) {
  pdl_wait();  // PDL (pdl.cuh): first, in every CTA
  pdl_trigger();
  using VT = Vec<T, V>;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const VT va = reinterpret_cast<const VT*>(a)[i];
    VT vb;
    if (b) vb = reinterpret_cast<const VT*>(b)[i];
    VT vo;
#pragma unroll
    for (int j = 0; j < V; ++j) vo.v[j] = from_f32<T>(op(to_f32(va.v[j]), b ? to_f32(vb.v[j]) : 0.f));
    reinterpret_cast<VT*>(out)[i] = vo;
  }
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

template <typename Op>
void launch_map(const Tensor& out, const Tensor& a, const Tensor* b, Op op, cudaStream_t stream) {
  const int64_t n = out.numel();
  if (n == 0) return;
  dispatch_float(out.dtype(), [&](auto tag) {
    using T = decltype(tag);
    constexpr int V = 16 / sizeof(T);
    T* o = out.data<T>();
    const T* pa = a.data<T>();
    const T* pb = b ? b->data<T>() : nullptr;
    if (n % V == 0 && aligned16(o) && aligned16(pa) && (!pb || aligned16(pb))) {
      launch_kernel(map_kernel<T, V, Op>, grid_for(n / V, 256), 256, 0, stream, o, pa, pb, n / V, op);
    } else {
      launch_kernel(map_kernel<T, 1, Op>, grid_for(n, 256), 256, 0, stream, o, pa, pb, n, op);
    }
    SD_CUDA_LAUNCH_CHECK();
  });
}

// x [rows, 2N] -> out [rows, N] = x[:, :N] * gelu_erf(x[:, N:]), V elements per thread step
// (V = 16 bytes when N % V == 0 and both pointers are 16-byte aligned; else V = 1).
template <typename T, int V>
__global__ void geglu_kernel(T* __restrict__ out, const T* __restrict__ x, int64_t vectors, int64_t half) {
  pdl_wait();  // PDL (pdl.cuh): first, in every CTA
  pdl_trigger();
  using VT = Vec<T, V>;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < vectors; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t e = i * V;  // first output element of this vector
    const int64_t r = e / half, c = e - r * half;
    const T* row = x + r * 2 * half;
    const VT a = *reinterpret_cast<const VT*>(row + c);
    const VT g = *reinterpret_cast<const VT*>(row + half + c);
    VT o;
#pragma unroll
    for (int j = 0; j < V; ++j) o.v[j] = from_f32<T>(to_f32(a.v[j]) * gelu_erf_f(to_f32(g.v[j])));
    reinterpret_cast<VT*>(out)[i] = o;
  }
}

// x [B, P, C] + v [B, C]; vectors of V channels (C % V == 0 on the vector path).
template <typename T, int V>
__global__ void add_per_channel_kernel(T* __restrict__ out, const T* __restrict__ x, const T* __restrict__ v,
                                       int64_t per_batch, int64_t channels, int64_t n) {
  pdl_wait();  // PDL (pdl.cuh): first, in every CTA
  pdl_trigger();
  using VT = Vec<T, V>;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t e = i * V;  // first element of this vector
    const int64_t b = e / per_batch;
    const int64_t c = e % channels;
    const VT vx = reinterpret_cast<const VT*>(x)[i];
    const VT vv = *reinterpret_cast<const VT*>(v + b * channels + c);
    VT vo;
#pragma unroll
    for (int j = 0; j < V; ++j) vo.v[j] = from_f32<T>(to_f32(vx.v[j]) + to_f32(vv.v[j]));
    reinterpret_cast<VT*>(out)[i] = vo;
  }
}

constexpr int kMaxLincombInputs = 16;
constexpr int kMaxLincombCoeffs = 512;

template <typename T>
struct LincombArgs {
  const T* in[kMaxLincombInputs];
  float coeff[kMaxLincombCoeffs];  // [B, n] row-major
};

// out[b, e] = sum_i coeff[b, i] * in_i[b, e]; coefficients by value (graph-capturable) or
// from device memory (`dev_coeff`, when there are too many to pass by value).
template <typename T>
__global__ void lincomb_kernel(T* __restrict__ out, const LincombArgs<T> args, const float* __restrict__ dev_coeff,
                               const T* const* __restrict__ dev_in, int n_inputs, int64_t per_batch, int64_t total) {
  pdl_wait();  // PDL (pdl.cuh): first, in every CTA
  pdl_trigger();
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < total; e += int64_t{gridDim.x} * blockDim.x) {
    const int64_t b = e / per_batch;
    float acc = 0.f;
    for (int i = 0; i < n_inputs; ++i) {
      const float c = dev_coeff ? dev_coeff[b * n_inputs + i] : args.coeff[b * n_inputs + i];
      const T* src = dev_in ? dev_in[i] : args.in[i];
      acc += c * to_f32(src[e]);
    }
    out[e] = from_f32<T>(acc);
  }
}

}  // namespace

Tensor CudaBackend::activation(const Tensor& x, Activation act) {
  check_on_device(x, "activation");
  Tensor out = empty(x.shape(), x.dtype());
  int code = 0;
  switch (act) {
    case Activation::kSiLU: code = 0; break;
    case Activation::kGELU: code = 1; break;
    case Activation::kGELUTanh: code = 2; break;
    case Activation::kQuickGELU: code = 3; break;
  }
  launch_map(out, x, nullptr, ActOp{code}, stream_);
  return out;
}

Tensor CudaBackend::geglu(const Tensor& x) {
  check_on_device(x, "geglu");
  SD_ASSERT(x.ndim() >= 1 && x.dim(-1) % 2 == 0, "geglu: " + x.describe());
  const int64_t half = x.dim(-1) / 2;
  Shape shape = x.shape();
  shape.back() = half;
  Tensor out = empty(shape, x.dtype());
  if (out.numel() == 0) return out;
  dispatch_float(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    constexpr int V = 16 / sizeof(T);
    const int64_t n = out.numel();
    if (half % V == 0 && aligned16(out.raw()) && aligned16(x.raw())) {
      launch_kernel(geglu_kernel<T, V>, grid_for(n / V, 256), 256, 0, stream_, out.data<T>(), x.data<T>(), n / V, half);
    } else {
      launch_kernel(geglu_kernel<T, 1>, grid_for(n, 256), 256, 0, stream_, out.data<T>(), x.data<T>(), n, half);
    }
    SD_CUDA_LAUNCH_CHECK();
  });
  return out;
}

Tensor CudaBackend::add(const Tensor& a, const Tensor& b) {
  check_on_device(a, "add");
  check_on_device(b, "add");
  SD_ASSERT(a.shape() == b.shape() && a.dtype() == b.dtype(), "add: " + a.describe() + " + " + b.describe());
  Tensor out = empty(a.shape(), a.dtype());
  launch_map(out, a, &b, AddOp{}, stream_);
  return out;
}

Tensor CudaBackend::mul(const Tensor& a, const Tensor& b) {
  check_on_device(a, "mul");
  check_on_device(b, "mul");
  SD_ASSERT(a.shape() == b.shape() && a.dtype() == b.dtype(), "mul: " + a.describe() + " * " + b.describe());
  Tensor out = empty(a.shape(), a.dtype());
  launch_map(out, a, &b, MulOp{}, stream_);
  return out;
}

Tensor CudaBackend::scale(const Tensor& x, float s) {
  check_on_device(x, "scale");
  Tensor out = empty(x.shape(), x.dtype());
  launch_map(out, x, nullptr, ScaleOp{s}, stream_);
  return out;
}

Tensor CudaBackend::add_per_channel(const Tensor& x, const Tensor& v) {
  check_on_device(x, "add_per_channel");
  check_on_device(v, "add_per_channel");
  SD_ASSERT(x.ndim() >= 2 && v.numel() == x.dim(0) * x.dim(-1) && v.dtype() == x.dtype(),
            "add_per_channel: x " + x.describe() + " v " + v.describe());
  Tensor out = empty(x.shape(), x.dtype());
  const int64_t n = x.numel();
  if (n == 0) return out;
  const int64_t channels = x.dim(-1), per_batch = n / x.dim(0);
  dispatch_float(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    constexpr int V = 16 / sizeof(T);
    if (channels % V == 0 && aligned16(out.raw()) && aligned16(x.raw()) && aligned16(v.raw())) {
      launch_kernel(add_per_channel_kernel<T, V>, grid_for(n / V, 256), 256, 0, stream_, out.data<T>(), x.data<T>(),
                                                                              v.data<T>(), per_batch, channels, n / V);
    } else {
      launch_kernel(add_per_channel_kernel<T, 1>, grid_for(n, 256), 256, 0, stream_, out.data<T>(), x.data<T>(),
          v.data<T>(),
                                                                          per_batch, channels, n);
    }
    SD_CUDA_LAUNCH_CHECK();
  });
  return out;
}

Tensor CudaBackend::lincomb(const std::vector<Tensor>& inputs, const Tensor& coeffs) {
  SD_ASSERT(!inputs.empty(), "lincomb: no inputs");
  const bool coeffs_on_device = !coeffs.device().is_cpu();
  if (coeffs_on_device) check_on_device(coeffs, "lincomb");
  SD_ASSERT(coeffs.dtype() == DType::kF32, "lincomb: coeffs must be f32, got " + coeffs.describe());
  const Tensor& first = inputs[0];
  const int n_inputs = static_cast<int>(inputs.size());
  const int64_t batch = first.ndim() ? first.dim(0) : 1;
  SD_ASSERT(coeffs.numel() == batch * n_inputs, "lincomb: coeffs " + coeffs.describe() + " for " +
                                                    std::to_string(n_inputs) + " inputs of " + first.describe());
  SD_ASSERT(!coeffs_on_device || n_inputs <= kMaxLincombInputs,
            "lincomb: device coefficients take at most " + std::to_string(kMaxLincombInputs) + " inputs");
  for (const Tensor& t : inputs) {
    check_on_device(t, "lincomb");
    SD_ASSERT(t.shape() == first.shape() && t.dtype() == first.dtype(),
              "lincomb: " + t.describe() + " vs " + first.describe());
  }
  Tensor out = empty(first.shape(), first.dtype());
  const int64_t total = first.numel();
  if (total == 0) return out;
  const int64_t per_batch = total / batch;
  dispatch_float(first.dtype(), [&](auto tag) {
    using T = decltype(tag);
    LincombArgs<T> args{};
    const float* dev_coeff = nullptr;
    const T* const* dev_in = nullptr;
    Tensor coeff_dev, ptrs_dev;
    if (coeffs_on_device) {
      // Coefficients read by the kernel from device memory (refilled before each graph replay).
      for (int i = 0; i < n_inputs; ++i) args.in[i] = inputs[static_cast<size_t>(i)].data<T>();
      dev_coeff = coeffs.data<float>();
    } else if (n_inputs <= kMaxLincombInputs && batch * n_inputs <= kMaxLincombCoeffs) {
      for (int i = 0; i < n_inputs; ++i) args.in[i] = inputs[static_cast<size_t>(i)].data<T>();
      for (int64_t i = 0; i < batch * n_inputs; ++i) args.coeff[i] = coeffs.f32()[i];
    } else {
      // Too many to pass by value: copy coefficients and input pointers to the device.
      coeff_dev = upload(coeffs, DType::kF32);
      Tensor ptrs_host = Tensor::empty_host({n_inputs}, DType::kI64);
      for (int i = 0; i < n_inputs; ++i) {
        ptrs_host.data<int64_t>()[i] = static_cast<int64_t>(reinterpret_cast<uintptr_t>(inputs[size_t(i)].raw()));
      }
      ptrs_dev = upload(ptrs_host, DType::kI64);
      dev_coeff = coeff_dev.f32();
      dev_in = ptrs_dev.data<const T*>();
    }
    launch_kernel(lincomb_kernel<T>, grid_for(total, 256), 256, 0, stream_, out.data<T>(), args, dev_coeff, dev_in,
        n_inputs,
                                                                 per_batch, total);
    SD_CUDA_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace sd::cuda
