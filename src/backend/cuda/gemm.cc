// linear() through cuBLASLt: y[M, N] = x[M, K] · w[N, K]^T (+ bias[N] as the matmul's
// epilogue) (+ residual[M, N] as C with beta = 1: linear_residual), operands in the compute
// dtype, f32 accumulation. Row-major tensors are read
// as column-major matrices: y^T (N x M) = w (N x K, from w^T col-major) · x^T (K x M).
#include "backend/cuda/gemm.h"

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <cstdint>
#include <string>

#include "backend/cuda/cuda_backend_impl.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/tuning_l2.h"

namespace sd::cuda {

bool gemm_autotune() {
  static const bool on = [] {
    const char* env = std::getenv("SDSERVE_CUBLASLT_AUTOTUNE");
    return !(env && env[0] == '0');
  }();
  return on;
}

int pointer_alignment(const void* p) {
  const auto addr = reinterpret_cast<uintptr_t>(p);
  int a = 256;
  while (a > 1 && (addr % static_cast<uintptr_t>(a)) != 0) a /= 2;
  return a;
}

GemmPlans::~GemmPlans() {
  for (auto& [key, plan] : plans_) {
    if (plan.w) cublasLtMatrixLayoutDestroy(plan.w);
    if (plan.x) cublasLtMatrixLayoutDestroy(plan.x);
    if (plan.y) cublasLtMatrixLayoutDestroy(plan.y);
    if (plan.op) cublasLtMatmulDescDestroy(plan.op);
  }
}

GemmPlan& GemmPlans::get(cublasLtHandle_t lt, const GemmKey& key, size_t workspace_bytes) {
  auto it = plans_.find(key);
  if (it != plans_.end()) return it->second;

  GemmPlan plan;
  const cudaDataType_t dt = cuda_data_type(key.dtype);
  SD_CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t trans_w = CUBLAS_OP_T, trans_x = CUBLAS_OP_N;
  SD_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_TRANSA, &trans_w, sizeof(trans_w)));
  SD_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_TRANSB, &trans_x, sizeof(trans_x)));
  if (key.bias) {
    const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
    SD_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
  }
  // Column-major views: w^T is K x N (ld K), x^T is K x M (ld K), y^T is N x M (ld N).
  const auto k = static_cast<uint64_t>(key.k), n = static_cast<uint64_t>(key.n), m = static_cast<uint64_t>(key.m);
  SD_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.w, dt, k, n, static_cast<int64_t>(k)));
  SD_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.x, dt, k, m, static_cast<int64_t>(k)));
  SD_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.y, dt, n, m, static_cast<int64_t>(n)));

  cublasLtMatmulPreference_t pref = nullptr;
  SD_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const uint32_t aw = static_cast<uint32_t>(key.align_w), ax = static_cast<uint32_t>(key.align_x),
                 ay = static_cast<uint32_t>(key.align_y),
                 ac = static_cast<uint32_t>(key.residual ? std::min(key.align_y, key.align_residual) : key.align_y);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes,
                                       sizeof(workspace_bytes));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &aw, sizeof(aw));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &ax, sizeof(ax));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &ac, sizeof(ac));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &ay, sizeof(ay));
  cublasLtMatmulHeuristicResult_t results[kGemmCandidates] = {};
  int found = 0;
  const int wanted = gemm_autotune() ? kGemmCandidates : 1;
  const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(lt, plan.op, plan.w, plan.x, plan.y, plan.y, pref, wanted,
                                                           results, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (st != CUBLAS_STATUS_SUCCESS || found == 0) {
    plan.use_cublas = true;  // e.g. row strides that are not 16-byte multiples
  } else {
    for (int i = 0; i < found; ++i) {
      if (results[i].state == CUBLAS_STATUS_SUCCESS) plan.candidates.push_back(results[i].algo);
    }
    if (plan.candidates.empty()) plan.candidates.push_back(results[0].algo);
    plan.algo = plan.candidates[0];
    plan.tuned = plan.candidates.size() == 1;
  }
  return plans_.emplace(key, plan).first->second;
}

// Times every candidate algorithm of `plan` (1 warm-up, then 3 runs each timed alone after
// `prepare()`, which evicts L2 and re-reads the input: the weights cold, as in the step; tuning_l2.h;
// candidates that fail are skipped) and keeps the fastest. `run(algo)` enqueues one matmul on the
// stream; its output is recomputed by the caller afterwards, so the candidates may overwrite it.
template <typename Run, typename Prepare>
void tune_gemm(cudaStream_t stream, GemmPlan& plan, const Run& run, const Prepare& prepare) {
  cudaEvent_t start = nullptr, stop = nullptr;
  SD_CUDA_CHECK(cudaEventCreate(&start));
  SD_CUDA_CHECK(cudaEventCreate(&stop));
  float best_ms = std::numeric_limits<float>::max();
  for (const cublasLtMatmulAlgo_t& algo : plan.candidates) {
    if (run(algo) != CUBLAS_STATUS_SUCCESS) continue;
    const float total =
        time_runs_alone(stream, start, stop, 3, prepare, [&] { return run(algo) == CUBLAS_STATUS_SUCCESS; });
    if (total >= 0.f && total < best_ms) {
      best_ms = total;
      plan.algo = algo;
    }
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  plan.tuned = true;
}

Tensor CudaBackend::linear(const Tensor& x, const Tensor& w, const Tensor& bias) {
  return linear_impl(x, w, bias, Tensor());
}

Tensor CudaBackend::linear_residual(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& residual) {
  check_on_device(residual, "linear_residual");
  if (!fused_epilogues_enabled()) return add(linear_impl(x, w, bias, Tensor()), residual);
  return linear_impl(x, w, bias, residual);
}

// Checks x [..., K], w [N, K], bias [N], residual [..., N]; the plan of the shape for an output
// from the allocator (256-byte aligned); null when the output is empty.
GemmPlan* CudaBackend::linear_plan(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& residual) {
  check_on_device(x, "linear");
  SD_ASSERT(w.ndim() == 2 && x.ndim() >= 1 && x.dim(-1) == w.dim(1),
            "linear: x " + x.describe() + " w " + w.describe());
  SD_ASSERT(x.dtype() == w.dtype(), "linear: dtype of x " + x.describe() + " and w " + w.describe());
  const int64_t k = w.dim(1);
  return linear_plan_rows(k ? x.numel() / k : 0, pointer_alignment(x.raw()), w, bias, residual);
}

GemmPlan* CudaBackend::linear_plan_rows(int64_t m, int align_x, const Tensor& w, const Tensor& bias,
                                        const Tensor& residual) {
  check_on_device(w, "linear");
  SD_ASSERT(w.ndim() == 2, "linear: w " + w.describe());
  const bool has_bias = bias.defined(), has_res = residual.defined();
  if (has_bias) {
    check_on_device(bias, "linear");
    SD_ASSERT(bias.numel() == w.dim(0) && bias.dtype() == w.dtype(), "linear: bias " + bias.describe());
  }
  const int64_t k = w.dim(1), n = w.dim(0);
  if (has_res) {
    SD_ASSERT(residual.numel() == m * n && residual.dim(-1) == n && residual.dtype() == w.dtype(),
              "linear_residual: residual " + residual.describe() + " for " + std::to_string(m) + " rows, w " +
                  w.describe());
  }
  if (m == 0 || n == 0) return nullptr;
  SD_ASSERT(k > 0, "linear with K = 0");
  SD_ASSERT(m < (int64_t{1} << 31) && n < (int64_t{1} << 31) && k < (int64_t{1} << 31), "linear: too large");
  const GemmKey key{m, n, k, w.dtype(), has_bias, pointer_alignment(w.raw()), align_x,
                    /*align_y=*/256, has_bias ? pointer_alignment(bias.raw()) : 256, has_res,
                    has_res ? pointer_alignment(residual.raw()) : 256};
  return &gemm_->get(lt_, key, gemm_workspace_bytes_);
}

Tensor CudaBackend::linear_impl(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& residual) {
  Shape out_shape = x.shape();
  out_shape.back() = w.dim(0);
  GemmPlan* plan = linear_plan(x, w, bias, residual);
  if (!plan) return empty(out_shape, x.dtype());
  const auto library = [&] {
    Tensor y = empty(out_shape, x.dtype());
    SD_ASSERT(pointer_alignment(y.raw()) == 256, "linear: output not 256-byte aligned");
    linear_library(x, w, bias, residual, *plan, y);
    return y;
  };
  if (Tensor yw = linear_wgmma(x, w, bias, residual, /*geglu=*/false, *plan, library); yw.defined()) return yw;
  return library();
}

Tensor CudaBackend::linear_geglu(const Tensor& x, const Tensor& w, const Tensor& bias) {
  SD_ASSERT(w.ndim() == 2 && w.dim(0) % 2 == 0, "linear_geglu: w " + w.describe());
  Shape out_shape = x.shape();
  out_shape.back() = w.dim(0);
  GemmPlan* plan = linear_plan(x, w, bias, Tensor());
  if (!plan) return geglu(empty(out_shape, x.dtype()));
  const auto library = [&] {
    Tensor wide = empty(out_shape, x.dtype());  // [..., 2N]: value, gate
    SD_ASSERT(pointer_alignment(wide.raw()) == 256, "linear_geglu: output not 256-byte aligned");
    linear_library(x, w, bias, Tensor(), *plan, wide);
    return geglu(wide);
  };
  if (Tensor y = linear_wgmma(x, w, bias, Tensor(), /*geglu=*/true, *plan, library); y.defined()) return y;
  return library();
}

void CudaBackend::linear_library(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& residual,
                                 GemmPlan& plan, const Tensor& y) {
  const bool has_bias = bias.defined(), has_res = residual.defined();
  const int64_t k = w.dim(1), n = w.dim(0), m = x.numel() / k;
  const float alpha = 1.f, beta = has_res ? 1.f : 0.f;
  if (!plan.use_cublas) {
    if (has_bias) {
      const void* bias_ptr = bias.raw();
      SD_CUBLAS_CHECK(
          cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias_ptr, sizeof(bias_ptr)));
    }
    const void* c = has_res ? residual.raw() : y.raw();  // C [M, N]: read only when beta != 0
    const auto run = [&](const cublasLtMatmulAlgo_t& algo) {
      return cublasLtMatmul(lt_, plan.op, &alpha, w.raw(), plan.w, x.raw(), plan.x, &beta, c, plan.y, y.raw(),
                            plan.y, &algo, gemm_workspace_, gemm_workspace_bytes_, stream_);
    };
    if (!plan.tuned) {
      cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
      SD_CUDA_CHECK(cudaStreamIsCapturing(stream_, &capture));
      if (capture == cudaStreamCaptureStatusNone) {  // never inside a capture
        tune_gemm(stream_, plan, run, [&] { prepare_tuning_run(x.raw(), x.nbytes()); });
      }
    }
    const cublasStatus_t st = run(plan.algo);
    if (st == CUBLAS_STATUS_SUCCESS) return;
    if (st != CUBLAS_STATUS_NOT_SUPPORTED && st != CUBLAS_STATUS_INVALID_VALUE) {
      SD_CUBLAS_CHECK(st);
    }
    plan.use_cublas = true;  // this shape/alignment is not for cuBLASLt: use cuBLAS from now on
  }
  if (has_res) copy(residual, y);  // y = residual, then y += x w^T
  const cudaDataType_t dt = cuda_data_type(x.dtype());
  SD_CUBLAS_CHECK(cublasGemmEx(blas(), CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(m),
                               static_cast<int>(k), &alpha, w.raw(), dt, static_cast<int>(k), x.raw(), dt,
                               static_cast<int>(k), &beta, y.raw(), dt, static_cast<int>(n), CUBLAS_COMPUTE_32F,
                               CUBLAS_GEMM_DEFAULT));
  if (has_bias) add_bias_rows(y, bias);
}

}  // namespace sd::cuda
