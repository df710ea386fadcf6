// The sub-pixel upsample's phase kernel (conv_subpixel.cc on conv_wgmma), forced with
// SDSERVE_CUDA_WGMMA_SUBPIXEL=2 and each tile / split configuration, against the CPU backend's
// conv2d_subpixel_upsample (the default path) and the GPU's default path on the same rounded inputs.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "backend/op_cases.h"
#include "gpu_test_util.h"
#include "scoped_env.h"

namespace sd::testing {
namespace {

struct SubpixelCase {
  const char* name;
  int64_t b, h, w, cin, c;  // x [B, H, W, Cin] -> y [B, 2H, 2W, C]
  bool bias;
  const char* bn;      // SDSERVE_CUDA_WGMMA_CONV_BN ("" = the first candidate's)
  const char* splits;  // SDSERVE_CUDA_WGMMA_CONV_SPLITS
  const char* bm;      // SDSERVE_CUDA_WGMMA_CONV_BM
  const char* dsmem;   // SDSERVE_CUDA_WGMMA_CONV_DSMEM
  DType dtype;
  bool cpu;  // also against the CPU backend (large shapes: the GPU default path only)
};

class GpuConvSubpixel : public ::testing::TestWithParam<SubpixelCase> {};

TEST_P(GpuConvSubpixel, MatchesDefaultPathAndIsDeterministic) {
  SD_REQUIRE_GPU();
  const SubpixelCase c = GetParam();
  const float wr = 1.f / std::sqrt(static_cast<float>(4 * c.cin));
  const std::vector<Tensor> host = {
      quantize(random_tensor({c.b, c.h, c.w, c.cin}, 701, -2.f, 3.f), c.dtype),  // x [B, H, W, Cin]
      quantize(random_tensor({4 * c.c, 2, 2, c.cin}, 702, -wr, wr), c.dtype),   // w_phases [4C, 2, 2, Cin]
      quantize(random_tensor({c.c}, 703), c.dtype)};                            // bias [C]
  const auto up = [&](Backend& be, const std::vector<Tensor>& d) {
    return be.conv2d_subpixel_upsample(d[0], d[1], c.bias ? d[2] : Tensor());
  };
  Backend& gpu = gpu_backend(c.dtype);
  std::vector<Tensor> dg;
  for (const Tensor& t : host) dg.push_back(gpu.upload(t));
  Tensor got, again, base;
  {
    ScopedEnv mode("SDSERVE_CUDA_WGMMA_SUBPIXEL", "2");
    ScopedEnv bn("SDSERVE_CUDA_WGMMA_CONV_BN", c.bn);
    ScopedEnv splits("SDSERVE_CUDA_WGMMA_CONV_SPLITS", c.splits);
    ScopedEnv bm("SDSERVE_CUDA_WGMMA_CONV_BM", c.bm);
    ScopedEnv dsmem("SDSERVE_CUDA_WGMMA_CONV_DSMEM", c.dsmem);
    got = gpu.download(up(gpu, dg));
    again = gpu.download(up(gpu, dg));
  }
  {
    ScopedEnv mode("SDSERVE_CUDA_WGMMA_SUBPIXEL", "0");
    base = gpu.download(up(gpu, dg));
  }
  ASSERT_TRUE(gpu.synchronize().ok());
  ASSERT_EQ(got.shape(), (Shape{c.b, 2 * c.h, 2 * c.w, c.c})) << c.name;
  const double tol = c.dtype == DType::kBF16 ? 1e-2 : 2e-3;
  const double rel_base = relative_l2(got, base);
  double rel = -1, max_abs = -1;
  if (c.cpu) {
    Backend& cpu = cpu_reference_backend();
    std::vector<Tensor> dc;
    for (const Tensor& t : host) dc.push_back(cpu.upload(t));
    const Tensor want = cpu.download(up(cpu, dc));
    rel = relative_l2(got, want);
    max_abs = max_abs_diff(got, want);
    EXPECT_LE(rel, tol) << c.name;
  }
  std::printf("  %-32s vs CPU rel_l2 %.2e max_abs %.2e | vs GPU default path rel_l2 %.2e\n", c.name, rel, max_abs,
              rel_base);
  EXPECT_LE(rel_base, tol) << c.name;
  EXPECT_EQ(max_abs_diff(got, again), 0.0) << c.name << ": two runs differ";
}

std::string case_name(const ::testing::TestParamInfo<SubpixelCase>& info) { return info.param.name; }

constexpr DType kF16 = DType::kF16, kBF16 = DType::kBF16;

INSTANTIATE_TEST_SUITE_P(
    Shapes, GpuConvSubpixel,
    ::testing::Values(
        // name, b, h, w, cin, c, bias, bn, splits, bm, dsmem, dtype, cpu
        SubpixelCase{"unet8", 2, 8, 8, 1280, 1280, true, "", "", "", "", kF16, true},
        SubpixelCase{"unet8_bn64_dsmem5", 2, 8, 8, 1280, 1280, true, "64", "5", "128", "1", kF16, true},
        SubpixelCase{"unet8_bn128_s6_partials", 2, 8, 8, 1280, 1280, true, "128", "6", "128", "0", kF16, true},
        SubpixelCase{"unet8_bm256_half_tile_dsmem4", 2, 8, 8, 1280, 1280, false, "160", "4", "256", "1", kF16, true},
        SubpixelCase{"unet8_nobias_nosplit", 2, 8, 8, 1280, 1280, false, "128", "1", "128", "0", kF16, true},
        SubpixelCase{"unet16", 2, 16, 16, 1280, 1280, true, "", "", "", "", kF16, true},
        SubpixelCase{"unet16_bn256_dsmem4", 2, 16, 16, 1280, 1280, true, "256", "4", "128", "1", kF16, true},
        SubpixelCase{"unet16_bm256_bn160_dsmem2", 2, 16, 16, 1280, 1280, true, "160", "2", "256", "1", kF16, true},
        SubpixelCase{"unet32", 2, 32, 32, 640, 640, true, "", "", "", "", kF16, true},
        SubpixelCase{"unet32_bm256_bn160_dsmem2", 2, 32, 32, 640, 640, true, "160", "2", "256", "1", kF16, true},
        SubpixelCase{"unet32_bn128_nosplit", 2, 32, 32, 640, 640, true, "128", "1", "128", "0", kF16, true},
        SubpixelCase{"vae64", 1, 64, 64, 512, 512, true, "", "", "", "", kF16, true},
        SubpixelCase{"vae64_bm256_bn128_s2_partials", 1, 64, 64, 512, 512, true, "128", "2", "256", "0", kF16, true},
        SubpixelCase{"vae128", 1, 128, 128, 512, 512, true, "", "", "", "", kF16, false},
        SubpixelCase{"vae256_falls_back", 1, 256, 256, 256, 256, true, "", "", "", "", kF16, false},
        SubpixelCase{"b16_unet8", 32, 8, 8, 1280, 1280, true, "", "", "", "", kF16, false},
        SubpixelCase{"b16_unet32_bm256_bn160", 32, 32, 32, 640, 640, true, "160", "1", "256", "0", kF16, false},
        SubpixelCase{"odd_3x4x8_c64_s3", 3, 4, 8, 128, 64, true, "64", "3", "128", "0", kF16, true},
        SubpixelCase{"odd_3x4x8_bm256_dsmem2", 3, 4, 8, 128, 128, true, "64", "2", "256", "1", kF16, true},
        SubpixelCase{"odd_1x16x8_nobias_dsmem2", 1, 16, 8, 192, 128, false, "128", "2", "128", "1", kF16, true},
        SubpixelCase{"odd_3x32x8_c64_partials", 3, 32, 8, 64, 64, true, "64", "3", "128", "0", kF16, true},
        SubpixelCase{"bf16_unet8", 2, 8, 8, 1280, 1280, true, "", "", "", "", kBF16, true},
        SubpixelCase{"bf16_odd_3x4x8_dsmem3", 3, 4, 8, 128, 192, true, "64", "3", "128", "1", kBF16, true},
        SubpixelCase{"bf16_unet32_bm256_nobias", 2, 32, 32, 640, 640, false, "128", "2", "256", "1", kBF16, true}),
    case_name);

// The timed choice (mode 1) gives the same values as whichever path it picks, first (timing)
// call and later ones.
TEST(GpuConvSubpixelChoice, TimedChoiceMatchesCpu) {
  SD_REQUIRE_GPU();
  Backend& gpu = gpu_backend(DType::kF16);
  Backend& cpu = cpu_reference_backend();
  const float wr = 1.f / std::sqrt(4 * 1280.f);
  const std::vector<Tensor> host = {quantize(random_tensor({2, 8, 8, 1280}, 711, -2.f, 3.f), DType::kF16),
                                    quantize(random_tensor({4 * 1280, 2, 2, 1280}, 712, -wr, wr), DType::kF16),
                                    quantize(random_tensor({1280}, 713), DType::kF16)};
  ScopedEnv mode("SDSERVE_CUDA_WGMMA_SUBPIXEL", "1");
  const Tensor want = cpu.download(
      cpu.conv2d_subpixel_upsample(cpu.upload(host[0]), cpu.upload(host[1]), cpu.upload(host[2])));
  const Tensor x = gpu.upload(host[0]), w = gpu.upload(host[1]), b = gpu.upload(host[2]);
  const Tensor first = gpu.download(gpu.conv2d_subpixel_upsample(x, w, b));   // times the candidates
  const Tensor second = gpu.download(gpu.conv2d_subpixel_upsample(x, w, b));  // runs the chosen one
  ASSERT_TRUE(gpu.synchronize().ok());
  EXPECT_LE(relative_l2(first, want), 2e-3);
  EXPECT_LE(relative_l2(second, want), 2e-3);
  EXPECT_EQ(max_abs_diff(first, second), 0.0);
}

}  // namespace
}  // namespace sd::testing
