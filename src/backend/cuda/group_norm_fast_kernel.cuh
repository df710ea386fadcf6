// Device side of group_norm_fast.cu: the kernel's arguments, the per-(row, slice) barrier on a
// global counter and the group-norm kernel itself (x in registers, or streamed twice), included
// only by group_norm_fast.cu.
#pragma once

#include <cstdint>

#include "backend/cuda/cuda_types.cuh"
#include "backend/cuda/pdl.cuh"

namespace sd::cuda::gn_fast {

constexpr int kMaxThreads = 512;          // C/8 <= 512 (C <= 4096)
constexpr int kMaxGroups = 128;           // statistics arrays in shared memory
constexpr int kCounterRows = 4096;        // batch rows per launch at most (one counter each)
constexpr int kPartialEntries = 1 << 17;  // (sum, sum of squares) per (row, CTA, group): 1 MB

struct FastArgs {
  const void* x;      // [B, P, c1]: channels [0, c1) of the input (all of it where x2 is null)
  const void* x2;     // [B, P, C - c1]: channels [c1, C) (the channel concatenation [x | x2]), or null
  int c1;             // channels in x (a multiple of 8; C where x2 is null)
  const void* add;    // [B, add_ld] window (or null): normalises x + add[b, c]
  int64_t add_ld;
  void* y;            // [B, P, C]
  const void* gamma;  // [C]
  const void* beta;   // [C]
  unsigned* counters;  // [B] barrier counters, persistent (top bit flips once per barrier)
  float2* partial;     // [B, slices, ctas_per_row, groups] shifted (sum, sum of squares) per CTA
  int positions, channels, cpg;
  int slice;   // channels per CTA (whole groups, a multiple of 8); blockIdx.y picks the slice
  int groups;  // groups per slice
  int rows;   // position lanes per CTA (threadIdx.x / (C/8))
  int chunk;  // positions per CTA
  int batch;  // B: grid z CTAs take rows z, z + gridDim.z, ...
  int stream_stores;  // streamed plans: 1 stores y with st.global.cs (evict first), 0 plain stores
  float eps;
};

__device__ __forceinline__ unsigned ld_acquire_gpu(const unsigned* p) {
  unsigned v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];\n" : "=r"(v) : "l"(p) : "memory");
  return v;
}

// silu(x) = x * sigmoid(x) = h + h * tanh(h), h = x / 2: one MUFU op.
__device__ __forceinline__ float silu_tanh_fast(float x) {
  const float h = 0.5f * x;
  float t;
  asm("tanh.approx.f32 %0, %1;" : "=f"(t) : "f"(h));
  return fmaf(h, t, h);
}

// Waits until all gridDim.x CTAs of batch row blockIdx.y have arrived. The counter's low 31 bits
// stay 0 between launches: CTA 0 adds 2^31 - (n - 1), the others 1, so the top bit flips exactly
// when the n-th arrives, whatever the previous launches' CTA counts were (no reset launch needed,
// CUDA-graph replay safe). Writes before the barrier are visible to every CTA of the row after it.
__device__ __forceinline__ void row_barrier(unsigned* counter) {
  __syncthreads();
  if (threadIdx.x == 0) {
    const unsigned n = gridDim.x;
    const unsigned inc = blockIdx.x == 0 ? 0x80000000u - (n - 1) : 1u;
    __threadfence();
    const unsigned old = atomicAdd(counter, inc);
    while (((ld_acquire_gpu(counter) ^ old) & 0x80000000u) == 0) {
    }
    __threadfence();
  }
  __syncthreads();
}

// Grid (ctas_per_row, slices, Z <= B), block `threads` = (position lane r, 8-channel chunk ch of the
// slice), r < rows active. Thread (r, ch) of CTA (k, sl, z) holds x[b, k*chunk + r + j*rows,
// sl*slice + ch*8 .. +8) for j < kMaxV, for the batch rows b = z, z + Z, ... in turn (one wave
// each; kPrefetch: the next wave's vectors are loaded before this wave's barrier). kMaxV == 0:
// no registers; the thread streams its positions (any number) for the statistics and again (from
// L2 where the Z rows' slab fits) for the apply. A barrier per (row, slice). The input x may be
// the channel concatenation [x | x2] (read in place; a slice may straddle c1); y is one tensor.
// Shared memory: red [2][threads x 8] f32 (per-lane sums, later the f64 merge) | stat [G] float2.
template <typename T, bool kSilu, int kMaxV, bool kPrefetch>
__global__ void __launch_bounds__(kMaxThreads, 1) gn_fast_kernel(const FastArgs a) {
  pdl_wait();  // PDL (pdl.cuh): first, in every CTA, before the grid barrier
  extern __shared__ __align__(16) unsigned char smem[];
  const int sl = blockIdx.y, k = blockIdx.x, cpr = gridDim.x, waves_z = gridDim.z;
  const int C = a.channels, S = a.slice, nch = S / 8, cv = C / 8, rows = a.rows, cpg = a.cpg, G = a.groups;
  const int c0 = sl * S;
  const int tid = threadIdx.x, nthreads = blockDim.x;
  const int r = tid / nch, ch = tid % nch;
  const bool active = r < rows;
  const int p0 = k * a.chunk, p1 = min(a.positions, p0 + a.chunk);
  const int span = active ? p1 - p0 - r : 0;
  const int nvalid = span > 0 ? (span + rows - 1) / rows : 0;  // <= kMaxV (the plan) unless streaming
  constexpr int kRegs = kMaxV > 0 ? kMaxV : 1;
  constexpr int kUnroll = 8;  // streaming: loads in flight per thread
  // This thread's 8 channels c0 + ch*8 lie in x (below c1) or in x2: its vector at (b, p) is
  // xs[(b * positions + p) * sv] (one source: xs = x + c0/8 + ch, sv = C/8).
  const int cv1 = a.c1 / 8, gv = c0 / 8 + ch;
  const bool in_x = gv < cv1;
  const int sv = in_x ? cv1 : cv - cv1;
  const uint4* xs =
      in_x ? static_cast<const uint4*>(a.x) + gv : static_cast<const uint4*>(a.x2) + (gv - cv1);
  const auto row_v = [&](int b) { return xs + int64_t{b} * a.positions * sv; };
  const auto x_at = [&](int b, int c) {  // x[b, 0, c] of [x | x2] (c: a channel of the whole input)
    return c < a.c1 ? static_cast<const T*>(a.x)[int64_t{b} * a.positions * a.c1 + c]
                    : static_cast<const T*>(a.x2)[int64_t{b} * a.positions * (C - a.c1) + (c - a.c1)];
  };
  const auto load = [&](uint4 (&dst)[kRegs], int b) {
    const uint4* xv = row_v(b);
#pragma unroll
    for (int j = 0; j < kMaxV; ++j) {
      if (j < nvalid) dst[j] = __ldg(xv + int64_t{p0 + r + j * rows} * sv);
    }
  };

  // Every load first: the vectors, gamma / beta rows as raw 16-byte vectors.
  uint4 v[kRegs];
  if (kMaxV > 0) load(v, blockIdx.z);
  const int cc = active ? ch : 0;
  const uint4 graw = __ldg(reinterpret_cast<const uint4*>(static_cast<const T*>(a.gamma) + c0) + cc);
  const uint4 braw = __ldg(reinterpret_cast<const uint4*>(static_cast<const T*>(a.beta) + c0) + cc);
  float* red = reinterpret_cast<float*>(smem);
  float2* stat = reinterpret_cast<float2*>(smem + size_t{64} * nthreads);  // [G] (mean, rstd)

  for (int b = blockIdx.z; b < a.batch; b += waves_z) {
    const T* ab = a.add ? static_cast<const T*>(a.add) + b * a.add_ld + c0 : nullptr;  // v[b, c0:] (or none)
    const uint4 araw = ab ? __ldg(reinterpret_cast<const uint4*>(ab) + cc) : make_uint4(0, 0, 0, 0);
    float va[8], off[8];  // add[b, c]; shift(g) - add[b, c] with shift(g) = x[b, 0, g*cpg] + add[b, g*cpg]
    unpack8<T>(araw, va);
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const int first = (cc * 8 + i) / cpg * cpg;  // the group's first channel in the slice
      off[i] = to_f32(x_at(b, c0 + first)) + (ab ? to_f32(ab[first]) : 0.f) - va[i];
    }

    // One pass: per-channel sums of d = x + add - shift and d^2.
    float s[8], q[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) s[i] = q[i] = 0.f;
    const auto accumulate = [&](const uint4& raw) {
      float f[8];
      unpack8<T>(raw, f);
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const float d = f[i] - off[i];
        s[i] += d;
        q[i] = fmaf(d, d, q[i]);
      }
    };
    const uint4* xv = row_v(b);  // x[b, p, c0 + ch*8] = xv[p * sv]
    if constexpr (kMaxV > 0) {
#pragma unroll
      for (int j = 0; j < kMaxV; ++j) {
        if (j < nvalid) accumulate(v[j]);
      }
    } else {
      int j = 0;
      for (; j + kUnroll <= nvalid; j += kUnroll) {
        uint4 t[kUnroll];
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) t[u] = __ldg(xv + int64_t{p0 + r + (j + u) * rows} * sv);
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) accumulate(t[u]);
      }
      for (; j < nvalid; ++j) accumulate(__ldg(xv + int64_t{p0 + r + j * rows} * sv));
    }

    // CTA: red[r*S + c] = lane sums (tid*8 + i == r*S + ch*8 + i); one warp per group adds its
    // cpg channels over the rows lanes, in a fixed order (deterministic).
    if (active) {
      float4* ds = reinterpret_cast<float4*>(red + tid * 8);
      float4* dq = reinterpret_cast<float4*>(red + nthreads * 8 + tid * 8);
      ds[0] = make_float4(s[0], s[1], s[2], s[3]);
      ds[1] = make_float4(s[4], s[5], s[6], s[7]);
      dq[0] = make_float4(q[0], q[1], q[2], q[3]);
      dq[1] = make_float4(q[4], q[5], q[6], q[7]);
    }
    __syncthreads();
    const int row = b * gridDim.y + sl;                // (batch row, slice)
    float2* part = a.partial + int64_t{row} * cpr * G;  // [cpr, G]
    {
      const int warp = tid / 32, lane = tid % 32, warps = nthreads / 32;
      for (int g = warp; g < G; g += warps) {
        float ss = 0.f, qq = 0.f;
        for (int e = lane; e < rows * cpg; e += 32) {
          const int idx = (e / cpg) * S + g * cpg + e % cpg;
          ss += red[idx];
          qq += red[nthreads * 8 + idx];
        }
#pragma unroll
        for (int o = 16; o > 0; o /= 2) {
          ss += __shfl_xor_sync(0xffffffffu, ss, o);
          qq += __shfl_xor_sync(0xffffffffu, qq, o);
        }
        if (lane == 0) __stcg(&part[k * G + g], make_float2(ss, qq));
      }
    }
    const bool more = b + waves_z < a.batch;
    uint4 next[kRegs];
    if (kPrefetch && more) load(next, b + waves_z);  // in flight across the barrier
    row_barrier(a.counters + row);

    // Merge the row's cpr partials per group in f64: thread (j, g) of the first J*G threads adds
    // CTAs j, j+J, ...; then thread g adds the J sums in order (deterministic).
    double2* mrg = reinterpret_cast<double2*>(smem);  // [J, G] (reuses red)
    const int J = nthreads / G;
    if (tid < J * G) {
      const int g = tid % G, j = tid / G;
      double ss = 0.0, qq = 0.0;
#pragma unroll 4
      for (int kk = j; kk < cpr; kk += J) {
        const float2 pq = __ldcg(&part[kk * G + g]);
        ss += pq.x;
        qq += pq.y;
      }
      mrg[j * G + g] = make_double2(ss, qq);
    }
    __syncthreads();
    if (tid < G) {
      double ss = 0.0, qq = 0.0;
      for (int j = 0; j < J; ++j) {
        const double2 e = mrg[j * G + tid];
        ss += e.x;
        qq += e.y;
      }
      const double n = double(a.positions) * cpg;
      const double mean_d = ss / n;  // of x + add - shift
      const float var = static_cast<float>(fmax(qq / n - mean_d * mean_d, 0.0));
      const float shift = to_f32(x_at(b, c0 + tid * cpg)) + (ab ? to_f32(ab[tid * cpg]) : 0.f);
      stat[tid] = make_float2(shift + static_cast<float>(mean_d), rsqrtf(var + a.eps));
    }
    __syncthreads();  // also: every read of red / mrg is done before the next wave writes red

    // Apply from the registers: y = (x + add - mean) * rstd * gamma + beta (then SiLU).
    if (active) {
      float sc[8], sh[8];
      {
        float ga[8], be[8];
        unpack8<T>(graw, ga);
        unpack8<T>(braw, be);
#pragma unroll
        for (int i = 0; i < 8; ++i) {
          const float2 ms = stat[(ch * 8 + i) / cpg];
          sc[i] = ms.y * ga[i];
          sh[i] = be[i] + (va[i] - ms.x) * sc[i];
        }
      }
      uint4* yv = reinterpret_cast<uint4*>(static_cast<T*>(a.y) + int64_t{b} * a.positions * C + c0) + ch;
      const auto apply = [&](const uint4& raw) {
        float f[8];
        unpack8<T>(raw, f);
#pragma unroll
        for (int i = 0; i < 8; ++i) {
          f[i] = fmaf(f[i], sc[i], sh[i]);
          if (kSilu) f[i] = silu_tanh_fast(f[i]);
        }
        return pack8<T>(f);
      };
      if constexpr (kMaxV > 0) {
#pragma unroll
        for (int j = 0; j < kMaxV; ++j) {
          if (j < nvalid) yv[int64_t{p0 + r + j * rows} * cv] = apply(v[j]);
        }
      } else {  // second read: the last use of x (evict first)
        const auto store = [&](uint4* dst, const uint4& val) {
          if (a.stream_stores) {
            __stcs(dst, val);
          } else {
            *dst = val;
          }
        };
        int j = 0;
        for (; j + kUnroll <= nvalid; j += kUnroll) {
          uint4 t[kUnroll];
#pragma unroll
          for (int u = 0; u < kUnroll; ++u) t[u] = __ldcs(xv + int64_t{p0 + r + (j + u) * rows} * sv);
#pragma unroll
          for (int u = 0; u < kUnroll; ++u) store(yv + int64_t{p0 + r + (j + u) * rows} * cv, apply(t[u]));
        }
        for (; j < nvalid; ++j) store(yv + int64_t{p0 + r + j * rows} * cv, apply(__ldcs(xv + int64_t{p0 + r + j * rows} * sv)));
      }
    }
    if (kMaxV > 0 && more) {
      if (kPrefetch) {
#pragma unroll
        for (int j = 0; j < kMaxV; ++j) v[j] = next[j];
      } else {
        load(v, b + waves_z);
      }
    }
  }
}

}  // namespace sd::cuda::gn_fast
