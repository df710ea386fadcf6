// Tests of the single-file -> diffusers key renaming on name/shape lists alone: every key of
// the real SD 1.5 single file maps one-to-one onto the SD 1.5 diffusers keys with equal shapes,
// and OpenCLIP (SD 2.x) keys split and rename as diffusers' conversion does.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "io/config_detect.h"
#include "io/single_file_keys.h"
#include "io_test_util.h"

namespace sd {
namespace {

using json = nlohmann::json;

json load_json(const std::string& rel) {
  std::ifstream in(test_data(rel));
  EXPECT_TRUE(in.good()) << rel;
  return json::parse(in);
}

Shape to_shape(const json& j) {
  Shape s;
  for (const auto& d : j) s.push_back(d.get<int64_t>());
  return s;
}

TEST(SingleFileKeys, Sd15KeysMapOneToOntoDiffusersKeysWithSameShapes) {
  const json single = load_json("sd15-shapes/single_file_keys.json");
  const json diffusers = load_json("sd15-shapes/diffusers_keys.json");
  std::vector<std::pair<std::string, Shape>> keys;
  for (auto it = single.begin(); it != single.end(); ++it) keys.emplace_back(it.key(), to_shape(it.value()));
  // A buffer many published checkpoints carry: must be ignored.
  keys.emplace_back("cond_stage_model.transformer.text_model.embeddings.position_ids", Shape{1, 77});

  auto plan = plan_single_file_renaming(keys);
  ASSERT_TRUE(plan.ok()) << plan.status().to_string();
  EXPECT_TRUE(plan->unknown.empty()) << plan->unknown.size() << " unknown, first: " << plan->unknown[0];
  ASSERT_EQ(plan->ignored.size(), 1u);
  EXPECT_EQ(plan->text_encoder_layout, TextEncoderLayout::kCLIP);
  EXPECT_EQ(plan->unet_layers_per_block, 2);

  const std::map<Component, std::string> section = {
      {Component::kUNet, "unet"}, {Component::kVAE, "vae"}, {Component::kTextEncoder, "text_encoder"}};
  std::map<Component, std::set<std::string>> mapped;
  for (const RenamedTensor& t : plan->tensors) {
    const json& expected = diffusers.at(section.at(t.component));
    ASSERT_TRUE(expected.contains(t.target)) << t.mapping.source << " -> " << t.target << " is not a diffusers key";
    EXPECT_EQ(t.mapping.shape, to_shape(expected.at(t.target))) << t.mapping.source << " -> " << t.target;
    EXPECT_TRUE(mapped[t.component].insert(t.target).second) << "two keys map to " << t.target;
  }
  // One to one: every diffusers key is produced exactly once.
  for (const auto& [component, name] : section) {
    EXPECT_EQ(mapped[component].size(), diffusers.at(name).size()) << name;
  }
  EXPECT_EQ(plan->tensors.size(), single.size());
}

// Names and shapes only (no data): enough for configuration detection.
class ShapeOnlySource : public WeightSource {
 public:
  explicit ShapeOnlySource(std::map<std::string, Shape> shapes) : shapes_(std::move(shapes)) {}
  std::string origin() const override { return "shapes"; }
  bool has(const std::string& name) const override { return shapes_.count(name) != 0; }
  std::vector<std::string> names() const override {
    std::vector<std::string> out;
    for (const auto& [n, s] : shapes_) out.push_back(n);
    return out;
  }
  StatusOr<Tensor> get(const std::string& name, const Shape&) const override { return Unimplemented(name); }
  StatusOr<std::pair<DType, Shape>> info(const std::string& name) const override {
    auto it = shapes_.find(name);
    if (it == shapes_.end()) return NotFound(name);
    return std::make_pair(DType::kF16, it->second);
  }

 private:
  std::map<std::string, Shape> shapes_;
};

TEST(SingleFileKeys, Sd15ConfigDetectedFromRenamedShapesMatchesConfigJson) {
  const json single = load_json("sd15-shapes/single_file_keys.json");
  std::vector<std::pair<std::string, Shape>> keys;
  for (auto it = single.begin(); it != single.end(); ++it) keys.emplace_back(it.key(), to_shape(it.value()));
  auto plan = plan_single_file_renaming(keys);
  ASSERT_TRUE(plan.ok());
  std::map<Component, std::map<std::string, Shape>> parts;
  for (const auto& t : plan->tensors) parts[t.component][t.target] = t.mapping.shape;

  const json unet_json = load_json("sd15-shapes/unet_config.json");
  auto unet = detect_unet_config(ShapeOnlySource(parts[Component::kUNet]));
  ASSERT_TRUE(unet.ok()) << unet.status().to_string();
  EXPECT_EQ(unet->block_out_channels, unet_json["block_out_channels"].get<std::vector<int>>());
  EXPECT_EQ(unet->layers_per_block, unet_json["layers_per_block"].get<int>());
  EXPECT_EQ(unet->cross_attention_dim, unet_json["cross_attention_dim"].get<int>());
  EXPECT_EQ(unet->use_linear_projection, unet_json["use_linear_projection"].get<bool>());
  EXPECT_EQ(unet->down_block_types, unet_json["down_block_types"].get<std::vector<std::string>>());
  EXPECT_EQ(unet->up_block_types, unet_json["up_block_types"].get<std::vector<std::string>>());
  EXPECT_EQ(unet->attention_heads, std::vector<int>(4, unet_json["attention_head_dim"].get<int>()));  // SD1: 8

  const json vae_json = load_json("sd15-shapes/vae_config.json");
  auto vae = detect_vae_config(ShapeOnlySource(parts[Component::kVAE]));
  ASSERT_TRUE(vae.ok()) << vae.status().to_string();
  EXPECT_EQ(vae->block_out_channels, vae_json["block_out_channels"].get<std::vector<int>>());
  EXPECT_EQ(vae->latent_channels, vae_json["latent_channels"].get<int>());
  EXPECT_EQ(vae->layers_per_block, vae_json["layers_per_block"].get<int>());

  const json te_json = load_json("sd15-shapes/text_encoder_config.json");
  auto te = detect_text_encoder_config(ShapeOnlySource(parts[Component::kTextEncoder]));
  ASSERT_TRUE(te.ok()) << te.status().to_string();
  EXPECT_EQ(te->hidden_size, te_json["hidden_size"].get<int>());
  EXPECT_EQ(te->intermediate_size, te_json["intermediate_size"].get<int>());
  EXPECT_EQ(te->num_layers, te_json["num_hidden_layers"].get<int>());
  EXPECT_EQ(te->num_heads, te_json["num_attention_heads"].get<int>());  // hidden / 64
  EXPECT_EQ(te->vocab_size, te_json["vocab_size"].get<int>());
}

TEST(SingleFileKeys, SpotChecksOfTheLdmMapping) {
  const std::vector<std::pair<std::string, Shape>> keys = {
      {"model.diffusion_model.input_blocks.3.0.op.weight", {320, 320, 3, 3}},
      {"model.diffusion_model.input_blocks.1.0.out_layers.3.weight", {320, 320, 3, 3}},
      {"model.diffusion_model.output_blocks.2.1.conv.bias", {1280}},
      {"model.diffusion_model.output_blocks.5.2.conv.weight", {1280, 1280, 3, 3}},
      {"model.diffusion_model.output_blocks.4.1.proj_in.weight", {1280, 1280, 1, 1}},
      {"model.diffusion_model.middle_block.2.skip_connection.weight", {1280, 1280, 1, 1}},
      {"first_stage_model.decoder.up.0.block.2.nin_shortcut.bias", {128}},
      {"first_stage_model.decoder.up.3.upsample.conv.weight", {512, 512, 3, 3}},
      {"first_stage_model.encoder.mid.attn_1.proj_out.weight", {512, 512, 1, 1}},
      {"first_stage_model.encoder.norm_out.bias", {512}},
      {"betas", {1000}},
      {"model_ema.diffusion_modelinput_blocks00weight", {320, 4, 3, 3}},
      {"something.else", {1}},
      {"model.diffusion_model.time_embed.out.0.weight", {1}},  // looks like other keys; must not map
  };
  auto plan = plan_single_file_renaming(keys);
  ASSERT_TRUE(plan.ok()) << plan.status().to_string();
  std::map<std::string, std::string> target;
  std::map<std::string, Shape> shape;
  for (const auto& t : plan->tensors) {
    target[t.mapping.source] = t.target;
    shape[t.mapping.source] = t.mapping.shape;
  }
  EXPECT_EQ(target["model.diffusion_model.input_blocks.3.0.op.weight"], "down_blocks.0.downsamplers.0.conv.weight");
  EXPECT_EQ(target["model.diffusion_model.input_blocks.1.0.out_layers.3.weight"], "down_blocks.0.resnets.0.conv2.weight");
  EXPECT_EQ(target["model.diffusion_model.output_blocks.2.1.conv.bias"], "up_blocks.0.upsamplers.0.conv.bias");
  EXPECT_EQ(target["model.diffusion_model.output_blocks.5.2.conv.weight"], "up_blocks.1.upsamplers.0.conv.weight");
  EXPECT_EQ(target["model.diffusion_model.output_blocks.4.1.proj_in.weight"], "up_blocks.1.attentions.1.proj_in.weight");
  EXPECT_EQ(target["model.diffusion_model.middle_block.2.skip_connection.weight"], "mid_block.resnets.1.conv_shortcut.weight");
  EXPECT_EQ(target["first_stage_model.decoder.up.0.block.2.nin_shortcut.bias"], "decoder.up_blocks.3.resnets.2.conv_shortcut.bias");
  EXPECT_EQ(target["first_stage_model.decoder.up.3.upsample.conv.weight"], "decoder.up_blocks.0.upsamplers.0.conv.weight");
  EXPECT_EQ(target["first_stage_model.encoder.mid.attn_1.proj_out.weight"], "encoder.mid_block.attentions.0.to_out.0.weight");
  EXPECT_EQ(shape["first_stage_model.encoder.mid.attn_1.proj_out.weight"], (Shape{512, 512}));
  EXPECT_EQ(target["first_stage_model.encoder.norm_out.bias"], "encoder.conv_norm_out.bias");
  EXPECT_EQ(plan->ignored.size(), 2u);  // betas, model_ema.*
  EXPECT_EQ(plan->unknown.size(), 2u);
}

TEST(SingleFileKeys, OpenClipSplitsInProjAndDropsTheLastLayer) {
  const int64_t d = 1024;
  std::vector<std::pair<std::string, Shape>> keys = {
      {"cond_stage_model.model.token_embedding.weight", {49408, d}},
      {"cond_stage_model.model.positional_embedding", {77, d}},
      {"cond_stage_model.model.ln_final.weight", {d}},
      {"cond_stage_model.model.text_projection", {d, d}},
      {"cond_stage_model.model.logit_scale", {}},
  };
  for (int layer = 0; layer < 24; ++layer) {
    const std::string p = "cond_stage_model.model.transformer.resblocks." + std::to_string(layer) + ".";
    keys.push_back({p + "attn.in_proj_weight", {3 * d, d}});
    keys.push_back({p + "attn.in_proj_bias", {3 * d}});
    keys.push_back({p + "mlp.c_fc.weight", {4 * d, d}});
    keys.push_back({p + "ln_2.bias", {d}});
  }
  auto plan = plan_single_file_renaming(keys);
  ASSERT_TRUE(plan.ok()) << plan.status().to_string();
  EXPECT_EQ(plan->text_encoder_layout, TextEncoderLayout::kOpenCLIP);
  EXPECT_EQ(plan->openclip_dropped_layers, 1);
  EXPECT_TRUE(plan->unknown.empty());
  EXPECT_EQ(plan->ignored.size(), 2u + 4u);  // projection, logit scale, resblock 23
  std::map<std::string, TensorMapping> by_target;
  for (const auto& t : plan->tensors) by_target[t.target] = t.mapping;
  EXPECT_EQ(by_target.size(), 3u + 23u * 8u);
  const auto& k = by_target.at("text_model.encoder.layers.5.self_attn.k_proj.weight");
  EXPECT_EQ(k.source, "cond_stage_model.model.transformer.resblocks.5.attn.in_proj_weight");
  EXPECT_EQ(k.shape, (Shape{d, d}));
  EXPECT_EQ(k.split_index, 1);
  EXPECT_EQ(k.split_count, 3);
  EXPECT_EQ(by_target.at("text_model.encoder.layers.22.self_attn.v_proj.bias").split_index, 2);
  EXPECT_EQ(by_target.count("text_model.encoder.layers.23.mlp.fc1.weight"), 0u);
  EXPECT_EQ(by_target.at("text_model.encoder.layers.0.mlp.fc1.weight").source,
            "cond_stage_model.model.transformer.resblocks.0.mlp.c_fc.weight");
  EXPECT_EQ(by_target.at("text_model.embeddings.position_embedding.weight").source,
            "cond_stage_model.model.positional_embedding");

  RenameOptions keep_all;
  keep_all.openclip_drop_last_layer = false;
  auto full = plan_single_file_renaming(keys, keep_all);
  ASSERT_TRUE(full.ok());
  EXPECT_EQ(full->tensors.size(), 3u + 24u * 8u);

  keys.push_back({"cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight", {3 * d, d}});
  keys.back().second = {3 * d + 1, d};  // unsplittable, and a duplicate name
  EXPECT_FALSE(plan_single_file_renaming(keys).ok());
}

TEST(SingleFileKeys, BothTextEncoderLayoutsIsAnError) {
  auto plan = plan_single_file_renaming({{"cond_stage_model.model.ln_final.weight", {8}},
                                         {"cond_stage_model.transformer.text_model.final_layer_norm.weight", {8}}});
  EXPECT_EQ(plan.status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace sd
