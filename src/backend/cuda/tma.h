// Host-side encoding of TMA tiled tensor maps (CUtensorMap) for the Hopper kernels, through the
// driver entry point obtained at run time (cudaGetDriverEntryPointByVersion): nothing links
// libcuda, and a driver without cuTensorMapEncodeTiled gives a Status, not a crash.
#pragma once

#include <cuda.h>

#include <cstdint>

#include "core/status.h"
#include "tensor/tensor.h"

namespace sd::cuda {

enum class TmaSwizzle { kNone, k32B, k64B, k128B };

// A tiled view of a global tensor: dims / box innermost first (rank 1..5). Strides are in
// bytes for dims 1..rank-1 (multiples of 16; the innermost dim is contiguous), the base 16-byte
// aligned. The box (elements per dim, each <= 256; the inner box's bytes <= the swizzle width
// when swizzled) lands in shared memory densely, row after row. Elements outside the tensor read
// as zero (OOB fill none).
struct TmaTiledDesc {
  const void* base = nullptr;
  DType dtype = DType::kF16;
  int rank = 2;
  uint64_t dims[5] = {1, 1, 1, 1, 1};
  uint64_t strides_bytes[4] = {0, 0, 0, 0};  // of dims 1..rank-1
  uint32_t box[5] = {1, 1, 1, 1, 1};
  uint32_t element_strides[5] = {1, 1, 1, 1, 1};
  TmaSwizzle swizzle = TmaSwizzle::kNone;
  int l2_promote_bytes = 256;  // L2 promotion: 0 (none), 64, 128 or 256 bytes
};

// True when the driver provides cuTensorMapEncodeTiled (looked up once).
bool tma_available();

// Multiprocessors of the current device when it is compute capability 9.0 (Hopper: TMA, wgmma),
// else 0 (looked up once per device).
int sm90_multiprocessors();

// Encodes `d` into *out. InvalidArgument for a description TMA cannot express (with the reason),
// Unavailable when the driver lacks the entry point, Internal when the driver rejects it.
Status encode_tma_tiled(const TmaTiledDesc& d, CUtensorMap* out);

// The common 2D case: a row-major [rows, cols] matrix (row stride `row_stride` elements), boxes
// of box_rows x box_cols elements.
Status encode_tma_2d(const void* base, DType dtype, uint64_t rows, uint64_t cols, uint64_t row_stride,
                     uint32_t box_rows, uint32_t box_cols, TmaSwizzle swizzle, CUtensorMap* out);

}  // namespace sd::cuda
