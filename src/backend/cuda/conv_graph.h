// conv2d through cuDNN 9's graph (backend descriptor) API: one convolution-forward operation
// graph per shape (optionally followed by pointwise adds: bias, per-(batch, channel) row, residual),
// execution plans for the heuristic's engine configs, the fastest chosen by timing them on the
// first call (SDSERVE_CUDNN_AUTOTUNE=0: the heuristic's first). SDSERVE_CUDNN_GRAPH=0: legacy API.
#pragma once

#include <cudnn.h>

#include <map>
#include <tuple>
#include <vector>

#include "backend/cuda/conv.h"

namespace sd::cuda {

// Epilogue adds after the convolution (bit flags), computed in f32 before y is rounded.
enum ConvEpilogue : int {
  kEpiBias = 1,      // + bias [Cout]
  kEpiRow = 2,       // + row [B, Cout] (broadcast over Ho, Wo)
  kEpiResidual = 4,  // + residual [B, Ho, Wo, Cout]
  // y = conv + y (the convolution's beta = 1: y holds the residual and takes the result); alone,
  // so the plans are cuDNN's precompiled convolution engines, not runtime-fused graphs.
  kEpiAccumulate = 8,
};

struct ConvGraphKey {
  ConvKey conv;
  int alignment;     // bytes: the smallest alignment of every operand, at most 16
  int epilogue = 0;  // ConvEpilogue flags
  auto tie() const { return std::tie(conv, alignment, epilogue); }
  bool operator<(const ConvGraphKey& o) const { return tie() < o.tie(); }
};

// Whether a fused plan beat the convolution plus separate epilogue kernels (conv_fused.cc).
enum class FusedChoice { kUntested, kFused, kUnfused };

struct ConvGraphPlan {
  // Candidates (best heuristic first) until tuned, then exactly one.
  std::vector<cudnnBackendDescriptor_t> plans;
  std::vector<int64_t> workspace;
  std::vector<cudnnBackendDescriptor_t> keep;  // graph and configs the plans were built from
  bool tuned = false;
  float tuned_ms = 0.f;  // the winner's time per run while autotuning (0 if not timed)
  FusedChoice choice = FusedChoice::kUntested;  // epilogue plans only
};

// Device pointers of one execution; those the plan's epilogue does not use are ignored.
struct ConvGraphOperands {
  const void* x = nullptr;
  const void* w = nullptr;
  void* y = nullptr;
  const void* bias = nullptr;
  const void* row = nullptr;
  const void* residual = nullptr;
  size_t x_bytes = 0;  // x's size: autotuning re-reads x into L2 before each timed run
  size_t y_bytes = 0;  // y's size: an accumulating plan is autotuned on a scratch y of this size
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

// Runs plan `index` of `plan` (built for `epilogue`) on the operands with `workspace` (at least
// plan.workspace[index] bytes). Returns the cuDNN status (the caller decides whether to throw).
cudnnStatus_t conv_graph_execute(cudnnHandle_t handle, const ConvGraphPlan& plan, size_t index, int epilogue,
                                 const ConvGraphOperands& ops, void* workspace);

// Keeps only plan `index` (after autotuning).
void conv_graph_choose(ConvGraphPlan& plan, size_t index);
// Drops every plan (none runs): ConvGraphPlans::get then returns nullptr for this shape.
void conv_graph_discard(ConvGraphPlan& plan);

}  // namespace sd::cuda
