// make-model: preset configurations, diffusers config.json writers, seeded random weights
// scaled by fan-in (so activations of a full-size random model stay finite in fp16), and
// the tokenizer files. Weights are deterministic in (seed, tensor name).
#include "pipeline/model_factory.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "core/half.h"
#include "io/safetensors.h"
#include "models/clip_text.h"
#include "models/unet.h"
#include "models/vae.h"
#include "tokenizer/bundled_vocab.h"

namespace sd {
namespace {

using json = nlohmann::json;
using ShapeList = std::vector<std::pair<std::string, Shape>>;

ModelPreset tiny_preset() {
  ModelPreset p;
  p.name = "tiny";
  p.text_encoder = {49408, 32, 37, 5, 4, 77, "quick_gelu", 1e-5f};
  p.unet.block_out_channels = {32, 32, 64, 64};
  p.unet.attention_heads = {4, 4, 4, 4};
  p.unet.cross_attention_dim = 32;
  p.unet.sample_size = 16;
  p.vae.block_out_channels = {32, 32, 64, 64};
  p.vae.sample_size = 128;
  return p;
}

ModelPreset sd21_preset() {
  ModelPreset p;
  p.name = "sd21";
  p.family = ModelFamily::kSD2;
  p.text_encoder = {49408, 1024, 4096, 23, 16, 77, "gelu", 1e-5f};
  p.unet.attention_heads = {5, 10, 20, 20};
  p.unet.cross_attention_dim = 1024;
  p.unet.use_linear_projection = true;
  p.unet.upcast_attention = true;
  p.unet.sample_size = 96;
  p.vae.sample_size = 768;
  p.scheduler.prediction_type = "v_prediction";
  p.pad_token = "!";
  return p;
}

json unet_json(const UNetConfig& c) {
  return {{"_class_name", "UNet2DConditionModel"}, {"act_fn", "silu"},
          {"attention_head_dim", c.attention_heads}, {"block_out_channels", c.block_out_channels},
          {"center_input_sample", false}, {"cross_attention_dim", c.cross_attention_dim},
          {"down_block_types", c.down_block_types}, {"downsample_padding", 1},
          {"flip_sin_to_cos", c.flip_sin_to_cos}, {"freq_shift", c.freq_shift},
          {"in_channels", c.in_channels}, {"layers_per_block", c.layers_per_block},
          {"mid_block_scale_factor", 1}, {"norm_eps", c.norm_eps}, {"norm_num_groups", c.norm_num_groups},
          {"out_channels", c.out_channels}, {"sample_size", c.sample_size},
          {"transformer_layers_per_block", c.transformer_layers_per_block},
          {"up_block_types", c.up_block_types}, {"upcast_attention", c.upcast_attention},
          {"use_linear_projection", c.use_linear_projection}};
}

json vae_json(const VAEConfig& c) {
  std::vector<std::string> down(c.block_out_channels.size(), "DownEncoderBlock2D");
  std::vector<std::string> up(c.block_out_channels.size(), "UpDecoderBlock2D");
  return {{"_class_name", "AutoencoderKL"}, {"act_fn", "silu"}, {"block_out_channels", c.block_out_channels},
          {"down_block_types", down}, {"up_block_types", up}, {"in_channels", c.in_channels},
          {"out_channels", c.out_channels}, {"latent_channels", c.latent_channels},
          {"layers_per_block", c.layers_per_block}, {"norm_num_groups", c.norm_num_groups},
          {"sample_size", c.sample_size}, {"scaling_factor", c.scaling_factor}};
}

json text_encoder_json(const TextEncoderConfig& c) {
  return {{"architectures", {"CLIPTextModel"}}, {"model_type", "clip_text_model"},
          {"hidden_act", c.hidden_act}, {"hidden_size", c.hidden_size},
          {"intermediate_size", c.intermediate_size}, {"num_hidden_layers", c.num_layers},
          {"num_attention_heads", c.num_heads}, {"max_position_embeddings", c.max_positions},
          {"vocab_size", c.vocab_size}, {"layer_norm_eps", c.layer_norm_eps},
          {"bos_token_id", 49406}, {"eos_token_id", 49407}, {"pad_token_id", 1}, {"dtype", "float16"}};
}

json scheduler_json(const SchedulerConfig& c) {
  return {{"_class_name", "PNDMScheduler"}, {"num_train_timesteps", c.num_train_timesteps},
          {"beta_start", c.beta_start}, {"beta_end", c.beta_end}, {"beta_schedule", c.beta_schedule},
          {"prediction_type", c.prediction_type}, {"timestep_spacing", c.timestep_spacing},
          {"steps_offset", c.steps_offset}, {"set_alpha_to_one", c.set_alpha_to_one},
          {"skip_prk_steps", true}, {"clip_sample", c.clip_sample}};
}

Status write_text(const std::filesystem::path& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary);
  f << text;
  if (!f) return Internal("cannot write " + path.string());
  return Status::Ok();
}

bool is_norm(const std::string& name) {
  return name.find("norm") != std::string::npos && name.size() > 7 &&
         name.compare(name.size() - 7, 7, ".weight") == 0;
}

// Seeded f16 tensor: N(0, 1/fan_in) for weights, 1 + N(0, 0.02) for norm scales,
// N(0, 0.02) for biases, norm shifts and embeddings.
Tensor random_weight(const std::string& name, const Shape& shape, uint64_t seed) {
  std::mt19937_64 gen(seed ^ std::hash<std::string>{}(name));
  std::normal_distribution<float> normal(0.f, 1.f);
  const bool embedding = name.find("embedding") != std::string::npos;
  float scale = 0.02f, offset = 0.f;
  if (shape.size() >= 2 && !embedding) {
    int64_t fan_in = 1;
    for (size_t i = 1; i < shape.size(); ++i) fan_in *= shape[i];
    scale = 1.0f / std::sqrt(static_cast<float>(fan_in));
  } else if (is_norm(name)) {
    offset = 1.f;
  }
  Tensor t = Tensor::empty_host(shape, DType::kF16);
  uint16_t* p = t.data<uint16_t>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = f32_to_f16(offset + scale * normal(gen));
  return t;
}

StatusOr<size_t> write_component(const std::filesystem::path& dir, const std::string& file, const json& config,
                                 const ShapeList& shapes, uint64_t seed, size_t* parameters) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Internal("cannot create " + dir.string() + ": " + ec.message());
  SD_RETURN_IF_ERROR(write_text(dir / "config.json", config.dump(2) + "\n"));
  std::vector<std::pair<std::string, Tensor>> tensors;
  size_t bytes = 0;
  for (const auto& [name, shape] : shapes) {
    tensors.emplace_back(name, random_weight(name, shape, seed));
    bytes += tensors.back().second.nbytes();
    *parameters += static_cast<size_t>(tensors.back().second.numel());
  }
  SD_RETURN_IF_ERROR(write_safetensors((dir / file).string(), tensors, {{"format", "pt"}}));
  return bytes;
}

}  // namespace

std::vector<std::string> model_preset_names() { return {"tiny", "sd15", "sd21"}; }

StatusOr<ModelPreset> model_preset(const std::string& name) {
  if (name == "tiny") return tiny_preset();
  if (name == "sd15") {
    ModelPreset p;  // the config structs default to SD 1.5
    p.name = "sd15";
    return p;
  }
  if (name == "sd21") return sd21_preset();
  return InvalidArgument("unknown preset '" + name + "' (valid: tiny, sd15, sd21)");
}

StatusOr<MakeModelReport> make_model(const ModelPreset& p, uint64_t seed, const std::string& out_dir) {
  namespace fs = std::filesystem;
  const fs::path root(out_dir);
  std::error_code ec;
  fs::create_directories(root / "tokenizer", ec);
  if (ec) return InvalidArgument("cannot create output folder " + out_dir + ": " + ec.message());
  MakeModelReport report;

  json index = {{"_class_name", "StableDiffusionPipeline"},
                {"_sdserve_preset", p.name},
                {"scheduler", {"diffusers", "PNDMScheduler"}},
                {"text_encoder", {"transformers", "CLIPTextModel"}},
                {"tokenizer", {"transformers", "CLIPTokenizer"}},
                {"unet", {"diffusers", "UNet2DConditionModel"}},
                {"vae", {"diffusers", "AutoencoderKL"}},
                {"safety_checker", {nullptr, nullptr}},
                {"feature_extractor", {nullptr, nullptr}},
                {"requires_safety_checker", false}};
  SD_RETURN_IF_ERROR(write_text(root / "model_index.json", index.dump(2) + "\n"));
  fs::create_directories(root / "scheduler", ec);
  SD_RETURN_IF_ERROR(write_text(root / "scheduler" / "scheduler_config.json", scheduler_json(p.scheduler).dump(2)));

  json tok = {{"bos_token", "<|startoftext|>"}, {"eos_token", "<|endoftext|>"}, {"unk_token", "<|endoftext|>"},
              {"pad_token", p.pad_token},       {"model_max_length", 77},          {"do_lower_case", true},
              {"tokenizer_class", "CLIPTokenizer"}};
  SD_RETURN_IF_ERROR(write_text(root / "tokenizer" / "tokenizer_config.json", tok.dump(2)));
  SD_RETURN_IF_ERROR(write_text(root / "tokenizer" / "vocab.json", std::string(tokenizer_detail::bundled_vocab_json())));
  SD_RETURN_IF_ERROR(write_text(root / "tokenizer" / "merges.txt", std::string(tokenizer_detail::bundled_merges_txt())));

  ShapeList unet = UNet::parameter_shapes(p.unet);
  if (!p.unet.use_linear_projection) {  // SD 1.x stores proj_in/proj_out as 1x1 convolutions
    for (auto& [name, shape] : unet) {
      if (shape.size() == 2 && (name.find(".proj_in.weight") != std::string::npos ||
                                name.find(".proj_out.weight") != std::string::npos)) {
        shape = {shape[0], shape[1], 1, 1};
      }
    }
  }
  size_t b = 0;
  SD_ASSIGN_OR_RETURN(b, write_component(root / "unet", "diffusion_pytorch_model.safetensors", unet_json(p.unet), unet,
                                         seed, &report.parameters));
  report.bytes += b;
  SD_ASSIGN_OR_RETURN(b, write_component(root / "vae", "diffusion_pytorch_model.safetensors", vae_json(p.vae),
                                         VAE::parameter_shapes(p.vae), seed + 1, &report.parameters));
  report.bytes += b;
  SD_ASSIGN_OR_RETURN(b, write_component(root / "text_encoder", "model.safetensors", text_encoder_json(p.text_encoder),
                                         ClipTextEncoder::parameter_shapes(p.text_encoder), seed + 2,
                                         &report.parameters));
  report.bytes += b;
  return report;
}

}  // namespace sd
