// The UNet decoder's [h | skip] read in place (Backend::concat_norm_shortcut): the Hopper GEMM with
// a two-source A operand equals the same configuration on the concatenated input bit for bit, and
// the backend op equals group_norm + linear on concat_channels at SD 1.5 decoder shapes.
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

// a [B, H, W, ca] around +3 and b [B, H, W, cb] around -1 with a smaller spread, so that a
// channel read from the wrong source or row shows in every check.
struct SkipCase {
  const char* name;
  int64_t batch, hw, ca, cb, n;  // n: shortcut outputs
  DType dtype = DType::kF16;
};

Tensor shifted(const Shape& s, uint32_t seed, float lo, float hi, DType dtype) {
  return quantize(random_tensor(s, seed, lo, hi), dtype);
}

const SkipCase kSkipCases[] = {
    {"b2_8x8_1280_1280", 2, 8, 1280, 1280, 1280},
    {"b2_16x16_1280_640", 2, 16, 1280, 640, 1280},
    {"b2_32x32_640_320", 2, 32, 640, 320, 640},
    {"b2_64x64_320_320", 2, 64, 320, 320, 320},
    {"b32_32x32_1280_640", 32, 32, 1280, 640, 640},
    {"b32_64x64_640_320", 32, 64, 640, 320, 320},
    {"b3_odd_7x5_64_40", 3, 7, 64, 40, 64},
    {"bf16_b2_16x16_1280_1280", 2, 16, 1280, 1280, 1280, DType::kBF16},
};

class GpuConcatReads : public ::testing::TestWithParam<SkipCase> {};

// The backend op (as the decoder calls it) against the unfused ops on the materialized concat,
// with our GEMM where it is chosen (default), forced (=2) and the in-place reads off (=0).
TEST_P(GpuConcatReads, NormAndShortcutEqualTheOpsOnTheConcat) {
  SD_REQUIRE_GPU();
  const SkipCase c = GetParam();
  const int64_t C = c.ca + c.cb;
  const int groups = C % 32 == 0 ? 32 : 8;
  const Tensor a = shifted({c.batch, c.hw, c.hw, c.ca}, 801, 2.f, 4.f, c.dtype);
  const Tensor b = shifted({c.batch, c.hw, c.hw, c.cb}, 802, -1.2f, -0.8f, c.dtype);
  const float wr = 1.f / std::sqrt(static_cast<float>(C));
  const Tensor w = shifted({c.n, C}, 803, -wr, wr, c.dtype);
  const Tensor bias = shifted({c.n}, 804, -0.5f, 0.5f, c.dtype);
  const Tensor gamma = shifted({C}, 805, 0.5f, 1.5f, c.dtype), beta = shifted({C}, 806, -0.5f, 0.5f, c.dtype);
  Backend& gpu = gpu_backend(c.dtype);
  const Tensor da = gpu.upload(a), db = gpu.upload(b), dw = gpu.upload(w), dbias = gpu.upload(bias);
  const Tensor dg = gpu.upload(gamma), dbe = gpu.upload(beta);
  const Tensor joined = gpu.concat_channels(da, db);  // [B, H, W, C]
  const Tensor want_norm = gpu.download(gpu.group_norm(joined, dg, dbe, groups, 1e-5f, true));
  const Tensor want_short = gpu.download(gpu.linear(joined, dw, dbias));
  const double tol = c.dtype == DType::kBF16 ? 1e-2 : 2e-3;
  for (const char* mode : {"default", "forced", "off"}) {
    ScopedEnv gemm("SDSERVE_CUDA_WGMMA_GEMM", std::string(mode) == "forced" ? "2" : "1");
    ScopedEnv reads("SDSERVE_CUDA_CONCAT_READS", std::string(mode) == "off" ? "0" : "1");
    const Backend::ConcatReads r = gpu.concat_norm_shortcut(da, db, dg, dbe, groups, 1e-5f, true, dw, dbias);
    ASSERT_TRUE(r.normed.defined() && r.shortcut.defined()) << c.name << " " << mode;
    EXPECT_EQ(r.normed.shape(), joined.shape()) << c.name;
    EXPECT_EQ(r.shortcut.shape(), (Shape{c.batch, c.hw, c.hw, c.n})) << c.name;
    const Tensor got_norm = gpu.download(r.normed), got_short = gpu.download(r.shortcut);
    const double rn = relative_l2(got_norm, want_norm), rs = relative_l2(got_short, want_short);
    std::printf("  %-26s %-8s norm rel_l2 %.2e  shortcut rel_l2 %.2e\n", c.name, mode, rn, rs);
    EXPECT_LE(rn, tol) << c.name << " " << mode;
    EXPECT_LE(rs, tol) << c.name << " " << mode;
    if (std::string(mode) == "off") {  // the same ops on the same concat
      EXPECT_EQ(max_abs_diff(got_norm, want_norm), 0.0) << c.name;
      EXPECT_EQ(max_abs_diff(got_short, want_short), 0.0) << c.name;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, GpuConcatReads, ::testing::ValuesIn(kSkipCases),
                         [](const ::testing::TestParamInfo<SkipCase>& i) { return std::string(i.param.name); });

#if SD_TEST_CUDA_INTERNALS

// Two-source A (x [m, k1] | x2 [m, k - k1]) through every candidate and some forced
// configurations equals the single-source GEMM of the same configuration on the concatenation,
// bit for bit (the same tiles land in shared memory), two runs alike.
TEST(GpuGemmWgmmaTwoSources, EqualsTheConcatenatedInputBitForBit) {
  SD_REQUIRE_GPU();
  if (!cuda::attention_wgmma_supported(0)) GTEST_SKIP() << "device 0 is not sm_90 (wgmma)";
  struct Shape4 {
    int64_t m, k1, k2, n;
    bool residual;
    DType dtype;
  };
  const Shape4 shapes[] = {{128, 1280, 1280, 1280, false, DType::kF16}, {512, 1280, 640, 1280, true, DType::kF16},
                           {2048, 640, 320, 640, false, DType::kF16},   {8192, 320, 320, 320, false, DType::kF16},
                           {300, 64, 40, 64, true, DType::kF16},        {2048, 1280, 640, 640, false, DType::kBF16}};
  int sms = 0;
  ASSERT_EQ(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0), cudaSuccess);
  for (const Shape4& s : shapes) {
    const int64_t k = s.k1 + s.k2;
    Backend& gpu = gpu_backend(s.dtype);
    auto* cb = dynamic_cast<cuda::CudaBackend*>(&gpu);
    ASSERT_NE(cb, nullptr);
    const float wr = 1.f / std::sqrt(static_cast<float>(k));
    const Tensor x1 = gpu.upload(shifted({s.m, s.k1}, 811, 2.f, 4.f, s.dtype));
    const Tensor x2 = gpu.upload(shifted({s.m, s.k2}, 812, -1.2f, -0.8f, s.dtype));
    const Tensor x = gpu.concat_channels(x1, x2);  // [m, k]
    const Tensor w = gpu.upload(shifted({s.n, k}, 813, -wr, wr, s.dtype));
    const Tensor bias = gpu.upload(shifted({s.n}, 814, -0.5f, 0.5f, s.dtype));
    const Tensor res = gpu.upload(shifted({s.m, s.n}, 815, -1.f, 1.f, s.dtype));
    cuda::WgmmaGemmShape one{s.m, s.n, k};
    cuda::WgmmaGemmShape two = one;
    two.k1 = s.k1;
    ASSERT_TRUE(cuda::wgmma_gemm_supported(two, s.dtype));
    std::vector<cuda::WgmmaGemmConfig> configs = cuda::wgmma_gemm_candidates(two, sms);
    configs.push_back({128, 128, 3});
    configs.push_back({64, 160, 1, false, true});
    configs.push_back({128, 128, 2, false, true});
    configs.push_back({128, 64, 1, false, true, true});
    for (const cuda::WgmmaGemmConfig& cfg : configs) {
      const size_t ws_bytes = cuda::wgmma_gemm_workspace(one, cfg);
      Tensor ws;
      if (ws_bytes) ws = gpu.empty({static_cast<int64_t>(ws_bytes / 4)}, DType::kF32);
      const auto run = [&](bool split_source) {
        const Tensor y = gpu.upload(Tensor::zeros_host({s.m, s.n}, DType::kF32));
        cuda::WgmmaGemmOperands o;
        o.x = split_source ? x1.raw() : x.raw();
        o.x2 = split_source ? x2.raw() : nullptr;
        o.w = w.raw();
        o.y = y.raw();
        o.bias = bias.raw();
        o.residual = s.residual ? res.raw() : nullptr;
        o.workspace = ws_bytes ? ws.raw() : nullptr;
        const bool ok = cuda::launch_wgmma_gemm(o, s.dtype, split_source ? two : one, cfg, cb->stream());
        EXPECT_TRUE(gpu.synchronize().ok());
        return ok ? gpu.download(y) : Tensor();
      };
      const Tensor want = run(false);
      if (!want.defined()) continue;  // a forced configuration this shape cannot take (e.g. more splits than K blocks)
      const Tensor got = run(true), again = run(true);
      ASSERT_TRUE(got.defined() && again.defined()) << "two sources refused " << cfg.describe();
      std::printf("  two sources m%lld k%lld+%lld n%lld %-16s max diff %.3g\n", static_cast<long long>(s.m),
                  static_cast<long long>(s.k1), static_cast<long long>(s.k2), static_cast<long long>(s.n),
                  cfg.describe().c_str(), max_abs_diff(got, want));
      EXPECT_EQ(max_abs_diff(got, want), 0.0) << cfg.describe();
      EXPECT_EQ(max_abs_diff(again, got), 0.0) << cfg.describe();
    }
  }
  // k1 must be a whole number of 64-column K blocks, and below k.
  EXPECT_FALSE(cuda::wgmma_gemm_supported({128, 320, 640, false, 200}, DType::kF16)) << "k1 % 64";
  EXPECT_FALSE(cuda::wgmma_gemm_supported({128, 320, 640, false, 640}, DType::kF16)) << "k1 == k";
  EXPECT_TRUE(cuda::wgmma_gemm_supported({128, 320, 640, false, 384}, DType::kF16));
  cuda::WgmmaGemmOperands no_x2;
  no_x2.y = reinterpret_cast<void*>(256);
  no_x2.x = no_x2.w = no_x2.y;
  EXPECT_FALSE(cuda::launch_wgmma_gemm(no_x2, DType::kF16, {128, 320, 640, false, 384}, {128, 128, 1}, nullptr));
}

#endif

}  // namespace
}  // namespace sd::testing
