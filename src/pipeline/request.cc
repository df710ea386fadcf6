// GenerationRequest::validate(): the one place where request limits are enforced, so the
// CLI and every HTTP API reject the same inputs with the same messages (naming the field).
// Sampler names are checked by the engine, which knows the sampler registry.
#include <cmath>
#include <string>

#include "pipeline/request.h"

namespace sd {

// Unicode code points in UTF-8 text (continuation bytes are not counted).
static size_t utf8_length(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

Status GenerationRequest::validate(const RequestLimits& lim) const {
  auto size_ok = [&](int v, const char* field) -> Status {
    if (v < lim.min_size || v > lim.max_size) {
      return InvalidArgument(std::string(field) + " must be between " + std::to_string(lim.min_size) + " and " +
                             std::to_string(lim.max_size) + ", got " + std::to_string(v));
    }
    if (v % 8 != 0) return InvalidArgument(std::string(field) + " must be a multiple of 8, got " + std::to_string(v));
    return Status::Ok();
  };
  SD_RETURN_IF_ERROR(size_ok(width, "width"));
  SD_RETURN_IF_ERROR(size_ok(height, "height"));
  if (steps < 1 || steps > lim.max_steps) {
    return InvalidArgument("steps must be between 1 and " + std::to_string(lim.max_steps) + ", got " +
                           std::to_string(steps));
  }
  if (!std::isfinite(cfg_scale) || cfg_scale < 0.0f || cfg_scale > lim.max_cfg_scale) {
    return InvalidArgument("cfg_scale must be between 0 and " + std::to_string(static_cast<int>(lim.max_cfg_scale)) +
                           ", got " + std::to_string(cfg_scale));
  }
  if (batch_size < 1 || batch_size > lim.max_batch_size) {
    return InvalidArgument("batch_size must be between 1 and " + std::to_string(lim.max_batch_size) + ", got " +
                           std::to_string(batch_size));
  }
  if (clip_skip < 1 || clip_skip > 24) {
    return InvalidArgument("clip_skip must be between 1 and 24, got " + std::to_string(clip_skip));
  }
  if (utf8_length(prompt) > lim.max_prompt_chars) {
    return InvalidArgument("prompt is longer than " + std::to_string(lim.max_prompt_chars) + " characters");
  }
  if (utf8_length(negative_prompt) > lim.max_prompt_chars) {
    return InvalidArgument("negative_prompt is longer than " + std::to_string(lim.max_prompt_chars) + " characters");
  }
  if (seed < -1) return InvalidArgument("seed must be -1 (random) or a non-negative integer, got " + std::to_string(seed));
  if (scheduler != "automatic" && scheduler != "uniform" && scheduler != "karras") {
    return InvalidArgument("scheduler must be one of automatic, uniform, karras; got '" + scheduler + "'");
  }
  if (init_latents) {
    const Tensor& t = *init_latents;
    const Shape want{batch_size, 4, height / 8, width / 8};
    if (t.dtype() != DType::kF32 || t.shape() != want) {
      return InvalidArgument("init latents must be f32 " + shape_str(want) + " (NCHW) for this request, got " +
                             t.describe());
    }
  }
  return Status::Ok();
}

}  // namespace sd
