// Renaming of single-file (original LDM layout) checkpoint keys to diffusers names:
// `model.diffusion_model.*` -> UNet, `first_stage_model.*` -> VAE, `cond_stage_model.*`
// (SD 1.x CLIP or SD 2.x OpenCLIP) -> text encoder. Works on names and shapes alone.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "core/status.h"
#include "io/safetensors_weights.h"
#include "tensor/tensor.h"

namespace sd {

enum class Component { kTextEncoder, kUNet, kVAE };
const char* component_name(Component component);  // "text encoder", "UNet", "VAE"

enum class TextEncoderLayout { kNone, kCLIP, kOpenCLIP };

struct RenamedTensor {
  Component component;
  std::string target;     // diffusers name, e.g. "down_blocks.0.resnets.0.conv1.weight"
  TensorMapping mapping;  // stored name, exposed shape, row split
};

struct RenamePlan {
  std::vector<RenamedTensor> tensors;
  std::vector<std::string> ignored;  // known and unused: buffers, EMA copies, text_projection, ...
  std::vector<std::string> unknown;  // not recognised
  TextEncoderLayout text_encoder_layout = TextEncoderLayout::kNone;
  int unet_layers_per_block = 0;     // detected from the downsampler positions
  int openclip_dropped_layers = 0;   // OpenCLIP resblocks left out (see below)
};

struct RenameOptions {
  // SD 2.x conditions on the penultimate OpenCLIP layer: like diffusers, drop the last
  // resblock so that the text encoder's last_hidden_state (after the final layer norm) is
  // what the UNet expects. False keeps every layer (LDM yaml `layer: last`).
  bool openclip_drop_last_layer = true;
};

// Maps every key to a diffusers name (q/k/v split out of OpenCLIP in_proj, VAE attention
// 1x1 kernels reshaped to [C, C]). Fails when two keys map to one name or a fused tensor
// cannot be split; unrecognised keys are listed in `unknown`, not an error.
StatusOr<RenamePlan> plan_single_file_renaming(const std::vector<std::pair<std::string, Shape>>& keys,
                                               const RenameOptions& options = {});

}  // namespace sd
