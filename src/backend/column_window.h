// Copying a column window out of a row-major tensor, for the portable defaults of ops that
// read windows of packed buffers (attention_cols, group_norm_add). Eager only: it uploads
// gather ids (a host loop where the backend's memory is host memory).
#pragma once

#include "backend/backend.h"

namespace sd {

// src [B, L, W] -> src[..., col : col + width] as a contiguous [B, L, width] tensor on `be`.
Tensor gather_columns(Backend& be, const Tensor& src, int64_t col, int64_t width);

}  // namespace sd
