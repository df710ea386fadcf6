// Internals shared by the CPU backend's op files: the context every op gets (allocation,
// thread pool), the chunking helper, the SIMD kernel attribute and the op entry points (one
// file per op family: cpu_gemm_conv.cc, cpu_norm.cc, cpu_attention.cc, cpu_elementwise.cc, ...).
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/cpu_thread_pool.h"
#include "tensor/tensor.h"

// Hot scalar loops are compiled three times (AVX-512, AVX2+FMA, baseline) and picked at
// load time, so the binary stays portable while the loops vectorise on this machine.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SD_CPU_KERNEL __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define SD_CPU_KERNEL
#endif

namespace sd::cpu {

// What an op needs from the backend: output allocation (tracked) and the thread pool.
class CpuContext {
 public:
  explicit CpuContext(int threads) : pool_(threads) {}
  virtual ~CpuContext() = default;
  virtual Tensor alloc(const Shape& shape, DType dtype) = 0;
  Tensor alloc_f32(const Shape& shape) { return alloc(shape, DType::kF32); }
  int threads() const { return pool_.threads(); }
  // Runs fn(item, worker) for items [0, n) on the pool (see ThreadPool::run).
  void run(int64_t n, const std::function<void(int64_t item, int worker)>& fn) const { pool_.run(n, fn); }

 private:
  mutable ThreadPool pool_;
};

// Splits [0, n) into at most threads() contiguous chunks of at least `min_chunk` items and
// runs fn(begin, end) on each in parallel (serially when there is only one chunk).
template <typename Fn>
void parallel_chunks(const CpuContext& ctx, int64_t n, int64_t min_chunk, Fn&& fn) {
  if (n <= 0) return;
  const int64_t max_chunks = std::max<int64_t>(1, n / std::max<int64_t>(1, min_chunk));
  const int chunks = static_cast<int>(std::min<int64_t>(ctx.threads(), max_chunks));
  if (chunks <= 1) {
    fn(int64_t{0}, n);
    return;
  }
  ctx.run(chunks, [&](int64_t t, int) { fn(n * t / chunks, n * (t + 1) / chunks); });
}

// Asserts that `t` is an f32 tensor on the CPU; `what` names the op argument.
void check_f32(const Tensor& t, const char* op, const char* what);

// ---- dense (cpu_gemm_conv.cc) ----
// OpenBLAS runs single-threaded (its own thread pool would spin against ours on few cores);
// the ops split each GEMM into row (or column) blocks over the backend's thread pool.
// C[M,N] (ldc) = alpha * A[M,K] (lda) · B^T where B is [N,K] (ldb) + beta * C, row-major, on
// the calling thread.
void gemm_nt_serial(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda, const float* b,
                    int64_t ldb, float beta, float* c, int64_t ldc);
Tensor linear(CpuContext& ctx, const Tensor& x, const Tensor& w, const Tensor& bias);
Tensor conv2d(CpuContext& ctx, const Tensor& x, const Tensor& w, const Tensor& bias, int stride, int padding);

// ---- normalisation (cpu_norm.cc) ----
Tensor group_norm(CpuContext& ctx, const Tensor& x, const Tensor& gamma, const Tensor& beta, int groups, float eps,
                  bool silu);
Tensor layer_norm(CpuContext& ctx, const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps);
Tensor softmax(CpuContext& ctx, const Tensor& x);
// Unnormalised in-place softmax of `rows` rows of `n` floats (row stride `ld`) on the
// calling thread: x <- exp(x - rowmax), row_sums[r] <- sum of row r (divide later). With
// `causal`, row r only keeps entries j <= first_row + r (the rest become 0).
void exp_rows_inplace(float* x, int64_t rows, int64_t n, int64_t ld, int64_t first_row, bool causal,
                      float* row_sums);

// ---- attention (cpu_attention.cc) ----
Tensor attention(CpuContext& ctx, const Tensor& q, const Tensor& k, const Tensor& v, int heads, bool causal);
// Backend::attention_cols: q/k/v read in place from column windows of q_src / kv_src.
Tensor attention_cols(CpuContext& ctx, const Tensor& q_src, int64_t q_col, const Tensor& kv_src, int64_t k_col,
                      int64_t v_col, int64_t inner, int heads, bool causal);

// ---- elementwise (cpu_elementwise.cc) ----
Tensor activation(CpuContext& ctx, const Tensor& x, Activation act);
Tensor geglu(CpuContext& ctx, const Tensor& x);
Tensor add(CpuContext& ctx, const Tensor& a, const Tensor& b);
Tensor mul(CpuContext& ctx, const Tensor& a, const Tensor& b);
Tensor scale(CpuContext& ctx, const Tensor& x, float s);
Tensor add_per_channel(CpuContext& ctx, const Tensor& x, const Tensor& v);
Tensor lincomb(CpuContext& ctx, const std::vector<Tensor>& inputs, const Tensor& coeffs);

// ---- layout (cpu_layout.cc) ----
Tensor upsample_nearest2x(CpuContext& ctx, const Tensor& x);
Tensor interleave_phases2x(CpuContext& ctx, const Tensor& y4, const Tensor& bias);
Tensor concat_channels(CpuContext& ctx, const Tensor& a, const Tensor& b);
Tensor embedding(CpuContext& ctx, const Tensor& ids, const Tensor& table);
Tensor concat_rows(CpuContext& ctx, const std::vector<Tensor>& parts);
Tensor pad_hw(CpuContext& ctx, const Tensor& x, int top, int bottom, int left, int right);
Tensor crop_hw(CpuContext& ctx, const Tensor& x, int h0, int h, int w0, int w);

}  // namespace sd::cpu
