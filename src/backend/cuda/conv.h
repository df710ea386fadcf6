// cuDNN plans for conv2d(): per input shape, filter shape, stride, padding and dtype the
// NHWC tensor/filter/convolution descriptors, the chosen forward algorithm and its
// workspace size, built on first use (heuristics, or benchmarking with SDSERVE_CUDNN_FIND=1).
#pragma once

#include <cudnn.h>

#include <cstdint>
#include <map>
#include <tuple>

#include "backend/cuda/conv_splitk.h"
#include "backend/cuda/conv_wgmma.h"
#include "tensor/tensor.h"

namespace sd::cuda {

struct ConvKey {
  int64_t b, h, w, cin, cout, kernel;
  int stride, padding;
  DType dtype;
  auto tie() const { return std::tie(b, h, w, cin, cout, kernel, stride, padding, dtype); }
  bool operator<(const ConvKey& o) const { return tie() < o.tie(); }
};

struct ConvPlan {
  cudnnTensorDescriptor_t x = nullptr, y = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  int64_t ho = 0, wo = 0;
  // Candidate algorithms best first; `chosen` indexes the one that ran successfully.
  cudnnConvolutionFwdAlgo_t algos[CUDNN_CONVOLUTION_FWD_ALGO_COUNT]{};
  size_t workspace[CUDNN_CONVOLUTION_FWD_ALGO_COUNT]{};
  int n_algos = 0;
  int chosen = -1;
  bool direct = false;  // cuDNN cannot run this shape: use the direct kernel (kernels.h)
  // Our split-K implicit GEMM (conv_splitk.h), per epilogue (index: ConvEpilogue flags of the
  // call): whether it timed faster than cuDNN plus separate adds on the first eager call, and
  // with which tiles (conv_splitk_choice.cc).
  struct SplitK {
    enum class Use { kUntested, kNo, kYes } use = Use::kUntested;
    SplitKConvConfig cfg;
    // The Hopper wgmma convolution (conv_wgmma.h) won the timing: run it with wgmma_cfg.
    bool wgmma = false;
    WgmmaConvConfig wgmma_cfg;
  };
  SplitK splitk[8];
};

class ConvPlans {
 public:
  ConvPlans() = default;
  ~ConvPlans();
  ConvPlans(const ConvPlans&) = delete;
  ConvPlans& operator=(const ConvPlans&) = delete;
  ConvPlan& get(cudnnHandle_t handle, const ConvKey& key);
  size_t size() const { return plans_.size(); }

 private:
  static void build(cudnnHandle_t handle, const ConvKey& key, ConvPlan& plan);
  std::map<ConvKey, ConvPlan> plans_;
};

}  // namespace sd::cuda
