// Split-K implicit-GEMM convolution (mma.sync m16n8k16, f32 accumulation) for NHWC f16/bf16:
// each CTA computes a bm x bn output tile over one slice of the reduction (64 channels of one
// filter tap per step, 4-stage cp.async pipeline, XOR-swizzled shared memory read by ldmatrix).
// One slice: the adds and the store happen in the kernel; several: f32 partials, then a reduce.
#include "backend/cuda/conv_splitk.h"

#include <cooperative_groups.h>

#include <algorithm>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_types.cuh"
#include "backend/cuda/mma_sync.cuh"
#include "backend/cuda/pdl.cuh"

namespace sd::cuda {

namespace {

using namespace sm80;
namespace cg = cooperative_groups;

constexpr int kBK = 64;  // reduction step: 64 input channels of one filter tap
constexpr int kThreads = 256;  // 8 warps, two CTAs per SM
constexpr int kMaxCluster = 16;  // split slices reduced through distributed shared memory

// 8 warps as kWarpsM x kWarpsN, each owning (kMT x 16) rows x 32 columns of the tile.
template <int BM, int BN>
struct TileCfg {
  static constexpr int kStages = BM * BN > 128 * 64 ? 3 : 4;  // <= 96 KB: two CTAs per SM
  static constexpr int kWarpsN = BN / 32;
  static constexpr int kWarpsM = 8 / kWarpsN;
  static constexpr int kMT = BM / (16 * kWarpsM);
  static constexpr int kNT = 4;
  static constexpr int kAStage = BM * kBK;  // elements
  static constexpr int kBStage = BN * kBK;
  static constexpr size_t kSmem = size_t{BM * BN > 128 * 64 ? 3 : 4} * (kAStage + kBStage) * 2;
  static constexpr int kRedLd = BN + 4;  // f32 row stride of the cluster reduction buffer
  static_assert(kMT >= 1 && kWarpsM * kWarpsN == 8, "tile shape");
  static_assert(size_t{BM} * kRedLd * 4 <= kSmem, "the reduction buffer reuses the pipeline's");
};

// Element offset of 16-byte chunk `c` (0..7) of row `r` in a [rows][64] stage: chunks XOR-swizzled
// by the row so the 8 row addresses of an ldmatrix phase hit distinct bank groups.
__device__ __forceinline__ int swizzle(int r, int c) { return (r * 8 + (c ^ (r & 7))) * 8; }

struct KernelParams {
  const void* x;
  const void* w;
  void* y;
  const void* bias;
  const void* row;
  const void* residual;
  float* partial;  // [splits, M, Cout] when splits > 1
  int h, w_, cin, cout, k, stride, pad, ho, wo;
  int m;           // B * Ho * Wo
  int cin_steps;   // Cin / 64
  int kiters;      // k * k * Cin / 64
  int iters_per_split;
  int splits;
};

// y[m, n..n+1] = v + bias + row + residual, packed (n even).
template <typename T>
__device__ __forceinline__ void store_pair(const KernelParams& p, int m, int n, float v0, float v1) {
  const int64_t o = int64_t{m} * p.cout + n;
  if (p.bias) {
    const float2 b = unpack_pair<T>(*reinterpret_cast<const uint32_t*>(static_cast<const T*>(p.bias) + n));
    v0 += b.x;
    v1 += b.y;
  }
  if (p.row) {
    const int img = m / (p.ho * p.wo);
    const float2 r =
        unpack_pair<T>(*reinterpret_cast<const uint32_t*>(static_cast<const T*>(p.row) + int64_t{img} * p.cout + n));
    v0 += r.x;
    v1 += r.y;
  }
  if (p.residual) {
    const float2 r = unpack_pair<T>(*reinterpret_cast<const uint32_t*>(static_cast<const T*>(p.residual) + o));
    v0 += r.x;
    v1 += r.y;
  }
  *reinterpret_cast<uint32_t*>(static_cast<T*>(p.y) + o) = pack_pair<T>(v0, v1);
}

// The split slices of one tile (a cluster of p.splits CTAs) summed in rank order: each CTA parks
// its accumulators in its shared memory, then CTA `rank` adds up rows rank, rank + splits, ... of
// every CTA's buffer (distributed shared memory), applies the adds and stores 8 outputs a thread.
template <typename T, int BM, int BN, typename Acc>
__device__ __forceinline__ void cluster_reduce(const KernelParams& p, const Acc& acc, unsigned char* smem_raw) {
  using C = TileCfg<BM, BN>;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int warp_m = warp / C::kWarpsN, warp_n = warp % C::kWarpsN;
  cp_async_wait_all();
  __syncthreads();  // every warp is done with the pipeline buffers
  float* red = reinterpret_cast<float*>(smem_raw);  // [BM][kRedLd]
#pragma unroll
  for (int mt = 0; mt < C::kMT; ++mt) {
#pragma unroll
    for (int nt = 0; nt < C::kNT; ++nt) {
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const int r = warp_m * C::kMT * 16 + mt * 16 + (lane >> 2) + hh * 8;
        const int c = warp_n * 32 + nt * 8 + 2 * (lane & 3);
        *reinterpret_cast<float2*>(red + r * C::kRedLd + c) = make_float2(acc[mt][nt][2 * hh], acc[mt][nt][2 * hh + 1]);
      }
    }
  }
  cg::cluster_group cluster = cg::this_cluster();
  cluster.sync();
  const int rank = static_cast<int>(cluster.block_rank());
  constexpr int kColThreads = BN / 8, kRowsPerPass = kThreads / kColThreads;
  const int c = (tid % kColThreads) * 8;
  const int n0 = blockIdx.x * BN, m0 = blockIdx.y * BM;
  for (int r = rank + (tid / kColThreads) * p.splits; r < BM; r += kRowsPerPass * p.splits) {
    float v[8] = {};
    for (int s = 0; s < p.splits; ++s) {
      const float4* src = reinterpret_cast<const float4*>(cluster.map_shared_rank(red, s) + r * C::kRedLd + c);
      const float4 a = src[0], b = src[1];
      v[0] += a.x, v[1] += a.y, v[2] += a.z, v[3] += a.w, v[4] += b.x, v[5] += b.y, v[6] += b.z, v[7] += b.w;
    }
    if (m0 + r < p.m) {
      for (int j = 0; j < 8; j += 2) store_pair<T>(p, m0 + r, n0 + c + j, v[j], v[j + 1]);
    }
  }
  cluster.sync();  // no CTA leaves while others still read its buffer
}

// Grid (Cout / BN, ceil(M / BM), splits), kThreads threads, TileCfg::kSmem dynamic shared memory.
// kCluster: the split slices of a tile form one cluster (1, 1, splits) and are summed through
// distributed shared memory (no partials in global memory, no second kernel).
template <typename T, int BM, int BN, bool kCluster>
__global__ void __launch_bounds__(kThreads, 2) conv_splitk_kernel(const KernelParams p) {
  using C = TileCfg<BM, BN>;
  constexpr int kStages = C::kStages;
  constexpr int kARows = BM / 32, kBRows = BN / 32;  // rows each thread copies per stage
  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* sa = reinterpret_cast<T*>(smem_raw);  // [kStages][BM][64]
  T* sb = sa + kStages * C::kAStage;       // [kStages][BN][64]
  const T* x = static_cast<const T*>(p.x);
  const T* w = static_cast<const T*>(p.w);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int warp_m = warp / C::kWarpsN, warp_n = warp % C::kWarpsN;
  const int n0 = blockIdx.x * BN, m0 = blockIdx.y * BM;
  const int kt0 = blockIdx.z * p.iters_per_split;
  const int niters = min(p.kiters, kt0 + p.iters_per_split) - kt0;
  const int chunk = tid & 7;
  const int64_t ktot = int64_t{p.kiters} * kBK;
  pdl_wait();
  pdl_trigger();

  // The output positions this thread gathers input rows for: their window origin and image.
  int a_iy0[kARows], a_ix0[kARows];
  int64_t a_img[kARows];  // first pixel of the image
  for (int i = 0; i < kARows; ++i) {
    const int m = m0 + (tid >> 3) + i * 32;
    if (m < p.m) {
      const int per_img = p.ho * p.wo;
      const int img = m / per_img, rem = m - img * per_img;
      const int oy = rem / p.wo, ox = rem - oy * p.wo;
      a_iy0[i] = oy * p.stride - p.pad;
      a_ix0[i] = ox * p.stride - p.pad;
      a_img[i] = int64_t{img} * p.h * p.w_;
    } else {
      a_iy0[i] = -(1 << 29);  // never inside the image: zero rows
      a_ix0[i] = 0;
      a_img[i] = 0;
    }
  }

  const auto load_stage = [&](int stage, int kt) {
    const int tap = kt / p.cin_steps;
    const int c0 = (kt - tap * p.cin_steps) * kBK + chunk * 8;
    const int ky = tap / p.k, kx = tap - ky * p.k;
    T* dst_a = sa + stage * C::kAStage;
    for (int i = 0; i < kARows; ++i) {
      const int r = (tid >> 3) + i * 32;
      const int iy = a_iy0[i] + ky, ix = a_ix0[i] + kx;
      const bool ok = iy >= 0 && iy < p.h && ix >= 0 && ix < p.w_;
      const T* src = ok ? x + (a_img[i] + int64_t{iy} * p.w_ + ix) * p.cin + c0 : x;
      cp_async16(smem_addr(dst_a + swizzle(r, chunk)), src, ok);
    }
    T* dst_b = sb + stage * C::kBStage;
    for (int i = 0; i < kBRows; ++i) {
      const int r = (tid >> 3) + i * 32;
      cp_async16(smem_addr(dst_b + swizzle(r, chunk)), w + int64_t{n0 + r} * ktot + int64_t{kt} * kBK + chunk * 8,
                 true);
    }
  };

  for (int s = 0; s < kStages - 1; ++s) {
    if (s < niters) load_stage(s, kt0 + s);
    cp_async_commit();
  }
  float acc[C::kMT][C::kNT][4] = {};
  for (int it = 0; it < niters; ++it) {
    cp_async_wait<kStages - 2>();
    __syncthreads();  // stage `it` landed for everyone; stage it-1 is free to refill
    if (it + kStages - 1 < niters) load_stage((it + kStages - 1) % kStages, kt0 + it + kStages - 1);
    cp_async_commit();
    const int stage = it % kStages;
    const uint32_t a_addr = smem_addr(sa + stage * C::kAStage), b_addr = smem_addr(sb + stage * C::kBStage);
#pragma unroll
    for (int kk = 0; kk < kBK / 16; ++kk) {
      uint32_t af[C::kMT][4], bf[C::kNT][2];
#pragma unroll
      for (int mt = 0; mt < C::kMT; ++mt) {
        const int r = warp_m * C::kMT * 16 + mt * 16 + (lane & 15);
        ldsm_x4(af[mt], a_addr + 2 * swizzle(r, kk * 2 + (lane >> 4)));
      }
#pragma unroll
      for (int np = 0; np < C::kNT / 2; ++np) {
        const int r = warp_n * 32 + np * 16 + (lane & 7) + ((lane >> 4) << 3);
        uint32_t t[4];
        ldsm_x4(t, b_addr + 2 * swizzle(r, kk * 2 + ((lane >> 3) & 1)));
        bf[2 * np][0] = t[0];
        bf[2 * np][1] = t[1];
        bf[2 * np + 1][0] = t[2];
        bf[2 * np + 1][1] = t[3];
      }
#pragma unroll
      for (int mt = 0; mt < C::kMT; ++mt) {
#pragma unroll
        for (int nt = 0; nt < C::kNT; ++nt) mma<T>(acc[mt][nt], af[mt], bf[nt][0], bf[nt][1]);
      }
    }
  }
  cp_async_wait_all();

  if constexpr (kCluster) {
    cluster_reduce<T, BM, BN>(p, acc, smem_raw);
    return;
  }
  float* part = p.splits > 1 ? p.partial + int64_t{blockIdx.z} * p.m * p.cout : nullptr;
#pragma unroll
  for (int mt = 0; mt < C::kMT; ++mt) {
#pragma unroll
    for (int nt = 0; nt < C::kNT; ++nt) {
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const int m = m0 + warp_m * C::kMT * 16 + mt * 16 + (lane >> 2) + hh * 8;
        const int n = n0 + warp_n * 32 + nt * 8 + 2 * (lane & 3);
        if (m >= p.m) continue;
        const float v0 = acc[mt][nt][2 * hh], v1 = acc[mt][nt][2 * hh + 1];
        if (part) {
          __stcg(reinterpret_cast<float2*>(part + int64_t{m} * p.cout + n), make_float2(v0, v1));
        } else {
          store_pair<T>(p, m, n, v0, v1);
        }
      }
    }
  }
}

// y = sum over splits of partial (in split order: deterministic) + the adds; 8 outputs per thread.
template <typename T>
__global__ void splitk_reduce_kernel(const KernelParams p) {
  pdl_wait();
  pdl_trigger();
  const int64_t mn = int64_t{p.m} * p.cout, n8 = mn / 8;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n8; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t e = i * 8;
    float v[8] = {};
    for (int s = 0; s < p.splits; ++s) {
      const float4* src = reinterpret_cast<const float4*>(p.partial + s * mn + e);
      const float4 a = __ldcg(src), b = __ldcg(src + 1);
      v[0] += a.x, v[1] += a.y, v[2] += a.z, v[3] += a.w, v[4] += b.x, v[5] += b.y, v[6] += b.z, v[7] += b.w;
    }
    const int m = static_cast<int>(e / p.cout), n = static_cast<int>(e - int64_t{m} * p.cout);
    for (int j = 0; j < 8; j += 2) store_pair<T>(p, m, n + j, v[j], v[j + 1]);
  }
}

// False when the cluster launch was refused (too many CTAs per cluster for this device).
template <typename T, int BM, int BN, bool kCluster>
bool launch_tile(const KernelParams& p, cudaStream_t stream) {
  using C = TileCfg<BM, BN>;
  const auto kernel = conv_splitk_kernel<T, BM, BN, kCluster>;
  static const cudaError_t attr = [&] {
    cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(C::kSmem));
    if (e == cudaSuccess && kCluster) e = cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
    return e;
  }();
  SD_CUDA_CHECK(attr);
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(static_cast<unsigned>(p.cout / BN), static_cast<unsigned>((p.m + BM - 1) / BM),
                     static_cast<unsigned>(p.splits));
  cfg.blockDim = dim3(kThreads, 1, 1);
  cfg.dynamicSmemBytes = C::kSmem;
  cfg.stream = stream;
  cudaLaunchAttribute attrs[2];
  attrs[0].id = cudaLaunchAttributeClusterDimension;
  attrs[0].val.clusterDim.x = 1;
  attrs[0].val.clusterDim.y = 1;
  attrs[0].val.clusterDim.z = static_cast<unsigned>(p.splits);
  cfg.numAttrs = kCluster ? 1 : 0;
  add_pdl_attribute(cfg, attrs);
  const cudaError_t err = cudaLaunchKernelEx(&cfg, kernel, p);
  if (err != cudaSuccess && kCluster) {
    (void)cudaGetLastError();  // a refused cluster shape is not sticky
    return false;
  }
  SD_CUDA_CHECK(err);
  return true;
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Slices of the reduction for ~`target` CTAs over `tiles` output tiles, >= 4 steps per slice,
// partials <= 16 M floats; then evened out so no slice is empty.
int pick_splits(const SplitKConvShape& s, int64_t kiters, int64_t tiles, int64_t target) {
  int64_t splits = std::clamp<int64_t>(ceil_div(target, tiles), 1, std::max<int64_t>(1, kiters / 4));
  const int64_t mn = s.b * s.ho * s.wo * s.cout;
  while (splits > 1 && splits * mn > (int64_t{16} << 20)) --splits;
  const int64_t per = ceil_div(kiters, splits);
  return static_cast<int>(ceil_div(kiters, per));
}

}  // namespace

std::string SplitKConvConfig::describe() const {
  return std::to_string(bm) + "x" + std::to_string(bn) + (cluster ? " cluster " : " split ") + std::to_string(splits);
}

bool splitk_conv_supported(const SplitKConvShape& s, DType dtype) {
  if (dtype != DType::kF16 && dtype != DType::kBF16) return false;
  if (s.cin % kBK != 0 || s.cout % 64 != 0 || s.k < 1 || s.stride < 1 || s.padding < 0) return false;
  if (s.ho < 1 || s.wo < 1 || s.b < 1) return false;
  const int64_t m = s.b * s.ho * s.wo;
  const int64_t lim = int64_t{1} << 30;
  return m < lim && s.b * s.h * s.w * s.cin < lim * 2 && s.cout * s.k * s.k * s.cin < lim * 2 &&
         m * s.cout < lim * 2;
}

std::vector<SplitKConvConfig> splitk_conv_candidates(const SplitKConvShape& s, int sms) {
  std::vector<SplitKConvConfig> out;
  const int64_t m = s.b * s.ho * s.wo, kiters = s.k * s.k * s.cin / kBK;
  const auto add = [&](int bm, int bn, int64_t target, bool cluster) {
    if (s.cout % bn != 0) return;
    const int64_t tiles = ceil_div(m, bm) * (s.cout / bn);
    SplitKConvConfig c{bm, bn, pick_splits(s, kiters, tiles, target), cluster};
    if (cluster) {
      c.splits = static_cast<int>(std::min<int64_t>(c.splits, kMaxCluster));
      c.splits = static_cast<int>(ceil_div(kiters, ceil_div(kiters, c.splits)));
      if (c.splits < 2) return;
    }
    for (const SplitKConvConfig& o : out) {
      if (o.bm == c.bm && o.bn == c.bn && o.splits == c.splits && o.cluster == c.cluster) return;
    }
    out.push_back(c);
  };
  const int bm = m > 64 ? 128 : 64, bn = s.cout % 128 == 0 ? 128 : 64;
  for (const bool cluster : {true, false}) {
    add(bm, bn, 2 * int64_t{sms}, cluster);  // two CTAs per SM
    add(bm, bn, sms, cluster);
    add(bm, 64, 2 * int64_t{sms}, cluster);
    if (bm == 128) add(64, bn, 2 * int64_t{sms}, cluster);
    if (bm == 128) add(64, 64, 3 * int64_t{sms}, cluster);
  }
  return out;
}

size_t splitk_conv_workspace(const SplitKConvShape& s, const SplitKConvConfig& cfg) {
  return cfg.splits > 1 && !cfg.cluster ? static_cast<size_t>(cfg.splits * s.b * s.ho * s.wo * s.cout) : 0;
}

bool launch_conv_splitk(const SplitKConvOperands& ops, DType dtype, const SplitKConvShape& s,
                        const SplitKConvConfig& cfg, cudaStream_t stream) {
  SD_ASSERT(splitk_conv_supported(s, dtype), "conv_splitk: unsupported shape or dtype");
  SD_ASSERT((cfg.bm == 64 || cfg.bm == 128) && (cfg.bn == 64 || cfg.bn == 128) && s.cout % cfg.bn == 0 &&
                cfg.splits >= 1 && (!cfg.cluster || cfg.splits <= kMaxCluster),
            "conv_splitk: config " + cfg.describe());
  SD_ASSERT(cfg.splits == 1 || cfg.cluster || ops.partial, "conv_splitk: split partials need a workspace");
  KernelParams p{};
  p.x = ops.x, p.w = ops.w, p.y = ops.y, p.bias = ops.bias, p.row = ops.row, p.residual = ops.residual;
  p.partial = ops.partial;
  p.h = static_cast<int>(s.h), p.w_ = static_cast<int>(s.w), p.cin = static_cast<int>(s.cin);
  p.cout = static_cast<int>(s.cout), p.k = s.k, p.stride = s.stride, p.pad = s.padding;
  p.ho = static_cast<int>(s.ho), p.wo = static_cast<int>(s.wo), p.m = static_cast<int>(s.b * s.ho * s.wo);
  p.cin_steps = p.cin / kBK;
  p.kiters = s.k * s.k * p.cin_steps;
  p.iters_per_split = static_cast<int>(ceil_div(p.kiters, cfg.splits));
  p.splits = static_cast<int>(ceil_div(p.kiters, p.iters_per_split));
  const bool cluster = cfg.cluster && p.splits > 1;
  bool ok = true;
  dispatch_half(dtype, [&](auto tag) {
    using T = decltype(tag);
    const auto tile = [&](auto launch) { ok = launch(p, stream); };
    if (cfg.bm == 128 && cfg.bn == 128) tile(cluster ? launch_tile<T, 128, 128, true> : launch_tile<T, 128, 128, false>);
    if (cfg.bm == 128 && cfg.bn == 64) tile(cluster ? launch_tile<T, 128, 64, true> : launch_tile<T, 128, 64, false>);
    if (cfg.bm == 64 && cfg.bn == 128) tile(cluster ? launch_tile<T, 64, 128, true> : launch_tile<T, 64, 128, false>);
    if (cfg.bm == 64 && cfg.bn == 64) tile(cluster ? launch_tile<T, 64, 64, true> : launch_tile<T, 64, 64, false>);
    if (ok && p.splits > 1 && !cluster) {
      const int64_t n8 = int64_t{p.m} * p.cout / 8;
      launch_kernel(splitk_reduce_kernel<T>, dim3(grid_for(n8, 256)), dim3(256), 0, stream, p);
      SD_CUDA_LAUNCH_CHECK();
    }
  });
  return ok;
}

}  // namespace sd::cuda
