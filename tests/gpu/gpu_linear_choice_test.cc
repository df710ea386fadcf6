// The backend's linear / linear_residual / linear_geglu with our Hopper GEMM forced
// (SDSERVE_CUDA_WGMMA_GEMM=2), never taken (0) and timed against cuBLASLt (1, the default): every
// mode against the CPU backend on the same rounded inputs, at SD 1.5 feed-forward / projection shapes.
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

enum class Op { kLinear, kResidual, kGeglu };

struct LinearCase {
  const char* name;
  int64_t m, k, n;  // x [m, k]; output [m, n] (GEGLU: w [2n, k])
  Op op;
  bool bias;
  DType dtype;
};

class GpuLinearChoice : public ::testing::TestWithParam<LinearCase> {};

TEST_P(GpuLinearChoice, EveryModeMatchesCpu) {
  SD_REQUIRE_GPU();
  const LinearCase c = GetParam();
  const int64_t rows_w = c.op == Op::kGeglu ? 2 * c.n : c.n;
  const float wr = 1.f / std::sqrt(static_cast<float>(c.k));
  const std::vector<Tensor> host = {quantize(random_tensor({c.m, c.k}, 601, -2.f, 2.f), c.dtype),
                                    quantize(random_tensor({rows_w, c.k}, 602, -wr, wr), c.dtype),
                                    quantize(random_tensor({rows_w}, 603), c.dtype),
                                    quantize(random_tensor({c.m, c.n}, 604), c.dtype)};
  const auto run = [&](Backend& be, const std::vector<Tensor>& d) {
    const Tensor bias = c.bias ? d[2] : Tensor();
    switch (c.op) {
      case Op::kLinear: return be.linear(d[0], d[1], bias);
      case Op::kResidual: return be.linear_residual(d[0], d[1], bias, d[3]);
      case Op::kGeglu: return be.linear_geglu(d[0], d[1], bias);
    }
    return Tensor();
  };
  Backend& gpu = gpu_backend(c.dtype);
  Backend& cpu = cpu_reference_backend();
  std::vector<Tensor> dg, dc;
  for (const Tensor& t : host) {
    dg.push_back(gpu.upload(t));
    dc.push_back(cpu.upload(t));
  }
  const Tensor want = cpu.download(run(cpu, dc));
  const double tol = c.dtype == DType::kBF16 ? 1e-2 : 2e-3;
  for (const char* mode : {"2", "0", "1"}) {
    ScopedEnv env("SDSERVE_CUDA_WGMMA_GEMM", mode);
    const Tensor got = gpu.download(run(gpu, dg));
    const Tensor again = gpu.download(run(gpu, dg));  // mode 1: the choice made by the first call
    ASSERT_TRUE(gpu.synchronize().ok());
    ASSERT_EQ(got.shape(), want.shape()) << c.name;
    const double rel = relative_l2(got, want);
    std::printf("  %-28s mode %s rel_l2 %.2e max_abs %.2e\n", c.name, mode, rel, max_abs_diff(got, want));
    EXPECT_LE(rel, tol) << c.name << " mode " << mode;
    EXPECT_LE(relative_l2(again, want), tol) << c.name << " mode " << mode << " second call";
  }
}

std::string case_name(const ::testing::TestParamInfo<LinearCase>& info) { return info.param.name; }

INSTANTIATE_TEST_SUITE_P(
    Shapes, GpuLinearChoice,
    ::testing::Values(
        // name, m, k, n, op, bias, dtype
        LinearCase{"ff1_l64_geglu", 2 * 4096, 320, 1280, Op::kGeglu, true, DType::kF16},
        LinearCase{"ff1_l8_geglu", 2 * 64, 1280, 5120, Op::kGeglu, true, DType::kF16},
        LinearCase{"ff1_l16_geglu_bf16", 2 * 256, 1280, 5120, Op::kGeglu, true, DType::kBF16},
        LinearCase{"geglu_odd_rows_nobias", 77, 64, 136, Op::kGeglu, false, DType::kF16},
        LinearCase{"ff2_l32_residual", 2 * 1024, 2560, 640, Op::kResidual, true, DType::kF16},
        LinearCase{"out_proj_l64_residual_bf16", 2 * 4096, 320, 320, Op::kResidual, true, DType::kBF16},
        LinearCase{"qkv_l16", 2 * 256, 1280, 3 * 1280, Op::kLinear, false, DType::kF16},
        LinearCase{"context_kv_odd", 154, 768, 2 * 640, Op::kLinear, false, DType::kF16},
        LinearCase{"time_proj_2rows", 2, 1280, 1280, Op::kLinear, true, DType::kF16}),
    case_name);

}  // namespace
}  // namespace sd::testing
