// Host versions of the CUDA device math that curand's Box-Muller uses. __sincosf is the
// hardware approximation (MUFU.SIN/COS, absolute error up to ~2^-21.4); see gpu_math.cc for
// how closely it is modelled.
#pragma once

namespace sd {

void gpu_sincosf(float x, float* sin_out, float* cos_out);

}  // namespace sd
