// Configuration of each model component, read from diffusers `config.json` files or
// detected from the tensors of a single-file checkpoint. Plain data: models/ and
// samplers/ build from these; io/checkpoint.cc fills them.
#pragma once

#include <string>
#include <vector>

#include "core/status.h"

namespace sd {

enum class ModelFamily { kSD1, kSD2 };
const char* family_name(ModelFamily family);  // "sd1", "sd2"

struct TextEncoderConfig {
  int vocab_size = 49408;
  int hidden_size = 768;
  int intermediate_size = 3072;
  int num_layers = 12;
  int num_heads = 12;
  int max_positions = 77;
  std::string hidden_act = "quick_gelu";  // "quick_gelu" | "gelu"
  float layer_norm_eps = 1e-5f;
  bool operator==(const TextEncoderConfig&) const = default;
};

struct UNetConfig {
  int in_channels = 4;
  int out_channels = 4;
  std::vector<int> block_out_channels = {320, 640, 1280, 1280};
  std::vector<std::string> down_block_types = {"CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                               "CrossAttnDownBlock2D", "DownBlock2D"};
  std::vector<std::string> up_block_types = {"UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                                             "CrossAttnUpBlock2D"};
  int layers_per_block = 2;
  // Per level: number of heads (diffusers' historically misnamed `attention_head_dim`).
  std::vector<int> attention_heads = {8, 8, 8, 8};
  int cross_attention_dim = 768;
  int norm_num_groups = 32;
  float norm_eps = 1e-5f;
  bool use_linear_projection = false;
  bool upcast_attention = false;
  bool flip_sin_to_cos = true;
  int freq_shift = 0;
  int transformer_layers_per_block = 1;
  int sample_size = 64;
  bool operator==(const UNetConfig&) const = default;
};

struct VAEConfig {
  int in_channels = 3;
  int out_channels = 3;
  int latent_channels = 4;
  std::vector<int> block_out_channels = {128, 256, 512, 512};
  int layers_per_block = 2;
  int norm_num_groups = 32;
  float scaling_factor = 0.18215f;
  int sample_size = 512;
  bool operator==(const VAEConfig&) const = default;
};

// The diffusion schedule the model was trained with (diffusers scheduler_config.json).
struct SchedulerConfig {
  int num_train_timesteps = 1000;
  double beta_start = 0.00085;
  double beta_end = 0.012;
  std::string beta_schedule = "scaled_linear";  // "scaled_linear" | "linear"
  std::string prediction_type = "epsilon";      // "epsilon" | "v_prediction"
  std::string timestep_spacing = "leading";     // "leading" | "trailing" | "linspace"
  int steps_offset = 1;
  bool set_alpha_to_one = false;
  bool clip_sample = false;
  bool operator==(const SchedulerConfig&) const = default;
};

struct TokenizerConfig {
  std::string vocab_path;   // vocab.json
  std::string merges_path;  // merges.txt
  std::string pad_token = "<|endoftext|>";  // SD 2.x: "!"
  int max_length = 77;
  bool operator==(const TokenizerConfig&) const = default;
};

// Parsing of the diffusers JSON files (`config.json`, `scheduler_config.json`,
// `tokenizer_config.json`). Missing keys keep the defaults above; wrong types, invalid
// values and features sdserve does not implement are errors naming `origin` and the key.
StatusOr<TextEncoderConfig> parse_text_encoder_config(const std::string& json_text, const std::string& origin);
StatusOr<UNetConfig> parse_unet_config(const std::string& json_text, const std::string& origin);
StatusOr<VAEConfig> parse_vae_config(const std::string& json_text, const std::string& origin);
StatusOr<SchedulerConfig> parse_scheduler_config(const std::string& json_text, const std::string& origin);
// Fills pad_token and max_length; the caller sets the vocabulary paths.
StatusOr<TokenizerConfig> parse_tokenizer_config(const std::string& json_text, const std::string& origin);

// Consistency checks shared by parsed and detected configurations.
Status validate_config(const TextEncoderConfig& config, const std::string& origin);
Status validate_config(const UNetConfig& config, const std::string& origin);
Status validate_config(const VAEConfig& config, const std::string& origin);
Status validate_config(const SchedulerConfig& config, const std::string& origin);

// One-paragraph readable summaries (for `sdserve inspect`).
std::string describe_config(const TextEncoderConfig& config);
std::string describe_config(const UNetConfig& config);
std::string describe_config(const VAEConfig& config);
std::string describe_config(const SchedulerConfig& config);

}  // namespace sd
