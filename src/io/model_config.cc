// Parsing and validation of the diffusers configuration files into the plain config structs,
// plus readable summaries. JSON comes from user folders: every type error or unsupported
// feature is a Status naming the file and the key, never an exception or a silent default.
#include "io/model_config.h"

#include <cmath>
#include <nlohmann/json.hpp>
#include <sstream>

namespace sd {

const char* family_name(ModelFamily family) {
  switch (family) {
    case ModelFamily::kSD1: return "sd1";
    case ModelFamily::kSD2: return "sd2";
  }
  return "?";
}

namespace {

using json = nlohmann::json;

// Reads typed fields of one JSON object; remembers the first error.
class Fields {
 public:
  Fields(const json& j, std::string origin) : j_(j), origin_(std::move(origin)) {}
  const Status& status() const { return status_; }

  const json* find(const char* key) const {
    auto it = j_.find(key);
    return it == j_.end() || it->is_null() ? nullptr : &*it;
  }
  void fail(const char* key, const std::string& what) {
    if (status_.ok()) status_ = InvalidArgument(origin_ + ": '" + key + "' " + what);
  }
  void get(const char* key, int* out) {
    const json* v = find(key);
    if (!v) return;
    if (!v->is_number_integer() || v->get<int64_t>() < INT32_MIN || v->get<int64_t>() > INT32_MAX) {
      return fail(key, "must be an integer, got " + v->dump());
    }
    *out = v->get<int>();
  }
  void get(const char* key, double* out) {
    const json* v = find(key);
    if (!v) return;
    if (!v->is_number()) return fail(key, "must be a number, got " + v->dump());
    *out = v->get<double>();
  }
  void get(const char* key, float* out) {
    double d = *out;
    get(key, &d);
    *out = static_cast<float>(d);
  }
  void get(const char* key, bool* out) {
    const json* v = find(key);
    if (!v) return;
    if (!v->is_boolean()) return fail(key, "must be true or false, got " + v->dump());
    *out = v->get<bool>();
  }
  void get(const char* key, std::string* out) {
    const json* v = find(key);
    if (!v) return;
    if (!v->is_string()) return fail(key, "must be a string, got " + v->dump());
    *out = v->get<std::string>();
  }
  void get(const char* key, std::vector<int>* out) {
    const json* v = find(key);
    if (!v) return;
    if (!v->is_array()) return fail(key, "must be a list of integers, got " + v->dump());
    std::vector<int> r;
    for (const json& x : *v) {
      if (!x.is_number_integer() || x.get<int64_t>() < INT32_MIN || x.get<int64_t>() > INT32_MAX) {
        return fail(key, "must be a list of integers, got " + v->dump());
      }
      r.push_back(x.get<int>());
    }
    *out = r;
  }
  void get(const char* key, std::vector<std::string>* out) {
    const json* v = find(key);
    if (!v) return;
    if (!v->is_array()) return fail(key, "must be a list of strings, got " + v->dump());
    std::vector<std::string> r;
    for (const json& x : *v) {
      if (!x.is_string()) return fail(key, "must be a list of strings, got " + v->dump());
      r.push_back(x.get<std::string>());
    }
    *out = r;
  }
  // An int applying to every level, or one value per level.
  void get_per_level(const char* key, std::vector<int>* out, size_t levels) {
    const json* v = find(key);
    if (!v) return;
    if (v->is_number_integer()) {
      int x = 0;
      get(key, &x);
      *out = std::vector<int>(levels, x);
    } else {
      get(key, out);
    }
  }
  // Keys naming features sdserve does not implement must be absent/null or hold the default.
  void require_null(const char* key) {
    if (find(key)) unimplemented(key, j_.at(key).dump());
  }
  template <typename T>
  void require_value(const char* key, const T& expected) {
    const json* v = find(key);
    if (v && *v != json(expected)) unimplemented(key, v->dump());
  }
  void unimplemented(const char* key, const std::string& value) {
    if (status_.ok()) status_ = Unimplemented(origin_ + ": '" + key + "' = " + value + " is not supported by sdserve");
  }

 private:
  const json& j_;
  std::string origin_;
  Status status_;
};

StatusOr<json> parse_object(const std::string& text, const std::string& origin) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return InvalidArgument(origin + ": not valid JSON");
  if (!j.is_object()) return InvalidArgument(origin + ": expected a JSON object");
  return j;
}

std::string join(const std::vector<int>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

bool all_positive(const std::vector<int>& v) {
  for (int x : v)
    if (x <= 0) return false;
  return !v.empty();
}

}  // namespace

StatusOr<TextEncoderConfig> parse_text_encoder_config(const std::string& json_text, const std::string& origin) {
  SD_ASSIGN_OR_RETURN(json j, parse_object(json_text, origin));
  TextEncoderConfig c;
  Fields f(j, origin);
  f.get("vocab_size", &c.vocab_size);
  f.get("hidden_size", &c.hidden_size);
  f.get("intermediate_size", &c.intermediate_size);
  f.get("num_hidden_layers", &c.num_layers);
  f.get("num_attention_heads", &c.num_heads);
  f.get("max_position_embeddings", &c.max_positions);
  f.get("hidden_act", &c.hidden_act);
  f.get("layer_norm_eps", &c.layer_norm_eps);
  SD_RETURN_IF_ERROR(f.status());
  SD_RETURN_IF_ERROR(validate_config(c, origin));
  return c;
}

StatusOr<UNetConfig> parse_unet_config(const std::string& json_text, const std::string& origin) {
  SD_ASSIGN_OR_RETURN(json j, parse_object(json_text, origin));
  UNetConfig c;
  Fields f(j, origin);
  f.get("in_channels", &c.in_channels);
  f.get("out_channels", &c.out_channels);
  f.get("block_out_channels", &c.block_out_channels);
  f.get("down_block_types", &c.down_block_types);
  f.get("up_block_types", &c.up_block_types);
  f.get("layers_per_block", &c.layers_per_block);
  // diffusers: `num_attention_heads or attention_head_dim`, both meaning heads per level.
  const size_t levels = c.block_out_channels.size();
  if (f.find("num_attention_heads")) {
    f.get_per_level("num_attention_heads", &c.attention_heads, levels);
  } else {
    f.get_per_level("attention_head_dim", &c.attention_heads, levels);
  }
  f.get("cross_attention_dim", &c.cross_attention_dim);
  f.get("norm_num_groups", &c.norm_num_groups);
  f.get("norm_eps", &c.norm_eps);
  f.get("use_linear_projection", &c.use_linear_projection);
  f.get("upcast_attention", &c.upcast_attention);
  f.get("flip_sin_to_cos", &c.flip_sin_to_cos);
  f.get("freq_shift", &c.freq_shift);
  if (const json* t = f.find("transformer_layers_per_block"); t && t->is_array()) {
    std::vector<int> per_level;
    f.get("transformer_layers_per_block", &per_level);
    for (int x : per_level)
      if (!per_level.empty() && x != per_level[0]) f.unimplemented("transformer_layers_per_block", t->dump());
    if (!per_level.empty()) c.transformer_layers_per_block = per_level[0];
  } else {
    f.get("transformer_layers_per_block", &c.transformer_layers_per_block);
  }
  f.get("sample_size", &c.sample_size);
  // Variants (SDXL, LCM, class-conditioned, ...) whose extra parts sdserve does not build.
  for (const char* key : {"addition_embed_type", "class_embed_type", "time_cond_proj_dim", "encoder_hid_dim",
                          "encoder_hid_dim_type", "num_class_embeds", "projection_class_embeddings_input_dim"}) {
    f.require_null(key);
  }
  f.require_value("act_fn", "silu");
  f.require_value("mid_block_type", "UNetMidBlock2DCrossAttn");
  f.require_value("resnet_time_scale_shift", "default");
  f.require_value("time_embedding_type", "positional");
  f.require_value("only_cross_attention", false);
  f.require_value("dual_cross_attention", false);
  f.require_value("center_input_sample", false);
  f.require_value("conv_in_kernel", 3);
  f.require_value("conv_out_kernel", 3);
  f.require_value("mid_block_scale_factor", 1);
  f.require_value("downsample_padding", 1);
  SD_RETURN_IF_ERROR(f.status());
  SD_RETURN_IF_ERROR(validate_config(c, origin));
  return c;
}

StatusOr<VAEConfig> parse_vae_config(const std::string& json_text, const std::string& origin) {
  SD_ASSIGN_OR_RETURN(json j, parse_object(json_text, origin));
  VAEConfig c;
  Fields f(j, origin);
  f.get("in_channels", &c.in_channels);
  f.get("out_channels", &c.out_channels);
  f.get("latent_channels", &c.latent_channels);
  f.get("block_out_channels", &c.block_out_channels);
  f.get("layers_per_block", &c.layers_per_block);
  f.get("norm_num_groups", &c.norm_num_groups);
  f.get("scaling_factor", &c.scaling_factor);
  f.get("sample_size", &c.sample_size);
  f.require_null("shift_factor");
  f.require_value("act_fn", "silu");
  f.require_value("use_quant_conv", true);
  f.require_value("use_post_quant_conv", true);
  f.require_value("mid_block_add_attention", true);
  SD_RETURN_IF_ERROR(f.status());
  SD_RETURN_IF_ERROR(validate_config(c, origin));
  return c;
}

StatusOr<SchedulerConfig> parse_scheduler_config(const std::string& json_text, const std::string& origin) {
  SD_ASSIGN_OR_RETURN(json j, parse_object(json_text, origin));
  SchedulerConfig c;
  Fields f(j, origin);
  f.get("num_train_timesteps", &c.num_train_timesteps);
  f.get("beta_start", &c.beta_start);
  f.get("beta_end", &c.beta_end);
  f.get("beta_schedule", &c.beta_schedule);
  f.get("prediction_type", &c.prediction_type);
  f.get("timestep_spacing", &c.timestep_spacing);
  f.get("steps_offset", &c.steps_offset);
  f.get("set_alpha_to_one", &c.set_alpha_to_one);
  f.get("clip_sample", &c.clip_sample);
  f.require_null("trained_betas");
  f.require_value("rescale_betas_zero_snr", false);
  f.require_value("thresholding", false);
  SD_RETURN_IF_ERROR(f.status());
  SD_RETURN_IF_ERROR(validate_config(c, origin));
  return c;
}

StatusOr<TokenizerConfig> parse_tokenizer_config(const std::string& json_text, const std::string& origin) {
  SD_ASSIGN_OR_RETURN(json j, parse_object(json_text, origin));
  TokenizerConfig c;
  // pad_token is a string, or an AddedToken object {"content": ...} in older files.
  if (auto it = j.find("pad_token"); it != j.end() && !it->is_null()) {
    if (it->is_string()) {
      c.pad_token = it->get<std::string>();
    } else if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
      c.pad_token = (*it)["content"].get<std::string>();
    } else {
      return InvalidArgument(origin + ": 'pad_token' must be a string, got " + it->dump());
    }
    if (c.pad_token.empty()) return InvalidArgument(origin + ": 'pad_token' is empty");
  }
  // model_max_length is sometimes a huge sentinel (1e30): only a sane value overrides 77.
  if (auto it = j.find("model_max_length"); it != j.end() && it->is_number()) {
    const double v = it->get<double>();
    if (v >= 2 && v <= 4096 && v == std::floor(v)) c.max_length = static_cast<int>(v);
  }
  return c;
}

Status validate_config(const TextEncoderConfig& c, const std::string& origin) {
  if (c.vocab_size <= 0 || c.hidden_size <= 0 || c.intermediate_size <= 0 || c.num_layers <= 0 ||
      c.num_heads <= 0 || c.max_positions <= 0) {
    return InvalidArgument(origin + ": text encoder sizes must be positive");
  }
  if (c.hidden_size % c.num_heads != 0) {
    return InvalidArgument(origin + ": text encoder hidden_size " + std::to_string(c.hidden_size) +
                           " is not divisible by num_attention_heads " + std::to_string(c.num_heads));
  }
  if (c.hidden_act != "quick_gelu" && c.hidden_act != "gelu") {
    return Unimplemented(origin + ": text encoder hidden_act '" + c.hidden_act + "' (supported: quick_gelu, gelu)");
  }
  if (!(c.layer_norm_eps > 0)) return InvalidArgument(origin + ": layer_norm_eps must be positive");
  return Status::Ok();
}

Status validate_config(const UNetConfig& c, const std::string& origin) {
  const size_t levels = c.block_out_channels.size();
  if (!all_positive(c.block_out_channels)) return InvalidArgument(origin + ": UNet block_out_channels must be positive");
  if (c.down_block_types.size() != levels || c.up_block_types.size() != levels || c.attention_heads.size() != levels) {
    return InvalidArgument(origin + ": UNet block_out_channels, down/up_block_types and attention heads need one entry per level (" +
                           std::to_string(levels) + ")");
  }
  for (size_t i = 0; i < levels; ++i) {
    const std::string& d = c.down_block_types[i];
    const std::string& u = c.up_block_types[levels - 1 - i];
    if (d != "CrossAttnDownBlock2D" && d != "DownBlock2D") return Unimplemented(origin + ": UNet down block type '" + d + "'");
    if (u != "CrossAttnUpBlock2D" && u != "UpBlock2D") return Unimplemented(origin + ": UNet up block type '" + u + "'");
    if ((d == "CrossAttnDownBlock2D") != (u == "CrossAttnUpBlock2D")) {
      return Unimplemented(origin + ": UNet level " + std::to_string(i) + " has attention on one side only");
    }
    const int heads = c.attention_heads[i];
    if (heads <= 0 || c.block_out_channels[i] % heads != 0) {
      return InvalidArgument(origin + ": UNet level " + std::to_string(i) + ": " + std::to_string(heads) +
                             " heads do not divide " + std::to_string(c.block_out_channels[i]) + " channels");
    }
    if (c.block_out_channels[i] % c.norm_num_groups != 0) {
      return InvalidArgument(origin + ": UNet norm_num_groups " + std::to_string(c.norm_num_groups) + " does not divide " +
                             std::to_string(c.block_out_channels[i]) + " channels");
    }
  }
  if (c.in_channels <= 0 || c.out_channels <= 0 || c.layers_per_block <= 0 || c.cross_attention_dim <= 0 ||
      c.norm_num_groups <= 0 || c.transformer_layers_per_block <= 0 || c.sample_size <= 0 || !(c.norm_eps > 0)) {
    return InvalidArgument(origin + ": UNet sizes must be positive");
  }
  return Status::Ok();
}

Status validate_config(const VAEConfig& c, const std::string& origin) {
  if (!all_positive(c.block_out_channels) || c.in_channels <= 0 || c.out_channels <= 0 || c.latent_channels <= 0 ||
      c.layers_per_block <= 0 || c.norm_num_groups <= 0 || c.sample_size <= 0) {
    return InvalidArgument(origin + ": VAE sizes must be positive");
  }
  for (int ch : c.block_out_channels) {
    if (ch % c.norm_num_groups != 0) {
      return InvalidArgument(origin + ": VAE norm_num_groups " + std::to_string(c.norm_num_groups) +
                             " does not divide " + std::to_string(ch) + " channels");
    }
  }
  if (!(c.scaling_factor > 0) || !std::isfinite(c.scaling_factor)) {
    return InvalidArgument(origin + ": VAE scaling_factor must be positive");
  }
  return Status::Ok();
}

Status validate_config(const SchedulerConfig& c, const std::string& origin) {
  if (c.num_train_timesteps < 2 || c.num_train_timesteps > 100000) {
    return InvalidArgument(origin + ": num_train_timesteps must be in [2, 100000]");
  }
  if (!(c.beta_start > 0 && c.beta_start < c.beta_end && c.beta_end < 1)) {
    return InvalidArgument(origin + ": betas must satisfy 0 < beta_start < beta_end < 1");
  }
  if (c.beta_schedule != "scaled_linear" && c.beta_schedule != "linear") {
    return Unimplemented(origin + ": beta_schedule '" + c.beta_schedule + "' (supported: scaled_linear, linear)");
  }
  if (c.prediction_type != "epsilon" && c.prediction_type != "v_prediction") {
    return Unimplemented(origin + ": prediction_type '" + c.prediction_type + "' (supported: epsilon, v_prediction)");
  }
  if (c.timestep_spacing != "leading" && c.timestep_spacing != "trailing" && c.timestep_spacing != "linspace") {
    return Unimplemented(origin + ": timestep_spacing '" + c.timestep_spacing + "' (supported: leading, trailing, linspace)");
  }
  if (c.steps_offset < 0 || c.steps_offset >= c.num_train_timesteps) {
    return InvalidArgument(origin + ": steps_offset out of range");
  }
  return Status::Ok();
}

std::string describe_config(const TextEncoderConfig& c) {
  std::ostringstream s;
  s << "hidden " << c.hidden_size << ", intermediate " << c.intermediate_size << ", " << c.num_layers << " layers, "
    << c.num_heads << " heads, vocabulary " << c.vocab_size << ", " << c.max_positions << " positions, " << c.hidden_act
    << ", layer-norm eps " << c.layer_norm_eps;
  return s.str();
}

std::string describe_config(const UNetConfig& c) {
  std::ostringstream s;
  s << "channels " << join(c.block_out_channels) << ", " << c.layers_per_block << " layers per block, heads per level "
    << join(c.attention_heads) << ", cross-attention dim " << c.cross_attention_dim << ", "
    << (c.use_linear_projection ? "linear" : "1x1-conv") << " proj_in/out, " << c.transformer_layers_per_block
    << " transformer layer(s) per block, in/out channels " << c.in_channels << "/" << c.out_channels
    << (c.upcast_attention ? ", upcast attention" : "") << ", attention levels [";
  for (size_t i = 0; i < c.down_block_types.size(); ++i) {
    s << (i ? ", " : "") << (c.down_block_types[i] == "CrossAttnDownBlock2D" ? "yes" : "no");
  }
  s << "], latent sample size " << c.sample_size;
  return s.str();
}

std::string describe_config(const VAEConfig& c) {
  std::ostringstream s;
  s << "channels " << join(c.block_out_channels) << ", " << c.layers_per_block << " layers per block, "
    << c.latent_channels << " latent channels, scaling factor " << c.scaling_factor << ", image sample size "
    << c.sample_size;
  return s.str();
}

std::string describe_config(const SchedulerConfig& c) {
  std::ostringstream s;
  s << "prediction " << c.prediction_type << ", " << c.beta_schedule << " betas " << c.beta_start << ".." << c.beta_end
    << ", " << c.num_train_timesteps << " training steps, " << c.timestep_spacing << " spacing, steps_offset "
    << c.steps_offset;
  return s.str();
}

}  // namespace sd
