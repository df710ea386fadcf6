// The CUDA GELU (erf form; cuda_types.cuh gelu_erf_f, an A&S 7.1.26 erfc) on a dense grid of f16
// inputs against f64: activation(kGELU) and geglu, f16 and bf16 outputs within one output ulp,
// (the GEMM epilogue's GEGLU is checked against f64 by the *GemmWgmma* tests).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "gpu_test_util.h"

namespace sd::testing {
namespace {

double gelu64(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }

// Every 4th f16 value in [-12, 12] (~10k inputs) as exactly representable f32s.
Tensor f16_grid() {
  std::vector<float> v;
  for (double x = -12.0; x <= 12.0;) {
    v.push_back(static_cast<float>(x));
    const int exponent = static_cast<int>(std::floor(std::log2(std::max(std::abs(x), 6.2e-5))));
    x += 4 * std::ldexp(1.0, exponent - 10);  // 4 f16 ulps (subnormals: the smallest normal's)
  }
  Tensor t = Tensor::empty_host({static_cast<int64_t>(v.size())}, DType::kF32);
  std::copy(v.begin(), v.end(), t.f32());
  return quantize(t, DType::kF16);
}

// Max of |got - want| / (ulp of want in dtype) over the grid, with an absolute floor of 1e-6.
double max_ulps(const Tensor& got, const std::vector<double>& want, DType dtype) {
  const int mantissa = dtype == DType::kBF16 ? 7 : 10;
  double worst = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double w = want[i];
    const int exponent = static_cast<int>(std::floor(std::log2(std::max(std::abs(w), 1e-30))));
    const double ulp = std::max(1e-6, std::ldexp(1.0, exponent - mantissa));
    worst = std::max(worst, std::abs(static_cast<double>(got.f32()[i]) - w) / ulp);
  }
  return worst;
}

TEST(GpuGelu, ActivationAndGegluWithinOneUlpOnAnF16Grid) {
  SD_REQUIRE_GPU();
  const Tensor x = f16_grid();  // [n]
  const int64_t n = x.numel();
  // geglu input [n, 2]: value 1.5 - x / 8 (f16-exact), gate x.
  Tensor xg = Tensor::empty_host({n, 2}, DType::kF32);
  for (int64_t i = 0; i < n; ++i) {
    const double xi = x.f32()[i];
    const double a = 1.5 - xi / 8;
    xg.f32()[2 * i] = static_cast<float>(a);
    xg.f32()[2 * i + 1] = static_cast<float>(xi);
  }
  for (DType dtype : {DType::kF16, DType::kBF16}) {
    Backend& gpu = gpu_backend(dtype);
    const Tensor xq = quantize(x, dtype), xgq = quantize(xg, dtype);
    std::vector<double> wq(n), wgq(n);
    for (int64_t i = 0; i < n; ++i) {
      wq[i] = gelu64(xq.f32()[i]);
      wgq[i] = static_cast<double>(xgq.f32()[2 * i]) * gelu64(xgq.f32()[2 * i + 1]);
    }
    const Tensor y = gpu.download(gpu.activation(gpu.upload(xq), Activation::kGELU));
    const Tensor yg = gpu.download(gpu.geglu(gpu.upload(xgq)));
    ASSERT_TRUE(gpu.synchronize().ok());
    const double u = max_ulps(y, wq, dtype), ug = max_ulps(yg, wgq, dtype);
    std::printf("  %s gelu: %lld inputs in [-12, 12], max %.2f ulp; geglu max %.2f ulp\n", dtype_name(dtype),
                static_cast<long long>(n), u, ug);
    EXPECT_LE(u, 1.0) << dtype_name(dtype);
    EXPECT_LE(ug, 1.0) << dtype_name(dtype);
  }
}

}  // namespace
}  // namespace sd::testing
