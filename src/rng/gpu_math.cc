// Host model of the CUDA device math in curand's Box-Muller (curand_normal4 on sm_90):
// logf as libdevice's __nv_logf computes it (bit-exact), and the hardware __sincosf
// (MUFU.SIN/COS), modelled from measurements to within one float ulp.
#include "rng/gpu_math.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <numbers>

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

// MUFU.SIN's approximation error over the first quadrant, as a cubic in the position t in
// [-0.5, 0.5) within each of 64 equal segments of [0, 1/4) revolutions: hardware(x) =
// sin(2 pi x) + c0 + c1 t + c2 t^2 + c3 t^3. Fitted (least squares) to 4.2M outputs of
// __sinf/__cosf measured on an H100 (sm_90, CUDA 13); the fit reproduces 85% of them exactly
// and the rest within one ulp.
constexpr double kSinErrorCubic[64][4] = {
    {-1.512673e-08, -4.678382e-07, 3.583786e-07, 2.466565e-06},
    {4.489680e-08, -4.665657e-07, -3.554727e-07, 2.465973e-06},
    {-7.513519e-08, -4.771074e-07, 3.482571e-07, 2.479905e-06},
    {5.526670e-08, -5.042112e-07, -3.847403e-07, 2.462440e-06},
    {-1.075316e-07, -3.502601e-07, 5.349556e-07, 2.458462e-06},
    {1.804265e-08, -5.210705e-07, -2.270413e-07, 2.428337e-06},
    {2.752674e-09, -3.506440e-07, -7.471864e-08, 2.447862e-06},
    {-1.071201e-07, -3.636541e-07, 5.325758e-07, 2.438558e-06},
    {9.129396e-09, -3.861406e-07, -8.439095e-08, 2.429446e-06},
    {9.927842e-09, -4.886257e-07, -2.491790e-08, 2.419340e-06},
    {-2.208573e-08, -5.219199e-07, 1.232470e-08, 2.412772e-06},
    {-8.238116e-09, -5.442663e-07, -3.478890e-08, 2.393771e-06},
    {-4.105419e-08, -4.429962e-07, 1.248222e-07, 2.372653e-06},
    {-4.011551e-08, -5.549850e-07, 2.300282e-07, 2.360516e-06},
    {-4.950690e-09, -5.146620e-07, -2.013364e-07, 2.343370e-06},
    {7.085994e-09, -4.440614e-07, -2.189954e-07, 2.323443e-06},
    {-9.995301e-09, -4.744846e-07, 1.739727e-07, 2.300816e-06},
    {-1.677542e-08, -5.075368e-07, 2.559947e-07, 2.279472e-06},
    {-5.776303e-08, -4.497638e-07, 2.630483e-07, 2.254917e-06},
    {-3.072399e-08, -4.573392e-07, 1.898473e-07, 2.228740e-06},
    {-2.230779e-08, -4.547674e-07, 2.714641e-07, 2.202274e-06},
    {2.889327e-08, -4.032012e-07, -1.749462e-07, 2.229311e-06},
    {1.613821e-08, -3.968064e-07, -3.079857e-07, 2.142195e-06},
    {-2.546282e-08, -4.686432e-07, 2.166771e-07, 2.115601e-06},
    {-5.328678e-09, -3.057582e-07, -7.478277e-08, 2.078567e-06},
    {-8.851967e-08, -3.506792e-07, 4.876809e-07, 2.045437e-06},
    {-1.081014e-07, -3.343080e-07, 4.613252e-07, 2.009652e-06},
    {7.179920e-09, -4.755913e-07, -1.466898e-07, 1.985710e-06},
    {-9.730611e-08, -2.770878e-07, 3.202411e-07, 1.946958e-06},
    {3.891737e-08, -4.496342e-07, -5.177131e-07, 1.907890e-06},
    {-7.189526e-08, -2.749047e-07, 1.905569e-07, 1.865919e-06},
    {-8.595351e-08, -2.360487e-07, 3.014023e-07, 1.825170e-06},
    {-2.360897e-08, -3.443337e-07, 4.113184e-08, 1.785674e-06},
    {-1.258009e-08, -3.818483e-07, -1.028681e-07, 1.747686e-06},
    {-1.986728e-08, -3.676514e-07, 8.991679e-08, 1.698818e-06},
    {-1.294941e-08, -3.384118e-07, -8.703985e-08, 1.666538e-06},
    {3.912969e-08, -3.242496e-07, -4.068028e-07, 1.610860e-06},
    {-5.181820e-08, -3.723134e-07, 3.309259e-07, 1.570254e-06},
    {1.895314e-08, -2.884879e-07, -2.779753e-07, 1.515346e-06},
    {2.644100e-08, -3.670325e-07, -3.066457e-07, 1.470902e-06},
    {-8.630574e-09, -1.863863e-07, -1.949348e-08, 1.416194e-06},
    {-3.997860e-08, -2.907486e-07, 3.622549e-07, 1.376365e-06},
    {3.471776e-08, -2.667411e-07, -3.705939e-07, 1.322296e-06},
    {6.306037e-09, -1.889144e-07, -6.334535e-08, 1.263145e-06},
    {6.975190e-08, -1.368975e-07, -3.926301e-07, 1.218328e-06},
    {1.147354e-08, -1.882569e-07, -1.670299e-07, 1.162214e-06},
    {-4.835337e-08, -1.950612e-07, 1.297799e-07, 1.114924e-06},
    {1.242255e-08, -2.422531e-07, -2.127558e-07, 1.063263e-06},
    {-4.440768e-08, -1.854785e-07, 2.336319e-07, 9.964803e-07},
    {4.526424e-08, -1.243251e-07, -2.041899e-07, 9.460589e-07},
    {2.870757e-08, -1.574565e-07, -3.368873e-07, 8.892269e-07},
    {-6.072337e-08, -1.487890e-07, 3.135146e-07, 8.350115e-07},
    {-2.630482e-08, -2.040297e-07, 7.604805e-08, 7.691099e-07},
    {-4.661804e-08, -1.955383e-07, 3.773130e-07, 7.109842e-07},
    {3.629191e-08, 2.684015e-09, -2.112145e-07, 6.609100e-07},
    {1.486121e-10, -1.941209e-07, -2.468012e-08, 5.876396e-07},
    {-1.568448e-08, -1.933337e-07, -1.135225e-08, 5.385634e-07},
    {-1.780991e-08, -1.090054e-07, 5.934740e-08, 4.813046e-07},
    {-7.147810e-08, -5.914126e-08, 4.305348e-07, 4.246654e-07},
    {8.533982e-08, -1.651506e-07, -5.730072e-07, 3.640865e-07},
    {2.713524e-08, -7.198775e-08, -3.237033e-07, 3.037509e-07},
    {-4.888349e-08, -1.419942e-07, 2.207570e-07, 2.492230e-07},
    {2.112973e-08, -1.857470e-08, -1.311137e-07, 1.814330e-07},
    {6.932392e-08, -6.907544e-08, -4.288627e-07, 1.324528e-07}
};

// x * y rounded toward zero (the FMUL.RZ in front of MUFU): the product is exact in double.
float mul_rz(float x, float y) {
  const double exact = static_cast<double>(x) * static_cast<double>(y);
  float rounded = static_cast<float>(exact);
  if (std::fabs(static_cast<double>(rounded)) > std::fabs(exact)) rounded = std::nextafter(rounded, 0.0f);
  return rounded;
}

// MUFU.SIN of `turn`, a position on the circle in units of 2^-25 revolutions.
float mufu_sin(uint32_t turn) {
  turn &= 0x1FFFFFFu;
  const uint32_t quadrant = turn >> 23;
  uint32_t x = turn & 0x7FFFFFu;    // offset within the quadrant
  if (quadrant & 1u) x = 0x7FFFFFu - x;  // odd quadrants mirror the first
  const int segment = static_cast<int>(x >> 17);
  const double t = static_cast<double>(x - (static_cast<uint32_t>(segment) << 17)) / 131072.0 - 0.5;
  const double* c = kSinErrorCubic[segment];
  const double value = std::sin(2 * std::numbers::pi * static_cast<double>(x) / 33554432.0) +
                       ((c[3] * t + c[2]) * t + c[1]) * t + c[0];
  return static_cast<float>(quadrant >= 2 ? -value : value);
}

}  // namespace

float gpu_logf(float a) {
  // libdevice __nv_logf: a = m * 2^e with m in [2/3, 4/3), log1p(m - 1) by a degree-10
  // polynomial evaluated with FMAs. Only positive finite inputs occur here.
  float e_adjust = 0.0f;
  if (a < bits_to_float(0x00800000u)) {  // subnormal: scale by 2^23
    a *= bits_to_float(0x4B000000u);
    e_adjust = -23.0f;
  }
  const int32_t bits = static_cast<int32_t>(float_to_bits(a));
  const int32_t exponent = (bits - 0x3f2aaaab) & static_cast<int32_t>(0xff800000u);
  const float e = std::fmaf(static_cast<float>(exponent), bits_to_float(0x34000000u), e_adjust);
  const float f = bits_to_float(static_cast<uint32_t>(bits - exponent)) - 1.0f;
  float p = std::fmaf(bits_to_float(0xBE055027u), f, bits_to_float(0x3E1039F6u));
  for (uint32_t c : {0xBDF8CDCCu, 0x3E0F2955u, 0xBE2AD8B9u, 0x3E4CED0Bu, 0xBE7FFF22u, 0x3EAAAA78u, 0xBF000000u}) {
    p = std::fmaf(p, f, bits_to_float(c));
  }
  p = f * p;
  p = std::fmaf(p, f, f);
  return std::fmaf(e, bits_to_float(0x3F317218u), p);  // + e * ln 2
}

void gpu_sincosf(float x, float* sin_out, float* cos_out) {
  // __sincosf: r = x / (2 pi) rounded toward zero, then MUFU.SIN / MUFU.COS, which work on
  // r truncated to 25 fractional bits; cos(r) is sin(r + 1/4).
  const float r = mul_rz(std::fabs(x), 0.15915494f);
  const uint32_t turn = static_cast<uint32_t>(static_cast<uint64_t>(std::floor(static_cast<double>(r) * 33554432.0)) & 0x1FFFFFFu);
  const float s = mufu_sin(turn);
  *sin_out = x < 0 ? -s : s;
  *cos_out = mufu_sin(turn + (1u << 23));
}

}  // namespace sd
