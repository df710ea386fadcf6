// One-launch group norm (+ SiLU, + per-channel add) that reads x once: each (batch row, slice of
// whole groups' channels) is one thread-block cluster (1..16 CTAs); CTA `rank` copies its slab of
// positions x slice channels into shared memory, exact two-pass statistics via DSMEM, applies.
#include <cooperative_groups.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

#include "backend/cuda/cuda_backend_impl.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_types.cuh"
#include "backend/cuda/group_norm_vec.h"
#include "backend/cuda/mbarrier.cuh"
#include "backend/cuda/pdl.cuh"

namespace sd::cuda {

namespace {

namespace cg = cooperative_groups;

constexpr int kStages = 4;          // the slab arrives in 4 position chunks, one barrier / group each
constexpr int kMaxThreads = 512;    // position lanes x 8-channel chunks per CTA
constexpr int kMaxCluster = 16;     // non-portable above 8
constexpr int kMaxGroups = 256;     // statistics arrays in shared memory
constexpr size_t kHeaderBytes = 128;  // the stage barriers

struct OnchipArgs {
  const void* x;      // [B, P, c1]: channels [0, c1) of the input (all of it where x2 is null)
  const void* x2;     // [B, P, C - c1]: channels [c1, C) (the channel concatenation [x | x2]), or null
  int c1;             // channels in x (a multiple of 8; C where x2 is null)
  const void* add;    // [B, add_ld] window (or null): normalises x + add[b, c]
  int64_t add_ld;
  void* y;            // [B, P, C]
  const void* gamma;  // [C]
  const void* beta;   // [C]
  int positions, channels, cpg;
  int slice;          // channels per cluster (whole groups, a multiple of 8); blockIdx.y picks it
  int groups;         // groups per slice
  int chunk;          // positions per CTA (the last CTAs of a row may have fewer, or none)
  int stage_positions;  // positions per stage, a multiple of rows
  int rows;           // position lanes per CTA
  float eps;
};

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Waits for stage s of this thread's cp.async groups (kStages groups were committed).
__device__ __forceinline__ void cp_async_wait_stage(int s) {
  switch (s) {
    case 0: cp_async_wait<kStages - 1>(); break;
    case 1: cp_async_wait<kStages - 2>(); break;
    case 2: cp_async_wait<kStages - 3>(); break;
    default: cp_async_wait<0>(); break;
  }
}

// Per-group sums of v[8] (this thread's 8 channels) over the CTA: red [rows][C] holds every
// lane's values; one warp per group adds the group's cpg channels over all lanes -> out[g].
__device__ __forceinline__ void cta_group_sums(float* red, const float (&v)[8], float* out, int rows, int channels,
                                               int cpg, int groups, bool active) {
  if (active) {
    float4* dst = reinterpret_cast<float4*>(red + threadIdx.x * 8);
    dst[0] = make_float4(v[0], v[1], v[2], v[3]);
    dst[1] = make_float4(v[4], v[5], v[6], v[7]);
  }
  __syncthreads();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  for (int g = warp; g < groups; g += warps) {
    float s = 0.f;
    for (int i = lane; i < rows * cpg; i += 32) s += red[(i / cpg) * channels + g * cpg + i % cpg];
    for (int off = 16; off > 0; off /= 2) s += __shfl_xor_sync(0xffffffffu, s, off);
    if (lane == 0) out[g] = s;
  }
}

// Sum over the cluster's CTAs of part[g] (each CTA's shared array), f64: all ranks' loads in flight.
template <bool kCluster>
__device__ __forceinline__ double cluster_sum(float* part, int g, int ranks) {
  if constexpr (!kCluster) return part[g];
  cg::cluster_group cluster = cg::this_cluster();
  float v[kMaxCluster];
#pragma unroll
  for (int k = 0; k < kMaxCluster; ++k) v[k] = k < ranks ? cluster.map_shared_rank(part, k)[g] : 0.f;
  double s = 0.0;
#pragma unroll
  for (int k = 0; k < kMaxCluster; ++k) s += v[k];
  return s;
}

// silu(x) = x * sigmoid(x) = h + h * tanh(h), h = x / 2: one MUFU op instead of exp + reciprocal
// (the SiLU of a 164 KB slab is MUFU-bound on one SM).
__device__ __forceinline__ float silu_tanh(float x) {
  const float h = 0.5f * x;
  float t;
  asm("tanh.approx.f32 %0, %1;" : "=f"(t) : "f"(h));
  return fmaf(h, t, h);
}

// Grid (cluster, slices, B), cluster (cluster, 1, 1): one cluster per (batch row, channel slice).
// Shared memory: barriers | part_sum, part_sq, mean, rstd [groups] | red [threads x 8] f32 |
// slab [chunk, slice] T: [chunk, n1 x 8] from x, then [chunk, n2 x 8] from x2 (the slice's channels
// below / above c1; one source: n1 = slice / 8, n2 = 0).
// kCluster false: a plain launch of single CTAs (cluster size 1), block barriers only.
template <bool kCluster>
__device__ __forceinline__ void cluster_barrier() {
  if constexpr (kCluster) {
    cg::this_cluster().sync();
  } else {
    __syncthreads();
  }
}

template <typename T, bool kSilu, bool kBulk, bool kCluster>
__global__ void __launch_bounds__(kMaxThreads) gn_onchip_kernel(const OnchipArgs a) {
  extern __shared__ __align__(128) unsigned char smem[];
  pdl_wait();
  pdl_trigger();
  int rank = 0, ranks = 1;
  if constexpr (kCluster) {
    rank = static_cast<int>(cg::this_cluster().block_rank());
    ranks = static_cast<int>(cg::this_cluster().num_blocks());
  }
  const int b = blockIdx.z, c0 = blockIdx.y * a.slice;
  const int C = a.channels, nch = a.slice / 8, G = a.groups, rows = a.rows;
  uint64_t* bars = reinterpret_cast<uint64_t*>(smem);
  float* part_sum = reinterpret_cast<float*>(smem + kHeaderBytes);
  float* part_sq = part_sum + G;
  float* mean = part_sq + G;
  float* rstd = mean + G;
  float* red = reinterpret_cast<float*>(smem + kHeaderBytes + ((16 * G + 127) / 128) * 128);
  uint4* slab = reinterpret_cast<uint4*>(reinterpret_cast<unsigned char*>(red) + blockDim.x * 32);
  const int p0 = rank * a.chunk;
  const int np = max(0, min(a.positions - p0, a.chunk));
  const int sp = a.stage_positions;
  const int stages = (np + sp - 1) / sp;
  // The slice's 8-channel chunks in x (n1: channels below c1) and in x2 (n2), each source's rows of
  // cv1 / cv2 vectors; xb / x2b: their first vectors of this CTA's positions (null where unused).
  const int C2 = C - a.c1, cv1 = a.c1 / 8, cv2 = C2 / 8;
  const int n1 = min(max(a.c1 - c0, 0), a.slice) / 8, n2 = nch - n1;
  const uint4* xb =
      n1 > 0 ? reinterpret_cast<const uint4*>(static_cast<const T*>(a.x) + (int64_t{b} * a.positions + p0) * a.c1 + c0)
             : nullptr;
  const uint4* x2b = n2 > 0 ? reinterpret_cast<const uint4*>(static_cast<const T*>(a.x2) +
                                                             (int64_t{b} * a.positions + p0) * C2 + max(c0 - a.c1, 0))
                            : nullptr;
  uint4* slab2 = slab + a.chunk * n1;  // [chunk, n2] vectors from x2

  // Issue the whole slab's loads first: kStages chunks of positions.
  if constexpr (kBulk) {  // slice == C: each source's part of the slab is contiguous
    if (threadIdx.x == 0) {
      for (int s = 0; s < kStages; ++s)
        asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\n" ::"r"(smem_addr(&bars[s])) : "memory");
      asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
      asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
      const auto copy = [](uint4* dst, const uint4* src, uint32_t bytes, uint32_t bar) {
        asm volatile(
            "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
                smem_addr(dst)),
            "l"(src), "r"(bytes), "r"(bar)
            : "memory");
      };
      for (int s = 0; s < stages; ++s) {
        const int ps = s * sp, pe = min(np, ps + sp);
        const uint32_t bytes1 = static_cast<uint32_t>(pe - ps) * n1 * 16;
        const uint32_t bytes2 = static_cast<uint32_t>(pe - ps) * n2 * 16;
        const uint32_t bar = smem_addr(&bars[s]);
        asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes1 + bytes2)
                     : "memory");
        copy(slab + ps * n1, xb + int64_t{ps} * cv1, bytes1, bar);
        if (n2 > 0) copy(slab2 + ps * n2, x2b + int64_t{ps} * cv2, bytes2, bar);
      }
    }
  } else {
    // Vectors [s*sp*n, (s+1)*sp*n) of a source's [np, n] part: position v / n, chunk v % n.
    const auto issue = [&](uint4* dst, const uint4* src, int n, int ld, int s) {
      const int vs = min(np, s * sp) * n, ve = min(np, (s + 1) * sp) * n;
      for (int v = vs + threadIdx.x; v < ve; v += blockDim.x) {
        const int p = v / n;
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_addr(dst + v)),
                     "l"(src + int64_t{p} * ld + (v - p * n))
                     : "memory");
      }
    };
    for (int s = 0; s < kStages; ++s) {
      issue(slab, xb, n1, cv1, s);
      issue(slab2, x2b, n2, cv2, s);
      asm volatile("cp.async.commit_group;\n" ::: "memory");
    }
  }

  const int r = threadIdx.x / nch, ch = threadIdx.x % nch;
  const bool active = r < rows;
  // This thread's vector at position p of the slab: sx[p * sn].
  const uint4* sx = ch < n1 ? slab + ch : slab2 + (ch - n1);
  const int sn = ch < n1 ? n1 : n2;
  const T* ab = a.add ? static_cast<const T*>(a.add) + b * a.add_ld + c0 : nullptr;  // v[b, c0:] (or none)
  float ga[8], be[8], va[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    ga[i] = active ? to_f32(static_cast<const T*>(a.gamma)[c0 + ch * 8 + i]) : 0.f;
    be[i] = active ? to_f32(static_cast<const T*>(a.beta)[c0 + ch * 8 + i]) : 0.f;
    va[i] = active && ab ? to_f32(ab[ch * 8 + i]) : 0.f;
  }
  if constexpr (kBulk) __syncthreads();  // barriers initialised before anyone waits on them

  // Pass 1: sums per channel lane, stage by stage as the slab arrives.
  float acc[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) acc[i] = 0.f;
  for (int s = 0; s < stages; ++s) {
    if constexpr (kBulk) {
      mbar_wait(smem_addr(&bars[s]), 0);
    } else {
      cp_async_wait_stage(s);
      __syncthreads();
    }
    if (!active) continue;
    const int pe = min(np, (s + 1) * sp);
#pragma unroll 4
    for (int p = s * sp + r; p < pe; p += rows) {
      float f[8];
      unpack8<T>(sx[p * sn], f);
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[i] += f[i] + va[i];
    }
  }
  if constexpr (!kBulk) cp_async_wait<0>();
  cta_group_sums(red, acc, part_sum, rows, a.slice, a.cpg, G, active);
  cluster_barrier<kCluster>();  // every CTA's part_sum is complete
  const double n = double(a.positions) * a.cpg;
  for (int g = threadIdx.x; g < G; g += blockDim.x) mean[g] = static_cast<float>(cluster_sum<kCluster>(part_sum, g, ranks) / n);
  __syncthreads();

  // Pass 2: squared deviations from the mean, from the shared-memory copy.
  float mu[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    mu[i] = active ? mean[(ch * 8 + i) / a.cpg] - va[i] : 0.f;  // x + v - mean = x - (mean - v)
    acc[i] = 0.f;
  }
  if (active) {
#pragma unroll 4
    for (int p = r; p < np; p += rows) {
      float f[8];
      unpack8<T>(sx[p * sn], f);
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const float d = f[i] - mu[i];
        acc[i] = fmaf(d, d, acc[i]);
      }
    }
  }
  __syncthreads();  // red is reused
  cta_group_sums(red, acc, part_sq, rows, a.slice, a.cpg, G, active);
  cluster_barrier<kCluster>();  // every CTA's part_sq is complete (and no one still reads part_sum)
  for (int g = threadIdx.x; g < G; g += blockDim.x)
    rstd[g] = rsqrtf(static_cast<float>(cluster_sum<kCluster>(part_sq, g, ranks) / n) + a.eps);
  // Done with the other CTAs' shared memory: they may leave once everyone has arrived here.
  if constexpr (kCluster) asm volatile("barrier.cluster.arrive.release.aligned;\n" ::: "memory");
  __syncthreads();

  // Apply: y = (x + v - mean) * rstd * gamma + beta (then SiLU), 16-byte stores.
  if (active) {
    float sc[8], sh[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      sc[i] = rstd[(ch * 8 + i) / a.cpg] * ga[i];
      sh[i] = be[i] - mu[i] * sc[i];
    }
    uint4* yv = reinterpret_cast<uint4*>(static_cast<T*>(a.y) + (int64_t{b} * a.positions + p0) * C + c0) + ch;
    const int cv = C / 8;
#pragma unroll 4
    for (int p = r; p < np; p += rows) {
      float f[8];
      unpack8<T>(sx[p * sn], f);
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        f[j] = fmaf(f[j], sc[j], sh[j]);
        if (kSilu) f[j] = silu_tanh(f[j]);
      }
      yv[int64_t{p} * cv] = pack8<T>(f);
    }
  }
  if constexpr (kCluster) asm volatile("barrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}

// ---- configuration ----

struct DeviceInfo {
  int sms = 0;
  int smem_optin = 0;  // dynamic shared memory per block, opted in
  bool clusters = false;
};

DeviceInfo device_info(int device) {
  static DeviceInfo cached[64];
  static std::mutex mu;
  if (device < 0 || device >= 64) return {};
  std::lock_guard<std::mutex> lock(mu);
  DeviceInfo& d = cached[device];
  if (d.sms == 0) {
    int major = 0, sms = 0, optin = 0;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess ||
        cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) != cudaSuccess) {
      (void)cudaGetLastError();
      return {};
    }
    d.clusters = major >= 9;
    d.smem_optin = optin;
    d.sms = sms;
  }
  return d;
}

long env_long(const char* name, long fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const long n = std::strtol(v, &end, 10);
  return end && *end == '\0' ? n : fallback;
}

enum class Mode { kOff, kAuto, kOn, kRequire };

// SDSERVE_CUDA_GN_ONCHIP: 0 off, 1 wherever it fits, "require" (tests: throws where it does not
// fit), unset / auto: the shape classes where it measured faster. Read on every call.
Mode onchip_mode() {
  const char* v = std::getenv("SDSERVE_CUDA_GN_ONCHIP");
  if (!v || !*v || std::strcmp(v, "auto") == 0) return Mode::kAuto;
  if (std::strcmp(v, "0") == 0) return Mode::kOff;
  if (std::strcmp(v, "require") == 0) return Mode::kRequire;
  return Mode::kOn;
}

// SDSERVE_CUDA_GN_ONCHIP_PLAIN=0: single-CTA configurations launch as clusters of 1 too.
bool plain_launch_off() {
  const char* v = std::getenv("SDSERVE_CUDA_GN_ONCHIP_PLAIN");
  return v && v[0] == '0';
}

size_t stats_bytes(int groups) { return kHeaderBytes + (static_cast<size_t>(16 * groups) + 127) / 128 * 128; }

// Cluster configurations per kernel already checked with the occupancy calculator: accepted
// (cluster, smem) pairs launch without asking again; a refusal covers that cluster size at that
// smem and more. A new configuration is checked before its first launch, which the engine makes
// eagerly (it runs every shape before capturing it).
struct CheckedConfigs {
  std::mutex mu;
  std::vector<std::pair<int, size_t>> accepted, refused;  // refused: (cluster, smallest refused smem)
  int lookup(int cluster, size_t smem) {  // 1 accepted, 0 refused, -1 unknown
    std::lock_guard<std::mutex> lock(mu);
    for (auto& [c, s] : refused)
      if (c == cluster && smem >= s) return 0;
    for (auto& [c, s] : accepted)
      if (c == cluster && smem == s) return 1;
    return -1;
  }
  void add(int cluster, size_t smem, bool ok) {
    std::lock_guard<std::mutex> lock(mu);
    (ok ? accepted : refused).emplace_back(cluster, smem);
  }
};

// Launches gn_onchip_kernel<T, kSilu, kBulk> with one cluster of `cluster` CTAs per batch row. A
// configuration the device refuses (cluster too large for a GPC at this shared memory) is
// remembered per kernel, so it is only tried on an eager call (the engine runs every shape eagerly
// before capturing it), never inside a capture.
template <typename T, bool kSilu, bool kBulk, bool kCluster>
bool launch_onchip(int smem_optin, int cluster, int batch, int threads, size_t smem, cudaStream_t stream,
                   const OnchipArgs& args) {
  auto kernel = gn_onchip_kernel<T, kSilu, kBulk, kCluster>;
  static CheckedConfigs checked;
  // Function attributes are per device: set once on each (0 unset, 1 set, -1 failed).
  static std::atomic<int> attrs[64];
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= 64) {
    (void)cudaGetLastError();
    return false;
  }
  if (attrs[device].load() == 0) {
    const bool ok =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) == cudaSuccess &&
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_optin) == cudaSuccess;
    if (!ok) (void)cudaGetLastError();
    attrs[device].store(ok ? 1 : -1);
  }
  if (attrs[device].load() != 1) return false;
  const int key = device * 100 + cluster;  // per device and cluster size
  const int known = checked.lookup(key, smem);
  if (known == 0) return false;
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(static_cast<unsigned>(cluster), static_cast<unsigned>(args.channels / args.slice),
                     static_cast<unsigned>(batch));
  cfg.blockDim = dim3(static_cast<unsigned>(threads), 1, 1);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[2];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = static_cast<unsigned>(cluster);
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = kCluster ? 1 : 0;
  if (known < 0) {
    int active = 0;
    const bool ok = (kCluster ? cudaOccupancyMaxActiveClusters(&active, kernel, &cfg)
                              : cudaOccupancyMaxActiveBlocksPerMultiprocessor(&active, kernel, threads, smem)) ==
                        cudaSuccess &&
                    active >= 1;
    if (std::getenv("SDSERVE_CUDA_GN_ONCHIP_VERBOSE"))
      std::fprintf(stderr, "gn_onchip: grid %ux%ux%u, %d threads, %zu B smem, cluster %d: %d active %s\n",
                   cfg.gridDim.x, cfg.gridDim.y, cfg.gridDim.z, threads, smem, cluster, active,
                   kCluster ? "clusters" : "CTAs per SM");
    if (!ok) (void)cudaGetLastError();
    checked.add(key, smem, ok);
    if (!ok) return false;
  }
  add_pdl_attribute(cfg, attr);  // after the occupancy query, which takes the cluster shape only
  if (cudaLaunchKernelEx(&cfg, kernel, args) != cudaSuccess) {
    (void)cudaGetLastError();  // a launch-configuration error is not sticky: the two-kernel path runs
    checked.add(key, smem, false);
    return false;
  }
  return true;
}

}  // namespace

namespace {

// One slice width's configuration at its fewest CTAs per cluster (cluster 0 where even 16 CTAs'
// shared memory cannot hold the slice), with the most position lanes.
OnchipPlan plan_for_slice(const DeviceInfo& info, int64_t positions, int cpg, int64_t slice, int64_t channels,
                          int64_t budget_cap) {
  OnchipPlan plan;
  const int nvs = static_cast<int>(slice / 8);
  const int64_t groups = slice / cpg;
  if (nvs > kMaxThreads || groups > kMaxGroups) return plan;
  plan.slice = static_cast<int>(slice);
  plan.slices = static_cast<int>(channels / slice);
  plan.rows = std::max(1, kMaxThreads / nvs);
  plan.threads = (plan.rows * nvs + 31) / 32 * 32;
  const size_t fixed = stats_bytes(static_cast<int>(groups)) + size_t{32} * plan.threads;
  int64_t budget = info.smem_optin > static_cast<int64_t>(fixed) ? info.smem_optin - static_cast<int64_t>(fixed) : 0;
  if (budget_cap > 0) budget = std::min(budget, budget_cap);
  const int64_t max_chunk = budget / (slice * 2);  // positions per CTA at most
  if (max_chunk < 1) return plan;
  const int64_t min_cluster = (positions + max_chunk - 1) / max_chunk;
  if (min_cluster > kMaxCluster) return plan;
  plan.cluster = static_cast<int>(min_cluster);
  return plan;
}

// `cluster` CTAs per slice: positions per CTA, position lanes (no more than positions: fewer
// threads for small slabs), load stages and shared memory.
void set_cluster(OnchipPlan& plan, int64_t positions, int cpg, int cluster) {
  const int nvs = plan.slice / 8;
  plan.cluster = cluster;
  plan.chunk = static_cast<int>((positions + cluster - 1) / cluster);
  plan.rows = std::max(1, std::min(kMaxThreads / nvs, plan.chunk));
  plan.threads = (plan.rows * nvs + 31) / 32 * 32;
  const int per_stage = (plan.chunk + kStages - 1) / kStages;
  plan.stage_positions = (per_stage + plan.rows - 1) / plan.rows * plan.rows;
  plan.smem = stats_bytes(plan.slice / cpg) + size_t{32} * plan.threads + static_cast<size_t>(plan.chunk) * plan.slice * 2;
}

int64_t gcd64(int64_t a, int64_t b) { return b == 0 ? a : gcd64(b, a % b); }

}  // namespace

// The rule measured best on an H100 (docs/perf-notes.md, sweep of slice x cluster at batch rows 2
// and 32): slices of about C/4 channels (the valid width nearest, the wider on a tie), and per
// slice the fewest CTAs that hold it, raised to fill about half the SMs, at most 8 (16-CTA
// clusters and more than one wave of CTAs cost several microseconds each).
OnchipPlan group_norm_onchip_plan(int device, int64_t batch, int64_t positions, int64_t channels, int groups) {
  const DeviceInfo info = device_info(device);
  if (!info.clusters || channels % 8 != 0 || groups < 1 || channels % groups != 0 || positions < 1) return {};
  const int cpg = static_cast<int>(channels / groups);
  const int64_t unit = int64_t{cpg} * 8 / gcd64(cpg, 8);  // narrowest slice: whole groups, 16-byte rows
  const int64_t budget_cap = env_long("SDSERVE_CUDA_GN_ONCHIP_BUDGET", 0);
  const long forced_cluster = env_long("SDSERVE_CUDA_GN_ONCHIP_CLUSTER", 0);
  const long forced_slice = env_long("SDSERVE_CUDA_GN_ONCHIP_SLICE", 0);
  OnchipPlan best;
  double best_distance = 0;
  for (int64_t slice = channels; slice >= unit; slice -= unit) {
    if (channels % slice != 0) continue;
    if (forced_slice > 0 && slice != forced_slice) continue;
    OnchipPlan p = plan_for_slice(info, positions, cpg, slice, channels, budget_cap);
    if (p.cluster == 0) continue;
    int k = p.cluster;
    if (forced_cluster > 0) {
      if (forced_cluster < k || forced_cluster > kMaxCluster) continue;
      k = static_cast<int>(forced_cluster);
    } else {
      const int64_t fill = info.sms / 2 / std::max<int64_t>(1, batch * p.slices);
      k = static_cast<int>(std::max<int64_t>(k, std::min<int64_t>({fill, 8, positions})));
    }
    set_cluster(p, positions, cpg, k);
    // Distance from C/4 in log scale; wider slices first, so a tie keeps the wider.
    const double distance = std::abs(std::log2(static_cast<double>(slice) * 4 / static_cast<double>(channels)));
    if (best.cluster == 0 || distance < best_distance - 1e-9) {
      best = p;
      best_distance = distance;
    }
  }
  return best;
}

// Measured on an H100 (docs/perf-notes.md, "One-launch group norm"): the on-chip kernel wins or
// ties wherever its CTAs fit about two waves and its clusters hold at most 8 CTAs (batch 2 at every
// UNet level but 64x64x960; batch 32 at 32x32x640, 16x16x1280, 8x8x1280, 16x16x2560); with more
// waves each CTA's serial load / statistics / apply phases lose to the two-kernel path.
bool group_norm_onchip_default(int device, int64_t batch, const OnchipPlan& plan) {
  const int sms = device_info(device).sms;
  return plan.cluster >= 1 && plan.cluster <= 8 && batch * plan.slices * plan.cluster <= int64_t{2} * sms;
}

bool group_norm_onchip(CudaBackend& be, const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& y,
                       int groups, float eps, bool silu, const void* add, int64_t add_ld, const Tensor* x2) {
  const Mode mode = onchip_mode();
  if (mode == Mode::kOff) return false;
  const int64_t batch = x.dim(0), c1 = x.dim(-1), channels = c1 + (x2 ? x2->dim(-1) : 0);
  const int64_t positions = x.numel() / (batch * c1);
  const OnchipPlan plan = group_norm_onchip_plan(be.device().index, batch, positions, channels, groups);
  const auto refuse = [&](const char* why) {
    if (mode == Mode::kRequire)
      throw Error(Internal(std::string("group_norm: the on-chip kernel does not apply to ") + x.describe() +
                           (x2 ? " ++ " + x2->describe() : std::string()) + ": " + why));
    return false;
  };
  if (plan.cluster == 0 || batch > 65535) return refuse("a batch row's slice does not fit 16 CTAs' shared memory");
  if (mode == Mode::kAuto && !group_norm_onchip_default(be.device().index, batch, plan)) return false;
  const bool bulk = plan.slice == channels && [] {
    const char* v = std::getenv("SDSERVE_CUDA_GN_ONCHIP_LOAD");
    return !(v && std::strcmp(v, "async") == 0);
  }();
  OnchipArgs args{};
  args.x = x.raw();
  args.x2 = x2 ? x2->raw() : nullptr;
  args.c1 = static_cast<int>(c1);
  args.add = add;
  args.add_ld = add_ld;
  args.y = y.raw();
  args.gamma = gamma.raw();
  args.beta = beta.raw();
  args.positions = static_cast<int>(positions);
  args.channels = static_cast<int>(channels);
  args.cpg = static_cast<int>(channels / groups);
  args.slice = plan.slice;
  args.groups = plan.slice / args.cpg;
  args.chunk = plan.chunk;
  args.stage_positions = plan.stage_positions;
  args.rows = plan.rows;
  args.eps = eps;
  const int optin = device_info(be.device().index).smem_optin;
  bool ok = false;
  dispatch_half(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const int rows_b = static_cast<int>(batch);
    const auto go = [&](auto silu_tag, auto bulk_tag) {
      constexpr bool kS = decltype(silu_tag)::value, kB = decltype(bulk_tag)::value;
      ok = plan.cluster > 1 || plain_launch_off()
               ? launch_onchip<T, kS, kB, true>(optin, plan.cluster, rows_b, plan.threads, plan.smem, be.stream(), args)
               : launch_onchip<T, kS, kB, false>(optin, 1, rows_b, plan.threads, plan.smem, be.stream(), args);
    };
    using On = std::true_type;
    using Off = std::false_type;
    if (silu) {
      bulk ? go(On{}, On{}) : go(On{}, Off{});
    } else {
      bulk ? go(Off{}, On{}) : go(Off{}, Off{});
    }
  });
  return ok ? true : refuse("the device refused the cluster configuration");
}

}  // namespace sd::cuda
