// Rates of the wgmma shapes the attention kernels issue (wgmma_probe.cu), measured in isolation:
// back-to-back groups of m64nNk16 wgmmas on 1-4 warpgroups per SM, so perf notes can say whether a
// kernel sits at its tensor-core bound. A measurement tool (disabled gtest), not used by the engine.
#pragma once

#include <string>
#include <vector>

namespace sd::cuda {

struct WgmmaProbeResult {
  std::string name;      // e.g. "ss n64 x3, 4 warpgroups"
  double tflops = 0;     // dense f16 rate over all SMs (2 FLOPs per multiply-add)
  double fma_per_clk_sm = 0;  // at the SM clock read while it ran (nvidia: 2048 is the dense f16 peak)
};

// Runs every probe on the current device (sm_90 only; empty otherwise). Each probe launches one CTA
// per SM for `iterations` groups per warpgroup, times it with events and reads the SM clock with
// clock64 in one warp.
std::vector<WgmmaProbeResult> run_wgmma_probes(int iterations = 4096);

}  // namespace sd::cuda
