// Loader for diffusers folders: model_index.json, then unet/, vae/, text_encoder/ (each a
// config.json and a safetensors file, fp16 variants accepted), tokenizer/ and scheduler/.
// Old VAE attention names (query/key/value/proj_attn) are exposed under the current ones.
#include <nlohmann/json.hpp>

#include "io/checkpoint_loaders.h"
#include "io/safetensors_weights.h"

namespace sd {
namespace {

std::string join_path(const std::string& dir, const std::string& name) {
  if (dir.empty() || dir.back() == '/') return dir + name;
  return dir + "/" + name;
}

// The component's weight file: full-precision name first, then the .fp16 variants.
StatusOr<std::string> find_weights_file(const std::string& dir) {
  for (const char* name : {"diffusion_pytorch_model.safetensors", "model.safetensors",
                           "diffusion_pytorch_model.fp16.safetensors", "model.fp16.safetensors"}) {
    if (file_exists(join_path(dir, name))) return join_path(dir, name);
  }
  for (const char* name : {"diffusion_pytorch_model.safetensors.index.json", "model.safetensors.index.json"}) {
    if (file_exists(join_path(dir, name))) {
      return Unimplemented(join_path(dir, name) + ": sharded weights are not supported");
    }
  }
  for (const char* name : {"diffusion_pytorch_model.bin", "pytorch_model.bin", "diffusion_pytorch_model.fp16.bin",
                           "pytorch_model.fp16.bin"}) {
    if (file_exists(join_path(dir, name))) {
      return Unimplemented(join_path(dir, name) + ": pickle weights are not supported; convert to safetensors");
    }
  }
  return NotFound(dir + ": no diffusion_pytorch_model.safetensors or model.safetensors (nor .fp16 variants)");
}

StatusOr<std::shared_ptr<const SafetensorsFile>> open_component(const std::string& dir) {
  SD_ASSIGN_OR_RETURN(std::string weights, find_weights_file(dir));
  SD_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file, SafetensorsFile::open(weights));
  return std::shared_ptr<const SafetensorsFile>(std::move(file));
}

// VAE tensors, with pre-2023 mid-block attention names mapped to to_q/to_k/to_v/to_out.0
// and any 1x1 conv kernels there reshaped to linear weights.
std::unique_ptr<WeightSource> vae_source(std::shared_ptr<const SafetensorsFile> file, int* renamed) {
  static const std::pair<std::string, std::string> kLegacy[] = {
      {"query.", "to_q."}, {"key.", "to_k."}, {"value.", "to_v."}, {"proj_attn.", "to_out.0."}};
  std::map<std::string, TensorMapping> tensors;
  *renamed = 0;
  for (const auto& e : file->entries()) {
    std::string name = e.name;
    Shape shape = e.shape;
    const size_t at = name.find("mid_block.attentions.0.");
    if (at != std::string::npos) {
      const size_t tail = at + std::string("mid_block.attentions.0.").size();
      for (const auto& [from, to] : kLegacy) {
        if (name.compare(tail, from.size(), from) == 0) {
          name = name.substr(0, tail) + to + name.substr(tail + from.size());
          ++*renamed;
          break;
        }
      }
      const bool linear_weight = name.ends_with("to_q.weight") || name.ends_with("to_k.weight") ||
                                 name.ends_with("to_v.weight") || name.ends_with("to_out.0.weight");
      if (linear_weight && shape.size() == 4 && shape[2] == 1 && shape[3] == 1) shape = {shape[0], shape[1]};
    }
    tensors[name] = TensorMapping{e.name, shape, 0, 1};
  }
  return std::make_unique<SafetensorsWeightSource>(std::move(file), "VAE", std::move(tensors));
}

Status check_model_index(const std::string& path) {
  SD_ASSIGN_OR_RETURN(std::string text, read_text_file(path));
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return InvalidArgument(path + ": not a JSON object");
  if (j.contains("text_encoder_2") || j.contains("prior") || j.contains("transformer")) {
    std::string cls = j.contains("_class_name") && j["_class_name"].is_string() ? j["_class_name"].get<std::string>() : "?";
    return Unimplemented(path + ": pipeline '" + cls + "' is not an SD 1.x/2.x pipeline (sdserve supports those only)");
  }
  return Status::Ok();
}

}  // namespace

StatusOr<Checkpoint> load_diffusers_folder(const std::string& path) {
  const std::string index = join_path(path, "model_index.json");
  if (!file_exists(index)) {
    return NotFound(path + ": not a diffusers folder (no model_index.json)");
  }
  SD_RETURN_IF_ERROR(check_model_index(index));
  Checkpoint ck;
  ck.path = path;
  ck.layout = CheckpointLayout::kDiffusers;
  ck.config_source = "config.json files of the folder";

  auto read_config = [&](const std::string& component, const std::string& file) -> StatusOr<std::string> {
    return read_text_file(join_path(join_path(path, component), file));
  };
  const std::string te_dir = join_path(path, "text_encoder"), unet_dir = join_path(path, "unet"),
                    vae_dir = join_path(path, "vae");
  {
    SD_ASSIGN_OR_RETURN(std::string text, read_config("text_encoder", "config.json"));
    SD_ASSIGN_OR_RETURN(ck.text_encoder, parse_text_encoder_config(text, join_path(te_dir, "config.json")));
    SD_ASSIGN_OR_RETURN(auto file, open_component(te_dir));
    ck.text_encoder_weights = SafetensorsWeightSource::all_of(std::move(file), "text encoder");
  }
  {
    SD_ASSIGN_OR_RETURN(std::string text, read_config("unet", "config.json"));
    SD_ASSIGN_OR_RETURN(ck.unet, parse_unet_config(text, join_path(unet_dir, "config.json")));
    SD_ASSIGN_OR_RETURN(auto file, open_component(unet_dir));
    ck.unet_weights = SafetensorsWeightSource::all_of(std::move(file), "UNet");
  }
  {
    SD_ASSIGN_OR_RETURN(std::string text, read_config("vae", "config.json"));
    SD_ASSIGN_OR_RETURN(ck.vae, parse_vae_config(text, join_path(vae_dir, "config.json")));
    SD_ASSIGN_OR_RETURN(auto file, open_component(vae_dir));
    int renamed = 0;
    ck.vae_weights = vae_source(std::move(file), &renamed);
    if (renamed > 0) {
      ck.notes.push_back("VAE uses the old attention names (query/key/value/proj_attn); " + std::to_string(renamed) +
                         " tensors exposed as to_q/to_k/to_v/to_out.0");
    }
  }
  {
    const std::string scheduler = join_path(join_path(path, "scheduler"), "scheduler_config.json");
    SD_ASSIGN_OR_RETURN(std::string text, read_text_file(scheduler));
    SD_ASSIGN_OR_RETURN(ck.scheduler, parse_scheduler_config(text, scheduler));
  }
  ck.family = family_from_configs(ck.text_encoder, ck.unet);

  const std::string tok_dir = join_path(path, "tokenizer");
  ck.tokenizer.vocab_path = join_path(tok_dir, "vocab.json");
  ck.tokenizer.merges_path = join_path(tok_dir, "merges.txt");
  for (const std::string& f : {ck.tokenizer.vocab_path, ck.tokenizer.merges_path}) {
    if (!file_exists(f)) return NotFound(f + ": tokenizer file missing");
  }
  const std::string tok_config = join_path(tok_dir, "tokenizer_config.json");
  if (file_exists(tok_config)) {
    SD_ASSIGN_OR_RETURN(std::string text, read_text_file(tok_config));
    SD_ASSIGN_OR_RETURN(TokenizerConfig parsed, parse_tokenizer_config(text, tok_config));
    ck.tokenizer.pad_token = parsed.pad_token;
    ck.tokenizer.max_length = parsed.max_length;
  } else {
    ck.tokenizer.pad_token = ck.family == ModelFamily::kSD2 ? "!" : "<|endoftext|>";
    ck.notes.push_back("no tokenizer/tokenizer_config.json: pad token '" + ck.tokenizer.pad_token +
                       "' by the family convention");
  }
  if (ck.tokenizer.max_length > ck.text_encoder.max_positions) {
    return InvalidArgument(tok_config + ": model_max_length " + std::to_string(ck.tokenizer.max_length) +
                           " exceeds the text encoder's " + std::to_string(ck.text_encoder.max_positions) + " positions");
  }
  return ck;
}

}  // namespace sd
