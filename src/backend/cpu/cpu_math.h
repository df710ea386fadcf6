// Scalar math for the CPU kernels written so that GCC vectorises loops over them: a
// polynomial exp (about 1 ulp in f32), erf (|error| < 2e-7) and the activations built on
// them. Inline and branch-free; inputs are clamped instead of special-cased.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "backend/backend.h"

namespace sd::cpu {

// e^x, accurate to about 1 ulp; inputs are clamped to [-87.33, 88] (so the result is a
// normal float between 1.2e-38 and 1.65e38).
inline float fast_exp(float x) {
  x = x < -87.33f ? -87.33f : x;  // ternaries (not fmin/fmax) so the loop vectorises
  x = x > 88.f ? 88.f : x;
  // Round to nearest through the 1.5 * 2^23 trick (vectorises, unlike nearbyint).
  const float n = (x * 1.44269504088896341f + 12582912.f) - 12582912.f;  // in [-126, 127]
  // r = x - n*ln2 in two parts (Cody-Waite) so r stays exact to f32 precision.
  const float r = (x - n * 0.693145751953125f) - n * 1.428606765330187e-06f;
  // Taylor series of e^r for |r| <= ln2/2 up to r^7 (truncation error < 6e-9).
  float p = 1.f / 5040.f;
  p = p * r + 1.f / 720.f;
  p = p * r + 1.f / 120.f;
  p = p * r + 1.f / 24.f;
  p = p * r + 1.f / 6.f;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  // Scale by 2^n through the exponent bits.
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, 4);
  return p * scale;
}

// erf(x) after Abramowitz & Stegun 7.1.26 refined with the exact-exp factor: |error| < 1.5e-7.
inline float fast_erf(float x) {
  const float a = std::fabs(x);
  const float t = 1.f / (1.f + 0.3275911f * a);
  float p = 1.061405429f;
  p = p * t - 1.453152027f;
  p = p * t + 1.421413741f;
  p = p * t - 0.284496736f;
  p = p * t + 0.254829592f;
  const float y = 1.f - p * t * fast_exp(-a * a);
  return std::copysign(y, x);
}

inline float silu(float x) { return x / (1.f + fast_exp(-x)); }
inline float gelu_erf(float x) { return 0.5f * x * (1.f + fast_erf(x * 0.70710678118654752f)); }
inline float gelu_tanh(float x) {
  const float u = 0.7978845608028654f * (x + 0.044715f * x * x * x);
  // tanh(u) = 1 - 2 / (e^{2u} + 1), saturating cleanly at both ends.
  const float th = 1.f - 2.f / (fast_exp(2.f * u) + 1.f);
  return 0.5f * x * (1.f + th);
}
inline float quick_gelu(float x) { return x / (1.f + fast_exp(-1.702f * x)); }

}  // namespace sd::cpu
