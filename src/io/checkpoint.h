// Model loading: finds the components of a Stable Diffusion checkpoint in either layout
// (diffusers folder, or one single-file .safetensors in the original layout), detects the
// family (SD 1.x / 2.x) and configuration, and exposes each component's weights by name.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "io/model_config.h"
#include "io/weights.h"

namespace sd {

enum class CheckpointLayout { kDiffusers, kSingleFile };
const char* layout_name(CheckpointLayout layout);  // "diffusers", "single-file"

struct Checkpoint {
  std::string path;  // folder or file as given
  CheckpointLayout layout = CheckpointLayout::kDiffusers;
  ModelFamily family = ModelFamily::kSD1;
  TextEncoderConfig text_encoder;
  UNetConfig unet;
  VAEConfig vae;
  SchedulerConfig scheduler;
  TokenizerConfig tokenizer;  // empty paths: the bundled CLIP vocabulary
  // Tensors of each component, in diffusers naming (single-file keys are renamed).
  std::unique_ptr<WeightSource> text_encoder_weights;
  std::unique_ptr<WeightSource> unet_weights;
  std::unique_ptr<WeightSource> vae_weights;
  // Provenance for `describe_checkpoint`: where the configuration came from, tensors left
  // out (known-unused buffers and copies; unrecognised keys), and conventions applied.
  std::string config_source;
  size_t ignored_tensors = 0;
  std::vector<std::string> unknown_tensors;
  std::vector<std::string> notes;
};

// `path` is a diffusers folder (with model_index.json) or a .safetensors single file.
StatusOr<Checkpoint> load_checkpoint(const std::string& path);

// Human-readable report for `sdserve inspect`: family, layout, per-component parameter
// counts and dtypes, detected configuration.
std::string describe_checkpoint(const Checkpoint& checkpoint);

}  // namespace sd
