// `sdserve make-model`: writes a diffusers-layout Stable Diffusion model with seeded random
// weights (fp16) for a preset architecture (tiny, sd15, sd21), plus the bundled tokenizer and
// the scheduler config, so full-size benchmarks and tests need no downloads.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "io/model_config.h"

namespace sd {

struct ModelPreset {
  std::string name;
  ModelFamily family = ModelFamily::kSD1;
  TextEncoderConfig text_encoder;
  UNetConfig unet;
  VAEConfig vae;
  SchedulerConfig scheduler;
  std::string pad_token = "<|endoftext|>";
};

std::vector<std::string> model_preset_names();  // tiny, sd15, sd21
StatusOr<ModelPreset> model_preset(const std::string& name);

struct MakeModelReport {
  size_t parameters = 0;
  size_t bytes = 0;
};
// Writes the model under `out_dir` (created if missing; existing model files are replaced).
StatusOr<MakeModelReport> make_model(const ModelPreset& preset, uint64_t seed, const std::string& out_dir);

}  // namespace sd
