// The split-K implicit-GEMM convolution (src/backend/cuda/conv_splitk.cu), forced with
// SDSERVE_CUDA_SPLITK_CONV=2 and each tile / split configuration, against the CPU backend's
// conv2d_fused on the same rounded inputs: SD 1.5 small-level shapes, stride 2, 1x1, odd sizes.
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

struct SplitKCase {
  const char* name;
  int64_t b, h, w, cin, cout;
  int k, stride;
  bool bias, row, residual;
  const char* tile;    // SDSERVE_CUDA_SPLITK_TILE ("" = heuristic)
  const char* splits;  // SDSERVE_CUDA_SPLITK_SPLITS ("" = heuristic)
  DType dtype;
  const char* cluster = "";  // SDSERVE_CUDA_SPLITK_CLUSTER: "1" slices summed in a cluster, "0" by a kernel
};

class GpuConvSplitK : public ::testing::TestWithParam<SplitKCase> {};

TEST_P(GpuConvSplitK, MatchesCpuAndIsDeterministic) {
  SD_REQUIRE_GPU();
  const SplitKCase c = GetParam();
  const int pad = c.k / 2;
  const int64_t ho = (c.h + 2 * pad - c.k) / c.stride + 1, wo = (c.w + 2 * pad - c.k) / c.stride + 1;
  const float wr = 1.f / std::sqrt(static_cast<float>(c.cin * c.k * c.k));
  const std::vector<Tensor> host = {
      quantize(random_tensor({c.b, c.h, c.w, c.cin}, 501, -2.f, 3.f), c.dtype),
      quantize(random_tensor({c.cout, c.k, c.k, c.cin}, 502, -wr, wr), c.dtype),
      quantize(random_tensor({c.cout}, 503), c.dtype),
      quantize(random_tensor({c.b, c.cout}, 504), c.dtype),
      quantize(random_tensor({c.b, ho, wo, c.cout}, 505), c.dtype)};
  const auto conv = [&](Backend& be, const std::vector<Tensor>& d) {
    return be.conv2d_fused(d[0], d[1], c.bias ? d[2] : Tensor(), c.stride, pad, c.row ? d[3] : Tensor(),
                           c.residual ? d[4] : Tensor());
  };
  Backend& gpu = gpu_backend(c.dtype);
  Backend& cpu = cpu_reference_backend();
  std::vector<Tensor> dg, dc;
  for (const Tensor& t : host) {
    dg.push_back(gpu.upload(t));
    dc.push_back(cpu.upload(t));
  }
  const Tensor want = cpu.download(conv(cpu, dc));
  Tensor got, again;
  {
    ScopedEnv mode("SDSERVE_CUDA_SPLITK_CONV", "2");
    ScopedEnv tile("SDSERVE_CUDA_SPLITK_TILE", c.tile);
    ScopedEnv splits("SDSERVE_CUDA_SPLITK_SPLITS", c.splits);
    ScopedEnv cluster("SDSERVE_CUDA_SPLITK_CLUSTER", c.cluster);
    got = gpu.download(conv(gpu, dg));
    again = gpu.download(conv(gpu, dg));
  }
  Tensor cudnn;
  {
    ScopedEnv mode("SDSERVE_CUDA_SPLITK_CONV", "0");
    cudnn = gpu.download(conv(gpu, dg));
  }
  ASSERT_TRUE(gpu.synchronize().ok());
  ASSERT_EQ(got.shape(), want.shape()) << c.name;
  const double rel = relative_l2(got, want), rel_cudnn = relative_l2(got, cudnn);
  std::printf("  %-34s vs CPU rel_l2 %.2e max_abs %.2e | vs cuDNN rel_l2 %.2e\n", c.name, rel,
              max_abs_diff(got, want), rel_cudnn);
  const double tol = c.dtype == DType::kBF16 ? 1e-2 : 2e-3;
  EXPECT_LE(rel, tol) << c.name;
  EXPECT_LE(rel_cudnn, tol) << c.name;
  EXPECT_EQ(max_abs_diff(got, again), 0.0) << c.name << ": two runs differ";
}

std::string case_name(const ::testing::TestParamInfo<SplitKCase>& info) { return info.param.name; }

INSTANTIATE_TEST_SUITE_P(
    Shapes, GpuConvSplitK,
    ::testing::Values(
        // name, b, h, w, cin, cout, k, stride, bias, row, residual, tile, splits, dtype
        SplitKCase{"l8_resnet_conv2", 2, 8, 8, 1280, 1280, 3, 1, true, false, true, "", "", DType::kF16},
        SplitKCase{"l8_conv2_global", 2, 8, 8, 1280, 1280, 3, 1, true, false, true, "", "13", DType::kF16, "0"},
        SplitKCase{"l8_conv1_row_cluster7", 2, 8, 8, 1280, 1280, 3, 1, false, true, false, "128x64", "7", DType::kF16,
                   "1"},
        SplitKCase{"l8_concat_2560", 2, 8, 8, 2560, 1280, 3, 1, true, true, true, "64x128", "", DType::kF16},
        SplitKCase{"l8_concat_2560_c16", 2, 8, 8, 2560, 1280, 3, 1, true, true, true, "128x128", "16", DType::kF16,
                   "1"},
        SplitKCase{"l16_downsample_s2", 2, 16, 16, 1280, 1280, 3, 2, true, false, false, "", "", DType::kF16},
        SplitKCase{"l16_resnet_nosplit", 2, 16, 16, 1280, 1280, 3, 1, true, false, true, "128x128", "1", DType::kF16},
        SplitKCase{"odd_7x9_bn64", 3, 7, 9, 128, 192, 3, 1, true, true, true, "64x64", "3", DType::kF16, "0"},
        SplitKCase{"odd_7x9_cluster", 3, 7, 9, 128, 192, 3, 1, true, true, true, "128x64", "5", DType::kF16, "1"},
        SplitKCase{"odd_s2_5x11", 1, 5, 11, 192, 320, 3, 2, true, false, false, "128x64", "", DType::kF16},
        SplitKCase{"k1_shortcut", 2, 8, 8, 640, 320, 1, 1, true, false, true, "", "", DType::kF16},
        SplitKCase{"many_splits_uneven", 1, 8, 8, 1280, 1280, 3, 1, false, false, false, "64x64", "37", DType::kF16},
        SplitKCase{"l8_bf16", 2, 8, 8, 1280, 1280, 3, 1, true, true, true, "", "", DType::kBF16},
        SplitKCase{"l8_bf16_global", 2, 8, 8, 1280, 1280, 3, 1, true, true, true, "64x128", "9", DType::kBF16, "0"},
        SplitKCase{"l32_bf16_nosplit", 2, 32, 32, 640, 640, 3, 1, true, false, false, "128x128", "1",
                   DType::kBF16}),
    case_name);

// The timed choice (mode 1, the default) must give the same values as either path it picks.
TEST(GpuConvSplitKChoice, TimedChoiceMatchesCpu) {
  SD_REQUIRE_GPU();
  Backend& gpu = gpu_backend(DType::kF16);
  Backend& cpu = cpu_reference_backend();
  const float wr = 1.f / std::sqrt(1280.f * 9.f);
  const std::vector<Tensor> host = {quantize(random_tensor({2, 8, 8, 1280}, 511, -2.f, 3.f), DType::kF16),
                                    quantize(random_tensor({1280, 3, 3, 1280}, 512, -wr, wr), DType::kF16),
                                    quantize(random_tensor({1280}, 513), DType::kF16)};
  ScopedEnv mode("SDSERVE_CUDA_SPLITK_CONV", "1");
  const Tensor want = cpu.download(cpu.conv2d(cpu.upload(host[0]), cpu.upload(host[1]), cpu.upload(host[2]), 1, 1));
  const Tensor x = gpu.upload(host[0]), w = gpu.upload(host[1]), b = gpu.upload(host[2]);
  const Tensor first = gpu.download(gpu.conv2d(x, w, b, 1, 1));   // times the candidates
  const Tensor second = gpu.download(gpu.conv2d(x, w, b, 1, 1));  // runs the chosen one
  ASSERT_TRUE(gpu.synchronize().ok());
  EXPECT_LE(relative_l2(first, want), 2e-3);
  EXPECT_LE(relative_l2(second, want), 2e-3);
}

}  // namespace
}  // namespace sd::testing
