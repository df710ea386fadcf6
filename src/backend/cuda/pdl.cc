// The process-wide switch for programmatic dependent launch (pdl.cuh): SDSERVE_CUDA_PDL=0|1 read
// once on first use, overridable by set_pdl_enabled() (tests compare PDL on and off in one
// process). Default: kDefaultPdl below (chosen from the H100 step measurement, docs/perf-notes.md).
#include <atomic>
#include <cstdlib>

#include "backend/cuda/pdl.cuh"

namespace sd::cuda {
namespace {

constexpr bool kDefaultPdl = false;  // H100: no measurable step gain (perf-notes)

// -1: not read yet; 0 / 1: the mode.
std::atomic<int>& pdl_mode() {
  static std::atomic<int> mode{-1};
  return mode;
}

}  // namespace

bool pdl_enabled() {
  int mode = pdl_mode().load(std::memory_order_relaxed);
  if (mode < 0) {
    const char* env = std::getenv("SDSERVE_CUDA_PDL");
    mode = env && env[0] != '\0' ? (env[0] == '0' ? 0 : 1) : (kDefaultPdl ? 1 : 0);
    int expected = -1;
    if (!pdl_mode().compare_exchange_strong(expected, mode)) mode = expected;
  }
  return mode == 1;
}

void set_pdl_enabled(bool on) { pdl_mode().store(on ? 1 : 0, std::memory_order_relaxed); }

}  // namespace sd::cuda
