// Hopper implicit-GEMM convolution (stride 1, same padding) for NHWC f16/bf16: a producer warp
// streams (filter tap, 64-channel) steps by TMA into a 6-8 stage ring (the input as a 4D box whose
// out-of-bounds taps TMA zero-fills = the padding; the weights as a 2D box, both swizzle-128B),
// two consumer warpgroups run wgmma m64nBNk16 from shared memory; a cluster of CTAs along N / M
// shares each input / weight box by TMA multicast; split-K slices write f32 partials that a
// reduce kernel sums in slice order while applying bias / row / residual.
#include "backend/cuda/conv_wgmma.h"

#include <cuda.h>

#include <algorithm>

#include "backend/cuda/conv_wgmma_kernel.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_types.cuh"
#include "backend/cuda/mma_sync.cuh"
#include "backend/cuda/tma.h"

namespace sd::cuda {

namespace {

using namespace conv_wgmma;

constexpr int kBM = 128;       // output positions per tile: two consumer warpgroups of 64
constexpr int kBK = 64;        // reduction step: 64 input channels of one filter tap (128 bytes)
constexpr int kThreads = 384;  // warpgroup 0: producer (one thread issues TMA), 1-2: consumers

template <int BN>
struct Cfg {
  static constexpr int kStages = BN == 256 ? 4 : BN == 128 ? 6 : 8;  // 192 KB of stages
  static constexpr uint32_t kABytes = kBM * kBK * 2;  // [128 positions][64 channels], swizzled
  static constexpr uint32_t kBBytes = BN * kBK * 2;   // [BN out channels][64 channels], swizzled
  static constexpr size_t kSmem = size_t{kStages} * (kABytes + kBBytes) + 2 * kStages * 8 + 1024;
};

struct Params {
  void* y;
  const void* bias;
  const void* row;
  const void* residual;
  float* partial;  // [splits, M, Cout] when splits > 1
  int m, cout, hw, w_, k, pad;
  int cin_steps;        // Cin / 64
  int kiters;           // k * k * Cin / 64
  int iters_per_split;  // reduction steps per slice
  int splits;
  // Cluster cx x cy: the cx CTAs of one output tile row (along N) each load a_piece positions of
  // the input box and multicast them to the others; the cy CTAs along M share the weight box in
  // pieces of b_piece output channels likewise.
  int cx, cy, a_piece, b_piece;
};

// y[m, n..n+1] = v + bias + row + residual (n even).
template <typename T>
__device__ __forceinline__ void store_pair(const Params& p, int m, int n, float v0, float v1) {
  const int64_t o = int64_t{m} * p.cout + n;
  if (p.bias) {
    const float2 b = sm80::unpack_pair<T>(*reinterpret_cast<const uint32_t*>(static_cast<const T*>(p.bias) + n));
    v0 += b.x;
    v1 += b.y;
  }
  if (p.row) {
    const int img = m / p.hw;
    const float2 r = sm80::unpack_pair<T>(
        *reinterpret_cast<const uint32_t*>(static_cast<const T*>(p.row) + int64_t{img} * p.cout + n));
    v0 += r.x;
    v1 += r.y;
  }
  if (p.residual) {
    const float2 r =
        sm80::unpack_pair<T>(*reinterpret_cast<const uint32_t*>(static_cast<const T*>(p.residual) + o));
    v0 += r.x;
    v1 += r.y;
  }
  *reinterpret_cast<uint32_t*>(static_cast<T*>(p.y) + o) = sm80::pack_pair<T>(v0, v1);
}

// Grid (Cout / BN, output tiles, splits), kThreads threads, Cfg<BN>::kSmem dynamic shared memory.
// xmap: 4D [B, H, W, Cin], box {64, W, rows, imgs} = a_piece positions; wmap: 2D [Cout, k*k*Cin],
// box {64, b_piece}. Launched as clusters (cx, cy, 1) when cx * cy > 1.
template <typename T, int BN>
__global__ void __launch_bounds__(kThreads, 1)
    conv_wgmma_kernel(const __grid_constant__ CUtensorMap xmap, const __grid_constant__ CUtensorMap wmap,
                      const Params p) {
#if SD_SM90A_COMPILED
  using C = Cfg<BN>;
  constexpr int kStages = C::kStages;
  extern __shared__ unsigned char smem_raw[];
  const uint32_t base = (sm90::smem_addr(smem_raw) + 1023u) & ~1023u;  // swizzle-128B wants 1024-byte stages
  const uint32_t sa = base, sb = base + kStages * C::kABytes;
  const uint32_t full = sb + kStages * C::kBBytes, empty = full + 8 * kStages;
  const int n0 = blockIdx.x * BN, tile = blockIdx.y;
  const int kt0 = blockIdx.z * p.iters_per_split;
  const int niters = min(p.kiters, kt0 + p.iters_per_split) - kt0;
  const int wg = threadIdx.x / 128;
  const int ncta = p.cx * p.cy;
  const uint32_t rx = ncta > 1 ? cluster_ctaid_x() : 0, ry = ncta > 1 ? cluster_ctaid_y() : 0;
  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      sm90::mbarrier_init(full + 8 * s, 1);          // the producer's arrive + the TMA bytes
      sm90::mbarrier_init(empty + 8 * s, 2 * ncta);  // one arrive per consumer warpgroup of the cluster
    }
    sm90::mbarrier_init_fence();
    sm90::tma_prefetch_descriptor(&xmap);
    sm90::tma_prefetch_descriptor(&wmap);
  }
  if (ncta > 1) cluster_sync();  // every CTA's barriers exist before anyone multicasts into them
  else __syncthreads();

  if (wg == 0) {
    sm90::setmaxnreg_dec<40>();
    if (threadIdx.x == 0) {
      // This CTA's piece of the input box: positions [a_piece rx, a_piece (rx + 1)) of the tile.
      const int pos = tile * kBM + static_cast<int>(rx) * p.a_piece;
      const int ab = pos / p.hw, ah = (pos % p.hw) / p.w_;
      const uint32_t a_off = rx * p.a_piece * 128, b_off = ry * p.b_piece * 128;
      uint16_t a_mask = 0, b_mask = 0;  // the CTAs of this tile row / of this N column
      for (int i = 0; i < p.cx; ++i) a_mask |= static_cast<uint16_t>(1u << (ry * p.cx + i));
      for (int j = 0; j < p.cy; ++j) b_mask |= static_cast<uint16_t>(1u << (j * p.cx + rx));
      const uint64_t stream_once = evict_first_policy();
      for (int it = 0; it < niters; ++it) {
        const int s = it % kStages;
        if (it >= kStages) mbar_wait(empty + 8 * s, ((it / kStages) - 1) & 1);
        sm90::mbarrier_arrive_expect_tx(full + 8 * s, C::kABytes + C::kBBytes);
        const int kt = kt0 + it, tap = kt / p.cin_steps, c0 = (kt - tap * p.cin_steps) * kBK;
        const int ky = tap / p.k, kx = tap - ky * p.k;
        const uint32_t da = sa + s * C::kABytes + a_off, db = sb + s * C::kBBytes + b_off;
        const int nb = n0 + static_cast<int>(ry) * p.b_piece;
        if (p.cx > 1) tma_load_4d_multicast(da, &xmap, full + 8 * s, c0, kx - p.pad, ah + ky - p.pad, ab, a_mask);
        else sm90::tma_load_4d(da, &xmap, full + 8 * s, c0, kx - p.pad, ah + ky - p.pad, ab);
        if (p.cy > 1) tma_load_2d_multicast(db, &wmap, full + 8 * s, kt * kBK, nb, b_mask, stream_once);
        else sm90::tma_load_2d(db, &wmap, full + 8 * s, kt * kBK, nb, stream_once);
      }
    }
    __syncwarp();                  // warp 0 whole again before the aligned cluster barrier
    if (ncta > 1) cluster_sync();  // no CTA leaves while others may still arrive on its barriers
    return;
  }

  sm90::setmaxnreg_inc<232>();
  const int cw = wg - 1;  // consumer: tile rows [64 cw, 64 cw + 64)
  float acc[BN / 2];
#pragma unroll
  for (int i = 0; i < BN / 2; ++i) acc[i] = 0.f;
  for (int it = 0; it < niters; ++it) {
    const int s = it % kStages;
    mbar_wait(full + 8 * s, (it / kStages) & 1);
    const uint32_t a = sa + s * C::kABytes + cw * 64 * 128, b = sb + s * C::kBBytes;
    sm90::wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kBK / 16; ++kk) {
      sm90::wgmma_ss<T, BN>(acc, sm90::desc_sw128(a + kk * 32), sm90::desc_sw128(b + kk * 32), 1);
    }
    sm90::wgmma_commit();
    sm90::wgmma_wait<1>();  // the step before this one is done: its stage goes back to the producer
    if (it > 0 && threadIdx.x % 128 == 0) {
      const uint32_t bar = empty + 8 * ((it - 1) % kStages);
      if (ncta > 1) {
        for (int q = 0; q < ncta; ++q) mbar_arrive_cluster(bar, q);  // the stage is free in every CTA
      } else {
        sm90::mbarrier_arrive(bar);
      }
    }
  }
  sm90::wgmma_wait<0>();
  sm90::fence_accumulators(acc);

  // Accumulator i of thread (warp w, lane l): row 16 w + l / 4 + 8 ((i / 2) % 2), column
  // 8 (i / 4) + 2 (l % 4) + i % 2.
  const int lane = threadIdx.x & 31, warp = (threadIdx.x / 32) & 3;
  float* part = p.splits > 1 ? p.partial + int64_t{blockIdx.z} * p.m * p.cout : nullptr;
#pragma unroll
  for (int hh = 0; hh < 2; ++hh) {
    const int m = tile * kBM + cw * 64 + warp * 16 + lane / 4 + 8 * hh;
    if (m >= p.m) continue;
#pragma unroll
    for (int i = 0; i < BN / 8; ++i) {
      const int n = n0 + i * 8 + 2 * (lane & 3);
      const float v0 = acc[i * 4 + hh * 2], v1 = acc[i * 4 + hh * 2 + 1];
      if (part) {
        __stcg(reinterpret_cast<float2*>(part + int64_t{m} * p.cout + n), make_float2(v0, v1));
      } else {
        store_pair<T>(p, m, n, v0, v1);
      }
    }
  }
  if (ncta > 1) cluster_sync();
#endif
}

// y = sum over slices of partial (in slice order: deterministic) + the adds; 8 outputs a thread.
template <typename T>
__global__ void conv_wgmma_reduce_kernel(const Params p) {
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
    float add[8];
    if (p.bias) {
      unpack8<T>(*reinterpret_cast<const uint4*>(static_cast<const T*>(p.bias) + n), add);
      for (int j = 0; j < 8; ++j) v[j] += add[j];
    }
    if (p.row) {
      unpack8<T>(*reinterpret_cast<const uint4*>(static_cast<const T*>(p.row) + int64_t{m / p.hw} * p.cout + n), add);
      for (int j = 0; j < 8; ++j) v[j] += add[j];
    }
    if (p.residual) {
      unpack8<T>(*reinterpret_cast<const uint4*>(static_cast<const T*>(p.residual) + e), add);
      for (int j = 0; j < 8; ++j) v[j] += add[j];
    }
    *reinterpret_cast<uint4*>(static_cast<T*>(p.y) + e) = pack8<T>(v);
  }
}

// A tile of 128 output positions as one box of the input: `imgs` whole images (H*W <= 128) or
// `rows` rows of one image (H*W > 128); tiles_per_img = H*W / 128 in the second case, else 1.
struct Geometry {
  bool ok = false;
  int imgs = 1, rows = 1, tiles_per_img = 1;
  int64_t tiles = 0;
};
Geometry geometry(const SplitKConvShape& s) {
  Geometry g;
  const int64_t hw = s.h * s.w;
  if (s.w > kBM || kBM % s.w != 0) return g;
  if (hw <= kBM) {
    if (kBM % hw != 0) return g;
    g.imgs = static_cast<int>(kBM / hw);
    g.rows = static_cast<int>(s.h);
    g.tiles = (s.b + g.imgs - 1) / g.imgs;
  } else {
    if (hw % kBM != 0) return g;
    g.rows = static_cast<int>(kBM / s.w);
    g.tiles_per_img = static_cast<int>(hw / kBM);
    g.tiles = s.b * g.tiles_per_img;
  }
  g.ok = true;
  return g;
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The input box of one CTA of a cx-wide cluster: 128 / cx positions as imgs x rows x W, or
// false when they are not one box (fewer positions than a row, or not whole images / rows).
bool piece_box(const SplitKConvShape& s, int cx, int& imgs, int& rows) {
  const int64_t piece = kBM / cx, hw = s.h * s.w;
  if (piece >= hw) {
    if (piece % hw != 0) return false;
    imgs = static_cast<int>(piece / hw);
    rows = static_cast<int>(s.h);
    return true;
  }
  if (piece % s.w != 0 || hw % piece != 0) return false;
  imgs = 1;
  rows = static_cast<int>(piece / s.w);
  return true;
}

bool cluster_ok(const SplitKConvShape& s, const Geometry& g, int bn, int cx, int cy) {
  int imgs = 0, rows = 0;
  return (cx == 1 || cx == 2 || cx == 4) && (cy == 1 || cy == 2 || cy == 4) && cx * cy <= 8 &&
         (s.cout / bn) % cx == 0 && g.tiles % cy == 0 && piece_box(s, cx, imgs, rows);
}

// False when the device refused the cluster shape (nothing ran).
template <typename T, int BN>
bool launch_kernel(const CUtensorMap& xmap, const CUtensorMap& wmap, const Params& p, int64_t tiles,
                   cudaStream_t stream) {
  const auto kernel = conv_wgmma_kernel<T, BN>;
  // Cheap host-side call; made every time so every device (and thread) is covered.
  SD_CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(Cfg<BN>::kSmem)));
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(static_cast<unsigned>(p.cout / BN), static_cast<unsigned>(tiles), static_cast<unsigned>(p.splits));
  cfg.blockDim = dim3(kThreads, 1, 1);
  cfg.dynamicSmemBytes = Cfg<BN>::kSmem;
  cfg.stream = stream;
  cudaLaunchAttribute cluster[1];
  cluster[0].id = cudaLaunchAttributeClusterDimension;
  cluster[0].val.clusterDim.x = static_cast<unsigned>(p.cx);
  cluster[0].val.clusterDim.y = static_cast<unsigned>(p.cy);
  cluster[0].val.clusterDim.z = 1;
  cfg.attrs = cluster;
  cfg.numAttrs = p.cx * p.cy > 1 ? 1 : 0;
  const cudaError_t err = cudaLaunchKernelEx(&cfg, kernel, xmap, wmap, p);
  if (err != cudaSuccess && cfg.numAttrs > 0) {
    (void)cudaGetLastError();  // a refused cluster shape is not sticky
    return false;
  }
  SD_CUDA_CHECK(err);
  return true;
}

}  // namespace

std::string WgmmaConvConfig::describe() const {
  return "wgmma 128x" + std::to_string(bn) + " split " + std::to_string(splits) + " cluster " + std::to_string(cx) +
         "x" + std::to_string(cy);
}

bool wgmma_conv_supported(const SplitKConvShape& s, DType dtype) {
  if (dtype != DType::kF16 && dtype != DType::kBF16) return false;
  if (s.stride != 1 || s.k < 1 || s.k % 2 == 0 || s.padding != s.k / 2 || s.ho != s.h || s.wo != s.w) return false;
  if (s.b < 1 || s.h < 1 || s.w < 1 || s.cin % kBK != 0 || s.cout % 64 != 0) return false;
  const int64_t lim = int64_t{1} << 31;
  if (s.b * s.h * s.w * s.cout >= lim || s.cout * s.k * s.k * s.cin >= lim || s.b * s.h * s.w * s.cin >= lim) {
    return false;
  }
  return geometry(s).ok;
}

bool wgmma_conv_config_ok(const SplitKConvShape& s, const WgmmaConvConfig& cfg) {
  return (cfg.bn == 64 || cfg.bn == 128 || cfg.bn == 256) && s.cout % cfg.bn == 0 && cfg.splits >= 1 &&
         cluster_ok(s, geometry(s), cfg.bn, cfg.cx, cfg.cy);
}

bool wgmma_conv_device_ok(int device) {
  int major = 0, minor = 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return major == 9 && minor == 0 && tma_available();
}

std::vector<WgmmaConvConfig> wgmma_conv_candidates(const SplitKConvShape& s, int sms) {
  std::vector<WgmmaConvConfig> out;
  const Geometry g = geometry(s);
  const int64_t kiters = s.k * s.k * s.cin / kBK, m = s.b * s.h * s.w;
  const auto add = [&](int bn, int64_t splits, int cx, int cy) {
    if (s.cout % bn != 0 || !cluster_ok(s, g, bn, cx, cy)) return;
    splits = std::clamp<int64_t>(splits, 1, std::max<int64_t>(1, kiters / 2));  // >= 2 steps a slice
    while (splits > 1 && splits * m * s.cout > (int64_t{16} << 20)) --splits;  // partials <= 64 MB
    splits = ceil_div(kiters, ceil_div(kiters, splits));                        // no empty slice
    for (const WgmmaConvConfig& o : out) {
      if (o.bn == bn && o.splits == splits && o.cx == cx && o.cy == cy) return;
    }
    out.push_back({bn, static_cast<int>(splits), cx, cy});
  };
  // One wave of one CTA per SM, no clusters: on an H100 every multicast cluster (2x1 .. 4x2) was
  // 1.5-10x slower than the same tiles without (docs/perf-notes.md); they stay for measuring,
  // through SDSERVE_CUDA_WGMMA_CONV_CLUSTER in mode 2.
  for (const int bn : {128, 64, 256}) {
    if (s.cout % bn != 0) continue;
    add(bn, std::max<int64_t>(1, sms / (g.tiles * (s.cout / bn))), 1, 1);
  }
  return out;
}

size_t wgmma_conv_workspace(const SplitKConvShape& s, const WgmmaConvConfig& cfg) {
  return cfg.splits > 1 ? static_cast<size_t>(cfg.splits * s.b * s.ho * s.wo * s.cout) : 0;
}

bool launch_conv_wgmma(const SplitKConvOperands& ops, DType dtype, const SplitKConvShape& s,
                       const WgmmaConvConfig& cfg, cudaStream_t stream) {
  SD_ASSERT(wgmma_conv_supported(s, dtype), "conv_wgmma: unsupported shape or dtype");
  const Geometry g = geometry(s);
  SD_ASSERT((cfg.bn == 64 || cfg.bn == 128 || cfg.bn == 256) && s.cout % cfg.bn == 0 && cfg.splits >= 1 &&
                cluster_ok(s, g, cfg.bn, cfg.cx, cfg.cy),
            "conv_wgmma: config " + cfg.describe());
  SD_ASSERT(cfg.splits == 1 || ops.partial, "conv_wgmma: split partials need a workspace");
  int piece_imgs = 1, piece_rows = 1;
  piece_box(s, cfg.cx, piece_imgs, piece_rows);
  // x [B, H, W, Cin] innermost first; a box is 64 channels x W x rows x imgs = 128 / cx positions.
  TmaTiledDesc xd;
  xd.base = ops.x, xd.dtype = dtype, xd.rank = 4, xd.swizzle = TmaSwizzle::k128B, xd.l2_promote_bytes = 128;
  const uint64_t xdims[4] = {static_cast<uint64_t>(s.cin), static_cast<uint64_t>(s.w), static_cast<uint64_t>(s.h),
                             static_cast<uint64_t>(s.b)};
  const uint32_t xbox[4] = {kBK, static_cast<uint32_t>(s.w), static_cast<uint32_t>(piece_rows),
                            static_cast<uint32_t>(piece_imgs)};
  for (int i = 0; i < 4; ++i) xd.dims[i] = xdims[i], xd.box[i] = xbox[i];
  xd.strides_bytes[0] = static_cast<uint64_t>(s.cin * 2);
  xd.strides_bytes[1] = static_cast<uint64_t>(s.w * s.cin * 2);
  xd.strides_bytes[2] = static_cast<uint64_t>(s.h * s.w * s.cin * 2);
  CUtensorMap xmap{}, wmap{};
  if (!encode_tma_tiled(xd, &xmap).ok()) return false;
  // w [Cout, k*k*Cin]; a box is 64 reduction elements x bn / cy output channels.
  const int64_t ktot = s.k * s.k * s.cin;
  if (!encode_tma_2d(ops.w, dtype, static_cast<uint64_t>(s.cout), static_cast<uint64_t>(ktot),
                     static_cast<uint64_t>(ktot), static_cast<uint32_t>(cfg.bn / cfg.cy), kBK, TmaSwizzle::k128B,
                     &wmap)
           .ok()) {
    return false;
  }
  Params p{};
  p.y = ops.y, p.bias = ops.bias, p.row = ops.row, p.residual = ops.residual, p.partial = ops.partial;
  p.m = static_cast<int>(s.b * s.h * s.w), p.cout = static_cast<int>(s.cout), p.hw = static_cast<int>(s.h * s.w);
  p.w_ = static_cast<int>(s.w);
  p.k = s.k, p.pad = s.padding;
  p.cin_steps = static_cast<int>(s.cin / kBK);
  p.kiters = s.k * s.k * p.cin_steps;
  p.iters_per_split = static_cast<int>(ceil_div(p.kiters, cfg.splits));
  p.splits = static_cast<int>(ceil_div(p.kiters, p.iters_per_split));
  p.cx = cfg.cx, p.cy = cfg.cy, p.a_piece = kBM / cfg.cx, p.b_piece = cfg.bn / cfg.cy;
  bool ok = true;
  dispatch_half(dtype, [&](auto tag) {
    using T = decltype(tag);
    ok = cfg.bn == 256   ? launch_kernel<T, 256>(xmap, wmap, p, g.tiles, stream)
         : cfg.bn == 128 ? launch_kernel<T, 128>(xmap, wmap, p, g.tiles, stream)
                         : launch_kernel<T, 64>(xmap, wmap, p, g.tiles, stream);
    if (ok && p.splits > 1) {
      const int64_t n8 = int64_t{p.m} * p.cout / 8;
      conv_wgmma_reduce_kernel<T><<<grid_for(n8, 256), 256, 0, stream>>>(p);
      SD_CUDA_LAUNCH_CHECK();
    }
  });
  return ok;
}

}  // namespace sd::cuda
