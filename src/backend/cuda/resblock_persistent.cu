// The persistent ResNet-block kernel (resblock_persistent.h): one cooperative grid of one CTA per
// SM runs gn1 -> conv1 -> gn2 -> conv2 (+ shortcut) -> adds with grid barriers between the stages;
// a producer thread streams every weight tile of both convolutions through its own TMA ring.
#include "backend/cuda/resblock_persistent.h"

#include <cuda.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "backend/cuda/conv_wgmma_kernel.cuh"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_types.cuh"
#include "backend/cuda/resblock_stages.cuh"
#include "backend/cuda/tma.h"

namespace sd::cuda {
namespace resblock {

// Warps 0-7: the two consumer warpgroups; warp 8: the weight producer; warp 9: the activation
// producer; warps 10-11 idle (the producers' warpgroup gives its registers to the consumers).
constexpr int kThreads = 384;
constexpr int kWeightThread = 256, kActThread = 288;
constexpr int kBK = 64;        // reduction step: 64 channels of one tap (128 bytes, one swizzle row)
constexpr uint32_t kBBytes = kTileN * kBK * 2;  // one weight box [kTileN, kBK]
// Two rings: activation halo boxes (refilled only after each stage's grid barrier; a box serves
// the three vertical taps of one (channel chunk, horizontal tap)) in kARegion bytes, and weight
// boxes (the next convolution's first tiles load during the barriers) in kBStages slots.
constexpr uint32_t kARegion = 108 * 1024;
constexpr int kMaxAStages = 6;
constexpr int kBStages = 7;
constexpr size_t kSmem = 1024 + kARegion + size_t{kBStages} * kBBytes + 8 * (2 * kMaxAStages + 2 * kBStages + 2) + 64;
static_assert(kSmem <= 232448, "resblock: shared memory over the sm_90 limit");

struct Maps {
  CUtensorMap xn, hn, x, skip;  // 4D [B, H, W, C], box {64, W, H + 2, imgs_per_tile}
  CUtensorMap w1, w2, wsc;      // 2D [cout, K], box {64, 128}
};

// Reduction step s of a convolution over cs 64-channel chunks: the 3x3 steps first, then the
// shortcut's (one a chunk of the raw input: a box's centre rows at kx = 0). The 3x3 steps in
// Params::reuse order: (chunk, kx, ky), the three vertical taps of one (chunk, kx) reading one halo
// box, or (tap, chunk), a box a step and the weights' K contiguous.
struct Step {
  int chunk, kx, ky, wk;  // wk: the weight box's K offset
};
__device__ __forceinline__ Step step_of(int s, int cs, int reuse) {
  Step t;
  if (reuse) {
    const int g = s / 3;
    t.ky = s - g * 3, t.chunk = g / 3, t.kx = g - t.chunk * 3;
    t.wk = ((t.ky * 3 + t.kx) * cs + t.chunk) * 64;
  } else {
    const int tap = s / cs;
    t.chunk = s - tap * cs, t.ky = tap / 3, t.kx = tap - t.ky * 3, t.wk = s * 64;
  }
  return t;
}
// Whether step s loads a new halo box (the first step of a unit always does).
__device__ __forceinline__ bool starts_box(int s, int conv_steps, int reuse) {
  return !reuse || s >= conv_steps || s % 3 == 0;
}

// This CTA's unit of a convolution: output tile (mt, nt), reduction steps [k0, k0 + n) (n 0: none).
struct Unit {
  int mt = 0, nt = 0, k0 = 0, n = 0;
};
__device__ __forceinline__ Unit unit_of(const Params& p, int ksteps, int split, int per) {
  Unit u;
  const int id = static_cast<int>(blockIdx.x);
  const int mtiles = (p.m + p.tile_m - 1) / p.tile_m;
  if (id >= mtiles * p.ntiles * split) return u;
  const int tile = id / split;
  u.mt = tile / p.ntiles, u.nt = tile - u.mt * p.ntiles;
  u.k0 = (id - tile * split) * per;
  u.n = min(ksteps - u.k0, per);
  return u;
}

// The consumers' side of one convolution: wgmma over the unit's steps (bi / ai count weight / halo
// boxes over the kernel's convolutions: both rings' positions), then the f32 tile to this unit's
// partial slot. Consumer warpgroup cw owns rows [cw * 64 kMT, +64 kMT) of the tile, kMT m64 blocks.
// Steps in the 3x3 part start a new box at ky = 0, in the shortcut part every step.
template <typename T, int kMT>
__device__ void conv_stage(const Params& p, const Unit& u, int conv_steps, int cs, uint32_t sa, uint32_t sb,
                           uint32_t bars, int& bi, int& ai) {
  if (u.n == 0) return;
  const uint32_t full_a = bars, empty_a = full_a + 8 * kMaxAStages;
  const uint32_t full_b = empty_a + 8 * kMaxAStages, empty_b = full_b + 8 * kBStages;
  const int cw = threadIdx.x / 128;
  // Byte offset of m64 block j inside a halo box at the top tap: its image's box plus its rows.
  uint32_t moff[kMT];
#pragma unroll
  for (int j = 0; j < kMT; ++j) {
    const int r0 = (cw * kMT + j) * 64, img = r0 / p.hw;
    moff[j] = static_cast<uint32_t>(img * p.box_img_rows + (r0 - img * p.hw)) * 128u;
  }
  const uint32_t row_bytes = static_cast<uint32_t>(p.w) * 128u;  // one image row of a box: one ky step
  float acc[kMT][kTileN / 2];  // written by the first wgmma (scale_d 0)
  int a_slot = 0;
  for (int it = 0; it < u.n; ++it, ++bi) {
    const int s = u.k0 + it;
    const int ky = s < conv_steps ? step_of(s, cs, p.reuse).ky : 1;
    const bool new_box = it == 0 || starts_box(s, conv_steps, p.reuse);
    if (new_box) {
      a_slot = ai % p.a_stages;
      mbar_wait(full_a + 8 * a_slot, (ai / p.a_stages) & 1);
      ++ai;
    }
    const int s_b = bi % kBStages;
    mbar_wait(full_b + 8 * s_b, (bi / kBStages) & 1);
    const uint32_t a = sa + a_slot * p.a_bytes + ky * row_bytes, b = sb + s_b * kBBytes;
    sm90::wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kBK / 16; ++kk) {
#pragma unroll
      for (int j = 0; j < kMT; ++j) {
        sm90::wgmma_ss<T, kTileN>(acc[j], sm90::desc_sw128(a + moff[j] + kk * 32), sm90::desc_sw128(b + kk * 32),
                                  it > 0 || kk > 0);
      }
    }
    sm90::wgmma_commit();
    sm90::wgmma_wait<1>();  // the previous step is done: its boxes go back to the producers
    if (it > 0 && threadIdx.x % 128 == 0) {
      sm90::mbarrier_arrive(empty_b + 8 * ((bi - 1) % kBStages));
      if (new_box) sm90::mbarrier_arrive(empty_a + 8 * ((ai - 2) % p.a_stages));
    }
  }
  sm90::wgmma_wait<0>();
#pragma unroll
  for (int j = 0; j < kMT; ++j) sm90::fence_accumulators(acc[j]);
  if (threadIdx.x % 128 == 0) {
    sm90::mbarrier_arrive(empty_b + 8 * ((bi - 1) % kBStages));
    sm90::mbarrier_arrive(empty_a + 8 * ((ai - 1) % p.a_stages));
  }
  // Accumulator i of (warp w, lane l): row 16 w + l / 4 + 8 ((i / 2) % 2), column 8 (i / 4) + 2 (l % 4) + i % 2.
  const int lane = threadIdx.x & 31, warp = (threadIdx.x / 32) & 3;
  float* part = p.ws + int64_t{blockIdx.x} * p.tile_m * kTileN;
#pragma unroll
  for (int j = 0; j < kMT; ++j) {
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      const int r = (cw * kMT + j) * 64 + warp * 16 + lane / 4 + 8 * hh;
#pragma unroll
      for (int i = 0; i < kTileN / 8; ++i) {
        const int col = i * 8 + 2 * (lane & 3);
        __stcg(reinterpret_cast<float2*>(part + r * kTileN + col),
               make_float2(acc[j][i * 4 + hh * 2], acc[j][i * 4 + hh * 2 + 1]));
      }
    }
  }
}

template <typename T, int kMT>
__global__ void __launch_bounds__(kThreads, 1) resblock_kernel(const __grid_constant__ Maps maps, const Params p) {
#if SD_SM90A_COMPILED
  extern __shared__ unsigned char smem_raw[];
  const uint32_t raw = sm90::smem_addr(smem_raw);
  const uint32_t sa = (raw + 1023u) & ~1023u, sb = sa + kARegion;
  const uint32_t bars = sb + kBStages * kBBytes;
  const uint32_t full_a = bars, empty_a = full_a + 8 * kMaxAStages;
  const uint32_t full_b = empty_a + 8 * kMaxAStages, empty_b = full_b + 8 * kBStages;
  const uint32_t go = empty_b + 8 * kBStages;  // completes a phase when the activations of a conv are ready
  const uint32_t wgo = go + 8;                 // completes when the weight stream may start
  float* red = reinterpret_cast<float*>(smem_raw + (wgo + 8 - raw));
  const Unit u1 = unit_of(p, p.ksteps1, p.split1, p.per1);
  const Unit u2 = unit_of(p, p.ksteps2, p.split2, p.per2);
  if (threadIdx.x == 0) {
    for (int s = 0; s < kMaxAStages; ++s) {
      sm90::mbarrier_init(full_a + 8 * s, 1);
      sm90::mbarrier_init(empty_a + 8 * s, 2);
    }
    for (int s = 0; s < kBStages; ++s) {
      sm90::mbarrier_init(full_b + 8 * s, 1);
      sm90::mbarrier_init(empty_b + 8 * s, 2);
    }
    sm90::mbarrier_init(go, 1);
    sm90::mbarrier_init(wgo, 1);
    sm90::mbarrier_init_fence();
  }
  __syncthreads();

  if (threadIdx.x >= 256) {
    sm90::setmaxnreg_dec<40>();
    if (threadIdx.x == kWeightThread) {
      // Weights: both convolutions' tiles back to back; nothing to wait for but ring space.
      const uint64_t once = conv_wgmma::evict_first_policy();
      mbar_wait(wgo, 0);
      int bi = 0;
      for (int c = 0; c < 2; ++c) {
        const Unit& u = c == 0 ? u1 : u2;
        for (int it = 0; it < u.n; ++it, ++bi) {
          const int s = bi % kBStages, kt = u.k0 + it;
          if (bi >= kBStages) mbar_wait(empty_b + 8 * s, ((bi / kBStages) - 1) & 1);
          sm90::mbarrier_arrive_expect_tx(full_b + 8 * s, kBBytes);
          const uint32_t dst = sb + s * kBBytes;
          const int n0 = u.nt * kTileN;
          if (c == 0) {
            sm90::tma_load_2d(dst, &maps.w1, full_b + 8 * s, step_of(kt, p.cin / kBK, p.reuse).wk, n0, once);
          } else if (kt < p.conv2_steps) {
            sm90::tma_load_2d(dst, &maps.w2, full_b + 8 * s, step_of(kt, p.cout / kBK, p.reuse).wk, n0, once);
          } else {
            sm90::tma_load_2d(dst, &maps.wsc, full_b + 8 * s, (kt - p.conv2_steps) * kBK, n0, once);
          }
        }
      }
    } else if (threadIdx.x == kActThread) {
      // Activations: each convolution's halo boxes once its stage's grid barrier has passed.
      int ai = 0;
      for (int c = 0; c < 2; ++c) {
        mbar_wait(go, c & 1);
        fence_proxy_async_global();
        const Unit& u = c == 0 ? u1 : u2;
        const int conv_steps = c == 0 ? p.ksteps1 : p.conv2_steps;
        const int img0 = u.mt * p.imgs_per_tile;
        for (int it = 0; it < u.n; ++it) {
          const int kt = u.k0 + it;
          if (it > 0 && !starts_box(kt, conv_steps, p.reuse)) continue;
          const int s = ai % p.a_stages;
          if (ai >= p.a_stages) mbar_wait(empty_a + 8 * s, ((ai / p.a_stages) - 1) & 1);
          sm90::mbarrier_arrive_expect_tx(full_a + 8 * s, p.a_bytes);
          const uint32_t dst = sa + s * p.a_bytes;
          if (kt >= conv_steps) {  // the shortcut: the raw input [x | skip], centre column
            const int c0 = (kt - conv_steps) * kBK;
            if (c0 < p.ca) sm90::tma_load_4d(dst, &maps.x, full_a + 8 * s, c0, 0, -1, img0);
            else sm90::tma_load_4d(dst, &maps.skip, full_a + 8 * s, c0 - p.ca, 0, -1, img0);
          } else {
            const Step t = step_of(kt, (c == 0 ? p.cin : p.cout) / kBK, p.reuse);
            sm90::tma_load_4d(dst, c == 0 ? &maps.xn : &maps.hn, full_a + 8 * s, t.chunk * kBK, t.kx - 1, -1, img0);
          }
          ++ai;
        }
      }
    }
    return;
  }

  sm90::setmaxnreg_inc<232>();
  int bi = 0, ai = 0;
  trace_point(p, 0);
  const bool gn_unit = static_cast<int>(blockIdx.x) < (p.m / p.hw) * p.groups;
  if (threadIdx.x == 0 && (p.weights_mode == 0 || (p.weights_mode == 1 && !gn_unit))) sm90::mbarrier_arrive(wgo);
  norm_stage<T, false, kMT == 2>(p, red, p.weights_mode == 1 ? wgo : 0);
  trace_point(p, 1);
  grid_sync(p.bar);
  trace_point(p, 2);
  if (threadIdx.x == 0 && p.weights_mode == 2) sm90::mbarrier_arrive(wgo);
  if (threadIdx.x == 0) sm90::mbarrier_arrive(go);
  conv_stage<T, kMT>(p, u1, p.ksteps1, p.cin / kBK, sa, sb, bars, bi, ai);
  trace_point(p, 3);
  grid_sync(p.bar);
  trace_point(p, 4);
  norm_stage<T, true, kMT == 2>(p, red);
  trace_point(p, 5);
  grid_sync(p.bar);
  trace_point(p, 6);
  if (threadIdx.x == 0) sm90::mbarrier_arrive(go);
  conv_stage<T, kMT>(p, u2, p.conv2_steps, p.cout / kBK, sa, sb, bars, bi, ai);
  trace_point(p, 7);
  grid_sync(p.bar);
  trace_point(p, 8);
  output_stage<T, kMT == 2>(p);
  trace_point(p, 9);
#endif
}

std::atomic<uint64_t> g_launches{0};

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Multiprocessors of `device` when it is a Hopper with TMA and our kernel fits one CTA on each.
int grid_of(int device) {
  if (sm90_multiprocessors() <= 0 || !tma_available()) return 0;
  int sms = 0, coop = 0;
  if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, device) != cudaSuccess || !coop) {
    (void)cudaGetLastError();
    return 0;
  }
  return sms;
}

// Positions of an output tile: one or two images' worth of 128 (the 8x8 level: two images a tile;
// 16x8: one), or 256 (16x16: one image), or 256 once the block has more than 128 positions.
int64_t tile_m_of(const ResblockShape& s) { return s.b * s.h * s.w > 128 || s.h * s.w > 128 ? 256 : 128; }

// Halo box of a tile: imgs x (H + 2) rows x W columns x 64 channels (2 bytes each).
int64_t halo_box_bytes(const ResblockShape& s) { return (tile_m_of(s) / (s.h * s.w)) * (s.h + 2) * s.w * kBK * 2; }

Status encode_act(const void* base, DType dtype, const ResblockShape& s, int64_t c, CUtensorMap* out) {
  TmaTiledDesc d;
  d.base = base, d.dtype = dtype, d.rank = 4, d.swizzle = TmaSwizzle::k128B, d.l2_promote_bytes = 128;
  const uint64_t dims[4] = {static_cast<uint64_t>(c), static_cast<uint64_t>(s.w), static_cast<uint64_t>(s.h),
                            static_cast<uint64_t>(s.b)};
  const uint32_t box[4] = {kBK, static_cast<uint32_t>(s.w), static_cast<uint32_t>(s.h + 2),
                           static_cast<uint32_t>(tile_m_of(s) / (s.h * s.w))};
  for (int i = 0; i < 4; ++i) d.dims[i] = dims[i], d.box[i] = box[i];
  d.strides_bytes[0] = static_cast<uint64_t>(c * 2);
  d.strides_bytes[1] = static_cast<uint64_t>(s.w * c * 2);
  d.strides_bytes[2] = static_cast<uint64_t>(s.h * s.w * c * 2);
  return encode_tma_tiled(d, out);
}

// Slices of a convolution of `ksteps` reduction steps over `tiles` output tiles on `grid` CTAs,
// normalised so that no slice is empty; per = steps a slice.
void split_of(int64_t ksteps, int64_t tiles, int grid, int& split, int& per) {
  const int64_t want = std::clamp<int64_t>(grid / tiles, 1, kMaxSplit);
  per = static_cast<int>(ceil_div(ksteps, want));
  split = static_cast<int>(ceil_div(ksteps, per));
}

}  // namespace resblock

using namespace resblock;

bool resblock_persistent_supported(const ResblockShape& s, DType dtype) {
  if (dtype != DType::kF16 && dtype != DType::kBF16) return false;
  const int64_t hw = s.h * s.w, cin = s.ca + s.cb;
  // Each m64 block of a tile inside one image, at a 1 KB (8-row) offset of its halo box.
  if (s.b < 1 || hw < 64 || hw % 64 != 0 || hw > 256 || s.w % 8 != 0 || s.w > 256 || s.h + 2 > 256) return false;
  if (tile_m_of(s) % hw != 0 || halo_box_bytes(s) > kARegion) return false;
  if (s.ca % kBK != 0 || s.cb % kBK != 0 || s.cout % kTileN != 0 || s.ca < kBK) return false;
  if (!s.has_shortcut && cin != s.cout) return false;
  if (s.groups < 1 || cin % s.groups != 0 || s.cout % s.groups != 0) return false;
  const int64_t cpg1 = cin / s.groups, cpg2 = s.cout / s.groups;
  if (cpg1 % 4 != 0 || cpg2 % 4 != 0 || hw * cpg1 / 4 > 256 * kMaxQuads1 || hw * cpg2 / 4 > 256 * kMaxQuads2) {
    return false;
  }
  return true;
}

bool resblock_persistent_device_ok(int device) { return grid_of(device) > 0; }

int resblock_grid(int device) { return grid_of(device); }

size_t resblock_partial_floats(int device) { return size_t(std::max(grid_of(device), 1)) * 256 * kTileN; }

uint64_t resblock_persistent_launches() { return g_launches.load(); }

bool launch_resblock_persistent(const ResblockOperands& o, DType dtype, const ResblockShape& s, int device,
                                cudaStream_t stream) {
  SD_ASSERT(resblock_persistent_supported(s, dtype), "resblock_persistent: unsupported shape");
  const int grid = grid_of(device);
  if (grid <= 0) return false;
  const int64_t cin = s.ca + s.cb, hw = s.h * s.w, tile_m = tile_m_of(s);
  Maps maps{};
  if (!encode_act(o.xn, dtype, s, cin, &maps.xn).ok() || !encode_act(o.hn, dtype, s, s.cout, &maps.hn).ok() ||
      !encode_act(o.x, dtype, s, s.ca, &maps.x).ok()) {
    return false;
  }
  if (s.cb > 0) {
    if (!encode_act(o.skip, dtype, s, s.cb, &maps.skip).ok()) return false;
  } else {
    maps.skip = maps.x;
  }
  const uint64_t k1 = static_cast<uint64_t>(9 * cin), k2 = static_cast<uint64_t>(9 * s.cout);
  const uint64_t co = static_cast<uint64_t>(s.cout);
  if (!encode_tma_2d(o.w1, dtype, co, k1, k1, kTileN, kBK, TmaSwizzle::k128B, &maps.w1).ok() ||
      !encode_tma_2d(o.w2, dtype, co, k2, k2, kTileN, kBK, TmaSwizzle::k128B, &maps.w2).ok()) {
    return false;
  }
  if (s.has_shortcut) {
    const uint64_t ci = static_cast<uint64_t>(cin);
    if (!encode_tma_2d(o.ws, dtype, co, ci, ci, kTileN, kBK, TmaSwizzle::k128B, &maps.wsc).ok()) return false;
  } else {
    maps.wsc = maps.w1;
  }
  Params p{};
  p.x = o.x, p.skip = o.skip, p.temb = o.temb;
  p.g1 = o.gamma1, p.be1 = o.beta1, p.g2 = o.gamma2, p.be2 = o.beta2, p.b2 = o.b2, p.bs = o.bs;
  p.xn = o.xn, p.hn = o.hn, p.y = o.y, p.ws = o.partial, p.bar = o.barrier, p.trace = o.trace;
  p.m = static_cast<int>(s.b * hw), p.hw = static_cast<int>(hw), p.w = static_cast<int>(s.w);
  p.ca = static_cast<int>(s.ca), p.cb = static_cast<int>(s.cb), p.cin = static_cast<int>(cin);
  p.cout = static_cast<int>(s.cout), p.groups = s.groups;
  p.temb_stride = static_cast<int>(o.temb_stride), p.temb_col = static_cast<int>(o.temb_col);
  p.eps = o.eps;
  p.tile_m = static_cast<int>(tile_m), p.imgs_per_tile = static_cast<int>(tile_m / hw);
  p.ntiles = static_cast<int>(s.cout / kTileN);
  p.a_bytes = static_cast<int>(halo_box_bytes(s));
  p.box_img_rows = static_cast<int>((s.h + 2) * s.w);
  p.a_stages = static_cast<int>(std::min<int64_t>(kMaxAStages, kARegion / p.a_bytes));
  if (const char* as = std::getenv("SDSERVE_CUDA_RESBLOCK_ASTAGES"); as && as[0] >= '1' && as[0] <= '9') {
    p.a_stages = std::min(p.a_stages, as[0] - '0');  // measurement switch: fewer halo boxes in flight
  }
  const int64_t tiles = ceil_div(p.m, tile_m) * p.ntiles;
  p.ksteps1 = static_cast<int>(9 * cin / kBK);
  split_of(p.ksteps1, tiles, grid, p.split1, p.per1);
  p.conv2_steps = static_cast<int>(9 * s.cout / kBK);
  p.ksteps2 = p.conv2_steps + (s.has_shortcut ? static_cast<int>(cin / kBK) : 0);
  split_of(p.ksteps2, tiles, grid, p.split2, p.per2);
  // Every (tile, slice) needs its own CTA (fewer multiprocessors than output tiles: not here).
  if (tiles * p.split1 > grid || tiles * p.split2 > grid) return false;
  p.has_shortcut = s.has_shortcut ? 1 : 0;
  const char* ru = std::getenv("SDSERVE_CUDA_RESBLOCK_REUSE");
  p.reuse = ru && (ru[0] == '0' || ru[0] == '1') ? ru[0] - '0' : (tile_m == 256 ? 1 : 0);
  const char* wm = std::getenv("SDSERVE_CUDA_RESBLOCK_WEIGHTS");
  p.weights_mode = wm && (wm[0] == '0' || wm[0] == '2') ? wm[0] - '0' : 1;

  const bool wide = tile_m == 256;
  const auto kernel = dtype == DType::kBF16
                          ? (wide ? resblock_kernel<__nv_bfloat16, 2> : resblock_kernel<__nv_bfloat16, 1>)
                          : (wide ? resblock_kernel<__half, 2> : resblock_kernel<__half, 1>);
  SD_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kSmem)));
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(static_cast<unsigned>(grid), 1, 1);
  cfg.blockDim = dim3(kThreads, 1, 1);
  cfg.dynamicSmemBytes = kSmem;
  cfg.stream = stream;
  cudaLaunchAttribute attrs[1];
  attrs[0].id = cudaLaunchAttributeCooperative;
  attrs[0].val.cooperative = 1;
  cfg.attrs = attrs;
  cfg.numAttrs = 1;
  const cudaError_t err = cudaLaunchKernelEx(&cfg, kernel, maps, p);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();  // e.g. cudaErrorCooperativeLaunchTooLarge: nothing ran
    static std::atomic<bool> told{false};
    if (!told.exchange(true)) {
      std::fprintf(stderr, "resblock_persistent: launch refused (%s); the blocks run op by op\n", cudaGetErrorString(err));
    }
    return false;
  }
  g_launches.fetch_add(1);
  return true;
}

}  // namespace sd::cuda
