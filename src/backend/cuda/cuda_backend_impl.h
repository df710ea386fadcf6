// The CUDA backend class (private to this folder): one device, one stream, one caching
// allocator, one cuBLASLt and one cuDNN handle per instance. Ops are defined in one file
// per family (memory, gemm, conv, norm, attention, elementwise, layout).
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/device_allocator.h"
#include "backend/cuda/telemetry.h"

namespace sd::cuda {

class GemmPlans;  // gemm.cc: cuBLASLt descriptors and algorithms per shape
struct GemmPlan;
class ConvPlans;  // conv.cc: cuDNN descriptors, algorithm and workspace size per shape
class AttentionChoices;  // attention.cu: the timed kernel choice per attention shape
class ConvGraphPlans;  // conv_graph.cc: cuDNN graph-API execution plans per shape
struct ConvGraphPlan;
struct ConvGraphOperands;
struct ConvKey;
struct ConvPlan;
struct MarkerPool;  // markers.cc: pooled CUDA events for profiling marks
struct AttentionArgs;  // attention.h: one fused attention launch
struct SubpixelPlans;  // conv_subpixel.cc: per-shape choice of the sub-pixel upsample kernel

class CudaBackend final : public Backend {
 public:
  CudaBackend(int device_index, DType compute_dtype);
  ~CudaBackend() override;

  Device device() const override { return Device::cuda(device_); }
  std::string name() const override { return name_; }
  DType compute_dtype() const override { return dtype_; }

  Tensor empty(const Shape& shape, DType dtype) override;
  Tensor upload(const Tensor& host, DType dtype) override;
  using Backend::upload;
  Tensor download(const Tensor& x) override;
  void copy(const Tensor& src, const Tensor& dst) override;
  Status synchronize() override;
  size_t memory_in_use() const override { return alloc_->counters().in_use; }
  size_t memory_peak() const override { return alloc_->counters().peak; }
  void reset_memory_peak() override { alloc_->reset_peak(); }
  void release_cached_memory() override {
    activate();
    cudaStreamSynchronize(stream_);  // blocks about to be freed may still be read by queued work
    alloc_->free_cached();
  }
  void release_shape_plans() override;  // cuda_backend.cc

  Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias) override;
  Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, int stride, int padding) override;
  // conv_fused.cc / gemm.cc: epilogues fused into cuDNN graphs and cuBLASLt (see backend.h).
  Tensor conv2d_fused(const Tensor& x, const Tensor& w, const Tensor& bias, int stride, int padding,
                      const Tensor& row_add, const Tensor& residual) override;
  // Where cuDNN runs the convolution, it accumulates onto acc's memory (beta = 1): no add pass.
  Tensor conv2d_onto(const Tensor& x, const Tensor& w, int stride, int padding, const Tensor& acc) override;
  Tensor linear_residual(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& residual) override;
  Tensor linear_geglu(const Tensor& x, const Tensor& w, const Tensor& bias) override;

  Tensor group_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, int groups, float eps,
                    bool silu) override;
  ConcatReads concat_norm_shortcut(const Tensor& a, const Tensor& b, const Tensor& gamma, const Tensor& beta,
                                   int groups, float eps, bool silu, const Tensor& w, const Tensor& bias) override;
  Tensor group_norm_add(const Tensor& x, const Tensor& add_src, int64_t add_col, const Tensor& gamma,
                        const Tensor& beta, int groups, float eps, bool silu) override;
  Tensor layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps) override;
  // resnet_block.cc: the persistent block kernel (resblock_persistent.h) where it applies.
  Tensor resnet_block(const ResnetBlockOperands& ops) override;
  Tensor softmax(const Tensor& x) override;

  Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads, bool causal) override;
  Tensor attention_cols(const Tensor& q_src, int64_t q_col, const Tensor& kv_src, int64_t k_col, int64_t v_col,
                        int64_t inner, int heads, bool causal) override;
  void prepare_attention(DType dtype, const std::vector<AttentionShape>& shapes) override;
  bool attention_preparing(DType dtype, const std::vector<AttentionShape>& shapes) const override;
  // Runs `args` through cuDNN's SDPA, the mma.sync or the WMMA kernel (attention.cu).
  void run_attention(DType dtype, const AttentionArgs& args);
  // Runs `args` on one kernel path (attention.cu AttentionPath); false when it does not apply.
  bool run_attention_path(int path, DType dtype, const AttentionArgs& args);

  Tensor activation(const Tensor& x, Activation act) override;
  Tensor geglu(const Tensor& x) override;
  Tensor add(const Tensor& a, const Tensor& b) override;
  Tensor mul(const Tensor& a, const Tensor& b) override;
  Tensor scale(const Tensor& x, float s) override;
  Tensor add_per_channel(const Tensor& x, const Tensor& v) override;
  Tensor lincomb(const std::vector<Tensor>& inputs, const Tensor& coeffs) override;
  // slot_update.cu: the batched guidance + sampler step (addresses and coefficients on the device).
  void slot_update(const std::vector<Tensor>& direct, const Tensor& table, const Tensor& coeffs, int64_t row_elems,
                   DType dtype) override;

  Tensor upsample_nearest2x(const Tensor& x) override;
  Tensor interleave_phases2x(const Tensor& y4, const Tensor& bias) override;
  // conv_subpixel.cc: the phase convolution on the Hopper wgmma kernel writing y in place, where
  // it applies and timed faster (SDSERVE_CUDA_WGMMA_SUBPIXEL); else the default two ops.
  Tensor conv2d_subpixel_upsample(const Tensor& x, const Tensor& w_phases, const Tensor& bias) override;
  Tensor pad_hw(const Tensor& x, int top, int bottom, int left, int right) override;
  Tensor crop_hw(const Tensor& x, int h0, int h, int w0, int w) override;
  Tensor concat_channels(const Tensor& a, const Tensor& b) override;
  Tensor embedding(const Tensor& ids, const Tensor& table) override;
  Tensor concat_rows(const std::vector<Tensor>& parts) override;
  Tensor to_pixels_u8(const Tensor& x) override;

  // randn_philox.cu: torch's CUDA randn computed on the device (rng/ latents).
  bool randn_philox(const Tensor& out, const PhiloxRandn& p) override;

  // graph_capture.cc: CUDA graphs with a private allocator pool per graph.
  bool supports_capture() const override { return true; }
  std::unique_ptr<CapturedGraph> capture(const std::function<void()>& fn) override;

  // markers.cc: profiling marks as CUDA events on the stream; hold_queue blocks the stream
  // with a sleeping host function.
  Status wait_previous_step() override;  // cuda_backend.cc: two events in turn
  bool telemetry_start() override;  // cuda_backend.cc: GpuTelemetry (NVML)
  std::optional<DeviceTelemetry> telemetry_stop() override;
  std::optional<DeviceReading> device_reading() const override;  // NVML; any thread
  int64_t mark() override;
  StatusOr<std::vector<double>> marks_elapsed_ms() override;
  void hold_queue(double ms) override;

  // ---- internals shared by the op files ----
  cudaStream_t stream() const { return stream_; }
  DeviceAllocator& allocator() { return *alloc_; }
  AllocatorCounters allocator_counters() const { return alloc_->counters(); }
  // Makes this backend's device current for the calling thread.
  void activate() const;
  // Adds bias[C] to every row of y [..., C] in place (conv2d epilogue).
  void add_bias_rows(const Tensor& y, const Tensor& bias);
  // y [B, ..., C] += bias [C] + row [B, C] + residual (y's shape), in place, one kernel; each
  // term may be undefined.
  void add_epilogue(const Tensor& y, const Tensor& bias, const Tensor& row, const Tensor& residual);
  // Plain cuBLAS handle for GEMMs cuBLASLt has no algorithm for (created on first use).
  cublasHandle_t blas();
  // Runs a conv2d graph-API plan built for `epilogue` (autotuning it on first use); false if
  // it cannot run (the plan is then discarded).
  bool conv2d_graph(ConvGraphPlan& plan, int epilogue, const ConvGraphOperands& ops);
  // Times plan's candidates with `run` (x re-read from ops before each), keeps the fastest; false
  // (plan discarded) when none runs.
  bool tune_conv_graph(ConvGraphPlan& plan, const ConvGraphOperands& ops,
                       const std::function<cudnnStatus_t(size_t)>& run);
  // conv2d_fused with `donated`: the residual's memory may take the result (conv2d_onto).
  Tensor conv2d_epilogues(const Tensor& x, const Tensor& w, const Tensor& bias, int stride, int padding,
                          const Tensor& row_add, const Tensor& residual, bool donated);
  // The cuDNN descriptors / output size for a convolution shape (conv.cc).
  ConvPlan& conv_plan(const ConvKey& key);
  // linear (+ residual as cuBLASLt's C with beta = 1; residual may be undefined) (gemm.cc).
  Tensor linear_impl(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& residual);
  // Checks the operands of a linear and returns the cuBLASLt plan of its shape for an output at
  // 256-byte alignment (as the allocator gives); null when the output is empty (gemm.cc).
  GemmPlan* linear_plan(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& residual);
  // The same for an input of m rows at `align_x` (checks w, bias, residual only).
  GemmPlan* linear_plan_rows(int64_t m, int align_x, const Tensor& w, const Tensor& bias, const Tensor& residual);
  // y = x w^T (+ bias) (+ residual) through cuBLASLt (or cuBLAS), the plan tuned on its first
  // eager call (gemm.cc).
  void linear_library(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& residual, GemmPlan& plan,
                      const Tensor& y);
  // Our Hopper GEMM (gemm_wgmma.h) where SDSERVE_CUDA_WGMMA_GEMM picks it for this shape
  // (gemm_wgmma_choice.cc; `library_path` runs cuBLASLt (+ the GEGLU kernel) when it is timed
  // against it); geglu: w [2N, K], the result [..., N]. x2 defined: the input is [x | x2]
  // (channels side by side, read in place; `library_path` concatenates). Undefined if it does not apply.
  Tensor linear_wgmma(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& residual, bool geglu,
                      GemmPlan& plan, const std::function<Tensor()>& library_path, const Tensor& x2 = Tensor());
  // conv2d without bias: graph API, legacy API or the direct kernel (conv.cc).
  Tensor conv2d_plain(const Tensor& x, const Tensor& w, int stride, int padding);
  // The split-K implicit-GEMM conv when SDSERVE_CUDA_SPLITK_CONV picks it for this shape
  // (conv_splitk_choice.cc; `cudnn_path` runs the cuDNN alternative when it is timed against it);
  // undefined if it does not apply.
  Tensor conv2d_splitk(const Tensor& x, const Tensor& w, const Tensor& bias, int stride, int padding,
                       const Tensor& row_add, const Tensor& residual, ConvPlan& plan,
                       const std::function<Tensor()>& cudnn_path);
  // Before one timed autotuning run: evicts L2 and re-reads `input` (tuning_l2.h); no-op with
  // SDSERVE_CUDA_TUNE_COLD=0.
  void prepare_tuning_run(const void* input, size_t input_bytes);
  // Attention through cuBLAS batched GEMMs and a softmax kernel (any head dim; f32 scores).
  Tensor attention_unfused(const Tensor& q, const Tensor& k, const Tensor& v, int heads, bool causal);
  // [B,Ho,Wo,C] window of x [B,H,W,C] starting at (dy, dx), zero outside (pad_hw, crop_hw).
  Tensor window(const Tensor& x, int64_t ho, int64_t wo, int64_t dy, int64_t dx, const char* op);
  // Asserts that `t` lives on this device.
  void check_on_device(const Tensor& t, const char* op) const;

 private:
  int device_;
  DType dtype_;
  std::string name_;
  cudaStream_t stream_ = nullptr;
  std::shared_ptr<DeviceAllocator> alloc_;
  cublasLtHandle_t lt_ = nullptr;
  cudnnHandle_t dnn_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  bool attention_wmma_ = false;  // SDSERVE_CUDA_ATTENTION=wmma: the WMMA kernel for every head dim
  std::unique_ptr<GemmPlans> gemm_;
  std::unique_ptr<ConvPlans> conv_;
  std::shared_ptr<AttentionChoices> attention_choices_;  // made on the first tuned attention
  std::unique_ptr<ConvGraphPlans> conv_graph_;
  bool conv_graph_enabled_ = true;  // SDSERVE_CUDNN_GRAPH=0: legacy cuDNN API only
  bool conv_autotune_ = true;       // SDSERVE_CUDNN_AUTOTUNE=0: the heuristic's first plan
  int graph_pool_ = 0;  // allocator pool shared by this backend's captured graphs (graph_capture.cc)
  void* gemm_workspace_ = nullptr;
  std::shared_ptr<MarkerPool> markers_;  // made on the first mark() (markers.cc)
  cudaEvent_t step_events_[2] = {nullptr, nullptr};  // wait_previous_step(): last two steps' ends
  int step_event_next_ = 0;
  bool step_event_recorded_[2] = {false, false};
  size_t gemm_workspace_bytes_ = 0;
  unsigned* grid_barrier_ = nullptr;  // 64 words for the persistent kernels' grid barrier (zero between launches)
  std::shared_ptr<SubpixelPlans> subpixel_plans_;  // made on the first conv2d_subpixel_upsample
  std::unique_ptr<GpuTelemetry> telemetry_;         // made on the first telemetry_start
  std::unique_ptr<GpuTelemetry> reader_;            // device_reading's (made in the constructor)
};

// False when SDSERVE_CUDA_FUSED=0: conv2d_fused / linear_residual run the unfused ops.
bool fused_epilogues_enabled();

// cudaDataType / cudnnDataType_t for a float dtype (f32, f16, bf16).
cudaDataType_t cuda_data_type(DType dtype);
cudnnDataType_t cudnn_data_type(DType dtype);

}  // namespace sd::cuda
