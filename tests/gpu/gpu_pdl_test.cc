// Programmatic dependent launch (src/backend/cuda/pdl.cuh): chains of our own kernels back to
// back (norms, adds, GEGLU, attention, upsample, lincomb; the Hopper GEMM and convolutions, whose
// producers request weights before pdl_wait()) give bitwise the same results with PDL on as off,
// eagerly and as a replayed CUDA graph.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "backend/cuda/pdl.cuh"
#include "backend/op_cases.h"
#include "gpu_test_util.h"
#include "scoped_env.h"

namespace sd::testing {
namespace {

struct ChainInputs {
  Tensor x;       // [2, 16, 16, 320] NHWC
  Tensor gamma;   // [320]
  Tensor beta;    // [320]
  Tensor temb;    // [2, 640]: the time projections, this block's at column 320
  Tensor chan;    // [2, 320]
};

// The chain; every op's output is the next op's input, so each PDL edge guards a real hazard.
Tensor run_chain(Backend& be, const ChainInputs& in) {
  const Tensor g = be.group_norm(in.x, in.gamma, in.beta, 32, 1e-5f, true);
  const Tensor ga = be.group_norm_add(g, in.temb, 320, in.gamma, in.beta, 32, 1e-5f, true);
  const Tensor h = be.add(g, ga);
  const Tensor ln = be.layer_norm(h, in.gamma, in.beta, 1e-5f);
  const Tensor ff = be.geglu(be.concat_channels(ln, h));  // [2, 16, 16, 640] -> [.., 320]
  const Tensor t = be.add_per_channel(ff, in.chan).reshape({2, 256, 320});  // [B, L, H*D]
  const Tensor att = be.attention(t, t, t, 5, false).reshape({2, 16, 16, 320});
  const Tensor up = be.upsample_nearest2x(att);  // [2, 32, 32, 320]
  const Tensor coeffs = Tensor::from_vector({2, 2}, {0.75f, -0.5f, 1.25f, 0.25f});
  return be.lincomb({up, be.scale(up, 0.5f)}, coeffs);
}

class PdlModeRestorer {
 public:
  PdlModeRestorer() : was_(cuda::pdl_enabled()) {}
  ~PdlModeRestorer() { cuda::set_pdl_enabled(was_); }

 private:
  bool was_;
};

TEST(GpuPdl, ChainOnEqualsOffEagerAndReplayed) {
  SD_REQUIRE_GPU();
  PdlModeRestorer restore;
  Backend& be = gpu_backend(DType::kF16);
  const DType d = DType::kF16;
  ChainInputs in;
  in.x = be.upload(quantize(random_tensor({2, 16, 16, 320}, 1200, -2.f, 3.f), d), d);
  in.gamma = be.upload(quantize(random_tensor({320}, 1201, 0.5f, 1.5f), d), d);
  in.beta = be.upload(quantize(random_tensor({320}, 1202, -0.5f, 0.5f), d), d);
  in.temb = be.upload(quantize(random_tensor({2, 640}, 1203, -1.f, 1.f), d), d);
  in.chan = be.upload(quantize(random_tensor({2, 320}, 1204, -1.f, 1.f), d), d);

  cuda::set_pdl_enabled(false);
  const Tensor want = be.download(run_chain(be, in));
  ASSERT_TRUE(be.synchronize().ok());
  const Tensor want_f32 = to_f32_host(want);
  float largest = 0.f;
  for (int64_t i = 0; i < want_f32.numel(); ++i) largest = std::max(largest, std::fabs(want_f32.f32()[i]));
  EXPECT_GT(largest, 0.1f) << "the chain's result is (near) zero: the test would prove nothing";

  cuda::set_pdl_enabled(true);
  for (int i = 0; i < 2; ++i) EXPECT_EQ(max_abs_diff(be.download(run_chain(be, in)), want), 0.0) << "eager " << i;
  if (!be.supports_capture()) return;
  for (const bool on : {true, false}) {
    cuda::set_pdl_enabled(on);
    Tensor got;
    auto graph = be.capture([&] { got = run_chain(be, in); });
    for (int i = 0; i < 3; ++i) {
      graph->replay();
      EXPECT_EQ(max_abs_diff(be.download(got), want), 0.0) << "PDL " << on << ", replay " << i;
    }
  }
  ASSERT_TRUE(be.synchronize().ok());
}

struct GemmConvInputs {
  Tensor x;                  // [2, 16, 16, 320] NHWC
  Tensor w_conv, b_conv;     // [320, 3, 3, 320], [320]
  Tensor temb;               // [2, 320] per image
  Tensor w_up, b_up;         // [640, 320], [640]
  Tensor w_down, b_down;     // [320, 640], [320]
  Tensor w_geglu, b_geglu;   // [1280, 320], [1280] (value rows, then gate rows)
  Tensor w_1x1;              // [320, 1, 1, 320]
  Tensor w_out, b_out;       // [4, 3, 3, 320], [4]
};

// Convolutions and GEMMs that each read the previous op's output (and a residual from earlier).
Tensor run_gemm_conv_chain(Backend& be, const GemmConvInputs& in) {
  const Tensor c1 = be.conv2d_fused(in.x, in.w_conv, in.b_conv, 1, 1, in.temb, Tensor());  // [2, 16, 16, 320]
  const Tensor t = c1.reshape({2, 256, 320});
  const Tensor up = be.linear(t, in.w_up, in.b_up);                      // [2, 256, 640]
  const Tensor down = be.linear_residual(up, in.w_down, in.b_down, t);   // [2, 256, 320]
  const Tensor ff = be.linear_geglu(down, in.w_geglu, in.b_geglu);      // [2, 256, 640]
  const Tensor back = be.linear_residual(ff, in.w_down, in.b_down, down).reshape({2, 16, 16, 320});
  const Tensor c2 = be.conv2d_fused(back, in.w_conv, Tensor(), 1, 1, Tensor(), c1);  // + c1
  const Tensor c3 = be.conv2d_fused(c2, in.w_1x1, in.b_conv, 1, 0, Tensor(), back);
  return be.conv2d_fused(c3, in.w_out, in.b_out, 1, 1, Tensor(), Tensor());  // [2, 16, 16, 4]
}

TEST(GpuPdl, OwnGemmAndConvChainOnEqualsOff) {
  SD_REQUIRE_GPU();
  PdlModeRestorer restore;
  Backend& be = gpu_backend(DType::kF16);
  const DType d = DType::kF16;
  const float r320 = 1.f / std::sqrt(320.f), r640 = 1.f / std::sqrt(640.f), r2880 = 1.f / std::sqrt(2880.f);
  const auto up = [&](std::vector<int64_t> shape, uint64_t seed, float lo, float hi) {
    return be.upload(quantize(random_tensor(shape, seed, lo, hi), d), d);
  };
  GemmConvInputs in;
  in.x = up({2, 16, 16, 320}, 1300, -2.f, 3.f);
  in.w_conv = up({320, 3, 3, 320}, 1301, -r2880, r2880);
  in.b_conv = up({320}, 1302, -0.5f, 0.5f);
  in.temb = up({2, 320}, 1303, -1.f, 1.f);
  in.w_up = up({640, 320}, 1304, -r320, r320);
  in.b_up = up({640}, 1305, -0.5f, 0.5f);
  in.w_down = up({320, 640}, 1306, -r640, r640);
  in.b_down = up({320}, 1307, -0.5f, 0.5f);
  in.w_geglu = up({1280, 320}, 1308, -r320, r320);
  in.b_geglu = up({1280}, 1309, -0.5f, 0.5f);
  in.w_1x1 = up({320, 1, 1, 320}, 1310, -r320, r320);
  in.w_out = up({4, 3, 3, 320}, 1311, -r2880, r2880);
  in.b_out = up({4}, 1312, -0.5f, 0.5f);

  // Our kernels forced (cuBLASLt / cuDNN kernels take no part in PDL); GEMM candidates 0..2 (split
  // and unsplit tiles where the candidates have them), the convolution plain and input-reusing.
  ScopedEnv gemm("SDSERVE_CUDA_WGMMA_GEMM", "2");
  ScopedEnv conv("SDSERVE_CUDA_WGMMA_CONV", "2");
  ScopedEnv splitk("SDSERVE_CUDA_SPLITK_CONV", "0");
  for (const char* config : {"0", "1", "2"}) {
    for (const char* reuse : {"0", "1"}) {
      ScopedEnv cfg("SDSERVE_CUDA_WGMMA_GEMM_CONFIG", config);
      ScopedEnv re("SDSERVE_CUDA_WGMMA_CONV_REUSE", reuse);
      const std::string what = std::string("gemm config ") + config + ", conv reuse " + reuse;
      cuda::set_pdl_enabled(false);
      const Tensor want = be.download(run_gemm_conv_chain(be, in));
      ASSERT_TRUE(be.synchronize().ok()) << what;
      const Tensor want_f32 = to_f32_host(want);
      float largest = 0.f;
      for (int64_t i = 0; i < want_f32.numel(); ++i) largest = std::max(largest, std::fabs(want_f32.f32()[i]));
      EXPECT_GT(largest, 0.1f) << what << ": the chain's result is (near) zero";
      cuda::set_pdl_enabled(true);
      for (int i = 0; i < 2; ++i)
        EXPECT_EQ(max_abs_diff(be.download(run_gemm_conv_chain(be, in)), want), 0.0) << what << ", eager " << i;
      if (!be.supports_capture()) continue;
      Tensor got;
      auto graph = be.capture([&] { got = run_gemm_conv_chain(be, in); });
      for (int i = 0; i < 3; ++i) {
        graph->replay();
        EXPECT_EQ(max_abs_diff(be.download(got), want), 0.0) << what << ", replay " << i;
      }
      ASSERT_TRUE(be.synchronize().ok()) << what;
    }
  }
}

}  // namespace
}  // namespace sd::testing
