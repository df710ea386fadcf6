// Tests of checkpoint loading on the tiny SD 1.x model: the single file (+ its yaml) and the
// diffusers folder give identical configs and identical tensors under diffusers names; configs
// equal the config.json files; fp16 variants, old VAE names and error paths behave.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/checkpoint.h"
#include "io/config_detect.h"
#include "io/safetensors.h"
#include "io_test_util.h"

namespace sd {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

json read_json(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  return json::parse(in);
}

Checkpoint load_ok(const std::string& path) {
  auto ck = load_checkpoint(path);
  EXPECT_TRUE(ck.ok()) << ck.status().to_string();
  if (!ck.ok()) std::abort();
  return std::move(ck).value();
}

// Every tensor of `a` is in `b` with the same shape, stored dtype and values, and vice versa.
void expect_same_weights(const WeightSource& a, const WeightSource& b) {
  const auto names = a.names();
  EXPECT_EQ(names, b.names()) << a.origin() << " vs " << b.origin();
  for (const std::string& name : names) {
    auto ia = a.info(name), ib = b.info(name);
    ASSERT_TRUE(ia.ok() && ib.ok()) << name;
    EXPECT_EQ(ia->second, ib->second) << name;
    EXPECT_EQ(ia->first, ib->first) << name;
    auto ta = a.get(name, ia->second);
    auto tb = b.get(name);
    ASSERT_TRUE(ta.ok()) << ta.status().to_string();
    ASSERT_TRUE(tb.ok()) << tb.status().to_string();
    ASSERT_EQ(ta->shape(), tb->shape()) << name;
    ASSERT_EQ(max_abs_diff(*ta, *tb), 0.0) << name;
  }
}

TEST(Checkpoint, TinySd1SingleFileEqualsDiffusersFolder) {
  Checkpoint folder = load_ok(test_data("tiny-sd1/model"));
  Checkpoint single = load_ok(test_data("tiny-sd1/model.safetensors"));
  EXPECT_EQ(folder.layout, CheckpointLayout::kDiffusers);
  EXPECT_EQ(single.layout, CheckpointLayout::kSingleFile);
  EXPECT_EQ(folder.family, ModelFamily::kSD1);
  EXPECT_EQ(single.family, ModelFamily::kSD1);
  EXPECT_EQ(single.text_encoder, folder.text_encoder) << describe_config(single.text_encoder);
  EXPECT_EQ(single.unet, folder.unet) << describe_config(single.unet);
  EXPECT_EQ(single.vae, folder.vae) << describe_config(single.vae);
  EXPECT_EQ(single.scheduler, folder.scheduler) << describe_config(single.scheduler);
  EXPECT_EQ(single.tokenizer.pad_token, folder.tokenizer.pad_token);
  EXPECT_EQ(single.tokenizer.max_length, folder.tokenizer.max_length);
  EXPECT_TRUE(single.tokenizer.vocab_path.empty());  // the bundled vocabulary
  EXPECT_TRUE(fs::exists(folder.tokenizer.vocab_path));
  EXPECT_TRUE(fs::exists(folder.tokenizer.merges_path));
  EXPECT_EQ(single.ignored_tensors, 1u);  // position_ids
  EXPECT_TRUE(single.unknown_tensors.empty());
  expect_same_weights(*folder.text_encoder_weights, *single.text_encoder_weights);
  expect_same_weights(*folder.unet_weights, *single.unet_weights);
  expect_same_weights(*folder.vae_weights, *single.vae_weights);
}

std::vector<int> ints(const json& j) { return j.get<std::vector<int>>(); }

// Parsed configs equal the files, and shape-based detection agrees with them.
void expect_configs_match_files(const std::string& model) {
  Checkpoint ck = load_ok(test_data(model + "/model"));
  const json unet = read_json(test_data(model + "/model/unet/config.json"));
  const json vae = read_json(test_data(model + "/model/vae/config.json"));
  const json te = read_json(test_data(model + "/model/text_encoder/config.json"));
  const json sched = read_json(test_data(model + "/model/scheduler/scheduler_config.json"));

  EXPECT_EQ(ck.unet.block_out_channels, ints(unet["block_out_channels"]));
  const json& heads = unet["attention_head_dim"];
  EXPECT_EQ(ck.unet.attention_heads,
            heads.is_array() ? ints(heads) : std::vector<int>(ck.unet.block_out_channels.size(), heads.get<int>()));
  EXPECT_EQ(ck.unet.cross_attention_dim, unet["cross_attention_dim"].get<int>());
  EXPECT_EQ(ck.unet.layers_per_block, unet["layers_per_block"].get<int>());
  EXPECT_EQ(ck.unet.use_linear_projection, unet["use_linear_projection"].get<bool>());
  EXPECT_EQ(ck.unet.upcast_attention, unet["upcast_attention"].get<bool>());
  EXPECT_EQ(ck.unet.sample_size, unet["sample_size"].get<int>());
  EXPECT_EQ(ck.unet.down_block_types, unet["down_block_types"].get<std::vector<std::string>>());
  EXPECT_EQ(ck.unet.up_block_types, unet["up_block_types"].get<std::vector<std::string>>());
  EXPECT_EQ(ck.vae.block_out_channels, ints(vae["block_out_channels"]));
  EXPECT_EQ(ck.vae.latent_channels, vae["latent_channels"].get<int>());
  EXPECT_EQ(ck.vae.sample_size, vae["sample_size"].get<int>());
  EXPECT_FLOAT_EQ(ck.vae.scaling_factor, vae["scaling_factor"].get<float>());
  EXPECT_EQ(ck.text_encoder.hidden_size, te["hidden_size"].get<int>());
  EXPECT_EQ(ck.text_encoder.intermediate_size, te["intermediate_size"].get<int>());
  EXPECT_EQ(ck.text_encoder.num_layers, te["num_hidden_layers"].get<int>());
  EXPECT_EQ(ck.text_encoder.num_heads, te["num_attention_heads"].get<int>());
  EXPECT_EQ(ck.text_encoder.hidden_act, te["hidden_act"].get<std::string>());
  EXPECT_EQ(ck.text_encoder.vocab_size, te["vocab_size"].get<int>());
  EXPECT_EQ(ck.scheduler.prediction_type, sched["prediction_type"].get<std::string>());
  EXPECT_DOUBLE_EQ(ck.scheduler.beta_start, sched["beta_start"].get<double>());
  EXPECT_EQ(ck.scheduler.timestep_spacing, sched["timestep_spacing"].get<std::string>());

  // Detection from shapes reproduces every structural field.
  auto unet_d = detect_unet_config(*ck.unet_weights);
  ASSERT_TRUE(unet_d.ok()) << unet_d.status().to_string();
  EXPECT_EQ(unet_d->block_out_channels, ck.unet.block_out_channels);
  EXPECT_EQ(unet_d->layers_per_block, ck.unet.layers_per_block);
  EXPECT_EQ(unet_d->down_block_types, ck.unet.down_block_types);
  EXPECT_EQ(unet_d->up_block_types, ck.unet.up_block_types);
  EXPECT_EQ(unet_d->cross_attention_dim, ck.unet.cross_attention_dim);
  EXPECT_EQ(unet_d->use_linear_projection, ck.unet.use_linear_projection);
  EXPECT_EQ(unet_d->transformer_layers_per_block, ck.unet.transformer_layers_per_block);
  EXPECT_EQ(unet_d->in_channels, ck.unet.in_channels);
  EXPECT_EQ(unet_d->out_channels, ck.unet.out_channels);
  auto vae_d = detect_vae_config(*ck.vae_weights);
  ASSERT_TRUE(vae_d.ok()) << vae_d.status().to_string();
  EXPECT_EQ(vae_d->block_out_channels, ck.vae.block_out_channels);
  EXPECT_EQ(vae_d->layers_per_block, ck.vae.layers_per_block);
  EXPECT_EQ(vae_d->latent_channels, ck.vae.latent_channels);
  EXPECT_EQ(vae_d->in_channels, ck.vae.in_channels);
  EXPECT_EQ(vae_d->out_channels, ck.vae.out_channels);
  auto te_d = detect_text_encoder_config(*ck.text_encoder_weights);
  ASSERT_TRUE(te_d.ok()) << te_d.status().to_string();
  EXPECT_EQ(te_d->hidden_size, ck.text_encoder.hidden_size);
  EXPECT_EQ(te_d->intermediate_size, ck.text_encoder.intermediate_size);
  EXPECT_EQ(te_d->num_layers, ck.text_encoder.num_layers);
  EXPECT_EQ(te_d->vocab_size, ck.text_encoder.vocab_size);
  EXPECT_EQ(te_d->max_positions, ck.text_encoder.max_positions);
}

TEST(Checkpoint, TinySd1ConfigsMatchConfigJson) { expect_configs_match_files("tiny-sd1"); }

TEST(Checkpoint, TinySd2ConfigsMatchConfigJson) {
  expect_configs_match_files("tiny-sd2");
  Checkpoint ck = load_ok(test_data("tiny-sd2/model"));
  EXPECT_EQ(ck.family, ModelFamily::kSD2);
  EXPECT_EQ(ck.tokenizer.pad_token, "!");
  EXPECT_EQ(ck.scheduler.prediction_type, "v_prediction");
  EXPECT_EQ(ck.unet.attention_heads, (std::vector<int>{2, 4, 4, 4}));
}

TEST(Checkpoint, ParsesTheRealSd15ConfigFiles) {
  auto read = [](const std::string& rel) {
    std::ifstream in(test_data(rel));
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  auto unet = parse_unet_config(read("sd15-shapes/unet_config.json"), "unet_config.json");
  ASSERT_TRUE(unet.ok()) << unet.status().to_string();
  EXPECT_EQ(unet->attention_heads, (std::vector<int>{8, 8, 8, 8}));
  EXPECT_EQ(unet->block_out_channels, (std::vector<int>{320, 640, 1280, 1280}));
  auto vae = parse_vae_config(read("sd15-shapes/vae_config.json"), "vae_config.json");
  ASSERT_TRUE(vae.ok()) << vae.status().to_string();
  auto te = parse_text_encoder_config(read("sd15-shapes/text_encoder_config.json"), "text_encoder_config.json");
  ASSERT_TRUE(te.ok()) << te.status().to_string();
  EXPECT_EQ(te->num_heads, 12);
  // Variants sdserve does not build are refused by name, not half-loaded.
  auto lcm = parse_unet_config(R"({"time_cond_proj_dim": 256})", "lcm.json");
  EXPECT_EQ(lcm.status().code(), StatusCode::kUnimplemented);
  EXPECT_NE(lcm.status().message().find("time_cond_proj_dim"), std::string::npos);
  auto sched = parse_scheduler_config(R"({"prediction_type": "sample"})", "s.json");
  EXPECT_EQ(sched.status().code(), StatusCode::kUnimplemented);
  auto heads = parse_unet_config(R"({"attention_head_dim": [5, 10, 20]})", "u.json");
  EXPECT_EQ(heads.status().code(), StatusCode::kInvalidArgument);
  auto tok = parse_tokenizer_config(R"({"pad_token": {"content": "!", "lstrip": false}, "model_max_length": 1e30})", "t.json");
  ASSERT_TRUE(tok.ok());
  EXPECT_EQ(tok->pad_token, "!");
  EXPECT_EQ(tok->max_length, 77);
}

TEST(Checkpoint, MissingAndMisshapenTensorsNameFileAndTensor) {
  Checkpoint ck = load_ok(test_data("tiny-sd1/model.safetensors"));
  auto missing = ck.unet_weights->get("down_blocks.9.resnets.0.conv1.weight");
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("tiny-sd1/model.safetensors"), std::string::npos);
  EXPECT_NE(missing.status().message().find("'down_blocks.9.resnets.0.conv1.weight'"), std::string::npos);
  auto wrong = ck.vae_weights->get("decoder.mid_block.attentions.0.to_q.weight", {64, 64, 1, 1});
  EXPECT_EQ(wrong.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(wrong.status().message().find("first_stage_model.decoder.mid.attn_1.q.weight"), std::string::npos)
      << wrong.status().message();
  auto right = ck.vae_weights->get("decoder.mid_block.attentions.0.to_q.weight", {64, 64});
  EXPECT_TRUE(right.ok());

  auto folder = load_checkpoint(test_data("tiny-sd1/model"));
  ASSERT_TRUE(folder.ok());
  auto missing2 = folder->text_encoder_weights->get("text_model.nope");
  EXPECT_EQ(missing2.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing2.status().message().find("text_encoder/model.safetensors"), std::string::npos);
}

// A diffusers folder of symlinks to tiny-sd1's files, with `rename` applied to file names.
std::string linked_folder(const std::string& name, const std::map<std::string, std::string>& rename) {
  const fs::path src = test_data("tiny-sd1/model");
  const fs::path dst = fs::path(test_temp_dir()) / name;
  fs::remove_all(dst);
  for (const auto& entry : fs::recursive_directory_iterator(src)) {
    const fs::path rel = fs::relative(entry.path(), src);
    if (entry.is_directory()) {
      fs::create_directories(dst / rel);
    } else {
      auto it = rename.find(rel.string());
      if (it == rename.end()) fs::create_symlink(entry.path(), dst / rel);
      else if (!it->second.empty()) fs::create_symlink(entry.path(), dst / it->second);
    }
  }
  return dst.string();
}

TEST(Checkpoint, AcceptsFp16VariantFileNames) {
  const std::string dir = linked_folder("fp16", {{"unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.fp16.safetensors"},
                                                 {"text_encoder/model.safetensors", "text_encoder/model.fp16.safetensors"}});
  Checkpoint ck = load_ok(dir);
  EXPECT_NE(ck.unet_weights->origin().find("fp16"), std::string::npos);
  EXPECT_TRUE(ck.text_encoder_weights->has("text_model.final_layer_norm.weight"));
}

TEST(Checkpoint, AcceptsOldVaeAttentionNames) {
  const std::string dir = linked_folder("oldvae", {{"vae/diffusion_pytorch_model.safetensors", ""}});
  auto vae = SafetensorsFile::open(test_data("tiny-sd1/model/vae/diffusion_pytorch_model.safetensors"));
  ASSERT_TRUE(vae.ok());
  std::vector<std::pair<std::string, Tensor>> renamed;
  const std::map<std::string, std::string> old_names = {
      {".to_q.", ".query."}, {".to_k.", ".key."}, {".to_v.", ".value."}, {".to_out.0.", ".proj_attn."}};
  for (const auto& e : (*vae)->entries()) {
    std::string name = e.name;
    Tensor t = (*vae)->read(name).value();
    for (const auto& [now, old] : old_names) {
      const size_t at = name.find(now);
      if (at != std::string::npos && name.find("mid_block.attentions.0") != std::string::npos) {
        name = name.substr(0, at) + old + name.substr(at + now.size());
        if (name.ends_with("weight")) t = t.reshape({t.dim(0), t.dim(1), 1, 1});  // very old: conv kernels
      }
    }
    renamed.emplace_back(name, t);
  }
  ASSERT_TRUE(write_safetensors(dir + "/vae/diffusion_pytorch_model.safetensors", renamed).ok());
  Checkpoint ck = load_ok(dir);
  Checkpoint reference = load_ok(test_data("tiny-sd1/model"));
  expect_same_weights(*reference.vae_weights, *ck.vae_weights);
  EXPECT_FALSE(ck.notes.empty());
}

TEST(Checkpoint, ClearErrorsForBadPaths) {
  auto none = load_checkpoint(test_temp_dir() + "/nothing-here");
  EXPECT_EQ(none.status().code(), StatusCode::kNotFound);
  auto not_diffusers = load_checkpoint(test_data("tiny-sd1"));
  EXPECT_EQ(not_diffusers.status().code(), StatusCode::kNotFound);
  EXPECT_NE(not_diffusers.status().message().find("model_index.json"), std::string::npos);
  const std::string ckpt = test_temp_dir() + "/model.ckpt";
  std::ofstream(ckpt) << "x";
  EXPECT_EQ(load_checkpoint(ckpt).status().code(), StatusCode::kUnimplemented);
  auto golden = load_checkpoint(test_data("tiny-sd1/unet.safetensors"));  // safetensors, but not a model
  EXPECT_EQ(golden.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(golden.status().message().find("unet.safetensors"), std::string::npos);

  const std::string dir = linked_folder("no_unet_weights", {{"unet/diffusion_pytorch_model.safetensors", ""}});
  auto missing = load_checkpoint(dir);
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("unet"), std::string::npos);

  const std::string bad = linked_folder("bad_config", {{"unet/config.json", ""}});
  std::ofstream(bad + "/unet/config.json") << R"({"block_out_channels": [32, "x"]})";
  auto bad_config = load_checkpoint(bad);
  EXPECT_EQ(bad_config.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad_config.status().message().find("unet/config.json: 'block_out_channels'"), std::string::npos)
      << bad_config.status().message();
}

}  // namespace
}  // namespace sd
