// When conv2d takes our split-K implicit GEMM (conv_splitk.h) instead of cuDNN: per shape and
// epilogue, on the first eager call, cuDNN (plus its separate add kernel) and each candidate
// tiling are timed with the weights cold, as the captured step meets them; the fastest is kept.
// SDSERVE_CUDA_SPLITK_CONV=0 (default: on an H100 cuDNN won every SD 1.5 shape): never; 1: where
// it timed faster; 2: always where it applies
// (tests; SDSERVE_CUDA_SPLITK_TILE=BMxBN, _SPLITS=N, _CLUSTER=0|1 pick the config).
// The Hopper wgmma convolution (conv_wgmma.h) is a second candidate family of the same timing:
// SDSERVE_CUDA_WGMMA_CONV=0|1|2 (never / where it timed faster, the default / always where it
// applies; tests pick its config with SDSERVE_CUDA_WGMMA_CONV_BN=64|128|160|256, _SPLITS=N,
// _CLUSTER=CXxCY, _BM=128|256, _DSMEM=0|1; SDSERVE_CUDA_WGMMA_CONV_MCAST=1 also times multicast pairs).
// The input-reuse kernel (3x3; conv_wgmma_reuse.cuh) is part of that family: SDSERVE_CUDA_WGMMA_CONV_REUSE=0
// keeps it out of the timing, =1 forces it in mode 2 (with the overrides above; no multicast).
// Shapes above SDSERVE_CUDA_CONV_TIMED_MAX_ROWS output rows (default 8192) stay with cuDNN untimed.
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>

#include "backend/cuda/conv.h"
#include "backend/cuda/conv_graph.h"
#include "backend/cuda/conv_splitk.h"
#include "backend/cuda/cuda_backend_impl.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/gemm.h"
#include "backend/cuda/tuning_l2.h"

namespace sd::cuda {

namespace {

// Read per call (tests switch it); only eager calls get here, never the replayed graphs.
int splitk_mode() {
  const char* env = std::getenv("SDSERVE_CUDA_SPLITK_CONV");
  return env && (env[0] == '1' || env[0] == '2') ? env[0] - '0' : 0;
}

// Default of SDSERVE_CUDA_WGMMA_CONV: the H100 step was faster with it in all six pairs (5.49-5.55
// vs 5.55-5.58 ms at batch 1, batch 16 unchanged; docs/perf-notes.md, "Hopper implicit-GEMM
// convolution"). With the 32x32 / 64x64 configurations (helper H17): 5.34 / 5.39 vs 5.42 / 5.45
// and 5.38 / 5.41 vs 5.38 / 5.41 ms, conv op time 2.070 -> 2.011 ms.
constexpr int kWgmmaDefault = 1;

int wgmma_mode() {
  const char* env = std::getenv("SDSERVE_CUDA_WGMMA_CONV");
  if (!env || !env[0]) return kWgmmaDefault;
  return env[0] == '1' || env[0] == '2' ? env[0] - '0' : 0;
}

bool log_choice() {
  static const bool on = [] {
    const char* env = std::getenv("SDSERVE_CUDNN_LOG");
    return env && env[0] == '1';
  }();
  return on;
}

// The forced configuration of mode 2: the heuristic's, with the env overrides (read per call).
SplitKConvConfig forced_config(const SplitKConvShape& s, int sms) {
  SplitKConvConfig cfg = splitk_conv_candidates(s, sms).front();
  if (const char* tile = std::getenv("SDSERVE_CUDA_SPLITK_TILE")) {
    int bm = 0, bn = 0;
    if (std::sscanf(tile, "%dx%d", &bm, &bn) == 2 && (bm == 64 || bm == 128) && (bn == 64 || bn == 128) &&
        s.cout % bn == 0) {
      cfg.bm = bm;
      cfg.bn = bn;
    }
  }
  if (const char* cluster = std::getenv("SDSERVE_CUDA_SPLITK_CLUSTER")) {
    if (cluster[0] == '0' || cluster[0] == '1') cfg.cluster = cluster[0] == '1';
  }
  if (const char* splits = std::getenv("SDSERVE_CUDA_SPLITK_SPLITS")) {
    const int n = std::atoi(splits);
    if (n >= 1) cfg.splits = n;
  }
  if (cfg.splits > 16) cfg.cluster = false;  // clusters hold at most 16 CTAs
  return cfg;
}

// The forced wgmma configuration of mode 2: the heuristic's, with the env overrides.
WgmmaConvConfig forced_wgmma_config(const SplitKConvShape& s, int sms) {
  const std::vector<WgmmaConvConfig> candidates = wgmma_conv_candidates(s, sms);
  WgmmaConvConfig cfg = candidates.front();
  apply_wgmma_conv_env(cfg, s.cout);
  if (const char* cluster = std::getenv("SDSERVE_CUDA_WGMMA_CONV_CLUSTER")) {
    int cx = 0, cy = 0;
    if (std::sscanf(cluster, "%dx%d", &cx, &cy) == 2) cfg.cx = cx, cfg.cy = cy;
  }
  if (const char* reuse = std::getenv("SDSERVE_CUDA_WGMMA_CONV_REUSE"); reuse && reuse[0] == '1') {
    cfg.reuse = true;  // the reuse kernel: no multicast
    cfg.cx = cfg.cy = 1;
  }
  // Overrides that do not fit the shape fall away: multicast first, then DSMEM, then the 256 tile,
  // then the reuse kernel (a shape it does not take: 1x1, W not a multiple of 8, ...).
  const auto fall_back = [&] {
    if (!wgmma_conv_config_ok(s, cfg)) cfg.cx = cfg.cy = 1;
    if (!wgmma_conv_config_ok(s, cfg)) cfg.dsmem = false;
    if (!wgmma_conv_config_ok(s, cfg)) cfg.bm = 128;
  };
  fall_back();
  if (cfg.reuse && !wgmma_conv_config_ok(s, cfg)) {
    cfg.reuse = false;
    fall_back();
  }
  if (!wgmma_conv_config_ok(s, cfg)) cfg = candidates.front();  // e.g. a shape only the reuse kernel takes
  return cfg;
}

// Output rows above which neither family is even timed (session 6: cuDNN's large tiles were ~3x
// faster than the split-K kernel on an H100 at 16+ images' 16x16 and larger levels).
// SDSERVE_CUDA_CONV_TIMED_MAX_ROWS overrides it (read per call). Session 7 (helper H18), the
// wgmma family with the limit raised at batch 16: cuDNN still won every newly timed shape (32 rows
// at 32x32 / 64x64, the VAE's 128x128) by 1.2-1.6x, so the default stays.
constexpr int64_t kMaxRows = 8192;

int64_t timed_max_rows() {
  const char* env = std::getenv("SDSERVE_CUDA_CONV_TIMED_MAX_ROWS");
  if (env && env[0]) {
    const long long v = std::atoll(env);
    if (v > 0) return v;
  }
  return kMaxRows;
}

int device_sms(int device) {
  int n = 0;
  if (cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || n <= 0) n = 132;
  return n;
}

}  // namespace

Tensor CudaBackend::conv2d_splitk(const Tensor& x, const Tensor& w, const Tensor& bias, int stride, int padding,
                                  const Tensor& row_add, const Tensor& residual, ConvPlan& plan,
                                  const std::function<Tensor()>& cudnn_path) {
  const int sk_mode = splitk_mode(), wg_mode = wgmma_mode();
  if ((sk_mode == 0 && wg_mode == 0) || plan.direct) return Tensor();
  const SplitKConvShape s{x.dim(0), x.dim(1), x.dim(2), x.dim(3), w.dim(0), static_cast<int>(w.dim(1)),
                          stride, padding, plan.ho, plan.wo};
  const bool sk_ok = sk_mode != 0 && splitk_conv_supported(s, x.dtype());
  const bool wg_ok = wg_mode != 0 && wgmma_conv_supported(s, x.dtype()) && wgmma_conv_device_ok(device_);
  if (!sk_ok && !wg_ok) return Tensor();
  for (const Tensor* t : {&x, &w, &bias, &row_add, &residual}) {
    if (t->defined() && pointer_alignment(t->raw()) < 16) return Tensor();
  }
  const int epilogue = (bias.defined() ? kEpiBias : 0) | (row_add.defined() ? kEpiRow : 0) |
                       (residual.defined() ? kEpiResidual : 0);
  ConvPlan::SplitK& choice = plan.splitk[epilogue];
  const auto fill_ops = [&](const Tensor& y, const Tensor& partial) {
    SplitKConvOperands ops;
    ops.x = x.raw(), ops.w = w.raw(), ops.y = y.raw();
    ops.bias = bias.defined() ? bias.raw() : nullptr;
    ops.row = row_add.defined() ? row_add.raw() : nullptr;
    ops.residual = residual.defined() ? residual.raw() : nullptr;
    ops.partial = partial.defined() ? partial.data<float>() : nullptr;
    return ops;
  };
  const auto run = [&](const SplitKConvConfig& cfg) {
    Tensor y = empty({s.b, s.ho, s.wo, s.cout}, x.dtype());  // [B, Ho, Wo, Cout]
    Tensor partial;
    if (const size_t n = splitk_conv_workspace(s, cfg)) partial = empty({static_cast<int64_t>(n)}, DType::kF32);
    return launch_conv_splitk(fill_ops(y, partial), x.dtype(), s, cfg, stream_) ? y : Tensor();
  };
  const auto run_wgmma = [&](const WgmmaConvConfig& cfg) {
    Tensor y = empty({s.b, s.ho, s.wo, s.cout}, x.dtype());  // [B, Ho, Wo, Cout]
    Tensor partial;  // [splits, B*Ho*Wo, Cout] f32
    if (const size_t n = wgmma_conv_workspace(s, cfg)) partial = empty({static_cast<int64_t>(n)}, DType::kF32);
    return launch_conv_wgmma(fill_ops(y, partial), x.dtype(), s, cfg, stream_) ? y : Tensor();
  };
  if (wg_ok && wg_mode == 2) return run_wgmma(forced_wgmma_config(s, device_sms(device_)));
  if (sk_ok && sk_mode == 2) return run(forced_config(s, device_sms(device_)));
  if (s.b * s.ho * s.wo > timed_max_rows()) return Tensor();  // cuDNN's large tiles won there
  if (choice.use == ConvPlan::SplitK::Use::kUntested) {
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    SD_CUDA_CHECK(cudaStreamIsCapturing(stream_, &capture));
    if (capture != cudaStreamCaptureStatusNone) return Tensor();  // decide on an eager call only
    (void)cudnn_path();  // cuDNN's own plan choice and autotuning happen here, outside the timing
    cudaEvent_t start = nullptr, stop = nullptr;
    SD_CUDA_CHECK(cudaEventCreate(&start));
    SD_CUDA_CHECK(cudaEventCreate(&stop));
    const auto prepare = [&] { prepare_tuning_run(x.raw(), x.nbytes()); };
    const float cudnn_ms = time_runs_alone(stream_, start, stop, 3, prepare, [&] {
      (void)cudnn_path();
      return true;
    });
    float best_ms = std::numeric_limits<float>::max();
    std::string best_name;
    const auto log_candidate = [&](const std::string& name, float ms) {
      if (!log_choice()) return;
      std::fprintf(stderr, "[sdserve] conv x[%lld,%lld,%lld,%lld] -> %lld k%d s%d epilogue %d: %s %.4f ms\n",
                   static_cast<long long>(s.b), static_cast<long long>(s.h), static_cast<long long>(s.w),
                   static_cast<long long>(s.cin), static_cast<long long>(s.cout), s.k, s.stride, epilogue,
                   name.c_str(), ms / 3);
    };
    if (sk_ok) {
      for (const SplitKConvConfig& cfg : splitk_conv_candidates(s, device_sms(device_))) {
        if (!run(cfg).defined()) continue;  // warm-up; a refused cluster shape is skipped
        const float ms = time_runs_alone(stream_, start, stop, 3, prepare, [&] { return run(cfg).defined(); });
        if (ms < 0.f) continue;
        log_candidate("split-K " + cfg.describe(), ms);
        if (ms < best_ms) {
          best_ms = ms;
          choice.cfg = cfg;
          choice.wgmma = false;
          best_name = "split-K " + cfg.describe();
        }
      }
    }
    if (wg_ok) {
      for (const WgmmaConvConfig& cfg : wgmma_conv_candidates(s, device_sms(device_))) {
        if (!run_wgmma(cfg).defined()) continue;  // warm-up; a refused tensor map is skipped
        const float ms = time_runs_alone(stream_, start, stop, 3, prepare, [&] { return run_wgmma(cfg).defined(); });
        if (ms < 0.f) continue;
        log_candidate(cfg.describe(), ms);
        if (ms < best_ms) {
          best_ms = ms;
          choice.wgmma_cfg = cfg;
          choice.wgmma = true;
          best_name = cfg.describe();
        }
      }
    }
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    choice.use = best_ms < cudnn_ms ? ConvPlan::SplitK::Use::kYes : ConvPlan::SplitK::Use::kNo;
    if (log_choice()) {
      std::fprintf(stderr, "[sdserve] conv x[%lld,%lld,%lld,%lld] -> %lld k%d s%d epilogue %d: cuDNN %.4f ms, "
                   "best %s %.4f ms -> %s\n", static_cast<long long>(s.b), static_cast<long long>(s.h),
                   static_cast<long long>(s.w), static_cast<long long>(s.cin), static_cast<long long>(s.cout), s.k,
                   s.stride, epilogue, cudnn_ms / 3, best_name.c_str(), best_ms / 3,
                   choice.use == ConvPlan::SplitK::Use::kYes ? best_name.c_str() : "cuDNN");
    }
  }
  if (choice.use != ConvPlan::SplitK::Use::kYes) return Tensor();
  return choice.wgmma ? run_wgmma(choice.wgmma_cfg) : run(choice.cfg);
}

}  // namespace sd::cuda
