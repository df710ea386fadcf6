// The op-parity case table: every backend op at small, odd and SD-like shapes, with seeded
// random inputs and the naive reference from op_reference.cc. Used by the CPU test with
// tight tolerances and by the GPU test with half-precision ones.
#include "backend/op_cases.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <random>
#include <sstream>

#include "backend/op_reference.h"

namespace sd::testing {

Tensor random_tensor(const Shape& shape, uint32_t seed, float lo, float hi) {
  return uniform_random_host(shape, seed, lo, hi);
}

std::string OpResult::summary() const {
  std::ostringstream s;
  s << "shape got " << shape_str(got_shape) << " want " << shape_str(want_shape) << ", max_abs " << max_abs
    << ", rel_l2 " << rel_l2;
  return s.str();
}

OpResult run_case(const OpCase& c, Backend& backend) {
  std::vector<Tensor> device_inputs;
  device_inputs.reserve(c.inputs.size());
  for (const Tensor& x : c.inputs) {
    device_inputs.push_back(x.dtype() == DType::kF32 ? backend.upload(x) : backend.upload(x, x.dtype()));
  }
  const Tensor got = backend.download(c.run(backend, device_inputs, c.inputs));
  const Tensor want = c.reference(c.inputs);
  OpResult r;
  r.got_shape = got.shape();
  r.want_shape = want.shape();
  r.shape_ok = got.shape() == want.shape();
  if (r.shape_ok) {
    r.max_abs = max_abs_diff(got, want);
    r.rel_l2 = relative_l2(got, want);
  } else {
    r.max_abs = r.rel_l2 = INFINITY;
  }
  return r;
}

namespace {

using Inputs = std::vector<Tensor>;

class CaseList {
 public:
  // Adds a case; its seed derives from its position so every case gets distinct inputs.
  OpCase& add(std::string name, std::string op) {
    cases_.emplace_back();
    cases_.back().name = std::move(name);
    cases_.back().op = std::move(op);
    return cases_.back();
  }
  uint32_t seed() { return 1000u + 17u * static_cast<uint32_t>(seed_counter_++); }
  std::vector<OpCase> take() { return std::move(cases_); }

 private:
  std::vector<OpCase> cases_;
  int seed_counter_ = 0;
};

void add_linear(CaseList& L, const std::string& name, Shape x_shape, int64_t n, bool with_bias) {
  const int64_t k = x_shape.back();
  OpCase& c = L.add(name, "linear");
  c.inputs = {random_tensor(x_shape, L.seed()), random_tensor({n, k}, L.seed(), -0.5f, 0.5f)};
  if (with_bias) c.inputs.push_back(random_tensor({n}, L.seed()));
  c.run = [](Backend& be, const Inputs& d, const Inputs&) { return be.linear(d[0], d[1], d.size() > 2 ? d[2] : Tensor()); };
  c.reference = [](const Inputs& h) { return ref::linear(h[0], h[1], h.size() > 2 ? h[2] : Tensor()); };
}

void add_conv(CaseList& L, const std::string& name, Shape x_shape, int64_t cout, int k, int stride, int pad,
              bool with_bias) {
  const int64_t cin = x_shape.back();
  const float wr = 1.0f / std::sqrt(static_cast<float>(cin * k * k));
  OpCase& c = L.add(name, "conv2d");
  c.inputs = {random_tensor(x_shape, L.seed()), random_tensor({cout, k, k, cin}, L.seed(), -wr, wr)};
  if (with_bias) c.inputs.push_back(random_tensor({cout}, L.seed()));
  c.run = [stride, pad](Backend& be, const Inputs& d, const Inputs&) {
    return be.conv2d(d[0], d[1], d.size() > 2 ? d[2] : Tensor(), stride, pad);
  };
  c.reference = [stride, pad](const Inputs& h) {
    return ref::conv2d(h[0], h[1], h.size() > 2 ? h[2] : Tensor(), stride, pad);
  };
  c.rel_tol_half = 1e-2;
}

// conv2d_fused: inputs x, w, bias [Cout], row_add [B, Cout], residual [B, Ho, Wo, Cout]; the
// flags say which of the last three the op receives.
void add_conv_fused(CaseList& L, const std::string& name, Shape x_shape, int64_t cout, int k, int stride, int pad,
                    bool with_bias, bool with_row, bool with_residual) {
  const int64_t cin = x_shape.back();
  const int64_t ho = (x_shape[1] + 2 * pad - k) / stride + 1, wo = (x_shape[2] + 2 * pad - k) / stride + 1;
  const float wr = 1.0f / std::sqrt(static_cast<float>(cin * k * k));
  OpCase& c = L.add(name, "conv2d_fused");
  c.inputs = {random_tensor(x_shape, L.seed()), random_tensor({cout, k, k, cin}, L.seed(), -wr, wr),
              random_tensor({cout}, L.seed()), random_tensor({x_shape[0], cout}, L.seed()),
              random_tensor({x_shape[0], ho, wo, cout}, L.seed())};
  c.run = [=](Backend& be, const Inputs& d, const Inputs&) {
    return be.conv2d_fused(d[0], d[1], with_bias ? d[2] : Tensor(), stride, pad, with_row ? d[3] : Tensor(),
                           with_residual ? d[4] : Tensor());
  };
  c.reference = [=](const Inputs& h) {
    Tensor y = ref::conv2d(h[0], h[1], with_bias ? h[2] : Tensor(), stride, pad);
    if (with_row) y = ref::add_per_channel(y, h[3]);
    return with_residual ? ref::add(y, h[4]) : y;
  };
  c.rel_tol_half = 1e-2;
}

// conv2d_onto: x, w and two terms whose sum (a fresh tensor the op may overwrite) is the accumulator.
void add_conv_onto(CaseList& L, const std::string& name, Shape x_shape, int64_t cout, int k, int stride, int pad) {
  const int64_t cin = x_shape.back();
  const int64_t ho = (x_shape[1] + 2 * pad - k) / stride + 1, wo = (x_shape[2] + 2 * pad - k) / stride + 1;
  const float wr = 1.0f / std::sqrt(static_cast<float>(cin * k * k));
  OpCase& c = L.add(name, "conv2d_onto");
  c.inputs = {random_tensor(x_shape, L.seed()), random_tensor({cout, k, k, cin}, L.seed(), -wr, wr),
              random_tensor({x_shape[0], ho, wo, cout}, L.seed()), random_tensor({x_shape[0], ho, wo, cout}, L.seed())};
  c.run = [=](Backend& be, const Inputs& d, const Inputs&) {
    return be.conv2d_onto(d[0], d[1], stride, pad, be.add(d[2], d[3]));
  };
  c.reference = [=](const Inputs& h) { return ref::add(ref::conv2d(h[0], h[1], Tensor(), stride, pad), ref::add(h[2], h[3])); };
  c.rel_tol_half = 1e-2;
}

// linear_residual: x, w, residual [..., N], then the bias if any.
void add_linear_residual(CaseList& L, const std::string& name, Shape x_shape, int64_t n, bool with_bias) {
  const int64_t k = x_shape.back();
  Shape y_shape = x_shape;
  y_shape.back() = n;
  OpCase& c = L.add(name, "linear_residual");
  c.inputs = {random_tensor(x_shape, L.seed()), random_tensor({n, k}, L.seed(), -0.5f, 0.5f),
              random_tensor(y_shape, L.seed(), -4.f, 4.f)};
  if (with_bias) c.inputs.push_back(random_tensor({n}, L.seed()));
  c.run = [](Backend& be, const Inputs& d, const Inputs&) {
    return be.linear_residual(d[0], d[1], d.size() > 3 ? d[3] : Tensor(), d[2]);
  };
  c.reference = [](const Inputs& h) { return ref::add(ref::linear(h[0], h[1], h.size() > 3 ? h[3] : Tensor()), h[2]); };
}

// linear_geglu: x [..., K], w [2N, K], then the bias [2N] if any -> [..., N].
void add_linear_geglu(CaseList& L, const std::string& name, Shape x_shape, int64_t n, bool with_bias) {
  const int64_t k = x_shape.back();
  OpCase& c = L.add(name, "linear_geglu");
  c.inputs = {random_tensor(x_shape, L.seed()), random_tensor({2 * n, k}, L.seed(), -0.5f, 0.5f)};
  if (with_bias) c.inputs.push_back(random_tensor({2 * n}, L.seed()));
  c.run = [](Backend& be, const Inputs& d, const Inputs&) {
    return be.linear_geglu(d[0], d[1], d.size() > 2 ? d[2] : Tensor());
  };
  c.reference = [](const Inputs& h) { return ref::geglu(ref::linear(h[0], h[1], h.size() > 2 ? h[2] : Tensor())); };
  c.rel_tol_half = 1e-2;
}

// `offset` shifts the inputs away from zero mean to exercise the accuracy of the statistics.
void add_group_norm(CaseList& L, const std::string& name, Shape x_shape, int groups, bool silu, float offset) {
  const int64_t ch = x_shape.back();
  OpCase& c = L.add(name, "group_norm");
  c.inputs = {random_tensor(x_shape, L.seed(), offset - 1.f, offset + 1.f), random_tensor({ch}, L.seed(), 0.5f, 1.5f),
              random_tensor({ch}, L.seed())};
  c.run = [groups, silu](Backend& be, const Inputs& d, const Inputs&) {
    return be.group_norm(d[0], d[1], d[2], groups, 1e-5f, silu);
  };
  c.reference = [groups, silu](const Inputs& h) { return ref::group_norm(h[0], h[1], h[2], groups, 1e-5f, silu); };
  c.rel_tol_half = 1e-2;
}

// group_norm(x + add_src[:, col : col + C]) with add_src [B, width] (the stacked ResNet time
// projections): aligned windows take CUDA's fused path, odd ones its copy fallback.
void add_group_norm_add(CaseList& L, const std::string& name, Shape x_shape, int64_t width, int64_t col, int groups,
                        bool silu) {
  const int64_t b = x_shape[0], ch = x_shape.back();
  OpCase& c = L.add(name, "group_norm_add");
  c.inputs = {random_tensor(x_shape, L.seed()), random_tensor({b, width}, L.seed(), -2.f, 2.f),
              random_tensor({ch}, L.seed(), 0.5f, 1.5f), random_tensor({ch}, L.seed())};
  c.run = [col, groups, silu](Backend& be, const Inputs& d, const Inputs&) {
    return be.group_norm_add(d[0], d[1], col, d[2], d[3], groups, 1e-5f, silu);
  };
  c.reference = [col, groups, silu, b, ch, width](const Inputs& h) {
    Tensor v = Tensor::empty_host({b, ch}, DType::kF32);  // the window [B, C]
    for (int64_t i = 0; i < b; ++i) {
      for (int64_t j = 0; j < ch; ++j) v.data<float>()[i * ch + j] = h[1].data<float>()[i * width + col + j];
    }
    return ref::group_norm(ref::add_per_channel(h[0], v), h[2], h[3], groups, 1e-5f, silu);
  };
  c.rel_tol_half = 1e-2;
}

void add_layer_norm(CaseList& L, const std::string& name, Shape x_shape, float offset) {
  const int64_t ch = x_shape.back();
  OpCase& c = L.add(name, "layer_norm");
  c.inputs = {random_tensor(x_shape, L.seed(), offset - 1.f, offset + 1.f), random_tensor({ch}, L.seed(), 0.5f, 1.5f),
              random_tensor({ch}, L.seed())};
  c.run = [](Backend& be, const Inputs& d, const Inputs&) { return be.layer_norm(d[0], d[1], d[2], 1e-5f); };
  c.reference = [](const Inputs& h) { return ref::layer_norm(h[0], h[1], h[2], 1e-5f); };
  c.rel_tol_half = 1e-2;
}

void add_attention(CaseList& L, const std::string& name, int64_t batch, int64_t lq, int64_t lk, int heads,
                   int64_t head_dim, bool causal) {
  OpCase& c = L.add(name, "attention");
  const int64_t hd = heads * head_dim;
  // Spread of 2 gives peaked but not one-hot softmax rows at head_dim 64.
  c.inputs = {random_tensor({batch, lq, hd}, L.seed(), -2.f, 2.f), random_tensor({batch, lk, hd}, L.seed(), -2.f, 2.f),
              random_tensor({batch, lk, hd}, L.seed())};
  c.run = [heads, causal](Backend& be, const Inputs& d, const Inputs&) {
    return be.attention(d[0], d[1], d[2], heads, causal);
  };
  c.reference = [heads, causal](const Inputs& h) { return ref::attention(h[0], h[1], h[2], heads, causal); };
  c.rel_tol_half = 1e-2;
}

// x [B, L, W] (host f32) -> x[..., col : col + width] contiguous.
Tensor host_columns(const Tensor& x, int64_t col, int64_t width) {
  const int64_t rows = x.dim(0) * x.dim(1), W = x.dim(2);
  Tensor out = Tensor::empty_host({x.dim(0), x.dim(1), width}, DType::kF32);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < width; ++c) out.f32()[r * width + c] = x.f32()[r * W + col + c];
  }
  return out;
}

// attention_cols on q_src [B, Lq, q_width] and kv_src [B, Lk, kv_width] (one shared tensor
// when `shared`, as a self-attention QKV projection), against the naive attention of the
// windows. `portable` runs Backend's default (gather + attention()) instead of the override.
void add_attention_cols(CaseList& L, const std::string& name, int64_t batch, int64_t lq, int64_t lk, int heads,
                        int64_t head_dim, bool causal, int64_t q_width, int64_t q_col, int64_t kv_width, int64_t k_col,
                        int64_t v_col, bool shared, bool portable = false) {
  OpCase& c = L.add(name, "attention_cols");
  const int64_t inner = heads * head_dim;
  c.inputs = {random_tensor({batch, lq, q_width}, L.seed(), -2.f, 2.f)};
  if (!shared) c.inputs.push_back(random_tensor({batch, lk, kv_width}, L.seed(), -2.f, 2.f));
  c.run = [=](Backend& be, const Inputs& d, const Inputs&) {
    const Tensor& kv = shared ? d[0] : d[1];
    return portable ? be.Backend::attention_cols(d[0], q_col, kv, k_col, v_col, inner, heads, causal)
                    : be.attention_cols(d[0], q_col, kv, k_col, v_col, inner, heads, causal);
  };
  c.reference = [=](const Inputs& h) {
    const Tensor& kv = shared ? h[0] : h[1];
    return ref::attention(host_columns(h[0], q_col, inner), host_columns(kv, k_col, inner),
                          host_columns(kv, v_col, inner), heads, causal);
  };
  c.rel_tol_half = 1e-2;
}

void add_activation(CaseList& L, const std::string& name, Activation act) {
  OpCase& c = L.add(name, "activation");
  c.inputs = {random_tensor({3, 5, 67}, L.seed(), -6.f, 6.f)};
  c.run = [act](Backend& be, const Inputs& d, const Inputs&) { return be.activation(d[0], act); };
  c.reference = [act](const Inputs& h) { return ref::activation(h[0], act); };
}

void add_layout_and_elementwise(CaseList& L) {
  {
    OpCase& c = L.add("geglu_2x9x2x40", "geglu");
    c.inputs = {random_tensor({2, 9, 80}, L.seed(), -4.f, 4.f)};
    c.run = [](Backend& be, const Inputs& d, const Inputs&) { return be.geglu(d[0]); };
    c.reference = [](const Inputs& h) { return ref::geglu(h[0]); };
  }
  {  // half = 36: not a multiple of a 16-byte vector (the CUDA scalar path)
    OpCase& c = L.add("geglu_3x5x2x36", "geglu");
    c.inputs = {random_tensor({3, 5, 72}, L.seed(), -4.f, 4.f)};
    c.run = [](Backend& be, const Inputs& d, const Inputs&) { return be.geglu(d[0]); };
    c.reference = [](const Inputs& h) { return ref::geglu(h[0]); };
  }
  {
    OpCase& c = L.add("add_2x5x7x3", "add");
    c.inputs = {random_tensor({2, 5, 7, 3}, L.seed()), random_tensor({2, 5, 7, 3}, L.seed())};
    c.run = [](Backend& be, const Inputs& d, const Inputs&) { return be.add(d[0], d[1]); };
    c.reference = [](const Inputs& h) { return ref::add(h[0], h[1]); };
  }
  {
    OpCase& c = L.add("mul_3x1001", "mul");
    c.inputs = {random_tensor({3, 1001}, L.seed()), random_tensor({3, 1001}, L.seed())};
    c.run = [](Backend& be, const Inputs& d, const Inputs&) { return be.mul(d[0], d[1]); };
    c.reference = [](const Inputs& h) { return ref::mul(h[0], h[1]); };
  }
  {
    OpCase& c = L.add("scale_4x333", "scale");
    c.inputs = {random_tensor({4, 333}, L.seed())};
    c.run = [](Backend& be, const Inputs& d, const Inputs&) { return be.scale(d[0], 0.18215f); };
    c.reference = [](const Inputs& h) { return ref::scale(h[0], 0.18215f); };
  }
  {
    OpCase& c = L.add("add_per_channel_nhwc_2x4x5x6", "add_per_channel");
    c.inputs = {random_tensor({2, 4, 5, 6}, L.seed()), random_tensor({2, 6}, L.seed())};
    c.run = [](Backend& be, const Inputs& d, const Inputs&) { return be.add_per_channel(d[0], d[1]); };
    c.reference = [](const Inputs& h) { return ref::add_per_channel(h[0], h[1]); };
  }
  {
    OpCase& c = L.add("add_per_channel_seq_3x7x320", "add_per_channel");
    c.inputs = {random_tensor({3, 7, 320}, L.seed()), random_tensor({3, 320}, L.seed())};
    c.run = [](Backend& be, const Inputs& d, const Inputs&) { return be.add_per_channel(d[0], d[1]); };
    c.reference = [](const Inputs& h) { return ref::add_per_channel(h[0], h[1]); };
  }
  for (int n : {1, 2, 4}) {
    // coeffs [B, n] differ per sample; the last input is the host coefficient tensor.
    OpCase& c = L.add("lincomb_n" + std::to_string(n) + "_3x4x5x4", "lincomb");
    for (int i = 0; i < n; ++i) c.inputs.push_back(random_tensor({3, 4, 5, 4}, L.seed()));
    c.inputs.push_back(random_tensor({3, n}, L.seed(), -2.f, 2.f));
    c.run = [n](Backend& be, const Inputs& d, const Inputs& h) {
      return be.lincomb(Inputs(d.begin(), d.begin() + n), h[static_cast<size_t>(n)]);
    };
    c.reference = [n](const Inputs& h) { return ref::lincomb(Inputs(h.begin(), h.begin() + n), h[static_cast<size_t>(n)]); };
  }
  {
    OpCase& c = L.add("upsample_nearest2x_2x3x5x7", "upsample_nearest2x");
    c.inputs = {random_tensor({2, 3, 5, 7}, L.seed())};
    c.run = [](Backend& be, const Inputs& d, const Inputs&) { return be.upsample_nearest2x(d[0]); };
    c.reference = [](const Inputs& h) { return ref::upsample_nearest2x(h[0]); };
  }
  for (bool with_bias : {true, false}) {
    // C = 8: 16-byte vectors in f16; C = 3: element by element.
    const int64_t ch = with_bias ? 8 : 3;
    OpCase& c = L.add(std::string("interleave_phases2x_2x4x6x4c") + (with_bias ? "8_bias" : "3"), "interleave_phases2x");
    c.inputs = {random_tensor({2, 4, 6, 4 * ch}, L.seed())};  // [B, H+1, W+1, 4C]
    if (with_bias) c.inputs.push_back(random_tensor({ch}, L.seed()));
    c.run = [](Backend& be, const Inputs& d, const Inputs&) {
      return be.interleave_phases2x(d[0], d.size() > 1 ? d[1] : Tensor());
    };
    c.reference = [](const Inputs& h) { return ref::interleave_phases2x(h[0], h.size() > 1 ? h[1] : Tensor()); };
  }
  for (auto [h, w, cin, cout] : {std::array<int64_t, 4>{5, 7, 16, 8}, std::array<int64_t, 4>{8, 8, 64, 64}}) {
    // The whole sub-pixel upsample: x [2, H, W, Cin], w_phases [4*Cout, 2, 2, Cin], bias [Cout].
    const float wr = 1.0f / std::sqrt(static_cast<float>(4 * cin));
    OpCase& c = L.add("conv2d_subpixel_upsample_2x" + std::to_string(h) + "x" + std::to_string(w) + "x" +
                          std::to_string(cin) + "_to_" + std::to_string(cout),
                      "conv2d_subpixel_upsample");
    c.inputs = {random_tensor({2, h, w, cin}, L.seed()), random_tensor({4 * cout, 2, 2, cin}, L.seed(), -wr, wr),
                random_tensor({cout}, L.seed())};
    c.run = [](Backend& be, const Inputs& d, const Inputs&) { return be.conv2d_subpixel_upsample(d[0], d[1], d[2]); };
    c.reference = [](const Inputs& h) {
      return ref::interleave_phases2x(ref::conv2d(h[0], h[1], Tensor(), 1, 1), h[2]);
    };
  }
  {
    OpCase& c = L.add("pad_hw_2x3x5x4_t1b2l0r3", "pad_hw");
    c.inputs = {random_tensor({2, 3, 5, 4}, L.seed())};
    c.run = [](Backend& be, const Inputs& d, const Inputs&) { return be.pad_hw(d[0], 1, 2, 0, 3); };
    c.reference = [](const Inputs& h) { return ref::pad_hw(h[0], 1, 2, 0, 3); };
  }
  {
    OpCase& c = L.add("crop_hw_2x7x6x3_r1h4_c2w3", "crop_hw");
    c.inputs = {random_tensor({2, 7, 6, 3}, L.seed())};
    c.run = [](Backend& be, const Inputs& d, const Inputs&) { return be.crop_hw(d[0], 1, 4, 2, 3); };
    c.reference = [](const Inputs& h) { return ref::crop_hw(h[0], 1, 4, 2, 3); };
  }
  {
    OpCase& c = L.add("concat_channels_2x3x4x5_7", "concat_channels");
    c.inputs = {random_tensor({2, 3, 4, 5}, L.seed()), random_tensor({2, 3, 4, 7}, L.seed())};
    c.run = [](Backend& be, const Inputs& d, const Inputs&) { return be.concat_channels(d[0], d[1]); };
    c.reference = [](const Inputs& h) { return ref::concat_channels(h[0], h[1]); };
  }
  {
    OpCase& c = L.add("embedding_2x7_from_50x16", "embedding");
    Tensor ids = Tensor::empty_host({2, 7}, DType::kI32);
    std::mt19937 gen(L.seed());
    for (int64_t i = 0; i < ids.numel(); ++i) ids.i32()[i] = static_cast<int32_t>(gen() % 50);
    ids.i32()[0] = 0;
    ids.i32()[1] = 49;
    c.inputs = {ids, random_tensor({50, 16}, L.seed())};
    c.run = [](Backend& be, const Inputs& d, const Inputs&) { return be.embedding(d[0], d[1]); };
    c.reference = [](const Inputs& h) { return ref::embedding(h[0], h[1]); };
  }
  {
    OpCase& c = L.add("concat_rows_2_1_3_of_3x4", "concat_rows");
    c.inputs = {random_tensor({2, 3, 4}, L.seed()), random_tensor({1, 3, 4}, L.seed()), random_tensor({3, 3, 4}, L.seed())};
    c.run = [](Backend& be, const Inputs& d, const Inputs&) { return be.concat_rows(d); };
    c.reference = [](const Inputs& h) { return ref::concat_rows(h); };
  }
}


// Backend::slot_update: 3 rows of 80 elements, 2 direct inputs and 3 table inputs (one absent
// in row 2), 3 outputs: a fresh tensor, one in place over table input 0 (the row reads its old
// values), one left unwritten in row 1. Result: [outputs 0 | input 0 after | output 2 tensor].
void add_slot_update(CaseList& L) {
  constexpr int64_t R = 3, kIn = 5, kOut = 3;
  const Shape row_shape = {R, 4, 5, 4};
  OpCase& c = L.add("slot_update_r3_in2d3t_out3_inplace", "slot_update");
  for (int i = 0; i < 6; ++i) c.inputs.push_back(random_tensor(row_shape, L.seed()));  // d0 d1 a b c o2
  c.inputs.push_back(random_tensor({R, kOut, kIn}, L.seed(), -2.f, 2.f));               // coeffs
  const int64_t per = 4 * 5 * 4;
  c.run = [=](Backend& be, const Inputs& d, const Inputs& h) {
    const Tensor out0 = be.upload(Tensor::zeros_host(row_shape, DType::kF32), d[0].dtype());
    auto at = [&](const Tensor& t, int64_t r) {
      return static_cast<int64_t>(reinterpret_cast<uintptr_t>(t.raw())) + r * per * static_cast<int64_t>(dtype_size(t.dtype()));
    };
    Tensor table = Tensor::zeros_host({R, kIn - 2 + kOut}, DType::kI64);  // [a, b, c | out0, a, o2]
    for (int64_t r = 0; r < R; ++r) {
      int64_t* row = table.data<int64_t>() + r * (kIn - 2 + kOut);
      row[0] = at(d[2], r);
      row[1] = r == 2 ? 0 : at(d[3], r);
      row[2] = at(d[4], r);
      row[3] = at(out0, r);
      row[4] = at(d[2], r);
      row[5] = r == 1 ? 0 : at(d[5], r);
    }
    be.slot_update({d[0], d[1]}, be.upload(table, DType::kI64), be.upload(h[6], DType::kF32), per, d[0].dtype());
    return be.concat_rows({out0, d[2], d[5]});
  };
  c.reference = [=](const Inputs& h) {
    Tensor out = Tensor::zeros_host({3 * R, 4, 5, 4}, DType::kF32);
    float* o = out.f32();
    std::copy(h[2].f32(), h[2].f32() + R * per, o + R * per);      // input a (overwritten below)
    std::copy(h[5].f32(), h[5].f32() + R * per, o + 2 * R * per);  // o2 (row 1 stays)
    const float* cf = h[6].f32();
    for (int64_t r = 0; r < R; ++r) {
      for (int64_t e = 0; e < per; ++e) {
        double in[kIn];
        for (int i = 0; i < kIn; ++i) in[i] = h[static_cast<size_t>(i)].f32()[r * per + e];
        if (r == 2) in[3] = 0;  // b absent
        for (int j = 0; j < kOut; ++j) {
          if (j == 2 && r == 1) continue;
          double acc = 0;
          for (int i = 0; i < kIn; ++i) acc += static_cast<double>(cf[(r * kOut + j) * kIn + i]) * in[i];
          o[(j * R + r) * per + e] = static_cast<float>(acc);
        }
      }
    }
    return out;
  };
}
}  // namespace

std::vector<OpCase> all_op_cases() {
  CaseList L;
  add_linear(L, "linear_2x7x33_to_17_bias", {2, 7, 33}, 17, true);
  add_linear(L, "linear_3x64_to_48_nobias", {3, 64}, 48, false);
  add_linear(L, "linear_2x77x320_to_320_bias", {2, 77, 320}, 320, true);
  add_linear(L, "linear_1x1x1_to_5_bias", {1, 1}, 5, true);

  add_conv(L, "conv2d_3x3_s1_p1", {2, 9, 11, 5}, 7, 3, 1, 1, true);
  add_conv(L, "conv2d_3x3_s2_p1_even", {1, 10, 12, 6}, 4, 3, 2, 1, true);
  add_conv(L, "conv2d_3x3_s2_p1_odd", {2, 9, 13, 3}, 5, 3, 2, 1, true);
  add_conv(L, "conv2d_3x3_s1_p0", {1, 8, 7, 4}, 6, 3, 1, 0, true);
  add_conv(L, "conv2d_1x1", {2, 5, 7, 12}, 9, 1, 1, 0, true);
  add_conv(L, "conv2d_1x1_nobias", {1, 6, 6, 8}, 3, 1, 1, 0, false);
  add_conv(L, "conv2d_3x3_nobias", {1, 5, 5, 3}, 2, 3, 1, 1, false);
  // The sub-pixel upsample's 2x2 kernel with padding 1 ([B, H+1, W+1, 4C] out).
  add_conv(L, "conv2d_2x2_s1_p1_subpixel", {2, 6, 5, 16}, 4 * 8, 2, 1, 1, false);
  add_conv(L, "conv2d_3x3_s1_p1_64x64x64", {1, 64, 64, 64}, 64, 3, 1, 1, true);
  // Column matrices over 16 MiB: the CPU backend's chunked im2col path.
  add_conv(L, "conv2d_3x3_s1_p1_96x96x64_chunked", {1, 96, 96, 64}, 16, 3, 1, 1, true);
  add_conv(L, "conv2d_3x3_s1_p1_b2_100x100x48_chunked", {2, 100, 100, 48}, 8, 3, 1, 1, true);
  add_conv(L, "conv2d_3x3_s1_p1_vae_in", {1, 16, 16, 4}, 32, 3, 1, 1, true);

  add_conv_fused(L, "conv2d_fused_3x3_bias_row_residual", {2, 6, 7, 16}, 24, 3, 1, 1, true, true, true);
  add_conv_fused(L, "conv2d_fused_3x3_bias_row", {2, 9, 9, 8}, 16, 3, 1, 1, true, true, false);
  add_conv_fused(L, "conv2d_fused_1x1_residual_nobias", {1, 5, 6, 12}, 8, 1, 1, 0, false, false, true);
  add_conv_fused(L, "conv2d_fused_3x3_s2_bias_residual_odd", {2, 9, 13, 3}, 5, 3, 2, 1, true, false, true);
  add_conv_fused(L, "conv2d_fused_resnet_2x16x16x64", {2, 16, 16, 64}, 64, 3, 1, 1, true, true, true);
  add_conv_fused(L, "conv2d_fused_resnet_2x16x16x64_residual", {2, 16, 16, 64}, 64, 3, 1, 1, true, false, true);
  add_conv_onto(L, "conv2d_onto_3x3_2x16x16x64", {2, 16, 16, 64}, 64, 3, 1, 1);
  add_conv_onto(L, "conv2d_onto_3x3_odd_1x9x13x24_to_40", {1, 9, 13, 24}, 40, 3, 1, 1);
  add_conv_onto(L, "conv2d_onto_3x3_s2_2x9x13x16_to_8", {2, 9, 13, 16}, 8, 3, 2, 1);
  add_linear_residual(L, "linear_residual_2x9x40_to_24_bias", {2, 9, 40}, 24, true);
  add_linear_residual(L, "linear_residual_3x64_to_48_nobias", {3, 64}, 48, false);
  add_linear_residual(L, "linear_residual_2x77x320_to_320_bias", {2, 77, 320}, 320, true);
  add_linear_residual(L, "linear_residual_1x1_to_5_bias", {1, 1}, 5, true);
  add_linear_geglu(L, "linear_geglu_2x9x40_to_24_bias", {2, 9, 40}, 24, true);
  add_linear_geglu(L, "linear_geglu_3x64_to_36_nobias", {3, 64}, 36, false);
  add_linear_geglu(L, "linear_geglu_2x77x320_to_1280_bias", {2, 77, 320}, 1280, true);
  add_linear_geglu(L, "linear_geglu_130x64_to_136_bias", {130, 64}, 136, true);

  add_group_norm(L, "group_norm_2x6x5x32_g8", {2, 6, 5, 32}, 8, false, 0.f);
  add_group_norm(L, "group_norm_2x6x5x32_g8_silu", {2, 6, 5, 32}, 8, true, 0.f);
  add_group_norm(L, "group_norm_seq_2x17x24_g4", {2, 17, 24}, 4, false, 0.f);
  add_group_norm(L, "group_norm_offset100_1x8x8x64_g32_silu", {1, 8, 8, 64}, 32, true, 100.f);
  add_group_norm(L, "group_norm_1x16x16x320_g32", {1, 16, 16, 320}, 32, false, 0.5f);
  // Sizes for the CUDA one-launch (cluster) path: chunks shorter than the position lanes,
  // 8-channel chunks spanning two groups (cpg 4), three batch rows, a large mean.
  add_group_norm(L, "group_norm_2x20x13x96_g32_silu", {2, 20, 13, 96}, 32, true, 0.f);
  add_group_norm(L, "group_norm_offset50_3x33x17x64_g16", {3, 33, 17, 64}, 16, false, 50.f);
  add_group_norm_add(L, "group_norm_add_2x9x7x64_w200_c72_g32_silu", {2, 9, 7, 64}, 200, 72, 32, true);
  add_group_norm_add(L, "group_norm_add_2x5x6x32_w32_c0_g8", {2, 5, 6, 32}, 32, 0, 8, false);
  add_group_norm_add(L, "group_norm_add_odd_col3_1x4x4x24_w40_g4_silu", {1, 4, 4, 24}, 40, 3, 4, true);

  add_layer_norm(L, "layer_norm_2x7x40", {2, 7, 40}, 0.f);
  add_layer_norm(L, "layer_norm_3x768_offset10", {3, 768}, 10.f);
  {
    OpCase& c = L.add("softmax_3x5x77", "softmax");
    c.inputs = {random_tensor({3, 5, 77}, L.seed(), -5.f, 5.f)};
    c.run = [](Backend& be, const Inputs& d, const Inputs&) { return be.softmax(d[0]); };
    c.reference = [](const Inputs& h) { return ref::softmax(h[0]); };
  }
  {
    OpCase& c = L.add("softmax_large_values_2x33", "softmax");
    c.inputs = {random_tensor({2, 33}, L.seed(), 80.f, 120.f)};
    c.run = [](Backend& be, const Inputs& d, const Inputs&) { return be.softmax(d[0]); };
    c.reference = [](const Inputs& h) { return ref::softmax(h[0]); };
  }

  add_attention(L, "attention_self_b2_l33_h2_d8", 2, 33, 33, 2, 8, false);
  add_attention(L, "attention_self_b1_l100_h1_d64", 1, 100, 100, 1, 64, false);
  add_attention(L, "attention_self_b2_l64_h8_d40", 2, 64, 64, 8, 40, false);
  add_attention(L, "attention_cross_b2_l40_lk77_h3_d40", 2, 40, 77, 3, 40, false);
  add_attention(L, "attention_cross_b1_l256_lk77_h8_d64", 1, 256, 77, 8, 64, false);
  add_attention(L, "attention_causal_b2_l77_h2_d64", 2, 77, 77, 2, 64, true);
  add_attention(L, "attention_causal_b1_l17_h3_d8", 1, 17, 17, 3, 8, true);
  add_attention(L, "attention_causal_b1_l1100_h1_d8_blocked", 1, 1100, 1100, 1, 8, true);  // several query blocks
  add_attention(L, "attention_self_b2_l64_h8_d160", 2, 64, 64, 8, 160, false);  // SD1.5 deepest level
  add_attention(L, "attention_self_b1_l256_h1_d512_vae", 1, 256, 256, 1, 512, false);  // VAE mid-block
  add_attention(L, "attention_self_b1_l50_h2_d12_odd", 1, 50, 50, 2, 12, false);    // D not a multiple of 8
  add_attention(L, "attention_cross_b2_l9_lk1_h2_d16", 2, 9, 1, 2, 16, false);       // a single key
  add_attention(L, "attention_self_b1_l4096_h2_d8", 1, 4096, 4096, 2, 8, false);  // SD 512x512 sequence length

  // Packed projections: self-attention reads q, k, v from one [B, L, 3*inner] tensor,
  // cross-attention q from its own tensor and k, v from one [B, Lk, 2*inner] tensor.
  add_attention_cols(L, "attention_cols_self_b2_l33_h2_d8", 2, 33, 33, 2, 8, false, 48, 0, 48, 16, 32, true);
  add_attention_cols(L, "attention_cols_self_causal_b1_l17_h3_d8", 1, 17, 17, 3, 8, true, 72, 0, 72, 24, 48, true);
  add_attention_cols(L, "attention_cols_self_b2_l64_h8_d40", 2, 64, 64, 8, 40, false, 960, 0, 960, 320, 640, true);
  add_attention_cols(L, "attention_cols_causal_b2_l77_h2_d64", 2, 77, 77, 2, 64, true, 384, 0, 384, 128, 256, true);
  add_attention_cols(L, "attention_cols_cross_b2_l40_lk77_h3_d40", 2, 40, 77, 3, 40, false, 120, 0, 240, 0, 120, false);
  add_attention_cols(L, "attention_cols_cross_qoff_vfirst_b1_l70_lk9", 1, 70, 9, 2, 16, false, 40, 8, 72, 40, 0, false);
  add_attention_cols(L, "attention_cols_self_b2_l64_h2_d160", 2, 64, 64, 2, 160, false, 960, 0, 960, 320, 640, true);
  // Unaligned: head dim 10 (inner 20) at odd offsets of odd-width rows (no 16-byte loads).
  add_attention_cols(L, "attention_cols_unaligned_b1_l50_h2_d10", 1, 50, 50, 2, 10, false, 61, 3, 61, 23, 41, true);
  add_attention_cols(L, "attention_cols_unaligned_causal_b2_l20_lk20", 2, 20, 20, 1, 12, true, 37, 1, 29, 5, 17, false);
  // Head dims past the mma.sync kernels (WMMA, unfused): CUDA copies the windows out.
  add_attention_cols(L, "attention_cols_self_b1_l40_h1_d200", 1, 40, 40, 1, 200, false, 600, 0, 600, 200, 400, true);
  add_attention_cols(L, "attention_cols_self_b1_l256_h1_d512_vae", 1, 256, 256, 1, 512, false, 1536, 0, 1536, 512,
                     1024, true);
  // Backend's portable default (embedding() gather of the windows, then attention()).
  add_attention_cols(L, "attention_cols_default_self_b2_l33_h2_d8", 2, 33, 33, 2, 8, false, 48, 0, 48, 16, 32, true,
                     true);
  add_attention_cols(L, "attention_cols_default_unaligned_causal_b2_l20", 2, 20, 20, 1, 12, true, 37, 1, 29, 5, 17,
                     false, true);

  add_activation(L, "activation_silu", Activation::kSiLU);
  add_activation(L, "activation_gelu_erf", Activation::kGELU);
  add_activation(L, "activation_gelu_tanh", Activation::kGELUTanh);
  add_activation(L, "activation_quick_gelu", Activation::kQuickGELU);
  add_layout_and_elementwise(L);
  add_slot_update(L);
  return L.take();
}

}  // namespace sd::testing
