// The wgmma rate probes (src/backend/cuda/wgmma_probe.h): every probe runs and reports a rate that
// is positive and below the H100's dense f16 peak; the table is printed for the perf notes
// (SDSERVE_WGMMA_PROBE_ITERS sets the groups per warpgroup, default 4096).
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>

#include "gpu_test_util.h"

#if SD_TEST_CUDA_INTERNALS
#include "backend/cuda/wgmma_probe.h"
#endif

namespace sd::testing {
namespace {

#if SD_TEST_CUDA_INTERNALS
TEST(GpuWgmmaProbe, RatesArePositiveAndBelowThePeak) {
  SD_REQUIRE_GPU();
  if (!cuda::attention_wgmma_supported(0)) GTEST_SKIP() << "device 0 is not sm_90 (wgmma)";
  const char* env = std::getenv("SDSERVE_WGMMA_PROBE_ITERS");
  const int iters = env ? std::atoi(env) : 4096;
  const auto results = cuda::run_wgmma_probes(iters > 0 ? iters : 4096);
  ASSERT_EQ(results.size(), 15u);
  for (const auto& r : results) {
    std::printf("  wgmma probe: %-52s %7.1f TFLOP/s  %7.1f FMA/clk/SM\n", r.name.c_str(), r.tflops, r.fma_per_clk_sm);
    EXPECT_GT(r.tflops, 1.0) << r.name;
    EXPECT_LT(r.tflops, 1100.0) << r.name;  // above the dense f16 peak: the timing is wrong
    EXPECT_GT(r.fma_per_clk_sm, 1.0) << r.name;
    EXPECT_LT(r.fma_per_clk_sm, 2100.0) << r.name;
  }
}
#else
TEST(GpuWgmmaProbe, NeedsTheCudaBackend) { GTEST_SKIP() << "sdserve was built without the CUDA backend"; }
#endif

}  // namespace
}  // namespace sd::testing
