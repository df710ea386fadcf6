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
#include "backend/cuda/mma_sync.cuh"
#include "backend/cuda/tma.h"

namespace sd::cuda {
namespace resblock {

constexpr int kThreads = 384;  // warp 0: weight producer, warp 1: activation producer, WG 1-2: consumers
constexpr int kBK = 64;        // reduction step: 64 channels of one tap (128 bytes, one swizzle row)
constexpr int kTile = 128;     // positions (whole images) x output channels of one CTA's tile
constexpr int kMaxMTiles = 4;  // position tiles: ipt whole images, or a band of rows of one image
constexpr uint32_t kStageBytes = kTile * kBK * 2;  // one A or B box
// The stage ring is split between activations (refilled only after each stage's grid barrier)
// and weights (the next convolution's first tiles load during the barriers): kA + kB = kRing,
// kA a template parameter (6 by default; SDSERVE_CUDA_RESBLOCK_ASTAGES=4 for 4 / 9).
constexpr int kRing = 13;
constexpr int kMaxQuads = 12;  // group-norm values a consumer thread holds: 12 x 4 (<= 12288 a group)
constexpr int kFreeQuads = 3;  // of them loaded without a branch (the 8x8 level's 2.5 a thread)
constexpr int kTracePoints = 10;
constexpr int kMaxSplit = 16;  // slices of one output tile (the partial sums are read all at once)
constexpr size_t kSmem = 1024 + size_t{kRing} * kStageBytes + 8 * (2 * kRing + 2) + 64;

struct Maps {
  CUtensorMap xn, hn, x, skip;  // 4D [B, H, W, C], box {64, W, band_h, ipt}
  CUtensorMap w1, w2, wsc;      // 2D [cout, K], box {64, 128}
};

struct Params {
  const void *x, *skip, *temb;
  const void *g1, *be1, *g2, *be2, *b2, *bs;
  void *xn, *hn, *y;
  float* ws;
  unsigned* bar;
  unsigned long long* trace;  // diagnostics: per CTA kTracePoints globaltimer stamps, or null
  int m, hw, ca, cb, cin, cout, groups, temb_stride, temb_col;
  // Position tiles: ipt whole images (band_h = H, bands 1), or one image's rows in bands of band_h
  // (images over 128 positions); rows = ipt band_h W <= 128 positions a tile.
  int w, ipt, band_h, bands, rows, mtiles, ntiles;
  float eps;
  int ksteps1, split1, per1;
  int ksteps2, split2, per2, conv2_steps;  // conv2's 3x3 steps; the shortcut's follow
  int has_shortcut;
  // When the weight stream starts: 0 at once, 1 (default) once this CTA's gn1 inputs have arrived,
  // 2 after gn1's grid barrier (SDSERVE_CUDA_RESBLOCK_WEIGHTS; measured in docs/perf-notes.md).
  int weights_mode;
};

__device__ __forceinline__ unsigned ld_acquire_gpu(const unsigned* p) {
  unsigned v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];\n" : "=r"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ void st_release_gpu(unsigned* p, unsigned v) {
  asm volatile("st.release.gpu.global.u32 [%0], %1;\n" ::"l"(p), "r"(v) : "memory");
}
// Generic-proxy global writes of this thread ordered before later async-proxy (TMA) reads.
__device__ __forceinline__ void fence_proxy_async_global() {
  asm volatile("fence.proxy.async.global;\n" ::: "memory");
}

__device__ __forceinline__ void trace_point(const Params& p, int i) {
  if (p.trace && threadIdx.x == 128) {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;\n" : "=l"(t));
    p.trace[blockIdx.x * kTracePoints + i] = t;
  }
}

// Every consumer thread of every CTA (the producers never join): a sense-reversing barrier on
// bar[0] (arrivals, reset by the last) and bar[kGenWord] (generation, on its own 128-byte line so
// the waiters' polling does not slow the arrivals' atomics), left at {0, gen + 1}.
constexpr int kGenWord = 32;
__device__ __forceinline__ void grid_sync(unsigned* bar) {
  sm90::named_barrier_sync(1, 256);
  if (threadIdx.x == 128) {
    // Release: the CTA's writes (ordered before by the named barrier) go with the arrival; the
    // last arrival acquires every other one's and releases them all with the new generation.
    const unsigned gen = ld_acquire_gpu(bar + kGenWord);
    unsigned prev;
    asm volatile("atom.add.acq_rel.gpu.global.u32 %0, [%1], 1;\n" : "=r"(prev) : "l"(bar) : "memory");
    if (prev == gridDim.x - 1) {
      asm volatile("st.relaxed.gpu.global.u32 [%0], 0;\n" ::"l"(bar) : "memory");
      st_release_gpu(bar + kGenWord, gen + 1);
    } else {
      while (ld_acquire_gpu(bar + kGenWord) == gen) {
      }
    }
  }
  sm90::named_barrier_sync(1, 256);
}

// Sum over the 256 consumer threads (red: 8 floats of shared memory).
__device__ __forceinline__ float block_sum(float v, float* red) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int tid = threadIdx.x - 128;
  if ((tid & 31) == 0) red[tid >> 5] = v;
  sm90::named_barrier_sync(2, 256);
  float s = 0.f;
#pragma unroll
  for (int i = 0; i < 8; ++i) s += red[i];
  sm90::named_barrier_sync(2, 256);
  return s;
}

template <typename T>
__device__ __forceinline__ void load4(const T* src, float (&v)[4]) {
  const uint2 u = *reinterpret_cast<const uint2*>(src);
  const float2 a = sm80::unpack_pair<T>(u.x), b = sm80::unpack_pair<T>(u.y);
  v[0] = a.x, v[1] = a.y, v[2] = b.x, v[3] = b.y;
}
template <typename T>
__device__ __forceinline__ void store4(T* dst, const float (&v)[4]) {
  *reinterpret_cast<uint2*>(dst) = make_uint2(sm80::pack_pair<T>(v[0], v[1]), sm80::pack_pair<T>(v[2], v[3]));
}

// Sum of the split partial tiles of `ws` for (position m, channels ch..ch+3), in slice order.
// Unit (position tile mt, channel tile nt, slice s) is (mt ntiles + nt) split + s; position m =
// (img, y, x) is row ((img % ipt) band_h + y % band_h) W + x of tile (img / ipt) bands + y / band_h.
__device__ __forceinline__ float4 sum_partials(const Params& p, int split, int m, int ch) {
  const int img = m / p.hw, pos = m - img * p.hw, y = pos / p.w, x = pos - y * p.w;
  const int band = y / p.band_h, ig = img / p.ipt;
  const int mt = ig * p.bands + band;
  const int row = ((img - ig * p.ipt) * p.band_h + (y - band * p.band_h)) * p.w + x;
  const int tile = mt * p.ntiles + ch / kTile;
  const float* ws = p.ws;
  const float* src = ws + (int64_t{tile} * split * kTile + row) * kTile + (ch % kTile);
  float4 t[kMaxSplit];  // every slice's load in flight at once: one L2 round trip, not `split`
#pragma unroll
  for (int s = 0; s < kMaxSplit; ++s) {
    if (s < split) t[s] = __ldcg(reinterpret_cast<const float4*>(src + int64_t{s} * kTile * kTile));
  }
  float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
  for (int s = 0; s < kMaxSplit; ++s) {
    if (s < split) acc.x += t[s].x, acc.y += t[s].y, acc.z += t[s].z, acc.w += t[s].w;
  }
  return acc;
}

// Group norm + SiLU over (image, group) units, one unit a CTA at a time. kSecond = false: of the
// block input [x | skip] into xn; true: of h = conv1's partial sums + the time row, into hn.
template <typename T, bool kSecond>
__device__ void norm_stage(const Params& p, float* red, uint32_t loaded_bar = 0) {
  const int tid = threadIdx.x - 128;
  const int C = kSecond ? p.cout : p.cin;
  const int cpg = C / p.groups, qpg = cpg / 4, nq = p.hw * qpg;
  const float inv_n = 1.f / static_cast<float>(p.hw * cpg);
  const T* gamma = static_cast<const T*>(kSecond ? p.g2 : p.g1);
  const T* beta = static_cast<const T*>(kSecond ? p.be2 : p.be1);
  T* out = static_cast<T*>(kSecond ? p.hn : p.xn);
  const int units = (p.m / p.hw) * p.groups;
  for (int u = blockIdx.x; u < units; u += gridDim.x) {
    const int img = u / p.groups, g = u - img * p.groups;
    float v[kMaxQuads][4];
    float sum = 0.f;
#pragma unroll
    for (int j = 0; j < kMaxQuads; ++j) {
      const int q = tid + j * 256;
      v[j][0] = v[j][1] = v[j][2] = v[j][3] = 0.f;
      // The first kFreeQuads quads load without a branch (clamped to quad 0, zeroed past the
      // group), so their loads are in flight together; a branch per quad serialised them.
      const bool ok = q < nq;
      if (j < kFreeQuads || ok) {
        const int qc = ok ? q : 0;
        const int pos = qc / qpg, ch = g * cpg + (qc - pos * qpg) * 4, m = img * p.hw + pos;
        if constexpr (kSecond) {
          const float4 s = sum_partials(p, p.split1, m, ch);
          float t[4];
          load4(static_cast<const T*>(p.temb) + int64_t{img} * p.temb_stride + p.temb_col + ch, t);
          v[j][0] = s.x + t[0], v[j][1] = s.y + t[1], v[j][2] = s.z + t[2], v[j][3] = s.w + t[3];
        } else {
          load4(ch < p.ca ? static_cast<const T*>(p.x) + int64_t{m} * p.ca + ch
                          : static_cast<const T*>(p.skip) + int64_t{m} * p.cb + (ch - p.ca),
                v[j]);
        }
#pragma unroll
        for (int e = 0; e < 4; ++e) v[j][e] = ok ? v[j][e] : 0.f;
        sum += (v[j][0] + v[j][1]) + (v[j][2] + v[j][3]);
      }
    }
    const float mean = block_sum(sum, red) * inv_n;
    if (loaded_bar && u == static_cast<int>(blockIdx.x) && threadIdx.x == 128) sm90::mbarrier_arrive(loaded_bar);
    float sq = 0.f;
#pragma unroll
    for (int j = 0; j < kMaxQuads; ++j) {
      if (tid + j * 256 < nq) {
#pragma unroll
        for (int e = 0; e < 4; ++e) sq += (v[j][e] - mean) * (v[j][e] - mean);
      }
    }
    const float rstd = rsqrtf(block_sum(sq, red) * inv_n + p.eps);
#pragma unroll
    for (int j = 0; j < kMaxQuads; ++j) {
      const int q = tid + j * 256;
      if (q < nq) {
        const int pos = q / qpg, ch = g * cpg + (q - pos * qpg) * 4, m = img * p.hw + pos;
        float gm[4], bt[4], o[4];
        load4(gamma + ch, gm);
        load4(beta + ch, bt);
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float a = (v[j][e] - mean) * rstd * gm[e] + bt[e];
          o[e] = a / (1.f + __expf(-a));
        }
        store4(out + int64_t{m} * C + ch, o);
      }
    }
  }
  fence_proxy_async_global();  // xn / hn are read next by other CTAs' TMA loads
}

// y = conv2's partial sums + b2 + (bs or the block input), 4 channels a thread.
template <typename T>
__device__ void output_stage(const Params& p) {
  const int tid = threadIdx.x - 128;
  const int cq = p.cout / 4, quads = p.m * cq;
  for (int q = blockIdx.x * 256 + tid; q < quads; q += gridDim.x * 256) {
    const int m = q / cq, ch = (q - m * cq) * 4;
    const float4 s = sum_partials(p, p.split2, m, ch);
    float v[4] = {s.x, s.y, s.z, s.w}, a[4];
    load4(static_cast<const T*>(p.b2) + ch, a);
#pragma unroll
    for (int e = 0; e < 4; ++e) v[e] += a[e];
    if (p.has_shortcut) {
      load4(static_cast<const T*>(p.bs) + ch, a);
    } else if (ch < p.ca) {
      load4(static_cast<const T*>(p.x) + int64_t{m} * p.ca + ch, a);
    } else {
      load4(static_cast<const T*>(p.skip) + int64_t{m} * p.cb + (ch - p.ca), a);
    }
#pragma unroll
    for (int e = 0; e < 4; ++e) v[e] += a[e];
    store4(static_cast<T*>(p.y) + int64_t{m} * p.cout + ch, v);
  }
}

// This CTA's slice of a convolution: output channel tile `tile` of position tile `mt` (images
// [ipt (mt / bands), + ipt), rows from band_h (mt % bands)), reduction steps [k0, k0 + n) (n 0: none).
struct Unit {
  int mt = 0, tile = 0, k0 = 0, n = 0;
};
__device__ __forceinline__ Unit unit_of(int ksteps, int split, int per, int mtiles, int ntiles) {
  Unit u;
  const int id = static_cast<int>(blockIdx.x);
  if (id >= mtiles * ntiles * split) return u;
  const int t = id / split;
  u.mt = t / ntiles;
  u.tile = t - u.mt * ntiles;
  u.k0 = (id - t * split) * per;
  u.n = min(ksteps - u.k0, per);
  return u;
}

// The consumers' side of one convolution: wgmma over the unit's steps (ci counts steps over the
// kernel's convolutions: both rings' positions), then the f32 tile to this unit's partial slot.
template <typename T, int kAStages>
__device__ void conv_stage(const Unit& u, int unit_id, float* ws, uint32_t sa, uint32_t sb, uint32_t bars,
                           int& ci) {
  constexpr int kBStages = kRing - kAStages;
  if (u.n == 0) return;
  const uint32_t full_a = bars, empty_a = full_a + 8 * kAStages;
  const uint32_t full_b = empty_a + 8 * kAStages, empty_b = full_b + 8 * kBStages;
  const int cw = threadIdx.x / 128 - 1;  // rows [64 cw, 64 cw + 64)
  float acc[kTile / 2];  // written by the first wgmma (scale_d 0)
  for (int it = 0; it < u.n; ++it, ++ci) {
    const int s_a = ci % kAStages, s_b = ci % kBStages;
    mbar_wait(full_a + 8 * s_a, (ci / kAStages) & 1);
    mbar_wait(full_b + 8 * s_b, (ci / kBStages) & 1);
    const uint32_t a = sa + s_a * kStageBytes + cw * 64 * 128, b = sb + s_b * kStageBytes;
    sm90::wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kBK / 16; ++kk) {
      sm90::wgmma_ss<T, kTile>(acc, sm90::desc_sw128(a + kk * 32), sm90::desc_sw128(b + kk * 32), it > 0 || kk > 0);
    }
    sm90::wgmma_commit();
    sm90::wgmma_wait<1>();  // the previous step is done: its stages go back to the producers
    if (it > 0 && threadIdx.x % 128 == 0) {
      sm90::mbarrier_arrive(empty_a + 8 * ((ci - 1) % kAStages));
      sm90::mbarrier_arrive(empty_b + 8 * ((ci - 1) % kBStages));
    }
  }
  sm90::wgmma_wait<0>();
  sm90::fence_accumulators(acc);
  if (threadIdx.x % 128 == 0) {
    sm90::mbarrier_arrive(empty_a + 8 * ((ci - 1) % kAStages));
    sm90::mbarrier_arrive(empty_b + 8 * ((ci - 1) % kBStages));
  }
  // Accumulator i of (warp w, lane l): row 16 w + l / 4 + 8 ((i / 2) % 2), column 8 (i / 4) + 2 (l % 4) + i % 2.
  const int lane = threadIdx.x & 31, warp = (threadIdx.x / 32) & 3;
  float* part = ws + int64_t{unit_id} * kTile * kTile;
#pragma unroll
  for (int hh = 0; hh < 2; ++hh) {
    const int r = cw * 64 + warp * 16 + lane / 4 + 8 * hh;
#pragma unroll
    for (int i = 0; i < kTile / 8; ++i) {
      const int col = i * 8 + 2 * (lane & 3);
      __stcg(reinterpret_cast<float2*>(part + r * kTile + col), make_float2(acc[i * 4 + hh * 2], acc[i * 4 + hh * 2 + 1]));
    }
  }
}

template <typename T, int kAStages>
__global__ void __launch_bounds__(kThreads, 1) resblock_kernel(const __grid_constant__ Maps maps, const Params p) {
#if SD_SM90A_COMPILED
  constexpr int kBStages = kRing - kAStages;
  extern __shared__ unsigned char smem_raw[];
  const uint32_t raw = sm90::smem_addr(smem_raw);
  const uint32_t sa = (raw + 1023u) & ~1023u, sb = sa + kAStages * kStageBytes;
  const uint32_t bars = sb + kBStages * kStageBytes;
  const uint32_t full_a = bars, empty_a = full_a + 8 * kAStages;
  const uint32_t full_b = empty_a + 8 * kAStages, empty_b = full_b + 8 * kBStages;
  const uint32_t go = empty_b + 8 * kBStages;  // completes a phase when the activations of a conv are ready
  const uint32_t wgo = go + 8;                 // completes when the weight stream may start
  float* red = reinterpret_cast<float*>(smem_raw + (wgo + 8 - raw));
  const Unit u1 = unit_of(p.ksteps1, p.split1, p.per1, p.mtiles, p.ntiles);
  const Unit u2 = unit_of(p.ksteps2, p.split2, p.per2, p.mtiles, p.ntiles);
  if (threadIdx.x == 0) {
    for (int s = 0; s < kAStages; ++s) {
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

  const int wg = threadIdx.x / 128;
  if (wg == 0) {
    sm90::setmaxnreg_dec<40>();
    const int lane = threadIdx.x & 31, warp = threadIdx.x / 32;
    if (warp == 0 && lane == 0) {
      // Weights: both convolutions' tiles back to back; nothing to wait for but ring space.
      const uint64_t once = conv_wgmma::evict_first_policy();
      mbar_wait(wgo, 0);
      int bi = 0;
      for (int c = 0; c < 2; ++c) {
        const Unit& u = c == 0 ? u1 : u2;
        for (int it = 0; it < u.n; ++it, ++bi) {
          const int s = bi % kBStages, kt = u.k0 + it;
          if (bi >= kBStages) mbar_wait(empty_b + 8 * s, ((bi / kBStages) - 1) & 1);
          sm90::mbarrier_arrive_expect_tx(full_b + 8 * s, kStageBytes);
          const uint32_t dst = sb + s * kStageBytes;
          if (c == 0) {
            sm90::tma_load_2d(dst, &maps.w1, full_b + 8 * s, kt * kBK, u.tile * kTile, once);
          } else if (kt < p.conv2_steps) {
            sm90::tma_load_2d(dst, &maps.w2, full_b + 8 * s, kt * kBK, u.tile * kTile, once);
          } else {
            sm90::tma_load_2d(dst, &maps.wsc, full_b + 8 * s, (kt - p.conv2_steps) * kBK, u.tile * kTile, once);
          }
        }
      }
    } else if (warp == 1 && lane == 0) {
      // Activations: each convolution's input once its stage's grid barrier has passed.
      int ai = 0;
      for (int c = 0; c < 2; ++c) {
        mbar_wait(go, c & 1);
        fence_proxy_async_global();
        const Unit& u = c == 0 ? u1 : u2;
        const int cs = (c == 0 ? p.cin : p.cout) / kBK;
        const int img0 = (u.mt / p.bands) * p.ipt, y0 = (u.mt % p.bands) * p.band_h;
        const uint32_t box_bytes = static_cast<uint32_t>(p.rows) * kBK * 2;  // smem rows past it: stale
        for (int it = 0; it < u.n; ++it, ++ai) {
          const int s = ai % kAStages, kt = u.k0 + it;
          if (ai >= kAStages) mbar_wait(empty_a + 8 * s, ((ai / kAStages) - 1) & 1);
          sm90::mbarrier_arrive_expect_tx(full_a + 8 * s, box_bytes);
          const uint32_t dst = sa + s * kStageBytes;
          if (c == 1 && kt >= p.conv2_steps) {  // the shortcut: the raw input, centre tap
            const int c0 = (kt - p.conv2_steps) * kBK;
            if (c0 < p.ca) sm90::tma_load_4d(dst, &maps.x, full_a + 8 * s, c0, 0, y0, img0);
            else sm90::tma_load_4d(dst, &maps.skip, full_a + 8 * s, c0 - p.ca, 0, y0, img0);
          } else {
            const int tap = kt / cs, c0 = (kt - tap * cs) * kBK, ky = tap / 3, kx = tap - ky * 3;
            sm90::tma_load_4d(dst, c == 0 ? &maps.xn : &maps.hn, full_a + 8 * s, c0, kx - 1, y0 + ky - 1, img0);
          }
        }
      }
    }
    return;
  }

  sm90::setmaxnreg_inc<232>();
  int ci = 0;
  trace_point(p, 0);
  const bool gn_unit = static_cast<int>(blockIdx.x) < (p.m / p.hw) * p.groups;
  if (threadIdx.x == 128 && (p.weights_mode == 0 || (p.weights_mode == 1 && !gn_unit))) sm90::mbarrier_arrive(wgo);
  norm_stage<T, false>(p, red, p.weights_mode == 1 ? wgo : 0);
  trace_point(p, 1);
  grid_sync(p.bar);
  trace_point(p, 2);
  if (threadIdx.x == 128 && p.weights_mode == 2) sm90::mbarrier_arrive(wgo);
  if (threadIdx.x == 128) sm90::mbarrier_arrive(go);
  conv_stage<T, kAStages>(u1, blockIdx.x, p.ws, sa, sb, bars, ci);
  trace_point(p, 3);
  grid_sync(p.bar);
  trace_point(p, 4);
  norm_stage<T, true>(p, red);
  trace_point(p, 5);
  grid_sync(p.bar);
  trace_point(p, 6);
  if (threadIdx.x == 128) sm90::mbarrier_arrive(go);
  conv_stage<T, kAStages>(u2, blockIdx.x, p.ws, sa, sb, bars, ci);
  trace_point(p, 7);
  grid_sync(p.bar);
  trace_point(p, 8);
  output_stage<T>(p);
  trace_point(p, 9);
#endif
}

std::atomic<uint64_t> g_launches{0};

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Per device: the grid once measured (0 before, -1: the kernel does not run there); and whether a
// launch was refused, after which the blocks run op by op for the rest of the process (a refusal
// inside a graph capture would otherwise cost the whole capture).
constexpr int kMaxDevices = 64;
std::atomic<int> g_grid[kMaxDevices];
std::atomic<uint64_t> g_refused{0};

int measure_grid(int device) {
  if (sm90_multiprocessors() <= 0 || !tma_available()) return 0;
  int sms = 0, coop = 0, per_sm = 0;
  if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, device) != cudaSuccess || !coop) {
    (void)cudaGetLastError();
    return 0;
  }
  // One CTA must fit a multiprocessor (registers, shared memory), or the cooperative launch of one
  // CTA per SM is refused. Every instantiation uses the same resources.
  int current = 0;
  const auto kernel = resblock_kernel<__half, 6>;
  if (cudaGetDevice(&current) != cudaSuccess || cudaSetDevice(device) != cudaSuccess ||
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kSmem)) != cudaSuccess ||
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, kSmem) != cudaSuccess ||
      cudaSetDevice(current) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return per_sm >= 1 ? sms : 0;
}

// Multiprocessors of `device` when it is a Hopper with TMA, our kernel fits one CTA on each and no
// launch there was refused; else 0.
int grid_of(int device) {
  if (device < 0 || device >= kMaxDevices || (g_refused.load() >> device & 1u)) return 0;
  int g = g_grid[device].load();
  if (g == 0) {
    g = measure_grid(device);
    if (g == 0) g = -1;
    g_grid[device].store(g);
  }
  return g > 0 ? g : 0;
}

// A position tile: as many whole images as fit 128 positions, or (images over 128 positions) a band
// of rows of one image, the bands of equal height; boxes reaching past the batch or the image's
// last row are zero-filled by TMA (the 3x3 taps' padding). Tiles = image groups x bands.
int64_t images_per_tile(const ResblockShape& s) { return std::max<int64_t>(1, kTile / (s.h * s.w)); }
int64_t band_count(const ResblockShape& s) {
  return s.h * s.w <= kTile ? 1 : ceil_div(s.h, std::max<int64_t>(1, kTile / s.w));
}
int64_t band_rows(const ResblockShape& s) { return ceil_div(s.h, band_count(s)); }
int64_t position_tiles(const ResblockShape& s) { return ceil_div(s.b, images_per_tile(s)) * band_count(s); }

Status encode_act(const void* base, DType dtype, const ResblockShape& s, int64_t c, CUtensorMap* out) {
  TmaTiledDesc d;
  d.base = base, d.dtype = dtype, d.rank = 4, d.swizzle = TmaSwizzle::k128B, d.l2_promote_bytes = 128;
  const uint64_t dims[4] = {static_cast<uint64_t>(c), static_cast<uint64_t>(s.w), static_cast<uint64_t>(s.h),
                            static_cast<uint64_t>(s.b)};
  const uint32_t box[4] = {kBK, static_cast<uint32_t>(s.w), static_cast<uint32_t>(band_rows(s)),
                           static_cast<uint32_t>(images_per_tile(s))};
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

// Positions of the whole batch (B H W) up to which the kernel is used: SDSERVE_CUDA_RESBLOCK_POSITIONS
// (read per call), default 288 (two images of 12x12). H100, session 27, op bench µs fused / ops,
// 2 UNet rows: 8x8 1280 47 / 62, 8x12 56 / 72, 12x12 75 / 90 (and 106 / 136 with the skip); 4 rows
// 8x8 56 / 70; but 16x16 at 2 rows (512 positions) 87 / 86 and the batch-1 step 4.91-5.00 vs
// 4.88-4.89 ms with it, 8x12 at 4 rows (384) 75 / 75: from ~300 positions the ops are as fast.
constexpr int64_t kDefaultMaxPositions = 288;
int64_t max_positions() {
  const char* env = std::getenv("SDSERVE_CUDA_RESBLOCK_POSITIONS");
  const long v = env ? std::atol(env) : 0;
  return v >= 1 ? v : kDefaultMaxPositions;
}

bool resblock_persistent_supported(const ResblockShape& s, DType dtype) {
  if (dtype != DType::kF16 && dtype != DType::kBF16) return false;
  const int64_t hw = s.h * s.w, cin = s.ca + s.cb;
  if (s.b < 1 || hw < 1 || s.w > kTile || s.h > 256 || position_tiles(s) > kMaxMTiles) return false;
  if (s.b * hw > max_positions()) return false;
  if (s.ca % kBK != 0 || s.cb % kBK != 0 || s.cout % kTile != 0 || s.ca < kBK) return false;
  if (!s.has_shortcut && cin != s.cout) return false;
  if (s.groups < 1 || cin % s.groups != 0 || s.cout % s.groups != 0) return false;
  for (const int64_t c : {cin, s.cout}) {
    const int64_t cpg = c / s.groups;
    if (cpg % 4 != 0 || hw * cpg / 4 > 256 * kMaxQuads) return false;
  }
  return true;
}

bool resblock_persistent_device_ok(int device) { return grid_of(device) > 0; }

int resblock_grid(int device) { return grid_of(device); }

size_t resblock_partial_floats(int device) { return size_t(std::max(grid_of(device), 1)) * kTile * kTile; }

uint64_t resblock_persistent_launches() { return g_launches.load(); }

bool launch_resblock_persistent(const ResblockOperands& o, DType dtype, const ResblockShape& s, int device,
                                cudaStream_t stream) {
  SD_ASSERT(resblock_persistent_supported(s, dtype), "resblock_persistent: unsupported shape");
  const int grid = grid_of(device);
  if (grid <= 0) return false;
  const int64_t cin = s.ca + s.cb;
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
  if (!encode_tma_2d(o.w1, dtype, co, k1, k1, kTile, kBK, TmaSwizzle::k128B, &maps.w1).ok() ||
      !encode_tma_2d(o.w2, dtype, co, k2, k2, kTile, kBK, TmaSwizzle::k128B, &maps.w2).ok()) {
    return false;
  }
  if (s.has_shortcut) {
    const uint64_t ci = static_cast<uint64_t>(cin);
    if (!encode_tma_2d(o.ws, dtype, co, ci, ci, kTile, kBK, TmaSwizzle::k128B, &maps.wsc).ok()) return false;
  } else {
    maps.wsc = maps.w1;
  }
  Params p{};
  p.x = o.x, p.skip = o.skip, p.temb = o.temb;
  p.g1 = o.gamma1, p.be1 = o.beta1, p.g2 = o.gamma2, p.be2 = o.beta2, p.b2 = o.b2, p.bs = o.bs;
  p.xn = o.xn, p.hn = o.hn, p.y = o.y, p.ws = o.partial, p.bar = o.barrier, p.trace = o.trace;
  p.m = static_cast<int>(s.b * s.h * s.w), p.hw = static_cast<int>(s.h * s.w);
  p.ca = static_cast<int>(s.ca), p.cb = static_cast<int>(s.cb), p.cin = static_cast<int>(cin);
  p.cout = static_cast<int>(s.cout), p.groups = s.groups;
  p.temb_stride = static_cast<int>(o.temb_stride), p.temb_col = static_cast<int>(o.temb_col);
  p.eps = o.eps;
  p.w = static_cast<int>(s.w);
  p.ipt = static_cast<int>(images_per_tile(s));
  p.bands = static_cast<int>(band_count(s));
  p.band_h = static_cast<int>(band_rows(s));
  p.rows = p.ipt * p.band_h * p.w;
  p.mtiles = static_cast<int>(position_tiles(s));
  p.ntiles = static_cast<int>(s.cout / kTile);
  const int64_t tiles = int64_t{p.mtiles} * p.ntiles;  // output tiles: positions x channels
  p.ksteps1 = static_cast<int>(9 * cin / kBK);
  split_of(p.ksteps1, tiles, grid, p.split1, p.per1);
  p.conv2_steps = static_cast<int>(9 * s.cout / kBK);
  p.ksteps2 = p.conv2_steps + (s.has_shortcut ? static_cast<int>(cin / kBK) : 0);
  split_of(p.ksteps2, tiles, grid, p.split2, p.per2);
  // Every (tile, slice) needs its own CTA (fewer multiprocessors than output tiles: not here).
  if (tiles * p.split1 > grid || tiles * p.split2 > grid) return false;
  p.has_shortcut = s.has_shortcut ? 1 : 0;
  const char* wm = std::getenv("SDSERVE_CUDA_RESBLOCK_WEIGHTS");
  p.weights_mode = wm && (wm[0] == '0' || wm[0] == '2') ? wm[0] - '0' : 1;

  const char* as = std::getenv("SDSERVE_CUDA_RESBLOCK_ASTAGES");
  const bool four = as && as[0] == '4';
  const auto kernel = dtype == DType::kBF16 ? (four ? resblock_kernel<__nv_bfloat16, 4> : resblock_kernel<__nv_bfloat16, 6>)
                                            : (four ? resblock_kernel<__half, 4> : resblock_kernel<__half, 6>);
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
    if (!(g_refused.fetch_or(uint64_t{1} << device) >> device & 1u)) {
      std::fprintf(stderr, "resblock_persistent: launch refused on device %d (%s); its ResNet blocks run op by op\n",
                   device, cudaGetErrorString(err));
    }
    return false;
  }
  g_launches.fetch_add(1);
  return true;
}

}  // namespace sd::cuda
