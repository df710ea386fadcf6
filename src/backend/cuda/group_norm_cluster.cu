// One-launch group norm (+ SiLU) for small batches on Hopper, opt-in (SDSERVE_CUDA_GN_CLUSTER=1):
// each batch row is one thread-block cluster (up to 16 CTAs) that merges its statistics through
// distributed shared memory, then normalises its positions (a second read, mostly from L2).
#include <cooperative_groups.h>

#include <algorithm>
#include <cstdlib>

#include "backend/cuda/cuda_backend_impl.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_types.cuh"
#include "backend/cuda/group_norm_vec.h"

namespace sd::cuda {

namespace {

namespace cg = cooperative_groups;

// x [B, P, C] -> y. Grid (cluster size, B), one cluster per batch row; CTA `rank` covers positions
// [rank*chunk, (rank+1)*chunk). Thread = (lane r < rows, 8-channel chunk ch). Statistics are f32
// sums of x - shift(g), shift(g) = x[b, 0, g*cpg] (as in group_norm_vec.cu), merged in f64.
template <typename T, bool kSilu>
__global__ void gn_cluster_kernel(const T* __restrict__ x, T* __restrict__ y, const T* __restrict__ gamma,
                                  const T* __restrict__ beta, int positions, int channels, int cpg, int groups,
                                  int chunk, int rows, float eps) {
  extern __shared__ float smem[];  // red [2][rows * C] | part [groups] float2 | stat [groups] float2
  cg::cluster_group cluster = cg::this_cluster();
  const int rank = static_cast<int>(cluster.block_rank());
  const int ranks = static_cast<int>(cluster.num_blocks());
  const int nch = channels / 8;
  const int used = rows * nch;
  float* red = smem;
  float2* part = reinterpret_cast<float2*>(smem + 2 * used * 8);
  float2* stat = part + groups;
  const int b = blockIdx.y;
  const int r = threadIdx.x / nch, ch = threadIdx.x % nch;
  const int p0 = rank * chunk, p1 = min(positions, p0 + chunk);
  const T* xb = x + int64_t{b} * positions * channels;
  const uint4* xv = reinterpret_cast<const uint4*>(xb) + ch;
  float sum[8], sq[8], shift[8], ga[8], be[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    sum[i] = sq[i] = 0.f;
    shift[i] = r < rows ? to_f32(xb[(ch * 8 + i) / cpg * cpg]) : 0.f;
    ga[i] = r < rows ? to_f32(gamma[ch * 8 + i]) : 0.f;
    be[i] = r < rows ? to_f32(beta[ch * 8 + i]) : 0.f;
  }
  const auto accumulate = [&](const uint4& raw) {
    float f[8];
    unpack8<T>(raw, f);
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const float dv = f[i] - shift[i];
      sum[i] += dv;
      sq[i] = fmaf(dv, dv, sq[i]);
    }
  };
  if (r < rows) {
    int p = p0 + r;
    for (; p + 3 * rows < p1; p += 4 * rows) {  // four loads in flight
      const uint4 a0 = xv[int64_t{p} * nch], a1 = xv[int64_t{p + rows} * nch];
      const uint4 a2 = xv[int64_t{p + 2 * rows} * nch], a3 = xv[int64_t{p + 3 * rows} * nch];
      accumulate(a0);
      accumulate(a1);
      accumulate(a2);
      accumulate(a3);
    }
    for (; p < p1; p += rows) accumulate(xv[int64_t{p} * nch]);
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      red[r * channels + ch * 8 + i] = sum[i];
      red[used * 8 + r * channels + ch * 8 + i] = sq[i];
    }
  }
  __syncthreads();
  // This CTA's per-group sums: one warp per group over all position lanes and its channels.
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
    if (lane == 0) part[g] = make_float2(s, q);
  }
  cluster.sync();  // every CTA's part[] is written
  const double n = double(positions) * cpg;
  for (int g = threadIdx.x; g < groups; g += blockDim.x) {
    double s = 0.0, q = 0.0;
    for (int k = 0; k < ranks; ++k) {
      const float2 pq = cluster.map_shared_rank(part, k)[g];
      s += pq.x;
      q += pq.y;
    }
    const double mean_d = s / n;
    const float var = static_cast<float>(fmax(q / n - mean_d * mean_d, 0.0));
    stat[g] = make_float2(to_f32(xb[g * cpg]) + static_cast<float>(mean_d), rsqrtf(var + eps));
  }
  cluster.sync();  // stat[] complete here; no CTA leaves while others still read its part[]
  if (r >= rows) return;
  float sc[8], sh[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const float2 ms = stat[(ch * 8 + i) / cpg];
    sc[i] = ms.y * ga[i];
    sh[i] = be[i] - ms.x * sc[i];
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
  uint4* yv = reinterpret_cast<uint4*>(y + int64_t{b} * positions * channels) + ch;
  int p = p0 + r;
  for (; p + 3 * rows < p1; p += 4 * rows) {
    const uint4 a0 = xv[int64_t{p} * nch], a1 = xv[int64_t{p + rows} * nch];
    const uint4 a2 = xv[int64_t{p + 2 * rows} * nch], a3 = xv[int64_t{p + 3 * rows} * nch];
    yv[int64_t{p} * nch] = apply(a0);
    yv[int64_t{p + rows} * nch] = apply(a1);
    yv[int64_t{p + 2 * rows} * nch] = apply(a2);
    yv[int64_t{p + 3 * rows} * nch] = apply(a3);
  }
  for (; p < p1; p += rows) yv[int64_t{p} * nch] = apply(xv[int64_t{p} * nch]);
}

// Opt-in (SDSERVE_CUDA_GN_CLUSTER=1): measured slower than the two-kernel path on an H100
// (22.3 vs 15.6 us at 2x64x64x320): 16 CTAs per batch row are bound by per-SM L2 bandwidth.
bool cluster_path_enabled() {
  static const bool on = [] {
    const char* env = std::getenv("SDSERVE_CUDA_GN_CLUSTER");
    return env && env[0] == '1';
  }();
  return on;
}

struct DeviceInfo {
  int sms = 0;
  bool clusters = false;
};

DeviceInfo device_info(int device) {
  static DeviceInfo cached[64];
  if (device < 0 || device >= 64) return {};
  DeviceInfo& d = cached[device];
  if (d.sms == 0) {
    int major = 0, sms = 0;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) {
      return {};
    }
    d.clusters = major >= 9;
    d.sms = sms;
  }
  return d;
}

// Launches `kernel` with one cluster of `cluster` CTAs per batch row. A configuration the device
// refuses (cluster too large for its GPCs) is remembered per kernel, so it is only ever tried
// on an eager call (the engine runs every shape eagerly before capturing it), never in a capture.
template <typename T>
bool launch_cluster(void (*kernel)(const T*, T*, const T*, const T*, int, int, int, int, int, int, float),
                    int cluster, int batch, int threads, size_t smem, cudaStream_t stream, const T* x, T* y,
                    const T* gamma, const T* beta, int positions, int channels, int cpg, int groups, int chunk,
                    int rows, float eps) {
  static const bool non_portable_ok =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) == cudaSuccess;
  static int refused_at = 1 << 30;  // smallest cluster size the device refused for this kernel
  if ((cluster > 8 && !non_portable_ok) || cluster >= refused_at) return false;
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(static_cast<unsigned>(cluster), static_cast<unsigned>(batch), 1);
  cfg.blockDim = dim3(static_cast<unsigned>(threads), 1, 1);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = static_cast<unsigned>(cluster);
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  int active = 0;
  if (cudaOccupancyMaxActiveClusters(&active, kernel, &cfg) != cudaSuccess || active < 1) {
    (void)cudaGetLastError();
    refused_at = cluster;
    return false;
  }
  const cudaError_t err =
      cudaLaunchKernelEx(&cfg, kernel, x, y, gamma, beta, positions, channels, cpg, groups, chunk, rows, eps);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();  // a launch-configuration error is not sticky: use the two-kernel path
    refused_at = cluster;
    return false;
  }
  return true;
}

}  // namespace

bool group_norm_cluster(CudaBackend& be, const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& y,
                        int groups, float eps, bool silu) {
  if (!cluster_path_enabled()) return false;
  const DeviceInfo info = device_info(be.device().index);
  if (!info.clusters) return false;
  const int64_t batch = x.dim(0), channels = x.dim(-1);
  const int64_t positions = x.numel() / (batch * channels);
  const int nch = static_cast<int>(channels / 8);
  const int rows = std::max(1, 256 / nch);
  const int used = nch * rows;
  const int threads = (used + 31) / 32 * 32;
  // One wave: every batch row's cluster resident at once; 16 CTAs per row where that fits.
  int cluster = 16;
  while (cluster > 1 && batch * cluster > info.sms) cluster /= 2;
  if (cluster < 4 || positions < int64_t{cluster} * rows) return false;
  // The second read of x should come from L2: small tensors only (larger ones: two kernels).
  if (x.nbytes() > (size_t{24} << 20)) return false;
  const int64_t chunk = (positions + cluster - 1) / cluster;
  const size_t smem = (size_t{2} * used * 8 + 4 * static_cast<size_t>(groups)) * sizeof(float);
  if (smem > 48 * 1024) return false;
  const int cpg = static_cast<int>(channels / groups);
  bool ok = false;
  dispatch_half(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const auto go = [&](auto kernel) {
      ok = launch_cluster(kernel, cluster, static_cast<int>(batch), threads, smem, be.stream(), x.data<T>(),
                          y.data<T>(), gamma.data<T>(), beta.data<T>(), static_cast<int>(positions),
                          static_cast<int>(channels), cpg, groups, static_cast<int>(chunk), rows, eps);
    };
    if (silu) {
      go(gn_cluster_kernel<T, true>);
    } else {
      go(gn_cluster_kernel<T, false>);
    }
  });
  return ok;
}

}  // namespace sd::cuda
