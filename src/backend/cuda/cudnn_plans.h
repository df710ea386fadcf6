// cuDNN graph API: the candidate execution plans of a finalised operation graph, shared by the
// convolution and fused-attention paths. Heuristic mode A first, then the fallback list;
// plans over the workspace limit are skipped. Callers time the candidates and keep the best.
#pragma once

#include <cudnn.h>

#include <cstdint>
#include <vector>

namespace sd::cuda {

struct CudnnCandidates {
  std::vector<cudnnBackendDescriptor_t> plans;      // finalised execution plans
  std::vector<int64_t> workspace;                   // bytes, one per plan
  std::vector<cudnnBackendDescriptor_t> configs;    // engine configs the plans reference (destroy after)
};

// How many candidate plans to build and time per shape: SDSERVE_CUDNN_CANDIDATES (1..64) when
// set, else `fallback`. More candidates: a longer first call per shape, perhaps a faster plan.
int cudnn_max_candidates(int fallback);

// SDSERVE_CUDNN_PLAN_LOG=1: log each plan search's and each shape's tuning time (first calls).
bool cudnn_plan_log();

CudnnCandidates find_cudnn_plans(cudnnHandle_t handle, cudnnBackendDescriptor_t graph, int max_candidates,
                                 int64_t max_workspace);

}  // namespace sd::cuda
