// Elementwise ops of the CPU backend: activations, GEGLU, add/mul/scale, the per-channel
// broadcast add and lincomb (the sampler arithmetic). Each op is a vectorisable span kernel
// run over contiguous chunks on all threads.
#include "backend/cpu/cpu_internal.h"
#include "backend/cpu/cpu_math.h"

namespace sd::cpu {
namespace {

constexpr int64_t kMinChunk = 16384;  // elements per thread below which threading does not pay

SD_CPU_KERNEL void activation_span(const float* x, float* y, int64_t n, Activation act) {
  switch (act) {
    case Activation::kSiLU:
      for (int64_t i = 0; i < n; ++i) y[i] = silu(x[i]);
      break;
    case Activation::kGELU:
      for (int64_t i = 0; i < n; ++i) y[i] = gelu_erf(x[i]);
      break;
    case Activation::kGELUTanh:
      for (int64_t i = 0; i < n; ++i) y[i] = gelu_tanh(x[i]);
      break;
    case Activation::kQuickGELU:
      for (int64_t i = 0; i < n; ++i) y[i] = quick_gelu(x[i]);
      break;
  }
}

// y[r, c] = x[r, c] * gelu_erf(x[r, N + c]) for x [rows, 2N], y [rows, N].
SD_CPU_KERNEL void geglu_rows(const float* x, float* y, int64_t rows, int64_t N) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * 2 * N;
    float* yr = y + r * N;
    for (int64_t c = 0; c < N; ++c) yr[c] = xr[c] * gelu_erf(xr[N + c]);
  }
}

SD_CPU_KERNEL void add_span(const float* a, const float* b, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = a[i] + b[i];
}

SD_CPU_KERNEL void mul_span(const float* a, const float* b, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = a[i] * b[i];
}

SD_CPU_KERNEL void scale_span(const float* x, float s, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * s;
}

// y = acc + c * x (acc may alias y).
SD_CPU_KERNEL void axpy_span(const float* acc, float c, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = acc[i] + c * x[i];
}

// y[r, c] = x[r, c] + v[c] for x [rows, C].
SD_CPU_KERNEL void add_row_vector(const float* x, const float* v, float* y, int64_t rows, int64_t C) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < C; ++c) y[r * C + c] = x[r * C + c] + v[c];
}

void check_same_shape(const Tensor& a, const Tensor& b, const char* op) {
  check_f32(a, op, "a");
  check_f32(b, op, "b");
  SD_ASSERT(a.shape() == b.shape(), std::string(op) + ": shapes " + shape_str(a.shape()) + " and " +
                                        shape_str(b.shape()) + " differ");
}

}  // namespace

Tensor activation(CpuContext& ctx, const Tensor& x, Activation act) {
  check_f32(x, "activation", "x");
  Tensor y = ctx.alloc_f32(x.shape());
  const float* xp = x.f32();
  float* yp = y.f32();
  parallel_chunks(ctx, x.numel(), kMinChunk / 4, [&](int64_t i0, int64_t i1) { activation_span(xp + i0, yp + i0, i1 - i0, act); });
  return y;
}

Tensor geglu(CpuContext& ctx, const Tensor& x) {
  check_f32(x, "geglu", "x");
  SD_ASSERT(x.ndim() >= 1 && x.dim(-1) % 2 == 0, "geglu: last dimension must be even, got " + shape_str(x.shape()));
  const int64_t N = x.dim(-1) / 2, rows = N ? x.numel() / (2 * N) : 0;
  Shape out_shape = x.shape();
  out_shape.back() = N;
  Tensor y = ctx.alloc_f32(out_shape);  // [..., N]
  const float* xp = x.f32();
  float* yp = y.f32();
  parallel_chunks(ctx, rows, std::max<int64_t>(1, kMinChunk / 4 / std::max<int64_t>(1, N)),
                  [&](int64_t r0, int64_t r1) { geglu_rows(xp + r0 * 2 * N, yp + r0 * N, r1 - r0, N); });
  return y;
}

Tensor add(CpuContext& ctx, const Tensor& a, const Tensor& b) {
  check_same_shape(a, b, "add");
  Tensor y = ctx.alloc_f32(a.shape());
  parallel_chunks(ctx, a.numel(), kMinChunk,
                  [&](int64_t i0, int64_t i1) { add_span(a.f32() + i0, b.f32() + i0, y.f32() + i0, i1 - i0); });
  return y;
}

Tensor mul(CpuContext& ctx, const Tensor& a, const Tensor& b) {
  check_same_shape(a, b, "mul");
  Tensor y = ctx.alloc_f32(a.shape());
  parallel_chunks(ctx, a.numel(), kMinChunk,
                  [&](int64_t i0, int64_t i1) { mul_span(a.f32() + i0, b.f32() + i0, y.f32() + i0, i1 - i0); });
  return y;
}

Tensor scale(CpuContext& ctx, const Tensor& x, float s) {
  check_f32(x, "scale", "x");
  Tensor y = ctx.alloc_f32(x.shape());
  parallel_chunks(ctx, x.numel(), kMinChunk,
                  [&](int64_t i0, int64_t i1) { scale_span(x.f32() + i0, s, y.f32() + i0, i1 - i0); });
  return y;
}

Tensor add_per_channel(CpuContext& ctx, const Tensor& x, const Tensor& v) {
  check_f32(x, "add_per_channel", "x");
  check_f32(v, "add_per_channel", "v");
  SD_ASSERT(x.ndim() >= 2 && v.ndim() == 2 && v.dim(0) == x.dim(0) && v.dim(1) == x.dim(-1),
            "add_per_channel: x [B,...,C] " + shape_str(x.shape()) + " vs v [B,C] " + shape_str(v.shape()));
  const int64_t B = x.dim(0), C = x.dim(-1), P = (B && C) ? x.numel() / (B * C) : 0;
  Tensor y = ctx.alloc_f32(x.shape());
  for (int64_t b = 0; b < B; ++b) {
    const float* xb = x.f32() + b * P * C;
    float* yb = y.f32() + b * P * C;
    const float* vb = v.f32() + b * C;
    parallel_chunks(ctx, P, std::max<int64_t>(1, kMinChunk / std::max<int64_t>(1, C)), [&](int64_t r0, int64_t r1) {
      add_row_vector(xb + r0 * C, vb, yb + r0 * C, r1 - r0, C);
    });
  }
  return y;
}

Tensor lincomb(CpuContext& ctx, const std::vector<Tensor>& inputs, const Tensor& coeffs) {
  SD_ASSERT(!inputs.empty(), "lincomb: no inputs");
  const Tensor& first = inputs.front();
  for (size_t i = 0; i < inputs.size(); ++i) {
    check_f32(inputs[i], "lincomb", "input");
    SD_ASSERT(inputs[i].shape() == first.shape(), "lincomb: input " + std::to_string(i) + " " +
                                                      shape_str(inputs[i].shape()) + " vs " + shape_str(first.shape()));
  }
  SD_ASSERT(first.ndim() >= 1, "lincomb: inputs need a batch dimension");
  const int64_t B = first.dim(0), n = static_cast<int64_t>(inputs.size());
  check_f32(coeffs, "lincomb", "coeffs");
  SD_ASSERT(coeffs.numel() == B * n, "lincomb: coeffs " + shape_str(coeffs.shape()) + " for " + std::to_string(n) +
                                         " inputs of batch " + std::to_string(B) + " (want [B, n])");
  const int64_t per = B ? first.numel() / B : 0;  // elements per sample
  Tensor y = ctx.alloc_f32(first.shape());
  const float* c = coeffs.f32();  // [B, n] on the host
  for (int64_t b = 0; b < B; ++b) {
    float* yb = y.f32() + b * per;
    parallel_chunks(ctx, per, kMinChunk, [&](int64_t i0, int64_t i1) {
      scale_span(inputs[0].f32() + b * per + i0, c[b * n], yb + i0, i1 - i0);
      for (int64_t i = 1; i < n; ++i) {
        axpy_span(yb + i0, c[b * n + i], inputs[static_cast<size_t>(i)].f32() + b * per + i0, yb + i0, i1 - i0);
      }
    });
  }
  return y;
}

}  // namespace sd::cpu
