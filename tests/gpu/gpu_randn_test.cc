// GPU tests of Backend::randn_philox and rng/device_noise.h: latents drawn on the device
// equal the host model of torch's CUDA randn (rng/torch_cuda_generator.cc) element for element
// in f32 (up to the modelled last-bit __sincosf difference), NHWC placement and offsets included.
#include <gtest/gtest.h>

#include <cmath>
#include <span>
#include <string>
#include <vector>

#include "gpu_test_util.h"
#include "rng/device_noise.h"
#include "rng/torch_cuda_generator.h"

namespace sd {
namespace {

using testing::gpu_backend;
using testing::quantize;

struct Diff {
  double max_abs = 0;
  double exact_fraction = 0;
};

Diff compare(const Tensor& got, const Tensor& want) {
  EXPECT_EQ(got.shape(), want.shape());
  Diff d;
  int64_t exact = 0;
  for (int64_t i = 0; i < want.numel(); ++i) {
    const float a = got.f32()[i], b = want.f32()[i];
    exact += a == b;
    d.max_abs = std::max(d.max_abs, static_cast<double>(std::fabs(a - b)));
  }
  d.exact_fraction = static_cast<double>(exact) / static_cast<double>(want.numel());
  return d;
}

struct LatentShape {
  int64_t h, w, c;
};
// Small, odd, SD 1.5 (64x64), above one wave of 270336 threads (uses .y of curand_normal4) and
// above 4 * 270336 (two grid-stride iterations per thread).
const std::vector<LatentShape> kShapes = {{8, 8, 4}, {13, 7, 3}, {64, 64, 4}, {272, 256, 4}, {544, 512, 4}};

TEST(GpuRandn, F32LatentsEqualTheHostModelAcrossConsecutiveDraws) {
  SD_REQUIRE_GPU();
  Backend& be = gpu_backend(DType::kF16);
  for (const LatentShape& s : kShapes) {
    for (uint64_t seed : {uint64_t{0}, uint64_t{42}, uint64_t{4294967297ull}}) {
      TorchCudaGenerator gen(seed, PhiloxLaunchConfig{}), ref(seed, PhiloxLaunchConfig{});
      const std::string what = std::to_string(s.h) + "x" + std::to_string(s.w) + "x" + std::to_string(s.c) +
                               " seed " + std::to_string(seed);
      for (int call = 0; call < 3; ++call) {
        const Tensor x = randn_nhwc(be, gen, s.h, s.w, s.c, DType::kF32);  // [1, h, w, c]
        ASSERT_EQ(x.device(), be.device());
        const Tensor want = nchw_to_nhwc(ref.randn({1, s.c, s.h, s.w}));
        const Diff d = compare(be.download(x), want);
        EXPECT_LE(d.max_abs, 1e-6) << what << " call " << call;
        EXPECT_GT(d.exact_fraction, 0.5) << what << " call " << call;  // the rest: one sincos ulp
        EXPECT_EQ(gen.offset(), ref.offset()) << what;
        if (call == 0 && seed == 42) {
          std::printf("[ randn ] %s: max |gpu - host model| %.3g, %.1f%% bitwise equal\n", what.c_str(), d.max_abs,
                      100 * d.exact_fraction);
        }
      }
    }
  }
}

TEST(GpuRandn, FlatDrawEqualsFillRandn) {
  SD_REQUIRE_GPU();
  Backend& be = gpu_backend(DType::kF16);
  for (int64_t n : {int64_t{1}, int64_t{5}, int64_t{1000}, int64_t{300000}, int64_t{1200000}}) {
    TorchCudaGenerator gen(7, PhiloxLaunchConfig{}), ref(7, PhiloxLaunchConfig{});
    const Tensor out = be.empty({n}, DType::kF32);
    ASSERT_TRUE(gen.fill_randn_device(be, out, /*nchw_to_nhwc=*/false));
    const Diff d = compare(be.download(out), ref.randn({n}));
    EXPECT_LE(d.max_abs, 1e-6) << n;
    EXPECT_EQ(gen.offset(), ref.offset()) << n;
  }
}

TEST(GpuRandn, HalfOutputsAreTheF32DrawRoundedOnce) {
  SD_REQUIRE_GPU();
  for (DType dtype : {DType::kF16, DType::kBF16}) {
    Backend& be = gpu_backend(dtype);
    TorchCudaGenerator gen(1234, PhiloxLaunchConfig{}), ref(1234, PhiloxLaunchConfig{});
    const Tensor x = randn_nhwc(be, gen, 64, 64, 4);  // compute dtype
    ASSERT_EQ(x.dtype(), dtype);
    const Tensor want = quantize(nchw_to_nhwc(ref.randn({1, 4, 64, 64})), dtype);
    const Diff d = compare(be.download(x), want);
    // A one-ulp f32 difference changes the rounding only right at a half-way point.
    EXPECT_GT(d.exact_fraction, 0.999) << dtype_name(dtype);
    EXPECT_LE(d.max_abs, dtype == DType::kF16 ? 4e-3 : 3.2e-2) << dtype_name(dtype);
  }
}

TEST(GpuRandn, BatchRowsComeFromTheirOwnGenerators) {
  SD_REQUIRE_GPU();
  Backend& be = gpu_backend(DType::kF16);
  TorchCudaGenerator g0(10, PhiloxLaunchConfig{}), g1(11, PhiloxLaunchConfig{});
  TorchCudaGenerator r0(10, PhiloxLaunchConfig{}), r1(11, PhiloxLaunchConfig{});
  NoiseGenerator* gens[2] = {&g0, &g1};
  const Tensor x = be.download(randn_nhwc(be, std::span<NoiseGenerator* const>(gens), 96, 80, 4, DType::kF32));
  ASSERT_EQ(x.shape(), (Shape{2, 96, 80, 4}));
  EXPECT_LE(compare(x.slice_rows(0, 1), nchw_to_nhwc(r0.randn({1, 4, 96, 80}))).max_abs, 1e-6);
  EXPECT_LE(compare(x.slice_rows(1, 2), nchw_to_nhwc(r1.randn({1, 4, 96, 80}))).max_abs, 1e-6);
}

TEST(GpuRandn, CpuGeneratorStillDrawsOnTheHost) {
  SD_REQUIRE_GPU();
  Backend& be = gpu_backend(DType::kF16);
  auto gen = make_noise_generator(NoiseSource::kTorchCpu, 3), ref = make_noise_generator(NoiseSource::kTorchCpu, 3);
  const Tensor x = be.download(randn_nhwc(be, *gen, 16, 16, 4, DType::kF32));
  EXPECT_EQ(compare(x, nchw_to_nhwc(ref->randn({1, 4, 16, 16}))).max_abs, 0.0);
}

}  // namespace
}  // namespace sd
