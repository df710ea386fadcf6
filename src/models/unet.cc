// UNet2DConditionModel: builds the block structure from UNetConfig (diffusers names:
// down_blocks.i.resnets.j, .attentions.j, .downsamplers.0.conv, mid_block.*, up_blocks.*)
// and runs it in NHWC. Skip connections are kept in a stack as in the reference.
#include "models/unet.h"

#include <cmath>

namespace sd {

Tensor timestep_features(const std::vector<double>& timesteps, int dim, bool flip_sin_to_cos, int freq_shift) {
  const int half = dim / 2;
  Tensor out = Tensor::zeros_host({static_cast<int64_t>(timesteps.size()), dim}, DType::kF32);
  for (size_t b = 0; b < timesteps.size(); ++b) {
    float* row = out.f32() + b * static_cast<size_t>(dim);
    for (int i = 0; i < half; ++i) {
      const double freq = std::exp(-std::log(10000.0) * i / (half - freq_shift));
      const double arg = timesteps[b] * freq;
      const float s = static_cast<float>(std::sin(arg)), c = static_cast<float>(std::cos(arg));
      row[i] = flip_sin_to_cos ? c : s;
      row[half + i] = flip_sin_to_cos ? s : c;
    }
  }
  return out;
}

static bool has_attention(const std::string& block_type) { return block_type.find("CrossAttn") != std::string::npos; }

StatusOr<std::unique_ptr<UNet>> UNet::load(const UNetConfig& c, const WeightSource& w, Backend& backend) {
  const size_t levels = c.block_out_channels.size();
  if (levels == 0 || c.down_block_types.size() != levels || c.up_block_types.size() != levels ||
      c.attention_heads.size() != levels) {
    return InvalidArgument(w.origin() + ": UNet config: block_out_channels, down/up_block_types and "
                                        "attention heads must have one entry per level");
  }
  for (size_t i = 0; i < levels; ++i) {
    if (c.attention_heads[i] <= 0 || c.block_out_channels[i] % c.attention_heads[i] != 0 ||
        c.block_out_channels[i] % c.norm_num_groups != 0) {
      return InvalidArgument(w.origin() + ": UNet config: level " + std::to_string(i) + " has " +
                             std::to_string(c.block_out_channels[i]) + " channels, not divisible by its heads/groups");
    }
  }
  std::unique_ptr<UNet> m(new UNet(c, backend));
  ModelLoader l(w, backend);
  SD_RETURN_IF_ERROR(m->build(l));
  m->parameters_ = l.parameters();
  return m;
}

std::vector<std::pair<std::string, Shape>> UNet::parameter_shapes(const UNetConfig& c) {
  std::vector<std::pair<std::string, Shape>> shapes;
  auto be = make_cpu_backend(1);
  UNet m(c, *be);
  ModelLoader l(&shapes, *be);
  (void)m.build(l);
  return shapes;
}

Status UNet::build(ModelLoader& l) {
  const UNetConfig& c = config_;
  const auto& ch = c.block_out_channels;
  const int levels = static_cast<int>(ch.size());
  const int64_t temb = 4 * ch[0];
  const int g = c.norm_num_groups;
  const float eps = c.norm_eps;
  const int tl = c.transformer_layers_per_block;

  time_linear1_.load(l, "time_embedding.linear_1", ch[0], temb);
  time_linear2_.load(l, "time_embedding.linear_2", temb, temb);
  conv_in_.load(l, "conv_in", c.in_channels, ch[0], 3);

  down_.resize(static_cast<size_t>(levels));
  int64_t in = ch[0];
  for (int i = 0; i < levels; ++i) {
    const std::string p = "down_blocks." + std::to_string(i);
    Level& lv = down_[i];
    for (int j = 0; j < c.layers_per_block; ++j) {
      lv.resnets.emplace_back();
      lv.resnets.back().load(l, p + ".resnets." + std::to_string(j), in, ch[i], temb, g, eps);
      if (has_attention(c.down_block_types[i])) {
        lv.attentions.emplace_back();
        lv.attentions.back().load(l, p + ".attentions." + std::to_string(j), ch[i], c.cross_attention_dim,
                                  c.attention_heads[i], tl, g);
      }
      in = ch[i];
    }
    lv.has_sampler = i + 1 < levels;
    if (lv.has_sampler) lv.sampler.load(l, p + ".downsamplers.0.conv", ch[i], ch[i], 3, 2, 1);
  }

  const int64_t mid = ch.back();
  mid_res1_.load(l, "mid_block.resnets.0", mid, mid, temb, g, eps);
  mid_attn_.load(l, "mid_block.attentions.0", mid, c.cross_attention_dim, c.attention_heads.back(), tl, g);
  mid_res2_.load(l, "mid_block.resnets.1", mid, mid, temb, g, eps);

  up_.resize(static_cast<size_t>(levels));
  int64_t prev = mid;
  for (int i = 0; i < levels; ++i) {
    const int r = levels - 1 - i;                 // level index counted from the top
    const int64_t out = ch[r];
    const int64_t skip_in = ch[r > 0 ? r - 1 : 0];  // channels of the deepest skip of the level below
    const std::string p = "up_blocks." + std::to_string(i);
    Level& lv = up_[i];
    for (int j = 0; j <= c.layers_per_block; ++j) {
      const int64_t skip = (j == c.layers_per_block) ? skip_in : out;
      const int64_t res_in = (j == 0 ? prev : out) + skip;
      lv.resnets.emplace_back();
      lv.resnets.back().load(l, p + ".resnets." + std::to_string(j), res_in, out, temb, g, eps);
      if (has_attention(c.up_block_types[i])) {
        lv.attentions.emplace_back();
        lv.attentions.back().load(l, p + ".attentions." + std::to_string(j), out, c.cross_attention_dim,
                                  c.attention_heads[r], tl, g);
      }
    }
    lv.has_sampler = i + 1 < levels;
    // The 3x3 weights stay too: skip sizes are odd when the latent size is not a multiple of 2^levels.
    if (lv.has_sampler) lv.upsampler.load(l, p + ".upsamplers.0.conv", out, /*keep_3x3=*/true);
    prev = out;
  }
  norm_out_.load(l, "conv_norm_out", ch[0], g, eps);
  conv_out_.load(l, "conv_out", ch[0], c.out_channels, 3);
  stack_time_projections(l);
  stack_context_projections(l);
  return l.status();
}

std::vector<ResnetBlock*> UNet::resnets_in_order() {
  std::vector<ResnetBlock*> out;
  for (Level& lv : down_) {
    for (ResnetBlock& r : lv.resnets) out.push_back(&r);
  }
  out.push_back(&mid_res1_);
  out.push_back(&mid_res2_);
  for (Level& lv : up_) {
    for (ResnetBlock& r : lv.resnets) out.push_back(&r);
  }
  return out;
}

void UNet::stack_time_projections(ModelLoader& l) {
  const std::vector<ResnetBlock*> blocks = resnets_in_order();
  for (const ResnetBlock* r : blocks) {
    // Recording mode or a failed load leaves tensors undefined: keep the per-block form.
    if (!r->has_time || !r->time_proj.w.defined() || !r->time_proj.b.defined() || !r->conv1.b.defined()) return;
  }
  Backend& be = l.backend();
  std::vector<Tensor> ws, bs;
  for (const ResnetBlock* r : blocks) {
    ws.push_back(r->time_proj.w);                        // [out, 4*C0]
    bs.push_back(be.add(r->time_proj.b, r->conv1.b));   // [out]: conv1's bias rides on the projection
  }
  time_proj_all_.w = be.concat_rows(ws);  // [sum out, 4*C0]
  time_proj_all_.b = be.concat_rows(bs);  // [sum out]
  int64_t col = 0;
  for (ResnetBlock* r : blocks) {
    r->time_col = col;
    col += r->time_proj.w.dim(0);
    r->time_proj = Linear();
    r->conv1.b = Tensor();
  }
}

std::vector<Attention*> UNet::cross_attentions() {
  std::vector<Attention*> out;
  const auto add = [&out](SpatialTransformer& st) {
    for (TransformerBlock& b : st.blocks) out.push_back(&b.attn2);
  };
  for (Level& lv : down_) {
    for (SpatialTransformer& st : lv.attentions) add(st);
  }
  add(mid_attn_);
  for (Level& lv : up_) {
    for (SpatialTransformer& st : lv.attentions) add(st);
  }
  return out;
}

void UNet::stack_context_projections(ModelLoader& l) {
  const std::vector<Attention*> layers = cross_attentions();
  if (layers.empty()) return;
  const bool bias = layers.front()->kv.b.defined();
  for (const Attention* a : layers) {
    // Recording mode or a failed load leaves tensors undefined; mixed biases: keep per layer.
    if (a->kind != AttentionKind::kCross || !a->kv.w.defined() || a->kv.b.defined() != bias) return;
  }
  Backend& be = l.backend();
  std::vector<Tensor> ws, bs;
  for (const Attention* a : layers) {
    ws.push_back(a->kv.w);  // [2*inner, context dim]
    if (bias) bs.push_back(a->kv.b);
  }
  context_kv_all_.w = be.concat_rows(ws);  // [sum 2*inner, context dim]
  if (bias) context_kv_all_.b = be.concat_rows(bs);
  int64_t col = 0;
  for (Attention* a : layers) {
    a->kv_col = col;
    col += a->kv.w.dim(0);
    a->kv = Linear();
  }
}

std::vector<Backend::AttentionShape> UNet::attention_shapes(int64_t rows, int64_t h, int64_t w, int64_t context_len,
                                                            bool halves_equal) const {
  std::vector<Backend::AttentionShape> out;
  const auto seen = [&out](const Backend::AttentionShape& a) {
    for (const auto& b : out) {
      if (a.batch == b.batch && a.lq == b.lq && a.lk == b.lk && a.heads == b.heads && a.d == b.d &&
          a.q_stride == b.q_stride && a.kv_stride == b.kv_stride) {
        return true;
      }
    }
    return false;
  };
  bool half = halves_equal && rows % 2 == 0;  // the first transformer's self-attention runs on rows / 2
  const auto add = [&](const SpatialTransformer& st, int64_t tokens) {
    for (const TransformerBlock& b : st.blocks) {
      const Attention& s = b.attn1;
      const Attention& c = b.attn2;
      // Self: q | k | v packed [rows, L, 3*inner]; cross: q [rows, L, inner] and K/V in the
      // stacked context projection (kv_col >= 0, projected per step or per job) or their own.
      const int64_t kv_stride = c.kv_col >= 0 ? context_projection_width() : 2 * c.inner;
      const Backend::AttentionShape self{half ? rows / 2 : rows, tokens, tokens, s.heads, s.inner / s.heads,
                                         3 * s.inner, 3 * s.inner};
      const Backend::AttentionShape cross{rows, tokens, context_len, c.heads, c.inner / c.heads, c.inner, kv_stride};
      half = false;
      if (!seen(self)) out.push_back(self);
      if (!seen(cross)) out.push_back(cross);
    }
  };
  std::vector<int64_t> hs{h}, ws{w};  // latent size per level (stride-2 3x3 downsampling, padding 1)
  for (size_t i = 0; i + 1 < down_.size(); ++i) {
    hs.push_back((hs.back() - 1) / 2 + 1);
    ws.push_back((ws.back() - 1) / 2 + 1);
  }
  for (size_t i = 0; i < down_.size(); ++i) {
    for (const SpatialTransformer& st : down_[i].attentions) add(st, hs[i] * ws[i]);
  }
  half = false;  // without down-level attention the rows are widened before the mid block
  add(mid_attn_, hs.back() * ws.back());
  for (size_t i = 0; i < up_.size(); ++i) {
    const size_t r = up_.size() - 1 - i;
    for (const SpatialTransformer& st : up_[i].attentions) add(st, hs[r] * ws[r]);
  }
  return out;
}

Tensor UNet::timestep_features_of(const std::vector<double>& timesteps) const {
  return timestep_features(timesteps, config_.block_out_channels[0], config_.flip_sin_to_cos, config_.freq_shift);
}

Tensor UNet::time_embedding(const Tensor& features) const {
  Backend& be = backend_;
  Tensor t = time_linear2_(be, be.activation(time_linear1_(be, features), Activation::kSiLU));  // [B, 4*C0]
  return be.activation(t, Activation::kSiLU);  // every consumer applies SiLU first
}

Tensor UNet::forward(const Tensor& x, const std::vector<double>& timesteps, const Tensor& context) const {
  SD_ASSERT(static_cast<int64_t>(timesteps.size()) == x.dim(0), "one timestep per sample");
  return forward(x, backend_.upload(timestep_features_of(timesteps)), context);
}

Tensor UNet::forward(const Tensor& x, const Tensor& features, const Tensor& context, bool halves_equal,
                     bool context_projected) const {
  Backend& be = backend_;
  SD_ASSERT(x.ndim() == 4 && x.dim(3) == config_.in_channels, "UNet input must be NHWC latents, got " + x.describe());
  SD_ASSERT(features.ndim() == 2 && features.dim(0) == x.dim(0) && features.dim(1) == config_.block_out_channels[0],
            "timestep features must be [B, " + std::to_string(config_.block_out_channels[0]) + "], got " +
                features.describe());
  // BackendScope names the blocks for ProfilingBackend (no-ops on other backends).
  Tensor temb, temb_all;  // [B, 4*C0] after SiLU; [B, sum of ResNet widths] when stacked
  {
    BackendScope s(be, "time_embed");
    temb = time_embedding(features);
    if (time_proj_all_.w.defined()) temb_all = time_proj_all_(be, temb);
  }
  return denoise(x, temb, temb_all, context, halves_equal, context_projected);
}

Tensor UNet::project_context(const Tensor& context) const {
  SD_ASSERT(context_projection_width() > 0, "project_context: the cross-attention K/V projections are not stacked");
  SD_ASSERT(context.ndim() == 3 && context.dim(2) == config_.cross_attention_dim,
            "context must be [B, L, cross_attention_dim], got " + context.describe());
  BackendScope s(backend_, "context_kv");
  return context_kv_all_(backend_, context);  // [B, L, sum 2*inner]
}

Tensor UNet::time_projections(const Tensor& features) const {
  SD_ASSERT(time_projection_width() > 0, "time_projections: the ResNet time projections are not stacked");
  SD_ASSERT(features.ndim() == 2 && features.dim(1) == config_.block_out_channels[0],
            "timestep features must be [m, " + std::to_string(config_.block_out_channels[0]) + "], got " +
                features.describe());
  BackendScope s(backend_, "time_embed");
  return time_proj_all_(backend_, time_embedding(features));  // [m, sum of ResNet widths]
}

Tensor UNet::forward_projected(const Tensor& x, const Tensor& temb_all, const Tensor& context, bool halves_equal,
                               bool context_projected) const {
  SD_ASSERT(x.ndim() == 4 && x.dim(3) == config_.in_channels, "UNet input must be NHWC latents, got " + x.describe());
  SD_ASSERT(time_projection_width() > 0, "forward_projected: the ResNet time projections are not stacked");
  SD_ASSERT(temb_all.ndim() == 2 && temb_all.dim(0) == x.dim(0) && temb_all.dim(1) == time_projection_width(),
            "time projections must be [B, " + std::to_string(time_projection_width()) + "], got " +
                temb_all.describe());
  return denoise(x, Tensor(), temb_all, context, halves_equal, context_projected);
}

Tensor UNet::denoise(const Tensor& x, const Tensor& temb, const Tensor& temb_all, const Tensor& context,
                     bool halves_equal, bool context_projected) const {
  Backend& be = backend_;
  const int64_t context_width = context_projected ? context_projection_width() : config_.cross_attention_dim;
  SD_ASSERT(!context_projected || context_width > 0, "a projected context needs stacked K/V projections");
  SD_ASSERT(context.ndim() == 3 && context.dim(0) == x.dim(0) && context.dim(2) == context_width,
            "context must be [B, L, " + std::to_string(context_width) + "], got " + context.describe());
  // Every cross-attention's K/V projection of the context in one GEMM: [B, L, sum 2*inner].
  Tensor ctx = context;
  if (!context_projected && context_kv_all_.w.defined()) {
    BackendScope s(be, "context_kv");
    ctx = context_kv_all_(be, context);
  }
  // Half mode: until the first cross-attention, every row of the second half equals its twin in
  // the first half, so only the first half is computed (x, temb and temb_all sliced to it).
  const int64_t rows = x.dim(0);
  bool halved = halves_equal && rows % 2 == 0 && rows > 0;
  const int64_t first = halved ? rows / 2 : rows;
  const Tensor temb_first = temb.defined() ? temb.slice_rows(0, first) : Tensor();
  const Tensor temb_all_first = temb_all.defined() ? temb_all.slice_rows(0, first) : Tensor();
  // skip: the decoder's skip connection, the block's input being [x | skip] (read in place).
  const auto resnet = [&](const ResnetBlock& r, const Tensor& x, const Tensor& skip = Tensor()) {
    const Tensor& all = halved ? temb_all_first : temb_all;
    return r.time_col >= 0 ? r.forward_stacked(be, x, all, skip) : r(be, x, halved ? temb_first : temb, skip);
  };
  Tensor h;
  {
    BackendScope s(be, "conv_in");
    h = conv_in_(be, halved ? x.slice_rows(0, first) : x);
  }
  std::vector<Tensor> skips{h};
  // Leaves half mode: h (unless the attention widens it itself) and the skips so far get their
  // second half (copies of the first).
  const auto widen = [&](bool with_h = true) {
    if (!halved) return;
    BackendScope s(be, "widen");
    if (with_h) h = be.concat_rows({h, h});
    for (Tensor& t : skips) t = be.concat_rows({t, t});
    halved = false;
  };
  for (size_t i = 0; i < down_.size(); ++i) {
    const Level& lv = down_[i];
    const std::string p = "down." + std::to_string(i);
    for (size_t j = 0; j < lv.resnets.size(); ++j) {
      {
        BackendScope s(be, p + ".res." + std::to_string(j));
        h = resnet(lv.resnets[j], h);
      }
      if (!lv.attentions.empty()) {
        const bool first_half = halved;  // the attention's layers before its cross-attention run on the half
        widen(/*with_h=*/false);
        BackendScope s(be, p + ".attn." + std::to_string(j));
        h = first_half ? lv.attentions[j].on_first_half(be, h, ctx) : lv.attentions[j](be, h, ctx);
      }
      skips.push_back(h);
    }
    if (lv.has_sampler) {
      BackendScope s(be, p + ".downsample");
      h = lv.sampler(be, h);
      skips.push_back(h);
    }
  }
  {
    BackendScope s(be, "mid.res.0");
    h = resnet(mid_res1_, h);
  }
  widen();
  {
    BackendScope s(be, "mid.attn.0");
    h = mid_attn_(be, h, ctx);
  }
  {
    BackendScope s(be, "mid.res.1");
    h = resnet(mid_res2_, h);
  }
  for (size_t i = 0; i < up_.size(); ++i) {
    const Level& lv = up_[i];
    const std::string p = "up." + std::to_string(i);
    for (size_t j = 0; j < lv.resnets.size(); ++j) {
      Tensor skip = skips.back();
      skips.pop_back();
      {
        BackendScope s(be, p + ".res." + std::to_string(j));  // the skip concat included
        h = resnet(lv.resnets[j], h, skip);
      }
      if (!lv.attentions.empty()) {
        BackendScope s(be, p + ".attn." + std::to_string(j));
        h = lv.attentions[j](be, h, ctx);
      }
    }
    if (lv.has_sampler) {
      BackendScope s(be, p + ".upsample");
      const Tensor& next_skip = skips.back();  // the resolution the next level works at
      h = lv.upsampler(be, h, next_skip.dim(1), next_skip.dim(2));
    }
  }
  BackendScope s(be, "out");
  return conv_out_(be, norm_out_(be, h, true));
}

}  // namespace sd
