// Dense ops of the CPU backend: linear and conv2d through OpenBLAS sgemm. Convolution is
// NHWC im2col against OHWI weights viewed as [Cout, kh*kw*Cin], in chunks of output rows so
// the column buffer stays a few MB at any image size; 1x1 stride-1 convs skip im2col.
#include <cblas.h>

#include <climits>
#include <cstring>
#include <memory>

#include "backend/cpu/cpu_internal.h"

namespace sd::cpu {
namespace {

// Column buffer budget per chunk of output rows (floats): large enough for an efficient GEMM,
// small enough to stay in cache next to the weights.
constexpr int64_t kIm2colBudgetFloats = int64_t{1} << 20;  // 4 MiB

int blas_int(int64_t v) {
  SD_ASSERT(v >= 0 && v <= INT_MAX, "gemm dimension " + std::to_string(v) + " exceeds the BLAS int range");
  return static_cast<int>(v);
}

// Sets every row of out [rows, n] to bias[n] (or zero), ahead of a beta = 1 GEMM.
void fill_rows(const CpuContext& ctx, float* out, int64_t rows, int64_t n, const float* bias) {
  parallel_chunks(ctx, rows, 4096 / std::max<int64_t>(1, n) + 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      if (bias) {
        std::memcpy(out + r * n, bias, static_cast<size_t>(n) * sizeof(float));
      } else {
        std::memset(out + r * n, 0, static_cast<size_t>(n) * sizeof(float));
      }
    }
  });
}

// Fills col [(oy1-oy0)*Wo, K*K*Cin] for output rows [oy0, oy1) of image x [H, W, Cin].
void im2col_rows(const CpuContext& ctx, const float* x, int64_t H, int64_t W, int64_t Cin, int64_t K, int stride,
                 int padding, int64_t Wo, int64_t oy0, int64_t oy1, float* col) {
  const int64_t kkc = K * K * Cin;
  const int64_t npix = (oy1 - oy0) * Wo;
  parallel_chunks(ctx, npix, 16, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t oy = oy0 + p / Wo, ox = p % Wo;
      float* dst = col + p * kkc;
      const int64_t ix0 = ox * stride - padding;
      for (int64_t ky = 0; ky < K; ++ky) {
        const int64_t iy = oy * stride - padding + ky;
        float* drow = dst + ky * K * Cin;
        if (iy < 0 || iy >= H) {
          std::memset(drow, 0, static_cast<size_t>(K * Cin) * sizeof(float));
          continue;
        }
        const float* srow = x + iy * W * Cin;
        if (ix0 >= 0 && ix0 + K <= W) {  // the K taps of this kernel row are contiguous in x
          std::memcpy(drow, srow + ix0 * Cin, static_cast<size_t>(K * Cin) * sizeof(float));
          continue;
        }
        for (int64_t kx = 0; kx < K; ++kx) {
          const int64_t ix = ix0 + kx;
          if (ix < 0 || ix >= W) {
            std::memset(drow + kx * Cin, 0, static_cast<size_t>(Cin) * sizeof(float));
          } else {
            std::memcpy(drow + kx * Cin, srow + ix * Cin, static_cast<size_t>(Cin) * sizeof(float));
          }
        }
      }
    }
  });
}

}  // namespace

void gemm_nt(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda, const float* b, int64_t ldb,
             float beta, float* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, blas_int(m), blas_int(n), blas_int(k), alpha, a, blas_int(lda),
              b, blas_int(ldb), beta, c, blas_int(ldc));
}

void gemm_nn(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda, const float* b, int64_t ldb,
             float beta, float* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, blas_int(m), blas_int(n), blas_int(k), alpha, a,
              blas_int(lda), b, blas_int(ldb), beta, c, blas_int(ldc));
}

Tensor linear(CpuContext& ctx, const Tensor& x, const Tensor& w, const Tensor& bias) {
  check_f32(x, "linear", "x");
  check_f32(w, "linear", "w");
  SD_ASSERT(x.ndim() >= 1 && w.ndim() == 2 && w.dim(1) == x.dim(-1),
            "linear: x " + shape_str(x.shape()) + " does not match weight [N, K] " + shape_str(w.shape()));
  const int64_t k = w.dim(1), n = w.dim(0), m = x.numel() / std::max<int64_t>(1, k);
  if (bias.defined()) {
    check_f32(bias, "linear", "bias");
    SD_ASSERT(bias.numel() == n, "linear: bias " + shape_str(bias.shape()) + " for weight " + shape_str(w.shape()));
  }
  Shape out_shape = x.shape();
  out_shape.back() = n;
  Tensor y = ctx.alloc_f32(out_shape);  // [..., N]
  if (bias.defined()) fill_rows(ctx, y.f32(), m, n, bias.f32());
  gemm_nt(m, n, k, 1.f, x.f32(), k, w.f32(), k, bias.defined() ? 1.f : 0.f, y.f32(), n);
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
  const int64_t Ho = (H + 2 * padding - K) / stride + 1, Wo = (W + 2 * padding - K) / stride + 1;
  SD_ASSERT(H + 2 * padding >= K && W + 2 * padding >= K,
            "conv2d: kernel " + std::to_string(K) + " larger than padded input " + shape_str(x.shape()));
  if (bias.defined()) {
    check_f32(bias, "conv2d", "bias");
    SD_ASSERT(bias.numel() == Cout, "conv2d: bias " + shape_str(bias.shape()) + " for weight " + shape_str(w.shape()));
  }
  Tensor y = ctx.alloc_f32({B, Ho, Wo, Cout});
  float* out = y.f32();
  const float beta = bias.defined() ? 1.f : 0.f;
  if (bias.defined()) fill_rows(ctx, out, B * Ho * Wo, Cout, bias.f32());

  if (K == 1 && stride == 1 && padding == 0) {  // a plain GEMM over all pixels
    gemm_nt(B * H * W, Cout, Cin, 1.f, x.f32(), Cin, w.f32(), Cin, beta, out, Cout);
    return y;
  }
  const int64_t kkc = K * K * Cin;
  const int64_t rows_per_chunk = std::clamp<int64_t>(kIm2colBudgetFloats / (Wo * kkc), 1, Ho);
  // [rows_per_chunk*Wo, K*K*Cin], left uninitialised: im2col writes every entry.
  std::unique_ptr<float[]> col(new float[static_cast<size_t>(rows_per_chunk * Wo * kkc)]);
  for (int64_t b = 0; b < B; ++b) {
    const float* xb = x.f32() + b * H * W * Cin;
    for (int64_t oy0 = 0; oy0 < Ho; oy0 += rows_per_chunk) {
      const int64_t oy1 = std::min(Ho, oy0 + rows_per_chunk);
      im2col_rows(ctx, xb, H, W, Cin, K, stride, padding, Wo, oy0, oy1, col.get());
      gemm_nt((oy1 - oy0) * Wo, Cout, kkc, 1.f, col.get(), kkc, w.f32(), kkc, beta,
              out + ((b * Ho + oy0) * Wo) * Cout, Cout);
    }
  }
  return y;
}

}  // namespace sd::cpu
