// Host versions of the CUDA device math that curand's Box-Muller uses: libdevice logf
// (bit-exact) and the hardware __sincosf of sm_90 GPUs (MUFU.SIN/COS; modelled within one
// float ulp, see gpu_math.cc). Inputs here are positive and finite.
#pragma once

namespace sd {

float gpu_logf(float a);
void gpu_sincosf(float x, float* sin_out, float* cos_out);

}  // namespace sd
