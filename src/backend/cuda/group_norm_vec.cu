// Vectorised group norm (+ SiLU) for f16/bf16 NHWC / [B,L,C] with C % 8 == 0: two launches.
// (1) statistics: many blocks per batch row, f32 shifted sums per (split, group). (2) apply:
// every block merges its batch row's splits (f64) in a prologue, then one 16-byte pass (+SiLU).
#include <algorithm>
#include <cstdlib>

#include "backend/cuda/cuda_backend_impl.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_types.cuh"
#include "backend/cuda/pdl.cuh"
#include "backend/cuda/group_norm_fast.h"
#include "backend/cuda/group_norm_vec.h"

namespace sd::cuda {

namespace {

// &x[b, 0, c] of the input [x | x2]: x [B, P, c1] holds channels [0, c1), x2 [B, P, C - c1] the rest
// (x2 null and c1 == C: one tensor).
template <typename T>
__device__ __forceinline__ const T* source_at(const T* x, const T* x2, int c1, int channels, int positions, int b,
                                              int c) {
  const bool first = c < c1;
  const int ld = first ? c1 : channels - c1;
  return (first ? x : x2) + int64_t{b} * positions * ld + (first ? c : c - c1);
}

// Thread chunk ch's vectors of batch row b: x[b, p, ch*8 .. +8) = (*vectors)[p * (*stride)].
template <typename T>
__device__ __forceinline__ const uint4* source_chunk(const T* x, const T* x2, int c1, int nch, int positions, int b,
                                                     int ch, int* stride) {
  const int cv1 = c1 / 8;
  *stride = ch < cv1 ? cv1 : nch - cv1;
  return ch < cv1 ? reinterpret_cast<const uint4*>(x) + int64_t{b} * positions * cv1 + ch
                  : reinterpret_cast<const uint4*>(x2) + int64_t{b} * positions * (nch - cv1) + (ch - cv1);
}

// x [B, P, C] -> partial [B, S, G] as (sum, sum of squares) of x - shift(g), where shift(g) =
// x[b, 0, g*cpg] keeps the f32 sums accurate when the mean is large against the spread.
// Block (s, b) covers positions [s*chunk, (s+1)*chunk); thread = (lane r, chunk ch); threads
// past rows * C/8 (the block is a whole number of warps) only help reduce. No finalize here:
// each apply block merges the splits itself (gn_apply_kernel), so no block waits on another.
// x may be the channel concatenation [x | x2] (source_at; x2 null, c1 == C: one tensor).
template <typename T>
__global__ void gn_stats_kernel(const T* __restrict__ x, const T* __restrict__ x2, int c1, const T* __restrict__ add,
                                int64_t add_ld,
                                float2* __restrict__ partial, int positions, int channels, int cpg, int groups, int chunk,
                                int rows) {
  pdl_wait();  // PDL (pdl.cuh): first, in every CTA
  pdl_trigger();
  extern __shared__ float red[];  // [2][rows * C]: per-thread channel sums, then squares
  const int nch = channels / 8;
  const int used = rows * nch;
  const int b = blockIdx.y, split = blockIdx.x, splits = gridDim.x;
  const int r = threadIdx.x / nch, ch = threadIdx.x % nch;
  const int p0 = split * chunk, p1 = min(positions, p0 + chunk);
  const T* ab = add ? add + b * add_ld : nullptr;  // v[b, :] (or none)
  float sum[8], sq[8], shift[8], va[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    sum[i] = sq[i] = 0.f;
    const int c0 = (ch * 8 + i) / cpg * cpg;  // the group's first channel
    shift[i] =
        r < rows ? to_f32(*source_at(x, x2, c1, channels, positions, b, c0)) + (ab ? to_f32(ab[c0]) : 0.f) : 0.f;
    va[i] = r < rows && ab ? to_f32(ab[ch * 8 + i]) : 0.f;
  }
  const auto accumulate = [&](const uint4& raw) {
    float f[8];
    unpack8<T>(raw, f);
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const float dv = f[i] + va[i] - shift[i];
      sum[i] += dv;
      sq[i] = fmaf(dv, dv, sq[i]);
    }
  };
  if (r < rows) {
    int sv;  // vectors per position in this thread's source
    const uint4* xv = source_chunk(x, x2, c1, nch, positions, b, ch, &sv);
    int p = p0 + r;
    for (; p + 3 * rows < p1; p += 4 * rows) {  // four loads in flight
      const uint4 a0 = xv[int64_t{p} * sv], a1 = xv[int64_t{p + rows} * sv];
      const uint4 a2 = xv[int64_t{p + 2 * rows} * sv], a3 = xv[int64_t{p + 3 * rows} * sv];
      accumulate(a0);
      accumulate(a1);
      accumulate(a2);
      accumulate(a3);
    }
    for (; p < p1; p += rows) accumulate(xv[int64_t{p} * sv]);
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      red[r * channels + ch * 8 + i] = sum[i];
      red[used * 8 + r * channels + ch * 8 + i] = sq[i];
    }
  }
  __syncthreads();
  // One warp per group: add the group's cpg channels over all position lanes.
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  for (int g = warp; g < groups; g += warps) {
    float s = 0.f, q = 0.f;
    for (int i = lane; i < rows * cpg; i += 32) {
      const int rr = i / cpg, c = g * cpg + i % cpg;
      s += red[rr * channels + c];
      q += red[used * 8 + rr * channels + c];
    }
    for (int off = 16; off > 0; off /= 2) {
      s += __shfl_xor_sync(0xffffffffu, s, off);
      q += __shfl_xor_sync(0xffffffffu, q, off);
    }
    if (lane == 0) partial[(int64_t{b} * splits + split) * groups + g] = make_float2(s, q);
  }
}

// y = x * scale[b, c] + shift[b, c] (then SiLU). Grid (blocks, B), block rows * C/8 threads.
// Prologue: the block merges batch row b's `splits` partials per group (coalesced loads spread
// over all threads, f64 shared-memory adds) into (mean, rstd) per group, so the statistics
// need no finalize launch or last-block wait. Then thread (r, ch) keeps channel chunk ch's 8
// (scale, shift) pairs in registers and walks the positions r + rows * (blockIdx.x + gridDim.x * k).
// x may be the channel concatenation [x | x2] (as gn_stats_kernel); y is one tensor [B, P, C].
template <typename T, bool kSilu>
__global__ void gn_apply_kernel(const T* __restrict__ x, const T* __restrict__ x2, int c1,
                                const T* __restrict__ add, int64_t add_ld,
                                T* __restrict__ y, const float2* __restrict__ partial, const T* __restrict__ gamma,
                                const T* __restrict__ beta, int positions, int nch, int rows, int cpg, int groups,
                                int splits, float eps) {
  pdl_wait();  // PDL (pdl.cuh): first, in every CTA
  pdl_trigger();
  extern __shared__ double acc[];  // [2][groups]: sums, sums of squares; then (mean, rstd) as float2
  const int b = blockIdx.y;
  const int r = threadIdx.x / nch, ch = threadIdx.x % nch;
  const int64_t base = int64_t{b} * positions * nch + ch;  // y[b, 0, ch*8] in vectors
  const T* ab = add ? add + b * add_ld : nullptr;  // v[b, :] (or none)
  float ga[8], be[8], va[8];  // issued first: their latency overlaps the merge
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    ga[i] = to_f32(gamma[ch * 8 + i]);
    be[i] = to_f32(beta[ch * 8 + i]);
    va[i] = ab ? to_f32(ab[ch * 8 + i]) : 0.f;
  }
  for (int g = threadIdx.x; g < 2 * groups; g += blockDim.x) acc[g] = 0.0;
  __syncthreads();
  const float2* pb = partial + int64_t{b} * splits * groups;
  const int entries = splits * groups;
  if (blockDim.x % groups == 0) {  // every entry of this thread is of group threadIdx.x % groups
    double s = 0.0, q = 0.0;
    for (int e = threadIdx.x; e < entries; e += blockDim.x) {
      const float2 pq = __ldcg(&pb[e]);
      s += pq.x;
      q += pq.y;
    }
    const int g = threadIdx.x % groups;
    atomicAdd(&acc[g], s);
    atomicAdd(&acc[groups + g], q);
  } else {
    for (int e = threadIdx.x; e < entries; e += blockDim.x) {  // consecutive lanes: different groups
      const float2 pq = __ldcg(&pb[e]);
      const int g = e % groups;
      atomicAdd(&acc[g], double(pq.x));
      atomicAdd(&acc[groups + g], double(pq.y));
    }
  }
  __syncthreads();
  float2* stat = reinterpret_cast<float2*>(acc + 2 * groups);  // [groups] (mean, rstd)
  const double n = double(positions) * cpg;
  for (int g = threadIdx.x; g < groups; g += blockDim.x) {
    const double mean_d = acc[g] / n;
    const float var = static_cast<float>(fmax(acc[groups + g] / n - mean_d * mean_d, 0.0));
    const float shift =
        to_f32(*source_at(x, x2, c1, nch * 8, positions, b, g * cpg)) + (ab ? to_f32(ab[g * cpg]) : 0.f);
    stat[g] = make_float2(shift + static_cast<float>(mean_d), rsqrtf(var + eps));
  }
  __syncthreads();
  int sv;  // vectors per position in this thread's source: x[b, p, ch*8] = xv[p * sv]
  const uint4* xv = source_chunk(x, x2, c1, nch, positions, b, ch, &sv);
  uint4* yv = reinterpret_cast<uint4*>(y) + base;
  float sc[8], sh[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const float2 ms = stat[(ch * 8 + i) / cpg];
    sc[i] = ms.y * ga[i];
    sh[i] = be[i] + (va[i] - ms.x) * sc[i];  // (x + v - mean) * sc + beta
  }
  const auto apply = [&](const uint4& raw) {
    float f[8];
    unpack8<T>(raw, f);
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      f[j] = fmaf(f[j], sc[j], sh[j]);
      if (kSilu) f[j] = silu_f(f[j]);
    }
    return pack8<T>(f);
  };
  if (r >= rows) return;
  const int step = gridDim.x * rows;
  int p = blockIdx.x * rows + r;
  for (; p + 3 * step < positions; p += 4 * step) {  // four loads in flight
    const uint4 a0 = xv[int64_t{p} * sv], a1 = xv[int64_t{p + step} * sv];
    const uint4 a2 = xv[int64_t{p + 2 * step} * sv], a3 = xv[int64_t{p + 3 * step} * sv];
    yv[int64_t{p} * nch] = apply(a0);
    yv[int64_t{p + step} * nch] = apply(a1);
    yv[int64_t{p + 2 * step} * nch] = apply(a2);
    yv[int64_t{p + 3 * step} * nch] = apply(a3);
  }
  for (; p < positions; p += step) yv[int64_t{p} * nch] = apply(xv[int64_t{p} * sv]);
}

int sm_count(int device) {
  static int cached[64] = {};
  if (device < 0 || device >= 64) return 132;
  if (cached[device] == 0) {
    int n = 0;
    if (cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || n <= 0) n = 132;
    cached[device] = n;
  }
  return cached[device];
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// Statistics splits per batch row at most: SDSERVE_CUDA_GN_MAX_SPLITS (1..65535), default 128.
int64_t max_splits_per_row() {
  static const int64_t v = [] {
    const char* env = std::getenv("SDSERVE_CUDA_GN_MAX_SPLITS");
    const long n = env ? std::strtol(env, nullptr, 10) : 0;
    return n >= 1 && n <= 65535 ? int64_t{n} : int64_t{128};
  }();
  return v;
}

// Minimum positions per statistics lane: SDSERVE_CUDA_GN_LANE_POSITIONS (1..256), default 8.
int64_t lane_positions() {
  static const int64_t v = [] {
    const char* env = std::getenv("SDSERVE_CUDA_GN_LANE_POSITIONS");
    const long n = env ? std::strtol(env, nullptr, 10) : 0;
    return n >= 1 && n <= 256 ? int64_t{n} : int64_t{8};
  }();
  return v;
}

// group_norm_vec of x, or of the channel concatenation [x | x2] where x2 is not null.
void group_norm_vec_impl(CudaBackend& be, const Tensor& x, const Tensor* x2, const Tensor& gamma, const Tensor& beta,
                         const Tensor& y, int groups, float eps, bool silu, const void* add, int64_t add_ld) {
  if (group_norm_fast(be, x, gamma, beta, y, groups, eps, silu, add, add_ld, x2)) return;
  if (group_norm_onchip(be, x, gamma, beta, y, groups, eps, silu, add, add_ld, x2)) return;
  const int64_t batch = x.dim(0), c1 = x.dim(-1), channels = c1 + (x2 ? x2->dim(-1) : 0);
  const int64_t positions = x.numel() / (batch * c1);
  const int nch = static_cast<int>(channels / 8);
  const int rows = std::max(1, 256 / nch);  // position lanes per block
  const int used = nch * rows;
  const int stats_threads = (used + 31) / 32 * 32;
  const int64_t target_blocks = int64_t{8} * sm_count(be.device().index);
  // Statistics: about 8 blocks per SM in all, each lane reading at least kLanePositions
  // positions (fewer splits also mean fewer partials for every apply block to merge).
  const int64_t max_splits = std::max<int64_t>(1, positions / (lane_positions() * rows));
  // At most max_splits_per_row() per batch row: every apply block merges splits x groups
  // partials, so a large image at batch 1 (the VAE at 512x512: 1056 splits) would read ~270 KB
  // per block.
  const int64_t splits = std::clamp<int64_t>((target_blocks + batch - 1) / batch, 1,
                                             std::min<int64_t>(max_splits, max_splits_per_row()));
  const int64_t chunk = (positions + splits - 1) / splits;
  // Apply: at most ~8 blocks per SM in all, each lane at least 4 positions.
  const int64_t apply_blocks = std::clamp<int64_t>(
      (positions + 4 * rows - 1) / (4 * rows), 1, std::max<int64_t>(1, target_blocks / batch));
  const int cpg = static_cast<int>(channels / groups);
  Tensor scratch = be.empty({batch * splits * groups * 2}, DType::kF32);  // partial [B, S, G] float2
  float2* partial = reinterpret_cast<float2*>(scratch.raw());
  cudaStream_t stream = be.stream();
  const size_t apply_smem = static_cast<size_t>(groups) * (2 * sizeof(double) + sizeof(float2));
  dispatch_half(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* x2p = x2 ? x2->data<T>() : nullptr;
    const int c1i = static_cast<int>(c1);
    launch_kernel(gn_stats_kernel<T>, dim3(static_cast<unsigned>(splits), static_cast<unsigned>(batch)), stats_threads,
        size_t{2} * used * 8 * sizeof(float), stream, x.data<T>(), x2p, c1i, static_cast<const T*>(add), add_ld,
        partial, static_cast<int>(positions),
        static_cast<int>(channels), cpg, groups, static_cast<int>(chunk), rows);
    SD_CUDA_LAUNCH_CHECK();
    const dim3 grid(static_cast<unsigned>(apply_blocks), static_cast<unsigned>(batch));
    const int p = static_cast<int>(positions), s = static_cast<int>(splits);
    const auto launch = [&](auto kernel) {
      launch_kernel(kernel, grid, stats_threads, apply_smem, stream, x.data<T>(), x2p, c1i,
                                                          static_cast<const T*>(add), add_ld,
                                                          y.data<T>(), partial, gamma.data<T>(), beta.data<T>(), p,
                                                          nch, rows, cpg, groups, s, eps);
    };
    if (silu) {
      launch(gn_apply_kernel<T, true>);
    } else {
      launch(gn_apply_kernel<T, false>);
    }
    SD_CUDA_LAUNCH_CHECK();
  });
}

}  // namespace

bool group_norm_vec_applies(const Tensor& x, const Tensor& y, int groups) {
  const int64_t batch = x.dim(0), channels = x.dim(-1);
  const int64_t positions = x.numel() / (batch * channels);
  return x.dtype() != DType::kF32 && groups > 0 && channels % groups == 0 && channels % 8 == 0 &&
         channels / 8 <= kGnVecMaxChunks && positions * channels / 8 < (int64_t{1} << 31) && batch <= kGnMaxBatch &&
         groups <= kGnVecMaxGroups && aligned16(x.raw()) && aligned16(y.raw());
}

void group_norm_vec(CudaBackend& be, const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& y,
                    int groups, float eps, bool silu, const void* add, int64_t add_ld) {
  group_norm_vec_impl(be, x, nullptr, gamma, beta, y, groups, eps, silu, add, add_ld);
}

bool group_norm_vec_concat(CudaBackend& be, const Tensor& a, const Tensor& b, const Tensor& gamma,
                           const Tensor& beta, const Tensor& y, int groups, float eps, bool silu) {
  const DType dt = a.dtype();
  if ((dt != DType::kF16 && dt != DType::kBF16) || b.dtype() != dt || y.dtype() != dt || gamma.dtype() != dt ||
      beta.dtype() != dt || a.ndim() < 2 || b.ndim() != a.ndim() || y.ndim() != a.ndim())
    return false;
  for (int d = 0; d + 1 < a.ndim(); ++d)
    if (b.dim(d) != a.dim(d) || y.dim(d) != a.dim(d)) return false;
  const int64_t ca = a.dim(-1), cb = b.dim(-1);
  if (ca <= 0 || cb <= 0 || ca % 8 != 0 || cb % 8 != 0 || y.dim(-1) != ca + cb || y.numel() == 0 ||
      gamma.numel() != ca + cb || beta.numel() != ca + cb || !aligned16(a.raw()) || !aligned16(b.raw()) ||
      !group_norm_vec_applies(y, y, groups))  // the concatenation's shape (that of y) and y's alignment
    return false;
  group_norm_vec_impl(be, a, &b, gamma, beta, y, groups, eps, silu, nullptr, 0);
  return true;
}

}  // namespace sd::cuda
