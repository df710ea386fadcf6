// One-launch group norm (+ SiLU, + per-channel add) that keeps x in registers: every thread loads
// its few 16-byte vectors once, shifted f32 statistics in one pass, a per-batch-row barrier on
// global atomics (cooperative launch, so the grid is co-resident), f64 merge, apply, store.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <utility>

#include "backend/cuda/cuda_backend_impl.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_types.cuh"
#include "backend/cuda/group_norm_fast.h"

namespace sd::cuda {

namespace {

constexpr int kMaxThreads = 512;          // C/8 <= 512 (C <= 4096)
constexpr int kMaxGroups = 128;           // statistics arrays in shared memory
constexpr int kCounterRows = 4096;        // batch rows per launch at most (one counter each)
constexpr int kPartialEntries = 1 << 17;  // (sum, sum of squares) per (row, CTA, group): 1 MB

struct FastArgs {
  const void* x;      // [B, P, C]
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

// Grid (ctas_per_row, slices, B), block `threads` = (position lane r, 8-channel chunk ch of the
// slice), r < rows active. Thread (r, ch) of CTA (k, sl, b) holds
// x[b, k*chunk + r + j*rows, sl*slice + ch*8 .. +8) for j < kMaxV. A barrier per (row, slice).
// Shared memory: red [2][threads x 8] f32 (per-lane sums, later the f64 merge) | stat [G] float2.
template <typename T, bool kSilu, int kMaxV>
__global__ void __launch_bounds__(kMaxThreads, 1) gn_fast_kernel(const FastArgs a) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int b = blockIdx.z, sl = blockIdx.y, k = blockIdx.x, cpr = gridDim.x;
  const int C = a.channels, S = a.slice, nch = S / 8, cv = C / 8, rows = a.rows, cpg = a.cpg, G = a.groups;
  const int c0 = sl * S;
  const int tid = threadIdx.x, nthreads = blockDim.x;
  const int r = tid / nch, ch = tid % nch;
  const bool active = r < rows;
  const int p0 = k * a.chunk, p1 = min(a.positions, p0 + a.chunk);
  const int span = active ? p1 - p0 - r : 0;
  const int nvalid = span > 0 ? (span + rows - 1) / rows : 0;  // <= kMaxV (the plan)
  const T* xb = static_cast<const T*>(a.x) + int64_t{b} * a.positions * C + c0;  // x[b, 0, c0]
  const uint4* xv = reinterpret_cast<const uint4*>(xb) + ch;

  // Every load first: the vectors, gamma / beta / add rows as raw 16-byte vectors.
  uint4 v[kMaxV];
#pragma unroll
  for (int j = 0; j < kMaxV; ++j) {
    if (j < nvalid) v[j] = __ldg(xv + int64_t{p0 + r + j * rows} * cv);
  }
  const int cc = active ? ch : 0;
  const T* ab = a.add ? static_cast<const T*>(a.add) + b * a.add_ld + c0 : nullptr;  // v[b, c0:] (or none)
  const uint4 graw = __ldg(reinterpret_cast<const uint4*>(static_cast<const T*>(a.gamma) + c0) + cc);
  const uint4 braw = __ldg(reinterpret_cast<const uint4*>(static_cast<const T*>(a.beta) + c0) + cc);
  const uint4 araw = ab ? __ldg(reinterpret_cast<const uint4*>(ab) + cc) : make_uint4(0, 0, 0, 0);
  float va[8], off[8];  // add[b, c]; shift(g) - add[b, c] with shift(g) = x[b, 0, g*cpg] + add[b, g*cpg]
  unpack8<T>(araw, va);
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int first = (cc * 8 + i) / cpg * cpg;  // the group's first channel in the slice
    off[i] = to_f32(xb[first]) + (ab ? to_f32(ab[first]) : 0.f) - va[i];
  }

  // One pass: per-channel sums of d = x + add - shift and d^2.
  float s[8], q[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) s[i] = q[i] = 0.f;
#pragma unroll
  for (int j = 0; j < kMaxV; ++j) {
    if (j < nvalid) {
      float f[8];
      unpack8<T>(v[j], f);
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const float d = f[i] - off[i];
        s[i] += d;
        q[i] = fmaf(d, d, q[i]);
      }
    }
  }

  // CTA: red[r*S + c] = lane sums (tid*8 + i == r*S + ch*8 + i); one warp per group adds its
  // cpg channels over the rows lanes, in a fixed order (deterministic).
  float* red = reinterpret_cast<float*>(smem);
  float2* stat = reinterpret_cast<float2*>(smem + size_t{64} * nthreads);  // [G] (mean, rstd)
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
    const float shift = to_f32(xb[tid * cpg]) + (ab ? to_f32(ab[tid * cpg]) : 0.f);
    stat[tid] = make_float2(shift + static_cast<float>(mean_d), rsqrtf(var + a.eps));
  }
  __syncthreads();
  if (!active) return;

  // Apply from the registers: y = (x + add - mean) * rstd * gamma + beta (then SiLU).
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
#pragma unroll
  for (int j = 0; j < kMaxV; ++j) {
    if (j < nvalid) {
      float f[8];
      unpack8<T>(v[j], f);
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        f[i] = fmaf(f[i], sc[i], sh[i]);
        if (kSilu) f[i] = silu_tanh_fast(f[i]);
      }
      yv[int64_t{p0 + r + j * rows} * cv] = pack8<T>(f);
    }
  }
}

// ---- host side ----

long env_long(const char* name, long fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const long n = std::strtol(v, &end, 10);
  return end && *end == '\0' ? n : fallback;
}

int sm_count(int device) {
  static int cached[64] = {};
  if (device < 0 || device >= 64) return 0;
  if (cached[device] == 0) {
    int n = 0;
    if (cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || n <= 0) {
      (void)cudaGetLastError();
      return 0;
    }
    cached[device] = n;
  }
  return cached[device];
}

enum class Mode { kOff, kAuto, kOn, kRequire };

// SDSERVE_CUDA_GN_FAST: 0 off, 1 wherever it fits, "require" (tests), unset / auto: the default rule.
Mode fast_mode() {
  const char* v = std::getenv("SDSERVE_CUDA_GN_FAST");
  if (!v || !*v || std::strcmp(v, "auto") == 0) return Mode::kAuto;
  if (std::strcmp(v, "0") == 0) return Mode::kOff;
  if (std::strcmp(v, "require") == 0) return Mode::kRequire;
  return Mode::kOn;
}

// An explicit SDSERVE_CUDA_GN_ONCHIP path request (0, 1, require) wins over the fast kernel's default.
bool onchip_path_requested() {
  const char* v = std::getenv("SDSERVE_CUDA_GN_ONCHIP");
  return v && *v && std::strcmp(v, "auto") != 0;
}

// The barrier counters and partial sums: one persistent buffer per (device, stream), made on an
// eager call (never inside a capture). Counters start at 0 and return to a multiple of 2^31.
struct Workspace {
  unsigned* counters = nullptr;  // [kCounterRows]
  float2* partial = nullptr;     // [kPartialEntries]
};

Workspace workspace(int device, cudaStream_t stream, bool may_allocate) {
  static std::mutex mu;
  static std::map<std::pair<int, cudaStream_t>, Workspace> spaces;
  std::lock_guard<std::mutex> lock(mu);
  const auto key = std::make_pair(device, stream);
  auto it = spaces.find(key);
  if (it != spaces.end()) return it->second;
  if (!may_allocate) return {};
  void* p = nullptr;
  const size_t counter_bytes = size_t{kCounterRows} * sizeof(unsigned);
  const size_t bytes = counter_bytes + size_t{kPartialEntries} * sizeof(float2);
  if (cudaMalloc(&p, bytes) != cudaSuccess) {
    (void)cudaGetLastError();
    return {};
  }
  if (cudaMemsetAsync(p, 0, counter_bytes, stream) != cudaSuccess) {
    (void)cudaGetLastError();
    (void)cudaFree(p);
    return {};
  }
  Workspace w;
  w.counters = static_cast<unsigned*>(p);
  w.partial = reinterpret_cast<float2*>(static_cast<char*>(p) + counter_bytes);
  spaces.emplace(key, w);
  return w;
}

template <typename T, bool kSilu, int kMaxV>
const void* kernel_ptr() {
  return reinterpret_cast<const void*>(gn_fast_kernel<T, kSilu, kMaxV>);
}

// Co-resident CTAs per SM of one kernel instance at (threads, smem); cached, 0 on error.
int blocks_per_sm(const void* kernel, int device, int threads, size_t smem) {
  static std::mutex mu;
  static std::map<std::tuple<const void*, int, int, size_t>, int> cache;
  std::lock_guard<std::mutex> lock(mu);
  const auto key = std::make_tuple(kernel, device, threads, smem);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  int n = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, threads, smem) != cudaSuccess) {
    (void)cudaGetLastError();
    n = 0;
  }
  cache.emplace(key, n);
  return n;
}

template <int kMaxV>
int least_blocks_per_sm(int device, int threads, size_t smem) {
  int n = blocks_per_sm(kernel_ptr<__half, true, kMaxV>(), device, threads, smem);
  n = std::min(n, blocks_per_sm(kernel_ptr<__half, false, kMaxV>(), device, threads, smem));
  n = std::min(n, blocks_per_sm(kernel_ptr<__nv_bfloat16, true, kMaxV>(), device, threads, smem));
  return std::min(n, blocks_per_sm(kernel_ptr<__nv_bfloat16, false, kMaxV>(), device, threads, smem));
}

// Co-resident CTAs per SM that every dtype / SiLU instance of this register size reaches.
int plan_blocks_per_sm(int max_vectors, int device, int threads, size_t smem) {
  switch (max_vectors) {
    case 4: return least_blocks_per_sm<4>(device, threads, smem);
    case 8: return least_blocks_per_sm<8>(device, threads, smem);
    default: return least_blocks_per_sm<16>(device, threads, smem);
  }
}

int64_t gcd64(int64_t a, int64_t b) { return b == 0 ? a : gcd64(b, a % b); }

// Launch configurations refused by the device (grid, kernel): remembered, never retried.
struct Refusals {
  std::mutex mu;
  std::map<std::tuple<const void*, int, unsigned, unsigned, int>, bool> known;  // true: launched once
};
Refusals& refusals() {
  static Refusals r;
  return r;
}

}  // namespace

FastPlan group_norm_fast_plan(int device, int64_t batch, int64_t positions, int64_t channels, int groups) {
  FastPlan plan;
  const int sms = sm_count(device);
  if (sms == 0 || channels % 8 != 0 || groups < 1 || channels % groups != 0 || positions < 1 || batch < 1 ||
      positions * channels >= (int64_t{1} << 31))
    return plan;
  const int64_t cpg = channels / groups;
  // Slice: whole groups and a multiple of 8 channels; the valid width nearest C / 4 (log scale,
  // the wider on a tie) unless SDSERVE_CUDA_GN_FAST_SLICES=n asks for C / n.
  const int64_t unit = cpg * 8 / gcd64(cpg, 8);
  const long forced_slices = env_long("SDSERVE_CUDA_GN_FAST_SLICES", 0);
  int64_t slice = 0;
  double best = 1e9;
  for (int64_t w = channels; w >= unit; w -= unit) {
    if (channels % w != 0 || w % unit != 0 || w / 8 > kMaxThreads || w / cpg > kMaxGroups) continue;
    if (forced_slices > 0 && w * forced_slices != channels) continue;
    const double d = std::abs(std::log2(static_cast<double>(w) * 4 / static_cast<double>(channels)));
    if (d < best - 1e-9) {
      best = d;
      slice = w;
    }
  }
  if (slice == 0) return plan;
  const int64_t slices = channels / slice, gs = slice / cpg, nch = slice / 8;
  if (batch * slices > kCounterRows) return plan;
  const int rows = nch <= 256 ? static_cast<int>(256 / nch) : 1;
  const int threads = static_cast<int>((rows * nch + 31) / 32 * 32);
  if (threads < gs) return plan;  // the merge needs a thread per group
  const size_t smem = size_t{64} * threads + size_t{8} * gs;
  const long forced_cpr = env_long("SDSERVE_CUDA_GN_FAST_CPR", 0);
  const long forced_target = env_long("SDSERVE_CUDA_GN_FAST_CTAS", 0);
  // Positions per CTA: a whole number of lanes, at most 16 vectors per thread. About one CTA per
  // SM in all, or two where one would hold more than 8 vectors per thread (measured on an H100:
  // docs/perf-notes.md, "Fast group norm").
  int64_t cpr = 0, chunk = 0;
  for (const long target : {forced_target > 0 ? forced_target : long{sms}, 2L * sms}) {
    cpr = forced_cpr > 0 ? forced_cpr : std::max<int64_t>(1, target / (batch * slices));
    chunk = (positions + cpr - 1) / cpr;
    chunk = (chunk + rows - 1) / rows * rows;
    if (chunk > int64_t{16} * rows) {
      if (forced_cpr > 0) return plan;
      chunk = int64_t{16} * rows;
    }
    cpr = (positions + chunk - 1) / chunk;
    if (chunk <= int64_t{8} * rows || forced_cpr > 0 || forced_target > 0) break;
  }
  const int vectors = static_cast<int>(chunk / rows);
  const int max_vectors = vectors <= 4 ? 4 : vectors <= 8 ? 8 : 16;
  const int per_sm = plan_blocks_per_sm(max_vectors, device, threads, smem);
  const int64_t ctas = batch * slices * cpr;
  if (per_sm < 1 || ctas > int64_t{per_sm} * sms || ctas * gs > kPartialEntries || cpr > 65535) return plan;
  plan.threads = threads;
  plan.rows = rows;
  plan.slice = static_cast<int>(slice);
  plan.slices = static_cast<int>(slices);
  plan.ctas_per_row = static_cast<int>(cpr);
  plan.chunk = static_cast<int>(chunk);
  plan.vectors = vectors;
  plan.max_vectors = max_vectors;
  plan.smem = smem;
  return plan;
}

bool group_norm_fast_default(int device, int64_t batch, int64_t positions, int64_t channels, const FastPlan& plan) {
  // Faster than the on-chip and two-kernel paths wherever it applied on the H100 (batch-2 rows at
  // every UNet level, up to 2 x 64x64x960 = 15.7 MB; 32 x 8x8x1280): on up to 16 MiB of input.
  (void)device;
  return plan.ctas_per_row > 0 && batch * positions * channels * 2 <= (int64_t{16} << 20);
}

bool group_norm_fast(CudaBackend& be, const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& y,
                     int groups, float eps, bool silu, const void* add, int64_t add_ld) {
  const Mode mode = fast_mode();
  if (mode == Mode::kOff || (mode == Mode::kAuto && onchip_path_requested())) return false;
  const auto refuse = [&](const std::string& why) {
    if (mode == Mode::kRequire)
      throw Error(Internal("group_norm: the fast kernel does not apply to " + x.describe() + ": " + why));
    return false;
  };
  const auto aligned16 = [](const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; };
  if (!aligned16(gamma.raw()) || !aligned16(beta.raw()) || !aligned16(x.raw()) || !aligned16(y.raw()) ||
      (add && (!aligned16(add) || add_ld % 8 != 0)))
    return refuse("unaligned operands");
  const int device = be.device().index;
  const int64_t batch = x.dim(0), channels = x.dim(-1);
  const int64_t positions = x.numel() / (batch * channels);
  const FastPlan plan = group_norm_fast_plan(device, batch, positions, channels, groups);
  if (plan.ctas_per_row == 0) return refuse("no co-resident plan (shape, groups or size)");
  if (mode == Mode::kAuto && !group_norm_fast_default(device, batch, positions, channels, plan)) return false;
  cudaStream_t stream = be.stream();
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream, &capture) != cudaSuccess) {
    (void)cudaGetLastError();
    return refuse("cannot query the stream's capture state");
  }
  const bool capturing = capture != cudaStreamCaptureStatusNone;
  const Workspace ws = workspace(device, stream, !capturing);
  if (!ws.counters) return refuse("no workspace (first call inside a capture, or allocation failed)");

  FastArgs args{};
  args.x = x.raw();
  args.add = add;
  args.add_ld = add_ld;
  args.y = y.raw();
  args.gamma = gamma.raw();
  args.beta = beta.raw();
  args.counters = ws.counters;
  args.partial = ws.partial;
  args.positions = static_cast<int>(positions);
  args.channels = static_cast<int>(channels);
  args.cpg = static_cast<int>(channels / groups);
  args.slice = plan.slice;
  args.groups = plan.slice / args.cpg;
  args.rows = plan.rows;
  args.chunk = plan.chunk;
  args.eps = eps;

  const void* kernel = nullptr;
  dispatch_half(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const auto pick = [&](auto silu_tag) {
      constexpr bool kS = decltype(silu_tag)::value;
      switch (plan.max_vectors) {
        case 4: kernel = kernel_ptr<T, kS, 4>(); break;
        case 8: kernel = kernel_ptr<T, kS, 8>(); break;
        default: kernel = kernel_ptr<T, kS, 16>(); break;
      }
    };
    if (silu) {
      pick(std::true_type{});
    } else {
      pick(std::false_type{});
    }
  });
  const unsigned grid_x = static_cast<unsigned>(plan.ctas_per_row), grid_y = static_cast<unsigned>(plan.slices);
  const unsigned grid_z = static_cast<unsigned>(batch);
  const auto key = std::make_tuple(kernel, device, grid_x, grid_y * 65536u + grid_z, plan.threads);
  Refusals& known = refusals();
  {
    std::lock_guard<std::mutex> lock(known.mu);
    auto it = known.known.find(key);
    if (it != known.known.end() && !it->second) return refuse("the device refused this launch before");
    if (it == known.known.end() && capturing) return refuse("configuration not yet tried eagerly");
  }
  const int per_sm = blocks_per_sm(kernel, device, plan.threads, plan.smem);
  bool ok = per_sm >= 1 && int64_t{grid_x} * grid_y * grid_z <= int64_t{per_sm} * sm_count(device);
  if (ok) {
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = dim3(grid_x, grid_y, grid_z);
    cfg.blockDim = dim3(static_cast<unsigned>(plan.threads), 1, 1);
    cfg.dynamicSmemBytes = plan.smem;
    cfg.stream = stream;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeCooperative;
    attr[0].val.cooperative = 1;
    cfg.attrs = attr;
    // SDSERVE_CUDA_GN_FAST_COOP=0 (measurement only: the grid is co-resident in practice, not
    // guaranteed): a plain launch, to see what the cooperative attribute costs.
    const char* coop = std::getenv("SDSERVE_CUDA_GN_FAST_COOP");
    cfg.numAttrs = coop && coop[0] == '0' ? 0 : 1;
    void* params[] = {&args};
    ok = cudaLaunchKernelExC(&cfg, kernel, params) == cudaSuccess;
    if (!ok) (void)cudaGetLastError();  // a launch-configuration error is not sticky: the other paths run
  }
  if (std::getenv("SDSERVE_CUDA_GN_FAST_VERBOSE")) {
    static std::mutex print_mu;
    std::lock_guard<std::mutex> lock(print_mu);
    std::fprintf(stderr, "gn_fast: %s g%d: grid %ux%ux%u, slice %d, %d threads, %d rows, chunk %d, %d/%d vectors, %zu B smem, %d per SM: %s\n",
                 x.describe().c_str(), groups, grid_x, grid_y, grid_z, plan.slice, plan.threads, plan.rows, plan.chunk, plan.vectors,
                 plan.max_vectors, plan.smem, per_sm, ok ? "launched" : "refused");
  }
  {
    std::lock_guard<std::mutex> lock(known.mu);
    auto it = known.known.find(key);
    if (it == known.known.end()) known.known.emplace(key, ok);
  }
  return ok ? true : refuse("the device refused the cooperative launch");
}

}  // namespace sd::cuda
