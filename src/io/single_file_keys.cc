// Key renaming from the original LDM single-file layout to diffusers names (the mapping
// diffusers' conversion scripts apply): UNet input/middle/output blocks -> down/mid/up
// blocks, VAE down/up (decoder levels reversed), CLIP prefix strip, OpenCLIP q/k/v split.
#include "io/single_file_keys.h"

#include <algorithm>
#include <map>
#include <optional>
#include <set>
#include <string_view>

namespace sd {

const char* component_name(Component component) {
  switch (component) {
    case Component::kTextEncoder: return "text encoder";
    case Component::kUNet: return "UNet";
    case Component::kVAE: return "VAE";
  }
  return "?";
}

namespace {

using Name = std::optional<std::string>;

bool take(std::string_view& s, std::string_view prefix) {
  if (s.substr(0, prefix.size()) != prefix) return false;
  s.remove_prefix(prefix.size());
  return true;
}

// Consumes "<digits>." and returns the number.
bool take_index(std::string_view& s, int* out) {
  size_t i = 0;
  int v = 0;
  while (i < s.size() && i < 6 && s[i] >= '0' && s[i] <= '9') v = v * 10 + (s[i++] - '0');
  if (i == 0 || i >= s.size() || s[i] != '.') return false;
  *out = v;
  s.remove_prefix(i + 1);
  return true;
}

bool is_param(std::string_view s) { return s == "weight" || s == "bias"; }

std::string idx(int i) { return std::to_string(i) + "."; }

// Renames the inside of a block by the first matching prefix; the rest must be weight/bias.
Name map_tail(std::string_view tail, std::initializer_list<std::pair<std::string_view, std::string_view>> table) {
  for (const auto& [from, to] : table) {
    std::string_view rest = tail;
    if (take(rest, from) && is_param(rest)) return std::string(to) + std::string(rest);
  }
  return std::nullopt;
}

Name unet_resnet(std::string_view tail) {
  return map_tail(tail, {{"in_layers.0.", "norm1."},
                         {"in_layers.2.", "conv1."},
                         {"emb_layers.1.", "time_emb_proj."},
                         {"out_layers.0.", "norm2."},
                         {"out_layers.3.", "conv2."},
                         {"skip_connection.", "conv_shortcut."}});
}

// Spatial transformers keep their inner names (norm, proj_in/out, transformer_blocks.*).
Name unet_attention(std::string_view tail) {
  if (tail.size() < 6) return std::nullopt;
  const bool param = tail.ends_with(".weight") || tail.ends_with(".bias");
  if (!param) return std::nullopt;
  for (std::string_view p : {"norm.", "proj_in.", "proj_out.", "transformer_blocks."}) {
    if (tail.substr(0, p.size()) == p) return std::string(tail);
  }
  return std::nullopt;
}

Name prefixed(const std::string& prefix, const Name& inner) {
  return inner ? Name(prefix + *inner) : std::nullopt;
}

// `rest` follows "model.diffusion_model."; n = layers per block.
Name rename_unet(std::string_view key_rest, int n) {
  int i = 0, j = 0;
  std::string_view rest = key_rest;
  if (take(rest, "time_embed.") && take_index(rest, &i) && is_param(rest)) {
    if (i == 0) return "time_embedding.linear_1." + std::string(rest);
    if (i == 2) return "time_embedding.linear_2." + std::string(rest);
    return std::nullopt;
  }
  rest = key_rest;
  if (take(rest, "out.") && take_index(rest, &i) && is_param(rest)) {
    if (i == 0) return "conv_norm_out." + std::string(rest);
    if (i == 2) return "conv_out." + std::string(rest);
    return std::nullopt;
  }
  rest = key_rest;
  if (take(rest, "input_blocks.") && take_index(rest, &i) && take_index(rest, &j)) {
    if (i == 0) return j == 0 && is_param(rest) ? Name("conv_in." + std::string(rest)) : std::nullopt;
    const int block = (i - 1) / (n + 1), layer = (i - 1) % (n + 1);
    const std::string down = "down_blocks." + idx(block);
    if (layer == n) {
      return j == 0 && take(rest, "op.") && is_param(rest) ? Name(down + "downsamplers.0.conv." + std::string(rest))
                                                           : std::nullopt;
    }
    if (j == 0) return prefixed(down + "resnets." + idx(layer), unet_resnet(rest));
    if (j == 1) return prefixed(down + "attentions." + idx(layer), unet_attention(rest));
    return std::nullopt;
  }
  rest = key_rest;
  if (take(rest, "middle_block.") && take_index(rest, &j)) {
    if (j == 0) return prefixed("mid_block.resnets.0.", unet_resnet(rest));
    if (j == 1) return prefixed("mid_block.attentions.0.", unet_attention(rest));
    if (j == 2) return prefixed("mid_block.resnets.1.", unet_resnet(rest));
    return std::nullopt;
  }
  rest = key_rest;
  if (take(rest, "output_blocks.") && take_index(rest, &i) && take_index(rest, &j)) {
    const int block = i / (n + 1), layer = i % (n + 1);
    const std::string up = "up_blocks." + idx(block);
    if (j == 0) return prefixed(up + "resnets." + idx(layer), unet_resnet(rest));
    std::string_view conv = rest;
    if ((j == 1 || j == 2) && take(conv, "conv.") && is_param(conv)) {
      return up + "upsamplers.0.conv." + std::string(conv);
    }
    if (j == 1) return prefixed(up + "attentions." + idx(layer), unet_attention(rest));
    return std::nullopt;
  }
  return std::nullopt;
}

Name vae_resnet(std::string_view tail) {
  return map_tail(tail, {{"norm1.", "norm1."}, {"conv1.", "conv1."}, {"norm2.", "norm2."}, {"conv2.", "conv2."},
                         {"nin_shortcut.", "conv_shortcut."}});
}

// `rest` follows "first_stage_model."; up_levels = number of decoder levels.
Name rename_vae(std::string_view side_rest, int up_levels, bool* attention_weight) {
  std::string_view rest = side_rest;
  *attention_weight = false;
  for (std::string_view conv : {"quant_conv.", "post_quant_conv."}) {
    std::string_view r = rest;
    if (take(r, conv) && is_param(r)) return std::string(conv) + std::string(r);
  }
  std::string side;
  if (take(rest, "encoder.")) side = "encoder.";
  else if (take(rest, "decoder.")) side = "decoder.";
  else return std::nullopt;
  if (Name n = map_tail(rest, {{"conv_in.", "conv_in."}, {"conv_out.", "conv_out."}, {"norm_out.", "conv_norm_out."}})) {
    return side + *n;
  }
  int i = 0, j = 0;
  const std::string_view inner = rest;
  if (side == "encoder." && take(rest, "down.") && take_index(rest, &i)) {
    const std::string down = "encoder.down_blocks." + idx(i);
    std::string_view r = rest;
    if (take(r, "block.") && take_index(r, &j)) return prefixed(down + "resnets." + idx(j), vae_resnet(r));
    if (take(rest, "downsample.conv.") && is_param(rest)) return down + "downsamplers.0.conv." + std::string(rest);
    return std::nullopt;
  }
  rest = inner;
  if (side == "decoder." && take(rest, "up.") && take_index(rest, &i)) {
    if (i >= up_levels) return std::nullopt;
    const std::string up = "decoder.up_blocks." + idx(up_levels - 1 - i);  // LDM counts from the bottom
    std::string_view r = rest;
    if (take(r, "block.") && take_index(r, &j)) return prefixed(up + "resnets." + idx(j), vae_resnet(r));
    if (take(rest, "upsample.conv.") && is_param(rest)) return up + "upsamplers.0.conv." + std::string(rest);
    return std::nullopt;
  }
  rest = inner;
  if (take(rest, "mid.")) {
    const std::string mid = side + "mid_block.";
    std::string_view r = rest;
    if (take(r, "block_1.")) return prefixed(mid + "resnets.0.", vae_resnet(r));
    r = rest;
    if (take(r, "block_2.")) return prefixed(mid + "resnets.1.", vae_resnet(r));
    if (take(rest, "attn_1.")) {
      Name n = map_tail(rest, {{"norm.", "group_norm."}, {"q.", "to_q."}, {"k.", "to_k."}, {"v.", "to_v."},
                               {"proj_out.", "to_out.0."}});
      *attention_weight = n && rest != "norm.weight" && rest.ends_with("weight");
      return prefixed(mid + "attentions.0.", n);
    }
  }
  return std::nullopt;
}

// `rest` follows "cond_stage_model.transformer." (CLIP); may or may not start "text_model.".
Name rename_clip(std::string_view rest) {
  take(rest, "text_model.");
  for (std::string_view p : {"embeddings.token_embedding.", "embeddings.position_embedding.", "encoder.layers.",
                             "final_layer_norm."}) {
    if (rest.substr(0, p.size()) == p && (rest.ends_with(".weight") || rest.ends_with(".bias"))) {
      return "text_model." + std::string(rest);
    }
  }
  return std::nullopt;
}

const std::set<std::string, std::less<>>& schedule_buffers() {
  static const std::set<std::string, std::less<>> names = {
      "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
      "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
      "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
      "logvar", "lvlb_weights", "model_ema.decay", "model_ema.num_updates"};
  return names;
}

}  // namespace

StatusOr<RenamePlan> plan_single_file_renaming(const std::vector<std::pair<std::string, Shape>>& keys,
                                               const RenameOptions& options) {
  RenamePlan plan;
  // Layout facts the renaming depends on.
  int first_downsampler = -1, max_input_block = -1, max_decoder_up = -1, max_resblock = -1;
  bool clip = false, openclip = false;
  for (const auto& [key, shape] : keys) {
    std::string_view s = key;
    int i = 0, j = 0;
    if (take(s, "model.diffusion_model.input_blocks.") && take_index(s, &i)) {
      max_input_block = std::max(max_input_block, i);
      if (take_index(s, &j) && j == 0 && s.substr(0, 3) == "op.") {
        first_downsampler = first_downsampler < 0 ? i : std::min(first_downsampler, i);
      }
    }
    s = key;
    if (take(s, "first_stage_model.decoder.up.") && take_index(s, &i)) max_decoder_up = std::max(max_decoder_up, i);
    s = key;
    if (take(s, "cond_stage_model.transformer.")) clip = true;
    s = key;
    if (take(s, "cond_stage_model.model.")) {
      openclip = true;
      if (take(s, "transformer.resblocks.") && take_index(s, &i)) max_resblock = std::max(max_resblock, i);
    }
  }
  if (clip && openclip) {
    return InvalidArgument("checkpoint has both CLIP (cond_stage_model.transformer.*) and OpenCLIP "
                           "(cond_stage_model.model.*) text encoder tensors");
  }
  plan.text_encoder_layout = clip ? TextEncoderLayout::kCLIP : openclip ? TextEncoderLayout::kOpenCLIP
                                                                        : TextEncoderLayout::kNone;
  const int n = first_downsampler > 0 ? first_downsampler - 1 : std::max(max_input_block, 1);
  plan.unet_layers_per_block = n;
  const int up_levels = max_decoder_up + 1;
  const int dropped_block = options.openclip_drop_last_layer && max_resblock > 0 ? max_resblock : -1;
  plan.openclip_dropped_layers = dropped_block >= 0 ? 1 : 0;

  std::set<std::pair<Component, std::string>> targets;
  auto add = [&](Component c, std::string target, TensorMapping m) -> Status {
    if (!targets.insert({c, target}).second) {
      return InvalidArgument("two tensors map to " + std::string(component_name(c)) + " tensor '" + target +
                             "' (second: '" + m.source + "')");
    }
    plan.tensors.push_back({c, std::move(target), std::move(m)});
    return Status::Ok();
  };

  for (const auto& [key, shape] : keys) {
    std::string_view rest = key;
    if (take(rest, "model.diffusion_model.")) {
      if (Name t = rename_unet(rest, n)) {
        SD_RETURN_IF_ERROR(add(Component::kUNet, *t, {key, shape, 0, 1}));
        continue;
      }
    } else if (take(rest, "first_stage_model.")) {
      bool attention_weight = false;
      if (Name t = rename_vae(rest, up_levels, &attention_weight)) {
        Shape target_shape = shape;
        if (attention_weight && shape.size() == 4 && shape[2] == 1 && shape[3] == 1) {
          target_shape = {shape[0], shape[1]};  // 1x1 conv kernel [C, C, 1, 1] -> linear [C, C]
        }
        SD_RETURN_IF_ERROR(add(Component::kVAE, *t, {key, target_shape, 0, 1}));
        continue;
      }
      if (rest.substr(0, 5) == "loss.") {
        plan.ignored.push_back(key);
        continue;
      }
    } else if (take(rest, "cond_stage_model.transformer.")) {
      if (rest.ends_with("position_ids")) {
        plan.ignored.push_back(key);
        continue;
      }
      if (Name t = rename_clip(rest)) {
        SD_RETURN_IF_ERROR(add(Component::kTextEncoder, *t, {key, shape, 0, 1}));
        continue;
      }
    } else if (take(rest, "cond_stage_model.model.")) {
      const std::string te = "text_model.";
      if (rest == "token_embedding.weight") {
        SD_RETURN_IF_ERROR(add(Component::kTextEncoder, te + "embeddings.token_embedding.weight", {key, shape, 0, 1}));
        continue;
      }
      if (rest == "positional_embedding") {
        SD_RETURN_IF_ERROR(add(Component::kTextEncoder, te + "embeddings.position_embedding.weight", {key, shape, 0, 1}));
        continue;
      }
      if (Name t = map_tail(rest, {{"ln_final.", "final_layer_norm."}})) {
        SD_RETURN_IF_ERROR(add(Component::kTextEncoder, te + *t, {key, shape, 0, 1}));
        continue;
      }
      if (rest == "text_projection" || rest == "logit_scale" || rest == "attn_mask" || rest.substr(0, 7) == "visual.") {
        plan.ignored.push_back(key);
        continue;
      }
      int layer = 0;
      if (take(rest, "transformer.resblocks.") && take_index(rest, &layer)) {
        if (layer == dropped_block) {
          plan.ignored.push_back(key);
          continue;
        }
        const std::string prefix = te + "encoder.layers." + idx(layer);
        if (rest == "attn.in_proj_weight" || rest == "attn.in_proj_bias") {
          // Fused [3C, C] / [3C] -> q, k, v rows.
          if (shape.empty() || shape[0] % 3 != 0 || shape[0] == 0) {
            return InvalidArgument("tensor '" + key + "' of shape " + shape_str(shape) +
                                   " cannot be split into q/k/v (first dimension must be a multiple of 3)");
          }
          const std::string param = rest == "attn.in_proj_weight" ? "weight" : "bias";
          Shape part = shape;
          part[0] /= 3;
          const char* proj[3] = {"q_proj.", "k_proj.", "v_proj."};
          for (int k = 0; k < 3; ++k) {
            SD_RETURN_IF_ERROR(add(Component::kTextEncoder, prefix + "self_attn." + proj[k] + param, {key, part, k, 3}));
          }
          continue;
        }
        if (Name t = map_tail(rest, {{"ln_1.", "layer_norm1."}, {"ln_2.", "layer_norm2."},
                                     {"attn.out_proj.", "self_attn.out_proj."}, {"mlp.c_fc.", "mlp.fc1."},
                                     {"mlp.c_proj.", "mlp.fc2."}})) {
          SD_RETURN_IF_ERROR(add(Component::kTextEncoder, prefix + *t, {key, shape, 0, 1}));
          continue;
        }
      }
    } else if (schedule_buffers().count(key) || key.starts_with("model_ema.")) {
      plan.ignored.push_back(key);
      continue;
    }
    plan.unknown.push_back(key);
  }
  return plan;
}

}  // namespace sd
