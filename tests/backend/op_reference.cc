// Naive plain-loop references for the backend ops (see op_reference.h). Index arithmetic is
// spelled out per element; speed is irrelevant, clarity and independence are the point.
// All accumulation is in double.
#include "backend/op_reference.h"

#include <cmath>
#include <cstring>

namespace sd::testing::ref {
namespace {

int64_t rows_of(const Tensor& x) { return x.numel() / x.dim(-1); }

}  // namespace

double activate(double x, Activation act) {
  switch (act) {
    case Activation::kSiLU: return x / (1.0 + std::exp(-x));
    case Activation::kGELU: return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
    case Activation::kGELUTanh: {
      const double k = std::sqrt(2.0 / M_PI);
      return 0.5 * x * (1.0 + std::tanh(k * (x + 0.044715 * x * x * x)));
    }
    case Activation::kQuickGELU: return x / (1.0 + std::exp(-1.702 * x));
  }
  return x;
}

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias) {
  const int64_t k = x.dim(-1), n = w.dim(0), m = rows_of(x);
  Shape out_shape = x.shape();
  out_shape.back() = n;
  Tensor y = Tensor::empty_host(out_shape, DType::kF32);
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t o = 0; o < n; ++o) {
      double acc = bias.defined() ? bias.f32()[o] : 0.0;
      for (int64_t i = 0; i < k; ++i) acc += static_cast<double>(x.f32()[r * k + i]) * w.f32()[o * k + i];
      y.f32()[r * n + o] = static_cast<float>(acc);
    }
  }
  return y;
}

Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, int stride, int padding) {
  const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), Cin = x.dim(3);
  const int64_t Cout = w.dim(0), K = w.dim(1);
  const int64_t Ho = (H + 2 * padding - K) / stride + 1, Wo = (W + 2 * padding - K) / stride + 1;
  Tensor y = Tensor::empty_host({B, Ho, Wo, Cout}, DType::kF32);
  const float* xp = x.f32();
  const float* wp = w.f32();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t oy = 0; oy < Ho; ++oy)
      for (int64_t ox = 0; ox < Wo; ++ox)
        for (int64_t o = 0; o < Cout; ++o) {
          double acc = bias.defined() ? bias.f32()[o] : 0.0;
          for (int64_t ky = 0; ky < K; ++ky)
            for (int64_t kx = 0; kx < K; ++kx) {
              const int64_t iy = oy * stride - padding + ky, ix = ox * stride - padding + kx;
              if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
              for (int64_t c = 0; c < Cin; ++c)
                acc += static_cast<double>(xp[((b * H + iy) * W + ix) * Cin + c]) *
                       wp[((o * K + ky) * K + kx) * Cin + c];
            }
          y.f32()[((b * Ho + oy) * Wo + ox) * Cout + o] = static_cast<float>(acc);
        }
  return y;
}

Tensor group_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, int groups, float eps, bool silu) {
  const int64_t B = x.dim(0), C = x.dim(-1), P = x.numel() / (B * C), cg = C / groups;
  Tensor y = Tensor::empty_host(x.shape(), DType::kF32);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t g = 0; g < groups; ++g) {
      double sum = 0;
      for (int64_t p = 0; p < P; ++p)
        for (int64_t c = g * cg; c < (g + 1) * cg; ++c) sum += x.f32()[(b * P + p) * C + c];
      const double mean = sum / static_cast<double>(P * cg);
      double var = 0;
      for (int64_t p = 0; p < P; ++p)
        for (int64_t c = g * cg; c < (g + 1) * cg; ++c) {
          const double d = x.f32()[(b * P + p) * C + c] - mean;
          var += d * d;
        }
      var /= static_cast<double>(P * cg);
      const double inv = 1.0 / std::sqrt(var + eps);
      for (int64_t p = 0; p < P; ++p)
        for (int64_t c = g * cg; c < (g + 1) * cg; ++c) {
          const int64_t i = (b * P + p) * C + c;
          double v = (x.f32()[i] - mean) * inv * gamma.f32()[c] + beta.f32()[c];
          if (silu) v = activate(v, Activation::kSiLU);
          y.f32()[i] = static_cast<float>(v);
        }
    }
  return y;
}

Tensor layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps) {
  const int64_t C = x.dim(-1), R = rows_of(x);
  Tensor y = Tensor::empty_host(x.shape(), DType::kF32);
  for (int64_t r = 0; r < R; ++r) {
    double mean = 0, var = 0;
    for (int64_t c = 0; c < C; ++c) mean += x.f32()[r * C + c];
    mean /= static_cast<double>(C);
    for (int64_t c = 0; c < C; ++c) var += (x.f32()[r * C + c] - mean) * (x.f32()[r * C + c] - mean);
    var /= static_cast<double>(C);
    for (int64_t c = 0; c < C; ++c)
      y.f32()[r * C + c] =
          static_cast<float>((x.f32()[r * C + c] - mean) / std::sqrt(var + eps) * gamma.f32()[c] + beta.f32()[c]);
  }
  return y;
}

Tensor softmax(const Tensor& x) {
  const int64_t C = x.dim(-1), R = rows_of(x);
  Tensor y = Tensor::empty_host(x.shape(), DType::kF32);
  for (int64_t r = 0; r < R; ++r) {
    double mx = -INFINITY, sum = 0;
    for (int64_t c = 0; c < C; ++c) mx = std::max(mx, static_cast<double>(x.f32()[r * C + c]));
    for (int64_t c = 0; c < C; ++c) sum += std::exp(x.f32()[r * C + c] - mx);
    for (int64_t c = 0; c < C; ++c) y.f32()[r * C + c] = static_cast<float>(std::exp(x.f32()[r * C + c] - mx) / sum);
  }
  return y;
}

Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads, bool causal) {
  const int64_t B = q.dim(0), Lq = q.dim(1), Lk = k.dim(1), HD = q.dim(2), D = HD / heads;
  Tensor y = Tensor::empty_host(q.shape(), DType::kF32);
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  std::vector<double> s(static_cast<size_t>(Lk));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < Lq; ++i) {
        double mx = -INFINITY;
        for (int64_t j = 0; j < Lk; ++j) {
          if (causal && j > i) {
            s[j] = -INFINITY;
            continue;
          }
          double dot = 0;
          for (int64_t d = 0; d < D; ++d)
            dot += static_cast<double>(q.f32()[(b * Lq + i) * HD + h * D + d]) * k.f32()[(b * Lk + j) * HD + h * D + d];
          s[j] = dot * scale;
          mx = std::max(mx, s[j]);
        }
        double sum = 0;
        for (int64_t j = 0; j < Lk; ++j) {
          s[j] = (causal && j > i) ? 0.0 : std::exp(s[j] - mx);
          sum += s[j];
        }
        for (int64_t d = 0; d < D; ++d) {
          double acc = 0;
          for (int64_t j = 0; j < Lk; ++j) acc += s[j] * v.f32()[(b * Lk + j) * HD + h * D + d];
          y.f32()[(b * Lq + i) * HD + h * D + d] = static_cast<float>(acc / sum);
        }
      }
  return y;
}

Tensor activation(const Tensor& x, Activation act) {
  Tensor y = Tensor::empty_host(x.shape(), DType::kF32);
  for (int64_t i = 0; i < x.numel(); ++i) y.f32()[i] = static_cast<float>(activate(x.f32()[i], act));
  return y;
}

Tensor geglu(const Tensor& x) {
  const int64_t C2 = x.dim(-1), N = C2 / 2, R = rows_of(x);
  Shape s = x.shape();
  s.back() = N;
  Tensor y = Tensor::empty_host(s, DType::kF32);
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < N; ++c)
      y.f32()[r * N + c] = static_cast<float>(static_cast<double>(x.f32()[r * C2 + c]) *
                                              activate(x.f32()[r * C2 + N + c], Activation::kGELU));
  return y;
}

Tensor add(const Tensor& a, const Tensor& b) {
  Tensor y = Tensor::empty_host(a.shape(), DType::kF32);
  for (int64_t i = 0; i < a.numel(); ++i) y.f32()[i] = static_cast<float>(static_cast<double>(a.f32()[i]) + b.f32()[i]);
  return y;
}

Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor y = Tensor::empty_host(a.shape(), DType::kF32);
  for (int64_t i = 0; i < a.numel(); ++i) y.f32()[i] = static_cast<float>(static_cast<double>(a.f32()[i]) * b.f32()[i]);
  return y;
}

Tensor scale(const Tensor& x, float s) {
  Tensor y = Tensor::empty_host(x.shape(), DType::kF32);
  for (int64_t i = 0; i < x.numel(); ++i) y.f32()[i] = static_cast<float>(static_cast<double>(x.f32()[i]) * s);
  return y;
}

Tensor add_per_channel(const Tensor& x, const Tensor& v) {
  const int64_t B = x.dim(0), C = x.dim(-1), P = x.numel() / (B * C);
  Tensor y = Tensor::empty_host(x.shape(), DType::kF32);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t p = 0; p < P; ++p)
      for (int64_t c = 0; c < C; ++c) {
        const int64_t i = (b * P + p) * C + c;
        y.f32()[i] = static_cast<float>(static_cast<double>(x.f32()[i]) + v.f32()[b * C + c]);
      }
  return y;
}

Tensor lincomb(const std::vector<Tensor>& inputs, const Tensor& coeffs) {
  const Tensor& first = inputs.at(0);
  const int64_t B = first.dim(0), per = first.numel() / B, n = static_cast<int64_t>(inputs.size());
  Tensor y = Tensor::empty_host(first.shape(), DType::kF32);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t e = 0; e < per; ++e) {
      double acc = 0;
      for (int64_t i = 0; i < n; ++i) acc += static_cast<double>(coeffs.f32()[b * n + i]) * inputs[i].f32()[b * per + e];
      y.f32()[b * per + e] = static_cast<float>(acc);
    }
  return y;
}

Tensor upsample_nearest2x(const Tensor& x) {
  const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), C = x.dim(3);
  Tensor y = Tensor::empty_host({B, 2 * H, 2 * W, C}, DType::kF32);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t oy = 0; oy < 2 * H; ++oy)
      for (int64_t ox = 0; ox < 2 * W; ++ox)
        for (int64_t c = 0; c < C; ++c)
          y.f32()[((b * 2 * H + oy) * 2 * W + ox) * C + c] = x.f32()[((b * H + oy / 2) * W + ox / 2) * C + c];
  return y;
}

Tensor interleave_phases2x(const Tensor& y4, const Tensor& bias) {
  const int64_t B = y4.dim(0), H = y4.dim(1) - 1, W = y4.dim(2) - 1, C = y4.dim(3) / 4;
  Tensor y = Tensor::empty_host({B, 2 * H, 2 * W, C}, DType::kF32);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t oy = 0; oy < 2 * H; ++oy)
      for (int64_t ox = 0; ox < 2 * W; ++ox)
        for (int64_t c = 0; c < C; ++c) {
          const int64_t pa = oy % 2, pc = ox % 2, iy = oy / 2 + pa, ix = ox / 2 + pc;
          const float v = y4.f32()[((b * (H + 1) + iy) * (W + 1) + ix) * 4 * C + (2 * pa + pc) * C + c];
          y.f32()[((b * 2 * H + oy) * 2 * W + ox) * C + c] = v + (bias.defined() ? bias.f32()[c] : 0.f);
        }
  return y;
}

Tensor concat_channels(const Tensor& a, const Tensor& b) {
  const int64_t Ca = a.dim(-1), Cb = b.dim(-1), R = rows_of(a);
  Shape s = a.shape();
  s.back() = Ca + Cb;
  Tensor y = Tensor::empty_host(s, DType::kF32);
  for (int64_t r = 0; r < R; ++r) {
    for (int64_t c = 0; c < Ca; ++c) y.f32()[r * (Ca + Cb) + c] = a.f32()[r * Ca + c];
    for (int64_t c = 0; c < Cb; ++c) y.f32()[r * (Ca + Cb) + Ca + c] = b.f32()[r * Cb + c];
  }
  return y;
}

Tensor embedding(const Tensor& ids, const Tensor& table) {
  const int64_t D = table.dim(1);
  Shape s = ids.shape();
  s.push_back(D);
  Tensor y = Tensor::empty_host(s, DType::kF32);
  for (int64_t i = 0; i < ids.numel(); ++i)
    for (int64_t d = 0; d < D; ++d) y.f32()[i * D + d] = table.f32()[ids.i32()[i] * D + d];
  return y;
}

Tensor concat_rows(const std::vector<Tensor>& parts) {
  Shape s = parts.at(0).shape();
  s[0] = 0;
  for (const Tensor& p : parts) s[0] += p.dim(0);
  Tensor y = Tensor::empty_host(s, DType::kF32);
  int64_t at = 0;
  for (const Tensor& p : parts)
    for (int64_t i = 0; i < p.numel(); ++i) y.f32()[at++] = p.f32()[i];
  return y;
}

Tensor pad_hw(const Tensor& x, int top, int bottom, int left, int right) {
  const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), C = x.dim(3);
  const int64_t Ho = H + top + bottom, Wo = W + left + right;
  Tensor y = Tensor::zeros_host({B, Ho, Wo, C}, DType::kF32);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t iy = 0; iy < H; ++iy)
      for (int64_t ix = 0; ix < W; ++ix)
        for (int64_t c = 0; c < C; ++c)
          y.f32()[((b * Ho + iy + top) * Wo + ix + left) * C + c] = x.f32()[((b * H + iy) * W + ix) * C + c];
  return y;
}

Tensor crop_hw(const Tensor& x, int h0, int h, int w0, int w) {
  const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), C = x.dim(3);
  Tensor y = Tensor::empty_host({B, h, w, C}, DType::kF32);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t oy = 0; oy < h; ++oy)
      for (int64_t ox = 0; ox < w; ++ox)
        for (int64_t c = 0; c < C; ++c)
          y.f32()[((b * h + oy) * w + ox) * C + c] = x.f32()[((b * H + h0 + oy) * W + w0 + ox) * C + c];
  return y;
}

}  // namespace sd::testing::ref
