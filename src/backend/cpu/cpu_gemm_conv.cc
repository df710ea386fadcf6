// Dense ops of the CPU backend: linear and conv2d through OpenBLAS sgemm. Convolution is
// NHWC im2col against OHWI weights viewed as [Cout, kh*kw*Cin], one chunk of output rows per
// thread at a time so the column buffers stay a few MB at any image size; 1x1 stride-1 convs
// skip im2col. OpenBLAS is single-threaded; the threads come from the backend pool.
#include <cblas.h>

#include <climits>
#include <cstring>
#include <memory>

#include "backend/cpu/cpu_internal.h"

namespace sd::cpu {
namespace {

// Convolutions whose whole column matrix fits this many floats are one im2col plus one GEMM
// split over the threads (by output channel when the weights are the bigger operand).
constexpr int64_t kWholeIm2colFloats = int64_t{1} << 22;  // 16 MiB
// Otherwise each thread im2cols chunks of at least this many output pixels, enough that
// re-packing the weights in every GEMM call stays cheap next to the multiply itself.
constexpr int64_t kMinChunkPixels = 512;
// Below this many multiply-adds a GEMM is not worth splitting over threads.
constexpr int64_t kMinParallelMacs = int64_t{1} << 18;

int blas_int(int64_t v) {
  SD_ASSERT(v >= 0 && v <= INT_MAX, "gemm dimension " + std::to_string(v) + " exceeds the BLAS int range");
  return static_cast<int>(v);
}

// Sets every row of out [rows, n] to bias[n] (or zero), ahead of a beta = 1 GEMM.
void fill_rows(float* out, int64_t rows, int64_t n, const float* bias) {
  for (int64_t r = 0; r < rows; ++r) {
    if (bias) {
      std::memcpy(out + r * n, bias, static_cast<size_t>(n) * sizeof(float));
    } else {
      std::memset(out + r * n, 0, static_cast<size_t>(n) * sizeof(float));
    }
  }
}

// Fills col [(oy1-oy0)*Wo, K*K*Cin] for output rows [oy0, oy1) of image x [H, W, Cin].
void im2col_rows(const float* x, int64_t H, int64_t W, int64_t Cin, int64_t K, int stride, int padding, int64_t Wo,
                 int64_t oy0, int64_t oy1, float* col) {
  const int64_t kkc = K * K * Cin;
  const size_t run_bytes = static_cast<size_t>(K * Cin) * sizeof(float), pixel_bytes = static_cast<size_t>(Cin) * 4;
  for (int64_t oy = oy0; oy < oy1; ++oy) {
    for (int64_t ox = 0; ox < Wo; ++ox) {
      float* dst = col + ((oy - oy0) * Wo + ox) * kkc;
      const int64_t ix0 = ox * stride - padding;
      for (int64_t ky = 0; ky < K; ++ky) {
        const int64_t iy = oy * stride - padding + ky;
        float* drow = dst + ky * K * Cin;
        if (iy < 0 || iy >= H) {
          std::memset(drow, 0, run_bytes);
          continue;
        }
        const float* srow = x + iy * W * Cin;
        if (ix0 >= 0 && ix0 + K <= W) {  // the K taps of this kernel row are contiguous in x
          std::memcpy(drow, srow + ix0 * Cin, run_bytes);
          continue;
        }
        for (int64_t kx = 0; kx < K; ++kx) {
          const int64_t ix = ix0 + kx;
          if (ix < 0 || ix >= W) {
            std::memset(drow + kx * Cin, 0, pixel_bytes);
          } else {
            std::memcpy(drow + kx * Cin, srow + ix * Cin, pixel_bytes);
          }
        }
      }
    }
  }
}

// Splits C [m, n] into blocks over the threads and runs block(r0, r1, c0, c1) serially on
// each: by rows when A [m, k] is the bigger operand (each thread packs all of B), else by
// columns (each thread packs all of A and its share of B).
template <typename BlockGemm>
void split_gemm(const CpuContext& ctx, int64_t m, int64_t n, int64_t k, BlockGemm&& block) {
  const int threads = ctx.threads();
  if (threads <= 1 || m * n * k < kMinParallelMacs) {
    block(int64_t{0}, m, int64_t{0}, n);
    return;
  }
  const bool by_rows = m >= n || n < 16 * threads;
  ctx.run(threads, [&](int64_t t, int) {
    if (by_rows) {
      // Row blocks rounded to 16 so the kernels see whole register tiles.
      const int64_t r0 = std::min(m, (m * t / threads + 15) / 16 * 16);
      const int64_t r1 = t == threads - 1 ? m : std::min(m, (m * (t + 1) / threads + 15) / 16 * 16);
      if (r1 > r0) block(r0, r1, int64_t{0}, n);
    } else {
      const int64_t c0 = n * t / threads, c1 = n * (t + 1) / threads;
      if (c1 > c0) block(int64_t{0}, m, c0, c1);
    }
  });
}

}  // namespace

void gemm_nt_serial(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda, const float* b,
                    int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, blas_int(m), blas_int(n), blas_int(k), alpha, a, blas_int(lda),
              b, blas_int(ldb), beta, c, blas_int(ldc));
}

Tensor linear(CpuContext& ctx, const Tensor& x, const Tensor& w, const Tensor& bias) {
  check_f32(x, "linear", "x");
  check_f32(w, "linear", "w");
  SD_ASSERT(x.ndim() >= 1 && w.ndim() == 2 && w.dim(1) == x.dim(-1),
            "linear: x " + shape_str(x.shape()) + " does not match weight [N, K] " + shape_str(w.shape()));
  const int64_t k = w.dim(1), n = w.dim(0), m = k ? x.numel() / k : 0;
  if (bias.defined()) {
    check_f32(bias, "linear", "bias");
    SD_ASSERT(bias.numel() == n, "linear: bias " + shape_str(bias.shape()) + " for weight " + shape_str(w.shape()));
  }
  Shape out_shape = x.shape();
  out_shape.back() = n;
  Tensor y = ctx.alloc_f32(out_shape);  // [..., N]
  const float* bp = bias.defined() ? bias.f32() : nullptr;
  split_gemm(ctx, m, n, k, [&](int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
    float* yb = y.f32() + r0 * n + c0;
    for (int64_t r = r0; r < r1; ++r) {  // bias (or zeros) first, then accumulate with beta = 1
      float* row = y.f32() + r * n;
      for (int64_t c = c0; c < c1; ++c) row[c] = bp ? bp[c] : 0.f;
    }
    gemm_nt_serial(r1 - r0, c1 - c0, k, 1.f, x.f32() + r0 * k, k, w.f32() + c0 * k, k, 1.f, yb, n);
  });
  return y;
}

Tensor conv2d(CpuContext& ctx, const Tensor& x, const Tensor& w, const Tensor& bias, int stride, int padding) {
  check_f32(x, "conv2d", "x");
  check_f32(w, "conv2d", "w");
  SD_ASSERT(x.ndim() == 4 && w.ndim() == 4 && w.dim(1) == w.dim(2) && w.dim(3) == x.dim(3),
            "conv2d: x [B,H,W,Cin] " + shape_str(x.shape()) + " vs w [Cout,K,K,Cin] " + shape_str(w.shape()));
  SD_ASSERT(stride >= 1 && padding >= 0, "conv2d: stride " + std::to_string(stride) + " padding " +
                                             std::to_string(padding));
  const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), Cin = x.dim(3);
  const int64_t Cout = w.dim(0), K = w.dim(1);
  SD_ASSERT(H + 2 * padding >= K && W + 2 * padding >= K,
            "conv2d: kernel " + std::to_string(K) + " larger than padded input " + shape_str(x.shape()));
  const int64_t Ho = (H + 2 * padding - K) / stride + 1, Wo = (W + 2 * padding - K) / stride + 1;
  if (bias.defined()) {
    check_f32(bias, "conv2d", "bias");
    SD_ASSERT(bias.numel() == Cout, "conv2d: bias " + shape_str(bias.shape()) + " for weight " + shape_str(w.shape()));
  }
  Tensor y = ctx.alloc_f32({B, Ho, Wo, Cout});  // [B, Ho, Wo, Cout]
  float* out = y.f32();
  const float* bp = bias.defined() ? bias.f32() : nullptr;

  if (K == 1 && stride == 1 && padding == 0) {  // a plain GEMM over all pixels
    split_gemm(ctx, B * H * W, Cout, Cin, [&](int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c) out[r * Cout + c] = bp ? bp[c] : 0.f;
      gemm_nt_serial(r1 - r0, c1 - c0, Cin, 1.f, x.f32() + r0 * Cin, Cin, w.f32() + c0 * Cin, Cin, 1.f,
                     out + r0 * Cout + c0, Cout);
    });
    return y;
  }
  const int64_t kkc = K * K * Cin;
  const int threads = ctx.threads();
  if (B * Ho * Wo * kkc <= kWholeIm2colFloats) {
    // [B*Ho*Wo, K*K*Cin], left uninitialised: im2col writes every entry.
    std::unique_ptr<float[]> col(new float[static_cast<size_t>(B * Ho * Wo * kkc)]);
    parallel_chunks(ctx, B * Ho, 1, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {  // r = b*Ho + oy
        im2col_rows(x.f32() + (r / Ho) * H * W * Cin, H, W, Cin, K, stride, padding, Wo, r % Ho, r % Ho + 1,
                    col.get() + r * Wo * kkc);
      }
    });
    split_gemm(ctx, B * Ho * Wo, Cout, kkc, [&](int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c) out[r * Cout + c] = bp ? bp[c] : 0.f;
      gemm_nt_serial(r1 - r0, c1 - c0, kkc, 1.f, col.get() + r0 * kkc, kkc, w.f32() + c0 * kkc, kkc, 1.f,
                     out + r0 * Cout + c0, Cout);
    });
    return y;
  }
  // Work items: chunks of output rows of one image; each thread im2cols its chunk into its
  // own buffer and multiplies it straight into the output rows.
  int64_t rows_per_chunk = std::clamp<int64_t>((kMinChunkPixels + Wo - 1) / Wo, 1, Ho);
  // Enough chunks to keep every thread busy.
  rows_per_chunk = std::min(rows_per_chunk, std::max<int64_t>(1, (B * Ho + threads - 1) / threads / B));
  const int64_t chunks_per_image = (Ho + rows_per_chunk - 1) / rows_per_chunk, items = B * chunks_per_image;
  const size_t col_floats = static_cast<size_t>(rows_per_chunk * Wo * kkc);
  // Per worker [rows_per_chunk*Wo, K*K*Cin], allocated on first use and left uninitialised:
  // im2col writes every entry.
  std::vector<std::unique_ptr<float[]>> cols(static_cast<size_t>(threads));
  ctx.run(items, [&](int64_t item, int worker) {
    const int64_t b = item / chunks_per_image, oy0 = (item % chunks_per_image) * rows_per_chunk;
    const int64_t oy1 = std::min(Ho, oy0 + rows_per_chunk);
    std::unique_ptr<float[]>& col = cols[static_cast<size_t>(worker)];
    if (!col) col.reset(new float[col_floats]);
    float* my_col = col.get();
    float* my_out = out + ((b * Ho + oy0) * Wo) * Cout;
    im2col_rows(x.f32() + b * H * W * Cin, H, W, Cin, K, stride, padding, Wo, oy0, oy1, my_col);
    fill_rows(my_out, (oy1 - oy0) * Wo, Cout, bp);
    gemm_nt_serial((oy1 - oy0) * Wo, Cout, kkc, 1.f, my_col, kkc, w.f32(), kkc, 1.f, my_out, Cout);
  });
  return y;
}

}  // namespace sd::cpu
