// One-launch group norm (+ SiLU, + per-channel add) that keeps x in registers: every thread loads
// its few 16-byte vectors once, shifted f32 statistics in one pass, a per-batch-row barrier on
// global atomics (cooperative launch, so the grid is co-resident), f64 merge, apply, store.
// Batches too large for one co-resident grid go in waves of batch rows (grid z < B): x streamed
// twice (the default; the second read from L2) or kept in registers (opt-in). Kernel: group_norm_fast_kernel.cuh.
#include <algorithm>
#include <atomic>
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
#include "backend/cuda/group_norm_fast_kernel.cuh"
#include "backend/cuda/pdl.cuh"

namespace sd::cuda {

namespace {

using namespace gn_fast;

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

// Instances: 4, 8 or 16 vectors a thread; the prefetching ones (two register sets) for 4 and 8
// only; 0: x streamed twice (no registers).
template <typename T, bool kSilu, int kMaxV, bool kPrefetch = false>
const void* kernel_ptr() {
  static_assert(!kPrefetch || kMaxV <= 8, "no 16-vector prefetching instance");
  return reinterpret_cast<const void*>(gn_fast_kernel<T, kSilu, kMaxV, kPrefetch>);
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

template <int kMaxV, bool kPrefetch>
int least_blocks_per_sm(int device, int threads, size_t smem) {
  int n = blocks_per_sm(kernel_ptr<__half, true, kMaxV, kPrefetch>(), device, threads, smem);
  n = std::min(n, blocks_per_sm(kernel_ptr<__half, false, kMaxV, kPrefetch>(), device, threads, smem));
  n = std::min(n, blocks_per_sm(kernel_ptr<__nv_bfloat16, true, kMaxV, kPrefetch>(), device, threads, smem));
  return std::min(n, blocks_per_sm(kernel_ptr<__nv_bfloat16, false, kMaxV, kPrefetch>(), device, threads, smem));
}

// Co-resident CTAs per SM that every dtype / SiLU instance of this register size reaches.
int plan_blocks_per_sm(int max_vectors, bool prefetch, int device, int threads, size_t smem) {
  switch (max_vectors) {
    case 4: return prefetch ? least_blocks_per_sm<4, true>(device, threads, smem)
                            : least_blocks_per_sm<4, false>(device, threads, smem);
    case 8: return prefetch ? least_blocks_per_sm<8, true>(device, threads, smem)
                            : least_blocks_per_sm<8, false>(device, threads, smem);
    case 0: return least_blocks_per_sm<0, false>(device, threads, smem);
    default: return least_blocks_per_sm<16, false>(device, threads, smem);
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

// The whole batch in one co-resident grid (grid z = B): the plan or ctas_per_row 0.
FastPlan one_wave_plan(FastPlan plan, int device, int sms, int64_t batch, int64_t positions, int64_t gs,
                       long forced_cpr, long forced_target) {
  const int64_t slices = plan.slices, rows = plan.rows;
  // Positions per CTA: a whole number of lanes, at most 16 vectors per thread. About one CTA per
  // SM in all, or two where one would hold more than 8 vectors per thread (measured on an H100:
  // docs/perf-notes.md, "Fast group norm").
  int64_t cpr = 0, chunk = 0;
  for (const long target : {forced_target > 0 ? forced_target : long{sms}, 2L * sms}) {
    cpr = forced_cpr > 0 ? forced_cpr : std::max<int64_t>(1, target / (batch * slices));
    chunk = (positions + cpr - 1) / cpr;
    chunk = (chunk + rows - 1) / rows * rows;
    if (chunk > int64_t{16} * rows) {
      if (forced_cpr > 0) return {};
      chunk = int64_t{16} * rows;
    }
    cpr = (positions + chunk - 1) / chunk;
    if (chunk <= int64_t{8} * rows || forced_cpr > 0 || forced_target > 0) break;
  }
  const int vectors = static_cast<int>(chunk / rows);
  const int max_vectors = vectors <= 4 ? 4 : vectors <= 8 ? 8 : 16;
  const int per_sm = plan_blocks_per_sm(max_vectors, false, device, plan.threads, plan.smem);
  const int64_t ctas = batch * slices * cpr;
  if (per_sm < 1 || ctas > int64_t{per_sm} * sms || ctas * gs > kPartialEntries || cpr > 65535) return {};
  plan.ctas_per_row = static_cast<int>(cpr);
  plan.chunk = static_cast<int>(chunk);
  plan.vectors = vectors;
  plan.max_vectors = max_vectors;
  plan.waves_z = static_cast<int>(batch);
  return plan;
}

// Batch rows in waves (grid z < B): CTAs per (row, slice) from the register budget (8 vectors a
// thread with the prefetch, SDSERVE_CUDA_GN_FAST_PREFETCH=1 the default, else 16), then as many
// rows a wave as the co-resident grid holds, balanced over the waves (SDSERVE_CUDA_GN_FAST_Z=n forces n).
FastPlan waves_plan(FastPlan plan, int device, int sms, int64_t batch, int64_t positions, int64_t gs, long forced_cpr,
                    long forced_target, long forced_z) {
  const int64_t slices = plan.slices, rows = plan.rows;
  const bool prefetch = env_long("SDSERVE_CUDA_GN_FAST_PREFETCH", 1) != 0;
  const int64_t most = (prefetch ? 8 : 16) * rows;  // positions a CTA at most
  int64_t cpr = forced_cpr > 0 ? forced_cpr : (positions + most - 1) / most;
  int64_t chunk = (positions + cpr - 1) / cpr;
  chunk = (chunk + rows - 1) / rows * rows;
  if (chunk > most) return {};
  cpr = (positions + chunk - 1) / chunk;
  const int vectors = static_cast<int>(chunk / rows);
  const int max_vectors = vectors <= 4 ? 4 : vectors <= 8 ? 8 : 16;
  const int per_sm = plan_blocks_per_sm(max_vectors, prefetch, device, plan.threads, plan.smem);
  int64_t capacity = int64_t{per_sm} * sms;
  if (forced_target > 0) capacity = std::min<int64_t>(capacity, forced_target);
  int64_t z = capacity / (slices * cpr);
  if (forced_z > 0) z = std::min<int64_t>(z, forced_z);
  if (per_sm < 1 || z < 1 || batch * slices * cpr * gs > kPartialEntries || cpr > 65535) return {};
  z = std::min(z, batch);
  const int64_t waves = (batch + z - 1) / z;
  z = (batch + waves - 1) / waves;
  plan.ctas_per_row = static_cast<int>(cpr);
  plan.chunk = static_cast<int>(chunk);
  plan.vectors = vectors;
  plan.max_vectors = max_vectors;
  plan.waves_z = static_cast<int>(z);
  plan.prefetch = prefetch;
  return plan;
}


// Batch rows in waves with x streamed twice (no register limit): Z rows a wave whose slab fits
// SDSERVE_CUDA_GN_STREAM_MB (default 24: the apply's second read then mostly hits L2), CTAs per
// (row, slice) filling the co-resident grid (SDSERVE_CUDA_GN_STREAM_PER_SM caps CTAs per SM).
FastPlan stream_plan(FastPlan plan, int device, int sms, int64_t batch, int64_t positions, int64_t channels, int64_t gs,
                     long forced_cpr, long forced_target, long forced_z) {
  const int64_t slices = plan.slices, rows = plan.rows;
  const int64_t row_bytes = positions * channels * 2;
  const int64_t budget = int64_t{env_long("SDSERVE_CUDA_GN_STREAM_MB", 24)} << 20;
  int64_t z = forced_z > 0 ? forced_z : std::max<int64_t>(1, budget / row_bytes);
  z = std::min(z, batch);
  const int64_t waves = (batch + z - 1) / z;
  z = (batch + waves - 1) / waves;
  int per_sm = plan_blocks_per_sm(0, false, device, plan.threads, plan.smem);
  if (const long cap = env_long("SDSERVE_CUDA_GN_STREAM_PER_SM", 0); cap > 0) per_sm = std::min<int>(per_sm, static_cast<int>(cap));
  int64_t capacity = int64_t{per_sm} * sms;
  if (forced_target > 0) capacity = std::min<int64_t>(capacity, forced_target);
  int64_t cpr = forced_cpr > 0 ? forced_cpr : std::max<int64_t>(1, capacity / (slices * z));
  int64_t chunk = (positions + cpr - 1) / cpr;
  chunk = (chunk + rows - 1) / rows * rows;
  cpr = (positions + chunk - 1) / chunk;
  if (per_sm < 1 || slices * z * cpr > int64_t{per_sm} * sms || batch * slices * cpr * gs > kPartialEntries ||
      cpr > 65535)
    return {};
  plan.ctas_per_row = static_cast<int>(cpr);
  plan.chunk = static_cast<int>(chunk);
  plan.vectors = static_cast<int>(chunk / rows);
  plan.max_vectors = 0;
  plan.waves_z = static_cast<int>(z);
  return plan;
}

// Whether a plan in waves (grid z < B) is the default: not in registers (slower than the previous
// default at 8 of the 10 32-row UNet shapes on an H100, tied at 2: the per-wave barrier is not hidden);
// streamed, yes (with evict-first stores faster than the previous default at all 10 32-row UNet
// shapes, 7-25%: docs/perf-notes.md, "Norms at batch 16").
// Rows larger than L2 (the VAE decoder's 512x512 levels: 67 / 134 MB an image) stream their second
// read from HBM as well, and then the two-kernel path (statistics, then apply: each at ~2.7 TB/s)
// is faster: 4 x 512x512x128 294 vs 397 us, 4 x 512x512x256 565 vs 619, tied at 4 x 256x256x512 (67
// MB rows), streamed faster at 33 MB rows (docs/perf-notes.md, "Session 16").
constexpr int64_t kStreamRowMaxBytes = int64_t{48} << 20;

bool waves_default(int64_t batch, int64_t positions, int64_t channels, const FastPlan& plan) {
  (void)batch;
  if (positions * channels * 2 > kStreamRowMaxBytes) return false;
  return plan.max_vectors == 0;
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
  const long forced_z = env_long("SDSERVE_CUDA_GN_FAST_Z", 0);
  plan.threads = threads;
  plan.rows = rows;
  plan.slice = static_cast<int>(slice);
  plan.slices = static_cast<int>(slices);
  plan.smem = smem;
  const char* waves = std::getenv("SDSERVE_CUDA_GN_FAST_WAVES");
  const std::string waves_mode = waves && *waves ? waves : "stream";
  if (forced_z <= 0 || forced_z >= batch) {
    const FastPlan one = one_wave_plan(plan, device, sms, batch, positions, gs, forced_cpr, forced_target);
    if (one.ctas_per_row > 0 || forced_z >= batch || waves_mode == "0") return one;
  }
  if (waves_mode == "regs") return waves_plan(plan, device, sms, batch, positions, gs, forced_cpr, forced_target, forced_z);
  return stream_plan(plan, device, sms, batch, positions, channels, gs, forced_cpr, forced_target, forced_z);
}

bool group_norm_fast_default(int device, int64_t batch, int64_t positions, int64_t channels, const FastPlan& plan) {
  // Faster than the on-chip and two-kernel paths wherever it applied on the H100 (batch-2 rows at
  // every UNet level, up to 2 x 64x64x960 = 15.7 MB; 32 x 8x8x1280): on up to 16 MiB of input.
  (void)device;
  if (plan.ctas_per_row == 0) return false;
  if (plan.waves_z < batch) return waves_default(batch, positions, channels, plan);
  return batch * positions * channels * 2 <= (int64_t{16} << 20);
}

bool group_norm_fast(CudaBackend& be, const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& y,
                     int groups, float eps, bool silu, const void* add, int64_t add_ld, const Tensor* x2) {
  const Mode mode = fast_mode();
  if (mode == Mode::kOff || (mode == Mode::kAuto && onchip_path_requested())) return false;
  const auto refuse = [&](const std::string& why) {
    if (mode == Mode::kRequire)
      throw Error(Internal("group_norm: the fast kernel does not apply to " + x.describe() +
                           (x2 ? " ++ " + x2->describe() : std::string()) + ": " + why));
    return false;
  };
  const auto aligned16 = [](const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; };
  if (!aligned16(gamma.raw()) || !aligned16(beta.raw()) || !aligned16(x.raw()) || !aligned16(y.raw()) ||
      (x2 && !aligned16(x2->raw())) || (add && (!aligned16(add) || add_ld % 8 != 0)))
    return refuse("unaligned operands");
  const int device = be.device().index;
  const int64_t batch = x.dim(0), c1 = x.dim(-1), channels = c1 + (x2 ? x2->dim(-1) : 0);
  const int64_t positions = x.numel() / (batch * c1);
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
  args.x2 = x2 ? x2->raw() : nullptr;
  args.c1 = static_cast<int>(c1);
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
  args.batch = static_cast<int>(batch);
  // Streamed plans store y evict-first (st.global.cs: 4-17% faster at every 32-row UNet shape on
  // an H100, the second read of x then stays in L2); SDSERVE_CUDA_GN_STREAM_STORE=wb plain stores.
  const char* stores = std::getenv("SDSERVE_CUDA_GN_STREAM_STORE");
  args.stream_stores = stores && std::strcmp(stores, "wb") == 0 ? 0 : 1;
  args.eps = eps;

  const void* kernel = nullptr;
  dispatch_half(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const auto pick = [&](auto silu_tag) {
      constexpr bool kS = decltype(silu_tag)::value;
      switch (plan.max_vectors) {
        case 4: kernel = plan.prefetch ? kernel_ptr<T, kS, 4, true>() : kernel_ptr<T, kS, 4>(); break;
        case 8: kernel = plan.prefetch ? kernel_ptr<T, kS, 8, true>() : kernel_ptr<T, kS, 8>(); break;
        case 0: kernel = kernel_ptr<T, kS, 0>(); break;
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
  const unsigned grid_z = static_cast<unsigned>(plan.waves_z);
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
    cudaLaunchAttribute attr[2];
    attr[0].id = cudaLaunchAttributeCooperative;
    attr[0].val.cooperative = 1;
    cfg.attrs = attr;
    // SDSERVE_CUDA_GN_FAST_COOP=0 (measurement only: the grid is co-resident in practice, not
    // guaranteed): a plain launch, to see what the cooperative attribute costs.
    const char* coop = std::getenv("SDSERVE_CUDA_GN_FAST_COOP");
    cfg.numAttrs = coop && coop[0] == '0' ? 0 : 1;
    void* params[] = {&args};
    // PDL (pdl.cuh; the kernel's first statement is pdl_wait(), before its grid barrier): retried
    // without it if the device refuses the combination with the cooperative attribute.
    static std::atomic<bool> pdl_refused{false};
    if (pdl_enabled() && !pdl_refused.load()) {
      attr[cfg.numAttrs].id = cudaLaunchAttributeProgrammaticStreamSerialization;
      attr[cfg.numAttrs].val.programmaticStreamSerializationAllowed = 1;
      ++cfg.numAttrs;
      ok = cudaLaunchKernelExC(&cfg, kernel, params) == cudaSuccess;
      if (!ok) {
        (void)cudaGetLastError();
        --cfg.numAttrs;
        pdl_refused.store(true);
        std::fprintf(stderr, "gn_fast: the device refused PDL with the cooperative launch; launching without\n");
      }
    }
    if (!ok || !pdl_enabled() || pdl_refused.load()) ok = cudaLaunchKernelExC(&cfg, kernel, params) == cudaSuccess;
    if (!ok) (void)cudaGetLastError();  // a launch-configuration error is not sticky: the other paths run
  }
  if (std::getenv("SDSERVE_CUDA_GN_FAST_VERBOSE")) {
    static std::mutex print_mu;
    std::lock_guard<std::mutex> lock(print_mu);
    const std::string input = x.describe() + (x2 ? " ++ " + x2->describe() : std::string());
    std::fprintf(stderr, "gn_fast: %s g%d: grid %ux%ux%u%s, slice %d, %d threads, %d rows, chunk %d, %d/%d vectors, %zu B smem, %d per SM: %s\n",
                 input.c_str(), groups, grid_x, grid_y, grid_z, plan.max_vectors == 0 ? " stream" : plan.prefetch ? " prefetch" : "", plan.slice,
                 plan.threads, plan.rows, plan.chunk, plan.vectors, plan.max_vectors, plan.smem, per_sm,
                 ok ? "launched" : "refused");
  }
  {
    std::lock_guard<std::mutex> lock(known.mu);
    auto it = known.known.find(key);
    if (it == known.known.end()) known.known.emplace(key, ok);
  }
  return ok ? true : refuse("the device refused the cooperative launch");
}

}  // namespace sd::cuda
