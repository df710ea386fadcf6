// conv2d through cuDNN 9's graph (backend descriptor) API: one convolution-forward operation
// graph per shape, execution plans for the heuristic's engine configs, the fastest chosen by
// timing them on the first call (SDSERVE_CUDNN_AUTOTUNE=0: the heuristic's first). Used by
// conv.cc by default; SDSERVE_CUDNN_GRAPH=0 selects the legacy API there.
#pragma once

#include <cudnn.h>

#include <map>
#include <tuple>
#include <vector>

#include "backend/cuda/conv.h"

namespace sd::cuda {

struct ConvGraphKey {
  ConvKey conv;
  int alignment;  // bytes: the smallest alignment of x, w and y, at most 16
  auto tie() const { return std::tie(conv, alignment); }
  bool operator<(const ConvGraphKey& o) const { return tie() < o.tie(); }
};

struct ConvGraphPlan {
  // Candidates (best heuristic first) until tuned, then exactly one.
  std::vector<cudnnBackendDescriptor_t> plans;
  std::vector<int64_t> workspace;
  std::vector<cudnnBackendDescriptor_t> keep;  // graph and configs the plans were built from
  bool tuned = false;
};

class ConvGraphPlans {
 public:
  ConvGraphPlans() = default;
  ~ConvGraphPlans();
  ConvGraphPlans(const ConvGraphPlans&) = delete;
  ConvGraphPlans& operator=(const ConvGraphPlans&) = delete;

  // Candidate plans for `key` (output size ho x wo); nullptr when the graph API has none
  // (the caller then uses the legacy API). Failures here are remembered.
  ConvGraphPlan* get(cudnnHandle_t handle, const ConvGraphKey& key, int64_t ho, int64_t wo);

 private:
  std::map<ConvGraphKey, ConvGraphPlan> plans_;  // empty `plans` = no plan for this key
};

// Runs plan `index` of `plan` on x, w -> y with `workspace` (at least plan.workspace[index]
// bytes). Returns the cuDNN status (the caller decides whether to throw).
cudnnStatus_t conv_graph_execute(cudnnHandle_t handle, const ConvGraphPlan& plan, size_t index, const void* x,
                                 const void* w, void* y, void* workspace);

// Keeps only plan `index` (after autotuning).
void conv_graph_choose(ConvGraphPlan& plan, size_t index);
// Drops every plan (none runs): ConvGraphPlans::get then returns nullptr for this shape.
void conv_graph_discard(ConvGraphPlan& plan);

}  // namespace sd::cuda
