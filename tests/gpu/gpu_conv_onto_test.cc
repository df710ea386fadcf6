// conv2d_onto (the ResNet block's conv2 accumulated onto its shortcut: cuDNN with beta = 1 writing
// into the accumulator's memory) against the CPU backend's conv + add on the same rounded inputs:
// SD 1.5 shapes with our own convolutions switched off (so cuDNN runs them), odd sizes, bf16; and
// the default timed choice (accumulate or conv + add) gives the same values.
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

struct OntoCase {
  const char* name;
  int64_t b, h, w, cin, cout;
  int k, stride;
  DType dtype;
};

class GpuConvOnto : public ::testing::TestWithParam<OntoCase> {};

TEST_P(GpuConvOnto, MatchesCpuInPlaceAndRepeatable) {
  SD_REQUIRE_GPU();
  const OntoCase c = GetParam();
  const int pad = c.k / 2;
  const int64_t ho = (c.h + 2 * pad - c.k) / c.stride + 1, wo = (c.w + 2 * pad - c.k) / c.stride + 1;
  const float wr = 1.f / std::sqrt(static_cast<float>(c.cin * c.k * c.k));
  const std::vector<Tensor> host = {quantize(random_tensor({c.b, c.h, c.w, c.cin}, 701, -2.f, 3.f), c.dtype),
                                    quantize(random_tensor({c.cout, c.k, c.k, c.cin}, 702, -wr, wr), c.dtype),
                                    quantize(random_tensor({c.b, ho, wo, c.cout}, 703, -4.f, 4.f), c.dtype)};
  Backend& gpu = gpu_backend(c.dtype);
  Backend& cpu = cpu_reference_backend();
  const Tensor want = cpu.download(cpu.conv2d_fused(cpu.upload(host[0]), cpu.upload(host[1]), Tensor(), c.stride,
                                                    pad, Tensor(), cpu.upload(host[2])));
  const Tensor x = gpu.upload(host[0]), w = gpu.upload(host[1]);
  // Our split-K / wgmma convolutions off: cuDNN runs every shape here, accumulating (forced, not
  // timed against conv + add).
  ScopedEnv splitk("SDSERVE_CUDA_SPLITK_CONV", "0");
  ScopedEnv wgmma("SDSERVE_CUDA_WGMMA_CONV", "0");
  ScopedEnv forced("SDSERVE_CUDA_CONV_ONTO", "2");
  const auto onto = [&](bool* in_place) {
    const Tensor acc = gpu.upload(host[2]);  // a fresh accumulator, given up to the op
    const void* mem = acc.raw();
    const Tensor y = gpu.conv2d_onto(x, w, c.stride, pad, acc);
    *in_place = y.raw() == mem;
    return gpu.download(y);
  };
  bool first_in_place = false, second_in_place = false;
  const Tensor first = onto(&first_in_place);    // tunes the accumulating plan on a scratch output
  const Tensor second = onto(&second_in_place);  // the chosen plan
  ASSERT_TRUE(gpu.synchronize().ok());
  ASSERT_EQ(first.shape(), want.shape()) << c.name;
  const double rel = relative_l2(first, want);
  std::printf("  %-28s vs CPU rel_l2 %.2e max_abs %.2e, in place %d/%d\n", c.name, rel, max_abs_diff(first, want),
              first_in_place, second_in_place);
  const double tol = c.dtype == DType::kBF16 ? 1e-2 : 2e-3;
  EXPECT_LE(rel, tol) << c.name;
  EXPECT_TRUE(first_in_place && second_in_place) << c.name << ": the result did not take the accumulator's memory";
  EXPECT_EQ(max_abs_diff(first, second), 0.0) << c.name << ": the tuning call and the next differ";
}

std::string case_name(const ::testing::TestParamInfo<OntoCase>& info) { return info.param.name; }

INSTANTIATE_TEST_SUITE_P(
    Shapes, GpuConvOnto,
    ::testing::Values(
        // name, b, h, w, cin, cout, k, stride, dtype
        OntoCase{"l64_b1_320", 2, 64, 64, 320, 320, 3, 1, DType::kF16},
        OntoCase{"l32_b2_640", 4, 32, 32, 640, 640, 3, 1, DType::kF16},
        OntoCase{"l16_b1_1280", 2, 16, 16, 1280, 1280, 3, 1, DType::kF16},
        OntoCase{"vae_b1_256", 1, 64, 64, 256, 256, 3, 1, DType::kF16},
        OntoCase{"odd_3x7x9_128_to_192", 3, 7, 9, 128, 192, 3, 1, DType::kF16},
        OntoCase{"l32_bf16", 2, 32, 32, 640, 640, 3, 1, DType::kBF16}),
    case_name);

// The model's use: a block whose shortcut output is the accumulator, replayed in a CUDA graph —
// the same values as eager, and as conv2d_fused's conv + separate add.
TEST(GpuConvOntoGraph, ReplayMatchesEagerAndSeparateAdd) {
  SD_REQUIRE_GPU();
  Backend& gpu = gpu_backend(DType::kF16);
  const float wr = 1.f / std::sqrt(320.f * 9.f);
  const Tensor x = gpu.upload(quantize(random_tensor({2, 64, 64, 320}, 711, -2.f, 3.f), DType::kF16));
  const Tensor w = gpu.upload(quantize(random_tensor({320, 3, 3, 320}, 712, -wr, wr), DType::kF16));
  const Tensor sw = gpu.upload(quantize(random_tensor({320, 640}, 713, -0.05f, 0.05f), DType::kF16));
  const Tensor sb = gpu.upload(quantize(random_tensor({320}, 714), DType::kF16));
  const Tensor in = gpu.upload(quantize(random_tensor({2, 64, 64, 640}, 715, -2.f, 2.f), DType::kF16));
  ScopedEnv splitk("SDSERVE_CUDA_SPLITK_CONV", "0");
  ScopedEnv wgmma("SDSERVE_CUDA_WGMMA_CONV", "0");
  ScopedEnv forced("SDSERVE_CUDA_CONV_ONTO", "2");
  const auto block = [&] { return gpu.conv2d_onto(x, w, 1, 1, gpu.linear(in, sw, sb)); };
  const Tensor eager = gpu.download(block());
  const Tensor separate = gpu.download(gpu.conv2d_fused(x, w, Tensor(), 1, 1, Tensor(), gpu.linear(in, sw, sb)));
  EXPECT_LE(relative_l2(eager, separate), 2e-3);
  if (!gpu.supports_capture()) return;
  Tensor out;
  auto graph = gpu.capture([&] { out = block(); });
  for (int i = 0; i < 3; ++i) {
    graph->replay();
    EXPECT_EQ(max_abs_diff(eager, gpu.download(out)), 0.0) << "replay " << i;
  }
  ASSERT_TRUE(gpu.synchronize().ok());
}

// The default (SDSERVE_CUDA_CONV_ONTO=1): the first call times accumulating against conv + add and
// keeps one; either way the values are the conv plus the accumulator's.
TEST(GpuConvOntoChoice, TimedChoiceMatchesCpu) {
  SD_REQUIRE_GPU();
  Backend& gpu = gpu_backend(DType::kF16);
  Backend& cpu = cpu_reference_backend();
  const float wr = 1.f / std::sqrt(640.f * 9.f);
  const std::vector<Tensor> host = {quantize(random_tensor({2, 32, 32, 640}, 721, -2.f, 3.f), DType::kF16),
                                    quantize(random_tensor({640, 3, 3, 640}, 722, -wr, wr), DType::kF16),
                                    quantize(random_tensor({2, 32, 32, 640}, 723, -4.f, 4.f), DType::kF16)};
  const Tensor want = cpu.download(
      cpu.conv2d_fused(cpu.upload(host[0]), cpu.upload(host[1]), Tensor(), 1, 1, Tensor(), cpu.upload(host[2])));
  ScopedEnv splitk("SDSERVE_CUDA_SPLITK_CONV", "0");
  ScopedEnv wgmma("SDSERVE_CUDA_WGMMA_CONV", "0");
  ScopedEnv timed("SDSERVE_CUDA_CONV_ONTO", "1");
  const Tensor x = gpu.upload(host[0]), w = gpu.upload(host[1]);
  for (int i = 0; i < 3; ++i) {  // the first call chooses
    const Tensor got = gpu.download(gpu.conv2d_onto(x, w, 1, 1, gpu.upload(host[2])));
    EXPECT_LE(relative_l2(got, want), 2e-3) << "call " << i;
  }
  ASSERT_TRUE(gpu.synchronize().ok());
}

}  // namespace
}  // namespace sd::testing
