// Shared-memory mbarrier wait used by the Hopper kernels (group_norm_onchip.cu, the wgmma
// attention kernels): spins on try_wait.parity until the phase with the given parity has
// completed. Device code only; include from .cu files.
#pragma once

#include <cstdint>

namespace sd::cuda {

__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  } while (!done);
}

}  // namespace sd::cuda
