// Building blocks shared by the CLIP text encoder, UNet and VAE: one weights struct per
// layer (gemma.cpp style) with load() from diffusers names and forward() on a Backend.
// Activations are NHWC [B,H,W,C] or sequences [B,L,C].
#pragma once

#include <string>
#include <vector>

#include "backend/backend.h"
#include "models/loader.h"

namespace sd {

struct Linear {
  Tensor w, b;  // [out, in], [out] (b may be undefined)
  void load(ModelLoader& l, const std::string& prefix, int64_t in, int64_t out, bool bias = true);
  Tensor operator()(Backend& be, const Tensor& x) const { return be.linear(x, w, b); }
  // linear(x) + residual in one op (a GEMM epilogue on CUDA).
  Tensor plus(Backend& be, const Tensor& x, const Tensor& residual) const {
    return be.linear_residual(x, w, b, residual);
  }
};

struct Conv2d {
  Tensor w, b;  // [out, k, k, in], [out]
  int stride = 1, padding = 0;
  void load(ModelLoader& l, const std::string& prefix, int64_t in, int64_t out, int k, int stride = 1,
            int padding = -1 /* k/2 */);
  Tensor operator()(Backend& be, const Tensor& x) const { return be.conv2d(x, w, b, stride, padding); }
  // conv(x) [+ row_add [B, out] per channel] [+ residual [B, Ho, Wo, out]]; either may be undefined.
  Tensor fused(Backend& be, const Tensor& x, const Tensor& row_add, const Tensor& residual) const {
    return be.conv2d_fused(x, w, b, stride, padding, row_add, residual);
  }
};

struct GroupNorm {
  Tensor gamma, beta;  // [C]
  int groups = 32;
  float eps = 1e-5f;
  void load(ModelLoader& l, const std::string& prefix, int64_t channels, int groups, float eps);
  Tensor operator()(Backend& be, const Tensor& x, bool silu) const {
    return be.group_norm(x, gamma, beta, groups, eps, silu);
  }
};

struct LayerNorm {
  Tensor gamma, beta;  // [C]
  float eps = 1e-5f;
  void load(ModelLoader& l, const std::string& prefix, int64_t channels, float eps);
  Tensor operator()(Backend& be, const Tensor& x) const { return be.layer_norm(x, gamma, beta, eps); }
};

// Multi-head attention with separate q/k/v projections and an output projection
// (diffusers `Attention`: to_q, to_k, to_v, to_out.0).
struct Attention {
  Linear q, k, v, out;
  int heads = 1;
  void load(ModelLoader& l, const std::string& prefix, int64_t query_dim, int64_t context_dim, int64_t inner_dim,
            int heads, bool qkv_bias);
  // x [B, Lq, query_dim], context [B, Lk, context_dim] (x itself when undefined); the output
  // projection adds `residual` [B, Lq, query_dim] when it is defined.
  Tensor operator()(Backend& be, const Tensor& x, const Tensor& context = {}, const Tensor& residual = {}) const;
};

// UNet transformer block: self-attention, cross-attention, GEGLU feed-forward.
struct TransformerBlock {
  LayerNorm norm1, norm2, norm3;
  Attention attn1, attn2;
  Linear ff_in, ff_out;  // [2*4C, C] (GEGLU), [C, 4C]
  void load(ModelLoader& l, const std::string& prefix, int64_t dim, int64_t context_dim, int heads);
  Tensor operator()(Backend& be, const Tensor& x, const Tensor& context) const;  // [B, L, C]
};

// Transformer2DModel: GroupNorm, proj_in (1x1 conv or linear: the same op in NHWC),
// transformer blocks over the H*W tokens, proj_out, residual.
struct SpatialTransformer {
  GroupNorm norm;
  Linear proj_in, proj_out;
  std::vector<TransformerBlock> blocks;
  void load(ModelLoader& l, const std::string& prefix, int64_t channels, int64_t context_dim, int heads,
            int layers, int groups);
  Tensor operator()(Backend& be, const Tensor& x, const Tensor& context) const;  // [B,H,W,C]
};

// ResnetBlock2D: GN-SiLU-conv, (+ time embedding), GN-SiLU-conv, shortcut.
struct ResnetBlock {
  GroupNorm norm1, norm2;
  Conv2d conv1, conv2, shortcut;  // shortcut only when in != out
  Linear time_proj;               // only with a time embedding
  bool has_shortcut = false, has_time = false;
  void load(ModelLoader& l, const std::string& prefix, int64_t in, int64_t out, int64_t temb_dim, int groups,
            float eps);
  // x [B,H,W,in], temb_act [B, temb_dim] already passed through SiLU (or undefined).
  Tensor operator()(Backend& be, const Tensor& x, const Tensor& temb_act) const;
};

// Nearest-neighbour upsample of x [B,H,W,C] to (out_h, out_w) = (2H or 2H-1, 2W or 2W-1),
// the size of the skip connection it joins (PyTorch "nearest" semantics).
Tensor upsample_to(Backend& be, const Tensor& x, int64_t out_h, int64_t out_w);

}  // namespace sd
