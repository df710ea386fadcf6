// Configuration of each model component, read from diffusers `config.json` files or
// detected from the tensors of a single-file checkpoint. Plain data: models/ and
// samplers/ build from these; io/checkpoint.cc fills them.
#pragma once

#include <string>
#include <vector>

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
};

struct TokenizerConfig {
  std::string vocab_path;   // vocab.json
  std::string merges_path;  // merges.txt
  std::string pad_token = "<|endoftext|>";  // SD 2.x: "!"
  int max_length = 77;
};

}  // namespace sd
