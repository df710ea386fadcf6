// ProfilingBackend: a decorator over any Backend that forwards every op and, while recording,
// notes per op its kind, the innermost BackendScope, FLOPs, bytes moved and a timestamp
// before and after (device marks, or synchronize + host clock where the backend has none).
#pragma once

#include <string>
#include <vector>

#include "backend/backend.h"

namespace sd {

// FLOPs of the matmul-shaped ops (multiply and add count 2), as issue 5 defines them.
// conv2d: 2*B*Ho*Wo*Cout*Cin*k^2 (y [B,Ho,Wo,Cout], w [Cout,k,k,Cin]).
double conv2d_flops(const Shape& y, const Shape& w);
// linear: 2*M*N*K (y [..., N] with M rows, K the input width).
double linear_flops(const Shape& y, int64_t k);
// attention: 4*B*H*Lq*Lk*D (q [B,Lq,H*D], Lk keys), halved when causal.
double attention_flops(const Shape& q, int64_t lk, bool causal);

// One op recorded by ProfilingBackend.
struct OpRecord {
  const char* kind = "";  // backend.h op name: "conv2d", "linear", "attention", "group_norm", ...
  std::string scope;      // innermost BackendScope name at the call ("" outside any)
  double flops = 0;       // matmul-shaped ops only (0 for the rest)
  double bytes = 0;       // every input read once (weights included) + the output written
  std::string output;     // the output, e.g. "f16[2,64,64,320] on cuda:0"
  // attention: the call's shape as Backend::AttentionShape names it, e.g. "b2 lq4096 lk77 h8 d40
  // strides 320/24960" (q / k-v row strides); "" for other ops
  std::string detail;
  double ms = 0;          // time between the marks before and after the op
};

class ProfilingBackend final : public Backend {
 public:
  explicit ProfilingBackend(Backend& inner) : inner_(inner) {}
  Backend& inner() { return inner_; }

  // Ops between begin_recording() and end_recording() are recorded; outside, every op is
  // forwarded untouched (one extra virtual call). end_recording waits for the device.
  void begin_recording();
  StatusOr<std::vector<OpRecord>> end_recording();
  bool recording() const { return recording_; }
  // True when the inner backend has timing marks (CUDA events, the CPU's host clock);
  // false: each recorded op is bracketed by synchronize() and the host clock.
  bool device_marks() const { return device_marks_; }

  // ---- Backend: everything forwards to the inner backend ----
  Device device() const override { return inner_.device(); }
  std::string name() const override { return inner_.name(); }
  DType compute_dtype() const override { return inner_.compute_dtype(); }
  Tensor empty(const Shape& shape, DType dtype) override { return inner_.empty(shape, dtype); }
  Tensor upload(const Tensor& host, DType dtype) override { return inner_.upload(host, dtype); }
  using Backend::upload;
  Tensor download(const Tensor& x) override { return inner_.download(x); }
  void copy(const Tensor& src, const Tensor& dst) override;
  Status synchronize() override { return inner_.synchronize(); }
  Status wait_previous_step() override { return inner_.wait_previous_step(); }
  bool telemetry_start() override { return inner_.telemetry_start(); }
  std::optional<DeviceTelemetry> telemetry_stop() override { return inner_.telemetry_stop(); }
  std::optional<DeviceReading> device_reading() const override { return inner_.device_reading(); }
  size_t memory_in_use() const override { return inner_.memory_in_use(); }
  size_t memory_peak() const override { return inner_.memory_peak(); }
  void reset_memory_peak() override { inner_.reset_memory_peak(); }
  // "b2 lq4096 lk77 h8 d40 strides 320/24960": OpRecord::detail of an attention of this shape.
  static std::string attention_detail(const AttentionShape& s);
  void prepare_attention(DType dtype, const std::vector<AttentionShape>& shapes) override {
    inner_.prepare_attention(dtype, shapes);
  }

  Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias) override;
  Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, int stride, int padding) override;
  // Recorded under the kinds "conv2d" / "linear" (the epilogue is part of the matmul op).
  Tensor conv2d_fused(const Tensor& x, const Tensor& w, const Tensor& bias, int stride, int padding,
                      const Tensor& row_add, const Tensor& residual) override;
  Tensor conv2d_onto(const Tensor& x, const Tensor& w, int stride, int padding, const Tensor& acc) override;
  Tensor linear_residual(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& residual) override;
  Tensor group_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, int groups, float eps,
                    bool silu) override;
  Tensor group_norm_add(const Tensor& x, const Tensor& add_src, int64_t add_col, const Tensor& gamma,
                        const Tensor& beta, int groups, float eps, bool silu) override;
  Tensor layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps) override;
  Tensor softmax(const Tensor& x) override;
  Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads, bool causal) override;
  Tensor attention_cols(const Tensor& q_src, int64_t q_col, const Tensor& kv_src, int64_t k_col, int64_t v_col,
                        int64_t inner, int heads, bool causal) override;  // recorded as "attention"
  Tensor activation(const Tensor& x, Activation act) override;
  Tensor geglu(const Tensor& x) override;
  Tensor linear_geglu(const Tensor& x, const Tensor& w, const Tensor& bias) override;  // kind "linear"
  Tensor add(const Tensor& a, const Tensor& b) override;
  Tensor mul(const Tensor& a, const Tensor& b) override;
  Tensor scale(const Tensor& x, float s) override;
  Tensor add_per_channel(const Tensor& x, const Tensor& v) override;
  Tensor lincomb(const std::vector<Tensor>& inputs, const Tensor& coeffs) override;
  void slot_update(const std::vector<Tensor>& direct, const Tensor& table, const Tensor& coeffs, int64_t row_elems,
                   DType dtype) override;
  Tensor upsample_nearest2x(const Tensor& x) override;
  Tensor concat_channels(const Tensor& a, const Tensor& b) override;
  Tensor embedding(const Tensor& ids, const Tensor& table) override;
  Tensor concat_rows(const std::vector<Tensor>& parts) override;
  Tensor pad_hw(const Tensor& x, int top, int bottom, int left, int right) override;
  Tensor crop_hw(const Tensor& x, int h0, int h, int w0, int w) override;
  Tensor interleave_phases2x(const Tensor& y4, const Tensor& bias) override;
  Tensor conv2d_subpixel_upsample(const Tensor& x, const Tensor& w_phases, const Tensor& bias) override;
  bool randn_philox(const Tensor& out, const PhiloxRandn& p) override;
  // Recorded as one op of kind "concat_norm_shortcut" (FLOPs of the shortcut GEMM).
  ConcatReads concat_norm_shortcut(const Tensor& a, const Tensor& b, const Tensor& gamma, const Tensor& beta,
                                   int groups, float eps, bool silu, const Tensor& w, const Tensor& bias) override;
  // Recorded as one op of kind "resnet_block" (FLOPs of both convolutions and the shortcut); an
  // undefined result (no fused form) records nothing and the caller's ops are recorded instead.
  Tensor resnet_block(const ResnetBlockOperands& ops) override;
  // Ops added to backend.h later: forward them here with record() like the ones above
  // (an op left out runs Backend's portable default, or does not compile if it has none).

  // capture(): the portable default (re-run through this decorator); profiling is eager.
  int64_t mark() override { return inner_.mark(); }
  StatusOr<std::vector<double>> marks_elapsed_ms() override { return inner_.marks_elapsed_ms(); }
  void hold_queue(double ms) override { inner_.hold_queue(ms); }
  void push_scope(const std::string& name) override { scopes_.push_back(name); }
  void pop_scope() override {
    if (!scopes_.empty()) scopes_.pop_back();
  }

 private:
  // Runs `op` (returning the output), recording it when recording: `in_bytes` are the
  // bytes of the inputs; the output's bytes are added.
  template <typename Op>
  Tensor record(const char* kind, double flops, double in_bytes, Op&& op, std::string detail = {});

  struct Pending {
    OpRecord rec;
    int64_t mark_before = -1, mark_after = -1;  // device marks (device_marks_)
  };
  Backend& inner_;
  bool recording_ = false;
  bool device_marks_ = false;
  std::vector<std::string> scopes_;
  std::vector<Pending> pending_;
};

}  // namespace sd
