// find_cudnn_plans: engine heuristics -> engine configs -> execution plans, with every failure
// treated as "no such candidate" (the callers fall back to their own kernels when none is
// left). Descriptors that must outlive the plans are returned to the caller to keep.
#include "backend/cuda/cudnn_plans.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>

#include "backend/cuda/cuda_check.h"

namespace sd::cuda {

int cudnn_max_candidates(int fallback) {
  static const int from_env = [] {
    const char* env = std::getenv("SDSERVE_CUDNN_CANDIDATES");
    if (!env || !*env) return 0;
    char* end = nullptr;
    const long v = std::strtol(env, &end, 10);
    if (*end != '\0' || v < 1 || v > 64) {
      std::fprintf(stderr, "sdserve: ignoring SDSERVE_CUDNN_CANDIDATES=%s (want 1..64)\n", env);
      return 0;
    }
    return static_cast<int>(v);
  }();
  return from_env > 0 ? from_env : fallback;
}

bool cudnn_plan_log() {
  static const bool on = [] {
    const char* env = std::getenv("SDSERVE_CUDNN_PLAN_LOG");
    return env && env[0] == '1';
  }();
  return on;
}

namespace {

bool plan_log() { return cudnn_plan_log(); }

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

CudnnCandidates find_cudnn_plans(cudnnHandle_t handle, cudnnBackendDescriptor_t graph, int max_candidates,
                                 int64_t max_workspace) {
  CudnnCandidates out;
  const auto search_start = std::chrono::steady_clock::now();
  int finalized = 0;
  for (cudnnBackendHeurMode_t mode : {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK}) {
    cudnnBackendDescriptor_t heur = nullptr;
    SD_CUDNN_CHECK(cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, &heur));
    int64_t count = 0, got = 0;
    std::vector<cudnnBackendDescriptor_t> cfgs;
    bool ok = cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                                       &graph) == CUDNN_STATUS_SUCCESS &&
              cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode) ==
                  CUDNN_STATUS_SUCCESS &&
              cudnnBackendFinalize(heur) == CUDNN_STATUS_SUCCESS &&
              cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count,
                                       nullptr) == CUDNN_STATUS_SUCCESS &&
              count > 0;
    if (ok) {
      cfgs.assign(static_cast<size_t>(count), nullptr);
      for (auto& c : cfgs) SD_CUDNN_CHECK(cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, &c));
      ok = cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, count, &got,
                                    cfgs.data()) == CUDNN_STATUS_SUCCESS;
    }
    cudnnBackendDestroyDescriptor(heur);
    for (int64_t i = 0; ok && i < got && static_cast<int>(out.plans.size()) < max_candidates; ++i) {
      cudnnBackendDescriptor_t plan = nullptr;
      if (cudnnBackendCreateDescriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, &plan) != CUDNN_STATUS_SUCCESS) break;
      int64_t ws = 0, n = 0;
      const auto plan_start = std::chrono::steady_clock::now();
      cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle);  // deprecated
      const bool plan_ok =
          cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                                   &cfgs[static_cast<size_t>(i)]) == CUDNN_STATUS_SUCCESS &&
          cudnnBackendFinalize(plan) == CUDNN_STATUS_SUCCESS &&
          cudnnBackendGetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &n, &ws) ==
              CUDNN_STATUS_SUCCESS &&
          ws <= max_workspace;
      ++finalized;
      if (plan_log() && ms_since(plan_start) > 2.0) {
        std::fprintf(stderr, "sdserve: cuDNN plan %lld of %lld (mode %s): %.1f ms to finalise%s\n",
                     static_cast<long long>(i), static_cast<long long>(got), mode == CUDNN_HEUR_MODE_A ? "A" : "fallback",
                     ms_since(plan_start), plan_ok ? "" : " (rejected)");
      }
      if (!plan_ok) {
        cudnnBackendDestroyDescriptor(plan);
        continue;
      }
      out.plans.push_back(plan);
      out.workspace.push_back(ws);
    }
    out.configs.insert(out.configs.end(), cfgs.begin(), cfgs.end());
    if (!out.plans.empty()) break;
  }
  if (plan_log()) {
    std::fprintf(stderr, "sdserve: cuDNN plan search: %zu plans (%d finalised) in %.1f ms\n", out.plans.size(),
                 finalized, ms_since(search_start));
  }
  return out;
}

}  // namespace sd::cuda
