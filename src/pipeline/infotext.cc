// Infotext formatting (see infotext.h). Fields whose value is the default are left out as
// AUTOMATIC1111 does (Clip skip 1); the version tag says which engine made the image.
// Newlines in prompts are kept: the first "Negative prompt:" line starts the second part.
#include "pipeline/infotext.h"

#include <cmath>
#include <cstdio>

namespace sd {

std::string format_number(double v) {
  if (std::fabs(v - std::round(v)) < 1e-9) return std::to_string(static_cast<long long>(std::llround(v)));
  char buf[32];
  for (int precision = 1; precision <= 9; ++precision) {
    std::snprintf(buf, sizeof buf, "%.*f", precision, v);
    if (std::fabs(std::strtod(buf, nullptr) - v) < 1e-6 * std::max(1.0, std::fabs(v))) break;
  }
  return buf;
}

std::string make_infotext(const GenerationRequest& r, const InfotextFields& f) {
  std::string s = r.prompt;
  if (!r.negative_prompt.empty()) s += "\nNegative prompt: " + r.negative_prompt;
  s += "\nSteps: " + std::to_string(r.steps);
  s += ", Sampler: " + f.sampler_display;
  s += ", Schedule type: " + f.schedule_display;
  s += ", CFG scale: " + format_number(r.cfg_scale);
  s += ", Seed: " + std::to_string(f.seed);
  s += ", Size: " + std::to_string(r.width) + "x" + std::to_string(r.height);
  if (!f.model_hash.empty()) s += ", Model hash: " + f.model_hash;
  if (!f.model_name.empty()) s += ", Model: " + f.model_name;
  if (r.clip_skip > 1) s += ", Clip skip: " + std::to_string(r.clip_skip);
  if (r.rng == RngKind::kCpu) s += ", RNG: CPU";
  s += ", Version: sdserve 0.1.0";
  return s;
}

}  // namespace sd
