// The sub-pixel upsample on the CUDA backend: the phase convolution on the Hopper wgmma kernel
// (conv_wgmma.h), which writes y [B, 2H, 2W, C] in place, where it applies and, per shape on the
// first eager call, timed faster than the default path (cuDNN conv2d into y4 + interleave_phases2x).
#include <array>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <map>
#include <string>

#include "backend/cuda/conv_wgmma.h"
#include "backend/cuda/cuda_backend_impl.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/gemm.h"
#include "backend/cuda/tuning_l2.h"

namespace sd::cuda {

// One timed decision per (B, H, W, Cin, C, dtype, bias).
struct SubpixelPlans {
  struct Choice {
    enum class Use { kUntested, kNo, kYes } use = Use::kUntested;
    WgmmaConvConfig cfg;
  };
  std::map<std::array<int64_t, 7>, Choice> choices;
};

namespace {

// SDSERVE_CUDA_WGMMA_SUBPIXEL=0|1|2: never / where it timed faster (the default) / always where it
// applies (tests; the config then takes SDSERVE_CUDA_WGMMA_CONV_BN / _BM / _DSMEM / _SPLITS as
// conv2d's mode 2 does). Read per call; only eager calls decide. Default 1: on the H100 the
// timing takes ours at 2x8x8 / 2x16x16 / 32x16x16 x1280 (35 vs 44, 58 vs 72, 1020 vs 1420 us) and
// keeps the default path at 32x32 and the VAE levels (ours 1.5-2x slower there); step batch 1
// 5.35 / 5.32 vs 5.31 / 5.34 ms, batch 16 59.28 / 59.07 vs 60.37 / 59.86 ms (docs/perf-notes.md,
// helper H18).
constexpr int kSubpixelDefault = 1;

int subpixel_mode() {
  const char* env = std::getenv("SDSERVE_CUDA_WGMMA_SUBPIXEL");
  if (!env || !env[0]) return kSubpixelDefault;
  return env[0] == '1' || env[0] == '2' ? env[0] - '0' : 0;
}

bool log_choice() {
  const char* env = std::getenv("SDSERVE_CUDNN_LOG");
  return env && env[0] == '1';
}

int device_sms(int device) {
  int n = 0;
  if (cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || n <= 0) n = 132;
  return n;
}

// Mode 2's configuration: the first candidate with the env overrides; overrides that do not fit
// the shape fall away (DSMEM first, then the 256 tile, then all).
WgmmaConvConfig forced_config(const SplitKConvShape& s, int sms) {
  const WgmmaConvConfig first = wgmma_subpixel_candidates(s, sms).front();
  WgmmaConvConfig cfg = first;
  apply_wgmma_conv_env(cfg, s.cout / 4);
  if (!wgmma_subpixel_config_ok(s, cfg)) cfg.dsmem = false;
  if (!wgmma_subpixel_config_ok(s, cfg)) cfg.bm = 128;
  if (!wgmma_subpixel_config_ok(s, cfg)) cfg = first;
  return cfg;
}

}  // namespace

Tensor CudaBackend::conv2d_subpixel_upsample(const Tensor& x, const Tensor& w_phases, const Tensor& bias) {
  const auto default_path = [&] { return Backend::conv2d_subpixel_upsample(x, w_phases, bias); };
  const int mode = subpixel_mode();
  if (mode == 0 || x.ndim() != 4 || w_phases.ndim() != 4 || w_phases.dim(1) != 2 || w_phases.dim(2) != 2 ||
      w_phases.dim(3) != x.dim(3) || w_phases.dim(0) % 4 != 0 || w_phases.dtype() != x.dtype() ||
      (bias.defined() && (bias.numel() != w_phases.dim(0) / 4 || bias.dtype() != x.dtype()))) {
    return default_path();  // the default path reports malformed operands
  }
  check_on_device(x, "conv2d_subpixel_upsample");
  check_on_device(w_phases, "conv2d_subpixel_upsample");
  if (bias.defined()) check_on_device(bias, "conv2d_subpixel_upsample");
  const int64_t c = w_phases.dim(0) / 4;
  // GEMM view: M = B*H*W small-image positions, N = 4 C (the phases), K = 4 Cin (2x2 taps).
  const SplitKConvShape s{x.dim(0), x.dim(1), x.dim(2), x.dim(3), 4 * c, 2, 1, 1, x.dim(1), x.dim(2)};
  if (!wgmma_subpixel_supported(s, x.dtype()) || !wgmma_conv_device_ok(device_)) return default_path();
  for (const Tensor* t : {&x, &w_phases, &bias}) {
    if (t->defined() && pointer_alignment(t->raw()) < 16) return default_path();
  }
  const auto run = [&](const WgmmaConvConfig& cfg) {
    Tensor y = empty({s.b, 2 * s.h, 2 * s.w, c}, x.dtype());  // [B, 2H, 2W, C]
    Tensor partial;                                            // [splits, B*H*W, 4C] f32
    if (const size_t n = wgmma_conv_workspace(s, cfg)) partial = empty({static_cast<int64_t>(n)}, DType::kF32);
    SplitKConvOperands ops;
    ops.x = x.raw(), ops.w = w_phases.raw(), ops.y = y.raw();
    ops.bias = bias.defined() ? bias.raw() : nullptr;
    ops.partial = partial.defined() ? partial.data<float>() : nullptr;
    return launch_conv_wgmma_subpixel(ops, x.dtype(), s, cfg, stream_) ? y : Tensor();
  };
  const int sms = device_sms(device_);
  if (wgmma_subpixel_candidates(s, sms).empty()) return default_path();
  if (mode == 2) {
    Tensor y = run(forced_config(s, sms));
    return y.defined() ? y : default_path();
  }
  if (!subpixel_plans_) subpixel_plans_ = std::make_shared<SubpixelPlans>();
  SubpixelPlans::Choice& choice =
      subpixel_plans_->choices[{s.b, s.h, s.w, s.cin, c, static_cast<int64_t>(x.dtype()), bias.defined() ? 1 : 0}];
  if (choice.use == SubpixelPlans::Choice::Use::kUntested) {
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    SD_CUDA_CHECK(cudaStreamIsCapturing(stream_, &capture));
    if (capture != cudaStreamCaptureStatusNone) return default_path();  // decide on an eager call only
    (void)default_path();  // cuDNN's plan choice and autotuning happen here, outside the timing
    cudaEvent_t start = nullptr, stop = nullptr;
    SD_CUDA_CHECK(cudaEventCreate(&start));
    SD_CUDA_CHECK(cudaEventCreate(&stop));
    const auto prepare = [&] { prepare_tuning_run(x.raw(), x.nbytes()); };  // weights cold, input warm
    const float default_ms = time_runs_alone(stream_, start, stop, 3, prepare, [&] {
      (void)default_path();
      return true;
    });
    float best_ms = std::numeric_limits<float>::max();
    std::string best_name;
    const bool log = log_choice();
    for (const WgmmaConvConfig& cfg : wgmma_subpixel_candidates(s, sms)) {
      if (!run(cfg).defined()) continue;  // warm-up; a refused tensor map or cluster is skipped
      const float ms = time_runs_alone(stream_, start, stop, 3, prepare, [&] { return run(cfg).defined(); });
      if (ms < 0.f) continue;
      if (log) {
        std::fprintf(stderr, "[sdserve] subpixel x[%lld,%lld,%lld,%lld] -> %lld bias %d: %s %.4f ms\n",
                     static_cast<long long>(s.b), static_cast<long long>(s.h), static_cast<long long>(s.w),
                     static_cast<long long>(s.cin), static_cast<long long>(c), bias.defined() ? 1 : 0,
                     cfg.describe().c_str(), ms / 3);
      }
      if (ms < best_ms) {
        best_ms = ms;
        choice.cfg = cfg;
        best_name = cfg.describe();
      }
    }
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    choice.use = best_ms < default_ms ? SubpixelPlans::Choice::Use::kYes : SubpixelPlans::Choice::Use::kNo;
    if (log) {
      std::fprintf(stderr, "[sdserve] subpixel x[%lld,%lld,%lld,%lld] -> %lld bias %d: cuDNN + interleave %.4f ms, "
                   "best %s %.4f ms -> %s\n", static_cast<long long>(s.b), static_cast<long long>(s.h),
                   static_cast<long long>(s.w), static_cast<long long>(s.cin), static_cast<long long>(c),
                   bias.defined() ? 1 : 0, default_ms / 3, best_name.c_str(), best_ms / 3,
                   choice.use == SubpixelPlans::Choice::Use::kYes ? best_name.c_str() : "default path");
    }
  }
  if (choice.use == SubpixelPlans::Choice::Use::kYes) {
    Tensor y = run(choice.cfg);
    if (y.defined()) return y;
  }
  return default_path();
}

}  // namespace sd::cuda
