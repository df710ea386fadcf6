// Factory and shared helpers of the seeded noise generators (see noise.h); the generators
// themselves live in torch_cpu_generator.cc and torch_cuda_generator.cc.
// Keeping this file tiny lets the pipeline depend on noise.h alone.
#include "rng/noise.h"

#include "rng/torch_cpu_generator.h"
#include "rng/torch_cuda_generator.h"

namespace sd {

const char* noise_source_name(NoiseSource source) {
  switch (source) {
    case NoiseSource::kTorchCpu: return "torch_cpu";
    case NoiseSource::kTorchCuda: return "torch_cuda";
  }
  return "?";
}

Tensor NoiseGenerator::randn(const Shape& shape) {
  Tensor out = Tensor::empty_host(shape, DType::kF32);
  fill_randn(out.f32(), out.numel());
  return out;
}

std::unique_ptr<NoiseGenerator> make_noise_generator(NoiseSource source, uint64_t seed,
                                                     const PhiloxLaunchConfig& launch) {
  switch (source) {
    case NoiseSource::kTorchCpu: return std::make_unique<TorchCpuGenerator>(seed);
    case NoiseSource::kTorchCuda: return std::make_unique<TorchCudaGenerator>(seed, launch);
  }
  SD_ASSERT(false, "unknown NoiseSource");
  return nullptr;
}

}  // namespace sd
