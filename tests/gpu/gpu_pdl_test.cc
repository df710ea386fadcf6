// Programmatic dependent launch (src/backend/cuda/pdl.cuh): a chain of our own kernels back to
// back (group norms, add, layer norm, concat, GEGLU, time-embedding add, attention, upsample,
// lincomb) gives bitwise the same results with PDL on as off, eagerly and as a replayed CUDA graph.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cuda/pdl.cuh"
#include "backend/op_cases.h"
#include "gpu_test_util.h"

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

}  // namespace
}  // namespace sd::testing
