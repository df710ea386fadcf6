// The layer norm folded into the Hopper GEMM (Backend::layer_norm_linear; gemm_wgmma_layer_norm.cuh):
// every candidate and forced tile configuration (split slices, K / M tails, GEGLU, rows with
// |mean| >> std) against an f64 reference of layer_norm + linear on the unfolded weights, bitwise
// repeatable, and the backend op in each of its modes (choice by timing, forced, SDSERVE_CUDA_LN_FOLD=0).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "backend/op_cases.h"
#include "gpu_test_util.h"
#include "scoped_env.h"

#if SD_TEST_CUDA_INTERNALS
#include <cuda_runtime.h>

#include "backend/cuda/cuda_backend_impl.h"
#include "backend/cuda/gemm_wgmma.h"
#endif

namespace sd::testing {
namespace {

#if SD_TEST_CUDA_INTERNALS

struct LnCase {
  const char* name;
  int64_t m, n, k;
  bool geglu, bias;
  float offset;  // x ~ offset + U(-1, 1) * spread per row
  DType dtype;
  bool forced = true;  // forced tile configurations beside the candidates
};

// Rows checked against the f64 reference: all up to 160, else the first / last 48 and 48 spread.
std::vector<int64_t> checked_rows(int64_t m) {
  std::vector<int64_t> rows;
  if (m <= 160) {
    for (int64_t r = 0; r < m; ++r) rows.push_back(r);
    return rows;
  }
  for (int64_t r = 0; r < 48; ++r) rows.push_back(r);
  for (int64_t i = 0; i < 48; ++i) rows.push_back(48 + (m - 96) * i / 48);
  for (int64_t r = m - 48; r < m; ++r) rows.push_back(r);
  return rows;
}

// f64 layer_norm(x; gamma, beta) then x w^T + bias (GEGLU: a * gelu_erf(g)) on the given rows.
Tensor reference(const LnCase& c, const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& w,
                 const Tensor* bias, const std::vector<int64_t>& rows) {
  Tensor out = Tensor::empty_host({static_cast<int64_t>(rows.size()), c.n}, DType::kF32);
  std::vector<double> h(static_cast<size_t>(c.k));
  for (size_t ri = 0; ri < rows.size(); ++ri) {
    const float* xr = x.f32() + rows[ri] * c.k;
    double mean = 0, var = 0;
    for (int64_t i = 0; i < c.k; ++i) mean += xr[i];
    mean /= static_cast<double>(c.k);
    for (int64_t i = 0; i < c.k; ++i) var += (xr[i] - mean) * (xr[i] - mean);
    const double rstd = 1.0 / std::sqrt(var / static_cast<double>(c.k) + 1e-5);
    for (int64_t i = 0; i < c.k; ++i) h[static_cast<size_t>(i)] = (xr[i] - mean) * rstd * gamma.f32()[i] + beta.f32()[i];
    const auto dot = [&](int64_t j) {
      double s = bias ? bias->f32()[j] : 0.0;
      for (int64_t i = 0; i < c.k; ++i) s += h[static_cast<size_t>(i)] * w.f32()[j * c.k + i];
      return s;
    };
    for (int64_t j = 0; j < c.n; ++j) {
      double v = dot(j);
      if (c.geglu) {
        const double g = dot(c.n + j);
        v *= 0.5 * g * (1.0 + std::erf(g / std::sqrt(2.0)));
      }
      out.f32()[static_cast<int64_t>(ri) * c.n + j] = static_cast<float>(v);
    }
  }
  return out;
}

Tensor select_rows(const Tensor& y, const std::vector<int64_t>& rows, int64_t n) {
  Tensor out = Tensor::empty_host({static_cast<int64_t>(rows.size()), n}, DType::kF32);
  for (size_t ri = 0; ri < rows.size(); ++ri)
    for (int64_t j = 0; j < n; ++j) out.f32()[static_cast<int64_t>(ri) * n + j] = y.f32()[rows[ri] * n + j];
  return out;
}

class GpuGemmLayerNorm : public ::testing::TestWithParam<LnCase> {};

TEST_P(GpuGemmLayerNorm, MatchesReferenceInEveryConfiguration) {
  SD_REQUIRE_GPU();
  if (!cuda::attention_wgmma_supported(0)) GTEST_SKIP() << "device 0 is not sm_90 (wgmma)";
  const LnCase c = GetParam();
  const cuda::WgmmaGemmShape shape{c.m, c.n, c.k, c.geglu, /*layer_norm=*/true};
  ASSERT_TRUE(cuda::wgmma_gemm_supported(shape, c.dtype)) << c.name;
  const int64_t wn = c.geglu ? 2 * c.n : c.n;
  const float wr = 1.f / std::sqrt(static_cast<float>(c.k));
  // Rows of different spreads (0.05 .. 3) around the offset: the statistics differ per row.
  Tensor x = random_tensor({c.m, c.k}, 801, -1.f, 1.f);
  for (int64_t r = 0; r < c.m; ++r) {
    const float spread = 0.05f + 3.f * static_cast<float>((r * 37) % 101) / 100.f;
    for (int64_t i = 0; i < c.k; ++i) x.f32()[r * c.k + i] = c.offset + spread * x.f32()[r * c.k + i];
  }
  x = quantize(x, c.dtype);
  const Tensor gamma = quantize(random_tensor({c.k}, 802, 0.5f, 1.5f), c.dtype);
  const Tensor beta = quantize(random_tensor({c.k}, 803, -0.5f, 0.5f), c.dtype);
  const Tensor w = quantize(random_tensor({wn, c.k}, 804, -wr, wr), c.dtype);
  const Tensor bias = quantize(random_tensor({wn}, 805, -0.5f, 0.5f), c.dtype);
  const std::vector<int64_t> rows = checked_rows(c.m);
  const Tensor want = reference(c, x, gamma, beta, w, c.bias ? &bias : nullptr, rows);

  Backend& gpu = gpu_backend(c.dtype);
  auto* cb = dynamic_cast<cuda::CudaBackend*>(&gpu);
  ASSERT_NE(cb, nullptr);
  const Tensor dx = gpu.upload(x);
  const LayerNormLinear f = fold_layer_norm_linear(gpu, gpu.upload(gamma), gpu.upload(beta), 1e-5f, gpu.upload(w),
                                                   c.bias ? gpu.upload(bias) : Tensor());
  ASSERT_TRUE(f.defined());
  const double tol = c.dtype == DType::kBF16 ? 1.5e-2 : 3e-3;

  int sms = 0;
  ASSERT_EQ(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0), cudaSuccess);
  std::vector<cuda::WgmmaGemmConfig> configs = cuda::wgmma_gemm_candidates(shape, sms);
  ASSERT_FALSE(configs.empty());
  if (c.forced) {
    for (int bn : {64, 128, 160, 192, 256}) {
      configs.push_back({128, bn, 1});                       // 4-byte stores
      configs.push_back({128, bn, 1, false, true});          // TMA stores
      if (bn != 256) configs.push_back({128, bn, 3});        // split, reduce kernel
    }
    for (int bn : {128, 160, 256}) {
      configs.push_back({64, bn, 1});
      configs.push_back({64, bn, 1, false, true});
      configs.push_back({64, bn, 2});
    }
  }
  Tensor first_host;
  for (const cuda::WgmmaGemmConfig& cfg : configs) {
    if (cfg.splits > (c.k + 63) / 64) continue;  // more slices than K blocks: not a configuration
    const size_t ws_bytes = cuda::wgmma_gemm_workspace(shape, cfg);
    Tensor ws;
    if (ws_bytes) ws = gpu.upload(Tensor::zeros_host({static_cast<int64_t>(ws_bytes / 4)}, DType::kF32), DType::kF32);
    Tensor got[2];
    for (int run = 0; run < 2; ++run) {
      const Tensor y = gpu.upload(Tensor::zeros_host({c.m, c.n}, DType::kF32));
      cuda::WgmmaGemmOperands o;
      o.x = dx.raw();
      o.w = f.w.raw();
      o.y = y.raw();
      o.bias = f.b.raw();
      o.workspace = ws_bytes ? ws.raw() : nullptr;
      o.ln_colsum = f.colsum.data<float>();
      o.ln_eps = f.eps;
      ASSERT_TRUE(cuda::launch_wgmma_gemm(o, c.dtype, shape, cfg, cb->stream())) << c.name << " " << cfg.describe();
      ASSERT_TRUE(gpu.synchronize().ok()) << c.name << " " << cfg.describe();
      got[run] = gpu.download(y);
    }
    const double rel = relative_l2(select_rows(got[0], rows, c.n), want);
    std::printf("  %-36s %-16s vs f64 rel_l2 %.2e\n", c.name, cfg.describe().c_str(), rel);
    EXPECT_LE(rel, tol) << c.name << " " << cfg.describe();
    EXPECT_EQ(max_abs_diff(got[0], got[1]), 0.0) << c.name << " " << cfg.describe() << ": two runs differ";
    if (!first_host.defined()) first_host = got[0];
    EXPECT_LE(relative_l2(got[0], first_host), tol) << c.name << " " << cfg.describe() << " vs the first";
  }
  // Refused without the column sums.
  {
    cuda::WgmmaGemmOperands o;
    o.x = dx.raw();
    o.w = f.w.raw();
    o.y = dx.raw();  // never written: the launch is refused
    EXPECT_FALSE(cuda::launch_wgmma_gemm(o, c.dtype, shape, {128, 128, 1}, cb->stream())) << "no colsum";
  }

  // The backend op: chosen by timing (default), forced wgmma, and the unfused default path.
  for (const char* mode : {"1", "2"}) {
    ScopedEnv env("SDSERVE_CUDA_WGMMA_GEMM", mode);
    const Tensor y = gpu.download(gpu.layer_norm_linear(dx.reshape({1, c.m, c.k}), f, c.geglu));
    ASSERT_EQ(y.numel(), c.m * c.n);
    EXPECT_LE(relative_l2(select_rows(y.reshape({c.m, c.n}), rows, c.n), want), tol) << c.name << " mode " << mode;
  }
  {
    ScopedEnv env("SDSERVE_CUDA_LN_FOLD", "0");
    const Tensor y = gpu.download(gpu.layer_norm_linear(dx, f, c.geglu));
    EXPECT_LE(relative_l2(select_rows(y, rows, c.n), want), tol) << c.name << " unfused";
  }
}

const LnCase kCases[] = {
    // name, m, n, k, geglu, bias, offset, dtype, forced
    {"tail77_768x768_bias", 77, 768, 768, false, true, 0.f, DType::kF16},
    {"ktail_300x328x328_offset20_bias", 300, 328, 328, false, true, 20.f, DType::kF16},
    {"geglu_ktail_300x136x200_offset10", 300, 136, 200, true, true, 10.f, DType::kF16},
    {"m130_k72_n40_offset100", 130, 40, 72, false, false, 100.f, DType::kF16},
    {"m128_qkv_1280to3840", 128, 3840, 1280, false, false, 0.5f, DType::kF16},
    {"m128_geglu_1280to5120_bias", 128, 5120, 1280, true, true, 0.f, DType::kF16},
    {"m512_q_1280x1280", 512, 1280, 1280, false, false, 2.f, DType::kF16},
    {"m2048_geglu_640to2560_bias", 2048, 2560, 640, true, true, 0.f, DType::kF16},
    {"m8192_qkv_320to960", 8192, 960, 320, false, false, 1.f, DType::kF16, false},
    {"m8192_geglu_320to1280_bias", 8192, 1280, 320, true, true, 0.f, DType::kF16, false},
    {"bf16_m300_geglu_200to136_offset10", 300, 136, 200, true, true, 10.f, DType::kBF16},
    {"bf16_m2048_q_640x640", 2048, 640, 640, false, false, 3.f, DType::kBF16, false},
};

INSTANTIATE_TEST_SUITE_P(Cases, GpuGemmLayerNorm, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<LnCase>& i) { return std::string(i.param.name); });

TEST(GpuGemmLayerNormLimits, ConfigurationsAndWorkspace) {
  const cuda::WgmmaGemmShape s{128, 1280, 1280, false, true};
  for (const auto& c : cuda::wgmma_gemm_candidates(s, 132)) {
    EXPECT_FALSE(c.vec_epilogue || c.overlap || (c.tma_store && c.splits > 1)) << c.describe();
    // Split: partials plus one float4 of row statistics per slice and row.
    if (c.splits > 1) {
      EXPECT_GE(cuda::wgmma_gemm_workspace(s, c), cuda::wgmma_gemm_workspace({128, 1280, 1280}, c) + 128 * 16 * 2)
          << c.describe();
    }
  }
}

#else

TEST(GpuGemmLayerNorm, NeedsTheCudaBackend) { GTEST_SKIP() << "sdserve was built without the CUDA backend"; }

#endif

}  // namespace
}  // namespace sd::testing
