// Shared-memory mbarrier wait used by the Hopper kernels (group_norm_onchip.cu, the wgmma
// attention kernels; wgmma_sm90.cuh's has the same hint): try_wait.parity with a suspend-time
// hint until the phase with the given parity has completed. Device code only; include from .cu files.
#pragma once

#include <cstdint>

namespace sd::cuda {

// Suspend-time hint of every try_wait (ns): the waiting thread sleeps until the phase completes
// (or this long) instead of coming back almost at once to poll again. Without it, a producer
// warp that runs ahead polls its "stage free" barrier ~80 times per attention tile, issue slots
// the consumer warps on its scheduler could use (perf-notes, session 11). CUTLASS's value.
constexpr uint32_t kMbarrierSuspendHintNs = 0x989680;  // 10 ms

__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2, %3;\nselp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity), "n"(kMbarrierSuspendHintNs)
        : "memory");
  } while (!done);
}

}  // namespace sd::cuda
