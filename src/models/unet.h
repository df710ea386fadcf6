// UNet2DConditionModel for SD 1.x / 2.x: timestep embedding, down blocks (ResNets +
// spatial transformers + strided-conv downsampling), mid block, up blocks with skip
// connections, output head. Takes NHWC latents and per-sample timesteps.
#pragma once

#include <memory>
#include <vector>

#include "backend/backend.h"
#include "io/model_config.h"
#include "io/weights.h"
#include "models/layers.h"
#include "models/upsample_conv.h"

namespace sd {

class UNet {
 public:
  static StatusOr<std::unique_ptr<UNet>> load(const UNetConfig& config, const WeightSource& weights, Backend& backend);

  // Every parameter (diffusers name, PyTorch-layout shape) of this configuration.
  static std::vector<std::pair<std::string, Shape>> parameter_shapes(const UNetConfig& config);

  // x [B, h, w, in_channels] (NHWC latents, already scaled by the sampler's c_in),
  // timesteps: one per sample, context [B, 77, cross_attention_dim] -> [B, h, w, out_channels].
  Tensor forward(const Tensor& x, const std::vector<double>& timesteps, const Tensor& context) const;
  // The same with the sinusoidal timestep features already on the device: features
  // [B, block_out_channels[0]] in the compute dtype (upload of timestep_features_of()). Only
  // enqueues device ops (no upload, no synchronisation), so it can be graph-captured.
  // halves_equal: rows [B/2, B) of x and features repeat rows [0, B/2) (classifier-free
  // guidance: uncond and cond rows share latents and timestep, only the context differs); the
  // layers before the first cross-attention (the first transformer's self-attention included)
  // then run on the first half only, and their outputs (and skip connections) are duplicated
  // where the rows start to differ.
  // context_projected: `context` is project_context() of the text context [B, L,
  // context_projection_width()] (made once per job instead of in every step).
  Tensor forward(const Tensor& x, const Tensor& features, const Tensor& context, bool halves_equal = false,
                 bool context_projected = false) const;
  // Host f32 [B, block_out_channels[0]]: this model's timestep features (flip, shift).
  Tensor timestep_features_of(const std::vector<double>& timesteps) const;

  // The time embedding depends on the timestep alone, so a caller may compute it once per
  // timestep value and keep it (StepGraphs' time table). Width of every ResNet's time
  // projection side by side (sum of their widths); 0 when they are not stacked (then the two
  // calls below do not apply).
  int64_t time_projection_width() const { return time_proj_all_.w.defined() ? time_proj_all_.w.dim(0) : 0; }
  // features [m, block_out_channels[0]] (device, compute dtype) -> [m, time_projection_width()].
  Tensor time_projections(const Tensor& features) const;
  // forward() with the time projections already made: temb_all [B, time_projection_width()]
  // (time_projections() of the rows' features). Only enqueues device ops.
  Tensor forward_projected(const Tensor& x, const Tensor& temb_all, const Tensor& context,
                           bool halves_equal = false, bool context_projected = false) const;
  // Every cross-attention's K/V projection of a text context side by side: context [B, L,
  // cross_attention_dim] -> [B, L, context_projection_width()]; the width is 0 when the
  // projections are not stacked (then project_context does not apply).
  int64_t context_projection_width() const { return context_kv_all_.w.defined() ? context_kv_all_.w.dim(0) : 0; }
  Tensor project_context(const Tensor& context) const;

  // The attention calls forward() makes for `rows` rows (2 per guided image; halves_equal as in
  // forward) of latents h x w with a `context_len`-token text context (the stacked K/V
  // projection's width is the same whether projected per step or per job): for
  // Backend::prepare_attention.
  std::vector<Backend::AttentionShape> attention_shapes(int64_t rows, int64_t h, int64_t w, int64_t context_len,
                                                        bool halves_equal) const;

  const UNetConfig& config() const { return config_; }
  size_t parameters() const { return parameters_; }

 private:
  struct Level {  // one down or up block
    std::vector<ResnetBlock> resnets;
    std::vector<SpatialTransformer> attentions;  // empty for DownBlock2D / UpBlock2D
    bool has_sampler = false;
    Conv2d sampler;          // down levels: the stride-2 downsample conv
    UpsampleConv upsampler;  // up levels: nearest 2x upsample + 3x3 conv (sub-pixel)
  };
  UNet(const UNetConfig& c, Backend& b) : config_(c), backend_(b) {}
  Status build(ModelLoader& l);
  Tensor time_embedding(const Tensor& features) const;  // [B, C0] features -> [B, 4*C0] after SiLU
  // The blocks after the time embedding: temb [B, 4*C0] (undefined when every ResNet reads
  // temb_all), temb_all [B, sum of ResNet widths] (undefined when not stacked).
  Tensor denoise(const Tensor& x, const Tensor& temb, const Tensor& temb_all, const Tensor& context,
                 bool halves_equal, bool context_projected) const;
  // One GEMM for every ResNet's time projection: stacks their weights (conv1's bias folded into
  // each block's projection bias) into time_proj_all_ and sets each block's time_col.
  void stack_time_projections(ModelLoader& l);
  std::vector<ResnetBlock*> resnets_in_order();
  // One GEMM for every cross-attention's K/V projection of the text context: stacks their
  // weights into context_kv_all_ and sets each layer's kv_col.
  void stack_context_projections(ModelLoader& l);
  std::vector<Attention*> cross_attentions();

  UNetConfig config_;
  Backend& backend_;
  Linear time_linear1_, time_linear2_;
  Linear time_proj_all_;  // [sum of ResNet widths, 4*C0]; undefined when not stacked
  Linear context_kv_all_;  // [sum of 2*inner over cross-attentions, context dim]; undefined when not stacked
  Conv2d conv_in_, conv_out_;
  GroupNorm norm_out_;
  std::vector<Level> down_, up_;
  ResnetBlock mid_res1_, mid_res2_;
  SpatialTransformer mid_attn_;
  size_t parameters_ = 0;
};

// Sinusoidal timestep features as diffusers' get_timestep_embedding computes them
// (flip_sin_to_cos, freq_shift), in double, returned as host f32 [B, dim].
Tensor timestep_features(const std::vector<double>& timesteps, int dim, bool flip_sin_to_cos, int freq_shift);

}  // namespace sd
