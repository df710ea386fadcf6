// AutoencoderKL (the SD VAE): decoder from latents to images and encoder from images to the
// posterior's mean and log-variance. Mid-block single-head attention; the scaling factor
// comes from the config. Inputs and outputs are NHWC.
#pragma once

#include <memory>
#include <vector>

#include "backend/backend.h"
#include "io/model_config.h"
#include "io/weights.h"
#include "models/layers.h"
#include "models/upsample_conv.h"

namespace sd {

class VAE {
 public:
  static StatusOr<std::unique_ptr<VAE>> load(const VAEConfig& config, const WeightSource& weights, Backend& backend,
                                             bool with_encoder = true);

  // Every parameter (diffusers name, PyTorch-layout shape) of this configuration.
  static std::vector<std::pair<std::string, Shape>> parameter_shapes(const VAEConfig& config);

  // z [B, h, w, latent_channels] (already divided by scaling_factor) -> [B, 8h, 8w, 3] in
  // about [-1, 1] (not clamped).
  Tensor decode(const Tensor& z) const;
  // image [B, H, W, 3] in [-1, 1] -> moments [B, H/8, W/8, 2*latent_channels]
  // (mean channels first, then log-variance, unclamped; the reference clamps it to
  // [-30, 20] when it builds the posterior).
  Tensor encode_moments(const Tensor& image) const;
  bool has_encoder() const { return has_encoder_; }

  const VAEConfig& config() const { return config_; }
  size_t parameters() const { return parameters_; }

 private:
  struct MidAttention {  // single head over all positions, with GroupNorm and residual
    GroupNorm norm;
    Linear qkv;  // to_q; to_k; to_v stacked: [3C, C] (one GEMM, read by attention_cols)
    Linear out;
  };
  struct Mid {
    ResnetBlock res1, res2;
    MidAttention attn;
  };
  struct Level {
    std::vector<ResnetBlock> resnets;
    bool has_sampler = false;
    Conv2d sampler;          // encoder: the stride-2 downsample conv
    UpsampleConv upsampler;  // decoder: nearest 2x upsample + 3x3 conv (sub-pixel)
  };
  VAE(const VAEConfig& c, Backend& b) : config_(c), backend_(b) {}
  void build(ModelLoader& l, bool with_encoder);
  void load_mid(ModelLoader& l, const std::string& prefix, Mid& mid, int64_t channels);
  Tensor run_mid(const Mid& mid, const Tensor& x) const;

  VAEConfig config_;
  Backend& backend_;
  bool has_encoder_ = false;
  // decoder
  Conv2d post_quant_conv_, dec_conv_in_, dec_conv_out_;
  Mid dec_mid_;
  std::vector<Level> dec_up_;
  GroupNorm dec_norm_out_;
  // encoder
  Conv2d quant_conv_, enc_conv_in_, enc_conv_out_;
  Mid enc_mid_;
  std::vector<Level> enc_down_;
  GroupNorm enc_norm_out_;
  size_t parameters_ = 0;
};

}  // namespace sd
