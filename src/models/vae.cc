// AutoencoderKL decoder and encoder (diffusers names: decoder.up_blocks.i.resnets.j,
// decoder.mid_block.attentions.0.to_q, encoder.down_blocks.i.downsamplers.0.conv, ...).
// The encoder's downsampling pads right/bottom only, as the reference does.
#include "models/vae.h"

namespace sd {

StatusOr<std::unique_ptr<VAE>> VAE::load(const VAEConfig& c, const WeightSource& w, Backend& backend,
                                         bool with_encoder) {
  const size_t levels = c.block_out_channels.size();
  if (levels == 0) return InvalidArgument(w.origin() + ": VAE config has no block_out_channels");
  for (int ch : c.block_out_channels) {
    if (ch <= 0 || ch % c.norm_num_groups != 0) {
      return InvalidArgument(w.origin() + ": VAE channels " + std::to_string(ch) + " not divisible by " +
                             std::to_string(c.norm_num_groups) + " groups");
    }
  }
  std::unique_ptr<VAE> m(new VAE(c, backend));
  ModelLoader l(w, backend);
  m->build(l, with_encoder);
  SD_RETURN_IF_ERROR(l.status());
  m->parameters_ = l.parameters();
  return m;
}

std::vector<std::pair<std::string, Shape>> VAE::parameter_shapes(const VAEConfig& c) {
  std::vector<std::pair<std::string, Shape>> shapes;
  auto be = make_cpu_backend(1);
  VAE m(c, *be);
  ModelLoader l(&shapes, *be);
  m.build(l, true);
  return shapes;
}

void VAE::build(ModelLoader& l, bool with_encoder) {
  const VAEConfig& c = config_;
  VAE* m = this;
  const size_t levels = c.block_out_channels.size();
  const auto& ch = c.block_out_channels;
  const int L = static_cast<int>(levels);
  const int g = c.norm_num_groups;
  const int64_t lc = c.latent_channels;

  // decoder
  m->post_quant_conv_.load(l, "post_quant_conv", lc, lc, 1);
  m->dec_conv_in_.load(l, "decoder.conv_in", lc, ch.back(), 3);
  m->load_mid(l, "decoder.mid_block", m->dec_mid_, ch.back());
  m->dec_up_.resize(levels);
  int64_t prev = ch.back();
  for (int i = 0; i < L; ++i) {
    const int64_t out = ch[static_cast<size_t>(L - 1 - i)];
    Level& lv = m->dec_up_[i];
    const std::string p = "decoder.up_blocks." + std::to_string(i);
    for (int j = 0; j <= c.layers_per_block; ++j) {
      lv.resnets.emplace_back();
      lv.resnets.back().load(l, p + ".resnets." + std::to_string(j), j == 0 ? prev : out, out, 0, g, 1e-6f);
    }
    lv.has_sampler = i + 1 < L;
    if (lv.has_sampler) lv.upsampler.load(l, p + ".upsamplers.0.conv", out, /*keep_3x3=*/false);
    prev = out;
  }
  m->dec_norm_out_.load(l, "decoder.conv_norm_out", ch[0], g, 1e-6f);
  m->dec_conv_out_.load(l, "decoder.conv_out", ch[0], c.out_channels, 3);

  // encoder
  if (with_encoder && l.has("encoder.conv_in.weight")) {
    m->has_encoder_ = true;
    m->enc_conv_in_.load(l, "encoder.conv_in", c.in_channels, ch[0], 3);
    m->enc_down_.resize(levels);
    int64_t in = ch[0];
    for (int i = 0; i < L; ++i) {
      Level& lv = m->enc_down_[i];
      const std::string p = "encoder.down_blocks." + std::to_string(i);
      for (int j = 0; j < c.layers_per_block; ++j) {
        lv.resnets.emplace_back();
        lv.resnets.back().load(l, p + ".resnets." + std::to_string(j), in, ch[i], 0, g, 1e-6f);
        in = ch[i];
      }
      lv.has_sampler = i + 1 < L;
      if (lv.has_sampler) lv.sampler.load(l, p + ".downsamplers.0.conv", ch[i], ch[i], 3, 2, 0);
    }
    m->load_mid(l, "encoder.mid_block", m->enc_mid_, ch.back());
    m->enc_norm_out_.load(l, "encoder.conv_norm_out", ch.back(), g, 1e-6f);
    m->enc_conv_out_.load(l, "encoder.conv_out", ch.back(), 2 * lc, 3);
    m->quant_conv_.load(l, "quant_conv", 2 * lc, 2 * lc, 1);
  }
}

void VAE::load_mid(ModelLoader& l, const std::string& prefix, Mid& mid, int64_t C) {
  const int g = config_.norm_num_groups;
  mid.res1.load(l, prefix + ".resnets.0", C, C, 0, g, 1e-6f);
  mid.res2.load(l, prefix + ".resnets.1", C, C, 0, g, 1e-6f);
  const std::string a = prefix + ".attentions.0";
  mid.attn.norm.load(l, a + ".group_norm", C, g, 1e-6f);
  mid.attn.qkv.load_stacked(l, {a + ".to_q", a + ".to_k", a + ".to_v"}, C, C);
  mid.attn.out.load(l, a + ".to_out.0", C, C);
}

Tensor VAE::run_mid(const Mid& mid, const Tensor& x) const {
  Backend& be = backend_;
  Tensor h = mid.res1(be, x, {});
  const int64_t B = h.dim(0), H = h.dim(1), W = h.dim(2), C = h.dim(3);
  Tensor n = mid.attn.norm(be, h, false).reshape({B, H * W, C});  // [B, H*W, C]
  const Tensor qkv = mid.attn.qkv(be, n);  // [B, H*W, 3C]: q | k | v
  Tensor a = be.attention_cols(qkv, 0, qkv, C, 2 * C, C, 1, false);
  h = be.add(mid.attn.out(be, a).reshape({B, H, W, C}), h);
  return mid.res2(be, h, {});
}

Tensor VAE::decode(const Tensor& z) const {
  Backend& be = backend_;
  SD_ASSERT(z.ndim() == 4 && z.dim(3) == config_.latent_channels, "VAE decode needs NHWC latents, got " + z.describe());
  Tensor h = dec_conv_in_(be, post_quant_conv_(be, z));
  h = run_mid(dec_mid_, h);
  for (const Level& lv : dec_up_) {
    for (const auto& r : lv.resnets) h = r(be, h, {});
    if (lv.has_sampler) h = lv.upsampler(be, h, 2 * h.dim(1), 2 * h.dim(2));
  }
  return dec_conv_out_(be, dec_norm_out_(be, h, true));
}

Tensor VAE::encode_moments(const Tensor& image) const {
  Backend& be = backend_;
  SD_ASSERT(has_encoder_, "this VAE was loaded without its encoder");
  SD_ASSERT(image.ndim() == 4 && image.dim(3) == config_.in_channels, "VAE encode needs NHWC images");
  Tensor h = enc_conv_in_(be, image);
  for (const Level& lv : enc_down_) {
    for (const auto& r : lv.resnets) h = r(be, h, {});
    if (lv.has_sampler) h = lv.sampler(be, be.pad_hw(h, 0, 1, 0, 1));
  }
  h = run_mid(enc_mid_, h);
  return quant_conv_(be, enc_conv_out_(be, enc_norm_out_(be, h, true)));
}

}  // namespace sd
