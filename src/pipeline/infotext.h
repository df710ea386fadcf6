// AUTOMATIC1111-style "parameters" text (infotext) written into PNGs and returned by the
// sdapi: prompt, negative prompt, then "Steps: 20, Sampler: Euler a, CFG scale: 7, ...".
// Clients parse it, so the field names and order follow the original.
#pragma once

#include <cstdint>
#include <string>

#include "pipeline/request.h"

namespace sd {

struct InfotextFields {
  std::string sampler_display;  // "Euler a"
  std::string schedule_display = "Automatic";
  std::string model_name;
  std::string model_hash;  // short hash, may be empty
  int64_t seed = 0;
};

std::string make_infotext(const GenerationRequest& request, const InfotextFields& fields);
// "7", "7.5", "0.25": shortest decimal form as Python prints floats of this range.
std::string format_number(double value);

}  // namespace sd
