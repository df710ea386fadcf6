// PyTorch CPU randn reproduced bit for bit. The Box-Muller of the >= 16 element path runs
// through PyTorch's AVX2 kernel (normal_fill_16_AVX2 with Cephes-style log/sincos polynomials
// compiled with FMA contraction); emulated here in scalar float with explicit fmaf.
#include "rng/torch_cpu_generator.h"

#include <cmath>
#include <cstring>
#include <numbers>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define SD_RNG_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#define SD_RNG_INLINE inline __attribute__((always_inline))
#else
#define SD_RNG_CLONES
#define SD_RNG_INLINE inline
#endif

namespace sd {
namespace {

float bits_to_float(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}
uint32_t float_to_bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

// Natural log of x in (0, 1] as PyTorch's log256_ps (Cephes logf) computes it per lane:
// split x = m * 2^e with m in [sqrt(1/2), sqrt(2)), then a degree-9 polynomial in m - 1.
// Which multiply-adds are fused follows what GCC's contraction produces for that kernel
// (verified against the reference output in tests/rng).
SD_RNG_INLINE float avx_log(float x) {
  const uint32_t bits = float_to_bits(x);
  float e = static_cast<float>(static_cast<int32_t>(bits >> 23) - 0x7f) + 1.0f;
  x = bits_to_float((bits & ~0x7f800000u) | float_to_bits(0.5f));  // mantissa in [0.5, 1)
  const bool below_sqrt_half = x < 0.707106781186547524f;
  const float tmp = below_sqrt_half ? x : 0.0f;
  x = x - 1.0f;
  e = e - (below_sqrt_half ? 1.0f : 0.0f);
  x = x + tmp;
  const float z = x * x;
  float y = 7.0376836292E-2f;
  y = std::fmaf(y, x, -1.1514610310E-1f);
  y = std::fmaf(y, x, 1.1676998740E-1f);
  y = std::fmaf(y, x, -1.2420140846E-1f);
  y = std::fmaf(y, x, 1.4249322787E-1f);
  y = std::fmaf(y, x, -1.6668057665E-1f);
  y = std::fmaf(y, x, 2.0000714765E-1f);
  y = std::fmaf(y, x, -2.4999993993E-1f);
  y = std::fmaf(y, x, 3.3333331174E-1f);
  y = y * x;
  y = std::fmaf(y, z, e * -2.12194440e-4f);
  y = y - z * 0.5f;
  x = x + y;
  return std::fmaf(e, 0.693359375f, x);
}

// sin and cos of x >= 0 as PyTorch's sincos256_ps (Cephes sinf/cosf) computes them per lane:
// reduce by multiples of pi/4 in three parts, then the sine and cosine polynomials.
SD_RNG_INLINE void avx_sincos(float x, float* sin_out, float* cos_out) {
  uint32_t sign_sin = float_to_bits(x) & 0x80000000u;
  x = std::fabs(x);
  int32_t j = static_cast<int32_t>(x * 1.27323954473516f);  // x * 4/pi, truncated
  j = (j + 1) & ~1;
  const float y = static_cast<float>(j);
  const uint32_t swap_sign_sin = static_cast<uint32_t>(j & 4) << 29;
  const bool use_sine_poly = (j & 2) == 0;
  x = std::fmaf(y, -0.78515625f, x);
  x = std::fmaf(y, -2.4187564849853515625e-4f, x);
  x = std::fmaf(y, -3.77489497744594108e-8f, x);
  const uint32_t sign_cos = static_cast<uint32_t>(~(j - 2) & 4) << 29;
  sign_sin ^= swap_sign_sin;
  const float z = x * x;
  float yc = std::fmaf(2.443315711809948E-005f, z, -1.388731625493765E-003f);
  yc = std::fmaf(yc, z, 4.166664568298827E-002f);
  yc = yc * z;
  yc = std::fmaf(yc, z, -(z * 0.5f));
  yc = yc + 1.0f;
  float ys = std::fmaf(-1.9515295891E-4f, z, 8.3321608736E-3f);
  ys = std::fmaf(ys, z, -1.6666654611E-1f);
  ys = ys * z;
  ys = std::fmaf(ys, x, x);
  const float s = use_sine_poly ? ys : yc;
  const float c = use_sine_poly ? yc : ys;
  *sin_out = bits_to_float(float_to_bits(s) ^ sign_sin);
  *cos_out = bits_to_float(float_to_bits(c) ^ sign_cos);
}

// normal_fill_16_AVX2: data[0..16) holds uniforms; pairs (j, j + 8) become two normals. On x86-64
// also compiled for x86-64-v3 (AVX2 + FMA), picked at load time: std::fmaf is then an instruction,
// not a libm call, and the 8 lanes vectorise (the same bits: an FMA rounds once either way, and
// -ffp-contract=off keeps the compiler from fusing anything else).
SD_RNG_CLONES void normal_fill_16(float* data) {
  const float two_pi = static_cast<float>(2.0 * std::numbers::pi);
  for (int j = 0; j < 8; ++j) {
    const float u1 = 1.0f - data[j];  // [0, 1) -> (0, 1] for the log
    const float u2 = data[j + 8];
    const float radius = std::sqrt(-2.0f * avx_log(u1));
    float s, c;
    avx_sincos(two_pi * u2, &s, &c);
    data[j] = radius * c;
    data[j + 8] = radius * s;
  }
}

}  // namespace

Mt19937::Mt19937(uint32_t seed) {
  state_[0] = seed;
  for (uint32_t i = 1; i < 624; ++i) state_[i] = 1812433253u * (state_[i - 1] ^ (state_[i - 1] >> 30)) + i;
}

void Mt19937::regenerate() {
  // The standard twist, its index wrap-arounds split out of the loop (no modulo per word).
  const auto twist = [this](int i, int next, int far) {
    const uint32_t y = (state_[i] & 0x80000000u) | (state_[next] & 0x7fffffffu);
    state_[i] = state_[far] ^ (y >> 1) ^ ((y & 1u) ? 0x9908b0dfu : 0u);
  };
  int i = 0;
  for (; i < 624 - 397; ++i) twist(i, i + 1, i + 397);
  for (; i < 623; ++i) twist(i, i + 1, i + 397 - 624);
  twist(623, 0, 396);
  index_ = 0;
}

uint32_t Mt19937::next_u32() {
  if (index_ >= 624) regenerate();
  uint32_t y = state_[index_++];
  y ^= y >> 11;
  y ^= (y << 7) & 0x9d2c5680u;
  y ^= (y << 15) & 0xefc60000u;
  y ^= y >> 18;
  return y;
}

uint64_t Mt19937::next_u64() {
  const uint64_t hi = next_u32();
  const uint64_t lo = next_u32();
  return (hi << 32) | lo;
}

TorchCpuGenerator::TorchCpuGenerator(uint64_t seed) : seed_(seed), engine_(static_cast<uint32_t>(seed)) {}

float TorchCpuGenerator::uniform_float() {
  return static_cast<float>(engine_.next_u32() & 0xFFFFFFu) * (1.0f / 16777216.0f);
}

double TorchCpuGenerator::uniform_double() {
  return static_cast<double>(engine_.next_u64() & ((uint64_t{1} << 53) - 1)) * (1.0 / 9007199254740992.0);
}

double TorchCpuGenerator::normal_double() {
  if (next_double_normal_) {
    const double cached = *next_double_normal_;
    next_double_normal_.reset();
    return cached;
  }
  const double u1 = uniform_double();
  const double u2 = uniform_double();
  const double r = std::sqrt(-2.0 * std::log1p(-u2));
  const double theta = 2.0 * std::numbers::pi * u1;
  next_double_normal_ = r * std::sin(theta);
  return r * std::cos(theta);
}

// normal_fill: all uniforms first, Box-Muller in blocks of 16; a tail (n % 16 != 0) redraws
// 16 fresh uniforms for the last 16 positions and transforms those again.
void TorchCpuGenerator::fill_vectorised(float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = uniform_float();
  for (int64_t i = 0; i + 16 <= n; i += 16) normal_fill_16(out + i);
  if (n % 16 != 0) {
    float* tail = out + n - 16;
    for (int i = 0; i < 16; ++i) tail[i] = uniform_float();
    normal_fill_16(tail);
  }
}

void TorchCpuGenerator::fill_randn(float* out, int64_t n) {
  SD_ASSERT(n >= 0);
  if (n >= 16) {
    fill_vectorised(out, n);
  } else {
    for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(normal_double());
  }
}

}  // namespace sd
