// describe_checkpoint(): the readable report `sdserve inspect` prints — family, layout,
// per-component parameter counts and stored dtypes, the configuration and where it came
// from, tensors left out, and the conventions applied.
#include <map>
#include <sstream>

#include "io/checkpoint.h"

namespace sd {
namespace {

std::string with_commas(uint64_t n) {
  std::string digits = std::to_string(n), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

std::string component_line(const char* label, const WeightSource* w) {
  std::ostringstream s;
  s << label << ": ";
  if (!w) return s.str() + "missing\n";
  uint64_t params = 0;
  std::map<std::string, size_t> dtypes;
  size_t tensors = 0;
  for (const std::string& name : w->names()) {
    auto info = w->info(name);
    if (!info.ok()) continue;
    params += static_cast<uint64_t>(shape_numel(info->second));
    ++dtypes[dtype_name(info->first)];
    ++tensors;
  }
  s << with_commas(params) << " parameters in " << tensors << " tensors (";
  bool first = true;
  for (const auto& [dtype, count] : dtypes) {
    s << (first ? "" : ", ") << dtype << " x" << count;
    first = false;
  }
  s << ")\n    from " << w->origin() << "\n";
  return s.str();
}

}  // namespace

std::string describe_checkpoint(const Checkpoint& ck) {
  std::ostringstream s;
  s << "checkpoint: " << ck.path << "\n";
  s << "layout:     " << layout_name(ck.layout) << "\n";
  s << "family:     " << family_name(ck.family) << (ck.family == ModelFamily::kSD2 ? " (Stable Diffusion 2.x)" : " (Stable Diffusion 1.x)")
    << "\n";
  s << "config:     " << (ck.config_source.empty() ? "?" : ck.config_source) << "\n\n";
  s << component_line("text encoder", ck.text_encoder_weights.get());
  s << "    " << describe_config(ck.text_encoder) << "\n";
  s << component_line("unet", ck.unet_weights.get());
  s << "    " << describe_config(ck.unet) << "\n";
  s << component_line("vae", ck.vae_weights.get());
  s << "    " << describe_config(ck.vae) << "\n";
  s << "scheduler: " << describe_config(ck.scheduler) << "\n";
  s << "tokenizer: ";
  if (ck.tokenizer.vocab_path.empty()) s << "bundled CLIP vocabulary";
  else s << ck.tokenizer.vocab_path << " + " << ck.tokenizer.merges_path;
  s << ", pad token '" << ck.tokenizer.pad_token << "', max length " << ck.tokenizer.max_length << "\n";
  if (ck.layout == CheckpointLayout::kSingleFile || ck.ignored_tensors || !ck.unknown_tensors.empty()) {
    s << "ignored tensors: " << ck.ignored_tensors << " known unused (buffers, EMA copies, projections), "
      << ck.unknown_tensors.size() << " unrecognised";
    for (size_t i = 0; i < ck.unknown_tensors.size() && i < 5; ++i) s << (i ? ", " : ": ") << ck.unknown_tensors[i];
    if (ck.unknown_tensors.size() > 5) s << ", ...";
    s << "\n";
  }
  for (const std::string& note : ck.notes) s << "note: " << note << "\n";
  return s.str();
}

}  // namespace sd
