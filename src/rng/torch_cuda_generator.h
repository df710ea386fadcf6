// PyTorch's CUDA generator reproduced on the host: Philox4x32-10 with curand's state layout
// (key = seed, subsequence = global thread index, offset = the generator's philox offset) and
// the grid-stride launch of aten's normal kernel (unroll 4, curand_normal4 Box-Muller).
#pragma once

#include <array>
#include <cstdint>

#include "rng/noise.h"

namespace sd {

// One Philox4x32-10 block: 10 rounds over a 128-bit counter with a 64-bit key.
std::array<uint32_t, 4> philox4x32_10(std::array<uint32_t, 4> counter, uint32_t key_lo, uint32_t key_hi);

class TorchCudaGenerator final : public NoiseGenerator {
 public:
  TorchCudaGenerator(uint64_t seed, const PhiloxLaunchConfig& launch);
  NoiseSource source() const override { return NoiseSource::kTorchCuda; }
  uint64_t seed() const override { return seed_; }
  void fill_randn(float* out, int64_t n) override;
  // Through Backend::randn_philox (the CUDA backend); the offset advances only on success.
  bool fill_randn_device(Backend& backend, const Tensor& out, bool nchw_to_nhwc) override;
  // The generator's philox_offset_per_thread (advanced by every call, as in PyTorch).
  uint64_t offset() const { return offset_; }

  // PyTorch's launch for n elements: threads in the grid and curand_normal4 draws per thread.
  struct Launch {
    int64_t threads = 0;
    int64_t iterations = 0;
  };
  Launch launch_for(int64_t n) const;

 private:
  uint64_t seed_;
  PhiloxLaunchConfig launch_;
  uint64_t offset_ = 0;
};

}  // namespace sd
