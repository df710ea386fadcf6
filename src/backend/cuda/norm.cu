// Normalisation kernels: group norm (+ fused SiLU) over NHWC / [B,L,C] with f32 statistics,
// layer norm and softmax over the last dimension (two-pass mean/variance and max/sum in f32).
// f16/bf16 16-byte aligned rows take vectorised kernels (layer norm: L-lane groups walking rows,
// SDSERVE_CUDA_LN; group norm: group_norm_vec.cu); f32, odd shapes, SDSERVE_CUDA_NORM=v1 the general ones.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>

#include "backend/cuda/cuda_backend_impl.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_types.cuh"
#include "backend/cuda/pdl.cuh"
#include "backend/cuda/group_norm_vec.h"

namespace sd::cuda {

namespace {

// ---- group norm ----

struct Moments {  // count, mean, sum of squared deviations
  float n, mean, m2;
};

__device__ __forceinline__ Moments merge(Moments a, Moments b) {
  const float n = a.n + b.n;
  if (n == 0.f) return a;
  const float delta = b.mean - a.mean;
  const float fb = b.n / n;
  return {n, a.mean + delta * fb, a.m2 + b.m2 + delta * delta * a.n * fb};
}

constexpr int kGnTileC = 32;  // channels per block (one warp's width)
constexpr int kGnRows = 8;    // position lanes per block

// x [B, P, C] -> partial moments [B, S, C]: split s covers positions [s*chunk, (s+1)*chunk).
// Each thread sums deviations from a per-channel shift (the channel's first value), which
// keeps the f32 sums accurate when the mean is large against the spread.
template <typename T>
__global__ void gn_partial_kernel(const T* __restrict__ x, Moments* __restrict__ partial, int64_t positions,
                                  int64_t channels, int64_t chunk) {
  pdl_wait();  // PDL (pdl.cuh): first, in every CTA
  pdl_trigger();
  const int64_t b = blockIdx.z, s = blockIdx.y;
  const int64_t c = int64_t{blockIdx.x} * kGnTileC + threadIdx.x;
  const int64_t p0 = s * chunk, p1 = min(positions, p0 + chunk);
  const T* xb = x + b * positions * channels;
  float sum = 0.f, sq = 0.f, cnt = 0.f, shift = 0.f;
  if (c < channels) {
    shift = to_f32(xb[c]);
    for (int64_t p = p0 + threadIdx.y; p < p1; p += kGnRows) {
      const float d = to_f32(xb[p * channels + c]) - shift;
      sum += d;
      sq += d * d;
      cnt += 1.f;
    }
  }
  __shared__ Moments red[kGnRows][kGnTileC];
  red[threadIdx.y][threadIdx.x] = cnt > 0.f ? Moments{cnt, shift + sum / cnt, fmaxf(sq - sum * sum / cnt, 0.f)}
                                            : Moments{0.f, 0.f, 0.f};
  __syncthreads();
  if (threadIdx.y == 0 && c < channels) {
    Moments m = red[0][threadIdx.x];
    for (int r = 1; r < kGnRows; ++r) m = merge(m, red[r][threadIdx.x]);
    partial[(b * gridDim.y + s) * channels + c] = m;
  }
}

// partial [B, S, C] -> stats [B, G] as (mean, rstd); one block per (b, g).
__global__ void gn_finalize_kernel(const Moments* __restrict__ partial, float2* __restrict__ stats, int splits,
                                   int64_t channels, int groups, float eps) {
  pdl_wait();  // PDL (pdl.cuh): first, in every CTA
  pdl_trigger();
  const int b = blockIdx.x / groups, g = blockIdx.x % groups;
  const int64_t cpg = channels / groups;
  const int64_t items = splits * cpg;
  Moments m{0.f, 0.f, 0.f};
  for (int64_t i = threadIdx.x; i < items; i += blockDim.x) {
    const int64_t s = i / cpg, c = g * cpg + i % cpg;
    m = merge(m, partial[(int64_t{b} * splits + s) * channels + c]);
  }
  for (int off = 16; off > 0; off /= 2) {
    Moments o{__shfl_xor_sync(0xffffffffu, m.n, off), __shfl_xor_sync(0xffffffffu, m.mean, off),
              __shfl_xor_sync(0xffffffffu, m.m2, off)};
    m = merge(m, o);
  }
  __shared__ Moments warp_m[32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) warp_m[warp] = m;
  __syncthreads();
  if (threadIdx.x == 0) {
    Moments t = warp_m[0];
    for (int w = 1; w < static_cast<int>(blockDim.x / 32); ++w) t = merge(t, warp_m[w]);
    const float var = t.n > 0.f ? t.m2 / t.n : 0.f;
    stats[blockIdx.x] = make_float2(t.mean, rsqrtf(var + eps));
  }
}

template <typename T>
__global__ void gn_apply_kernel(const T* __restrict__ x, T* __restrict__ y, const float2* __restrict__ stats,
                                const T* __restrict__ gamma, const T* __restrict__ beta, int64_t per_batch,
                                int64_t channels, int64_t cpg, int groups, int64_t n, bool silu) {
  pdl_wait();  // PDL (pdl.cuh): first, in every CTA
  pdl_trigger();
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t c = i % channels;
    const int64_t b = i / per_batch;
    const float2 st = stats[b * groups + c / cpg];
    float v = (to_f32(x[i]) - st.x) * st.y * to_f32(gamma[c]) + to_f32(beta[c]);
    if (silu) v = silu_f(v);
    y[i] = from_f32<T>(v);
  }
}

// ---- row reductions (layer norm, softmax) ----

constexpr int kRowThreads = 256;

// Sum (or max) over the block; every thread gets the result.
template <bool kMax>
__device__ float block_reduce(float v, float* scratch) {
  for (int off = 16; off > 0; off /= 2) {
    const float o = __shfl_xor_sync(0xffffffffu, v, off);
    v = kMax ? fmaxf(v, o) : v + o;
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // scratch may still be read from a previous reduction
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float t = scratch[0];
  for (int w = 1; w < static_cast<int>(blockDim.x / 32); ++w) t = kMax ? fmaxf(t, scratch[w]) : t + scratch[w];
  return t;
}

template <typename T>
__global__ void layer_norm_kernel(const T* __restrict__ x, T* __restrict__ y, const T* __restrict__ gamma,
                                  const T* __restrict__ beta, int64_t cols, float eps) {
  pdl_wait();  // PDL (pdl.cuh): first, in every CTA
  pdl_trigger();
  __shared__ float scratch[32];
  const T* row = x + blockIdx.x * cols;
  T* out = y + blockIdx.x * cols;
  float s = 0.f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) s += to_f32(row[c]);
  const float mean = block_reduce<false>(s, scratch) / static_cast<float>(cols);
  float q = 0.f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    const float d = to_f32(row[c]) - mean;
    q += d * d;
  }
  const float rstd = rsqrtf(block_reduce<false>(q, scratch) / static_cast<float>(cols) + eps);
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    out[c] = from_f32<T>((to_f32(row[c]) - mean) * rstd * to_f32(gamma[c]) + to_f32(beta[c]));
  }
}

template <typename T>
__global__ void softmax_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t cols) {
  pdl_wait();  // PDL (pdl.cuh): first, in every CTA
  pdl_trigger();
  __shared__ float scratch[32];
  const T* row = x + blockIdx.x * cols;
  T* out = y + blockIdx.x * cols;
  float m = -INFINITY;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) m = fmaxf(m, to_f32(row[c]));
  m = block_reduce<true>(m, scratch);
  float s = 0.f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) s += __expf(to_f32(row[c]) - m);
  const float inv = 1.f / block_reduce<false>(s, scratch);
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) out[c] = from_f32<T>(__expf(to_f32(row[c]) - m) * inv);
}

// ---- vectorised group norm / layer norm (f16, bf16; 8 values per 16-byte access) ----

// SDSERVE_CUDA_NORM: "v1" the general kernels only, "v2" the vectorised ones wherever they
// apply (also the default). Layer norm: a warp per row (2.8x faster on H100); group norm:
// group_norm_vec.cu (statistics with a last-block finalize, one vectorised apply pass).
enum class NormKernels { kDefault, kGeneral, kVector };

NormKernels norm_kernels() {
  static const NormKernels k = [] {
    const char* env = std::getenv("SDSERVE_CUDA_NORM");
    if (env && std::strcmp(env, "v1") == 0) return NormKernels::kGeneral;
    if (env && std::strcmp(env, "v2") == 0) return NormKernels::kVector;
    return NormKernels::kDefault;
  }();
  return k;
}
bool vector_group_norm() { return norm_kernels() != NormKernels::kGeneral; }
bool vector_layer_norm() { return norm_kernels() != NormKernels::kGeneral; }

// One group of L lanes (8, 16 or 32 of a warp) per row of `cols` (= 8 * nvec, nvec <= L * V)
// values held in registers: exact two-pass mean and variance in f32. Narrow rows take fewer
// lanes so that every lane has several 16-byte loads in flight (C = 320: 8 lanes x 5).
template <typename T, int V, int L>
__global__ void layer_norm_warp_kernel(const T* __restrict__ x, T* __restrict__ y, const T* __restrict__ gamma,
                                       const T* __restrict__ beta, int64_t rows, int nvec, float eps) {
  pdl_wait();  // PDL (pdl.cuh): first, in every CTA
  pdl_trigger();
  const int64_t row = int64_t{blockIdx.x} * (blockDim.x / L) + threadIdx.x / L;
  const int lane = threadIdx.x % L;
  const bool active = row < rows;  // inactive lanes still join the shuffles of their warp
  const uint4* xr = reinterpret_cast<const uint4*>(x) + (active ? row : 0) * nvec;
  float v[V][8];
  float s = 0.f;
#pragma unroll
  for (int i = 0; i < V; ++i) {
    const int idx = lane + L * i;
    if (active && idx < nvec) {
      unpack8<T>(xr[idx], v[i]);
#pragma unroll
      for (int j = 0; j < 8; ++j) s += v[i][j];
    }
  }
  for (int off = L / 2; off > 0; off /= 2) s += __shfl_xor_sync(0xffffffffu, s, off);
  const float inv_n = 1.f / static_cast<float>(nvec * 8);
  const float mean = s * inv_n;
  float q = 0.f;
#pragma unroll
  for (int i = 0; i < V; ++i) {
    if (active && lane + L * i < nvec) {
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const float dv = v[i][j] - mean;
        q = fmaf(dv, dv, q);
      }
    }
  }
  for (int off = L / 2; off > 0; off /= 2) q += __shfl_xor_sync(0xffffffffu, q, off);
  if (!active) return;
  const float rstd = rsqrtf(q * inv_n + eps);
  uint4* yr = reinterpret_cast<uint4*>(y) + row * nvec;
#pragma unroll
  for (int i = 0; i < V; ++i) {
    const int idx = lane + L * i;
    if (idx < nvec) {
      float gm[8], bt[8];
      unpack8<T>(reinterpret_cast<const uint4*>(gamma)[idx], gm);
      unpack8<T>(reinterpret_cast<const uint4*>(beta)[idx], bt);
#pragma unroll
      for (int j = 0; j < 8; ++j) v[i][j] = (v[i][j] - mean) * rstd * gm[j] + bt[j];
      yr[idx] = pack8<T>(v[i]);
    }
  }
}

// The persistent layer norm: the same L-lane groups and exact two-pass f32 statistics as
// layer_norm_warp_kernel (bitwise the same results), but each group walks rows row0, row0 +
// groups in grid, ... with the next row's 16-byte vectors loaded (kept packed) before this row's
// reductions, so loads stay in flight across the shuffles and the stores. A warp loops while any
// of its groups has a row (the shuffles need the whole warp).
template <typename T, int V, int L>
__global__ void __launch_bounds__(256) layer_norm_rows_kernel(const T* __restrict__ x, T* __restrict__ y,
                                                             const T* __restrict__ gamma, const T* __restrict__ beta,
                                                             int64_t rows, int nvec, float eps) {
  pdl_wait();  // PDL (pdl.cuh): first, in every CTA
  pdl_trigger();
  const int lane = threadIdx.x % L;
  const int64_t stride = int64_t{gridDim.x} * (blockDim.x / L);
  int64_t row = int64_t{blockIdx.x} * (blockDim.x / L) + threadIdx.x / L;
  const auto load = [&](uint4 (&dst)[V], int64_t r) {
    const uint4* xr = reinterpret_cast<const uint4*>(x) + r * nvec;
#pragma unroll
    for (int i = 0; i < V; ++i) {
      const int idx = lane + L * i;
      if (idx < nvec) dst[i] = __ldcs(xr + idx);  // read once: streaming
    }
  };
  uint4 cur[V];
  if (row < rows) load(cur, row);
  const float inv_n = 1.f / static_cast<float>(nvec * 8);
  while (__any_sync(0xffffffffu, row < rows)) {
    const bool active = row < rows;
    const int64_t next = row + stride;
    uint4 nxt[V];
    if (next < rows) load(nxt, next);
    float s = 0.f;
#pragma unroll
    for (int i = 0; i < V; ++i) {
      if (active && lane + L * i < nvec) {
        float f[8];
        unpack8<T>(cur[i], f);
#pragma unroll
        for (int j = 0; j < 8; ++j) s += f[j];
      }
    }
    for (int off = L / 2; off > 0; off /= 2) s += __shfl_xor_sync(0xffffffffu, s, off);
    const float mean = s * inv_n;
    float q = 0.f;
#pragma unroll
    for (int i = 0; i < V; ++i) {
      if (active && lane + L * i < nvec) {
        float f[8];
        unpack8<T>(cur[i], f);
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          const float dv = f[j] - mean;
          q = fmaf(dv, dv, q);
        }
      }
    }
    for (int off = L / 2; off > 0; off /= 2) q += __shfl_xor_sync(0xffffffffu, q, off);
    if (active) {
      const float rstd = rsqrtf(q * inv_n + eps);
      uint4* yr = reinterpret_cast<uint4*>(y) + row * nvec;
#pragma unroll
      for (int i = 0; i < V; ++i) {
        const int idx = lane + L * i;
        if (idx < nvec) {
          float f[8], gm[8], bt[8];
          unpack8<T>(cur[i], f);
          unpack8<T>(__ldg(reinterpret_cast<const uint4*>(gamma) + idx), gm);
          unpack8<T>(__ldg(reinterpret_cast<const uint4*>(beta) + idx), bt);
#pragma unroll
          for (int j = 0; j < 8; ++j) f[j] = (f[j] - mean) * rstd * gm[j] + bt[j];
          yr[idx] = pack8<T>(f);
        }
      }
    }
#pragma unroll
    for (int i = 0; i < V; ++i) cur[i] = nxt[i];
    row = next;
  }
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// SDSERVE_CUDA_LN: "warp" the one-row-per-group kernel, "rows" the persistent one wherever it
// applies, unset / "auto": layer_norm_rows_default. Read on every call (benchmarks switch it).
enum class LnPath { kAuto, kWarp, kRows };
LnPath ln_path() {
  const char* v = std::getenv("SDSERVE_CUDA_LN");
  if (v && std::strcmp(v, "warp") == 0) return LnPath::kWarp;
  if (v && std::strcmp(v, "rows") == 0) return LnPath::kRows;
  return LnPath::kAuto;
}

// Where the persistent kernel is the default: everywhere it applies. It measured faster than the
// one-row kernel at every UNet shape on an H100 (2 rows: 4.2-5.4 vs 5.1-5.8 us; 32 rows: 5.3-64 vs
// 7.2-70 us; docs/perf-notes.md, "Norms at batch 16").
bool layer_norm_rows_default(int64_t rows, int64_t cols) {
  (void)rows;
  (void)cols;
  return true;
}

int device_sm_count() {
  static const int n = [] {
    int dev = 0, sms = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || sms <= 0) {
      (void)cudaGetLastError();
      sms = 132;
    }
    return sms;
  }();
  return n;
}

// Launches layer_norm_rows_kernel<T, V, L>: CTAs of 256 threads, or fewer (down to one group's
// warp) where 256 would leave fewer than 2 CTAs per SM; at most the co-resident CTA count (each
// group then loops over rows). SDSERVE_CUDA_LN_THREADS / _CTAS force the CTA size / count.
template <typename T, int V, int L>
void launch_layer_norm_rows(const T* x, T* y, const T* gamma, const T* beta, int64_t rows, int nvec, float eps,
                            cudaStream_t stream) {
  const int sms = device_sm_count();
  int threads = 256;
  while (threads > 32 && threads > L && (rows + threads / L - 1) / (threads / L) < 2 * sms) threads /= 2;
  if (const char* t = std::getenv("SDSERVE_CUDA_LN_THREADS"); t && std::atoi(t) >= std::max(32, L)) {
    threads = std::min(256, std::atoi(t)) / 32 * 32;
  }
  const int rows_per_cta = threads / L;
  int per_sm = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, layer_norm_rows_kernel<T, V, L>, threads, 0) !=
          cudaSuccess ||
      per_sm < 1) {
    (void)cudaGetLastError();
    per_sm = 1;
  }
  int64_t ctas = std::min<int64_t>((rows + rows_per_cta - 1) / rows_per_cta, int64_t{per_sm} * sms);
  if (const char* c = std::getenv("SDSERVE_CUDA_LN_CTAS"); c && std::atoi(c) > 0) ctas = std::atoi(c);
  launch_kernel(layer_norm_rows_kernel<T, V, L>, static_cast<unsigned>(ctas), threads, 0, stream, x, y, gamma, beta,
      rows, nvec, eps);
}

}  // namespace

bool vector_group_norm_enabled() { return vector_group_norm(); }

Tensor CudaBackend::group_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, int groups, float eps,
                               bool silu) {
  check_on_device(x, "group_norm");
  check_on_device(gamma, "group_norm");
  check_on_device(beta, "group_norm");
  SD_ASSERT(x.ndim() >= 2, "group_norm: " + x.describe());
  const int64_t batch = x.dim(0), channels = x.dim(-1);
  SD_ASSERT(groups > 0 && channels % groups == 0, "group_norm: " + std::to_string(groups) + " groups for " +
                                                      x.describe());
  SD_ASSERT(gamma.numel() == channels && beta.numel() == channels && gamma.dtype() == x.dtype() &&
                beta.dtype() == x.dtype(),
            "group_norm: gamma " + gamma.describe() + " beta " + beta.describe() + " for " + x.describe());
  Tensor y = empty(x.shape(), x.dtype());
  const int64_t n = x.numel();
  if (n == 0) return y;
  const int64_t positions = n / (batch * channels);
  if (vector_group_norm() && group_norm_vec_applies(x, y, groups)) {
    group_norm_vec(*this, x, gamma, beta, y, groups, eps, silu);
    return y;
  }
  const int64_t ctiles = (channels + kGnTileC - 1) / kGnTileC;
  // Enough splits over positions to give every SM a few blocks, each at least 32 positions.
  const int64_t want = std::max<int64_t>(1, 528 / std::max<int64_t>(1, batch * ctiles));
  const int64_t splits = std::max<int64_t>(1, std::min<int64_t>(want, (positions + 31) / 32));
  const int64_t chunk = (positions + splits - 1) / splits;
  SD_ASSERT(batch <= 65535 && splits <= 65535, "group_norm: grid too large for " + x.describe());

  Tensor partial = empty({batch, splits, channels, 3}, DType::kF32);
  Tensor stats = empty({batch, groups, 2}, DType::kF32);
  dispatch_float(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const dim3 grid(static_cast<unsigned>(ctiles), static_cast<unsigned>(splits), static_cast<unsigned>(batch));
    launch_kernel(gn_partial_kernel<T>, grid, dim3(kGnTileC, kGnRows), 0, stream_, x.data<T>(),
        reinterpret_cast<Moments*>(partial.raw()), positions, channels, chunk);
    SD_CUDA_LAUNCH_CHECK();
    launch_kernel(gn_finalize_kernel, static_cast<unsigned>(batch * groups), 256, 0, stream_,
        reinterpret_cast<const Moments*>(partial.raw()), reinterpret_cast<float2*>(stats.raw()),
        static_cast<int>(splits), channels, groups, eps);
    SD_CUDA_LAUNCH_CHECK();
    launch_kernel(gn_apply_kernel<T>, grid_for(n, 256), 256, 0, stream_, x.data<T>(), y.data<T>(),
                                                              reinterpret_cast<const float2*>(stats.raw()),
                                                              gamma.data<T>(), beta.data<T>(), n / batch, channels,
                                                              channels / groups, groups, n, silu);
    SD_CUDA_LAUNCH_CHECK();
  });
  return y;
}

Tensor CudaBackend::group_norm_add(const Tensor& x, const Tensor& add_src, int64_t add_col, const Tensor& gamma,
                                   const Tensor& beta, int groups, float eps, bool silu) {
  check_on_device(x, "group_norm_add");
  check_on_device(add_src, "group_norm_add");
  SD_ASSERT(x.ndim() >= 2, "group_norm_add: " + x.describe());
  const int64_t batch = x.dim(0), channels = x.dim(-1);
  SD_ASSERT(add_src.ndim() == 2 && add_src.dim(0) == batch && add_col >= 0 && add_col + channels <= add_src.dim(1) &&
                add_src.dtype() == x.dtype(),
            "group_norm_add: add_src " + add_src.describe() + " col " + std::to_string(add_col) + " for x " +
                x.describe());
  const int64_t ld = add_src.dim(1);
  const char* window = static_cast<const char*>(add_src.raw()) + add_col * dtype_size(x.dtype());
  Tensor y = empty(x.shape(), x.dtype());
  if (x.numel() > 0 && vector_group_norm() && group_norm_vec_applies(x, y, groups) && ld % 8 == 0 &&
      aligned16(window) && gamma.numel() == channels && beta.numel() == channels && gamma.dtype() == x.dtype() &&
      beta.dtype() == x.dtype()) {
    check_on_device(gamma, "group_norm_add");
    check_on_device(beta, "group_norm_add");
    group_norm_vec(*this, x, gamma, beta, y, groups, eps, silu, window, ld);
    return y;
  }
  // Otherwise: the window copied out (a 2-D device copy, capturable), added, then group_norm.
  Tensor v = empty({batch, channels}, x.dtype());  // [B, C]
  const size_t es = dtype_size(x.dtype());
  SD_CUDA_CHECK(cudaMemcpy2DAsync(v.raw(), static_cast<size_t>(channels) * es, window, static_cast<size_t>(ld) * es,
                                  static_cast<size_t>(channels) * es, static_cast<size_t>(batch),
                                  cudaMemcpyDeviceToDevice, stream_));
  return group_norm(add_per_channel(x, v), gamma, beta, groups, eps, silu);
}

Tensor CudaBackend::layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps) {
  check_on_device(x, "layer_norm");
  check_on_device(gamma, "layer_norm");
  check_on_device(beta, "layer_norm");
  const int64_t cols = x.dim(-1);
  SD_ASSERT(gamma.numel() == cols && beta.numel() == cols && gamma.dtype() == x.dtype() && beta.dtype() == x.dtype(),
            "layer_norm: gamma " + gamma.describe() + " beta " + beta.describe() + " for " + x.describe());
  Tensor y = empty(x.shape(), x.dtype());
  const int64_t rows = cols ? x.numel() / cols : 0;
  if (rows == 0) return y;
  SD_ASSERT(rows <= 0x7fffffff, "layer_norm: too many rows");
  const int64_t nvec = cols / 8;
  if (vector_layer_norm() && x.dtype() != DType::kF32 && cols % 8 == 0 && nvec <= 32 * 8 &&
      aligned16(x.raw()) && aligned16(y.raw()) && aligned16(gamma.raw()) && aligned16(beta.raw())) {
    dispatch_half(x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      const LnPath path = ln_path();
      const bool persistent = path == LnPath::kRows || (path == LnPath::kAuto && layer_norm_rows_default(rows, cols));
      const auto go = [&](auto v, auto l) {
        constexpr int kV = decltype(v)::value, kL = decltype(l)::value;
        constexpr int kRowsPerBlock = 256 / kL;  // 8 warps
        if (persistent) {
          launch_layer_norm_rows<T, kV, kL>(x.data<T>(), y.data<T>(), gamma.data<T>(), beta.data<T>(), rows,
                                            static_cast<int>(nvec), eps, stream_);
          return;
        }
        launch_kernel(layer_norm_warp_kernel<T, kV, kL>,
            static_cast<unsigned>((rows + kRowsPerBlock - 1) / kRowsPerBlock), 256, 0, stream_, x.data<T>(),
            y.data<T>(), gamma.data<T>(), beta.data<T>(), rows, static_cast<int>(nvec), eps);
      };
      using std::integral_constant;
      if (nvec <= 8 * 6) go(integral_constant<int, 6>{}, integral_constant<int, 8>{});          // C <= 384
      else if (nvec <= 16 * 6) go(integral_constant<int, 6>{}, integral_constant<int, 16>{});  // C <= 768
      else if (nvec <= 32 * 6) go(integral_constant<int, 6>{}, integral_constant<int, 32>{});  // C <= 1536
      else go(integral_constant<int, 8>{}, integral_constant<int, 32>{});
      SD_CUDA_LAUNCH_CHECK();
    });
    return y;
  }
  dispatch_float(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    launch_kernel(layer_norm_kernel<T>, static_cast<unsigned>(rows), kRowThreads, 0, stream_, x.data<T>(), y.data<T>(),
        gamma.data<T>(), beta.data<T>(), cols, eps);
    SD_CUDA_LAUNCH_CHECK();
  });
  return y;
}

Tensor CudaBackend::softmax(const Tensor& x) {
  check_on_device(x, "softmax");
  const int64_t cols = x.dim(-1);
  Tensor y = empty(x.shape(), x.dtype());
  const int64_t rows = cols ? x.numel() / cols : 0;
  if (rows == 0) return y;
  SD_ASSERT(rows <= 0x7fffffff, "softmax: too many rows");
  dispatch_float(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    launch_kernel(softmax_kernel<T>, static_cast<unsigned>(rows), kRowThreads, 0, stream_, x.data<T>(), y.data<T>(),
        cols);
    SD_CUDA_LAUNCH_CHECK();
  });
  return y;
}

}  // namespace sd::cuda
