// Host-side TMA tensor-map encoding (tma.h): cuTensorMapEncodeTiled from the driver entry point
// (no libcuda link), argument checks with clear messages before the driver sees them.
// Used by the Hopper GEMM (gemm_wgmma.cu) and the wgmma convolution.
#include "backend/cuda/tma.h"

#include <cuda_runtime.h>
#include <cudaTypedefs.h>

#include <algorithm>
#include <mutex>
#include <string>

namespace sd::cuda {
namespace {

PFN_cuTensorMapEncodeTiled_v12000 encode_fn() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = nullptr;
  static std::once_flag once;
  std::call_once(once, [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult q{};
    const cudaError_t err = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &q);
    if (err == cudaSuccess && q == cudaDriverEntryPointSuccess) fn = reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(p);
    else (void)cudaGetLastError();  // clear the (non-sticky) error of the query
  });
  return fn;
}

std::string dims_string(const TmaTiledDesc& d) {
  std::string s = "[";
  for (int i = 0; i < d.rank; ++i) s += (i ? ", " : "") + std::to_string(d.dims[i]);
  s += "] box [";
  for (int i = 0; i < d.rank; ++i) s += (i ? ", " : "") + std::to_string(d.box[i]);
  return s + "]";
}

}  // namespace

bool tma_available() { return encode_fn() != nullptr; }

CUtensorMapL2promotion l2_promotion(int bytes) {
  switch (bytes) {
    case 64: return CU_TENSOR_MAP_L2_PROMOTION_L2_64B;
    case 128: return CU_TENSOR_MAP_L2_PROMOTION_L2_128B;
    case 256: return CU_TENSOR_MAP_L2_PROMOTION_L2_256B;
    default: return CU_TENSOR_MAP_L2_PROMOTION_NONE;
  }
}

Status encode_tma_tiled(const TmaTiledDesc& d, CUtensorMap* out) {
  CUtensorMapDataType type;
  switch (d.dtype) {
    case DType::kF16: type = CU_TENSOR_MAP_DATA_TYPE_FLOAT16; break;
    case DType::kBF16: type = CU_TENSOR_MAP_DATA_TYPE_BFLOAT16; break;
    case DType::kF32: type = CU_TENSOR_MAP_DATA_TYPE_FLOAT32; break;
    case DType::kI32: type = CU_TENSOR_MAP_DATA_TYPE_INT32; break;
    case DType::kU8: type = CU_TENSOR_MAP_DATA_TYPE_UINT8; break;
    default: return InvalidArgument(std::string("TMA tensor map: unsupported dtype ") + dtype_name(d.dtype));
  }
  const std::string what = "TMA tensor map " + dims_string(d);
  if (d.rank < 1 || d.rank > 5) return InvalidArgument(what + ": rank must be 1..5");
  if (reinterpret_cast<uintptr_t>(d.base) % 16 != 0) return InvalidArgument(what + ": base not 16-byte aligned");
  for (int i = 0; i < d.rank; ++i) {
    if (d.dims[i] == 0 || d.dims[i] > (uint64_t{1} << 32)) return InvalidArgument(what + ": dims must be 1..2^32");
    if (d.box[i] == 0 || d.box[i] > 256) return InvalidArgument(what + ": box sizes must be 1..256");
    if (d.element_strides[i] == 0 || d.element_strides[i] > 8) return InvalidArgument(what + ": element strides 1..8");
  }
  for (int i = 0; i + 1 < d.rank; ++i) {
    if (d.strides_bytes[i] % 16 != 0 || d.strides_bytes[i] >= (uint64_t{1} << 40))
      return InvalidArgument(what + ": strides must be multiples of 16 bytes (< 2^40)");
  }
  const uint64_t inner_bytes = uint64_t{d.box[0]} * dtype_size(d.dtype);
  CUtensorMapSwizzle swizzle = CU_TENSOR_MAP_SWIZZLE_NONE;
  uint64_t swizzle_bytes = 0;
  switch (d.swizzle) {
    case TmaSwizzle::kNone: break;
    case TmaSwizzle::k32B: swizzle = CU_TENSOR_MAP_SWIZZLE_32B; swizzle_bytes = 32; break;
    case TmaSwizzle::k64B: swizzle = CU_TENSOR_MAP_SWIZZLE_64B; swizzle_bytes = 64; break;
    case TmaSwizzle::k128B: swizzle = CU_TENSOR_MAP_SWIZZLE_128B; swizzle_bytes = 128; break;
  }
  if (inner_bytes % 16 != 0) return InvalidArgument(what + ": the inner box must be a multiple of 16 bytes");
  if (swizzle_bytes && inner_bytes > swizzle_bytes)
    return InvalidArgument(what + ": the inner box exceeds the swizzle width");
  PFN_cuTensorMapEncodeTiled_v12000 fn = encode_fn();
  if (!fn) return Unavailable("TMA tensor map: the CUDA driver lacks cuTensorMapEncodeTiled");
  cuuint64_t dims[5], strides[4];
  cuuint32_t box[5], estrides[5];
  for (int i = 0; i < d.rank; ++i) {
    dims[i] = d.dims[i];
    box[i] = d.box[i];
    estrides[i] = d.element_strides[i];
  }
  for (int i = 0; i + 1 < d.rank; ++i) strides[i] = d.strides_bytes[i];
  const CUresult r = fn(out, type, static_cast<cuuint32_t>(d.rank), const_cast<void*>(d.base), dims, strides, box,
                        estrides, CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle,
                        l2_promotion(d.l2_promote_bytes),
                        CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) return Internal(what + ": cuTensorMapEncodeTiled failed (CUresult " + std::to_string(r) + ")");
  return Status::Ok();
}

Status encode_tma_2d(const void* base, DType dtype, uint64_t rows, uint64_t cols, uint64_t row_stride,
                     uint32_t box_rows, uint32_t box_cols, TmaSwizzle swizzle, CUtensorMap* out) {
  TmaTiledDesc d;
  d.base = base;
  d.dtype = dtype;
  d.rank = 2;
  d.dims[0] = cols;
  d.dims[1] = rows;
  d.strides_bytes[0] = row_stride * dtype_size(dtype);
  d.box[0] = box_cols;
  d.box[1] = box_rows;
  d.swizzle = swizzle;
  return encode_tma_tiled(d, out);
}

// Multiprocessors of the current device when it is sm_90, else 0 (looked up once per device).
int sm90_multiprocessors() {
  constexpr int kMaxDevices = 64;
  static std::mutex mu;
  static int cached[kMaxDevices];  // 0 unknown, -1 not sm_90, else the multiprocessor count
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= kMaxDevices) {
    (void)cudaGetLastError();
    return 0;
  }
  std::lock_guard<std::mutex> lock(mu);
  if (!cached[dev]) {
    int major = 0, minor = 0, sms = 0;
    const bool ok = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess &&
                    cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) == cudaSuccess &&
                    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) == cudaSuccess;
    (void)cudaGetLastError();
    cached[dev] = ok && major == 9 && minor == 0 && sms > 0 ? sms : -1;
  }
  return std::max(cached[dev], 0);
}

}  // namespace sd::cuda
