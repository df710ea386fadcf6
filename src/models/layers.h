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
  // Several [out_each, in] projections of the same input stacked into one [n*out_each, in]
  // weight (bias likewise): one GEMM whose output columns are the projections side by side.
  // The separate weights are not kept. Undefined while recording or after a load failure.
  void load_stacked(ModelLoader& l, const std::vector<std::string>& prefixes, int64_t in, int64_t out_each,
                    bool bias = true);
  Tensor operator()(Backend& be, const Tensor& x) const { return be.linear(x, w, b); }
  // linear(x) + residual in one op (a GEMM epilogue on CUDA).
  Tensor plus(Backend& be, const Tensor& x, const Tensor& residual) const {
    return be.linear_residual(x, w, b, residual);
  }
  // GEGLU of this projection (w [2N, in]: value rows, then gate rows) -> [..., N], one op.
  Tensor geglu(Backend& be, const Tensor& x) const { return be.linear_geglu(x, w, b); }
};

struct Conv2d {
  Tensor w, b;  // [out, k, k, in], [out]
  int stride = 1, padding = 0;
  void load(ModelLoader& l, const std::string& prefix, int64_t in, int64_t out, int k, int stride = 1,
            int padding = -1 /* k/2 */);
  // A 1x1 convolution with stride 1 and no padding is a GEMM over the channels of NHWC x: it runs
  // as linear() (on CUDA the bias and residual become the cuBLASLt matmul's epilogue).
  bool pointwise() const { return w.dim(1) == 1 && w.dim(2) == 1 && stride == 1 && padding == 0; }
  Tensor operator()(Backend& be, const Tensor& x) const {
    if (pointwise()) return be.linear(x, w.reshape({w.dim(0), w.dim(3)}), b);  // [B, H, W, out]
    return be.conv2d(x, w, b, stride, padding);
  }
  // conv(x) [+ row_add [B, out] per channel] [+ residual [B, Ho, Wo, out]]; either may be undefined.
  Tensor fused(Backend& be, const Tensor& x, const Tensor& row_add, const Tensor& residual) const {
    if (pointwise() && !row_add.defined()) {
      const Tensor wm = w.reshape({w.dim(0), w.dim(3)});  // [out, in]
      return residual.defined() ? be.linear_residual(x, wm, b, residual) : be.linear(x, wm, b);
    }
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

// Self-attention reads keys and values from its own input, cross-attention from a context
// (the text embedding); decided at load, not from the dimensions (they may coincide).
enum class AttentionKind { kSelf, kCross };

// Multi-head attention (diffusers `Attention`: to_q, to_k, to_v, to_out.0) with packed
// projections: self-attention computes q, k, v by one GEMM into [B, L, 3*inner], cross-
// attention q by one and k, v by one into [B, Lk, 2*inner]; Backend::attention_cols reads
// the q / k / v column windows in place.
struct Attention {
  Linear qkv;  // kSelf: rows to_q; to_k; to_v -> [3*inner, query_dim]
  Linear q;    // kCross: [inner, query_dim]
  Linear kv;   // kCross: rows to_k; to_v -> [2*inner, context_dim] (undefined once stacked)
  Linear out;
  // kCross, >= 0 once the UNet stacked this layer's K/V projection with every other cross-
  // attention's into one GEMM per step (the context is the same for all of them): this layer's
  // k columns start here in that GEMM's output, v columns at kv_col + inner.
  int64_t kv_col = -1;
  int heads = 1;
  int64_t inner = 0;
  AttentionKind kind = AttentionKind::kSelf;
  // kSelf needs context_dim == query_dim.
  void load(ModelLoader& l, const std::string& prefix, AttentionKind kind, int64_t query_dim, int64_t context_dim,
            int64_t inner_dim, int heads, bool qkv_bias);
  // x [B, Lq, query_dim]; context [B, Lk, context_dim] for kCross (undefined for kSelf), or,
  // once stacked (kv_col >= 0), the stacked K/V projections [B, Lk, W]; the output projection
  // adds `residual` [B, Lq, query_dim] when it is defined.
  Tensor operator()(Backend& be, const Tensor& x, const Tensor& context = {}, const Tensor& residual = {}) const;
};

// UNet transformer block: self-attention, cross-attention, GEGLU feed-forward.
struct TransformerBlock {
  LayerNorm norm1, norm2, norm3;
  Attention attn1, attn2;
  Linear ff_in, ff_out;  // [2*4C, C] (GEGLU), [C, 4C]
  void load(ModelLoader& l, const std::string& prefix, int64_t dim, int64_t context_dim, int heads);
  // x [B, L, C]; context as Attention takes it for attn2 (text context or stacked K/V).
  Tensor operator()(Backend& be, const Tensor& x, const Tensor& context) const;  // [B, L, C]
  // The same in two parts: norm1 + self-attention + residual (no context), then the rest.
  Tensor self_attention(Backend& be, const Tensor& x) const;                             // [B, L, C]
  Tensor after_self_attention(Backend& be, const Tensor& h, const Tensor& context) const;  // [B, L, C]
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
  // Classifier-free guidance rows: x [B,H,W,C] is the first half of 2B rows whose second half
  // repeats it, context has all 2B rows. Everything before the first cross-attention (norm,
  // proj_in, the first block's self-attention) runs on the B rows, which are then duplicated:
  // returns [2B,H,W,C], equal to operator() on [x; x].
  Tensor on_first_half(Backend& be, const Tensor& x, const Tensor& context) const;
};

// ResnetBlock2D: GN-SiLU-conv, (+ time embedding), GN-SiLU-conv, shortcut.
struct ResnetBlock {
  GroupNorm norm1, norm2;
  Conv2d conv1, conv2, shortcut;  // shortcut only when in != out
  // shortcut.b + conv2.b [out]: with a shortcut, conv2's bias rides on it, so conv2 accumulates
  // onto the shortcut's output (Backend::conv2d_onto) with no add of its own.
  Tensor shortcut_b2;
  Linear time_proj;               // only with a time embedding (until stacked by the UNet)
  bool has_shortcut = false, has_time = false;
  // >= 0 once the UNet stacked this block's time projection (conv1's bias folded into its bias)
  // into one GEMM for all blocks: this block's columns start here.
  int64_t time_col = -1;
  void load(ModelLoader& l, const std::string& prefix, int64_t in, int64_t out, int64_t temb_dim, int groups,
            float eps);
  // x [B,H,W,in], temb_act [B, temb_dim] already passed through SiLU (or undefined). With
  // `skip` [B,H,W,in - Cx] (the UNet decoder) the block's input is [x | skip], channels
  // concatenated, which the backend may read in place (Backend::concat_norm_shortcut).
  Tensor operator()(Backend& be, const Tensor& x, const Tensor& temb_act, const Tensor& skip = Tensor()) const;
  // Stacked form: temb_all [B, W] = every block's time projection (+ conv1 bias) side by side;
  // the group norm after conv1 adds this block's window (Backend::group_norm_add).
  Tensor forward_stacked(Backend& be, const Tensor& x, const Tensor& temb_all, const Tensor& skip = Tensor()) const;

 private:
  // The block input's two reads: norm1 + SiLU, and the shortcut (or the input itself).
  struct InputReads {
    Tensor normed, residual;
  };
  InputReads read_input(Backend& be, const Tensor& x, const Tensor& skip) const;
  // conv2(h) + in.residual (conv2's bias included); in.residual is given up.
  Tensor conv2_plus_residual(Backend& be, const Tensor& h, const InputReads& in) const;
};

// Nearest-neighbour upsample of x [B,H,W,C] to (out_h, out_w) = (2H or 2H-1, 2W or 2W-1),
// the size of the skip connection it joins (PyTorch "nearest" semantics).
Tensor upsample_to(Backend& be, const Tensor& x, int64_t out_h, int64_t out_w);

}  // namespace sd
