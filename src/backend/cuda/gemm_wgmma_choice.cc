// When linear() / linear_residual() / linear_geglu() take our Hopper GEMM (gemm_wgmma.h) instead of
// cuBLASLt: per shape and epilogue, on the first eager call, cuBLASLt (plus the GEGLU kernel where
// it applies) and each candidate configuration are timed with the weights cold, as the captured
// step meets them; the fastest is kept. SDSERVE_CUDA_WGMMA_GEMM=0: never; 1 (default): where it
// timed faster; 2: always where it applies (tests; SDSERVE_CUDA_WGMMA_GEMM_CONFIG=i picks
// candidate i of wgmma_gemm_candidates()).
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>

#include "backend/cuda/cuda_backend_impl.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/gemm.h"
#include "backend/cuda/gemm_wgmma.h"
#include "backend/cuda/tuning_l2.h"

namespace sd::cuda {

namespace {

// Default of SDSERVE_CUDA_WGMMA_GEMM (docs/perf-notes.md, "Hopper GEMM with fused GEGLU").
constexpr int kWgmmaGemmDefault = 1;

// Read per call (tests switch it); only eager calls decide, the replayed graphs keep what ran.
int wgmma_gemm_mode() {
  const char* env = std::getenv("SDSERVE_CUDA_WGMMA_GEMM");
  if (!env || !env[0]) return kWgmmaGemmDefault;
  return env[0] == '1' || env[0] == '2' ? env[0] - '0' : 0;
}

bool log_choice() {
  static const bool on = [] {
    const char* env = std::getenv("SDSERVE_CUBLASLT_LOG");
    return env && env[0] == '1';
  }();
  return on;
}

int device_sms(int device) {
  int n = 0;
  if (cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || n <= 0) n = 132;
  return n;
}

bool device_is_sm90(int device) {
  int major = 0, minor = 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) return false;
  if (cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) != cudaSuccess) return false;
  return major == 9 && minor == 0;
}

// Mode 2's configuration: candidate SDSERVE_CUDA_WGMMA_GEMM_CONFIG (default 0, the heuristic's).
WgmmaGemmConfig forced_config(const std::vector<WgmmaGemmConfig>& candidates) {
  size_t i = 0;
  if (const char* env = std::getenv("SDSERVE_CUDA_WGMMA_GEMM_CONFIG")) i = static_cast<size_t>(std::atoi(env));
  return candidates[i < candidates.size() ? i : 0];
}

}  // namespace

Tensor CudaBackend::linear_wgmma(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& residual,
                                 bool geglu, GemmPlan& plan, const std::function<Tensor()>& library_path,
                                 const Tensor& x2) {
  const int mode = wgmma_gemm_mode();
  GemmPlan::Wgmma& choice = plan.wgmma[x2.defined() ? 2 : geglu ? 1 : 0];
  if (mode == 0 || (mode == 1 && choice.use == GemmPlan::Wgmma::Use::kLibrary)) return Tensor();
  const int64_t k = w.dim(1), n = geglu ? w.dim(0) / 2 : w.dim(0), m = x.numel() / x.dim(-1);
  WgmmaGemmShape s{m, n, k, geglu};
  if (x2.defined()) s.k1 = x.dim(-1);  // x [.., k1] | x2 [.., k - k1]
  const auto decline = [&] {
    choice.use = GemmPlan::Wgmma::Use::kLibrary;
    return Tensor();
  };
  if (choice.use == GemmPlan::Wgmma::Use::kUntested || mode == 2) {
    if (!device_is_sm90(device_) || !wgmma_gemm_supported(s, x.dtype())) return decline();
    for (const Tensor* t : {&x, &x2, &w, &bias, &residual}) {
      if (t->defined() && pointer_alignment(t->raw()) < 16) return decline();
    }
  }
  Shape out_shape = x.shape();
  out_shape.back() = n;
  const auto run = [&](const WgmmaGemmConfig& cfg) {
    Tensor y = empty(out_shape, x.dtype());  // [..., N]
    Tensor workspace;                        // [splits, M, N (2N with GEGLU)] f32 partials
    if (const size_t bytes = wgmma_gemm_workspace(s, cfg)) {
      workspace = empty({static_cast<int64_t>((bytes + 3) / 4)}, DType::kF32);
    }
    WgmmaGemmOperands ops;
    ops.x = x.raw(), ops.w = w.raw(), ops.y = y.raw();
    ops.x2 = x2.defined() ? x2.raw() : nullptr;
    ops.bias = bias.defined() ? bias.raw() : nullptr;
    ops.residual = residual.defined() ? residual.raw() : nullptr;
    ops.workspace = workspace.defined() ? workspace.raw() : nullptr;
    return launch_wgmma_gemm(ops, x.dtype(), s, cfg, stream_) ? y : Tensor();
  };
  if (mode == 2) return run(forced_config(wgmma_gemm_candidates(s, device_sms(device_))));
  if (choice.use == GemmPlan::Wgmma::Use::kWgmma) return run(choice.config);

  // Untested: decide on an eager call only (a capture replays whatever was chosen before it).
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  SD_CUDA_CHECK(cudaStreamIsCapturing(stream_, &capture));
  if (capture != cudaStreamCaptureStatusNone) return Tensor();
  (void)library_path();  // cuBLASLt's own algorithm timing happens here, outside ours
  cudaEvent_t start = nullptr, stop = nullptr;
  SD_CUDA_CHECK(cudaEventCreate(&start));
  SD_CUDA_CHECK(cudaEventCreate(&stop));
  // Two sources: x2 (the decoder's skip, written long before) stays cold, as in the step.
  const auto prepare = [&] { prepare_tuning_run(x.raw(), x.nbytes()); };
  const float library_ms = time_runs_alone(stream_, start, stop, 3, prepare, [&] {
    (void)library_path();
    return true;
  });
  float best_ms = library_ms;
  bool found = false;
  for (const WgmmaGemmConfig& cfg : wgmma_gemm_candidates(s, device_sms(device_))) {
    if (!run(cfg).defined()) continue;  // warm-up; a refused configuration is skipped
    const float ms = time_runs_alone(stream_, start, stop, 3, prepare, [&] { return run(cfg).defined(); });
    if (log_choice()) {
      std::fprintf(stderr, "[sdserve] gemm m%lld n%lld k%lld%s%s%s%s: %s %.4f ms (cuBLASLt%s %.4f)\n",
                   static_cast<long long>(m), static_cast<long long>(n), static_cast<long long>(k),
                   geglu ? " geglu" : "", bias.defined() ? " bias" : "", residual.defined() ? " residual" : "",
                   x2.defined() ? " two-source" : "", cfg.describe().c_str(), ms / 3,
                   geglu ? " + geglu" : x2.defined() ? " + concat" : "", library_ms / 3);
    }
    if (ms >= 0.f && ms < best_ms) {
      best_ms = ms;
      choice.config = cfg;
      found = true;
    }
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  choice.use = found ? GemmPlan::Wgmma::Use::kWgmma : GemmPlan::Wgmma::Use::kLibrary;
  return found ? run(choice.config) : Tensor();
}

}  // namespace sd::cuda
