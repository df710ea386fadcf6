// The non-convolution stages of the persistent ResNet-block kernel (resblock_persistent.cu): its
// parameters, the grid barrier, group norm + SiLU over (image, group) units and the output sums.
// Only the two consumer warpgroups (threads 0..255) run these.
#pragma once

#include <cstdint>
#include <type_traits>

#include "backend/cuda/cuda_types.cuh"
#include "backend/cuda/mma_sync.cuh"
#include "backend/cuda/wgmma_sm90.cuh"

namespace sd::cuda::resblock {

constexpr int kTileN = 128;    // output channels of one CTA's tile
// Group-norm values a consumer thread holds: of the block input (kept packed, as loaded) 20 x 4,
// of h (f32) 10 x 4; groups of up to 256 x 80 / 256 x 40 values.
constexpr int kMaxQuads1 = 20, kMaxQuads2 = 10;
constexpr int kTracePoints = 10;
constexpr int kMaxSplit = 16;  // slices of one output tile (the partial sums are read all at once)

struct Params {
  const void *x, *skip, *temb;
  const void *g1, *be1, *g2, *be2, *b2, *bs;
  void *xn, *hn, *y;
  float* ws;
  unsigned* bar;
  unsigned long long* trace;  // diagnostics: per CTA kTracePoints globaltimer stamps, or null
  int m, hw, w, ca, cb, cin, cout, groups, temb_stride, temb_col;
  float eps;
  // Output tiles: tile_m positions (whole images, imgs_per_tile of them) x kTileN channels; units
  // (m tile, n tile, slice) in that order, one a CTA.
  int tile_m, imgs_per_tile, ntiles;
  // Activation halo boxes: a_bytes each (imgs_per_tile x (H + 2) x W positions of 64 channels),
  // a_stages of them in the ring; box_img_rows = (H + 2) W.
  int a_bytes, a_stages, box_img_rows;
  int ksteps1, split1, per1;
  int ksteps2, split2, per2, conv2_steps;  // conv2's 3x3 steps; the shortcut's follow
  int has_shortcut;
  // Step order of the 3x3 part: 1 = (chunk, kx, ky), the three vertical taps of a halo box
  // consecutive (the box loaded once for them); 0 = (tap, chunk), the weight rows read contiguously
  // (a box a step). SDSERVE_CUDA_RESBLOCK_REUSE; the default by tile, measured in perf-notes.
  int reuse;
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
  if (p.trace && threadIdx.x == 0) {
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
  if (threadIdx.x == 0) {
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
  const int tid = threadIdx.x;
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

// Where the unit of (m tile, n tile, slice 0) wrote (position m, channel ch) of its [tile_m,
// kTileN] f32 tile (ws + unit * tile_m * kTileN); slice s is s * tile_m * kTileN floats further.
__device__ __forceinline__ const float* partial_at(const Params& p, int split, int m, int ch) {
  const int mt = m / p.tile_m, r = m - mt * p.tile_m, nt = ch / kTileN;
  return p.ws + (int64_t{mt * p.ntiles + nt} * split) * p.tile_m * kTileN + int64_t{r} * kTileN + (ch % kTileN);
}

// Sum of the split partial tiles for (position m, channels ch..ch+3), in slice order, kInFlight
// slices' loads at once (16 at the 128-row tiles: one L2 round trip; 8 at 256 rows, whose kernel
// would spill registers otherwise).
template <int kInFlight>
__device__ __forceinline__ float4 sum_partials(const Params& p, int split, int m, int ch) {
  const float* src = partial_at(p, split, m, ch);
  const int64_t tile_floats = int64_t{p.tile_m} * kTileN;
  float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
  for (int s0 = 0; s0 < kMaxSplit; s0 += kInFlight) {
    float4 t[kInFlight];
#pragma unroll
    for (int s = 0; s < kInFlight; ++s) {
      if (s0 + s < split) t[s] = __ldcg(reinterpret_cast<const float4*>(src + (s0 + s) * tile_floats));
    }
#pragma unroll
    for (int s = 0; s < kInFlight; ++s) {
      if (s0 + s < split) acc.x += t[s].x, acc.y += t[s].y, acc.z += t[s].z, acc.w += t[s].w;
    }
  }
  return acc;
}

__device__ __forceinline__ float4 as_float4(const float4& v) { return v; }
template <typename T>
__device__ __forceinline__ float4 as_float4(const uint2& u) {
  const float2 a = sm80::unpack_pair<T>(u.x), b = sm80::unpack_pair<T>(u.y);
  return make_float4(a.x, a.y, b.x, b.y);
}

// Group norm + SiLU over (image, group) units, one unit a CTA at a time. kSecond = false: of the
// block input [x | skip] into xn (values held as loaded); true: of h = conv1's partial sums + the
// time row (f32), into hn. loaded_bar (first stage only): arrived on once this CTA's first unit's
// inputs are in registers.
// kWide (256-row tiles: up to 10 quads a thread, few slices): h's slices are summed slice by slice
// over all the thread's quads, so 10 loads are in flight rather than one quad's slices.
template <typename T, bool kSecond, bool kWide>
__device__ void norm_stage(const Params& p, float* red, uint32_t loaded_bar = 0) {
  constexpr int kQ = kSecond ? kMaxQuads2 : kMaxQuads1;
  using Held = std::conditional_t<kSecond, float4, uint2>;
  const auto get = [](const Held& h) {
    if constexpr (kSecond) return as_float4(h);
    else return as_float4<T>(h);
  };
  const int tid = threadIdx.x;
  const int C = kSecond ? p.cout : p.cin;
  const int cpg = C / p.groups, qpg = cpg / 4, nq = p.hw * qpg;
  const float inv_n = 1.f / static_cast<float>(p.hw * cpg);
  const T* gamma = static_cast<const T*>(kSecond ? p.g2 : p.g1);
  const T* beta = static_cast<const T*>(kSecond ? p.be2 : p.be1);
  T* out = static_cast<T*>(kSecond ? p.hn : p.xn);
  const int units = (p.m / p.hw) * p.groups;
  for (int u = blockIdx.x; u < units; u += gridDim.x) {
    const int img = u / p.groups, g = u - img * p.groups;
    Held v[kQ];
    float sum = 0.f;
    if constexpr (kSecond && kWide) {
      const int64_t tile_floats = int64_t{p.tile_m} * kTileN;
#pragma unroll
      for (int j = 0; j < kQ; ++j) v[j] = make_float4(0.f, 0.f, 0.f, 0.f);
      for (int s0 = 0; s0 < p.split1; ++s0) {
        float4 t[kQ];
#pragma unroll
        for (int j = 0; j < kQ; ++j) {
          const int q = tid + j * 256;
          if (q < nq) {
            const int pos = q / qpg, ch = g * cpg + (q - pos * qpg) * 4;
            t[j] = __ldcg(reinterpret_cast<const float4*>(partial_at(p, p.split1, img * p.hw + pos, ch) + s0 * tile_floats));
          }
        }
#pragma unroll
        for (int j = 0; j < kQ; ++j) {
          if (tid + j * 256 < nq) v[j].x += t[j].x, v[j].y += t[j].y, v[j].z += t[j].z, v[j].w += t[j].w;
        }
      }
    }
#pragma unroll
    for (int j = 0; j < kQ; ++j) {
      const int q = tid + j * 256;
      if constexpr (!(kSecond && kWide)) v[j] = Held{};
      if (q < nq) {
        const int pos = q / qpg, ch = g * cpg + (q - pos * qpg) * 4, m = img * p.hw + pos;
        if constexpr (kSecond) {
          const float4 s = kWide ? v[j] : sum_partials<16>(p, p.split1, m, ch);
          float t[4];
          load4(static_cast<const T*>(p.temb) + int64_t{img} * p.temb_stride + p.temb_col + ch, t);
          v[j] = make_float4(s.x + t[0], s.y + t[1], s.z + t[2], s.w + t[3]);
        } else if (ch < p.ca) {
          v[j] = *reinterpret_cast<const uint2*>(static_cast<const T*>(p.x) + int64_t{m} * p.ca + ch);
        } else {
          v[j] = *reinterpret_cast<const uint2*>(static_cast<const T*>(p.skip) + int64_t{m} * p.cb + (ch - p.ca));
        }
        const float4 f = get(v[j]);
        sum += (f.x + f.y) + (f.z + f.w);
      }
    }
    const float mean = block_sum(sum, red) * inv_n;
    if (loaded_bar && u == static_cast<int>(blockIdx.x) && threadIdx.x == 0) sm90::mbarrier_arrive(loaded_bar);
    float sq = 0.f;
#pragma unroll
    for (int j = 0; j < kQ; ++j) {
      if (tid + j * 256 < nq) {
        const float4 f = get(v[j]);
        sq += (f.x - mean) * (f.x - mean) + (f.y - mean) * (f.y - mean) + (f.z - mean) * (f.z - mean) +
              (f.w - mean) * (f.w - mean);
      }
    }
    const float rstd = rsqrtf(block_sum(sq, red) * inv_n + p.eps);
#pragma unroll
    for (int j = 0; j < kQ; ++j) {
      const int q = tid + j * 256;
      if (q < nq) {
        const int pos = q / qpg, ch = g * cpg + (q - pos * qpg) * 4, m = img * p.hw + pos;
        float gm[4], bt[4], o[4];
        load4(gamma + ch, gm);
        load4(beta + ch, bt);
        const float4 f = get(v[j]);
        const float x4[4] = {f.x, f.y, f.z, f.w};
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float a = (x4[e] - mean) * rstd * gm[e] + bt[e];
          o[e] = a / (1.f + __expf(-a));
        }
        store4(out + int64_t{m} * C + ch, o);
      }
    }
  }
  fence_proxy_async_global();  // xn / hn are read next by other CTAs' TMA loads
}

// y = conv2's partial sums + b2 + (bs or the block input), 4 channels a thread; kWide: two quads'
// slices in flight at once (8 each).
template <typename T>
__device__ __forceinline__ void output_quad(const Params& p, int q, const float4& s) {
  const int cq = p.cout / 4, m = q / cq, ch = (q - m * cq) * 4;
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

template <typename T, bool kWide>
__device__ void output_stage(const Params& p) {
  const int tid = threadIdx.x;
  const int cq = p.cout / 4, quads = p.m * cq, stride = gridDim.x * 256;
  if constexpr (kWide) {
    for (int q = blockIdx.x * 256 + tid; q < quads; q += 2 * stride) {
      const int q2 = q + stride < quads ? q + stride : q;
      const float4 s = sum_partials<8>(p, p.split2, q / cq, (q % cq) * 4);
      const float4 s2 = sum_partials<8>(p, p.split2, q2 / cq, (q2 % cq) * 4);
      output_quad<T>(p, q, s);
      if (q2 != q) output_quad<T>(p, q2, s2);
    }
  } else {
    for (int q = blockIdx.x * 256 + tid; q < quads; q += stride) {
      output_quad<T>(p, q, sum_partials<16>(p, p.split2, q / cq, (q % cq) * 4));
    }
  }
}

}  // namespace sd::cuda::resblock
