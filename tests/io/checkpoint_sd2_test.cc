// Tests of SD 2.x single files with an OpenCLIP text encoder: tiny-sd2's weights written in
// the original layout (fused in_proj, extra last layer, LDM UNet/VAE names) load back equal to
// the diffusers folder; yaml overrides, conventions and `describe`/`sdserve inspect` output.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>

#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "io/single_file_keys.h"
#include "io_test_util.h"

namespace sd {
namespace {

namespace fs = std::filesystem;

Tensor f16_of(const WeightSource& w, const std::string& name) { return convert_host(w.get(name).value(), DType::kF16); }

Tensor concat_rows(const std::vector<Tensor>& parts) {
  Shape shape = parts[0].shape();
  shape[0] = 0;
  for (const Tensor& p : parts) shape[0] += p.dim(0);
  Tensor out = Tensor::empty_host(shape, parts[0].dtype());
  size_t offset = 0;
  for (const Tensor& p : parts) {
    std::memcpy(static_cast<char*>(out.raw()) + offset, p.raw(), p.nbytes());
    offset += p.nbytes();
  }
  return out;
}

Tensor random_f16(Shape shape, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> v(static_cast<size_t>(shape_numel(shape)));
  for (float& x : v) x = normal(rng);
  return convert_host(Tensor::from_vector(shape, v), DType::kF16);
}

// Writes tiny-sd2 (diffusers) as an SD 2.x single file: UNet/VAE under LDM names (taken from
// tiny-sd1's single file, same architecture), text encoder in OpenCLIP layout with one extra
// final resblock (which the loader must drop) and the unused text_projection / logit_scale.
std::string write_tiny_sd2_single_file(const std::string& stem) {
  auto sd1 = SafetensorsFile::open(test_data("tiny-sd1/model.safetensors"));
  std::vector<std::pair<std::string, Shape>> sd1_keys;
  for (const auto& e : (*sd1)->entries()) sd1_keys.emplace_back(e.name, e.shape);
  auto plan = plan_single_file_renaming(sd1_keys);
  std::map<std::pair<Component, std::string>, std::string> ldm_name;
  for (const auto& t : plan->tensors) ldm_name[{t.component, t.target}] = t.mapping.source;

  auto ck = load_checkpoint(test_data("tiny-sd2/model"));
  EXPECT_TRUE(ck.ok()) << ck.status().to_string();
  std::vector<std::pair<std::string, Tensor>> out;
  for (auto [component, weights] : {std::pair{Component::kUNet, ck->unet_weights.get()},
                                    std::pair{Component::kVAE, ck->vae_weights.get()}}) {
    for (const std::string& name : weights->names()) {
      Tensor t = f16_of(*weights, name);
      const std::string& ldm = ldm_name.at({component, name});
      if (component == Component::kVAE && t.ndim() == 2) t = t.reshape({t.dim(0), t.dim(1), 1, 1});  // 1x1 conv
      out.emplace_back(ldm, t);
    }
  }
  const WeightSource& te = *ck->text_encoder_weights;
  const std::string m = "cond_stage_model.model.";
  out.emplace_back(m + "token_embedding.weight", f16_of(te, "text_model.embeddings.token_embedding.weight"));
  out.emplace_back(m + "positional_embedding", f16_of(te, "text_model.embeddings.position_embedding.weight"));
  out.emplace_back(m + "ln_final.weight", f16_of(te, "text_model.final_layer_norm.weight"));
  out.emplace_back(m + "ln_final.bias", f16_of(te, "text_model.final_layer_norm.bias"));
  out.emplace_back(m + "text_projection", random_f16({32, 32}, 1));
  out.emplace_back(m + "logit_scale", random_f16({}, 2));
  const int layers = ck->text_encoder.num_layers;
  for (int i = 0; i <= layers; ++i) {  // one more than diffusers keeps
    const std::string src = "text_model.encoder.layers." + std::to_string(std::min(i, layers - 1)) + ".";
    const std::string dst = m + "transformer.resblocks." + std::to_string(i) + ".";
    auto get = [&](const std::string& n) { return i < layers ? f16_of(te, src + n) : random_f16(te.info(src + n)->second, 3 + i); };
    for (const char* p : {"weight", "bias"}) {
      const std::string param = p;
      out.emplace_back(dst + "attn.in_proj_" + param,
                       concat_rows({get("self_attn.q_proj." + param), get("self_attn.k_proj." + param),
                                    get("self_attn.v_proj." + param)}));
      out.emplace_back(dst + "attn.out_proj." + param, get("self_attn.out_proj." + param));
      out.emplace_back(dst + "ln_1." + param, get("layer_norm1." + param));
      out.emplace_back(dst + "ln_2." + param, get("layer_norm2." + param));
      out.emplace_back(dst + "mlp.c_fc." + param, get("mlp.fc1." + param));
      out.emplace_back(dst + "mlp.c_proj." + param, get("mlp.fc2." + param));
    }
  }
  out.emplace_back("alphas_cumprod", Tensor::from_vector({3}, {0.9f, 0.5f, 0.1f}));
  const std::string path = stem + ".safetensors";
  EXPECT_TRUE(write_safetensors(path, out).ok());
  return path;
}

const char* kSd2Yaml = R"(# tiny SD 2.x v-model, in the layout of v2-inference-v.yaml
model:
  target: ldm.models.diffusion.ddpm.LatentDiffusion
  params:
    parameterization: "v"
    linear_start: 0.00085
    linear_end: 0.0120
    scale_factor: 0.18215
    unet_config:
      params:
        model_channels: 32
        channel_mult: [1, 1, 2, 2]
        num_res_blocks: 2
        num_head_channels: 16   # overridden below by the per-level extension
        use_linear_in_transformer: True
        context_dim: 32
    cond_stage_config:
      target: ldm.modules.encoders.modules.FrozenOpenCLIPEmbedder
      params:
        freeze: True
        layer: "penultimate"
sdserve:
  text_encoder_num_heads: 4
  unet_attention_heads: [2, 4, 4, 4]
  image_size: 128
)";

class TinySd2SingleFile : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string stem = test_temp_dir() + "/tiny-sd2";
    path_ = new std::string(write_tiny_sd2_single_file(stem));
    std::ofstream(stem + ".yaml") << kSd2Yaml;
  }
  static void TearDownTestSuite() { delete path_; }
  static std::string* path_;
};
std::string* TinySd2SingleFile::path_ = nullptr;

TEST_F(TinySd2SingleFile, LoadsEqualToTheDiffusersFolder) {
  auto single = load_checkpoint(*path_);
  ASSERT_TRUE(single.ok()) << single.status().to_string();
  auto folder = load_checkpoint(test_data("tiny-sd2/model"));
  ASSERT_TRUE(folder.ok());
  EXPECT_EQ(single->family, ModelFamily::kSD2);
  EXPECT_EQ(single->text_encoder, folder->text_encoder) << describe_config(single->text_encoder);
  EXPECT_EQ(single->unet, folder->unet) << describe_config(single->unet);
  EXPECT_EQ(single->vae, folder->vae);
  EXPECT_EQ(single->scheduler, folder->scheduler) << describe_config(single->scheduler);
  EXPECT_EQ(single->tokenizer.pad_token, "!");
  EXPECT_EQ(single->ignored_tensors, 2u + 12u + 1u);  // projection, logit scale, last resblock, alphas_cumprod
  for (auto [a, b] : {std::pair{folder->text_encoder_weights.get(), single->text_encoder_weights.get()},
                      std::pair{folder->unet_weights.get(), single->unet_weights.get()},
                      std::pair{folder->vae_weights.get(), single->vae_weights.get()}}) {
    ASSERT_EQ(a->names(), b->names()) << b->origin();
    for (const std::string& name : a->names()) {
      auto ta = a->get(name), tb = b->get(name, a->info(name)->second);
      ASSERT_TRUE(tb.ok()) << tb.status().to_string();
      ASSERT_EQ(max_abs_diff(*ta, *tb), 0.0) << name;  // q/k/v rows of in_proj included
    }
  }
}

TEST_F(TinySd2SingleFile, ConventionsWithoutTheExtensionsAndYamlOverrides) {
  // No yaml: SD 2.x conventions. heads = channels / 64 is 0 for this tiny UNet: a clear error.
  const std::string bare = test_temp_dir() + "/bare-sd2.safetensors";
  fs::copy_file(*path_, bare, fs::copy_options::overwrite_existing);
  auto no_yaml = load_checkpoint(bare);
  ASSERT_FALSE(no_yaml.ok());
  EXPECT_NE(no_yaml.status().message().find("bare-sd2.safetensors"), std::string::npos) << no_yaml.status().message();
  EXPECT_NE(no_yaml.status().message().find("heads"), std::string::npos) << no_yaml.status().message();

  // A yaml without parameterization means epsilon (the 512-base models); layer: last keeps all.
  std::ofstream(test_temp_dir() + "/bare-sd2.yaml") << R"(model:
  params:
    unet_config:
      params:
        num_head_channels: 8
    cond_stage_config:
      params:
        layer: last
sdserve:
  text_encoder_num_heads: 2
)";
  auto eps = load_checkpoint(bare);
  ASSERT_TRUE(eps.ok()) << eps.status().to_string();
  EXPECT_EQ(eps->scheduler.prediction_type, "epsilon");
  EXPECT_EQ(eps->unet.attention_heads, (std::vector<int>{4, 4, 8, 8}));
  EXPECT_EQ(eps->text_encoder.num_heads, 2);
  EXPECT_EQ(eps->text_encoder.num_layers, 6);
  EXPECT_EQ(eps->text_encoder.hidden_act, "gelu");
  EXPECT_TRUE(eps->unet.upcast_attention);
  EXPECT_EQ(eps->unet.sample_size, 64);  // 512 px convention for non-v models
  EXPECT_TRUE(eps->text_encoder_weights->has("text_model.encoder.layers.5.self_attn.q_proj.weight"));

  // A yaml for another model is rejected, naming the yaml.
  std::ofstream(test_temp_dir() + "/bare-sd2.yaml") << "model:\n  params:\n    unet_config:\n      params:\n"
                                                      "        context_dim: 1024\n        num_heads: 4\n";
  auto wrong = load_checkpoint(bare);
  EXPECT_EQ(wrong.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(wrong.status().message().find("bare-sd2.yaml: context_dim"), std::string::npos) << wrong.status().message();
}

std::vector<std::string> all_tiny_checkpoints(const std::string& sd2_single) {
  return {test_data("tiny-sd1/model"), test_data("tiny-sd1/model.safetensors"), test_data("tiny-sd2/model"), sd2_single};
}

TEST_F(TinySd2SingleFile, DescribeReportsFamilyLayoutCountsAndConfig) {
  for (const std::string& path : all_tiny_checkpoints(*path_)) {
    auto ck = load_checkpoint(path);
    ASSERT_TRUE(ck.ok()) << ck.status().to_string();
    const std::string text = describe_checkpoint(*ck);
    const bool sd2 = path.find("sd2") != std::string::npos;
    const bool single = path.ends_with(".safetensors");
    EXPECT_NE(text.find(sd2 ? "family:     sd2" : "family:     sd1"), std::string::npos) << text;
    EXPECT_NE(text.find(single ? "layout:     single-file" : "layout:     diffusers"), std::string::npos) << text;
    EXPECT_NE(text.find("f16 x"), std::string::npos) << text;
    EXPECT_NE(text.find("channels [32, 32, 64, 64]"), std::string::npos) << text;
    EXPECT_NE(text.find(sd2 ? "v_prediction" : "epsilon"), std::string::npos) << text;
    uint64_t params = 0;
    for (const std::string& name : ck->unet_weights->names()) params += shape_numel(ck->unet_weights->info(name)->second);
    std::string with_commas = std::to_string(params);
    for (int i = static_cast<int>(with_commas.size()) - 3; i > 0; i -= 3) with_commas.insert(static_cast<size_t>(i), ",");
    EXPECT_NE(text.find("unet: " + with_commas + " parameters"), std::string::npos) << text;
  }
}

// Runs the real `sdserve inspect` when the program has been built in this build tree.
TEST_F(TinySd2SingleFile, SdserveInspectCommand) {
  const std::string binary = std::string(SD_BINARY_DIR) + "/sdserve";
  if (!fs::exists(binary)) GTEST_SKIP() << "sdserve not built in " << SD_BINARY_DIR;
  auto run = [&](const std::string& args, std::string* output) {
    FILE* pipe = popen((binary + " inspect " + args + " 2>&1").c_str(), "r");
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, pipe)) > 0) output->append(buf, n);
    const int status = pclose(pipe);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  };
  for (const std::string& path : all_tiny_checkpoints(*path_)) {
    std::string out;
    EXPECT_EQ(run("'" + path + "'", &out), 0) << out;
    EXPECT_NE(out.find("family:"), std::string::npos) << out;
  }
  std::string out;
  EXPECT_EQ(run("/nonexistent/model.safetensors", &out), 1);
  EXPECT_NE(out.find("/nonexistent/model.safetensors"), std::string::npos) << out;
}

}  // namespace
}  // namespace sd
