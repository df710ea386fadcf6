// Helpers shared by the pipeline tests on CPU and GPU: the golden schedules.json (Python's
// json writes -Infinity/NaN, read here as null), a golden case's request, and a small
// guided request for batching tests.
#pragma once

#include <cstring>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>

#include "golden_util.h"
#include "pipeline/request.h"

namespace sd::testing {

inline nlohmann::json read_schedules(const std::string& model) {
  std::ifstream f(data_path(model + "/schedules.json"));
  std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  for (const char* bad : {"-Infinity", "Infinity", "NaN"})
    for (size_t p = text.find(bad); p != std::string::npos; p = text.find(bad, p)) text.replace(p, strlen(bad), "null");
  return nlohmann::json::parse(text);
}

// Prompt i of a golden case, with its initial latents row.
inline GenerationRequest golden_request(const nlohmann::json& spec, size_t i, const Tensor& initial_latents) {
  GenerationRequest r;
  r.prompt = spec["prompt"][i].get<std::string>();
  if (!spec["negative_prompt"].is_null()) r.negative_prompt = spec["negative_prompt"][i].get<std::string>();
  r.cfg_scale = spec["guidance_scale"].get<float>();
  r.steps = spec["steps"].get<int>();
  r.width = spec["width"].get<int>();
  r.height = spec["height"].get<int>();
  r.sampler = spec["scheduler"].get<std::string>();
  r.init_latents = initial_latents.slice_rows(static_cast<int64_t>(i), static_cast<int64_t>(i) + 1);
  return r;
}

inline GenerationRequest fox_request(const std::string& sampler, int steps, float cfg, int64_t seed, int size,
                                     int batch = 1) {
  GenerationRequest r;
  r.prompt = "a red fox in the snow, " + sampler;
  r.negative_prompt = "blurry";
  r.sampler = sampler;
  r.steps = steps;
  r.cfg_scale = cfg;
  r.seed = seed;
  r.batch_size = batch;
  r.width = r.height = size;
  return r;
}

}  // namespace sd::testing
