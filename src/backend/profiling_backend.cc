// ProfilingBackend: the forwarding op table with per-op records (kind, scope, FLOPs, bytes,
// marks). Marks are resolved to milliseconds in end_recording(); without device marks each
// op is timed by the host clock between two synchronize() calls.
#include "backend/profiling_backend.h"

#include <chrono>

namespace sd {
namespace {

double bytes_of(const Tensor& t) { return t.defined() ? static_cast<double>(t.nbytes()) : 0.0; }

double bytes_of(const std::vector<Tensor>& ts) {
  double b = 0;
  for (const Tensor& t : ts) b += bytes_of(t);
  return b;
}

double rows_of(const Shape& s) {  // product of all but the last dimension
  double m = 1;
  for (size_t i = 0; i + 1 < s.size(); ++i) m *= static_cast<double>(s[i]);
  return m;
}

}  // namespace

double conv2d_flops(const Shape& y, const Shape& w) {
  SD_ASSERT(y.size() == 4 && w.size() == 4, "conv2d_flops: y [B,Ho,Wo,Cout], w [Cout,k,k,Cin]");
  return 2.0 * static_cast<double>(y[0]) * y[1] * y[2] * y[3] * static_cast<double>(w[1]) * w[2] * w[3];
}

double linear_flops(const Shape& y, int64_t k) {
  SD_ASSERT(!y.empty(), "linear_flops: empty output shape");
  return 2.0 * rows_of(y) * static_cast<double>(y.back()) * static_cast<double>(k);
}

double attention_flops(const Shape& q, int64_t lk, bool causal) {
  SD_ASSERT(q.size() == 3, "attention_flops: q [B, Lq, H*D]");
  const double f = 4.0 * static_cast<double>(q[0]) * q[1] * q[2] * static_cast<double>(lk);
  return causal ? f / 2 : f;
}

void ProfilingBackend::begin_recording() {
  SD_ASSERT(!recording_, "ProfilingBackend: begin_recording() twice");
  pending_.clear();
  // Probe for device marks; the probe's mark is the first one (index 0) and is discarded.
  device_marks_ = inner_.mark() >= 0;
  recording_ = true;
}

StatusOr<std::vector<OpRecord>> ProfilingBackend::end_recording() {
  SD_ASSERT(recording_, "ProfilingBackend: end_recording() without begin_recording()");
  recording_ = false;
  std::vector<OpRecord> out;
  out.reserve(pending_.size());
  if (device_marks_) {
    SD_ASSIGN_OR_RETURN(std::vector<double> t, inner_.marks_elapsed_ms());
    for (Pending& p : pending_) {
      if (p.mark_before < 0 || p.mark_after < 0 || static_cast<size_t>(p.mark_after) >= t.size()) {
        return Internal("ProfilingBackend: " + inner_.name() + " returned " + std::to_string(t.size()) +
                        " marks for " + std::to_string(2 * pending_.size() + 1) + " recorded");
      }
      p.rec.ms = t[static_cast<size_t>(p.mark_after)] - t[static_cast<size_t>(p.mark_before)];
    }
  } else {
    SD_RETURN_IF_ERROR(inner_.synchronize());
  }
  for (Pending& p : pending_) out.push_back(std::move(p.rec));
  pending_.clear();
  return out;
}

template <typename Op>
Tensor ProfilingBackend::record(const char* kind, double flops, double in_bytes, Op&& op, std::string detail) {
  if (!recording_) return op();
  Pending p;
  p.rec.kind = kind;
  p.rec.detail = std::move(detail);
  p.rec.scope = scopes_.empty() ? std::string() : scopes_.back();
  p.rec.flops = flops;
  using Clock = std::chrono::steady_clock;
  Clock::time_point t0;
  if (device_marks_) {
    p.mark_before = inner_.mark();
  } else {
    if (Status s = inner_.synchronize(); !s.ok()) throw Error(s);
    t0 = Clock::now();
  }
  Tensor y = op();
  if (device_marks_) {
    p.mark_after = inner_.mark();
  } else {
    if (Status s = inner_.synchronize(); !s.ok()) throw Error(s);
    p.rec.ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  }
  p.rec.bytes = in_bytes + bytes_of(y);
  p.rec.output = y.defined() ? y.describe() : "";
  pending_.push_back(std::move(p));
  return y;
}

void ProfilingBackend::copy(const Tensor& src, const Tensor& dst) {
  // copy returns nothing: record it with dst as the output written.
  (void)record("copy", 0, bytes_of(src), [&] {
    inner_.copy(src, dst);
    return dst;
  });
}

Tensor ProfilingBackend::linear(const Tensor& x, const Tensor& w, const Tensor& bias) {
  const int64_t n = w.dim(0), k = w.dim(1);
  Shape y = x.shape();
  y.back() = n;
  return record("linear", linear_flops(y, k), bytes_of(x) + bytes_of(w) + bytes_of(bias),
                [&] { return inner_.linear(x, w, bias); });
}

Tensor ProfilingBackend::conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, int stride, int padding) {
  const int64_t k = w.dim(1);
  const int64_t ho = (x.dim(1) + 2 * padding - k) / stride + 1, wo = (x.dim(2) + 2 * padding - k) / stride + 1;
  return record("conv2d", conv2d_flops({x.dim(0), ho, wo, w.dim(0)}, w.shape()),
                bytes_of(x) + bytes_of(w) + bytes_of(bias), [&] { return inner_.conv2d(x, w, bias, stride, padding); });
}

Tensor ProfilingBackend::conv2d_fused(const Tensor& x, const Tensor& w, const Tensor& bias, int stride, int padding,
                                      const Tensor& row_add, const Tensor& residual) {
  const int64_t k = w.dim(1);
  const int64_t ho = (x.dim(1) + 2 * padding - k) / stride + 1, wo = (x.dim(2) + 2 * padding - k) / stride + 1;
  return record("conv2d", conv2d_flops({x.dim(0), ho, wo, w.dim(0)}, w.shape()),
                bytes_of(x) + bytes_of(w) + bytes_of(bias) + bytes_of(row_add) + bytes_of(residual),
                [&] { return inner_.conv2d_fused(x, w, bias, stride, padding, row_add, residual); });
}

Tensor ProfilingBackend::conv2d_onto(const Tensor& x, const Tensor& w, int stride, int padding, const Tensor& acc) {
  const int64_t k = w.dim(1);
  const int64_t ho = (x.dim(1) + 2 * padding - k) / stride + 1, wo = (x.dim(2) + 2 * padding - k) / stride + 1;
  return record("conv2d", conv2d_flops({x.dim(0), ho, wo, w.dim(0)}, w.shape()),
                bytes_of(x) + bytes_of(w) + bytes_of(acc),
                [&] { return inner_.conv2d_onto(x, w, stride, padding, acc); });
}

Tensor ProfilingBackend::linear_residual(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& residual) {
  Shape y = x.shape();
  y.back() = w.dim(0);
  return record("linear", linear_flops(y, w.dim(1)), bytes_of(x) + bytes_of(w) + bytes_of(bias) + bytes_of(residual),
                [&] { return inner_.linear_residual(x, w, bias, residual); });
}

Tensor ProfilingBackend::linear_geglu(const Tensor& x, const Tensor& w, const Tensor& bias) {
  Shape y = x.shape();
  y.back() = w.dim(0);  // the GEMM's [..., 2N] before GEGLU halves it
  return record("linear", linear_flops(y, w.dim(1)), bytes_of(x) + bytes_of(w) + bytes_of(bias),
                [&] { return inner_.linear_geglu(x, w, bias); });
}

Tensor ProfilingBackend::group_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, int groups, float eps,
                                    bool silu) {
  return record("group_norm", 0, bytes_of(x) + bytes_of(gamma) + bytes_of(beta),
                [&] { return inner_.group_norm(x, gamma, beta, groups, eps, silu); });
}

Tensor ProfilingBackend::group_norm_add(const Tensor& x, const Tensor& add_src, int64_t add_col, const Tensor& gamma,
                                        const Tensor& beta, int groups, float eps, bool silu) {
  const double window = static_cast<double>(dtype_size(x.dtype()) * x.dim(0) * x.dim(-1));  // the [B, C] v read
  return record("group_norm", 0, bytes_of(x) + bytes_of(gamma) + bytes_of(beta) + window,
                [&] { return inner_.group_norm_add(x, add_src, add_col, gamma, beta, groups, eps, silu); });
}

Backend::ConcatReads ProfilingBackend::concat_norm_shortcut(const Tensor& a, const Tensor& b, const Tensor& gamma,
                                                            const Tensor& beta, int groups, float eps, bool silu,
                                                            const Tensor& w, const Tensor& bias) {
  Shape y = a.shape();
  y.back() = w.dim(0);  // the shortcut [..., N]
  const double shortcut_bytes = rows_of(y) * static_cast<double>(y.back() * dtype_size(a.dtype()));
  ConcatReads out;
  out.normed = record("concat_norm_shortcut", linear_flops(y, w.dim(1)),
                      bytes_of(a) + bytes_of(b) + bytes_of(gamma) + bytes_of(beta) + bytes_of(w) + bytes_of(bias) +
                          shortcut_bytes,
                      [&] {
                        ConcatReads r = inner_.concat_norm_shortcut(a, b, gamma, beta, groups, eps, silu, w, bias);
                        out.shortcut = r.shortcut;
                        return r.normed;
                      });
  return out;
}

Tensor ProfilingBackend::resnet_block(const ResnetBlockOperands& o) {
  if (!o.x.defined() || !o.w1.defined() || !o.w2.defined() || o.x.ndim() != 4) return inner_.resnet_block(o);
  const Shape y{o.x.dim(0), o.x.dim(1), o.x.dim(2), o.w1.dim(0)};
  double flops = conv2d_flops(y, o.w1.shape()) + conv2d_flops(y, o.w2.shape());
  if (o.shortcut_w.defined()) flops += linear_flops(y, o.shortcut_w.dim(1));
  double bytes = 0;
  for (const Tensor* t : {&o.x, &o.skip, &o.gamma1, &o.beta1, &o.w1, &o.gamma2, &o.beta2, &o.w2, &o.b2, &o.shortcut_w,
                          &o.shortcut_b}) {
    if (t->defined()) bytes += bytes_of(*t);
  }
  const size_t before = pending_.size();
  Tensor out = record("resnet_block", flops, bytes, [&] { return inner_.resnet_block(o); });
  if (!out.defined() && pending_.size() > before) pending_.pop_back();  // no fused form: the ops follow
  return out;
}

Tensor ProfilingBackend::layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps) {
  return record("layer_norm", 0, bytes_of(x) + bytes_of(gamma) + bytes_of(beta),
                [&] { return inner_.layer_norm(x, gamma, beta, eps); });
}

Tensor ProfilingBackend::softmax(const Tensor& x) {
  return record("softmax", 0, bytes_of(x), [&] { return inner_.softmax(x); });
}

std::string ProfilingBackend::attention_detail(const AttentionShape& s) {
  return "b" + std::to_string(s.batch) + " lq" + std::to_string(s.lq) + " lk" + std::to_string(s.lk) + " h" +
         std::to_string(s.heads) + " d" + std::to_string(s.d) + " strides " + std::to_string(s.q_stride) + "/" +
         std::to_string(s.kv_stride);
}

Tensor ProfilingBackend::attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads, bool causal) {
  const AttentionShape shape{q.dim(0), q.dim(1), k.dim(1), heads, q.dim(2) / heads, q.dim(2), k.dim(2)};
  return record("attention", attention_flops(q.shape(), k.dim(1), causal), bytes_of(q) + bytes_of(k) + bytes_of(v),
                [&] { return inner_.attention(q, k, v, heads, causal); }, attention_detail(shape));
}

Tensor ProfilingBackend::attention_cols(const Tensor& q_src, int64_t q_col, const Tensor& kv_src, int64_t k_col,
                                        int64_t v_col, int64_t inner, int heads, bool causal) {
  const double es = static_cast<double>(dtype_size(q_src.dtype()));
  const double in_bytes = es * inner * (q_src.dim(0) * q_src.dim(1) + 2 * kv_src.dim(0) * kv_src.dim(1));  // the windows
  const AttentionShape shape{q_src.dim(0), q_src.dim(1), kv_src.dim(1), heads, inner / heads, q_src.dim(2),
                             kv_src.dim(2)};
  return record("attention", attention_flops({q_src.dim(0), q_src.dim(1), inner}, kv_src.dim(1), causal), in_bytes,
                [&] { return inner_.attention_cols(q_src, q_col, kv_src, k_col, v_col, inner, heads, causal); },
                attention_detail(shape));
}

Tensor ProfilingBackend::activation(const Tensor& x, Activation act) {
  return record("activation", 0, bytes_of(x), [&] { return inner_.activation(x, act); });
}

Tensor ProfilingBackend::geglu(const Tensor& x) {
  return record("geglu", 0, bytes_of(x), [&] { return inner_.geglu(x); });
}

Tensor ProfilingBackend::add(const Tensor& a, const Tensor& b) {
  return record("add", 0, bytes_of(a) + bytes_of(b), [&] { return inner_.add(a, b); });
}

Tensor ProfilingBackend::mul(const Tensor& a, const Tensor& b) {
  return record("mul", 0, bytes_of(a) + bytes_of(b), [&] { return inner_.mul(a, b); });
}

Tensor ProfilingBackend::scale(const Tensor& x, float s) {
  return record("scale", 0, bytes_of(x), [&] { return inner_.scale(x, s); });
}

Tensor ProfilingBackend::add_per_channel(const Tensor& x, const Tensor& v) {
  return record("add_per_channel", 0, bytes_of(x) + bytes_of(v), [&] { return inner_.add_per_channel(x, v); });
}

Tensor ProfilingBackend::lincomb(const std::vector<Tensor>& inputs, const Tensor& coeffs) {
  return record("lincomb", 0, bytes_of(inputs) + bytes_of(coeffs), [&] { return inner_.lincomb(inputs, coeffs); });
}

void ProfilingBackend::slot_update(const std::vector<Tensor>& direct, const Tensor& table, const Tensor& coeffs,
                                   int64_t row_elems, DType dtype) {
  // coeffs [R, n_out, n_in]: every row reads n_in and writes n_out blocks of row_elems.
  const double rows = static_cast<double>(coeffs.dim(0)) * (coeffs.dim(1) + coeffs.dim(2));
  const double moved = rows * static_cast<double>(row_elems) * dtype_size(dtype) + bytes_of(table) + bytes_of(coeffs);
  (void)record("slot_update", 0, moved, [&] {
    inner_.slot_update(direct, table, coeffs, row_elems, dtype);
    return Tensor();
  });
}

Tensor ProfilingBackend::upsample_nearest2x(const Tensor& x) {
  return record("upsample", 0, bytes_of(x), [&] { return inner_.upsample_nearest2x(x); });
}

Tensor ProfilingBackend::concat_channels(const Tensor& a, const Tensor& b) {
  return record("concat", 0, bytes_of(a) + bytes_of(b), [&] { return inner_.concat_channels(a, b); });
}

Tensor ProfilingBackend::embedding(const Tensor& ids, const Tensor& table) {
  // Only the gathered rows of the table are read: as many bytes as the output.
  const double rows = static_cast<double>(ids.numel()) * table.dim(1) * dtype_size(table.dtype());
  return record("embedding", 0, bytes_of(ids) + rows, [&] { return inner_.embedding(ids, table); });
}

Tensor ProfilingBackend::concat_rows(const std::vector<Tensor>& parts) {
  return record("concat", 0, bytes_of(parts), [&] { return inner_.concat_rows(parts); });
}

Tensor ProfilingBackend::pad_hw(const Tensor& x, int top, int bottom, int left, int right) {
  return record("pad_crop", 0, bytes_of(x), [&] { return inner_.pad_hw(x, top, bottom, left, right); });
}

Tensor ProfilingBackend::crop_hw(const Tensor& x, int h0, int h, int w0, int w) {
  // Only the window is read: as many bytes as the output.
  const double window = static_cast<double>(x.dim(0)) * h * w * x.dim(3) * dtype_size(x.dtype());
  return record("pad_crop", 0, window, [&] { return inner_.crop_hw(x, h0, h, w0, w); });
}

Tensor ProfilingBackend::interleave_phases2x(const Tensor& y4, const Tensor& bias) {
  return record("upsample", 0, 2 * bytes_of(y4), [&] { return inner_.interleave_phases2x(y4, bias); });
}

Tensor ProfilingBackend::conv2d_subpixel_upsample(const Tensor& x, const Tensor& w_phases, const Tensor& bias) {
  // Counted as the four phases' 2x2 convolutions of the small image ([B, H, W, 4*C] outputs).
  const double flops = conv2d_flops({x.dim(0), x.dim(1), x.dim(2), w_phases.dim(0)}, w_phases.shape());
  return record("conv2d", flops, bytes_of(x) + bytes_of(w_phases) + bytes_of(bias),
                [&] { return inner_.conv2d_subpixel_upsample(x, w_phases, bias); });
}

bool ProfilingBackend::randn_philox(const Tensor& out, const PhiloxRandn& p) {
  bool done = false;
  (void)record("randn", 0, 0, [&] {
    done = inner_.randn_philox(out, p);
    return done ? out : Tensor();
  });
  return done;
}

}  // namespace sd
