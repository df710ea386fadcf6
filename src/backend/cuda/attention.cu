// Fused attention, WMMA version (64-key tiles through shared memory, online softmax, head dims up
// to 256, causal mask), and the attention() / attention_cols() ops, which time the kernels that
// apply per shape (wgmma, one-tile short keys, cuDNN's SDPA, mma2) and keep the fastest.
#include <mma.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <string>
#include <tuple>

#include "backend/cuda/attention.h"
#include "backend/cuda/cuda_backend_impl.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_types.cuh"
#include "backend/cuda/tuning_l2.h"

namespace sd::cuda {

namespace {

using namespace nvcuda;

constexpr int kBM = 64;        // query rows per block (16 per warp)
constexpr int kBN = 64;        // keys per tile
constexpr int kThreads = 128;  // 4 warps
constexpr int kLdS = kBN + 4;  // f32 score row stride (P is written in place as halves)

template <int DP>
struct AttnSmem {
  static constexpr int kLdH = DP + 8;  // K/V row stride (halves); 16-byte rows, no bank aliasing
  static constexpr int kLdO = DP + 4;  // f32 output row stride
  static constexpr size_t kKV = size_t{kBN} * kLdH * 2;      // bytes of one K or V tile
  static constexpr size_t kS = size_t{kBM} * kLdS * 4;       // scores / probabilities
  static constexpr size_t kO = size_t{kBM} * kLdO * 4;       // output accumulator
  static constexpr size_t kBytes = 2 * kKV + kS + kO + 2 * kBM * 4;
};

// rows [0, 64) x cols [0, DP) of a tile from global rows `src` (row stride `stride`),
// zero-filled past `valid_rows` and past the head dim `d`. dst row stride kLdH.
template <typename T, int DP>
__device__ void load_tile(T* __restrict__ dst, const T* __restrict__ src, int64_t stride, int valid_rows, int d,
                          bool vec) {
  constexpr int kLdH = AttnSmem<DP>::kLdH;
  if (vec) {  // d % 8 == 0 and 16-byte aligned rows
    constexpr int kChunks = DP / 8;
    for (int idx = threadIdx.x; idx < kBN * kChunks; idx += kThreads) {
      const int r = idx / kChunks, c = (idx % kChunks) * 8;
      uint4 val = make_uint4(0, 0, 0, 0);
      if (r < valid_rows && c < d) val = *reinterpret_cast<const uint4*>(src + r * stride + c);
      *reinterpret_cast<uint4*>(dst + r * kLdH + c) = val;
    }
  } else {
    for (int idx = threadIdx.x; idx < kBN * DP; idx += kThreads) {
      const int r = idx / DP, c = idx % DP;
      dst[r * kLdH + c] = (r < valid_rows && c < d) ? src[r * stride + c] : from_f32<T>(0.f);
    }
  }
}

// q [B, Lq, H*D], k/v [B, Lk, H*D] -> o [B, Lq, H*D]. Grid (ceil(Lq/64), H, B).
template <typename T, int DP>
__global__ void __launch_bounds__(kThreads) flash_attention_kernel(const T* __restrict__ q, const T* __restrict__ k,
                                                                   const T* __restrict__ v, T* __restrict__ o,
                                                                   int lq, int lk, int heads, int d,
                                                                   float scale_log2, bool causal, bool vec) {
  using S = AttnSmem<DP>;
  constexpr int kLdH = S::kLdH, kLdO = S::kLdO, kDF = DP / 16;
  extern __shared__ __align__(128) unsigned char smem[];
  T* ks = reinterpret_cast<T*>(smem);
  T* vs = reinterpret_cast<T*>(smem + S::kKV);
  float* ss = reinterpret_cast<float*>(smem + 2 * S::kKV);
  T* ps = reinterpret_cast<T*>(ss);  // probabilities overwrite their scores, row stride 2*kLdS halves
  float* os = reinterpret_cast<float*>(smem + 2 * S::kKV + S::kS);
  float* row_m = os + kBM * kLdO;
  float* row_l = row_m + kBM;

  const int b = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * kBM;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t row_stride = int64_t{heads} * d;
  const T* qb = q + (int64_t{b} * lq + q0) * row_stride + int64_t{h} * d;
  const T* kb = k + int64_t{b} * lk * row_stride + int64_t{h} * d;
  const T* vb = v + int64_t{b} * lk * row_stride + int64_t{h} * d;

  // Q tile -> (staged through the K buffer) -> this warp's A fragments, kept in registers.
  load_tile<T, DP>(ks, qb, row_stride, min(kBM, lq - q0), d, vec);
  for (int i = threadIdx.x; i < kBM * kLdO; i += kThreads) os[i] = 0.f;
  if (threadIdx.x < kBM) {
    row_m[threadIdx.x] = -INFINITY;
    row_l[threadIdx.x] = 0.f;
  }
  __syncthreads();
  wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> qf[kDF];
#pragma unroll
  for (int f = 0; f < kDF; ++f) wmma::load_matrix_sync(qf[f], ks + warp * 16 * kLdH + f * 16, kLdH);

  const int kv_end = causal ? min(lk, q0 + kBM) : lk;
  const int r = warp * 16 + lane / 2;  // the row this lane pair runs the softmax for
  const int col_half = lane % 2;        // which 32 of the tile's 64 columns
  const int qi = q0 + r;
  float* srow = ss + r * kLdS;
  T* prow = ps + r * 2 * kLdS;
  float* orow = os + r * kLdO;

  for (int kv0 = 0; kv0 < kv_end; kv0 += kBN) {
    __syncthreads();  // everyone is done with the previous K/V tile (and with Q staging)
    load_tile<T, DP>(ks, kb + int64_t{kv0} * row_stride, row_stride, min(kBN, lk - kv0), d, vec);
    load_tile<T, DP>(vs, vb + int64_t{kv0} * row_stride, row_stride, min(kBN, lk - kv0), d, vec);
    __syncthreads();

    // S[16 rows of this warp, 64] = Q K^T
#pragma unroll
    for (int nf = 0; nf < kBN / 16; ++nf) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::fill_fragment(acc, 0.f);
#pragma unroll
      for (int f = 0; f < kDF; ++f) {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> kf;
        wmma::load_matrix_sync(kf, ks + nf * 16 * kLdH + f * 16, kLdH);
        wmma::mma_sync(acc, qf[f], kf, acc);
      }
      wmma::store_matrix_sync(ss + warp * 16 * kLdS + nf * 16, acc, kLdS, wmma::mem_row_major);
    }
    __syncwarp();

    // Online softmax for row r, columns [half*32, half*32+32), in registers.
    float sv[32];
    float mx = -INFINITY;
#pragma unroll
    for (int c = 0; c < 32; ++c) {
      const int j = kv0 + col_half * 32 + c;
      const bool ok = j < lk && (!causal || j <= qi);
      sv[c] = ok ? srow[col_half * 32 + c] * scale_log2 : -INFINITY;
      mx = fmaxf(mx, sv[c]);
    }
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    const float m_old = row_m[r];
    const float m_new = fmaxf(m_old, mx);
    const float alpha = m_old == -INFINITY ? 0.f : exp2f(m_old - m_new);
    __syncwarp();  // all lanes hold their scores before probabilities overwrite them
    float sum = 0.f;
#pragma unroll
    for (int c = 0; c < 32; ++c) {
      const T p = from_f32<T>(m_new == -INFINITY ? 0.f : exp2f(sv[c] - m_new));
      prow[col_half * 32 + c] = p;
      sum += to_f32(p);
    }
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    for (int c = col_half; c < DP; c += 2) orow[c] *= alpha;
    __syncwarp();
    if (col_half == 0) {
      row_m[r] = m_new;
      row_l[r] = row_l[r] * alpha + sum;
    }

    // O[16 rows, DP] += P V
#pragma unroll
    for (int f = 0; f < kDF; ++f) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::load_matrix_sync(acc, os + warp * 16 * kLdO + f * 16, kLdO, wmma::mem_row_major);
#pragma unroll
      for (int kk = 0; kk < kBN / 16; ++kk) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> pf;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> vf;
        wmma::load_matrix_sync(pf, ps + warp * 16 * 2 * kLdS + kk * 16, 2 * kLdS);
        wmma::load_matrix_sync(vf, vs + kk * 16 * kLdH + f * 16, kLdH);
        wmma::mma_sync(acc, pf, vf, acc);
      }
      wmma::store_matrix_sync(os + warp * 16 * kLdO + f * 16, acc, kLdO, wmma::mem_row_major);
    }
    __syncwarp();
  }

  // This warp's 16 rows: O / l.
  for (int idx = lane; idx < 16 * d; idx += 32) {
    const int rr = warp * 16 + idx / d, c = idx % d;
    if (q0 + rr < lq) {
      const float l = row_l[rr];
      o[(int64_t{b} * lq + q0 + rr) * row_stride + int64_t{h} * d + c] =
          from_f32<T>(l > 0.f ? os[rr * kLdO + c] / l : 0.f);
    }
  }
}

template <typename T, int DP>
void launch_attention(const T* q, const T* k, const T* v, T* o, int batch, int lq, int lk, int heads, int d,
                      bool causal, bool vec, cudaStream_t stream) {
  constexpr size_t bytes = AttnSmem<DP>::kBytes;
  // Cheap host-side call; made every time so every device (and thread) is covered.
  SD_CUDA_CHECK(cudaFuncSetAttribute(flash_attention_kernel<T, DP>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     static_cast<int>(bytes)));
  const float scale_log2 = 1.4426950408889634f / std::sqrt(static_cast<float>(d));
  const dim3 grid(static_cast<unsigned>((lq + kBM - 1) / kBM), static_cast<unsigned>(heads),
                  static_cast<unsigned>(batch));
  flash_attention_kernel<T, DP><<<grid, kThreads, bytes, stream>>>(q, k, v, o, lq, lk, heads, d, scale_log2, causal,
                                                                   vec);
  SD_CUDA_LAUNCH_CHECK();
}

template <typename T>
void dispatch_head_dim(const AttentionArgs& a, cudaStream_t stream) {
  const T* q = static_cast<const T*>(a.q);
  const T* k = static_cast<const T*>(a.k);
  const T* v = static_cast<const T*>(a.v);
  T* o = static_cast<T*>(a.o);
  const auto go = [&](auto dp) {
    launch_attention<T, decltype(dp)::value>(q, k, v, o, a.batch, a.lq, a.lk, a.heads, a.d, a.causal, a.vec, stream);
  };
  const int d = a.d;
  if (d <= 16) go(std::integral_constant<int, 16>{});
  else if (d <= 32) go(std::integral_constant<int, 32>{});
  else if (d <= 48) go(std::integral_constant<int, 48>{});
  else if (d <= 64) go(std::integral_constant<int, 64>{});
  else if (d <= 80) go(std::integral_constant<int, 80>{});
  else if (d <= 96) go(std::integral_constant<int, 96>{});
  else if (d <= 128) go(std::integral_constant<int, 128>{});
  else if (d <= 160) go(std::integral_constant<int, 160>{});
  else go(std::integral_constant<int, 256>{});
}

}  // namespace

void launch_attention_wmma(DType dtype, const AttentionArgs& a, cudaStream_t stream) {
  SD_ASSERT(a.contiguous(), "WMMA attention: strided q/k/v");
  dispatch_half(dtype, [&](auto tag) { dispatch_head_dim<decltype(tag)>(a, stream); });
}

namespace {

// SDSERVE_CUDA_ATTENTION: "mma1" the first mma.sync kernel, "mma2" the pipelined one, "cudnn"
// cuDNN's SDPA wherever it has a plan (non-causal), "wgmma" the Hopper kernel
// (attention_wgmma*.cu) wherever it applies, "auto" (default) the wgmma kernel for d 40 over
// >= 4096 keys at batch x heads == 16 (want_wgmma), cuDNN for other non-causal attention with
// >= 64 keys and d <= 128, mma2 for the rest (causal CLIP, d 160); "wmma" is read by the
// backend (attention_wmma_).
// Read on every call (a getenv), so tests and benchmarks can switch paths in one process.
enum class AttentionPath { kAuto, kMma1, kMma2, kCudnn, kWgmma, kShort, kRows, kWgmma3 };

AttentionPath attention_path() {
  const char* env = std::getenv("SDSERVE_CUDA_ATTENTION");
  if (env && std::strcmp(env, "short") == 0) return AttentionPath::kShort;
  if (env && std::strcmp(env, "rows") == 0) return AttentionPath::kRows;
  if (env && std::strcmp(env, "mma1") == 0) return AttentionPath::kMma1;
  if (env && std::strcmp(env, "mma2") == 0) return AttentionPath::kMma2;
  if (env && std::strcmp(env, "cudnn") == 0) return AttentionPath::kCudnn;
  if (env && std::strcmp(env, "wgmma") == 0) return AttentionPath::kWgmma;
  if (env && std::strcmp(env, "wgmma3") == 0) return AttentionPath::kWgmma3;
  return AttentionPath::kAuto;
}

// "auto" sends non-causal attention with at least this many keys (and d <= 128) to cuDNN:
// SDSERVE_CUDNN_SDPA_MIN_KEYS, default 64. On an H100 (session 4, gpu_ops_bench) cuDNN also won
// the 77-key cross-attention since the packed K/V layout: 13.9 vs 15.5 us (mma2) at b2 lq 4096
// d40, 139 vs 182 at b32; d80: 8.3 vs 9.4 / 51 vs 75. (The old threshold was 512.)
int64_t cudnn_min_keys() {
  static const int64_t v = [] {
    const char* env = std::getenv("SDSERVE_CUDNN_SDPA_MIN_KEYS");
    const long n = env ? std::strtol(env, nullptr, 10) : 0;
    return n >= 1 ? int64_t{n} : int64_t{64};
  }();
  return v;
}

// "auto" sends d 40 attention over >= 4096 keys with batch x heads == 16 (the SD 1.5 64x64
// self-attention at 2 rows, 8 heads) to the Hopper wgmma kernel where it runs: H100, session 4
// (helper H8, gpu_ops_bench): 142-145 vs cuDNN 150-151 us at b2 h8 l4096; at b32 2260 vs 2234,
// so larger batches stay on cuDNN. Session 5 (helper H11, softmax defaults of
// attention_wgmma_pingpong.cu): b1 77 vs 79, b2 146-149 vs 145-151, b4 283-291 vs 289, b8 558 vs
// 569, b32 2225-2274 vs 2226-2268: within 1-3% (ties at b2 / b4 / b32), and the batch-1 step did not
// move with b1 added (5.54-5.62 ms either way), so the rule stays. SDSERVE_CUDA_WGMMA_AUTO=0
// switches this off; =N (>= 2) takes batch x heads <= N instead of == 16 (for measuring).
bool want_wgmma(AttentionPath path, const AttentionArgs& a) {
  if (path == AttentionPath::kWgmma) return true;
  static const long max_bh = [] {  // 0: off, -1: the default rule
    const char* env = std::getenv("SDSERVE_CUDA_WGMMA_AUTO");
    if (env && std::strcmp(env, "0") == 0) return 0L;
    const long n = env ? std::strtol(env, nullptr, 10) : 0;
    return n >= 2 ? n : -1L;
  }();
  const int64_t bh = int64_t{a.batch} * a.heads;
  return max_bh != 0 && path == AttentionPath::kAuto && !a.causal && a.d == 40 && a.lk >= 4096 &&
         (max_bh < 0 ? bh == 16 : bh <= max_bh);
}

// Untimed "auto" (SDSERVE_CUDA_ATTENTION_TUNE=0, or a capture meeting a new shape) sends head dims
// over 128 with at most kShortKeysMax keys (the 16x16-level cross-attention) to the one-tile
// kernel: H100, session 10, b2 l256 lk77 d160 6.9 us vs mma2 8.2 (cuDNN 8.6); b32 41.9 vs 48.0.
bool want_short_keys(AttentionPath path, const AttentionArgs& a) {
  if (path == AttentionPath::kShort) return true;
  return path == AttentionPath::kAuto && !a.causal && a.lk <= kShortKeysMax && a.d > 128;
}

bool want_cudnn(AttentionPath path, const AttentionArgs& a) {
  if (path == AttentionPath::kCudnn) return true;
  return path == AttentionPath::kAuto && !a.causal && a.lk >= cudnn_min_keys() && a.d <= 128;
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// src[..., col : col + width] of src [B, L, W] as a contiguous [B, L, width] tensor (one 2-D
// device copy; capturable).
Tensor copy_columns(CudaBackend& be, const Tensor& src, int64_t col, int64_t width, cudaStream_t stream) {
  Tensor out = be.empty({src.dim(0), src.dim(1), width}, src.dtype());
  const size_t es = dtype_size(src.dtype());
  const size_t rows = static_cast<size_t>(src.dim(0) * src.dim(1));
  if (rows == 0) return out;
  SD_CUDA_CHECK(cudaMemcpy2DAsync(out.raw(), static_cast<size_t>(width) * es,
                                  static_cast<const char*>(src.raw()) + static_cast<size_t>(col) * es,
                                  static_cast<size_t>(src.dim(2)) * es, static_cast<size_t>(width) * es, rows,
                                  cudaMemcpyDeviceToDevice, stream));
  return out;
}

}  // namespace

// The timed choice per attention shape ("auto"): on the first eager call of a shape every kernel that
// applies (wgmma with 4 consumers and, at d 40, with 3 — 192 query rows a block, which fill the
// last wave better at some shapes —, the one-tile short-keys kernel, cuDNN's SDPA, mma2) runs 3 x 5 times back to back
// and the fastest (best of the three means) is kept; graph captures replay it. Inputs are
// activations the previous kernel just wrote (L2-warm), so they are timed warm.
// SDSERVE_CUDA_ATTENTION_TUNE=0: the fixed rules below instead; SDSERVE_CUDA_ATTENTION_LOG=1 prints
// every candidate.
struct AttentionKey {
  DType dtype;
  int batch, lq, lk, heads, d;
  bool causal, vec;
  int64_t q_stride, kv_stride;
  auto tie() const { return std::tie(dtype, batch, lq, lk, heads, d, causal, vec, q_stride, kv_stride); }
  bool operator<(const AttentionKey& o) const { return tie() < o.tie(); }
};

class AttentionChoices {
 public:
  std::map<AttentionKey, AttentionPath> chosen;
};

namespace {
bool attention_tuning() {
  const char* env = std::getenv("SDSERVE_CUDA_ATTENTION_TUNE");
  return !(env && env[0] == '0');
}
bool attention_log() {
  const char* env = std::getenv("SDSERVE_CUDA_ATTENTION_LOG");
  return env && env[0] == '1';
}
const char* path_name(AttentionPath p) {
  switch (p) {
    case AttentionPath::kWgmma: return "wgmma";
    case AttentionPath::kWgmma3: return "wgmma3";
    case AttentionPath::kShort: return "short";
    case AttentionPath::kRows: return "rows";
    case AttentionPath::kCudnn: return "cudnn";
    case AttentionPath::kMma2: return "mma2";
    case AttentionPath::kMma1: return "mma1";
    case AttentionPath::kAuto: break;
  }
  return "auto";
}
}  // namespace

bool CudaBackend::run_attention_path(int path_id, DType dtype, const AttentionArgs& args) {
  switch (static_cast<AttentionPath>(path_id)) {
    case AttentionPath::kWgmma: return launch_attention_wgmma(dtype, args, stream_);
    case AttentionPath::kWgmma3: {
      const char* env = std::getenv("SDSERVE_CUDA_WGMMA3");  // =0: not a candidate (measuring)
      return !(env && env[0] == '0') && launch_attention_wgmma(dtype, args, stream_, 3);
    }
    case AttentionPath::kShort: {
      const char* env = std::getenv("SDSERVE_CUDA_SHORT_KEYS");  // =0: not a candidate (measuring)
      return !(env && env[0] == '0') && launch_attention_short_keys(dtype, args, stream_);
    }
    case AttentionPath::kRows: {
      const char* env = std::getenv("SDSERVE_CUDA_ROWS_ATTENTION");  // =0: not a candidate (measuring)
      return !(env && env[0] == '0') && launch_attention_rows(dtype, args, stream_);
    }
    case AttentionPath::kCudnn: {
      Tensor workspace;
      const auto scratch = [&](size_t bytes) {
        workspace = empty({static_cast<int64_t>(bytes)}, DType::kU8);
        return workspace.raw();
      };
      return run_attention_cudnn(device_, dtype, args, stream_, scratch);
    }
    case AttentionPath::kMma2:
      if (!args.vec || args.d > kMmaAttentionMaxHeadDim) return false;
      launch_attention_mma2(dtype, args, stream_);
      return true;
    case AttentionPath::kMma1:
      if (args.d > kMmaAttentionMaxHeadDim) return false;
      launch_attention_mma(dtype, args, stream_);
      return true;
    case AttentionPath::kAuto: break;
  }
  return false;
}

void CudaBackend::run_attention(DType dtype, const AttentionArgs& args) {
  const AttentionPath path = attention_path();
  if (!attention_wmma_ && path == AttentionPath::kAuto && attention_tuning()) {
    if (!attention_choices_) attention_choices_ = std::make_shared<AttentionChoices>();
    const AttentionKey key{dtype, args.batch, args.lq, args.lk, args.heads, args.d, args.causal, args.vec,
                           args.q_stride, args.kv_stride};
    auto it = attention_choices_->chosen.find(key);
    if (it != attention_choices_->chosen.end()) {
      if (run_attention_path(static_cast<int>(it->second), dtype, args)) return;
    } else {
      cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
      SD_CUDA_CHECK(cudaStreamIsCapturing(stream_, &capture));
      if (capture == cudaStreamCaptureStatusNone) {
        cudaEvent_t start = nullptr, stop = nullptr;
        SD_CUDA_CHECK(cudaEventCreate(&start));
        SD_CUDA_CHECK(cudaEventCreate(&stop));
        float best = std::numeric_limits<float>::max();
        AttentionPath best_path = AttentionPath::kAuto;
        for (AttentionPath p : {AttentionPath::kWgmma, AttentionPath::kWgmma3, AttentionPath::kRows,
                                AttentionPath::kShort, AttentionPath::kCudnn, AttentionPath::kMma2}) {
          if (!run_attention_path(static_cast<int>(p), dtype, args)) continue;  // also the warm-up
          float ms = std::numeric_limits<float>::max();
          for (int rep = 0; rep < 3; ++rep) {
            const float total = time_runs_alone(stream_, start, stop, 1, [] {}, [&] {
              for (int i = 0; i < 5; ++i) run_attention_path(static_cast<int>(p), dtype, args);
              return true;
            });
            if (total >= 0.f) ms = std::min(ms, total / 5);
          }
          if (attention_log()) {
            std::fprintf(stderr, "[sdserve] attention b%d lq%d lk%d h%d d%d%s: %s %.4f ms\n", args.batch, args.lq,
                         args.lk, args.heads, args.d, args.causal ? " causal" : "", path_name(p), ms);
          }
          if (ms < best) best = ms, best_path = p;
        }
        cudaEventDestroy(start);
        cudaEventDestroy(stop);
        if (best_path != AttentionPath::kAuto) {
          attention_choices_->chosen.emplace(key, best_path);
          if (run_attention_path(static_cast<int>(best_path), dtype, args)) return;
        }
      }
    }
  }
  if (!attention_wmma_ && want_wgmma(path, args) && launch_attention_wgmma(dtype, args, stream_)) return;
  if (!attention_wmma_ && path == AttentionPath::kWgmma3 && launch_attention_wgmma(dtype, args, stream_, 3)) return;
  if (!attention_wmma_ && path == AttentionPath::kRows && launch_attention_rows(dtype, args, stream_)) return;
  if (!attention_wmma_ && want_short_keys(path, args) && launch_attention_short_keys(dtype, args, stream_)) return;
  if (!attention_wmma_ && want_cudnn(path, args)) {
    Tensor workspace;
    const auto scratch = [&](size_t bytes) {
      workspace = empty({static_cast<int64_t>(bytes)}, DType::kU8);
      return workspace.raw();
    };
    if (run_attention_cudnn(device_, dtype, args, stream_, scratch)) return;
  }
  if (attention_wmma_ || args.d > kMmaAttentionMaxHeadDim) {
    SD_ASSERT(args.contiguous(), "attention: the WMMA kernel needs contiguous q/k/v");
    launch_attention_wmma(dtype, args, stream_);
  } else if (args.vec && path != AttentionPath::kMma1) {
    launch_attention_mma2(dtype, args, stream_);
  } else {
    launch_attention_mma(dtype, args, stream_);
  }
}

// cuDNN's SDPA plans are the only attention path with a one-time cost worth hiding (runtime
// compilation); our kernels are compiled ahead. Skipped where attention is forced elsewhere.
void CudaBackend::prepare_attention(DType dtype, const std::vector<AttentionShape>& shapes) {
  const AttentionPath path = attention_path();
  if (attention_wmma_ || (path != AttentionPath::kAuto && path != AttentionPath::kCudnn)) return;
  std::vector<SdpaShape> sdpa;
  for (const AttentionShape& s : shapes) sdpa.push_back({s.batch, s.lq, s.lk, s.heads, s.d, s.q_stride, s.kv_stride});
  SD_CUDA_CHECK(cudaSetDevice(device_));
  prepare_attention_cudnn(device_, dtype, sdpa);
}

bool CudaBackend::attention_preparing(DType dtype, const std::vector<AttentionShape>& shapes) const {
  std::vector<SdpaShape> sdpa;
  for (const AttentionShape& s : shapes) sdpa.push_back({s.batch, s.lq, s.lk, s.heads, s.d, s.q_stride, s.kv_stride});
  return attention_cudnn_building(device_, dtype, sdpa);
}

Tensor CudaBackend::attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads, bool causal) {
  check_on_device(q, "attention");
  check_on_device(k, "attention");
  check_on_device(v, "attention");
  SD_ASSERT(q.ndim() == 3 && k.ndim() == 3 && v.shape() == k.shape() && q.dim(0) == k.dim(0) &&
                q.dim(2) == k.dim(2) && heads > 0 && q.dim(2) % heads == 0,
            "attention: q " + q.describe() + " k " + k.describe() + " v " + v.describe() + " heads " +
                std::to_string(heads));
  SD_ASSERT(q.dtype() == k.dtype() && q.dtype() == v.dtype(), "attention: mixed dtypes");
  const int64_t batch = q.dim(0), lq = q.dim(1), lk = k.dim(1), d = q.dim(2) / heads;
  SD_ASSERT(d >= 1, "attention: empty heads in " + q.describe());
  SD_ASSERT(batch <= 65535 && heads <= 65535 && lq < (int64_t{1} << 30) && lk < (int64_t{1} << 30),
            "attention: sizes too large: " + q.describe());
  if (d > kWmmaAttentionMaxHeadDim && q.numel() > 0 && lk > 0) return attention_unfused(q, k, v, heads, causal);
  Tensor out = empty(q.shape(), q.dtype());
  if (out.numel() == 0) return out;
  SD_ASSERT(lk > 0, "attention with no keys");
  AttentionArgs args{};
  args.q = q.raw();
  args.k = k.raw();
  args.v = v.raw();
  args.o = out.raw();
  args.batch = static_cast<int>(batch);
  args.lq = static_cast<int>(lq);
  args.lk = static_cast<int>(lk);
  args.heads = heads;
  args.d = static_cast<int>(d);
  args.causal = causal;
  args.q_stride = args.kv_stride = q.dim(2);
  args.vec = d % 8 == 0 && aligned16(q.raw()) && aligned16(k.raw()) && aligned16(v.raw());
  run_attention(q.dtype(), args);
  return out;
}

Tensor CudaBackend::attention_cols(const Tensor& q_src, int64_t q_col, const Tensor& kv_src, int64_t k_col,
                                   int64_t v_col, int64_t inner, int heads, bool causal) {
  check_on_device(q_src, "attention_cols");
  check_on_device(kv_src, "attention_cols");
  SD_ASSERT(q_src.ndim() == 3 && kv_src.ndim() == 3 && q_src.dim(0) == kv_src.dim(0) && inner > 0 && heads > 0 &&
                inner % heads == 0 && q_col >= 0 && k_col >= 0 && v_col >= 0 && q_col + inner <= q_src.dim(2) &&
                k_col + inner <= kv_src.dim(2) && v_col + inner <= kv_src.dim(2),
            "attention_cols: q_src " + q_src.describe() + " col " + std::to_string(q_col) + ", kv_src " +
                kv_src.describe() + " cols " + std::to_string(k_col) + "/" + std::to_string(v_col) + ", inner " +
                std::to_string(inner) + ", heads " + std::to_string(heads));
  SD_ASSERT(q_src.dtype() == kv_src.dtype(), "attention_cols: mixed dtypes");
  const int64_t batch = q_src.dim(0), lq = q_src.dim(1), lk = kv_src.dim(1), d = inner / heads;
  // The WMMA kernel and the unfused path read contiguous q/k/v: copy the windows out.
  if (attention_wmma_ || d > kMmaAttentionMaxHeadDim || lq == 0 || lk == 0) {
    return attention(copy_columns(*this, q_src, q_col, inner, stream_), copy_columns(*this, kv_src, k_col, inner, stream_),
                     copy_columns(*this, kv_src, v_col, inner, stream_), heads, causal);
  }
  SD_ASSERT(batch <= 65535 && heads <= 65535 && lq < (int64_t{1} << 30) && lk < (int64_t{1} << 30),
            "attention_cols: sizes too large: " + q_src.describe());
  Tensor out = empty({batch, lq, inner}, q_src.dtype());  // [B, Lq, inner]
  const size_t es = dtype_size(q_src.dtype());
  const char* qb = static_cast<const char*>(q_src.raw());
  const char* kvb = static_cast<const char*>(kv_src.raw());
  AttentionArgs args{};
  args.q = qb + static_cast<size_t>(q_col) * es;
  args.k = kvb + static_cast<size_t>(k_col) * es;
  args.v = kvb + static_cast<size_t>(v_col) * es;
  args.o = out.raw();
  args.batch = static_cast<int>(batch);
  args.lq = static_cast<int>(lq);
  args.lk = static_cast<int>(lk);
  args.heads = heads;
  args.d = static_cast<int>(d);
  args.causal = causal;
  args.q_stride = q_src.dim(2);
  args.kv_stride = kv_src.dim(2);
  args.vec = d % 8 == 0 && args.q_stride % 8 == 0 && args.kv_stride % 8 == 0 && aligned16(args.q) &&
             aligned16(args.k) && aligned16(args.v);
  run_attention(q_src.dtype(), args);
  return out;
}

}  // namespace sd::cuda
