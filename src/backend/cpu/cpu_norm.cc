// Normalisation ops of the CPU backend: group_norm over NHWC (statistics in double, two
// passes: mean, then squared deviations), layer_norm and softmax over the last dimension.
// Reductions use explicit lane accumulators so that GCC vectorises them without fast-math.
#include <cmath>
#include <cstring>
#include <memory>

#include "backend/cpu/cpu_internal.h"
#include "backend/cpu/cpu_math.h"
#include "backend/cpu/cpu_simd.h"

namespace sd::cpu {
namespace {

constexpr int kLanes = 16;

// acc[c] += x[r, c] over rows [0, rows) of x [rows, C].
SD_CPU_KERNEL void add_channel_sums(const float* x, int64_t rows, int64_t C, double* acc) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < C; ++c) acc[c] += static_cast<double>(x[r * C + c]);
}

// acc[c] += (x[r, c] - mean[c])^2.
SD_CPU_KERNEL void add_channel_sqdev(const float* x, int64_t rows, int64_t C, const double* mean, double* acc) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < C; ++c) {
      const double d = static_cast<double>(x[r * C + c]) - mean[c];
      acc[c] += d * d;
    }
}

// y[r, c] = (x[r, c] - m[c] - m_lo[c]) * a[c] + b[c], optionally followed by SiLU. The mean
// is subtracted first, in two f32 parts (m + m_lo = the f64 mean), to keep full precision for
// inputs far from zero.
SD_CPU_KERNEL void affine_rows(const float* x, float* y, int64_t rows, int64_t C, const float* m, const float* m_lo,
                               const float* a, const float* b, bool apply_silu) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * C;
    float* yr = y + r * C;
    if (apply_silu) {
      for (int64_t c = 0; c < C; ++c) yr[c] = silu(((xr[c] - m[c]) - m_lo[c]) * a[c] + b[c]);
    } else {
      for (int64_t c = 0; c < C; ++c) yr[c] = ((xr[c] - m[c]) - m_lo[c]) * a[c] + b[c];
    }
  }
}

// Sum of x[0, n) in double, with kLanes independent accumulators (vectorisable).
SD_CPU_KERNEL double sum_f64(const float* x, int64_t n) {
  double acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) acc[l] += static_cast<double>(x[i + l]);
  double s = 0;
  for (; i < n; ++i) s += static_cast<double>(x[i]);
  for (int l = 0; l < kLanes; ++l) s += acc[l];
  return s;
}

SD_CPU_KERNEL double sqdev_f64(const float* x, int64_t n, double mean) {
  double acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) {
      const double d = static_cast<double>(x[i + l]) - mean;
      acc[l] += d * d;
    }
  double s = 0;
  for (; i < n; ++i) s += (static_cast<double>(x[i]) - mean) * (static_cast<double>(x[i]) - mean);
  for (int l = 0; l < kLanes; ++l) s += acc[l];
  return s;
}

SD_CPU_KERNEL void layer_norm_row(const float* x, float* y, int64_t C, const float* gamma, const float* beta,
                                  float mean, float inv_std) {
  for (int64_t c = 0; c < C; ++c) y[c] = (x[c] - mean) * inv_std * gamma[c] + beta[c];
}

// Row maximum, eight lanes at a time.
SD_CPU_KERNEL float row_max(const float* x, int64_t n) {
  float m = -INFINITY;
  int64_t i = 0;
  if (n >= 8) {
    f32x8 acc = load8(x);
    for (i = 8; i + 8 <= n; i += 8) acc = max8(acc, load8(x + i));
    m = hmax8(acc);
  }
  for (; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

// y = exp(x - m) over n entries (x may alias y); returns the sum of y.
SD_CPU_KERNEL double exp_shifted_sum(const float* x, float* y, int64_t n, float m) {
  const f32x8 mv = splat8(m);
  f32x8 acc = splat8(0.f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const f32x8 e = exp8(load8(x + i) - mv);
    store8(y + i, e);
    acc += e;
  }
  double s = hsum8(acc);
  for (; i < n; ++i) {
    y[i] = fast_exp(x[i] - m);
    s += y[i];
  }
  return s;
}

SD_CPU_KERNEL void scale_row(float* y, int64_t n, float s) {
  for (int64_t j = 0; j < n; ++j) y[j] *= s;
}

// Stable softmax of one row: y = exp(x - max) / sum, over n entries (x may alias y).
void softmax_row(const float* x, float* y, int64_t n) {
  const double sum = exp_shifted_sum(x, y, n, row_max(x, n));
  scale_row(y, n, static_cast<float>(1.0 / sum));
}

void check_affine(const Tensor& t, int64_t C, const char* op, const char* what) {
  check_f32(t, op, what);
  SD_ASSERT(t.numel() == C, std::string(op) + ": " + what + " " + shape_str(t.shape()) + " for " +
                                std::to_string(C) + " channels");
}

}  // namespace

Tensor group_norm(CpuContext& ctx, const Tensor& x, const Tensor& gamma, const Tensor& beta, int groups, float eps,
                  bool apply_silu) {
  check_f32(x, "group_norm", "x");
  SD_ASSERT(x.ndim() >= 2, "group_norm: x needs [B, ..., C], got " + shape_str(x.shape()));
  const int64_t B = x.dim(0), C = x.dim(-1);
  SD_ASSERT(C > 0 && groups > 0 && C % groups == 0,
            "group_norm: " + std::to_string(C) + " channels not divisible into " + std::to_string(groups) + " groups");
  check_affine(gamma, C, "group_norm", "gamma");
  check_affine(beta, C, "group_norm", "beta");
  const int64_t P = B ? x.numel() / (B * C) : 0, cg = C / groups;  // positions per sample, channels per group
  Tensor y = ctx.alloc_f32(x.shape());
  const int threads = ctx.threads();
  std::vector<double> partial(static_cast<size_t>(threads * C));  // [threads, C] per-chunk accumulators
  std::vector<double> channel_total(static_cast<size_t>(C)), group_mean_per_channel(static_cast<size_t>(C));
  // Per-channel mean (high and low f32 parts) and scale gamma / std.
  std::vector<float> m(static_cast<size_t>(C)), m_lo(static_cast<size_t>(C)), a(static_cast<size_t>(C));
  const int64_t min_rows = std::max<int64_t>(1, 8192 / C);

  // Runs `accumulate(x_rows, rows, acc)` over the positions of sample `s` split across
  // threads and leaves the per-channel totals in channel_total.
  auto reduce_channels = [&](const float* xs, auto&& accumulate) {
    std::fill(partial.begin(), partial.end(), 0.0);
    const int chunks = static_cast<int>(std::clamp<int64_t>(P / min_rows, 1, threads));
    ctx.run(chunks, [&](int64_t t, int) {
      const int64_t r0 = P * t / chunks, r1 = P * (t + 1) / chunks;
      accumulate(xs + r0 * C, r1 - r0, partial.data() + t * C);
    });
    for (int64_t c = 0; c < C; ++c) {
      double s = 0;
      for (int t = 0; t < chunks; ++t) s += partial[static_cast<size_t>(t * C + c)];
      channel_total[static_cast<size_t>(c)] = s;
    }
  };

  const double count = static_cast<double>(P * cg);
  for (int64_t s = 0; s < B; ++s) {
    const float* xs = x.f32() + s * P * C;
    reduce_channels(xs, [&](const float* xr, int64_t rows, double* acc) { add_channel_sums(xr, rows, C, acc); });
    for (int64_t g = 0; g < groups; ++g) {
      double sum = 0;
      for (int64_t c = g * cg; c < (g + 1) * cg; ++c) sum += channel_total[static_cast<size_t>(c)];
      for (int64_t c = g * cg; c < (g + 1) * cg; ++c) group_mean_per_channel[static_cast<size_t>(c)] = sum / count;
    }
    reduce_channels(xs, [&](const float* xr, int64_t rows, double* acc) {
      add_channel_sqdev(xr, rows, C, group_mean_per_channel.data(), acc);
    });
    for (int64_t g = 0; g < groups; ++g) {
      double sq = 0;
      for (int64_t c = g * cg; c < (g + 1) * cg; ++c) sq += channel_total[static_cast<size_t>(c)];
      const double inv_std = 1.0 / std::sqrt(sq / count + static_cast<double>(eps));
      for (int64_t c = g * cg; c < (g + 1) * cg; ++c) {
        const double mean = group_mean_per_channel[static_cast<size_t>(c)];
        m[static_cast<size_t>(c)] = static_cast<float>(mean);
        m_lo[static_cast<size_t>(c)] = static_cast<float>(mean - static_cast<double>(m[static_cast<size_t>(c)]));
        a[static_cast<size_t>(c)] = static_cast<float>(inv_std * gamma.f32()[c]);
      }
    }
    float* ys = y.f32() + s * P * C;
    parallel_chunks(ctx, P, min_rows, [&](int64_t r0, int64_t r1) {
      affine_rows(xs + r0 * C, ys + r0 * C, r1 - r0, C, m.data(), m_lo.data(), a.data(), beta.f32(), apply_silu);
    });
  }
  return y;
}

Tensor layer_norm(CpuContext& ctx, const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps) {
  check_f32(x, "layer_norm", "x");
  const int64_t C = x.dim(-1), rows = C ? x.numel() / C : 0;
  check_affine(gamma, C, "layer_norm", "gamma");
  check_affine(beta, C, "layer_norm", "beta");
  Tensor y = ctx.alloc_f32(x.shape());
  const float* xp = x.f32();
  float* yp = y.f32();
  parallel_chunks(ctx, rows, std::max<int64_t>(1, 8192 / std::max<int64_t>(1, C)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const double mean = sum_f64(xp + r * C, C) / static_cast<double>(C);
      const double var = sqdev_f64(xp + r * C, C, mean) / static_cast<double>(C);
      layer_norm_row(xp + r * C, yp + r * C, C, gamma.f32(), beta.f32(), static_cast<float>(mean),
                     static_cast<float>(1.0 / std::sqrt(var + static_cast<double>(eps))));
    }
  });
  return y;
}

void exp_rows_inplace(float* x, int64_t rows, int64_t n, int64_t ld, int64_t first_row, bool causal,
                      float* row_sums) {
  for (int64_t r = 0; r < rows; ++r) {
    float* row = x + r * ld;
    const int64_t valid = causal ? std::min(n, first_row + r + 1) : n;
    row_sums[r] = static_cast<float>(exp_shifted_sum(row, row, valid, row_max(row, valid)));
    if (valid < n) std::memset(row + valid, 0, static_cast<size_t>(n - valid) * sizeof(float));
  }
}

Tensor softmax(CpuContext& ctx, const Tensor& x) {
  check_f32(x, "softmax", "x");
  const int64_t n = x.dim(-1), rows = n ? x.numel() / n : 0;
  Tensor y = ctx.alloc_f32(x.shape());
  const float* xp = x.f32();
  float* yp = y.f32();
  parallel_chunks(ctx, rows, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, n)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) softmax_row(xp + r * n, yp + r * n, n);
  });
  return y;
}

}  // namespace sd::cpu
