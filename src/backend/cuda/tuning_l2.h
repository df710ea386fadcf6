// Autotuning times its candidates as the captured step meets them: a layer's weights were last
// read a whole step earlier (an SD 1.5 step streams 1.7 GB of weights through a 50 MB L2), its
// input was just written by the previous kernel. So before each timed run: evict L2, re-read the input.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "backend/cuda/cuda_check.h"

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

// Total milliseconds of `reps` runs of `run` (returns true on success), each timed alone between
// the events `start` / `stop` after `prepare()`; a negative value when a run failed.
template <typename Prepare, typename Run>
float time_runs_alone(cudaStream_t stream, cudaEvent_t start, cudaEvent_t stop, int reps, const Prepare& prepare,
                      const Run& run) {
  float total = 0.f;
  for (int r = 0; r < reps; ++r) {
    prepare();
    SD_CUDA_CHECK(cudaEventRecord(start, stream));
    const bool ok = run();
    SD_CUDA_CHECK(cudaEventRecord(stop, stream));
    SD_CUDA_CHECK(cudaEventSynchronize(stop));
    if (!ok) return -1.f;
    float ms = 0.f;
    SD_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    total += ms;
  }
  return total;
}

}  // namespace sd::cuda
