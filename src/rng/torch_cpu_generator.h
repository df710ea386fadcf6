// PyTorch's CPU generator reproduced: mt19937 seeded like at::mt19937, uniforms derived
// like at::uniform_real_distribution, and randn filled like aten's normal_kernel (vectorised
// AVX2 Box-Muller for >= 16 elements, cached scalar Box-Muller in double below that).
#pragma once

#include <cstdint>
#include <optional>

#include "rng/noise.h"

namespace sd {

// The 32-bit Mersenne Twister (MT19937), seeded with the low 32 bits of the seed.
class Mt19937 {
 public:
  explicit Mt19937(uint32_t seed);
  uint32_t next_u32();
  // Two draws combined (first << 32) | second, as CPUGeneratorImpl::random64().
  uint64_t next_u64();

 private:
  void regenerate();
  uint32_t state_[624];
  int index_ = 624;
};

class TorchCpuGenerator final : public NoiseGenerator {
 public:
  explicit TorchCpuGenerator(uint64_t seed);
  NoiseSource source() const override { return NoiseSource::kTorchCpu; }
  uint64_t seed() const override { return seed_; }
  void fill_randn(float* out, int64_t n) override;

 private:
  float uniform_float();    // [0, 1) with 24 random bits
  double uniform_double();  // [0, 1) with 53 random bits
  double normal_double();   // at::normal_distribution<double>, with its cached second value
  void fill_vectorised(float* out, int64_t n);

  uint64_t seed_;
  Mt19937 engine_;
  std::optional<double> next_double_normal_;
};

}  // namespace sd
