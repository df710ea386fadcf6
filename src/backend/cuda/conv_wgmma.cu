// Hopper implicit-GEMM convolution (stride 1, same padding) for NHWC f16/bf16, host side: tile
// geometry (input boxes whose out-of-bounds taps TMA zero-fills = the padding), tensor maps, the
// candidate configurations (128/256-position tiles, splits summed by a reduce kernel or in-cluster
// through DSMEM, multicast clusters) and the launches; the kernels are in conv_wgmma_main.cuh.
#include "backend/cuda/conv_wgmma.h"

#include <cuda.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <utility>

#include "backend/cuda/conv_wgmma_main.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_types.cuh"
#include "backend/cuda/tma.h"

namespace sd::cuda {

namespace {

using namespace conv_wgmma;

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
  if (s.w > kBox || kBox % s.w != 0) return g;
  if (hw <= kBox) {
    if (kBox % hw != 0) return g;
    g.imgs = static_cast<int>(kBox / hw);
    g.rows = static_cast<int>(s.h);
    g.tiles = (s.b + g.imgs - 1) / g.imgs;
  } else {
    if (hw % kBox != 0) return g;
    g.rows = static_cast<int>(kBox / s.w);
    g.tiles_per_img = static_cast<int>(hw / kBox);
    g.tiles = s.b * g.tiles_per_img;
  }
  g.ok = true;
  return g;
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The input box of one CTA of a cx-wide cluster: 128 / cx positions as imgs x rows x W, or
// false when they are not one box (fewer positions than a row, or not whole images / rows).
bool piece_box(const SplitKConvShape& s, int cx, int& imgs, int& rows) {
  const int64_t piece = kBox / cx, hw = s.h * s.w;
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

int64_t tiles_of(const Geometry& g, int bm) { return ceil_div(g.tiles, bm / kBox); }

bool bn_ok(int bm, int bn) {
  return bn == 64 || bn == 128 || bn == 160 || (bm == 128 && bn == 256);  // <= 160 accumulators a thread
}

// The whole configuration check (after the split count was normalised to no empty slice).
bool config_fits(const SplitKConvShape& s, const Geometry& g, const WgmmaConvConfig& cfg) {
  if ((cfg.bm != 128 && cfg.bm != 256) || !bn_ok(cfg.bm, cfg.bn) || s.cout % cfg.bn != 0 || cfg.splits < 1) {
    return false;
  }
  if (cfg.dsmem && cfg.splits * cfg.cx * cfg.cy > 8) return false;  // one portable cluster of slices
  if (cfg.bm == 256 && cfg.cx * cfg.cy > 1) return false;                  // multicast: 128-position tiles
  return cluster_ok(s, g, cfg.bn, cfg.cx, cfg.cy);
}

// Split count as the kernel runs it: ceil(kiters / per-slice steps), so no slice is empty.
int64_t normalized_splits(int64_t kiters, int64_t splits) { return ceil_div(kiters, ceil_div(kiters, splits)); }

// Clusters (1, 1, size) of the (BM, BN) kernel that the current device runs at once.
template <int BM, int BN>
int query_active_clusters(int size) {
  const auto kernel = conv_wgmma_kernel<__half, BM, BN>;  // bf16 has the same resources
  if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(Cfg<BM, BN>::kSmem)) !=
      cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(1, 1, static_cast<unsigned>(size));
  cfg.blockDim = dim3(kThreads, 1, 1);
  cfg.dynamicSmemBytes = Cfg<BM, BN>::kSmem;
  cudaLaunchAttribute cluster[1];
  cluster[0].id = cudaLaunchAttributeClusterDimension;
  cluster[0].val.clusterDim.x = 1;
  cluster[0].val.clusterDim.y = 1;
  cluster[0].val.clusterDim.z = static_cast<unsigned>(size);
  cfg.attrs = cluster;
  cfg.numAttrs = 1;
  int n = 0;
  if (cudaOccupancyMaxActiveClusters(&n, kernel, &cfg) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

// Cached query_active_clusters (0 when unknown: no cluster split is listed then). One entry per
// (bm, bn, size) for the process: the SD devices of one server are the same chip.
int max_active_clusters(int bm, int bn, int size) {
  static std::atomic<int> cache[2][5][9];  // value + 1; 0 = not asked yet
  const int bi = bm == 256 ? 1 : 0, ni = bn == 64 ? 0 : bn == 128 ? 1 : bn == 160 ? 2 : bn == 256 ? 3 : 4;
  if (ni == 4 || size < 1 || size > 8) return 0;
  std::atomic<int>& slot = cache[bi][ni][size];
  if (const int v = slot.load(std::memory_order_relaxed); v > 0) return v - 1;
  int n = 0;
  if (bm == 128) {
    n = bn == 64 ? query_active_clusters<128, 64>(size) : bn == 128 ? query_active_clusters<128, 128>(size)
        : bn == 160 ? query_active_clusters<128, 160>(size) : query_active_clusters<128, 256>(size);
  } else if (bn != 256) {
    n = bn == 64 ? query_active_clusters<256, 64>(size) : bn == 128 ? query_active_clusters<256, 128>(size)
                                                          : query_active_clusters<256, 160>(size);
  }
  slot.store(n + 1, std::memory_order_relaxed);
  return n;
}

// False when the device refused the cluster shape (nothing ran).
template <typename T, int BM, int BN>
bool launch_kernel(const CUtensorMap& xmap, const CUtensorMap& wmap, const Params& p, int64_t tiles,
                   cudaStream_t stream) {
  const auto kernel = conv_wgmma_kernel<T, BM, BN>;
  // Cheap host-side call; made every time so every device (and thread) is covered.
  SD_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     static_cast<int>(Cfg<BM, BN>::kSmem)));
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(static_cast<unsigned>(p.cout / BN), static_cast<unsigned>(tiles), static_cast<unsigned>(p.splits));
  cfg.blockDim = dim3(kThreads, 1, 1);
  cfg.dynamicSmemBytes = Cfg<BM, BN>::kSmem;
  cfg.stream = stream;
  cudaLaunchAttribute cluster[1];
  cluster[0].id = cudaLaunchAttributeClusterDimension;
  cluster[0].val.clusterDim.x = static_cast<unsigned>(p.cx);
  cluster[0].val.clusterDim.y = static_cast<unsigned>(p.cy);
  cluster[0].val.clusterDim.z = p.dsmem ? static_cast<unsigned>(p.splits) : 1u;  // (cx, cy, splits)
  cfg.attrs = cluster;
  cfg.numAttrs = p.cx * p.cy > 1 || p.dsmem ? 1 : 0;
  const cudaError_t err = cudaLaunchKernelEx(&cfg, kernel, xmap, wmap, p);
  if (err != cudaSuccess && cfg.numAttrs > 0) {
    (void)cudaGetLastError();  // a refused cluster shape is not sticky
    return false;
  }
  SD_CUDA_CHECK(err);
  return true;
}

template <typename T, int BM>
bool launch_bm(int bn, const CUtensorMap& xmap, const CUtensorMap& wmap, const Params& p, int64_t tiles,
               cudaStream_t stream) {
  if constexpr (BM == 128) {
    if (bn == 256) return launch_kernel<T, BM, 256>(xmap, wmap, p, tiles, stream);
  }
  return bn == 160   ? launch_kernel<T, BM, 160>(xmap, wmap, p, tiles, stream)
         : bn == 128 ? launch_kernel<T, BM, 128>(xmap, wmap, p, tiles, stream)
                     : launch_kernel<T, BM, 64>(xmap, wmap, p, tiles, stream);
}

}  // namespace

std::string WgmmaConvConfig::describe() const {
  return "wgmma " + std::to_string(bm) + "x" + std::to_string(bn) + " split " + std::to_string(splits) +
         (dsmem ? " dsmem" : "") + " cluster " + std::to_string(cx) + "x" + std::to_string(cy);
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
  WgmmaConvConfig c = cfg;
  if (c.splits >= 1) c.splits = static_cast<int>(normalized_splits(s.k * s.k * s.cin / kBK, c.splits));
  if (c.splits == 1) c.dsmem = false;
  return config_fits(s, geometry(s), c);
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

void apply_wgmma_conv_env(WgmmaConvConfig& cfg, int64_t tile_cols) {
  if (const char* bn = std::getenv("SDSERVE_CUDA_WGMMA_CONV_BN")) {
    const int v = std::atoi(bn);
    if ((v == 64 || v == 128 || v == 160 || v == 256) && tile_cols % v == 0) cfg.bn = v;
  }
  if (const char* bm = std::getenv("SDSERVE_CUDA_WGMMA_CONV_BM")) {
    const int v = std::atoi(bm);
    if (v == 128 || v == 256) cfg.bm = v;
  }
  if (const char* dsmem = std::getenv("SDSERVE_CUDA_WGMMA_CONV_DSMEM")) {
    if (dsmem[0] == '0' || dsmem[0] == '1') cfg.dsmem = dsmem[0] == '1';
  }
  if (const char* splits = std::getenv("SDSERVE_CUDA_WGMMA_CONV_SPLITS")) {
    const int n = std::atoi(splits);
    if (n >= 1) cfg.splits = n;
  }
}

std::vector<WgmmaConvConfig> wgmma_conv_candidates(const SplitKConvShape& s, int sms) {
  std::vector<WgmmaConvConfig> out;
  const Geometry g = geometry(s);
  const int64_t kiters = s.k * s.k * s.cin / kBK, m = s.b * s.h * s.w;
  const auto add = [&](int bm, int bn, int64_t splits, bool dsmem, int cx, int cy) {
    if (s.cout % bn != 0 || !bn_ok(bm, bn)) return;
    const int64_t ctas = tiles_of(g, bm) * (s.cout / bn), group = cx * cy;
    splits = std::clamp<int64_t>(splits, 1, std::max<int64_t>(1, kiters / 2));  // >= 2 steps a slice
    if (dsmem) {
      // All clusters in one wave: a cluster of 3-6 CTAs at ~200 KB of shared memory each fits
      // fewer times than 132 / size on an H100 (GPCs of 14-18 SMs), and a second wave doubled the time.
      splits = std::min<int64_t>(splits, 8 / group);
      while (splits > 1 && ctas > group * max_active_clusters(bm, bn, static_cast<int>(splits * group))) --splits;
    }
    while (!dsmem && splits > 1 && splits * m * s.cout > (int64_t{16} << 20)) --splits;  // partials <= 64 MB
    splits = normalized_splits(kiters, splits);
    if (dsmem && splits < 2) return;
    const WgmmaConvConfig cfg{bn, static_cast<int>(splits), cx, cy, bm, dsmem};
    if (!config_fits(s, g, cfg)) return;
    for (const WgmmaConvConfig& o : out) {
      if (o.bm == bm && o.bn == bn && o.splits == cfg.splits && o.dsmem == dsmem && o.cx == cx && o.cy == cy) return;
    }
    out.push_back(cfg);
  };
  // One wave of one CTA per SM. Each tile with its wave-filling split summed by the reduce kernel,
  // and (<= 8 CTAs a cluster, clusters that fit one wave) in-cluster through DSMEM. With
  // SDSERVE_CUDA_WGMMA_CONV_MCAST=1 also, at bm 128, pairs of CTAs that multicast the weight tile
  // (1x2, along M) or the input tile (2x1, along N): on an H100 they were 2-2.5x slower than the same
  // tiles alone at every SD 1.5 shape (docs/perf-notes.md, helper H17), so they are not timed by
  // default. The first entry (mode 2's default) is session 6's 128x128 pick.
  const char* mcast_env = std::getenv("SDSERVE_CUDA_WGMMA_CONV_MCAST");
  const bool mcast = mcast_env && mcast_env[0] == '1';
  for (const int bm : {128, 256}) {
    for (const int bn : {128, 64, 160, 256}) {
      if (s.cout % bn != 0 || !bn_ok(bm, bn)) continue;
      const int64_t splits = std::max<int64_t>(1, sms / (tiles_of(g, bm) * (s.cout / bn)));
      add(bm, bn, splits, false, 1, 1);
      if (splits > 1) add(bm, bn, splits, true, 1, 1);
    }
  }
  if (mcast) {
    for (const int bn : {128, 160, 256}) {
      if (s.cout % bn != 0) continue;
      const int64_t splits = std::max<int64_t>(1, sms / (g.tiles * (s.cout / bn)));
      for (const auto& [cx, cy] : {std::pair{1, 2}, std::pair{2, 1}}) {
        if (!cluster_ok(s, g, bn, cx, cy)) continue;
        add(128, bn, splits, false, cx, cy);
        if (splits > 1) add(128, bn, splits, true, cx, cy);
      }
    }
  }
  return out;
}

size_t wgmma_conv_workspace(const SplitKConvShape& s, const WgmmaConvConfig& cfg) {
  return cfg.splits > 1 && !cfg.dsmem ? static_cast<size_t>(cfg.splits * s.b * s.ho * s.wo * s.cout) : 0;
}

namespace {

// The launch of both forms: sub_c 0 = the convolution, else the sub-pixel upsample's phase
// convolution with C = sub_c (Params::sub_c).
bool launch_impl(const SplitKConvOperands& ops, DType dtype, const SplitKConvShape& s, const WgmmaConvConfig& cfg,
                 int sub_c, cudaStream_t stream) {
  const Geometry g = geometry(s);
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
  p.dsmem = cfg.dsmem && p.splits > 1 ? 1 : 0;
  SD_ASSERT(p.splits == 1 || p.dsmem || ops.partial, "conv_wgmma: split partials need a workspace");
  p.cx = cfg.cx, p.cy = cfg.cy, p.a_piece = kBox / cfg.cx, p.b_piece = cfg.bn / cfg.cy;
  p.sub_c = sub_c;
  bool ok = true;
  const int64_t tiles = tiles_of(g, cfg.bm);
  dispatch_half(dtype, [&](auto tag) {
    using T = decltype(tag);
    ok = cfg.bm == 256 ? launch_bm<T, 256>(cfg.bn, xmap, wmap, p, tiles, stream)
                       : launch_bm<T, 128>(cfg.bn, xmap, wmap, p, tiles, stream);
    if (ok && p.splits > 1 && !p.dsmem) {
      const int64_t n8 = int64_t{p.m} * p.cout / 8;
      conv_wgmma_reduce_kernel<T><<<grid_for(n8, 256), 256, 0, stream>>>(p);
      SD_CUDA_LAUNCH_CHECK();
    }
  });
  return ok;
}

}  // namespace

bool launch_conv_wgmma(const SplitKConvOperands& ops, DType dtype, const SplitKConvShape& s,
                       const WgmmaConvConfig& cfg, cudaStream_t stream) {
  SD_ASSERT(wgmma_conv_supported(s, dtype), "conv_wgmma: unsupported shape or dtype");
  SD_ASSERT(wgmma_conv_config_ok(s, cfg), "conv_wgmma: config " + cfg.describe());
  return launch_impl(ops, dtype, s, cfg, 0, stream);
}

// ---- the sub-pixel upsample's phase convolution ----

bool wgmma_subpixel_supported(const SplitKConvShape& s, DType dtype) {
  if (dtype != DType::kF16 && dtype != DType::kBF16) return false;
  if (s.k != 2 || s.stride != 1 || s.ho != s.h || s.wo != s.w || s.b < 1 || s.h < 1 || s.w < 1) return false;
  if (s.cin % kBK != 0 || s.cout % 256 != 0) return false;  // C % 64 == 0: every N tile inside one phase
  const int64_t lim = int64_t{1} << 31;
  if (s.b * s.h * s.w * s.cout >= lim || s.cout * 4 * s.cin >= lim || s.b * s.h * s.w * s.cin >= lim) return false;
  return geometry(s).ok;
}

bool wgmma_subpixel_config_ok(const SplitKConvShape& s, const WgmmaConvConfig& cfg) {
  return cfg.cx == 1 && cfg.cy == 1 && (s.cout / 4) % cfg.bn == 0 && wgmma_conv_config_ok(s, cfg);
}

std::vector<WgmmaConvConfig> wgmma_subpixel_candidates(const SplitKConvShape& s, int sms) {
  std::vector<WgmmaConvConfig> out;
  for (const WgmmaConvConfig& cfg : wgmma_conv_candidates(s, sms)) {
    if (wgmma_subpixel_config_ok(s, cfg)) out.push_back(cfg);
  }
  return out;
}

bool launch_conv_wgmma_subpixel(const SplitKConvOperands& ops, DType dtype, const SplitKConvShape& s,
                                const WgmmaConvConfig& cfg, cudaStream_t stream) {
  SD_ASSERT(wgmma_subpixel_supported(s, dtype), "conv_wgmma: unsupported sub-pixel shape or dtype");
  SD_ASSERT(wgmma_subpixel_config_ok(s, cfg), "conv_wgmma: sub-pixel config " + cfg.describe());
  SD_ASSERT(!ops.row && !ops.residual, "conv_wgmma: the sub-pixel upsample adds a bias only");
  return launch_impl(ops, dtype, s, cfg, static_cast<int>(s.cout / 4), stream);
}

}  // namespace sd::cuda
