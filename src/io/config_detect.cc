// Detects component configurations from the names and shapes of diffusers-named tensors:
// counts of numbered blocks give levels and layers, weight shapes give channel widths.
// Missing anchor tensors are NotFound errors naming the source and the tensor.
#include "io/config_detect.h"

#include <algorithm>
#include <string_view>

namespace sd {
namespace {

StatusOr<Shape> shape_of(const WeightSource& w, const std::string& name, size_t rank) {
  auto info = w.info(name);
  if (!info.ok()) {
    return NotFound(w.origin() + ": tensor '" + name + "' is needed to detect the configuration but is missing");
  }
  const Shape& s = info->second;
  if (s.size() != rank) {
    return InvalidArgument(w.origin() + ": tensor '" + name + "' has shape " + shape_str(s) + ", expected rank " +
                           std::to_string(rank));
  }
  for (int64_t d : s) {
    if (d <= 0 || d > (1 << 24)) return InvalidArgument(w.origin() + ": tensor '" + name + "' has shape " + shape_str(s));
  }
  return s;
}

// Largest N among names "<prefix>N.<...>", or -1.
int max_index(const std::vector<std::string>& names, const std::string& prefix) {
  int best = -1;
  for (const auto& n : names) {
    if (n.size() <= prefix.size() || n.compare(0, prefix.size(), prefix) != 0) continue;
    size_t i = prefix.size();
    int v = 0, digits = 0;
    while (i < n.size() && digits < 6 && n[i] >= '0' && n[i] <= '9') v = v * 10 + (n[i++] - '0'), ++digits;
    if (digits > 0 && i < n.size() && n[i] == '.') best = std::max(best, v);
  }
  return best;
}

bool any_with_prefix(const std::vector<std::string>& names, const std::string& prefix) {
  for (const auto& n : names)
    if (n.compare(0, prefix.size(), prefix) == 0) return true;
  return false;
}

const std::string* first_with_suffix(const std::vector<std::string>& names, std::string_view suffix) {
  for (const auto& n : names)
    if (std::string_view(n).ends_with(suffix)) return &n;
  return nullptr;
}

int to_int(int64_t v) { return static_cast<int>(v); }

}  // namespace

StatusOr<UNetConfig> detect_unet_config(const WeightSource& w) {
  const std::vector<std::string> names = w.names();
  UNetConfig c;
  SD_ASSIGN_OR_RETURN(Shape conv_in, shape_of(w, "conv_in.weight", 4));
  SD_ASSIGN_OR_RETURN(Shape conv_out, shape_of(w, "conv_out.weight", 4));
  c.in_channels = to_int(conv_in[1]);
  c.out_channels = to_int(conv_out[0]);
  const int levels = max_index(names, "down_blocks.") + 1;
  if (levels <= 0) return NotFound(w.origin() + ": no 'down_blocks.*' tensors; not a UNet");
  if (levels > 16) return InvalidArgument(w.origin() + ": UNet with " + std::to_string(levels) + " levels");
  if (max_index(names, "up_blocks.") + 1 != levels) {
    return InvalidArgument(w.origin() + ": UNet has " + std::to_string(levels) + " down levels but " +
                           std::to_string(max_index(names, "up_blocks.") + 1) + " up levels");
  }
  c.layers_per_block = max_index(names, "down_blocks.0.resnets.") + 1;
  c.block_out_channels.clear();
  c.down_block_types.clear();
  c.up_block_types.clear();
  for (int k = 0; k < levels; ++k) {
    const std::string level = "down_blocks." + std::to_string(k) + ".";
    SD_ASSIGN_OR_RETURN(Shape conv1, shape_of(w, level + "resnets.0.conv1.weight", 4));
    c.block_out_channels.push_back(to_int(conv1[0]));
    c.down_block_types.push_back(any_with_prefix(names, level + "attentions.") ? "CrossAttnDownBlock2D" : "DownBlock2D");
    c.up_block_types.push_back(any_with_prefix(names, "up_blocks." + std::to_string(k) + ".attentions.")
                                   ? "CrossAttnUpBlock2D"
                                   : "UpBlock2D");
  }
  c.attention_heads = std::vector<int>(static_cast<size_t>(levels), 8);
  if (const std::string* k = first_with_suffix(names, ".attn2.to_k.weight")) {
    SD_ASSIGN_OR_RETURN(Shape s, shape_of(w, *k, 2));
    c.cross_attention_dim = to_int(s[1]);
  }
  if (const std::string* p = first_with_suffix(names, ".proj_in.weight")) {
    auto info = w.info(*p);
    if (info.ok()) c.use_linear_projection = info->second.size() == 2;
    // Transformer depth: blocks inside the first spatial transformer.
    const std::string attention = p->substr(0, p->size() - std::string("proj_in.weight").size());
    c.transformer_layers_per_block = std::max(1, max_index(names, attention + "transformer_blocks.") + 1);
  }
  return c;
}

StatusOr<VAEConfig> detect_vae_config(const WeightSource& w) {
  const std::vector<std::string> names = w.names();
  VAEConfig c;
  SD_ASSIGN_OR_RETURN(Shape conv_in, shape_of(w, "encoder.conv_in.weight", 4));
  SD_ASSIGN_OR_RETURN(Shape conv_out, shape_of(w, "decoder.conv_out.weight", 4));
  SD_ASSIGN_OR_RETURN(Shape post_quant, shape_of(w, "post_quant_conv.weight", 4));
  c.in_channels = to_int(conv_in[1]);
  c.out_channels = to_int(conv_out[0]);
  c.latent_channels = to_int(post_quant[0]);
  const int levels = max_index(names, "encoder.down_blocks.") + 1;
  if (levels <= 0) return NotFound(w.origin() + ": no 'encoder.down_blocks.*' tensors; not a VAE");
  if (levels > 16) return InvalidArgument(w.origin() + ": VAE with " + std::to_string(levels) + " levels");
  c.layers_per_block = max_index(names, "encoder.down_blocks.0.resnets.") + 1;
  c.block_out_channels.clear();
  for (int k = 0; k < levels; ++k) {
    SD_ASSIGN_OR_RETURN(Shape conv1, shape_of(w, "encoder.down_blocks." + std::to_string(k) + ".resnets.0.conv1.weight", 4));
    c.block_out_channels.push_back(to_int(conv1[0]));
  }
  return c;
}

StatusOr<TextEncoderConfig> detect_text_encoder_config(const WeightSource& w) {
  const std::vector<std::string> names = w.names();
  TextEncoderConfig c;
  SD_ASSIGN_OR_RETURN(Shape tokens, shape_of(w, "text_model.embeddings.token_embedding.weight", 2));
  SD_ASSIGN_OR_RETURN(Shape positions, shape_of(w, "text_model.embeddings.position_embedding.weight", 2));
  SD_ASSIGN_OR_RETURN(Shape fc1, shape_of(w, "text_model.encoder.layers.0.mlp.fc1.weight", 2));
  c.vocab_size = to_int(tokens[0]);
  c.hidden_size = to_int(tokens[1]);
  c.max_positions = to_int(positions[0]);
  c.intermediate_size = to_int(fc1[0]);
  c.num_layers = max_index(names, "text_model.encoder.layers.") + 1;
  c.num_heads = std::max(1, c.hidden_size / 64);
  return c;
}

}  // namespace sd
