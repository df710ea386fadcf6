// Autotuning times its candidates as the captured step meets them: a layer's weights were last
// read a whole step earlier (an SD 1.5 step streams 1.7 GB of weights through a 50 MB L2), its
// input was just written by the previous kernel. So before each timed run: evict L2, re-read the input.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

namespace sd::cuda {

// SDSERVE_CUDA_TUNE_COLD=0: candidates are timed warm, back to back (the earlier behaviour).
bool tune_cold_weights();

// L2 size of `device` in bytes (50 MB on an H100; cached per device).
size_t l2_bytes(int device);

// Enqueues on `stream`: a write over all of `scratch` (>= 2x L2 bytes: evicts what L2 held), then
// a read of [input, input + input_bytes) so the input is L2-resident again (skipped when it is
// larger than half of L2: then the timed run finds it cold anyway, as the step does).
void evict_l2_keep_input(cudaStream_t stream, void* scratch, size_t scratch_bytes, const void* input,
                         size_t input_bytes, size_t l2);

}  // namespace sd::cuda
