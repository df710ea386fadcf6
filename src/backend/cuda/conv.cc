// The convolution itself (conv2d_plain: no bias) through cuDNN with NHWC descriptors:
// x [B,H,W,Cin], w [Cout,k,k,Cin] (OHWI = cuDNN's NHWC filter format) in the compute dtype, f32
// accumulation, tensor-op math; graph API first, legacy API, then a direct kernel. Bias and
// the other epilogues: conv_fused.cc.
#include "backend/cuda/conv.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <limits>

#include <cstdlib>
#include <string>

#include "backend/cuda/cuda_backend_impl.h"
#include "backend/cuda/conv_graph.h"
#include "backend/cuda/cudnn_plans.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/gemm.h"
#include "backend/cuda/kernels.h"
#include "backend/cuda/tuning_l2.h"

namespace sd::cuda {

namespace {

constexpr size_t kMaxConvWorkspace = size_t{512} << 20;

std::string conv_key_str(const ConvKey& k) {
  return "conv2d x[" + std::to_string(k.b) + "," + std::to_string(k.h) + "," + std::to_string(k.w) + "," +
         std::to_string(k.cin) + "] w[" + std::to_string(k.cout) + "," + std::to_string(k.kernel) + "," +
         std::to_string(k.kernel) + "," + std::to_string(k.cin) + "] stride " + std::to_string(k.stride) + " pad " +
         std::to_string(k.padding) + " " + dtype_name(k.dtype);
}

// NOT_SUPPORTED / BAD_PARAM: this algorithm cannot run this shape (try the next one).
bool shape_problem(cudnnStatus_t st) {
  const int category = CUDNN_STATUS_CATEGORY(static_cast<int>(st));
  return category == CUDNN_STATUS_NOT_SUPPORTED || category == CUDNN_STATUS_BAD_PARAM;
}

bool alloc_failure(cudnnStatus_t st) {
  return st == CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED ||
         st == CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED;
}

bool env_is_1(const char* name) {
  const char* env = std::getenv(name);
  return env && env[0] == '1';
}

bool use_find() { return env_is_1("SDSERVE_CUDNN_FIND"); }

}  // namespace

namespace {
void destroy_plan(ConvPlan& plan) {
  if (plan.x) cudnnDestroyTensorDescriptor(plan.x);
  if (plan.y) cudnnDestroyTensorDescriptor(plan.y);
  if (plan.w) cudnnDestroyFilterDescriptor(plan.w);
  if (plan.conv) cudnnDestroyConvolutionDescriptor(plan.conv);
  plan = ConvPlan{};
}
}  // namespace

ConvPlans::~ConvPlans() {
  for (auto& [key, plan] : plans_) destroy_plan(plan);
}

ConvPlan& ConvPlans::get(cudnnHandle_t handle, const ConvKey& key) {
  auto it = plans_.find(key);
  if (it != plans_.end()) return it->second;
  ConvPlan plan;
  try {
    build(handle, key, plan);
  } catch (...) {
    destroy_plan(plan);
    throw;
  }
  return plans_.emplace(key, plan).first->second;
}

void ConvPlans::build(cudnnHandle_t handle, const ConvKey& key, ConvPlan& plan) {
  const cudnnDataType_t dt = cudnn_data_type(key.dtype);
  const auto i32 = [](int64_t v) { return static_cast<int>(v); };
  SD_CUDNN_CHECK(cudnnCreateTensorDescriptor(&plan.x));
  SD_CUDNN_CHECK(cudnnCreateTensorDescriptor(&plan.y));
  SD_CUDNN_CHECK(cudnnCreateFilterDescriptor(&plan.w));
  SD_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&plan.conv));
  SD_CUDNN_CHECK(
      cudnnSetTensor4dDescriptor(plan.x, CUDNN_TENSOR_NHWC, dt, i32(key.b), i32(key.cin), i32(key.h), i32(key.w)));
  SD_CUDNN_CHECK(cudnnSetFilter4dDescriptor(plan.w, dt, CUDNN_TENSOR_NHWC, i32(key.cout), i32(key.cin),
                                            i32(key.kernel), i32(key.kernel)));
  SD_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(plan.conv, key.padding, key.padding, key.stride, key.stride, 1, 1,
                                                 CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
  SD_CUDNN_CHECK(cudnnSetConvolutionMathType(
      plan.conv, key.dtype == DType::kF32 ? CUDNN_FMA_MATH : CUDNN_TENSOR_OP_MATH));
  int n = 0, c = 0, h = 0, w = 0;
  SD_CUDNN_CHECK(cudnnGetConvolution2dForwardOutputDim(plan.conv, plan.x, plan.w, &n, &c, &h, &w));
  SD_ASSERT(n == key.b && c == key.cout && h > 0 && w > 0, "conv2d output shape for " + conv_key_str(key));
  plan.ho = h;
  plan.wo = w;
  SD_CUDNN_CHECK(cudnnSetTensor4dDescriptor(plan.y, CUDNN_TENSOR_NHWC, dt, n, c, h, w));

  cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
  int returned = 0;
  if (use_find()) {
    SD_CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithm(handle, plan.x, plan.w, plan.conv, plan.y,
                                                        CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &returned, perf));
  } else {
    SD_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(handle, plan.x, plan.w, plan.conv, plan.y,
                                                          CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &returned, perf));
  }
  for (int i = 0; i < returned; ++i) {
    if (perf[i].status != CUDNN_STATUS_SUCCESS) continue;
    size_t ws = 0;
    if (cudnnGetConvolutionForwardWorkspaceSize(handle, plan.x, plan.w, plan.conv, plan.y, perf[i].algo, &ws) !=
        CUDNN_STATUS_SUCCESS) {
      continue;
    }
    if (ws > kMaxConvWorkspace) continue;
    plan.algos[plan.n_algos] = perf[i].algo;
    plan.workspace[plan.n_algos] = ws;
    ++plan.n_algos;
  }
  // SDSERVE_CUDA_CONV_DIRECT=1 forces the fallback kernel (tests compare it with cuDNN).
  plan.direct = plan.n_algos == 0 || env_is_1("SDSERVE_CUDA_CONV_DIRECT");
}

ConvPlan& CudaBackend::conv_plan(const ConvKey& key) {
  activate();
  return conv_->get(dnn_, key);
}

Tensor CudaBackend::conv2d_plain(const Tensor& x, const Tensor& w, int stride, int padding) {
  const ConvKey key{x.dim(0), x.dim(1), x.dim(2), x.dim(3), w.dim(0), w.dim(1), stride, padding, x.dtype()};
  ConvPlan& plan = conv_plan(key);
  Tensor y = empty({key.b, plan.ho, plan.wo, key.cout}, x.dtype());
  // Graph API first (f16/bf16); shapes it cannot run go to the legacy API below.
  if (conv_graph_enabled_ && !plan.direct && x.dtype() != DType::kF32) {
    const int align =
        std::min({16, pointer_alignment(x.raw()), pointer_alignment(w.raw()), pointer_alignment(y.raw())});
    ConvGraphPlan* graph = conv_graph_->get(dnn_, ConvGraphKey{key, align, 0}, plan.ho, plan.wo);
    ConvGraphOperands ops{x.raw(), w.raw(), y.raw()};
    ops.x_bytes = x.nbytes();
    if (graph && conv2d_graph(*graph, 0, ops)) return y;
  }
  // Legacy API: the first call of a shape may find that the preferred algorithm does not run
  // for these operands; fall back down the list (and finally to the direct kernel) and remember.
  const float alpha = 1.f, beta = 0.f;
  cudnnStatus_t last = CUDNN_STATUS_NOT_SUPPORTED;
  if (!plan.direct) {
    const int first = plan.chosen >= 0 ? plan.chosen : 0;
    for (int i = first; i < plan.n_algos; ++i) {
      Tensor ws;
      if (plan.workspace[i]) ws = empty({static_cast<int64_t>(plan.workspace[i])}, DType::kU8);
      last = cudnnConvolutionForward(dnn_, &alpha, plan.x, x.raw(), plan.w, w.raw(), plan.conv, plan.algos[i],
                                     ws.defined() ? ws.raw() : nullptr, plan.workspace[i], &beta, plan.y, y.raw());
      if (last == CUDNN_STATUS_SUCCESS) {
        plan.chosen = i;
        break;
      }
      if (plan.chosen >= 0 || !shape_problem(last)) break;
    }
    if (last != CUDNN_STATUS_SUCCESS && (plan.chosen >= 0 || !shape_problem(last))) {
      // A known-good algorithm failed, or the failure is not about the shape: a device problem.
      const std::string msg = "cuDNN convolution failed for " + conv_key_str(key) + ": " + cudnnGetErrorString(last);
      throw Error(alloc_failure(last) ? ResourceExhausted("out of GPU memory: " + msg) : Internal(msg));
    }
    if (last != CUDNN_STATUS_SUCCESS) plan.direct = true;
  }
  if (plan.direct) {
    const ConvDims dims{key.b, key.h, key.w, key.cin, key.cout, key.kernel, plan.ho, plan.wo, stride, padding};
    launch_conv2d_direct(x.raw(), w.raw(), y.raw(), x.dtype(), dims, stream_);
  }
  return y;
}

bool CudaBackend::conv2d_graph(ConvGraphPlan& plan, int epilogue, const ConvGraphOperands& ops) {
  const auto run_on = [&](size_t i, const ConvGraphOperands& o) {
    Tensor ws;
    if (plan.workspace[i] > 0) ws = empty({plan.workspace[i]}, DType::kU8);
    return conv_graph_execute(dnn_, plan, i, epilogue, o, ws.defined() ? ws.raw() : nullptr);
  };
  if (!plan.tuned && (epilogue & kEpiAccumulate)) {
    // Each candidate run adds onto y: choose on a scratch y, then run the winner once on the real one.
    SD_ASSERT(ops.y_bytes > 0, "conv2d_graph: an accumulating plan needs y's size");
    Tensor scratch = empty({static_cast<int64_t>(ops.y_bytes)}, DType::kU8);
    ConvGraphOperands tune = ops;
    tune.y = scratch.raw();
    tune.residual = nullptr;
    if (!tune_conv_graph(plan, ops, [&](size_t i) { return run_on(i, tune); })) return false;
    return run_on(0, ops) == CUDNN_STATUS_SUCCESS;
  }
  const auto run = [&](size_t i) { return run_on(i, ops); };
  if (!plan.tuned) {
    if (!tune_conv_graph(plan, ops, run)) return false;
    if (conv_autotune_) return run(0) == CUDNN_STATUS_SUCCESS;  // y was written by a candidate: redo with the winner
    return true;  // the winner's first run wrote y
  }
  const cudnnStatus_t st = run(0);
  if (st != CUDNN_STATUS_SUCCESS) {
    const std::string msg = std::string("cuDNN graph convolution failed: ") + cudnnGetErrorString(st);
    throw Error(alloc_failure(st) ? ResourceExhausted("out of GPU memory: " + msg) : Internal(msg));
  }
  return true;
}

bool CudaBackend::tune_conv_graph(ConvGraphPlan& plan, const ConvGraphOperands& ops,
                                  const std::function<cudnnStatus_t(size_t)>& run) {
  // Time every candidate that runs (1 warm-up + 3 timed runs) and keep the fastest; without
  // autotuning keep the first that runs. None runs: let the legacy API have this shape.
  size_t best = plan.plans.size();
  float best_ms = std::numeric_limits<float>::max();
  const auto tune_start = std::chrono::steady_clock::now();
  cudaEvent_t start = nullptr, stop = nullptr;
  SD_CUDA_CHECK(cudaEventCreate(&start));
  SD_CUDA_CHECK(cudaEventCreate(&stop));
  for (size_t i = 0; i < plan.plans.size(); ++i) {
    if (run(i) != CUDNN_STATUS_SUCCESS) continue;
    if (!conv_autotune_ || plan.plans.size() == 1) {
      best = i;
      break;
    }
    // Each timed run alone, after L2 is evicted and x re-read (weights cold, as in the step).
    const float ms = time_runs_alone(
        stream_, start, stop, 3, [&] { prepare_tuning_run(ops.x, ops.x_bytes); },
        [&] { return run(i) == CUDNN_STATUS_SUCCESS; });
    if (ms >= 0.f && ms < best_ms) {
      best_ms = ms;
      best = i;
      plan.tuned_ms = ms / 3;
    }
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  if (cudnn_plan_log()) {
    std::fprintf(stderr, "sdserve: cuDNN conv tuning: %zu candidates in %.1f ms\n", plan.plans.size(),
                 std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - tune_start).count());
  }
  if (best == plan.plans.size()) {
    conv_graph_discard(plan);  // from now on get() sends this shape to the legacy API
    return false;
  }
  conv_graph_choose(plan, best);
  return true;
}

}  // namespace sd::cuda
