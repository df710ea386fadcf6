// Internal to io/: the two checkpoint loaders behind load_checkpoint() and the file helpers
// they share. Each loader fills a complete Checkpoint (configs, tokenizer, weight sources,
// provenance) or returns a Status naming the file and field at fault.
#pragma once

#include <string>

#include "io/checkpoint.h"

namespace sd {

StatusOr<Checkpoint> load_diffusers_folder(const std::string& path);
StatusOr<Checkpoint> load_single_file(const std::string& path);

bool file_exists(const std::string& path);
// Whole text file (configs); NotFound naming the path when absent.
StatusOr<std::string> read_text_file(const std::string& path, size_t max_bytes = 16u << 20);
// SD 2.x traits: OpenCLIP-size text encoder, 1024-wide cross-attention or linear proj_in.
ModelFamily family_from_configs(const TextEncoderConfig& text_encoder, const UNetConfig& unet);

}  // namespace sd
