// load_checkpoint(): decides between a diffusers folder and a single-file checkpoint and
// hands over to the matching loader; plus small helpers both loaders share (file reading,
// family rule).
#include <sys/stat.h>

#include <fstream>
#include <sstream>

#include "io/checkpoint_loaders.h"

namespace sd {

const char* layout_name(CheckpointLayout layout) {
  switch (layout) {
    case CheckpointLayout::kDiffusers: return "diffusers";
    case CheckpointLayout::kSingleFile: return "single-file";
  }
  return "?";
}

bool file_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

StatusOr<std::string> read_text_file(const std::string& path, size_t max_bytes) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return NotFound(path + ": no such file");
  if (!S_ISREG(st.st_mode)) return InvalidArgument(path + ": not a regular file");
  if (static_cast<size_t>(st.st_size) > max_bytes) {
    return InvalidArgument(path + ": file too large (" + std::to_string(st.st_size) + " bytes)");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return InvalidArgument(path + ": cannot open");
  std::ostringstream s;
  s << in.rdbuf();
  if (in.bad()) return InvalidArgument(path + ": read error");
  return s.str();
}

ModelFamily family_from_configs(const TextEncoderConfig& text_encoder, const UNetConfig& unet) {
  const bool sd2 = text_encoder.hidden_size == 1024 || unet.cross_attention_dim == 1024 || unet.use_linear_projection;
  return sd2 ? ModelFamily::kSD2 : ModelFamily::kSD1;
}

StatusOr<Checkpoint> load_checkpoint(const std::string& path) {
  struct stat st {};
  if (path.empty()) return InvalidArgument("no checkpoint path given");
  if (::stat(path.c_str(), &st) != 0) return NotFound(path + ": no such file or folder");
  if (S_ISDIR(st.st_mode)) return load_diffusers_folder(path);
  auto ends_with = [&](const char* ext) {
    const std::string e = ext;
    return path.size() >= e.size() && path.compare(path.size() - e.size(), e.size(), e) == 0;
  };
  for (const char* pickle : {".ckpt", ".pt", ".pth", ".bin", ".pkl"}) {
    if (ends_with(pickle)) {
      return Unimplemented(path + ": pickle checkpoints are not supported (they can run code when loaded); "
                                  "convert to .safetensors");
    }
  }
  if (ends_with("model_index.json")) {
    return InvalidArgument(path + ": pass the diffusers folder, not its model_index.json");
  }
  return load_single_file(path);
}

}  // namespace sd
