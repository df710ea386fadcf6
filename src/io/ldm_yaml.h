// The small YAML subset of LDM / AUTOMATIC1111 model configs (`<stem>.yaml` beside a single
// file): block maps by indentation, block and flow lists of scalars, quotes and comments.
// Only the few fields sdserve needs are extracted; anything else is parsed and ignored.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/status.h"

namespace sd {

struct YamlNode {
  enum class Kind { kNull, kScalar, kList, kMap };
  Kind kind = Kind::kNull;
  std::string scalar;                                     // kScalar
  std::vector<YamlNode> items;                            // kList
  std::vector<std::string> keys;                          // kMap, in file order
  std::vector<YamlNode> values;                           // kMap: values[i] belongs to keys[i]
  // Follows "a.b.c" through maps; nullptr when any step is missing.
  const YamlNode* find(std::string_view dotted_path) const;
};

StatusOr<YamlNode> parse_yaml_subset(const std::string& text, const std::string& origin);

// Fields of an LDM config that sdserve uses. Unset optionals: not in the file.
struct LdmYamlConfig {
  std::optional<std::string> parameterization;  // model.params.parameterization: "eps" | "v"
  std::optional<double> scale_factor;           // model.params.scale_factor
  std::optional<double> linear_start, linear_end;
  std::optional<int> timesteps;                 // model.params.timesteps
  // model.params.unet_config.params.*
  std::optional<int> num_heads;                 // -1 in the file = unset
  std::optional<int> num_head_channels;         // -1 in the file = unset
  std::optional<int> context_dim;
  std::optional<int> model_channels;
  std::optional<std::vector<int>> channel_mult;
  std::optional<bool> use_linear_in_transformer;
  std::optional<int> num_res_blocks;
  std::optional<std::string> cond_stage_layer;  // cond_stage_config.params.layer: "last" | "penultimate"
  // sdserve extensions (top-level `sdserve:` map), for models whose sizes break conventions:
  std::optional<int> text_encoder_num_heads;    // sdserve.text_encoder_num_heads
  std::optional<int> image_size;                // sdserve.image_size: native image size in pixels
  std::optional<std::vector<int>> unet_attention_heads;  // sdserve.unet_attention_heads: per level
};

StatusOr<LdmYamlConfig> parse_ldm_yaml(const std::string& text, const std::string& origin);

}  // namespace sd
