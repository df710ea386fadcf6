// Eight-lane f32 vectors through GCC vector extensions, for the reductions the
// auto-vectoriser will not touch without fast-math (row max, exp-and-sum). They compile to
// AVX2 in the x86-64-v3/v4 clones of SD_CPU_KERNEL functions and to SSE pairs otherwise.
#pragma once

#include <cstdint>
#include <cstring>

namespace sd::cpu {

typedef float f32x8 __attribute__((vector_size(32)));
typedef int32_t i32x8 __attribute__((vector_size(32)));

__attribute__((always_inline)) inline f32x8 load8(const float* p) {
  f32x8 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
__attribute__((always_inline)) inline void store8(float* p, f32x8 v) { std::memcpy(p, &v, sizeof(v)); }
// Broadcast through a shuffle: GCC turns it into vbroadcastss, while the plain {x, x, ...}
// initialiser became a chain of vinsertps (2x slower attention). GCC >= 12 and clang.
__attribute__((always_inline)) inline f32x8 splat8(float x) {
  const f32x8 v{x};
  return __builtin_shufflevector(v, v, 0, 0, 0, 0, 0, 0, 0, 0);
}
__attribute__((always_inline)) inline f32x8 max8(f32x8 a, f32x8 b) { return a > b ? a : b; }
__attribute__((always_inline)) inline float hmax8(f32x8 v) {
  float m = v[0];
  for (int l = 1; l < 8; ++l) m = v[l] > m ? v[l] : m;
  return m;
}
__attribute__((always_inline)) inline double hsum8(f32x8 v) {
  double s = 0;
  for (int l = 0; l < 8; ++l) s += static_cast<double>(v[l]);
  return s;
}

// e^x lane-wise; the same polynomial and range reduction as fast_exp in cpu_math.h.
__attribute__((always_inline)) inline f32x8 exp8(f32x8 x) {
  const f32x8 lo = splat8(-87.33f), hi = splat8(88.f);
  x = x < lo ? lo : x;
  x = x > hi ? hi : x;
  const f32x8 magic = splat8(12582912.f);
  const f32x8 n = (x * splat8(1.44269504088896341f) + magic) - magic;
  const f32x8 r = (x - n * splat8(0.693145751953125f)) - n * splat8(1.428606765330187e-06f);
  f32x8 p = splat8(1.f / 5040.f);
  p = p * r + splat8(1.f / 720.f);
  p = p * r + splat8(1.f / 120.f);
  p = p * r + splat8(1.f / 24.f);
  p = p * r + splat8(1.f / 6.f);
  p = p * r + splat8(0.5f);
  p = p * r + splat8(1.f);
  p = p * r + splat8(1.f);
  const i32x8 bits = (__builtin_convertvector(n, i32x8) + 127) << 23;
  f32x8 scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

}  // namespace sd::cpu
