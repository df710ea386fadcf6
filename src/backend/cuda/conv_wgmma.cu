// Hopper implicit-GEMM convolution (stride 1, same padding) for NHWC f16/bf16, host side: tile
// geometry (input boxes whose out-of-bounds taps TMA zero-fills = the padding), tensor maps, the
// candidate configurations (128/256-position tiles, splits summed by a reduce kernel or in-cluster
// through DSMEM, multicast clusters) and the launches; the kernels are in conv_wgmma_main.cuh.
#include "backend/cuda/conv_wgmma.h"

#include <cuda.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "backend/cuda/conv_wgmma_main.cuh"
#include "backend/cuda/conv_wgmma_reuse.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_types.cuh"
#include "backend/cuda/tma.h"

namespace sd::cuda {

namespace {

// Most slices of one in-cluster (DSMEM) split: a non-portable cluster of 16 CTAs (one per SM of a
// 16-18 SM GPC on the H100), so a batch-1 8x8 convolution can fill ~128 SMs instead of 64.
constexpr int kMaxDsmemSplits = 16;

// The candidates' largest in-cluster split: SDSERVE_CUDA_WGMMA_CONV_MAX_CLUSTER (2..16), read per
// call. Default 8 (portable clusters): on the H100 the 9-16-slice candidates never won the timed
// choice at the SD 1.5 shapes and the step did not move (docs/perf-notes.md, session 9), so they
// only lengthened the warm-up; forced configurations (tests) may still use up to 16.
constexpr int kDefaultCandidateDsmemSplits = 8;
int candidate_max_dsmem_splits() {
  const char* env = std::getenv("SDSERVE_CUDA_WGMMA_CONV_MAX_CLUSTER");
  const int v = env && env[0] ? std::atoi(env) : kDefaultCandidateDsmemSplits;
  return std::clamp(v, 2, kMaxDsmemSplits);
}

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

bool bn_ok(int bm, int bn) {
  return bn == 64 || bn == 128 || bn == 160 || (bm == 128 && bn == 256);  // <= 160 accumulators a thread
}
// The reuse kernel's instances: bn 256 never won at bm 128 on an H100 (call 1 of helper H19), and
// each instance costs binary size.
bool reuse_bn_ok(int bm, int bn) { return bn == 128 || bn == 160 || (bm == 128 && bn == 64); }

// The reuse kernel's tile of bm positions (conv_wgmma_reuse.cuh): `imgs` whole images of H*W
// (a multiple of 64, <= bm) positions, else tile_h = bm / W rows of one image (tiles_per_img tiles
// an image, the last one may reach past H). A halo box (one column shift) holds imgs x
// (tile_h + 2) x W positions of kc channels (64 at bm 128, 32 at bm 256).
struct ReuseGeometry {
  bool ok = false;
  int bm = 128, kc = 64;
  int imgs = 1, tile_h = 1, tile_hw = kBox, tiles_per_img = 1;
  int64_t tiles = 0;
  uint32_t box_bytes = 0;
};

// Weight ring depth of the reuse kernel at `bn` (as many as fit, at most kReuseMaxBStages).
int reuse_b_stages(const ReuseGeometry& g, int bn) {
  const uint32_t b_bytes = static_cast<uint32_t>(bn * g.kc * 2);
  int n = 0;
  while (n < kReuseMaxBStages && reuse_smem_bytes(g.box_bytes, n + 1, b_bytes) <= kSmemLimit) ++n;
  return n;
}

ReuseGeometry reuse_geometry(const SplitKConvShape& s, int bm) {
  ReuseGeometry g;
  g.bm = bm, g.kc = bm == 256 ? 32 : 64;
  g.tile_hw = bm;
  // W % 8: tap rows start on a swizzle pattern boundary; W | bm: whole rows a tile.
  if ((bm != 128 && bm != 256) || s.k != 3 || s.padding != 1 || s.w % 8 != 0 || bm % s.w != 0) return g;
  const int64_t hw = s.h * s.w;
  if (hw % 64 == 0 && hw <= bm) {  // every m64 inside one image
    g.imgs = static_cast<int>(bm / hw);
    g.tile_h = static_cast<int>(s.h);
    g.tile_hw = static_cast<int>(hw);
    g.tiles = ceil_div(s.b, g.imgs);
  } else {
    g.tile_h = static_cast<int>(bm / s.w);
    g.tiles_per_img = static_cast<int>(ceil_div(s.h, g.tile_h));
    g.tiles = s.b * g.tiles_per_img;
  }
  if (g.tile_h + 2 > 256 || g.imgs > 256) return g;  // TMA box dims
  g.box_bytes = static_cast<uint32_t>(g.imgs * (g.tile_h + 2) * s.w * g.kc * 2);
  g.ok = reuse_b_stages(g, 64) >= 3;
  return g;
}

// SDSERVE_CUDA_WGMMA_CONV_REUSE=0 keeps the reuse kernel out of the candidates, =128 its bm 256
// form (read per call).
bool reuse_enabled(int bm = 128) {
  const char* env = std::getenv("SDSERVE_CUDA_WGMMA_CONV_REUSE");
  return !(env && (env[0] == '0' || (bm == 256 && std::strcmp(env, "128") == 0)));
}

bool reuse_config_fits(const SplitKConvShape& s, const ReuseGeometry& g, const WgmmaConvConfig& cfg) {
  if (!g.ok || cfg.bm != g.bm || cfg.cx != 1 || cfg.cy != 1 || cfg.splits < 1) return false;
  if (!reuse_bn_ok(cfg.bm, cfg.bn) || s.cout % cfg.bn != 0 || s.cin % g.kc != 0) return false;
  const int stages = reuse_b_stages(g, cfg.bn);
  if (stages < 2) return false;
  if (cfg.dsmem) {
    const size_t ring = size_t{2} * 3 * g.box_bytes + size_t(stages) * cfg.bn * g.kc * 2;
    if (cfg.splits > kMaxDsmemSplits || size_t(cfg.bm) * (cfg.bn + 8) * 4 > ring) return false;
  }
  return true;
}

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

// The whole configuration check (after the split count was normalised to no empty slice).
bool config_fits(const SplitKConvShape& s, const Geometry& g, const WgmmaConvConfig& cfg) {
  if ((cfg.bm != 128 && cfg.bm != 256) || !bn_ok(cfg.bm, cfg.bn) || s.cout % cfg.bn != 0 || cfg.splits < 1) {
    return false;
  }
  // One cluster of slices: up to 16 CTAs (non-portable) alone, 8 with multicast.
  if (cfg.dsmem && cfg.splits * cfg.cx * cfg.cy > (cfg.cx * cfg.cy > 1 ? 8 : kMaxDsmemSplits)) return false;
  if (cfg.bm == 256 && cfg.cx * cfg.cy > 1) return false;                  // multicast: 128-position tiles
  return cluster_ok(s, g, cfg.bn, cfg.cx, cfg.cy);
}

// Split count as the kernel runs it: ceil(kiters / per-slice steps), so no slice is empty.
int64_t normalized_splits(int64_t kiters, int64_t splits) { return ceil_div(kiters, ceil_div(kiters, splits)); }

// Clusters (1, 1, size) of `kernel` at `smem` bytes that the current device runs at once.
int query_clusters(const void* kernel, size_t smem, int size) {
  if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)) !=
      cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(1, 1, static_cast<unsigned>(size));
  cfg.blockDim = dim3(kThreads, 1, 1);
  cfg.dynamicSmemBytes = smem;
  cudaLaunchAttribute cluster[1];
  cluster[0].id = cudaLaunchAttributeClusterDimension;
  cluster[0].val.clusterDim.x = 1;
  cluster[0].val.clusterDim.y = 1;
  cluster[0].val.clusterDim.z = static_cast<unsigned>(size);
  cfg.attrs = cluster;
  cfg.numAttrs = 1;
  int n = 0;
  if (size > 8 && cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  if (cudaOccupancyMaxActiveClusters(&n, kernel, &cfg) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}
template <int BM, int BN>
int query_active_clusters(int size) {  // bf16 has the same resources
  return query_clusters(reinterpret_cast<const void*>(conv_wgmma_kernel<__half, BM, BN>), Cfg<BM, BN>::kSmem, size);
}
template <int BM, int BN>
int query_reuse_clusters(int size) {  // at the largest shared memory any reuse configuration asks for
  return query_clusters(reinterpret_cast<const void*>(conv_wgmma_reuse_kernel<__half, BM, BN>), kSmemLimit, size);
}

// Cached query_active_clusters (0 when unknown: no cluster split is listed then). One entry per
// (bm, bn, size, reuse) for the process: the SD devices of one server are the same chip.
int max_active_clusters(int bm, int bn, int size, bool reuse = false) {
  static std::atomic<int> cache[4][5][kMaxDsmemSplits + 1];  // value + 1; 0 = not asked yet
  const int bi = (bm == 256 ? 1 : 0) + (reuse ? 2 : 0), ni = bn == 64 ? 0 : bn == 128 ? 1 : bn == 160 ? 2 : bn == 256 ? 3 : 4;
  if (ni == 4 || size < 1 || size > kMaxDsmemSplits) return 0;
  std::atomic<int>& slot = cache[bi][ni][size];
  if (const int v = slot.load(std::memory_order_relaxed); v > 0) return v - 1;
  int n = 0;
  if (reuse) {
    if (!reuse_bn_ok(bm, bn)) return 0;
    n = bm == 128 ? (bn == 64 ? query_reuse_clusters<128, 64>(size) : bn == 128 ? query_reuse_clusters<128, 128>(size)
                                                                   : query_reuse_clusters<128, 160>(size))
                  : (bn == 128 ? query_reuse_clusters<256, 128>(size) : query_reuse_clusters<256, 160>(size));
  } else if (bm == 128) {
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
  // Cheap host-side calls; made every time so every device (and thread) is covered.
  SD_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     static_cast<int>(Cfg<BM, BN>::kSmem)));
  if (p.dsmem && p.splits > 8) {
    SD_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
  }
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(static_cast<unsigned>(p.cout / BN), static_cast<unsigned>(tiles), static_cast<unsigned>(p.splits));
  cfg.blockDim = dim3(kThreads, 1, 1);
  cfg.dynamicSmemBytes = Cfg<BM, BN>::kSmem;
  cfg.stream = stream;
  cudaLaunchAttribute attrs[2];
  attrs[0].id = cudaLaunchAttributeClusterDimension;
  attrs[0].val.clusterDim.x = static_cast<unsigned>(p.cx);
  attrs[0].val.clusterDim.y = static_cast<unsigned>(p.cy);
  attrs[0].val.clusterDim.z = p.dsmem ? static_cast<unsigned>(p.splits) : 1u;  // (cx, cy, splits)
  const bool clustered = p.cx * p.cy > 1 || p.dsmem;
  cfg.numAttrs = clustered ? 1 : 0;
  add_pdl_attribute(cfg, attrs);
  const cudaError_t err = cudaLaunchKernelEx(&cfg, kernel, xmap, wmap, p);
  if (err != cudaSuccess && clustered) {
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
         (dsmem ? " dsmem" : "") + " cluster " + std::to_string(cx) + "x" + std::to_string(cy) + (reuse ? " reuse" : "");
}

bool wgmma_conv_supported(const SplitKConvShape& s, DType dtype) {
  if (dtype != DType::kF16 && dtype != DType::kBF16) return false;
  if (s.stride != 1 || s.k < 1 || s.k % 2 == 0 || s.padding != s.k / 2 || s.ho != s.h || s.wo != s.w) return false;
  if (s.b < 1 || s.h < 1 || s.w < 1 || s.cin % kBK != 0 || s.cout % 64 != 0) return false;
  const int64_t lim = int64_t{1} << 31;
  if (s.b * s.h * s.w * s.cout >= lim || s.cout * s.k * s.k * s.cin >= lim || s.b * s.h * s.w * s.cin >= lim) {
    return false;
  }
  return geometry(s).ok || (reuse_enabled() && reuse_geometry(s, 128).ok);
}

bool wgmma_conv_config_ok(const SplitKConvShape& s, const WgmmaConvConfig& cfg) {
  WgmmaConvConfig c = cfg;
  // The reuse kernel steps per chunk of 64 (bm 128) or 32 (bm 256) channels.
  const int64_t kiters = c.reuse ? s.cin / (c.bm == 256 ? 32 : 64) : s.k * s.k * s.cin / kBK;
  if (c.splits >= 1) c.splits = static_cast<int>(normalized_splits(kiters, c.splits));
  if (c.splits == 1) c.dsmem = false;
  if (c.reuse) return reuse_config_fits(s, reuse_geometry(s, c.bm), c);
  const Geometry g = geometry(s);
  return g.ok && config_fits(s, g, c);
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
  const ReuseGeometry rg128 = reuse_geometry(s, 128), rg256 = reuse_geometry(s, 256);
  const int64_t m = s.b * s.h * s.w;
  const auto add = [&](int bm, int bn, int64_t splits, bool dsmem, int cx, int cy, bool reuse = false) {
    if (s.cout % bn != 0 || !bn_ok(bm, bn)) return;
    const ReuseGeometry& rg = bm == 256 ? rg256 : rg128;
    const int64_t kiters = reuse ? s.cin / rg.kc : s.k * s.k * s.cin / kBK;  // reuse: channel chunks of 9 taps
    const int64_t ctas = (reuse ? rg.tiles : tiles_of(g, bm)) * (s.cout / bn), group = cx * cy;
    splits = std::clamp<int64_t>(splits, 1, std::max<int64_t>(1, reuse ? kiters : kiters / 2));  // >= 2 steps a slice
    if (dsmem) {
      // All clusters in one wave: a cluster of 3-6 CTAs at ~200 KB of shared memory each fits
      // fewer times than 132 / size on an H100 (GPCs of 14-18 SMs), and a second wave doubled the time.
      splits = std::min<int64_t>(splits, (group > 1 ? 8 : candidate_max_dsmem_splits()) / group);
      while (splits > 1 &&
             ctas > group * max_active_clusters(bm, bn, static_cast<int>(splits * group), reuse)) {
        --splits;
      }
    }
    while (!dsmem && splits > 1 && splits * m * s.cout > (int64_t{16} << 20)) --splits;  // partials <= 64 MB
    splits = normalized_splits(kiters, splits);
    if (dsmem && splits < 2) return;
    WgmmaConvConfig cfg{bn, static_cast<int>(splits), cx, cy, bm, dsmem};
    cfg.reuse = reuse;
    if (reuse ? !reuse_config_fits(s, rg, cfg) : !(g.ok && config_fits(s, g, cfg))) return;
    for (const WgmmaConvConfig& o : out) {
      if (o.bm == bm && o.bn == bn && o.splits == cfg.splits && o.dsmem == dsmem && o.cx == cx && o.cy == cy &&
          o.reuse == reuse) {
        return;
      }
    }
    out.push_back(cfg);
  };
  // One wave of one CTA per SM. Each tile with its wave-filling split summed by the reduce kernel,
  // and (<= 8 CTAs a cluster by default, clusters that fit one wave) in-cluster through DSMEM. With
  // SDSERVE_CUDA_WGMMA_CONV_MCAST=1 also, at bm 128, pairs of CTAs that multicast the weight tile
  // (1x2, along M) or the input tile (2x1, along N): on an H100 they were 2-2.5x slower than the same
  // tiles alone at every SD 1.5 shape (docs/perf-notes.md, helper H17), so they are not timed by
  // default. The first entry (mode 2's default) is session 6's 128x128 pick.
  const char* mcast_env = std::getenv("SDSERVE_CUDA_WGMMA_CONV_MCAST");
  const bool mcast = mcast_env && mcast_env[0] == '1';
  for (const int bm : {128, 256}) {
    for (const int bn : {128, 64, 160, 256}) {
      if (!g.ok || s.cout % bn != 0 || !bn_ok(bm, bn)) continue;
      const int64_t splits = std::max<int64_t>(1, sms / (tiles_of(g, bm) * (s.cout / bn)));
      add(bm, bn, splits, false, 1, 1);
      if (splits > 1) add(bm, bn, splits, true, 1, 1);
    }
  }
  if (mcast && g.ok) {
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
  // The input-reuse kernel (3x3): its 128-position tiles, each bn whose weight ring holds >= 3
  // tiles next to the two halo stages, the wave-filling split over channel chunks both ways.
  // After the others: mode 2's default stays session 6's pick.
  // Not where a tile holds <= 2 rows an image (the 64x64 level at bm 128): 3 (h + 2) halo rows
  // against 9 h tap rows saves <= 1.5x, and on an H100 it ran 1.7x slower than the old tiles there.
  for (const ReuseGeometry* rg : {&rg128, &rg256}) {
    if (!rg->ok || rg->tile_h <= 2 || !reuse_enabled(rg->bm)) continue;
    for (const int bn : {128, 64, 160}) {
      if (s.cout % bn != 0 || !reuse_bn_ok(rg->bm, bn) || reuse_b_stages(*rg, bn) < 3) continue;
      const int64_t splits = std::max<int64_t>(1, sms / (rg->tiles * (s.cout / bn)));
      add(rg->bm, bn, splits, false, 1, 1, true);
      if (splits > 1) add(rg->bm, bn, splits, true, 1, 1, true);
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
      ::sd::cuda::launch_kernel(conv_wgmma_reduce_kernel<T>, dim3(grid_for(n8, 256)), dim3(256), 0, stream, p);
      SD_CUDA_LAUNCH_CHECK();
    }
  });
  return ok;
}

template <typename T, int BM, int BN>
void launch_reuse_kernel(const CUtensorMap& xmap, const CUtensorMap& wmap, const Params& p, int64_t tiles,
                         cudaStream_t stream, bool& ok) {
  const auto kernel = conv_wgmma_reuse_kernel<T, BM, BN>;
  SD_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kSmemLimit)));
  if (p.dsmem && p.splits > 8) {
    SD_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
  }
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(static_cast<unsigned>(p.cout / BN), static_cast<unsigned>(tiles), static_cast<unsigned>(p.splits));
  cfg.blockDim = dim3(kThreads, 1, 1);
  cfg.dynamicSmemBytes =
      reuse_smem_bytes(static_cast<uint32_t>(p.r_box_bytes), p.r_b_stages, ReuseCfg<BM, BN>::kBBytes);
  cfg.stream = stream;
  cudaLaunchAttribute attrs[2];
  attrs[0].id = cudaLaunchAttributeClusterDimension;
  attrs[0].val.clusterDim.x = 1;
  attrs[0].val.clusterDim.y = 1;
  attrs[0].val.clusterDim.z = static_cast<unsigned>(p.splits);  // (1, 1, splits): the DSMEM split sum
  cfg.numAttrs = p.dsmem ? 1 : 0;
  add_pdl_attribute(cfg, attrs);
  const cudaError_t err = cudaLaunchKernelEx(&cfg, kernel, xmap, wmap, p);
  if (err != cudaSuccess && p.dsmem) {
    (void)cudaGetLastError();  // a refused cluster shape is not sticky
    ok = false;
    return;
  }
  SD_CUDA_CHECK(err);
}

std::atomic<uint64_t> g_reuse_launches{0};

// The input-reuse kernel's launch (3x3, padding 1): halo boxes {kc, W, tile_h + 2, imgs}.
bool launch_reuse(const SplitKConvOperands& ops, DType dtype, const SplitKConvShape& s, const WgmmaConvConfig& cfg,
                  cudaStream_t stream) {
  const ReuseGeometry g = reuse_geometry(s, cfg.bm);
  const TmaSwizzle swizzle = g.kc == 64 ? TmaSwizzle::k128B : TmaSwizzle::k64B;  // rows of kc * 2 bytes
  TmaTiledDesc xd;  // x [B, H, W, Cin] innermost first
  xd.base = ops.x, xd.dtype = dtype, xd.rank = 4, xd.swizzle = swizzle, xd.l2_promote_bytes = 128;
  const uint64_t xdims[4] = {static_cast<uint64_t>(s.cin), static_cast<uint64_t>(s.w), static_cast<uint64_t>(s.h),
                             static_cast<uint64_t>(s.b)};
  const uint32_t xbox[4] = {static_cast<uint32_t>(g.kc), static_cast<uint32_t>(s.w),
                            static_cast<uint32_t>(g.tile_h + 2), static_cast<uint32_t>(g.imgs)};
  for (int i = 0; i < 4; ++i) xd.dims[i] = xdims[i], xd.box[i] = xbox[i];
  xd.strides_bytes[0] = static_cast<uint64_t>(s.cin * 2);
  xd.strides_bytes[1] = static_cast<uint64_t>(s.w * s.cin * 2);
  xd.strides_bytes[2] = static_cast<uint64_t>(s.h * s.w * s.cin * 2);
  CUtensorMap xmap{}, wmap{};
  if (!encode_tma_tiled(xd, &xmap).ok()) return false;
  const int64_t ktot = 9 * s.cin;  // w [Cout, 3*3*Cin]; a box is kc reduction elements x bn channels
  if (!encode_tma_2d(ops.w, dtype, static_cast<uint64_t>(s.cout), static_cast<uint64_t>(ktot),
                     static_cast<uint64_t>(ktot), static_cast<uint32_t>(cfg.bn), static_cast<uint32_t>(g.kc), swizzle,
                     &wmap)
           .ok()) {
    return false;
  }
  Params p{};
  p.y = ops.y, p.bias = ops.bias, p.row = ops.row, p.residual = ops.residual, p.partial = ops.partial;
  p.m = static_cast<int>(s.b * s.h * s.w), p.cout = static_cast<int>(s.cout), p.hw = static_cast<int>(s.h * s.w);
  p.w_ = static_cast<int>(s.w);
  p.k = 3, p.pad = 1;
  p.cin_steps = static_cast<int>(s.cin / g.kc);
  p.kiters = p.cin_steps;  // chunks of 9 weight tiles
  p.iters_per_split = static_cast<int>(ceil_div(p.kiters, cfg.splits));
  p.splits = static_cast<int>(ceil_div(p.kiters, p.iters_per_split));
  p.dsmem = cfg.dsmem && p.splits > 1 ? 1 : 0;
  SD_ASSERT(p.splits == 1 || p.dsmem || ops.partial, "conv_wgmma: split partials need a workspace");
  p.cx = p.cy = 1, p.a_piece = cfg.bm, p.b_piece = cfg.bn;
  p.r_box_bytes = static_cast<int>(g.box_bytes), p.r_b_stages = reuse_b_stages(g, cfg.bn);
  p.r_imgs = g.imgs, p.r_tile_h = g.tile_h, p.r_tile_hw = g.tile_hw, p.r_tiles_per_img = g.tiles_per_img;
  p.r_h = static_cast<int>(s.h);
  bool ok = true;
  dispatch_half(dtype, [&](auto tag) {
    using T = decltype(tag);
    if (cfg.bm == 256) {
      if (cfg.bn == 128) launch_reuse_kernel<T, 256, 128>(xmap, wmap, p, g.tiles, stream, ok);
      else launch_reuse_kernel<T, 256, 160>(xmap, wmap, p, g.tiles, stream, ok);
    } else {
      if (cfg.bn == 64) launch_reuse_kernel<T, 128, 64>(xmap, wmap, p, g.tiles, stream, ok);
      else if (cfg.bn == 128) launch_reuse_kernel<T, 128, 128>(xmap, wmap, p, g.tiles, stream, ok);
      else launch_reuse_kernel<T, 128, 160>(xmap, wmap, p, g.tiles, stream, ok);
    }
    if (ok && p.splits > 1 && !p.dsmem) {
      const int64_t n8 = int64_t{p.m} * p.cout / 8;
      ::sd::cuda::launch_kernel(conv_wgmma_reduce_kernel<T>, dim3(grid_for(n8, 256)), dim3(256), 0, stream, p);
      SD_CUDA_LAUNCH_CHECK();
    }
  });
  if (ok) g_reuse_launches.fetch_add(1, std::memory_order_relaxed);
  return ok;
}

}  // namespace

uint64_t wgmma_conv_reuse_launches() { return g_reuse_launches.load(std::memory_order_relaxed); }

bool launch_conv_wgmma(const SplitKConvOperands& ops, DType dtype, const SplitKConvShape& s,
                       const WgmmaConvConfig& cfg, cudaStream_t stream) {
  SD_ASSERT(wgmma_conv_supported(s, dtype), "conv_wgmma: unsupported shape or dtype");
  SD_ASSERT(wgmma_conv_config_ok(s, cfg), "conv_wgmma: config " + cfg.describe());
  return cfg.reuse ? launch_reuse(ops, dtype, s, cfg, stream) : launch_impl(ops, dtype, s, cfg, 0, stream);
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
