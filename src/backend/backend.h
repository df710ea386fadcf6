// Backend: the op table every device implements (ggml-style: one backend per folder,
// one op family per file). Models call these ops and never touch device memory directly.
// Layouts: activations NHWC [B,H,W,C] or sequences [B,L,C]; weights as stated per op.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/status.h"
#include "tensor/tensor.h"

namespace sd {

enum class Activation { kSiLU, kGELU /* erf */, kGELUTanh, kQuickGELU };

// Device work recorded once by Backend::capture() and run again by replay() (a CUDA graph on
// the CUDA backend). Destroying it gives back the memory the recording holds.
class CapturedGraph {
 public:
  virtual ~CapturedGraph() = default;
  // Enqueues the recorded work again (asynchronously, in order with the backend's other
  // work). Device failures throw sd::Error.
  virtual void replay() = 0;
};

// torch.randn(n, device='cuda', generator=g) as PyTorch's CUDA kernel computes it (see
// rng/torch_cuda_generator.h for the scheme): Philox4x32-10 keyed by `seed`; thread t of the
// `threads` (grid * block) of the imitated launch owns subsequence t, its k-th draw uses
// counter offset / 4 + k and yields the elements t + threads * (4k + i), i = 0..3, by curand's
// Box-Muller. Used by Backend::randn_philox (rng/ fills latents with it).
struct PhiloxRandn {
  uint64_t seed = 0;
  uint64_t offset = 0;   // the generator's philox offset at the call (a multiple of 4)
  int64_t threads = 0;   // block size * grid size of the imitated launch
  // true: values are drawn in NCHW order [B, C, H, W] and stored NHWC (out is [B, H, W, C]);
  // false: element i of the draw goes to out's element i.
  bool nchw_to_nhwc = false;
};

// Device-caused failures inside ops (out of memory, failed launches) throw sd::Error; the
// pipeline's entry points catch it and return the Status. Shape mismatches are programmer
// errors and assert.
// What a device did over an interval (Backend::telemetry_stop): SM clock, board power against its
// limit, the share of samples in which the power cap (software cap or power brake) or a thermal /
// hardware slowdown held the clocks down, the hottest reading, the energy the board used.
struct DeviceTelemetry {
  int samples = 0;
  double sm_mhz_mean = 0, sm_mhz_min = 0, sm_mhz_max = 0;
  double power_w_mean = 0, power_w_max = 0, power_limit_w = 0;
  double power_capped = 0;  // fraction of samples, 0..1
  double slowed = 0;        // fraction of samples, 0..1
  double temperature_c_max = 0;
  double seconds = 0;     // length of the interval
  double energy_j = -1;   // the board's energy counter over the interval; < 0 where it has none
};

// The device's state at one moment (Backend::device_reading): the board's energy counter since
// the driver loaded (a Prometheus counter; < 0 where the board has none), power against its
// limit, SM clock, temperature, and whether the power cap is holding the clocks down.
struct DeviceReading {
  double energy_j = -1;
  double power_w = 0, power_limit_w = 0;
  double sm_mhz = 0, temperature_c = 0;
  bool power_capped = false;
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual Device device() const = 0;
  virtual std::string name() const = 0;  // "cpu (OpenBLAS, 2 threads)", "cuda:0 (NVIDIA H100)"
  // dtype of activations and weights on this device (f32 on the CPU; f16 or bf16 on CUDA).
  virtual DType compute_dtype() const = 0;

  // ---- memory ----
  virtual Tensor empty(const Shape& shape, DType dtype) = 0;
  // Host tensor (any float dtype) -> device tensor in `dtype` (kF32/kF16/kBF16 converted,
  // integer dtypes copied as they are).
  virtual Tensor upload(const Tensor& host, DType dtype) = 0;
  Tensor upload(const Tensor& host) { return upload(host, compute_dtype()); }
  // Device tensor -> host f32 tensor (integer tensors: copied as they are). Synchronises.
  virtual Tensor download(const Tensor& x) = 0;
  // Copy `src` into `dst` (same numel and dtype; both on this device).
  virtual void copy(const Tensor& src, const Tensor& dst) = 0;
  // Waits for queued work; returns the first device error since the last call.
  virtual Status synchronize() = 0;
  // Pipelining: wait_previous_step() waits until the work queued before the previous call has
  // finished and then marks the work queued so far, so a caller that runs it once per step keeps
  // at most one step in flight while its host prepares the next. Default: synchronize().
  virtual Status wait_previous_step() { return synchronize(); }
  // Device clocks and power over an interval, where the backend can read them (CUDA: NVML,
  // sampled every 10 ms): telemetry_start() begins, telemetry_stop() ends and summarizes.
  virtual bool telemetry_start() { return false; }
  virtual std::optional<DeviceTelemetry> telemetry_stop() { return std::nullopt; }
  // One reading of the device now, where the backend can read it. Thread-safe and independent of
  // the queue (CUDA: NVML), so a metrics endpoint may call it while another thread drives work.
  virtual std::optional<DeviceReading> device_reading() const { return std::nullopt; }
  // Bytes of device memory in use / peak since reset (0 when unknown).
  virtual size_t memory_in_use() const { return 0; }
  virtual size_t memory_peak() const { return 0; }
  virtual void reset_memory_peak() {}
  // Returns cached but unused device memory to the device (CUDA: the allocator's free blocks),
  // e.g. before retrying work that ran out of memory. Not inside capture(). No-op by default.
  virtual void release_cached_memory() {}
  // Forgets every per-shape plan and timed choice (CUDA: cuDNN / cuBLASLt plans, attention and
  // convolution choices, the cuDNN handle's caches) so their host and device memory goes back;
  // shapes met later are planned again on their first (eager) call. Every graph recorded
  // before must be gone and no other thread may be using the backend. No-op by default.
  virtual void release_shape_plans() {}

  // ---- dense ----
  // y[..., N] = x[..., K] · w[N, K]^T (+ bias[N]). PyTorch Linear weight layout.
  virtual Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias) = 0;
  // y [B,Ho,Wo,Cout] = conv(x [B,H,W,Cin], w [Cout,kh,kw,Cin]) + bias[Cout]; square kernel,
  // symmetric zero padding. Weights are converted from PyTorch OIHW to OHWI at load.
  virtual Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, int stride, int padding) = 0;

  // ---- normalisation ----
  // x [B, ..., C] (NHWC or [B,L,C]): statistics per (batch, group) over all positions and
  // the group's C/groups channels; optional SiLU after the affine transform.
  virtual Tensor group_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, int groups, float eps,
                            bool silu) = 0;
  // Over the last dimension.
  virtual Tensor layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps) = 0;
  // Softmax over the last dimension.
  virtual Tensor softmax(const Tensor& x) = 0;

  // ---- attention ----
  // q [B, Lq, H*D], k/v [B, Lk, H*D] -> [B, Lq, H*D]; softmax(q k^T / sqrt(D)) v per head,
  // computed with f32 accumulation; `causal` masks key j > query i.
  virtual Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads, bool causal) = 0;

  // ---- packed attention inputs (H5: one QKV / KV projection GEMM per attention layer) ----
  // attention(q, k, v, heads, causal) on column windows of packed projections:
  //   q = q_src[..., q_col : q_col + inner], k = kv_src[..., k_col : k_col + inner],
  //   v = kv_src[..., v_col : v_col + inner]; q_src [B, Lq, Wq], kv_src [B, Lk, Wkv] contiguous
  // (self-attention passes the same [B, L, 3*inner] tensor twice). Result [B, Lq, inner].
  // Default (attention_cols_default.cc): copies the windows out (a host loop where device
  // memory is host memory, else an embedding() gather with uploaded row ids: eager only) and
  // calls attention(). The CPU and CUDA backends read the windows in place.
  virtual Tensor attention_cols(const Tensor& q_src, int64_t q_col, const Tensor& kv_src, int64_t k_col,
                                int64_t v_col, int64_t inner, int heads, bool causal);

  // ---- preparation hint ----
  // Attention calls of these shapes (q / k/v row strides in elements, as attention_cols reads
  // them) will follow. A backend may prepare for them in the background; nothing depends on it.
  // CUDA builds cuDNN SDPA plans in parallel (each costs ~0.5-2 s of runtime compilation where
  // the driver's JIT cache is cold, a fresh machine's first process).
  struct AttentionShape {
    int64_t batch, lq, lk, heads, d, q_stride, kv_stride;
  };
  virtual void prepare_attention(DType /*dtype*/, const std::vector<AttentionShape>& /*shapes*/) {}
  // Whether a prepare_attention build of any of these shapes is still in flight.
  virtual bool attention_preparing(DType /*dtype*/, const std::vector<AttentionShape>& /*shapes*/) const {
    return false;
  }

  // ---- group norm of x plus a per-(batch, channel) vector (ResNet time embedding) ----
  // group_norm(x + v) (then SiLU) with v[b, c] = add_src[b, add_col + c]: add_src [B, W] holds
  // the time projections of every ResNet side by side (one GEMM), this block's at add_col.
  // Default (group_norm_add_default.cc): copies the window out, add_per_channel, group_norm.
  // CUDA adds v inside both group norm passes.
  virtual Tensor group_norm_add(const Tensor& x, const Tensor& add_src, int64_t add_col, const Tensor& gamma,
                                const Tensor& beta, int groups, float eps, bool silu);

  // ---- elementwise ----
  virtual Tensor activation(const Tensor& x, Activation act) = 0;
  // x [..., 2N] -> [..., N]: x[..., :N] * gelu_erf(x[..., N:]) (diffusers GEGLU).
  virtual Tensor geglu(const Tensor& x) = 0;
  virtual Tensor add(const Tensor& a, const Tensor& b) = 0;  // same shape
  virtual Tensor mul(const Tensor& a, const Tensor& b) = 0;  // same shape
  virtual Tensor scale(const Tensor& x, float s) = 0;
  // x [B, ..., C] + v [B, C] broadcast over the middle dimensions (time embedding).
  virtual Tensor add_per_channel(const Tensor& x, const Tensor& v) = 0;
  // out[b] = sum_i coeffs[b][i] * inputs[i][b], all inputs of one shape [B, ...]; coeffs is
  // f32 [B, n] on the host or on this device (at most 16 inputs then); device coefficients
  // are read when the op runs, so a captured graph picks up values written before replay().
  // The whole sampler and guidance arithmetic is expressed this way.
  virtual Tensor lincomb(const std::vector<Tensor>& inputs, const Tensor& coeffs) = 0;

  // ---- per-row slot update: guidance + sampler step of many requests in one launch (H1) ----
  // For every row r < R and output j < n_out (coeffs is f32 [R, n_out, n_in]):
  //   out_j[r] = sum_i coeffs[r, j, i] * in_i[r]
  // A row is a contiguous block of `row_elems` elements of `dtype` (one image's latents).
  // Inputs i < direct.size() are row r of direct[i] ([R, ...] tensors, row_elems per row); the
  // other inputs and every output are addressed through `table`, i64 [R, n_in - direct.size()
  // + n_out] holding device addresses (inputs first, then outputs); 0 marks an absent input
  // (contributes nothing) or output (not written). table and coeffs live on this device and
  // are read when the op runs, so a captured graph picks up values copied in before replay().
  // Every element's inputs are all read before its outputs are written, so an output may be an
  // input of its own row (in place); outputs must not overlap other outputs or other rows.
  // f32 accumulation. Default (slot_update_default.cc): a host loop on host-memory backends,
  // else per-row lincombs after downloading table and coeffs (eager only, not capturable).
  static constexpr int kSlotUpdateMaxInputs = 16;
  static constexpr int kSlotUpdateMaxOutputs = 8;
  static constexpr int kSlotUpdateMaxDirect = 4;
  virtual void slot_update(const std::vector<Tensor>& direct, const Tensor& table, const Tensor& coeffs,
                           int64_t row_elems, DType dtype);

  // ---- layout ----
  // NHWC nearest-neighbour 2x upsample: [B,H,W,C] -> [B,2H,2W,C].
  virtual Tensor upsample_nearest2x(const Tensor& x) = 0;
  // Concatenate along the last dimension: [..., Ca] ++ [..., Cb].
  virtual Tensor concat_channels(const Tensor& a, const Tensor& b) = 0;
  // ids i32 [B, L], table [V, D] -> [B, L, D]. Out-of-range ids assert (the tokenizer
  // guarantees them).
  virtual Tensor embedding(const Tensor& ids, const Tensor& table) = 0;
  // Rows of several tensors [n_i, ...] stacked into one [sum n_i, ...].
  virtual Tensor concat_rows(const std::vector<Tensor>& parts) = 0;

  // ---- fused epilogues ----
  // Portable defaults run the unfused ops; backends may fuse (CUDA: cuDNN graph pointwise nodes,
  // cuBLASLt beta = 1). conv2d(x, w, bias, stride, padding) [+ row_add [B, Cout] broadcast over
  // Ho, Wo (the ResNet time embedding)] [+ residual [B, Ho, Wo, Cout]]; each may be undefined.
  virtual Tensor conv2d_fused(const Tensor& x, const Tensor& w, const Tensor& bias, int stride, int padding,
                              const Tensor& row_add, const Tensor& residual) {
    Tensor y = conv2d(x, w, bias, stride, padding);
    if (row_add.defined()) y = add_per_channel(y, row_add);
    return residual.defined() ? add(y, residual) : y;
  }
  // conv2d(x, w) + acc [B, Ho, Wo, Cout] where the caller gives `acc` up: the backend may write the
  // result into acc's memory (CUDA: cuDNN accumulates onto it, beta = 1), so nothing else may read
  // acc afterwards. The ResNet block's conv2 onto its shortcut, which carries conv2's bias.
  virtual Tensor conv2d_onto(const Tensor& x, const Tensor& w, int stride, int padding, const Tensor& acc) {
    return conv2d_fused(x, w, Tensor(), stride, padding, Tensor(), acc);
  }
  // linear(x, w, bias) + residual (residual has the output's shape).
  virtual Tensor linear_residual(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& residual) {
    return add(linear(x, w, bias), residual);
  }
  // geglu(linear(x, w, bias)): w [2N, K], bias [2N] (rows [0, N) the value, [N, 2N) the gate)
  // -> [..., N]. The feed-forward's first projection; CUDA computes GEGLU in the GEMM epilogue.
  virtual Tensor linear_geglu(const Tensor& x, const Tensor& w, const Tensor& bias) { return geglu(linear(x, w, bias)); }

  // ---- the UNet decoder's skip connection ----
  // A decoder ResNet reads its input [a | b] (channels concatenated: a's, then b's; the up path
  // and the skip) twice: group_norm (then SiLU when silu) and its 1x1 shortcut, linear with
  // w [N, Ca + Cb] and bias [N]. Returns both. Default: one concat_channels, then the two ops;
  // CUDA reads a and b in place (no concatenated tensor) where its kernels can.
  struct ConcatReads {
    Tensor normed;    // [B, ..., Ca + Cb]
    Tensor shortcut;  // [B, ..., N]
  };
  virtual ConcatReads concat_norm_shortcut(const Tensor& a, const Tensor& b, const Tensor& gamma, const Tensor& beta,
                                           int groups, float eps, bool silu, const Tensor& w, const Tensor& bias) {
    const Tensor x = concat_channels(a, b);  // [B, ..., Ca + Cb]
    return {group_norm(x, gamma, beta, groups, eps, silu), linear(x, w, bias)};
  }

  // ---- whole blocks ----
  // One UNet ResNet block in its stacked form (ResnetBlock::forward_stacked), NHWC, compute dtype:
  //   in = x [B, H, W, Cx], or [x | skip] with skip [B, H, W, Cs] (channels side by side)
  //   h  = conv1(silu(gn1(in))) + temb_all[b, time_col + c]   (conv1 3x3 without bias: it is in temb_all)
  //   y  = conv2(silu(gn2(h))) + b2 + (shortcut_w in + shortcut_b, or in)   -> [B, H, W, Cout]
  // A backend that runs such a block as one fused kernel returns y; undefined (the default) where
  // it has no fused form for the shapes, and the caller then runs the block op by op.
  struct ResnetBlockOperands {
    Tensor x, skip;                 // [B, H, W, Cx]; [B, H, W, Cs] or undefined
    Tensor temb_all;                // [B, W]: every block's time projection (+ conv1 bias)
    int64_t time_col = 0;           // this block's window in temb_all
    Tensor gamma1, beta1, w1;       // [Cin], [Cin], [Cout, 3, 3, Cin]  (Cin = Cx + Cs)
    Tensor gamma2, beta2, w2, b2;   // [Cout] x 2, [Cout, 3, 3, Cout], [Cout]
    Tensor shortcut_w, shortcut_b;  // [Cout, Cin], [Cout]; undefined when Cin == Cout
    int groups = 32;
    float eps = 1e-5f;
  };
  virtual Tensor resnet_block(const ResnetBlockOperands& ops) {
    (void)ops;
    return Tensor();
  }

  // ---- spatial padding and cropping (NHWC) ----
  // These have a portable default (download, host loop, upload); backends may override.
  // Zero padding: [B,H,W,C] -> [B,H+top+bottom,W+left+right,C].
  virtual Tensor pad_hw(const Tensor& x, int top, int bottom, int left, int right);
  // Window rows [h0,h0+h), cols [w0,w0+w): [B,H,W,C] -> [B,h,w,C].
  virtual Tensor crop_hw(const Tensor& x, int h0, int h, int w0, int w);

  // ---- sub-pixel upsampling (a nearest 2x upsample followed by a 3x3 convolution) ----
  // The four output phases of such a convolution are 2x2 convolutions of the small image;
  // models run them as one conv2d(x, w_phases [4*C, 2, 2, Cin], padding 1) -> y4, and this op
  // scatters them: y4 [B, H+1, W+1, 4*C] -> out [B, 2H, 2W, C] with
  //   out[b, 2i+a, 2j+c, ch] = y4[b, i+a, j+c, (2a+c)*C + ch] + bias[ch]   (a, c in {0, 1}),
  // bias [C] or undefined. Portable default (spatial_default.cc): download, host loop, upload.
  virtual Tensor interleave_phases2x(const Tensor& y4, const Tensor& bias);
  // The whole sub-pixel upsample: x [B, H, W, Cin], w_phases [4*C, 2, 2, Cin] (phase p's kernel
  // in rows [p*C, (p+1)*C)), bias [C] or undefined -> [B, 2H, 2W, C]. Default: the two ops above
  // (conv2d with padding 1, then interleave_phases2x); CUDA may run one kernel that writes the
  // phases in place.
  virtual Tensor conv2d_subpixel_upsample(const Tensor& x, const Tensor& w_phases, const Tensor& bias) {
    return interleave_phases2x(conv2d(x, w_phases, Tensor(), /*stride=*/1, /*padding=*/1), bias);
  }

  // ---- decoded images to 8-bit pixels ----
  // x [..., C] in [-1, 1] (the VAE's output) -> u8 tensor of x's shape on this device:
  // round(clamp(x * 0.5 + 0.5, 0, 1) * 255) with halves rounded up, each step in f32 as
  // pixels_u8_value() computes it, so every backend produces the same bytes. Default
  // (pixels_default.cc): downloads, converts on the host, uploads.
  virtual Tensor to_pixels_u8(const Tensor& x);

  // ---- seeded noise (rng/) ----
  // Fills `out` (f32/f16/bf16 on this device, contiguous; 4-D when p.nchw_to_nhwc) with the
  // next out.numel() values of the Philox stream described by `p`, computed on the device
  // and rounded once to out's dtype. Returns false when the backend has no such kernel (the
  // default; the CPU backend): the caller then draws on the host and uploads.
  virtual bool randn_philox(const Tensor& out, const PhiloxRandn& p) {
    (void)out;
    (void)p;
    return false;
  }

  // ---- graph capture ----
  // True when capture() records device work for cheap replay (CUDA graphs); false when it
  // only re-runs the function (the portable default below).
  virtual bool supports_capture() const { return false; }
  // Records the work `fn` enqueues; call replay() to run it (capture itself computes no
  // results). Contract for fn: ops only (no download, synchronize or host reads of device
  // data, no upload); inputs come from tensors that outlive the graph (refill them with copy()
  // before each replay), results go to variables fn captures by reference, which hold them
  // after every replay. fn may run more than once while recording (the CUDA backend runs it
  // eagerly first so autotuning and plan building stay out of the graph). A backend's graphs
  // run one at a time and may share memory for their intermediates, never for tensors still
  // held (results, inputs). Device failures throw sd::Error. Default: replay() calls fn again.
  virtual std::unique_ptr<CapturedGraph> capture(const std::function<void()>& fn);

  // ---- profiling: timing marks and named scopes (sdserve bench --profile) ----
  // Records a timestamp in the order of the queued work (a CUDA event on the stream; the
  // host clock on the CPU) and returns its index among the marks since the last
  // marks_elapsed_ms(); -1 when the backend has none (callers then synchronize() and read
  // the host clock). Never inside capture().
  virtual int64_t mark() { return -1; }
  // Milliseconds from the first mark to each mark, in order; waits for them and forgets them.
  virtual StatusOr<std::vector<double>> marks_elapsed_ms() { return std::vector<double>{}; }
  // Holds the device queue for about `ms` (work enqueued meanwhile waits), so the host runs
  // ahead and a profiled step shows no launch gaps. No-op by default.
  virtual void hold_queue(double ms) { (void)ms; }
  // Named region of work (use BackendScope); recorded by ProfilingBackend, no-ops elsewhere.
  virtual void push_scope(const std::string& name) { (void)name; }
  virtual void pop_scope() {}
};

// RAII scope for profilers: BackendScope s(be, "down.1.attn.0"); ops until it ends are
// attributed to that name (the innermost scope wins).
class BackendScope {
 public:
  BackendScope(Backend& be, const std::string& name) : be_(be) { be_.push_scope(name); }
  ~BackendScope() { be_.pop_scope(); }
  BackendScope(const BackendScope&) = delete;
  BackendScope& operator=(const BackendScope&) = delete;

 private:
  Backend& be_;
};

namespace detail {
class RerunGraph final : public CapturedGraph {  // the portable default: run fn again
 public:
  explicit RerunGraph(std::function<void()> fn) : fn_(std::move(fn)) {}
  void replay() override { fn_(); }

 private:
  std::function<void()> fn_;
};
}  // namespace detail

// One output value of Backend::to_pixels_u8 (NaN -> 0). x * 0.5f is exact, so a fused
// multiply-add gives the same result; v * 255 is rounded to f32, then halves go up in double.
inline uint8_t pixels_u8_value(float x) {
  float v = x * 0.5f + 0.5f;
  v = v > 0.0f ? (v < 1.0f ? v : 1.0f) : 0.0f;
  return static_cast<uint8_t>(static_cast<double>(v * 255.0f) + 0.5);
}

inline std::unique_ptr<CapturedGraph> Backend::capture(const std::function<void()>& fn) {
  return std::make_unique<detail::RerunGraph>(fn);
}

std::unique_ptr<Backend> make_cpu_backend(int threads = 0);  // 0 = all cores
// nullptr plus a Status when CUDA is not built in or the device is absent.
StatusOr<std::unique_ptr<Backend>> make_backend(const Device& device);
bool cuda_available();  // built with CUDA and at least one device present

}  // namespace sd
