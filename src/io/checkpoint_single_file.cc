// Loader for single-file checkpoints in the original LDM layout: renames keys to diffusers
// names, detects the configuration from tensor shapes, applies the published SD 1.x / 2.x
// conventions for what shapes cannot tell, and lets an LDM yaml beside the file override them.
#include <cmath>

#include "io/checkpoint_loaders.h"
#include "io/config_detect.h"
#include "io/ldm_yaml.h"
#include "io/single_file_keys.h"

namespace sd {
namespace {

std::string yaml_path_for(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  const size_t dot = path.find_last_of('.');
  const std::string stem = dot != std::string::npos && (slash == std::string::npos || dot > slash) ? path.substr(0, dot) : path;
  return stem + ".yaml";
}

std::string list_str(const std::vector<int>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

// The yaml's structural fields must describe this checkpoint; a mismatch means it belongs
// to another model and its head counts cannot be trusted either.
Status check_yaml_matches(const LdmYamlConfig& y, const UNetConfig& unet, const std::string& yaml) {
  auto mismatch = [&](const std::string& field, const std::string& said, const std::string& found) {
    return InvalidArgument(yaml + ": " + field + " is " + said + " but the checkpoint's tensors say " + found +
                           " (is this yaml for another model?)");
  };
  if (y.context_dim && *y.context_dim != unet.cross_attention_dim) {
    return mismatch("context_dim", std::to_string(*y.context_dim), std::to_string(unet.cross_attention_dim));
  }
  if (y.use_linear_in_transformer && *y.use_linear_in_transformer != unet.use_linear_projection) {
    return mismatch("use_linear_in_transformer", *y.use_linear_in_transformer ? "true" : "false",
                    unet.use_linear_projection ? "true" : "false");
  }
  if (y.num_res_blocks && *y.num_res_blocks != unet.layers_per_block) {
    return mismatch("num_res_blocks", std::to_string(*y.num_res_blocks), std::to_string(unet.layers_per_block));
  }
  if (y.model_channels && y.channel_mult) {
    std::vector<int> channels;
    for (int m : *y.channel_mult) channels.push_back(*y.model_channels * m);
    if (channels != unet.block_out_channels) {
      return mismatch("model_channels x channel_mult", list_str(channels), list_str(unet.block_out_channels));
    }
  }
  return Status::Ok();
}

struct Sources {
  std::unique_ptr<WeightSource> text_encoder, unet, vae;
};

Sources make_sources(const std::shared_ptr<const SafetensorsFile>& file, const RenamePlan& plan) {
  std::map<std::string, TensorMapping> parts[3];
  for (const auto& t : plan.tensors) parts[static_cast<int>(t.component)][t.target] = t.mapping;
  Sources s;
  s.text_encoder = std::make_unique<SafetensorsWeightSource>(file, "text encoder",
                                                             std::move(parts[static_cast<int>(Component::kTextEncoder)]));
  s.unet = std::make_unique<SafetensorsWeightSource>(file, "UNet", std::move(parts[static_cast<int>(Component::kUNet)]));
  s.vae = std::make_unique<SafetensorsWeightSource>(file, "VAE", std::move(parts[static_cast<int>(Component::kVAE)]));
  return s;
}

}  // namespace

StatusOr<Checkpoint> load_single_file(const std::string& path) {
  Checkpoint ck;
  ck.path = path;
  ck.layout = CheckpointLayout::kSingleFile;

  // An LDM yaml beside the file (AUTOMATIC1111 convention) overrides the conventions.
  std::optional<LdmYamlConfig> yaml;
  const std::string yaml_path = yaml_path_for(path);
  if (file_exists(yaml_path)) {
    SD_ASSIGN_OR_RETURN(std::string text, read_text_file(yaml_path));
    SD_ASSIGN_OR_RETURN(yaml, parse_ldm_yaml(text, yaml_path));
    ck.config_source = "detected from tensor shapes, with " + yaml_path;
  } else {
    ck.config_source = "detected from tensor shapes and SD conventions (no " + yaml_path + ")";
  }

  SD_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> opened, SafetensorsFile::open(path));
  std::shared_ptr<const SafetensorsFile> file = std::move(opened);
  std::vector<std::pair<std::string, Shape>> keys;
  bool sdxl = false;
  for (const auto& e : file->entries()) {
    keys.emplace_back(e.name, e.shape);
    if (e.name.starts_with("conditioner.embedders.")) sdxl = true;
  }
  if (sdxl) return Unimplemented(path + ": SDXL checkpoints are not supported (sdserve runs SD 1.x and 2.x)");
  RenameOptions options;
  options.openclip_drop_last_layer = !(yaml && yaml->cond_stage_layer == "last");
  auto planned = plan_single_file_renaming(keys, options);
  if (!planned.ok()) return planned.status().with_context(path);
  RenamePlan plan = std::move(planned).value();
  size_t counts[3] = {0, 0, 0};
  for (const auto& t : plan.tensors) ++counts[static_cast<int>(t.component)];
  if (counts[static_cast<int>(Component::kUNet)] == 0) {
    return InvalidArgument(path + ": no model.diffusion_model.* tensors; not a Stable Diffusion single-file checkpoint");
  }
  if (counts[static_cast<int>(Component::kVAE)] == 0) return NotFound(path + ": no first_stage_model.* (VAE) tensors");
  if (plan.text_encoder_layout == TextEncoderLayout::kNone) {
    return NotFound(path + ": no cond_stage_model.* (text encoder) tensors");
  }
  ck.ignored_tensors = plan.ignored.size();
  ck.unknown_tensors = plan.unknown;

  Sources sources = make_sources(file, plan);
  SD_ASSIGN_OR_RETURN(ck.text_encoder, detect_text_encoder_config(*sources.text_encoder));
  SD_ASSIGN_OR_RETURN(ck.unet, detect_unet_config(*sources.unet));
  SD_ASSIGN_OR_RETURN(ck.vae, detect_vae_config(*sources.vae));
  ck.text_encoder_weights = std::move(sources.text_encoder);
  ck.unet_weights = std::move(sources.unet);
  ck.vae_weights = std::move(sources.vae);

  const bool openclip = plan.text_encoder_layout == TextEncoderLayout::kOpenCLIP;
  ck.family = openclip ? ModelFamily::kSD2 : family_from_configs(ck.text_encoder, ck.unet);
  const bool sd2 = ck.family == ModelFamily::kSD2;
  if (openclip && plan.openclip_dropped_layers > 0) {
    ck.notes.push_back("OpenCLIP text encoder: last of " + std::to_string(ck.text_encoder.num_layers + 1) +
                       " layers left out (SD 2.x conditions on the penultimate layer, as in diffusers)");
  }

  // Text encoder: activation by family, heads = hidden / 64 unless the yaml says otherwise.
  ck.text_encoder.hidden_act = sd2 ? "gelu" : "quick_gelu";
  if (yaml && yaml->text_encoder_num_heads) ck.text_encoder.num_heads = *yaml->text_encoder_num_heads;

  // UNet heads: SD 1.x 8 per level, SD 2.x 64 channels per head; the yaml overrides.
  if (yaml) SD_RETURN_IF_ERROR(check_yaml_matches(*yaml, ck.unet, yaml_path));
  if (yaml && yaml->unet_attention_heads && yaml->unet_attention_heads->size() != ck.unet.block_out_channels.size()) {
    return InvalidArgument(yaml_path + ": sdserve.unet_attention_heads needs one entry per UNet level (" +
                           std::to_string(ck.unet.block_out_channels.size()) + ")");
  }
  for (size_t i = 0; i < ck.unet.block_out_channels.size(); ++i) {
    const int ch = ck.unet.block_out_channels[i];
    int heads = sd2 ? ch / 64 : 8;
    if (yaml && yaml->unet_attention_heads) heads = i < yaml->unet_attention_heads->size() ? (*yaml->unet_attention_heads)[i] : 0;
    else if (yaml && yaml->num_heads) heads = *yaml->num_heads;
    else if (yaml && yaml->num_head_channels) heads = ch / *yaml->num_head_channels;
    ck.unet.attention_heads[i] = heads;
  }
  ck.unet.upcast_attention = sd2;

  // Schedule: the SD defaults; SD 2.x files default to v-prediction (the 768-px models).
  if (yaml) {
    ck.scheduler.prediction_type = yaml->parameterization.value_or("eps") == "v" ? "v_prediction" : "epsilon";
    if (yaml->linear_start) ck.scheduler.beta_start = *yaml->linear_start;
    if (yaml->linear_end) ck.scheduler.beta_end = *yaml->linear_end;
    if (yaml->timesteps) ck.scheduler.num_train_timesteps = *yaml->timesteps;
    if (yaml->scale_factor) ck.vae.scaling_factor = static_cast<float>(*yaml->scale_factor);
  } else if (sd2) {
    ck.scheduler.prediction_type = "v_prediction";
    ck.notes.push_back("SD 2.x single file without a yaml: assuming v-prediction (the 768-px models); put a yaml "
                       "without `parameterization: \"v\"` beside the file for an epsilon (512-base) model");
  }

  // Native size: 768 px for SD 2.x v-models, else 512, unless the yaml's sdserve.image_size says.
  const bool v = ck.scheduler.prediction_type == "v_prediction";
  const int image_size = yaml && yaml->image_size ? *yaml->image_size : (sd2 && v ? 768 : 512);
  const int vae_factor = 1 << (ck.vae.block_out_channels.size() - 1);
  ck.vae.sample_size = image_size;
  ck.unet.sample_size = image_size / vae_factor;

  ck.tokenizer = TokenizerConfig{};
  ck.tokenizer.pad_token = sd2 ? "!" : "<|endoftext|>";
  ck.tokenizer.max_length = ck.text_encoder.max_positions;

  SD_RETURN_IF_ERROR(validate_config(ck.text_encoder, path + " (text encoder, detected)"));
  SD_RETURN_IF_ERROR(validate_config(ck.unet, path + " (UNet, detected)"));
  SD_RETURN_IF_ERROR(validate_config(ck.vae, path + " (VAE, detected)"));
  SD_RETURN_IF_ERROR(validate_config(ck.scheduler, yaml ? yaml_path : path));
  return ck;
}

}  // namespace sd
