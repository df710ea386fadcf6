// Unfused attention for head dims beyond the fused kernels (the VAE's single 512-wide head):
// per batch, S = Q K^T for all heads by one strided-batched cuBLAS GEMM into f32, a masked
// softmax kernel writing P in the compute dtype, and O = P V by a second batched GEMM.
#include <cmath>
#include <string>

#include "backend/cuda/attention.h"
#include "backend/cuda/cuda_backend_impl.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_types.cuh"

namespace sd::cuda {

namespace {

// s [rows, lk] f32 (row r is query r % lq) -> p [rows, lk] in T: softmax(scale * s) with
// keys j > query i masked when causal. One block per row.
template <typename T>
__global__ void masked_softmax_kernel(const float* __restrict__ s, T* __restrict__ p, int lq, int lk, float scale,
                                      bool causal) {
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x;
  const int qi = static_cast<int>(row % lq);
  const int limit = causal ? min(lk, qi + 1) : lk;  // keys [0, limit) are visible
  const float* srow = s + row * lk;
  T* prow = p + row * lk;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  float m = -INFINITY;
  for (int j = threadIdx.x; j < limit; j += blockDim.x) m = fmaxf(m, srow[j] * scale);
  for (int off = 16; off > 0; off /= 2) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, off));
  if (lane == 0) scratch[warp] = m;
  __syncthreads();
  m = scratch[0];
  for (int w = 1; w < warps; ++w) m = fmaxf(m, scratch[w]);
  __syncthreads();
  float sum = 0.f;
  for (int j = threadIdx.x; j < limit; j += blockDim.x) sum += __expf(srow[j] * scale - m);
  for (int off = 16; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
  if (lane == 0) scratch[warp] = sum;
  __syncthreads();
  sum = 0.f;
  for (int w = 0; w < warps; ++w) sum += scratch[w];
  const float inv = 1.f / sum;
  for (int j = threadIdx.x; j < lk; j += blockDim.x) {
    prow[j] = from_f32<T>(j < limit ? __expf(srow[j] * scale - m) * inv : 0.f);
  }
}

}  // namespace

Tensor CudaBackend::attention_unfused(const Tensor& q, const Tensor& k, const Tensor& v, int heads, bool causal) {
  const int64_t batch = q.dim(0), lq = q.dim(1), lk = k.dim(1), d = q.dim(2) / heads;
  SD_ASSERT(lq * lk * heads < (int64_t{1} << 31), "attention: score matrix too large for " + q.describe());
  Tensor out = empty(q.shape(), q.dtype());
  Tensor scores = empty({heads, lq, lk}, DType::kF32);  // one batch at a time
  Tensor probs = empty({heads, lq, lk}, q.dtype());
  const cudaDataType_t dt = cuda_data_type(q.dtype());
  const float one = 1.f, zero = 0.f;
  const int64_t ld = heads * d;  // row stride of q, k, v, out
  const size_t es = dtype_size(q.dtype());
  const auto i32 = [](int64_t x) { return static_cast<int>(x); };
  for (int64_t b = 0; b < batch; ++b) {
    const char* qb = static_cast<const char*>(q.raw()) + b * lq * ld * es;
    const char* kb = static_cast<const char*>(k.raw()) + b * lk * ld * es;
    const char* vb = static_cast<const char*>(v.raw()) + b * lk * ld * es;
    char* ob = static_cast<char*>(out.raw()) + b * lq * ld * es;
    // Column-major view: S^T (lk x lq) = K (lk x d, = K^T buffer transposed) * Q^T (d x lq).
    SD_CUBLAS_CHECK(cublasGemmStridedBatchedEx(blas(), CUBLAS_OP_T, CUBLAS_OP_N, i32(lk), i32(lq), i32(d), &one, kb,
                                               dt, i32(ld), d, qb, dt, i32(ld), d, &zero, scores.raw(), CUDA_R_32F,
                                               i32(lk), lq * lk, i32(heads), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    dispatch_half(q.dtype(), [&](auto tag) {
      using T = decltype(tag);
      masked_softmax_kernel<T><<<static_cast<unsigned>(heads * lq), 256, 0, stream_>>>(
          scores.f32(), probs.data<T>(), i32(lq), i32(lk), 1.f / std::sqrt(static_cast<float>(d)), causal);
      SD_CUDA_LAUNCH_CHECK();
    });
    // O^T (d x lq) = V^T (d x lk) * P^T (lk x lq), written with row stride ld per head.
    SD_CUBLAS_CHECK(cublasGemmStridedBatchedEx(blas(), CUBLAS_OP_N, CUBLAS_OP_N, i32(d), i32(lq), i32(lk), &one, vb,
                                               dt, i32(ld), d, probs.raw(), dt, i32(lk), lq * lk, &zero, ob, dt,
                                               i32(ld), d, i32(heads), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }
  return out;
}

}  // namespace sd::cuda
