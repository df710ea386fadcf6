// Layout ops: NHWC nearest 2x upsample, sub-pixel phase interleave (+ bias), zero padding /
// cropping of H and W, channel concat,
// token embedding lookup and row concatenation. Pure data movement, 16-byte vectors where the channel count allows.
#include <string>
#include <type_traits>

#include "backend/cuda/cuda_backend_impl.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_types.cuh"
#include "backend/cuda/pdl.cuh"

namespace sd::cuda {

namespace {

template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// Coordinates of flat index i over an NHWC tensor [B, h, w, cv] (cv: channels in vectors).
struct Nhwc {
  int64_t b, y, x, c;
};
__device__ __forceinline__ Nhwc nhwc_of(int64_t i, int64_t h, int64_t w, int64_t cv) {
  Nhwc p;
  p.c = i % cv;
  int64_t t = i / cv;
  p.x = t % w;
  t /= w;
  p.y = t % h;
  p.b = t / h;
  return p;
}

// [B,H,W,C] -> [B,2H,2W,C]; work unit: one vector of V channels of one output pixel.
template <typename T, int V>
__global__ void upsample2x_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t h, int64_t w, int64_t cv,
                                  int64_t n) {
  pdl_wait();  // PDL (pdl.cuh): first, in every CTA
  pdl_trigger();
  using P = Pack<T, V>;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const Nhwc o = nhwc_of(i, 2 * h, 2 * w, cv);
    reinterpret_cast<P*>(y)[i] = reinterpret_cast<const P*>(x)[((o.b * h + o.y / 2) * w + o.x / 2) * cv + o.c];
  }
}

// y4 [B, H+1, W+1, 4C] (the four phases of a sub-pixel convolution) -> y [B, 2H, 2W, C]:
// y[b, 2i+a, 2j+s, ch] = y4[b, i+a, j+s, (2a+s)*C + ch] (+ bias[ch], f32 math). Work unit: one
// vector of V channels of one output pixel; cv = C / V.
template <typename T, int V>
__global__ void interleave_phases_kernel(const T* __restrict__ y4, const T* __restrict__ bias, T* __restrict__ y,
                                         int64_t h, int64_t w, int64_t cv, int64_t n) {
  pdl_wait();  // PDL (pdl.cuh): first, in every CTA
  pdl_trigger();
  using P = Pack<T, V>;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const Nhwc o = nhwc_of(i, 2 * h, 2 * w, cv);
    const int64_t a = o.y & 1, s = o.x & 1;
    P v = reinterpret_cast<const P*>(y4)[((o.b * (h + 1) + (o.y >> 1) + a) * (w + 1) + (o.x >> 1) + s) * 4 * cv +
                                         (2 * a + s) * cv + o.c];
    if (bias != nullptr) {
      const P bv = reinterpret_cast<const P*>(bias)[o.c];
#pragma unroll
      for (int j = 0; j < V; ++j) v.v[j] = from_f32<T>(to_f32(v.v[j]) + to_f32(bv.v[j]));
    }
    reinterpret_cast<P*>(y)[i] = v;
  }
}

// a [R, Ca] ++ b [R, Cb] -> [R, Ca+Cb]; counts in V-element vectors.
template <typename T, int V>
__global__ void concat_kernel(const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ y, int64_t ca,
                              int64_t cb, int64_t n) {
  pdl_wait();  // PDL (pdl.cuh): first, in every CTA
  pdl_trigger();
  using P = Pack<T, V>;
  const int64_t c = ca + cb;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / c, j = i % c;
    reinterpret_cast<P*>(y)[i] = j < ca ? reinterpret_cast<const P*>(a)[r * ca + j]
                                        : reinterpret_cast<const P*>(b)[r * cb + (j - ca)];
  }
}

// out [B,Ho,Wo,C] = x [B,H,W,C] shifted by (dy, dx): out(y, x) = x(y + dy, x + dx), zero where
// that falls outside x (pad: negative shifts; crop: positive ones). Units of V elements.
template <typename T, int V>
__global__ void window_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t h, int64_t w, int64_t ho,
                              int64_t wo, int64_t cv, int64_t dy, int64_t dx, int64_t n) {
  pdl_wait();  // PDL (pdl.cuh): first, in every CTA
  pdl_trigger();
  using P = Pack<T, V>;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const Nhwc o = nhwc_of(i, ho, wo, cv);
    const int64_t iy = o.y + dy, ix = o.x + dx;
    P val;
    if (iy >= 0 && iy < h && ix >= 0 && ix < w) {
      val = reinterpret_cast<const P*>(x)[((o.b * h + iy) * w + ix) * cv + o.c];
    } else {
#pragma unroll
      for (int j = 0; j < V; ++j) val.v[j] = T(0);
    }
    reinterpret_cast<P*>(y)[i] = val;
  }
}

// ids [N], table [V, D] -> [N, D]; an out-of-range id yields a row of NaN (never silent).
template <typename T>
__global__ void embedding_kernel(const int32_t* __restrict__ ids, const T* __restrict__ table, T* __restrict__ y,
                                 int64_t vocab, int64_t dim, int64_t n) {
  pdl_wait();  // PDL (pdl.cuh): first, in every CTA
  pdl_trigger();
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / dim, d = i % dim;
    const int32_t id = ids[r];
    y[i] = (id >= 0 && id < vocab) ? table[int64_t{id} * dim + d] : from_f32<T>(__int_as_float(0x7fc00000));
  }
}

}  // namespace

Tensor CudaBackend::upsample_nearest2x(const Tensor& x) {
  check_on_device(x, "upsample_nearest2x");
  SD_ASSERT(x.ndim() == 4, "upsample_nearest2x: " + x.describe());
  const int64_t b = x.dim(0), h = x.dim(1), w = x.dim(2), c = x.dim(3);
  Tensor y = empty({b, 2 * h, 2 * w, c}, x.dtype());
  if (y.numel() == 0) return y;
  const size_t es = dtype_size(x.dtype());
  SD_ASSERT(es == 2 || es == 4, "upsample_nearest2x: " + x.describe());
  const auto run = [&](auto tag, auto vtag) {
    using T = decltype(tag);
    constexpr int V = decltype(vtag)::value;
    const int64_t n = y.numel() / V;
    launch_kernel(upsample2x_kernel<T, V>, grid_for(n, 256), 256, 0, stream_, x.data<T>(), y.data<T>(), h, w, c / V, n);
    SD_CUDA_LAUNCH_CHECK();
  };
  // Pure copies: move 2- or 4-byte elements as opaque integers.
  const bool vec = (c * static_cast<int64_t>(es)) % 16 == 0 && aligned16(x.raw()) && aligned16(y.raw());
  if (es == 2) {
    vec ? run(uint16_t{}, std::integral_constant<int, 8>{}) : run(uint16_t{}, std::integral_constant<int, 1>{});
  } else {
    vec ? run(uint32_t{}, std::integral_constant<int, 4>{}) : run(uint32_t{}, std::integral_constant<int, 1>{});
  }
  return y;
}

Tensor CudaBackend::interleave_phases2x(const Tensor& y4, const Tensor& bias) {
  check_on_device(y4, "interleave_phases2x");
  SD_ASSERT(y4.ndim() == 4 && y4.dim(1) >= 1 && y4.dim(2) >= 1 && y4.dim(3) % 4 == 0,
            "interleave_phases2x: y4 [B, H+1, W+1, 4C], got " + y4.describe());
  const int64_t b = y4.dim(0), h = y4.dim(1) - 1, w = y4.dim(2) - 1, c = y4.dim(3) / 4;
  if (bias.defined()) {
    check_on_device(bias, "interleave_phases2x");
    SD_ASSERT(bias.numel() == c && bias.dtype() == y4.dtype(), "interleave_phases2x: bias " + bias.describe() +
                                                                  " for " + y4.describe());
  }
  Tensor y = empty({b, 2 * h, 2 * w, c}, y4.dtype());  // [B, 2H, 2W, C]
  if (y.numel() == 0) return y;
  const size_t es = dtype_size(y4.dtype());
  const bool vec = (c * static_cast<int64_t>(es)) % 16 == 0 && aligned16(y4.raw()) && aligned16(y.raw()) &&
                   (!bias.defined() || aligned16(bias.raw()));
  dispatch_float(y4.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const auto run = [&](auto vtag) {
      constexpr int V = decltype(vtag)::value;
      const int64_t n = y.numel() / V;
      launch_kernel(interleave_phases_kernel<T, V>, grid_for(n, 256), 256, 0, stream_, y4.data<T>(),
                    bias.defined() ? bias.data<T>() : static_cast<const T*>(nullptr), y.data<T>(), h, w, c / V, n);
      SD_CUDA_LAUNCH_CHECK();
    };
    constexpr int kVec = static_cast<int>(16 / sizeof(T));
    vec ? run(std::integral_constant<int, kVec>{}) : run(std::integral_constant<int, 1>{});
  });
  return y;
}

Tensor CudaBackend::window(const Tensor& x, int64_t ho, int64_t wo, int64_t dy, int64_t dx, const char* op) {
  check_on_device(x, op);
  const int64_t b = x.dim(0), h = x.dim(1), w = x.dim(2), c = x.dim(3);
  Tensor y = empty({b, ho, wo, c}, x.dtype());
  if (y.numel() == 0) return y;
  const size_t es = dtype_size(x.dtype());
  SD_ASSERT(es == 2 || es == 4, std::string(op) + ": " + x.describe());
  const auto run = [&](auto tag, auto vtag) {
    using T = decltype(tag);
    constexpr int V = decltype(vtag)::value;
    const int64_t n = y.numel() / V;
    launch_kernel(window_kernel<T, V>, grid_for(n, 256), 256, 0, stream_, x.data<T>(), y.data<T>(), h, w, ho, wo, c / V,
        dy, dx,
                                                               n);
    SD_CUDA_LAUNCH_CHECK();
  };
  const bool vec = (c * static_cast<int64_t>(es)) % 16 == 0 && aligned16(x.raw()) && aligned16(y.raw());
  if (es == 2) {
    vec ? run(uint16_t{}, std::integral_constant<int, 8>{}) : run(uint16_t{}, std::integral_constant<int, 1>{});
  } else {
    vec ? run(uint32_t{}, std::integral_constant<int, 4>{}) : run(uint32_t{}, std::integral_constant<int, 1>{});
  }
  return y;
}

Tensor CudaBackend::pad_hw(const Tensor& x, int top, int bottom, int left, int right) {
  SD_ASSERT(x.ndim() == 4 && top >= 0 && bottom >= 0 && left >= 0 && right >= 0, "pad_hw " + x.describe());
  return window(x, x.dim(1) + top + bottom, x.dim(2) + left + right, -top, -left, "pad_hw");
}

Tensor CudaBackend::crop_hw(const Tensor& x, int h0, int h, int w0, int w) {
  SD_ASSERT(x.ndim() == 4 && h0 >= 0 && w0 >= 0 && h >= 0 && w >= 0 && h0 + h <= x.dim(1) && w0 + w <= x.dim(2),
            "crop_hw " + x.describe());
  return window(x, h, w, h0, w0, "crop_hw");
}

Tensor CudaBackend::concat_channels(const Tensor& a, const Tensor& b) {
  check_on_device(a, "concat_channels");
  check_on_device(b, "concat_channels");
  SD_ASSERT(a.ndim() == b.ndim() && a.ndim() >= 1 && a.dtype() == b.dtype(),
            "concat_channels: " + a.describe() + " ++ " + b.describe());
  for (int i = 0; i + 1 < a.ndim(); ++i) {
    SD_ASSERT(a.dim(i) == b.dim(i), "concat_channels: " + a.describe() + " ++ " + b.describe());
  }
  const int64_t ca = a.dim(-1), cb = b.dim(-1);
  Shape shape = a.shape();
  shape.back() = ca + cb;
  Tensor y = empty(shape, a.dtype());
  if (y.numel() == 0) return y;
  const size_t es = dtype_size(a.dtype());
  const auto run = [&](auto tag, auto vtag) {
    using T = decltype(tag);
    constexpr int V = decltype(vtag)::value;
    const int64_t n = y.numel() / V;
    launch_kernel(concat_kernel<T, V>, grid_for(n, 256), 256, 0, stream_, a.data<T>(), b.data<T>(), y.data<T>(), ca / V,
        cb / V,
                                                               n);
    SD_CUDA_LAUNCH_CHECK();
  };
  const bool vec = (ca * static_cast<int64_t>(es)) % 16 == 0 && (cb * static_cast<int64_t>(es)) % 16 == 0 &&
                   aligned16(a.raw()) && aligned16(b.raw()) && aligned16(y.raw());
  if (es == 2) {
    vec ? run(uint16_t{}, std::integral_constant<int, 8>{}) : run(uint16_t{}, std::integral_constant<int, 1>{});
  } else if (es == 4) {
    vec ? run(uint32_t{}, std::integral_constant<int, 4>{}) : run(uint32_t{}, std::integral_constant<int, 1>{});
  } else {
    SD_ASSERT(false, "concat_channels: " + a.describe());
  }
  return y;
}

Tensor CudaBackend::embedding(const Tensor& ids, const Tensor& table) {
  check_on_device(ids, "embedding");
  check_on_device(table, "embedding");
  SD_ASSERT(ids.dtype() == DType::kI32 && table.ndim() == 2, "embedding: ids " + ids.describe() + " table " +
                                                                 table.describe());
  const int64_t vocab = table.dim(0), dim = table.dim(1);
  Shape shape = ids.shape();
  shape.push_back(dim);
  Tensor y = empty(shape, table.dtype());
  const int64_t n = y.numel();
  if (n == 0) return y;
  dispatch_float(table.dtype(), [&](auto tag) {
    using T = decltype(tag);
    launch_kernel(embedding_kernel<T>, grid_for(n, 256), 256, 0, stream_, ids.data<int32_t>(), table.data<T>(),
        y.data<T>(),
                                                               vocab, dim, n);
    SD_CUDA_LAUNCH_CHECK();
  });
  return y;
}

Tensor CudaBackend::concat_rows(const std::vector<Tensor>& parts) {
  SD_ASSERT(!parts.empty(), "concat_rows: no parts");
  const Tensor& first = parts[0];
  SD_ASSERT(first.ndim() >= 1, "concat_rows: " + first.describe());
  int64_t rows = 0;
  for (const Tensor& p : parts) {
    check_on_device(p, "concat_rows");
    SD_ASSERT(p.ndim() == first.ndim() && p.dtype() == first.dtype(), "concat_rows: " + p.describe() + " vs " +
                                                                          first.describe());
    for (int i = 1; i < p.ndim(); ++i) {
      SD_ASSERT(p.dim(i) == first.dim(i), "concat_rows: " + p.describe() + " vs " + first.describe());
    }
    rows += p.dim(0);
  }
  Shape shape = first.shape();
  shape[0] = rows;
  Tensor y = empty(shape, first.dtype());
  size_t offset = 0;
  for (const Tensor& p : parts) {
    if (p.nbytes()) {
      SD_CUDA_CHECK(cudaMemcpyAsync(static_cast<char*>(y.raw()) + offset, p.raw(), p.nbytes(),
                                    cudaMemcpyDeviceToDevice, stream_));
    }
    offset += p.nbytes();
  }
  return y;
}

}  // namespace sd::cuda
