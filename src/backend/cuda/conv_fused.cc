// conv2d and conv2d_fused: the convolution with its bias, per-(batch, channel) row add and
// residual add fused into one cuDNN graph (pointwise nodes after the convolution, runtime
// fusion engines) when that measures faster than the convolution plus separate kernels; the
// choice is made per shape on its first (eager) call; conv2d_onto: cuDNN accumulates onto a
// residual the caller gave up (beta = 1). Opt-in: SDSERVE_CUDA_FUSED_CONV=1 (all
// adds) or a ConvEpilogue mask of the adds cuDNN may take (on H100 with cuDNN 9.14 a candidate
// plan with the row add hit a misaligned address, which kills the context; the default is off
// until the masks are measured). SDSERVE_CUDA_FUSED=0: never fused.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>

#include "backend/cuda/conv.h"
#include "backend/cuda/conv_graph.h"
#include "backend/cuda/cuda_backend_impl.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/gemm.h"
#include "backend/cuda/kernels.h"

namespace sd::cuda {

bool fused_epilogues_enabled() {
  static const bool on = [] {
    const char* env = std::getenv("SDSERVE_CUDA_FUSED");
    return !(env && env[0] == '0');
  }();
  return on;
}

namespace {

// SDSERVE_CUDA_THIN_CONV=0 keeps the few-output-channel convolutions on cuDNN (read per call).
bool thin_conv_enabled() {
  const char* env = std::getenv("SDSERVE_CUDA_THIN_CONV");
  return !(env && env[0] == '0');
}

// ConvEpilogue flags that may go into the cuDNN graph (SDSERVE_CUDA_FUSED_CONV; default none).
int conv_epilogue_mask() {
  static const int mask = [] {
    const char* env = std::getenv("SDSERVE_CUDA_FUSED_CONV");
    if (!env || !fused_epilogues_enabled()) return 0;
    const int v = std::atoi(env);
    return v == 1 ? (kEpiBias | kEpiRow | kEpiResidual) : (v & (kEpiBias | kEpiRow | kEpiResidual));
  }();
  return mask;
}

// SDSERVE_CUDA_CONV_ONTO (read per call): 0 conv2d_onto adds its accumulator in a separate pass,
// 1 (default) cuDNN accumulates onto it where that timed faster for the shape, 2 always.
int conv_onto_mode() {
  const char* env = std::getenv("SDSERVE_CUDA_CONV_ONTO");
  return env && (env[0] == '0' || env[0] == '2') ? env[0] - '0' : 1;
}

bool log_fusion() {
  static const bool on = [] {
    const char* env = std::getenv("SDSERVE_CUDNN_LOG");
    return env && env[0] == '1';
  }();
  return on;
}

// Median-free quick timing on the stream: one warm-up, then `reps` runs between two events.
float time_runs(cudaStream_t stream, const std::function<void()>& fn, int reps = 5) {
  fn();
  cudaEvent_t start = nullptr, stop = nullptr;
  SD_CUDA_CHECK(cudaEventCreate(&start));
  SD_CUDA_CHECK(cudaEventCreate(&stop));
  SD_CUDA_CHECK(cudaEventRecord(start, stream));
  for (int i = 0; i < reps; ++i) fn();
  SD_CUDA_CHECK(cudaEventRecord(stop, stream));
  SD_CUDA_CHECK(cudaEventSynchronize(stop));
  float ms = 0.f;
  SD_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return ms / static_cast<float>(reps);
}

}  // namespace

Tensor CudaBackend::conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, int stride, int padding) {
  return conv2d_fused(x, w, bias, stride, padding, Tensor(), Tensor());
}

Tensor CudaBackend::conv2d_fused(const Tensor& x, const Tensor& w, const Tensor& bias, int stride, int padding,
                                 const Tensor& row_add, const Tensor& residual) {
  return conv2d_epilogues(x, w, bias, stride, padding, row_add, residual, /*donated=*/false);
}

Tensor CudaBackend::conv2d_onto(const Tensor& x, const Tensor& w, int stride, int padding, const Tensor& acc) {
  SD_ASSERT(acc.defined(), "conv2d_onto: no accumulator");
  return conv2d_epilogues(x, w, Tensor(), stride, padding, Tensor(), acc, /*donated=*/true);
}

Tensor CudaBackend::conv2d_epilogues(const Tensor& x, const Tensor& w, const Tensor& bias, int stride, int padding,
                                     const Tensor& row_add, const Tensor& residual, bool donated) {
  check_on_device(x, "conv2d");
  check_on_device(w, "conv2d");
  SD_ASSERT(x.ndim() == 4 && w.ndim() == 4 && w.dim(1) == w.dim(2) && w.dim(3) == x.dim(3),
            "conv2d: x " + x.describe() + " w " + w.describe());
  SD_ASSERT(x.dtype() == w.dtype(), "conv2d: dtype of x " + x.describe() + " and w " + w.describe());
  SD_ASSERT(stride >= 1 && padding >= 0, "conv2d: stride/padding");
  const int64_t cout = w.dim(0);
  if (bias.defined()) {
    check_on_device(bias, "conv2d");
    SD_ASSERT(bias.numel() == cout && bias.dtype() == x.dtype(), "conv2d: bias " + bias.describe());
  }
  if (row_add.defined()) {
    check_on_device(row_add, "conv2d_fused");
    SD_ASSERT(row_add.numel() == x.dim(0) * cout && row_add.dtype() == x.dtype(),
              "conv2d_fused: row_add " + row_add.describe() + " for x " + x.describe() + " w " + w.describe());
  }
  const ConvKey key{x.dim(0), x.dim(1), x.dim(2), x.dim(3), cout, w.dim(1), stride, padding, x.dtype()};
  const int wanted = (bias.defined() ? kEpiBias : 0) | (row_add.defined() ? kEpiRow : 0) |
                     (residual.defined() ? kEpiResidual : 0);
  const int epi = wanted & conv_epilogue_mask();  // the adds the cuDNN graph takes
  ConvPlan& plan = conv_plan(key);
  if (residual.defined()) {
    check_on_device(residual, "conv2d_fused");
    SD_ASSERT(residual.shape() == Shape({key.b, plan.ho, plan.wo, cout}) && residual.dtype() == x.dtype(),
              "conv2d_fused: residual " + residual.describe() + " for x " + x.describe() + " w " + w.describe());
  }
  const auto unfused = [&] {
    Tensor y = conv2d_plain(x, w, stride, padding);  // [B, Ho, Wo, Cout]
    add_epilogue(y, bias, row_add, residual);          // one pass for all three adds
    return y;
  };
  // Few output channels (conv_out of the UNet and the VAE): our mma.sync kernel, where cuDNN's
  // tiles are mostly empty. SDSERVE_CUDA_THIN_CONV=0: cuDNN (read per call, for tests).
  const int64_t positions = key.b * x.dim(1) * x.dim(2);
  if (x.dtype() != DType::kF32 && conv3x3_thin_out_applies(positions, x.dim(3), cout, w.dim(1), stride, padding) &&
      pointer_alignment(x.raw()) >= 8 && pointer_alignment(w.raw()) >= 8 &&  // its 8-byte operand loads
      thin_conv_enabled()) {
    Tensor y = empty({key.b, x.dim(1), x.dim(2), cout}, x.dtype());  // [B, H, W, Cout]
    launch_conv3x3_thin_out(x.raw(), w.raw(), bias.defined() ? bias.raw() : nullptr, y.raw(), x.dtype(), key.b,
                            x.dim(1), x.dim(2), x.dim(3), cout, stream_);
    add_epilogue(y, Tensor(), row_add, residual);
    return y;
  }
  // Few output positions and a long reduction (the 8x8 / 16x16 UNet levels): our split-K
  // implicit GEMM with the adds fused, opt-in, where it timed faster than cuDNN for this shape.
  if (Tensor y = conv2d_splitk(x, w, bias, stride, padding, row_add, residual, plan, unfused); y.defined()) {
    return y;
  }
  // A residual the caller gave up takes the result: cuDNN accumulates onto it (beta = 1), no add pass.
  const int onto = donated ? conv_onto_mode() : 0;
  if (onto != 0 && !bias.defined() && !row_add.defined() && fused_epilogues_enabled() &&
      conv_graph_enabled_ && !plan.direct && x.dtype() != DType::kF32) {
    const int align = std::min({16, pointer_alignment(x.raw()), pointer_alignment(w.raw()),
                                pointer_alignment(residual.raw())});
    ConvGraphPlan* graph = conv_graph_->get(dnn_, ConvGraphKey{key, align, kEpiAccumulate}, plan.ho, plan.wo);
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    SD_CUDA_CHECK(cudaStreamIsCapturing(stream_, &capture));
    const bool capturing = capture != cudaStreamCaptureStatusNone;  // then choose nothing: eager calls decide
    if (graph && (onto == 2 || graph->choice != FusedChoice::kUnfused) &&
        !(capturing && (!graph->tuned || (onto == 1 && graph->choice == FusedChoice::kUntested)))) {
      ConvGraphOperands ops{x.raw(), w.raw(), residual.raw()};
      ops.x_bytes = x.nbytes();
      ops.y_bytes = residual.nbytes();
      if (graph->choice == FusedChoice::kUntested && onto == 1) {
        // First (eager) call: keep accumulating only where it beats the convolution + add, timed
        // on a scratch output (every run adds onto it).
        Tensor scratch = empty(residual.shape(), residual.dtype());  // [B, Ho, Wo, Cout]
        ConvGraphOperands trial = ops;
        trial.y = scratch.raw();
        if (conv2d_graph(*graph, kEpiAccumulate, trial)) {
          const float onto_ms = time_runs(stream_, [&] { (void)conv2d_graph(*graph, kEpiAccumulate, trial); });
          const float unfused_ms = time_runs(stream_, [&] { (void)unfused(); });
          graph->choice = onto_ms <= unfused_ms ? FusedChoice::kFused : FusedChoice::kUnfused;
          if (log_fusion()) {
            std::fprintf(stderr, "[sdserve] conv x[%lld,%lld,%lld,%lld] -> %lld onto its residual: %.4f ms, "
                         "conv + add %.4f ms -> %s\n", static_cast<long long>(key.b), static_cast<long long>(key.h),
                         static_cast<long long>(key.w), static_cast<long long>(key.cin),
                         static_cast<long long>(cout), onto_ms, unfused_ms,
                         graph->choice == FusedChoice::kFused ? "onto" : "conv + add");
          }
        } else {
          graph->choice = FusedChoice::kUnfused;
        }
      }
      if ((onto == 2 || graph->choice == FusedChoice::kFused) && conv2d_graph(*graph, kEpiAccumulate, ops)) {
        return residual;
      }
    }
  }
  if (epi == 0 || !fused_epilogues_enabled() || !conv_graph_enabled_ || plan.direct || x.dtype() == DType::kF32) {
    return unfused();
  }
  // The adds left out of the graph, applied after it.
  const auto rest = [&](Tensor y) {
    const int left = wanted & ~epi;
    add_epilogue(y, left & kEpiBias ? bias : Tensor(), left & kEpiRow ? row_add : Tensor(),
                 left & kEpiResidual ? residual : Tensor());
    return y;
  };
  Tensor y = empty({key.b, plan.ho, plan.wo, cout}, x.dtype());
  ConvGraphOperands ops{x.raw(),
                              w.raw(),
                              y.raw(),
                              bias.defined() ? bias.raw() : nullptr,
                              row_add.defined() ? row_add.raw() : nullptr,
                              residual.defined() ? residual.raw() : nullptr};
  ops.x_bytes = x.nbytes();
  int align = std::min({16, pointer_alignment(x.raw()), pointer_alignment(w.raw()), pointer_alignment(y.raw())});
  for (const void* p : {ops.bias, ops.row, ops.residual}) {
    if (p) align = std::min(align, pointer_alignment(p));
  }
  ConvGraphPlan* graph = conv_graph_->get(dnn_, ConvGraphKey{key, align, epi}, plan.ho, plan.wo);
  if (!graph || graph->choice == FusedChoice::kUnfused) return unfused();
  const bool first = graph->choice == FusedChoice::kUntested;
  if (!conv2d_graph(*graph, epi, ops)) {  // no fused plan runs: remember, use separate kernels
    if (log_fusion()) std::fprintf(stderr, "[sdserve] conv epilogue %d: no fused plan runs, unfused\n", epi);
    return unfused();
  }
  if (first) {
    // Keep whichever is faster for this shape: the fused plan or conv + separate kernels.
    const auto fused_run = [&] { SD_ASSERT(conv2d_graph(*graph, epi, ops), "conv2d_fused: tuned plan failed"); };
    const float fused_ms = time_runs(stream_, [&] {
      fused_run();
      if (wanted != epi) (void)rest(empty(y.shape(), y.dtype()));  // same extra kernels, own output
    });
    const float unfused_ms = time_runs(stream_, [&] { (void)unfused(); });
    graph->choice = fused_ms <= unfused_ms ? FusedChoice::kFused : FusedChoice::kUnfused;
    if (log_fusion()) {
      std::fprintf(stderr, "[sdserve] conv x[%lld,%lld,%lld,%lld] -> %lld k%lld s%d epilogue %d: fused %.4f ms, "
                   "unfused %.4f ms -> %s\n", static_cast<long long>(key.b), static_cast<long long>(key.h),
                   static_cast<long long>(key.w), static_cast<long long>(key.cin), static_cast<long long>(cout),
                   static_cast<long long>(key.kernel), stride, epi, fused_ms, unfused_ms,
                   graph->choice == FusedChoice::kFused ? "fused" : "unfused");
    }
    fused_run();  // y holds the fused result again
  }
  return rest(y);
}

}  // namespace sd::cuda
