// Configuration detection from tensor shapes (diffusers naming), for single-file
// checkpoints whose configuration is not stored. Shapes tell the structure; what they cannot
// tell (head counts, activation, sample size) keeps the struct defaults for the caller to set.
#pragma once

#include "core/status.h"
#include "io/model_config.h"
#include "io/weights.h"

namespace sd {

// block_out_channels, layers_per_block, block types (attention per level), in/out channels,
// cross_attention_dim, use_linear_projection, transformer_layers_per_block. attention_heads
// gets one entry per level holding 8 (the SD 1.x convention).
StatusOr<UNetConfig> detect_unet_config(const WeightSource& unet);
// block_out_channels, layers_per_block, in/out/latent channels.
StatusOr<VAEConfig> detect_vae_config(const WeightSource& vae);
// vocab_size, hidden_size, intermediate_size, num_layers, max_positions; num_heads = hidden/64.
StatusOr<TextEncoderConfig> detect_text_encoder_config(const WeightSource& text_encoder);

}  // namespace sd
