// cuBLASLt plans for linear() and linear_residual(): per (M, N, K, dtype, bias, residual,
// pointer alignments) one matmul
// descriptor, three matrix layouts and the heuristic's top algorithms, built on first use; the
// first call outside a graph capture times them and keeps the fastest for every later call.
#pragma once

#include <cublasLt.h>

#include <cstdint>
#include <map>
#include <tuple>
#include <vector>

#include "backend/cuda/gemm_wgmma.h"
#include "tensor/tensor.h"

namespace sd::cuda {

struct GemmKey {
  int64_t m, n, k;
  DType dtype;
  bool bias;
  int align_w, align_x, align_y, align_bias;  // bytes, power of two <= 256
  bool residual = false;  // y = x w^T (+ bias) + residual: C = residual, beta = 1
  int align_residual = 256;
  auto tie() const {
    return std::tie(m, n, k, dtype, bias, align_w, align_x, align_y, align_bias, residual, align_residual);
  }
  bool operator<(const GemmKey& o) const { return tie() < o.tie(); }
};

struct GemmPlan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t w = nullptr, x = nullptr, y = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool use_cublas = false;  // cuBLASLt found no algorithm: plain cublasGemmEx + bias kernel
  // The heuristic's top algorithms (algo = candidates[0] until tuned): the first eager call of
  // the shape times each and keeps the fastest (SDSERVE_CUBLASLT_AUTOTUNE=0: the heuristic's first).
  std::vector<cublasLtMatmulAlgo_t> candidates;
  bool tuned = false;
  // Whether our Hopper GEMM (gemm_wgmma.h) runs this shape instead, decided by timing on the first
  // eager call (gemm_wgmma_choice.cc); [0] plain / residual, [1] with the GEGLU epilogue, [2] the
  // two-source input of concat_norm_shortcut (timed against concat_channels + cuBLASLt).
  struct Wgmma {
    enum class Use { kUntested, kLibrary, kWgmma } use = Use::kUntested;
    WgmmaGemmConfig config;
  };
  Wgmma wgmma[3];
};

class GemmPlans {
 public:
  GemmPlans() = default;
  ~GemmPlans();
  GemmPlans(const GemmPlans&) = delete;
  GemmPlans& operator=(const GemmPlans&) = delete;
  // The plan for `key`, created (heuristic query included) on first use.
  GemmPlan& get(cublasLtHandle_t lt, const GemmKey& key, size_t workspace_bytes);
  size_t size() const { return plans_.size(); }

 private:
  std::map<GemmKey, GemmPlan> plans_;
};

constexpr int kGemmCandidates = 8;  // heuristic results timed per shape
// False when SDSERVE_CUBLASLT_AUTOTUNE=0 (the heuristic's first algorithm, untimed).
bool gemm_autotune();

// Largest power of two (<= 256) dividing the address.
int pointer_alignment(const void* p);

}  // namespace sd::cuda
