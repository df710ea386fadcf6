// Loading and forward passes of the shared layers in layers.h. Diffusers parameter names
// are built from a prefix ("down_blocks.0.attentions.1") plus the layer's own names.
// Tensor shapes are checked by ModelLoader against the configuration.
#include "models/layers.h"

#include <algorithm>

namespace sd {

void Linear::load(ModelLoader& l, const std::string& prefix, int64_t in, int64_t out, bool bias) {
  w = l.linear_weight(prefix + ".weight", out, in);
  if (bias) b = l.vector(prefix + ".bias", out);
}

void Linear::load_stacked(ModelLoader& l, const std::vector<std::string>& prefixes, int64_t in, int64_t out_each,
                          bool bias) {
  std::vector<Tensor> ws, bs;
  for (const std::string& p : prefixes) {
    Linear part;
    part.load(l, p, in, out_each, bias);
    ws.push_back(part.w);
    if (bias) bs.push_back(part.b);
  }
  w = b = Tensor();
  const auto all_defined = [](const std::vector<Tensor>& ts) {
    return std::all_of(ts.begin(), ts.end(), [](const Tensor& t) { return t.defined(); });
  };
  // Recording mode or a failed load (the loader keeps the Status): nothing to stack.
  if (!all_defined(ws) || !all_defined(bs)) return;
  Backend& be = l.backend();
  w = be.concat_rows(ws);  // [n*out_each, in]
  if (bias) b = be.concat_rows(bs);  // [n*out_each]
}

void Conv2d::load(ModelLoader& l, const std::string& prefix, int64_t in, int64_t out, int k, int s, int p) {
  w = l.conv_weight(prefix + ".weight", out, in, k);
  b = l.vector(prefix + ".bias", out);
  stride = s;
  padding = p < 0 ? k / 2 : p;
}

void GroupNorm::load(ModelLoader& l, const std::string& prefix, int64_t channels, int g, float e) {
  gamma = l.vector(prefix + ".weight", channels);
  beta = l.vector(prefix + ".bias", channels);
  groups = g;
  eps = e;
}

void LayerNorm::load(ModelLoader& l, const std::string& prefix, int64_t channels, float e) {
  gamma = l.vector(prefix + ".weight", channels);
  beta = l.vector(prefix + ".bias", channels);
  eps = e;
}

void Attention::load(ModelLoader& l, const std::string& prefix, AttentionKind k, int64_t query_dim,
                     int64_t context_dim, int64_t inner_dim, int h, bool qkv_bias) {
  kind = k;
  inner = inner_dim;
  heads = h;
  if (kind == AttentionKind::kSelf) {
    SD_ASSERT(context_dim == query_dim, prefix + ": self-attention with context_dim != query_dim");
    qkv.load_stacked(l, {prefix + ".to_q", prefix + ".to_k", prefix + ".to_v"}, query_dim, inner_dim, qkv_bias);
  } else {
    q.load(l, prefix + ".to_q", query_dim, inner_dim, qkv_bias);
    kv.load_stacked(l, {prefix + ".to_k", prefix + ".to_v"}, context_dim, inner_dim, qkv_bias);
  }
  out.load(l, prefix + ".to_out.0", inner_dim, query_dim, true);
}

Tensor Attention::operator()(Backend& be, const Tensor& x, const Tensor& context, const Tensor& residual) const {
  Tensor a;  // [B, Lq, inner]
  if (kind == AttentionKind::kSelf) {
    SD_ASSERT(!context.defined(), "self-attention called with a context");
    const Tensor p = qkv(be, x);  // [B, L, 3*inner]: q | k | v
    a = be.attention_cols(p, 0, p, inner, 2 * inner, inner, heads, /*causal=*/false);
  } else {
    SD_ASSERT(context.defined(), "cross-attention called without a context");
    const Tensor qx = q(be, x);  // [B, Lq, inner]
    if (kv_col >= 0) {           // context is the stacked K/V projections [B, Lk, W]
      SD_ASSERT(context.ndim() == 3 && context.dim(2) >= kv_col + 2 * inner,
                "cross-attention: stacked K/V " + context.describe() + " too narrow for column " + std::to_string(kv_col));
      a = be.attention_cols(qx, 0, context, kv_col, kv_col + inner, inner, heads, /*causal=*/false);
    } else {
      const Tensor kvx = kv(be, context);  // [B, Lk, 2*inner]: k | v
      a = be.attention_cols(qx, 0, kvx, 0, inner, inner, heads, /*causal=*/false);
    }
  }
  return residual.defined() ? out.plus(be, a, residual) : out(be, a);
}

void TransformerBlock::load(ModelLoader& l, const std::string& prefix, int64_t dim, int64_t context_dim, int heads) {
  norm1.load(l, prefix + ".norm1", dim, 1e-5f);
  norm2.load(l, prefix + ".norm2", dim, 1e-5f);
  norm3.load(l, prefix + ".norm3", dim, 1e-5f);
  attn1.load(l, prefix + ".attn1", AttentionKind::kSelf, dim, dim, dim, heads, false);
  attn2.load(l, prefix + ".attn2", AttentionKind::kCross, dim, context_dim, dim, heads, false);
  ff_in.load(l, prefix + ".ff.net.0.proj", dim, dim * 8);
  ff_out.load(l, prefix + ".ff.net.2", dim * 4, dim);
}

Tensor TransformerBlock::operator()(Backend& be, const Tensor& x, const Tensor& context) const {
  return after_self_attention(be, self_attention(be, x), context);
}

Tensor TransformerBlock::self_attention(Backend& be, const Tensor& x) const {
  return attn1(be, norm1(be, x), {}, /*residual=*/x);
}

Tensor TransformerBlock::after_self_attention(Backend& be, const Tensor& h0, const Tensor& context) const {
  const Tensor h = attn2(be, norm2(be, h0), context, /*residual=*/h0);
  return ff_out.plus(be, ff_in.geglu(be, norm3(be, h)), h);  // [B, L, 4C] inside
}

void SpatialTransformer::load(ModelLoader& l, const std::string& prefix, int64_t channels, int64_t context_dim,
                              int heads, int layers, int groups) {
  norm.load(l, prefix + ".norm", channels, groups, 1e-6f);
  proj_in.load(l, prefix + ".proj_in", channels, channels);
  proj_out.load(l, prefix + ".proj_out", channels, channels);
  blocks.resize(static_cast<size_t>(layers));
  for (int i = 0; i < layers; ++i) {
    blocks[i].load(l, prefix + ".transformer_blocks." + std::to_string(i), channels, context_dim, heads);
  }
}

Tensor SpatialTransformer::operator()(Backend& be, const Tensor& x, const Tensor& context) const {
  const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), C = x.dim(3);
  Tensor h = proj_in(be, norm(be, x, false).reshape({B, H * W, C}));  // [B, H*W, C]
  for (const auto& block : blocks) h = block(be, h, context);
  return proj_out.plus(be, h, x.reshape({B, H * W, C})).reshape({B, H, W, C});
}

Tensor SpatialTransformer::on_first_half(Backend& be, const Tensor& x, const Tensor& context) const {
  const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), C = x.dim(3);
  SD_ASSERT(context.dim(0) == 2 * B, "on_first_half: the context must have twice the rows of x");
  Tensor h = proj_in(be, norm(be, x, false).reshape({B, H * W, C}));  // [B, H*W, C]
  if (!blocks.empty()) h = blocks.front().self_attention(be, h);
  h = be.concat_rows({h, h});                                              // [2B, H*W, C]: the rows part here
  const Tensor residual = be.concat_rows({x, x}).reshape({2 * B, H * W, C});  // [2B, H*W, C]
  for (size_t i = 0; i < blocks.size(); ++i) {
    h = i == 0 ? blocks[0].after_self_attention(be, h, context) : blocks[i](be, h, context);
  }
  return proj_out.plus(be, h, residual).reshape({2 * B, H, W, C});
}

void ResnetBlock::load(ModelLoader& l, const std::string& prefix, int64_t in, int64_t out, int64_t temb_dim,
                       int groups, float eps) {
  norm1.load(l, prefix + ".norm1", in, groups, eps);
  conv1.load(l, prefix + ".conv1", in, out, 3);
  norm2.load(l, prefix + ".norm2", out, groups, eps);
  conv2.load(l, prefix + ".conv2", out, out, 3);
  has_time = temb_dim > 0;
  if (has_time) time_proj.load(l, prefix + ".time_emb_proj", temb_dim, out);
  has_shortcut = in != out;
  if (has_shortcut) {
    shortcut.load(l, prefix + ".conv_shortcut", in, out, 1);
    shortcut_b2 = shortcut.b.defined() && conv2.b.defined() ? l.backend().add(shortcut.b, conv2.b)
                  : shortcut.b.defined()                    ? shortcut.b
                                                            : conv2.b;
  }
}

ResnetBlock::InputReads ResnetBlock::read_input(Backend& be, const Tensor& x, const Tensor& skip) const {
  if (skip.defined() && has_shortcut && shortcut.pointwise()) {
    const Tensor wm = shortcut.w.reshape({shortcut.w.dim(0), shortcut.w.dim(3)});  // [out, in]
    Backend::ConcatReads r = be.concat_norm_shortcut(x, skip, norm1.gamma, norm1.beta, norm1.groups, norm1.eps,
                                                     /*silu=*/true, wm, shortcut_b2);
    return {r.normed, r.shortcut};
  }
  const Tensor in = skip.defined() ? be.concat_channels(x, skip) : x;  // [B, H, W, in]
  if (!has_shortcut) return {norm1(be, in, true), in};
  const Tensor sc = shortcut.pointwise()
                        ? be.linear(in, shortcut.w.reshape({shortcut.w.dim(0), shortcut.w.dim(3)}), shortcut_b2)
                        : be.conv2d(in, shortcut.w, shortcut_b2, shortcut.stride, shortcut.padding);  // [B, H, W, out]
  return {norm1(be, in, true), sc};
}

Tensor ResnetBlock::conv2_plus_residual(Backend& be, const Tensor& h, const InputReads& in) const {
  if (has_shortcut) return be.conv2d_onto(h, conv2.w, conv2.stride, conv2.padding, in.residual);
  return conv2.fused(be, h, Tensor(), in.residual);
}

Tensor ResnetBlock::operator()(Backend& be, const Tensor& x, const Tensor& temb_act, const Tensor& skip) const {
  if (!has_time && conv1.b.defined() && !conv1.pointwise()) {
    // (The VAE's blocks.) conv1's bias rides on the group norm after it: one pass fewer over h.
    const int64_t B = x.dim(0), out = conv1.w.dim(0);
    const Tensor bias_row = conv1.b.reshape({1, out});
    const Tensor bias_rows = B == 1 ? bias_row : be.concat_rows(std::vector<Tensor>(static_cast<size_t>(B), bias_row));  // [B, out]
    const InputReads in = read_input(be, x, skip);
    Tensor h = be.conv2d(in.normed, conv1.w, Tensor(), conv1.stride, conv1.padding);  // [B, H, W, out]
    h = be.group_norm_add(h, bias_rows, 0, norm2.gamma, norm2.beta, norm2.groups, norm2.eps, /*silu=*/true);
    return conv2_plus_residual(be, h, in);
  }
  // conv1 + time embedding [B, out], conv2 + shortcut: each one fused op where the backend can.
  const InputReads in = read_input(be, x, skip);
  Tensor h = conv1.fused(be, in.normed, has_time ? time_proj(be, temb_act) : Tensor(), Tensor());
  return conv2_plus_residual(be, norm2(be, h, true), in);
}

Tensor ResnetBlock::forward_stacked(Backend& be, const Tensor& x, const Tensor& temb_all, const Tensor& skip) const {
  SD_ASSERT(time_col >= 0 && temb_all.defined(), "ResnetBlock::forward_stacked without a stacked time projection");
  // The whole block as one backend op where the backend has a fused form for it.
  const bool three_by_three = conv1.w.dim(1) == 3 && conv1.stride == 1 && conv1.padding == 1 && conv2.w.dim(1) == 3 &&
                              conv2.stride == 1 && conv2.padding == 1 && conv2.b.defined();
  if (three_by_three && norm1.groups == norm2.groups && norm1.eps == norm2.eps &&
      (!has_shortcut || shortcut.pointwise())) {
    Backend::ResnetBlockOperands ops;
    ops.x = x, ops.skip = skip, ops.temb_all = temb_all, ops.time_col = time_col;
    ops.gamma1 = norm1.gamma, ops.beta1 = norm1.beta, ops.w1 = conv1.w;
    ops.gamma2 = norm2.gamma, ops.beta2 = norm2.beta, ops.w2 = conv2.w, ops.b2 = conv2.b;
    if (has_shortcut) {
      ops.shortcut_w = shortcut.w.reshape({shortcut.w.dim(0), shortcut.w.dim(3)});  // [out, in]
      ops.shortcut_b = shortcut.b;
    }
    ops.groups = norm1.groups, ops.eps = norm1.eps;
    Tensor y = be.resnet_block(ops);
    if (y.defined()) return y;
  }
  const InputReads in = read_input(be, x, skip);
  Tensor h = conv1(be, in.normed);  // [B, H, W, out], conv1's bias is in temb_all
  h = be.group_norm_add(h, temb_all, time_col, norm2.gamma, norm2.beta, norm2.groups, norm2.eps, /*silu=*/true);
  return conv2_plus_residual(be, h, in);
}

Tensor upsample_to(Backend& be, const Tensor& x, int64_t out_h, int64_t out_w) {
  Tensor up = be.upsample_nearest2x(x);  // [B, 2H, 2W, C]
  // Odd skip sizes (latents not divisible by 2^levels): nearest resize to 2n-1 equals the
  // 2x upsample cropped, so crop instead of resampling.
  if (up.dim(1) != out_h || up.dim(2) != out_w) {
    SD_ASSERT(out_h <= up.dim(1) && out_w <= up.dim(2), "upsample_to: target larger than 2x");
    up = be.crop_hw(up, 0, static_cast<int>(out_h), 0, static_cast<int>(out_w));
  }
  return up;
}

}  // namespace sd
