// Portable default of Backend::group_norm_add: the window of the packed time projections is
// copied out (column_window.h), added per channel, then the usual group_norm. Backends that
// can (CUDA) add the window inside the group norm's passes instead.
#include <string>

#include "backend/backend.h"
#include "backend/column_window.h"

namespace sd {

Tensor Backend::group_norm_add(const Tensor& x, const Tensor& add_src, int64_t add_col, const Tensor& gamma,
                               const Tensor& beta, int groups, float eps, bool silu) {
  const int64_t batch = x.dim(0), channels = x.dim(-1);
  SD_ASSERT(add_src.ndim() == 2 && add_src.dim(0) == batch && add_col >= 0 && add_col + channels <= add_src.dim(1) &&
                add_src.dtype() == x.dtype(),
            "group_norm_add: add_src " + add_src.describe() + " col " + std::to_string(add_col) + " for x " +
                x.describe());
  const Tensor v = add_src.dim(1) == channels
                       ? add_src
                       : gather_columns(*this, add_src.reshape({batch, 1, add_src.dim(1)}), add_col, channels)
                             .reshape({batch, channels});  // [B, C]
  return group_norm(add_per_channel(x, v), gamma, beta, groups, eps, silu);
}

}  // namespace sd
