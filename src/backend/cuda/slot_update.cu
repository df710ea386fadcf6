// Backend::slot_update on CUDA: the guidance + sampler step of a whole batch in one launch.
// One block row per table row (blockIdx.y); its addresses and coefficients are read from
// device memory into shared memory when the kernel runs, so captured graphs see new values.
#include <string>

#include "backend/cuda/cuda_backend_impl.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_types.cuh"
#include "backend/cuda/pdl.cuh"

namespace sd::cuda {
namespace {

constexpr int kMaxIn = Backend::kSlotUpdateMaxInputs;
constexpr int kMaxOut = Backend::kSlotUpdateMaxOutputs;
constexpr int kMaxDirect = Backend::kSlotUpdateMaxDirect;
constexpr int kBlock = 256;

template <typename T>
struct DirectInputs {
  const T* row0[kMaxDirect];  // row 0 of each direct input; row r starts r * row_elems later
};

// table: i64 [R, n_in - n_direct + n_out] addresses (0 = absent); coeffs: f32 [R, n_out, n_in].
// No __restrict__: an output may alias an input of its own row (read before written).
template <typename T>
__global__ void slot_update_kernel(const int64_t* table, const float* coeffs, DirectInputs<T> direct, int n_direct,
                                   int n_in, int n_out, int64_t row_elems) {
  pdl_wait();  // PDL (pdl.cuh): first, in every CTA
  pdl_trigger();
  __shared__ const T* in[kMaxIn];
  __shared__ T* out[kMaxOut];
  __shared__ float c[kMaxOut * kMaxIn];
  const int64_t r = blockIdx.y;
  const int columns = n_in - n_direct + n_out;
  const int64_t* trow = table + r * columns;
  if (threadIdx.x < n_in) {
    const int i = threadIdx.x;
    in[i] = i < n_direct ? direct.row0[i] + r * row_elems : reinterpret_cast<const T*>(trow[i - n_direct]);
  } else if (threadIdx.x >= kMaxIn && threadIdx.x < kMaxIn + n_out) {
    const int j = threadIdx.x - kMaxIn;
    out[j] = reinterpret_cast<T*>(trow[n_in - n_direct + j]);
  }
  for (int k = threadIdx.x; k < n_out * n_in; k += blockDim.x) c[k] = coeffs[r * n_out * n_in + k];
  __syncthreads();
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < row_elems; e += int64_t{gridDim.x} * blockDim.x) {
    float v[kMaxIn];
#pragma unroll
    for (int i = 0; i < kMaxIn; ++i) v[i] = (i < n_in && in[i]) ? to_f32(in[i][e]) : 0.f;
#pragma unroll
    for (int j = 0; j < kMaxOut; ++j) {
      if (j >= n_out || !out[j]) continue;
      float acc = 0.f;
#pragma unroll
      for (int i = 0; i < kMaxIn; ++i) {
        if (i < n_in) acc += c[j * n_in + i] * v[i];
      }
      out[j][e] = from_f32<T>(acc);
    }
  }
}

}  // namespace

void CudaBackend::slot_update(const std::vector<Tensor>& direct, const Tensor& table, const Tensor& coeffs,
                              int64_t row_elems, DType dtype) {
  check_on_device(table, "slot_update");
  check_on_device(coeffs, "slot_update");
  SD_ASSERT(table.dtype() == DType::kI64 && table.ndim() == 2, "slot_update: table must be i64 [R, cols], got " + table.describe());
  SD_ASSERT(coeffs.dtype() == DType::kF32 && coeffs.ndim() == 3,
            "slot_update: coeffs must be f32 [R, n_out, n_in], got " + coeffs.describe());
  const int64_t rows = coeffs.dim(0);
  const int n_out = static_cast<int>(coeffs.dim(1)), n_in = static_cast<int>(coeffs.dim(2));
  const int n_direct = static_cast<int>(direct.size());
  SD_ASSERT(n_in >= n_direct && n_in <= kMaxIn && n_out >= 1 && n_out <= kMaxOut && n_direct <= kMaxDirect,
            "slot_update: " + std::to_string(n_in) + " inputs (" + std::to_string(n_direct) + " direct), " +
                std::to_string(n_out) + " outputs exceed the limits");
  SD_ASSERT(table.dim(0) == rows && table.dim(1) == n_in - n_direct + n_out,
            "slot_update: table " + table.describe() + " vs coeffs " + coeffs.describe() + " with " +
                std::to_string(n_direct) + " direct inputs");
  SD_ASSERT(row_elems > 0 && rows <= 65535, "slot_update: " + std::to_string(rows) + " rows of " + std::to_string(row_elems));
  for (const Tensor& d : direct) {
    check_on_device(d, "slot_update");
    SD_ASSERT(d.dtype() == dtype && d.numel() == rows * row_elems,
              "slot_update: direct input " + d.describe() + " for " + std::to_string(rows) + " rows of " +
                  std::to_string(row_elems) + " " + dtype_name(dtype));
  }
  if (rows == 0) return;
  activate();
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    DirectInputs<T> d{};
    for (int i = 0; i < n_direct; ++i) d.row0[i] = direct[static_cast<size_t>(i)].data<T>();
    const dim3 grid(grid_for(row_elems, kBlock, 1024), static_cast<unsigned>(rows));
    launch_kernel(slot_update_kernel<T>, grid, kBlock, 0, stream_, table.data<int64_t>(), coeffs.data<float>(), d,
        n_direct, n_in,
                                                        n_out, row_elems);
    SD_CUDA_LAUNCH_CHECK();
  });
}

}  // namespace sd::cuda
