// TextEncoderGraph and VaeDecodeGraph as real CUDA graphs: on by default on the CUDA backend,
// and every replay (two shapes alternating, the VAE graph evicted and re-recorded, other graphs
// sharing the memory in between) equals the eager text encoder / VAE decoder on the same inputs.
#include <gtest/gtest.h>

#include "stage_graphs_util.h"

namespace sd {
namespace {

TEST(CudaStageGraphs, TextEncoderAndVaeGraphsEqualEager) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device present: GPU test skipped";
  auto made = make_backend(Device::cuda(0));
  ASSERT_TRUE(made.ok()) << made.status().to_string();
  Backend& be = **made;
  auto s = testing::load_tiny_stages(be);
  ASSERT_TRUE(s);
  EXPECT_TRUE(TextEncoderGraph(be, *s->encoder).enabled) << "graphs must be on by default on CUDA";
  EXPECT_TRUE(VaeDecodeGraph(be, *s->vae, s->checkpoint.vae.scaling_factor).enabled);
  // The replayed kernels are the eager ones (plans chosen in capture's eager run): equal up to
  // any run-to-run nondeterminism of the libraries, far below one f16 step of the outputs.
  testing::expect_stage_graphs_equal_eager(be, *s, 2e-3);
  EXPECT_TRUE(be.synchronize().ok());
}

}  // namespace
}  // namespace sd
