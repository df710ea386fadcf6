// CUDA randn of PyTorch reproduced on the host. Thread t of the launch owns Philox
// subsequence t; its k-th curand_normal4 call yields the elements t + T*i + 4*T*k (i = 0..3,
// T = threads in the grid), exactly as distribution_elementwise_grid_stride_kernel stores them.
#include "rng/torch_cuda_generator.h"

#include <algorithm>
#include <cmath>

#include "backend/backend.h"
#include "rng/gpu_math.h"

namespace sd {

std::array<uint32_t, 4> philox4x32_10(std::array<uint32_t, 4> c, uint32_t key_lo, uint32_t key_hi) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;  // round multipliers
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;  // key schedule (Weyl) increments
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      key_lo += kW0;
      key_hi += kW1;
    }
    const uint64_t p0 = static_cast<uint64_t>(kM0) * c[0];
    const uint64_t p1 = static_cast<uint64_t>(kM1) * c[2];
    c = {static_cast<uint32_t>(p1 >> 32) ^ c[1] ^ key_lo, static_cast<uint32_t>(p1),
         static_cast<uint32_t>(p0 >> 32) ^ c[3] ^ key_hi, static_cast<uint32_t>(p0)};
  }
  return c;
}

namespace {

// curand's _curand_box_muller on the device: two 32-bit draws -> two normals.
void box_muller(uint32_t a, uint32_t b, float* first, float* second) {
  constexpr float kInv2Pow32 = 2.3283064e-10f;                // CURAND_2POW32_INV
  constexpr float kInv2Pow32x2Pi = 2.3283064e-10f * 6.2831855f;  // CURAND_2POW32_INV_2PI
  // nvcc contracts these multiply-adds into FMAs (the first one is exact either way).
  const float u = std::fmaf(static_cast<float>(a), kInv2Pow32, kInv2Pow32 / 2);
  const float v = std::fmaf(static_cast<float>(b), kInv2Pow32x2Pi, kInv2Pow32x2Pi / 2);
  const float s = std::sqrt(-2.0f * gpu_logf(u));
  float sin_v, cos_v;
  gpu_sincosf(v, &sin_v, &cos_v);
  *first = sin_v * s;
  *second = cos_v * s;
}

}  // namespace

TorchCudaGenerator::TorchCudaGenerator(uint64_t seed, const PhiloxLaunchConfig& launch)
    : seed_(seed), launch_(launch) {
  SD_ASSERT(launch.block_size > 0 && launch.sm_count > 0 && launch.max_threads_per_sm >= launch.block_size);
}

TorchCudaGenerator::Launch TorchCudaGenerator::launch_for(int64_t n) const {
  SD_ASSERT(n > 0);
  constexpr int64_t kUnroll = 4;
  // calc_execution_policy: one element per thread, grid capped at the resident-block count.
  const int64_t block = launch_.block_size;
  const int64_t max_grid =
      static_cast<int64_t>(launch_.sm_count) * (launch_.max_threads_per_sm / launch_.block_size);
  const int64_t grid = std::min((n + block - 1) / block, max_grid);
  const int64_t threads = block * grid;
  return Launch{threads, (n - 1) / (threads * kUnroll) + 1};
}

bool TorchCudaGenerator::fill_randn_device(Backend& backend, const Tensor& out, bool nchw_to_nhwc) {
  const int64_t n = out.numel();
  if (n == 0) return true;  // as fill_randn: the generator is not touched
  const Launch launch = launch_for(n);
  PhiloxRandn p;
  p.seed = seed_;
  p.offset = offset_;
  p.threads = launch.threads;
  p.nchw_to_nhwc = nchw_to_nhwc;
  if (!backend.randn_philox(out, p)) return false;
  offset_ += static_cast<uint64_t>(launch.iterations) * 4;
  return true;
}

void TorchCudaGenerator::fill_randn(float* out, int64_t n) {
  SD_ASSERT(n >= 0);
  if (n == 0) return;  // PyTorch returns before touching the generator
  constexpr int64_t kUnroll = 4;  // curand4_engine_calls: one curand_normal4 per iteration
  const auto [threads, iterations] = launch_for(n);
  const uint64_t offset = offset_;
  offset_ += static_cast<uint64_t>(iterations) * 4;  // already a multiple of 4

  const uint32_t key_lo = static_cast<uint32_t>(seed_), key_hi = static_cast<uint32_t>(seed_ >> 32);
  for (int64_t t = 0; t < threads; ++t) {
    for (int64_t k = 0; k < iterations; ++k) {
      const int64_t first = t + k * threads * kUnroll;
      if (first >= n) break;
      // curand_init(seed, subsequence = t, offset): counter = (offset / 4 + k, t).
      const uint64_t low = offset / 4 + static_cast<uint64_t>(k);
      const auto r = philox4x32_10({static_cast<uint32_t>(low), static_cast<uint32_t>(low >> 32),
                                    static_cast<uint32_t>(t), static_cast<uint32_t>(static_cast<uint64_t>(t) >> 32)},
                                   key_lo, key_hi);
      float normals[4];
      box_muller(r[0], r[1], &normals[0], &normals[1]);
      box_muller(r[2], r[3], &normals[2], &normals[3]);
      for (int64_t i = 0; i < kUnroll; ++i) {
        const int64_t index = first + i * threads;
        if (index < n) out[index] = normals[i];
      }
    }
  }
}

}  // namespace sd
