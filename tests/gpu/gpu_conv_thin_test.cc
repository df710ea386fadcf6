// The few-output-channel 3x3 convolution (conv_thin.cu: UNet / VAE conv_out shapes, odd sizes,
// Cout 1..8) on random inputs, f16 and bf16, with / without bias and a residual, against the
// CPU backend and against cuDNN (SDSERVE_CUDA_THIN_CONV=0); two runs bitwise equal.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "backend/op_cases.h"
#include "gpu_test_util.h"
#include "scoped_env.h"

namespace sd::testing {
namespace {

struct ThinShape {
  int64_t b, h, w, cin, cout;
  bool bias, residual;
};

std::string name_of(const ThinShape& s) {
  return std::to_string(s.b) + "x" + std::to_string(s.h) + "x" + std::to_string(s.w) + "x" + std::to_string(s.cin) +
         "->" + std::to_string(s.cout) + (s.bias ? " bias" : "") + (s.residual ? " residual" : "");
}

TEST(GpuConvThin, MatchesCpuAndCudnn) {
  SD_REQUIRE_GPU();
  for (const ThinShape& s : {ThinShape{2, 64, 64, 320, 4, true, false}, ThinShape{1, 40, 56, 128, 3, true, false},
                             ThinShape{3, 7, 9, 32, 5, false, false}, ThinShape{1, 5, 5, 16, 8, true, true},
                             ThinShape{2, 16, 12, 64, 1, true, false}, ThinShape{1, 1, 1, 48, 2, true, false}}) {
    for (DType dtype : {DType::kF16, DType::kBF16}) {
      const uint32_t seed = static_cast<uint32_t>(s.cin * 31 + s.cout);
      const Tensor x = quantize(random_tensor({s.b, s.h, s.w, s.cin}, seed, -2.f, 2.f), dtype);
      const Tensor w = quantize(random_tensor({s.cout, 3, 3, s.cin}, seed + 1, -0.1f, 0.1f), dtype);
      const Tensor bias = quantize(random_tensor({s.cout}, seed + 2), dtype);
      const Tensor res = quantize(random_tensor({s.b, s.h, s.w, s.cout}, seed + 3), dtype);
      const auto run = [&](Backend& be) {
        return be.download(be.conv2d_fused(be.upload(x), be.upload(w), s.bias ? be.upload(bias) : Tensor(), 1, 1,
                                           Tensor(), s.residual ? be.upload(res) : Tensor()));
      };
      Backend& gpu = gpu_backend(dtype);
      const Tensor got = run(gpu), again = run(gpu);
      Tensor cudnn;
      {
        ScopedEnv off("SDSERVE_CUDA_THIN_CONV", "0");
        cudnn = run(gpu);
      }
      const Tensor want = run(cpu_reference_backend());
      ASSERT_TRUE(gpu.synchronize().ok());
      ASSERT_EQ(got.shape(), want.shape()) << name_of(s);
      const double rel = relative_l2(got, want), rel_cudnn = relative_l2(got, cudnn);
      std::printf("  %-4s %-32s rel_l2 vs cpu %.2e, vs cudnn %.2e\n", dtype_name(dtype), name_of(s).c_str(), rel,
                  rel_cudnn);
      const double tol = dtype == DType::kBF16 ? 1e-2 : 2e-3;
      EXPECT_LE(rel, tol) << name_of(s) << " " << dtype_name(dtype);
      EXPECT_LE(rel_cudnn, tol) << name_of(s) << " " << dtype_name(dtype);
      EXPECT_EQ(std::memcmp(got.raw(), again.raw(), got.nbytes()), 0) << name_of(s) << ": two runs differ";
    }
  }
}

}  // namespace
}  // namespace sd::testing
