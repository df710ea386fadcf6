// Host model of CUDA's __sincosf. Currently the exact sine/cosine rounded to float: the
// device's hardware approximation differs from it by at most ~2.5e-7 absolute, which after
// the Box-Muller radius shows up as differences up to ~2e-6 in about 1% of the normals.
#include "rng/gpu_math.h"

#include <cmath>

namespace sd {

void gpu_sincosf(float x, float* sin_out, float* cos_out) {
  const double v = x;
  *sin_out = static_cast<float>(std::sin(v));
  *cos_out = static_cast<float>(std::cos(v));
}

}  // namespace sd
